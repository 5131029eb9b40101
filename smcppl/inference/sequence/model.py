"""The sequence filter's Feynman–Kac model for the one engine (:mod:`smcppl.core.engine`;
ARCHITECTURE.md, "One engine").

``M0`` = the first unit from the prompt, ``G0`` its score (plus the look-ahead ``a``). Each engine step
resamples (the engine, with the filter's policy), then ``move`` extends the unfinished particles by one
unit (from the policy, or from a proposal ``q``: :mod:`.proposals`, the weight gains ``log p - log q``)
and returns ``log G_t`` as its third element: the new weight ``l`` of
:func:`~smcppl.inference.sequence.weights.reweight` (which needs ``ancestry.resampled``: whether the
engine's resampling used up the look-ahead) plus the look-ahead ``a`` of the new state, minus the
weight carried out of the resampling. The engine holds ``carried + log G_t = l + a``.

Every policy and potential call (one per extended unfinished particle) is counted; the cumulative
counts, unfinished and unique-origin counts are recorded per stage (``smc_stats``: ``policy_calls``,
``potential_calls``, ``n_done``, ``unique_origins`` = distinct first-unit ancestors, ``invalid_scores``),
with two diversity diagnostics: ``unique_prefixes`` (distinct sequences among the N particles after the
stage's unit, :func:`~.proposals.prefix_hash_count`) and ``proposal_entropy`` (mean of ``-log q`` of the
units drawn at the stage: a Monte Carlo estimate of the proposal's mean entropy per unit, in nats; the
policy's when q = p).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.engine import Ancestry, FeynmanKac
from smcppl.core.policy import count_unique
from smcppl.core.sequence_state import Potential, SequencePolicy, SequenceState, as_sequence_state, tile_state
from smcppl.core.weights import sanitize
from smcppl.inference.sequence.options import LookAhead, lookahead_log_floor
from smcppl.inference.sequence.proposals import extend, log_ratio, prefix_hash_count
from smcppl.inference.sequence.weights import float_dtype, lookahead_adjustment, reweight, unit_scores

__all__ = ["FilterParticles", "sequence_feynman_kac", "check_invalid_scores", "raise_invalid_scores",
           "postprocess"]


class FilterParticles(NamedTuple):
    """Particles of the sequence filter (every field has a leading particle axis).

    seq: the sequences. score: unit score ``s`` of the current state (twist: ``log psi`` / ``log phi``;
    score: ``logit r``). log_p: cumulative policy log-probability. origin: index of the stage-0
    particle it descends from. lookahead: ``a`` included in the held weight. succ: drawn successor kept
    for reuse (look-ahead with ``reuse``). invalid: running count of invalid scores in the whole
    population (the same in every particle).
    """

    seq: SequenceState
    score: Any
    log_p: Any
    origin: Any
    lookahead: Any
    succ: Any = None
    invalid: Any = None


def sequence_feynman_kac(policy: SequencePolicy, potential: Potential, prompt: Any, num_particles: int,
                         max_steps: int, weights: str = "score", lookahead: Optional[LookAhead] = None,
                         score_eps: float = 1e-6, single_init: bool = True) -> FeynmanKac:
    """The sequence filter as a :class:`~smcppl.core.engine.FeynmanKac` (module docstring).

    ``policy`` is the stepping policy: the target policy, or a proposal whose ``step`` returns
    ``(state, log_p, log_q)`` (:mod:`.proposals`). ``params`` is a dict of scalars: ``t`` (units
    generated), cumulative ``policy_calls`` and ``potential_calls``, ``n_done``, ``unique_origins``,
    ``invalid_scores``, ``unique_prefixes`` and ``proposal_entropy`` (all recorded per stage).
    """
    n = num_particles
    la = lookahead
    ft = float_dtype()

    def advance(key, seq, t_new):
        """``(state, log_p, log p - log q or None, unit score, invalid scores, log q)`` (log q = log p for q = p)."""
        new, log_p, log_q = extend(policy, key, seq, t_new, max_steps, ft)
        s, invalid = unit_scores(potential.prefix(new), potential.complete(new), new.done, weights, score_eps)
        return new, log_p, log_ratio(log_p, log_q), s, invalid, (log_p if log_q is None else log_q)

    def entropy(log_q, was_done):
        """Monte Carlo estimate of the proposal's mean entropy, ``mean of -log q`` over the extended particles."""
        active = jnp.sum(~was_done)
        return jnp.where(active > 0, -jnp.sum(jnp.where(was_done, 0.0, log_q)) / jnp.maximum(active, 1), 0.0).astype(ft)

    def look(key, seq, s_cur, t):
        """``(a, stored successor, policy calls, invalid scores)``; all zero after the last unit (no
        resampling follows: the successors are not drawn, under ``vmap`` they are drawn and discarded)."""
        if la is None:
            return jnp.zeros(n, s_cur.dtype), None, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)

        def draw(_):
            k_draw, k_pick = jax.random.split(key)
            succ, lp, ratio, s_succ, inv, lq = jax.vmap(lambda kk: advance(kk, seq, t + 1))(
                jax.random.split(k_draw, la.k))
            w_succ = s_succ if ratio is None else s_succ + ratio  # successors drawn from q: weigh by p / q
            a = lookahead_adjustment(s_cur, w_succ.T, seq.done, la.lam, lookahead_log_floor(la))
            calls = (la.k * jnp.sum(~seq.done)).astype(jnp.int32)
            stored = None
            if la.reuse:
                j = jax.random.randint(k_pick, (n,), 0, la.k)
                pick = lambda x: x[j, jnp.arange(n)]  # noqa: E731
                stored = jax.tree_util.tree_map(pick, (succ, s_succ, lp, ratio, lq))
            return a, stored, calls, jnp.sum(inv).astype(jnp.int32)

        def skip(_):
            return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(draw, None))

        return jax.lax.cond(t < max_steps, draw, skip, None)  # t < max_steps: a resampling follows

    def init(key):
        k0, k1, k2 = jax.random.split(key, 3)
        seq = as_sequence_state(policy.init(k0, prompt), "policy.init")
        if single_init:
            seq = tile_state(seq, n)
        t1 = jnp.ones((), jnp.int32)
        active = jnp.sum(~seq.done).astype(jnp.int32)
        seq1, lp, ratio, s1, inv, lq = advance(k1, seq, t1)
        s1_w = s1 if ratio is None else s1 + ratio  # G0: the first unit's score times p / q
        a, stored, la_calls, inv2 = look(k2, seq1, s1, t1)
        held = sanitize(s1_w + a)
        parts = FilterParticles(seq1, s1, lp, jnp.arange(n, dtype=jnp.int32), a, stored,
                                jnp.full(n, inv + inv2, jnp.int32))
        params = {"t": t1, "policy_calls": active + la_calls, "potential_calls": active + la_calls,
                  "n_done": jnp.sum(seq1.done).astype(jnp.int32), "unique_origins": jnp.asarray(n, jnp.int32),
                  "invalid_scores": inv + inv2, "unique_prefixes": prefix_hash_count(seq1),
                  "proposal_entropy": entropy(lq, seq.done)}
        return parts, held, params

    def move(key, parts: FilterParticles, carried, params, ancestry: Ancestry):
        t_new = params["t"] + 1
        k1, k2 = jax.random.split(key)
        seq = parts.seq
        if la is not None and la.reuse:
            new_seq, s_new, lp, ratio, lq = parts.succ
            calls, inv = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)
        else:
            new_seq, lp, ratio, s_new, inv, lq = advance(k1, seq, t_new)
            calls = jnp.sum(~seq.done).astype(jnp.int32)
        l = reweight(carried, parts.lookahead, parts.score, s_new, seq.done, ancestry.resampled, weights,
                     la is not None and la.correct, ratio)
        a, stored, la_calls, inv2 = look(k2, new_seq, s_new, t_new)
        log_g = sanitize(l + a - carried)
        invalid = jnp.full(n, jnp.max(parts.invalid) + inv + inv2, jnp.int32)
        new = FilterParticles(new_seq, s_new, parts.log_p + lp, parts.origin, a, stored, invalid)
        info = {"policy_calls": calls + la_calls, "potential_calls": calls + la_calls, "invalid_scores": inv + inv2,
                "proposal_entropy": entropy(lq, seq.done)}
        return new, info, log_g

    def update(parts, carried, params, info):
        return {"t": params["t"] + 1,
                "policy_calls": params["policy_calls"] + info["policy_calls"],
                "potential_calls": params["potential_calls"] + info["potential_calls"],
                "n_done": jnp.sum(parts.seq.done).astype(jnp.int32),
                "unique_origins": count_unique(parts.origin, n),
                "invalid_scores": params["invalid_scores"] + info["invalid_scores"],
                "unique_prefixes": prefix_hash_count(parts.seq), "proposal_entropy": info["proposal_entropy"]}

    def record(params):
        return {"step": params["t"], "policy_calls": params["policy_calls"],
                "potential_calls": params["potential_calls"], "n_done": params["n_done"],
                "unique_origins": params["unique_origins"], "invalid_scores": params["invalid_scores"],
                "unique_prefixes": params["unique_prefixes"], "proposal_entropy": params["proposal_entropy"]}

    return FeynmanKac(init, move, update, None, progress=lambda p: p["t"].astype(ft) / max_steps, record=record)


