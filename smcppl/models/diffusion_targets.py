"""Diffused Gaussian mixtures: closed-form validation targets for the Feynman–Kac correctors.

A mixture ``p_0 = sum_k w_k N(mu_k, Sigma_k)`` pushed through a linear-drift SDE (``x_t = alpha_t x_0 +
sigma_t eps``) stays a mixture at every ``t``::

    q_t = sum_k w_k N(alpha_t mu_k, alpha_t^2 Sigma_k + sigma_t^2 I),
    grad log q_t(x) = sum_k r_k(x) (alpha_t^2 Sigma_k + sigma_t^2 I)^{-1} (alpha_t mu_k - x),   r_k = responsibilities.

Exact answers for the correctors' targets (all at ``t = 0``):

* product ``p1 p2``: a mixture with ``K1 K2`` components (:func:`product`), normaliser
  ``Z = sum_ij w_i v_j N(mu_i; nu_j, Sigma_i + S_j)``;
* ``p^beta``: a mixture for integer ``beta`` (:func:`power`), and for any ``beta > 0`` exact draws on a
  fine grid (:func:`sample_power`) and the normaliser ``int p^beta`` by quadrature (:func:`log_integral`);
* guidance ``p^(1-w) p_c^w = p_c (p(c|x) / p(c))^(w-1)``: exact draws by rejection from ``p_c`` with
  acceptance ``p(c|x)^(w-1)`` for ``w >= 1`` (:func:`sample_guided`);
* reward tilts ``p(x) exp(-lam |x - c|^2 / 2)``: a mixture (:func:`tilt_quadratic`).

Metrics: :func:`energy_distance` (optionally weighted) and :func:`mode_masses`.
Everything is JAX; the score and log-density functions are jit/vmap-able per point ``x`` of shape ``[d]``.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from smcppl.models.sde import SDE

__all__ = [
    "GaussianMixture",
    "mixture",
    "two_mode_1d",
    "ring_2d",
    "labelled_2d",
    "product",
    "power",
    "tilt_quadratic",
    "log_integral",
    "sample_power",
    "sample_guided",
    "guided_log_density",
    "energy_distance",
    "mode_masses",
    "exact_mode_masses",
]


class GaussianMixture(NamedTuple):
    """``sum_k w_k N(mu_k, Sigma_k)`` in ``d`` dimensions; build with :func:`mixture`.

    weights ``[K]`` (sum to 1), means ``[K, d]``, covs ``[K, d, d]``, labels ``[K]`` (int class of each
    component, for guidance; default ``0..K-1``); ``evals [K, d]``/``evecs [K, d, d]`` the eigendecomposition
    of ``covs`` (``evecs`` None when every covariance is diagonal), computed once by :func:`mixture`, so that
    scores at any ``t`` need no matrix factorisation (cheap to compile and to run).
    """

    weights: jax.Array
    means: jax.Array
    covs: jax.Array
    labels: jax.Array
    evals: Optional[jax.Array] = None
    evecs: Optional[jax.Array] = None

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    # -------------------------------------------------------------------------------- diffusion
    def diffuse(self, sde: SDE, t: ArrayLike) -> "GaussianMixture":
        """The marginal ``q_t`` of this mixture under ``sde``: means ``alpha_t mu``, covs
        ``alpha_t^2 Sigma + sigma_t^2 I``."""
        a, s = sde.alpha(t), sde.sigma(t)
        eye = jnp.eye(self.dim, dtype=self.covs.dtype)
        ev = None if self.evals is None else a**2 * self.evals + s**2
        return self._replace(means=a * self.means, covs=a**2 * self.covs + s**2 * eye, evals=ev)

    def log_prob(self, x: ArrayLike, t: Optional[ArrayLike] = None, sde: Optional[SDE] = None) -> jax.Array:
        """``log q_t(x)`` (``t``/``sde`` omitted: ``log p_0``). ``x``: ``[..., d]``."""
        return logsumexp(self._log_components(x, t, sde), axis=-1)

    def score(self, x: ArrayLike, t: Optional[ArrayLike] = None, sde: Optional[SDE] = None) -> jax.Array:
        """``grad_x log q_t(x) = sum_k r_k(x) C_k^{-1} (m_k - x)`` in closed form, ``C_k = alpha_t^2 Sigma_k +
        sigma_t^2 I``, ``m_k = alpha_t mu_k``, ``r_k`` the responsibilities. ``x``: ``[..., d]``."""
        lc, comp = self._components(x, t, sde)
        r = jax.nn.softmax(lc, axis=-1)
        return jnp.sum(r[..., None] * comp, axis=-2)

    def score_fn(self, sde: SDE) -> Callable[[ArrayLike, ArrayLike], jax.Array]:
        """``s(x, t)``: the closed-form marginal score under ``sde``, as the samplers expect it."""
        return lambda x, t: self.score(x, t, sde)

    def log_prob_fn(self, sde: SDE) -> Callable[[ArrayLike, ArrayLike], jax.Array]:
        """``(x, t) -> log q_t(x)`` under ``sde``."""
        return lambda x, t: self.log_prob(x, t, sde)

    def _components(self, x, t=None, sde=None):
        """Per-component ``log w_k N(x; m_k, C_k)`` ``[..., K]`` and ``C_k^{-1}(m_k - x)`` ``[..., K, d]``.

        Uses the eigendecomposition ``Sigma_k = U diag(lam) U^T`` so that
        ``C_k = U diag(alpha^2 lam + sigma^2) U^T`` needs no matrix inverse at each ``t``."""
        x = jnp.asarray(x)
        d = self.dim
        if self.evals is not None:
            lam, u = self.evals, self.evecs
        elif _is_diag(self.covs):
            lam, u = jnp.diagonal(self.covs, axis1=-2, axis2=-1), None
        else:
            lam, u = jnp.linalg.eigh(self.covs)
        if t is None:
            a, s2 = 1.0, 0.0
        else:
            a, s2 = sde.alpha(t), sde.sigma(t) ** 2
        ev = a**2 * lam + s2  # [K, d]
        diff = a * self.means - x[..., None, :]  # [..., K, d]
        z = diff if u is None else jnp.einsum("kji,...kj->...ki", u, diff)  # U^T diff
        maha = jnp.sum(z**2 / ev, axis=-1)
        logdet = jnp.sum(jnp.log(ev), axis=-1)
        lc = jnp.log(self.weights) - 0.5 * (maha + logdet + d * math.log(2 * math.pi))
        zc = z / ev
        comp = zc if u is None else jnp.einsum("kij,...kj->...ki", u, zc)
        return lc, comp

    def _log_components(self, x, t=None, sde=None):
        return self._components(x, t, sde)[0]

    # -------------------------------------------------------------------------------- sampling
    def sample(self, key: jax.Array, num_samples: int, t: Optional[ArrayLike] = None,
               sde: Optional[SDE] = None) -> jax.Array:
        """``num_samples`` exact draws of ``q_t`` (or ``p_0``), shape ``[num_samples, d]``."""
        m = self if t is None else self.diffuse(sde, t)
        k1, k2 = jax.random.split(key)
        comp = jax.random.categorical(k1, jnp.log(m.weights), shape=(num_samples,))
        chol = jnp.linalg.cholesky(m.covs)
        z = jax.random.normal(k2, (num_samples, m.dim), m.means.dtype)
        return m.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], z)

    # -------------------------------------------------------------------------------- guidance
    def conditional(self, label: int) -> "GaussianMixture":
        """``p_c``: the components with class ``label`` (the others get weight 0, so shapes stay static and
        this works on traced mixtures), weights renormalised."""
        try:
            labels = np.asarray(self.labels)
        except Exception:
            labels = None
        if labels is not None and not np.any(labels == label):
            raise ValueError(f"No mixture component has label {label}; labels are {sorted(set(labels.tolist()))}.")
        w = jnp.where(self.labels == label, self.weights, 0.0)
        return self._replace(weights=w / jnp.sum(w))

    def log_class_posterior(self, x: ArrayLike, label: int, t: Optional[ArrayLike] = None,
                            sde: Optional[SDE] = None) -> jax.Array:
        """``log p_t(c | x) = log sum_{k in c} w_k N_k(x) - log q_t(x)``."""
        lc = self._log_components(x, t, sde)
        mask = self.labels == label
        return logsumexp(jnp.where(mask, lc, -jnp.inf), axis=-1) - logsumexp(lc, axis=-1)


def mixture(weights: Union[ArrayLike, Sequence[float]], means: Union[ArrayLike, Sequence[float]],
            covs: Optional[ArrayLike] = None, scales: Optional[Union[ArrayLike, Sequence[float]]] = None,
            labels: Optional[Union[ArrayLike, Sequence[int]]] = None) -> GaussianMixture:
    """Build a :class:`GaussianMixture`, checking shapes.

    means ``[K, d]`` (or ``[K]`` for 1-D); covs ``[K, d, d]``, or scales (std devs, ``[K]`` isotropic or
    ``[K, d]`` diagonal). weights are normalised.
    """
    w = jnp.asarray(weights, dtype=jnp.result_type(float))
    mu = jnp.asarray(means, dtype=w.dtype)
    if mu.ndim == 1:
        mu = mu[:, None]
    if w.ndim != 1 or mu.ndim != 2 or mu.shape[0] != w.shape[0]:
        raise ValueError(f"mixture: weights must be [K] and means [K, d]; got weights {w.shape}, means {mu.shape}.")
    if _concrete(w) and (not np.all(np.asarray(w) >= 0) or not float(np.sum(np.asarray(w))) > 0):
        raise ValueError("mixture: weights must be non-negative with a positive sum.")
    k, d = mu.shape
    if covs is not None:
        c = jnp.asarray(covs, dtype=w.dtype)
        if c.shape == (k,) and d == 1:
            c = c[:, None, None]
        if c.shape != (k, d, d):
            raise ValueError(f"mixture: covs must have shape {(k, d, d)}, got {c.shape}.")
    else:
        s = jnp.ones((k,), w.dtype) if scales is None else jnp.asarray(scales, dtype=w.dtype)
        if s.ndim == 1:
            s = jnp.broadcast_to(s[:, None], (k, d))
        if s.shape != (k, d):
            raise ValueError(f"mixture: scales must be [K] or [K, d] = {(k, d)}, got {s.shape}.")
        c = jax.vmap(jnp.diag)(s**2)
    lab = jnp.arange(k) if labels is None else jnp.asarray(labels, dtype=jnp.int32)
    if lab.shape != (k,):
        raise ValueError(f"mixture: labels must have shape {(k,)}, got {lab.shape}.")
    m = GaussianMixture(w / jnp.sum(w), mu, c, lab)
    return _decompose(m) if _concrete(c) else m


def _decompose(m: GaussianMixture) -> GaussianMixture:
    """Attach the eigendecomposition of the covariances (checks they are symmetric positive definite)."""
    c = np.asarray(m.covs, dtype=float)
    if not np.allclose(c, np.swapaxes(c, -1, -2), atol=1e-6 * max(1.0, float(np.abs(c).max()))):
        raise ValueError("mixture: covariances must be symmetric.")
    if _is_diag(c):
        lam, u = np.diagonal(c, axis1=-2, axis2=-1), None
    else:
        lam, u = np.linalg.eigh(0.5 * (c + np.swapaxes(c, -1, -2)))
    if not np.all(lam > 0):
        raise ValueError("mixture: covariances must be positive definite (scales > 0).")
    dt_ = m.means.dtype
    return m._replace(evals=jnp.asarray(lam, dt_), evecs=None if u is None else jnp.asarray(u, dt_))


def two_mode_1d(weights: Sequence[float] = (0.5, 0.5), locs: Sequence[float] = (-2.0, 2.0),
                scales: Sequence[float] = (0.3, 1.0)) -> GaussianMixture:
    """The 1-D two-mode test mixture ``0.5 N(-2, 0.3^2) + 0.5 N(2, 1)`` (labels 0, 1). Its modes have
    different widths, so ``p^2`` moves mass to the narrow mode (0.77 vs 0.5) while the uncorrected
    score-scaling sampler leaves it near 0.57."""
    return mixture(weights, jnp.asarray(locs, dtype=float)[:, None], scales=jnp.asarray(scales, dtype=float))


def ring_2d(num_modes: int = 4, radius: float = 2.5, scale: float = 0.4,
            weights: Optional[Union[ArrayLike, Sequence[float]]] = None) -> GaussianMixture:
    """``num_modes`` isotropic Gaussians on a circle (unequal weights ``1, 2, ..., K`` by default)."""
    ang = 2 * np.pi * np.arange(num_modes) / num_modes
    mu = radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    w = np.arange(1, num_modes + 1, dtype=float) if weights is None else np.asarray(weights, float)
    return mixture(w, mu, scales=np.full(num_modes, scale))


def labelled_2d(scale: float = 0.5) -> GaussianMixture:
    """A 2-D four-component mixture with two classes (labels ``0, 0, 1, 1``) that overlap in the middle,
    for classifier-free guidance tests."""
    mu = np.array([[-2.0, 0.0], [0.0, 1.5], [2.0, 0.0], [0.0, -1.0]])
    return mixture([0.3, 0.2, 0.3, 0.2], mu, scales=np.full(4, scale), labels=[0, 0, 1, 1])


def _concrete(x) -> bool:
    try:
        np.asarray(x)
        return True
    except Exception:
        return False


def _is_diag(covs) -> bool:
    """True when every covariance is diagonal (checked on concrete values; traced values count as full)."""
    try:
        c = np.asarray(covs)
    except Exception:
        return False
    return bool(np.all(c * (1 - np.eye(c.shape[-1])) == 0))


# ------------------------------------------------------------------------------------ closed forms
def _gauss_logpdf(x, mean, cov):
    d = x.shape[-1]
    chol = jnp.linalg.cholesky(cov)
    sol = jax.scipy.linalg.solve_triangular(chol, x - mean, lower=True)
    return -0.5 * (jnp.sum(sol**2) + 2 * jnp.sum(jnp.log(jnp.diag(chol))) + d * math.log(2 * math.pi))


def product(a: GaussianMixture, b: GaussianMixture) -> tuple[GaussianMixture, jax.Array]:
    """``a(x) b(x) = Z * m(x)`` with ``m`` a normalised mixture of ``K_a K_b`` components.

    Component ``(i, j)``: covariance ``C = (A_i^{-1} + B_j^{-1})^{-1}``, mean ``C (A_i^{-1} mu_i + B_j^{-1} nu_j)``,
    unnormalised weight ``w_i v_j N(mu_i; nu_j, A_i + B_j)``; ``Z`` = sum of those weights.
    Returns ``(m, log Z)``. Labels of ``m`` are ``a``'s labels.
    """
    if a.dim != b.dim:
        raise ValueError(f"product: dimensions differ ({a.dim} vs {b.dim}).")
    pa, pb = jnp.linalg.inv(a.covs), jnp.linalg.inv(b.covs)

    def pair(wi, mi, ci, pi, vj, nj, cj, pj):
        cov = jnp.linalg.inv(pi + pj)
        mean = cov @ (pi @ mi + pj @ nj)
        return jnp.log(wi) + jnp.log(vj) + _gauss_logpdf(mi, nj, ci + cj), mean, cov

    inner = jax.vmap(pair, in_axes=(None, None, None, None, 0, 0, 0, 0))
    outer = jax.vmap(inner, in_axes=(0, 0, 0, 0, None, None, None, None))
    lw, means, covs = outer(a.weights, a.means, a.covs, pa, b.weights, b.means, b.covs, pb)
    k = a.num_components * b.num_components
    lw, means, covs = lw.reshape(k), means.reshape(k, a.dim), covs.reshape(k, a.dim, a.dim)
    log_z = logsumexp(lw)
    labels = jnp.repeat(a.labels, b.num_components)
    covs = 0.5 * (covs + jnp.swapaxes(covs, -1, -2))
    if _is_diag(a.covs) and _is_diag(b.covs):  # products of diagonal covariances are diagonal
        covs = covs * jnp.eye(a.dim, dtype=covs.dtype)
    m = GaussianMixture(jnp.exp(lw - log_z), means, covs, labels)
    try:
        m = _decompose(m)
    except Exception:
        pass
    return m, log_z


def power(p: GaussianMixture, k: int) -> tuple[GaussianMixture, jax.Array]:
    """``p^k = Z m`` for an integer ``k >= 1`` by repeated :func:`product`; returns ``(m, log Z)``
    with ``log Z = log int p^k``."""
    if int(k) != k or k < 1:
        raise ValueError(f"power: k must be a positive integer (use sample_power / log_integral otherwise), got {k}.")
    m, log_z = p, jnp.zeros(())
    for _ in range(int(k) - 1):
        m, lz = product(m, p)
        log_z = log_z + lz
    return m, log_z


def tilt_quadratic(p: GaussianMixture, center: ArrayLike, lam: float) -> tuple[GaussianMixture, jax.Array]:
    """``p(x) exp(-lam |x - c|^2 / 2) = Z m(x)`` in closed form (``lam > 0``); returns ``(m, log Z)``.

    The tilt is ``(2 pi / lam)^{d/2} N(x; c, I / lam)``, so this is :func:`product` with one Gaussian."""
    if not lam > 0:
        raise ValueError(f"tilt_quadratic: lam must be > 0, got {lam}.")
    d = p.dim
    c = jnp.asarray(center, p.means.dtype).reshape(1, d)
    g = _decompose(GaussianMixture(jnp.ones(1), c, jnp.eye(d)[None] / lam, jnp.zeros(1, jnp.int32)))
    m, log_z = product(p, g)
    return m, log_z + 0.5 * d * math.log(2 * math.pi / lam)


# ------------------------------------------------------------------------------------ quadrature / grids
def _grid(p: GaussianMixture, num_points: int, pad: float = 8.0):
    """A regular grid covering every component to ``pad`` standard deviations: (points [M, d], cell volume)."""
    sd = jnp.sqrt(jnp.diagonal(p.covs, axis1=-2, axis2=-1))  # [K, d]
    lo = np.asarray(jnp.min(p.means - pad * sd, axis=0))
    hi = np.asarray(jnp.max(p.means + pad * sd, axis=0))
    axes = [np.linspace(lo[i], hi[i], num_points) for i in range(p.dim)]
    h = np.array([ax[1] - ax[0] for ax in axes])
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, p.dim)
    return jnp.asarray(mesh, p.means.dtype), float(np.prod(h)), h


def _default_grid_points(dim):
    if dim == 1:
        return 20001
    if dim == 2:
        return 801
    raise ValueError(f"Grid quadrature/sampling is for 1-D and 2-D targets, got dimension {dim}.")


def log_integral(log_fn: Callable[[jax.Array], jax.Array], p: GaussianMixture,
                 num_points: Optional[int] = None) -> jax.Array:
    """``log int exp(log_fn(x)) dx`` by the midpoint/trapezoid rule on a grid covering ``p``'s components
    (1-D: 20001 points, 2-D: 801^2). ``log_fn`` maps ``[M, d] -> [M]``; the integrand must be
    negligible outside ``p``'s support (true for ``p^beta``, products and guided targets of ``p``)."""
    n = num_points or _default_grid_points(p.dim)
    pts, vol, _ = _grid(p, n)
    return logsumexp(log_fn(pts)) + math.log(vol)


