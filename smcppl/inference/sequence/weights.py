"""Weight arithmetic of the sequence filter: unit scores, reweighting after one unit, look-ahead.

Unit scores ``s_t`` of the current state (:func:`unit_scores`):

* ``weights="twist"`` (LLaMPPL / twisted SMC): ``s_t = log psi(x_{1:t})``, or ``log phi(x)`` once the
  sequence is complete; the log-weight increment is ``s_t - s_{t-1}``, so the product telescopes to
  ``phi(x)``: the target is ``p(x) phi(x) / Z`` and ``log Z_hat`` estimates ``log E_p[phi(x)]``.
* ``weights="score"`` (PF of Puri et al. 2025): the PRM score ``r = exp(log psi) in [0, 1]`` becomes
  ``s_t = logit(clip(r, eps, 1 - eps))`` and *multiplies* the weight, ``l_t = r_t + s_t`` with ``r_t``
  the log-weight carried out of the resampling step: ``s_t`` alone after a resampling (resampling every
  step makes each step's weight the current score), ``l_{t-1} + s_t`` when an ESS-triggered policy
  skipped it (``w_t = w_{t-1} * odds(r_t)``).

Finished particles are absorbing: twist increment 0; in score mode a finished particle keeps its score
``s``, which multiplies its weight at each later step as it would if the population were resampled then.

Look-ahead modulation (:func:`lookahead_adjustment`): before each resampling, ``k`` successors
``x'_{ij}`` of every unfinished particle are drawn and the resampling uses ``l~_i = l_i + a_i``,
``a_i = lam (log (1/k) sum_j exp(s(x'_{ij})) - s(x_i))``, i.e. ``(1 - lam) l_i + lam (logsumexp_j
l(x'_{ij}) - log k)`` with ``l(x') = l_i + s(x') - s(x_i)``. :func:`reweight` removes ``a_i`` from the
weight at the next step when it was not used up by a resampling, or always with the auxiliary-particle-
filter correction (which keeps the twisted target exact).

Proposals (:mod:`.proposals`): a unit ``v ~ q(. | x)`` instead of ``p(. | x)`` multiplies the weight by
``rho = p(v | x) / q(v | x)`` (``log rho = 0`` for finished particles): :func:`reweight` adds ``log rho``
(twist: ``l = carried - a + s_new - s_old + log rho``; score: ``l = carried - a + s_new + log rho``), and
the first unit's weight is ``s_1 + log rho_1``. Each stage's weight is then ``G_t = (target increment)
* p / q``, so the twisted target ``p(x) phi(x) / Z`` and the unbiasedness of ``Z_hat`` are unchanged.

Look-ahead with a proposal: the ``k`` successors are drawn from the proposal too, ``x'_{ij} ~ q(. | x_i)``,
each with ``log rho_{ij} = log p(x'_{ij} | x_i) - log q(x'_{ij} | x_i)``, and

    ``a_i = lam (logsumexp_j (s(x'_{ij}) + log rho_{ij}) - log k - s(x_i))``,

i.e. ``exp(a_i / lam) = (1/k) sum_j rho_{ij} exp(s(x'_{ij})) / exp(s(x_i))``: an unbiased importance
estimate of ``E_{x' ~ p(. | x_i)}[exp(s(x'))] / exp(s(x_i))``, what the look-ahead estimates under q = p
(each successor's modulated weight ``l(x') = l_i + s(x') - s(x_i) + log rho``). With ``reuse`` the kept
successor (uniform among the k, hence itself a draw from ``q``) carries its own ``log rho`` into
:func:`reweight`. The APF correction (``correct``) divides ``exp(a_i)`` out at the next step as before:
``a_i`` is any positive function of the particle and its successors, so the weighted system stays
properly weighted for the extended target ``pi_t(x) prod_j q(x'_j | x) / k`` whatever ``q`` is.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from smcppl.core.weights import sanitize

__all__ = ["WEIGHT_MODES", "float_dtype", "unit_scores", "reweight", "lookahead_adjustment"]

WEIGHT_MODES = ("score", "twist")
_SCORE_TOL = 1e-6  # log r may exceed 0 by this much (rounding) before a score counts as > 1


def float_dtype() -> jnp.dtype:
    """The default float dtype (float64 under ``jax_enable_x64``): the dtype of the filter's weights."""
    return jnp.result_type(float)


