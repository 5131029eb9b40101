"""The health vocabulary every sampler shares: the thresholds, a failed check (:class:`HealthFlag`), a run's
:class:`HealthReport`, the :class:`SMCHealthWarning` it raises (:func:`warn_health`) and the rank-normalised split
R-hat on plain arrays. The checks of an SMC run's ``smc_stats`` are :func:`smcppl.diagnostics.health.check_health`
(the thresholds are explained there); the particle-MCMC chains' are ``inference/state_space/chains.py``'s. Here,
in ``core``, so that a sampler family can report its own health (families may not import ``diagnostics``)."""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

__all__ = ["SMCHealthWarning", "HealthFlag", "HealthReport", "split_rhat", "rhat_bound", "warn_health",
           "MIN_UNIQUE_FRACTION", "MIN_DISTINCT_DRAWS", "MIN_FINAL_ESS", "MAX_DIVERGENT_FRACTION", "MIN_ACCEPTANCE",
           "MAX_LOG_EVIDENCE_SD", "MAX_RHAT", "MIN_RHAT", "RHAT_ESS_FRACTION"]

MIN_UNIQUE_FRACTION = 0.1
MIN_DISTINCT_DRAWS = 20
MIN_FINAL_ESS = 0.1
MAX_DIVERGENT_FRACTION = 0.5
MIN_ACCEPTANCE = 0.02
MAX_LOG_EVIDENCE_SD = 1.0
MAX_RHAT = 1.05
MIN_RHAT = 1.01
RHAT_ESS_FRACTION = 1 / 40


class SMCHealthWarning(UserWarning):
    """An SMC run failed a health check (see :mod:`smcppl.diagnostics.health`)."""


class HealthFlag(NamedTuple):
    check: str  # name of the failed check
    message: str  # one line: what was seen, what it means, what to do


class HealthReport(NamedTuple):
    flags: tuple  # HealthFlag, one per failed check
    divergent_fraction: float  # share of particle moves with a divergence, over all stages (NaN if none recorded)
    checked: str = "distinct draws, weights, divergences, acceptance, chain agreement"  # what "all passed" covers

    @property
    def ok(self) -> bool:
        return not self.flags

    def lines(self) -> list:
        if self.ok:
            return [f"health: all checks passed ({self.checked})"]
        return [f"WARNING [{f.check}]: {f.message}" for f in self.flags]

    def attrs(self) -> dict:
        """The export's attributes of this report: ``health_ok`` (1/0) and ``health_flags`` (one string)."""
        return {"health_ok": int(self.ok),
                "health_flags": "; ".join(f"[{f.check}] {f.message}" for f in self.flags) or "none"}

    def __str__(self):
        return "\n".join(self.lines())


def _rank_normalize(x):
    from scipy.special import ndtri  # scipy is a dependency of ArviZ

    flat = x.ravel()
    ranks = np.empty(flat.size)
    order = np.argsort(flat, kind="mergesort")
    ranks[order] = np.arange(1, flat.size + 1)
    # average ranks of ties
    _, inv, counts = np.unique(flat, return_inverse=True, return_counts=True)
    sums = np.zeros(counts.size)
    np.add.at(sums, inv, ranks)
    ranks = (sums / counts)[inv]
    return ndtri((ranks - 0.375) / (flat.size + 0.25)).reshape(x.shape)


def _rhat(x):
    c, n = x.shape
    half = n // 2
    x = np.concatenate([x[:, :half], x[:, half:2 * half]], axis=0)
    m, n = x.shape
    means = x.mean(axis=1)
    w = x.var(axis=1, ddof=1).mean()
    b = n * means.var(ddof=1)
    if not np.isfinite(w) or w <= 0:
        return np.inf if b > 0 else 1.0
    return float(np.sqrt(((n - 1) / n * w + b / n) / w))


def split_rhat(draws: np.ndarray) -> float:
    """Rank-normalised split R-hat (Vehtari et al. 2021) of ``draws [chain, draw]``: the maximum of the
    bulk and the folded (tail) versions, as ArviZ's ``rhat(method="rank")`` — re-implemented here on
    plain arrays so that it runs inside ``SMC.run`` in both ArviZ generations without building a
    DataTree."""
    x = np.asarray(draws, float)
    if x.shape[0] < 2 or x.shape[1] < 4 or not np.all(np.isfinite(x)):
        return float("nan")
    bulk = _rhat(_rank_normalize(x))
    folded = _rhat(_rank_normalize(np.abs(x - np.median(x))))
    return max(bulk, folded)


def rhat_bound(num_draws: int) -> float:
    """The R-hat above which chains of ``num_draws`` draws each are flagged: that of chains with
    ``RHAT_ESS_FRACTION * num_draws`` effective draws each, ``sqrt(1 + 1 / (num_draws / 40))``, clipped
    to ``[MIN_RHAT, MAX_RHAT]`` (module docstring)."""
    bound = float(np.sqrt(1.0 + 1.0 / (RHAT_ESS_FRACTION * max(int(num_draws), 1))))
    return min(MAX_RHAT, max(MIN_RHAT, bound))


def _chains(mask):
    return np.flatnonzero(mask).tolist()


def warn_health(report: HealthReport, what: str = "SMC run", stacklevel: int = 3) -> None:
    """One :class:`SMCHealthWarning` per failed check."""
    for f in report.flags:
        warnings.warn(f"{what} [{f.check}]: {f.message}", SMCHealthWarning, stacklevel=stacklevel)
