"""SMC² (Chopin, Jacob & Papaspiliopoulos 2013, "SMC²: an efficient algorithm for sequential analysis of
state space models", JRSS-B 75(3)) for the static parameters of a scan-declared state-space model
(:mod:`~smcppl.inference.state_space.scan`), as an algorithm of :class:`smcppl.SMC` run by the one engine
(ARCHITECTURE.md, "One engine").

Outer particles are the static parameters in NumPyro's unconstrained space ``u`` (``theta = T(u)``,
prior ``p(u) = p(T(u)) |det T'(u)|``), ``m = 1..N_theta``; each carries an inner bootstrap particle filter
of ``N_x`` particles on the data so far (the filter's Feynman–Kac model :func:`filter_feynman_kac`, advanced
by the engine's own step, :func:`~smcppl.core.engine.build_step`). Outer stage ``t`` is time ``t``:

* ``M_0 = p(u)``, ``log G_0 = log p_hat(y_0 | theta)``;
* ``M_t``: advance every inner filter by one time step;
  ``log G_t = log p_hat(y_t | y_{0:t-1}, theta) = log Z_hat_t(theta) - log Z_hat_{t-1}(theta)``.

So the weighted outer particles target ``p(u | y_{0:t})`` (on the space extended by the inner filters,
whose estimate ``Z_hat_t(theta) = p_hat(y_{0:t} | theta)`` is unbiased) and the outer ``log Z_hat``
estimates ``log p(y_{0:T-1})``.

Rejuvenation: when the outer population was just resampled, ``num_mcmc_steps`` particle marginal
Metropolis–Hastings steps on ``u`` (Andrieu, Doucet & Holenstein 2010): a Gaussian random walk
``u' = u + L eps`` with ``L L' = (scale^2 / d) Cov_W(u)`` (the weighted outer covariance, ``scale = 2.38``),
a fresh inner filter on ``y_{0:t}`` for ``u'``, accepted with probability

    min(1, p(u') Z_hat_t(u') / (p(u) Z_hat_t(u)))

(the accepted particle takes the fresh filter along). This is an exact MH kernel on the extended space
whose ``u``-marginal is ``p(u | y_{0:t})`` (the pseudo-marginal argument: ``Z_hat_t`` is unbiased and the
current estimate is kept with the current point), so the moves leave the outer target invariant and the
weights unchanged. The fresh filter runs ``t`` engine steps in a ``lax.fori_loop`` whose trip count is the
(traced) current time: it costs ``O(t)`` rather than ``O(T)`` per proposal, where a scan over all ``T``
with the steps beyond ``t`` masked would cost ``O(T)`` for every ``t`` (twice the total work) and gains
nothing (nothing is differentiated through it). Cost: ``O(num_mcmc_steps N_theta N_x t)`` per
rejuvenation at time ``t``, ``O(N_theta N_x)`` per plain time step.

The per-stage acceptance rate of the rejuvenation (NaN at stages without one) goes into the trace's
``move_info`` and the export's ``smc_stats``; the outer ESS is the engine's.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from smcppl.core.checks import positive_float, positive_int
from smcppl.core.engine import FeynmanKac, SMCState, build_step, init, running_log_evidence
from smcppl.core.plan import Plan, kept_for_signature, run_abstractly, split_data
from smcppl.core.policy import Resampling
from smcppl.core.weights import normalize, sanitize
from smcppl.inference.state_space.chains import static_structure
from smcppl.inference.state_space.filter import complete_state_space, filter_feynman_kac
from smcppl.inference.state_space.scan import body_broadcasts, prior_draw, scan_state_space, static_log_prior

__all__ = ["SMC2"]

JITTER = 1e-8  # added to the diagonal of the proposal covariance (a population of identical u)


def log_likelihood(state: SMCState) -> jax.Array:
    """``log Z_hat`` of an inner filter so far: resampling increments plus ``log mean exp`` of its weights."""
    return running_log_evidence(state.log_evidence, state.log_weights)


class SMC2:
    """SMC² over the static parameters of a scan-declared NumPyro state-space model, for :class:`smcppl.SMC`::

        smc = SMC(SMC2(model, num_state_particles=128), num_particles=512, num_chains=2).run(key, y)
        smc.get_samples()["a"]     # posterior draws of the static parameters (constrained)
        smc.log_evidence           # log p(y) estimates, one per chain
        smc.to_arviz()             # static parameters in `posterior`; acceptance_rate, ess in `smc_stats`

    ``num_particles`` of :class:`smcppl.SMC` is ``N_theta``. num_state_particles: ``N_x``, each inner
    filter's population (aim for ``sd(log Z_hat(theta))`` near 1 at the posterior). num_mcmc_steps: PMMH
    steps per rejuvenation (0 switches rejuvenation off: plain importance sampling from the prior, which
    degenerates). scale: the random walk's covariance is ``scale^2 / d`` times the weighted outer covariance.
    The inner filters resample systematically when ``ESS/N_x < 0.5``; the outer policy is the runner's
    (default the same). Module docstring: the targets, the PMMH ratio and the cost.
    """

    def __init__(self, model: Callable, num_state_particles: int = 128, *, num_mcmc_steps: int = 3,
                 scale: float = 2.38):
        if not callable(model):
            raise TypeError(f"SMC2 takes a NumPyro model whose time loop is scan, got {type(model).__name__}.")
        self.model = model
        self.num_state_particles = positive_int(num_state_particles, "num_state_particles")
        self.num_mcmc_steps = 0 if num_mcmc_steps == 0 else positive_int(num_mcmc_steps, "num_mcmc_steps")
        self.scale = positive_float(scale, "scale")
        self.filter_resampling = Resampling()
        self._vectorize = False  # the inner filters' population step (set by build: body_broadcasts)

    def _inner(self, flat: jax.Array, unravel: Callable, static: tuple, args: tuple, kwargs: dict) -> tuple:
        """``(FeynmanKac of the inner filter, log p(u))`` for unconstrained parameters ``flat``."""
        theta, log_prior = static_log_prior(self.model, static, unravel(flat), *args, **kwargs)
        ssm = complete_state_space(scan_state_space(self.model, theta, *args, check_markov=False,
                                                    vectorize=self._vectorize, **kwargs))
        return filter_feynman_kac(ssm, self.num_state_particles), log_prior

    def _feynman_kac(self, num_particles: int, static: tuple, unravel: Callable, dim: int, args: tuple,
                     kwargs: dict, num_steps: int) -> FeynmanKac:
        model, res, k_mcmc, scale = self.model, self.filter_resampling, self.num_mcmc_steps, self.scale

        def inner_init(key, flat):
            fk, log_prior = self._inner(flat, unravel, static, args, kwargs)
            return init(key, fk)[0], log_prior

        def inner_step(key, flat, state):
            return build_step(self._inner(flat, unravel, static, args, kwargs)[0], res)(key, state)[0]

        def fresh_filter(key, flat, t):
            """A new inner filter for ``flat`` on ``y_{0:t}`` (``t`` traced: a fori_loop of ``t`` steps)."""
            k0, k1 = jax.random.split(key)
            state, log_prior = inner_init(k0, flat)
            state = jax.lax.fori_loop(0, t, lambda i, s: inner_step(jax.random.fold_in(k1, i), flat, s), state)
            return state, log_prior

        def f_init(key):
            k_prior, k_filter = jax.random.split(key)
            flat = jax.vmap(lambda k: ravel_pytree(prior_draw(model, static, k, *args, **kwargs))[0])(
                jax.random.split(k_prior, num_particles))
            states, log_prior = jax.vmap(inner_init)(jax.random.split(k_filter, num_particles), flat)
            particles = {"u": flat, "log_prior": log_prior, "filter": states}
            return particles, jax.vmap(log_likelihood)(states), jnp.zeros((), jnp.int32)

        def pmmh_step(i, carry, key, chol, t):
            p, accepted = carry
            k_prop, k_pf, k_acc = jax.random.split(jax.random.fold_in(key, i), 3)
            prop = p["u"] + jax.random.normal(k_prop, p["u"].shape) @ chol.T
            states, log_prior = jax.vmap(fresh_filter, in_axes=(0, 0, None))(
                jax.random.split(k_pf, num_particles), prop, t)
            lt_prop = sanitize(log_prior + jax.vmap(log_likelihood)(states))
            lt = p["log_prior"] + jax.vmap(log_likelihood)(p["filter"])
            log_alpha = jnp.where(jnp.isfinite(lt_prop), jnp.minimum(lt_prop - lt, 0.0), -jnp.inf)
            accept = jnp.log(jax.random.uniform(k_acc, (num_particles,))) < log_alpha
            new = {"u": prop, "log_prior": log_prior, "filter": states}
            p = jax.tree_util.tree_map(lambda a, b: jnp.where(accept.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
                                       new, p)
            return p, accepted + jnp.mean(accept.astype(jnp.float32))

        def rejuvenate(key, p, log_weights, t, resampled):
            """``num_mcmc_steps`` PMMH steps if ``resampled``, none otherwise: the gate is the loop's trip
            count, not ``lax.cond``, because under ``vmap`` over chains a ``cond`` on a batched predicate
            becomes a ``select`` that runs the rejuvenation at every stage (16x slower on the test model),
            whereas a batched loop runs only while some chain needs it."""
            w = normalize(log_weights)
            centred = p["u"] - w @ p["u"]
            cov = (centred * w[:, None]).T @ centred
            chol = jnp.linalg.cholesky(scale**2 / dim * cov + JITTER * jnp.eye(dim, dtype=cov.dtype))
            steps = jnp.where(resampled, k_mcmc, 0)
            p, accepted = jax.lax.fori_loop(0, steps, lambda i, c: pmmh_step(i, c, key, chol, t),
                                            (p, jnp.zeros((), jnp.float32)))
            return p, jnp.where(resampled, accepted / k_mcmc, jnp.nan)

        def move(key, p, log_weights, t, ancestry):
            k_rej, k_adv = jax.random.split(key)
            acc = jnp.full((), jnp.nan, jnp.float32)
            if k_mcmc > 0:
                p, acc = rejuvenate(k_rej, p, log_weights, t, ancestry.resampled)
            states = jax.vmap(inner_step)(jax.random.split(k_adv, num_particles), p["u"], p["filter"])
            log_g = jax.vmap(log_likelihood)(states) - jax.vmap(log_likelihood)(p["filter"])
            return {**p, "filter": states}, {"acceptance_rate": acc}, log_g

        last = num_steps - 1
        return FeynmanKac(f_init, move, lambda p, lw, t, info: t + 1, None,
                          progress=lambda t: t / jnp.maximum(last, 1))

    def build(self, num_particles: int, *args, **kwargs) -> Plan:
        """The plan for the model's arguments ``*args, **kwargs`` (the observations): checks the model
        (static parameters present) before compiling; the array arguments are the plan's ``data``."""
        # the model's inspection, the broadcasting check (decided on the concrete arguments: inside the compiled
        # run they are traced) and the flat parameter vector's size and map back to the sites (shapes only, under an
        # abstract trace), kept per input signature: a second run with inputs of the same shapes re-runs none of
        # them (its program is compiled once too)
        hint = "there is nothing for SMC2 to sample. Use StateSpaceFilter to filter it."
        model = self.model

        def inspect():
            structure = static_structure(model, args, kwargs, hint)
            flat0, unravel = run_abstractly(lambda: ravel_pytree(prior_draw(model, structure.static_sites,
                                                                            jax.random.key(0), *args, **kwargs)))
            return structure, body_broadcasts(model, args, kwargs), int(flat0.shape[0]), unravel

        structure, self._vectorize, dim, unravel = kept_for_signature(
            self.__dict__.setdefault("_inspections", {}), args, kwargs, inspect)
        static, num_steps = structure.static_sites, structure.length
        data, rebuild = split_data(args, kwargs)

        def fk(values):
            a, kw = rebuild(values)
            return self._feynman_kac(num_particles, static, unravel, dim, a, kw, num_steps)

        def postprocess(particles, values):
            a, kw = rebuild(values)
            return jax.vmap(lambda f: static_log_prior(model, static, unravel(f), *a, **kw)[0])(particles["u"])

        attrs = {"num_state_particles": self.num_state_particles, "num_mcmc_steps": self.num_mcmc_steps,
                 "scale": self.scale, "num_time_steps": num_steps,
                 "continuous_state": 1}  # continuous parameters: exact copies come from resampling only
        return Plan(fk=fk, num_stages=num_steps - 1, max_stages=num_steps - 1, postprocess=postprocess,
                    resampling=Resampling(), name="SMC2", progress_name="t", data=data, entropic_correction=True,
                    attrs=attrs, metadata={"latent_sites": tuple(static)},
                    draw_identity=lambda particles: particles["u"])  # the parameters, not the inner filters
