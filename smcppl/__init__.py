"""smcppl: Sequential Monte Carlo for the JAX probabilistic-programming stack (NumPyro, BlackJAX, ArviZ)."""
from smcppl.core import *  # noqa: F401,F403
from smcppl.core import Entropic, Resampling, SMCError, FeynmanKac  # noqa: F401
from smcppl.inference.bootstrap import bootstrap_filter  # noqa: F401

__version__ = "0.1.0"
