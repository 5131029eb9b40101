"""Particle marginal Metropolis–Hastings (Andrieu, Doucet & Holenstein 2010) for the static parameters of a
scan-declared state-space model (:mod:`~smcppl.inference.state_space.scan`).

In NumPyro's unconstrained space ``u`` (``theta = T(u)``), the chain targets
``pi(u) ∝ p(T(u)) |det T'(u)| p(y | T(u))`` with the intractable likelihood replaced by the particle
filter's unbiased estimate ``Z_hat(T(u))`` (a fresh filter run per proposal, the current estimate kept
with the current point): an exact-approximate MCMC whose invariant law is the exact posterior.

Proposal: Gaussian random walk ``u' = u + s L eps``. A short adaptive phase (``num_warmup`` iterations,
discarded) sets ``L L'`` to the covariance of its draws (shrunk toward ``0.1 I`` with weight 20 draws) and
``log s`` by Robbins–Monro toward ``target_acceptance``; the sampling phase keeps them fixed (so the kept
draws are a Markov chain with the exact invariant law). ``num_chains`` independent chains (one ``vmap``)
give R-hat and ESS through ArviZ.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from smcppl.core.checks import prng_key
from smcppl.core.engine import run_fixed
from smcppl.core.policy import as_resampling
from smcppl.core.weights import sanitize
from smcppl.inference.state_space.filter import complete_state_space, filter_feynman_kac
from smcppl.inference.state_space.chains import ParameterChains, warmup_then_sample
from smcppl.inference.state_space.scan import body_broadcasts, prior_draw, scan_state_space, static_log_prior

__all__ = ["PMMH"]

SHRINK_DRAWS = 20  # weight (in draws) of the initial covariance guess 0.1 I in the adapted covariance


class PMMH(ParameterChains):
    """Particle marginal Metropolis–Hastings for a scan-declared NumPyro state-space model::

        pmmh = PMMH(model, num_particles=256, num_warmup=300, num_samples=1000, num_chains=4)
        pmmh.run(jax.random.key(0), y)
        pmmh.get_samples(); pmmh.print_summary(); pmmh.to_arviz()

    num_particles: the filter's population per likelihood estimate (aim for ``sd(log Z_hat)`` near 1).
    resampling/entropic: the filter's policy (any policy of the core). target_acceptance: of the adaptive
    phase (0.25 by default; about 0.1-0.25 is efficient for PMMH, Sherlock et al. 2015).
    """

    def __init__(self, model: Callable, num_particles: int = 256, num_warmup: int = 300, num_samples: int = 1000,
                 num_chains: int = 4, *, resampling=None, entropic=None, target_acceptance: float = 0.25):
        self._settings("PMMH", model, num_particles, num_warmup, num_samples, num_chains, target_acceptance)
        self.resampling = as_resampling(resampling, entropic)

    def _chain_fn(self, args, kwargs, static, vectorize=None):
        model, n, res = self.model, self.num_particles, self.resampling
        u_example = prior_draw(model, static, jax.random.key(0), *args, **kwargs)
        flat0, unravel = ravel_pytree(u_example)
        dim = flat0.shape[0]

        def log_target(flat, key):
            theta, log_prior = static_log_prior(model, static, unravel(flat), *args, **kwargs)
            ssm = complete_state_space(scan_state_space(model, theta, *args, check_markov=False, vectorize=vectorize,
                                                        **kwargs))
            out = run_fixed(key, filter_feynman_kac(ssm, n), ssm.num_steps - 1, res)
            return sanitize(log_prior + out.log_evidence), theta

        def mh(state, key, chol):
            flat, lt, theta = state
            k_prop, k_pf, k_acc = jax.random.split(key, 3)
            prop = flat + chol @ jax.random.normal(k_prop, (dim,))
            lt_prop, theta_prop = log_target(prop, k_pf)
            log_alpha = jnp.where(jnp.isfinite(lt_prop), jnp.minimum(lt_prop - lt, 0.0), -jnp.inf)
            accept = jnp.log(jax.random.uniform(k_acc)) < log_alpha
            new = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), (prop, lt_prop, theta_prop), state)
            return new, accept, jnp.exp(log_alpha)

        target = self.target_acceptance

        def step(carry, key, warming):
            state, log_s, mean, m2, i = carry
            chol = jnp.exp(log_s) * jnp.linalg.cholesky((m2 + SHRINK_DRAWS * 0.1 * jnp.eye(dim)) / (i + SHRINK_DRAWS))
            new_state, accept, alpha = mh(state, key, chol)
            i1 = i + 1.0
            delta = new_state[0] - mean
            mean1 = mean + delta / i1
            adapted = (new_state, log_s + (alpha - target) / jnp.sqrt(i + 1.0), mean1,
                       m2 + jnp.outer(delta, new_state[0] - mean1), i1)
            # after the warmup the proposal (log s, the draws' covariance) stays as the warmup left it
            carry = (new_state,) + jax.tree_util.tree_map(lambda a, b: jnp.where(warming, a, b), adapted[1:], carry[1:])
            return carry, (new_state[2], new_state[1], accept)

        def chain(key):
            k_init, k_lt, k_warm, k_run = jax.random.split(key, 4)
            flat = ravel_pytree(prior_draw(model, static, k_init, *args, **kwargs))[0]
            lt, theta = log_target(flat, k_lt)
            log_s0 = jnp.log(2.38 / jnp.sqrt(dim))
            carry0 = ((flat, lt, theta), log_s0, jnp.zeros(dim), jnp.zeros((dim, dim)), jnp.zeros(()))
            (_, log_s, _, _, _), (thetas, lts, accepts) = warmup_then_sample(step, carry0, k_warm, k_run,
                                                                              self.num_warmup, self.num_samples)
            return thetas, lts, accepts, jnp.exp(log_s)

        return chain

    def run(self, rng_key: jax.Array, *args, **kwargs) -> "PMMH":
        """Run ``num_chains`` chains on the model's arguments (the observations)."""
        rng_key = prng_key(rng_key)
        structure = self._structure(args, kwargs, "there is nothing for PMMH to sample. Use StateSpaceFilter to "
                                                  "filter it.")
        static = structure.static_sites
        settings = (self.num_particles, self.num_warmup, self.num_samples, self.resampling, self.target_acceptance)

        def chain_fn(a, kw):  # called when the program is traced (once per signature and settings)
            vectorize = body_broadcasts(self.model, args, kwargs)  # on the concrete arguments, not the traced a, kw
            return self._chain_fn(a, kw, static, vectorize)

        program, data = self._program(args, kwargs, chain_fn, settings)
        thetas, lts, accepts, scales = program(jax.random.split(rng_key, self.num_chains), data)
        self._samples = {k: np.asarray(v) for k, v in thetas.items()}
        self.log_target = np.asarray(lts)
        self.accepted = np.asarray(accepts)
        self.acceptance_rate = self.accepted.mean(axis=1)
        self.proposal_scale = np.asarray(scales)
        self.static_sites = structure.static_sites
        self.health = self._check_health("PMMH", args, kwargs, self.log_target)
        return self

    def to_arviz(self) -> Any:
        """ArviZ data: ``posterior`` (chain, draw) of the static parameters; ``sample_stats`` with
        ``accepted`` (per draw) and ``lp`` (log prior + log Z_hat of the current point)."""
        self._check()
        return self._arviz({"lp": self.log_target, "accepted": self.accepted})
