"""Diagnostics: ArviZ export, summaries, plots, simulation-based calibration.

Submodules are imported lazily (``from smcppl.diagnostics import plots``) so that importing
smcppl does not import matplotlib or ArviZ.
"""
from smcppl.diagnostics.export import (
    as_datatree,
    datatree_to_arviz,
    load_netcdf,
    output_to_datatree,
    save_netcdf,
    smc_stats_dataset,
    to_arviz,
    to_datatree,
)
from smcppl.diagnostics.health import HealthReport, SMCHealthWarning, check_health
from smcppl.diagnostics.mcse import lineage_mcse
from smcppl.diagnostics.summary import get_smc_stats, posterior_summary, print_summary, smc_summary

_PLOTS = ("plot_tempering_schedule", "plot_ess", "plot_acceptance", "plot_genealogy", "plot_log_evidence",
          "plot_weights", "plot_posterior", "save_diagnostic_plots", "DiagnosticUnavailable")

__all__ = ["to_datatree", "to_arviz", "output_to_datatree", "datatree_to_arviz", "as_datatree", "save_netcdf",
           "load_netcdf", "smc_stats_dataset", "print_summary", "smc_summary", "get_smc_stats",
           "posterior_summary", "check_health", "HealthReport", "SMCHealthWarning", "lineage_mcse", *_PLOTS]


def __getattr__(name):
    if name in _PLOTS:
        from smcppl.diagnostics import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'smcppl.diagnostics' has no attribute {name!r}")
