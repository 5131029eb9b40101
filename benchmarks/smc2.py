"""SMC² benchmark: ``SMC(SMC2(lg_model))`` against PMMH at an equal budget of particle-filter work.

    python benchmarks/smc2.py            # prints one JSON line

Model: ``smcppl.models.state_space.lg_model`` (``a ~ U(-1, 1)``; ``q = 0.5``, ``r = 1``), ``T = 50``
observations simulated with ``a = 0.9`` (seed 5, as tests/test_smc2.py). SMC² runs ``num_chains``
independent runs of ``N_theta`` outer and ``N_x`` inner particles; its work is counted in inner
particle-steps (``N_theta N_x`` per time step, plus ``num_mcmc_steps N_theta N_x (t + 1)`` per
rejuvenation at time ``t``, read off the trace). PMMH gets the same number of particle-steps per chain
(``N_x`` particles, ``T`` steps per likelihood estimate; a fifth of its iterations are warm-up). Reported:
seconds per chain after compilation, the spread of ``log Z_hat`` over chains (SMC² only: PMMH gives none), and
the sd over chains of each chain's estimate of ``E[a | y]`` (the Monte Carlo error of one chain at that
budget), next to the exact posterior mean and sd on a grid.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from lg_grid import lg_grid_posterior

from smcppl import PMMH, SMC, SMC2
from smcppl.models.state_space import LinearGaussian, lg_model, simulate

A, Q, R, T = 0.9, 0.5, 1.0, 50
N_THETA, N_X, K, CHAINS = 256, 64, 3, 4


def main() -> None:
    _, ys = simulate(LinearGaussian(np.eye(1) * A, np.eye(1) * Q, np.eye(1), np.eye(1) * R,
                                    np.eye(1) * Q / (1 - A**2)), T, seed=5)
    y = jnp.asarray(ys[:, 0], jnp.float32)
    mean, sd, log_z = lg_grid_posterior(ys, Q, R, num=801)

    smc = SMC(SMC2(lg_model, num_state_particles=N_X, num_mcmc_steps=K), num_particles=N_THETA, num_chains=CHAINS,
              chain_method="sequential")
    smc.run(jax.random.key(0), y)  # compiles
    compile_s = smc.timing["compile_seconds"]
    smc.run(jax.random.key(1), y)
    a = np.asarray(smc.get_samples(group_by_chain=True)["a"], float)
    stage = np.arange(T)
    events = np.asarray(smc.trace.resampled, bool) & (stage >= 1)
    # rejuvenation at stage s works on y_{0:s-1}: a fresh filter of s time steps per proposal
    work = N_THETA * N_X * (T + K * (events * stage).sum(axis=1))
    row = {"bench": "smc2", "T": T, "N_theta": N_THETA, "N_x": N_X, "num_mcmc_steps": K, "chains": CHAINS,
           "machine": platform.machine(), "cpus": os.cpu_count(), "jax": jax.__version__,
           "exact_mean": mean, "exact_sd": sd, "exact_log_z": log_z,
           "smc2_s_per_chain": smc.timing["run_seconds"] / CHAINS, "smc2_compile_s": compile_s,
           "smc2_particle_steps_per_chain": float(work.mean()), "smc2_log_z_mean": float(np.mean(smc.log_evidence)),
           "smc2_log_z_sd": float(np.std(np.asarray(smc.log_evidence), ddof=1)),
           "smc2_mean_sd_over_chains": float(a.mean(1).std(ddof=1)), "smc2_sd": float(a.std(1).mean()),
           "smc2_resampling_events": float(events.sum(1).mean())}

    iters = int(work.mean() // (N_X * T))
    warmup = iters // 5
    pmmh = PMMH(lg_model, num_particles=N_X, num_warmup=warmup, num_samples=iters - warmup, num_chains=CHAINS)
    pmmh.run(jax.random.key(2), y)  # PMMH.run traces and jits on every call: the second one loads the compiled
    t0 = time.perf_counter()        # program from the persistent cache (SMC.run switched it on)
    pmmh.run(jax.random.key(3), y)
    second = time.perf_counter() - t0
    b = np.asarray(pmmh.get_samples(group_by_chain=True)["a"], float)
    row.update({"pmmh_iterations": iters, "pmmh_s_per_chain_incl_tracing": second / CHAINS,
                "pmmh_mean_sd_over_chains": float(b.mean(1).std(ddof=1)), "pmmh_sd": float(b.std(1).mean()),
                "pmmh_acceptance": float(np.mean(pmmh.acceptance_rate))})
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
