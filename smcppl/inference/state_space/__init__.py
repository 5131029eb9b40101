"""Particle filters for state-space models: declaration (a NumPyro model with ``scan``, :mod:`.scan`, or
the lower-level :class:`~smcppl.models.state_space.StateSpace`), filtering (:mod:`.filter`, bootstrap /
guided / auxiliary through :class:`smcppl.SMC`), smoothing (:mod:`.smoothing`), PMMH (:mod:`.pmmh`), particle Gibbs
(:mod:`.pgibbs`), SMC² over the static parameters (:mod:`.smc2`, through :class:`smcppl.SMC`), export and plots
(:mod:`.export`), and the batched bootstrap filter (:mod:`.bootstrap`)."""
from smcppl.inference.state_space.bootstrap import bootstrap_feynman_kac, bootstrap_filter, filtering_mean
from smcppl.inference.state_space.export import filtering_dataset, paths_dataset, plot_filtering
from smcppl.inference.state_space.filter import StateSpaceFilter, filter_feynman_kac, weighted_moments
from smcppl.inference.state_space.pgibbs import ParticleGibbs, conditional_smc
from smcppl.inference.state_space.pmmh import PMMH
from smcppl.inference.state_space.scan import StateSpaceModelError, inspect_scan_model, scan_state_space
from smcppl.inference.state_space.smc2 import SMC2
from smcppl.inference.state_space.smoothing import SmoothingResult, smooth

__all__ = ["bootstrap_feynman_kac", "bootstrap_filter", "filtering_mean", "StateSpaceFilter", "filter_feynman_kac",
           "weighted_moments", "PMMH", "ParticleGibbs", "SMC2", "conditional_smc", "StateSpaceModelError",
           "inspect_scan_model", "scan_state_space", "smooth",
           "SmoothingResult", "filtering_dataset", "paths_dataset", "plot_filtering"]
