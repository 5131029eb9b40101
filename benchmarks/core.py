"""Core benchmarks: resampling schemes and one Feynman–Kac engine step vs a hand-written jitted loop.

    python benchmarks/core.py            # N = 1e3, 1e4, 1e5, 1e6
    python benchmarks/core.py --quick    # N = 1e3, 1e4, 1e5, fewer repeats

Prints one JSON line per measurement on stdout, then a markdown table (``--table``, default on).
All timings are on CPU, after compilation (``jax.jit(f).lower(...).compile()``); the compiled call is
timed with ``block_until_ready``. Compile time is reported separately.

(a) ``resampling``: each scheme of :mod:`smcppl.core.resampling` on ``N`` random weights, ``N`` draws.
(b) ``engine_step``: the bootstrap filter on a 2-d linear-Gaussian state-space model (``lg``: smcppl's
    ``linear_gaussian``; ``lg_matmul``: the same model with a cheaper observation density, so that the
    engine's own overhead is a larger share of the step).
    * ``engine``: ``lax.scan`` over ``smcppl.core.build_step(bootstrap_feynman_kac(...), policy)``;
    * ``hand``: ``lax.scan`` over a hand-written step doing the same arithmetic (same key splitting,
      same resampler, same ``sample_transition`` move, same ``log_observation`` reweighting, same log Z
      accumulation) but none of the engine's per-step diagnostics;
    * ``hand_diag``: the hand-written step plus the diagnostics the engine records every step (ESS,
      normalised entropy, number of unique ancestors, running log Z), i.e. the same work as the engine.
    Both runs start from the same state and key, and their final log Z are checked to agree.
    Each call runs ``T`` steps (so dispatch overhead is amortised); time per step = call time / T.
    Methods are measured in the same process, interleaved (engine, hand, hand_diag, engine, ...), and
    the ratio engine/hand is the ratio of the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core import Resampling, SMCState, build_step
from smcppl.core.policy import count_unique
from smcppl.core.resampling import RESAMPLERS
from smcppl.core.weights import ess_ratio, log_mean_exp, log_normalize, normalized_entropy, sanitize
from smcppl.inference.state_space.bootstrap import bootstrap_feynman_kac
from smcppl.models.state_space import LinearGaussian, StateSpaceModel, linear_gaussian, simulate


def emit(record):
    print(json.dumps(record), flush=True)
    return record


def compile_fn(fn, *args):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def time_call(compiled, *args):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - t0


def calls_for(seconds_per_call, budget=0.05):
    """How many back-to-back calls make one timing sample of at least ``budget`` seconds."""
    return max(1, int(budget / max(seconds_per_call, 1e-7)))


def timed_sample(compiled, args, inner):
    t0 = time.perf_counter()
    out = None
    for _ in range(inner):
        out = compiled(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / inner


# ----------------------------------------------------------------------------------------- resampling
def bench_resampling(sizes, repeats):
    rows = []
    for n in sizes:
        key = jax.random.key(0)
        w = jax.random.exponential(jax.random.key(1), (n,)) ** 2  # uneven weights
        w = w / jnp.sum(w)
        compiled, comp_t = {}, {}
        for name, fn in RESAMPLERS.items():
            compiled[name], comp_t[name] = compile_fn(lambda k, w, fn=fn: fn(k, w, n), key, w)
            time_call(compiled[name], key, w)  # warm-up
        inner = {name: calls_for(time_call(compiled[name], key, w)) for name in RESAMPLERS}
        samples = {name: [] for name in RESAMPLERS}
        for r in range(repeats):  # interleave schemes so that machine noise hits all of them alike
            for name in RESAMPLERS:
                k = jax.random.fold_in(key, r)
                samples[name].append(timed_sample(compiled[name], (k, w), inner[name]))
        for name in RESAMPLERS:
            med = statistics.median(samples[name])
            rows.append(emit({"bench": "resampling", "scheme": name, "N": n, "compile_s": round(comp_t[name], 4),
                              "median_s": med, "min_s": min(samples[name]),
                              "ns_per_particle": 1e9 * med / n, "repeats": repeats, "calls_per_repeat": inner[name]}))
    return rows


# ----------------------------------------------------------------------------------------- engine step
LG = LinearGaussian(A=np.array([[0.9, 0.2], [0.0, 0.8]]), Q=0.5 * np.eye(2), C=np.array([[1.0, 0.5]]),
                    R=np.array([[0.8]]), P0=np.eye(2))


def linear_gaussian_matmul(params: LinearGaussian) -> StateSpaceModel:
    """Same model as :func:`smcppl.models.state_space.linear_gaussian`, but the observation log-density
    uses a precomputed inverse Cholesky factor (a matmul) instead of a per-call ``solve_triangular``,
    which XLA:CPU runs slowly for ``N >= 1e4`` right-hand sides (~1 us per particle). A cheaper model
    makes the engine's own overhead more visible."""
    base = linear_gaussian(params)
    C, R = jnp.asarray(params.C, jnp.float32), jnp.asarray(params.R, jnp.float32)
    chol = jnp.linalg.cholesky(R)
    inv_chol_t = jnp.linalg.inv(chol).T
    const = -jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * R.shape[0] * jnp.log(2 * jnp.pi)

    def log_observation(x, y, t):
        z = (y[None, :] - x @ C.T) @ inv_chol_t
        return -0.5 * jnp.sum(z**2, axis=1) + const

    return StateSpaceModel(base.sample_initial, base.sample_transition, log_observation)


