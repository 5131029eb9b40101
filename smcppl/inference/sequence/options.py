"""The sequence filter's settings and input checks: look-ahead options, the resampling policy, the
front end's keyword checks and the fixed-shape contract of policies and potentials
(:mod:`smcppl.core.sequence_state`), checked on shapes before anything runs.

The contract checks work on anything with ``shape`` and ``dtype`` (abstract values from
``jax.eval_shape`` for JAX policies, NumPy arrays for the host driver :func:`smcppl.run_host`), so both
drivers reject a bad policy with the same message.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.checks import finite_float, positive_int
from smcppl.core.policy import Resampling, as_resampling
from smcppl.core.sequence_state import SequenceState, as_sequence_state, tile_state
from smcppl.inference.sequence.selection import SELECTIONS
from smcppl.inference.sequence.weights import WEIGHT_MODES

__all__ = ["LookAhead", "SEQUENCE_RESAMPLING", "resolve_resampling", "resolve_lookahead", "lookahead_log_floor",
           "check_filter_options", "check_init_state", "check_step_output", "check_potential_output",
           "check_shapes"]


class LookAhead(NamedTuple):
    """Look-ahead modulation (:mod:`smcppl.inference.sequence.weights`): ``k`` successors per particle,
    mixing weight ``lam`` in [0, 1], ``reuse`` a drawn successor as the next state, ``correct``:
    auxiliary-particle-filter correction.

    floor: with ``correct=True`` and ``reuse=False`` the look-ahead factor is floored,
    ``a_i >= log(floor)``: the APF correction is exact only if a particle that can still reach the target
    keeps a positive resampling weight, and ``k`` unlucky successors (all ``-inf``) would otherwise kill it.
    """

    k: int = 1
    lam: float = 1.0
    reuse: bool = False
    correct: bool = False
    floor: float = 0.1


SEQUENCE_RESAMPLING = Resampling(scheme="multinomial", when="always")  # a particle filter's default: every step


def resolve_resampling(resampling: Any, entropic: Any) -> Resampling:
    """The filter's policy: :func:`smcppl.core.policy.as_resampling` with the default ``SEQUENCE_RESAMPLING``
    (a scheme name resamples at every step)."""
    return as_resampling(resampling, entropic, default=SEQUENCE_RESAMPLING)


def resolve_lookahead(lookahead: Any) -> Optional[LookAhead]:
    """None/False: off; True: ``LookAhead()``; an int ``k``; or a :class:`LookAhead` (validated)."""
    if lookahead is None or lookahead is False:
        return None
    if lookahead is True:
        lookahead = LookAhead()
    elif isinstance(lookahead, (int, np.integer)) and not isinstance(lookahead, bool):
        lookahead = LookAhead(k=int(lookahead))
    if not isinstance(lookahead, LookAhead):
        raise TypeError(f"lookahead must be None, True, an int k or a LookAhead, got {lookahead!r}.")
    k = positive_int(lookahead.k, "LookAhead.k")
    lam = finite_float(lookahead.lam, "LookAhead.lam")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"LookAhead.lam must be in [0, 1], got {lookahead.lam!r}.")
    floor = finite_float(lookahead.floor, "LookAhead.floor")
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"LookAhead.floor must be in (0, 1], got {lookahead.floor!r}.")
    return lookahead._replace(k=k, lam=lam, floor=floor)


def lookahead_log_floor(lookahead: Optional[LookAhead]) -> Optional[float]:
    """``log(floor)`` when the floor applies (APF correction without reuse), else None."""
    if lookahead is None or not lookahead.correct or lookahead.reuse:
        return None
    return float(np.log(lookahead.floor))


def check_filter_options(policy: Any, potential: Any, weights: str, selection: str, answer_fn: Optional[Callable],
                         score_eps: Any, max_steps: Any) -> tuple[float, Optional[int]]:
    """Check the front end's keywords; returns ``(score_eps, max_steps)`` as float and int (or None)."""
    for name in ("init", "step"):
        if not callable(getattr(policy, name, None)):
            raise TypeError(f"policy must have a method {name}(...) (SequencePolicy protocol).")
    for name in ("prefix", "complete"):
        if not callable(getattr(potential, name, None)):
            raise TypeError(f"potential must have a method {name}(state) (Potential protocol).")
    if weights not in WEIGHT_MODES:
        raise ValueError(f"weights must be one of {WEIGHT_MODES}, got {weights!r}.")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}.")
    if selection == "vote" and answer_fn is None:
        raise ValueError("selection='vote' needs answer_fn(state) -> [N] integer answers.")
    score_eps = finite_float(score_eps, "score_eps")
    if not 0.0 < score_eps < 0.5:
        raise ValueError(f"score_eps must be in (0, 0.5), got {score_eps}.")
    return score_eps, None if max_steps is None else positive_int(max_steps, "max_steps")


def _describe(tree, dtypes=True):
    return jax.tree_util.tree_map(lambda s: f"{tuple(s.shape)} {s.dtype}" if dtypes else f"{tuple(s.shape)}", tree)


