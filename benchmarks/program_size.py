"""Where the size of ``TemperedSMC``'s compiled program goes: fused XLA kernels per part of the sampler (CPU).

    python benchmarks/program_size.py                              # challenger, default settings
    python benchmarks/program_size.py --problems challenger,conjugate,breast_cancer --compile-rounds 3

XLA's CPU compilation time grows with the number of fused kernels in the optimised program (each is compiled
by LLVM); unlike compile times on a shared machine, that count is deterministic. This script lowers and
compiles the one-chain program ``SMC(TemperedSMC(model), N).run`` runs (``jit(run_one).lower(...).compile()``,
the persistent cache off) with every function listed in ``PARTS`` wrapped in a ``jax.named_scope``, then
counts the fused kernels (and all HLO instructions) of the optimised HLO by the (two) outermost parts named in
each kernel's ``op_name`` (``(rest)``: none: the engine's loop, the trace, key splitting). A ``+rng`` suffix marks
kernels of JAX's threefry hash (random draws and key splits: each call site compiles its own copy). Scopes
name operations; they add none, so the program is the one the runner compiles. The TemperedSMC's
Feynman–Kac functions (``fk_init``, ``fk_move``, ``fk_update``, ...) are scoped too.

One JSON line per (problem, part), then one per problem with the totals and the compile times of
``--compile-rounds`` compilations. ``--blackjax``: also the program of ``tempered.py``'s BlackJAX method (raw
BlackJAX tempered SMC with HMC, ``--num-mcmc-steps`` transitions of ``--num-integration-steps`` leapfrog
steps per stage: TemperedSMC's defaults below 10 parameters), compiled alternately with smcppl's in the same
process (``compile_s`` lists the rounds; compare medians). Problems as in ``tempered.py``.
"""
from __future__ import annotations

import argparse
import collections
import functools
import importlib
import json
import os
import re
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["SMCPPL_COMPILATION_CACHE"] = "off"

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PARTS = {  # module -> functions whose operations are attributed to them (looked up where they are imported)
    "smcppl.core.chain": ["final_draws", "count_distinct"],
    "smcppl.core.schedules": ["next_temperature"],
    "smcppl.core.resampling": ["systematic"],
    "smcppl.core.weights": ["prefix_sum", "log_normalize", "conditional_ess_ratio", "ess", "entropy"],
    "smcppl.core.engine": ["_info", "running_log_evidence", "update_lineage", "all_dead"],
    "smcppl.core.policy": ["resample", "resample_decision", "count_unique"],
    "smcppl.kernels.moves": ["move_population", "particle_preconditioner", "start_correlation"],
    "smcppl.inference.tempered.model": ["_evaluate", "proposal_fit"],
}
FK_FIELDS = ("init", "move", "update", "log_potential", "progress", "done", "record")


def emit(record):
    print(json.dumps(record), flush=True)
    return record


def _scoped(fn, name):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.named_scope("S_" + name):
            return fn(*args, **kwargs)
    return wrapped


def install_scopes():
    """Wrap every function of ``PARTS`` in a named scope, in its module and wherever it was imported."""
    for module_name in PARTS:
        importlib.import_module(module_name)
    modules = [m for name, m in list(sys.modules.items()) if name.startswith("smcppl") and m is not None]
    for module_name, names in PARTS.items():
        module = sys.modules[module_name]
        for name in names:
            original = getattr(module, name)
            wrapped = _scoped(original, name)
            for m in modules:
                if getattr(m, name, None) is original:
                    setattr(m, name, wrapped)


def scoped_plan(plan):
    """The plan with its Feynman–Kac functions and postprocess in named scopes (``fk_<field>``)."""
    build_fk = plan.fk

    def fk(*args):
        model = build_fk(*args)
        return model._replace(**{f: _scoped(getattr(model, f), "fk_" + f) for f in FK_FIELDS
                                 if callable(getattr(model, f, None))})

    return plan._replace(fk=fk, postprocess=_scoped(plan.postprocess, "fk_postprocess"))


