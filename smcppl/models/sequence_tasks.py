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
2. :func:`stall_chain`: a token-level Markov chain whose first unit picks a mode, later units add
   0/1/2 to a running sum, success iff the sum hits ``target`` exactly. One mode has larger steps but
   *stalls* (emits the stall token, adding 0, forever) with probability ``rho`` per unit. The early PRM
   is the exact value under a misspecified model that does not know that the mode stalls.
3. :func:`lagged_verifier`: careful/sloppy steps with state-dependent error rates; success iff no error.
   The PRM sees errors one unit late (it scores ``z_t`` with the error flag of ``z_{t-1}``).
4. :func:`negative_control`: the same chain, honest PRM plus deterministic noise (a hash of the
   prefix), ``logit r = logit V + sigma * eps``; errors are visible at once, so resampling recovers.

The same chain gives a JAX policy/potential (:meth:`SequenceTask.policy`, :meth:`SequenceTask.potential`)
and a NumPy pair for the host runner and the NumPy baseline (:meth:`SequenceTask.numpy_policy`,
:meth:`SequenceTask.numpy_potential`), sharing the array code (written against ``xp = jnp | np``).
:meth:`SequenceTask.enumerate` lists every sequence with ``p(x) > 0`` for exact checks.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.inference.sequence import SequenceState

__all__ = ["SequenceTask", "strategy_trap", "stall_chain", "lagged_verifier", "negative_control", "TASKS",
           "make_task", "value_function"]

_EPS = 1e-6


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
        log_p = xp.asarray(self.logP, xp.float32)[z, v]
        z_new = xp.asarray(self.NEXT)[z, v]
        pos = xp.arange(self.T)[None, :]
        tokens = xp.where(pos == state.lengths[:, None], v[:, None].astype(xp.int32), state.tokens)
        lengths = state.lengths + 1
        return SequenceState(tokens, lengths, lengths >= self.T, {"z": z_new}), log_p

    def _prefix(self, xp, state, logH=None):
        t = xp.clip(state.lengths, 0, self.T)
        log_r = xp.asarray(self.logH if logH is None else logH, xp.float32)[t, state.aux["z"]]
        if self.noise > 0:
            eps = _prefix_noise(xp, state.tokens, state.lengths)
            # logit r' = logit r + sigma * eps, written in log space: log r' = -softplus(-(logit r'))
            with np.errstate(divide="ignore", invalid="ignore"):
                logit = log_r - xp.log1p(-xp.minimum(xp.exp(log_r), 1 - _EPS))
            logit = logit + self.noise * eps
            log_r = xp.where(xp.isfinite(log_r), -xp.logaddexp(0.0, -logit), log_r)
        return log_r

    def _complete(self, xp, state, logR=None):
        return xp.asarray(self.logR if logR is None else logR, xp.float32)[state.aux["z"]]

    def reward_of(self, state):
        """Exact success probability ``R[z]`` of each (complete) sequence in ``state`` (JAX or NumPy)."""
        xp = np if isinstance(state.aux["z"], np.ndarray) else jnp
        return xp.asarray(self.R, xp.float32)[state.aux["z"]]

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
        logits = jnp.asarray(self.task.logP, jnp.float32)[state.aux["z"]]
        v = jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
        return self.task._advance(jnp, state, v)


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


