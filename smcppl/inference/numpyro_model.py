"""NumPyro model handling for tempered samplers: the prior/likelihood split in unconstrained space.

For a model with latent sites ``z`` (continuous) and observed sites ``y``, particles live in NumPyro's
unconstrained space ``u`` (flattened to a vector), with ``z = T(u)``, ``T = biject_to(support)``:

* ``loglik(u)   = sum_{observed sites} log p(y | z)`` (``numpyro.factor`` sites count as likelihood
  by default; ``likelihood_sites`` overrides);
* ``logprior(u) = sum_{latent sites} log p(z) + log |det J_T(u)|`` (+ factor sites not counted as
  likelihood). The change-of-variables Jacobian always belongs to the prior and is never tempered.

Everything that can go wrong with a model (it raises, has no observed sites, has discrete latent
sites, has non-finite data) is detected here, in Python, before any compilation of the sampler.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions import biject_to
from numpyro.infer.util import constrain_fn

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
    unravel: Callable = None
    log_jacobian: Callable = None  # u [d] -> log |det dT/du| (already inside logprior)
    merge: Callable = None  # data -> (args, kwargs)
    log_parts: Callable = None  # (u [d], data) -> (log prior, log lik) from one model evaluation


def split_data(args, kwargs):
    """Split model inputs into array leaves (traced by jit) and a function rebuilding the inputs."""
    leaves, treedef = jax.tree_util.tree_flatten((tuple(args), dict(kwargs)))
    is_array = [isinstance(x, (np.ndarray, jax.Array)) and np.ndim(x) > 0 for x in leaves]
    dyn = [jnp.asarray(x) for x, a in zip(leaves, is_array) if a]

    def merge(dyn_values):
        it = iter(dyn_values)
        full = [next(it) if a else x for x, a in zip(leaves, is_array)]
        return jax.tree_util.tree_unflatten(treedef, full)

    return dyn, merge


def _is_log_det_site(name):
    return name.startswith("_") and name.endswith("_log_det")


def _site_dims(site, value_shape):
    """Dim names of a site's value: plate names for plate axes, ``<site>_dim_<k>`` otherwise."""
    ndim = len(value_shape)
    event_dim = len(getattr(site["fn"], "event_shape", ()))
    names = [f"{site['name']}_dim_{k}" for k in range(ndim)]
    for frame in site.get("cond_indep_stack", []):
        axis = ndim - event_dim + frame.dim
        if 0 <= axis < ndim and value_shape[axis] == frame.size:
            names[axis] = frame.name
    return names


def _trace(model, args, kwargs, seed=0, data=None):
    m = handlers.seed(model, rng_seed=seed)
    if data is not None:
        m = handlers.substitute(m, data=data)
    return handlers.trace(m).get_trace(*args, **kwargs)


