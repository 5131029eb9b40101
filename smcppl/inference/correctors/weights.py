"""The Feynman–Kac corrector (FKC) weights: the log-potential ``log G`` a corrector's move integrates along
the SDE path and returns to the engine (ARCHITECTURE.md, "One engine").

Target at noise level ``t`` for score models ``s_i(x, t) = grad log q_t^(i)(x)`` and exponents ``beta_i``::

    p_t(x) ∝ prod_i q_t^(i)(x)^beta_i,      B = sum_i beta_i,      S = sum_i beta_i s_i.

Simulated in reverse time ``tau = 1 - t`` with any noise scale ``sigma_t`` (Euler–Maruyama, scores at
the pre-move state; left-point weight rule)::

    dx = [ -f_t(x) + (g_t^2 + sigma_t^2) / 2 * S(x) ] dtau + sigma_t dW
    dw = [ (B - 1) div f_t + g_t^2 / 2 * ( |S|^2 - sum_i beta_i |s_i|^2 ) ] dtau

This weight is ``d/dtau log p~_t - (L* p~_t) / p~_t`` for the unnormalised ``p~_t = prod_i q_t^beta_i`` and
the simulated SDE's Fokker–Planck operator ``L*``; the drift coefficient ``(g^2 + sigma^2)/2`` makes the
Laplacian terms cancel, so no divergence of a score is ever needed. Hence the weighted particles target
``p_t`` at every step and ``E[exp(w)] = Z_0 / Z_1`` with ``Z_t = int prod_i q_t^beta_i``.

Initial particles are drawn from ``N(0, v/B I)`` (``v = sde.prior_variance``), which is ``p_1`` when every
``q_1^(i)`` is the reference ``N(0, v I)``; its normaliser is ``log Z_1 = D/2 [(1 - B) log(2 pi v) - log B]``.
Initial log-weights (``t_1 = times[0]``):

* with ``log_densities`` (``log q_t^(i)(x)``, known for the analytic targets of
  :mod:`smcppl.models.diffusion_targets`): the exact ratio of the diffused target to that proposal,
  ``w_1(x) = log Z_1 + sum_i beta_i [log q_{t_1}^(i)(x) - log N(x; 0, v I)]``;
* without: the constant ``log Z_1``, i.e. the **approximation** ``q_{t_1}^(i) = N(0, v I)``. It is good
  when the SDE forgets the data by ``t_1`` (VP, or VE with ``sigma_max`` much larger than the data's
  spread); with a VE SDE and a modest ``sigma_max`` it biases everything (on ``0.3 N(-6, 1) + 0.7 N(6, 1)``,
  ``beta = 2``, ``sigma_max = 5``: mode mass 0.75 instead of 0.845, log Z -1.47 instead of -1.81).

The log-evidence estimate is ``log int prod_i q_{t_min}^(i)(x)^beta_i dx`` (exactly so with
``log_densities``); it includes the ``(B - 1) div f`` term, which is the same for every particle: it never
changes resampling, only log Z.

**Safe settings.** The weights are exact for any noise scale, but their variance is not. With ``B > 1``
the drift ``(g^2 + sigma^2)/2 * S`` contracts the particles faster than the target ``p_t`` shrinks
(for a Gaussian ``q_t`` the relative variance lag is about ``(1 - 1/B) g^2 / (g^2 + sigma^2)``), and the
weights must undo it: with ``eta = sigma/g < 1`` (the probability-flow ODE is ``eta = 0``) the particles
miss the target's tails, which no reweighting can restore, and the answer is confidently wrong (a
Gaussian ``N(0, 0.5^2)`` at ``beta = 2``, 100 VP steps: sd 0.002 with ``eta = 0``, 0.25 with ``eta = 0.5``,
0.35 with ``eta >= 1``; exact 0.354). The per-step ESS and ancestor counts do not show it (with
resampling at every step they stay near 1 and N), so :func:`warn_if_low_noise` warns when a sampler is
built: use ``eta >= 1`` (the reverse SDE, the default, or more noise) when ``B > 1``.

Special cases: annealing ``q^beta``: ``dw = [(beta - 1) div f + g^2/2 beta (beta - 1) |s|^2] dtau``;
product ``q1 q2``: ``[div f + g^2 <s1, s2>] dtau``; classifier-free guidance ``q^(1-w) q_c^w``:
``g^2/2 w (w - 1) |s_c - s|^2 dtau``.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, List, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.models.sde import SDE

__all__ = ["combined_score", "sq_norm", "log_weight_rate", "log_z_init", "initial_log_weights", "div_f_log_weight",
           "min_noise_ratio", "warn_if_low_noise"]


def combined_score(scores: Sequence[Callable], betas: Sequence[float], x: jax.Array,
                   t: jax.Array) -> Tuple[jax.Array, List[jax.Array]]:
    """``S = sum_i beta_i s_i(x, t)`` and the ``s_i(x, t)`` for a batch ``x`` ``[N, *event_shape]``."""
    ss = [jax.vmap(s, in_axes=(0, None))(x, t) for s in scores]
    big_s = sum(b * s for b, s in zip(betas, ss))
    return big_s, ss


def sq_norm(v: jax.Array) -> jax.Array:
    """``|v_n|^2`` of every particle ``n`` of a batch ``[N, *event_shape]``."""
    return jnp.sum(v**2, axis=tuple(range(1, v.ndim)))


def log_weight_rate(big_s: jax.Array, ss: Sequence[jax.Array], betas: Sequence[float], total_beta: float,
                    g2: jax.Array, div_f: jax.Array) -> jax.Array:
    """``dw/dtau = (B - 1) div f_t + g_t^2 / 2 (|S|^2 - sum_i beta_i |s_i|^2)`` per particle (module docstring)."""
    return (total_beta - 1.0) * div_f + 0.5 * g2 * (sq_norm(big_s) - sum(b * sq_norm(s) for b, s in zip(betas, ss)))


def log_z_init(total_beta: float, init_variance: float, dim: int) -> float:
    """``log Z_1 = log int prod_i N(x; 0, v I)^beta_i dx = D/2 [(1 - B) log(2 pi v) - log B]``."""
    b, v = total_beta, init_variance
    return 0.5 * dim * ((1.0 - b) * math.log(2 * math.pi * v) - math.log(b))


def initial_log_weights(x: jax.Array, t1: jax.Array, log_z1: float, betas: Sequence[float],
                        log_densities: Optional[Sequence[Callable]], init_variance: float) -> jax.Array:
    """``w_1(x) = log Z_1 + sum_i beta_i [log q_{t_1}^(i)(x) - log N(x; 0, v I)]`` for draws ``x`` of
    ``N(0, v/B I)``: the exact ratio of ``prod_i q_{t_1}^beta_i`` to that proposal; the constant ``log Z_1``
    without ``log_densities`` (the approximation ``q_{t_1} = N(0, v I)``)."""
    lw = jnp.full(x.shape[:1], log_z1, x.dtype)
    if log_densities is None:
        return lw
    dim = math.prod(x.shape[1:])
    log_ref = -0.5 * sq_norm(x) / init_variance - 0.5 * dim * math.log(2 * math.pi * init_variance)
    return lw + sum(b * (jax.vmap(f, in_axes=(0, None))(x, t1) - log_ref) for b, f in zip(betas, log_densities))


def div_f_log_weight(sde: SDE, times: np.ndarray, total_beta: float, dim: int) -> float:
    """The part of every particle's log-weight (and of log Z) due to the ``(B - 1) div f`` term:
    ``sum_k (B - 1) div f_{t_k} (t_k - t_{k+1})`` on the grid ``times`` (0 for VE or ``B = 1``)."""
    divf = np.asarray([float(sde.div_f(tk, dim)) for tk in times[:-1]])
    return float(np.sum((total_beta - 1.0) * divf * (times[:-1] - times[1:])))


def min_noise_ratio(noise: Union[float, Callable], sde: SDE, times: np.ndarray) -> Optional[float]:
    """``min_t sigma_t / g_t`` over the grid (None if a noise function cannot be evaluated here)."""
    if not callable(noise):
        return noise
    try:
        return min(float(noise(float(t))) / float(sde.g(float(t))) for t in times[:-1])
    except Exception:
        return None


def warn_if_low_noise(noise: Union[float, Callable], sde: SDE, times: np.ndarray, total_beta: float,
                      stacklevel: int = 2) -> None:
    """UserWarning when ``B > 1`` and ``sigma_t / g_t < 1`` somewhere on the grid ("Safe settings" above)."""
    if not total_beta > 1.0:
        return
    eta = min_noise_ratio(noise, sde, times)
    if eta is not None and eta < 1.0:
        warnings.warn(f"noise={eta:.3g} (sigma_t / g_t) below 1 with sum(betas)={total_beta:.3g} > 1: the "
                      "particles contract faster than the target and miss its tails; the weights cannot "
                      "restore them and the ESS does not show it (at noise=0, the probability-flow ODE, a "
                      "Gaussian at beta=2 comes out 100x too narrow). Use noise >= 1.", UserWarning,
                      stacklevel=stacklevel + 1)
