"""What an algorithm hands to the runner: a :class:`Plan` (the Feynman–Kac model and how to read its
particles), optionally with a :class:`Pilot` (a tuning run of the same program before the main runs).

Samplers build plans; the front end (:class:`smcppl.SMC`) runs them. Both import this module, so that
no sampler depends on the front end (ARCHITECTURE.md, "Parts and who may import whom").
"""
from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import jax
import numpy as np

from smcppl.core.checks import renamed_keyword
from smcppl.core.engine import FeynmanKac
from smcppl.core.policy import Resampling

__all__ = ["Plan", "Pilot", "split_data", "input_signature", "settings_signature", "kept_for_signature",
           "run_abstractly",
           "ONE_SHOT_COMPILER_OPTIONS"]


class Pilot(NamedTuple):
    """A pilot run: the plan's own compiled program run once (one chain, key independent of the
    chains') before the main runs, whose output fixes the ``tuning`` input of every main run.

    blank: the ``tuning`` input of the pilot run itself (same structure, shapes and dtypes as what
    ``tables`` returns, so that the pilot and the main runs share one compiled program).
    tables(output) -> tuning input of the main runs, from the pilot's :class:`~smcppl.core.engine.SMCOutput`.
    num_particles: the pilot's population size; equal to the plan's (the default) the pilot re-uses the
    main runs' compiled program, otherwise it is built and compiled on its own.

    Main runs whose kernels and potentials are fixed by an independent pilot keep ``Z_hat`` exactly
    unbiased (conditionally on the pilot), unlike kernels tuned on the particles they move.
    """

    blank: Any
    tables: Callable
    num_particles: int


class _PlanFields(NamedTuple):
    fk: FeynmanKac
    num_stages: Optional[int]
    max_stages: int
    postprocess: Callable
    resampling: Resampling = Resampling()
    summary_fn: Optional[Callable] = None
    metadata: Mapping = MappingProxyType({})  # read-only default (no shared mutable dict)
    attrs: Mapping = MappingProxyType({})
    name: str = "SMC"
    progress_name: str = "progress"
    data: Any = None
    entropic_correction: bool = False  # an unset Entropic.correct means True (the plan estimates log Z)
    pilot: Optional[Pilot] = None
    draw_identity: Optional[Callable] = None
    settings: Any = None


class Plan(_PlanFields):
    """What an algorithm hands to the runner.

    fk: the Feynman–Kac model, or a function ``data -> FeynmanKac`` of the array inputs ``data``
    (then jitted code takes the data as an argument and is reused for new data of the same shapes);
    with a ``pilot``, a function ``(data, tuning) -> FeynmanKac``; with ``settings``, a function
    ``(data, tuning, settings) -> FeynmanKac`` (``tuning`` None without a pilot).
    settings: numeric settings that the compiled program takes as an input instead of holding them as
    constants (a pytree of scalars, e.g. ``TemperedSMC``'s target ESS), so that an algorithm that differs
    only in them runs the same compiled program (the persistent compilation cache finds it in a new
    object or process); ``fk(data)`` without them uses the algorithm's values as constants.
    num_stages: engine steps of a fixed-length run (after the initialisation), or None for an adaptive
    run of at most ``max_stages`` (``num_steps`` is its deprecated name). postprocess(particles[, data]) -> dict name
    -> [N, ...] arrays (e.g. constrained values
    and deterministic sites); jit-able. resampling: the algorithm's default policy.
    summary_fn: optional per-stage statistic. entropic_correction: resolve an unset
    ``Entropic.correct`` to True (samplers that estimate ``log Z``). metadata: anything the exporter needs
    (observed data, dims, log-likelihood function, site names; with a ``"data"`` entry, its ``sample_stats`` and
    ``pointwise_log_likelihood`` are functions of ``(particles, data)``, so that they need not hold the data
    and stay the same objects from call to call); attrs: settings (str/int/float only).
    pilot: an optional :class:`Pilot` run before the main runs. progress_name: what ``fk.progress``
    measures, shown by progress bars (e.g. ``"beta"``). draw_identity(particles) -> the part of the
    particles that tells draws apart in the distinct-draw count behind the health check's ``collapse``
    flag (default: the whole particle; SMC² counts its parameters, not the inner filters they carry).
    """

    __slots__ = ()

    def __new__(cls, *args, num_steps: Optional[int] = None, **kwargs):
        if num_steps is not None:
            given = args[1] if len(args) > 1 else kwargs.pop("num_stages", None)
            kwargs["num_stages"] = renamed_keyword(given, num_steps, "num_stages", "num_steps", "Plan")
        return super().__new__(cls, *args, **kwargs)


def split_data(args: Sequence, kwargs: dict, static: bool = False) -> tuple[list, Callable]:
    """Split model inputs into array leaves (traced by jit) and a function rebuilding the inputs.
    Python scalars and 0-d arrays stay static (compile-time constants); ``static=True`` keeps every input
    static (for models that turn an input into a Python value, e.g. ``int(counts.sum())``)."""
    leaves, treedef = jax.tree_util.tree_flatten((tuple(args), dict(kwargs)))
    is_array = [not static and isinstance(x, (np.ndarray, jax.Array)) and np.ndim(x) > 0 for x in leaves]
    # device_put, not jnp.asarray: the latter compiles a small program per shape (~10 ms in a fresh process)
    dyn = [x if isinstance(x, jax.Array) else jax.device_put(x) for x, a in zip(leaves, is_array) if a]

    def merge(dyn_values):
        it = iter(dyn_values)
        full = [next(it) if a else x for x, a in zip(leaves, is_array)]
        return jax.tree_util.tree_unflatten(treedef, full)

    return dyn, merge


