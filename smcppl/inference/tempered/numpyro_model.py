"""NumPyro model handling for tempered samplers: the prior/likelihood split in unconstrained space.

For a model with latent sites ``z`` (continuous) and observed sites ``y``, particles live in NumPyro's
unconstrained space ``u`` (flattened to a vector). Each site's value is ``z_s = T_s(u_s)`` with
``T_s = biject_to(support of z_s)``, the support being evaluated at every model run from the current values
of the upstream latents (``x ~ Uniform(0, theta)``: ``T_x`` depends on ``theta``). This is NumPyro's own
unconstrain reparametrisation (as in ``numpyro.infer.util.potential_energy``), which records
``log |det dT_s/du_s|`` as a factor site ``_<s>_log_det``:

* ``loglik(u)   = sum_{observed sites} log p(y | z)`` (``numpyro.factor`` sites count as likelihood
  by default; ``likelihood_sites`` overrides);
* ``logprior(u) = sum_s [log p(z_s | upstream) + log |det dT_s/du_s|]`` (+ factor sites not counted as
  likelihood). The change-of-variables Jacobian always belongs to the prior and is never tempered.

So ``logprior + loglik = -potential_energy``. Everything that can go wrong with a model (it raises, has no
observed sites, has discrete or improper latent sites, has non-finite data) is detected here, in Python,
before any compilation of the sampler.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions import ImproperUniform, biject_to
from numpyro.infer.util import _unconstrain_reparam

from smcppl.core.checks import non_finite_advice, non_finite_inputs
from smcppl.core.plan import ONE_SHOT_COMPILER_OPTIONS, input_signature, run_abstractly, split_data

__all__ = ["ModelError", "NumPyroDensity", "numpyro_density", "split_data"]


class ModelError(ValueError):
    """A NumPyro model that smcppl cannot sample (raised before compilation)."""


class NumPyroDensity(NamedTuple):
    """Functions of a flat unconstrained position ``u [d]`` and the model's array data ``data``
    (:attr:`data` holds the data given at construction; pass another pytree of the same structure to
    reuse compiled code on new data, e.g. for simulation-based calibration)."""

    logprior: Callable  # (u [d], data) -> scalar
    loglik: Callable  # (u [d], data) -> scalar
    pointwise_loglik: Callable  # (u [d], data) -> dict obs site -> elementwise log-lik
    sample_prior: Callable  # (key, n, data) -> u [n, d]
    postprocess: Callable  # (u [d], data) -> dict of constrained latent + deterministic values
    dim: int
    latent_sites: tuple
    likelihood_sites: tuple
    observed_data: dict
    dims: dict  # site name -> list of dim names (plates named)
    coords: dict
    data: Any  # the array leaves of (args, kwargs): the dynamic part of the model's inputs
    unravel: Optional[Callable] = None  # u [d] -> dict latent site -> unconstrained value
    log_jacobian: Optional[Callable] = None  # (u [d], data=construction data) -> log |det dT/du| (inside logprior)
    merge: Optional[Callable] = None  # data -> (args, kwargs)
    log_parts: Optional[Callable] = None  # (u [d], data) -> (log prior, log lik) from one model evaluation


TRACING_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError,
                  jax.errors.TracerBoolConversionError, jax.errors.TracerArrayConversionError)


def _is_log_det_site(name: str) -> bool:
    """A factor site ``_<s>_log_det`` holding the log-Jacobian of site ``s``'s unconstraining transform."""
    return name.startswith("_") and name.endswith("_log_det")


def _site_dims(site, value_shape):
    """Dim names of a site's value: plate names for plate axes, ``<site>_dim_<k>`` otherwise."""
    ndim = len(value_shape)
    event_dim = len(getattr(site.get("fn"), "event_shape", ()))
    names = [f"{site['name']}_dim_{k}" for k in range(ndim)]
    for frame in site.get("cond_indep_stack", []):
        axis = ndim - event_dim + frame.dim
        if 0 <= axis < ndim and value_shape[axis] == frame.size:
            names[axis] = frame.name
    return names


def _log_prob(site):
    """A sample site's (elementwise) log density, times its ``scale`` (from ``handlers.scale``) if any."""
    v = site["fn"].log_prob(site["value"])
    return v if site.get("scale") is None else v * site["scale"]


