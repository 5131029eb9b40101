"""Benchmark tasks for particle filters over sequence policies, with exactly computable success.

Every task is a finite Markov chain over *units* (one token per unit) with a hidden-but-exact state
``z``: the policy draws unit ``v ~ P[z, :]`` and moves to ``z' = NEXT[z, v]``. A run has ``T`` units.
The task reward of a complete sequence is ``R[z_T]``, the exact probability of success given the
sequence (e.g. a strategy's hidden success rate), so the mean reward of a method is an exact,
noise-free functional of its output. The exact value function ``V[t, z] = E[R(z_T) | z_t = z]``
(backward recursion ``V[t, z] = sum_v P[z, v] V[t+1, NEXT[z, v]]``) is the *honest* process reward.

A process reward model (PRM) scores the prefix after ``t`` units with ``r = H[t, z] in [0, 1]``
(``potential.prefix = log r``) and the complete sequence with the final verifier ``R[z_T]``
(``potential.complete = log R``). Each task has an ``honest`` switch (``H = V``) and a misleading PRM:

1. :func:`strategy_trap`: the first unit picks one of S strategies with hidden success rates ``q_s``;
   each later unit is an error (token 0, detectable, kills success) with probability ``e``. Early scores
   are over-confident in a surface feature ``c_s`` that favours the trap strategy, turning truthful
   by unit ``t_switch``: ``logit r_t = (1 - b_t) logit c_s + b_t logit V[t, z]``, ``b_t = (t-1)/(t_switch-1)``.
2. :func:`stall_chain`: a token-level Markov chain whose first unit picks a mode (steady, or fast with
   probability 1/4), later units add 0/1/2 to a running sum, success iff the sum hits ``target`` exactly.
   The fast mode makes more reliable big steps but *stalls* (emits the stall token, adding 0, forever)
   with probability ``stall`` per unit. The early PRM (units ``< t_switch``) is the exact value under a
   misspecified model that does not know that the mode stalls (it reads a stall token as a big step), so
   it prefers the fast mode strongly while the fast particles silently stall.
3. :func:`lagged_verifier`: careful/sloppy steps with state-dependent error rates; an error is an
   unjustified jump to the conclusion; success iff no error. The PRM sees errors one unit late (it scores
   ``z_t`` with the error flag of ``z_{t-1}``), so for one unit a false conclusion looks like a valid one.
4. :func:`negative_control`: the careful/sloppy chain, honest PRM plus deterministic noise (a hash of the
   prefix), ``logit r = logit V + sigma * eps``; errors are visible at once, so resampling recovers.

The same chain gives a JAX policy/potential (:meth:`SequenceTask.policy`, :meth:`SequenceTask.potential`)
(with the optional ``unit_log_probs``/``append`` methods, for tempered, truncated and annealed proposals:
:mod:`smcppl.inference.sequence.proposals`) and a NumPy pair for the host runner and the NumPy baseline
(:meth:`SequenceTask.numpy_policy`,
:meth:`SequenceTask.numpy_potential`), sharing the array code (written against ``xp = jnp | np``).
:meth:`SequenceTask.enumerate` lists every sequence with ``p(x) > 0`` for exact checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.sequence_state import SequenceState

__all__ = ["SequenceTask", "strategy_trap", "stall_chain", "lagged_verifier", "negative_control", "TASKS",
           "make_task", "value_function"]

_EPS = 1e-6


def _float(xp):
    """Float dtype of the tables: JAX's default (float64 under ``jax_enable_x64``), float32 in NumPy."""
    return jnp.result_type(float) if xp is jnp else np.float32


def _logit(p):
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def value_function(P, NEXT, R, T):
    """Exact ``V[t, z] = E[R(z_T) | z_t = z]`` for ``t = 0..T`` by backward recursion."""
    Z = P.shape[0]
    V = np.zeros((T + 1, Z))
    V[T] = R
    for t in range(T - 1, -1, -1):
        V[t] = np.sum(P * V[t + 1][NEXT], axis=1)
    return V


# odd 32-bit multipliers for the prefix hash (noise of the negative control)
_HASH_MULT = np.array([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1, 0xD3A2646C | 1,
                       0xFD7046C5, 0xB55A4F09, 0x7FEB352D, 0x846CA68B, 0x2C1B3C6D, 0x297A2D39,
                       0x58F3A0D1, 0x1B873593, 0xCC9E2D51, 0xE6546B64], dtype=np.uint64).astype(np.uint32)


