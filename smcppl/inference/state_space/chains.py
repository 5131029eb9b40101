"""What the parameter samplers (PMMH, particle Gibbs) share: independent MCMC chains over the static
parameters, read back as NumPyro's ``MCMC`` does (``get_samples``) with ArviZ's split R-hat."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.checks import non_finite_advice, open_unit_interval, positive_int
from smcppl.core.engine import validate_num_particles
from smcppl.core.health import MAX_RHAT, MIN_ACCEPTANCE, HealthFlag, HealthReport, split_rhat, warn_health
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

    def _check_health(self, name: str, args: tuple, kwargs: dict, log_target: Optional[np.ndarray] = None
                      ) -> HealthReport:
        """The chains' health checks, run at the end of every ``run``; each failed one is a flag of ``self.health``,
        printed by :meth:`print_summary`, kept in :meth:`to_arviz`'s attrs and raised as an ``SMCHealthWarning``:

        * ``log_target``: the chain's current log prior + log Z_hat is -inf or NaN at its last draw (the particle
          filter found no finite likelihood at the chain's parameters: every proposal is then refused);
        * ``non_finite_draws``: NaN or infinite values among the draws;
        * ``stuck_moves``: a chain accepted fewer than ``MIN_ACCEPTANCE`` (2%) of its parameter proposals, so its
          draws are copies of a few points (a noisy log Z_hat, too few particles, sticks PMMH);
        * ``rhat``: with several chains, a static parameter's rank-normalised split R-hat above ``MAX_RHAT`` (1.05).

        Where the model's inputs hold NaN or infinite values, the flags name them."""
        flags = []
        cause = non_finite_advice(self.model, args, kwargs)
        cause = f" {cause}" if cause else ""
        if log_target is not None:
            bad = ~np.isfinite(np.asarray(log_target)[:, -1])
            if bad.any():
                flags.append(HealthFlag("log_target", (
                    f"log prior + log Z_hat is not finite at the last draw of chain(s) {np.flatnonzero(bad).tolist()}: "
                    "the particle filter found no finite likelihood where the chain is, so it refused every move."
                    + (cause or " Check the data and the parameters' supports, or use more particles."))))
        nonfinite = [k for k, v in self._samples.items() if not np.all(np.isfinite(v))]
        if nonfinite:
            flags.append(HealthFlag("non_finite_draws", f"NaN or infinite draws of {nonfinite}." + cause))
        stuck = self.acceptance_rate < MIN_ACCEPTANCE
        if stuck.any():
            advice = cause or (" Use more particles (a noisy likelihood estimate makes the chain stick), or a longer "
                               "warmup.")
            flags.append(HealthFlag("stuck_moves", (
                f"chain(s) {np.flatnonzero(stuck).tolist()} accepted "
                f"{', '.join(f'{a:.1%}' for a in self.acceptance_rate[stuck])} of their parameter proposals (< "
                f"{MIN_ACCEPTANCE:.0%}): the draws are copies of a few points." + advice)))
        if self.num_chains > 1:
            worst, where = 1.0, None
            for k in self.static_sites:
                v = np.asarray(self._samples[k])
                flat = v.reshape(v.shape[0], v.shape[1], -1)
                for j in range(flat.shape[2]):
                    r = split_rhat(flat[:, :, j])
                    if np.isfinite(r) and r > worst:
                        worst, where = r, (k if flat.shape[2] == 1 else f"{k}[{j}]")
            if worst > MAX_RHAT:
                flags.append(HealthFlag("rhat", (
                    f"chains disagree: R-hat {worst:.3f} > {MAX_RHAT} for {where!r}: the chains have not mixed."
                    + (cause or " Run longer chains (num_warmup, num_samples) or use more particles."))))
        report = HealthReport(tuple(flags), float("nan"), "finite log target and draws, acceptance, chain agreement")
        warn_health(report, name, stacklevel=4)
        return report

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
        post.attrs.update(self.health.attrs())
        stats.attrs.update(self.health.attrs())
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
        print("\n".join(self.health.lines()))
        return table
