"""BlackJAX's tempered-SMC interface, run by smcppl's engine: drop-ins for ``blackjax.tempered_smc`` and
``blackjax.adaptive_tempered_smc`` (same argument names and order as BlackJAX 1.7.1; public namespace
:mod:`smcppl.blackjax`).

Target ``pi_lambda(x) ∝ prior(x) L(x)^lambda``. One ``step`` is one step of the engine
(:func:`smcppl.core.engine.build_step`, resample -> move -> update -> reweight), which is also the
order of BlackJAX's tempered kernel:

* resample by the policy (default: ``resampling_fn`` at every step, as BlackJAX does);
* move: ``num_mcmc_steps`` transitions of ``mcmc_step_fn`` invariant for ``pi_lambda`` at the current
  ``lambda`` (BlackJAX's ``update_strategy``, by default its ``update_and_take_last``);
* update: the next ``lambda'`` — given (``tempered_smc``) or by bisection on the conditional ESS of
  ``(lambda' - lambda) log L`` of the moved particles (``adaptive_tempered_smc``);
* reweight: ``l_i <- r_i + (lambda' - lambda) log L(x_i)``, ``r_i``: log-weight carried out of resampling.

``info.log_likelihood_increment`` is the step's increment of ``log Z_hat`` (summing them gives the log
marginal likelihood, as with BlackJAX); ``state.log_evidence`` is the running sum.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from blackjax.smc.base import update_and_take_last

from smcppl.core.checks import positive_int
from smcppl.core.engine import LINEAGE_LAG, FeynmanKac, SMCState, build_step
from smcppl.core.entropic import with_entropic_correction
from smcppl.core.policy import Resampling, validate_resampling
from smcppl.core.schedules import next_temperature
from smcppl.core.weights import log_mean_exp, normalize, sanitize
from smcppl.inference.tempered.tempering import (log_increment, tempered_logdensity, validate_criterion,
                                                 validate_target_ess)

__all__ = [
    "TemperedSMCInfo",
    "TemperedSMCState",
    "adaptive_tempered_smc",
    "init",
    "legacy_tempered_smc",
    "tempered_smc",
]


class TemperedSMCState(NamedTuple):
    """BlackJAX's ``TemperedSMCState`` (its three fields first, in its order) plus what smcppl carries.

    ``weights`` are the normalised weights ``W_i = exp(l_i) / sum_j exp(l_j)`` of ``log_weights``; after
    the default resampling at every step ``log_weights`` is ``(lambda' - lambda) log L``, as in BlackJAX.
    """

    particles: Any  # pytree, leading particle axis
    weights: jax.Array  # normalised weights [N]
    tempering_param: jax.Array  # lambda, 0 (prior) to 1 (posterior)
    log_weights: jax.Array  # unnormalised log-weights since the last resampling event [N]
    log_evidence: jax.Array  # running log Z_hat

    @property
    def lmbda(self):
        """``tempering_param`` under its name in earlier BlackJAX releases."""
        return self.tempering_param


class TemperedSMCInfo(NamedTuple):
    """BlackJAX's ``SMCInfo`` (its three fields first) plus the engine's per-step diagnostics."""

    ancestors: jax.Array  # [N] ancestor index of each particle at this step's resampling
    log_likelihood_increment: jax.Array  # increment of log Z_hat over this step
    update_info: Any  # the MCMC infos, leading axes [N, num_mcmc_steps] (BlackJAX's)
    ess: jax.Array  # ESS/N of the weights after reweighting
    tau: jax.Array  # entropic resampling temperature (1: plain resampling)
    resampled: jax.Array  # whether this step resampled


def init(particles) -> TemperedSMCState:
    """Uniformly weighted ``particles`` (a pytree with a leading particle axis) at ``lambda = 0``."""
    n = jax.tree_util.tree_leaves(particles)[0].shape[0]
    dtype = jnp.result_type(float)
    return TemperedSMCState(particles, jnp.full(n, 1.0 / n, dtype), jnp.zeros((), dtype), jnp.zeros(n, dtype),
                            jnp.zeros((), dtype))


def _shared_or_per_particle(params, n):
    """BlackJAX's convention for ``mcmc_parameters``: a leaf with leading dimension 1 is shared (its one
    row), one with leading dimension ``N`` is per particle; leniently, any other leaf (a scalar, an
    unextended matrix) is shared as it is."""
    shared, per = {}, {}
    for k, v in params.items():
        v = jnp.asarray(v)
        if v.ndim >= 1 and v.shape[0] == n and n != 1:
            per[k] = v
        else:
            shared[k] = v[0] if (v.ndim >= 1 and v.shape[0] == 1) else v
    return shared, per


def _map(fn, batch_size):
    """``vmap(fn)``, or ``lax.map`` over batches of ``batch_size`` particles (BlackJAX's ``batch_size``)."""
    return (lambda xs: jax.lax.map(fn, xs, batch_size=batch_size)) if batch_size else jax.vmap(fn)


def _feynman_kac(logprior_fn, loglikelihood_fn, mcmc_step_fn, mcmc_init_fn, mcmc_parameters, num_mcmc_steps,
                 next_lambda, update_strategy, batch_size) -> FeynmanKac:
    """The tempered Feynman–Kac model of one BlackJAX-style step, for the engine's ``build_step``.

    Engine particles are ``{"position": pytree, "loglik": [N]}`` (``log L`` of the moved particles,
    evaluated once for the update and the potential). ``next_lambda(loglik, log_weights, lambda)``
    gives ``lambda'``. ``init`` is not used: states come from the user's particles (``init`` below).
    """
    loglik = _map(loglikelihood_fn, batch_size)

    def move(key, particles, log_weights, params, ancestry):
        n = log_weights.shape[0]
        shared, per = _shared_or_per_particle(mcmc_parameters, n)
        logdensity = tempered_logdensity(logprior_fn, loglikelihood_fn, params["lambda"])
        update_fn, num_resampled = update_strategy(
            mcmc_init_fn, logdensity, functools.partial(mcmc_step_fn, **shared), n_particles=n,
            num_mcmc_steps=num_mcmc_steps, **({"batch_size": batch_size} if batch_size else {}))
        if not isinstance(num_resampled, (int, np.integer)) or int(num_resampled) != n:
            raise NotImplementedError(
                f"update_strategy resamples {num_resampled} of {n} particles (waste-free SMC); smcppl's engine "
                "resamples all N. Use the default update_strategy, or TemperedSMC(model, waste_free=True).")
        position, update_info = update_fn(jax.random.split(key, n), particles["position"], per)
        return {"position": position, "loglik": sanitize(loglik(position))}, update_info

    def update(particles, log_weights, params, move_info):
        return {"lambda": next_lambda(particles["loglik"], log_weights, params["lambda"])}

    def log_potential(particles, prev, params, new_params):
        return log_increment(particles["loglik"], new_params["lambda"] - params["lambda"])

    return FeynmanKac(None, move, update, log_potential, progress=lambda p: p["lambda"],
                      done=lambda p: p["lambda"] >= 1.0)


def _engine_step(rng_key, state, fk, policy):
    """One engine step from a BlackJAX-style state (ours, or BlackJAX's own three-field one)."""
    n = state.weights.shape[0]
    lw = getattr(state, "log_weights", None)
    lw = sanitize(jnp.log(state.weights) if lw is None else lw)
    running = jnp.asarray(getattr(state, "log_evidence", 0.0), lw.dtype)
    # the engine carries sum(resampling increments); the running estimate adds log mean exp(l)
    lme = log_mean_exp(lw)
    lam = jnp.asarray(state.tempering_param, lw.dtype)
    engine_state = SMCState({"position": state.particles, "loglik": jnp.zeros(n, lw.dtype)}, lw,
                            jnp.where(jnp.isfinite(lme), running - lme, running), {"lambda": lam},
                            jnp.zeros((), jnp.int32), jnp.zeros((LINEAGE_LAG, n), jnp.int32))
    new, info = build_step(fk, policy, record_ancestors=True)(rng_key, engine_state)
    new_state = TemperedSMCState(new.particles["position"], normalize(new.log_weights), new.params["lambda"],
                                 new.log_weights, info.log_evidence)
    return new_state, TemperedSMCInfo(info.ancestors, info.log_evidence - running, info.move_info, info.ess,
                                      info.tau, info.resampled)


def _algorithm(step: Callable) -> SamplingAlgorithm:
    """BlackJAX's ``SamplingAlgorithm(init, step)``: ``init(position, rng_key=None)`` is :func:`init`."""
    return SamplingAlgorithm(lambda position, rng_key=None: init(position), step)


def _checked(logprior_fn, loglikelihood_fn, mcmc_step_fn, mcmc_init_fn, mcmc_parameters, resampling_fn,
             num_mcmc_steps, update_strategy, update_particles_fn, batch_size, resampling, sampler):
    """Check the common arguments (clear errors, before anything is traced); returns the resampling
    policy and the number of MCMC steps."""
    for name, fn in (("logprior_fn", logprior_fn), ("loglikelihood_fn", loglikelihood_fn),
                     ("mcmc_step_fn", mcmc_step_fn), ("mcmc_init_fn", mcmc_init_fn),
                     ("update_strategy", update_strategy)):
        if not callable(fn):
            raise TypeError(f"{sampler}: {name} must be a function, got {type(fn).__name__} ({fn!r}). The "
                            "arguments follow BlackJAX's order: logprior_fn, loglikelihood_fn, mcmc_step_fn, "
                            "mcmc_init_fn, mcmc_parameters, resampling_fn, ...")
    if not isinstance(mcmc_parameters, Mapping):
        raise TypeError(f"{sampler}: mcmc_parameters must be a dict of the MCMC step's parameters "
                        f"(e.g. blackjax.smc.extend_params({{'step_size': 0.1, ...}})), got "
                        f"{type(mcmc_parameters).__name__}.")
    if update_particles_fn is not None:
        raise NotImplementedError(f"{sampler}: update_particles_fn replaces BlackJAX's whole SMC step; smcppl "
                                  "runs its own engine step. Pass mcmc_step_fn/mcmc_init_fn (and update_strategy) "
                                  "instead.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 0:
        raise ValueError(f"{sampler}: batch_size must be a non-negative integer (0: vmap), got {batch_size!r}.")
    if resampling is None:
        if not (callable(resampling_fn) or isinstance(resampling_fn, str)):
            raise TypeError(f"{sampler}: resampling_fn must be a function fn(rng_key, weights, num_samples) "
                            f"(e.g. blackjax.smc.resampling.systematic) or a scheme name, got {resampling_fn!r}.")
        resampling = Resampling(resampling_fn, "always")
    policy = with_entropic_correction(validate_resampling(resampling), sampler)
    return policy, positive_int(num_mcmc_steps, f"{sampler}: num_mcmc_steps")


def tempered_smc(logprior_fn: Callable, loglikelihood_fn: Callable, mcmc_step_fn: Callable, mcmc_init_fn: Callable,
                 mcmc_parameters: dict, resampling_fn: Callable, num_mcmc_steps: int = 10,
                 update_strategy: Callable = update_and_take_last, update_particles_fn: Callable | None = None,
                 batch_size: int = 0, *, resampling: Resampling | None = None) -> SamplingAlgorithm:
    """Tempered SMC on a given schedule: a drop-in for ``blackjax.tempered_smc`` (same arguments, order
    and defaults), returning ``SamplingAlgorithm(init, step)``.

    ``init(particles)``: uniform weights, ``lambda = 0``. ``step(rng_key, state, tempering_param)``:
    resample, move with ``num_mcmc_steps`` of ``mcmc_step_fn(key, mcmc_state, logdensity_fn,
    **mcmc_parameters)`` invariant for ``pi_lambda ∝ prior L^lambda`` at the current ``lambda``, then
    reweight to ``lambda' = tempering_param``: ``l_i <- r_i + (lambda' - lambda) log L(x_i)``.
    ``mcmc_parameters``: leaves of leading dimension 1 are shared, of leading dimension N per particle
    (BlackJAX's convention; ``blackjax.smc.extend_params``).

    Extras of smcppl (keyword): ``resampling=smcppl.Resampling(...)`` replaces "``resampling_fn`` at
    every step" (ESS-triggered or entropic resampling; weights are then carried across steps).
    ``update_particles_fn`` (BlackJAX's replacement for its whole step) is not supported, nor an
    ``update_strategy`` that resamples fewer than N particles (waste-free).
    """
    policy, num_mcmc_steps = _checked(logprior_fn, loglikelihood_fn, mcmc_step_fn, mcmc_init_fn, mcmc_parameters,
                                      resampling_fn, num_mcmc_steps, update_strategy, update_particles_fn,
                                      batch_size, resampling, "tempered_smc")

    def step(rng_key, state, tempering_param=None, *, lmbda=None):
        if (tempering_param is None) == (lmbda is None):
            raise TypeError("tempered_smc step: give the next temperature, step(rng_key, state, tempering_param).")
        target = tempering_param if lmbda is None else lmbda
        fk = _feynman_kac(logprior_fn, loglikelihood_fn, mcmc_step_fn, mcmc_init_fn, mcmc_parameters,
                          num_mcmc_steps, lambda ll, lw, lam: jnp.asarray(target, lam.dtype), update_strategy,
                          batch_size)
        return _engine_step(rng_key, state, fk, policy)

    return _algorithm(step)


def adaptive_tempered_smc(logprior_fn: Callable, loglikelihood_fn: Callable, mcmc_step_fn: Callable,
                          mcmc_init_fn: Callable, mcmc_parameters: dict, resampling_fn: Callable, target_ess: float,
                          root_solver: Callable | None = None, num_mcmc_steps: int = 10, batch_size: int = 0,
                          *, criterion: str = "cess", resampling: Resampling | None = None,
                          update_strategy: Callable = update_and_take_last,
                          update_particles_fn: Callable | None = None) -> SamplingAlgorithm:
    """Adaptive tempered SMC: a drop-in for ``blackjax.adaptive_tempered_smc`` (same arguments and order;
    same defaults but ``root_solver``), returning ``SamplingAlgorithm(init, step)``.

    ``step(rng_key, state)``: resample, move with ``num_mcmc_steps`` of ``mcmc_step_fn`` at the current
    ``lambda`` (as :func:`tempered_smc`), then choose ``lambda' = lambda + delta``, ``delta`` in
    ``(0, 1 - lambda]``, by bisection so that the moved particles' conditional ESS of the increments,
    ``(sum_i W_i g_i)^2 / sum_i W_i g_i^2`` with ``g_i = exp(delta log L(x_i))``, equals ``target_ess``
    (a fraction of N), and reweight to ``lambda'``. After resampling at every step (the default) ``W`` is
    uniform and this is BlackJAX's ESS rule, applied to the moved particles where BlackJAX applies it to
    the particles before the step. ``lambda'`` snaps to 1 within 1e-6; run until
    ``state.tempering_param >= 1``.

    ``root_solver`` is accepted for BlackJAX's signature and ignored: smcppl solves for ``delta`` by
    bisection (:func:`smcppl.core.schedules.next_temperature`). Extras of smcppl (keyword):
    ``criterion="cess" | "ess"``; ``resampling=smcppl.Resampling(...)`` (see :func:`tempered_smc`);
    ``update_strategy``/``update_particles_fn`` as in :func:`tempered_smc` (BlackJAX's
    ``**extra_parameters``).
    """
    policy, num_mcmc_steps = _checked(logprior_fn, loglikelihood_fn, mcmc_step_fn, mcmc_init_fn, mcmc_parameters,
                                      resampling_fn, num_mcmc_steps, update_strategy, update_particles_fn,
                                      batch_size, resampling, "adaptive_tempered_smc")
    try:
        target_ess = validate_target_ess(target_ess, "adaptive_tempered_smc: target_ess")
    except TypeError as e:
        raise TypeError(f"{e} Arguments follow BlackJAX's order: ..., resampling_fn, target_ess, root_solver, "
                        "num_mcmc_steps.") from None
    if root_solver is not None and not callable(root_solver):
        raise TypeError(f"adaptive_tempered_smc: root_solver must be a function (it is ignored: smcppl bisects), "
                        f"got {root_solver!r}. Arguments follow BlackJAX's order: ..., resampling_fn, target_ess, "
                        "root_solver, num_mcmc_steps.")
    criterion = validate_criterion(criterion, "adaptive_tempered_smc: criterion")
    fk = _feynman_kac(logprior_fn, loglikelihood_fn, mcmc_step_fn, mcmc_init_fn, mcmc_parameters, num_mcmc_steps,
                      lambda ll, lw, lam: next_temperature(ll, lw, lam, target_ess, criterion), update_strategy,
                      batch_size)

    def step(rng_key, state):
        return _engine_step(rng_key, state, fk, policy)

    return _algorithm(step)


def legacy_tempered_smc(logprior_fn: Callable, loglikelihood_fn: Callable, mcmc_step_fn: Callable,
                        mcmc_init_fn: Callable, mcmc_parameters: dict, resampling_fn="systematic",
                        num_mcmc_steps: int = 10, target_ess: float = 0.5, criterion: str = "cess",
                        resampling: Resampling | None = None, **kwargs) -> SamplingAlgorithm:
    """Deprecated ``smcppl.tempered_smc``: adaptive tempered SMC with smcppl's earlier argument order and
    defaults (``resampling_fn="systematic"``, ``target_ess=0.5``). Use
    ``smcppl.blackjax.adaptive_tempered_smc`` (BlackJAX's order) instead; ``smcppl.blackjax.tempered_smc``
    is BlackJAX's fixed-schedule sampler."""
    if callable(target_ess) or callable(num_mcmc_steps):
        raise TypeError("smcppl.tempered_smc takes (..., resampling_fn, num_mcmc_steps, target_ess); for BlackJAX's "
                        "order (..., resampling_fn, target_ess, root_solver, num_mcmc_steps) use "
                        "smcppl.blackjax.adaptive_tempered_smc.")
    warnings.warn("smcppl.tempered_smc is deprecated: use smcppl.blackjax.adaptive_tempered_smc (BlackJAX's argument "
                  "order: ..., resampling_fn, target_ess, root_solver, num_mcmc_steps).", DeprecationWarning,
                  stacklevel=2)
    return adaptive_tempered_smc(logprior_fn, loglikelihood_fn, mcmc_step_fn, mcmc_init_fn, mcmc_parameters,
                                 resampling_fn, target_ess, num_mcmc_steps=num_mcmc_steps, criterion=criterion,
                                 resampling=resampling, **kwargs)
