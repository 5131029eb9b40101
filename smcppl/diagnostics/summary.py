"""Summaries of SMC runs: ArviZ's posterior summary plus the SMC-specific numbers (log Z, stages,
resampling events, final ESS, acceptance)."""
from __future__ import annotations

import sys
import warnings
from typing import Any, Optional, Sequence, TextIO

import numpy as np
import xarray as xr

from smcppl.core.result import SMCResult
from smcppl.diagnostics.export import (SMC_STATS_GROUP, arviz_major_version, as_result, datatree_to_arviz, run_attrs,
                                       smc_stats_dataset)

__all__ = ["print_summary", "smc_summary", "get_smc_stats", "posterior_summary", "lineage_columns", "health_report"]


def get_smc_stats(obj: Any) -> xr.Dataset:
    """The ``smc_stats`` Dataset (with the run's attrs) of an SMC run, a raw ``SMCOutput``, an exported
    DataTree or an ``arviz.InferenceData``."""
    from smcppl.core.engine import SMCOutput

    if isinstance(obj, SMCOutput):
        return smc_stats_dataset(obj)
    if isinstance(obj, SMCResult) or isinstance(getattr(obj, "result", None), SMCResult):  # a run
        result = as_result(obj)
        return smc_stats_dataset(result.output, attrs=run_attrs(result), draw_stats=result.draw_stats)
    if hasattr(obj, "result") and getattr(obj, "result", None) is None:
        raise RuntimeError("Call .run(rng_key, ...) before asking for diagnostics.")
    if isinstance(obj, xr.DataTree):
        if SMC_STATS_GROUP not in obj.children:
            raise ValueError(f"This DataTree has no {SMC_STATS_GROUP!r} group; export an SMC run with "
                             "smcppl.diagnostics.to_datatree(smc).")
        ds = obj[SMC_STATS_GROUP].to_dataset()
        return ds.assign_attrs({**obj.attrs, **ds.attrs})
    groups = getattr(obj, "_groups", None)  # arviz.InferenceData
    if groups is not None:
        if SMC_STATS_GROUP not in groups:
            raise ValueError(f"This InferenceData has no {SMC_STATS_GROUP!r} group; export an SMC run with "
                             "smcppl.diagnostics.to_arviz(smc).")
        ds = getattr(obj, SMC_STATS_GROUP)
        return ds.assign_attrs({**dict(getattr(obj, "attrs", {}) or {}), **ds.attrs})
    raise TypeError(f"Expected an SMC run, an SMCOutput, a DataTree or an InferenceData, got {type(obj).__name__}.")


def _last_valid(values, n_stages):
    return np.array([values[c, max(int(n) - 1, 0)] for c, n in enumerate(n_stages)], float)


def smc_summary(obj: Any) -> dict:
    """SMC numbers of a run (see :func:`get_smc_stats` for accepted inputs): per-chain and summary
    log Z, stage counts, resampling events, final ESS ratio, mean acceptance rate (if moves record it)."""
    ds = get_smc_stats(obj)
    lz = np.asarray(ds["log_evidence"].values, float)
    n_stages = np.asarray(ds["n_stages"].values, int)
    num_chains = lz.shape[0]
    resampled = np.asarray(ds["resampled"].values, bool)
    ess = np.asarray(ds["ess"].values, float)
    out = {
        "num_chains": int(num_chains),
        "num_particles": int(ds.sizes.get("particle", 0)) or None,
        "log_evidence": lz,
        "log_evidence_mean": float(np.mean(lz)),
        "log_evidence_sd": float(np.std(lz, ddof=1)) if num_chains > 1 else float("nan"),
        "n_stages": n_stages,
        "resampling_events": resampled.sum(axis=1),
        "final_ess": _last_valid(ess, n_stages),
    }
    if "acceptance_rate" in ds:
        acc = np.asarray(ds["acceptance_rate"].values, float)
        out["acceptance_rate"] = float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")
    if "beta" in ds:
        out["final_beta"] = _last_valid(np.asarray(ds["beta"].values, float), n_stages)
    if "n_unique_draws" in ds:
        out["n_unique_draws"] = np.asarray(ds["n_unique_draws"].values, int)
    return out


def posterior_summary(data: Any, var_names: Optional[Sequence[str]] = None, prob: float = 0.9) -> Any:
    """ArviZ's ``summary`` of the posterior with a ``prob`` credible interval, in either ArviZ API."""
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. R-hat with a single chain
        if arviz_major_version() >= 1:
            return az.summary(data, var_names=var_names, ci_prob=prob, ci_kind="hdi")  # HDI in both generations
        return az.summary(data, var_names=var_names, hdi_prob=prob)


def _group(exported, name):
    """A group of an exported run as an ``xarray.Dataset`` (DataTree or InferenceData), or None."""
    if isinstance(exported, xr.DataTree):
        return exported[name].to_dataset() if name in exported.children else None
    return getattr(exported, name, None) if name in getattr(exported, "_groups", ()) else None


def lineage_columns(exported: Any, table: Any, var_names: Optional[Sequence[str]] = None) -> Any:
    """``mcse_smc``/``ess_smc`` for the rows of ArviZ's summary ``table`` (same variables, same element
    order), from the draws' lineages (:mod:`smcppl.diagnostics.mcse`); the table unchanged if the export
    has no lineages (e.g. weighted particles)."""
    from smcppl.diagnostics.mcse import lineage_mcse

    post, stats = _group(exported, "posterior"), _group(exported, "sample_stats")
    if post is None or stats is None or "lineage" not in stats or not hasattr(table, "index"):
        return table
    lineage = np.asarray(stats["lineage"].values)
    mcse, ess = [], []
    for name in (post.data_vars if var_names is None else var_names):
        v = np.asarray(post[name].transpose("chain", "draw", ...).values)
        if not np.issubdtype(v.dtype, np.number):
            continue
        _, m, e = lineage_mcse(v, lineage)
        mcse.extend(np.ravel(m))
        ess.extend(np.ravel(e))
    if len(mcse) != len(table.index):
        return table
    table = table.copy()
    table["mcse_smc"] = np.round(mcse, 3)
    table["ess_smc"] = np.round(ess, 0)
    return table


