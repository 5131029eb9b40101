"""Host driver: the sequence particle filter for policies that are not JAX.

The policy and the potential may be any Python objects (an LLM behind an API, a PyTorch model, NumPy
code) with the protocol of :mod:`smcppl.core.sequence_state`, except that the first argument of
``init``/``step`` is a ``numpy.random.Generator`` instead of a JAX key and arrays may be anything
``numpy.asarray`` accepts:

* ``policy.init(rng, prompt) -> SequenceState`` (one sequence, tiled to N, or N of them);
* ``policy.step(rng, state) -> (state, log_p)`` on N sequences (NumPy arrays; same shapes out as in),
  or ``(state, log_p, log_q)`` when the unit is drawn from a proposal ``q`` (:mod:`.proposals`);
* ``potential.prefix(state)``, ``potential.complete(state)`` -> ``[N]`` log-potentials.

How it runs (ARCHITECTURE.md, "One engine": the engine step is the only step). :func:`run_host` calls
``policy.init`` on the host, whose state fixes every shape, then runs the filter's own Feynman–Kac
model (:func:`~smcppl.inference.sequence.model.sequence_feynman_kac`) with the engine's
:func:`~smcppl.core.engine.run_fixed`, under one ``jax.jit``, on a *bridge*: a JAX policy and potential
whose methods hand NumPy copies of the state to the host objects through
``jax.experimental.io_callback`` (side-effecting, so never dropped or repeated) and return their
results with the shapes of that first state. What runs where:

* host (Python): ``policy.init`` once, then every ``policy.step``, ``potential.prefix`` and
  ``potential.complete`` (the policy draws from the ``numpy.random.Generator`` the bridge holds); the
  look-ahead's ``k`` successors are ``k`` sequential calls (the callback's ``vmap`` is a loop);
* compiled (XLA): everything else, the same code as the JAX filter: resampling (entropic included),
  unit scores, reweighting, look-ahead arithmetic, diagnostics and ``log Z``.

Cost: per unit one policy call and two potential calls (``k`` more policy calls for the look-ahead),
each a round trip of the state through JAX's callback machinery (about 0.3 ms on a busy 2-core CPU,
next to the policy's own time) and no other Python; the program is compiled once per filter, ``N`` and
state shapes (seconds, like the JAX filter) and reused by later calls. The alternative, the engine step
run eagerly in a Python loop, would dispatch the step's hundred-odd small operations one by one
(milliseconds per step) and could not run the filter's vmapped look-ahead on a host policy without a
second code path.

The result carries the engine's :class:`~smcppl.core.engine.SMCOutput` (NumPy leaves), so
``ParticleFilter.select`` and the ArviZ exporter work on it unchanged. Runs with the same filter share a
bridge: do not run one filter from several threads at once.
"""
from __future__ import annotations

import weakref
from typing import Any, NamedTuple, Optional

import jax
import numpy as np
from jax.experimental import io_callback

from smcppl.core.engine import SMCOutput, raise_if_failed, run_fixed, validate_num_particles
from smcppl.core.sequence_state import SequenceState, as_sequence_state
from smcppl.inference.sequence.filter import ParticleFilter
from smcppl.inference.sequence.model import raise_invalid_scores, sequence_feynman_kac
from smcppl.inference.sequence.options import check_init_state, check_potential_output, check_step_output
from smcppl.inference.sequence.weights import float_dtype

__all__ = ["run_host", "HostResult"]


class HostResult(NamedTuple):
    """``output``: a single-chain :class:`~smcppl.core.engine.SMCOutput` (NumPy leaves);
    ``log_evidence``: the log Z estimate; ``policy_calls``/``potential_calls``: totals."""

    output: SMCOutput
    log_evidence: float
    policy_calls: int
    potential_calls: int


def _np_state(x: Any, what: str) -> SequenceState:
    st = as_sequence_state(x, what)
    return SequenceState(np.asarray(st.tokens), np.asarray(st.lengths), np.asarray(st.done, bool),
                         jax.tree_util.tree_map(np.asarray, st.aux))


def _spec(x: np.ndarray) -> jax.ShapeDtypeStruct:
    """The shape and (JAX-canonical: int32/float32 unless ``jax_enable_x64``) dtype ``x`` has inside jit."""
    return jax.ShapeDtypeStruct(np.shape(x), jax.dtypes.canonicalize_dtype(np.asarray(x).dtype))


