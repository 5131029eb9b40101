"""Particle Gibbs with ancestor sampling (Andrieu, Doucet & Holenstein 2010; Lindsten, Jordan & Schön 2014)
for a scan-declared NumPyro state-space model (:mod:`~smcppl.inference.state_space.scan`).

One iteration alternates

* ``x_{0:T-1} | theta, y``: conditional SMC with ancestor sampling. Particle 0 is the reference path; at
  each ``t >= 1`` the others are resampled (multinomial, :func:`~smcppl.core.resampling.multinomial`) and
  propagated, and the reference's ancestor is drawn with ``P(a = i) ∝ W_{t-1}^i f_t(x_t^* | x_{t-1}^i)``;
  the new path is one lineage drawn from the final weights. The kernel leaves ``p(x_{0:T-1} | theta, y)``
  invariant for any ``N >= 2``.
* ``theta | x, y``: a random-walk Metropolis step in NumPyro's unconstrained space on
  ``log p(theta, x, y)`` (NumPyro's ``log_density`` with the path's initial-state and latent sites
  substituted, the scan's sites stacked over time), its scale tuned toward ``target_acceptance`` during
  ``num_warmup`` (then frozen).

Needs ``log_transition`` (the body's new carry a function of its latent sites, see :mod:`.scan`).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.util import _unconstrain_reparam, log_density

from smcppl.core.checks import prng_key
from smcppl.core.plan import run_abstractly
from smcppl.core.resampling import multinomial
from smcppl.core.weights import normalize, sanitize
from smcppl.inference.state_space.filter import complete_state_space
from smcppl.inference.state_space.chains import ParameterChains, warmup_then_sample
from smcppl.inference.state_space.scan import (StateSpaceModelError, prior_draw,
                                               scan_state_space, static_log_prior, time_slice)
from smcppl.inference.state_space.smoothing import _genealogy
from smcppl.models.state_space import StateSpace

__all__ = ["ParticleGibbs", "conditional_smc"]


def _take(tree, idx):
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


def conditional_smc(key: jax.Array, ssm: StateSpace, reference: Any, num_particles: int,
                    resampler: Callable = multinomial) -> tuple:
    """One conditional-SMC-with-ancestor-sampling sweep of the (completed) ``ssm`` given the reference path
    ``reference`` (states with leading time axis); returns a new path drawn from the final weights.

    ``resampler(key, W, N) -> indices``: ``N`` i.i.d. draws from ``Categorical(W)`` for the non-reference
    particles (the kernel's invariance needs i.i.d. multinomial draws). The default draws them by the inverse
    cdf in ``O(N log N)``; ``jax.random.categorical`` with a sample shape draws ``N`` Gumbels per draw,
    ``N^2`` per step (``benchmarks/state_space.py --sections pgibbs`` compares the two)."""
    n, num_steps, u_all = num_particles, ssm.num_steps, ssm.inputs
    k0, k_run, k_draw = jax.random.split(key, 3)
    u0 = time_slice(u_all, 0)
    x0 = jax.vmap(ssm.sample_initial, in_axes=(0, None))(jax.random.split(k0, n), u0)
    x0 = jax.tree_util.tree_map(lambda a, r: a.at[0].set(r[0]), x0, reference)
    lw0 = sanitize(jax.vmap(ssm.log_observation, in_axes=(0, None, None))(x0, u0, 0))

    def step(carry, inp):
        x, lw = carry
        k, t = inp
        k_res, k_as, k_mv = jax.random.split(k, 3)
        u, ref_t = time_slice(u_all, t), _take(reference, t)
        log_f = jax.vmap(ssm.log_transition, in_axes=(0, None, None, None))(x, ref_t, u, t)
        anc = resampler(k_res, normalize(lw), n).at[0].set(jax.random.categorical(k_as, lw + log_f))
        xp = _take(x, anc)
        xn = jax.vmap(ssm.sample_transition, in_axes=(0, 0, None, None))(jax.random.split(k_mv, n), xp, u, t)
        x_ref = ssm.complete(_take(xp, 0), ssm.record(ref_t), u, t)[0]
        xn = jax.tree_util.tree_map(lambda a, r: a.at[0].set(r), xn, x_ref)
        lw = sanitize(jax.vmap(ssm.log_observation, in_axes=(0, None, None))(xn, u, t))
        return (xn, lw), (xn, anc)

    (_, lw_last), (xs, ancs) = jax.lax.scan(step, (x0, lw0), (jax.random.split(k_run, num_steps - 1),
                                                              jnp.arange(1, num_steps)))
    xs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), x0, xs)
    ancs = jnp.concatenate([jnp.arange(n)[None], ancs])
    idx = _genealogy(k_draw, ancs, lw_last, 1)[:, 0]
    return jax.tree_util.tree_map(lambda a: a[jnp.arange(num_steps), idx], xs)


class ParticleGibbs(ParameterChains):
    """Particle Gibbs with ancestor sampling for a scan-declared NumPyro model (module docstring)::

        pg = ParticleGibbs(model, num_particles=64, num_warmup=300, num_samples=1000, num_chains=4)
        pg.run(jax.random.key(0), y); pg.get_samples(); pg.rhat(); pg.to_arviz()

    ``get_samples()`` holds the static parameters and the latent sites' paths (``(draws, T, ...)``).
    """

    def __init__(self, model: Callable, num_particles: int = 64, num_warmup: int = 300, num_samples: int = 1000,
                 num_chains: int = 4, *, target_acceptance: float = 0.3):
        self._settings("ParticleGibbs", model, num_particles, num_warmup, num_samples, num_chains, target_acceptance)

    def _chain_fn(self, args, kwargs, static):
        model, n = self.model, self.num_particles
        flat0, unravel = ravel_pytree(prior_draw(model, static, jax.random.key(0), *args, **kwargs))
        dim, target = flat0.shape[0], self.target_acceptance

        def ssm_for(flat):
            theta = static_log_prior(model, static, unravel(flat), *args, **kwargs)[0]
            return complete_state_space(scan_state_space(model, theta, *args, check_markov=False, **kwargs)), theta

        def log_joint(flat, path):
            params = {**_take(path["initial"], 0), **path["latent"]}
            sub = handlers.substitute(model, substitute_fn=partial(_unconstrain_reparam, unravel(flat)))
            return sanitize(log_density(sub, args, kwargs, params)[0])

        def gibbs(state, key, log_s):
            flat, path = state
            k_csmc, k_prop, k_acc = jax.random.split(key, 3)
            path = conditional_smc(k_csmc, ssm_for(flat)[0], path, n)
            prop = flat + jnp.exp(log_s) * jax.random.normal(k_prop, (dim,))
            log_alpha = jnp.minimum(log_joint(prop, path) - log_joint(flat, path), 0.0)
            accept = jnp.log(jax.random.uniform(k_acc)) < log_alpha
            return (jnp.where(accept, prop, flat), path), jnp.exp(log_alpha), accept

        def chain(key):
            k_init, k_path, k_warm, k_run = jax.random.split(key, 4)
            flat = ravel_pytree(prior_draw(model, static, k_init, *args, **kwargs))[0]
            ssm = ssm_for(flat)[0]
            # initial path: one bootstrap-filter-like draw (a conditional sweep from an arbitrary reference)
            x0 = ssm.sample_initial(k_path, time_slice(ssm.inputs, 0))

            def forward(x, inp):
                k, t = inp
                x = ssm.sample_transition(k, x, time_slice(ssm.inputs, t), t)
                return x, x

            steps = (jax.random.split(k_path, ssm.num_steps - 1), jnp.arange(1, ssm.num_steps))
            _, rest = jax.lax.scan(forward, x0, steps)
            path = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), x0, rest)

            def step(carry, k, warming):
                state, log_s, i = carry
                state, alpha, accept = gibbs(state, k, log_s)
                log_s = jnp.where(warming, log_s + (alpha - target) / jnp.sqrt(i + 1.0), log_s)  # frozen after
                return (state, log_s, i + 1.0), (ssm_for(state[0])[1], state[1]["latent"], accept)

            return warmup_then_sample(step, ((flat, path), jnp.log(0.5), jnp.zeros(())), k_warm, k_run,
                                      self.num_warmup, self.num_samples)[1]

        return chain

    def run(self, rng_key: jax.Array, *args, **kwargs) -> "ParticleGibbs":
        """Run ``num_chains`` chains on the model's arguments (the observations)."""
        rng_key = prng_key(rng_key)

        def require_transition_density(structure):  # a property of the code: on zeros, under an abstract trace
            def has_density():
                theta0 = {k: jnp.zeros(structure.shapes[k].shape, structure.shapes[k].dtype)
                          for k in structure.static_sites}
                ssm = scan_state_space(self.model, theta0, *args, vectorize=False, **kwargs)
                return ssm.log_transition is not None

            if not run_abstractly(has_density):
                raise StateSpaceModelError(
                    "Particle Gibbs with ancestor sampling needs f_t(x_t | x_{t-1}) as a density of the state: the "
                    "scan body's new carry must be a function of its latent sites.")

        structure = self._structure(args, kwargs, "use StateSpaceFilter(...).smooth for its paths.",
                                    require_transition_density)
        static = structure.static_sites
        settings = (self.num_particles, self.num_warmup, self.num_samples, self.target_acceptance)
        program, data = self._program(args, kwargs, lambda a, kw: self._chain_fn(a, kw, static), settings)
        thetas, latents, accepts = program(jax.random.split(rng_key, self.num_chains), data)
        self._samples = {k: np.asarray(v) for k, v in {**thetas, **latents}.items()}
        self.static_sites = structure.static_sites
        self.accepted = np.asarray(accepts)
        self.acceptance_rate = self.accepted.mean(axis=1)
        self.health = self._check_health("ParticleGibbs", args, kwargs)
        return self

    def to_arviz(self) -> Any:
        """ArviZ data: ``posterior`` with the static parameters (chain, draw) and the latent sites
        (chain, draw, time); ``sample_stats.accepted`` of the parameter moves."""
        self._check()
        latent_dims = {k: ["time"] for k in self._samples if k not in self.static_sites}
        return self._arviz({"accepted": self.accepted}, latent_dims)