# XLA options of the programs that run once per call or once per model: the model checks (the first evaluation
# of a NumPyro model at a prior draw, the scan body's broadcasting check). LLVM's optimisations (level 0 = none)
# are not worth their compile time there: the first evaluation of a Dirichlet + LKJ model compiled in 1.9 s
# with them and 1.3 s without, that of the 31-d logistic regression in 0.48 s and 0.26 s. DebugOptions, valid
# on every backend.
ONE_SHOT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def run_abstractly(fn: Callable, *args) -> Any:
    """``fn(*args)`` under an abstract trace (``jax.eval_shape``): JAX operations are recorded, not computed, so
    running a model for its structure compiles nothing (run op by op, each operation compiles a small XLA
    program in a fresh process, ~20 ms each). ``args`` may be ``jax.ShapeDtypeStruct``. Returns what ``fn``
    returned, any pytree of Python values; the arrays in it are tracers of the finished trace, to read shapes and
    dtypes from only. Exceptions raised by ``fn`` propagate (a model that only a concrete run can take, e.g. one
    branching in Python on a value, raises a JAX tracer error)."""
    box = []

    def probe(*a):
        box.append(fn(*a))
        return ()

    jax.eval_shape(probe, *args)
    return box[0]


def kept_for_signature(store: dict, args: Sequence, kwargs: dict, compute: Callable, settings: Any = ()) -> Any:
    """``compute()``, kept in ``store`` for the latest :func:`input_signature` of ``(args, kwargs)`` (and hashable
    ``settings``): what a front end derives from the inputs' structure, shapes and dtypes alone (a compiled
    program, a model's inspection, a check run on a prior draw) is derived once, not on every call. Inputs that
    cannot be hashed are never kept."""
    signature = input_signature(args, kwargs)
    signature = None if signature is None else (signature, settings)
    if signature is not None and signature in store:
        return store[signature]
    value = compute()
    if signature is not None:
        store.clear()
        store[signature] = value
    return value


def _digest(x) -> str:
    """A digest of an array's bytes (its contents, for keys of compiled programs that hold it as a constant)."""
    return hashlib.blake2b(np.ascontiguousarray(jax.device_get(x)).tobytes(), digest_size=16).hexdigest()


def input_signature(args: Sequence, kwargs: dict, by_value: bool = False) -> Optional[tuple]:
    """Hashable description of model inputs for the compiled-code cache: structure, array shapes and
    dtypes (arrays are arguments of the compiled code) and the values of everything else (Python numbers,
    0-d arrays, strings: compile-time constants). None if a value cannot be hashed (then no caching).
    ``by_value``: arrays by their contents too (a digest of their bytes), for code that holds some array
    inputs as constants (a model that calls ``int(counts.sum())``): equal inputs then reuse its code."""
    leaves, treedef = jax.tree_util.tree_flatten((tuple(args), dict(kwargs)))
    sig = []
    for x in leaves:
        if isinstance(x, (np.ndarray, jax.Array)) and np.ndim(x) > 0:
            sig.append(("array", tuple(np.shape(x)), str(x.dtype), _digest(x) if by_value else None))
        elif isinstance(x, (np.ndarray, jax.Array, np.generic)):
            sig.append(("scalar", str(x.dtype), np.asarray(x).item()))
        else:
            try:
                hash(x)
            except TypeError:
                return None
            sig.append(("value", type(x).__name__, x))
    return (treedef, tuple(sig))


def settings_signature(algorithm: Any, max_hashed_size: int = 4096) -> tuple:
    """Hashable description of an algorithm object's public settings (attributes not starting with ``_``),
    so that a compiled program kept for the object is not re-used after a setting was changed in place
    (``smc.algorithm.max_stages = 100``). Leaves: hashable values (numbers, strings, functions by identity)
    as they are, arrays of at most ``max_hashed_size`` entries by their contents, larger arrays (e.g. a
    policy's weights) and unhashable objects by their identity."""
    parts = []
    for name, value in sorted(vars(algorithm).items()):
        if name.startswith("_"):
            continue
        leaves, treedef = jax.tree_util.tree_flatten(value)
        sig = []
        for x in leaves:
            if isinstance(x, (np.ndarray, jax.Array, np.generic)):
                try:
                    if np.size(x) > max_hashed_size:
                        raise ValueError("large")
                    digest = _digest(x)
                except Exception:  # large, a tracer, a key array: by identity
                    digest = id(x)
                sig.append(("array", tuple(np.shape(x)), str(x.dtype), digest))
                continue
            try:
                hash(x)
                sig.append(("value", x))
            except TypeError:
                sig.append(("id", id(x)))
        parts.append((name, treedef, tuple(sig)))
    return tuple(parts)