def _inverse_cdf(key, log_weights, num_samples):
    """Indices drawn i.i.d. from ``softmax(log_weights)`` by inverse CDF (O((n + m) log n), unlike
    ``jax.random.categorical`` with a sample shape, which draws an n-vector of Gumbels per sample)."""
    cdf = jnp.cumsum(jax.nn.softmax(log_weights))
    u = jax.random.uniform(key, (num_samples,), cdf.dtype) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), cdf.shape[0] - 1)


def _sample_grid(key, log_fn, p: GaussianMixture, num_samples: int, num_points: Optional[int] = None):
    n = num_points or _default_grid_points(p.dim)
    pts, _, h = _grid(p, n)
    k1, k2 = jax.random.split(key)
    idx = _inverse_cdf(k1, log_fn(pts), num_samples)
    jitter = (jax.random.uniform(k2, (num_samples, p.dim), pts.dtype) - 0.5) * jnp.asarray(h, pts.dtype)
    return pts[idx] + jitter


def sample_power(key: jax.Array, p: GaussianMixture, beta: float, num_samples: int,
                 num_points: Optional[int] = None) -> jax.Array:
    """Draws of ``p^beta / int p^beta`` for any ``beta > 0`` (1-D or 2-D) on a fine grid: cell chosen
    with probability ``p^beta(cell) * volume``, uniform within the cell (error O(cell width), ~1e-3 of
    the component scale with the default grids)."""
    if not beta > 0:
        raise ValueError(f"sample_power: beta must be > 0, got {beta}.")
    return _sample_grid(key, lambda x: beta * p.log_prob(x), p, num_samples, num_points)


