"""State-space models for particle filtering, with exact references where they exist.

Declarations: :class:`StateSpace` (the lower-level form: per-particle functions) and NumPyro models whose
time loop is ``numpyro.contrib.control_flow.scan`` (read by :mod:`smcppl.inference.state_space.scan`);
:class:`StateSpaceModel` is the batched form of :func:`smcppl.inference.state_space.bootstrap.bootstrap_filter`.

Zoo: linear-Gaussian (:func:`linear_gaussian`, :func:`lg_model`; exact :func:`kalman_filter` and
:func:`kalman_smoother`), stochastic volatility (:func:`stochastic_volatility` on
:func:`load_us_gdp_growth`, a real series shipped with its licence in ``models/data``) and the nonlinear
growth model (:func:`growth_model`, :func:`simulate_growth`).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["StateSpace", "StateSpaceModel", "LinearGaussian", "linear_gaussian", "kalman_filter", "kalman_smoother",
           "simulate",
           "lg_model", "stochastic_volatility", "load_us_gdp_growth", "growth_model", "simulate_growth"]


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

    Population versions (optional; the filters ``vmap`` the per-particle functions over keys split from the
    step's key when they are absent): ``population_step(key, x_prev, u_t, t) -> (x_t, log g_t)`` and
    ``population_initial(key, u_0, num_particles) -> (x_0, log g_0)`` on the whole population (leaves ``[N, ...]``, log-
    potentials ``[N]``), as ``particles``' ``PX``/``PY`` are vectorised: one draw of ``N`` normals from one key
    instead of ``N`` key splits (the cost of a per-particle key is that of the draw itself on a CPU).
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
    population_step: Optional[Callable] = None
    population_initial: Optional[Callable] = None


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


# ------------------------------------------------------------------ NumPyro scan declarations (the zoo)
def lg_model(y, q: float = 0.5, r: float = 1.0):
    """1-d linear-Gaussian model with unknown ``a``: ``a ~ U(-1, 1)``, ``x_{-1} ~ N(0, q / (1 - a^2))``
    (stationary), ``x_t = a x_{t-1} + N(0, q)``, ``y_t = x_t + N(0, r)``; exact likelihood
    :func:`kalman_filter` with ``LinearGaussian(a, q, 1, r, q / (1 - a^2))``."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.control_flow import scan

    a = numpyro.sample("a", dist.Uniform(-1, 1))
    x_init = numpyro.sample("x_init", dist.Normal(0.0, jnp.sqrt(q / (1 - a**2))))

    def body(x, y_t):
        x = numpyro.sample("x", dist.Normal(a * x, jnp.sqrt(q)))
        numpyro.sample("y", dist.Normal(x, jnp.sqrt(r)), obs=y_t)
        return x, None

    scan(body, x_init, y)


def stochastic_volatility(y):
    """Stochastic volatility: ``y_t ~ N(0, exp(h_t))`` with log-variance ``h_t = mu + phi (h_{t-1} - mu) +
    N(0, sigma^2)``, stationary ``h_{-1}``; priors ``mu ~ N(0, 3^2)``, ``(phi + 1) / 2 ~ Beta(20, 1.5)``,
    ``sigma ~ HalfNormal(1)``."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.control_flow import scan

    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    phi = 2 * numpyro.sample("phi_half", dist.Beta(20.0, 1.5)) - 1
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    h_init = numpyro.sample("h_init", dist.Normal(mu, sigma / jnp.sqrt(1 - phi**2)))

    def body(h, y_t):
        h = numpyro.sample("h", dist.Normal(mu + phi * (h - mu), sigma))
        numpyro.sample("y", dist.Normal(0.0, jnp.exp(h / 2)), obs=y_t)
        return h, None

    scan(body, h_init, y)


def load_us_gdp_growth():
    """US real GDP, annualised quarterly log growth in percent ``400 diff(log realgdp)``, demeaned,
    1959Q2-2009Q3 (202 quarters; ``models/data/us_real_gdp.csv``, public domain, see its README).
    Returns ``(dates as year + (quarter - 1) / 4, growth)``."""
    import os

    path = os.path.join(os.path.dirname(__file__), "data", "us_real_gdp.csv")
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    growth = 400 * np.diff(np.log(data[:, 2]))
    return data[1:, 0] + (data[1:, 1] - 1) / 4, growth - growth.mean()


def growth_model(y):
    """The nonlinear growth model (Kitagawa 1996; Gordon, Salmond & Smith 1993): ``x_{-1} ~ N(0, 5)``,
    ``x_t = x_{t-1}/2 + 25 x_{t-1} / (1 + x_{t-1}^2) + 8 cos(1.2 t) + N(0, sigma_v^2)``,
    ``y_t = x_t^2 / 20 + N(0, sigma_w^2)``; priors ``sigma_v, sigma_w ~ HalfNormal(5)``. The time index
    travels in the scan inputs ``(t, y_t)``."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.control_flow import scan

    sigma_v = numpyro.sample("sigma_v", dist.HalfNormal(5.0))
    sigma_w = numpyro.sample("sigma_w", dist.HalfNormal(5.0))
    x_init = numpyro.sample("x_init", dist.Normal(0.0, jnp.sqrt(5.0)))

    def body(x, inp):
        t, y_t = inp
        x = numpyro.sample("x", dist.Normal(x / 2 + 25 * x / (1 + x**2) + 8 * jnp.cos(1.2 * t), sigma_v))
        numpyro.sample("y", dist.Normal(x**2 / 20, sigma_w), obs=y_t)
        return x, None

    scan(body, x_init, (jnp.arange(len(y), dtype=jnp.float32), y))


def simulate_growth(num_steps: int, sigma_v: float = np.sqrt(10.0), sigma_w: float = 1.0, seed: int = 0):
    """Simulate ``(x, y)`` of :func:`growth_model` (times 0..T-1) with NumPy."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, np.sqrt(5.0))
    xs, ys = [], []
    for t in range(num_steps):
        x = x / 2 + 25 * x / (1 + x**2) + 8 * np.cos(1.2 * t) + sigma_v * rng.normal()
        xs.append(x)
        ys.append(x**2 / 20 + sigma_w * rng.normal())
    return np.array(xs), np.array(ys)
