"""Particle filters over sequence policies guided by process rewards: the filter's Feynman–Kac model
and front end (:mod:`.filter`) and the host driver for policies outside JAX (:mod:`.host`). The
protocol types live in :mod:`smcppl.core.sequence_state`."""
from smcppl.inference.sequence.filter import LookAhead, ParticleFilter, SequenceState, particle_filter
from smcppl.inference.sequence.host import HostResult, run_host

__all__ = ["LookAhead", "ParticleFilter", "SequenceState", "particle_filter", "HostResult", "run_host"]
