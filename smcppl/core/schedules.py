"""Tempering schedules: the next temperature chosen from the particles, or a fixed ladder.

Adaptive rule (bisection): given current log-weights ``l`` and per-particle log-likelihoods
``L_i``, pick the largest ``delta in (0, 1 - beta]`` whose incremental weights ``exp(delta * L_i)``
keep the diversity at ``target``:

* ``"ess"``:  ``ESS(l + delta L) / N = target``;
* ``"cess"``: conditional ESS (Zhou, Johansen & Aston 2016)
  ``(sum_i W_i g_i)^2 / sum_i W_i g_i^2 = target`` with ``g_i = exp(delta L_i)`` — correct also when
  the particles carry unequal weights (ESS-triggered or entropic resampling).

Both decrease in ``delta``, so bisection is well posed. ``delta`` is floored at ``min_increment`` so
that a run always advances.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.weights import conditional_ess_ratio, ess_ratio, sanitize

__all__ = ["next_temperature", "validate_schedule"]


def next_temperature(log_likelihood, log_weights, beta, target=0.5, criterion="cess", num_iter=50,
                     min_increment=1e-6):
    """Next inverse temperature ``beta' = beta + delta`` by bisection on the (conditional) ESS."""
    ll = sanitize(log_likelihood)
    lw = sanitize(log_weights)
    remaining = jnp.maximum(1.0 - beta, 0.0)

    if criterion == "cess":
        def measure(delta):
            inc = jnp.where(jnp.isfinite(ll), delta * ll, jnp.where(delta > 0, -jnp.inf, 0.0))
            return conditional_ess_ratio(lw, inc)
    elif criterion == "ess":
        def measure(delta):
            inc = jnp.where(jnp.isfinite(ll), delta * ll, jnp.where(delta > 0, -jnp.inf, 0.0))
            return ess_ratio(lw + inc) * jnp.where(jnp.all(~jnp.isfinite(lw + inc)), 0.0, 1.0)
    else:
        raise ValueError(f"criterion must be 'ess' or 'cess', got {criterion!r}.")

    # one loop: its first pass (i = -1) tests the whole remaining increment (taken if it keeps the target),
    # then num_iter halvings of [0, remaining], stopped once the bracket no longer changes (its midpoint rounds
    # to an end: in float32 after ~25-30 of the 50; a fixed point of the halving, so the result is the same as
    # after all of them). The test of the whole increment inside the loop, not before it, compiles the
    # measure once instead of twice.
    def cond(carry):
        i, _, _, changed, _ = carry
        return (i < num_iter) & changed

    def body(carry):
        i, lo, hi, _, whole_ok = carry
        first = i < 0
        point = jnp.where(first, hi, 0.5 * (lo + hi))
        ok = measure(point) >= target
        new_lo = jnp.where(first | ~ok, lo, point)
        new_hi = jnp.where(first | ok, hi, point)
        changed = jnp.where(first, ~ok, (new_lo != lo) | (new_hi != hi))
        return i + 1, new_lo, new_hi, changed, jnp.where(first, ok, whole_ok)

    start = (-1, jnp.zeros_like(remaining), remaining, jnp.array(True), jnp.array(False))
    _, lo, _, _, whole_ok = jax.lax.while_loop(cond, body, start)
    delta = jnp.where(whole_ok, remaining, jnp.maximum(lo, jnp.minimum(min_increment, remaining)))
    new_beta = beta + delta
    # snap to 1 when within float tolerance
    return jnp.where(new_beta >= 1.0 - 1e-6, 1.0, new_beta).astype(jnp.result_type(beta, float))


def validate_schedule(schedule):
    """Check a fixed tempering ladder: increasing, in (0, 1], ending at 1. Returns a NumPy array."""
    s = np.asarray(schedule, dtype=float).ravel()
    if s.size == 0:
        raise ValueError("The fixed tempering schedule is empty; give increasing temperatures ending at 1.0.")
    if s[0] == 0.0:
        s = s[1:]
    if np.any(~np.isfinite(s)) or np.any(s <= 0) or np.any(s > 1) or np.any(np.diff(s) <= 0):
        raise ValueError(f"The fixed tempering schedule must be strictly increasing in (0, 1]; got {schedule!r}.")
    if not np.isclose(s[-1], 1.0):
        raise ValueError(f"The fixed tempering schedule must end at 1.0 (the posterior); it ends at {s[-1]}.")
    s[-1] = 1.0
    return s
