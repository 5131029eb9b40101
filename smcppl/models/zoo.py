"""Ready NumPyro models (the model zoo) with their data and, where one exists, an exact answer.

Each entry of :data:`ZOO` is a :class:`ZooModel` with ``model`` (a NumPyro model), ``data()``
(keyword arguments for the model) and optionally ``exact()`` (a dict of exact quantities such as
``log_evidence``, posterior ``mean``, mode weights).
"""
from __future__ import annotations

import csv
import math
from importlib import resources
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike

__all__ = ["ZooModel", "ZOO", "get_model", "eight_schools", "hierarchical_normal", "logistic_regression",
           "bimodal_exact",
           "conjugate_gaussian_data", "conjugate_gaussian_exact", "beta_binomial_exact", "halfnormal_scale_exact",
           "challenger_data", "load_challenger", "bimodal", "conjugate_gaussian", "beta_binomial", "halfnormal_scale"]


class ZooModel(NamedTuple):
    model: Callable
    data: Callable
    exact: Optional[Callable] = None
    description: str = ""


# ------------------------------------------------------------------------------------------- eight schools
EIGHT_SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma: ArrayLike, y: Optional[ArrayLike] = None) -> None:
    """Eight schools, non-centred: ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``,
    ``theta_j = mu + tau * eta_j``, ``eta_j ~ N(0, 1)``, ``y_j ~ N(theta_j, sigma_j)``."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(sigma)):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


# ------------------------------------------------------------------------------- hierarchical normal
def hierarchical_normal(group: ArrayLike, num_groups: int, y: Optional[ArrayLike] = None) -> None:
    """Varying intercepts: ``mu ~ N(0, 10)``, ``sigma_group ~ HalfNormal(5)``, ``sigma ~ HalfNormal(5)``,
    ``alpha_g ~ N(mu, sigma_group)``, ``y_i ~ N(alpha_{group_i}, sigma)``."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma_group = numpyro.sample("sigma_group", dist.HalfNormal(5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    with numpyro.plate("group", num_groups):
        alpha = numpyro.sample("alpha", dist.Normal(mu, sigma_group))
    with numpyro.plate("obs", len(group)):
        numpyro.sample("y", dist.Normal(alpha[group], sigma), obs=y)


def _hierarchical_data(seed=0, num_groups=6, per_group=8):
    rng = np.random.default_rng(seed)
    alpha = 2.0 + 1.5 * rng.normal(size=num_groups)
    group = np.repeat(np.arange(num_groups), per_group)
    y = alpha[group] + 1.0 * rng.normal(size=group.size)
    return {"group": group, "num_groups": num_groups, "y": y}


# --------------------------------------------------------------------- logistic regression (Challenger)
def load_challenger() -> dict[str, np.ndarray]:
    """The Challenger O-ring table shipped with smcppl (``models/data/challenger.csv``, source in
    ``models/data/README.md``): 23 Space Shuttle flights before the accident, as numpy arrays
    ``temperature_f`` (launch temperature, degrees Fahrenheit) and ``damage`` (1 = at least one O-ring
    showed thermal distress)."""
    text = resources.files("smcppl.models").joinpath("data/challenger.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return {"temperature_f": np.array([float(r["temperature_f"]) for r in rows]),
            "damage": np.array([int(r["damage"]) for r in rows])}


def challenger_data() -> dict[str, np.ndarray]:
    """Challenger O-ring data (:func:`load_challenger`) as model inputs: ``x`` = launch temperature
    standardised, ``(t - mean(t)) / sd(t)`` with the population sd (``ddof=0``), shape ``[23, 1]``;
    ``y`` = O-ring damage (0/1)."""
    raw = load_challenger()
    temp = raw["temperature_f"]
    x = (temp - temp.mean()) / temp.std()
    return {"x": x[:, None], "y": raw["damage"]}


def logistic_regression(x: ArrayLike, y: Optional[ArrayLike] = None) -> None:
    """Bayesian logistic regression: ``b0 ~ N(0, 5)``, ``w_k ~ N(0, 2.5)``,
    ``y_i ~ Bernoulli(logit^-1(b0 + x_i . w))``."""
    n, k = x.shape
    b0 = numpyro.sample("intercept", dist.Normal(0.0, 5.0))
    with numpyro.plate("feature", k):
        w = numpyro.sample("w", dist.Normal(0.0, 2.5))
    with numpyro.plate("obs", n):
        numpyro.sample("y", dist.Bernoulli(logits=b0 + x @ w), obs=y)


# ------------------------------------------------------------------------------------------- bimodal
BIMODAL_WEIGHTS = (0.3, 0.7)
BIMODAL_MEANS = (-4.0, 4.0)
BIMODAL_SD = 0.5
BIMODAL_PRIOR_SD = 5.0


def bimodal(weights: Sequence[float] = BIMODAL_WEIGHTS, means: Sequence[float] = BIMODAL_MEANS,
            sd: float = BIMODAL_SD, prior_sd: float = BIMODAL_PRIOR_SD) -> None:
    """Well-separated bimodal posterior: ``x ~ N(0, prior_sd)`` and a likelihood factor
    ``sum_k w_k N(x; m_k, sd)``. Posterior mode masses are exactly
    ``w_k N(m_k; 0, prior_sd^2 + sd^2) / sum_j w_j N(m_j; 0, prior_sd^2 + sd^2)``."""
    x = numpyro.sample("x", dist.Normal(0.0, prior_sd))
    comps = jnp.stack([jnp.log(w) + dist.Normal(m, sd).log_prob(x) for w, m in zip(weights, means)])
    numpyro.factor("mixture_likelihood", jax_logsumexp(comps))


def jax_logsumexp(a: ArrayLike) -> jax.Array:
    return jax.scipy.special.logsumexp(a)


