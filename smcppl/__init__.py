"""smcppl: Sequential Monte Carlo for the JAX probabilistic-programming stack (NumPyro, BlackJAX, ArviZ)."""
from smcppl.core import *  # noqa: F401,F403
from smcppl.core import Entropic, Resampling, SMCError, FeynmanKac  # noqa: F401
from smcppl.inference.state_space.bootstrap import bootstrap_filter  # noqa: F401

__version__ = "0.1.0"
from smcppl.runner import SMC, Plan  # noqa: F401,E402
from smcppl.diagnostics.health import SMCHealthWarning  # noqa: F401,E402
from smcppl.inference.tempered.model import TemperedSMC  # noqa: F401,E402
from smcppl.inference.tempered.blackjax_api import legacy_tempered_smc as tempered_smc  # noqa: F401,E402 (deprecated)
from smcppl import blackjax  # noqa: F401,E402 (BlackJAX's tempered-SMC interface)
from smcppl.inference.tempered.numpyro_model import ModelError  # noqa: F401,E402
from smcppl.inference.tempered.annealed_langevin import AnnealedLangevin  # noqa: F401,E402
from smcppl.inference.sequence.filter import LookAhead, ParticleFilter, SequenceState, particle_filter  # noqa: F401,E402
from smcppl.inference.sequence.host import run_host  # noqa: F401,E402
from smcppl.inference.correctors.corrector import (FeynmanKacCorrector, annealed, fk_steering, guided,  # noqa: F401,E402
                                         product_of_experts)
from smcppl.models.sde import VESDE, VPSDE  # noqa: F401,E402