class _Bridge:
    """The host policy and potential as a JAX policy and potential (module docstring). ``spec``: the
    tiled state's shapes and dtypes; ``rng``: the Generator of the current run; ``error``: the first
    exception a host call of the current run raised. After it, the callbacks return zeros without calling
    the host objects (the compiled run finishes at no cost) and :func:`run_host` raises it: an exception
    raised inside a callback would reach the caller only as a runtime error of the compiled program."""

    def __init__(self, policy: Any, potential: Any, spec: SequenceState, num_particles: int):
        self.policy, self.potential, self.spec, self.n = policy, potential, spec, num_particles
        self.rng: Optional[np.random.Generator] = None
        self.error: Optional[BaseException] = None
        self.ft = jax.ShapeDtypeStruct((num_particles,), float_dtype())

    def _host(self, fn, placeholder, *args):
        if self.error is None:
            try:
                return fn(*args)
            except Exception as e:  # raised again by run_host once the compiled run has returned
                self.error = e
        return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), placeholder)

    # ---- policy protocol (JAX side)
    def init(self, key, prompt):
        return prompt  # the initial state, drawn on the host by run_host and passed in as an argument

    def step(self, key, state):
        # the key goes in (unused by the host) so that under vmap (the look-ahead's k successors) the call
        # is batched: k sequential host calls, not one call whose result is broadcast
        out = (self.spec, self.ft, self.ft)
        return io_callback(lambda _, s: self._host(self._step, out, s), out, jax.random.key_data(key), state,
                           ordered=False)

    # ---- potential protocol (JAX side)
    def prefix(self, state):
        return io_callback(lambda s: self._host(self._score, self.ft, "prefix", s), self.ft, state, ordered=False)

    def complete(self, state):
        return io_callback(lambda s: self._host(self._score, self.ft, "complete", s), self.ft, state, ordered=False)

    # ---- host side
    def _step(self, state):
        state = _np_state(state, "policy.step")
        out = self.policy.step(self.rng, state)
        if isinstance(out, tuple) and len(out) in (2, 3):
            out = (_np_state(out[0], "policy.step"),) + tuple(np.asarray(x) for x in out[1:])
        new, log_p, log_q = check_step_output(out, state, self.n, dtypes=False)
        new = jax.tree_util.tree_map(lambda x, s: np.asarray(x, s.dtype), new, self.spec)
        log_p = np.asarray(log_p, self.ft.dtype)
        # q = p for a pair: log_q = log_p, so the filter's log p - log q is exactly 0
        return new, log_p, (log_p if log_q is None else np.asarray(log_q, self.ft.dtype))

    def _score(self, name, state):
        value = np.asarray(getattr(self.potential, name)(_np_state(state, f"potential.{name}")))
        return np.asarray(check_potential_output(name, value, self.n), self.ft.dtype)


_RUNS: "weakref.WeakKeyDictionary[ParticleFilter, dict]" = weakref.WeakKeyDictionary()


def _compiled_run(pf: ParticleFilter, state0: SequenceState, num_particles: int, single: bool, t_max: int):
    """``(bridge, run)``: ``run(rng_key, state0) -> SMCOutput`` jitted, cached per filter, settings and shapes."""
    n = num_particles
    spec0 = jax.tree_util.tree_map(_spec, state0)
    spec = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(((n,) if single else ()) + s.shape, s.dtype), spec0)
    flat, tree = jax.tree_util.tree_flatten(spec)
    key = (n, single, tree, tuple((s.shape, s.dtype) for s in flat), id(pf.policy), id(pf.potential), pf.weights,
           pf.lookahead, pf.score_eps, pf.max_steps, pf.resampling)
    cache = _RUNS.setdefault(pf, {})
    if key not in cache:
        bridge = _Bridge(pf.policy, pf.potential, spec, n)
        max_steps = pf.max_steps or t_max

        def run(rng_key, st0):
            fk = sequence_feynman_kac(bridge, bridge, st0, n, max_steps, pf.weights, pf.lookahead, pf.score_eps,
                                      single)
            return run_fixed(rng_key, fk, max_steps - 1, pf.resampling)

        cache[key] = (bridge, jax.jit(run))
    return cache[key]


def run_host(pf: ParticleFilter, rng_key: jax.Array, num_particles: int, prompt: Any = None,
             rng: Optional[np.random.Generator] = None) -> HostResult:
    """Run the particle filter ``pf`` (weights, resampling, entropic, look-ahead as configured) with a host
    policy (module docstring). ``rng_key`` drives the engine (resampling, look-ahead picks); ``rng``
    (default: seeded from ``rng_key``) is handed to the policy. Raises :class:`~smcppl.SMCError` if every
    particle has weight ``-inf``, ValueError on scores outside [0, 1] in score mode (with ``check_scores``)
    and whatever a host call raised (e.g. a shape error naming the policy or potential method)."""
    n = validate_num_particles(num_particles)
    if pf.proposal is not None:
        raise ValueError("run_host: ParticleFilter(proposal=...) draws with JAX keys; a host policy draws from its "
                         "own proposal and returns (state, log_p, log_q) from step. Build the filter without "
                         "proposal=.")
    if rng is None:
        rng = np.random.default_rng(np.asarray(jax.random.key_data(rng_key)).ravel().astype(np.uint64))
    state0 = _np_state(pf.policy.init(rng, prompt), "policy.init")
    t_max, single = check_init_state(state0, n)
    bridge, run = _compiled_run(pf, state0, n, single, t_max)
    bridge.rng, bridge.error = rng, None
    try:
        out = jax.device_get(run(rng_key, state0))
    finally:
        bridge.rng = None
    if bridge.error is not None:
        raise bridge.error
    out = jax.tree_util.tree_map(np.asarray, out)
    if pf.checks_scores:
        raise_invalid_scores(out.state.particles.invalid)
    raise_if_failed(out, "Host particle filter")
    params = out.state.params
    return HostResult(out, float(out.log_evidence), int(params["policy_calls"]), int(params["potential_calls"]))
