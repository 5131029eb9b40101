"""Particle filtering over sequence policies: PF, entropic PF (ePF) and look-ahead modulation (LaM).

A **sequence policy** extends partial sequences by one unit (a token, or a step ending at a boundary
token); a **potential** (process reward model, PRM) scores partial and complete sequences. Protocol,
pure JAX with fixed shapes (:class:`SequenceState`: tokens ``[N, T_max]``, ``lengths [N]``,
``done [N]`` and a policy-specific ``aux`` pytree with a leading particle axis):

* ``policy.init(key, prompt) -> SequenceState``: one sequence (tokens ``[T_max]``, scalar length and
  done; the filter tiles it to N particles) or N of them;
* ``policy.step(key, state) -> (state, log_p)``: extend every sequence by one unit, ``log_p [N]`` its
  log-probability; set ``done`` when a sequence ends. Must accept any batch size;
* ``potential.prefix(state) -> log psi [N]``, ``potential.complete(state) -> log phi [N]`` (may be -inf).

The filter is a Feynman–Kac model of the one engine (:mod:`smcppl.core.engine`) and runs through
:class:`~smcppl.SMC`. ``M0`` = the first unit from the prompt; each later step resamples, extends the
unfinished particles by one unit and reweights. Unit scores ``s_t`` of the current state are

* ``weights="twist"`` (LLaMPPL / twisted SMC): ``s_t = log psi(x_{1:t})``, or ``log phi(x)`` once the
  sequence is complete; the log-weight increment is ``s_t - s_{t-1}``, so the product telescopes to
  ``phi(x)``: the target is ``p(x) phi(x) / Z`` and ``log Z_hat`` estimates ``log E_p[phi(x)]``.
* ``weights="score"`` (PF of Puri et al. 2025): the PRM score ``r = exp(log psi) in [0, 1]`` becomes
  ``s_t = logit(clip(r, eps, 1 - eps))`` and *multiplies* the weight, ``l_t = r_t + s_t`` with ``r_t``
  the log-weight carried out of the resampling step: ``s_t`` alone after a resampling (resampling every
  step, the default, makes each step's weight the current score), ``l_{t-1} + s_t`` when an
  ESS-triggered policy skipped it (``w_t = w_{t-1} * odds(r_t)``).

Finished particles are absorbing: no further moves; twist increment 0; in score mode a finished
particle keeps its score ``s``, which multiplies its weight at each later step as it would if the
population were resampled at that step.
At the last step every unfinished particle is scored as complete (the horizon truncates).

**ePF** is the core's entropic resampling (:class:`~smcppl.Entropic`: ``softmax(l / tau)`` when
``ESS/N < ess_threshold`` in the first ``early_phase`` of the run), faithful (no correction) by default;
``Entropic(correct=True)`` carries the residual ``(1 - 1/tau) l`` and keeps the system properly weighted.

**LaM** (:class:`LookAhead`): before each resampling, draw ``k`` successors ``x'_{ij}`` of every
unfinished particle and resample with ``l~_i = l_i + a_i``, ``a_i = lam (log (1/k) sum_j exp(s(x'_{ij}))
- s(x_i))``, i.e. ``(1 - lam) l_i + lam (logsumexp_j l(x'_{ij}) - log k)`` with ``l(x') = l_i + s(x') - s(x_i)``.
``reuse=True`` takes one of the drawn successors (uniformly) as the next state (no second policy call);
``correct=True`` divides ``exp(a_i)`` back out at the next step (auxiliary particle filter), which keeps
the twisted target exact. Without resampling the look-ahead is always divided out again.

Every policy and potential call (one per extended unfinished particle) is counted; the cumulative
counts, unfinished and unique-origin counts are recorded per stage (``smc_stats``: ``policy_calls``,
``potential_calls``, ``n_done``, ``unique_origins`` = distinct first-unit ancestors, ``invalid_scores``).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.engine import FeynmanKac, SMCOutput, run_fixed, validate_num_particles
from smcppl.core.policy import Resampling, as_resampling, count_unique, resample_decision
from smcppl.core.weights import log_normalize, sanitize
from smcppl.core.plan import Plan
from smcppl.core.sequence_state import Potential, SequencePolicy, SequenceState

__all__ = ["SequenceState", "SequencePolicy", "Potential", "LookAhead", "FilterParticles", "ParticleFilter",
           "WEIGHT_MODES", "SELECTIONS", "unit_scores", "reweight", "lookahead_adjustment", "lookahead_log_floor", "select_index",
           "sequence_feynman_kac", "particle_filter", "select_final", "check_shapes", "check_invalid_scores", "resolve_resampling", "resolve_lookahead"]

WEIGHT_MODES = ("score", "twist")
SELECTIONS = ("argmax", "sample", "vote")
_SCORE_TOL = 1e-6  # log r may exceed 0 by this much (rounding) before a score counts as > 1


class LookAhead(NamedTuple):
    """Look-ahead modulation: ``k`` successors per particle, mixing weight ``lam`` in [0, 1], ``reuse``
    a drawn successor as the next state, ``correct``: auxiliary-particle-filter correction.

    floor: with ``correct=True`` and ``reuse=False`` the look-ahead factor is floored,
    ``a_i >= log(floor)``: the APF correction is exact only if a particle that can still reach the target
    keeps a positive resampling weight, and ``k`` unlucky successors (all ``-inf``) would otherwise kill it.
    """

    k: int = 1
    lam: float = 1.0
    reuse: bool = False
    correct: bool = False
    floor: float = 0.1


class FilterParticles(NamedTuple):
    """Particles of the sequence filter (every field has a leading particle axis).

    seq: the sequences. score: unit score ``s`` of the current state (twist: ``log psi`` / ``log phi``;
    score: ``logit r``). log_p: cumulative policy log-probability. origin: index of the stage-0
    particle it descends from. lookahead: ``a`` included in the held weight. held/slot/log_g:
    bookkeeping (held log-weight, position, engine increment). succ: drawn successor kept for reuse.
    """

    seq: SequenceState
    score: Any
    log_p: Any
    origin: Any
    lookahead: Any
    held: Any
    slot: Any
    log_g: Any
    succ: Any = None
    invalid: Any = None  # running count of invalid scores in the whole population (same in every particle)


# --------------------------------------------------------------------------------------------------
# weight arithmetic (pure, shared by the jitted filter and the host runner)
def _float_dtype():
    """The default float dtype (float64 under ``jax_enable_x64``): the dtype of the filter's weights."""
    return jnp.result_type(float)


