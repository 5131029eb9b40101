"""Input checks of the correctors: each setting of :class:`~smcppl.inference.correctors.corrector.FeynmanKacCorrector`
validated by one named helper (scalars through :mod:`smcppl.core.checks`), and :func:`check_functions`,
which probes the user's score, density and reward functions before anything is compiled. Every error
names the offending setting and what is expected."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.checks import finite_float, one_of, positive_int, renamed_keyword
from smcppl.core.plan import ONE_SHOT_COMPILER_OPTIONS, kept_for_signature
from smcppl.inference.correctors.steering import POTENTIALS

if TYPE_CHECKING:
    from smcppl.inference.correctors.corrector import FeynmanKacCorrector

__all__ = ["as_scores", "as_betas", "as_noise", "as_event_shape", "as_times", "as_log_densities", "as_potential",
           "as_callable_or_none", "as_name", "num_sde_steps_keyword", "check_functions"]


def as_scores(scores: Union[Callable, Sequence[Callable]]) -> Tuple[Callable, ...]:
    """A non-empty tuple of score functions ``(x, t) -> grad_x log q_t(x)`` (one function is a tuple of one)."""
    if callable(scores):
        scores = (scores,)
    try:
        scores = tuple(scores)
    except TypeError:
        raise TypeError(f"scores must be a score function or a sequence of them, got {type(scores).__name__}.")
    if not scores:
        raise ValueError("scores is empty: give at least one score function.")
    for i, s in enumerate(scores):
        if not callable(s):
            raise TypeError(f"scores[{i}] must be a function (x, t) -> score, got {type(s).__name__}.")
    return scores


def as_betas(betas: Union[float, Sequence[float]], num_scores: int) -> Tuple[float, ...]:
    """One finite exponent per score function, with ``sum(betas) > 0``."""
    b = np.atleast_1d(np.asarray(betas, dtype=float))
    if b.ndim != 1 or b.shape[0] != num_scores:
        raise ValueError(f"betas must have one entry per score function: got {b.size} beta(s) "
                         f"(shape {np.shape(betas)}) for {num_scores} score function(s).")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"betas must be finite, got {b.tolist()}.")
    if not b.sum() > 0:
        raise ValueError(f"sum(betas) must be > 0 (the initial target is N(0, v / sum(betas))), got {b.sum()}.")
    return tuple(float(x) for x in b)


def as_noise(noise: Union[float, Callable]) -> Union[float, Callable]:
    """``eta >= 0`` (``sigma_t = eta g_t``) as a float, or a function ``t -> sigma_t`` as given."""
    if callable(noise):
        return noise
    eta = finite_float(noise, "noise")
    if eta < 0:
        raise ValueError(f"noise (eta, with sigma_t = eta * g_t) must be >= 0, got {eta}.")
    return eta


def as_event_shape(event_shape: Union[int, Sequence[int], None]) -> Tuple[int, ...]:
    """The shape of one particle, a tuple of positive ints (an int ``d`` is ``(d,)``); required."""
    if event_shape is None:
        raise ValueError("event_shape is required: the shape of one particle, e.g. (2,) for 2-D points.")
    if isinstance(event_shape, (int, np.integer)):
        event_shape = (int(event_shape),)
    event_shape = tuple(int(e) for e in event_shape)
    if any(e <= 0 for e in event_shape):
        raise ValueError(f"event_shape must have positive entries, got {event_shape}.")
    return event_shape


def as_times(times: Optional[Sequence[float]], t_min: float, num_sde_steps: int) -> Tuple[float, np.ndarray]:
    """``(t_min, grid)``: ``t_min`` in ``[0, 1)`` and the ``num_sde_steps + 1`` grid times, strictly
    decreasing within ``[0, 1]`` (default: uniform from 1 to ``t_min``)."""
    t_min = finite_float(t_min, "t_min")
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must be in [0, 1), got {t_min}.")
    if times is None:
        times = np.linspace(1.0, t_min, num_sde_steps + 1)
    times = np.asarray(times, dtype=float)
    if times.shape != (num_sde_steps + 1,):
        raise ValueError(f"times must have num_sde_steps + 1 = {num_sde_steps + 1} entries, got shape {times.shape}.")
    if not (np.all(np.isfinite(times)) and np.all(np.diff(times) < 0) and times[0] <= 1.0 and times[-1] >= 0.0):
        raise ValueError("times must be finite and strictly decreasing within [0, 1] (from t = 1 towards 0).")
    return t_min, times


def as_log_densities(log_densities: Union[Callable, Sequence[Callable], None],
                     num_scores: int) -> Optional[Tuple[Callable, ...]]:
    """None, or one function ``(x, t) -> log q_t(x)`` per score function."""
    if log_densities is None:
        return None
    log_densities = (log_densities,) if callable(log_densities) else tuple(log_densities)
    if len(log_densities) != num_scores or not all(callable(f) for f in log_densities):
        raise ValueError(f"log_densities must be one function (x, t) -> log q_t(x) per score function: got "
                         f"{len(log_densities)} for {num_scores} score function(s).")
    return log_densities


def as_potential(potential: str) -> str:
    """A key of :data:`~smcppl.inference.correctors.steering.POTENTIALS`."""
    return one_of(potential, POTENTIALS, "potential")


def as_callable_or_none(fn: Optional[Callable], what: str, signature: str) -> Optional[Callable]:
    """``fn`` if it is None or callable, else a TypeError naming ``what`` and the expected ``signature``."""
    if fn is not None and not callable(fn):
        raise TypeError(f"{what} must be a function {signature}, got {type(fn).__name__}.")
    return fn


def as_name(name: str) -> str:
    """A non-empty string (the name of the draws in ``get_samples()``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}.")
    return name


