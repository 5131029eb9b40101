"""Monte Carlo error of SMC posterior means from the particles' lineages (ours: ArviZ's ESS/MCSE assume
an autocorrelated Markov chain, not a resampled particle population).

The final draws of one run are resampled copies: draws that descend from one particle ``LINEAGE_LAG``
resampling events back (see :func:`smcppl.core.engine.update_lineage`) are correlated, draws of
different lineages are nearly independent. For draws ``phi_j`` (``j = 1..N``) of one chain with mean
``phi_bar`` and lineage clusters ``g = 1..G``, the cluster-robust (lag-based, Olsson & Douc 2019)
variance of the mean is::

    V = G / (G - 1) * sum_g ( sum_{j in g} (phi_j - phi_bar) / N )^2

so ``MCSE = sqrt(V)``. Over ``C`` independent chains of equal size the pooled mean has
``MCSE = sqrt(sum_c V_c) / C``, and the effective sample size is ``ESS = var(phi) / MCSE^2``. With
copies counted as independent draws (what ArviZ's ``ess_bulk`` does on permuted draws) the ESS is
overstated by the mean cluster size.
"""
from __future__ import annotations

import numpy as np

__all__ = ["lineage_variance", "lineage_mcse"]


def lineage_variance(values: np.ndarray, lineage: np.ndarray) -> np.ndarray:
    """Per-chain variance of the mean of ``values [chain, draw, ...]`` with draw clusters
    ``lineage [chain, draw]`` (integer ids); returns ``[chain, ...]`` (NaN where a chain has one cluster)."""
    values = np.asarray(values, float)
    lineage = np.asarray(lineage)
    c, n = values.shape[:2]
    rest = values.shape[2:]
    flat = values.reshape(c, n, -1)
    out = np.empty((c, flat.shape[2]))
    for k in range(c):
        ids, inverse = np.unique(lineage[k], return_inverse=True)
        g = len(ids)
        dev = flat[k] - flat[k].mean(axis=0, keepdims=True)
        sums = np.zeros((g, flat.shape[2]))
        np.add.at(sums, inverse.reshape(-1), dev)
        out[k] = np.sum((sums / n) ** 2, axis=0) * g / (g - 1) if g > 1 else np.nan
    return out.reshape((c,) + rest)


def lineage_mcse(values: np.ndarray, lineage: np.ndarray) -> np.ndarray:
    """``(mean, mcse, ess)`` of the pooled posterior mean of ``values [chain, draw, ...]`` (see module
    docstring); each has the shape of one draw."""
    values = np.asarray(values, float)
    c, n = values.shape[:2]
    var_mean = lineage_variance(values, lineage)
    mcse = np.sqrt(np.sum(var_mean, axis=0)) / c
    pooled = values.reshape((c * n,) + values.shape[2:])
    with np.errstate(divide="ignore", invalid="ignore"):
        ess = np.where(mcse > 0, pooled.var(axis=0, ddof=1) / mcse**2, np.nan)
    return pooled.mean(axis=0), mcse, np.minimum(ess, c * n)
