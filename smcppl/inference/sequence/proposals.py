"""Proposals distinct from the target policy: tempered and truncated (top-k / top-p) sampling, Exploratory
Annealed Decoding (EAD), and the one stepping rule that every sequence sampler here shares.

A step may return ``(state, log_p, log_q)`` (:mod:`smcppl.core.sequence_state`): the new unit ``v`` was
drawn from a proposal ``q(v | x)`` and ``log_p = log p(v | x)`` is the target policy's own log-probability
of it. Importance sampling then weights each unit by ``p(v | x) / q(v | x)``; the filter adds
``log p - log q`` to its incremental log-weight (:mod:`.weights`), so its target (``p(x) phi(x) / Z``) and
its ``log Z`` estimate are those of the policy whatever the proposal, provided ``q(v | x) > 0`` wherever
``p(v | x) phi > 0`` (a truncation must keep the target's support).

:class:`TemperedProposal` wraps a policy that exposes its next-unit distribution over a finite unit
vocabulary (two optional protocol methods, :class:`UnitPolicy`) and draws from

    ``q(v | x) ∝ p(v | x)^(1/T_t) 1[v in K(x)]``,

``T_t`` the temperature at step ``t`` (a constant, a table indexed by ``t`` or a function of ``t``),
``K(x)`` the units kept by top-k (the ``k`` most probable under ``p^(1/T)``) and then top-p (the smallest
set of most probable units whose tempered, top-k renormalised mass reaches ``p``; the most probable unit
is always kept); ties at a threshold are all kept. ``log q`` is exact: the log-softmax of the masked
tempered logits (:func:`proposal_log_probs`).

EAD ("explore at the beginning, exploit at the end") anneals ``T_t`` from high to low along the sequence
(:func:`ead_schedule`); :func:`ead_rollouts` draws sequences from it with their ``log p - log q``, so a
trainer can importance-correct (self-normalised weights ``∝ exp(log p - log q)`` reproduce ``p``) or clip.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.checks import positive_int
from smcppl.core.sequence_state import SequenceState, as_sequence_state, tile_state
from smcppl.core.weights import sanitize

__all__ = ["UnitPolicy", "TemperedProposal", "proposal_log_probs", "ead_schedule", "EAD_SCHEDULES", "ead_rollouts",
           "EADRollouts", "extend", "log_ratio", "resolve_proposal", "prefix_hash_count"]

EAD_SCHEDULES = ("constant", "linear", "cosine", "exponential")


class UnitPolicy(Protocol):
    """Optional protocol methods of a policy over a finite unit vocabulary of size ``V``:
    ``unit_log_probs(state) -> [N, V]`` (``log p(v | x)``, ``-inf`` for impossible units) and
    ``append(state, units [N]) -> state`` (the state extended by the given units, ``done`` set when a
    sequence ends). Implemented by the synthetic tasks (:mod:`smcppl.models.sequence_tasks`)."""

    def unit_log_probs(self, state: SequenceState) -> jax.Array: ...

    def append(self, state: SequenceState, units: jax.Array) -> SequenceState: ...


def proposal_log_probs(log_p: jax.Array, temperature: Any = 1.0, top_k: Any = None, top_p: Any = None) -> jax.Array:
    """Exact ``log q [..., V]`` of the tempered, truncated proposal (module docstring) from ``log p [..., V]``.

    ``temperature``: scalar or ``[...]`` (one per row); ``top_k``: None or an integer (may be traced);
    ``top_p``: None or a number in (0, 1] (may be traced). Tempered logits ``log p / T``; top-k keeps
    ``logit >= `` the k-th largest; top-p keeps ``logit >=`` the smallest logit among the sorted units whose
    preceding mass is ``< top_p``; ``log q = log_softmax`` of the kept logits."""
    log_p = jnp.asarray(log_p)
    temp = jnp.asarray(temperature, log_p.dtype)
    logits = log_p / temp[..., None]
    neg_inf = jnp.array(-jnp.inf, logits.dtype)
    if top_k is not None:
        desc = -jnp.sort(-logits, axis=-1)
        k = jnp.clip(jnp.asarray(top_k), 1, logits.shape[-1]) - 1
        kth = jnp.take(desc, k, axis=-1)[..., None]
        logits = jnp.where(logits >= kth, logits, neg_inf)
    if top_p is not None:
        desc = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs
        keep = before < jnp.asarray(top_p, logits.dtype)
        thr = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= thr, logits, neg_inf)
    return jax.nn.log_softmax(logits, axis=-1)


def _concrete(x: Any) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


class TemperedProposal:
    """A policy wrapper whose ``step(key, state) -> (state, log_p, log_q)`` draws each unit from the tempered,
    truncated proposal (module docstring) and reports the wrapped policy's ``log_p`` and the exact ``log q``.

    policy: a :class:`UnitPolicy`. temperature: a positive number, a table ``[K]`` (``T_t`` at step ``t``;
    the last entry beyond it), e.g. from :func:`ead_schedule`, or a function ``t -> T_t`` of an integer
    array (JAX operations). The step index is ``t = state.lengths - offset`` (units generated since the
    prompt; ``offset``: the prompt's length in units, an int or ``[N]``). top_k, top_p: truncation (None:
    off). Tables, ``top_k`` and ``top_p`` may be traced arrays (one compiled program for several settings).
    """

    def __init__(self, policy: Any, temperature: Union[float, Any, Callable] = 1.0, top_k: Any = None,
                 top_p: Any = None, offset: Any = 0):
        for name in ("unit_log_probs", "append"):
            if not callable(getattr(policy, name, None)):
                raise TypeError(f"TemperedProposal needs a policy with a method {name}(...) (the UnitPolicy protocol "
                                f"of smcppl.inference.sequence.proposals); {type(policy).__name__} has none.")
        if not callable(temperature) and _concrete(temperature):
            t = np.asarray(temperature, float)
            if t.ndim > 1 or t.size == 0 or not np.all(np.isfinite(t) & (t > 0)):
                raise ValueError(f"TemperedProposal: temperature must be a positive number, a 1-d table of positive "
                                 f"numbers or a function t -> temperature, got {temperature!r}.")
        if top_k is not None and _concrete(top_k):
            top_k = positive_int(top_k, "TemperedProposal.top_k")
        if top_p is not None and _concrete(top_p):
            if not 0.0 < float(top_p) <= 1.0:
                raise ValueError(f"TemperedProposal.top_p must be in (0, 1], got {top_p!r}.")
        self.policy, self.temperature, self.top_k, self.top_p, self.offset = policy, temperature, top_k, top_p, offset

    def temperature_at(self, t: jax.Array) -> jax.Array:
        """``T_t`` for integer step indices ``t`` (any shape)."""
        if callable(self.temperature):
            return jnp.broadcast_to(jnp.asarray(self.temperature(t)), jnp.shape(t))
        table = jnp.asarray(self.temperature)
        if table.ndim == 0:
            return jnp.broadcast_to(table, jnp.shape(t))
        return table[jnp.clip(t, 0, table.shape[0] - 1)]

    def log_q(self, state: SequenceState) -> tuple[jax.Array, jax.Array]:
        """``(log p [N, V], log q [N, V])`` at ``state``."""
        log_p = jnp.asarray(self.policy.unit_log_probs(state))
        temp = self.temperature_at(jnp.asarray(state.lengths) - self.offset).astype(log_p.dtype)
        return log_p, proposal_log_probs(log_p, temp, self.top_k, self.top_p)

    def init(self, key: jax.Array, prompt: Any) -> SequenceState:
        return self.policy.init(key, prompt)

    def step(self, key: jax.Array, state: SequenceState) -> tuple[SequenceState, jax.Array, jax.Array]:
        log_p, log_q = self.log_q(state)
        v = jax.random.categorical(key, log_q, axis=-1).astype(jnp.int32)
        pick = lambda a: jnp.take_along_axis(a, v[:, None], axis=-1)[:, 0]  # noqa: E731
        return self.policy.append(state, v), pick(log_p), pick(log_q)


def ead_schedule(kind: Union[str, Callable[[int], float]], start: float = 2.0, end: float = 1.0,
                 num_steps: int = 16) -> np.ndarray:
    """Temperatures ``T_t``, ``t = 0..num_steps-1``, annealed from ``start`` to ``end`` (EAD), as a table for
    :class:`TemperedProposal`. With ``u = t / (num_steps - 1)``: ``"constant"``: ``start``; ``"linear"``:
    ``start + (end - start) u``; ``"cosine"``: ``end + (start - end) (1 + cos(pi u)) / 2``;
    ``"exponential"``: ``start (end / start)^u`` (geometric decay to ``end``: 1, or a floor). A function
    ``kind(t) -> T_t`` is tabulated as it is."""
    n = positive_int(num_steps, "ead_schedule num_steps")
    t = np.arange(n, dtype=float)
    if callable(kind):
        temps = np.array([float(kind(int(i))) for i in range(n)])
    else:
        if kind not in EAD_SCHEDULES:
            raise ValueError(f"ead_schedule: kind must be one of {EAD_SCHEDULES} or a function t -> temperature, "
                             f"got {kind!r}.")
        start, end = float(start), float(end)
        if not (np.isfinite(start) and np.isfinite(end) and start > 0 and end > 0):
            raise ValueError(f"ead_schedule: start and end must be positive temperatures, got {start}, {end}.")
        u = t / max(n - 1, 1)
        temps = {"constant": np.full(n, start), "linear": start + (end - start) * u,
                 "cosine": end + (start - end) * 0.5 * (1.0 + np.cos(np.pi * u)),
                 "exponential": start * (end / start) ** u}[kind]
    if not np.all(np.isfinite(temps) & (temps > 0)):
        raise ValueError(f"ead_schedule: temperatures must be positive and finite, got {temps}.")
    return temps


def resolve_proposal(policy: Any, proposal: Any) -> Any:
    """The stepping policy of a filter: ``policy`` itself (``proposal=None``), a :class:`TemperedProposal` of
    it, or ``TemperedProposal(policy, proposal)`` for a temperature, an EAD table or a function ``t -> T_t``."""
    if proposal is None:
        return policy
    if isinstance(proposal, TemperedProposal):
        if proposal.policy is not policy:
            raise ValueError("proposal is a TemperedProposal of another policy: its log_p must be the filter's own "
                             "policy's; build it as TemperedProposal(policy, ...) with the filter's policy.")
        return proposal
    return TemperedProposal(policy, proposal)


# ------------------------------------------------------------------------------------------ the one stepping rule
def extend(policy: Any, key: jax.Array, seq: SequenceState, t_new: Any, max_steps: int,
           dtype: Any) -> tuple[SequenceState, jax.Array, Optional[jax.Array]]:
    """One unit for every unfinished sequence: ``(state, log_p, log_q)``, ``log_q`` None when ``policy.step``
    returned a pair (q = p). A sequence is done when the policy says so, at ``T_max`` tokens or after
    ``max_steps`` units (``t_new``: units generated after this one); finished sequences are absorbing
    (state unchanged, ``log_p = log_q = 0``)."""
    out = policy.step(key, seq)
    new = as_sequence_state(out[0], "policy.step")
    done = seq.done
    new = new._replace(done=new.done | (new.lengths >= seq.tokens.shape[-1]) | (t_new >= max_steps))
    new = jax.tree_util.tree_map(
        lambda o, x: jnp.where(done.reshape(done.shape + (1,) * (jnp.ndim(x) - done.ndim)), o, x), seq, new)
    clean = lambda x: jnp.where(done, 0.0, sanitize(jnp.asarray(x, dtype)))  # noqa: E731  NaN -> -inf
    return new, clean(out[1]), (clean(out[2]) if len(out) == 3 else None)


def log_ratio(log_p: jax.Array, log_q: Optional[jax.Array]) -> Optional[jax.Array]:
    """``log p - log q`` (0 where they are equal, ``-inf`` included); None when ``log_q`` is None."""
    if log_q is None:
        return None
    return jnp.where(log_p == log_q, 0.0, log_p - log_q)


def prefix_hash_count(seq: SequenceState) -> jax.Array:
    """Number of distinct sequences (tokens within ``lengths``) among the N rows of ``seq``, by a 64-bit
    hash (two 32-bit sums of mixed ``(token, position)`` pairs): two different prefixes collide with
    probability about ``2^-64``. O(N T + N log N), jit-friendly."""
    tok = jnp.asarray(seq.tokens).astype(jnp.uint32)
    pos = jnp.arange(tok.shape[-1], dtype=jnp.uint32)
    inside = jnp.arange(tok.shape[-1])[None, :] < jnp.asarray(seq.lengths)[:, None]

    def mix(h):  # murmur3's 32-bit finaliser
        h = h ^ (h >> 16)
        h = h * jnp.uint32(0x85EBCA6B)
        h = h ^ (h >> 13)
        h = h * jnp.uint32(0xC2B2AE35)
        return h ^ (h >> 16)

    def row_hash(c1, c2):
        e = mix(tok * jnp.uint32(c1) + mix(pos[None, :] + jnp.uint32(c2)))
        return jnp.sum(jnp.where(inside, e, jnp.uint32(0)), axis=-1, dtype=jnp.uint32) ^ mix(
            jnp.asarray(seq.lengths).astype(jnp.uint32) + jnp.uint32(c2))

    h1, h2 = row_hash(0x9E3779B1, 0x7FEB352D), row_hash(0x27D4EB2F, 0x165667B1)
    # one two-key sort of the pairs (no permutation and gathers as with lexsort: ~20% cheaper per stage)
    h1, h2 = jax.lax.sort((h1, h2), num_keys=2)
    new = (h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1])
    return (1 + jnp.sum(new)).astype(jnp.int32)


# ------------------------------------------------------------------------------------------ EAD rollouts
class EADRollouts(NamedTuple):
    """Sequences drawn from a proposal: ``state`` (N sequences), ``log_p`` / ``log_q`` ``[N]`` (the policy's and
    the proposal's log-probabilities of each whole sequence), ``log_ratio = log_p - log_q``: the
    importance log-weight of each sequence for the policy ``p``."""

    state: SequenceState
    log_p: jax.Array
    log_q: jax.Array
    log_ratio: jax.Array


def ead_rollouts(key: jax.Array, policy: Any, prompt: Any, num_sequences: int, schedule: Any, max_steps: int,
                 top_k: Any = None, top_p: Any = None) -> EADRollouts:
    """``num_sequences`` independent sequences of at most ``max_steps`` units drawn by EAD: unit ``t`` (from 0)
    from ``q_t ∝ p^(1/T_t)`` (truncated by ``top_k``/``top_p``), ``schedule`` the temperatures
    (:func:`ead_schedule`, a number or a function ``t -> T_t``; :class:`TemperedProposal`). Returns the
    sequences with ``log p(x) - log q(x) = sum_t log p(v_t | x_<t) - log q_t(v_t | x_<t)``: the
    self-normalised weights ``softmax(log_ratio)`` make the draws a sample of ``p``. Pure, jit/vmap-able."""
    n = positive_int(num_sequences, "num_sequences")
    max_steps = positive_int(max_steps, "max_steps")
    k0, k1 = jax.random.split(key)
    seq = as_sequence_state(policy.init(k0, prompt), "policy.init")
    if jnp.ndim(seq.tokens) == 1:
        seq = tile_state(seq, n)
    prop = TemperedProposal(policy, schedule, top_k, top_p, offset=seq.lengths)
    ft = jnp.result_type(float)

    def body(carry, xs):
        s, lp, lq = carry
        k, t = xs
        s, dp, dq = extend(prop, k, s, t, max_steps, ft)
        return (s, lp + dp, lq + dq), None

    zero = jnp.zeros(n, ft)
    (seq, lp, lq), _ = jax.lax.scan(body, (seq, zero, zero),
                                    (jax.random.split(k1, max_steps), jnp.arange(1, max_steps + 1)))
    return EADRollouts(seq, lp, lq, lp - lq)
