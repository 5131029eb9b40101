"""Independent Metropolis–Hastings (``move="imh"``) against the default HMC move and random-walk Metropolis in
tempered SMC (issue 13). One JSON line per (problem, move):

* problems: ``conjugate`` (zoo 20-d conjugate Gaussian: exact log Z and posterior), ``challenger`` (zoo
  logistic regression, 2-d) and ``logistic31`` (the same zoo model on simulated data: 30 features, 200
  observations, a 31-d posterior);
* columns: compile and run seconds (``SMC.timing``; run = all chains and the pilot, sequential), log Z mean
  and sd over chains (and error against the exact value where known), max |posterior mean error| in
  posterior sd (conjugate) or against the HMC run, in its posterior sd (others), stages, mean acceptance,
  distinct final draws, and the likelihood evaluations per chain, counted from the settings (no
  instrumentation):

      per stage (one move):  imh / rwm  N (init) + N * num_mcmc_steps + N (re-evaluation after the move)
                             hmc        N gradients (init) + N * num_mcmc_steps * num_integration_steps
                                        gradients + N evaluations (after the move)

  ``evals_per_chain`` = that times the number of moves (stages - 1), gradients counted as evaluations
  (a reverse-mode gradient costs ~2-4 evaluations more, so this favours HMC).

    python benchmarks/imh.py [--particles 1000] [--chains 4] [--problems conjugate challenger logistic31]
                             [--moves hmc rwm imh imh_gauss imh10 imh20]
"""
import argparse
import json
import time
import warnings

import jax
import numpy as np

from smcppl import SMC, TemperedSMC
from smcppl.models import zoo

MOVES = {
    "hmc": {"move": "hmc", "num_integration_steps": 10},  # the default move of the recorded runs (5 x 10 leapfrog steps)
    "rwm": {"move": "rwm"},
    "imh": {"move": "imh"},  # t proposal (default dof), 5 transitions
    "imh_gauss": {"move": "imh", "proposal_dof": None},  # Gaussian proposal
    "imh10": {"move": "imh", "num_mcmc_steps": 10},
    "imh20": {"move": "imh", "num_mcmc_steps": 20},
}


def logistic31_data(seed=0, n=200, k=30):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k))
    w = rng.normal(scale=0.5, size=k)
    p = 1 / (1 + np.exp(-(0.3 + x @ w)))
    return {"x": x, "y": (rng.uniform(size=n) < p).astype(np.int32)}


def problems():
    conj = zoo.conjugate_gaussian_data()
    return {"conjugate": (zoo.conjugate_gaussian, conj, zoo.conjugate_gaussian_exact(**conj)),
            "challenger": (zoo.logistic_regression, zoo.challenger_data(), None),
            "logistic31": (zoo.logistic_regression, logistic31_data(), None)}


def evaluations(settings, n, stages):
    steps = settings.get("num_mcmc_steps", 5)
    if settings["move"] == "hmc":
        per_stage = n + n * steps * settings.get("num_integration_steps", 10) + n
    else:
        per_stage = n + n * steps + n
    return per_stage, per_stage * (stages - 1)


def measure(problem, label, num_particles, num_chains, seed=0):
    model, data, exact = problems()[problem]
    settings = MOVES[label]
    smc = SMC(TemperedSMC(model, **settings), num_particles=num_particles, num_chains=num_chains)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smc.run(jax.random.key(seed), **data)
    wall = time.perf_counter() - t0
    n = np.asarray(smc.n_stages)
    acc = np.asarray(smc.trace.move_info["acceptance_rate"], float)
    moved = (np.arange(acc.shape[1])[None] >= 1) & (np.arange(acc.shape[1])[None] < n[:, None])
    lz = np.asarray(smc.log_evidence, float)
    samples = {k: np.asarray(v, float).reshape(num_chains * num_particles, -1) for k, v in smc.get_samples().items()}
    per_stage, per_chain = evaluations(settings, num_particles, float(n.mean()))
    out = {"bench": "imh", "problem": problem, "move": label, "settings": settings,
           "num_particles": num_particles, "num_chains": num_chains,
           "compile_s": round(smc.timing["compile_seconds"], 2), "run_s": round(smc.timing["run_seconds"], 3),
           "wall_s": round(wall, 2), "stages_mean": float(n.mean()),
           "log_z_mean": float(lz.mean()), "log_z_sd": float(lz.std(ddof=1)) if num_chains > 1 else None,
           "acceptance_mean": float(np.nanmean(np.where(moved, acc, np.nan))) if moved.any() else None,
           "acceptance_min": float(np.nanmin(np.where(moved, acc, np.nan))) if moved.any() else None,
           "distinct_draws_mean": float(np.mean(np.asarray(smc.draw_stats["n_unique"]))),
           "evals_per_stage": per_stage, "evals_per_chain": per_chain,
           "health_flags": [f.check for f in smc.health.flags],
           "posterior_mean": {k: v.mean(0).tolist() for k, v in samples.items()},
           "posterior_sd": {k: v.std(0).tolist() for k, v in samples.items()}}
    if exact is not None:
        out["log_z_err"] = float(lz.mean() - exact["log_evidence"])
        th = samples["theta"]
        out["mean_err_sd"] = float(np.max(np.abs(th.mean(0) - exact["mean"]) / np.sqrt(exact["var"])))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--particles", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--problems", nargs="*", default=["conjugate", "challenger", "logistic31"])
    ap.add_argument("--moves", nargs="*", default=list(MOVES))
    args = ap.parse_args()
    for problem in args.problems:
        ref = None
        for label in args.moves:
            row = measure(problem, label, args.particles, args.chains)
            if label == "hmc":
                ref = row["posterior_mean"], row["posterior_sd"]
            elif ref is not None and "mean_err_sd" not in row:
                # in posterior sd (HMC's); the HMC run is itself an estimate
                row["mean_diff_vs_hmc_sd"] = float(max(
                    np.max(np.abs(np.asarray(row["posterior_mean"][k]) - np.asarray(ref[0][k])) / np.asarray(ref[1][k]))
                    for k in ref[0]))
            row.pop("posterior_mean"), row.pop("posterior_sd")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