def unit_scores(log_psi, log_phi, complete, weights: str = "twist", score_eps: float = 1e-6):
    """Unit scores ``s`` (in the default float dtype) and the number of invalid scores.

    twist: ``s = log phi`` where ``complete`` else ``log psi`` (NaN -> -inf). score: ``r = exp(.)``
    must lie in [0, 1]; ``s = logit(clip(r, eps, 1 - eps))``; NaN -> -inf; ``r > 1`` is invalid
    (counted, and the particle gets ``-inf``).
    """
    ft = _float_dtype()
    raw = jnp.where(complete, jnp.asarray(log_phi, ft), jnp.asarray(log_psi, ft))
    if weights == "twist":
        return sanitize(raw), jnp.zeros((), jnp.int32)
    bad = raw > _SCORE_TOL
    r = jnp.clip(jnp.exp(jnp.minimum(raw, 0.0)), score_eps, 1.0 - score_eps)
    s = jnp.log(r) - jnp.log1p(-r)
    s = jnp.where(jnp.isnan(raw) | bad, -jnp.inf, s)
    return s, jnp.sum(bad).astype(jnp.int32)


def reweight(carried, lookahead, s_old, s_new, was_done, resampled, weights: str = "twist",
             correct: bool = False):
    """Log-weights after one unit, from the log-weights ``carried`` out of the resampling step
    (the held weights if it did not resample, 0 or the entropic residual if it did).

    ``resampled`` (bool scalar): whether that step resampled, as decided by the resampling policy. The
    look-ahead ``a`` of the ancestor (part of its held weight) is removed, ``carried - a``, unless the
    particles were resampled without the APF ``correct``\\ion (then ``a`` has been used up by the
    resampling). twist: ``l = carried - a + (s_new - s_old)`` (increment 0 for particles finished before
    the step). score: ``l = carried - a + s_new`` (multiplicative: ``s_new`` after a resampling that
    carries 0, ``l_prev + s_new`` without one).
    """
    remove = jnp.logical_or(~jnp.asarray(resampled), bool(correct))
    a = jnp.where(remove, lookahead, 0.0)
    if weights == "twist":
        l = carried - a + jnp.where(was_done, 0.0, s_new - s_old)
    else:
        l = carried - a + s_new
    return sanitize(l)


