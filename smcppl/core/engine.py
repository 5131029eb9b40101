"""The one Feynman–Kac SMC engine.

A :class:`FeynmanKac` model supplies, for populations of N particles (any pytree with a leading
particle axis):

* ``init(key) -> (particles, log_weights, params)``: ``M0`` draws and the first log-potential ``G0``;
* ``move(key, particles, log_weights, params, ancestry) -> (particles, move_info[, log_g])``: the
  Markov move ``M_t`` of the resampled particles. ``ancestry`` (:class:`Ancestry`) says what this step's
  resampling did (ancestor ``indices``, ``resampled``), and ``log_weights`` are the weights it carried
  (0, or the entropic residual). A move that computes the potential on the way (a sequence filter
  scores the new unit, a corrector integrates its weight along the SDE path) returns it as a third
  element ``log_g`` ``[N]``; then ``log_potential`` is not called (it may be None);
* ``update(particles, log_weights, params, move_info) -> params``: the next stage's parameter
  (e.g. the next temperature, picked adaptively from the particles, or simply ``t + 1``);
* ``log_potential(particles, prev_particles, params, new_params) -> log G_t`` of shape ``[N]``, for
  moves that do not return it;
* ``progress(params)`` in [0, 1] (used by entropic temperature rules) and, for adaptive runs,
  ``done(params)``.

One engine step is ``resample (policy) -> move -> update -> reweight``::

    l_t = r_t + log G_t(x_t)        r_t: log-weight carried after resampling (0, or entropic residual)
    log Z_hat = sum_{resampling events} inc_k + logsumexp(l_T) - log N

NaN log-potentials count as ``-inf``. If every particle is ``-inf`` the step is flagged
(``info.dead``); the drivers stop (adaptive) or carry on inertly (fixed) and record the first dead
stage so that front ends raise :class:`SMCError` naming it.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from smcppl.core.checks import non_finite_advice, positive_int
from smcppl.core.policy import Resampling, count_unique, resample, validate_resampling
from smcppl.core.weights import all_dead, ess_ratio, log_mean_exp, normalized_entropy, sanitize

__all__ = [
    "Ancestry",
    "FeynmanKac",
    "SMCState",
    "StepInfo",
    "SMCOutput",
    "SMCError",
    "init",
    "build_step",
    "run_fixed",
    "running_log_evidence",
    "run_adaptive",
    "raise_if_failed",
    "validate_num_particles",
    "update_lineage",
    "LINEAGE_LAG",
]


class SMCError(RuntimeError):
    """Raised when a run cannot go on (e.g. every particle has zero weight)."""


class FeynmanKac(NamedTuple):
    """The Feynman–Kac model of one sampler (module docstring; ARCHITECTURE.md, "One engine")."""

    init: Callable
    move: Callable
    update: Callable
    log_potential: Optional[Callable]
    progress: Callable = lambda params: jnp.zeros(())
    done: Callable = lambda params: jnp.array(False)
    record: Callable = lambda params: params  # what of params goes into the per-stage trace


LINEAGE_LAG = 2  # resampling events back that define a particle's lineage (its cluster for the MCSE)


class Ancestry(NamedTuple):
    """What a step's resampling did, handed to ``move``: ``indices[i]`` is the ancestor of particle ``i``
    (``arange(N)`` when nothing was resampled) and ``resampled`` whether a resampling event happened."""

    indices: jax.Array
    resampled: jax.Array


def _log_potential(fk: FeynmanKac, moved_out, prev_particles, params, new_params):
    """``log G_t``: the ``log_g`` that ``move`` returned, else ``fk.log_potential`` of the moved particles."""
    if len(moved_out) == 3:
        return moved_out[2]
    if fk.log_potential is None:
        raise TypeError("FeynmanKac.log_potential is None but move returned (particles, move_info) without log_g.")
    return fk.log_potential(moved_out[0], prev_particles, params, new_params)


class SMCState(NamedTuple):
    particles: Any
    log_weights: jax.Array  # unnormalised since the last resampling event
    log_evidence: jax.Array  # sum of resampling-event increments so far
    params: Any
    stage: jax.Array
    lineage: Any = None  # [LINEAGE_LAG, N] int32: row k = ancestor index at the (k+1)-th last resampling event


def _initial_lineage(n):
    return jnp.tile(jnp.arange(n, dtype=jnp.int32)[None], (LINEAGE_LAG, 1))


def update_lineage(lineage: jax.Array, indices: jax.Array, resampled: jax.Array) -> jax.Array:
    """Lineages after a resampling event with ancestor ``indices``: row 0 becomes ``indices`` and row
    ``k`` the ancestor that row ``k - 1`` had (``old[k-1][indices]``); unchanged if nothing was resampled.

    Particles whose row ``LINEAGE_LAG - 1`` agree descend from one particle ``LINEAGE_LAG`` resampling
    events back: they are the clusters of the lineage-based Monte Carlo error (Olsson & Douc 2019,
    lag-based variance estimation), which counts their correlation instead of treating copies as
    independent draws."""
    idx = indices.astype(jnp.int32)
    shifted = jnp.concatenate([idx[None], lineage[:-1][:, idx]], axis=0)
    return jnp.where(resampled, shifted, lineage)


class StepInfo(NamedTuple):
    ess: jax.Array  # ESS/N of the weights after this stage's reweighting
    entropy: jax.Array  # normalised entropy H_n of those weights
    tau: jax.Array  # entropic temperature of this stage's resampling (1 = plain)
    resampled: jax.Array  # did this stage start with a resampling event
    log_evidence: jax.Array  # running log Z estimate after this stage
    n_unique_ancestors: jax.Array
    dead: jax.Array  # every particle at -inf after this stage
    params: Any  # the stage parameter (e.g. beta) after this stage
    move_info: Any  # algorithm-specific (acceptance rate, step size, ...)
    ancestors: Any  # [N] indices or None
    summary: Any  # summary_fn(particles, log_weights) after this stage, or None


class SMCOutput(NamedTuple):
    state: SMCState
    trace: StepInfo  # leading stage axis (stage 0 = initialisation); NaN/-1-padded for adaptive runs
    n_stages: jax.Array  # number of valid trace rows
    log_evidence: jax.Array  # final log Z estimate
    dead_stage: jax.Array  # first stage where every particle died, -1 if none


def validate_num_particles(num_particles: int) -> int:
    """A positive integer of at least 2: with one particle there is no weighting, no resampling and
    no Monte Carlo error to speak of, and ``log Z_hat`` would be a single importance weight."""
    n = positive_int(num_particles, "num_particles")
    if n < 2:
        raise ValueError(f"num_particles must be at least 2 (SMC needs a population), got {n}.")
    return n


def running_log_evidence(log_evidence: jax.Array, log_weights: jax.Array) -> jax.Array:
    """``log Z_hat`` so far: the resampling increments ``log_evidence`` plus ``log mean exp`` of the current
    log-weights."""
    return log_evidence + log_mean_exp(log_weights)


def _info(log_weights, log_evidence, tau, resampled, n_unique, params, move_info, ancestors, summary=None):
    lw = sanitize(log_weights)
    return StepInfo(
        ess=ess_ratio(lw),
        entropy=normalized_entropy(lw),
        tau=jnp.asarray(tau, lw.dtype),
        resampled=jnp.asarray(resampled),
        log_evidence=running_log_evidence(log_evidence, lw),
        n_unique_ancestors=jnp.asarray(n_unique, jnp.int32),
        dead=all_dead(lw),
        params=params,
        move_info=move_info,
        ancestors=ancestors,
        summary=summary,
    )


def init(rng_key: jax.Array, fk: FeynmanKac, empty_move_info: Any = None, record_ancestors: bool = False,
         summary_fn: Optional[Callable] = None) -> tuple[SMCState, StepInfo]:
    """Run ``M0``/``G0`` and return ``(SMCState, StepInfo)`` for stage 0."""
    particles, log_weights, params = fk.init(rng_key)
    lw = sanitize(jnp.asarray(log_weights))
    n = lw.shape[0]
    state = SMCState(particles, lw, jnp.zeros((), lw.dtype), params, jnp.zeros((), jnp.int32), _initial_lineage(n))
    anc = jnp.arange(n) if record_ancestors else None
    summ = None if summary_fn is None else summary_fn(particles, lw)
    info = _info(lw, state.log_evidence, 1.0, False, n, fk.record(params), empty_move_info, anc, summ)
    return state, info


def build_step(fk: FeynmanKac, resampling: Resampling = Resampling(), record_ancestors: bool = False,
               summary_fn: Optional[Callable] = None) -> Callable:
    """Return ``step(rng_key, state) -> (state, info)``: resample, move, update, reweight.

    ``summary_fn(particles, log_weights)``, if given, is recorded in ``info.summary`` (e.g. filtering
    means) so that per-stage statistics need no particle history.
    """
    resampling = validate_resampling(resampling)

    def step(rng_key, state: SMCState):
        k_res, k_move = jax.random.split(rng_key)
        n = state.log_weights.shape[0]
        res = resample(k_res, state.log_weights, fk.progress(state.params), resampling)
        particles = jax.tree_util.tree_map(lambda x: jnp.take(x, res.indices, axis=0), state.particles)
        out = fk.move(k_move, particles, res.log_weights, state.params, Ancestry(res.indices, res.resampled))
        moved, move_info = out[0], out[1]
        new_params = fk.update(moved, res.log_weights, state.params, move_info)
        log_g = sanitize(_log_potential(fk, out, particles, state.params, new_params))
        lw = res.log_weights + log_g
        log_evidence = state.log_evidence + res.log_evidence_increment
        new_state = SMCState(moved, lw, log_evidence, new_params, state.stage + 1,
                             update_lineage(state.lineage, res.indices, res.resampled))
        n_unique = count_unique(res.indices, n)
        summ = None if summary_fn is None else summary_fn(moved, lw)
        info = _info(lw, log_evidence, res.tau, res.resampled, n_unique, fk.record(new_params), move_info,
                     res.indices if record_ancestors else None, summ)
        return new_state, info

    return step


def _traced_step(fk, resampling, record_ancestors, summary_fn, rng_key, state):
    """``(step, move-info template)``: the engine step under an inner ``jax.jit`` and the stage-0 padding of
    ``move_info`` (NaN floats, zero ints) from its output shapes. The step is traced once: the shapes come
    from that trace, and the loop body's call with the same input types re-uses it (tracing the move twice
    — once for the template, once in the loop — cost ~half of a tempered program's tracing time)."""
    step = jax.jit(build_step(fk, resampling, record_ancestors, summary_fn))
    shapes = jax.eval_shape(step, rng_key, state)[1].move_info
    template = jax.tree_util.tree_map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype)
                                      if jnp.issubdtype(s.dtype, jnp.floating) else jnp.zeros(s.shape, s.dtype),
                                      shapes)
    return step, template


