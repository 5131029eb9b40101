"""Entropic resampling (Entropic Particle Filtering, ePF: entropic annealing).

Given log-weights ``l`` (N particles) with ``p = softmax(l)``, ``ESS = 1/sum p_i^2`` and normalised
entropy ``H_n = -sum p_i log p_i / log N``, entropic resampling draws ancestors from the flattened
distribution ``softmax(l / tau)`` with a temperature ``tau >= 1``. Temperature rules (``progress``
is ``t / T_max`` in [0, 1]):

* ``"epf_ess"``     ``tau = max(1, (N / ESS) * (1 - progress))``  (the ePF default)
* ``"epf_entropy"`` ``beta = H_n + (1 - H_n) * progress``, ``tau = max(1, 1 / beta)``
* ``"epf_linear"``  ``tau = max(1, v_max - progress)`` with ``v_max = 2``
* ``"target"``      smallest ``tau >= 1`` whose tempered weights reach a target ESS ratio (or
  normalised entropy); both are monotone in ``1/tau`` so bisection on ``s = 1/tau`` is well posed.

Flattening only happens when diversity is low (``ESS/N < ess_threshold``) and, in the faithful ePF
setting, only during the first ``early_phase`` fraction of the run; otherwise ``tau = 1``.

The faithful ePF step applies no importance correction. With ``correct=True`` every offspring of
parent ``i`` carries the residual log-weight ``(1 - 1/tau) * l_i``, which keeps the particle system
properly weighted: ``E[(1/N) sum_j exp(r_{a_j}) f(x_{a_j})] = sum_i exp(l_i) f(x_i) / sum_k exp(l_k/tau)``.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from smcppl.core.weights import ess_ratio, log_normalize, normalized_entropy, sanitize

__all__ = ["Entropic", "TEMPERATURE_RULES", "with_entropic_correction", "temperature", "rule_temperature",
           "tempered_log_probs", "target_temperature", "validate_entropic"]

TEMPERATURE_RULES = ("epf_ess", "epf_entropy", "epf_linear", "target")


class Entropic(NamedTuple):
    """Settings of entropic resampling.

    rule: one of ``TEMPERATURE_RULES``. ess_threshold: flatten only when ``ESS/N`` is below it.
    early_phase: flatten only while ``progress < early_phase`` (1.0 disables this gate).
    correct: carry the residual weight ``(1 - 1/tau) l_i`` (properly weighted) or not (faithful ePF);
    ``None`` (default) = the sampler's default: properly weighted wherever a sampler estimates a
    normalising constant (tempered samplers, correctors), faithful in the sequence filter's ePF.
    v_max: start value of the ``epf_linear`` rule. target: the ESS ratio (or normalised entropy)
    reached by the ``target`` rule; target_kind: ``"ess"`` or ``"entropy"``.
    """

    rule: str = "epf_ess"
    ess_threshold: float = 0.5
    early_phase: float = 0.5
    correct: Optional[bool] = None
    v_max: float = 2.0
    target: float = 0.5
    target_kind: str = "ess"


def validate_entropic(e: Entropic) -> Entropic:
    if e.rule not in TEMPERATURE_RULES:
        raise ValueError(f"Unknown entropic temperature rule {e.rule!r}; choose one of {TEMPERATURE_RULES}.")
    if not (0.0 < e.ess_threshold <= 1.0):
        raise ValueError(f"Entropic ess_threshold must be in (0, 1], got {e.ess_threshold}.")
    if not (0.0 <= e.early_phase <= 1.0):
        raise ValueError(f"Entropic early_phase must be in [0, 1], got {e.early_phase}.")
    if not (0.0 < e.target <= 1.0):
        raise ValueError(f"Entropic target must be in (0, 1], got {e.target}.")
    if e.target_kind not in ("ess", "entropy"):
        raise ValueError(f"Entropic target_kind must be 'ess' or 'entropy', got {e.target_kind!r}.")
    if e.v_max < 1.0:
        raise ValueError(f"Entropic v_max must be >= 1, got {e.v_max}.")
    return e


def target_temperature(log_weights: jax.Array, target: float = 0.5, kind: str = "ess", num_iter: int = 60) -> jax.Array:
    """Smallest ``tau >= 1`` with ``ESS(softmax(l/tau))/N >= target`` (or ``H_n >= target``).

    Bisection on ``s = 1/tau`` in ``(0, 1]``: the diversity measure decreases as ``s`` grows.
    """
    lw = sanitize(log_weights)
    measure = ess_ratio if kind == "ess" else normalized_entropy

    def f(s):
        # dead particles stay dead at any temperature
        return measure(jnp.where(jnp.isfinite(lw), s * lw, -jnp.inf))

    ok_at_one = f(1.0) >= target

    def body(_, bounds):
        lo, hi = bounds  # f(lo) >= target, f(hi) < target
        mid = 0.5 * (lo + hi)
        good = f(mid) >= target
        return jnp.where(good, mid, lo), jnp.where(good, hi, mid)

    lo, _ = jax.lax.fori_loop(0, num_iter, body, (jnp.zeros(()), jnp.ones(())))
    s = jnp.where(ok_at_one, 1.0, jnp.maximum(lo, 1e-12))
    return 1.0 / s


def rule_temperature(log_weights: jax.Array, progress: ArrayLike, entropic: Entropic) -> jax.Array:
    """Temperature ``tau >= 1`` of ``entropic.rule`` alone (no gates)."""
    lw = sanitize(log_weights)
    n = lw.shape[-1]
    progress = jnp.clip(progress, 0.0, 1.0)
    r = ess_ratio(lw)
    if entropic.rule == "epf_ess":
        tau = (1.0 / r) * (1.0 - progress)
    elif entropic.rule == "epf_entropy":
        h = normalized_entropy(lw) if n > 1 else jnp.ones(())
        beta = h + (1.0 - h) * progress
        tau = 1.0 / jnp.maximum(beta, 1e-12)
    elif entropic.rule == "epf_linear":
        tau = entropic.v_max - progress
    elif entropic.rule == "target":
        tau = target_temperature(lw, entropic.target, entropic.target_kind)
    else:  # pragma: no cover - validated earlier
        raise ValueError(entropic.rule)
    return jnp.maximum(1.0, tau)


def temperature(log_weights: jax.Array, progress: ArrayLike, entropic: Entropic) -> jax.Array:
    """Temperature of the rule with the gates applied: ``tau = 1`` unless ``ESS/N < ess_threshold``
    and ``progress < early_phase``."""
    tau = rule_temperature(log_weights, progress, entropic)
    r = ess_ratio(sanitize(log_weights))
    gate = (r < entropic.ess_threshold) & (jnp.clip(progress, 0.0, 1.0) < entropic.early_phase)
    return jnp.where(gate, tau, 1.0)


def tempered_log_probs(log_weights: jax.Array, tau: ArrayLike) -> jax.Array:
    """Log resampling probabilities ``log softmax(l / tau)`` (dead particles stay at ``-inf``)."""
    lw = sanitize(log_weights)
    return log_normalize(jnp.where(jnp.isfinite(lw), lw / tau, -jnp.inf))


def with_entropic_correction(policy: Any, sampler: str) -> Any:
    """The resampling policy ``policy`` with an unset ``Entropic.correct`` resolved to ``True``, for a
    sampler whose ``log Z_hat`` must stay unbiased; an explicit ``correct=False`` is kept with a warning
    (the faithful ePF rule then biases ``Z_hat``: about -5% in ``E[Z_hat]/Z`` on a two-rung ladder)."""
    ent = getattr(policy, "entropic", None)
    if ent is None:
        return policy
    if ent.correct is None:
        return policy._replace(entropic=ent._replace(correct=True))
    if not ent.correct:
        warnings.warn(f"{sampler}: Entropic(correct=False) drops the importance correction of entropic resampling, "
                      "so log Z is then not an unbiased estimate; leave `correct` unset (or True) for a properly "
                      "weighted run.", UserWarning, stacklevel=3)
    return policy
