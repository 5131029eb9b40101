"""Health checks run on every SMC run: a run that fails one is flagged (in ``print_summary``, the CLI,
the export's attrs and an :class:`SMCHealthWarning`), never reported as healthy.

Checks and thresholds (each computed from the ``smc_stats`` group, so they also work on a reloaded
netCDF file):

* ``collapse``: fewer than ``MIN_UNIQUE_FRACTION`` (10%) distinct final draws in a chain (only for
  continuous states, where exact copies can only come from resampling). Moves that do not move
  (acceptance 0, divergences) leave copies of a few particles, and every posterior number, ESS
  included, then describes a handful of points.
* ``few_draws``: fewer than ``MIN_DISTINCT_DRAWS`` (20) distinct final draws in a chain (continuous states),
  however few particles were asked for: a run of ``N = 2`` particles passed every relative check with a log Z
  33 nats off. Twenty points are about the fewest on which R-hat's bound (ten effective draws) still means something.
* ``final_ess``: the final weights' ESS/N below ``MIN_FINAL_ESS`` (10%): the draws come from fewer
  than one in ten particles (degenerate weights, e.g. a corrector outside its safe range).
* ``divergences``: a stage in which more than ``MAX_DIVERGENT_FRACTION`` (half) of the MCMC transitions
  diverged (HMC/NUTS energy error above 1000 nats; non-finite or exploding states for every kernel), or in which
  divergent transitions carry more than half of the weight after that stage's reweighting (each particle weighted by
  its share of divergent transitions; samplers that record it): the move failed for most of the population, or for the
  part of it that matters. (A minority of divergent particles in a tail that the next temperature discards, common in
  early tempering stages where curvature varies wildly, is counted and shown in the summary, not flagged.) The default
  move meets a stricter bound on every zoo model, tested in ``tests/test_health.py``: at most 15% of all transitions
  divergent, no stage over this threshold.
* ``stuck_moves``: a stage whose mean acceptance is below ``MIN_ACCEPTANCE`` (2%): the particles did
  not move, so resampled copies stay copies. For ULA (which always moves) the acceptance is the one a
  Metropolis test would have given its moves, and the flag is ``unstable_ula``: the step is far too
  large and the run badly biased.
* ``log_evidence_spread``: with several chains, ``sd(log Z_hat)`` across chains above
  ``MAX_LOG_EVIDENCE_SD`` (1 nat): the relative variance of ``Z_hat`` is then ``e^{sd^2} - 1 > 1.7``
  and the chains disagree on the evidence (a mode found by some chains only, or noisy weights).
* ``rhat``: with several chains, the largest rank-normalised split R-hat of the draws above
  :func:`rhat_bound` of the number of draws per chain ``N``: ``sqrt(1 + 1 / (RHAT_ESS_FRACTION N))``,
  clipped to ``[MIN_RHAT, MAX_RHAT] = [1.01, 1.05]``. For independent SMC runs ``R-hat^2 ~ 1 +
  1/ESS_chain``, so the bound flags chains that disagree more than runs of ``N / 40`` effective draws
  each would (1.05, about ten effective draws, for ``N <= 390``; 1.01, the bound of Vehtari et al. 2021,
  for ``N >= 2000``). A fixed 1.05 missed wrong runs with many particles: guided diffusion at N = 2000
  (``tests/test_correctors.py``) ended as far from the target as the uncorrected sampler in 9 of 192
  runs, with R-hat 1.012-1.069 over 4 chains; healthy default tempered runs on the zoo stay below the
  bound (worst over 6-30 seeds: 1.013 at N = 1000, bound 1.020; 1.018 at N = 400, bound 1.049;
  ``benchmarks/README.md``). Particle filters disagree more per particle, since a final-time estimate
  carries every earlier step's error: the README's stochastic-volatility filter is flagged in 1-2 of 16
  keys at N = 1000-2000. Those chains do disagree that much, and more particles is the fix.
* ``max_stages``: an adaptive run stopped at ``max_stages`` before reaching its target (e.g. beta < 1).
* ``log_evidence``: a non-finite ``log Z_hat``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional, Union

import numpy as np

from smcppl.core.health import (MAX_DIVERGENT_FRACTION, MAX_LOG_EVIDENCE_SD, MAX_RHAT, MIN_ACCEPTANCE,
                                MIN_DISTINCT_DRAWS, MIN_FINAL_ESS, MIN_RHAT, MIN_UNIQUE_FRACTION, RHAT_ESS_FRACTION,
                                HealthFlag, HealthReport, SMCHealthWarning, _chains, rhat_bound, split_rhat,
                                warn_health)


if TYPE_CHECKING:
    import xarray as xr

    from smcppl.diagnostics.stats import StatsArrays

__all__ = ["SMCHealthWarning", "HealthFlag", "HealthReport", "check_health", "split_rhat", "warn_health",
           "MIN_UNIQUE_FRACTION", "MIN_DISTINCT_DRAWS", "MIN_FINAL_ESS", "MAX_DIVERGENT_FRACTION", "MIN_ACCEPTANCE",
           "MAX_LOG_EVIDENCE_SD", "MAX_RHAT", "MIN_RHAT", "RHAT_ESS_FRACTION", "rhat_bound"]

def _per_stage(stats, name):
    return np.asarray(stats[name].values, float) if name in stats else None


def _more_accuracy(attrs: Mapping) -> str:
    """The remedy for noisy or disagreeing chains, for the run's move."""
    if int(attrs.get("waste_free", 0)):
        return ("Use more particles (a waste-free stage restarts from N / num_mcmc_steps of them, which is what "
                "carries the weights of separated modes), or waste_free=False (every particle moves: about 3x the "
                "run time)")
    return "Use more particles or more MCMC steps per stage"