def lookahead_adjustment(s_cur, s_succ, done, lam, log_floor=None):
    """``a_i = lam * (logsumexp_j s_succ[i, j] - log k - s_cur[i])`` for successor scores ``s_succ [N, k]``;
    0 for finished or dead particles; ``max(a_i, log_floor)`` if ``log_floor`` is given."""
    k = s_succ.shape[-1]
    s_succ = sanitize(s_succ)
    lme = jax.scipy.special.logsumexp(s_succ, axis=-1) - jnp.log(k)
    a = lam * (lme - s_cur)
    a = jnp.where(jnp.isnan(a), -jnp.inf, a)
    if log_floor is not None:
        a = jnp.maximum(a, log_floor)
    return jnp.where(done | ~jnp.isfinite(s_cur), 0.0, a)


def lookahead_log_floor(lookahead: Optional[LookAhead]):
    """``log(floor)`` when the floor applies (APF correction without reuse), else None."""
    if lookahead is None or not lookahead.correct or lookahead.reuse:
        return None
    return float(np.log(lookahead.floor))


def select_index(key, log_weights, method: str = "argmax", answers=None):
    """Index of the final answer among N particles.

    argmax: ``argmax_i l_i`` (untempered final weights); sample: ``i ~ softmax(l)``; vote: weighted
    majority over ``answers [N]`` (``argmax_i sum_j W_j 1[answer_j = answer_i]``, ties -> heaviest).
    """
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


# --------------------------------------------------------------------------------------------------
# option handling
SEQUENCE_RESAMPLING = Resampling(scheme="multinomial", when="always")  # a particle filter's default: every step


def resolve_resampling(resampling, entropic) -> Resampling:
    """The filter's policy: :func:`smcppl.core.policy.as_resampling` with the default ``SEQUENCE_RESAMPLING``
    (a scheme name resamples at every step)."""
    return as_resampling(resampling, entropic, default=SEQUENCE_RESAMPLING)


def resolve_lookahead(lookahead) -> Optional[LookAhead]:
    """None/False: off; True: ``LookAhead()``; an int ``k``; or a :class:`LookAhead` (validated)."""
    if lookahead is None or lookahead is False:
        return None
    if lookahead is True:
        lookahead = LookAhead()
    elif isinstance(lookahead, (int, np.integer)) and not isinstance(lookahead, bool):
        lookahead = LookAhead(k=int(lookahead))
    if not isinstance(lookahead, LookAhead):
        raise TypeError(f"lookahead must be None, True, an int k or a LookAhead, got {lookahead!r}.")
    if int(lookahead.k) != lookahead.k or lookahead.k < 1:
        raise ValueError(f"LookAhead.k must be a positive integer, got {lookahead.k!r}.")
    if not (0.0 <= float(lookahead.lam) <= 1.0):
        raise ValueError(f"LookAhead.lam must be in [0, 1], got {lookahead.lam!r}.")
    if not (0.0 < float(lookahead.floor) <= 1.0):
        raise ValueError(f"LookAhead.floor must be in (0, 1], got {lookahead.floor!r}.")
    return lookahead._replace(k=int(lookahead.k), lam=float(lookahead.lam), floor=float(lookahead.floor))


# --------------------------------------------------------------------------------------------------
# shapes
def _tile(state: SequenceState, n: int) -> SequenceState:
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(jnp.asarray(x)[None], (n,) + jnp.shape(x)), state)


def _as_state(x, what):
    if isinstance(x, SequenceState):
        return x
    if all(hasattr(x, f) for f in ("tokens", "lengths", "done")):
        return SequenceState(x.tokens, x.lengths, x.done, getattr(x, "aux", None))
    raise TypeError(f"{what} must return a smcppl SequenceState(tokens, lengths, done, aux), got {type(x).__name__}.")


def _describe(tree):
    return jax.tree_util.tree_map(lambda s: f"{tuple(s.shape)} {s.dtype}", tree)