def bimodal_exact(weights: Sequence[float] = BIMODAL_WEIGHTS, means: Sequence[float] = BIMODAL_MEANS,
                  sd: float = BIMODAL_SD, prior_sd: float = BIMODAL_PRIOR_SD) -> dict[str, Any]:
    v = prior_sd**2 + sd**2
    comp = np.array([w * math.exp(-0.5 * m**2 / v) / math.sqrt(2 * math.pi * v) for w, m in zip(weights, means)])
    return {"log_evidence": float(np.log(comp.sum())), "mode_weights": comp / comp.sum(), "means": np.array(means)}


# ---------------------------------------------------------------------------------- conjugate gaussian
def conjugate_gaussian(dim: int = 20, num_obs: int = 10, y: Optional[ArrayLike] = None, prior_sd: float = 1.0,
                       noise_sd: float = 1.0) -> None:
    """``theta ~ N(0, prior_sd^2 I_d)``, ``y_i ~ N(theta, noise_sd^2 I_d)``: exact posterior and evidence."""
    with numpyro.plate("dim", dim):
        theta = numpyro.sample("theta", dist.Normal(0.0, prior_sd))
    with numpyro.plate("obs", num_obs, dim=-2):
        numpyro.sample("y", dist.Normal(theta, noise_sd), obs=y)


def conjugate_gaussian_data(dim: int = 20, num_obs: int = 10, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=dim)
    return {"dim": dim, "num_obs": num_obs, "y": theta + rng.normal(size=(num_obs, dim))}


def conjugate_gaussian_exact(dim: int = 20, num_obs: int = 10, y: Optional[ArrayLike] = None,
                             prior_sd: float = 1.0, noise_sd: float = 1.0) -> dict[str, Any]:
    y = np.asarray(y, float)
    n = y.shape[0]
    prec = 1 / prior_sd**2 + n / noise_sd**2
    mean = (y.sum(0) / noise_sd**2) / prec
    # per dimension y_{., j} ~ N(0, noise^2 I + prior^2 11^T)
    cov = noise_sd**2 * np.eye(n) + prior_sd**2 * np.ones((n, n))
    _, logdet = np.linalg.slogdet(2 * np.pi * cov)
    inv = np.linalg.inv(cov)
    log_z = float(sum(-0.5 * (logdet + y[:, j] @ inv @ y[:, j]) for j in range(y.shape[1])))
    return {"log_evidence": log_z, "mean": mean, "var": np.full(y.shape[1], 1 / prec)}


# --------------------------------------------------------------------------------------- beta-binomial
def beta_binomial(n: int, k: Optional[ArrayLike] = None, a: float = 2.0, b: float = 3.0) -> None:
    """``p ~ Beta(a, b)``, ``k ~ Binomial(n, p)``; ``log Z = log C(n,k) + log B(a+k, b+n-k) - log B(a, b)``."""
    p = numpyro.sample("p", dist.Beta(a, b))
    numpyro.sample("k", dist.Binomial(n, p), obs=k)


def beta_binomial_exact(n: int, k: int, a: float = 2.0, b: float = 3.0) -> dict[str, float]:
    lb = lambda x, y: math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)  # noqa: E731
    log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return {"log_evidence": log_choose + lb(a + k, b + n - k) - lb(a, b), "mean": (a + k) / (a + b + n)}


# ------------------------------------------------------------------------------------ half-normal scale
def halfnormal_scale(y: Optional[ArrayLike] = None) -> None:
    """``sigma ~ HalfNormal(1)``, ``y_i ~ N(0, sigma)``: evidence by 1-D quadrature."""
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("obs", len(y)):
        numpyro.sample("y", dist.Normal(0.0, sigma), obs=y)


def halfnormal_scale_exact(y: ArrayLike) -> dict[str, float]:
    from scipy import integrate, stats
    y = np.asarray(y, float)

    def log_integrand(s):
        return stats.halfnorm.logpdf(s) + stats.norm.logpdf(y, 0, s).sum()
    grid = np.linspace(1e-3, 10, 20001)
    m = max(log_integrand(s) for s in grid[::200])
    val, _ = integrate.quad(lambda s: np.exp(log_integrand(s) - m), 0, 20, limit=400, points=[0.5, 1, 2])
    num, _ = integrate.quad(lambda s: s * np.exp(log_integrand(s) - m), 0, 20, limit=400, points=[0.5, 1, 2])
    return {"log_evidence": float(np.log(val) + m), "mean": num / val}


ZOO = {
    "eight_schools": ZooModel(eight_schools, lambda: {"sigma": EIGHT_SCHOOLS_SIGMA, "y": EIGHT_SCHOOLS_Y},
                              None, "Eight schools (non-centred hierarchical model)"),
    "hierarchical_normal": ZooModel(hierarchical_normal, _hierarchical_data, None,
                                    "Varying-intercepts normal model on simulated grouped data"),
    "logistic_regression": ZooModel(logistic_regression, challenger_data, None,
                                    "Logistic regression of Challenger O-ring damage on launch temperature"),
    "bimodal": ZooModel(bimodal, lambda: {}, lambda: bimodal_exact(), "Well-separated bimodal posterior"),
    "conjugate_gaussian": ZooModel(conjugate_gaussian, conjugate_gaussian_data,
                                   lambda: conjugate_gaussian_exact(**conjugate_gaussian_data()),
                                   "20-d conjugate Gaussian (exact evidence and posterior)"),
    "beta_binomial": ZooModel(beta_binomial, lambda: {"n": 20, "k": 7}, lambda: beta_binomial_exact(20, 7),
                              "Beta-binomial (exact evidence)"),
}


def get_model(name: str) -> ZooModel:
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"No model {name!r} in the zoo; available: {sorted(ZOO)}.") from None