def _run(model, args, kwargs, key=0, substitute_fn=None):
    """One seeded run of ``model``, traced; ``substitute_fn`` (a NumPyro substitute hook) sees every site."""
    m = handlers.seed(model, rng_seed=key)
    if substitute_fn is not None:
        m = handlers.substitute(m, substitute_fn=substitute_fn)
    return handlers.trace(m).get_trace(*args, **kwargs)


def _failure(model, args, kwargs, what: str, advice: str) -> ModelError:
    """A :class:`ModelError` saying ``what`` went wrong and ``advice``; non-finite model inputs, if any, are
    the likely cause, so the error then names them instead of ``advice``."""
    return ModelError(f"{what.rstrip('.')}. {non_finite_advice(model, args, kwargs) or advice}")


def _model_name(model) -> str:
    return getattr(model, "__name__", repr(model))


# ------------------------------------------------------------------------------ step 1: trace the model
# the raw key of seed 0 (what handlers.seed(model, rng_seed=0) draws with), given to compiled code as data:
# making it with jax.random.PRNGKey(0) would compile a small program in a fresh process
def _seed0():
    return np.zeros(2, np.uint32) if jax.config.jax_default_prng_impl == "threefry2x32" else jax.random.PRNGKey(0)


def _improper_refuser(name: str) -> Callable:
    """A NumPyro substitute hook (it runs before each site is sampled) refusing improper latent priors."""
    def refuse_improper(site):
        fn = site.get("fn")
        while fn is not None and not isinstance(fn, ImproperUniform):  # unwrap Independent, masked, ...
            fn = getattr(fn, "base_dist", None)
        if site["type"] == "sample" and not site.get("is_observed") and fn is not None:
            raise ModelError(
                f"The latent site {site['name']!r} of {name!r} has an ImproperUniform prior, which has no normalised "
                "density to draw the initial particles from or to define the evidence: give it a proper prior "
                "(e.g. a wide Normal, or a Uniform on a bounded range).")
    return refuse_improper


def _trace_model_abstract(model, args: tuple, kwargs: dict, classify: Callable):
    """The model's trace with abstract values (shapes and dtypes, no computation): ``(trace, classify(trace),
    unravel)``, ``unravel`` the flat unconstrained vector's map back to the latent sites; or None where only
    a concrete run can tell (the model raised, or an observed value is computed inside the model), and then
    :func:`_trace_model` runs it op by op. Running the model op by op in a fresh process compiles one small
    XLA program per operation (~0.3 s for a two-parameter regression, more for larger models); tracing it
    compiles nothing (our own step: NumPyro has no abstract model inspection)."""
    name = _model_name(model)

    def probe(seed):
        tr = _run(model, args, kwargs, key=seed, substitute_fn=_improper_refuser(name))
        sites = classify(tr)
        return tr, sites, ravel_pytree(_unconstrain(tr, sites.latent))[1]

    seed = _seed0()
    try:
        tr, sites, unravel = run_abstractly(probe, jax.ShapeDtypeStruct(seed.shape, seed.dtype))
    except ModelError:
        raise
    except Exception:  # the concrete run raises the model's own error, or works where tracing cannot
        return None
    if any(isinstance(tr[s]["value"], jax.core.Tracer) for s in sites.observed):
        return None
    return tr, sites, unravel


def _trace_model(model, args: tuple, kwargs: dict):
    """One run of ``model`` on its data (seed 0), op by op, refusing improper latent priors as they are met."""
    name = _model_name(model)
    refuse_improper = _improper_refuser(name)

    try:
        return _run(model, args, kwargs, substitute_fn=refuse_improper)
    except ModelError:
        raise
    except Exception as e:
        raise _failure(model, args, kwargs,
                       f"The model {name!r} raised {type(e).__name__} while being run with the given data: {e}",
                       "Check that the arguments match the model's signature and that data shapes match its "
                       "plates.") from e


# ------------------------------------------------------------------ step 2: classify the model's sites
class _Sites(NamedTuple):
    latent: list  # continuous latent sample sites: the coordinates of u
    observed: list  # sites with data (``obs=``)
    factors: list  # ``numpyro.factor`` sites
    likelihood: list  # the tempered sites (observed and/or factors)


