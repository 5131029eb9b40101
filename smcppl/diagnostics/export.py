"""Export SMC runs (draws and per-stage diagnostics) to ``xarray.DataTree`` / ArviZ.

Layout (ARCHITECTURE.md, vocabulary)::

    posterior       (chain, draw, ...)   equally weighted draws (final resampling; each lineage contiguous,
                                         lineages in random order); dims named from NumPyro plates
    sample_stats    (chain, draw)        lp, acceptance_rate, diverging (as the sampler provides them),
                                         lineage (cluster of each draw for the Monte Carlo error, see
                                         :mod:`smcppl.diagnostics.mcse`), log_weight (weighted export only)
    log_likelihood  (chain, draw, ...)   pointwise log-likelihood of each observed site (for loo)
    observed_data   (...)                the observations
    smc_stats       (chain, stage)       ess (ratio), entropy (normalised), tau, resampled,
                                         log_evidence_increment, running_log_evidence,
                                         n_unique_ancestors, and the sampler's scalar per-stage parameters
                                         and move statistics (beta, step_size, acceptance_rate, ...)
                    (chain, stage, particle)  ancestors (if recorded)
                    (chain, particle)    final_log_weight (normalised, before the final resampling)
                    (chain,)             log_evidence (alias log_marginal_likelihood, PyMC's name), n_stages,
                                         n_unique_draws (distinct final draws)

chain = independent SMC run, draw = particle. Stages beyond a chain's ``n_stages`` (adaptive runs) are
NaN (floats), -1 (ints) or False (bools). Settings and timings are attrs (str/int/float only, so that
``to_netcdf`` works). :func:`to_datatree` needs no ArviZ; :func:`to_arviz` returns the DataTree with
ArviZ >= 1 and an ``arviz.InferenceData`` with ArviZ < 1.
"""
from __future__ import annotations

import datetime
import functools
import os
import warnings
from typing import Any, Mapping, Optional, Union

import jax
import numpy as np
import xarray as xr

from smcppl.core.engine import SMCOutput
from smcppl.core.result import SMCResult
from smcppl.diagnostics.stats import _add_chain_axis, _log_normalize_np, _named_leaves, _np, smc_stats_arrays

__all__ = [
    "to_datatree",
    "to_arviz",
    "as_result",
    "run_attrs",
    "output_to_datatree",
    "datatree_to_arviz",
    "as_datatree",
    "save_netcdf",
    "load_netcdf",
    "arviz_major_version",
    "smc_stats_dataset",
    "clean_attrs",
    "SMC_STATS_GROUP",
]

SMC_STATS_GROUP = "smc_stats"


# ------------------------------------------------------------------------------------------ helpers
def arviz_major_version() -> int:
    """Major version of the installed ArviZ (0 for the InferenceData API, >= 1 for DataTree)."""
    try:
        from importlib.metadata import version

        return int(version("arviz").split(".")[0])
    except Exception:
        import arviz

        return int(arviz.__version__.split(".")[0])


