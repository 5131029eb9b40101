"""Resampling policy: *when* to resample (always / ESS below a ratio / never) and *how*
(a scheme from :mod:`smcppl.core.resampling`, optionally entropic, see :mod:`smcppl.core.entropic`).

:func:`resample` is the one resampling step every sampler uses. It returns the ancestor indices,
the log-weights the offspring carry, and the log normalising-constant increment of the event:

* standard resampling from ``W = softmax(l)``: increment ``logsumexp(l) - log N``, offspring weight 0;
* entropic with temperature ``tau``, corrected: increment ``logsumexp(l / tau) - log N``, offspring of
  parent ``i`` carries ``(1 - 1/tau) l_i`` (so the product stays an unbiased estimate of ``Z``);
* entropic, faithful ePF (no correction): increment ``logsumexp(l) - log N``, offspring weight 0.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from smcppl.core.entropic import Entropic, temperature, tempered_log_probs, validate_entropic
from smcppl.core.resampling import get_resampler
from smcppl.core.weights import ess_ratio, log_normalize, sanitize

__all__ = ["Resampling", "ResampleResult", "resample", "resample_decision", "validate_resampling", "as_resampling",
           "count_unique"]

WHEN = ("always", "ess", "never")


class Resampling(NamedTuple):
    """When and how to resample.

    scheme: ``"multinomial" | "stratified" | "systematic" | "residual"`` or a function
    ``fn(key, weights, num_samples) -> indices``. when: ``"always"``, ``"ess"`` (resample when
    ``ESS/N < threshold``) or ``"never"``. entropic: an :class:`Entropic` to flatten the resampling
    distribution when diversity is low, or None.
    """

    scheme: Union[str, Callable] = "systematic"
    when: str = "ess"
    threshold: float = 0.5
    entropic: Optional[Entropic] = None


class ResampleResult(NamedTuple):
    indices: jax.Array  # [N] ancestor of each new particle
    log_weights: jax.Array  # [N] log-weights carried by the offspring
    log_evidence_increment: jax.Array  # scalar added to the accumulated log Z
    tau: jax.Array  # entropic temperature used (1 if none)
    resampled: jax.Array  # bool


def validate_resampling(policy: Resampling) -> Resampling:
    """Check the settings and return them (raises ValueError with a clear message)."""
    if policy is None:
        return Resampling()
    if isinstance(policy, str):
        policy = Resampling(scheme=policy)
    if not isinstance(policy, Resampling):
        raise TypeError(f"resampling must be a smcppl.Resampling or a scheme name, got {type(policy).__name__}.")
    get_resampler(policy.scheme)
    if policy.when not in WHEN:
        raise ValueError(f"Resampling 'when' must be one of {WHEN}, got {policy.when!r}.")
    thr = float(policy.threshold)
    if not (0.0 < thr <= 1.0):
        raise ValueError(
            f"Resampling threshold (target ESS ratio) must be in (0, 1], got {policy.threshold}. "
            "Use when='always' to resample at every step or when='never' to switch resampling off."
        )
    if policy.entropic is not None:
        validate_entropic(policy.entropic)
    return policy


def as_resampling(resampling: Union[None, str, Resampling] = None, entropic: Union[None, bool, str, Entropic] = None,
                  *, default: Resampling = Resampling()) -> Resampling:
    """The one way a sampler turns its ``resampling``/``entropic`` arguments into a :class:`Resampling`.

    ``resampling``: None (the sampler's ``default`` policy), a scheme name (``default`` with that scheme:
    a name changes *how*, never *when*), or a :class:`Resampling` (used as given). ``entropic``: None or
    False (unchanged), True (``Entropic()``), a rule name (``Entropic(rule=name)``) or an :class:`Entropic`;
    it replaces the policy's ``entropic`` field. The result is validated."""
    if resampling is None:
        resampling = default
    elif isinstance(resampling, str):
        resampling = default._replace(scheme=resampling)
    resampling = validate_resampling(resampling)
    if entropic is None or entropic is False:
        return resampling
    if entropic is True:
        entropic = Entropic()
    elif isinstance(entropic, str):
        entropic = Entropic(rule=entropic)
    if not isinstance(entropic, Entropic):
        raise TypeError(f"entropic must be None, True, a rule name or a smcppl.Entropic, got {entropic!r}.")
    return resampling._replace(entropic=validate_entropic(entropic))


def count_unique(indices: jax.Array, num_particles: int) -> jax.Array:
    """Number of distinct ancestors in ``indices`` (O(N) scatter, jit-friendly), as int32 whatever
    ``jax_enable_x64`` says (it is carried through ``lax.scan`` loops next to int32 counters)."""
    return jnp.zeros(num_particles, jnp.int32).at[indices].set(1).sum(dtype=jnp.int32)


def resample_decision(log_weights: jax.Array, policy: Resampling) -> jax.Array:
    """Whether :func:`resample` resamples these log-weights: ``when="always"``: yes, ``"never"``: no,
    ``"ess"``: ``ESS/N < threshold``; never when every weight is zero (a dead population). A pure
    function of the (sanitised) log-weights, so a model that knows the weights the engine will see can
    tell in advance whether the next step resamples."""
    lw = sanitize(log_weights)
    if policy.when == "never":
        return jnp.array(False)
    do = jnp.array(True) if policy.when == "always" else ess_ratio(lw) < policy.threshold
    return do & jnp.isfinite(log_normalize(lw)[1])


def resample(rng_key: jax.Array, log_weights: jax.Array, progress: ArrayLike, policy: Resampling) -> ResampleResult:
    """One resampling decision (:func:`resample_decision`) and event (see module docstring for the
    weight bookkeeping)."""
    lw = sanitize(log_weights)
    n = lw.shape[0]
    fn = get_resampler(policy.scheme)
    if policy.when == "never":
        return ResampleResult(jnp.arange(n), lw, jnp.zeros((), lw.dtype), jnp.ones((), lw.dtype), jnp.array(False))
    do = resample_decision(lw, policy)
    log_w, log_total = log_normalize(lw)
    if policy.entropic is not None:
        tau = temperature(lw, progress, policy.entropic)
        log_p, log_total_tau = tempered_log_probs(lw, tau)
    else:
        tau, log_p, log_total_tau = jnp.ones(()), log_w, log_total
    idx = fn(rng_key, jnp.exp(log_p), n)
    if policy.entropic is not None and policy.entropic.correct:
        carried = jnp.where(jnp.isfinite(lw), (1.0 - 1.0 / tau) * lw, -jnp.inf)[idx]
        inc = log_total_tau - jnp.log(n)
    else:
        carried = jnp.zeros(n, lw.dtype)
        inc = log_total - jnp.log(n)
    # a dead population (every l = -inf) is not resampled (resample_decision); the engine reports it
    return ResampleResult(
        indices=jnp.where(do, idx, jnp.arange(n)),
        log_weights=jnp.where(do, carried, lw),
        log_evidence_increment=jnp.where(do, inc, 0.0),
        tau=jnp.where(do, tau, 1.0),
        resampled=do,
    )