MODELS = {"lg": linear_gaussian, "lg_matmul": linear_gaussian_matmul}


def make_hand_step(ssm, ys, scheme, diagnostics):
    """A bootstrap-filter step written by hand: always resample with ``scheme``, move, reweight."""
    resampler = RESAMPLERS[scheme]

    def step(carry, key):
        x, lw, logz, t = carry
        k_res, k_move = jax.random.split(key)  # same key use as the engine
        n = lw.shape[0]
        log_w, log_total = log_normalize(lw)
        idx = resampler(k_res, jnp.exp(log_w), n)
        x = jnp.take(x, idx, axis=0)
        x = ssm.sample_transition(k_move, x, t + 1)
        lw = sanitize(ssm.log_observation(x, ys[t + 1], t + 1))
        logz = logz + log_total - jnp.log(n)
        if diagnostics:
            info = (ess_ratio(lw), normalized_entropy(lw), count_unique(idx, n), logz + log_mean_exp(lw))
        else:
            info = None
        return (x, lw, logz, t + 1), info

    return step


def bench_engine(sizes, repeats, num_steps, scheme, model="lg"):
    rows = []
    _, ys = simulate(LG, num_steps + 1, seed=0)
    ys = jnp.asarray(ys, jnp.float32)
    ssm = MODELS[model](LG)
    policy = Resampling(scheme, when="always")
    for n in sizes:
        steps = num_steps if n < 10**6 else max(4, num_steps // 4)  # dispatch overhead is negligible at 1e6
        fk = bootstrap_feynman_kac(ssm, ys, n)
        eng_step = build_step(fk, policy)
        x0, lw0, t0 = fk.init(jax.random.key(1))
        state0 = SMCState(x0, sanitize(lw0), jnp.zeros(()), t0, jnp.zeros((), jnp.int32))

        def run_engine(key, state):
            state, infos = jax.lax.scan(lambda s, k: eng_step(k, s), state, jax.random.split(key, steps))
            return state.log_evidence + log_mean_exp(state.log_weights), infos

        def make_run_hand(diag):
            step = make_hand_step(ssm, ys, scheme, diag)

            def run_hand(key, state):
                carry = (state.particles, state.log_weights, state.log_evidence, state.params)
                (x, lw, logz, _), infos = jax.lax.scan(step, carry, jax.random.split(key, steps))
                return logz + log_mean_exp(lw), infos
            return run_hand

        fns = {"engine": run_engine, "hand": make_run_hand(False), "hand_diag": make_run_hand(True)}
        key = jax.random.key(2)
        compiled, comp_t, logz = {}, {}, {}
        for name, fn in fns.items():
            compiled[name], comp_t[name] = compile_fn(fn, key, state0)
            logz[name] = float(compiled[name](key, state0)[0])  # warm-up + same-arithmetic check
        inner = {name: calls_for(time_call(compiled[name], key, state0), 0.2) for name in fns}
        samples = {name: [] for name in fns}
        for r in range(repeats):
            order = list(fns) if r % 2 == 0 else list(fns)[::-1]  # alternate the order
            for name in order:
                samples[name].append(timed_sample(compiled[name], (jax.random.fold_in(key, r), state0), inner[name]))
        med = {name: statistics.median(s) for name, s in samples.items()}
        for name in fns:
            rows.append(emit({
                "bench": "engine_step", "model": model, "method": name, "N": n, "scheme": scheme, "steps_per_call": steps,
                "compile_s": round(comp_t[name], 4), "median_step_s": med[name] / steps,
                "min_step_s": min(samples[name]) / steps, "ns_per_particle_step": 1e9 * med[name] / steps / n,
                "ratio_to_hand": med[name] / med["hand"], "ratio_to_hand_diag": med[name] / med["hand_diag"],
                "log_z": logz[name], "repeats": repeats}))
    return rows


def table(res_rows, eng_rows):
    lines = ["| scheme | N | compile (s) | time/call (ms) | ns / particle |", "|---|---:|---:|---:|---:|"]
    for r in res_rows:
        lines.append(f"| {r['scheme']} | {r['N']:.0e} | {r['compile_s']:.3f} | {1e3 * r['median_s']:.3f} | "
                     f"{r['ns_per_particle']:.2f} |")
    lines += ["", "| model | N | engine step (ms) | hand step (ms) | hand+diag step (ms) | engine/hand | engine/hand+diag | "
                  "compile engine / hand (s) | log Z engine - hand |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_n = {}
    for r in eng_rows:
        by_n.setdefault((r["model"], r["N"]), {})[r["method"]] = r
    for (model, n), d in by_n.items():
        e, h, hd = d["engine"], d["hand"], d["hand_diag"]
        lines.append(f"| {model} | {n:.0e} | {1e3 * e['median_step_s']:.3f} | {1e3 * h['median_step_s']:.3f} | "
                     f"{1e3 * hd['median_step_s']:.3f} | {e['ratio_to_hand']:.3f} | {e['ratio_to_hand_diag']:.3f} | "
                     f"{e['compile_s']:.2f} / {h['compile_s']:.2f} | {e['log_z'] - h['log_z']:.2e} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="N up to 1e5 and fewer repeats")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--steps", type=int, default=32, help="engine steps per timed call")
    p.add_argument("--scheme", default="systematic", help="resampler used in the engine-step benchmark")
    p.add_argument("--only", choices=["resampling", "engine"], default=None)
    p.add_argument("--models", default="lg,lg_matmul", help="state-space models for the engine step: lg (smcppl's "
                   "linear_gaussian), lg_matmul (same model, matmul observation density)")
    p.add_argument("--no-table", action="store_true")
    a = p.parse_args(argv)
    sizes = [10**3, 10**4, 10**5] if a.quick else [10**3, 10**4, 10**5, 10**6]
    repeats = a.repeats or (5 if a.quick else 7)
    emit({"bench": "env", "python": platform.python_version(), "jax": jax.__version__,
          "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "argv": sys.argv[1:]})
    res_rows = bench_resampling(sizes, repeats) if a.only in (None, "resampling") else []
    eng_rows = []
    if a.only in (None, "engine"):
        for model in a.models.split(","):
            eng_rows += bench_engine(sizes, repeats, a.steps, a.scheme, model)
    if not a.no_table:
        print(table(res_rows, eng_rows))


if __name__ == "__main__":
    main()
