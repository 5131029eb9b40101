"""Forward noising SDEs and score-model adapters for the Feynman–Kac correctors (ARCHITECTURE.md; formulas in the
module docstrings).

Forward SDE ``dx = f_t(x) dt + g_t dW`` on ``t in [0, 1]``, data at ``t = 0``, with linear drift
``f_t(x) = (d/dt log alpha_t) x`` so that the transition from the data is Gaussian::

    x_t | x_0  ~  N(alpha_t x_0, sigma_t^2 I),      g_t^2 = d sigma_t^2/dt - 2 (d/dt log alpha_t) sigma_t^2,
    div f_t = D * d/dt log alpha_t                 (D = number of coordinates of x).

* :class:`VPSDE` (variance preserving, linear ``beta(t) = beta_min + t (beta_max - beta_min)``):
  ``alpha_t = exp(-1/2 int_0^t beta)``, ``sigma_t^2 = 1 - alpha_t^2``, ``f = -beta(t) x / 2``,
  ``g = sqrt(beta(t))``, ``div f = -beta(t) D / 2``; reference ``N(0, I)`` at ``t = 1``.
* :class:`VESDE` (variance exploding, geometric ``s(t) = sigma_min (sigma_max/sigma_min)^t``):
  ``alpha_t = 1``, ``f = 0``, ``g = s(t) sqrt(2 log(sigma_max/sigma_min))``,
  ``sigma_t^2 = s(t)^2 - sigma_min^2`` (exactly 0 at ``t = 0``), ``div f = 0``; reference
  ``N(0, sigma_max^2 I)``.

Score models: every sampler takes *score functions* ``s(x, t) = grad_x log q_t(x)`` of one point
``x`` (shape ``event_shape``) and a scalar ``t``. Adapters turn the other usual parametrisations into
scores: :func:`from_epsilon` (noise prediction, ``s = -eps / sigma_t``), :func:`from_denoiser`
(``x0``-prediction, ``s = (alpha_t x0 - x) / sigma_t^2``) and :func:`from_score` (checked identity);
:func:`x0_prediction` is Tweedie's formula ``x0 = (x + sigma_t^2 s) / alpha_t``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["SDE", "VPSDE", "VESDE", "from_score", "from_epsilon", "from_denoiser", "x0_prediction", "validate_sde"]


class SDE:
    """Base class: linear-drift forward SDE with Gaussian transitions from the data (see module doc).

    Subclasses implement ``alpha``, ``sigma``, ``dlog_alpha`` and ``g``; everything else follows.
    All methods take a scalar ``t`` (jnp or float) and are jit/vmap-able.
    """

    name = "sde"

    def alpha(self, t: ArrayLike) -> jax.Array:
        """Signal scale ``alpha_t`` of ``x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)``."""
        raise NotImplementedError

    def sigma(self, t: ArrayLike) -> jax.Array:
        """Noise standard deviation ``sigma_t`` of ``x_t | x_0``."""
        raise NotImplementedError

    def dlog_alpha(self, t: ArrayLike) -> ArrayLike:
        """``d/dt log alpha_t`` (the drift is ``f_t(x) = dlog_alpha(t) * x``)."""
        raise NotImplementedError

    def g(self, t: ArrayLike) -> jax.Array:
        """Diffusion coefficient ``g_t``."""
        raise NotImplementedError

    @property
    def prior_variance(self) -> float:
        """Variance of the Gaussian reference ``N(0, v I)`` that approximates ``q_1`` for any data."""
        raise NotImplementedError

    def f(self, x: ArrayLike, t: ArrayLike) -> ArrayLike:
        """Drift ``f_t(x) = (d/dt log alpha_t) x``."""
        return self.dlog_alpha(t) * x

    def div_f(self, t: ArrayLike, dim: int) -> ArrayLike:
        """Divergence ``div f_t = D * d/dt log alpha_t`` (independent of ``x``) for ``D = dim`` coordinates."""
        return dim * self.dlog_alpha(t)

    def marginal(self, x0: ArrayLike, t: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """``(mean, std)`` of ``x_t | x_0``: ``(alpha_t x0, sigma_t)``."""
        return self.alpha(t) * x0, self.sigma(t)

    def attrs(self) -> dict:
        return {"sde": self.name}


class VPSDE(SDE):
    """Variance-preserving SDE with linear ``beta(t) = beta_min + t (beta_max - beta_min)``.

    ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW``; ``alpha_t = exp(-(beta_min t + (beta_max - beta_min) t^2 / 2) / 2)``,
    ``sigma_t^2 = 1 - alpha_t^2``, ``div f = -beta(t) D / 2``.
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        beta_min, beta_max = float(beta_min), float(beta_max)
        if not (math.isfinite(beta_min) and math.isfinite(beta_max)) or beta_min <= 0 or beta_max < beta_min:
            raise ValueError(f"VPSDE needs 0 < beta_min <= beta_max (finite), got beta_min={beta_min}, "
                             f"beta_max={beta_max}.")
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t: ArrayLike) -> ArrayLike:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _int_beta(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t: ArrayLike) -> jax.Array:
        return jnp.exp(-0.5 * self._int_beta(t))

    def sigma(self, t: ArrayLike) -> jax.Array:
        return jnp.sqrt(-jnp.expm1(-self._int_beta(t)))

    def dlog_alpha(self, t: ArrayLike) -> ArrayLike:
        return -0.5 * self.beta(t)

    def g(self, t: ArrayLike) -> jax.Array:
        return jnp.sqrt(self.beta(t))

    @property
    def prior_variance(self) -> float:
        return 1.0

    def attrs(self) -> dict:
        return {"sde": "vp", "sde_beta_min": self.beta_min, "sde_beta_max": self.beta_max}

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"


