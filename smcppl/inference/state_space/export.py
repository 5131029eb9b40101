"""Particle-filter results for ArviZ/xarray and plots: per-time-step filtering moments and quantiles,
ESS, entropy and resampling events with a ``time`` dimension, smoothing paths with ``(chain, draw, time)``,
and a plot of the filtered states with bands against the data and the ESS over time.

Families may not import :mod:`smcppl.diagnostics` (ARCHITECTURE.md, "Parts and who may import whom"), so
these are plain ``xarray.Dataset`` builders: add them to an ArviZ object with
``idata.add_groups(filtering=filtering_dataset(smc))`` (ArviZ < 1) or ``tree["filtering"] = ...``
(a DataTree, ArviZ >= 1). :class:`~smcppl.inference.state_space.filter.StateSpaceFilter` plans also carry
``metadata["filtering_dataset"]`` (``SMCOutput -> Dataset``) for exporters.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["filtering_dataset", "paths_dataset", "plot_filtering"]


def _named(tree, default: str = "x") -> dict:
    """``{name: array}`` of a record pytree: a dict's entries, or one array named ``default``."""
    if isinstance(tree, dict):
        return {str(k): np.asarray(v) for k, v in tree.items()}
    return {default: np.asarray(tree)}


def filtering_dataset(run: Any, times: Optional[Sequence] = None, quantiles: Optional[Sequence[float]] = None) -> Any:
    """An ``xarray.Dataset`` over ``(chain, time[, quantile], ...)`` from a filter run (an
    :class:`smcppl.SMC` that ran a ``StateSpaceFilter``, or its ``SMCOutput`` with or without a chain axis):
    ``{site}_mean``, ``{site}_var``, ``{site}_quantiles``, and ``ess`` (ESS/N), ``entropy``, ``resampled``,
    ``log_likelihood_increment`` (``log p(y_t | y_{0:t-1})`` estimates, for a non-auxiliary filter)."""
    import xarray as xr

    output = getattr(run, "output", run)
    if quantiles is None:
        plan = getattr(run, "plan", None)
        quantiles = (plan.metadata or {}).get("quantiles") if plan is not None else None
    trace = output.trace
    lead = np.ndim(np.asarray(output.log_evidence))

    def chained(x):
        x = np.asarray(x)
        return x[None] if lead == 0 else x

    ess = chained(trace.ess)
    num_chains, num_times = ess.shape
    coords = {"chain": np.arange(num_chains), "time": np.arange(num_times) if times is None else np.asarray(times)}
    running = chained(trace.log_evidence).astype(float)
    data = {"ess": (("chain", "time"), ess), "entropy": (("chain", "time"), chained(trace.entropy)),
            "resampled": (("chain", "time"), chained(trace.resampled).astype(bool)),
            "log_likelihood_increment": (("chain", "time"), np.diff(running, axis=1, prepend=0.0))}
    summary = trace.summary
    for part in ("mean", "var", "quantiles"):
        for name, v in _named(summary[part]).items():
            v = chained(v)
            if part == "quantiles":
                extra = tuple(f"{name}_dim_{i}" for i in range(v.ndim - 3))
                data[f"{name}_quantiles"] = (("chain", "time", "quantile") + extra, v)
            else:
                extra = tuple(f"{name}_dim_{i}" for i in range(v.ndim - 2))
                data[f"{name}_{part}"] = (("chain", "time") + extra, v)
    if quantiles is not None:
        coords["quantile"] = np.asarray(quantiles, float)
    return xr.Dataset(data, coords=coords)


def paths_dataset(paths: Any, times: Optional[Sequence] = None) -> Any:
    """Smoothing paths (leaves ``[num_paths, T]``, or ``[chains, num_paths, T, ...]``) as an
    ``xarray.Dataset`` over ``(chain, draw, time, ...)``, the layout of an ArviZ ``posterior`` group."""
    import xarray as xr

    data, coords = {}, {}
    for name, v in _named(paths).items():
        if v.ndim == 2:  # one run: [num_paths, T]
            v = v[None]
        extra = tuple(f"{name}_dim_{i}" for i in range(v.ndim - 3))
        data[name] = (("chain", "draw", "time") + extra, v)
        coords["time"] = np.arange(v.shape[2]) if times is None else np.asarray(times)
    return xr.Dataset(data, coords=coords)


def plot_filtering(run: Any, site: Optional[str] = None, data: Any = None, times: Any = None, chain: int = 0,
                   axes: Any = None, smoothed: Any = None) -> Any:
    """Plot the filtering mean of ``site`` with its outermost quantile band (and, if given, ``data`` as
    points and ``smoothed`` path means as a dashed line) above the ESS/N over time, resampling events
    marked. Returns the two matplotlib axes."""
    import matplotlib.pyplot as plt

    ds = filtering_dataset(run, times)
    names = [k[: -len("_mean")] for k in ds.data_vars if k.endswith("_mean")]
    site = site or names[0]
    if site not in names:
        raise KeyError(f"No filtered site {site!r}; the run has {names}.")
    if axes is None:
        _, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    t = ds["time"].values
    mean = ds[f"{site}_mean"].isel(chain=chain).values
    q = ds[f"{site}_quantiles"].isel(chain=chain).values
    if mean.ndim > 1:
        mean, q = mean.reshape(len(t), -1)[:, 0], q.reshape(q.shape[0], q.shape[1], -1)[..., 0]
    ax = axes[0]
    if q.shape[1] >= 2:
        probs = ds["quantile"].values if "quantile" in ds.coords else None
        label = "band" if probs is None else f"{probs[0]:.0%}-{probs[-1]:.0%} band"
        ax.fill_between(t, q[:, 0], q[:, -1], alpha=0.3, label=f"filtering {label}")
    ax.plot(t, mean, label="filtering mean")
    if smoothed is not None:
        ax.plot(t, np.asarray(smoothed), "--", label="smoothing mean")
    if data is not None:
        ax.plot(t, np.asarray(data), ".", color="k", ms=3, label="data")
    ax.set_ylabel(site)
    ax.legend(loc="best", fontsize="small")
    ess = ds["ess"].isel(chain=chain).values
    axes[1].plot(t, ess)
    res = ds["resampled"].isel(chain=chain).values
    axes[1].plot(t[res], ess[res], "v", ms=3, label="resampled")
    axes[1].set_ylabel("ESS/N")
    axes[1].set_xlabel("time")
    axes[1].set_ylim(0, 1.05)
    return axes