# --------------------------------------------------------------------------------------------------
# invalid scores (score mode: a PRM score outside [0, 1]) are an error, raised once per run
def raise_invalid_scores(count: Any) -> None:
    """Raise ValueError if ``count`` (invalid scores of a run, or of several) is positive."""
    count = np.asarray(count)
    if np.any(count > 0):
        raise ValueError(f"potential returned {int(np.max(count))} score(s) outside [0, 1] (log psi > 0) in a run: "
                         "in weights='score' mode the potential must return log r with r in [0, 1] "
                         "(use weights='twist' for unnormalised log-potentials).")


def _check_host(count):
    raise_invalid_scores(count)
    return np.zeros(np.shape(count), np.int32)


def check_invalid_scores(parts: FilterParticles) -> jax.Array:
    """Raise (through a host callback, once per run) if any score was outside [0, 1] in score mode.
    Returns a zero that the caller must use (a pure callback is dropped if its result is unused)."""
    if parts.invalid is None:
        return jnp.zeros((), jnp.int32)
    count = jnp.max(parts.invalid)
    return jax.pure_callback(_check_host, jax.ShapeDtypeStruct((), jnp.int32), count, vmap_method="expand_dims")


def postprocess(parts: FilterParticles, check: bool = False) -> dict:
    """The per-particle draws of a run (``tokens``, ``length``, ``done``, ``score``, ``log_policy``,
    ``origin``); ``check``: raise on invalid scores (:func:`check_invalid_scores`)."""
    zero = check_invalid_scores(parts) if check else 0
    return {"tokens": parts.seq.tokens, "length": parts.seq.lengths + zero, "done": parts.seq.done.astype(jnp.int8),
            "score": parts.score, "log_policy": parts.log_p, "origin": parts.origin}
