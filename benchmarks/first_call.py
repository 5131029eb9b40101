"""Where the first call of ``SMC(TemperedSMC(model), N).run`` goes in a fresh process, per source tree (CPU).

    python benchmarks/first_call.py                                  # this checkout, both problems, 3 rounds
    python benchmarks/first_call.py --trees /path/old,/path/new      # two checkouts side by side (before/after)
    python benchmarks/first_call.py --xla-flags "|--xla_backend_optimization_level=1"   # XLA options side by side

Each round starts, for every tree in turn (order alternating by round, so that a change in the machine's
load falls on both), fresh Python processes that import smcppl from that tree and run a one-chain
``SMC(TemperedSMC(model), N, num_chains=1).run`` twice (new key): once with an empty persistent
compilation cache (``SMCPPL_COMPILATION_CACHE`` = a new folder: **cold**), once more with the cache that
run filled (**warm**, what a user meets re-running a notebook in a new kernel). One JSON line per process:

* ``import_s`` (JAX, NumPyro, smcppl), ``first_call_s`` (the whole first ``run``), its ``compile_seconds``
  and ``run_seconds`` (pilot + chain) as the runner reports them, ``second_call_s`` and its ``run_seconds``;
* ``changed_settings_call_s``: then the first call of a new ``TemperedSMC(model, target_ess=0.6,
  num_integration_steps=7)`` in the same process (a user changing settings), with its compile and run times;
* the first call's time in JAX's compile stages, summed over every program it compiled (the sampler's
  program and the small eager ones), from JAX's monitoring events: ``trace_s`` (Python tracing to jaxpr),
  ``lower_s`` (jaxpr to StableHLO), ``xla_s`` (XLA compilation; 0 on a cache hit), ``cache_read_s``, and
  ``programs`` (how many programs were lowered); ``fusions``: the fused kernels of the sampler's optimised
  program (each compiled by LLVM; a deterministic measure of the program's size, where times are noisy).

Problems: ``challenger`` (2-parameter logistic regression, ``zoo.logistic_regression``), ``gauss20``
(``zoo.conjugate_gaussian``, d = 20) and, on request, ``breast_cancer`` (``tempered.py``'s 31-parameter
logistic regression on 569 rows, where the run is long enough to show a change of the generated code's
speed). Times are wall seconds on a shared machine: compare trees within a round (ratios), not across runs. ``--xla-flags`` adds variants: ``|``-separated values of ``XLA_FLAGS``
(an empty one = XLA's defaults), run for every tree in the same alternating order.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

PROBLEMS = ("challenger", "gauss20")
EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
          "/jax/core/compile/backend_compile_duration": "xla_s",
          "/jax/compilation_cache/cache_retrieval_time_sec": "cache_read_s"}


def emit(record):
    print(json.dumps(record), flush=True)
    return record


def child(problem: str, n: int, launch: float):
    import jax

    totals = dict.fromkeys(EVENTS.values(), 0.0)
    counts = {"programs": 0}

    def listen(event, duration, **_):
        name = EVENTS.get(event)
        if name is not None:
            totals[name] += duration
            counts["programs"] += name == "lower_s"

    jax.monitoring.register_event_duration_secs_listener(listen)
    import numpy as np
    import numpyro  # noqa: F401

    import smcppl
    from smcppl import SMC, TemperedSMC
    from smcppl.models import zoo

    t_import = time.time() - launch
    if problem == "challenger":
        d = zoo.challenger_data()
        model, args, kwargs = zoo.logistic_regression, (d["x"],), {"y": d["y"]}
    elif problem == "breast_cancer":  # the 31-parameter logistic regression of tempered.py
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import tempered

        d = tempered.breast_cancer_data()
        model, args, kwargs = tempered.breast_cancer_logistic, (d["x"],), {"y": d["y"]}
    else:
        model, args, kwargs = zoo.conjugate_gaussian, (), dict(zoo.conjugate_gaussian_data())
    smc = SMC(TemperedSMC(model), n, num_chains=1, progress_bar=False)
    t0 = time.perf_counter()
    smc.run(jax.random.key(1), *args, **kwargs)
    first = time.perf_counter() - t0
    timing, stages = dict(smc.timing), dict(totals, **counts)
    try:  # the size of the sampler's optimised program: fused XLA kernels, each compiled by LLVM
        program = next(iter(smc._compiled.values()))
        stages["fusions"] = program.as_text().count(" fusion(")
    except Exception:  # an executable read from the cache may not carry its HLO text
        stages["fusions"] = None
    t0 = time.perf_counter()
    smc.run(jax.random.key(2), *args, **kwargs)
    second = time.perf_counter() - t0
    # what a notebook user does next: the same model with another target ESS and leapfrog count (a new object)
    changed = SMC(TemperedSMC(model, target_ess=0.6, num_integration_steps=7), n, num_chains=1, progress_bar=False)
    t0 = time.perf_counter()
    changed.run(jax.random.key(3), *args, **kwargs)
    changed_s = time.perf_counter() - t0
    emit({"bench": "first_call", "problem": problem, "N": n, "import_s": t_import, "first_call_s": first,
          "compile_seconds": timing["compile_seconds"], "run_seconds": timing["run_seconds"], **stages,
          "second_call_s": second, "second_run_seconds": smc.timing["run_seconds"],
          "second_reused_compiled": smc.timing["reused_compiled"], "log_evidence": float(np.ravel(smc.log_evidence)[0]),
          "changed_settings_call_s": changed_s, "changed_settings_compile_seconds": changed.timing["compile_seconds"],
          "changed_settings_run_seconds": changed.timing["run_seconds"],
          "changed_settings_log_evidence": float(np.ravel(changed.log_evidence)[0]),
          "smcppl_file": smcppl.__file__})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trees", default=None, help="comma-separated source trees (default: this checkout)")
    p.add_argument("--problems", default=",".join(PROBLEMS))
    p.add_argument("--N", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--xla-flags", default="", help="|-separated XLA_FLAGS variants (empty = XLA's defaults)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--launch-time", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child(a.child, a.N, a.launch_time)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = [os.path.abspath(t) for t in a.trees.split(",")] if a.trees else [here]
    variants = [(tree, flags) for tree in trees for flags in a.xla_flags.split("|")]
    for r in range(a.rounds):
        for problem in a.problems.split(","):
            for tree, flags in (variants if r % 2 == 0 else variants[::-1]):
                folder = tempfile.mkdtemp(prefix="smcppl-first-call-")
                for cache in ("cold", "warm"):
                    env = dict(os.environ, SMCPPL_COMPILATION_CACHE=folder, PYTHONPATH=tree, XLA_FLAGS=flags)
                    env.pop("JAX_COMPILATION_CACHE_DIR", None)
                    cmd = [sys.executable, os.path.abspath(__file__), "--child", problem, "--N", str(a.N),
                           "--launch-time", repr(time.time())]
                    proc = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
                    found = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith('{"bench"')]
                    if proc.returncode or not found:
                        emit({"bench": "first_call_error", "tree": tree, "problem": problem, "cache": cache,
                              "stderr_tail": proc.stderr[-2000:]})
                        continue
                    emit({**found[-1], "tree": tree, "xla_flags": flags, "cache": cache, "round": r,
                          "load_average": os.getloadavg()[0]})
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