def check_shapes(policy, potential, prompt, num_particles):
    """Trace (no computation) ``policy.init``/``policy.step`` and the potentials, and check the fixed-shape
    contract; returns ``(T_max, single)``. Raises ValueError/TypeError naming the offending function and field."""
    n = num_particles
    key = jax.random.key(0)
    try:
        st = jax.eval_shape(lambda k: _as_state(policy.init(k, prompt), "policy.init"), key)
    except (TypeError, ValueError) as e:
        if "policy.init" in str(e):
            raise
        raise type(e)(f"policy.init(key, prompt) failed: {e}") from e
    tok = st.tokens
    if tok.ndim not in (1, 2):
        raise ValueError(f"policy.init returned tokens of shape {tuple(tok.shape)}; expected [T_max] for one "
                         f"sequence or [N, T_max] = [{n}, T_max].")
    single = tok.ndim == 1
    if not single and tok.shape[0] != n:
        raise ValueError(f"policy.init returned tokens of shape {tuple(tok.shape)}: leading axis {tok.shape[0]} is "
                         f"not the number of particles {n} (return one sequence to have it tiled).")
    t_max = tok.shape[-1]
    lead = () if single else (n,)
    for name in ("lengths", "done"):
        shp = tuple(getattr(st, name).shape)
        if shp != lead:
            raise ValueError(f"policy.init returned {name} of shape {shp}, expected {lead}.")
    if not jnp.issubdtype(tok.dtype, jnp.integer) or not jnp.issubdtype(st.lengths.dtype, jnp.integer):
        raise TypeError(f"policy.init: tokens and lengths must be integer arrays, got {tok.dtype} and {st.lengths.dtype}.")
    if st.done.dtype != jnp.bool_:
        raise TypeError(f"policy.init: done must be a bool array, got {st.done.dtype}.")
    tiled = jax.eval_shape(lambda k: (_tile(_as_state(policy.init(k, prompt), "policy.init"), n) if single
                                      else _as_state(policy.init(k, prompt), "policy.init")), key)
    try:
        out = jax.eval_shape(lambda k, s: policy.step(k, s), key, tiled)
    except (TypeError, ValueError) as e:
        raise type(e)(f"policy.step(key, state) failed on a state with tokens {tuple(tiled.tokens.shape)}: {e}") from e
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError("policy.step must return a pair (state, log_p).")
    new, log_p = _as_state(out[0], "policy.step"), out[1]
    want = _describe(tiled)
    for name in ("tokens", "lengths", "done"):
        a, b = getattr(new, name), getattr(tiled, name)
        if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
            raise ValueError(f"policy.step returned {name} of shape {tuple(a.shape)} {a.dtype}, expected "
                             f"{tuple(b.shape)} {b.dtype} (the state's shapes and dtypes must not change).")
    got_aux, want_aux = _describe(new.aux), want.aux
    if jax.tree_util.tree_structure(got_aux) != jax.tree_util.tree_structure(want_aux) or got_aux != want_aux:
        raise ValueError(f"policy.step returned aux {got_aux}, expected {want_aux} (same structure, shapes, dtypes).")
    if tuple(jnp.shape(log_p)) != (n,):
        raise ValueError(f"policy.step returned log_p of shape {tuple(jnp.shape(log_p))}, expected ({n},).")
    for name in ("prefix", "complete"):
        fn = getattr(potential, name, None)
        if not callable(fn):
            raise TypeError(f"potential has no method {name}(state).")
        try:
            v = jax.eval_shape(fn, tiled)
        except (TypeError, ValueError) as e:
            raise type(e)(f"potential.{name}(state) failed: {e}") from e
        if tuple(jnp.shape(v)) != (n,):
            raise ValueError(f"potential.{name} returned shape {tuple(jnp.shape(v))}, expected ({n},).")
    return t_max, single


# --------------------------------------------------------------------------------------------------
# the Feynman–Kac model
def _raise_invalid(count):
    count = np.asarray(count)
    if np.any(count > 0):
        raise ValueError(f"potential returned {int(np.max(count))} score(s) outside [0, 1] (log psi > 0) in a run: "
                         "in weights='score' mode the potential must return log r with r in [0, 1] "
                         "(use weights='twist' for unnormalised log-potentials).")


def _check_host(count):
    _raise_invalid(count)
    return np.zeros(np.shape(count), np.int32)


def check_invalid_scores(parts: FilterParticles):
    """Raise (through a host callback, once per run) if any score was outside [0, 1] in score mode.
    Returns a zero that the caller must use (a pure callback is dropped if its result is unused)."""
    if parts.invalid is None:
        return jnp.zeros((), jnp.int32)
    count = jnp.max(parts.invalid)
    return jax.pure_callback(_check_host, jax.ShapeDtypeStruct((), jnp.int32), count, vmap_method="expand_dims")