def _prefix_noise(xp, tokens, lengths):
    """Deterministic noise ``eps in [-1, 1)`` from a 32-bit hash of the prefix (identical in NumPy and JAX)."""
    T = tokens.shape[1]
    mult = xp.asarray(np.resize(_HASH_MULT, T))
    pos = xp.arange(T)[None, :]
    tok = xp.where(pos < lengths[:, None], tokens + 1, 0).astype(xp.uint32)
    h = xp.sum(tok * mult[None, :], axis=1, dtype=xp.uint32)
    h = h ^ (lengths.astype(xp.uint32) * xp.uint32(0x27D4EB2F))
    h = h ^ (h >> xp.uint32(16))
    h = h * xp.uint32(0x45D9F3B)
    h = h ^ (h >> xp.uint32(16))
    h = h * xp.uint32(0x45D9F3B)
    h = h ^ (h >> xp.uint32(16))
    return (h.astype(xp.float32) / np.float32(2.0 ** 32)) * 2.0 - 1.0


@dataclass
class SequenceTask:
    """A tabular sequence task (see module docstring).

    P: ``[Z, V]`` unit probabilities per state; NEXT: ``[Z, V]`` next state; R: ``[Z]`` exact success
    probability of a complete sequence ending in ``z``; H: ``[T+1, Z]`` PRM score table (prefix after
    ``t`` units); T: units per sequence; z0: state of the (empty) prompt; noise: ``sigma`` of the prefix
    noise (logit scale). ``honest`` records whether ``H`` is the exact value function.
    """

    name: str
    P: np.ndarray
    NEXT: np.ndarray
    R: np.ndarray
    H: np.ndarray
    T: int
    z0: int = 0
    noise: float = 0.0
    honest: bool = False
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.P = np.asarray(self.P, float)
        if not np.allclose(self.P.sum(1), 1.0):
            raise ValueError(f"Task {self.name!r}: rows of P must sum to 1.")
        self.NEXT = np.asarray(self.NEXT, np.int32)
        self.R = np.asarray(self.R, float)
        self.H = np.clip(np.asarray(self.H, float), 0.0, 1.0)
        self.V = value_function(self.P, self.NEXT, self.R, self.T)
        with np.errstate(divide="ignore"):
            self.logP = np.log(self.P)
            self.logH = np.log(self.H)
            self.logR = np.log(self.R)

    # ---------------------------------------------------------------- exact quantities
    @property
    def vocab_size(self):
        return self.P.shape[1]

    def success_probability(self):
        """``E_p[R(z_T)]``: expected reward of a single policy sample (no search)."""
        return float(self.V[0, self.z0])

    def best_reward(self):
        """Largest reward any sequence can reach (the ceiling of every method)."""
        reach = np.zeros(self.P.shape[0], bool)
        reach[self.z0] = True
        for _ in range(self.T):
            nxt = np.zeros_like(reach)
            for z in np.nonzero(reach)[0]:
                nxt[self.NEXT[z][self.P[z] > 0]] = True
            reach = nxt
        return float(self.R[reach].max())

    def enumerate(self, max_sequences=200_000):
        """All complete sequences with ``p(x) > 0``: ``(tokens [M, T], log_p [M], log_phi [M], reward [M])``
        with ``log_phi = log R`` the final potential, so the twisted target is ``p(x) R(x) / Z`` with
        ``Z = sum_x p(x) R(x) = success_probability()``."""
        seqs = [((), self.z0, 0.0)]
        for _ in range(self.T):
            new = []
            for toks, z, lp in seqs:
                for v in np.nonzero(self.P[z] > 0)[0]:
                    new.append((toks + (int(v),), int(self.NEXT[z, v]), lp + float(self.logP[z, v])))
            seqs = new
            if len(seqs) > max_sequences:
                raise ValueError(f"Task {self.name!r} has more than {max_sequences} sequences; use a shorter T.")
        tokens = np.array([s[0] for s in seqs], np.int32)
        zs = np.array([s[1] for s in seqs])
        return tokens, np.array([s[2] for s in seqs]), self.logR[zs], self.R[zs]

    # ---------------------------------------------------------------- shared array code (xp = jnp | np)
    def _init(self, xp):
        """State of the empty prompt (a single sequence; the filter tiles it to N particles)."""
        return SequenceState(tokens=xp.zeros((self.T,), xp.int32), lengths=xp.asarray(0, xp.int32),
                             done=xp.asarray(False), aux={"z": xp.asarray(self.z0, xp.int32)})

    def _advance(self, xp, state, v):
        z = state.aux["z"]
        log_p = xp.asarray(self.logP, _float(xp))[z, v]
        z_new = xp.asarray(self.NEXT)[z, v]
        pos = xp.arange(self.T)[None, :]
        tokens = xp.where(pos == state.lengths[:, None], v[:, None].astype(xp.int32), state.tokens)
        lengths = state.lengths + 1
        return SequenceState(tokens, lengths, lengths >= self.T, {"z": z_new}), log_p

    def _prefix(self, xp, state, logH=None):
        t = xp.clip(state.lengths, 0, self.T)
        log_r = xp.asarray(self.logH if logH is None else logH, _float(xp))[t, state.aux["z"]]
        if self.noise > 0:
            eps = _prefix_noise(xp, state.tokens, state.lengths)
            # logit r' = logit r + sigma * eps, written in log space: log r' = -softplus(-(logit r'))
            with np.errstate(divide="ignore", invalid="ignore"):
                logit = log_r - xp.log1p(-xp.minimum(xp.exp(log_r), 1 - _EPS))
            logit = logit + self.noise * eps
            log_r = xp.where(xp.isfinite(log_r), -xp.logaddexp(0.0, -logit), log_r)
        return log_r

    def _complete(self, xp, state, logR=None):
        return xp.asarray(self.logR if logR is None else logR, _float(xp))[state.aux["z"]]

    def reward_of(self, state):
        """Exact success probability ``R[z]`` of each (complete) sequence in ``state`` (JAX or NumPy)."""
        xp = np if isinstance(state.aux["z"], np.ndarray) else jnp
        return xp.asarray(self.R, _float(xp))[state.aux["z"]]

    # ---------------------------------------------------------------- JAX and NumPy front ends
    def policy(self):
        """JAX :class:`~smcppl.inference.sequence.SequencePolicy` of this task."""
        return _JaxPolicy(self)

    def potential(self, logH=None, logR=None):
        """JAX :class:`~smcppl.inference.sequence.Potential` (the PRM and the final verifier). ``logH``
        ``[T+1, Z]`` / ``logR`` ``[Z]`` replace the tables (they may be traced arrays, so that one compiled
        filter serves several PRMs, e.g. the honest and the misleading one)."""
        return _JaxPotential(self, logH, logR)

    def numpy_policy(self):
        """The same policy in NumPy, for the host runner: ``step(rng, state)`` with a ``np.random.Generator``."""
        return _NumpyPolicy(self)

    def numpy_potential(self):
        return _NumpyPotential(self)

    def prompt(self):
        """The (empty) prompt; the policy ignores its content."""
        return jnp.zeros((0,), jnp.int32)


