"""MCMC moves for particle populations, built from BlackJAX kernels and tuned from the particles.

A move applies ``num_mcmc_steps`` transitions of a BlackJAX kernel (random-walk Metropolis, MALA, HMC,
NUTS, or independent Metropolis–Hastings: :mod:`smcppl.kernels.independent`) to every particle
(``vmap``), each transition leaving ``pi(x) ∝ exp(logdensity(x))`` invariant.
Preconditioning comes from the particles themselves (what BlackJAX does not provide): with the
weighted particle mean ``mu`` and covariance ``Sigma = L L^T`` (``"full"``) or its diagonal
(``"diag"``), the kernel runs in whitened coordinates ``z = L^{-1} (x - mu)`` on
``log pi(mu + L z)`` — the Jacobian is a constant, so invariance is preserved — which is equivalent to a
proposal covariance / mass matrix of ``Sigma`` for every kernel. Step sizes are expressed in whitened
units and adapted between stages toward a target acceptance rate:
``log h' = log h + 2 (mean acceptance - target)`` (clipped).

Waste-free SMC (Dau & Chopin 2022): ``M = ceil(N / P)`` of the resampled particles each run a chain of
``P - 1`` steps and the first ``N`` of the ``M * P`` visited states (chain by chain) form the new population.
"""
from __future__ import annotations

import warnings
from functools import partial
from typing import Callable, NamedTuple, Optional

import blackjax
import jax
import jax.numpy as jnp

from smcppl.core.checks import open_unit_interval, positive_float, positive_int, renamed_keyword
from smcppl.core.weights import normalize
from smcppl.kernels.independent import DEFAULT_DOF, imh_kernel, proposal_fit, validate_imh

__all__ = ["MOVES", "MoveSettings", "validate_move", "particle_preconditioner", "move_population",
           "adapt_step_size", "default_step_size", "MoveResult", "start_correlation"]

MOVES = ("rwm", "mala", "hmc", "nuts", "ula", "imh")
MOVE_ALIASES = {"independent": "imh"}
GRADIENT_MOVES = ("mala", "hmc", "nuts", "ula")
TARGET_ACCEPTANCE = {"rwm": 0.3, "mala": 0.57, "hmc": 0.65, "nuts": 0.8, "ula": 1.0,
                     "imh": None}  # imh: scale fixed, not adapted (kernels/independent.py)
# Adapted step sizes stay below the leapfrog stability limit of a target whose covariance the metric
# matches (step < 2 in whitened units; HMC's step is jittered up to 1.5x, so 2 / 1.5): on near-Gaussian
# targets acceptance stays high almost up to that limit, and adaptation toward the target acceptance
# would otherwise overshoot into unstable, divergent trajectories.
MAX_ADAPTED_STEP = {"hmc": 2.0 / 1.5, "nuts": 1.9}
# adaptive transitions per stage (max_mcmc_steps): go on while some coordinate's correlation with the stage's
# start exceeds this (PyMC's independent-MH kernel uses 0.01 with up to 25 steps). 0.05 measured on the
# linear regression of benchmarks/user_models.py --steps: log Z error -0.19 +- 0.04 with 5 to 20 transitions
# (fixed 5: -0.54 +- 0.04; fixed 10: -0.16 +- 0.03); 0.1, tried, stopped after 5-7 and left about -0.3
CORRELATION_THRESHOLD = 0.05
MAX_ADAPT_DIVERGENT = 0.05  # share of divergent transitions above which adaptation shrinks the step ...
DIVERGENT_SHRINK = 0.7  # ... by this factor (at least)


class ULAState(NamedTuple):
    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


def ula_init(position: jax.Array, logdensity_fn: Callable) -> ULAState:
    """ULA state at ``position``: the log density and its gradient there."""
    v, g = jax.value_and_grad(logdensity_fn)(position)
    return ULAState(position, v, g)