def _stack(first, rest):
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b], axis=0), first, rest)


def _report(progress_callback, state, fk):
    """Host callback ``progress_callback(stage, fk.progress(params))`` (a progress bar), if any."""
    if progress_callback is not None:
        jax.debug.callback(progress_callback, state.stage, fk.progress(state.params))


def run_fixed(rng_key: jax.Array, fk: FeynmanKac, num_stages: int, resampling: Resampling = Resampling(),
              record_ancestors: bool = False, summary_fn: Optional[Callable] = None,
              progress_callback: Optional[Callable] = None) -> SMCOutput:
    """Run ``num_stages`` engine steps after initialisation with ``lax.scan``.

    The trace has ``num_stages + 1`` rows (row 0 = initialisation). ``progress_callback(stage, progress)``
    is called on the host after every step (see :func:`run_adaptive`).
    """
    k_init, k_run = jax.random.split(rng_key)
    state, info0 = init(k_init, fk, None, record_ancestors, summary_fn)
    step, template = _traced_step(fk, resampling, record_ancestors, summary_fn, k_run, state)
    info0 = info0._replace(move_info=template)

    def body(s, k):
        s, info = step(k, s)
        _report(progress_callback, s, fk)
        return s, info

    state, infos = jax.lax.scan(body, state, jax.random.split(k_run, num_stages))
    trace = _stack(info0, infos)
    dead_any = jnp.any(trace.dead)
    dead_stage = jnp.where(dead_any, jnp.argmax(trace.dead), -1)
    return SMCOutput(state, trace, jnp.asarray(num_stages + 1),
                     running_log_evidence(state.log_evidence, state.log_weights), dead_stage)