class _JaxPolicy:
    def __init__(self, task):
        self.task = task

    def init(self, key, prompt):
        return self.task._init(jnp)

    def step(self, key, state):
        v = jax.random.categorical(key, self.unit_log_probs(state), axis=-1).astype(jnp.int32)
        return self.task._advance(jnp, state, v)

    # the optional unit-vocabulary protocol (smcppl.core.sequence_state): tempered / truncated proposals
    def unit_log_probs(self, state):
        """``log P[z, :]`` of every sequence: ``[N, V]``."""
        return jnp.asarray(self.task.logP, _float(jnp))[state.aux["z"]]

    def append(self, state, units):
        """The state extended by ``units [N]``."""
        return self.task._advance(jnp, state, jnp.asarray(units, jnp.int32))[0]


class _JaxPotential:
    def __init__(self, task, logH=None, logR=None):
        self.task, self.logH, self.logR = task, logH, logR

    def prefix(self, state):
        return self.task._prefix(jnp, state, self.logH)

    def complete(self, state):
        return self.task._complete(jnp, state, self.logR)


class _NumpyPolicy:
    def __init__(self, task):
        self.task = task

    def init(self, rng, prompt):
        return self.task._init(np)

    def step(self, rng, state):
        p = self.task.P[state.aux["z"]]
        c = np.cumsum(p, axis=1)
        u = rng.random(p.shape[0])[:, None] * c[:, -1:]
        v = np.minimum((u >= c).sum(axis=1), p.shape[1] - 1).astype(np.int32)
        return self.task._advance(np, state, v)


