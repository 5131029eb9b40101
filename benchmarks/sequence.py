"""Particle filters over sequence policies: Best-of-N, PF, ePF (every rule), ePF with correction, PF+LaM,
ePF+LaM on the benchmark tasks of :mod:`smcppl.models.sequence_tasks`, and JAX-vs-NumPy throughput.

    python benchmarks/sequence.py                                   # 500 instances, N = 4..64, all tasks
    python benchmarks/sequence.py --instances 100 --N 8 16 --tasks strategy_trap      # quick
    python benchmarks/sequence.py --throughput-only

Every method runs in score mode (the PF of Puri et al. 2025: weights = logit of the PRM score, reset
at each resampling, resampling every step) and returns the argmax of its final weights; the reward of
that answer is the task's *exact* success probability, so the only randomness is the method's own.
Instances are paired seeds: instance ``i`` uses the same key for every method and N. For each cell
(task, PRM, method, N) one JSON line: mean reward with a bootstrap 95% interval, the paired difference
to PF (multinomial) with its bootstrap interval, mean unique first-step ancestors among the final
particles, mean policy and potential calls. Then an equal-compute comparison: for each PF budget
(policy + potential calls of PF at N), each method's reward at its largest N within that budget.
A markdown table goes to ``--table`` (default ``benchmarks/results/sequence.md``).

Throughput (``kind = "throughput"``, one line per task and N, ``--throughput-N``, default 16 64 256):
particle-steps per second of the jitted filter (one run per call, returning the answer or the whole
output, and vmapped over the instances) against a plain NumPy implementation of the same filter (same
policy and PRM code through ``numpy``, multinomial resampling with NumPy) in the same process, with the
per-stage cost of the pieces every stage needs (``stage_parts_us``: the policy's categorical draw, a key
split, multinomial resampling). Compile time is reported separately; timings are medians of interleaved
repeated calls after compilation (and the fastest call).
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

from smcppl.core import Entropic, Resampling
from smcppl.inference.sequence.filter import LookAhead, ParticleFilter, particle_filter, select_index
from smcppl.models.sequence_tasks import TASKS, make_task

METHODS = {
    "BoN": dict(resampling=Resampling("multinomial", when="never")),
    "PF-multinomial": dict(resampling="multinomial"),
    "PF-systematic": dict(resampling="systematic"),
    "ePF-ess": dict(entropic="epf_ess"),
    "ePF-entropy": dict(entropic="epf_entropy"),
    "ePF-linear": dict(entropic="epf_linear"),
    "ePF-target": dict(entropic="target"),
    "ePF-ess-corrected": dict(entropic=Entropic("epf_ess", correct=True)),
    "PF+LaM": dict(lookahead=LookAhead(k=1)),
    "ePF+LaM": dict(entropic="epf_ess", lookahead=LookAhead(k=1)),
}
BASELINE = "PF-multinomial"
FAST = {"xla_backend_optimization_level": 0}  # reward cells: compile faster, run time is irrelevant


def emit(record):
    print(json.dumps(record), flush=True)


def bootstrap_ci(x, num=2000, seed=0):
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (num, len(x)))].mean(1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def cell_runner(task, method, n):
    """Compiled ``run(keys, logH) -> (reward, unique_origins, policy_calls, potential_calls)`` per instance."""

    def run(keys, logH):
        pf = ParticleFilter(task.policy(), task.potential(logH=logH), weights="score", check_scores=False,
                            **METHODS[method])

        def one(key):
            k1, k2 = jax.random.split(key)
            out = particle_filter(k1, pf, n, task.prompt())
            i = select_index(k2, out.state.log_weights, "argmax")
            p = out.trace.params
            return (task.reward_of(out.state.particles.seq)[i], p["unique_origins"][-1], p["policy_calls"][-1],
                    p["potential_calls"][-1])

        return jax.vmap(one)(keys)

    return run


def reward_cells(args):
    rows = []
    keys = jax.random.split(jax.random.key(args.seed), args.instances)
    for task_name in args.tasks:
        tasks = {"misleading": make_task(task_name), "honest": make_task(task_name, honest=True)}
        for n in args.N:
            base = {}
            for method in args.methods:
                compiled_by_noise = {}  # PRMs that differ only in their table share one compiled filter
                for prm in args.prm:
                    # the prefix noise (negative control) is compiled in, not a table: compile per noise level
                    noise = tasks[prm].noise
                    if noise not in compiled_by_noise:
                        t0 = time.perf_counter()
                        run = jax.jit(cell_runner(tasks[prm], method, n))
                        lh = jnp.asarray(tasks[prm].logH, jnp.float32)
                        compiled_by_noise[noise] = (run.lower(keys, lh).compile(compiler_options=FAST),
                                                    time.perf_counter() - t0)
                    compiled, compile_s = compiled_by_noise[noise]
                    t1 = time.perf_counter()
                    r, u, pc, qc = jax.block_until_ready(compiled(keys, jnp.asarray(tasks[prm].logH, jnp.float32)))
                    r = np.asarray(r, float)
                    rec = {"kind": "cell", "task": task_name, "prm": prm, "method": method, "N": n,
                           "instances": args.instances, "reward": float(r.mean()), "reward_ci95": bootstrap_ci(r),
                           "unique_first_step_ancestors": float(np.mean(u)),
                           "policy_calls": float(np.mean(pc)), "potential_calls": float(np.mean(qc)),
                           "compile_s": round(compile_s, 2), "run_s": round(time.perf_counter() - t1, 3),
                           "expected_reward_policy": tasks[prm].success_probability(),
                           "best_reward": tasks[prm].best_reward()}
                    if method == BASELINE:
                        base[prm] = r
                    if prm in base and method != BASELINE:
                        d = r - base[prm]
                        rec["diff_vs_pf"] = float(d.mean())
                        rec["diff_vs_pf_ci95"] = bootstrap_ci(d)
                    emit(rec)
                    rows.append(rec)
    return rows


def equal_compute(rows):
    """For each PF budget B (calls of PF at N), each method's reward at its largest N with calls <= B."""
    out = []
    for (task, prm) in sorted({(r["task"], r["prm"]) for r in rows}):
        cells = [r for r in rows if r["task"] == task and r["prm"] == prm]
        budgets = sorted({r["policy_calls"] + r["potential_calls"] for r in cells if r["method"] == BASELINE})
        for b in budgets:
            for method in sorted({r["method"] for r in cells}):
                fit = [r for r in cells if r["method"] == method and r["policy_calls"] + r["potential_calls"] <= b + 1e-9]
                if not fit:
                    continue
                best = max(fit, key=lambda r: r["N"])
                rec = {"kind": "equal_compute", "task": task, "prm": prm, "budget_calls": b, "method": method,
                       "N": best["N"], "calls": best["policy_calls"] + best["potential_calls"],
                       "reward": best["reward"], "reward_ci95": best["reward_ci95"]}
                emit(rec)
                out.append(rec)
    return out


