"""Simulation-based calibration (SBC) for smcppl's samplers on NumPyro models.

For ``l = 1..L``: draw ``theta_l ~ p(theta)`` and ``y_l ~ p(y | theta_l)`` from the model's prior
predictive, run the sampler on ``y_l`` and compute, for every scalar parameter, the probability
integral transform of the truth under the weighted particle approximation::

    u_l = sum_i W_i 1[theta_i < theta_l]    (+ a uniform share of ties)

If the sampler is correct, ``u_l ~ Uniform(0, 1)`` (up to the O(1/sqrt(ESS)) Monte Carlo error of
the estimate). Uniformity is tested with a chi-square test on ``num_bins`` equal bins. All datasets
run in one compiled, vmapped call (the data are arguments of the compiled sampler).

Supported algorithms (:class:`SBCAlgorithm`): those that expose their NumPyro model, its density on
given inputs and the plan built on that density — :class:`~smcppl.inference.tempered.model.TemperedSMC`
and its subclass :class:`~smcppl.inference.tempered.annealed_langevin.AnnealedLangevin`. SBC needs the
density (a :class:`~smcppl.inference.tempered.numpyro_model.NumPyroDensity`) for the latent sites it
calibrates, the map from particles to their constrained values, and the data layout that lets one
compiled program run on every simulated dataset. Samplers of other families (sequence filters,
correctors, state-space filters) do not sample a NumPyro model's prior-to-posterior path and are not
supported.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.chain import make_run_one
from smcppl.core.checks import prng_key
from smcppl.core.plan import Plan
from smcppl.core.policy import validate_resampling
from smcppl.core.weights import normalize
from smcppl.core.plan import split_data
from smcppl.inference.tempered.numpyro_model import NumPyroDensity

__all__ = ["SBCAlgorithm", "SBCResult", "simulation_based_calibration"]


@runtime_checkable
class SBCAlgorithm(Protocol):
    """What :func:`simulation_based_calibration` needs of an algorithm (``TemperedSMC`` provides it)."""

    model: Callable  # the NumPyro model, simulated from by its prior predictive

    def density(self, *args: Any, **kwargs: Any) -> NumPyroDensity:
        """The model's density on these inputs (latent sites, ``postprocess``, ``data`` layout)."""

    def build_from_density(self, num_particles: int, density: NumPyroDensity) -> Plan:
        """The plan on that density, whose ``fk(data)`` runs on any data of the density's layout."""


class SBCResult(NamedTuple):
    pit: dict[str, np.ndarray]  # parameter name -> [L, *shape] PIT values in [0, 1]
    p_values: dict[str, float]  # parameter name -> chi-square uniformity p-value (all components pooled)
    min_p_value: float
    num_datasets: int
    failed_runs: int


def _chi2_uniform_pvalue(u, num_bins):
    from scipy import stats

    counts = np.histogram(np.clip(u, 0, 1 - 1e-12), bins=num_bins, range=(0, 1))[0]
    return float(stats.chisquare(counts).pvalue)


def simulation_based_calibration(algorithm: SBCAlgorithm, rng_key: jax.Array, num_datasets: int,
                                 num_particles: int, observed: Sequence[str], *model_args: Any,
                                 num_bins: int = 10, **model_kwargs: Any) -> SBCResult:
    """SBC of ``algorithm`` (``TemperedSMC(model)`` or ``AnnealedLangevin(model)``: see
    :class:`SBCAlgorithm`) on its model, with ``num_datasets`` simulated datasets and ``num_particles``
    particles per run.

    ``observed``: names of the model keyword arguments holding the observations (they are simulated).
    ``model_kwargs``: the other inputs, with the observed ones set to example arrays of the right shape
    (used to build the sampler once).
    """
    from numpyro.infer import Predictive

    if not isinstance(algorithm, SBCAlgorithm):
        raise TypeError(f"simulation_based_calibration needs an algorithm with .model, .density(...) and "
                        f".build_from_density(...), such as TemperedSMC(model) or AnnealedLangevin(model); got "
                        f"{type(algorithm).__name__}.")
    model = algorithm.model
    missing = [o for o in observed if o not in model_kwargs]
    if missing:
        raise ValueError(f"observed names {missing} must be keyword arguments of the model with example data.")
    k_sim, k_run = jax.random.split(prng_key(rng_key, hint=""))
    sim_kwargs = {k: (None if k in observed else v) for k, v in model_kwargs.items()}
    sims = Predictive(model, num_samples=num_datasets)(k_sim, *model_args, **sim_kwargs)
    dens = algorithm.density(*model_args, **model_kwargs)
    plan = algorithm.build_from_density(num_particles, dens)
    datasets = []
    for i in range(num_datasets):
        kw = dict(model_kwargs)
        for o in observed:
            kw[o] = np.asarray(sims[o][i])
        datasets.append(split_data(model_args, kw)[0])
    if jax.tree_util.tree_structure(datasets[0]) != jax.tree_util.tree_structure(dens.data):
        raise ValueError(f"The model {getattr(model, '__name__', model)!r} needs its array inputs as concrete "
                         "values (e.g. int(counts.sum())), so one compiled sampler cannot run on every simulated "
                         "dataset: make those computations jax.numpy operations on the traced inputs.")
    data = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *datasets)
    resampling = validate_resampling(plan.resampling)
    run_one = make_run_one(plan, resampling)

    def one(key, d):
        out = run_one(key, d)[0]
        values = jax.vmap(dens.postprocess, in_axes=(0, None))(out.state.particles["position"], d)
        return values, normalize(out.state.log_weights), out.dead_stage

    values, weights, dead = jax.jit(jax.vmap(one))(jax.random.split(k_run, num_datasets), data)
    pit, pvals = {}, {}
    for name in dens.latent_sites:
        v = np.asarray(values[name])  # [L, N, *shape]
        truth = np.asarray(sims[name])  # [L, *shape]
        w = np.asarray(weights).reshape(weights.shape + (1,) * (v.ndim - 2))
        below = np.sum(w * (v < truth[:, None]), axis=1)
        ties = np.sum(w * (v == truth[:, None]), axis=1)
        u = below + np.random.default_rng(0).uniform(size=below.shape) * ties
        pit[name] = u
        pvals[name] = _chi2_uniform_pvalue(u.ravel(), num_bins)
    return SBCResult(pit, pvals, float(min(pvals.values())), num_datasets, int(np.sum(np.asarray(dead) >= 0)))
