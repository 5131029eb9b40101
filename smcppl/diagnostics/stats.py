"""The ``smc_stats`` arrays of a run, without xarray: what :mod:`smcppl.diagnostics.health` checks on every run
(``SMC.run`` imports neither xarray nor pandas, ~0.2 s of a fresh process) and what
:func:`smcppl.diagnostics.export.smc_stats_dataset` wraps in an ``xarray.Dataset`` for the export.
Layout: :mod:`smcppl.diagnostics.export` (``smc_stats`` group)."""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional

import jax
import numpy as np

from smcppl.core.engine import SMCOutput

__all__ = ["StatsArrays", "smc_stats_arrays"]

_CORE_STATS = ("ess", "entropy", "tau", "resampled", "n_unique_ancestors", "log_evidence_increment",
               "running_log_evidence", "log_evidence", "log_marginal_likelihood", "n_stages", "ancestors",
               "final_log_weight", "n_unique_draws")


def _np(x):
    return np.asarray(jax.device_get(x))


def _named_leaves(tree, default="x") -> dict:
    """A particle pytree as ``{name: array}`` (dict keys joined with ``_``; a bare array is ``default``)."""
    if isinstance(tree, Mapping) and all(not isinstance(v, Mapping) for v in tree.values()):
        return {str(k): v for k, v in tree.items()}
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if len(leaves) == 1 and not leaves[0][0]:
        return {default: leaves[0][1]}
    out = {}
    for path, leaf in leaves:
        parts = []
        for p in path:
            parts.append(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))))
        out["_".join(parts) or default] = leaf
    return out


def _add_chain_axis(tree):
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[None], tree)


def _log_normalize_np(lw):
    lw = np.where(np.isnan(lw), -np.inf, lw.astype(float))
    m = np.max(lw, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    lse = m + np.log(np.sum(np.exp(lw - m), axis=-1, keepdims=True))
    return lw - lse


class _Variable(NamedTuple):
    dims: tuple
    values: np.ndarray


class StatsArrays:
    """``smc_stats`` as plain arrays: ``data_vars = {name: (dims, array)}``, ``coords``, ``attrs``. Reads like
    the Dataset it becomes where the health checks read it (``stats[name].values``, ``name in stats``,
    ``stats.sizes``, ``stats.attrs``)."""

    __slots__ = ("data_vars", "coords", "attrs")

    def __init__(self, data_vars: dict, coords: dict, attrs: dict):
        self.data_vars, self.coords, self.attrs = data_vars, coords, attrs

    def __contains__(self, name: Any) -> bool:
        return name in self.data_vars

    def __getitem__(self, name: str) -> _Variable:
        dims, values = self.data_vars[name]
        return _Variable(tuple(dims), values)

    @property
    def sizes(self) -> dict:
        return {d: len(c) for d, c in self.coords.items()}


def smc_stats_arrays(output: SMCOutput, attrs: Optional[Mapping] = None,
                     draw_stats: Optional[Mapping] = None) -> StatsArrays:
    """The ``smc_stats`` arrays of an :class:`~smcppl.core.engine.SMCOutput` (with or without a chain axis);
    ``draw_stats`` (the runner's, see :func:`smcppl.core.chain.final_draws`) adds ``n_unique_draws``. Stages
    beyond a chain's ``n_stages`` are NaN (floats), -1 (ints) or False (bools)."""
    if np.ndim(_np(output.log_evidence)) == 0:
        output = _add_chain_axis(output)
        draw_stats = None if draw_stats is None else _add_chain_axis(draw_stats)
    n_stages = _np(output.n_stages).astype(np.int64).reshape(-1)
    # adaptive runs: drop the padding that no chain used
    used = max(int(n_stages.max()), 1)
    tr = jax.tree_util.tree_map(lambda x: _np(x)[:, :used], output.trace)
    ess = tr.ess
    num_chains, capacity = ess.shape[:2]
    stage = np.arange(capacity)
    valid = stage[None, :] < n_stages[:, None]

    def masked(x):
        x = np.array(_np(x))
        m = valid.reshape(valid.shape + (1,) * (x.ndim - 2))
        m = np.broadcast_to(m, x.shape)
        if np.issubdtype(x.dtype, np.floating):
            return np.where(m, x, np.nan)
        if x.dtype == np.bool_:
            return np.where(m, x, False)
        return np.where(m, x, -1)

    running = masked(tr.log_evidence).astype(float)
    increment = np.diff(running, axis=1, prepend=0.0)
    vars_ = {
        "ess": (("chain", "stage"), masked(ess)),
        "entropy": (("chain", "stage"), masked(tr.entropy)),
        "tau": (("chain", "stage"), masked(tr.tau)),
        "resampled": (("chain", "stage"), masked(tr.resampled).astype(bool)),
        "n_unique_ancestors": (("chain", "stage"), masked(tr.n_unique_ancestors).astype(np.int64)),
        "log_evidence_increment": (("chain", "stage"), increment),
        "running_log_evidence": (("chain", "stage"), running),
    }
    for source, tree in (("params", tr.params), ("move_info", tr.move_info), ("summary", tr.summary)):
        if tree is None:
            continue
        for name, v in _named_leaves(tree, default={"params": "param"}.get(source, source)).items():
            v = _np(v)
            if v.shape != (num_chains, capacity) or v.dtype == object:
                continue  # only scalar-per-stage entries are exported
            if name in vars_ or name in _CORE_STATS:
                name = f"{source}_{name}"
            vars_[name] = (("chain", "stage"), masked(v))
    coords = {"chain": np.arange(num_chains), "stage": stage}
    if tr.ancestors is not None:
        anc = masked(tr.ancestors).astype(np.int64)
        vars_["ancestors"] = (("chain", "stage", "particle"), anc)
    final_lw = _np(output.state.log_weights)
    vars_["final_log_weight"] = (("chain", "particle"), _log_normalize_np(final_lw))
    coords["particle"] = np.arange(final_lw.shape[-1])
    vars_["log_evidence"] = (("chain",), _np(output.log_evidence).astype(float).reshape(-1))
    vars_["log_marginal_likelihood"] = vars_["log_evidence"]  # alias: PyMC's name for it in SMC sample_stats
    vars_["n_stages"] = (("chain",), n_stages)
    if draw_stats is not None and "n_unique" in draw_stats:
        vars_["n_unique_draws"] = (("chain",), _np(draw_stats["n_unique"]).astype(np.int64).reshape(-1))
    return StatsArrays(vars_, coords, dict(attrs or {}))