# ------------------------------------------------------------------------------------------ throughput
def numpy_pf(task, n, rng):
    """Plain NumPy version of the score-mode PF (multinomial resampling every step, argmax answer)."""
    pol, pot = task.numpy_policy(), task.numpy_potential()
    one = pol.init(rng, None)
    seq = type(one)(*[np.repeat(np.asarray(x)[None], n, axis=0) for x in one[:3]],
                    {k: np.repeat(np.asarray(v)[None], n, axis=0) for k, v in one.aux.items()})
    t_max = seq.tokens.shape[1]
    logw = None
    for t in range(1, task.T + 1):
        if logw is not None:
            w = np.exp(logw - logw.max())
            c = np.cumsum(w)
            idx = np.minimum(np.searchsorted(c / c[-1], rng.random(n), side="right"), n - 1)
            seq = type(seq)(seq.tokens[idx], seq.lengths[idx], seq.done[idx], {k: v[idx] for k, v in seq.aux.items()})
        new, lp = pol.step(rng, seq)
        done = new.done | (new.lengths >= t_max) | (t >= task.T)
        was = seq.done
        seq = type(seq)(np.where(was[:, None], seq.tokens, new.tokens), np.where(was, seq.lengths, new.lengths),
                        np.where(was, seq.done, done), {k: np.where(was, seq.aux[k], v) for k, v in new.aux.items()})
        raw = np.where(seq.done, pot.complete(seq), pot.prefix(seq))
        r = np.clip(np.exp(np.minimum(raw, 0.0)), 1e-6, 1 - 1e-6)
        logw = np.log(r) - np.log1p(-r)
    return task.reward_of(seq)[int(np.argmax(logw))]


def _median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _interleaved_medians(fns, rounds, repeats):
    """``{name: (median, min)}`` seconds per call: ``rounds`` rounds, each calling every function ``repeats``
    times in turn (so that load from other processes hits every variant alike); median over all calls and
    the fastest call (the cost without interference)."""
    ts = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                ts[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(v), min(v)) for name, v in ts.items()}