class _NumpyPotential:
    def __init__(self, task):
        self.task = task

    def prefix(self, state):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self.task._prefix(np, state)

    def complete(self, state):
        return self.task._complete(np, state)


# ------------------------------------------------------------------------------------------ tasks
def strategy_trap(honest: bool = False, num_units: int = 8, prior=(0.25, 0.25, 0.25, 0.25),
                  success=(0.1, 0.9, 0.8, 0.7), surface=(0.98, 0.3, 0.3, 0.3), error_rate: float = 0.2,
                  t_switch: int = 4) -> SequenceTask:
    """Strategy trap: unit 1 picks strategy ``s ~ prior`` (token ``2 + s``), units 2..T are ``ok`` (1) or
    ``error`` (0, probability ``error_rate``). Reward ``R = success[s] * 1[no error]`` (``success`` are the
    hidden success rates). Misleading PRM: ``logit r_t = (1 - b_t) logit surface[s] + b_t logit V[t, z]``,
    ``b_t = min(1, (t - 1) / (t_switch - 1))``: over-confident in the trap (strategy 0) at first, truthful
    from unit ``t_switch`` on."""
    prior, q, c = np.asarray(prior, float), np.asarray(success, float), np.asarray(surface, float)
    S = len(prior)
    if not (len(q) == len(c) == S):
        raise ValueError("strategy_trap: prior, success and surface must have the same length.")
    Vsz = S + 2
    Z = 2 * S + 1  # z = 2 s + err, z0 = 2 S
    z0 = 2 * S
    P = np.zeros((Z, Vsz))
    NEXT = np.zeros((Z, Vsz), np.int32)
    P[z0, 2:] = prior
    NEXT[z0, 2:] = 2 * np.arange(S)
    NEXT[z0, :2] = z0
    for s in range(S):
        for err in (0, 1):
            z = 2 * s + err
            P[z, 0], P[z, 1] = error_rate, 1 - error_rate
            NEXT[z, 0], NEXT[z, 1] = 2 * s + 1, z
            NEXT[z, 2:] = z
    R = np.zeros(Z)
    R[0::2][:S] = q
    T = num_units
    V = value_function(P, NEXT, R, T)
    if honest:
        H = V.copy()
    else:
        H = np.zeros_like(V)
        for t in range(T + 1):
            b = 1.0 if t_switch <= 1 else min(1.0, max(0.0, (t - 1) / (t_switch - 1)))
            surf = np.concatenate([np.repeat(c, 2), [0.5]])
            H[t] = _sigmoid((1 - b) * _logit(surf) + b * _logit(V[t]))
            H[t, z0] = V[t, z0]
    return SequenceTask("strategy_trap", P, NEXT, R, H, T, z0, honest=honest,
                        info={"prior": prior.tolist(), "success": q.tolist(), "surface": c.tolist(),
                              "error_rate": error_rate, "t_switch": t_switch, "trap_strategy": int(np.argmax(c))})


def _tabulate(start, vocab, probs, step, R_of):
    """Reachable finite chain from a hashable ``start`` state: ``probs(s) -> [vocab]``, ``step(s, v) -> s'``.
    Returns ``(P, NEXT, R, states)`` with ``states[i]`` the tuple of state ``i`` (``start`` is state 0)."""
    index, states = {start: 0}, [start]
    rows_p, rows_n = [], []
    i = 0
    while i < len(states):
        s = states[i]
        p = np.asarray(probs(s), float)
        nxt = []
        for v in range(vocab):
            t = step(s, v) if p[v] > 0 else s
            if t not in index:
                index[t] = len(states)
                states.append(t)
            nxt.append(index[t])
        rows_p.append(p)
        rows_n.append(nxt)
        i += 1
    R = np.array([R_of(s) for s in states], float)
    return np.array(rows_p), np.array(rows_n, np.int32), R, states, index


