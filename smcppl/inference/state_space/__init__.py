"""Particle filters for state-space models (:mod:`.bootstrap`)."""
from smcppl.inference.state_space.bootstrap import bootstrap_feynman_kac, bootstrap_filter, filtering_mean

__all__ = ["bootstrap_feynman_kac", "bootstrap_filter", "filtering_mean"]