def check_health(stats: Union[xr.Dataset, StatsArrays], posterior: Optional[Mapping] = None,
                 max_rhat_elements: int = 200) -> HealthReport:
    """Run the checks of the module docstring on an ``smc_stats`` Dataset or its plain arrays
    (:class:`~smcppl.diagnostics.stats.StatsArrays`; with the run's attrs:
    ``num_particles``, ``continuous_state``, ``max_stages``) and, for R-hat, the posterior draws
    ``{name: [chain, draw, ...]}``. Returns a :class:`HealthReport`."""
    flags = []
    attrs = dict(stats.attrs)
    n = int(attrs.get("num_particles", stats.sizes.get("particle", 0)) or 0)
    n_stages = np.asarray(stats["n_stages"].values, int)
    lz = np.asarray(stats["log_evidence"].values, float)
    chains = lz.shape[0]
    stage = np.arange(stats.sizes["stage"])
    moved = (stage[None, :] >= 1) & (stage[None, :] < n_stages[:, None])  # stage 0 is the initialisation

    if not np.all(np.isfinite(lz)):
        flags.append(HealthFlag("log_evidence", f"log Z is not finite in chain(s) {_chains(~np.isfinite(lz))}."))
    if "n_unique_draws" in stats and n and int(attrs.get("continuous_state", 0)):
        uniq = np.asarray(stats["n_unique_draws"].values, float)
        bad = uniq < MIN_UNIQUE_FRACTION * n
        if bad.any():
            flags.append(HealthFlag("collapse", (
                f"only {', '.join(str(int(u)) for u in uniq[bad])} distinct draws of {n} in chain(s) {_chains(bad)}: "
                "the population collapsed onto a few particles (moves that do not move, or degenerate weights); "
                "posterior means and ESS are not trustworthy. Look at acceptance/divergences in smc_stats; try "
                "another move (move='rwm' or 'mala'), more mcmc steps, or reparametrise the model.")))
        few = (uniq < MIN_DISTINCT_DRAWS) & ~bad
        if few.any():
            flags.append(HealthFlag("few_draws", (
                f"only {', '.join(str(int(u)) for u in uniq[few])} distinct draws in chain(s) {_chains(few)} "
                f"(num_particles = {n}): posterior summaries and log Z rest on too few points to be trusted. Use "
                "more particles (hundreds to thousands).")))
    ess = _per_stage(stats, "ess")
    if ess is not None:
        final = np.array([ess[c, max(int(k) - 1, 0)] for c, k in enumerate(n_stages)])
        bad = final < MIN_FINAL_ESS
        if bad.any():
            flags.append(HealthFlag("final_ess", (
                f"final ESS/N {', '.join(f'{e:.3f}' for e in final[bad])} in chain(s) {_chains(bad)} "
                f"(< {MIN_FINAL_ESS}): the draws rest on a few heavily weighted particles. Use more particles "
                "or settings inside the sampler's safe range (see its docstring).")))
    div = _per_stage(stats, "divergences")
    divergent_fraction = float("nan")
    if div is not None and n:
        share = np.where(moved, div / n, np.nan)
        if np.isfinite(share).any():
            divergent_fraction = float(np.nanmean(share))
            weighted = _per_stage(stats, "divergent_weight")
            if weighted is not None:
                share = np.fmax(share, np.where(moved, weighted, np.nan))
            worst = np.nanmax(np.where(np.isfinite(share), share, -np.inf), axis=1)
            bad = worst > MAX_DIVERGENT_FRACTION
            if bad.any():
                c0 = int(np.flatnonzero(bad)[0])
                stages = np.flatnonzero(share[c0] > MAX_DIVERGENT_FRACTION).tolist()
                flags.append(HealthFlag("divergences", (
                    f"divergent moves make up or carry more than {MAX_DIVERGENT_FRACTION:.0%} of the population at "
                    f"stage(s) "
                    f"{stages[:8]} of chain "
                    f"{c0} (chains affected: {_chains(bad)}; worst share {np.nanmax(worst):.2f}): the MCMC move is "
                    "unstable there (step size too large for the posterior's curvature, or a density that is not "
                    "finite where particles go). Try a smaller step_size or target_acceptance closer to 1, or "
                    "move='rwm'.")))
    acc = _per_stage(stats, "acceptance_rate")
    if acc is not None:
        acc = np.where(moved, acc, np.nan)
        if np.isfinite(acc).any():
            worst = np.nanmin(np.where(np.isfinite(acc), acc, np.inf), axis=1)
            bad = worst < MIN_ACCEPTANCE
            if bad.any() and str(attrs.get("move", "")) == "ula":
                flags.append(HealthFlag("unstable_ula", (
                    f"a Metropolis test would accept under {MIN_ACCEPTANCE} of the unadjusted Langevin moves at some "
                    f"stage in chain(s) {_chains(bad)} (lowest {np.min(worst):.3g}): the step size is far too large "
                    "and the draws and log Z are badly biased. Use a smaller step_size or adjusted=True (MALA).")))
            elif bad.any():
                flags.append(HealthFlag("stuck_moves", (
                    f"mean acceptance below {MIN_ACCEPTANCE} at some stage in chain(s) {_chains(bad)} (lowest "
                    f"{np.min(worst):.3f}): particles did not move there, so resampled copies stayed copies.")))
    if chains > 1 and np.all(np.isfinite(lz)):
        sd = float(np.std(lz, ddof=1))
        if sd > MAX_LOG_EVIDENCE_SD:
            flags.append(HealthFlag("log_evidence_spread", (
                f"log Z differs between chains (sd {sd:.2f} nats > {MAX_LOG_EVIDENCE_SD}; per chain "
                f"{', '.join(f'{v:.2f}' for v in lz)}): the evidence estimate is unreliable. "
                f"{_more_accuracy(attrs)}, or a higher target_ess.")))
    if chains > 1 and posterior:
        worst, where, draws = 1.0, None, 0
        for name, v in posterior.items():
            v = np.asarray(v)
            if v.ndim < 2 or v.shape[0] != chains or not np.issubdtype(v.dtype, np.number):
                continue
            flat = v.reshape(v.shape[0], v.shape[1], -1)[:, :, :max_rhat_elements]
            for k in range(flat.shape[2]):
                r = split_rhat(flat[:, :, k])
                if np.isfinite(r) and r > worst:
                    worst, where, draws = r, (name if flat.shape[2] == 1 else f"{name}[{k}]"), flat.shape[1]
        bound = rhat_bound(draws)
        if worst > bound:
            flags.append(HealthFlag("rhat", (
                f"chains disagree: R-hat {worst:.3f} > {bound:.4g} for {where!r}: the independent runs describe "
                "different posteriors (modes found by some chains only, or too few effective draws per chain). "
                f"{_more_accuracy(attrs)}.")))
    max_stages = attrs.get("max_stages")
    if "beta" in stats:
        beta = _per_stage(stats, "beta")
        final_beta = np.array([beta[c, max(int(k) - 1, 0)] for c, k in enumerate(n_stages)])
        bad = final_beta < 1.0
        if bad.any():
            flags.append(HealthFlag("max_stages", (
                f"final beta < 1 in chain(s) {_chains(bad)} ({', '.join(f'{b:.3f}' for b in final_beta[bad])}): "
                "the run "
                "stopped before reaching the posterior; raise max_stages.")))
    elif max_stages is not None and int(attrs.get("adaptive", 0)):
        bad = n_stages > int(max_stages)
        if bad.any():
            flags.append(HealthFlag("max_stages", f"chain(s) {_chains(bad)} stopped at max_stages={max_stages}."))
    return HealthReport(tuple(flags), divergent_fraction)
