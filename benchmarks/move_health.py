"""Acceptance, divergences and health flags of the default move on every zoo model (issue: diagnostics
that never lie). One JSON line per model: per-stage acceptance range, share of particle moves with a
divergent transition, the largest share of a stage's weight on divergent particles, distinct final
draws, and the health flags.

    python benchmarks/move_health.py [--particles 1000] [--chains 4] [--models bimodal eight_schools ...]
"""
import argparse
import json
import time
import warnings

import jax
import numpy as np

from smcppl import SMC, TemperedSMC
from smcppl.models.zoo import ZOO


def measure(name, num_particles, num_chains, seed=0, **settings):
    entry = ZOO[name]
    smc = SMC(TemperedSMC(entry.model, **settings), num_particles=num_particles, num_chains=num_chains)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smc.run(jax.random.key(seed), **entry.data())
    wall = time.perf_counter() - t0
    n = np.asarray(smc.n_stages)
    acc = np.asarray(smc.trace.move_info["acceptance_rate"], float)
    div = np.asarray(smc.trace.move_info["divergences"], float)
    dw = np.asarray(smc.trace.summary["divergent_weight"], float)
    moved = (np.arange(acc.shape[1])[None] >= 1) & (np.arange(acc.shape[1])[None] < n[:, None])
    return {"bench": "move_health", "model": name, "move": smc.plan.attrs["move"], "num_particles": num_particles,
            "num_chains": num_chains, "stages": n.tolist(),
            "acceptance_min": float(np.nanmin(np.where(moved, acc, np.nan))) if moved.any() else None,
            "acceptance_mean": float(np.nanmean(np.where(moved, acc, np.nan))) if moved.any() else None,
            "divergent_share": float(np.nansum(np.where(moved, div, 0)) / max(moved.sum() * num_particles, 1)),
            "divergent_weight_max": float(np.nanmax(np.where(moved, dw, 0))) if moved.any() else 0.0,
            "unique_draw_fraction_min": float(np.min(np.asarray(smc.draw_stats["n_unique"])) / num_particles),
            "log_evidence": np.asarray(smc.log_evidence).tolist(),
            "health_flags": [f.check for f in smc.health.flags],
            "compile_s": smc.timing["compile_seconds"], "run_s": smc.timing["run_seconds"], "wall_s": wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--particles", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--models", nargs="*", default=sorted(ZOO))
    ap.add_argument("--move", default=None, help="override the default move")
    args = ap.parse_args()
    settings = {} if args.move is None else {"move": args.move}
    for name in args.models:
        print(json.dumps(measure(name, args.particles, args.chains, **settings)), flush=True)


if __name__ == "__main__":
    main()
