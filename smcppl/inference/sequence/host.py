"""Host runner: the sequence particle filter for policies that are not JAX.

The policy and the potential may be any Python objects (an LLM behind an API, a PyTorch model, NumPy
code) with the protocol of :mod:`smcppl.inference.sequence.filter` except that the first argument of
``init``/``step`` is a ``numpy.random.Generator`` instead of a JAX key and arrays may be anything
``numpy.asarray`` accepts:

* ``policy.init(rng, prompt) -> SequenceState`` (one sequence, tiled to N, or N of them);
* ``policy.step(rng, state) -> (state, log_p)`` on N sequences (NumPy arrays);
* ``potential.prefix(state)``, ``potential.complete(state)`` -> ``[N]`` log-potentials.

:func:`run_host` loops over steps in Python (the one deliberate exception to "no Python loop on the hot
path") and calls the *same* jitted functions as the JAX filter for everything that is not the policy:
the core's resampling step (:func:`smcppl.core.policy.resample`, entropic included), the unit scores,
the reweighting and the look-ahead modulation (:mod:`smcppl.inference.sequence.filter`), and the diagnostics.
The result carries a core :class:`~smcppl.core.engine.SMCOutput`, so ``ParticleFilter.select`` and the
ArviZ exporter (:func:`smcppl.diagnostics.export.output_to_datatree`) work on it unchanged.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.engine import SMCError, SMCOutput, SMCState, StepInfo, validate_num_particles
from smcppl.core.policy import count_unique, resample
from smcppl.core.weights import all_dead, ess_ratio, log_mean_exp, normalized_entropy
from smcppl.core.sequence_state import SequenceState, as_sequence_state as _as_state
from smcppl.inference.sequence.filter import ParticleFilter
from smcppl.inference.sequence.model import FilterParticles
from smcppl.inference.sequence.options import lookahead_log_floor
from smcppl.inference.sequence.weights import lookahead_adjustment, reweight, unit_scores

__all__ = ["run_host", "HostResult"]


class HostResult(NamedTuple):
    """``output``: a single-chain :class:`~smcppl.core.engine.SMCOutput` (NumPy leaves);
    ``log_evidence``: the log Z estimate; ``policy_calls``/``potential_calls``: totals."""

    output: SMCOutput
    log_evidence: float
    policy_calls: int
    potential_calls: int


_resample = jax.jit(resample, static_argnums=(3,))
_scores = jax.jit(unit_scores, static_argnames=("weights", "score_eps"))
_reweight = jax.jit(reweight, static_argnames=("weights", "correct"))
_lookahead = jax.jit(lookahead_adjustment, static_argnames=("log_floor",))


@jax.jit
def _diagnostics(log_weights, indices):
    return (ess_ratio(log_weights), normalized_entropy(log_weights), all_dead(log_weights),
            count_unique(indices, log_weights.shape[0]))


_log_mean_exp = jax.jit(log_mean_exp)


def _np_state(x, what) -> SequenceState:
    st = _as_state(x, what)
    return SequenceState(np.asarray(st.tokens), np.asarray(st.lengths), np.asarray(st.done, bool),
                         jax.tree_util.tree_map(np.asarray, st.aux))


def _take(tree, idx):
    return jax.tree_util.tree_map(lambda x: np.take(np.asarray(x), idx, axis=0), tree)


def run_host(pf: ParticleFilter, rng_key, num_particles: int, prompt=None,
             rng: Optional[np.random.Generator] = None) -> HostResult:
    """Run the particle filter ``pf`` (weights, resampling, entropic, look-ahead as configured) with a host
    policy. ``rng_key`` drives resampling (JAX); ``rng`` (default: seeded from ``rng_key``) is handed to
    the policy. Raises :class:`~smcppl.SMCError` if every particle has weight ``-inf``."""
    n = validate_num_particles(num_particles)
    if rng is None:
        rng = np.random.default_rng(np.asarray(jax.random.key_data(rng_key)).ravel().astype(np.uint64))
    policy, potential, la = pf.policy, pf.potential, pf.lookahead
    ft = np.dtype(jnp.result_type(float))  # the weights' dtype (float64 under jax_enable_x64)
    weights, eps, res_policy = pf.weights, pf.score_eps, pf.resampling
    log_floor = lookahead_log_floor(la)

    seq = _np_state(policy.init(rng, prompt), "policy.init")
    if seq.tokens.ndim == 1:
        seq = jax.tree_util.tree_map(lambda x: np.repeat(np.asarray(x)[None], n, axis=0), seq)
    elif seq.tokens.ndim != 2 or seq.tokens.shape[0] != n:
        raise ValueError(f"policy.init returned tokens of shape {seq.tokens.shape}; expected [T_max] or [{n}, T_max].")
    t_max = seq.tokens.shape[1]
    max_steps = pf.max_steps or t_max
    shapes = jax.tree_util.tree_map(np.shape, seq)

    def advance(seq, t_new):
        out = policy.step(rng, seq)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("policy.step must return a pair (state, log_p).")
        new, lp = _np_state(out[0], "policy.step"), np.asarray(out[1], ft)
        got = jax.tree_util.tree_map(np.shape, new)
        if got != shapes or lp.shape != (n,):
            raise ValueError(f"policy.step returned shapes {got} and log_p {lp.shape}; expected {shapes} and ({n},).")
        done = new.done | (new.lengths >= t_max) | (t_new >= max_steps)
        new = new._replace(done=done)
        was = seq.done
        new = jax.tree_util.tree_map(lambda o, x: np.where(was.reshape((n,) + (1,) * (x.ndim - 1)), o, x), seq, new)
        lp = np.where(was, 0.0, lp)
        log_psi = np.asarray(potential.prefix(new), ft)
        log_phi = np.asarray(potential.complete(new), ft)
        if log_psi.shape != (n,) or log_phi.shape != (n,):
            raise ValueError(f"potential.prefix/complete returned shapes {log_psi.shape}/{log_phi.shape}, expected ({n},).")
        s, invalid = _scores(log_psi, log_phi, new.done, weights=weights, score_eps=eps)
        if pf.check_scores and int(invalid) > 0:
            raise ValueError(f"potential returned {int(invalid)} score(s) outside [0, 1] (log psi > 0) at step {t_new}: "
                             "in weights='score' mode the potential must return log r with r in [0, 1].")
        return new, lp, np.asarray(s), int(np.sum(~was))

    def look(seq, s_cur, t):
        if la is None or t >= max_steps:
            return np.zeros(n, ft), None, 0
        draws = [advance(seq, t + 1) for _ in range(la.k)]  # a loop over the k successors, not over particles
        s_succ = np.stack([d[2] for d in draws], axis=1)
        a = np.asarray(_lookahead(s_cur, s_succ, seq.done, la.lam, log_floor=log_floor))
        stored = None
        if la.reuse:
            j = rng.integers(0, la.k, n)
            stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[d[0] for d in draws])
            pick = lambda x: x[j, np.arange(n)]  # noqa: E731
            stored = (jax.tree_util.tree_map(pick, stacked), s_succ[np.arange(n), j],
                      np.stack([d[1] for d in draws])[j, np.arange(n)])
        return a, stored, la.k * int(np.sum(~seq.done))

    key = rng_key
    seq, lp, s, active = advance(seq, 1)
    a, stored, la_calls = look(seq, s, 1)
    policy_calls = potential_calls = active + la_calls
    held = np.asarray(s + a, ft)
    parts = {"seq": seq, "score": s, "log_p": lp, "origin": np.arange(n, dtype=np.int32), "lookahead": a,
             "held": held, "slot": np.arange(n, dtype=np.int32)}
    log_z = 0.0
    rows = []

    def record(lw, tau, resampled, idx, t):
        e, h, dead, nu = _diagnostics(lw, idx)
        rows.append({"ess": float(e), "entropy": float(h), "tau": float(tau), "resampled": bool(resampled),
                     "log_evidence": log_z + float(_log_mean_exp(lw)), "n_unique_ancestors": int(nu), "dead": bool(dead),
                     "step": t, "policy_calls": policy_calls, "potential_calls": potential_calls,
                     "n_done": int(np.sum(parts["seq"].done)), "unique_origins": int(len(np.unique(parts["origin"])))})
        if dead:
            raise SMCError(f"Host particle filter: every particle has log-weight -inf (or NaN) at step {t}. The potential "
                           "is -inf for all particles: check the potential or use more particles.")

    record(held, 1.0, False, np.arange(n), 1)
    for t in range(1, max_steps):
        key, sub = jax.random.split(key)
        res = _resample(sub, held, jnp.asarray(t / max_steps, ft), res_policy)
        idx = np.asarray(res.indices)
        log_z += float(res.log_evidence_increment)
        parts = _take(parts, idx)
        carried = np.asarray(res.log_weights)
        old = parts["seq"]
        if la is not None and la.reuse:
            new_seq, s_new, lp_new = _take(stored, idx)
            calls = 0
        else:
            new_seq, lp_new, s_new, calls = advance(old, t + 1)
        l = _reweight(carried, parts["lookahead"], parts["score"], s_new, old.done, res.resampled,
                      weights=weights, correct=bool(la is not None and la.correct))
        l = np.asarray(l)
        a, stored, la_calls = look(new_seq, s_new, t + 1)
        policy_calls += calls + la_calls
        potential_calls += calls + la_calls
        held = np.asarray(l + a, ft)
        parts = {"seq": new_seq, "score": np.asarray(s_new), "log_p": parts["log_p"] + lp_new, "origin": parts["origin"],
                 "lookahead": a, "held": held, "slot": np.arange(n, dtype=np.int32)}
        record(held, float(res.tau), bool(res.resampled), idx, t + 1)

    log_evidence = log_z + float(_log_mean_exp(held))
    trace_np = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    params = {k: trace_np[k] for k in ("step", "policy_calls", "potential_calls", "n_done", "unique_origins")}
    trace = StepInfo(ess=trace_np["ess"], entropy=trace_np["entropy"], tau=trace_np["tau"],
                     resampled=trace_np["resampled"], log_evidence=trace_np["log_evidence"],
                     n_unique_ancestors=trace_np["n_unique_ancestors"], dead=trace_np["dead"], params=params,
                     move_info=None, ancestors=None, summary=None)
    particles = FilterParticles(parts["seq"], parts["score"], parts["log_p"], parts["origin"], parts["lookahead"],
                                None, np.zeros(n, np.int32))
    final = {k: np.asarray(v[-1]) for k, v in params.items()}
    state = SMCState(particles, held, np.asarray(log_z), final, np.asarray(max_steps - 1))
    out = SMCOutput(state, trace, np.asarray(len(rows)), np.asarray(log_evidence), np.asarray(-1))
    return HostResult(out, log_evidence, policy_calls, potential_calls)
