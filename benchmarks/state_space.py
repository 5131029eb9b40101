"""Particle-filter benchmark: smcppl's state-space filters vs a hand-written jitted bootstrap filter (same
process) and vs ``particles`` (N. Chopin's library, if importable; see benchmarks/requirements.txt).

    python benchmarks/state_space.py            # N = 1e3, 1e4, 1e5
    python benchmarks/state_space.py --quick    # N = 1e3, 1e4, fewer repeats

Model: the 1-d linear-Gaussian model ``x_t = 0.9 x_{t-1} + N(0, 0.5)``, ``y_t = x_t + N(0, 1)`` with a
stationary initial state, ``T = 100`` observations simulated once. Every method runs the bootstrap filter
with systematic resampling at every step and returns ``log Z_hat``; one call = one whole filter run.

* ``smcppl_scan``: the model declared in NumPyro with ``scan`` (:func:`smcppl.models.state_space.lg_model`),
  turned into the lower-level form by the scan handler, run by the engine (``run_fixed`` of
  ``filter_feynman_kac``: per-step ESS, entropy, unique ancestors and filtering moments recorded);
* ``smcppl_lower``: the same filter on a hand-written :class:`~smcppl.models.state_space.StateSpace`;
* ``hand``: a ``lax.scan`` bootstrap filter written by hand (resample, propagate, reweight; nothing recorded);
* ``particles``: ``particles.SMC(fk=Bootstrap(LinearGauss), resampling="systematic", ESSrmin=1)`` (NumPy).

JAX timings are after compilation (reported separately), with ``block_until_ready``; medians over
``repeats`` calls with fresh keys. The log Z column (mean and sd over the repeats) checks that all methods
estimate the same quantity (Kalman value printed alongside).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.engine import run_fixed
from smcppl.core.policy import Resampling
from smcppl.core.resampling import systematic
from smcppl.core.weights import log_normalize
from smcppl.inference.state_space.filter import complete_state_space, filter_feynman_kac
from smcppl.inference.state_space.scan import scan_state_space
from smcppl.models.state_space import LinearGaussian, StateSpace, kalman_filter, lg_model, simulate

A, Q, R, T = 0.9, 0.5, 1.0, 100
LG = LinearGaussian(np.eye(1) * A, np.eye(1) * Q, np.eye(1), np.eye(1) * R, np.eye(1) * Q / (1 - A**2))
ALWAYS = Resampling("systematic", when="always")


def lower_form(y) -> StateSpace:
    sq, s0 = np.float32(np.sqrt(Q)), np.float32(np.sqrt(Q / (1 - A**2)))
    return StateSpace(lambda k, u: s0 * jax.random.normal(k),
                      lambda k, x, u, t: A * x + sq * jax.random.normal(k),
                      lambda x, u, t: -0.5 * (u - x) ** 2 / R - 0.5 * np.log(2 * np.pi * R), inputs=y)


def engine_fn(ssm, n):
    ssm = complete_state_space(ssm)
    fk = filter_feynman_kac(ssm, n)
    return lambda key: run_fixed(key, fk, ssm.num_steps - 1, ALWAYS).log_evidence


def hand_fn(y, n):
    """A bootstrap filter by hand: x_0 ~ N(0, s0^2); per step resample (systematic), propagate, reweight."""
    sq, s0 = np.float32(np.sqrt(Q)), np.float32(np.sqrt(Q / (1 - A**2)))

    def log_g(x, y_t):
        return -0.5 * (y_t - x) ** 2 / R - 0.5 * np.log(2 * np.pi * R)

    def run(key):
        k0, k_run = jax.random.split(key)
        x = A * s0 * jax.random.normal(k0, (n,)) + sq * jax.random.normal(jax.random.fold_in(k0, 1), (n,))
        lw = log_g(x, y[0])

        def step(carry, inp):
            x, lw, logz = carry
            k, y_t = inp
            k_res, k_move = jax.random.split(k)
            log_w, total = log_normalize(lw)
            x = x[systematic(k_res, jnp.exp(log_w), n)]
            x = A * x + sq * jax.random.normal(k_move, (n,))
            return (x, log_g(x, y_t), logz + total - jnp.log(n)), None

        (x, lw, logz), _ = jax.lax.scan(step, (x, lw, jnp.zeros(())), (jax.random.split(k_run, T - 1), y[1:]))
        return logz + log_normalize(lw)[1] - jnp.log(n)

    return run


def particles_fn(ys, n):
    try:
        import particles
        from particles import state_space_models as ssms
        from particles.kalman import LinearGauss
    except ImportError:
        return None
    model = LinearGauss(rho=A, sigmaX=np.sqrt(Q), sigmaY=np.sqrt(R))  # sigma0 = stationary by default

    def run(seed):
        np.random.seed(seed)
        alg = particles.SMC(fk=ssms.Bootstrap(ssm=model, data=list(ys)), N=n, resampling="systematic", ESSrmin=1.0,
                            collect=None)
        alg.run()
        return alg.logLt

    return run


def emit(row):
    print(json.dumps(row), flush=True)
    return row


def bench(sizes, repeats):
    _, ys = simulate(LG, T, seed=0)
    y = jnp.asarray(ys[:, 0], jnp.float32)
    kf_ll = kalman_filter(LG, ys)[2]
    rows = []
    for n in sizes:
        jax_fns = {"smcppl_scan": engine_fn(scan_state_space(lg_model, {"a": jnp.float32(A)}, y, q=Q, r=R), n),
                   "smcppl_lower": engine_fn(lower_form(y), n), "hand": hand_fn(y, n)}
        for name, fn in jax_fns.items():
            t0 = time.perf_counter()
            compiled = jax.jit(fn).lower(jax.random.key(0)).compile()
            compile_s = time.perf_counter() - t0
            compiled(jax.random.key(0)).block_until_ready()
            times, logz = [], []
            for r in range(repeats):
                t0 = time.perf_counter()
                logz.append(float(compiled(jax.random.key(r + 1)).block_until_ready()))
                times.append(time.perf_counter() - t0)
            rows.append(emit(_row(name, n, times, logz, kf_ll, compile_s)))
        pf = particles_fn(ys[:, 0], n)
        if pf is not None:
            times, logz = [], []
            for r in range(max(3, repeats // 4) if n >= 10**5 else repeats):
                t0 = time.perf_counter()
                logz.append(float(pf(r)))
                times.append(time.perf_counter() - t0)
            rows.append(emit(_row("particles", n, times, logz, kf_ll, None)))
    return rows


def _row(name, n, times, logz, kf_ll, compile_s):
    med = statistics.median(times)
    return {"bench": "state_space_filter", "method": name, "N": n, "T": T, "median_s": med,
            "ns_per_particle_step": 1e9 * med / (n * T), "compile_s": compile_s, "log_z_mean": float(np.mean(logz)),
            "log_z_sd": float(np.std(logz)), "log_z_kalman": kf_ll, "repeats": len(times)}


def table(rows):
    out = ["| N | method | median run (ms) | ns / particle / step | compile (s) | log Z mean (sd) | Kalman |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        comp = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        out.append(f"| {r['N']} | {r['method']} | {1e3 * r['median_s']:.2f} | {r['ns_per_particle_step']:.1f} | {comp} | "
                   f"{r['log_z_mean']:.2f} ({r['log_z_sd']:.2f}) | {r['log_z_kalman']:.2f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    sizes = [10**3, 10**4] if args.quick else [10**3, 10**4, 10**5]
    repeats = args.repeats or (10 if args.quick else 20)
    print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "jax": jax.__version__}), flush=True)
    print(table(bench(sizes, repeats)))


if __name__ == "__main__":
    main()
