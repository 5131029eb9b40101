"""Feynman–Kac correctors (FKC) vs the uncorrected score-scaling samplers, and FK steering vs best-of-N.

    python benchmarks/correctors.py            # 8000 particles, 500 steps, 4 seeds
    python benchmarks/correctors.py --quick    # 2000 particles, 200 steps, 4 seeds

Targets (VP SDE, closed-form diffused Gaussian mixtures from :mod:`smcppl.models.diffusion_targets`):
(1) ``anneal``: a 1-D two-mode mixture (modes of different widths) and a 2-D ring of 4 modes, annealed to
    ``beta = 2`` and ``beta = 0.5``; exact draws from the closed-form mixture (beta = 2) or a fine grid;
(2) ``product``: product of two 1-D bimodal mixtures (closed form);
(3) ``guidance``: classifier-free guidance ``p^(1-w) p_c^w`` with ``w = 3`` on a 2-D labelled mixture
    (exact draws by rejection from ``p_c``);
(4) ``steering``: FK steering (``diff`` potential, resampling every 10 steps) of the 2-D ring towards
    ``p(x) exp(-lam |x - c|^2 / 2)`` vs best-of-8 selection from the base sampler, at equal particle
    count (same number of score evaluations per particle, + one per interval for steering).

Metrics per run (seed): ``mode_mass_error`` (largest absolute error of the nearest-mode masses),
``energy_distance`` to 4000 exact draws, ``log_z_error`` (estimate minus exact ``log int target``; FKC
only), ``mean_reward`` (steering). One JSON line per run on stdout, then a markdown table of the mean
(and sd) over seeds. Each sampler is compiled once (``jax.jit(...).lower(...).compile()``, reported as
``compile_s``) and reused across seeds (``run_s`` is the time of one seed's run after compilation).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.inference.correctors.corrector import annealed, fk_steering, guided, product_of_experts
from smcppl.runner import make_run_one
from smcppl.models import diffusion_targets as dt
from smcppl.models.sde import VPSDE

SDE = VPSDE()


def emit(record):
    print(json.dumps(record), flush=True)
    return record


def compile_sampler(alg, num_particles, params):
    """(compiled run_one(key, params), compile seconds)."""
    plan = alg.build(num_particles, params)
    fn = jax.jit(make_run_one(plan, plan.resampling))
    t0 = time.perf_counter()
    compiled = fn.lower(jax.random.key(0), params).compile()
    return compiled, time.perf_counter() - t0


def run_seed(compiled, seed, params):
    t0 = time.perf_counter()
    out, draws = compiled(jax.random.key(seed), params)[:2]
    jax.block_until_ready((out, draws))
    return out, draws, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ tasks
def _s(x, t, m):
    return m.score(x, t, SDE)


def anneal_tasks():
    for name, p in (("mixture_1d", dt.two_mode_1d()), ("ring_2d", dt.ring_2d())):
        for beta in (2.0, 0.5):
            log_fn = lambda x, p=p, beta=beta: beta * p.log_prob(x)  # noqa: E731

            def exact(key, n, p=p, beta=beta):
                if beta == 2.0:
                    return dt.power(p, 2)[0].sample(key, n)
                return dt.sample_power(key, p, beta, n)

            yield {"task": f"anneal_{name}_beta{beta:g}", "make": lambda k, beta=beta, p=p: annealed(
                _s, beta, SDE, k, event_shape=(p.dim,)), "params": p, "exact": exact,
                "log_z": float(dt.log_integral(log_fn, p)), "centers": p.means,
                "mode_masses": np.asarray(dt.exact_mode_masses(log_fn, p))}


def product_task():
    p1 = dt.mixture([0.5, 0.5], [-1.5, 1.5], scales=[0.5, 1.0])
    p2 = dt.mixture([0.3, 0.7], [-1.0, 2.0], scales=[1.0, 0.6])
    prod, log_z = dt.product(p1, p2)
    centers = np.array([[-1.4], [0.25], [1.87]])  # the visible modes of the product
    return {"task": "product_1d", "params": (p1, p2), "log_z": float(log_z), "centers": centers,
            "make": lambda k: product_of_experts([lambda x, t, q: q[0].score(x, t, SDE),
                                                  lambda x, t, q: q[1].score(x, t, SDE)], SDE, k, event_shape=(1,)),
            "exact": lambda key, n: prod.sample(key, n),
            "mode_masses": np.asarray(dt.exact_mode_masses(lambda x: prod.log_prob(x), prod, centers))}


def guidance_task(w=3.0):
    p = dt.labelled_2d()
    log_fn = dt.guided_log_density(p, 1, w)
    return {"task": f"guidance_2d_w{w:g}", "params": p, "log_z": float(dt.log_integral(log_fn, p)),
            "centers": p.means,
            "make": lambda k: guided(lambda x, t, q: q.score(x, t, SDE),
                                     lambda x, t, q: q.conditional(1).score(x, t, SDE), w, SDE, k, event_shape=(2,)),
            "exact": lambda key, n: dt.sample_guided(key, p, 1, w, n),
            "mode_masses": np.asarray(dt.exact_mode_masses(log_fn, p))}


# ------------------------------------------------------------------------------------------ runners
def bench_task(task, args, rows):
    exact = task["exact"](jax.random.key(1234), 4000)
    alg = task["make"](args.steps)
    for method, a in (("fkc", alg), ("uncorrected", alg.uncorrected())):
        compiled, c_s = compile_sampler(a, args.particles, task["params"])
        for seed in range(args.seeds):
            out, draws, r_s = run_seed(compiled, seed, task["params"])
            x = draws["x"]
            mm = np.asarray(dt.mode_masses(x, task["centers"]))
            rec = {"bench": "correctors", "task": task["task"], "method": method, "seed": seed,
                   "num_particles": args.particles, "num_steps": args.steps,
                   "mode_mass_error": float(np.max(np.abs(mm - task["mode_masses"]))),
                   "energy_distance": float(dt.energy_distance(x, exact, key=jax.random.key(seed))),
                   "log_z_error": float(out.log_evidence) - task["log_z"] if method == "fkc" else None,
                   "final_ess": float(out.trace.ess[-1]), "n_resampled": int(np.sum(out.trace.resampled)),
                   "compile_s": round(c_s, 3), "run_s": round(r_s, 4)}
            rows.append(emit(rec))


def bench_steering(args, rows, lam=2.0, center=(2.5, 2.5), k_best=8):
    p = dt.ring_2d()
    c = jnp.asarray(center)

    def reward(x, q=None):
        return -0.5 * jnp.sum((x - c) ** 2)

    tilted, log_z = dt.tilt_quadratic(p, c, lam)
    exact = tilted.sample(jax.random.key(99), 4000)
    exact_reward = float(jnp.mean(jax.vmap(reward)(exact)))
    steer = fk_steering(_s, reward, SDE, args.steps, lam=lam, potential="diff", interval=10, event_shape=(2,))
    base = annealed(_s, 1.0, SDE, args.steps, event_shape=(2,)).uncorrected()
    for method, a in (("fk_steering", steer), (f"best_of_{k_best}", base)):
        compiled, c_s = compile_sampler(a, args.particles, p)
        for seed in range(args.seeds):
            out, draws, r_s = run_seed(compiled, seed, p)
            x = draws["x"]
            r = jax.vmap(reward)(x)
            if method.startswith("best_of"):
                groups = r.shape[0] // k_best
                rg = r[: groups * k_best].reshape(groups, k_best)
                idx = jnp.argmax(rg, axis=1) + k_best * jnp.arange(groups)
                x, r = x[idx], r[idx]
            rec = {"bench": "correctors", "task": "steering_ring_2d", "method": method, "seed": seed,
                   "num_particles": args.particles, "num_steps": args.steps, "num_outputs": int(x.shape[0]),
                   "mean_reward": float(jnp.mean(r)), "exact_mean_reward": exact_reward,
                   "energy_distance": float(dt.energy_distance(x, exact, key=jax.random.key(seed))),
                   "log_z_error": float(out.log_evidence) - float(log_z) if method == "fk_steering" else None,
                   "compile_s": round(c_s, 3), "run_s": round(r_s, 4)}
            rows.append(emit(rec))


def table(rows):
    keys = ("mode_mass_error", "energy_distance", "log_z_error", "mean_reward", "compile_s", "run_s")
    groups = {}
    for r in rows:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    lines = ["| task | method | " + " | ".join(keys) + " |", "|" + "---|" * (2 + len(keys))]
    for (task, method), rs in groups.items():
        cells = []
        for k in keys:
            v = [r[k] for r in rs if r.get(k) is not None]
            if not v:
                cells.append("–")
            elif k in ("compile_s",):
                cells.append(f"{np.mean(v):.2f}")
            else:
                cells.append(f"{np.mean(v):.4f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.4f}")
        lines.append(f"| {task} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2000 particles, 200 steps")
    ap.add_argument("--particles", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--tasks", default="anneal,product,guidance,steering")
    ap.add_argument("--no-table", dest="table", action="store_false")
    args = ap.parse_args(argv)
    args.particles = args.particles or (2000 if args.quick else 8000)
    args.steps = args.steps or (200 if args.quick else 500)
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    print(json.dumps({"bench": "correctors", "setup": {"particles": args.particles, "steps": args.steps,
                                                        "seeds": args.seeds, "sde": repr(SDE),
                                                        "jax": jax.__version__, "platform": platform.platform(),
                                                        "devices": [str(d) for d in jax.devices()]}}), flush=True)
    rows = []
    tasks = args.tasks.split(",")
    if "anneal" in tasks:
        for task in anneal_tasks():
            bench_task(task, args, rows)
    if "product" in tasks:
        bench_task(product_task(), args, rows)
    if "guidance" in tasks:
        bench_task(guidance_task(), args, rows)
    if "steering" in tasks:
        bench_steering(args, rows)
    if args.table:
        print()
        print(table(rows))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