def check_init_state(st: SequenceState, num_particles: int) -> tuple[int, bool]:
    """Check what ``policy.init`` returned (shapes and dtypes only); returns ``(T_max, single)``, ``single``:
    one sequence to be tiled to N."""
    n, tok = num_particles, st.tokens
    if tok.ndim not in (1, 2):
        raise ValueError(f"policy.init returned tokens of shape {tuple(tok.shape)}; expected [T_max] for one "
                         f"sequence or [N, T_max] = [{n}, T_max].")
    single = tok.ndim == 1
    if not single and tok.shape[0] != n:
        raise ValueError(f"policy.init returned tokens of shape {tuple(tok.shape)}: leading axis {tok.shape[0]} is "
                         f"not the number of particles {n} (return one sequence to have it tiled).")
    lead = () if single else (n,)
    for name in ("lengths", "done"):
        shp = tuple(getattr(st, name).shape)
        if shp != lead:
            raise ValueError(f"policy.init returned {name} of shape {shp}, expected {lead}.")
    if not jnp.issubdtype(tok.dtype, jnp.integer) or not jnp.issubdtype(st.lengths.dtype, jnp.integer):
        raise TypeError(f"policy.init: tokens and lengths must be integer arrays, got {tok.dtype} and "
                        f"{st.lengths.dtype}.")
    if st.done.dtype != jnp.bool_:
        raise TypeError(f"policy.init: done must be a bool array, got {st.done.dtype}.")
    return tok.shape[-1], single


def check_step_output(out: Any, expected: SequenceState, num_particles: int,
                      dtypes: bool = True) -> tuple[SequenceState, Any, Any]:
    """Check what ``policy.step`` returned against the state it was given (``expected``: same shapes and,
    if ``dtypes``, dtypes; ``log_p [N]`` and, from a proposal, ``log_q [N]``); returns
    ``(state, log_p, log_q)`` with ``log_q`` None for a pair (q = p)."""
    if not (isinstance(out, tuple) and len(out) in (2, 3)):
        raise TypeError("policy.step must return a pair (state, log_p) or, when it draws from a proposal q, a "
                        "triple (state, log_p, log_q).")
    new, log_p = as_sequence_state(out[0], "policy.step"), out[1]
    log_q = out[2] if len(out) == 3 else None
    for name in ("tokens", "lengths", "done"):
        a, b = getattr(new, name), getattr(expected, name)
        if tuple(a.shape) != tuple(b.shape) or (dtypes and a.dtype != b.dtype):
            raise ValueError(f"policy.step returned {name} of shape {tuple(a.shape)} {a.dtype}, expected "
                             f"{tuple(b.shape)} {b.dtype} (the state's shapes and dtypes must not change).")
    got_aux, want_aux = _describe(new.aux, dtypes), _describe(expected.aux, dtypes)
    if jax.tree_util.tree_structure(got_aux) != jax.tree_util.tree_structure(want_aux) or got_aux != want_aux:
        raise ValueError(f"policy.step returned aux {got_aux}, expected {want_aux} (same structure, shapes"
                         f"{', dtypes' if dtypes else ''}).")
    for name, value in (("log_p", log_p), ("log_q", log_q)):
        if value is not None and tuple(jnp.shape(value)) != (num_particles,):
            raise ValueError(f"policy.step returned {name} of shape {tuple(jnp.shape(value))}, expected "
                             f"({num_particles},).")
    return new, log_p, log_q


def check_potential_output(name: str, value: Any, num_particles: int) -> Any:
    """Check that ``potential.<name>`` returned ``[N]`` values; returns them."""
    if tuple(jnp.shape(value)) != (num_particles,):
        raise ValueError(f"potential.{name} returned shape {tuple(jnp.shape(value))}, expected ({num_particles},).")
    return value


def check_shapes(policy: Any, potential: Any, prompt: Any, num_particles: int) -> tuple[int, bool]:
    """Trace (no computation) ``policy.init``/``policy.step`` and the potentials, and check the fixed-shape
    contract; returns ``(T_max, single)``. Raises ValueError/TypeError naming the offending function and field."""
    n = num_particles
    key = jax.random.key(0)

    def init(k):
        st = as_sequence_state(policy.init(k, prompt), "policy.init")
        return st, (tile_state(st, n) if st.tokens.ndim == 1 else st)

    try:
        st, tiled = jax.eval_shape(init, key)
    except (TypeError, ValueError) as e:
        if "policy.init" in str(e):
            raise
        raise type(e)(f"policy.init(key, prompt) failed: {e}") from e
    t_max, single = check_init_state(st, n)
    try:
        out = jax.eval_shape(lambda k, s: policy.step(k, s), key, tiled)
    except (TypeError, ValueError) as e:
        raise type(e)(f"policy.step(key, state) failed on a state with tokens {tuple(tiled.tokens.shape)}: {e}") from e
    check_step_output(out, tiled, n)
    for name in ("prefix", "complete"):
        fn = getattr(potential, name, None)
        if not callable(fn):
            raise TypeError(f"potential has no method {name}(state).")
        try:
            v = jax.eval_shape(fn, tiled)
        except (TypeError, ValueError) as e:
            raise type(e)(f"potential.{name}(state) failed: {e}") from e
        check_potential_output(name, v, n)
    return t_max, single
