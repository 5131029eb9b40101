"""Annealed Langevin (Jarzynski / AIS) corrector on a NumPyro model's own density.

Fixed ladder ``0 = beta_0 < beta_1 < ... < beta_K = 1`` between prior and posterior. Each rung adds
the AIS/Jarzynski weight and then moves every particle with one Langevin step targeting
``pi_{beta_{k+1}}``::

    log w += (beta_{k+1} - beta_k) * loglik(u)
    u ~ K_{beta_{k+1}}(u, .)

With ``adjusted=True`` the step is MALA (BlackJAX), which leaves ``pi_beta`` invariant, so the
weighted particles and ``log Z_hat`` are exact (unbiased ``Z_hat``) for any step size and ladder.
With ``adjusted=False`` it is the unadjusted Langevin algorithm: cheaper and closer to the score-based
correctors, but each step only approximately preserves ``pi_beta``, so the estimates carry an
O(step size) bias. Resampling is ESS-triggered by default; this is the Feynman–Kac model of
:func:`smcppl.inference.tempered.tempered_feynman_kac` with a fixed ladder and one move per rung,
giving posterior draws and ``log Z`` by a different path than the adaptive :class:`TemperedSMC`.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from smcppl.core.checks import positive_int, renamed_keyword
from smcppl.core.plan import Plan
from smcppl.core.policy import Resampling
from smcppl.inference.tempered.model import TemperedSMC
from smcppl.inference.tempered.numpyro_model import NumPyroDensity

__all__ = ["AnnealedLangevin"]


class AnnealedLangevin(TemperedSMC):
    """``SMC(AnnealedLangevin(model, num_temperatures=200), num_particles=...).run(key, *args, **kwargs)``.

    num_temperatures: rungs ``K`` of the linear ladder ``beta_k = k / K``, ``k = 1..K`` (default 100; or pass
    ``schedule``; ``num_steps`` is its deprecated name). step_size: whitened Langevin step (default:
    dimension-based, adapted toward 0.57 acceptance when adjusted). adjusted: MALA (exact) or ULA (biased, O(step
    size)).
    num_langevin_steps: Langevin transitions per rung (``num_mcmc_steps`` of :class:`TemperedSMC`).
    preconditioning: particle covariance (``"full"``, ``"diag"``, ``"none"``).
    """

    def __init__(self, model: Callable, *, num_temperatures: Optional[int] = None, schedule=None,
                 step_size: Optional[float] = None, adjusted: bool = True, num_langevin_steps: int = 1,
                 preconditioning: str = "full",
                 resampling: Optional[Resampling] = None, num_steps: Optional[int] = None, **kwargs):
        what = "num_temperatures" if num_steps is None else "num_steps (now num_temperatures)"
        num_temperatures = renamed_keyword(num_temperatures, num_steps, "num_temperatures", "num_steps",
                                           "AnnealedLangevin")
        num_temperatures = positive_int(100 if num_temperatures is None else num_temperatures, what)
        if schedule is None:
            schedule = np.linspace(0.0, 1.0, num_temperatures + 1)[1:]
        super().__init__(model, move="mala" if adjusted else "ula", num_mcmc_steps=num_langevin_steps,
                         schedule=schedule, step_size=step_size, preconditioning=preconditioning,
                         resampling=resampling if resampling is not None else Resampling("systematic", "ess", 0.5),
                         **kwargs)
        self.adjusted = bool(adjusted)

    def build_from_density(self, num_particles: int, density: NumPyroDensity) -> Plan:
        plan = super().build_from_density(num_particles, density)
        attrs = dict(plan.attrs, sampler="AnnealedLangevin", adjusted=int(self.adjusted))
        return plan._replace(attrs=attrs, name="AnnealedLangevin")