def health_report(exported: Any) -> Any:
    """The :class:`~smcppl.diagnostics.health.HealthReport` of an exported run (recomputed from its
    ``smc_stats`` and posterior, so that it also works on a reloaded file)."""
    from smcppl.diagnostics.health import check_health

    post = _group(exported, "posterior")
    draws = None if post is None else {k: np.asarray(post[k].transpose("chain", "draw", ...).values)
                                        for k in post.data_vars}
    return check_health(get_smc_stats(exported), draws)


def _fmt(values, fmt="{:.2f}"):
    return ", ".join(fmt.format(v) for v in np.ravel(values))


def print_summary(smc: Any, prob: float = 0.9, var_names: Optional[Sequence[str]] = None, file: Optional[TextIO] = None,
                  exclude_deterministic: bool = True) -> Any:
    """Print ArviZ's posterior summary plus the SMC diagnostics (log Z mean and spread across chains,
    stages, resampling events, final ESS, mean acceptance rate); return the summary table
    (a ``pandas.DataFrame``; the SMC numbers of :func:`smc_summary` are in its ``attrs["smc"]``).

    ``smc``: a run (:class:`~smcppl.SMC` or its :class:`~smcppl.core.result.SMCResult`) or its export
    (DataTree / InferenceData). ``prob``: mass of the
    credible interval, ArviZ's highest-density interval (columns ``hdi_5%``/``hdi_95%`` for 0.9 with
    ArviZ < 1, ``hdi90_lb``/``hdi90_ub`` with ArviZ >= 1). ``exclude_deterministic``: as NumPyro,
    summarise only the latent sample sites (when the run records them) unless ``var_names`` is given.
    """
    from smcppl.diagnostics.export import to_datatree

    file = sys.stdout if file is None else file
    if isinstance(smc, xr.DataTree) or hasattr(smc, "_groups"):
        exported = datatree_to_arviz(smc) if isinstance(smc, xr.DataTree) else smc
        health = None  # an export carries its health in attrs (health_report below)
    else:
        if not isinstance(smc, SMCResult) and getattr(smc, "result", None) is None:
            raise RuntimeError("Call .run(rng_key, ...) before asking for a summary.")
        exported = datatree_to_arviz(to_datatree(smc, log_likelihood=False))
        health = as_result(smc).health
    if var_names is None and exclude_deterministic:
        latent = str(get_smc_stats(exported).attrs.get("latent_sites", "") or "")
        post = _group(exported, "posterior")
        keep = [v for v in latent.split(",") if v and post is not None and v in post.data_vars]
        var_names = keep or None
    table = lineage_columns(exported, posterior_summary(exported, var_names=var_names, prob=prob), var_names)
    info = smc_summary(exported)
    health = health or health_report(exported)
    try:
        table.attrs["smc"] = info
    except AttributeError:  # pragma: no cover - non-pandas result
        pass
    ds = get_smc_stats(exported)
    sampler = ds.attrs.get("sampler", "SMC")
    c, n = info["num_chains"], info["num_particles"]
    lines = [table.to_string() if hasattr(table, "to_string") else str(table), "",
             f"{sampler}: {c} chain(s) x {n} particles"]
    lz = info["log_evidence"]
    if c > 1:
        lines.append(f"log Z (log evidence): {info['log_evidence_mean']:.3f} "
                     f"± {info['log_evidence_sd']:.3f} (mean ± sd across {c} chains; "
                     f"se of the mean {info['log_evidence_sd'] / np.sqrt(c):.3f})")
        lines.append(f"  per chain: {_fmt(lz, '{:.3f}')}")
    else:
        lines.append(f"log Z (log evidence): {lz[0]:.3f} (one chain: no spread; use num_chains > 1)")
    st = info["n_stages"]
    lines.append(f"stages: {st.min()}" + (f"-{st.max()}" if st.max() != st.min() else "") +
                 f" (incl. initialisation)   resampling events per chain: {_fmt(info['resampling_events'], '{:d}')}")
    fe = info["final_ess"]
    ess_line = f"final ESS/N: {_fmt(fe)}"
    if n:
        ess_line += f"  (mean ESS {np.nanmean(fe) * n:.0f} of {n})"
    lines.append(ess_line)
    if "acceptance_rate" in info:
        lines.append(f"mean acceptance rate: {info['acceptance_rate']:.3f}")
    if np.isfinite(health.divergent_fraction):
        lines.append(f"divergent transitions: {health.divergent_fraction:.1%} of particle moves")
    if "n_unique_draws" in info:
        lines.append(f"distinct final draws per chain: {_fmt(info['n_unique_draws'], '{:d}')}")
    if "mcse_smc" in getattr(table, "columns", ()):
        lines.append("mcse_smc / ess_smc: Monte Carlo error of the mean from the draws' lineages (copies of one "
                     "particle counted as correlated); ArviZ's ess_*/mcse_* read the lineage-ordered draws as a chain.")
    lines.extend(health.lines())
    print("\n".join(lines), file=file)
    try:
        table.attrs["health"] = health
    except AttributeError:  # pragma: no cover
        pass
    return table
