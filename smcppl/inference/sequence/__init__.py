"""Particle filters over sequence policies guided by process rewards, one idea per module: the weight
arithmetic (:mod:`.weights`), options and input checks (:mod:`.options`), the Feynman–Kac model of the
one engine (:mod:`.model`), proposals other than the policy (:mod:`.proposals`), the final answer
(:mod:`.selection`), the front end (:mod:`.filter`) and the host driver for policies outside JAX
(:mod:`.host`). The protocol types live in :mod:`smcppl.core.sequence_state`."""
from smcppl.core.sequence_state import Potential, SequencePolicy, SequenceState
from smcppl.inference.sequence.filter import ParticleFilter, particle_filter
from smcppl.inference.sequence.host import HostResult, run_host
from smcppl.inference.sequence.options import LookAhead
from smcppl.inference.sequence.proposals import (EADRollouts, TemperedProposal, UnitPolicy, ead_rollouts, ead_schedule,
                                                 proposal_log_probs)
from smcppl.inference.sequence.selection import select_final, select_index

__all__ = ["LookAhead", "ParticleFilter", "SequenceState", "SequencePolicy", "Potential", "particle_filter",
           "select_final", "select_index", "HostResult", "run_host", "TemperedProposal", "UnitPolicy", "ead_schedule",
           "ead_rollouts", "EADRollouts", "proposal_log_probs"]