def _classify_sites(tr, name: str, likelihood_sites: Optional[Sequence[str]], factors_as_likelihood: bool,
                    require_continuous: bool) -> _Sites:
    """Sort the sample sites of trace ``tr`` (Jacobian factor sites ``_<s>_log_det`` aside) and refuse a
    model smcppl cannot sample: subsampling plates, discrete latents, no latent site, no likelihood, unknown
    ``likelihood_sites``, a latent support without a bijection to the real space."""
    latent, observed, factors, discrete = [], [], [], []
    for site_name, site in tr.items():
        if site["type"] == "plate":
            size, subsample_size = site["args"]
            if subsample_size is not None and subsample_size != size:
                raise ModelError(
                    f"The plate {site_name!r} of {name!r} subsamples its data (subsample_size={subsample_size} of "
                    f"{size}). Tempered SMC needs the whole likelihood, and with a subsample fixed once it would "
                    "sample the wrong posterior: drop subsample_size (as for NumPyro's HMC and NUTS, which refuse "
                    "it too).")
        if site["type"] != "sample" or _is_log_det_site(site_name):
            continue
        if site["is_observed"]:
            is_factor = type(site["fn"]).__name__ == "Unit"
            (factors if is_factor else observed).append(site_name)
        elif getattr(site["fn"].support, "is_discrete", False):
            discrete.append(site_name)
        else:
            latent.append(site_name)
    if discrete and require_continuous:
        raise ModelError(
            f"The model {name!r} has discrete latent site(s) {discrete}. smcppl's tempered samplers move "
            "particles in a continuous unconstrained space and do not enumerate discrete sites: marginalise "
            "them out by hand (sum over their values with numpyro.factor, or use a mixture distribution such as "
            "MixtureSameFamily) or make them observed. If they are your data, pass them to run() (e.g. "
            f"run(key, ..., {discrete[0]}=...)): a site whose obs is None is sampled as a latent.")
    if not latent:
        raise ModelError(f"The model {name!r} has no latent sample sites: there is nothing to sample.")
    if likelihood_sites is None:
        lik = observed + (factors if factors_as_likelihood else [])
    else:
        lik = list(likelihood_sites)
        unknown = [s for s in lik if s not in observed + factors]
        if unknown:
            raise ModelError(f"likelihood_sites {unknown} are not observed or factor sites of {name!r}; "
                             f"observed: {observed}, factors: {factors}.")
    if not lik:
        raise ModelError(
            f"The model {name!r} has no observed sites (no `obs=` data and no numpyro.factor), so there is no "
            "likelihood to temper. Pass the data to the model (as args or kwargs) so that its `obs=` sites are "
            "conditioned.")
    for s in latent:
        try:
            biject_to(tr[s]["fn"].support)
        except NotImplementedError:
            raise ModelError(f"The latent site {s!r} of {name!r} has support {tr[s]['fn'].support}, which NumPyro "
                             "cannot map to an unconstrained space: reparametrise it.") from None
    return _Sites(latent, observed, factors, lik)


def _observed_values(tr, observed: Sequence[str], name: str) -> dict:
    """Observed site -> its data (numpy), refusing non-finite observations."""
    return _checked_observations({s: tr[s]["value"] for s in observed}, name)


def _checked_observations(raw: dict, name: str) -> dict:
    """``raw`` (observed site -> data) as numpy arrays, refusing non-finite observations."""
    values = {}
    for s, raw_value in raw.items():
        v = np.asarray(raw_value)
        if np.issubdtype(v.dtype, np.number) and not np.all(np.isfinite(v)):
            raise ModelError(f"Observed site {s!r} of {name!r} contains NaN or infinite values; remove or mask them "
                             "(numpyro.handlers.mask or obs_mask=) before sampling.")
        values[s] = v
    return values


# ------------------------------------------------------- step 3: the unconstraining transforms T_s
def _unconstrain(tr, latent: Sequence[str]) -> dict:
    """``u_s = T_s^{-1}(z_s)`` for each latent site of trace ``tr``, ``T_s = biject_to(support of z_s)``
    with the support at that trace's upstream values."""
    return {s: biject_to(tr[s]["fn"].support).inv(tr[s]["value"]) for s in latent}


def _constrained_values(tr, latent: Sequence[str]) -> dict:
    """Constrained latent and deterministic values of trace ``tr``."""
    return {s: site["value"] for s, site in tr.items() if s in latent or site["type"] == "deterministic"}


