"""One chain of any plan: run its Feynman–Kac model with the engine's driver (fixed or adaptive), then
draw the final equally weighted sample with its lineages. Pure and jit/vmap-able; the front end
(:class:`smcppl.SMC`) compiles it, and validation tools (simulation-based calibration) vmap it over
datasets (ARCHITECTURE.md, "The run and its checks")."""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.engine import FeynmanKac, run_adaptive, run_fixed
from smcppl.core.plan import Plan
from smcppl.core.policy import Resampling
from smcppl.core.resampling import systematic
from smcppl.core.weights import normalize

__all__ = ["count_distinct", "final_draws", "make_run_one"]


def count_distinct(particles: Any) -> jax.Array:
    """Number of distinct particles in a population (any pytree with a leading particle axis): each
    particle is projected on a fixed random direction and the distinct projections are counted
    (exact copies, as resampling makes them, project to the same value)."""
    leaves = [jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32) for x in jax.tree_util.tree_leaves(particles)]
    flat = jnp.concatenate(leaves, axis=1)
    # a constant of the program, drawn at trace time (a jax.random draw here would add a threefry hash
    # to every sampler's compiled program)
    direction = jnp.asarray(np.random.default_rng(20261201).standard_normal(flat.shape[1]), flat.dtype)
    proj = jnp.sort(jnp.where(jnp.isfinite(flat), flat, 0.0) @ direction)
    return 1 + jnp.sum(proj[1:] != proj[:-1]).astype(jnp.int32)


def final_draws(rng_key: jax.Array, particles: Any, log_weights: jax.Array, postprocess: Callable,
                lineage: Optional[jax.Array] = None, resample_final: bool = True,
                draw_identity: Optional[Callable] = None) -> tuple:
    """Equally weighted draws: systematic resampling of the final weights, then a random order of the
    lineages (same ancestor ``LINEAGE_LAG`` resampling events back, see
    :func:`smcppl.core.engine.update_lineage`) in which the draws of one lineage are contiguous — so that
    ArviZ's autocorrelation-based ESS and MCSE see their correlation instead of counting copies as
    independent draws. The order is one stable sort by ``(r[lineage], lineage)`` with ``r`` i.i.d. random
    32-bit integers (ties between lineages broken by the lineage id, so they never interleave); inside a
    lineage, draws keep the resampled order (by particle index). One sort: the former random permutation of
    the lineages plus a random order inside each (a shuffle's rounds and two sorts) compiled ~40 more fused
    XLA kernels (Challenger's program).

    Returns ``(postprocess(draws), draws, draw_stats)``, ``draw_stats = {"lineage": [N] cluster id of
    each draw, "n_unique": number of distinct draws}`` (distinct in ``draw_identity(particles)``, default
    the whole particles)."""
    k1, k2, _ = jax.random.split(rng_key, 3)  # three: k1, the resampling key, as before the one-sort order
    n = log_weights.shape[0]
    idx = systematic(k1, normalize(log_weights), n) if resample_final else jnp.arange(n)
    cluster = (idx if lineage is None else lineage[-1][idx]).astype(jnp.int32)
    rank = jax.random.bits(k2, (n,), jnp.uint32)[cluster]
    _, cluster, idx = jax.lax.sort((rank, cluster, idx.astype(jnp.int32)), num_keys=2, is_stable=True)
    particles = jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), particles)
    identity = particles if draw_identity is None else draw_identity(particles)
    draw_stats = {"lineage": cluster, "n_unique": count_distinct(identity)}
    return postprocess(particles), particles, draw_stats


def make_run_one(plan: Plan, resampling: Resampling, record_ancestors: bool = False,
                 progress: Optional[Callable] = None) -> Callable:
    """``run_one(key, data[, tuning[, settings]]) -> (SMCOutput, draws, raw particles of the draws, draw_stats)``
    for one chain (see :func:`final_draws`); pure and jit/vmap-able over keys and (for SBC-style studies) over
    datasets. ``tuning``: the input a :class:`Pilot` fixes (plans with a pilot; None: the plan's own
    default, e.g. a pilot nested in the run). ``settings``: the plan's traced numeric settings
    (``Plan.settings``; None: the algorithm's values as constants)."""
    def run_one(key, data, tuning=None, settings=None):
        k_run, k_draw = jax.random.split(key)
        if isinstance(plan.fk, FeynmanKac):
            fk = plan.fk
        elif settings is not None:
            fk = plan.fk(data, tuning, settings)
        else:
            fk = plan.fk(data) if tuning is None else plan.fk(data, tuning)
        if plan.num_stages is not None:
            out = run_fixed(k_run, fk, plan.num_stages, resampling, record_ancestors, plan.summary_fn, progress)
        else:
            out = run_adaptive(k_run, fk, plan.max_stages, resampling, record_ancestors, progress, plan.summary_fn)
        post = plan.postprocess if plan.data is None else (lambda p: plan.postprocess(p, data))
        return (out,) + final_draws(k_draw, out.state.particles, out.state.log_weights, post, out.state.lineage,
                                    draw_identity=plan.draw_identity)

    return run_one