def stall_chain(honest: bool = False, num_units: int = 8, target: int = 14, steady=(0.05, 0.2, 0.75),
                fast=(0.0, 0.02, 0.98), stall: float = 0.8, t_switch: int = 4,
                fast_prior: float = 0.25) -> SequenceTask:
    """Stall chain: unit 1 picks the mode (token 4 = steady, 5 = fast with probability ``fast_prior``); units 2..T add
    0/1/2 (tokens 0/1/2, probabilities ``steady`` / ``fast``) to a running sum. The fast mode stalls with
    probability ``stall`` per unit: it emits the stall token (3, adds 0) and then stays stalled, emitting
    it forever. Success iff the final sum equals ``target`` exactly.

    Misleading PRM (prefixes of ``t < t_switch`` units): the exact value under a misspecified model that
    does not know that the fast mode stalls; it takes the stall token for one of the mode's ordinary big
    steps (+2), i.e. it scores a stalled prefix as the non-stalled prefix with the *nominal* sum
    ``sum + 2 * (stall tokens)``. From unit ``t_switch`` on it is the exact value (a stalled prefix is dead
    unless its sum already equals the target). Under the misspecified model the fast mode looks like the
    better one (its big steps land near the target); in truth it almost never arrives, since it stalls
    before the PRM can tell. The state is ``(mode, stalled, sum, nominal sum)``, sums clipped at
    ``target + 1`` (failure)."""
    steady, fast = np.asarray(steady, float), np.asarray(fast, float)
    T, K = int(num_units), int(target) + 1
    start = (-1, 0, 0, 0)

    def probs(stall_p):
        def f(s):
            mode, stalled = s[0], s[1]
            p = np.zeros(6)
            if mode < 0:
                p[4], p[5] = 1 - fast_prior, fast_prior
            elif stalled:
                p[3] = 1.0
            elif mode == 0:
                p[:3] = steady
            else:
                p[:3], p[3] = (1 - stall_p) * fast, stall_p
            return p
        return f

    def step(s, v):
        mode, stalled, tot, nom = s
        if mode < 0:
            return (v - 4, 0, 0, 0)
        if v == 3:
            return (mode, 1, tot, min(nom + 2, K))
        return (mode, 0, min(tot + v, K), min(nom + v, K))

    hit = lambda s: float(s[0] >= 0 and s[2] == target)  # noqa: E731
    P, NEXT, R, states, _ = _tabulate(start, 6, probs(stall), step, hit)
    V = value_function(P, NEXT, R, T)
    if honest:
        H = V.copy()
    else:
        # misspecified model: no stalling; a stalled prefix is read as the non-stalled one at its nominal sum
        Pm, NEXTm, Rm, _, index_m = _tabulate(start, 6, probs(0.0), step, hit)
        Vm = value_function(Pm, NEXTm, Rm, T)
        read = np.array([index_m.get(s if s[0] < 0 else (s[0], 0, s[3], s[3]), 0) for s in states])
        H = np.where((np.arange(T + 1) < t_switch)[:, None], Vm[:, read], V)
        H[:, 0] = V[:, 0]
    return SequenceTask("stall_chain", P, NEXT, R, H, T, 0, honest=honest,
                        info={"target": target, "steady": steady.tolist(), "fast": fast.tolist(), "stall": stall,
                              "t_switch": t_switch, "fast_prior": fast_prior, "states": len(states)})