def num_sde_steps_keyword(num_sde_steps: Optional[int], num_steps: Optional[int], stacklevel: int = 2) -> int:
    """``num_sde_steps`` as a positive int, accepting the deprecated keyword ``num_steps`` (DeprecationWarning)."""
    num_sde_steps = renamed_keyword(num_sde_steps, num_steps, "num_sde_steps", "num_steps", "corrector",
                                    stacklevel=stacklevel + 2)
    if num_sde_steps is None:
        raise TypeError("missing num_sde_steps: the number of SDE discretisation steps (Euler–Maruyama steps "
                        "from t = 1 to t_min).")
    # the old name stays in the message: errors are matched on it, and it is the name users migrate from
    return positive_int(num_sde_steps, "num_sde_steps (formerly num_steps)")


def check_functions(c: "FeynmanKacCorrector", num_probe: int = 4, params: Any = None,
                    has_params: bool = False) -> None:
    """Evaluate every score of the corrector ``c`` (and its log-densities, reward and noise function) on
    a few draws of the initial Gaussian at the first, middle and last grid times; raise a ValueError
    naming the function, ``t`` and the problem (wrong output shape, NaN/inf) before the sampler is compiled.
    The evaluations are one program, compiled without LLVM optimisations (it runs once per call:
    :data:`~smcppl.core.plan.ONE_SHOT_COMPILER_OPTIONS`) and kept on ``c`` per signature of ``params``
    (:func:`~smcppl.core.plan.kept_for_signature`); run op by op they compiled ~40 small programs, ~1 s in a
    fresh process."""
    k = c.num_sde_steps
    times = sorted({float(c.times[0]), float(c.times[k // 2]), float(c.times[k - 1])}, reverse=True)
    t_first = float(c.times[0])
    scale = math.sqrt(c.init_variance / c.total_beta)

    def evaluate(p):
        x = scale * jax.random.normal(jax.random.key(12345), (num_probe,) + c.event_shape)

        def probe(fn, label, *time):
            """``fn`` on the probe draws (with ``p`` when given); its failure named with ``label``."""
            try:
                return jax.vmap(lambda xi: fn(xi, *time, p) if has_params else fn(xi, *time))(x)
            except Exception as e:
                at = f" at t={time[0]:.4g}" if time else ""
                raise ValueError(f"{label} failed on x of shape {c.event_shape}{at}: {type(e).__name__}: {e}") from e

        return {"scores": [[probe(s, f"scores[{i}]", jnp.asarray(t, x.dtype)) for i, s in enumerate(c.scores)]
                           for t in times],
                "log_densities": [probe(f, f"log_densities[{i}]", jnp.asarray(t_first, x.dtype))
                                  for i, f in enumerate(c.log_densities or ())],
                "reward": None if c.reward is None else probe(c.reward, "reward"),
                "noise": jnp.asarray(c.noise(jnp.asarray(0.5))) if callable(c.noise) else None}

    program = kept_for_signature(c.__dict__.setdefault("_function_checks", {}), (params,), {},
                                 lambda: jax.jit(evaluate).lower(params).compile(ONE_SHOT_COMPILER_OPTIONS))
    out = jax.tree_util.tree_map(np.asarray, program(params))

    def shape_of(a):
        return tuple(getattr(a, "shape", ()))[1:]

    for t, row in zip(times, out["scores"]):
        for i, a in enumerate(row):
            if getattr(a, "shape", None) != (num_probe,) + c.event_shape:
                raise ValueError(f"scores[{i}] returned shape {shape_of(a)} for x of shape "
                                 f"{c.event_shape}; a score must have the shape of x (event_shape).")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"scores[{i}] returned NaN or inf at t={t:.4g} (on draws of the initial "
                                 f"N(0, {c.init_variance / c.total_beta:.3g} I)); check the score model, "
                                 "its time convention (data at t = 0) and the SDE.")
    for i, a in enumerate(out["log_densities"]):
        if getattr(a, "shape", None) != (num_probe,):
            raise ValueError(f"log_densities[{i}] must return a scalar per point, got shape {shape_of(a)}.")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"log_densities[{i}] returned NaN or inf at t={t_first:.4g} on draws of the initial "
                             "Gaussian; it must be log q_t(x) of the matching score model.")
    if c.reward is not None:
        r = out["reward"]
        if getattr(r, "shape", None) != (num_probe,):
            raise ValueError(f"reward must return a scalar per point, got shape {shape_of(r)}.")
        if not np.all(np.isfinite(r)):
            raise ValueError("reward returned NaN or inf on draws of the initial Gaussian.")
    if callable(c.noise):
        sig = out["noise"]
        if sig.shape != () or not np.isfinite(sig) or float(sig) < 0:
            raise ValueError(f"noise(t) must return a finite scalar >= 0, got {sig} at t=0.5.")
