"""Input checks shared by every sampler: one way to validate a setting, one wording of the error.

Each check returns the value in its canonical Python type or raises a ``TypeError``/``ValueError`` that
names the setting (``what``), the value received and what is expected, before anything is compiled.
"""
from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import numpy as np

__all__ = ["positive_int", "finite_float", "positive_float", "open_unit_interval", "one_of", "renamed_keyword",
           "prng_key", "non_finite_inputs", "non_finite_advice"]


def positive_int(value, what: str) -> int:
    """``int(value)`` if it is a positive integer (an integral float such as ``5.0`` is accepted; a bool
    is not), else a TypeError/ValueError naming ``what``."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a positive integer, got {value!r}.")
    if not isinstance(value, (int, np.integer)):
        try:
            ok = float(value) == int(value)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise TypeError(f"{what} must be a positive integer, got {value!r}.")
    value = int(value)
    if value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value}.")
    return value


def finite_float(value, what: str) -> float:
    """``float(value)`` if it is a finite real number, else a TypeError/ValueError naming ``what``."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a real number, got {value!r}.")
    try:
        f = float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be a real number, got {value!r}.") from e
    if not math.isfinite(f):
        raise ValueError(f"{what} must be finite, got {value!r}.")
    return f


def positive_float(value, what: str) -> float:
    """A finite real number ``> 0``."""
    f = finite_float(value, what)
    if not f > 0:
        raise ValueError(f"{what} must be positive, got {value!r}.")
    return f


def open_unit_interval(value, what: str) -> float:
    """A real number in ``(0, 1)`` (a fraction such as a target ESS or acceptance rate)."""
    f = finite_float(value, what)
    if not 0.0 < f < 1.0:
        raise ValueError(f"{what} must be in (0, 1), got {value!r}.")
    return f


def one_of(value: Any, choices, what: str) -> Any:
    """``value`` if it is one of ``choices`` (a tuple or a mapping's keys), else a ValueError naming ``what``
    and listing the choices."""
    if value not in choices:
        raise ValueError(f"{what} must be one of {tuple(choices)}, got {value!r}.")
    return value


def renamed_keyword(new_value: Any, old_value: Any, new: str, old: str, owner: str, stacklevel: int = 3) -> Any:
    """The value of a keyword that was renamed from ``old`` to ``new`` (the vocabulary of ARCHITECTURE.md):
    ``new_value``, or ``old_value`` with a ``DeprecationWarning`` naming ``new`` when only the old keyword
    was given; a TypeError when both were. ``stacklevel`` points the warning at the user's call."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{owner}: {new} and {old} given together ({old} is the deprecated name of {new}): "
                        f"pass {new} only.")
    warnings.warn(f"{owner}({old}=...) is deprecated: use {new}=... instead.", DeprecationWarning,
                  stacklevel=stacklevel)
    return old_value


def prng_key(value, what: str = "rng_key", hint: str = "For several independent runs pass one key and set num_chains."):
    """One JAX PRNG key as a typed key array (``jax.random.key``'s kind, shape ``()``).

    A legacy raw key (``jax.random.PRNGKey(0)``: ``uint32[2]``, also as a NumPy array) is wrapped with
    ``jax.random.wrap_key_data``: the same random stream, so ``PRNGKey(s)`` and ``key(s)`` give the same
    run and share one compiled program. Anything else (an integer seed, a batch of keys, floats) is a
    TypeError naming ``what`` and what to pass instead (``hint``: the caller's advice, appended)."""
    import jax
    import jax.numpy as jnp

    if isinstance(value, (jax.Array, np.ndarray)):
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            if value.shape == ():
                return value
        elif value.dtype == np.uint32 and value.shape == (2,):
            return jax.random.wrap_key_data(jax.device_put(value), impl="threefry2x32")
        got = f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    else:
        got = f"{type(value).__name__} {value!r}"[:80]
    raise TypeError(f"{what} must be one JAX PRNG key, e.g. jax.random.key(0) (or jax.random.PRNGKey(0)); got {got}. "
                    f"{hint}".rstrip())


def non_finite_inputs(model, args, kwargs) -> list:
    """Labels of a model's inputs (``args``, ``kwargs``) that hold NaN or infinite numbers, e.g.
    ``"argument 'y' (position 0)"``: what an error names when the model's density fails there."""
    import jax

    try:
        params = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    labelled = [(f"argument {positional[i]!r} (position {i})" if i < len(positional) else
                 f"positional argument {i}", a) for i, a in enumerate(args)]
    labelled += [(f"argument {k!r}", v) for k, v in kwargs.items()]

    def bad(leaf):
        v = np.asarray(leaf) if isinstance(leaf, (np.ndarray, np.generic, jax.Array, float, complex)) else None
        return v is not None and np.issubdtype(v.dtype, np.inexact) and not np.all(np.isfinite(v))

    return [label for label, value in labelled if any(bad(x) for x in jax.tree_util.tree_leaves(value))]


def non_finite_advice(model, args, kwargs) -> str:
    """The sentence an error or a health flag adds when the model's inputs hold NaN or infinite values (the usual
    cause of a density that fails everywhere), naming them (:func:`non_finite_inputs`); ``""`` when none do."""
    bad = non_finite_inputs(model, args, kwargs)
    if not bad:
        return ""
    return (f"The model's input {', '.join(bad)} contains NaN or infinite values: remove or impute them (observed "
            "data can instead be masked with obs_mask= or numpyro.handlers.mask).")