def numpyro_density(model, model_args: Sequence = (), model_kwargs: Optional[dict] = None,
                    likelihood_sites: Optional[Sequence[str]] = None, factors_as_likelihood: bool = True,
                    require_continuous: bool = True) -> NumPyroDensity:
    """Inspect ``model`` with its data and return its tempering split (see module docstring)."""
    model_kwargs = dict(model_kwargs or {})
    model_args = tuple(model_args)
    name = getattr(model, "__name__", repr(model))
    try:
        tr = _trace(model, model_args, model_kwargs)
    except Exception as e:  # noqa: BLE001 - we re-raise with context
        raise ModelError(
            f"The model {name!r} raised {type(e).__name__} while being run with the given data: {e}. "
            "Check that the arguments match the model's signature and that data shapes match its plates."
        ) from e

    latent, observed, factors, discrete = [], [], [], []
    for site_name, site in tr.items():
        if site["type"] != "sample" or _is_log_det_site(site_name):
            continue
        if site["is_observed"]:
            is_factor = type(site["fn"]).__name__ == "Unit"
            (factors if is_factor else observed).append(site_name)
        else:
            if getattr(site["fn"].support, "is_discrete", False):
                discrete.append(site_name)
            else:
                latent.append(site_name)
    if discrete and require_continuous:
        raise ModelError(
            f"The model {name!r} has discrete latent site(s) {discrete}. smcppl's tempered samplers move "
            "particles in a continuous unconstrained space: marginalise these sites out (e.g. with "
            "numpyro.contrib.funsor's enumeration or by hand with a factor) or make them observed."
        )
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
            "conditioned."
        )
    observed_data = {}
    for s in observed:
        v = np.asarray(tr[s]["value"])
        if np.issubdtype(v.dtype, np.number) and not np.all(np.isfinite(v)):
            raise ModelError(f"Observed site {s!r} of {name!r} contains NaN or infinite values; remove or mask them "
                             "(numpyro.handlers.mask or obs_mask=) before sampling.")
        observed_data[s] = v

    transforms = {s: biject_to(tr[s]["fn"].support) for s in latent}
    u_example = {s: transforms[s].inv(tr[s]["value"]) for s in latent}
    flat_example, unravel = ravel_pytree(u_example)
    dim = int(flat_example.shape[0])
    lik_set = set(lik)

    data0, merge = split_data(model_args, model_kwargs)

    def _split(u_flat, data):
        args, kwargs = merge(data)
        u = unravel(u_flat)
        values = {s: transforms[s](u[s]) for s in latent}
        log_det = sum(jnp.sum(transforms[s].log_abs_det_jacobian(u[s], values[s])) for s in latent)
        t = _trace(model, args, kwargs, data=values)
        lp, ll, pointwise = log_det, 0.0, {}
        for s, site in t.items():
            if site["type"] != "sample" or _is_log_det_site(s):
                continue
            v = site["fn"].log_prob(site["value"])
            if site.get("scale") is not None:
                v = v * site["scale"]
            if s in lik_set:
                ll = ll + jnp.sum(v)
                if s in observed_data:
                    pointwise[s] = v
            else:
                lp = lp + jnp.sum(v)
        return lp, ll, pointwise

    def log_jacobian(u_flat):
        u = unravel(u_flat)
        return sum(jnp.sum(transforms[s].log_abs_det_jacobian(u[s], transforms[s](u[s]))) for s in latent)

    def logprior(u, data):
        return _split(u, data)[0]

    def loglik(u, data):
        return _split(u, data)[1]

    def pointwise_loglik(u, data):
        return _split(u, data)[2]

    def prior_draw(key, data):
        args, kwargs = merge(data)
        t = _trace(model, args, kwargs, seed=key)
        return ravel_pytree({s: transforms[s].inv(t[s]["value"]) for s in latent})[0]

    def sample_prior(key, n, data):
        return jax.vmap(prior_draw, in_axes=(0, None))(jax.random.split(key, n), data)

    def postprocess(u_flat, data):
        args, kwargs = merge(data)
        return constrain_fn(model, args, kwargs, unravel(u_flat), return_deterministic=True)

    # run each function once, eagerly, so that a model error surfaces here with a clear message
    try:
        u0 = prior_draw(jax.random.key(0), data0)
        lp0, ll0, _ = _split(u0, data0)
        post0 = postprocess(u0, data0)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"Evaluating the log density of {name!r} failed with {type(e).__name__}: {e}. "
                         "Check that each observed array has the shape its plates and distribution expect.") from e
    if not np.isfinite(float(lp0)):
        raise ModelError(f"The log prior density of {name!r} is not finite at a prior draw ({float(lp0)}); "
                         "check the priors' parameters.")

    dims, coords = {}, {}
    for s, v in post0.items():
        site = tr[s] if s in tr else {"name": s, "fn": None, "cond_indep_stack": []}
        if site.get("fn") is None:
            dims[s] = [f"{s}_dim_{k}" for k in range(np.ndim(v))]
            for frame in tr[s].get("cond_indep_stack", []) if s in tr else []:
                pass
        else:
            dims[s] = _site_dims(site, np.shape(v))
    for s, v in observed_data.items():
        dims[s] = _site_dims(tr[s], v.shape)
    for s, site in tr.items():
        for frame in site.get("cond_indep_stack", []) if isinstance(site, dict) else []:
            coords.setdefault(frame.name, np.arange(frame.size))
    return NumPyroDensity(logprior, loglik, pointwise_loglik, sample_prior, postprocess, dim, tuple(latent),
                          tuple(lik), observed_data, dims, coords, data0, unravel, log_jacobian, merge,
                          lambda u, data: _split(u, data)[:2])
