"""Reproducer for issue 17: an intermittent hang of a compiled, vmapped SMC run on XLA's CPU runtime.

The hang is in the *execution* of a compiled program, so each model's chain-vmapped tempered SMC run
is compiled once (exactly as ``SMC.run`` builds it) and the compiled executable is then called many
times with new keys, each call under :func:`smcppl.core.watchdog.call_with_timeout` with a per-call
timeout of ``--timeout-factor`` x the median call time so far (at least ``--min-timeout`` s). After a
timeout the process's CPU use is measured for ``--probe-seconds``: under 5% of a core (the issue's
symptom: every worker idle) counts as a *hang*, otherwise as a *slow* call. Either way the worker
reports and exits (a wedged pool cannot be reused) and the parent starts a fresh one for the remaining
calls, so nothing blocks forever. A persistent compilation cache spares the restarts the compile.

Settings ("mitigations"), each in its own subprocess because XLA_FLAGS is read once, when JAX
initialises its CPU backend:

* ``none``: default XLA CPU runtime (multi-threaded Eigen), chains batched by ``jax.vmap``;
* ``eigen_off``: ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` set before importing jax;
* ``chain_map``: default runtime, chains run one after another by ``lax.map`` in one program (a
  differently structured program for the chain axis).

Cells run interleaved (model 1 under each setting, then model 2, ...) so that load drifts on a shared
machine hit every setting alike. One JSON line per (model, mitigation)::

    python benchmarks/hang_repro.py --calls 40 --max-seconds-per-cell 80
    python benchmarks/hang_repro.py --mitigation none,eigen_off --models gp_regression --calls 200

``hlo_fft_ops`` counts FFT instructions in the compiled program: the one hang of this kind with a known
native stack (XLA's FftThunk re-entering the Eigen pool through ducc0) needs FFTs.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

MITIGATIONS = ("none", "eigen_off", "chain_map")
MODELS = ("gp_regression", "eight_schools", "logistic_regression")
FLAG = "--xla_cpu_multi_thread_eigen=false"


# ------------------------------------------------------------------------------------------------ worker
def _gp_regression(x, y=None):
    """3-parameter GP regression: RBF kernel ``k = amp^2 exp(-|x-x'|^2 / (2 ls^2)) + noise^2 I``,
    ``amp, ls, noise ~ LogNormal(0, 1)``, ``y ~ MVN(0, K)``."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    amp = numpyro.sample("amplitude", dist.LogNormal(0.0, 1.0))
    ls = numpyro.sample("lengthscale", dist.LogNormal(0.0, 1.0))
    noise = numpyro.sample("noise", dist.LogNormal(-1.0, 1.0))
    d2 = (x[:, None] - x[None, :]) ** 2
    k = amp**2 * jnp.exp(-0.5 * d2 / ls**2) + (noise**2 + 1e-6) * jnp.eye(x.shape[0])
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(x.shape[0]), covariance_matrix=k), obs=y)


def _model(name, gp_points=20):
    import numpy as np

    from smcppl.models import zoo

    if name == "gp_regression":
        rng = np.random.default_rng(17)
        x = np.sort(rng.uniform(-3, 3, gp_points))
        return _gp_regression, {"x": x, "y": np.sin(1.3 * x) + 0.3 * rng.normal(size=x.size)}
    m = zoo.get_model(name)
    return m.model, m.data()


