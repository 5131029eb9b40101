"""State-space models for particle filtering, with exact references where they exist.

A :class:`StateSpaceModel` holds three pure functions:
``sample_initial(key, num_particles) -> x0``, ``sample_transition(key, x, t) -> x_t`` (``t >= 1``)
and ``log_observation(x, y_t, t) -> [N]`` log-density ``log g_t(y_t | x_t)``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["StateSpace", "StateSpaceModel", "LinearGaussian", "linear_gaussian", "kalman_filter", "kalman_smoother", "simulate"]


class StateSpace(NamedTuple):
    """The lower-level declaration of a state-space model: per-particle pure functions (the filters
    ``vmap`` them over particles) of the state ``x_t`` (any pytree), ``t = 0..T-1``::

        x_0 ~ m_0(. | u_0),   x_t ~ f_t(. | x_{t-1}, u_t),   y_t ~ g_t(. | x_t, u_t)

    ``u_t`` is the time-``t`` slice of ``inputs`` (a pytree with leading time axis: the observations and any
    covariates; None if the functions close over them).

    sample_initial(key, u_0) -> x_0; sample_transition(key, x_prev, u_t, t) -> x_t (``t >= 1``);
    log_observation(x_t, u_t, t) -> log g_t(y_t | x_t). Optional: log_transition(x_prev, x_t, u_t, t) ->
    log f_t(x_t | x_{t-1}) (guided proposals, FFBS); num_steps T (default: the inputs' length);
    step(key, x_prev, u_t, t) -> (x_t, log g_t) and step_initial(key, u_0) -> (x_0, log g_0), fused versions
    of sampling and scoring; complete(x_prev, z, u_t, t) -> (x_t, log f_t, log g_t) when a proposal returns
    some ``z`` rather than the whole state (scan-declared models: the latent sites); record(x_t) -> what
    the filtering moments summarise (default: ``x_t``).
    """

    sample_initial: Callable
    sample_transition: Callable
    log_observation: Callable
    log_transition: Optional[Callable] = None
    inputs: Any = None
    num_steps: Optional[int] = None
    step: Optional[Callable] = None
    step_initial: Optional[Callable] = None
    complete: Optional[Callable] = None
    record: Optional[Callable] = None


class StateSpaceModel(NamedTuple):
    """Batched form used by :func:`smcppl.inference.state_space.bootstrap.bootstrap_filter` (functions of
    ``[N, ...]`` particle arrays; observations passed as ``y_t``)."""

    sample_initial: Callable
    sample_transition: Callable
    log_observation: Callable


class LinearGaussian(NamedTuple):
    """``x_0 ~ N(0, P0)``, ``x_t = A x_{t-1} + N(0, Q)``, ``y_t = C x_t + N(0, R)``."""

    A: np.ndarray
    Q: np.ndarray
    C: np.ndarray
    R: np.ndarray
    P0: np.ndarray


def _mvn_logpdf(resid, cov):
    d = cov.shape[0]
    chol = jnp.linalg.cholesky(cov)
    z = jax.scipy.linalg.solve_triangular(chol, resid.T, lower=True)
    return -0.5 * jnp.sum(z**2, axis=0) - jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * d * jnp.log(2 * jnp.pi)


def linear_gaussian(params: LinearGaussian) -> StateSpaceModel:
    """The :class:`StateSpaceModel` of a linear-Gaussian model (particles ``[N, dx]``)."""
    A, Q, C, R, P0 = (jnp.asarray(a, jnp.float32) for a in params)
    LQ, LP0 = jnp.linalg.cholesky(Q), jnp.linalg.cholesky(P0)
    dx = A.shape[0]

    def sample_initial(key, n):
        return jax.random.normal(key, (n, dx)) @ LP0.T

    def sample_transition(key, x, t):
        return x @ A.T + jax.random.normal(key, x.shape) @ LQ.T

    def log_observation(x, y, t):
        return _mvn_logpdf(y[None, :] - x @ C.T, R)

    return StateSpaceModel(sample_initial, sample_transition, log_observation)


def simulate(params: LinearGaussian, num_steps: int, seed: int = 0):
    """Simulate ``(x, y)`` of length ``num_steps`` (times 0..T-1) with NumPy."""
    rng = np.random.default_rng(seed)
    A, Q, C, R, P0 = (np.asarray(a, float) for a in params)
    x = rng.multivariate_normal(np.zeros(A.shape[0]), P0)
    xs, ys = [], []
    for t in range(num_steps):
        if t > 0:
            x = A @ x + rng.multivariate_normal(np.zeros(A.shape[0]), Q)
        xs.append(x)
        ys.append(C @ x + rng.multivariate_normal(np.zeros(C.shape[0]), R))
    return np.array(xs), np.array(ys)


def kalman_filter(params: LinearGaussian, ys):
    """Exact filtering means ``E[x_t | y_0:t]``, covariances and ``log p(y_0:T-1)`` (NumPy, float64)."""
    A, Q, C, R, P0 = (np.asarray(a, float) for a in params)
    m, P = np.zeros(A.shape[0]), P0.copy()
    means, covs, loglik = [], [], 0.0
    for t, y in enumerate(np.asarray(ys, float)):
        if t > 0:
            m, P = A @ m, A @ P @ A.T + Q
        S = C @ P @ C.T + R
        resid = y - C @ m
        _, logdet = np.linalg.slogdet(2 * np.pi * S)
        loglik += -0.5 * (logdet + resid @ np.linalg.solve(S, resid))
        K = P @ C.T @ np.linalg.inv(S)
        m, P = m + K @ resid, P - K @ S @ K.T
        means.append(m.copy())
        covs.append(P.copy())
    return np.array(means), np.array(covs), loglik


def kalman_smoother(params: LinearGaussian, ys):
    """Exact smoothing means ``E[x_t | y_0:T-1]`` and covariances (Rauch–Tung–Striebel; NumPy, float64):
    ``G_t = P_t A' (A P_t A' + Q)^-1``, ``m^s_t = m_t + G_t (m^s_{t+1} - A m_t)``,
    ``P^s_t = P_t + G_t (P^s_{t+1} - A P_t A' - Q) G_t'``."""
    A, Q = (np.asarray(a, float) for a in (params.A, params.Q))
    means, covs, _ = kalman_filter(params, ys)
    ms, Ps = means.copy(), covs.copy()
    for t in range(len(means) - 2, -1, -1):
        pred = A @ covs[t] @ A.T + Q
        G = covs[t] @ A.T @ np.linalg.inv(pred)
        ms[t] = means[t] + G @ (ms[t + 1] - A @ means[t])
        Ps[t] = covs[t] + G @ (Ps[t + 1] - pred) @ G.T
    return ms, Ps