def ula_step(rng_key: jax.Array, state: ULAState, logdensity_fn: Callable,
             step_size: jax.Array) -> tuple[ULAState, jax.Array]:
    """Unadjusted Langevin ``x' = x + h grad log pi(x) + sqrt(2h) xi`` (not in BlackJAX; no
    Metropolis correction, so it leaves ``pi`` invariant only as ``h -> 0``).

    Returns ``(new state, log alpha)`` with ``log alpha`` the log Metropolis ratio that MALA would
    apply to this move (``log pi(x') + log q(x | x') - log pi(x) - log q(x' | x)``): not used to
    accept, but a free measure of the step's bias (``alpha ~ 1`` for a small enough step)."""
    noise = jax.random.normal(rng_key, state.position.shape, state.position.dtype)
    x = state.position + step_size * state.logdensity_grad + jnp.sqrt(2 * step_size) * noise
    new = ula_init(x, logdensity_fn)
    fwd = -jnp.sum(noise**2) / 2
    bwd = -jnp.sum((state.position - x - step_size * new.logdensity_grad) ** 2) / (4 * step_size)
    log_alpha = new.logdensity - state.logdensity + bwd - fwd
    return new, jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha)


class _MoveFields(NamedTuple):
    kind: str = "hmc"  # the defaults are TemperedSMC's (one vocabulary, ARCHITECTURE.md)
    num_mcmc_steps: int = 5
    preconditioning: str = "full"
    target_acceptance: Optional[float] = None
    step_size: Optional[float] = None
    num_integration_steps: int = 5  # benchmarks/defaults.py: as accurate as 10 per run and 1.3-1.8x cheaper
    waste_free: bool = False
    adapt_step_size: bool = True
    max_num_doublings: int = 6
    proposal_components: int = 1
    proposal_dof: Optional[float] = DEFAULT_DOF
    max_mcmc_steps: Optional[int] = None  # None: exactly num_mcmc_steps per stage
    correlation_threshold: float = CORRELATION_THRESHOLD


class MoveSettings(_MoveFields):
    """Settings of a particle move (a NamedTuple; check them with :func:`validate_move`).

    kind: ``"rwm" | "mala" | "hmc" | "nuts" | "ula" | "imh"`` (alias ``"independent"``: independent MH
    with a t proposal fitted to the weighted particles, one density evaluation and no gradient per
    transition, for posteriors a t fit describes, given ~10-20 steps: :mod:`smcppl.kernels.independent`).
    num_mcmc_steps: kernel transitions per stage (chain length ``P`` for waste-free; ``num_steps`` is its
    deprecated name, as a keyword and as an attribute). preconditioning: ``"full" | "diag" | "none"``.
    target_acceptance: None = kernel default. step_size: initial whitened step size (None =
    dimension-based default). num_integration_steps: leapfrog steps for HMC (default 5). waste_free: use waste-free SMC
    (chains of ``num_mcmc_steps`` states from a systematic subsample of the resampled population; tuning runs
    adapt the step within the stage but never above its start, the default or the given ``step_size``).
    adapt_step_size: adapt between stages toward target_acceptance (not imh: its step_size is a fixed
    scale on the proposal). max_num_doublings: NUTS's tree depth limit. proposal_components /
    proposal_dof (imh only): mixture components fitted to the particles (1 = their mean and covariance)
    and the t's degrees of freedom (None = Gaussian).
    max_mcmc_steps: None (every stage makes ``num_mcmc_steps`` transitions) or the most transitions a
    stage of a tuning run may make: after ``num_mcmc_steps`` (the least) it goes on while some coordinate
    ``j`` of the particles is still correlated with the stage's start by more than ``correlation_threshold``,
    ``rho_j = 1 - D_j / (2 v_j) > threshold`` (:func:`start_correlation`: ``D_j`` the weighted mean squared
    jump since the start, ``v_j`` the start's variance; a stationary chain has ``D_j = 2 v_j (1 - rho_j)``).
    Main runs of ``tuning="pilot"`` repeat the pilot's count at every stage (not waste-free). Particles that
    cannot cross between separated modes keep ``rho`` high (the between-mode share of ``v_j``): such
    populations run to ``max_mcmc_steps`` without gain (measured: ``benchmarks/user_models.py``).
    """

    __slots__ = ()

    def __new__(cls, *args, num_steps: Optional[int] = None, **kwargs):
        if num_steps is not None:
            given = args[1] if len(args) > 1 else kwargs.get("num_mcmc_steps")
            kwargs["num_mcmc_steps"] = renamed_keyword(given, num_steps, "num_mcmc_steps", "num_steps", "MoveSettings")
        return super().__new__(cls, *args, **kwargs)

    @property
    def num_steps(self) -> int:
        """Deprecated name of :attr:`num_mcmc_steps`."""
        warnings.warn("MoveSettings.num_steps is deprecated: use num_mcmc_steps.", DeprecationWarning, stacklevel=2)
        return self.num_mcmc_steps


