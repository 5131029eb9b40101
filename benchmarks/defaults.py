"""Which TemperedSMC defaults minimise log Z error per second of a whole call? (CPU)

    python benchmarks/defaults.py                          # all configurations, both problems, 16 seeds
    python benchmarks/defaults.py --problems challenger --seeds 4 --configs hmc_L10 hmc_L5

One factor at a time around the default of the time (``TemperedSMC(model)`` with HMC x 5 and 10 leapfrog
steps, target ESS 0.5, pilot tuning: config ``hmc_L10``; every config names its settings explicitly), on
problems with a known log Z:

* ``conjugate20``: ``zoo.conjugate_gaussian`` with d = 20, 10 observations (exact log Z);
* ``challenger``: ``zoo.logistic_regression`` on the Challenger O-ring data, 2 parameters (log Z by 2-d
  Simpson quadrature in float64, ``benchmarks/tempered.py``'s ``challenger_reference``);
* ``breast_cancer``: the 31-parameter logistic regression of ``benchmarks/tempered.py`` (log Z reference
  -55.2240 +- 0.0015 by importance sampling, ``benchmarks/data/README.md``).

For each (problem, configuration): one ``SMC(TemperedSMC(model, **config), N, num_chains=1)`` object; its
first call (compilation) is timed and not counted; then ``--seeds`` calls with new keys (the compiled
program is reused: ``timing["reused_compiled"] == 1``), each timed as a whole (``wall``: what a user
waits for on a second call: model check, pilot, chain, draws, health check). One JSON line per
(problem, configuration): log Z error mean and sd, RMSE, mean wall time, compile time, stages, and the
work-normalised inefficiency ``RMSE^2 x wall`` (the variance a second of this configuration buys: lower
is better; ratios to ``hmc_L10``: ``rel_inefficiency``). Configurations run interleaved by seed, so that a
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
}
BASELINE = "hmc_L10"


def problem(name):
    """``(model, args, kwargs, exact log Z)``."""
    if name == "conjugate20":
        data = zoo.conjugate_gaussian_data(dim=20, num_obs=10, seed=0)
        return zoo.conjugate_gaussian, (), data, zoo.conjugate_gaussian_exact(**data)["log_evidence"]
    if name == "challenger":
        d = zoo.challenger_data()
        return zoo.logistic_regression, (d["x"], d["y"]), {}, challenger_reference()["log_evidence"]
    if name == "breast_cancer":
        d = breast_cancer_data()
        return breast_cancer_logistic, (d["x"], d["y"]), {}, breast_cancer_reference()["log_evidence"]
    raise ValueError(name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", nargs="+", default=["challenger", "conjugate20"],
                    choices=["challenger", "conjugate20", "breast_cancer"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--N", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--jsonl", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args(argv)
    meta = {"kind": "meta", "jax": jax.__version__, "python": platform.python_version(), "N": args.N,
            "seeds": args.seeds, "load_before": os.getloadavg()[0]}
    print(json.dumps(meta), flush=True)
    out = [meta]
    for pname in args.problems:
        model, a, kw, exact = problem(pname)
        smcs, compile_s = {}, {}
        for c in args.configs:
            smc = SMC(TemperedSMC(model, **CONFIGS[c]), args.N, num_chains=1, progress_bar=False)
            t = time.perf_counter()
            smc.run(jax.random.key(10_000), *a, **kw)
            compile_s[c] = time.perf_counter() - t
            smcs[c] = {"smc": smc, "err": [], "wall": [], "stages": [], "flags": 0}
        for s in range(args.seeds):
            order = args.configs if s % 2 == 0 else args.configs[::-1]
            for c in order:
                rec = smcs[c]
                t = time.perf_counter()
                rec["smc"].run(jax.random.key(s), *a, **kw)
                rec["wall"].append(time.perf_counter() - t)
                assert rec["smc"].timing["reused_compiled"] == 1
                rec["err"].append(float(np.asarray(rec["smc"].log_evidence)[0]) - exact)
                rec["stages"].append(int(np.asarray(rec["smc"].result.output.n_stages).ravel()[0]))
                rec["flags"] += int(not rec["smc"].result.health.ok)
        base = None
        rows = []
        for c in args.configs:
            rec = smcs[c]
            err, wall = np.array(rec["err"]), np.array(rec["wall"])
            rmse = float(np.sqrt(np.mean(err ** 2)))
            row = {"kind": "cell", "problem": pname, "config": c, "settings": CONFIGS[c], "N": args.N,
                   "seeds": args.seeds, "log_z_err_mean": float(err.mean()),
                   "log_z_err_se": float(err.std(ddof=1) / np.sqrt(len(err))), "log_z_rmse": rmse,
                   "wall_s": float(wall.mean()), "compile_s": round(compile_s[c], 2),
                   "stages": float(np.mean(rec["stages"])), "inefficiency": rmse ** 2 * float(wall.mean()),
                   "runs_flagged": rec["flags"]}
            if c == BASELINE:
                base = row["inefficiency"]
            rows.append(row)
        for row in rows:
            if base:
                row["rel_inefficiency"] = row["inefficiency"] / base
            print(json.dumps(row), flush=True)
            out.append(row)
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in out))


if __name__ == "__main__":
    main()