def clean_attrs(attrs: Optional[Mapping], prefix: str = "") -> dict:
    """Attrs that ``to_netcdf`` accepts: str/int/float only (bool -> int, None -> "None", nested
    dicts flattened with ``_``, everything else ``str``)."""
    out = {}
    for k, v in dict(attrs or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(clean_attrs(v, key + "_"))
        elif isinstance(v, (bool, np.bool_)):
            out[key] = int(v)
        elif v is None:
            out[key] = "None"
        elif isinstance(v, (int, np.integer)):
            out[key] = int(v)
        elif isinstance(v, (float, np.floating)):
            out[key] = float(v)
        elif isinstance(v, str):
            out[key] = v
        elif isinstance(v, (np.ndarray, jax.Array)) and np.ndim(v) == 0:
            out.update(clean_attrs({k: _np(v).item()}, prefix))
        elif callable(v):
            out[key] = getattr(v, "__name__", type(v).__name__)
        else:
            out[key] = str(v)
    return out


def _library_version() -> str:
    """The installed smcppl's version (package metadata: the exporter does not import the front end)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("smcppl")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
        return "unknown"


def _base_attrs():
    return {"created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "inference_library": "smcppl", "inference_library_version": _library_version()}


def _var_dims(name, shape, dims_meta, sizes):
    """Dim names for a value of ``shape`` (sample dims excluded), from ``dims_meta`` where they fit,
    else ``<name>_dim_<k>``; a name already used with another size in the same dataset is replaced."""
    given = list(dims_meta.get(name, []) or [])
    if len(given) != len(shape):
        given = [f"{name}_dim_{k}" for k in range(len(shape))]
    out = []
    for k, (d, s) in enumerate(zip(given, shape)):
        d = str(d)
        if sizes.get(d, s) != s:
            d = f"{name}_dim_{k}"
        sizes[d] = s
        out.append(d)
    return out


def _dataset(values: Mapping, sample_dims, dims_meta, coords_meta, base_coords, attrs=None):
    """Build a Dataset from ``{name: array}`` whose leading axes are ``sample_dims``."""
    sizes, data_vars = {}, {}
    ns = len(sample_dims)
    for name, v in values.items():
        v = _np(v)
        if v.dtype == object:
            raise TypeError(f"Variable {name!r} cannot be exported: object dtype.")
        dims = list(sample_dims) + _var_dims(name, v.shape[ns:], dims_meta, sizes)
        data_vars[name] = (dims, v)
    coords = dict(base_coords)
    for d, s in sizes.items():
        given = coords_meta.get(d)
        if given is not None and len(np.asarray(given)) == s:
            coords[d] = np.asarray(given)
        else:
            coords[d] = np.arange(s)
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs or {}))


@functools.lru_cache(maxsize=32)
def _per_chain_program(fn, with_data: bool = False):
    """``jit(vmap(fn))``, one per function: one compiled program instead of one per primitive (eager).
    ``with_data``: ``fn(particles, data)``, the data an input of the program (the same for every chain)."""
    return jax.jit(jax.vmap(fn, in_axes=(0, None))) if with_data else jax.jit(jax.vmap(fn))


def _apply_per_chain(fn, particles, what, data=None):
    """``fn`` on each chain's particles; with ``data`` (a plan's ``metadata["data"]``), ``fn(particles, data)``."""
    try:
        if data is not None:
            return _per_chain_program(fn, True)(particles, data)
        return _per_chain_program(fn)(particles)
    except Exception as e:
        raise RuntimeError(f"Exporting to ArviZ: the plan's metadata[{what!r}] failed on the final particles "
                           f"({type(e).__name__}: {e}).") from e


# ------------------------------------------------------------------------------------------ smc_stats
def smc_stats_dataset(output: SMCOutput, attrs: Optional[Mapping] = None,
                      draw_stats: Optional[Mapping] = None) -> xr.Dataset:
    """The ``smc_stats`` group of an :class:`~smcppl.core.engine.SMCOutput` (with or without a chain axis);
    ``draw_stats`` (the runner's, see :func:`smcppl.runner.final_draws`) adds ``n_unique_draws``. The arrays
    are :func:`smcppl.diagnostics.stats.smc_stats_arrays` (what the health checks of a run read)."""
    table = smc_stats_arrays(output, attrs, draw_stats)
    return xr.Dataset(table.data_vars, coords=table.coords, attrs=table.attrs)


# ------------------------------------------------------------------------------------------ exporters
def output_to_datatree(output: SMCOutput, samples: Optional[Mapping] = None, *, particles: Any = None,
                       log_weights=None, metadata: Optional[Mapping] = None, attrs: Optional[Mapping] = None,
                       log_likelihood: bool = True, draw_stats: Optional[Mapping] = None,
                       posterior_predictive: Optional[Mapping] = None) -> xr.DataTree:
    """Export raw engine output (:class:`~smcppl.core.engine.SMCOutput`, with or without a leading chain
    axis) to a DataTree.

    samples: ``{name: (chain, draw, ...)}`` equally weighted draws for ``posterior``; if None, the final
    *weighted* particles of ``output`` are exported and their normalised log-weights go to
    ``sample_stats.log_weight``. particles: the raw particle pytree behind ``samples`` (what the
    metadata callables take; default: ``output.state.particles``). log_weights: normalised log-weights
    of ``samples`` (exported as ``sample_stats.log_weight``). metadata: as ``Plan.metadata``
    (``observed_data``, ``pointwise_log_likelihood``, ``sample_stats``, ``dims``, ``coords``).
    attrs: settings and timings (converted to str/int/float). log_likelihood: compute the
    ``log_likelihood`` group (skip to save time when only summaries are wanted). draw_stats: the
    runner's ``{"lineage": (chain, draw), "n_unique": (chain,)}`` for the draws in ``samples``.
    posterior_predictive: ``{site: (chain, draw, ...)}`` draws of the observations given each posterior
    draw (:meth:`smcppl.SMC.posterior_predictive`), exported as the ``posterior_predictive`` group.
    """
    single = np.ndim(_np(output.log_evidence)) == 0
    if single:
        output = _add_chain_axis(output)
        if draw_stats is not None:
            draw_stats = _add_chain_axis(dict(draw_stats))
        if samples is not None:
            samples = _add_chain_axis(dict(samples))
        if particles is not None:
            particles = _add_chain_axis(particles)
        if log_weights is not None:
            log_weights = np.asarray(log_weights)[None]
    metadata = dict(metadata or {})
    dims_meta = dict(metadata.get("dims") or {})
    coords_meta = dict(metadata.get("coords") or {})
    group_attrs = {**_base_attrs(), **clean_attrs(attrs)}

    if samples is None:
        particles = output.state.particles if particles is None else particles
        samples = _named_leaves(particles)
        if log_weights is None:
            log_weights = _log_normalize_np(_np(output.state.log_weights))
    elif particles is None:
        particles = output.state.particles
    samples = {k: _np(v) for k, v in dict(samples).items()}
    if not samples:
        raise ValueError("Nothing to export: no posterior samples.")
    first = next(iter(samples.values()))
    num_chains, num_draws = first.shape[:2]
    for k, v in samples.items():
        if v.shape[:2] != (num_chains, num_draws):
            raise ValueError(f"Sample {k!r} has leading shape {v.shape[:2]}, expected (chain, draw) = "
                             f"{(num_chains, num_draws)}.")
    base = {"chain": np.arange(num_chains), "draw": np.arange(num_draws)}
    groups = {"posterior": _dataset(samples, ("chain", "draw"), dims_meta, coords_meta, base, group_attrs)}

    stats = {}
    if callable(metadata.get("sample_stats")):
        for k, v in dict(_apply_per_chain(metadata["sample_stats"], particles, "sample_stats",
                                          metadata.get("data"))).items():
            v = _np(v)
            if v.shape[:2] == (num_chains, num_draws):
                stats[k] = v
    if log_weights is not None:
        stats["log_weight"] = _np(log_weights)
    elif draw_stats is not None and "lineage" in draw_stats:
        stats["lineage"] = _np(draw_stats["lineage"])
    if stats:
        groups["sample_stats"] = _dataset(stats, ("chain", "draw"), dims_meta, coords_meta, base, group_attrs)

    if log_likelihood and callable(metadata.get("pointwise_log_likelihood")):
        ll = dict(_apply_per_chain(metadata["pointwise_log_likelihood"], particles, "pointwise_log_likelihood",
                                   metadata.get("data")))
        if ll:
            groups["log_likelihood"] = _dataset(ll, ("chain", "draw"), dims_meta, coords_meta, base, group_attrs)
    if posterior_predictive:
        pp = {k: _np(v) for k, v in dict(posterior_predictive).items()}
        groups["posterior_predictive"] = _dataset(pp, ("chain", "draw"), dims_meta, coords_meta, base, group_attrs)
    observed = metadata.get("observed_data")
    if observed:
        groups["observed_data"] = _dataset({k: np.asarray(v) for k, v in dict(observed).items()}, (), dims_meta,
                                           coords_meta, {}, group_attrs)
    groups[SMC_STATS_GROUP] = smc_stats_dataset(output, group_attrs, draw_stats)
    if callable(metadata.get("filtering_dataset")):  # particle filters: per-time-step moments, ESS, ...
        filtering = metadata["filtering_dataset"](output, quantiles=metadata.get("quantiles"))
        groups["filtering"] = filtering.assign_attrs({**group_attrs, **clean_attrs(filtering.attrs)})
    tree = xr.DataTree.from_dict({f"/{k}": v for k, v in groups.items()})
    tree.attrs = dict(group_attrs)
    return tree


def run_attrs(result: SMCResult) -> dict:
    """The export's attributes of a run: its settings and timings (``SMCResult.attrs``) and its health."""
    attrs = dict(result.attrs)
    health = result.health
    if health is not None:
        attrs.update(health.attrs())
    return attrs


def as_result(run: Any) -> SMCResult:
    """The :class:`~smcppl.core.result.SMCResult` of a run: the object itself, or ``run.result`` (an
    :class:`~smcppl.SMC` after ``.run``); raises if the run has not happened."""
    if isinstance(run, SMCResult):
        return run
    result = getattr(run, "result", None)
    if not isinstance(result, SMCResult):
        raise RuntimeError("Call .run(rng_key, ...) before exporting the results.")
    return result


def to_datatree(run: Any, *, weighted: bool = False, log_likelihood: bool = True) -> xr.DataTree:
    """Export a run (an :class:`~smcppl.SMC` after ``.run``, its :class:`~smcppl.core.result.SMCResult`,
    or a raw ``SMCOutput``) to an ``xarray.DataTree``.

    weighted: export the final weighted particles (before the final resampling) with
    ``sample_stats.log_weight`` instead of the equally weighted draws. Needs no ArviZ. Posterior predictive
    draws (``SMC.posterior_predictive``) are exported when ``run`` carries them (``run.predictions``).
    """
    if isinstance(run, SMCOutput):
        return output_to_datatree(run, log_likelihood=log_likelihood)
    result = as_result(run)
    if weighted:
        samples, lw = result.get_weighted_particles()
        particles = result.output.state.particles
    else:
        samples, lw, particles = dict(result.samples), None, result.final_particles
    return output_to_datatree(result.output, samples, particles=particles, log_weights=lw,
                              metadata=result.metadata, attrs=run_attrs(result), log_likelihood=log_likelihood,
                              draw_stats=None if weighted else result.draw_stats,
                              posterior_predictive=None if weighted else getattr(run, "predictions", None))


def datatree_to_arviz(tree: xr.DataTree) -> Any:
    """The ArviZ object for ``tree``: the DataTree itself (ArviZ >= 1) or an ``InferenceData`` (< 1)."""
    if arviz_major_version() >= 1:
        return tree
    import arviz as az

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*group.*not defined in the InferenceData scheme.*")
        warnings.simplefilter("ignore", UserWarning)
        return az.InferenceData.from_datatree(tree)


def to_arviz(smc: Any, *, weighted: bool = False, log_likelihood: bool = True) -> Any:
    """Export a run :class:`~smcppl.SMC` for ArviZ: an ``xarray.DataTree`` with ArviZ >= 1, an
    ``arviz.InferenceData`` holding the same groups with ArviZ < 1 (see :func:`to_datatree`)."""
    if isinstance(smc, xr.DataTree):
        return datatree_to_arviz(smc)
    return datatree_to_arviz(to_datatree(smc, weighted=weighted, log_likelihood=log_likelihood))


def as_datatree(obj: Any) -> xr.DataTree:
    """A DataTree from an SMC run, raw ``SMCOutput``, DataTree or ``arviz.InferenceData``."""
    if isinstance(obj, xr.DataTree):
        return obj
    if hasattr(obj, "_groups") and hasattr(obj, "to_datatree"):  # arviz.InferenceData
        return obj.to_datatree()
    return to_datatree(obj)


def save_netcdf(obj: Any, path: Union[str, os.PathLike]) -> str:
    """Write an SMC run (exported first) or an exported object to a netCDF file; returns the path."""
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if hasattr(obj, "_groups") and hasattr(obj, "to_netcdf") and not isinstance(obj, xr.DataTree):
        obj.to_netcdf(str(path))  # InferenceData
    else:
        as_datatree(obj).to_netcdf(str(path))
    return str(path)


def load_netcdf(path: Union[str, os.PathLike]) -> Any:
    """Read a file written by :func:`save_netcdf` into memory, as the installed ArviZ's object
    (DataTree with ArviZ >= 1, InferenceData with ArviZ < 1)."""
    with xr.open_datatree(str(path)) as tree:
        tree = tree.load()
    return datatree_to_arviz(tree)
