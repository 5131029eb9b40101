"""The tempered target shared by the family's samplers, and the checks of its settings.

For a prior ``p(x)`` and likelihood ``L(x)``, the tempered target at inverse temperature
``beta in [0, 1]`` is ``pi_beta(x) ∝ p(x) L(x)^beta``. Moving from ``beta`` to ``beta'`` reweights each
particle by the log-increment ``(beta' - beta) log L(x)``, whose weighted mean-exp is the stage's factor
of ``Z_hat`` (the engine sums them: ARCHITECTURE.md). :class:`~smcppl.inference.tempered.model.TemperedSMC`
(``beta``) and the BlackJAX-style API (``lambda``, :mod:`.blackjax_api`) use these same functions.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from smcppl.core.checks import open_unit_interval

__all__ = ["CRITERIA", "log_parts", "tempered_logdensity", "log_increment", "validate_target_ess",
           "validate_criterion"]

CRITERIA = ("ess", "cess")  # next temperature by bisection on the ESS or conditional ESS (core.schedules)


def log_parts(logprior_fn: Callable, loglik_fn: Optional[Callable]) -> Callable:
    """``x -> (log p(x), log L(x))``; with ``loglik_fn=None``, ``logprior_fn`` already returns both (one
    model evaluation for the two) and passes through."""
    if loglik_fn is None:
        return logprior_fn
    return lambda x: (logprior_fn(x), loglik_fn(x))


def tempered_logdensity(logprior_fn: Callable, loglik_fn: Optional[Callable], beta: jax.Array) -> Callable:
    """``x -> log p(x) + beta log L(x)``, with ``0 * log L = 0`` (``log L = -inf`` is allowed at
    ``beta = 0``)."""
    parts = log_parts(logprior_fn, loglik_fn)

    def f(x):
        lp, ll = parts(x)
        return lp + jnp.where(beta > 0, beta * ll, 0.0)
    return f


def log_increment(ll: jax.Array, delta: jax.Array) -> jax.Array:
    """``delta * log L`` for a temperature change ``delta = beta' - beta`` of either sign, with
    ``0 * (-inf) = 0`` (no change leaves the weights as they are)."""
    return jnp.where(delta == 0, 0.0, delta * ll)


def validate_target_ess(target_ess, what: str = "target_ess") -> float:
    """The target (conditional) ESS of a tempering increment as a fraction of the particles, in ``(0, 1)``."""
    return open_unit_interval(target_ess, f"{what} (a fraction of the particles)")


def validate_criterion(criterion, what: str = "criterion") -> str:
    """``"ess"`` or ``"cess"``: which effective sample size the adaptive temperature targets."""
    if criterion not in CRITERIA:
        raise ValueError(f"{what} must be 'ess' or 'cess', got {criterion!r}.")
    return criterion
