"""Which TemperedSMC defaults minimise log Z error per second of a whole call? (CPU)

    python benchmarks/defaults.py                          # all configurations, both problems, 16 seeds
    python benchmarks/defaults.py --problems challenger --seeds 4 --configs hmc_L10 hmc_L5

One factor at a time around the default of the time (``TemperedSMC(model)`` with HMC x 5 and 10 leapfrog
steps, target ESS 0.5, pilot tuning: config ``hmc_L10``; every config names its settings explicitly), on
problems with a known log Z:

* ``conjugate20``: ``zoo.conjugate_gaussian`` with d = 20, 10 observations (exact log Z);
* ``challenger``: ``zoo.logistic_regression`` on the Challenger O-ring data, 2 parameters (log Z by 2-d
  Simpson quadrature in float64, ``benchmarks/tempered.py``'s ``challenger_reference``);
* ``bimodal``: ``zoo.bimodal``, 1-d, two narrow modes (masses 0.3 / 0.7) that the moves do not cross, so
  the mode masses come from the reweighting alone (exact log Z, mean and sd);
* ``breast_cancer``: the 31-parameter logistic regression of ``benchmarks/tempered.py`` (log Z reference
  -55.2240 +- 0.0015 by importance sampling, ``benchmarks/data/README.md``).

For each (problem, configuration): one ``SMC(TemperedSMC(model, **config), N, num_chains=1)`` object; its
first call (compilation) is timed and not counted; then ``--seeds`` calls with new keys (the compiled
program is reused: ``timing["reused_compiled"] == 1``), each timed as a whole (``wall``: what a user
waits for on a second call: model check, pilot, chain, draws, health check). One JSON line per
(problem, configuration): log Z error mean and sd, RMSE, mean wall time, compile time, stages, and the
work-normalised inefficiency ``RMSE^2 x wall`` (the variance a second of this configuration buys: lower
is better; ratios to ``--baseline``: ``rel_inefficiency``), and the same for the posterior mean: its
largest error over the parameters in posterior sd (``mean_err_sd``, against exact or reference moments),
``mean_err_rms^2 x wall`` and its ratio ``rel_mean_inefficiency``. Configurations run interleaved by seed, so that a
change in the machine's load affects them alike.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("SMCPPL_COMPILATION_CACHE", "off")  # compile_s: a cold compilation (set a folder to time a warm one)

import jax
import numpy as np

from smcppl import SMC, TemperedSMC
from smcppl.models import zoo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tempered import (breast_cancer_data, breast_cancer_logistic, breast_cancer_reference,  # the problems
                      challenger_reference)

L10 = {"num_integration_steps": 10}  # the default of the recorded runs (now 5: the outcome of this benchmark)
CONFIGS = {  # one factor at a time around HMC x 5, L = 10, target ESS 0.5, pilot tuning
    "hmc_L10": {**L10},
    "hmc_k2": {"num_mcmc_steps": 2, **L10},
    "hmc_k10": {"num_mcmc_steps": 10, **L10},
    "hmc_L5": {"num_integration_steps": 5},  # the default since this benchmark
    "hmc_L5_ess0.7": {"num_integration_steps": 5, "target_ess": 0.7},
    "ess0.3": {"target_ess": 0.3, **L10},
    "ess0.7": {"target_ess": 0.7, **L10},
    "weighted": {"tuning": "weighted", **L10},
    "rwm10": {"move": "rwm", "num_mcmc_steps": 10},
    "imh3": {"move": "imh", "num_mcmc_steps": 3},
    "mala10": {"move": "mala", "num_mcmc_steps": 10},
    # waste-free (Dau & Chopin 2022): N // P chains of P states per stage, about N transitions instead of K N;
    # "particles_factor" multiplies N (x5: about the transitions of the default's K = 5 at N)
    "wf_p5": {"waste_free": True, "num_mcmc_steps": 5},
    "wf_p10": {"waste_free": True, "num_mcmc_steps": 10},
    "wf_p20": {"waste_free": True, "num_mcmc_steps": 20},
    "wf_p10_x5": {"waste_free": True, "num_mcmc_steps": 10, "particles_factor": 5},
    "wf_p20_x5": {"waste_free": True, "num_mcmc_steps": 20, "particles_factor": 5},
    "wf_mala_p10_x5": {"waste_free": True, "move": "mala", "num_mcmc_steps": 10, "particles_factor": 5},
    # a pilot of N / 4 particles ("pilot_fraction" x N = pilot_particles): a shorter pilot, a second program
    "wf_p10_pilot4": {"waste_free": True, "num_mcmc_steps": 10, "pilot_fraction": 0.25},
    "hmc_L5_pilot4": {"num_integration_steps": 5, "pilot_fraction": 0.25},
    # smaller HMC steps: the adaptation aims at acceptance 0.9 instead of 0.65
    "hmc_L5_acc0.9": {"target_acceptance": 0.9},
    "wf_p10_acc0.9": {"waste_free": True, "num_mcmc_steps": 10, "target_acceptance": 0.9},
    "wf_p20_acc0.9": {"waste_free": True, "num_mcmc_steps": 20, "target_acceptance": 0.9},
    "wf_p20_x5_acc0.9": {"waste_free": True, "num_mcmc_steps": 20, "target_acceptance": 0.9, "particles_factor": 5},
}
BASELINE = "hmc_L10"  # --baseline: the ratios' reference (hmc_L5 is the default now)


def problem(name):
    """``(model, args, kwargs, exact log Z, reference posterior {"mean", "sd"} by site)``."""
    if name == "conjugate20":
        data = zoo.conjugate_gaussian_data(dim=20, num_obs=10, seed=0)
        ex = zoo.conjugate_gaussian_exact(**data)
        moments = {"mean": {"theta": ex["mean"]}, "sd": {"theta": np.sqrt(ex["var"])}}
        return zoo.conjugate_gaussian, (), data, ex["log_evidence"], moments
    if name == "challenger":
        d = zoo.challenger_data()
        ref = challenger_reference()
        return zoo.logistic_regression, (d["x"], d["y"]), {}, ref["log_evidence"], ref
    if name == "breast_cancer":
        d = breast_cancer_data()
        ref = breast_cancer_reference()
        return breast_cancer_logistic, (d["x"], d["y"]), {}, ref["log_evidence"], ref
    if name == "bimodal":
        ex = zoo.bimodal_exact()
        p2, s2 = zoo.BIMODAL_PRIOR_SD ** 2, zoo.BIMODAL_SD ** 2
        mu_k = np.asarray(zoo.BIMODAL_MEANS) * p2 / (p2 + s2)  # each mode's posterior: N(mu_k, v)
        w = ex["mode_weights"]
        mean = float(w @ mu_k)
        sd = float(np.sqrt(w @ (p2 * s2 / (p2 + s2) + mu_k ** 2) - mean ** 2))
        return zoo.bimodal, (), {}, ex["log_evidence"], {"mean": {"x": mean}, "sd": {"x": sd}}
    raise ValueError(name)


def mean_error(samples, reference) -> float:
    """Largest |posterior mean - reference mean| over the parameters, in reference posterior sd."""
    return max(float(np.max(np.abs(np.mean(np.asarray(samples[k], float), axis=0) - np.asarray(reference["mean"][k]))
                            / np.asarray(reference["sd"][k]))) for k in reference["mean"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", nargs="+", default=["challenger", "conjugate20"],
                    choices=["challenger", "conjugate20", "breast_cancer", "bimodal"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--N", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--baseline", default=BASELINE, choices=list(CONFIGS))
    ap.add_argument("--jsonl", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args(argv)
    meta = {"kind": "meta", "jax": jax.__version__, "python": platform.python_version(), "N": args.N,
            "seeds": args.seeds, "baseline": args.baseline, "load_before": os.getloadavg()[0]}
    print(json.dumps(meta), flush=True)
    out = [meta]
    for pname in args.problems:
        model, a, kw, exact, moments = problem(pname)
        smcs, compile_s = {}, {}
        for c in args.configs:
            settings = dict(CONFIGS[c])
            n = args.N * settings.pop("particles_factor", 1)
            if "pilot_fraction" in settings:
                settings["pilot_particles"] = int(n * settings.pop("pilot_fraction"))
            smc = SMC(TemperedSMC(model, **settings), n, num_chains=1, progress_bar=False)
            t = time.perf_counter()
            smc.run(jax.random.key(10_000), *a, **kw)
            compile_s[c] = time.perf_counter() - t
            smcs[c] = {"smc": smc, "err": [], "mean_err": [], "wall": [], "stages": [], "flags": 0}
        for s in range(args.seeds):
            order = args.configs if s % 2 == 0 else args.configs[::-1]
            for c in order:
                rec = smcs[c]
                t = time.perf_counter()
                rec["smc"].run(jax.random.key(s), *a, **kw)
                rec["wall"].append(time.perf_counter() - t)
                assert rec["smc"].timing["reused_compiled"] == 1
                rec["err"].append(float(np.asarray(rec["smc"].log_evidence)[0]) - exact)
                rec["mean_err"].append(mean_error(rec["smc"].get_samples(), moments))
                rec["stages"].append(int(np.asarray(rec["smc"].result.output.n_stages).ravel()[0]))
                rec["flags"] += int(not rec["smc"].result.health.ok)
        base = None
        rows = []
        for c in args.configs:
            rec = smcs[c]
            err, wall = np.array(rec["err"]), np.array(rec["wall"])
            rmse = float(np.sqrt(np.mean(err ** 2)))
            row = {"kind": "cell", "problem": pname, "config": c, "settings": CONFIGS[c],
                   "N": args.N * CONFIGS[c].get("particles_factor", 1),
                   "seeds": args.seeds, "log_z_err_mean": float(err.mean()),
                   "log_z_err_se": float(err.std(ddof=1) / np.sqrt(len(err))), "log_z_rmse": rmse,
                   "mean_err_sd": float(np.mean(rec["mean_err"])),
                   "mean_err_rms": float(np.sqrt(np.mean(np.square(rec["mean_err"])))),
                   "wall_s": float(wall.mean()), "compile_s": round(compile_s[c], 2),
                   "stages": float(np.mean(rec["stages"])), "inefficiency": rmse ** 2 * float(wall.mean()),
                   "mean_inefficiency": float(np.mean(np.square(rec["mean_err"]))) * float(wall.mean()),
                   "runs_flagged": rec["flags"]}
            if c == args.baseline:
                base = (row["inefficiency"], row["mean_inefficiency"])
            rows.append(row)
        for row in rows:
            if base:
                row["rel_inefficiency"] = row["inefficiency"] / base[0]
                row["rel_mean_inefficiency"] = row["mean_inefficiency"] / base[1]
            print(json.dumps(row), flush=True)
            out.append(row)
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in out))


if __name__ == "__main__":
    main()