def step_parts(n, vocab, length=16):
    """Cost per engine stage of the pieces a sequence-filter stage cannot avoid, each in a ``lax.scan`` of
    ``length`` stages (minus an empty scan): the policy's unit draw ``jax.random.categorical`` on ``[N, V]``,
    one key split, and multinomial resampling (``N`` uniforms and an inverse-CDF search)."""
    from smcppl.core.resampling import multinomial

    def scan_of(fn):
        def run(key):
            def body(c, k):
                return c + fn(k), None
            return jax.lax.scan(body, jnp.zeros((), jnp.float32), jax.random.split(key, length))[0]
        return jax.jit(run).lower(jax.random.key(0)).compile()

    logits = jnp.log(jnp.full((n, vocab), 1.0 / vocab))
    w = jnp.linspace(1.0, 2.0, n)
    fns = {"empty": lambda k: jnp.zeros((), jnp.float32),
           "categorical": lambda k: jax.random.categorical(k, logits, axis=-1).sum().astype(jnp.float32),
           "split": lambda k: jax.random.key_data(jax.random.split(k)).sum().astype(jnp.float32),
           "resample_multinomial": lambda k: multinomial(k, w, n).sum().astype(jnp.float32)}
    compiled = {name: scan_of(fn) for name, fn in fns.items()}
    key = jax.random.key(3)
    for c in compiled.values():
        jax.block_until_ready(c(key))
    t = _interleaved_medians({name: (lambda c=c: jax.block_until_ready(c(key))) for name, c in compiled.items()}, 5, 40)
    return {f"{name}_us": (t[name][0] - t["empty"][0]) / length * 1e6 for name in fns if name != "empty"}


def throughput(args):
    """One JSON line per (task, N): particle-steps/s of one jitted run (the answer only: the trace is dead
    code and compiled away), of the same run returning its whole ``SMCOutput`` (trace diagnostics included),
    of a vmapped batch, and of the NumPy filter; medians (and fastest calls) of interleaved repeats in one
    process, compile times separate, and the per-stage cost of the unavoidable pieces (:func:`step_parts`)."""
    recs = []
    for task_name in args.tasks:
        task = make_task(task_name)
        steps = task.T  # policy steps per run
        for n in args.throughput_N:
            pf = ParticleFilter(task.policy(), task.potential(), weights="score", resampling="multinomial",
                                check_scores=args.check_scores)

            def one(key, pf=pf, n=n):
                out = particle_filter(key, pf, n, task.prompt())
                return task.reward_of(out.state.particles.seq)[select_index(None, out.state.log_weights)]

            def full(key, pf=pf, n=n):
                return particle_filter(key, pf, n, task.prompt())

            compile_s = {}
            keys = jax.random.split(jax.random.key(1), args.instances)
            programs = {}
            for name, fn, arg in (("single", one, jax.random.key(0)), ("single_full", full, jax.random.key(0)),
                                  ("vmapped", jax.vmap(one), keys)):
                t0 = time.perf_counter()
                programs[name] = jax.jit(fn).lower(arg).compile()
                compile_s[name] = time.perf_counter() - t0
            key = jax.random.key(2)
            calls = {"single": lambda: jax.block_until_ready(programs["single"](key)),
                     "single_full": lambda: jax.block_until_ready(programs["single_full"](key))}
            rng = np.random.default_rng(0)
            with np.errstate(divide="ignore"):
                numpy_pf(task, n, rng)
                calls["numpy"] = lambda: numpy_pf(task, n, rng)
                for c in calls.values():
                    c()
                t = _interleaved_medians(calls, 5, 20)
            jax.block_until_ready(programs["vmapped"](keys))
            t_batch = _median_time(lambda: jax.block_until_ready(programs["vmapped"](keys)), 5)
            t_np = t["numpy"][0]
            ps = n * steps
            rec = {"kind": "throughput", "task": task_name, "N": n, "steps": steps,
                   "jax_single_particle_steps_per_s": ps / t["single"][0],
                   "jax_single_full_particle_steps_per_s": ps / t["single_full"][0],
                   "jax_vmapped_particle_steps_per_s": ps * args.instances / t_batch,
                   "numpy_particle_steps_per_s": ps / t_np,
                   "speedup_single": t_np / t["single"][0], "speedup_single_full": t_np / t["single_full"][0],
                   "speedup_vmapped": t_np * args.instances / t_batch,
                   "jax_single_run_us": t["single"][0] * 1e6, "jax_single_run_min_us": t["single"][1] * 1e6,
                   "jax_single_full_run_us": t["single_full"][0] * 1e6, "numpy_run_us": t_np * 1e6,
                   "numpy_run_min_us": t["numpy"][1] * 1e6, "jax_batch_s": t_batch, "batch": args.instances,
                   "compile_single_s": compile_s["single"], "compile_single_full_s": compile_s["single_full"],
                   "compile_vmapped_s": compile_s["vmapped"],
                   "stage_parts_us": step_parts(n, task.vocab_size),
                   "platform": platform.platform(), "jax": jax.__version__, "cpu_count": os.cpu_count()}
            emit(rec)
            recs.append(rec)
    return recs