# ------------------------------------------------------- step 4: the prior and likelihood log densities
def _log_density(model, merge: Callable, unravel: Callable, likelihood: Sequence[str], observed: Sequence[str]):
    """``evaluate(u, data) -> (logprior(u), loglik(u), pointwise log lik, trace)`` from one model run with each
    latent ``z_s = T_s(u_s)`` (NumPyro's unconstrain reparametrisation, which adds the factor sites
    ``_<s>_log_det = log |det dT_s/du_s|``)::

        loglik(u)   = sum_{s in likelihood} log p_s(value_s | upstream)
        logprior(u) = sum_{other sample sites s} log p_s(value_s | upstream)   (latents, Jacobians, other factors)
    """
    lik_set, observed = set(likelihood), set(observed)

    def evaluate(u_flat, data):
        args, kwargs = merge(data)
        t = _run(model, args, kwargs, substitute_fn=partial(_unconstrain_reparam, unravel(u_flat)))
        lp, ll, pointwise = 0.0, 0.0, {}
        for s, site in t.items():
            if site["type"] != "sample":
                continue
            v = _log_prob(site)
            if s in lik_set:
                ll = ll + jnp.sum(v)
                if s in observed:
                    pointwise[s] = v
            else:  # latent sites, their `_<s>_log_det` Jacobian factors, factors not counted as likelihood
                lp = lp + jnp.sum(v)
        return lp, ll, pointwise, t

    return evaluate


def _compile_first_evaluation(model, args: tuple, kwargs: dict, evaluate_with: Callable, latent: Sequence[str]):
    """Draw the prior at seed 0 and evaluate ``(logprior, loglik, constrained values)`` there, in one compiled
    program (faster than op by op; without LLVM optimisations, ``core.plan.ONE_SHOT_COMPILER_OPTIONS``), so that
    a model that cannot be evaluated fails here. ``evaluate_with(merge)`` builds the evaluation for a way of
    splitting the inputs. Array inputs are traced (compiled code is reused for new data); if the model needs one
    as a concrete value (e.g. ``int(counts.sum())`` as a total count) they stay static, as NumPyro's MCMC does.
    Returns ``(data, merge, evaluate, (u0, lp0, ll0, values0), first)``, ``u0`` the flat unconstrained prior draw
    and ``first`` the compiled ``(seed, data) -> (u0, lp, ll, values)`` when the array inputs are traced (None
    when static)."""
    name = _model_name(model)

    def attempt(static):
        data, merge = split_data(args, kwargs, static=static)
        evaluate = evaluate_with(merge)

        def first(seed, d):
            a, k = merge(d)
            u0 = ravel_pytree(_unconstrain(_run(model, a, k, key=seed), latent))[0]
            lp, ll, _, t = evaluate(u0, d)
            return u0, lp, ll, _constrained_values(t, latent)

        first = jax.jit(first, compiler_options=ONE_SHOT_COMPILER_OPTIONS)
        return data, merge, evaluate, first(_seed0(), data), None if static else first

    try:
        try:
            data, merge, evaluate, at_u0, first = attempt(static=False)
        except TRACING_ERRORS:
            try:
                data, merge, evaluate, at_u0, first = attempt(static=True)
            except TRACING_ERRORS as e:
                raise ModelError(
                    f"The model {name!r} turns a traced value into a Python value ({type(e).__name__}): a latent "
                    "site's value is used in Python control flow or conversion (e.g. `if x > 0`, int(x), "
                    "float(x)). Use jax.numpy operations instead (jnp.where, jnp.astype) so that the model can be "
                    "compiled.") from e
    except ModelError:
        raise
    except Exception as e:
        raise _failure(model, args, kwargs, f"Evaluating the log density of {name!r} failed with "
                       f"{type(e).__name__}: {e}",
                       "Check that each observed array has the shape its plates and distribution expect.") from e
    return data, merge, evaluate, at_u0, first


