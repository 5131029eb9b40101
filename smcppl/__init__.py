"""smcppl: Sequential Monte Carlo for the JAX probabilistic-programming stack (NumPyro, BlackJAX, ArviZ).

The front end is :class:`SMC` (``SMC(algorithm, num_particles, num_chains).run(key, *args)``); the
algorithms are :class:`TemperedSMC` and :class:`AnnealedLangevin` (NumPyro models), :class:`ParticleFilter`
(sequence policies) and the Feynman–Kac correctors (score-based models). The layout and the vocabulary
are in ARCHITECTURE.md.
"""
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from smcppl import blackjax  # BlackJAX's tempered-SMC interface run by smcppl's engine
from smcppl.core import *  # the core's public names (engine, weights, resampling, policies)
from smcppl.core import Entropic, FeynmanKac, Resampling, SMCError
from smcppl.core.result import SMCResult
from smcppl.diagnostics.health import SMCHealthWarning
from smcppl.inference.correctors import FeynmanKacCorrector, annealed, fk_steering, guided, product_of_experts
from smcppl.inference.sequence import (LookAhead, ParticleFilter, SequenceState, TemperedProposal, ead_rollouts,
                                      ead_schedule, particle_filter, run_host)
from smcppl.inference.state_space import (PMMH, SMC2, ParticleGibbs, StateSpaceFilter, StateSpaceModelError,
                                         bootstrap_filter, smooth)
from smcppl.inference.tempered import AnnealedLangevin, ModelError, TemperedSMC
from smcppl.inference.tempered.blackjax_api import legacy_tempered_smc as tempered_smc  # deprecated
from smcppl.models.sde import VESDE, VPSDE
from smcppl.models.state_space import StateSpace
from smcppl.runner import SMC, Plan

try:
    __version__ = _version("smcppl")  # one version, in pyproject.toml
except _PackageNotFoundError:  # pragma: no cover - a source tree that was not installed
    __version__ = "unknown"