def validate_move(m: MoveSettings) -> MoveSettings:
    """Check the settings (move names are case-insensitive) and return them, names lower-cased and
    integer settings as ``int``."""
    if isinstance(m.kind, str):
        m = m._replace(kind=m.kind.lower())
        m = m._replace(kind=MOVE_ALIASES.get(m.kind, m.kind))
    if m.kind not in MOVES:
        raise ValueError(f"Unknown move {m.kind!r}; choose one of {MOVES}.")
    m = m._replace(num_mcmc_steps=positive_int(m.num_mcmc_steps, "num_mcmc_steps"),
                   num_integration_steps=positive_int(m.num_integration_steps, "num_integration_steps"),
                   max_num_doublings=positive_int(m.max_num_doublings, "max_num_doublings"))
    if m.preconditioning not in ("full", "diag", "none"):
        raise ValueError(f"preconditioning must be 'full', 'diag' or 'none', got {m.preconditioning!r}.")
    if m.target_acceptance is not None:
        open_unit_interval(m.target_acceptance, "target_acceptance")
    if m.step_size is not None:
        positive_float(m.step_size, "step_size")
    if m.waste_free and m.num_mcmc_steps < 2:
        raise ValueError("waste_free=True needs num_mcmc_steps >= 2 (the chain length P).")
    if m.max_mcmc_steps is not None:
        top = positive_int(m.max_mcmc_steps, "max_mcmc_steps")
        if top < m.num_mcmc_steps:
            raise ValueError(f"max_mcmc_steps ({top}) must be >= num_mcmc_steps ({m.num_mcmc_steps}), the least "
                             "transitions per stage; or None for exactly num_mcmc_steps.")
        if m.waste_free and top > m.num_mcmc_steps:
            raise ValueError("waste_free=True runs chains of exactly num_mcmc_steps states; leave max_mcmc_steps=None.")
        m = m._replace(max_mcmc_steps=None if top == m.num_mcmc_steps else top)
    open_unit_interval(m.correlation_threshold, "correlation_threshold")
    return validate_imh(m)


def default_step_size(kind: str, dim: int) -> float:
    """Whitened step sizes of the usual optimal-scaling orders in the dimension ``d``."""
    d = max(int(dim), 1)
    return {"rwm": 2.38 / d**0.5, "mala": 1.0 / d ** (1 / 3), "hmc": 1.0 / d**0.25, "nuts": 0.5,
            "ula": 0.1 / d ** (1 / 3), "imh": 1.0}[kind]


def target_acceptance(m: MoveSettings) -> Optional[float]:
    """The acceptance rate step sizes are adapted toward (None for ``imh``: not adapted)."""
    return TARGET_ACCEPTANCE[m.kind] if m.target_acceptance is None else m.target_acceptance


