"""State-space models for particle filtering, with exact references where they exist.

A :class:`StateSpaceModel` holds three pure functions:
``sample_initial(key, num_particles) -> x0``, ``sample_transition(key, x, t) -> x_t`` (``t >= 1``)
and ``log_observation(x, y_t, t) -> [N]`` log-density ``log g_t(y_t | x_t)``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["StateSpaceModel", "LinearGaussian", "linear_gaussian", "kalman_filter", "simulate"]


class StateSpaceModel(NamedTuple):
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