def numpyro_density(model: Callable, model_args: Sequence = (), model_kwargs: Optional[dict] = None,
                    likelihood_sites: Optional[Sequence[str]] = None, factors_as_likelihood: bool = True,
                    require_continuous: bool = True, cache: Optional[dict] = None) -> NumPyroDensity:
    """Inspect ``model`` with its data and return its tempering split ``(logprior, loglik)`` on the flat
    unconstrained position ``u`` (module docstring), in four steps:

    1. trace the model once on its data, with abstract values (:func:`_trace_model_abstract`: nothing is
       computed or compiled), or op by op where only a concrete run can tell (:func:`_trace_model`: the
       model raised under tracing, its inputs hold NaN or infinite values, or an observed value is computed
       inside the model); improper latent priors refused;
    2. classify the sample sites into latent / observed / factor / likelihood and refuse what cannot be
       sampled (:func:`_classify_sites`, :func:`_observed_values`);
    3. the unconstraining transforms ``u_s = T_s^{-1}(z_s)`` and the flattening ``u = ravel({u_s})``
       (:func:`_unconstrain`);
    4. the log densities ``logprior(u) + loglik(u) = -potential_energy(u)`` from one model run
       (:func:`_log_density`), evaluated once at the seed-0 prior draw (drawn in the same compiled program),
       so that every error surfaces here, before a sampler is compiled.

    ``cache``: a dict kept by the caller (:class:`~smcppl.inference.tempered.TemperedSMC` keeps one per
    object) in which the inspection of a model is stored by its inputs' structure, shapes and dtypes
    (:func:`~smcppl.core.plan.input_signature`). A later call with inputs of the same signature reuses it:
    it re-reads the observed data from the new inputs and re-checks them and the log density at the
    stored prior draw with the compiled first evaluation (inputs holding NaN or infinite values are
    inspected afresh), instead of tracing, inspecting and compiling the model again (hundreds of
    milliseconds per call, the larger part of a run on a small model). Not stored: models whose array
    inputs must stay static, and models whose observed values are not inputs passed as they are
    (``obs=y`` with ``y`` an argument).
    """
    model_kwargs = dict(model_kwargs or {})
    model_args = tuple(model_args)
    key = _cache_key(model, model_args, model_kwargs, likelihood_sites, factors_as_likelihood, require_continuous)
    value_key = None
    if cache is not None and key is not None and cache.get(key) is _BY_VALUE:
        # an inspection that holds array inputs as constants is kept for equal inputs only (by their contents);
        # the inputs are hashed only for such models, known from their first inspection
        value_key = _cache_key(model, model_args, model_kwargs, likelihood_sites, factors_as_likelihood,
                               require_continuous, by_value=True)
        if value_key in cache:
            return cache[value_key]
    elif cache is not None and key is not None and key in cache and not non_finite_inputs(model, model_args,
                                                                                            model_kwargs):
        return _reuse(cache[key], model, model_args, model_kwargs)
    # non-finite inputs are inspected afresh: the compiled check cannot be trusted to see them (a NaN
    # covariate under Bernoulli(logits=...) gives a finite log-likelihood there, NumPyro masking the invalid
    # logits), while the eager trace of a fresh inspection raises with the input named
    dens, entry = _inspect(model, model_args, model_kwargs, likelihood_sites, factors_as_likelihood,
                           require_continuous)
    if cache is not None and key is not None:
        if entry is None and value_key is None:
            value_key = _cache_key(model, model_args, model_kwargs, likelihood_sites, factors_as_likelihood,
                                   require_continuous, by_value=True)
        keep = {key: entry} if entry is not None else {key: _BY_VALUE, value_key: dens}
        while len(cache) > DENSITY_CACHE_SIZE - len(keep):
            cache.pop(next(iter(cache)))
        cache.update(keep)
    return dens


DENSITY_CACHE_SIZE = 8  # model inspections kept per cache (input signatures), oldest dropped first
_BY_VALUE = object()  # cache mark of a signature whose inspections are kept by the inputs' contents


class _Inspected(NamedTuple):
    """What :func:`numpyro_density` keeps of a model's inspection for inputs of one signature."""

    density: NumPyroDensity
    first: Callable  # compiled (seed, data) -> (prior draw u0, log prior, log lik, values) at u0
    evaluate: Callable  # (u, data) -> (log prior, log lik, pointwise log lik, trace)
    observed_leaf: dict  # observed site -> index of its value among the input leaves


def _cache_key(model, args, kwargs, likelihood_sites, factors_as_likelihood, require_continuous, by_value=False):
    signature = input_signature(args, kwargs, by_value=by_value)
    if signature is None:
        return None
    key = (model, None if likelihood_sites is None else tuple(likelihood_sites), bool(factors_as_likelihood),
           bool(require_continuous), bool(jax.config.jax_enable_x64), signature)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _check_first_evaluation(lp0, ll0, model, args, kwargs):
    """Refuse a log density that is not finite at the prior draw (a NaN likelihood from NaN inputs too)."""
    lp0, ll0 = float(lp0), float(ll0)
    if not np.isfinite(lp0) or (np.isnan(ll0) and non_finite_inputs(model, args, kwargs)):
        raise _failure(model, args, kwargs,
                       f"The log density of {_model_name(model)!r} is not finite at a prior draw (log prior {lp0}, "
                       f"log likelihood {ll0})", "Check the priors' parameters.")


