"""BlackJAX's tempered-SMC interface, run by smcppl's engine. Swap the import and keep the code::

    from smcppl import blackjax          # was: import blackjax

    smc = blackjax.adaptive_tempered_smc(logprior_fn, loglikelihood_fn, blackjax.hmc.build_kernel(),
                                         blackjax.hmc.init, mcmc_parameters, blackjax.smc.resampling.systematic,
                                         0.5, num_mcmc_steps=5)
    state = smc.init(particles)
    state, info = smc.step(key, state)   # state.particles, .weights, .tempering_param; info.log_likelihood_increment

``adaptive_tempered_smc`` and ``tempered_smc`` (fixed schedule: ``step(key, state, tempering_param)``) are
smcppl's (:mod:`smcppl.inference.tempered.blackjax_api`); every other name (``hmc``, ``smc``,
``inner_kernel_tuning``, ...) is BlackJAX's own. smcppl's states also carry ``log_weights`` and the running
``log_evidence``; ``resampling=smcppl.Resampling(...)`` (keyword) gives ESS-triggered or entropic resampling.
"""
from typing import Any as _Any

import blackjax as _blackjax

from smcppl.inference.tempered.blackjax_api import (
    TemperedSMCInfo,
    TemperedSMCState,
    adaptive_tempered_smc,
    tempered_smc,
)

__all__ = ["TemperedSMCInfo", "TemperedSMCState", "adaptive_tempered_smc", "tempered_smc"]


def __getattr__(name: str) -> _Any:
    """Any other name is BlackJAX's (``hmc``, ``smc``, ``inner_kernel_tuning``, ...); dunder names are not
    forwarded (BlackJAX's ``__path__`` would make this module pose as its package)."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(_blackjax, name)
