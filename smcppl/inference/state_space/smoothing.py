"""Particle smoothing: paths ``x_{0:T-1} ~ p(x_{0:T-1} | y_{0:T-1})`` (approximately) from one filter run.

* ``"genealogy"``: draw ``b_{T-1} ~ W_{T-1}`` and follow the ancestors back, ``b_{t-1} = a_t(b_t)``
  (Kitagawa 1996). Cheap, but early times collapse onto few ancestors (path degeneracy).
* ``"ffbs"``: forward filtering, backward sampling (Godsill, Doucet & West 2004): ``b_{T-1} ~ W_{T-1}`` and
  ``P(b_t = i) ∝ W_t^i f_{t+1}(x_{t+1}^{b_{t+1}} | x_t^i)``; needs ``log_transition``; O(T N) per path.

The filter runs with the engine (:func:`~smcppl.core.engine.run_fixed`) recording every time step's
particles and filtering log-weights in the trace's ``summary``, and the ancestors.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from smcppl.core.engine import SMCOutput, run_fixed, validate_num_particles
from smcppl.core.checks import positive_int
from smcppl.core.policy import Resampling, validate_resampling
from smcppl.core.weights import log_normalize
from smcppl.inference.state_space.filter import complete_state_space, filter_feynman_kac
from smcppl.inference.state_space.scan import time_slice
from smcppl.models.state_space import StateSpace

__all__ = ["SmoothingResult", "smooth", "METHODS"]

METHODS = ("genealogy", "ffbs")


class SmoothingResult(NamedTuple):
    paths: Any  # record(x) along each path, leaves [num_paths, T, ...]
    log_evidence: jax.Array  # the filter's log p(y_{0:T-1}) estimate
    output: SMCOutput  # the filter run (trace.summary: particles "x" and log-weights "lw" per time step)


def _genealogy(key, ancestors, lw_last, num_paths):
    """Indices ``[T, M]`` of ``num_paths`` lineages, traced back through ``ancestors [T, N]``."""
    b = jax.random.categorical(key, lw_last, shape=(num_paths,))

    def back(b, anc_t):
        return anc_t[b], b

    b0, rest = jax.lax.scan(back, b, ancestors[1:], reverse=True)
    return jnp.concatenate([b0[None], rest], axis=0)


def _ffbs(key, xs, lws, log_transition, inputs, num_paths):
    """Indices ``[T, M]`` drawn backwards with ``P(b_t = i) ∝ W_t^i f_{t+1}(x_{t+1}^{b_{t+1}} | x_t^i)``."""
    num_steps = lws.shape[0]
    k_last, k_back = jax.random.split(key)
    b_last = jax.random.categorical(k_last, lws[-1], shape=(num_paths,))

    def back(b_next, inp):
        k, t = inp
        x_t = jax.tree_util.tree_map(lambda a: a[t], xs)
        x_next = jax.tree_util.tree_map(lambda a: a[t + 1][b_next], xs)
        u = time_slice(inputs, t + 1)
        pair = jax.vmap(jax.vmap(log_transition, in_axes=(0, None, None, None)), in_axes=(None, 0, None, None))
        logits = lws[t][None, :] + pair(x_t, x_next, u, t + 1)  # [M, N]
        b = jax.random.categorical(k, logits, axis=-1)
        return b, b

    ts = jnp.arange(num_steps - 1)
    _, rest = jax.lax.scan(back, b_last, (jax.random.split(k_back, num_steps - 1), ts), reverse=True)
    return jnp.concatenate([rest, b_last[None]], axis=0)


def smooth(rng_key: jax.Array, ssm: StateSpace, num_particles: int, num_paths: int, method: str = "ffbs",
           resampling: Resampling = Resampling(), proposal: Optional[Callable] = None,
           lookahead: Optional[Callable] = None) -> SmoothingResult:
    """Run the particle filter of ``ssm`` (bootstrap, or guided/auxiliary as in
    :func:`~smcppl.inference.state_space.filter.filter_feynman_kac`) and draw ``num_paths`` smoothing paths
    by ``method`` (module docstring). Jit/vmap-able (the settings are static)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    ssm = complete_state_space(ssm)
    if method == "ffbs" and ssm.log_transition is None:
        raise ValueError("method='ffbs' needs StateSpace.log_transition (log f_t(x_t | x_{t-1})); a scan model has "
                         "one when its carry is a function of the body's latent sites. Use method='genealogy'.")
    num_particles = validate_num_particles(num_particles)
    num_paths = positive_int(num_paths, "num_paths")
    fk = filter_feynman_kac(ssm, num_particles, proposal, lookahead)

    def keep(particles, log_weights):
        x, la = particles
        return {"x": x, "lw": log_normalize(log_weights - la)[0]}

    k_run, k_paths = jax.random.split(rng_key)
    out = run_fixed(k_run, fk, ssm.num_steps - 1, validate_resampling(resampling), record_ancestors=True,
                    summary_fn=keep)
    xs, lws = out.trace.summary["x"], out.trace.summary["lw"]
    if method == "genealogy":
        idx = _genealogy(k_paths, out.trace.ancestors, lws[-1], num_paths)
    else:
        idx = _ffbs(k_paths, xs, lws, ssm.log_transition, ssm.inputs, num_paths)
    t = jnp.arange(ssm.num_steps)[:, None]
    path_x = jax.tree_util.tree_map(lambda a: a[t, idx], xs)  # [T, M, ...]
    rec = jax.vmap(jax.vmap(ssm.record))(path_x)
    paths = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), rec)
    return SmoothingResult(paths, out.log_evidence, out)