def guided_log_density(p: GaussianMixture, label: int, w: float) -> Callable[[ArrayLike], jax.Array]:
    """Unnormalised ``log [p(x)^(1-w) p_c(x)^w]`` as a function of ``x [..., d]``."""
    pc = p.conditional(label)
    return lambda x: (1.0 - w) * p.log_prob(x) + w * pc.log_prob(x)


def sample_guided(key: jax.Array, p: GaussianMixture, label: int, w: float, num_samples: int,
                  max_rounds: int = 1000) -> jax.Array:
    """Exact draws of the guided target ``p^(1-w) p_c^w ∝ p_c(x) p(c|x)^(w-1)`` for ``w >= 1`` by rejection
    from ``p_c`` with acceptance probability ``p(c|x)^(w-1) <= 1``. Returns ``[num_samples, d]``."""
    if not w >= 1:
        raise ValueError(f"sample_guided: rejection sampling needs w >= 1, got w={w} (use the grid sampler).")
    pc = p.conditional(label)
    out, got = [], 0

    @jax.jit
    def batch(k):
        k1, k2 = jax.random.split(k)
        x = pc.sample(k1, num_samples)
        log_acc = (w - 1.0) * p.log_class_posterior(x, label)
        return x, jnp.log(jax.random.uniform(k2, (num_samples,))) < log_acc

    for _ in range(max_rounds):
        key, sub = jax.random.split(key)
        x, acc = batch(sub)
        x = np.asarray(x)[np.asarray(acc)]
        out.append(x)
        got += x.shape[0]
        if got >= num_samples:
            return jnp.asarray(np.concatenate(out)[:num_samples])
    raise RuntimeError(f"sample_guided: acceptance too low ({got} of {num_samples} draws after {max_rounds} rounds).")


