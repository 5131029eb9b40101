"""The public result of one :meth:`smcppl.SMC.run`: what the diagnostics, the export and the plots read.

Every leaf has a leading chain axis. The runner builds it; nothing outside the runner reads the
runner's private state (ARCHITECTURE.md, "The run and its checks").
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax

from smcppl.core.engine import SMCOutput
from smcppl.core.policy import Resampling
from smcppl.core.weights import log_normalize

__all__ = ["SMCResult"]


class SMCResult(NamedTuple):
    """One run of ``num_chains`` independent SMC chains.

    name: the algorithm (e.g. ``"TemperedSMC"``). output: the engine's :class:`~smcppl.core.engine.SMCOutput`
    (per-stage trace, final state, ``log_evidence``). samples: the equally weighted draws, name ->
    ``[num_chains, num_particles, ...]`` (final resampling, one lineage contiguous). final_particles: the
    particles behind those draws in the sampler's own representation (for per-draw statistics).
    draw_stats: ``lineage`` (the draws' MCSE clusters) and ``n_unique_draws``. metadata: what the
    algorithm's plan gives the exporter (observed data, dims, site names, log-likelihood function).
    attrs: settings and timings (str/int/float; written to the export's attributes). resampling: the
    policy the chains ran with. health: the :class:`~smcppl.diagnostics.health.HealthReport` of the run.
    postprocess: one chain's final particles -> name -> ``[N, ...]`` arrays (for the weighted particles).
    """

    name: str
    output: SMCOutput
    samples: Mapping[str, Any]
    final_particles: Any
    draw_stats: Mapping[str, Any]
    metadata: Mapping[str, Any]
    attrs: Mapping[str, Any]
    resampling: Resampling
    health: Optional[Any] = None
    postprocess: Optional[Callable] = None

    @property
    def log_evidence(self):
        """``log Z_hat`` of each chain, shape ``(num_chains,)``."""
        return self.output.log_evidence

    @property
    def num_chains(self) -> int:
        return int(self.attrs.get("num_chains", 1))

    def get_weighted_particles(self):
        """The final particles (before the final resampling, postprocessed like the draws) and their
        normalised log-weights ``log W_i = l_i - logsumexp(l)``, per chain."""
        parts = jax.vmap(self.postprocess)(self.output.state.particles)
        return parts, jax.vmap(lambda lw: log_normalize(lw)[0])(self.output.state.log_weights)