def worker(args):
    """Compile one model's run once, call it repeatedly; print one JSON line (also on a hang)."""
    import statistics

    import jax

    from smcppl import SMC, TemperedSMC
    from smcppl.core.watchdog import SMCTimeoutError, call_with_timeout, cpu_eigen_mitigation_active
    from smcppl.runner import make_run_one

    if args.cache_dir:
        jax.config.update("jax_compilation_cache_dir", args.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    model, data = _model(args.models, args.gp_points)
    smc = SMC(TemperedSMC(model), num_particles=args.particles, num_chains=args.chains)
    plan = smc.algorithm.build(smc.num_particles, **data)
    run_one = make_run_one(plan, plan.resampling)
    if args.mitigation == "chain_map":
        fn = jax.jit(lambda ks, d: jax.lax.map(lambda k: run_one(k, d), ks))
    else:
        fn = jax.jit(jax.vmap(run_one, in_axes=(0, None)))  # as SMC.run does for num_chains > 1
    base = jax.random.key(args.seed)
    keys_for = lambda i: jax.random.split(jax.random.fold_in(base, i), args.chains)  # noqa: E731
    t0 = time.perf_counter()
    compiled = fn.lower(keys_for(0), plan.data).compile()
    compile_s = time.perf_counter() - t0
    hlo_fft = compiled.as_text().count(" fft(")

    times, hung, slow, probe, start = [], False, False, None, time.perf_counter()
    for i in range(args.first_call, args.first_call + args.calls):
        if time.perf_counter() - start > args.max_seconds and times:
            break
        tmo = max(args.timeout_factor * statistics.median(times), args.min_timeout) if times else args.first_timeout
        keys = keys_for(i)
        t = time.perf_counter()
        try:
            out = call_with_timeout(compiled, keys, plan.data, timeout=tmo, what=f"{args.models} call {i}")
        except SMCTimeoutError:
            # a wedged pool uses no CPU (the symptom); a slow call keeps the cores busy
            c0, w0 = time.process_time(), time.perf_counter()
            time.sleep(args.probe_seconds)
            cpu_share = (time.process_time() - c0) / (time.perf_counter() - w0)
            hung, slow = cpu_share < 0.05, cpu_share >= 0.05
            probe = round(cpu_share, 3)
            break
        times.append(time.perf_counter() - t)
        if i == args.first_call:  # the run must be a real one, not a failed/NaN run
            assert bool(jax.numpy.all(jax.numpy.isfinite(out[0].log_evidence))), "non-finite log Z"
    rec = {"model": args.models, "mitigation": args.mitigation, "calls": len(times) + hung + slow,
           "hangs": int(hung), "slow": int(slow), "cpu_share_after_timeout": probe,
           "times": [round(x, 4) for x in times], "compile_s": round(compile_s, 2), "hlo_fft_ops": hlo_fft,
           "eigen_off": cpu_eigen_mitigation_active(), "cpus": len(os.sched_getaffinity(0)),
           "jax": jax.__version__, "particles": args.particles, "chains": args.chains}
    print("RESULT " + json.dumps(rec), flush=True)
    # a wedged pool may also wedge interpreter shutdown: leave at once
    os._exit(3 if hung or slow else 0)


# ------------------------------------------------------------------------------------------------ parent
def run_cell(args, model, mitigation):
    env = dict(os.environ)
    flags = " ".join(t for t in env.get("XLA_FLAGS", "").split() if not t.startswith("--xla_cpu_multi_thread_eigen"))
    env["XLA_FLAGS"] = (flags + " " + FLAG).strip() if mitigation == "eigen_off" else flags
    env.setdefault("JAX_PLATFORMS", "cpu")
    times, hangs, slow, calls, compiles, restarts, extra = [], 0, 0, 0, [], 0, {}
    cell_start = time.perf_counter()
    while calls < args.calls:
        left = args.max_seconds_per_cell - (time.perf_counter() - cell_start)
        if left <= 0 and calls:
            break
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--models", model, "--mitigation", mitigation,
               "--calls", str(args.calls - calls), "--first-call", str(calls), "--seed", str(args.seed),
               "--particles", str(args.particles), "--chains", str(args.chains),
               "--timeout-factor", str(args.timeout_factor), "--min-timeout", str(args.min_timeout),
               "--first-timeout", str(args.first_timeout), "--max-seconds", str(max(left, 1.0)),
               "--probe-seconds", str(args.probe_seconds), "--gp-points", str(args.gp_points)]
        if args.cache_dir:
            cmd += ["--cache-dir", args.cache_dir]
        try:  # outer guard in case something outside the watched call hangs (e.g. compilation)
            p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                               timeout=max(left, 1.0) + args.first_timeout + 600)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if not lines:
                raise RuntimeError(f"worker failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
            rec = json.loads(lines[-1][len("RESULT "):])
        except subprocess.TimeoutExpired:
            rec = {"calls": 1, "hangs": 1, "slow": 0, "times": [], "compile_s": float("nan")}
        times += rec["times"]
        hangs += rec["hangs"]
        slow += rec["slow"]
        calls += rec["calls"]
        compiles.append(rec["compile_s"])
        extra = {k: rec[k] for k in ("hlo_fft_ops", "eigen_off", "cpus", "jax") if k in rec} or extra
        if not (rec["hangs"] or rec["slow"]):
            break
        restarts += 1
    import statistics

    out = {"model": model, "mitigation": mitigation, "calls": calls, "hangs": hangs, "slow_timeouts": slow,
           "median_s": round(statistics.median(times), 4) if times else None,
           "mean_s": round(statistics.fmean(times), 4) if times else None,
           "max_s": round(max(times), 4) if times else None,
           "compile_s": compiles, "restarts": restarts, "cell_wall_s": round(time.perf_counter() - cell_start, 1),
           "particles": args.particles, "chains": args.chains, **extra}
    print(json.dumps(out), flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mitigation", default="none,eigen_off,chain_map", help=f"comma list of {MITIGATIONS}")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {MODELS}")
    ap.add_argument("--calls", type=int, default=40, help="compiled calls per (model, mitigation)")
    ap.add_argument("--max-seconds-per-cell", type=float, default=90.0, help="stop calling after this (s)")
    ap.add_argument("--timeout-factor", type=float, default=20.0, help="per-call timeout = factor x median")
    ap.add_argument("--min-timeout", type=float, default=10.0, help="floor of the per-call timeout (s)")
    ap.add_argument("--first-timeout", type=float, default=300.0, help="timeout of the first call (s)")
    ap.add_argument("--particles", type=int, default=256)
    ap.add_argument("--gp-points", type=int, default=20, help="observations of the GP regression")
    ap.add_argument("--probe-seconds", type=float, default=5.0,
                    help="after a timeout, CPU use is measured this long: < 5%% of a core = hang, else slow")
    ap.add_argument("--cache-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "smcppl_hang_repro_cache"),
                    help="JAX persistent compilation cache (restarts and reruns skip compiling); '' = off")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--first-call", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=1e9, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    # `timeout`/kill of this parent: SystemExit makes subprocess.run kill the running worker too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    mitigations = args.mitigation.split(",")
    models = args.models.split(",")
    for name, allowed, given in (("mitigation", MITIGATIONS, mitigations), ("model", MODELS, models)):
        bad = [g for g in given if g not in allowed]
        if bad:
            ap.error(f"unknown {name} {bad}; choose from {list(allowed)}")
    for model in models:
        for mitigation in mitigations:
            run_cell(args, model, mitigation)


if __name__ == "__main__":
    main()