# ------------------------------------------------------------------------------------ metrics
def energy_distance(x: ArrayLike, y: ArrayLike, x_log_weights: Optional[ArrayLike] = None,
                    y_log_weights: Optional[ArrayLike] = None, max_points: int = 4000,
                    key: Optional[jax.Array] = None) -> jax.Array:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between (optionally weighted) samples
    ``x [n, d]``, ``y [m, d]`` (V-statistic; 0 iff the distributions are equal, in the limit).

    Larger samples are subsampled to ``max_points`` (uniformly, or by the weights if given) to bound the
    ``O(n m)`` cost."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1)
    key = jax.random.key(0) if key is None else key

    def prep(k, z, lw):
        n = z.shape[0]
        if n > max_points:
            if lw is None:
                idx = jax.random.choice(k, n, (max_points,), replace=False)
            else:
                idx = _inverse_cdf(k, jnp.asarray(lw), max_points)
            return z[idx], jnp.full((max_points,), 1.0 / max_points)
        w = jnp.full((n,), 1.0 / n) if lw is None else jax.nn.softmax(jnp.asarray(lw))
        return z, w

    kx, ky = jax.random.split(key)
    x, wx = prep(kx, x, x_log_weights)
    y, wy = prep(ky, y, y_log_weights)
    return _energy(x, wx, y, wy)


