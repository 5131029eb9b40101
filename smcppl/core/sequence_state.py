"""The interface between sequence policies (models) and the sequence samplers: the fixed-shape state of
N partial sequences and the policy/potential protocols. Here, in ``core``, so that models
(``smcppl.models.sequence_tasks``) do not import samplers (ARCHITECTURE.md, "Parts and who may import whom").

Protocol (pure JAX with fixed shapes; the host driver :func:`smcppl.run_host` accepts the same with a
``numpy.random.Generator`` in place of the key and NumPy arrays):

* ``policy.init(key, prompt) -> SequenceState``: one sequence (tokens ``[T_max]``, scalar length and
  done; the filter tiles it to N particles) or N of them;
* ``policy.step(key, state) -> (state, log_p)``: extend every sequence by one unit, ``log_p [N]`` its
  log-probability; set ``done`` when a sequence ends. Must accept any batch size and keep the state's
  shapes and dtypes. A step that draws the unit from a proposal ``q`` other than the policy ``p``
  returns ``(state, log_p, log_q)``: ``log_p`` the policy's own log-probability of the new unit,
  ``log_q`` the proposal's (a pair means q = p); the samplers weight each unit by ``p / q``
  (``smcppl.inference.sequence.proposals``);
* optionally (policies over a finite unit vocabulary, for tempered / truncated / annealed proposals):
  ``policy.unit_log_probs(state) -> [N, V]`` (``log p(v | x)``) and ``policy.append(state, units [N])
  -> state``;
* ``potential.prefix(state) -> log psi [N]``, ``potential.complete(state) -> log phi [N]`` (may be -inf).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

__all__ = ["SequenceState", "SequencePolicy", "Potential", "as_sequence_state", "tile_state"]


class SequenceState(NamedTuple):
    """Fixed-shape state of N partial sequences: ``tokens [N, T_max]`` (integer), ``lengths [N]``
    (integer), ``done [N]`` (bool) and ``aux``: any policy pytree with a leading particle axis
    (e.g. a Markov state or a KV cache), or None."""

    tokens: Any
    lengths: Any
    done: Any
    aux: Any = None


class SequencePolicy(Protocol):
    """Draws and extends sequences (module docstring)."""

    def init(self, key, prompt) -> SequenceState: ...

    def step(self, key, state: SequenceState) -> tuple: ...


class Potential(Protocol):
    """Scores partial (``prefix``) and complete (``complete``) sequences in log space (module docstring)."""

    def prefix(self, state: SequenceState): ...

    def complete(self, state: SequenceState): ...


def as_sequence_state(x: Any, what: str) -> SequenceState:
    """``x`` as a :class:`SequenceState` (any object with ``tokens``, ``lengths``, ``done`` and optionally
    ``aux`` is accepted); a TypeError naming ``what`` (the function that returned it) otherwise."""
    if isinstance(x, SequenceState):
        return x
    if all(hasattr(x, f) for f in ("tokens", "lengths", "done")):
        return SequenceState(x.tokens, x.lengths, x.done, getattr(x, "aux", None))
    raise TypeError(f"{what} must return a smcppl SequenceState(tokens, lengths, done, aux), got {type(x).__name__}.")


def tile_state(state: SequenceState, n: int) -> SequenceState:
    """One sequence (tokens ``[T_max]``, scalar length and done) as ``n`` identical ones."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(jnp.asarray(x)[None], (n,) + jnp.shape(x)), state)