def sequence_feynman_kac(policy, potential, prompt, num_particles: int, max_steps: int, weights: str = "score",
                         lookahead: Optional[LookAhead] = None, score_eps: float = 1e-6,
                         single_init: bool = True, resampling: Optional[Resampling] = None) -> FeynmanKac:
    """The sequence filter as a :class:`~smcppl.core.engine.FeynmanKac` (see module docstring).

    ``params`` is a dict of scalars: ``t`` (units generated), cumulative ``policy_calls`` and
    ``potential_calls``, ``n_done``, ``unique_origins``, ``invalid_scores`` (all recorded per stage) and
    ``resample_next``: whether the engine's next step resamples, i.e.
    :func:`~smcppl.core.policy.resample_decision` of the held log-weights under ``resampling``, which
    must be the policy the engine runs this model with (default: resample at every step).
    """
    n = num_particles
    la = lookahead
    res_policy = as_resampling(resampling, default=SEQUENCE_RESAMPLING)
    ft = _float_dtype()

    def absorb(old, new, was_done):
        return jax.tree_util.tree_map(
            lambda o, x: jnp.where(was_done.reshape((n,) + (1,) * (jnp.ndim(x) - 1)), o, x), old, new)

    def advance(key, seq, t_new):
        new, log_p = policy.step(key, seq)
        new = _as_state(new, "policy.step")
        t_max = seq.tokens.shape[-1]
        new = new._replace(done=new.done | (new.lengths >= t_max) | (t_new >= max_steps))
        new = absorb(seq, new, seq.done)
        log_p = jnp.where(seq.done, 0.0, sanitize(jnp.asarray(log_p, ft)))
        s, invalid = unit_scores(potential.prefix(new), potential.complete(new), new.done, weights, score_eps)
        return new, log_p, s, invalid

    def look(key, seq, s_cur, t):
        zeros = jnp.zeros(n, s_cur.dtype)
        if la is None:
            return zeros, None, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)
        k_draw, k_pick = jax.random.split(key)
        succ, lp, s_succ, inv = jax.vmap(lambda kk: advance(kk, seq, t + 1))(jax.random.split(k_draw, la.k))
        a = lookahead_adjustment(s_cur, s_succ.T, seq.done, la.lam, lookahead_log_floor(la))
        apply = t < max_steps  # a resampling follows
        a = jnp.where(apply, a, 0.0)
        active = jnp.sum(~seq.done).astype(jnp.int32)
        calls = jnp.where(apply, la.k * active, 0)
        inv = jnp.where(apply, jnp.sum(inv), 0).astype(jnp.int32)
        stored = None
        if la.reuse:
            j = jax.random.randint(k_pick, (n,), 0, la.k)
            pick = lambda x: x[j, jnp.arange(n)]  # noqa: E731
            stored = (jax.tree_util.tree_map(pick, succ), pick(s_succ), pick(lp))
        return a, stored, calls, inv

    def init(key):
        k0, k1, k2 = jax.random.split(key, 3)
        seq = _as_state(policy.init(k0, prompt), "policy.init")
        if single_init:
            seq = _tile(seq, n)
        t1 = jnp.ones((), jnp.int32)
        active = jnp.sum(~seq.done).astype(jnp.int32)
        seq1, lp, s1, inv = advance(k1, seq, t1)
        a, stored, la_calls, inv2 = look(k2, seq1, s1, t1)
        held = sanitize(s1 + a)
        z = jnp.zeros(n, held.dtype)
        parts = FilterParticles(seq1, s1, lp, jnp.arange(n, dtype=jnp.int32), a, held,
                                jnp.arange(n, dtype=jnp.int32), z, stored, jnp.full(n, inv + inv2, jnp.int32))
        params = {"t": t1, "policy_calls": active + la_calls, "potential_calls": active + la_calls,
                  "n_done": jnp.sum(seq1.done).astype(jnp.int32), "unique_origins": jnp.asarray(n, jnp.int32),
                  "invalid_scores": inv + inv2, "resample_next": resample_decision(held, res_policy)}
        return parts, held, params

    def move(key, parts: FilterParticles, carried, params, ancestry):
        t_new = params["t"] + 1
        k1, k2 = jax.random.split(key)
        seq = parts.seq
        if la is not None and la.reuse:
            new_seq, s_new, lp = parts.succ
            calls, inv = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)
        else:
            new_seq, lp, s_new, inv = advance(k1, seq, t_new)
            calls = jnp.sum(~seq.done).astype(jnp.int32)
        resampled = params["resample_next"]  # decided on the held weights this step's resampling saw
        l = reweight(carried, parts.lookahead, parts.score, s_new, seq.done, resampled, weights,
                     la is not None and la.correct)
        a, stored, la_calls, inv2 = look(k2, new_seq, s_new, t_new)
        log_g = sanitize(l + a - carried)
        held = carried + log_g
        invalid = jnp.full(n, jnp.max(parts.invalid) + inv + inv2, jnp.int32)
        new = FilterParticles(new_seq, s_new, parts.log_p + lp, parts.origin, a, held,
                              jnp.arange(n, dtype=jnp.int32), log_g, stored, invalid)
        info = {"policy_calls": calls + la_calls, "potential_calls": calls + la_calls, "invalid_scores": inv + inv2}
        return new, info

    def update(parts, carried, params, info):
        return {"t": params["t"] + 1,
                "policy_calls": params["policy_calls"] + info["policy_calls"],
                "potential_calls": params["potential_calls"] + info["potential_calls"],
                "n_done": jnp.sum(parts.seq.done).astype(jnp.int32),
                "unique_origins": count_unique(parts.origin, n),
                "invalid_scores": params["invalid_scores"] + info["invalid_scores"],
                "resample_next": resample_decision(parts.held, res_policy)}

    def log_potential(parts, prev, params, new_params):
        return parts.log_g

    def record(params):
        return {"step": params["t"], "policy_calls": params["policy_calls"],
                "potential_calls": params["potential_calls"], "n_done": params["n_done"],
                "unique_origins": params["unique_origins"], "invalid_scores": params["invalid_scores"]}

    return FeynmanKac(init, move, update, log_potential,
                      progress=lambda p: p["t"].astype(ft) / max_steps, record=record)