def particle_preconditioner(positions: jax.Array, log_weights: jax.Array,
                            mode: str = "full") -> tuple[jax.Array, jax.Array]:
    """Weighted mean ``mu`` and factor ``L`` (matrix for ``"full"``, vector for ``"diag"``/``"none"``)
    with ``L L^T`` the weighted particle covariance (plus a small relative jitter)."""
    n, d = positions.shape
    w = normalize(log_weights)
    mu = w @ positions
    xc = positions - mu
    if mode == "none":
        return jnp.zeros(d, positions.dtype), jnp.ones(d, positions.dtype)
    var = w @ (xc**2)
    scale = jnp.maximum(jnp.mean(var), jnp.finfo(positions.dtype).tiny)
    jitter = 1e-6 * scale + 1e-12
    if mode == "diag" or d == 1:
        return mu, jnp.sqrt(var + jitter)
    cov = (xc * w[:, None]).T @ xc + jitter * jnp.eye(d, dtype=positions.dtype)
    chol = jnp.linalg.cholesky(cov)
    # fall back to the diagonal if the Cholesky factorisation failed
    ok = jnp.all(jnp.isfinite(chol))
    return mu, jnp.where(ok, chol, jnp.diag(jnp.sqrt(var + jitter)))


def _to_x(mu, L, z):
    return mu + (L @ z if L.ndim == 2 else L * z)


def _batch_to_x(mu, L, zs):
    return mu + (zs @ L.T if L.ndim == 2 else zs * L)


def _to_z(mu, L, x):
    if L.ndim == 2:
        return jax.scipy.linalg.solve_triangular(L, (x - mu).T, lower=True).T
    return (x - mu) / L


DIVERGENCE_THRESHOLD = 1000.0  # nats, as BlackJAX's HMC/NUTS divergence threshold


def _exploded(old_logdensity, new_logdensity, new_position):
    """A transition diverged if its new state is non-finite or its log density fell by more than
    ``DIVERGENCE_THRESHOLD`` in one transition (an unstable ULA step, or a Metropolis kernel started from
    a non-finite state). Metropolis kernels reject non-finite proposals, so for them this only fires on
    states that were already broken; BlackJAX's own ``is_divergent`` covers HMC/NUTS trajectories."""
    return (~jnp.isfinite(new_logdensity)) | (~jnp.all(jnp.isfinite(new_position))) | (
        old_logdensity - new_logdensity > DIVERGENCE_THRESHOLD)


def _kernel(m: MoveSettings):
    """One BlackJAX transition on a single particle: ``(key, state, logdensity, step) -> state, acc, div``."""
    if m.kind == "imh":
        return imh_kernel(m)
    if m.kind == "rwm":
        kernel = blackjax.mcmc.random_walk.build_additive_step()
        init = blackjax.mcmc.random_walk.init

        def step(key, state, logdensity, h, imm=None):
            st, info = kernel(key, state, logdensity, lambda k, x: h * jax.random.normal(k, x.shape, x.dtype))
            return st, info.acceptance_rate, _exploded(state.logdensity, st.logdensity, st.position)
    elif m.kind == "ula":
        init = ula_init

        def step(key, state, logdensity, h, imm=None):
            new, log_alpha = ula_step(key, state, logdensity, h)
            # acceptance: the Metropolis probability MALA would have given the move (ULA moves anyway)
            return new, jnp.exp(jnp.minimum(log_alpha, 0.0)), _exploded(state.logdensity, new.logdensity, new.position)
    elif m.kind == "mala":
        kernel = blackjax.mcmc.mala.build_kernel()
        init = blackjax.mcmc.mala.init

        def step(key, state, logdensity, h, imm=None):
            st, info = kernel(key, state, logdensity, h)
            return st, info.acceptance_rate, _exploded(state.logdensity, st.logdensity, st.position)
    elif m.kind == "hmc":
        kernel = blackjax.mcmc.hmc.build_kernel()
        init = blackjax.mcmc.hmc.init

        def step(key, state, logdensity, h, imm):
            # jitter the step size in [h/2, 3h/2]: a fixed trajectory length resonates with Gaussian-like
            # targets (after whitening, a trajectory of ~2 pi returns to its start and particles never move)
            k_h, k = jax.random.split(key)
            h_eff = h * jax.random.uniform(k_h, (), minval=0.5, maxval=1.5)
            st, info = kernel(k, state, logdensity, h_eff, imm, m.num_integration_steps)
            return st, info.acceptance_rate, info.is_divergent | _exploded(state.logdensity, st.logdensity, st.position)
    else:
        kernel = blackjax.mcmc.nuts.build_kernel()
        init = blackjax.mcmc.hmc.init

        def step(key, state, logdensity, h, imm):
            st, info = kernel(key, state, logdensity, h, imm, m.max_num_doublings)
            return st, info.acceptance_rate, info.is_divergent | _exploded(state.logdensity, st.logdensity, st.position)
    return init, step


