"""The interface between sequence policies (models) and the sequence samplers: the fixed-shape state of
N partial sequences and the policy/potential protocols. Here, in ``core``, so that models
(``smcppl.models.sequence_tasks``) do not import samplers (ARCHITECTURE.md, "Parts and who may import whom").
"""
from __future__ import annotations

from typing import Any, NamedTuple, Protocol

__all__ = ["SequenceState", "SequencePolicy", "Potential"]


class SequenceState(NamedTuple):
    """Fixed-shape state of N partial sequences: ``tokens [N, T_max]`` (integer), ``lengths [N]``
    (integer), ``done [N]`` (bool) and ``aux``: any policy pytree with a leading particle axis
    (e.g. a Markov state or a KV cache), or None."""

    tokens: Any
    lengths: Any
    done: Any
    aux: Any = None


class SequencePolicy(Protocol):
    def init(self, key, prompt) -> SequenceState: ...

    def step(self, key, state: SequenceState) -> tuple: ...


class Potential(Protocol):
    def prefix(self, state: SequenceState): ...

    def complete(self, state: SequenceState): ...
