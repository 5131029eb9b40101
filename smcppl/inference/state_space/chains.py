"""What the parameter samplers (PMMH, particle Gibbs) share: independent MCMC chains over the static
parameters, read back as NumPyro's ``MCMC`` does (``get_samples``) with ArviZ's split R-hat."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.checks import open_unit_interval, positive_int
from smcppl.core.engine import validate_num_particles
from smcppl.core.plan import kept_for_signature, split_data
from smcppl.inference.state_space.scan import StateSpaceModelError, inspect_scan_model

__all__ = ["ParameterChains", "static_structure", "warmup_then_sample"]


def static_structure(model: Any, args: tuple, kwargs: dict, hint: str) -> Any:
    """The scan structure of ``model`` on these arguments; a :class:`StateSpaceModelError` ending with
    ``hint`` when the model has no static parameter to sample (PMMH, particle Gibbs, SMC²)."""
    structure = inspect_scan_model(model, *args, **kwargs)
    if not structure.static_sites:
        raise StateSpaceModelError("The model has no static parameter (no latent site before its scan): " + hint)
    return structure


def warmup_then_sample(step: Callable, carry: Any, warmup_key: jax.Array, sample_key: jax.Array, num_warmup: int,
                       num_samples: int) -> tuple:
    """Both phases of an adaptive MCMC chain in one ``lax.scan``: ``step(carry, key, warming) -> (carry, out)`` runs
    on the keys ``split(warmup_key, num_warmup)`` with ``warming`` True (the step adapts its proposal), then on
    ``split(sample_key, num_samples)`` with ``warming`` False (the proposal frozen). One loop compiles the
    transition (a particle filter, a conditional-SMC sweep) once, where a scan per phase compiled it twice.
    Returns the final carry and the ``out`` of the sampling iterations."""
    keys = jnp.concatenate([jax.random.split(warmup_key, num_warmup), jax.random.split(sample_key, num_samples)])
    warming = jnp.arange(num_warmup + num_samples) < num_warmup
    carry, outs = jax.lax.scan(lambda c, inp: step(c, *inp), carry, (keys, warming))
    return carry, jax.tree_util.tree_map(lambda a: a[num_warmup:], outs)


class ParameterChains:
    """Draws ``_samples`` (name -> ``[num_chains, num_samples, ...]``) of ``num_chains`` chains, of which the
    ``static_sites`` are the model's static parameters."""

    _samples: dict = None
    static_sites: tuple = ()

    def _settings(self, name: str, model: Callable, num_particles: int, num_warmup: int, num_samples: int,
                  num_chains: int, target_acceptance: float) -> None:
        """Check and store the settings every parameter sampler has (``name`` is the sampler's, for errors)."""
        if not callable(model):
            raise TypeError(f"{name} takes a NumPyro model whose time loop is scan, got {type(model).__name__}.")
        self.model = model
        self.num_particles = validate_num_particles(num_particles)
        self.num_warmup = positive_int(num_warmup, "num_warmup")
        self.num_samples = positive_int(num_samples, "num_samples")
        self.num_chains = positive_int(num_chains, "num_chains")
        self.target_acceptance = open_unit_interval(target_acceptance, "target_acceptance")
        self._samples = None

    def _structure(self, args: tuple, kwargs: dict, hint: str, check: Optional[Callable] = None) -> Any:
        """:func:`static_structure` of ``self.model`` on these arguments, then ``check(structure)`` (a sampler's own
        check of the model, raising on failure), kept for the latest input signature as :meth:`_program` keeps
        the compiled chains (:func:`~smcppl.core.plan.kept_for_signature`): inspecting the model traces it (tens
        of milliseconds per call)."""
        def inspect():
            structure = static_structure(self.model, args, kwargs, hint)
            if check is not None:
                check(structure)
            return structure

        return kept_for_signature(self.__dict__.setdefault("_structures", {}), args, kwargs, inspect)

    def _program(self, args: tuple, kwargs: dict, chain_fn: Callable, settings: tuple) -> tuple:
        """``(program, data)``: ``program(keys, data)`` runs one chain per key (a ``vmap``) under ``jit``, with
        the model's array arguments as its input ``data`` (:func:`~smcppl.core.plan.split_data`);
        ``chain_fn(args, kwargs) -> chain(key)`` gets the arguments rebuilt from the traced data. Built once
        per input signature and ``settings``: a second ``run`` on data of the same shapes (new observations,
        a new key) compiles nothing, as ``SMC.run`` and NumPyro's ``MCMC`` do."""
        data, merge = split_data(args, kwargs)

        def chains(keys, values):
            a, kw = merge(values)
            return jax.vmap(chain_fn(a, kw))(keys)

        program = kept_for_signature(self.__dict__.setdefault("_programs", {}), args, kwargs,
                                     lambda: jax.jit(chains), settings)
        return program, data

    def _check(self) -> None:
        if self._samples is None:
            raise RuntimeError("Call .run(rng_key, ...) before asking for results.")

    def get_samples(self, group_by_chain: bool = False) -> dict:
        """The draws, ``(num_chains * num_samples, ...)`` or ``(num_chains, num_samples, ...)`` per site."""
        self._check()
        if group_by_chain:
            return dict(self._samples)
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self._samples.items()}

    def rhat(self) -> dict:
        """Split R-hat (ArviZ) of each static parameter, the largest over its elements."""
        import arviz as az

        self._check()
        return {k: float(np.max(np.asarray(az.rhat(self._samples[k])))) for k in self.static_sites}

    def _arviz(self, sample_stats: Mapping, dims: Optional[Mapping] = None) -> Any:
        """The draws as ArviZ data, for both ArviZ generations: an ``xarray.DataTree`` (ArviZ >= 1) or an
        ``InferenceData`` (ArviZ < 1) with ``posterior`` and ``sample_stats`` (chain, draw, ...)."""
        import arviz as az
        import xarray as xr

        def dataset(values: Mapping, named: Mapping) -> xr.Dataset:
            out = {}
            for k, v in values.items():
                v = np.asarray(v)
                names = list(named.get(k, ()))[: v.ndim - 2]
                names += [f"{k}_dim_{i}" for i in range(len(names), v.ndim - 2)]
                out[k] = (("chain", "draw", *names), v)
            return xr.Dataset(out)

        post, stats = dataset(self._samples, dims or {}), dataset(sample_stats, {})
        if int(az.__version__.split(".")[0]) >= 1:
            return xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})
        return az.InferenceData(posterior=post, sample_stats=stats)

    def print_summary(self, prob: float = 0.9) -> Any:
        """ArviZ's summary of the draws (mean, sd, highest-density interval of mass ``prob``, ESS, R-hat),
        printed and returned, with the acceptance rate of each chain."""
        import arviz as az

        self._check()
        data = self.to_arviz()
        if int(az.__version__.split(".")[0]) >= 1:
            table = az.summary(data, ci_prob=prob, ci_kind="hdi")
        else:
            table = az.summary(data, hdi_prob=prob)
        print(table)
        print(f"acceptance rate per chain: {np.round(self.acceptance_rate, 3).tolist()}")
        return table