def _nan_safe(logdensity):
    def f(x):
        v = logdensity(x)
        return jnp.where(jnp.isnan(v), -jnp.inf, v)
    return f


class MoveResult(NamedTuple):
    position: jax.Array  # [N, d] moved particles
    acceptance: jax.Array  # [N] each particle's mean acceptance probability
    divergent: jax.Array  # [N] each particle's share of divergent transitions
    step_size: jax.Array  # the step size after the move's within-stage adaptation (= the input without it)
    step_size_tested: jax.Array  # the step size of the move's last transition
    num_mcmc_steps: Optional[jax.Array] = None  # transitions made (int32 scalar)
    start_correlation: Optional[jax.Array] = None  # the largest coordinate's start_correlation (NaN: waste-free)


def move_population(rng_key: jax.Array, positions: jax.Array, log_weights: jax.Array, logdensity_fn: Callable,
                    step_size, m: MoveSettings, preconditioner: Optional[tuple] = None,
                    adapt_target: Optional[float] = None, adapt=True, num_mcmc_steps=None) -> MoveResult:
    """Move every particle (``positions [N, d]``) with ``m.num_mcmc_steps`` kernel transitions.

    ``preconditioner = (mu, L)`` (see :func:`particle_preconditioner`); if None it is fitted to the
    particles being moved — which makes the kernel depend on the particles it moves and biases
    ``log Z`` upwards (see ``tests/test_tempered.py``): samplers should pass one fitted to the weighted
    particles *before* resampling, so that the kernel is a function of the previous generation only.
    For ``move="imh"`` a third entry carries the proposal's fit
    (:func:`~smcppl.kernels.independent.proposal_fit` of the same weighted particles; fitted like
    ``(mu, L)`` if absent).

    ``adapt_target``: if given, the step size is adapted after every transition from the population's
    mean acceptance (:func:`adapt_step_size`), so that a stage whose curvature the incoming step size
    does not fit (e.g. the narrow modes of a multimodal posterior under the whole population's
    covariance) recovers within the stage instead of diverging throughout it. The kernel then depends
    on the population, so this is for tuning runs (the pilot, ``tuning="weighted"/"resampled"``).
    ``adapt`` (a traced bool) switches that adaptation off at run time (one program for pilot and main runs).

    With ``m.max_mcmc_steps`` set, a run that adapts makes between ``m.num_mcmc_steps`` and
    ``m.max_mcmc_steps`` transitions by the jump rule of :class:`MoveSettings`; one that does not
    (``adapt`` False) makes ``num_mcmc_steps`` (a traced int: the pilot's count for this stage).

    Returns a :class:`MoveResult`.
    """
    n, d = positions.shape
    if preconditioner is None:
        preconditioner = particle_preconditioner(positions, log_weights, m.preconditioning)
    mu, L = preconditioner[0], preconditioner[1]
    init, step = _kernel(m)
    if m.kind in ("hmc", "nuts"):
        # BlackJAX's own metric: inverse mass matrix = particle covariance. Equivalent (affine invariance)
        # to running in whitened coordinates, but costs one mat-vec per leapfrog step instead of two per
        # gradient evaluation.
        imm = L @ L.T if L.ndim == 2 else L**2
        mu, L = jnp.zeros_like(mu), jnp.ones_like(mu)
    elif m.kind == "imh":
        # the proposal's fit (preconditioner[2], from independent.proposal_fit) goes where HMC's metric goes;
        # the step size is the proposal's fixed scale (never adapted)
        imm = preconditioner[2] if len(preconditioner) > 2 else proposal_fit(positions, log_weights, preconditioner, m)
        adapt_target = None
    else:
        imm = None
    logdens_z = _nan_safe(lambda z: logdensity_fn(_to_x(mu, L, z)))
    z0 = _to_z(mu, L, positions)

    # waste-free keeps every state of a chain, so it gains from short, anti-correlated trajectories more than
    # from a high acceptance: its step grows no further than the dimension-based default (or the given
    # step_size) and only shrinks where acceptance falls below the target (benchmarks/defaults.py)
    max_step = MAX_ADAPTED_STEP.get(m.kind, jnp.inf)
    if m.waste_free:
        max_step = jnp.minimum(max_step, default_step_size(m.kind, d) if m.step_size is None else m.step_size)

    def transition(carry, key, emit=False):
        """One kernel transition of every state in ``carry`` (vmapped), then the step size's adaptation
        (tuning runs); ``emit``: also return the new positions (waste-free keeps every state)."""
        states, h, _, acc, div = carry
        states, a, dv = jax.vmap(lambda k, st: step(k, st, logdens_z, h, imm))(
            jax.random.split(key, acc.shape[0]), states)
        h_tested = h
        if adapt_target is not None:
            h_new = jnp.minimum(adapt_step_size(h, jnp.mean(a), adapt_target), max_step)
            # divergences shrink the step whatever the mean acceptance says: a step that suits the bulk
            # of the population can still diverge where the curvature is high (a funnel's neck)
            h_new = jnp.where(jnp.mean(dv) > MAX_ADAPT_DIVERGENT, jnp.minimum(h_new, DIVERGENT_SHRINK * h), h_new)
            h = jnp.where(adapt, h_new, h)
        return (states, h, h_tested, acc + a, div + dv), (states.position if emit else None)

    def start(z):
        zeros = jnp.zeros(z.shape[0], positions.dtype)
        h0 = jnp.asarray(step_size, positions.dtype)
        return (jax.vmap(lambda zi: init(zi, logdens_z))(z), h0, h0, zeros, zeros)

    if not m.waste_free:
        carry0 = start(z0)
        w = normalize(log_weights)
        if m.max_mcmc_steps is None:
            (states, h, h_tested, acc, div), _ = jax.lax.scan(transition, carry0,
                                                              jax.random.split(rng_key, m.num_mcmc_steps))
            k = jnp.asarray(m.num_mcmc_steps, jnp.int32)
        else:
            (states, h, h_tested, acc, div), k = _adaptive_transitions(
                transition, carry0, rng_key, z0, w, m, adapt, num_mcmc_steps)
        kf = k.astype(positions.dtype)
        rho = jnp.max(start_correlation(z0, states.position, w))
        return MoveResult(_batch_to_x(mu, L, states.position), acc / kf, div / kf, h, h_tested, k, rho)

    # waste-free (Dau & Chopin 2022): M = ceil(N / P) starting points from the (resampled) population, each
    # the first state of a chain of P; all M P states are the next population. The chains run side by side
    # (one transition of all M per scan step), so tuning runs adapt the step size within the stage as above.
    # N not a multiple of P: the last chain's tail is dropped (every state of a chain started from the
    # population is a draw of the target; which ones are kept is fixed in advance)
    p = m.num_mcmc_steps
    n_start = -(-n // p)
    k_pick, k_run = jax.random.split(rng_key)
    # every (N / M)-th particle from a random offset: the population was just resampled and systematic or
    # stratified resampling (TemperedSMC's) returns ancestors in index order, so this is a systematic
    # resample of M from the weights before it
    # (expected copies M w_i; a mode's share among the starts within 1 / M of its weight where it is
    # contiguous in that order), not M independent picks (binomial noise sqrt(w (1 - w) / M) per stage)
    offset = jax.random.uniform(k_pick, (), positions.dtype)
    picks = jnp.floor((jnp.arange(n_start, dtype=positions.dtype) + offset) * (n / n_start)).astype(jnp.int32)
    z_start = z0[jnp.clip(picks, 0, n - 1)]
    (_, h, h_tested, acc, div), zs = jax.lax.scan(partial(transition, emit=True), start(z_start),
                                                   jax.random.split(k_run, p - 1))
    zs = jnp.concatenate([z_start[None], zs]).transpose(1, 0, 2).reshape(n_start * p, d)[:n]  # chain by chain
    # every state of a chain reports the chain's mean acceptance and divergence share over its P - 1 transitions
    acc = jnp.repeat(acc / (p - 1), p)[:n]
    div = jnp.repeat(div.astype(positions.dtype) / (p - 1), p)[:n]
    return MoveResult(_batch_to_x(mu, L, zs), acc, div, h, h_tested, jnp.asarray(p - 1, jnp.int32),
                      jnp.asarray(jnp.nan, positions.dtype))


def start_correlation(z0: jax.Array, z: jax.Array, w: jax.Array) -> jax.Array:
    """Per coordinate ``j``, the correlation of the particles' positions ``z`` with their stage's start ``z0``
    (weights ``w``) read from the mean squared jump: ``rho_j = 1 - D_j / (2 v_j)``,
    ``D_j = sum_i w_i (z_ij - z0_ij)^2``, ``v_j`` the start's weighted variance (stationary chains:
    ``D_j = 2 v_j (1 - rho_j)``). Non-finite jumps count as none. ``[d]``."""
    jump = z - z0
    d_j = w @ jnp.where(jnp.isfinite(jump), jump, 0.0) ** 2
    v_j = w @ (z0 - w @ z0) ** 2
    return 1.0 - d_j / jnp.maximum(2.0 * v_j, jnp.finfo(z0.dtype).tiny)


def _adaptive_transitions(transition, carry0, rng_key, z0, w, m: MoveSettings, adapt, num_mcmc_steps):
    """``transition`` repeated by the rule of :class:`MoveSettings` (``adapt``: from ``m.num_mcmc_steps`` up
    to ``m.max_mcmc_steps`` while the largest :func:`start_correlation` exceeds ``m.correlation_threshold``)
    or ``num_mcmc_steps`` times (not ``adapt``): a ``while_loop``. Returns ``(carry, k)``."""
    least, most = m.num_mcmc_steps, m.max_mcmc_steps
    told = jnp.asarray(least if num_mcmc_steps is None else num_mcmc_steps, jnp.int32)
    told = jnp.where(told > 0, told, least)  # a pilot row never filled (0): the least
    lo = jnp.where(adapt, least, jnp.clip(told, 1, most)).astype(jnp.int32)
    hi = jnp.where(adapt, most, lo).astype(jnp.int32)

    def cond(c):
        carry, k = c
        correlated = jnp.max(start_correlation(z0, carry[0].position, w)) > m.correlation_threshold
        return (k < lo) | ((k < hi) & correlated)

    def body(c):
        carry, k = c
        carry, _ = transition(carry, jax.random.fold_in(rng_key, k))
        return carry, k + 1

    return jax.lax.while_loop(cond, body, (carry0, jnp.zeros((), jnp.int32)))


def adapt_step_size(step_size: jax.Array, mean_acceptance: jax.Array, target: float) -> jax.Array:
    """``log h' = log h + 2 (acc - target)``, clipped to a factor of [0.2, 3] per stage."""
    factor = jnp.exp(jnp.clip(2.0 * (mean_acceptance - target), jnp.log(0.2), jnp.log(3.0)))
    return jnp.where(jnp.isfinite(mean_acceptance), step_size * factor, step_size)
