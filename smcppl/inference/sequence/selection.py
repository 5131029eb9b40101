"""The final answer of a sequence filter run: one particle chosen from the final weighted population.

``argmax``: ``argmax_i l_i`` (untempered final weights); ``sample``: ``i ~ softmax(l)``; ``vote``:
weighted majority over extracted answers, ``argmax_i sum_j W_j 1[answer_j = answer_i]`` (ties go to the
heaviest particle).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from smcppl.core.weights import log_normalize, sanitize

__all__ = ["SELECTIONS", "select_index", "select_final"]

SELECTIONS = ("argmax", "sample", "vote")


def select_index(key: Optional[jax.Array], log_weights: jax.Array, method: str = "argmax",
                 answers: Optional[jax.Array] = None) -> jax.Array:
    """Index of the final answer among N particles (module docstring); ``key`` is used by ``sample`` only,
    ``answers [N]`` by ``vote`` only."""
    lw = sanitize(log_weights)
    if method == "argmax":
        return jnp.argmax(lw)
    if method == "sample":
        return jax.random.categorical(key, jnp.where(jnp.all(~jnp.isfinite(lw)), 0.0, lw))
    if method == "vote":
        if answers is None:
            raise ValueError("select: method='vote' needs an answer extractor (answer_fn).")
        w = jnp.exp(log_normalize(lw)[0])
        same = answers[:, None] == answers[None, :]
        total = jnp.sum(jnp.where(same, w[None, :], 0.0), axis=1)
        return jnp.argmax(total + 1e-6 * w)
    raise ValueError(f"Unknown selection {method!r}; choose one of {SELECTIONS}.")


def select_final(key: Optional[jax.Array], parts: Any, log_weights: jax.Array, method: str = "argmax",
                 answer_fn: Optional[Callable] = None) -> dict:
    """Selected particle of one run (``parts``: the filter's final particles):
    ``{"index", "tokens", "length", "score", "log_weight"[, "answer"]}``."""
    answers = None if answer_fn is None else jnp.asarray(answer_fn(parts.seq))
    i = select_index(key, log_weights, method, answers)
    out = {"index": i, "tokens": parts.seq.tokens[i], "length": parts.seq.lengths[i], "score": parts.score[i],
           "log_weight": log_normalize(sanitize(log_weights))[0][i]}
    if answers is not None:
        out["answer"] = answers[i]
    return out