class VESDE(SDE):
    """Variance-exploding SDE with geometric noise ``s(t) = sigma_min (sigma_max / sigma_min)^t``.

    ``dx = g_t dW``, ``g_t = s(t) sqrt(2 log(sigma_max/sigma_min))``; ``alpha_t = 1``,
    ``sigma_t^2 = s(t)^2 - sigma_min^2``, ``f = 0``, ``div f = 0``.
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        sigma_min, sigma_max = float(sigma_min), float(sigma_max)
        if not (math.isfinite(sigma_min) and math.isfinite(sigma_max)) or sigma_min <= 0 or sigma_max <= sigma_min:
            raise ValueError(f"VESDE needs 0 < sigma_min < sigma_max (finite), got sigma_min={sigma_min}, "
                             f"sigma_max={sigma_max}.")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self._log_ratio = math.log(sigma_max / sigma_min)

    def _s(self, t):
        return self.sigma_min * jnp.exp(t * self._log_ratio)

    def alpha(self, t: ArrayLike) -> jax.Array:
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def sigma(self, t: ArrayLike) -> jax.Array:
        return self.sigma_min * jnp.sqrt(jnp.expm1(2.0 * t * self._log_ratio))

    def dlog_alpha(self, t: ArrayLike) -> ArrayLike:
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def g(self, t: ArrayLike) -> jax.Array:
        return self._s(t) * math.sqrt(2.0 * self._log_ratio)

    @property
    def prior_variance(self) -> float:
        return self.sigma_max**2

    def attrs(self) -> dict:
        return {"sde": "ve", "sde_sigma_min": self.sigma_min, "sde_sigma_max": self.sigma_max}

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


def validate_sde(sde: Any) -> SDE:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an smcppl SDE (VPSDE() or VESDE()), got {type(sde).__name__}.")
    return sde


def _check_callable(fn, what):
    if not callable(fn):
        raise TypeError(f"{what} must be a function (x, t) -> array, got {type(fn).__name__}.")


def from_score(score_fn: Callable) -> Callable:
    """A raw score model ``s(x, t) = grad_x log q_t(x)``, returned unchanged (after a type check)."""
    _check_callable(score_fn, "score_fn")
    return score_fn


def from_epsilon(eps_fn: Callable, sde: SDE) -> Callable:
    """Score of a noise-prediction model: ``s(x, t) = -eps(x, t) / sigma_t``
    (from ``x_t = alpha_t x_0 + sigma_t eps``, ``E[eps | x_t] = -sigma_t grad log q_t``)."""
    _check_callable(eps_fn, "eps_fn")
    sde = validate_sde(sde)

    def score(x, t):
        return -eps_fn(x, t) / sde.sigma(t)

    return score


def from_denoiser(x0_fn: Callable, sde: SDE) -> Callable:
    """Score of a denoiser (``x0``-prediction ``E[x_0 | x_t]``): ``s(x, t) = (alpha_t x0(x, t) - x) / sigma_t^2``
    (Tweedie's formula solved for the score)."""
    _check_callable(x0_fn, "x0_fn")
    sde = validate_sde(sde)

    def score(x, t):
        return (sde.alpha(t) * x0_fn(x, t) - x) / sde.sigma(t) ** 2

    return score


def x0_prediction(x: ArrayLike, score: ArrayLike, t: ArrayLike, sde: SDE) -> jax.Array:
    """Tweedie's denoised estimate ``E[x_0 | x_t = x] = (x + sigma_t^2 s(x, t)) / alpha_t`` from a score value."""
    return (x + sde.sigma(t) ** 2 * score) / sde.alpha(t)
