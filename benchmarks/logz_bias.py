"""Is log Z biased by tuning the MCMC move from the particles? (issue: reliability)

20-dim conjugate Gaussian (exact log Z), N particles, random-walk moves with a proposal covariance
fitted to the particles, many independent runs. Compares ``tuning="pilot"`` (an independent pilot
run fixes the ladder and kernels), and the in-run tunings ``tuning="weighted"``
(preconditioner fitted to the weighted particles *before* resampling: the kernel of stage t is a
function of generation t-1 only) with ``tuning="resampled"`` (fitted to the resampled particles
that are then moved, BlackJAX's inner_kernel_tuning recipe), and each resampling scheme, including
corrected entropic resampling. Prints one JSON line per configuration:
``mean(log Z_hat - log Z)``, its standard error, and ``mean(Z_hat / Z)`` with its standard error
(1 if unbiased).

    python benchmarks/logz_bias.py [--runs 40] [--particles 1000] [--steps 30]
    python benchmarks/logz_bias.py --default --runs 300 --particles 4000   # TemperedSMC(model) as it comes

``--default``: the sampler with every default (waste-free HMC, pilot tuning), ``runs`` independent runs made as
calls of 10 chains with keys 1000, 1001, ...; it also prints the Jensen gap ``-sd^2 / 2`` that an unbiased
``Z_hat`` puts into ``E[log Z_hat - log Z]``.
"""
import argparse
import json
import time

import jax
import numpy as np

from smcppl import SMC, Entropic, Resampling, TemperedSMC
from smcppl.models import zoo


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--particles", type=int, default=1000)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--default", action="store_true", help="TemperedSMC(model) with every default instead")
    a = p.parse_args()
    if a.default:
        return default_bias(a.runs, a.particles)
    if a.quick:
        a.runs, a.particles, a.steps = 16, 500, 10
    data = zoo.conjugate_gaussian_data(dim=20, num_obs=10, seed=0)
    exact = zoo.conjugate_gaussian_exact(**data)["log_evidence"]
    configs = [
        ("pilot", "systematic", None), ("weighted", "systematic", None), ("resampled", "systematic", None),
        ("pilot", "multinomial", None), ("pilot", "stratified", None), ("pilot", "residual", None),
        ("pilot", "systematic", Entropic("epf_ess", ess_threshold=0.6, early_phase=1.0, correct=True)),
    ]
    for tune_from, scheme, ent in configs:
        res = Resampling(scheme, "always", 0.5, ent)
        smc = SMC(TemperedSMC(zoo.conjugate_gaussian, move="rwm", num_mcmc_steps=a.steps, tuning=tune_from,
                              resampling=res), num_particles=a.particles, num_chains=a.runs)
        t = time.perf_counter()
        smc.run(jax.random.key(2024), **data)
        err = np.asarray(smc.log_evidence, float) - exact
        ratio = np.exp(err)
        print(json.dumps({
            "tuning": tune_from, "resampling": scheme + ("+entropic-corrected" if ent else ""),
            "particles": a.particles, "mcmc_steps": a.steps, "runs": a.runs,
            "mean_log_z_error": round(float(err.mean()), 4), "se": round(float(err.std(ddof=1) / np.sqrt(a.runs)), 4),
            "mean_z_ratio": round(float(ratio.mean()), 4),
            "z_ratio_se": round(float(ratio.std(ddof=1) / np.sqrt(a.runs)), 4),
            "stages": float(np.mean(np.asarray(smc.n_stages))), "seconds": round(time.perf_counter() - t, 1)}),
            flush=True)


def default_bias(runs: int, particles: int, chains_per_call: int = 10):
    """``runs`` runs of ``SMC(TemperedSMC(conjugate_gaussian), particles, 10 chains)`` (every default); one JSON line."""
    data = zoo.conjugate_gaussian_data(dim=20, num_obs=10, seed=0)
    exact = zoo.conjugate_gaussian_exact(**data)["log_evidence"]
    smc = SMC(TemperedSMC(zoo.conjugate_gaussian), num_particles=particles, num_chains=chains_per_call,
              chain_method="vectorized")
    errs, t = [], time.perf_counter()
    for call in range(-(-runs // chains_per_call)):
        smc.run(jax.random.key(1000 + call), **data)
        errs.extend((np.asarray(smc.log_evidence, float) - exact).tolist())
    err = np.asarray(errs[:runs])
    sd = float(err.std(ddof=1))
    ratio = np.exp(err)
    print(json.dumps({
        "tuning": "default", "particles": particles, "runs": len(err), "mean_log_z_error": round(float(err.mean()), 4),
        "se": round(sd / np.sqrt(len(err)), 4), "sd": round(sd, 4), "jensen_gap": round(-sd ** 2 / 2, 4),
        "mean_z_ratio": round(float(ratio.mean()), 4), "z_ratio_se": round(float(ratio.std(ddof=1) / np.sqrt(len(err))), 4),
        "seconds": round(time.perf_counter() - t, 1)}), flush=True)


if __name__ == "__main__":
    main()