def part_of(line: str) -> str:
    m = re.search(r'op_name="([^"]*)"', line)
    name = m.group(1) if m else ""
    scopes = re.findall(r"S_(\w+)", name)
    part = "/".join(scopes[:2]) if scopes else "(rest)"
    return part + ("+rng" if "threefry" in name else "")


def count(compiled) -> tuple:
    """(fused kernels, instructions) per part of a compiled program's optimised HLO."""
    kernels, instructions = collections.Counter(), collections.Counter()
    for line in compiled.as_text().split("\n"):
        if " = " in line:
            part = part_of(line)
            instructions[part] += 1
            kernels[part] += " fusion(" in line
    return kernels, instructions


def compile_times(lower: dict, rounds: int) -> tuple:
    """Lower (untimed) and compile each program ``rounds`` times, alternating (JAX's in-memory caches cleared
    and a new lowering each time); ``(times by name, compiled by name)``."""
    times, compiled = {name: [] for name in lower}, {}
    for r in range(max(rounds, 1)):
        for name in (list(lower) if r % 2 == 0 else list(lower)[::-1]):
            jax.clear_caches()  # else an equal program is answered from JAX's in-memory cache of executables
            lowered = lower[name]()
            t0 = time.perf_counter()
            compiled[name] = lowered.compile()
            times[name].append(round(time.perf_counter() - t0, 3))
    return times, compiled


def measure(problem: str, n: int, rounds: int, blackjax: bool, k: int, L: int):
    import tempered

    from smcppl import SMC, TemperedSMC
    from smcppl.core.policy import validate_resampling

    model, data, _ = tempered.get_problem(problem)
    smc = SMC(TemperedSMC(model), num_particles=n, num_chains=1)
    plan = scoped_plan(smc.algorithm.build(n, **data))
    run_one = smc._run_one_fn(plan, validate_resampling(plan.resampling))
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    tuning = None if plan.pilot is None else plan.pilot.blank
    lower = {"smcppl": lambda: jax.jit(run_one).lower(key, plan.data, tuning, plan.settings)}
    if blackjax:
        bjx = tempered.BlackJAXMethod(model, data, n, k, L)._fn
        lower["blackjax"] = lambda: jax.jit(bjx).lower(jax.random.key(0))
    times, compiled = compile_times(lower, rounds)
    kernels, instructions = count(compiled["smcppl"])
    total_k, total_i = sum(kernels.values()), sum(instructions.values())
    for part, kk in sorted(kernels.items(), key=lambda kv: -kv[1]):
        emit({"bench": "program_size", "problem": problem, "N": n, "part": part, "fusions": kk,
              "share": round(kk / max(total_k, 1), 4), "instructions": instructions[part]})
    emit({"bench": "program_size_total", "problem": problem, "N": n, "program": "smcppl", "fusions": total_k,
          "instructions": total_i, "compile_s": times["smcppl"], "jax": jax.__version__})
    if blackjax:
        kernels, instructions = count(compiled["blackjax"])
        emit({"bench": "program_size_total", "problem": problem, "N": n, "program": "blackjax",
              "num_mcmc_steps": k, "num_integration_steps": L, "fusions": sum(kernels.values()),
              "instructions": sum(instructions.values()), "compile_s": times["blackjax"], "jax": jax.__version__})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--problems", default="challenger")
    p.add_argument("--N", type=int, default=1000)
    p.add_argument("--compile-rounds", type=int, default=1)
    p.add_argument("--blackjax", action="store_true", help="also compile tempered.py's BlackJAX program")
    p.add_argument("--num-mcmc-steps", type=int, default=5)
    p.add_argument("--num-integration-steps", type=int, default=5)
    a = p.parse_args(argv)
    install_scopes()
    for problem in a.problems.split(","):
        measure(problem, a.N, a.compile_rounds, a.blackjax, a.num_mcmc_steps, a.num_integration_steps)


if __name__ == "__main__":
    main()