def markdown(rows, eq, thr, path):
    lines = ["# Sequence particle filters (benchmarks/sequence.py)", "",
             "Mean task reward (exact success probability of the argmax answer) with bootstrap 95% intervals; "
             "`diff` is the paired difference to PF (multinomial); `uniq` the mean number of distinct first-step "
             "ancestors among the final particles; `calls` mean policy + potential calls per run.", ""]
    for (task, prm) in sorted({(r["task"], r["prm"]) for r in rows}):
        cells = [r for r in rows if r["task"] == task and r["prm"] == prm]
        lines += [f"## {task}, {prm} PRM (instances: {cells[0]['instances']}; one policy sample: "
                  f"{cells[0]['expected_reward_policy']:.3f}, best: {cells[0]['best_reward']:.3f})", "",
                  "| method | N | reward [95% CI] | diff vs PF [95% CI] | uniq | calls |", "|---|---|---|---|---|---|"]
        for r in sorted(cells, key=lambda r: (list(METHODS).index(r["method"]), r["N"])):
            d = "" if "diff_vs_pf" not in r else f"{r['diff_vs_pf']:+.3f} [{r['diff_vs_pf_ci95'][0]:+.3f}, {r['diff_vs_pf_ci95'][1]:+.3f}]"
            lines.append(f"| {r['method']} | {r['N']} | {r['reward']:.3f} [{r['reward_ci95'][0]:.3f}, {r['reward_ci95'][1]:.3f}] "
                         f"| {d} | {r['unique_first_step_ancestors']:.2f} | {r['policy_calls'] + r['potential_calls']:.0f} |")
        lines.append("")
        sub = [e for e in eq if e["task"] == task and e["prm"] == prm]
        if sub:
            lines += ["Equal compute (reward at the largest N within each PF budget of policy + potential calls):", "",
                      "| budget | " + " | ".join(sorted({e["method"] for e in sub})) + " |",
                      "|---|" + "---|" * len({e["method"] for e in sub})]
            for b in sorted({e["budget_calls"] for e in sub}):
                row = {e["method"]: f"{e['reward']:.3f} (N={e['N']})" for e in sub if e["budget_calls"] == b}
                lines.append(f"| {b:.0f} | " + " | ".join(row.get(m, "-") for m in sorted({e['method'] for e in sub})) + " |")
            lines.append("")
    if thr:
        lines += ["## Throughput (particle-steps per second, after compilation; medians of interleaved repeats)", "",
                  "| task | N | JAX single run | single, whole output | JAX vmapped | NumPy | speed-up single "
                  "| speed-up vmapped | compile single / vmapped (s) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t in thr:
            lines.append(f"| {t['task']} | {t['N']} | {t['jax_single_particle_steps_per_s']:.3g} "
                         f"| {t['jax_single_full_particle_steps_per_s']:.3g} | {t['jax_vmapped_particle_steps_per_s']:.3g} "
                         f"| {t['numpy_particle_steps_per_s']:.3g} | {t['speedup_single']:.1f}x | {t['speedup_vmapped']:.1f}x "
                         f"| {t['compile_single_s']:.1f} / {t['compile_vmapped_s']:.1f} |")
        lines.append("")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"# wrote {path}", file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=500, help="paired seeds per cell (default 500)")
    ap.add_argument("--N", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--prm", nargs="+", default=["misleading", "honest"], choices=["misleading", "honest"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", default="benchmarks/results/sequence.md")
    ap.add_argument("--throughput-only", action="store_true")
    ap.add_argument("--throughput-N", type=int, nargs="+", default=[16, 64, 256],
                    help="population sizes of the throughput cells (default 16 64 256)")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--check-scores", action="store_true", help="keep the score-range check (a host callback) in the timed filter")
    args = ap.parse_args(argv)
    # the baseline runs first in each cell group so that every other method gets its paired difference
    args.methods = [BASELINE] + [m for m in METHODS if m in args.methods and m != BASELINE]
    rows, eq, thr = [], [], []
    if not args.throughput_only:
        rows = reward_cells(args)
        eq = equal_compute(rows)
    if not args.no_throughput:
        thr = throughput(args)
    markdown(rows, eq, thr, args.table)


if __name__ == "__main__":
    main()