def _care_chain(num_units, careful, sloppy, conclusion_reward=1.0):
    """States z = (care, err_now, err_lag), care 0 careful / 1 sloppy / 2 concluded. Tokens: 0 error,
    1 careful ok, 2 sloppy ok, 3 conclusion. ``careful`` / ``sloppy``: the token probabilities in the
    careful / sloppy state (length 3 or 4; a missing conclusion probability is 0). An error is an
    unjustified jump to the conclusion (it moves to the concluded state with the error flag set); a
    conclusion (valid, token 3) ends the work with reward ``conclusion_reward``; a concluded writer only
    emits token 1 (filler) and makes no more errors. After a sloppy step the writer is sloppy, after a
    careful one careful."""
    careful = np.pad(np.asarray(careful, float), (0, 4 - len(careful)))
    sloppy = np.pad(np.asarray(sloppy, float), (0, 4 - len(sloppy)))
    Z = 13  # 12 states + z0

    def zid(care, e, el):
        return care * 4 + e * 2 + el

    z0 = 12
    P = np.zeros((Z, 4))
    NEXT = np.zeros((Z, 4), np.int32)
    P[z0] = careful
    NEXT[z0] = [zid(2, 1, 0), zid(0, 0, 0), zid(1, 0, 0), zid(2, 0, 0)]
    for care in (0, 1, 2):
        for e in (0, 1):
            for el in (0, 1):
                z = zid(care, e, el)
                if care == 2:
                    P[z] = [0.0, 1.0, 0.0, 0.0]
                    NEXT[z] = zid(2, e, e)
                    continue
                P[z] = careful if care == 0 else sloppy
                NEXT[z] = [zid(2, 1, e), zid(0, e, e), zid(1, e, e), zid(2, e, e)]
    R = np.zeros(Z)
    for care in (0, 1, 2):
        for el in (0, 1):
            R[zid(care, 0, el)] = conclusion_reward if care == 2 else 1.0
    V = value_function(P, NEXT, R, num_units)
    lagged = np.arange(Z)  # the state seen by a verifier one unit late: err_now := err_lag
    for care in (0, 1, 2):
        for e in (0, 1):
            for el in (0, 1):
                lagged[zid(care, e, el)] = zid(care, el, el)
    return P, NEXT, R, V, z0, lagged


def lagged_verifier(honest: bool = False, num_units: int = 10, careful=(0.15, 0.55, 0.27, 0.03),
                    sloppy=(0.35, 0.25, 0.38, 0.02), conclusion_reward: float = 0.95) -> SequenceTask:
    """Lagged verifier: each unit is an error (token 0), a careful (1) or sloppy (2) step, or a valid
    conclusion (3), with probabilities that depend on the previous unit (``careful`` / ``sloppy`` rows).
    An error is an unjustified jump to the conclusion. Success iff no error (a concluded sequence succeeds
    with probability ``conclusion_reward``). The PRM scores the prefix with the exact value function
    evaluated at the error flag of the *previous* unit: it sees each error one unit late, so for one unit a
    false conclusion looks like a valid one (value ``conclusion_reward``, far above the value of an
    unfinished derivation) and a score-weighted filter moves its particles onto it; the next unit shows it
    dead. The final verifier is exact. ``honest=True``: the PRM sees errors at once."""
    P, NEXT, R, V, z0, lagged = _care_chain(num_units, careful, sloppy, conclusion_reward)
    H = V.copy() if honest else V[:, lagged]
    H[:, z0] = V[:, z0]
    return SequenceTask("lagged_verifier", P, NEXT, R, H, num_units, z0, honest=honest,
                        info={"careful": list(careful), "sloppy": list(sloppy),
                              "conclusion_reward": conclusion_reward})


def negative_control(honest: bool = False, num_units: int = 10, careful=(0.3, 0.5, 0.2),
                     sloppy=(0.55, 0.2, 0.25), sigma: float = 1.5) -> SequenceTask:
    """Negative control: the careful/sloppy chain (no conclusion token) with an honest, noisy, recoverable
    PRM: ``logit r = logit V[t, z] + sigma * eps(prefix)`` with deterministic ``eps in [-1, 1)`` (a hash of
    the prefix); errors are visible at once (``V = 0``). ``honest=True`` sets ``sigma = 0``."""
    P, NEXT, R, V, z0, _ = _care_chain(num_units, careful, sloppy)
    return SequenceTask("negative_control", P, NEXT, R, V.copy(), num_units, z0,
                        noise=0.0 if honest else float(sigma), honest=honest,
                        info={"careful": list(careful), "sloppy": list(sloppy), "sigma": 0.0 if honest else sigma})


TASKS = {"strategy_trap": strategy_trap, "stall_chain": stall_chain, "lagged_verifier": lagged_verifier,
         "negative_control": negative_control}


def make_task(name: str, honest: bool = False, **kwargs) -> SequenceTask:
    """Build a task by name (one of ``TASKS``)."""
    try:
        return TASKS[name](honest=honest, **kwargs)
    except KeyError:
        raise ValueError(f"Unknown sequence task {name!r}; choose one of {sorted(TASKS)}.") from None
