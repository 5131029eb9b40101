"""Particle filtering over sequence policies: PF, entropic PF (ePF) and look-ahead modulation (LaM),
the front end :class:`ParticleFilter` and the pure run :func:`particle_filter`.

A **sequence policy** extends partial sequences by one unit (a token, or a step ending at a boundary
token); a **potential** (process reward model, PRM) scores partial and complete sequences; their
fixed-shape protocol is :mod:`smcppl.core.sequence_state`. The filter is a Feynman–Kac model of the one
engine (:mod:`.model`) and runs through :class:`~smcppl.SMC`; its weights (``"twist"`` or ``"score"``)
and the look-ahead arithmetic are in :mod:`.weights`, its options and input checks in :mod:`.options`,
the choice of the final answer in :mod:`.selection`; policies outside JAX run through the host driver
(:mod:`.host`); units may be drawn from a proposal other than the policy (tempered, truncated,
annealed: :mod:`.proposals`), each weighted by ``p / q``. At the last step every unfinished particle is scored as
complete (the horizon truncates).

**ePF** is the core's entropic resampling (:class:`~smcppl.Entropic`: ``softmax(l / tau)`` when
``ESS/N < ess_threshold`` in the first ``early_phase`` of the run), faithful (no correction) by default;
``Entropic(correct=True)`` carries the residual ``(1 - 1/tau) l`` and keeps the system properly weighted.

**LaM** (:class:`LookAhead`): before each resampling, ``k`` successors of every unfinished particle
modulate its resampling weight; ``reuse=True`` takes one of the drawn successors (uniformly) as the next
state, ``correct=True`` divides the modulation back out at the next step (auxiliary particle filter).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp

from smcppl.core.engine import FeynmanKac, SMCOutput, run_fixed, validate_num_particles
from smcppl.core.plan import Plan
from smcppl.core.policy import Resampling
from smcppl.core.sequence_state import Potential, SequencePolicy, SequenceState
from smcppl.inference.sequence.model import FilterParticles, check_invalid_scores, postprocess, sequence_feynman_kac
from smcppl.inference.sequence.options import (LookAhead, check_filter_options, check_shapes, resolve_lookahead,
                                               resolve_resampling)
from smcppl.inference.sequence.proposals import resolve_proposal
from smcppl.inference.sequence.selection import select_final, select_index

# SequenceState, LookAhead, FilterParticles, select_final and select_index are re-exported: importable from here
__all__ = ["ParticleFilter", "particle_filter", "SequenceState", "SequencePolicy", "Potential", "LookAhead",
           "FilterParticles", "select_final", "select_index"]


class ParticleFilter:
    """Particle filter over a sequence policy, for :class:`~smcppl.SMC`::

        pf = ParticleFilter(policy, prm, weights="score", entropic="epf_ess", lookahead=LookAhead(k=1))
        smc = SMC(pf, num_particles=16, num_chains=4).run(jax.random.key(0), prompt)
        pf.select(smc)            # final answers per chain

    weights: ``"score"`` or ``"twist"`` (:mod:`.weights`). resampling: a scheme name (resample every
    step) or a :class:`~smcppl.Resampling` (e.g. ``when="ess"``); default multinomial, every step.
    entropic: None, True, a temperature rule (``"epf_ess"``, ``"epf_entropy"``, ``"epf_linear"``,
    ``"target"``) or an :class:`~smcppl.Entropic` (``correct=True`` for the corrected variant).
    lookahead: None, True, ``k`` or a :class:`LookAhead`. max_steps: policy steps per run (default:
    ``T_max``). selection: ``"argmax"``, ``"sample"`` or ``"vote"`` (needs ``answer_fn(state) -> [N]``
    integer answers). score_eps: clipping of PRM scores. check_scores: raise when a score lies outside
    [0, 1] in score mode (one host callback at the end of each run). proposal: None (units drawn from the
    policy), a :class:`~.proposals.TemperedProposal` of ``policy``, a temperature, an EAD table
    (:func:`~.proposals.ead_schedule`) or a function ``t -> temperature``; every unit (look-ahead
    successors included) is then drawn from it and weighted by ``p / q`` (:mod:`.weights`), so the target
    and ``log Z`` are those of the policy. A policy whose ``step`` returns ``(state, log_p, log_q)`` is its
    own proposal.
    """

    def __init__(self, policy: SequencePolicy, potential: Potential, *, weights: str = "score",
                 resampling: Union[str, Resampling, None] = None, entropic: Any = None, lookahead: Any = None,
                 max_steps: Optional[int] = None, selection: str = "argmax", answer_fn: Optional[Callable] = None,
                 score_eps: float = 1e-6, check_scores: bool = True, proposal: Any = None):
        score_eps, max_steps = check_filter_options(policy, potential, weights, selection, answer_fn, score_eps,
                                                    max_steps)
        self.policy, self.potential, self.weights = policy, potential, weights
        self.proposal = proposal
        self.stepper = resolve_proposal(policy, proposal)
        self.resampling = resolve_resampling(resampling, entropic)
        self.lookahead = resolve_lookahead(lookahead)
        self.max_steps = max_steps
        self.selection, self.answer_fn = selection, answer_fn
        self.score_eps, self.check_scores = score_eps, bool(check_scores)

    @property
    def name(self) -> str:
        base = "ePF" if self.resampling.entropic is not None else "PF"
        return base + ("+LaM" if self.lookahead is not None else "")

    @property
    def checks_scores(self) -> bool:
        """Whether runs raise on scores outside [0, 1] (score mode with ``check_scores``)."""
        return self.check_scores and self.weights == "score"

    def feynman_kac(self, num_particles: int, prompt: Any = None) -> tuple[FeynmanKac, int, int]:
        """``(FeynmanKac, num_engine_steps, max_steps)`` after checking shapes (no compilation)."""
        num_particles = validate_num_particles(num_particles)
        t_max, single = check_shapes(self.stepper, self.potential, prompt, num_particles)
        max_steps = self.max_steps or t_max
        fk = sequence_feynman_kac(self.stepper, self.potential, prompt, num_particles, max_steps, self.weights,
                                  self.lookahead, self.score_eps, single)
        return fk, max_steps - 1, max_steps

    def build(self, num_particles: int, prompt: Any = None) -> Plan:
        """The :class:`~smcppl.Plan` run by :class:`~smcppl.SMC` (``SMC(pf, N).run(key, prompt)``)."""
        fk, num_steps, max_steps = self.feynman_kac(num_particles, prompt)
        la = self.lookahead
        attrs = {"weights": self.weights, "max_steps": max_steps, "selection": self.selection,
                 "lookahead_k": 0 if la is None else la.k, "lookahead_lam": 0.0 if la is None else la.lam,
                 "lookahead_reuse": int(bool(la and la.reuse)), "lookahead_correct": int(bool(la and la.correct)),
                 "score_eps": self.score_eps, "proposal": "policy" if self.proposal is None else "tempered"}
        check = self.checks_scores
        return Plan(fk=fk, num_stages=num_steps, max_stages=num_steps,
                    postprocess=lambda parts: postprocess(parts, check),
                    resampling=self.resampling, metadata={}, attrs=attrs, name=self.name)

    def select(self, result: Any, key: Optional[jax.Array] = None, method: Optional[str] = None) -> dict:
        """Final answer of each chain from an :class:`~smcppl.SMC` run or an ``SMCOutput`` (with or without a
        chain axis): dict with ``index``, ``tokens``, ``length``, ``score``, ``log_weight`` (and ``answer``
        when ``answer_fn`` is set), each with a leading chain axis (:mod:`.selection`)."""
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


def particle_filter(rng_key: jax.Array, pf: ParticleFilter, num_particles: int, prompt: Any = None,
                    record_ancestors: bool = False) -> SMCOutput:
    """One run of ``pf`` as a pure, jit/vmap-able function of ``rng_key``: an
    :class:`~smcppl.core.engine.SMCOutput` (use :func:`select_final` for the answer)."""
    fk, num_steps, _ = pf.feynman_kac(num_particles, prompt)
    out = run_fixed(rng_key, fk, num_steps, pf.resampling, record_ancestors)
    if pf.checks_scores:
        zero = check_invalid_scores(out.state.particles)
        # the check is a pure callback: tie it to the outputs that selection and log Z use
        out = out._replace(log_evidence=out.log_evidence + zero,
                           state=out.state._replace(log_weights=out.state.log_weights + zero))
    return out
