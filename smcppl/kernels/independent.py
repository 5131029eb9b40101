"""Independent Metropolis–Hastings (IMH) moves with a proposal fitted to the weighted particles.

The proposal ``q`` does not depend on the particle it moves. It lives in the preconditioner's whitened
coordinates ``z = L^{-1} (x - mu)`` (``(mu, L)`` from :func:`~smcppl.kernels.moves.particle_preconditioner`:
the weighted particle mean and a factor of their covariance; the Jacobian of ``z -> x`` is a constant and
cancels in the acceptance ratio)::

    q(z) = sum_k w_k t_nu(z; m_k, s^2 C_k C_k^T)

* one component (the default): ``w = 1, m = 0, C = I`` — a multivariate-t (Gaussian for ``nu = None``)
  with the particles' weighted mean and covariance, nothing refitted;
* ``K > 1`` components (multimodal populations): :func:`fit_mixture` of the weighted particles.

A transition is BlackJAX's independent Rosenbluth–Metropolis–Hastings kernel: draw ``z' ~ q``, accept with

    alpha = min(1, pi(z') q(z) / (pi(z) q(z'))),

which leaves ``pi`` invariant for any fixed ``q`` with full support (the t and the Gaussian have it).
Samplers fit ``q`` to the weighted particles *before* resampling (as the preconditioner), so that the
kernel is a function of the previous generation only and ``log Z`` stays unbiased.

Scale: ``s`` is the move's ``step_size`` (default 1: ``q`` has the particles' covariance as its scale
matrix). It is **not** adapted toward a target acceptance as the local kernels' steps are: the
acceptance of an independence sampler is not monotone in ``s`` (it peaks near ``s = 1`` when ``q`` fits
``pi`` and falls on both sides), so the multiplicative rule of the other kernels would drive ``s -> 0``
whenever the acceptance starts below its target. On a Gaussian target with a covariance estimated from
500 effective particles, ``s = 1`` accepts more than ``s = 1.1`` or ``1.2`` in 5 to 31 dimensions.
Degrees of freedom: ``nu = DEFAULT_DOF = 10`` by default — tails heavier than any Gaussian-tailed
posterior, so that ``pi / q`` stays bounded there. On the 31-d logistic regression of ``benchmarks/imh.py``
(5 transitions per stage, 16 chains) a Gaussian proposal left ``log Z`` 0.74 too low (particles stuck in
tails the proposal under-covers), ``nu = 30`` 0.18 too low, ``nu = 10`` and ``nu = 5`` within
0.1 of the reference; on the 20-d conjugate Gaussian ``nu = 10`` costs acceptance (0.51 vs 0.63) but
not ``log Z`` precision.

When to use it: posteriors that a t (or a ``K``-component mixture) fitted to the particles describes
well — unimodal (or ``K`` separated modes), not too skewed, up to a few tens of dimensions — where one
density evaluation per transition (no gradient) replaces an HMC transition's ``num_integration_steps``
gradients. Give it enough transitions that few particles stay where they are: a particle keeps its
state through a stage with probability about ``(1 - acceptance)^num_mcmc_steps``, so take
``num_mcmc_steps >= log(0.01) / log(1 - acceptance)`` (11 at acceptance 0.36, the 31-d logistic
regression; 20 there matched HMC's ``log Z`` with 2.4x fewer evaluations). Its acceptance drops as the
fit degrades (strong skew, funnels, curved ridges, or many dimensions at small N: the covariance
estimate's error grows like ``d / sqrt(N)``); use HMC there, and watch ``acceptance_rate`` per stage.
A healthy acceptance does not vouch for ``log Z``: on a 5-parameter linear regression with an unknown noise
scale (the tempered posteriors are funnels) 10 transitions accepted 0.41-0.74 per stage and gave the right
posterior means, yet ``log Z`` 7 nats too low at N = 2000, every chain agreeing (``benchmarks/user_models.py
--logz``): the proposal fitted to the whole population rarely lands in the funnel's narrow part.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional

import blackjax
import jax
import jax.numpy as jnp

from smcppl.core.checks import positive_float, positive_int
from smcppl.core.weights import normalize

if TYPE_CHECKING:
    from smcppl.kernels.moves import MoveSettings

__all__ = ["DEFAULT_DOF", "MixtureFit", "fit_mixture", "proposal_fit", "proposal_fit_template",
           "proposal_logdensity", "sample_proposal", "imh_kernel", "validate_imh"]

DEFAULT_DOF = 10.0
KMEANS_STEPS = 10  # Lloyd iterations of the mixture fit


class MixtureFit(NamedTuple):
    """A ``K``-component proposal in whitened coordinates."""

    log_weights: jax.Array  # [K] log w_k (normalised; -inf for an empty cluster)
    means: jax.Array  # [K, d] m_k
    chols: jax.Array  # [K, d, d] lower-triangular C_k


def validate_imh(m: MoveSettings) -> MoveSettings:
    """Check the independent-proposal settings of a :class:`~smcppl.kernels.moves.MoveSettings`."""
    k = positive_int(m.proposal_components, "proposal_components")
    if m.proposal_dof is not None:
        positive_float(m.proposal_dof, "proposal_dof (None: a Gaussian proposal)")
    if m.kind != "imh":
        if k != 1:
            raise ValueError(f"proposal_components={k} is a setting of move='imh', not of move={m.kind!r}.")
        return m
    if m.preconditioning == "none":
        raise ValueError("move='imh' fits its proposal to the particles through the preconditioner; "
                         "preconditioning='none' would leave a fixed N(0, I) proposal. Use 'full' or 'diag'.")
    if m.target_acceptance is not None:
        raise ValueError("move='imh' does not adapt its scale toward a target acceptance (its acceptance is not "
                         "monotone in the scale); leave target_acceptance=None and set step_size (the scale "
                         "factor on the proposal covariance's factor, default 1) instead.")
    return m._replace(proposal_components=int(k))


# ------------------------------------------------------------------------------------- the proposal
def _t_logpdf(u, logdet, dof):
    """Log density at ``u = A^{-1} (z - m)`` of a t (Gaussian if ``dof`` is None) with scale factor ``A``,
    ``log|det A| = logdet``."""
    d = u.shape[-1]
    r2 = jnp.sum(u**2, axis=-1)
    if dof is None:
        return -0.5 * r2 - 0.5 * d * math.log(2 * math.pi) - logdet
    c = math.lgamma((dof + d) / 2) - math.lgamma(dof / 2) - 0.5 * d * math.log(dof * math.pi)
    return c - logdet - 0.5 * (dof + d) * jnp.log1p(r2 / dof)


def _radial(key, shape, dtype, dof):
    """Standard normal draws, divided by ``sqrt(chi2_nu / nu)`` for a t."""
    k_n, k_g = jax.random.split(key)
    g = jax.random.normal(k_n, shape, dtype)
    if dof is None:
        return g
    chi2 = 2.0 * jax.random.gamma(k_g, jnp.asarray(dof / 2, dtype), (), dtype)
    return g * jax.lax.rsqrt(chi2 / dof)


def proposal_logdensity(z: jax.Array, fit: Optional[MixtureFit], scale, dof: Optional[float]) -> jax.Array:
    """``log q(z)`` for one whitened position ``z [d]`` (``fit=None``: the one-component ``t_nu(0, s^2 I)``)."""
    d = z.shape[-1]
    log_s = jnp.log(scale)
    if fit is None:
        return _t_logpdf(z / scale, d * log_s, dof)

    def comp(lw, m, C):
        u = jax.scipy.linalg.solve_triangular(C, z - m, lower=True) / scale
        return lw + _t_logpdf(u, jnp.sum(jnp.log(jnp.diagonal(C))) + d * log_s, dof)
    return jax.scipy.special.logsumexp(jax.vmap(comp)(fit.log_weights, fit.means, fit.chols))


def sample_proposal(key: jax.Array, fit: Optional[MixtureFit], scale, dof: Optional[float], d: int,
                    dtype) -> jax.Array:
    """One draw ``z ~ q`` (whitened coordinates)."""
    k_c, k_r = jax.random.split(key)
    u = scale * _radial(k_r, (d,), dtype, dof)
    if fit is None:
        return u
    k = jax.random.categorical(k_c, fit.log_weights)
    return fit.means[k] + fit.chols[k] @ u


def imh_kernel(m: MoveSettings) -> tuple[Callable, Callable]:
    """``(init, step)`` in the interface of the other particle moves (``kernels.moves``):
    ``step(key, state, logdensity, scale, fit) -> (state, acceptance probability, divergent)``, with
    ``fit`` a :class:`MixtureFit` (``K > 1``) or ignored (one component)."""
    from smcppl.kernels.moves import _exploded  # moves imports this module: import it lazily

    kernel = blackjax.mcmc.random_walk.build_irmh()
    dof = None if m.proposal_dof is None else float(m.proposal_dof)
    mixture = m.proposal_components > 1

    def step(key, state, logdensity, scale, fit):
        fit = MixtureFit(**fit) if mixture else None
        x = state.position
        st, info = kernel(key, state, logdensity,
                          lambda k: sample_proposal(k, fit, scale, dof, x.shape[-1], x.dtype),
                          # BlackJAX's convention: (from, to) -> log q(to); independent of `from`
                          lambda _, to: proposal_logdensity(to.position, fit, scale, dof))
        return st, info.acceptance_rate, _exploded(state.logdensity, st.logdensity, st.position)

    return blackjax.mcmc.random_walk.init, step


# ---------------------------------------------------------------------------------- the mixture fit
def fit_mixture(z: jax.Array, log_weights: jax.Array, num_components: int, steps: int = KMEANS_STEPS) -> MixtureFit:
    """A ``K``-component fit to weighted whitened particles ``z [N, d]``, deterministic given them.

    1. Seeding (greedy weighted farthest point, the mode of k-means++'s seeding law): ``c_1`` maximises
       ``W_i |z_i|^2`` (distance to the weighted mean, 0 in whitened coordinates), each next centre
       maximises ``W_i min_j |z_i - c_j|^2`` — weights keep negligible outliers from becoming centres.
    2. ``steps`` weighted Lloyd (k-means) iterations.
    3. Per cluster: ``w_k`` = its weight, ``m_k`` its weighted mean, ``C_k C_k^T`` its weighted
       covariance ``S_k`` shrunk toward the whole population's (``I`` here) with ``d + 2`` pseudo-particles,
       ``(e_k S_k + (d + 2) I) / (e_k + d + 2)`` (``e_k`` the cluster's effective size), so that a small
       cluster gets a well-conditioned, wide component.
    """
    d = z.shape[1]
    w = normalize(log_weights)
    dt = z.dtype
    z = jnp.where(w[:, None] > 0, z, 0.0)  # weightless (possibly non-finite) particles must not poison sums

    def sqdist(c):
        return jnp.sum((z[:, None, :] - c[None]) ** 2, axis=-1)  # [N, K]

    near = jnp.sum(z**2, axis=-1)
    centres = []
    for _ in range(num_components):
        c = z[jnp.argmax(w * near)]
        centres.append(c)
        near = jnp.minimum(near, jnp.sum((z - c) ** 2, axis=-1)) if len(centres) > 1 else jnp.sum((z - c) ** 2, -1)
    centres = jnp.stack(centres)

    def responsibilities(c):
        return jax.nn.one_hot(jnp.argmin(sqdist(c), axis=1), num_components, dtype=dt) * w[:, None]

    def lloyd(c, _):
        r = responsibilities(c)
        mass = r.sum(0)
        return jnp.where(mass[:, None] > 0, (r.T @ z) / jnp.where(mass > 0, mass, 1)[:, None], c), None

    centres, _ = jax.lax.scan(lloyd, centres, None, length=steps)
    r = responsibilities(centres)
    mass = r.sum(0)
    safe = jnp.where(mass > 0, mass, 1)
    means = jnp.where(mass[:, None] > 0, (r.T @ z) / safe[:, None], centres)
    xc = z[None] - means[:, None]  # [K, N, d]
    cov = jnp.einsum("kn,kni,knj->kij", r.T, xc, xc) / safe[:, None, None]
    eff = mass**2 / jnp.maximum(jnp.sum(r**2, axis=0), jnp.finfo(dt).tiny)
    n0 = d + 2.0
    eye = jnp.eye(d, dtype=dt)
    cov = (eff[:, None, None] * cov + n0 * eye) / (eff[:, None, None] + n0)
    chols = jnp.linalg.cholesky(cov)
    chols = jnp.where(jnp.all(jnp.isfinite(chols), axis=(1, 2), keepdims=True), chols, eye)
    log_w = jnp.where(mass > 0, jnp.log(safe), -jnp.inf)
    return MixtureFit(log_w - jax.scipy.special.logsumexp(log_w), means, chols)


def proposal_fit(positions: jax.Array, log_weights: jax.Array, preconditioner: tuple, m: MoveSettings) -> dict:
    """The per-stage proposal parameters beyond ``(mu, L)`` for move ``m``, from the weighted particles
    ``positions [N, d]``: a dict of :class:`MixtureFit`'s fields for ``move="imh"`` with ``K > 1``
    components, else ``{}`` (nothing to carry). Samplers carry it next to ``(mu, L)`` (a plain dict,
    so that traces and exports handle it like their other parameters)."""
    if m.kind != "imh" or m.proposal_components == 1:
        return {}
    from smcppl.kernels.moves import _to_z
    mu, L = preconditioner[0], preconditioner[1]
    return fit_mixture(_to_z(mu, L, positions), log_weights, m.proposal_components)._asdict()


def proposal_fit_template(dim: int, m: MoveSettings, dtype) -> dict:
    """Shapes and dtypes (``jax.ShapeDtypeStruct``) of :func:`proposal_fit`'s output, for blank tables."""
    from smcppl.kernels.moves import particle_preconditioner
    x = jax.ShapeDtypeStruct((2, dim), dtype)
    lw = jax.ShapeDtypeStruct((2,), dtype)
    return jax.eval_shape(lambda x, lw: proposal_fit(x, lw, particle_preconditioner(x, lw, m.preconditioning), m),
                          x, lw)
