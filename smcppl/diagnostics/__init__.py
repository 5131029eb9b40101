"""Diagnostics: ArviZ export, summaries, plots, simulation-based calibration.

Submodules are imported lazily (``from smcppl.diagnostics import plots``) so that importing
smcppl does not import matplotlib or ArviZ.
"""
# Submodules load on first use (module __getattr__ below): ``import smcppl`` and ``SMC.run`` need the health
# checks only, and the export's xarray and pandas cost ~0.2 s of a fresh process.
_EXPORT = ("as_datatree", "datatree_to_arviz", "load_netcdf", "output_to_datatree", "save_netcdf", "smc_stats_dataset",
           "to_arviz", "to_datatree")
_SUMMARY = ("get_smc_stats", "posterior_summary", "print_summary", "smc_summary")
_HEALTH = ("HealthReport", "SMCHealthWarning", "check_health")

_PLOTS = ("plot_tempering_schedule", "plot_ess", "plot_acceptance", "plot_genealogy", "plot_log_evidence",
          "plot_weights", "plot_posterior", "save_diagnostic_plots", "DiagnosticUnavailable")

__all__ = ["to_datatree", "to_arviz", "output_to_datatree", "datatree_to_arviz", "as_datatree", "save_netcdf",
           "load_netcdf", "smc_stats_dataset", "print_summary", "smc_summary", "get_smc_stats",
           "posterior_summary", "check_health", "HealthReport", "SMCHealthWarning", "lineage_mcse", *_PLOTS]


def __getattr__(name):
    import importlib

    for module, names in (("export", _EXPORT), ("summary", _SUMMARY), ("health", _HEALTH), ("mcse", ("lineage_mcse",)),
                          ("plots", _PLOTS)):
        if name in names:
            return getattr(importlib.import_module(f"smcppl.diagnostics.{module}"), name)
    raise AttributeError(f"module 'smcppl.diagnostics' has no attribute {name!r}")
