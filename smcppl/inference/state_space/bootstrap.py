"""Bootstrap particle filter for state-space models, as a Feynman–Kac model of the engine.

``M0 = p(x_0)``, ``M_t = p(x_t | x_{t-1})``, ``G_t = g_t(y_t | x_t)``; ``log Z_hat`` estimates the
log-likelihood ``log p(y_{0:T-1})``. The trace's ``summary`` holds the filtering means
``sum_i W_t^i x_t^i`` at every time step.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from smcppl.core.engine import FeynmanKac, SMCOutput, run_fixed, validate_num_particles
from smcppl.core.policy import Resampling, validate_resampling
from smcppl.core.weights import normalize
from smcppl.models.state_space import StateSpaceModel

__all__ = ["bootstrap_feynman_kac", "bootstrap_filter", "filtering_mean"]


def bootstrap_feynman_kac(ssm: StateSpaceModel, observations: ArrayLike, num_particles: int) -> FeynmanKac:
    """The bootstrap filter of ``ssm`` on ``observations`` (leading time axis) as a :class:`FeynmanKac`."""
    ys = jnp.asarray(observations)
    num_steps = ys.shape[0]

    def init(key):
        x0 = ssm.sample_initial(key, num_particles)
        return x0, ssm.log_observation(x0, ys[0], 0), jnp.zeros((), jnp.int32)

    def move(key, x, log_weights, t, ancestry):
        return ssm.sample_transition(key, x, t + 1), None

    def update(x, log_weights, t, move_info):
        return t + 1

    def log_potential(x, prev, t, t_new):
        return ssm.log_observation(x, ys[t_new], t_new)

    return FeynmanKac(init, move, update, log_potential, progress=lambda t: t / jnp.maximum(num_steps - 1, 1))


def filtering_mean(particles: Any, log_weights: jax.Array) -> Any:
    """``sum_i W_i x_i`` over the leading particle axis."""
    w = normalize(log_weights)
    return jax.tree_util.tree_map(lambda x: jnp.tensordot(w, x, axes=1), particles)


def bootstrap_filter(rng_key: jax.Array, ssm: StateSpaceModel, observations: ArrayLike, num_particles: int,
                     resampling: Resampling = Resampling(), record_ancestors: bool = False) -> SMCOutput:
    """Run the bootstrap filter; returns an :class:`~smcppl.core.engine.SMCOutput` whose
    ``trace.summary`` are the filtering means and ``log_evidence`` the log-likelihood estimate."""
    num_particles = validate_num_particles(num_particles)
    resampling = validate_resampling(resampling)
    ys = jnp.asarray(observations)
    if ys.ndim < 1 or ys.shape[0] < 1:
        raise ValueError(f"observations must have a leading time axis of length >= 1, got shape {ys.shape}.")
    fk = bootstrap_feynman_kac(ssm, ys, num_particles)
    return run_fixed(rng_key, fk, ys.shape[0] - 1, resampling, record_ancestors, summary_fn=filtering_mean)