def _log_jacobian_fn(evaluate, latent, data0):
    def log_jacobian(u, data=None):
        t = evaluate(u, data0 if data is None else data)[3]
        return sum((jnp.sum(_log_prob(t[f"_{s}_log_det"])) for s in latent if f"_{s}_log_det" in t), jnp.zeros(()))
    return log_jacobian


def _reuse(entry: _Inspected, model, args, kwargs) -> NumPyroDensity:
    """The stored inspection on new inputs of the same signature: new data and observations, checked."""
    leaves = jax.tree_util.tree_leaves((tuple(args), dict(kwargs)))
    observed = _checked_observations({s: leaves[i] for s, i in entry.observed_leaf.items()}, _model_name(model))
    data, _ = split_data(args, kwargs)
    _, lp0, ll0, _ = entry.first(_seed0(), data)
    _check_first_evaluation(lp0, ll0, model, args, kwargs)
    return entry.density._replace(data=data, observed_data=observed,
                                  log_jacobian=_log_jacobian_fn(entry.evaluate, entry.density.latent_sites, data))


def _traced_once(fn: Callable) -> Callable:
    """``jax.jit(fn)`` used inside the samplers' programs: JAX traces the model (NumPyro's handlers, slow
    Python) once per input type and re-uses that trace wherever the program evaluates the density again
    (initial particles, the move's value and gradient, the moved particles); XLA inlines the calls, so
    the compiled program is the same."""
    return jax.jit(fn)


def _inspect(model, model_args, model_kwargs, likelihood_sites, factors_as_likelihood, require_continuous):
    """The four steps of :func:`numpyro_density`; returns ``(density, _Inspected or None)``."""
    name = _model_name(model)

    def classify(trace):
        return _classify_sites(trace, name, likelihood_sites, factors_as_likelihood, require_continuous)

    # inputs with NaN or infinite values are run op by op: the concrete run raises with the input named, where
    # the abstract trace and the compiled check may not see them (NumPyro masks invalid logits)
    traced = None if non_finite_inputs(model, model_args, model_kwargs) else \
        _trace_model_abstract(model, model_args, model_kwargs, classify)
    if traced is None:
        tr = _trace_model(model, model_args, model_kwargs)
        sites = classify(tr)
        unravel = ravel_pytree(_unconstrain(tr, sites.latent))[1]
    else:
        tr, sites, unravel = traced
    observed_data = _observed_values(tr, sites.observed, name)
    latent = sites.latent

    data0, merge, evaluate, (flat0, lp0, ll0, values0), first = _compile_first_evaluation(
        model, model_args, model_kwargs, lambda mg: _log_density(model, mg, unravel, sites.likelihood, sites.observed),
        latent)
    _check_first_evaluation(lp0, ll0, model, model_args, model_kwargs)
    log_jacobian = _log_jacobian_fn(evaluate, latent, data0)

    def sample_prior(key, n, data):
        args, kwargs = merge(data)
        return jax.vmap(lambda k: ravel_pytree(_unconstrain(_run(model, args, kwargs, key=k), latent))[0])(
            jax.random.split(key, n))

    def postprocess(u, data):
        return _constrained_values(evaluate(u, data)[3], latent)

    dims = {s: _site_dims(tr[s], np.shape(v))
            for s, v in {**values0, **observed_data}.items()}
    coords = {f.name: np.arange(f.size) for site in tr.values() for f in site.get("cond_indep_stack", [])}
    dens = NumPyroDensity(
        logprior=lambda u, data: evaluate(u, data)[0], loglik=lambda u, data: evaluate(u, data)[1],
        pointwise_loglik=lambda u, data: evaluate(u, data)[2], sample_prior=sample_prior, postprocess=postprocess,
        dim=int(flat0.shape[0]), latent_sites=tuple(latent), likelihood_sites=tuple(sites.likelihood),
        observed_data=observed_data, dims=dims, coords=coords, data=data0, unravel=unravel,
        log_jacobian=log_jacobian, merge=merge, log_parts=_traced_once(lambda u, data: evaluate(u, data)[:2]))
    # reusable for inputs of the same signature if the array inputs are traced and every observed value is
    # an input passed as it is (then the new inputs give the new observations)
    leaves = jax.tree_util.tree_leaves((model_args, model_kwargs))
    observed_leaf = {s: next((i for i, x in enumerate(leaves) if x is tr[s]["value"]), None) for s in sites.observed}
    reusable = first is not None and all(i is not None for i in observed_leaf.values())
    return dens, (_Inspected(dens, first, evaluate, observed_leaf) if reusable else None)