@jax.jit
def _energy(x, wx, y, wy):
    def mean_dist(a, wa, b, wb):
        d = jnp.sqrt(jnp.maximum(jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1), 0.0))
        return wa @ d @ wb

    return 2 * mean_dist(x, wx, y, wy) - mean_dist(x, wx, x, wx) - mean_dist(y, wy, y, wy)


def mode_masses(x: ArrayLike, centers: ArrayLike, log_weights: Optional[ArrayLike] = None) -> jax.Array:
    """Fraction of (weighted) samples ``x [n, d]`` nearest to each of ``centers [K, d]``; shape ``[K]``."""
    x = jnp.asarray(x).reshape(jnp.shape(x)[0], -1)
    c = jnp.asarray(centers).reshape(jnp.shape(centers)[0], -1)
    nearest = jnp.argmin(jnp.sum((x[:, None, :] - c[None]) ** 2, axis=-1), axis=1)
    w = jnp.full((x.shape[0],), 1.0 / x.shape[0]) if log_weights is None else jax.nn.softmax(jnp.asarray(log_weights))
    return jnp.zeros(c.shape[0], w.dtype).at[nearest].add(w)


def exact_mode_masses(log_fn: Callable[[jax.Array], jax.Array], p: GaussianMixture,
                      centers: Optional[ArrayLike] = None, num_points: Optional[int] = None) -> jax.Array:
    """Exact probability of each nearest-centre cell (default centres: ``p``'s means) under the density
    ``∝ exp(log_fn(x))``, by grid quadrature."""
    n = num_points or _default_grid_points(p.dim)
    pts, _, _ = _grid(p, n)
    c = p.means if centers is None else jnp.asarray(centers).reshape(-1, p.dim)
    return mode_masses(pts, c, log_fn(pts))
