"""Diagnostic plots of SMC runs (matplotlib). Each function takes a run :class:`~smcppl.SMC`, a raw
``SMCOutput`` or the exported object (DataTree / InferenceData), draws into ``ax`` if given (else a new
figure with a constrained layout) and returns the ``matplotlib.figure.Figure`` (``fig.savefig(path)``;
``fig.axes`` are the panels).

* :func:`plot_tempering_schedule`: beta per stage, from beta = 0 (the prior);
* :func:`plot_ess`: ESS/N and normalised entropy per stage, resampling events marked;
* :func:`plot_acceptance`: acceptance rate, step size and decorrelation of the moves per stage;
* :func:`plot_genealogy`: ancestral lines of the particles over stages (needs ``record_ancestors=True``);
* :func:`plot_log_evidence`: running log Z per stage and final log Z across chains (with an exact
  value as reference line where known);
* :func:`plot_weights`: distribution of the final importance weights;
* :func:`plot_posterior`: ArviZ's own posterior plots (per-chain densities and rank plots, or the
  pooled marginals), in either ArviZ API;
* :func:`save_diagnostic_plots`: all applicable plots as PNG files.

Conventions: one colour and line style per chain (legend on every per-chain plot); spreads across
chains are sample standard deviations (``ddof=1``); SMC draws have no time order, so there is no trace
plot (draw index on the x-axis): rank plots show whether the chains agree.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np

from smcppl.diagnostics.export import arviz_major_version, datatree_to_arviz, to_datatree
from smcppl.diagnostics.summary import get_smc_stats

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "DiagnosticUnavailable",
    "plot_tempering_schedule",
    "plot_ess",
    "plot_acceptance",
    "plot_genealogy",
    "plot_log_evidence",
    "plot_weights",
    "plot_posterior",
    "save_diagnostic_plots",
]


class DiagnosticUnavailable(ValueError):
    """The run did not record what this plot needs (e.g. no temperatures, no ancestors)."""


def _subplots(ax=None, nrows=1, ncols=1, **kw):
    import matplotlib.pyplot as plt

    if ax is not None:
        axes = np.atleast_1d(ax).ravel()
        if axes.size != nrows * ncols:
            raise ValueError(f"This plot needs {nrows * ncols} axes, got {axes.size}.")
        return axes[0].figure, axes
    kw.setdefault("layout", "constrained")
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes.ravel()


def _stage_axis(ax):
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _require(ds, name, plot, hint):
    if name not in ds:
        raise DiagnosticUnavailable(f"{plot}: the run has no {name!r} in its smc_stats ({hint}).")
    return np.asarray(ds[name].values)


def _per_chain(ds):
    n = np.asarray(ds["n_stages"].values, int)
    stage = np.asarray(ds["stage"].values)
    return n, stage


def _color(c):
    return f"C{c % 10}"


_LINESTYLES = ("-", "--", "-.", ":")


def _style(c):
    """Colour and line style of chain ``c``: chains whose lines coincide stay distinguishable."""
    return {"color": _color(c), "ls": _LINESTYLES[(c // 10 + c) % len(_LINESTYLES)]}


def _legend(ax, num_chains, **kw):
    """The chain legend (with any other labelled artists); beyond 10 chains, colours repeat and the
    legend names the chain count instead of every chain."""
    handles, labels = ax.get_legend_handles_labels()
    if num_chains > 10:
        keep = [i for i, lab in enumerate(labels) if not lab.startswith("chain ")]
        handles, labels = [handles[i] for i in keep], [labels[i] for i in keep]
        from matplotlib.lines import Line2D

        handles.insert(0, Line2D([], [], color="0.3"))
        labels.insert(0, f"{num_chains} chains (colours repeat)")
    kw.setdefault("fontsize", "small")
    ax.legend(handles, labels, **kw)


def plot_tempering_schedule(obj: Any, ax: Optional[Axes] = None) -> Axes:
    """Tempering schedule, one staircase per chain, starting from beta = 0 (the prior).

    Stage ``t`` reweights the particles from ``beta_{t-1}`` to ``beta_t`` (``beta_{-1} = 0``: stage 0
    reweights the prior draws): the rise at stage ``t``; its particles are then moved targeting
    ``pi_{beta_t}``: the flat part up to stage ``t + 1``. Markers: ``beta_t`` after each reweighting.
    """
    ds = get_smc_stats(obj)
    beta = _require(ds, "beta", "plot_tempering_schedule", "only tempered samplers record beta").astype(float)
    n, stage = _per_chain(ds)
    fig, (ax,) = _subplots(ax)
    for c in range(beta.shape[0]):
        t, b = stage[: n[c]], beta[c, : n[c]]
        ax.plot(np.repeat(t, 2), np.repeat(np.r_[0.0, b], 2)[1:-1], **_style(c), label=f"chain {c}")
        ax.plot(t, b, ".", color=_color(c))
    ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
    ax.axhline(1.0, color="0.6", lw=0.8, zorder=0)
    ax.set(xlabel="stage", ylabel=r"$\beta$ (0 = prior, 1 = posterior)", ylim=(-0.03, 1.03),
           title=f"Tempering schedule ({int(n.max())} stages)")
    _stage_axis(ax)
    _legend(ax, beta.shape[0], loc="lower right")
    return fig


def plot_ess(obj: Any, ax: Optional[Axes] = None) -> Axes:
    """ESS/N (top) and normalised entropy of the weights (bottom) per stage, one line per chain.

    Resampling events are marked, one marker per event: a resampling at the start of stage t is drawn
    on stage t-1, the stage whose weights were resampled. With ESS-triggered resampling the threshold
    is a dashed line.
    """
    ds = get_smc_stats(obj)
    ess = np.asarray(ds["ess"].values, float)
    ent = np.asarray(ds["entropy"].values, float)
    res = np.asarray(ds["resampled"].values, bool)
    n, stage = _per_chain(ds)
    fig, axes = _subplots(ax, 2, 1, sharex=True, figsize=(6.4, 5.6))
    for a, values, label in ((axes[0], ess, "ESS / N"), (axes[1], ent, "normalised entropy")):
        xs, ys, cs = [], [], []
        for c in range(values.shape[0]):
            a.plot(stage[: n[c]], values[c, : n[c]], **_style(c), label=f"chain {c}")
            t = np.nonzero(res[c, 1: n[c]])[0]  # event at stage t+1 -> weights of stage t
            xs += list(stage[t])
            ys += list(values[c, t])
            cs += [_color(c)] * len(t)
        a.scatter(xs, ys, c=cs if cs else None, marker="v", s=36, zorder=3, edgecolors="k", linewidths=0.5,
                  label="resampled")
        a.set(ylabel=label, ylim=(-0.02, 1.05))
    if ds.attrs.get("resampling_when") == "ess" and "resampling_threshold" in ds.attrs:
        axes[0].axhline(float(ds.attrs["resampling_threshold"]), color="0.4", ls="--", lw=1, label="threshold")
    axes[1].set_xlabel("stage")
    _stage_axis(axes[1])
    axes[0].set_title(f"Weight diversity per stage ({int(res.sum())} resampling events)")
    _legend(axes[0], ess.shape[0])
    return fig


def plot_acceptance(obj: Any, ax: Optional[Axes] = None) -> Axes:
    """The MCMC moves per stage (one line per chain), a panel for each that the sampler records: the
    acceptance rate, the step size, the largest correlation of the particles with their positions before
    the move (``start_correlation``, ``1 - D_j / (2 v_j)``: near 1 where the move barely moved them, or
    where they cannot leave their mode) and, where the run chose them (``max_mcmc_steps``), the number of
    transitions."""
    ds = get_smc_stats(obj)
    names = ["acceptance_rate", "step_size", "start_correlation"]
    if int(ds.attrs.get("max_mcmc_steps", 0)) > int(ds.attrs.get("num_mcmc_steps", 0)):
        names.append("num_mcmc_steps")
    present = [v for v in names if v in ds and np.isfinite(np.asarray(ds[v].values, float)).any()]
    if not present:
        raise DiagnosticUnavailable("plot_acceptance: the run has neither 'acceptance_rate' nor 'step_size' in "
                                    "its smc_stats (samplers with MCMC moves record them).")
    n, stage = _per_chain(ds)
    fig, axes = _subplots(ax, len(present), 1, sharex=True, figsize=(6.4, 2.8 * len(present) + 0.4))
    for a, name in zip(axes, present):
        values = np.asarray(ds[name].values, float)
        for c in range(values.shape[0]):
            a.plot(stage[: n[c]], values[c, : n[c]], marker=".", **_style(c), label=f"chain {c}")
        a.set_ylabel(name.replace("_", " "))
    if "acceptance_rate" in present:
        axes[0].set_ylim(-0.02, 1.02)
    if "step_size" in present:
        h = np.asarray(ds["step_size"].values, float)
        h = h[np.isfinite(h) & (h > 0)]
        if h.size and h.max() > 10 * h.min():  # log scale only where the step sizes span a decade
            axes[present.index("step_size")].set_yscale("log")
    axes[-1].set_xlabel("stage")
    _stage_axis(axes[-1])
    if "start_correlation" in present:
        axes[present.index("start_correlation")].set_ylim(top=1.02)
    axes[0].set_title("MCMC moves per stage (stage 0: no move yet)")
    _legend(axes[0], ds.sizes["chain"])
    return fig


def lineages(ancestors: np.ndarray, n_stages: Optional[int] = None) -> np.ndarray:
    """``paths[t, i]``: the index at stage t of the ancestor of final particle i (``ancestors[t, i]`` is
    the parent at stage t-1 of particle i at stage t)."""
    anc = np.asarray(ancestors)
    n = anc.shape[0] if n_stages is None else int(n_stages)
    paths = np.empty((n, anc.shape[1]), np.int64)
    paths[-1] = np.arange(anc.shape[1])
    for t in range(n - 1, 0, -1):
        paths[t - 1] = anc[t, paths[t]]
    return paths


def plot_genealogy(obj: Any, chain: int = 0, max_lines: int = 100, ax: Optional[Axes] = None) -> Axes:
    """Particle genealogy of one chain: every parent -> child link (grey) and the ancestral lines of
    the particles at the final stage (coloured; at most ``max_lines``, evenly spaced).

    Needs the ancestors: run with ``SMC(..., record_ancestors=True)``.
    """
    ds = get_smc_stats(obj)
    if "ancestors" not in ds:
        raise DiagnosticUnavailable("plot_genealogy: no ancestors were recorded; run with "
                                    "SMC(..., record_ancestors=True) to plot the particle genealogy.")
    from matplotlib.collections import LineCollection

    num_chains = ds.sizes["chain"]
    if not 0 <= chain < num_chains:
        raise ValueError(f"chain must be in [0, {num_chains}), got {chain}.")
    n_stages = int(np.asarray(ds["n_stages"].values)[chain])
    anc = np.asarray(ds["ancestors"].values)[chain, :n_stages]
    num_particles = anc.shape[1]
    fig, (ax,) = _subplots(ax)
    segs = [np.stack([np.stack([np.full(num_particles, t - 1), anc[t]], -1),
                      np.stack([np.full(num_particles, t), np.arange(num_particles)], -1)], 1)
            for t in range(1, n_stages)]
    if segs:
        ax.add_collection(LineCollection(np.concatenate(segs), colors="0.75", linewidths=0.5, zorder=1))
    paths = lineages(anc, n_stages)
    shown = np.unique(np.linspace(0, num_particles - 1, min(max_lines, num_particles)).round().astype(int))
    x = np.arange(n_stages)
    for i in shown:
        ax.plot(x, paths[:, i], color=_color(chain), lw=0.8, alpha=0.8, zorder=2)
    roots = np.unique(paths[0]).size
    ax.set(xlabel="stage", ylabel="particle index", xlim=(-0.2, max(n_stages - 1, 1) + 0.2),
           ylim=(-1, num_particles), title=f"Genealogy of chain {chain}\n{roots} of {num_particles} initial "
                                           f"particles have descendants at stage {n_stages - 1}")
    _stage_axis(ax)
    return fig


def plot_log_evidence(obj: Any, reference: Optional[float] = None, ax: Optional[Axes] = None) -> Axes:
    """log Z: the running estimate per stage (left, one line per chain) and the final estimate of each
    chain (right, one marker per chain) with their mean (solid) and an optional ``reference`` (dashed,
    e.g. the exact log Z of a test model). The spread is the sample sd across chains (``ddof=1``)."""
    ds = get_smc_stats(obj)
    lz = np.asarray(ds["log_evidence"].values, float)
    run = np.asarray(ds["running_log_evidence"].values, float)
    n, stage = _per_chain(ds)
    num_chains = lz.shape[0]
    fig, axes = _subplots(ax, 1, 2, figsize=(9.6, 4.0), gridspec_kw={"width_ratios": [2, 1]})
    ref = None if reference is None else float(reference)
    for c in range(num_chains):
        axes[0].plot(stage[: n[c]], run[c, : n[c]], marker=".", **_style(c), label=f"chain {c}")
        axes[1].plot([c], [lz[c]], "o", color=_color(c))
    axes[0].set(xlabel="stage", ylabel="running log Z", title="log Z per stage")
    axes[1].plot([], [], "o", color="0.3", label="chain estimate")
    axes[1].axhline(lz.mean(), color="k", lw=1, label=f"mean {lz.mean():.3f}")
    if ref is not None:
        for a in axes:
            a.axhline(ref, color="0.3", ls=(0, (4, 2)), lw=1.2, label=f"reference {ref:.3f}")
    _stage_axis(axes[0])
    _stage_axis(axes[1])
    sd = f"\nsd {lz.std(ddof=1):.3f} across chains" if num_chains > 1 else "\none chain: no spread"
    if ref is not None:
        sd += f"\nmean - reference {lz.mean() - ref:+.3f}"
    axes[1].set(xlabel="chain", ylabel="log Z", title="final log Z" + sd, xlim=(-0.5, num_chains - 0.5))
    axes[1].yaxis.get_major_formatter().set_useOffset(False)
    axes[1].margins(y=0.15)
    _legend(axes[0], num_chains)
    axes[1].legend(fontsize="small")
    return fig


def plot_weights(obj: Any, bins: int = 30, ax: Optional[Axes] = None) -> Axes:
    """Distribution of the final normalised importance weights ``N W_i`` (before the final resampling),
    as a histogram of ``log10(N W_i)`` per chain; 0 = equal weights (dashed line)."""
    ds = get_smc_stats(obj)
    lw = _require(ds, "final_log_weight", "plot_weights", "export with smcppl >= 0.1").astype(float)
    num_particles = lw.shape[1]
    fig, (ax,) = _subplots(ax)
    x = (lw + np.log(num_particles)) / np.log(10)
    finite = np.isfinite(x)
    lo, hi = (x[finite].min(), x[finite].max()) if finite.any() else (-1.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    ess = []
    for c in range(lw.shape[0]):
        w = np.exp(lw[c])
        ess.append(1.0 / np.sum(w**2) / num_particles)
        st = _style(c)
        ax.hist(x[c][finite[c]], bins=bins, range=(lo, hi), histtype="stepfilled", color=st["color"], alpha=0.15)
        ax.hist(x[c][finite[c]], bins=bins, range=(lo, hi), histtype="step", color=st["color"], ls=st["ls"],
                lw=1.5, label=f"chain {c}")
    ax.axvline(0.0, color="0.4", ls="--", lw=1)
    zero = int((~finite).sum())
    ess_text = ", ".join(f"{e:.2f}" for e in ess[:10]) + (", ..." if len(ess) > 10 else "")
    ax.set(xlabel=r"$\log_{10}(N\,W_i)$  (0 = equal weights)", ylabel="particles",
           title="Final weights, ESS/N per chain:\n" + ess_text + (f"; {zero} zero weights" if zero else ""))
    _legend(ax, lw.shape[0], loc="upper left")
    return fig


def _arviz_object(obj):
    import xarray as xr

    if isinstance(obj, xr.DataTree):
        return datatree_to_arviz(obj)
    if hasattr(obj, "_groups"):
        return obj
    return datatree_to_arviz(to_datatree(obj, log_likelihood=False))


def plot_posterior(obj: Any, var_names: Optional[Sequence[str]] = None, kind: str = "rank", prob: float = 0.9,
                   **kwargs) -> Any:
    """ArviZ's own posterior plot of the draws, in either ArviZ API; returns the matplotlib Figure.

    * ``kind="rank"`` (default): per variable and component (``w[0]``, ``w[1]``, ... one row each), the
      density of each chain (left) and the rank plot (right): the ranks of each chain's draws among all
      draws. Chains that sample the same distribution have uniform ranks. ArviZ 0.x:
      ``plot_trace(kind="rank_vlines")``; ArviZ 1.x: ``plot_rank_dist``. A chain legend is added.
    * ``kind="dist"``: the pooled marginal of each component with its ``prob`` credible interval, the
      interval ``print_summary`` reports, the highest-density interval (ArviZ 0.x: ``plot_posterior``;
      ArviZ 1.x: ``plot_dist``).

    SMC draws have no time order (the export orders each chain's draws by lineage), so there is no trace
    plot against the draw index. ``kwargs`` go to the ArviZ function.
    """
    import arviz as az

    if kind == "trace":
        raise ValueError("kind='trace' plots draws against their index, but SMC draws have no time order; "
                         "use kind='rank' (per-chain densities and rank plots) or kind='dist'.")
    if kind not in ("rank", "dist"):
        raise ValueError(f"kind must be 'rank' or 'dist', got {kind!r}.")
    data = _arviz_object(obj)
    if arviz_major_version() >= 1:
        kwargs.setdefault("figure_kwargs", {"layout": "constrained"})
        if kind == "rank":
            kwargs.setdefault("compact", False)
            pc = az.plot_rank_dist(data, var_names=var_names, backend="matplotlib", **kwargs)
            pc.add_legend("chain")
        else:
            pc = az.plot_dist(data, var_names=var_names, ci_prob=prob, ci_kind="hdi", backend="matplotlib", **kwargs)
        return pc.get_viz("figure")
    kwargs.setdefault("backend_kwargs", {"layout": "constrained"})
    if kind == "rank":
        kwargs.setdefault("compact", False)
        kwargs.setdefault("legend", True)
        axes = az.plot_trace(data, var_names=var_names, kind="rank_vlines", **kwargs)
        for a in np.ravel(axes):  # the chain legend outside the panels, clear of the rank lines
            old = a.get_legend()
            if old is not None:
                a.legend(old.legend_handles, [t.get_text() for t in old.get_texts()], title="chain",
                         fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axes = az.plot_posterior(data, var_names=var_names, hdi_prob=prob, **kwargs)
    return np.ravel(axes)[0].figure


PLOTS = {
    "tempering_schedule": plot_tempering_schedule,
    "ess": plot_ess,
    "acceptance": plot_acceptance,
    "genealogy": plot_genealogy,
    "log_evidence": plot_log_evidence,
    "weights": plot_weights,
    "posterior_rank": plot_posterior,
}


def save_diagnostic_plots(obj: Any, folder: Union[str, os.PathLike], prefix: str = "", dpi: int = 100,
                          reference_log_evidence: Optional[float] = None) -> list:
    """Write every plot that applies to the run as ``<folder>/<prefix><name>.png`` (plots whose data the
    run did not record, e.g. the genealogy without ancestors, are skipped); return the paths written.
    ``reference_log_evidence``: a known log Z, drawn as the reference line of the log Z plot."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not hasattr(obj, "_groups") and not _is_tree(obj):
        obj = to_datatree(obj, log_likelihood=False)  # export once for all plots
    written = []
    for name, fn in PLOTS.items():
        try:
            fig = fn(obj, reference=reference_log_evidence) if name == "log_evidence" else fn(obj)
        except DiagnosticUnavailable:
            continue
        path = folder / f"{prefix}{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        written.append(str(path))
    return written


def _is_tree(obj):
    import xarray as xr

    return isinstance(obj, xr.DataTree)