def stall_chain(honest: bool = False, num_units: int = 8, target: int = 10, steady=(0.2, 0.4, 0.4),
                fast=(0.05, 0.25, 0.7), stall: float = 0.25, t_switch: int = 4) -> SequenceTask:
    """Stall chain: unit 1 picks the mode (token 4 = steady, 5 = fast, equally likely); units 2..T add
    0/1/2 (tokens 0/1/2) to a running sum. The fast mode stalls with probability ``stall`` per unit
    (token 3, adds 0) and then stays stalled. Success iff the final sum equals ``target``.
    Misleading PRM (units ``t < t_switch``): the exact value under a model in which the fast mode never
    stalls (and a stall token is read as a 0 increment); truthful from unit ``t_switch`` on."""
    steady, fast = np.asarray(steady, float), np.asarray(fast, float)
    T = num_units
    K = target + 1  # sums above target are clipped to K (failure)
    # z = ((mode * 2 + stalled) * (K + 1) + sum), z0 = last
    nS = 4 * (K + 1)
    z0 = nS
    Z = nS + 1
    Vsz = 6

    def zid(mode, stalled, s):
        return (mode * 2 + stalled) * (K + 1) + min(s, K)

    def build(stall_p):
        P = np.zeros((Z, Vsz))
        NEXT = np.zeros((Z, Vsz), np.int32)
        P[z0, 4], P[z0, 5] = 0.5, 0.5
        NEXT[z0] = z0
        NEXT[z0, 4], NEXT[z0, 5] = zid(0, 0, 0), zid(1, 0, 0)
        for mode in (0, 1):
            for stalled in (0, 1):
                for s in range(K + 1):
                    z = zid(mode, stalled, s)
                    NEXT[z] = z
                    if stalled:
                        P[z, 3] = 1.0
                        continue
                    probs = steady if mode == 0 else fast
                    ps = 0.0 if mode == 0 else stall_p
                    P[z, :3] = (1 - ps) * probs
                    P[z, 3] = ps
                    for inc in range(3):
                        NEXT[z, inc] = zid(mode, 0, s + inc)
                    NEXT[z, 3] = zid(mode, 1, s)
        return P, NEXT

    P, NEXT = build(stall)
    R = np.zeros(Z)
    for mode in (0, 1):
        for stalled in (0, 1):
            R[zid(mode, stalled, target)] = 1.0
    V = value_function(P, NEXT, R, T)
    if honest:
        H = V.copy()
    else:
        # misspecified model: no stalling; a stalled state is read as the non-stalled state with the same sum
        Pm, NEXTm = build(0.0)
        Vm = value_function(Pm, NEXTm, R, T)
        unstalled = np.arange(Z)
        for mode in (0, 1):
            for s in range(K + 1):
                unstalled[zid(mode, 1, s)] = zid(mode, 0, s)
        H = np.where((np.arange(T + 1) < t_switch)[:, None], Vm[:, unstalled], V)
    return SequenceTask("stall_chain", P, NEXT, R, H, T, z0, honest=honest,
                        info={"target": target, "steady": steady.tolist(), "fast": fast.tolist(), "stall": stall,
                              "t_switch": t_switch})


def _care_chain(num_units, careful, sloppy):
    """States z = (care, err_now, err_lag): care 0 careful / 1 sloppy. Tokens: 0 error, 1 careful ok,
    2 sloppy ok. After an error the writer is sloppy."""
    careful, sloppy = np.asarray(careful, float), np.asarray(sloppy, float)
    Z = 9  # 8 states + z0

    def zid(care, e, el):
        return care * 4 + e * 2 + el

    z0 = 8
    P = np.zeros((Z, 3))
    NEXT = np.zeros((Z, 3), np.int32)
    P[z0] = careful
    NEXT[z0] = [zid(1, 1, 0), zid(0, 0, 0), zid(1, 0, 0)]
    for care in (0, 1):
        for e in (0, 1):
            for el in (0, 1):
                z = zid(care, e, el)
                P[z] = careful if care == 0 else sloppy
                NEXT[z] = [zid(1, 1, e), zid(0, e, e), zid(1, e, e)]
    R = np.zeros(Z)
    for care in (0, 1):
        for el in (0, 1):
            R[zid(care, 0, el)] = 1.0
    V = value_function(P, NEXT, R, num_units)
    lagged = np.arange(Z)  # the state seen by a verifier one unit late: err_now := err_lag
    for care in (0, 1):
        for e in (0, 1):
            for el in (0, 1):
                lagged[zid(care, e, el)] = zid(care, el, el)
    return P, NEXT, R, V, z0, lagged


def lagged_verifier(honest: bool = False, num_units: int = 8, careful=(0.05, 0.75, 0.2),
                    sloppy=(0.35, 0.25, 0.4)) -> SequenceTask:
    """Lagged verifier: each unit is an error (token 0), careful-ok (1) or sloppy-ok (2), with error rates
    that depend on the previous unit (``careful``/``sloppy`` rows). Success iff no error. The PRM scores
    the prefix with the value function evaluated at the error flag of the *previous* unit (it sees each
    error one unit late); the final verifier is exact."""
    P, NEXT, R, V, z0, lagged = _care_chain(num_units, careful, sloppy)
    H = V.copy() if honest else V[:, lagged]
    H[:, z0] = V[:, z0]
    return SequenceTask("lagged_verifier", P, NEXT, R, H, num_units, z0, honest=honest,
                        info={"careful": list(careful), "sloppy": list(sloppy)})


def negative_control(honest: bool = False, num_units: int = 8, careful=(0.05, 0.75, 0.2),
                     sloppy=(0.35, 0.25, 0.4), sigma: float = 1.0) -> SequenceTask:
    """Negative control: the careful/sloppy chain with an honest, noisy, recoverable PRM:
    ``logit r = logit V[t, z] + sigma * eps(prefix)`` with deterministic ``eps in [-1, 1)`` (a hash of the
    prefix); errors are visible at once (``V = 0``). ``honest=True`` sets ``sigma = 0``."""
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
