"""Particle filters for state-space models as Feynman–Kac models of the engine, and the front end
:class:`StateSpaceFilter` (an algorithm of :class:`smcppl.SMC`; ARCHITECTURE.md, "One engine").

For the lower-level form :class:`~smcppl.models.state_space.StateSpace` (a scan-declared NumPyro model is
turned into it by :func:`~smcppl.inference.state_space.scan.scan_state_space`), stage ``t`` of the engine
is time ``t``:

* bootstrap: ``M_t = f_t``, ``log G_t = log g_t(y_t | x_t)``;
* guided, a user proposal ``q_t(x_t | x_{t-1})`` for ``t >= 1`` (``x_0 ~ m_0``):
  ``log G_t = log g_t(y_t | x_t) + log f_t(x_t | x_{t-1}) - log q_t(x_t | x_{t-1})``;
* auxiliary, a look-ahead ``eta_{t+1}(x_t) ~ p(y_{t+1} | x_t)``: the engine resamples on the weights
  ``w_t eta_{t+1}(x_t)`` and ``log G_t = log g_t + [log f_t - log q_t] + log eta_{t+1}(x_t) - log eta_t(x_{t-1})``
  (``eta_T = 1``), so that the product of the mean potentials still estimates ``Z`` without bias; the
  filtering weights are ``l_t - log eta_{t+1}(x_t)``.

``log Z_hat`` estimates ``log p(y_{0:T-1} | theta)``; the trace's ``summary`` holds the filtering mean,
variance and quantiles of ``record(x_t)`` at every time step.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.checks import open_unit_interval, prng_key
from smcppl.core.engine import FeynmanKac, raise_if_failed
from smcppl.core.plan import Plan, kept_for_signature, run_abstractly, split_data
from smcppl.core.policy import as_resampling
from smcppl.core.weights import normalize
from smcppl.inference.state_space.export import filtering_dataset
from smcppl.inference.state_space.scan import (StateSpaceModelError, inspect_scan_model, scan_state_space,
                                                time_slice)
from smcppl.models.state_space import StateSpace

if TYPE_CHECKING:
    from smcppl.inference.state_space.smoothing import SmoothingResult

__all__ = ["StateSpaceFilter", "filter_feynman_kac", "weighted_moments", "complete_state_space", "time_slice"]


def complete_state_space(ssm: StateSpace) -> StateSpace:
    """Fill the optional fields of a :class:`StateSpace` from the required ones (fused ``step`` from
    ``sample_transition`` + ``log_observation``, ``complete`` from ``log_transition``, ``record`` = identity,
    ``num_steps`` from the inputs, the population versions as a ``vmap`` of the fused ones over keys split
    from the step's key)."""
    if not isinstance(ssm, StateSpace):
        raise TypeError(f"Expected a smcppl.models.state_space.StateSpace, got {type(ssm).__name__}.")
    for name in ("sample_initial", "sample_transition", "log_observation"):
        if not callable(getattr(ssm, name)):
            raise TypeError(f"StateSpace.{name} must be a function, got {getattr(ssm, name)!r}.")
    num_steps = ssm.num_steps
    if num_steps is None:
        leaves = jax.tree_util.tree_leaves(ssm.inputs)
        if not leaves:
            raise ValueError("StateSpace: give num_steps (the number of time steps T) or inputs with a time axis.")
        num_steps = int(np.shape(leaves[0])[0])
    if int(num_steps) < 1:
        raise ValueError(f"StateSpace.num_steps must be >= 1, got {num_steps}.")

    def step(key, x_prev, u, t):
        x = ssm.sample_transition(key, x_prev, u, t)
        return x, ssm.log_observation(x, u, t)

    def step_initial(key, u):
        x = ssm.sample_initial(key, u)
        return x, ssm.log_observation(x, u, 0)

    def complete(x_prev, z, u, t):
        if ssm.log_transition is None:
            raise ValueError("A guided proposal needs StateSpace.log_transition (log f_t(x_t | x_{t-1})).")
        return z, ssm.log_transition(x_prev, z, u, t), ssm.log_observation(z, u, t)

    step, step_initial = ssm.step or step, ssm.step_initial or step_initial

    def population_step(key, x_prev, u, t):
        n = jax.tree_util.tree_leaves(x_prev)[0].shape[0]
        return jax.vmap(step, in_axes=(0, 0, None, None))(jax.random.split(key, n), x_prev, u, t)

    def population_initial(key, u, n):
        return jax.vmap(step_initial, in_axes=(0, None))(jax.random.split(key, n), u)

    return ssm._replace(num_steps=int(num_steps), step=step, step_initial=step_initial,
                        complete=ssm.complete or complete, record=ssm.record or (lambda x: x),
                        population_step=ssm.population_step or population_step,
                        population_initial=ssm.population_initial or population_initial)


def _weighted_quantiles(w, x, probs):
    """Quantiles ``probs`` of each column of ``x [N, ...]`` under weights ``w [N]``: the smallest particle
    value ``v`` whose cumulative weight ``F(v) = sum_{x_i <= v} w_i`` reaches ``p``.

    By bisection on ``v`` (``F(lo) < p <= F(hi)``, one masked weighted sum per halving, as many halvings as
    the float type has mantissa bits) and a final snap to the largest particle value ``<= hi``: ``O(N)`` per
    halving. XLA's CPU sort costs about 300 ns per element at N = 1e4, ten times a whole bootstrap filter
    step, where sorting was the textbook way (``benchmarks/state_space.py``, the front-end rows)."""
    flat = x.reshape(x.shape[0], -1)
    p = jnp.asarray(probs, w.dtype)[:, None]
    lo0 = jnp.broadcast_to(jnp.min(flat, axis=0), (len(probs), flat.shape[1]))
    hi0 = jnp.broadcast_to(jnp.max(flat, axis=0), (len(probs), flat.shape[1]))

    def cdf(v):  # [P, D] -> F(v) per quantile and column
        return jnp.sum(jnp.where(flat[None] <= v[:, None], w[None, :, None], 0.0), axis=1)

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        reached = cdf(mid) >= p
        return jnp.where(reached, lo, mid), jnp.where(reached, mid, hi)

    # F(min) may already reach p (a heavy smallest particle): then the quantile is the minimum itself
    lo, hi = jax.lax.fori_loop(0, jnp.finfo(flat.dtype).nmant + 2, halve, (lo0, hi0))
    hi = jnp.where(cdf(lo0) >= p, lo0, hi)
    snapped = jnp.max(jnp.where(flat[None] <= hi[:, None], flat[None], -jnp.inf), axis=1)
    return snapped.reshape((len(probs),) + x.shape[1:])


def weighted_moments(values: jax.Array, log_weights: jax.Array, probs: Sequence[float] = (0.05, 0.5, 0.95)) -> dict:
    """``{"mean": sum_i W_i v_i, "var": sum_i W_i (v_i - mean)^2, "quantiles": [len(probs), ...]}`` of each
    leaf of ``values`` (leading particle axis) under the normalised weights ``W = softmax(log_weights)``."""
    w = normalize(log_weights)

    def mean(v):
        return jnp.tensordot(w, v.astype(w.dtype), axes=1)

    means = jax.tree_util.tree_map(mean, values)
    var = jax.tree_util.tree_map(lambda v, m: mean((v - m) ** 2), values, means)
    qs = jax.tree_util.tree_map(lambda v: _weighted_quantiles(w, v.astype(w.dtype), probs), values)
    return {"mean": means, "var": var, "quantiles": qs}


def filter_feynman_kac(ssm: StateSpace, num_particles: int, proposal: Optional[Callable] = None,
                       lookahead: Optional[Callable] = None) -> FeynmanKac:
    """The particle filter of a (completed, :func:`complete_state_space`) ``ssm`` as a :class:`FeynmanKac`
    with particles ``(x_t, log eta_{t+1}(x_t))`` and stage parameter ``t`` (module docstring).

    proposal(key, x_prev, u_t, t) -> (z, log q): a guided proposal for ``t >= 1`` (``z`` goes through
    ``ssm.complete``); None: bootstrap. lookahead(x_prev, u_t, t) -> log eta_t(x_prev): auxiliary filter."""
    inputs, num_steps = ssm.inputs, ssm.num_steps
    last = num_steps - 1

    def look(x, t):
        if lookahead is None:
            return jnp.zeros(num_particles)
        u = time_slice(inputs, jnp.minimum(t, last))
        la = jax.vmap(lookahead, in_axes=(0, None, None))(x, u, t)
        return jnp.where(t <= last, la, 0.0)

    def init(key):
        u0 = time_slice(inputs, 0)
        x, log_g = ssm.population_initial(key, u0, num_particles)
        la = look(x, 1)
        return (x, la), log_g + la, jnp.zeros((), jnp.int32)

    def move(key, particles, log_weights, t, ancestry):
        x_prev, la_prev = particles
        t1 = t + 1
        u = time_slice(inputs, t1)
        if proposal is None:
            x, log_g = ssm.population_step(key, x_prev, u, t1)
        else:
            keys = jax.random.split(key, num_particles)
            z, log_q = jax.vmap(proposal, in_axes=(0, 0, None, None))(keys, x_prev, u, t1)
            x, log_f, log_g = jax.vmap(ssm.complete, in_axes=(0, 0, None, None))(x_prev, z, u, t1)
            log_g = log_g + log_f - log_q
        la = look(x, t1 + 1)
        return (x, la), None, log_g + la - la_prev

    return FeynmanKac(init, move, lambda x, lw, t, info: t + 1, None,
                      progress=lambda t: t / jnp.maximum(last, 1))


class StateSpaceFilter:
    """A particle filter for :class:`smcppl.SMC`::

        smc = SMC(StateSpaceFilter(model, theta={"phi": 0.9, ...}), num_particles=1000, num_chains=4)
        smc.run(jax.random.key(0), y)   # the model's arguments
        smc.log_evidence                # log p(y | theta) estimates, one per chain
        smc.trace.summary["mean"]       # filtering means per chain and time step

    model: a NumPyro model whose time loop is ``numpyro.contrib.control_flow.scan`` (module
    :mod:`~smcppl.inference.state_space.scan`; ``theta`` gives its static parameters) or a
    :class:`~smcppl.models.state_space.StateSpace` (then ``run`` takes no model arguments).
    proposal: ``"bootstrap"`` or a guided proposal ``q(key, x_prev, u_t, t) -> (z, log q)`` for ``t >= 1``
    (for a scan model ``z`` is the dict of the body's latent sites). lookahead: ``eta(x_prev, u_t, t) ->
    log eta`` for an auxiliary filter. resampling/entropic: any policy of the core (default: systematic
    when ESS/N < 0.5); entropic resampling is corrected so that ``Z_hat`` stays unbiased.
    quantiles: probabilities of the per-time-step filtering quantiles. vectorize (scan models): run the
    bootstrap step's body once on the whole population (one key, ``N`` draws) when it broadcasts over a
    leading particle axis; None decides by a numerical check of the body at build time
    (:func:`~smcppl.inference.state_space.scan.body_broadcasts`), False always ``vmap``s it per particle.
    """

    def __init__(self, model: Union[Callable, StateSpace], proposal: Union[str, Callable] = "bootstrap", *,
                 theta: Optional[dict] = None, lookahead: Optional[Callable] = None, resampling=None, entropic=None,
                 quantiles: Sequence[float] = (0.05, 0.5, 0.95), vectorize: Optional[bool] = None):
        if not (isinstance(model, StateSpace) or callable(model)):
            raise TypeError(f"model must be a NumPyro model (a function) or a StateSpace, got {type(model).__name__}.")
        if not (proposal == "bootstrap" or callable(proposal)):
            raise ValueError(f"proposal must be 'bootstrap' or a function (key, x_prev, u_t, t) -> (z, log q), "
                             f"got {proposal!r}.")
        if lookahead is not None and not callable(lookahead):
            raise TypeError(f"lookahead must be a function (x_prev, u_t, t) -> log eta, got {lookahead!r}.")
        self.model, self.theta = model, dict(theta or {})
        self.proposal = None if proposal == "bootstrap" else proposal
        self.lookahead = lookahead
        self.resampling = as_resampling(resampling, entropic)
        self.quantiles = tuple(open_unit_interval(q, "quantiles") for q in quantiles)
        if vectorize not in (None, True, False):
            raise TypeError(f"vectorize must be None (decide by a check), True or False, got {vectorize!r}.")
        self.vectorize = vectorize

    def state_space(self, *args, **kwargs) -> StateSpace:
        """The completed lower-level form this filter runs (checks a scan model's declaration)."""
        return complete_state_space(self._declared(*args, **kwargs))

    def _declared_once(self, args, kwargs) -> StateSpace:
        """:meth:`_declared` (the declaration and broadcasting checks), once per input signature (tree structure,
        array shapes and dtypes, other values: :func:`~smcppl.core.plan.kept_for_signature`); what :meth:`build`
        takes from it (the checks, ``num_steps``, ``record``, whether to vectorize) depends on nothing else. A scan
        model runs under an abstract trace (:func:`~smcppl.core.plan.run_abstractly`; op by op its runs compiled
        ~25 small programs, ~1 s in a fresh process), so the functions of the form returned close over that
        finished trace: read those fields only."""
        def declare():
            if isinstance(self.model, StateSpace):
                return self._declared(*args, **kwargs)
            return run_abstractly(lambda: self._declared(*args, **kwargs))

        return kept_for_signature(self.__dict__.setdefault("_declared_cache", {}), args, kwargs, declare)

    def _declared(self, *args, **kwargs) -> StateSpace:
        if isinstance(self.model, StateSpace):
            if args or kwargs:
                raise TypeError("A StateSpace model takes no run arguments (its inputs are StateSpace.inputs).")
            return self.model
        structure = inspect_scan_model(self.model, *args, **kwargs)
        missing = [k for k in structure.static_sites if k not in self.theta]
        if missing:
            raise StateSpaceModelError(f"theta has no value for the static parameter(s) {missing}: give "
                                       f"StateSpaceFilter(model, theta={{...}}) a value for each of "
                                       f"{list(structure.static_sites)}.")
        extra = [k for k in self.theta if k not in structure.static_sites]
        if extra:
            raise StateSpaceModelError(f"theta names {extra}, which are not static parameters of the model (those "
                                       f"are {list(structure.static_sites)}).")
        return scan_state_space(self.model, self.theta, *args, vectorize=self.vectorize, **kwargs)

    def smooth(self, rng_key: jax.Array, num_particles: int, num_paths: int, *args, method: str = "ffbs",
               **kwargs) -> "SmoothingResult":
        """Smoothing paths of the model on its arguments ``*args, **kwargs`` with this filter's proposal,
        look-ahead and resampling (:func:`smcppl.inference.state_space.smoothing.smooth`: ``"ffbs"`` or
        ``"genealogy"``); returns a ``SmoothingResult`` whose ``paths`` leaves are ``[num_paths, T, ...]``.
        Compiled once per input signature and settings, with the model's array arguments as inputs (as
        :meth:`build`): a second call with a new key or new data of the same shapes compiles nothing."""
        from smcppl.inference.state_space.smoothing import smooth

        rng_key = prng_key(rng_key)
        data, merge = split_data(args, kwargs)

        def compile_smoother():
            declared = self._declared_once(args, kwargs)  # the declaration checks, kept with build's

            def run(key, values):
                if isinstance(self.model, StateSpace):
                    ssm = self.model
                else:
                    a, kw = merge(values)
                    ssm = scan_state_space(self.model, self.theta, *a, vectorize=declared.population_step is not None,
                                           **kw)
                return smooth(key, ssm, num_particles, num_paths, method, self.resampling, self.proposal,
                              self.lookahead)
            return jax.jit(run)

        program = kept_for_signature(self.__dict__.setdefault("_smoothers", {}), args, kwargs, compile_smoother,
                                     settings=(num_particles, num_paths, method))
        result = program(rng_key, data)
        # a filter that lost every particle draws its paths from NaN weights: refused, as SMC.run refuses it
        raise_if_failed(result.output, "StateSpaceFilter.smooth", (self.model, args, kwargs))
        return result

    def build(self, num_particles: int, *args, **kwargs) -> Plan:
        """The filter's plan. A scan model's array arguments (the observations, covariates) are the plan's
        ``data``: the compiled run takes them as inputs, so ``SMC.run`` on new data of the same shapes reuses
        it (the declaration check and the broadcasting check run once per input signature)."""
        declared = self._declared_once(args, kwargs)
        ssm = complete_state_space(declared)
        if isinstance(self.model, StateSpace):
            data, fk = None, filter_feynman_kac(ssm, num_particles, self.proposal, self.lookahead)
        else:
            data, merge = split_data(args, kwargs)
            vectorize = declared.population_step is not None

            def fk(values):
                a, kw = merge(values)
                traced = complete_state_space(scan_state_space(self.model, self.theta, *a, vectorize=vectorize,
                                                               check_markov=False, **kw))
                return filter_feynman_kac(traced, num_particles, self.proposal, self.lookahead)
        probs = self.quantiles

        def summary(particles, log_weights):
            x, la = particles
            return weighted_moments(jax.vmap(ssm.record)(x), log_weights - la, probs)

        def postprocess(particles, _data=None):
            rec = jax.vmap(ssm.record)(particles[0])
            return dict(rec) if isinstance(rec, dict) else {"x": rec}

        kind = "bootstrap" if self.proposal is None else "guided"
        kind = ("auxiliary " + kind) if self.lookahead is not None else kind
        population = "vectorized" if self.proposal is None and declared.population_step else "vmap over particles"
        return Plan(fk=fk, num_stages=ssm.num_steps - 1, max_stages=ssm.num_steps - 1, postprocess=postprocess,
                    resampling=self.resampling, summary_fn=summary, name="StateSpaceFilter", progress_name="t",
                    entropic_correction=True,
                    attrs={"filter": kind, "num_time_steps": ssm.num_steps, "population_step": population},
                    metadata={"quantiles": probs, "filtering_dataset": filtering_dataset}, data=data)