def _postprocess(parts: FilterParticles, check: bool = False):
    zero = check_invalid_scores(parts) if check else 0
    return {"tokens": parts.seq.tokens, "length": parts.seq.lengths + zero, "done": parts.seq.done.astype(jnp.int8),
            "score": parts.score, "log_policy": parts.log_p, "origin": parts.origin}


# --------------------------------------------------------------------------------------------------
# user-facing algorithm
class ParticleFilter:
    """Particle filter over a sequence policy, for :class:`~smcppl.SMC`::

        pf = ParticleFilter(policy, prm, weights="score", entropic="epf_ess", lookahead=LookAhead(k=1))
        smc = SMC(pf, num_particles=16, num_chains=4).run(jax.random.key(0), prompt)
        pf.select(smc)            # final answers per chain

    weights: ``"score"`` or ``"twist"`` (module docstring). resampling: a scheme name (resample every
    step) or a :class:`~smcppl.Resampling` (e.g. ``when="ess"``); default multinomial, every step.
    entropic: None, True, a temperature rule (``"epf_ess"``, ``"epf_entropy"``, ``"epf_linear"``,
    ``"target"``) or an :class:`~smcppl.Entropic` (``correct=True`` for the corrected variant).
    lookahead: None, True, ``k`` or a :class:`LookAhead`. max_steps: policy steps per run (default:
    ``T_max``). selection: ``"argmax"``, ``"sample"`` or ``"vote"`` (needs ``answer_fn(state) -> [N]``
    integer answers). score_eps: clipping of PRM scores. check_scores: raise when a score lies outside
    [0, 1] in score mode (one host callback at the end of each run).
    """

    def __init__(self, policy, potential, *, weights: str = "score", resampling: Union[str, Resampling, None] = None,
                 entropic=None, lookahead=None, max_steps: Optional[int] = None, selection: str = "argmax",
                 answer_fn: Optional[Callable] = None, score_eps: float = 1e-6, check_scores: bool = True):
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
        if not (0.0 < score_eps < 0.5):
            raise ValueError(f"score_eps must be in (0, 0.5), got {score_eps}.")
        if max_steps is not None and (int(max_steps) != max_steps or max_steps < 1):
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}.")
        self.policy, self.potential, self.weights = policy, potential, weights
        self.resampling = resolve_resampling(resampling, entropic)
        self.lookahead = resolve_lookahead(lookahead)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.selection, self.answer_fn = selection, answer_fn
        self.score_eps, self.check_scores = float(score_eps), bool(check_scores)

    @property
    def name(self):
        base = "ePF" if self.resampling.entropic is not None else "PF"
        return base + ("+LaM" if self.lookahead is not None else "")

    def feynman_kac(self, num_particles: int, prompt=None):
        """``(FeynmanKac, num_engine_steps, max_steps)`` after checking shapes (no compilation)."""
        num_particles = validate_num_particles(num_particles)
        t_max, single = check_shapes(self.policy, self.potential, prompt, num_particles)
        max_steps = self.max_steps or t_max
        fk = sequence_feynman_kac(self.policy, self.potential, prompt, num_particles, max_steps, self.weights,
                                  self.lookahead, self.score_eps, single, self.resampling)
        return fk, max_steps - 1, max_steps

    def build(self, num_particles: int, prompt=None) -> Plan:
        """The :class:`~smcppl.Plan` run by :class:`~smcppl.SMC` (``SMC(pf, N).run(key, prompt)``)."""
        fk, num_steps, max_steps = self.feynman_kac(num_particles, prompt)
        la = self.lookahead
        attrs = {"weights": self.weights, "max_steps": max_steps, "selection": self.selection,
                 "lookahead_k": 0 if la is None else la.k, "lookahead_lam": 0.0 if la is None else la.lam,
                 "lookahead_reuse": int(bool(la and la.reuse)), "lookahead_correct": int(bool(la and la.correct)),
                 "score_eps": self.score_eps}
        check = self.check_scores and self.weights == "score"
        return Plan(fk=fk, num_steps=num_steps, max_stages=num_steps,
                    postprocess=lambda parts: _postprocess(parts, check),
                    resampling=self.resampling, metadata={}, attrs=attrs, name=self.name)

    # ------------------------------------------------------------------ final answers
    def select(self, result, key=None, method: Optional[str] = None):
        """Final answer of each chain from an :class:`~smcppl.SMC` run or an ``SMCOutput`` (with or without a
        chain axis): dict with ``index``, ``tokens``, ``length``, ``score``, ``log_weight`` (and ``answer``
        when ``answer_fn`` is set), each with a leading chain axis."""
        method = method or self.selection
        out = result.output if hasattr(result, "output") and not isinstance(result, SMCOutput) else result
        if out is None:
            raise RuntimeError("Call .run(rng_key, ...) before selecting answers.")
        parts, lw = out.state.particles, out.state.log_weights
        if jnp.ndim(lw) == 1:
            parts, lw = jax.tree_util.tree_map(lambda x: x[None], (parts, lw))
        key = jax.random.key(0) if key is None else key
        keys = jax.random.split(key, lw.shape[0])
        return jax.vmap(lambda k, p, l: select_final(k, p, l, method, self.answer_fn))(keys, parts, lw)