def _pad_like(x, capacity):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        fill = jnp.nan
    elif x.dtype == jnp.bool_:
        fill = False
    else:
        fill = -1
    return jnp.full((capacity,) + x.shape, fill, x.dtype)


def run_adaptive(rng_key: jax.Array, fk: FeynmanKac, max_stages: int, resampling: Resampling = Resampling(),
                 record_ancestors: bool = False, progress_callback: Optional[Callable] = None,
                 summary_fn: Optional[Callable] = None) -> SMCOutput:
    """Run until ``fk.done(params)`` (or ``max_stages`` steps) with ``lax.while_loop``.

    The trace has a fixed capacity of ``max_stages + 1`` rows, padded with NaN (floats), -1 (ints)
    and False (bools) after ``n_stages`` rows. Stops early if every particle dies.
    ``progress_callback(stage, progress)``: called on the host after every stage with ``fk.progress`` of
    the new parameters (e.g. beta), for progress bars; under ``vmap`` both arguments are per-chain arrays.
    """
    k_init, k_run = jax.random.split(rng_key)
    state, info0 = init(k_init, fk, None, record_ancestors, summary_fn)
    step, template = _traced_step(fk, resampling, record_ancestors, summary_fn, k_run, state)
    info0 = info0._replace(move_info=template)
    capacity = max_stages + 1
    trace = jax.tree_util.tree_map(lambda x: _pad_like(x, capacity), info0)
    trace = jax.tree_util.tree_map(lambda t, x: t.at[0].set(x), trace, info0)

    def cond(carry):
        state, _, _, dead = carry
        return (~fk.done(state.params)) & (state.stage < max_stages) & (~dead)

    def body(carry):
        state, trace, key, _ = carry
        key, sub = jax.random.split(key)
        state, info = step(sub, state)
        trace = jax.tree_util.tree_map(lambda t, x: t.at[state.stage].set(x), trace, info)
        _report(progress_callback, state, fk)
        return state, trace, key, info.dead

    state, trace, _, dead = jax.lax.while_loop(cond, body, (state, trace, k_run, info0.dead))
    n_stages = state.stage + 1
    dead_stage = jnp.where(dead, state.stage, -1)
    return SMCOutput(state, trace, n_stages, running_log_evidence(state.log_evidence, state.log_weights), dead_stage)


def raise_if_failed(output: SMCOutput, what: str = "SMC run", inputs: Optional[tuple] = None) -> SMCOutput:
    """Raise :class:`SMCError` if any chain had every particle at ``-inf`` (works on vmapped output).
    ``inputs = (model, args, kwargs)``: the error then names the inputs that hold NaN or infinite values (the
    usual cause; :func:`smcppl.core.checks.non_finite_advice`)."""
    import numpy as np

    dead = np.atleast_1d(np.asarray(output.dead_stage))
    if np.any(dead >= 0):
        chains = np.nonzero(dead >= 0)[0]
        stage = int(dead[chains[0]])
        advice = (None if inputs is None else non_finite_advice(*inputs)) or (
            "Check that the model's log density is finite where the particles are (data, support of the "
            "parameters), or use more particles.")
        raise SMCError(
            f"{what}: every particle has log-weight -inf (or NaN) at stage {stage}"
            f" in chain(s) {chains.tolist()}. The log-potential is -inf/NaN for all particles. {advice}")
    return output