def unit_scores(log_psi: jax.Array, log_phi: jax.Array, complete: jax.Array, weights: str = "twist",
                score_eps: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Unit scores ``s`` (in the default float dtype) and the number of invalid scores.

    twist: ``s = log phi`` where ``complete`` else ``log psi`` (NaN -> -inf). score: ``r = exp(.)``
    must lie in [0, 1]; ``s = logit(clip(r, eps, 1 - eps))``; NaN -> -inf; ``r > 1`` is invalid
    (counted, and the particle gets ``-inf``).
    """
    ft = float_dtype()
    raw = jnp.where(complete, jnp.asarray(log_phi, ft), jnp.asarray(log_psi, ft))
    if weights == "twist":
        return sanitize(raw), jnp.zeros((), jnp.int32)
    bad = raw > _SCORE_TOL
    r = jnp.clip(jnp.exp(jnp.minimum(raw, 0.0)), score_eps, 1.0 - score_eps)
    s = jnp.log(r) - jnp.log1p(-r)
    s = jnp.where(jnp.isnan(raw) | bad, -jnp.inf, s)
    return s, jnp.sum(bad).astype(jnp.int32)


def reweight(carried: jax.Array, lookahead: jax.Array, s_old: jax.Array, s_new: jax.Array, was_done: jax.Array,
             resampled: jax.Array, weights: str = "twist", correct: bool = False,
             log_ratio: Optional[jax.Array] = None) -> jax.Array:
    """Log-weights after one unit, from the log-weights ``carried`` out of the resampling step
    (the held weights if it did not resample, 0 or the entropic residual if it did).

    ``resampled`` (bool scalar): whether that step resampled. The look-ahead ``a`` of the ancestor (part of
    its held weight) is removed, ``carried - a``, unless the particles were resampled without the APF
    ``correct``\\ion (then ``a`` has been used up by the resampling). twist:
    ``l = carried - a + (s_new - s_old)`` (increment 0 for particles finished before the step). score:
    ``l = carried - a + s_new`` (multiplicative: ``s_new`` after a resampling that carries 0,
    ``l_prev + s_new`` without one). ``log_ratio``: ``log p - log q`` of the new unit when it was drawn from
    a proposal ``q`` (0 for finished particles), added in both modes; None: q = p.
    """
    remove = jnp.logical_or(~jnp.asarray(resampled), bool(correct))
    a = jnp.where(remove, lookahead, 0.0)
    if weights == "twist":
        l = carried - a + jnp.where(was_done, 0.0, s_new - s_old)
    else:
        l = carried - a + s_new
    if log_ratio is not None:
        l = l + log_ratio
    return sanitize(l)


def lookahead_adjustment(s_cur: jax.Array, s_succ: jax.Array, done: jax.Array, lam: float,
                         log_floor: Optional[float] = None) -> jax.Array:
    """``a_i = lam * (logsumexp_j s_succ[i, j] - log k - s_cur[i])`` for successor scores ``s_succ [N, k]``;
    0 for finished or dead particles; ``max(a_i, log_floor)`` if ``log_floor`` is given."""
    k = s_succ.shape[-1]
    s_succ = sanitize(s_succ)
    lme = jax.scipy.special.logsumexp(s_succ, axis=-1) - jnp.log(k)
    a = lam * (lme - s_cur)
    a = jnp.where(jnp.isnan(a), -jnp.inf, a)
    if log_floor is not None:
        a = jnp.maximum(a, log_floor)
    return jnp.where(done | ~jnp.isfinite(s_cur), 0.0, a)