def select_final(key, parts: FilterParticles, log_weights, method="argmax", answer_fn=None):
    """Selected particle of one run: ``{"index", "tokens", "length", "score", "log_weight"[, "answer"]}``."""
    answers = None if answer_fn is None else jnp.asarray(answer_fn(parts.seq))
    i = select_index(key, log_weights, method, answers)
    out = {"index": i, "tokens": parts.seq.tokens[i], "length": parts.seq.lengths[i], "score": parts.score[i],
           "log_weight": log_normalize(sanitize(log_weights))[0][i]}
    if answers is not None:
        out["answer"] = answers[i]
    return out


def particle_filter(rng_key, pf: ParticleFilter, num_particles: int, prompt=None, record_ancestors: bool = False):
    """One run of ``pf`` as a pure, jit/vmap-able function of ``rng_key``: an
    :class:`~smcppl.core.engine.SMCOutput` (use :func:`select_final` for the answer)."""
    fk, num_steps, _ = pf.feynman_kac(num_particles, prompt)
    out = run_fixed(rng_key, fk, num_steps, pf.resampling, record_ancestors)
    if pf.check_scores and pf.weights == "score":
        zero = check_invalid_scores(out.state.particles)
        # the check is a pure callback: tie it to the outputs that selection and log Z use
        out = out._replace(log_evidence=out.log_evidence + zero,
                           state=out.state._replace(log_weights=out.state.log_weights + zero))
    return out
