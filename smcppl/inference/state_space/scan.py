"""State-space models declared in NumPyro with ``numpyro.contrib.control_flow.scan``.

The declaration is an ordinary NumPyro model whose time loop is one ``scan``::

    def sv(y):
        mu = numpyro.sample("mu", dist.Normal(0, 1))               # static parameters: before the scan
        phi = numpyro.sample("phi", dist.Uniform(-1, 1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1))
        h0 = numpyro.sample("h0", dist.Normal(mu, sigma / jnp.sqrt(1 - phi**2)))  # initial state

        def step(h, y_t):                                           # latent state and observation inside
            h = numpyro.sample("h", dist.Normal(mu + phi * (h - mu), sigma))
            numpyro.sample("y", dist.Normal(0, jnp.exp(h / 2)), obs=y_t)
            return h, None

        scan(step, h0, y)

An effect handler (:class:`capture_scan`) intercepts the ``scan`` message instead of running it, so the
model needs no rewriting. For given static parameters ``theta`` (:func:`scan_state_space`) the model is run
up to its ``scan`` and the body ``f(carry, x_t)`` is turned into the lower-level form
:class:`~smcppl.models.state_space.StateSpace` of per-particle functions. The state at time ``t`` is the dict
``{"carry": c_t, "prev": c_{t-1}, "latent": z_t, "initial": initial-state sites}``: ``z_t`` the body's latent
sites at step ``t`` and ``c_t`` the carry the body returns; with ``c_{-1}`` the scan's ``init`` (drawn from the
initial-state sites):

* ``x_0``: ``c_{-1} ~ p(initial-state sites | theta)``, then step 0 of the body;
* ``f_t(x_t | x_{t-1}) = prod_{latent sites s} p(z_{t,s} | c_{t-1}, x_t)`` (the body's latent sites);
* ``g_t(y_t | x_t) = prod_{observed sites s} p(y_{t,s} | c_{t-1}, z_t, x_t)``.

``f_t`` is a density of the state (``log_transition``, used by FFBS) only when the body's new carry is a
function of its latent sites alone; otherwise (e.g. an AR(2) carry ``(x_t, x_{t-1})``) ``log_transition``
is None and smoothing uses the genealogy.

Sites before the scan are *static parameters* unless the scan's ``init`` depends on their value (then they
are *initial-state* sites, drawn per particle); the split is read off the model's jaxpr
(:func:`inputs_used`). Models that do not fit raise :class:`StateSpaceModelError` naming the site: no
``scan`` or more than one, observed sites outside the scan, latent sites after it, discrete static
parameters, a reversed scan or ``history != 1``, no observed site in the body, a nested ``scan``.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Var
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.contrib.control_flow.scan import scan_wrapper
from numpyro.distributions import biject_to
from numpyro.infer.util import _unconstrain_reparam
from numpyro.primitives import Messenger

from smcppl.core.plan import ONE_SHOT_COMPILER_OPTIONS, run_abstractly
from smcppl.models.state_space import StateSpace

__all__ = ["StateSpaceModelError", "ScanCall", "ScanStructure", "capture_scan", "inspect_scan_model",
           "scan_state_space", "inputs_used", "run_body", "body_broadcasts", "time_slice", "prior_draw",
           "static_log_prior"]


class StateSpaceModelError(ValueError):
    """A NumPyro model that is not a state-space model of the scan form (raised before compilation)."""


class ScanCall(NamedTuple):
    """The arguments of one ``numpyro.contrib.control_flow.scan`` call."""

    f: Callable
    init: Any
    xs: Any
    length: int
    reverse: bool
    history: int


class _StopAtScan(Exception):
    pass


class capture_scan(Messenger):
    """Effect handler recording every ``scan`` call of the model (:attr:`calls`) and the names of the sample
    sites seen before the first one (:attr:`before`), after it (:attr:`after`) and inside it
    (:attr:`inside`: the body's trace, when the scan runs). ``stop=True`` aborts the model at its first
    ``scan`` (the scan is not run); catch with :meth:`run`."""

    def __init__(self, fn=None, stop: bool = False):
        self.stop = stop
        self.calls: list = []
        self.before: list = []
        self.after: list = []
        self.inside: dict = {}
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "control_flow" and msg["fn"] is scan_wrapper:
            f, init, xs, length, reverse = msg["args"]
            if length is None:
                length = int(np.shape(jax.tree_util.tree_leaves(xs)[0])[0])
            self.calls.append(ScanCall(f, init, xs, int(length), bool(reverse), int(msg["kwargs"].get("history", 1))))
            if self.stop:
                raise _StopAtScan()

    def postprocess_message(self, msg):
        if msg["type"] == "control_flow" and msg["fn"] is scan_wrapper:
            if len(self.calls) == 1:
                self.inside = dict(msg["value"][1][0].trace)
        elif msg["type"] == "sample" and msg["name"] not in self.inside:
            (self.after if self.calls else self.before).append(msg["name"])

    def run(self, *args, **kwargs):
        """Call the wrapped model, absorbing the stop at the scan."""
        try:
            self(*args, **kwargs)
        except _StopAtScan:
            pass
        return self


def inputs_used(fn: Callable, values: dict) -> set:
    """Names of the entries of ``values`` (each a pytree) that the outputs of ``fn(values)`` depend on, read
    off the jaxpr (structurally: an equation's outputs depend on all of its inputs)."""
    leaves, treedef = jax.tree_util.tree_flatten(values)
    owner = [k for k in sorted(values) for _ in jax.tree_util.tree_leaves(values[k])]  # dicts flatten key-sorted
    closed = jax.make_jaxpr(lambda *v: fn(jax.tree_util.tree_unflatten(treedef, v)))(*leaves)
    jaxpr = closed.jaxpr
    needed = {v for v in jaxpr.outvars if isinstance(v, Var)}
    for eqn in reversed(jaxpr.eqns):
        if any(o in needed for o in eqn.outvars):
            needed.update(v for v in eqn.invars if isinstance(v, Var))
    return {n for n, v in zip(owner, jaxpr.invars) if v in needed}


class ScanStructure(NamedTuple):
    """What :func:`inspect_scan_model` found: site names by role, shapes and dtypes of the sites before the scan."""

    static_sites: tuple  # before the scan, not feeding its init: parameters theta
    initial_sites: tuple  # before the scan, feeding its init: drawn per particle
    latent_sites: tuple  # inside the scan body, not observed: the state z_t
    observed_sites: tuple  # inside the scan body, observed: y_t
    length: int
    shapes: dict  # every site before the scan -> its value's shape and dtype (jax.ShapeDtypeStruct)
    supports: dict  # static site -> its distribution's support (for biject_to)


def _prefix(model, args, kwargs, values: dict, key):
    """Run ``model`` up to its scan with ``values`` substituted and the rest seeded by ``key``; return the
    :class:`ScanCall` and the trace of the sites before it."""
    cap = capture_scan(handlers.seed(handlers.substitute(model, data=values), key), stop=True)
    with handlers.block(), handlers.trace() as tr:
        cap.run(*args, **kwargs)
    if not cap.calls:
        raise StateSpaceModelError(
            "The model has no numpyro.contrib.control_flow.scan: declare the time loop with scan (static "
            "parameters before it, latent state and observation inside its body), or use the lower-level form "
            "smcppl.models.state_space.StateSpace(sample_initial, sample_transition, log_observation).")
    return cap.calls[0], tr


def _refuse_subsampling(sites) -> None:
    """A StateSpaceModelError for a plate with ``subsample_size`` below its size (NumPyro's plate messages carry
    ``args = (size, subsample_size)``)."""
    for site in sites:
        if site["type"] != "plate":
            continue
        size, subsample_size = site["args"]
        if subsample_size is not None and isinstance(size, (int, np.integer)) and subsample_size != size:
            raise StateSpaceModelError(
                f"The plate {site['name']!r} subsamples its data (subsample_size={subsample_size} of {size}): "
                "particle filters weight by the whole likelihood, and a subsample drawn once would be filtered as "
                "if it were the data. Drop subsample_size.")


def inspect_scan_model(model: Callable, *args, **kwargs) -> ScanStructure:
    """Check that ``model(*args, **kwargs)`` is a state-space model of the scan form and sort its sites;
    raises :class:`StateSpaceModelError` naming the offending site otherwise. The model runs under an abstract
    trace (:func:`~smcppl.core.plan.run_abstractly`: nothing is computed or compiled; op by op, the seed-0 run
    compiled ~16 small programs, ~0.7 s in a fresh process). A model that cannot be traced (one that branches
    in Python on a value) raises JAX's tracer error here, as the samplers' compilation would."""
    return run_abstractly(lambda: _inspect(model, args, kwargs))


def _inspect(model: Callable, args: tuple, kwargs: dict) -> ScanStructure:
    """:func:`inspect_scan_model`'s checks, on one seed-0 run of the model (under the abstract trace)."""
    cap = capture_scan(handlers.seed(model, 0))
    with handlers.block(), handlers.trace() as tr:
        cap.run(*args, **kwargs)
    if not cap.calls:
        _prefix(model, args, kwargs, {}, jax.random.key(0))  # raises the "no scan" error
    if len(cap.calls) > 1:
        raise StateSpaceModelError(f"The model calls scan {len(cap.calls)} times; a state-space model has one time "
                                   "loop. Merge the loops into one scan body, or use the lower-level StateSpace form.")
    _refuse_subsampling(tr.values())  # the body's plates: by run_body, where their sizes are Python numbers
    call = cap.calls[0]
    if call.reverse or call.history != 1:
        raise StateSpaceModelError(f"The model's scan has reverse={call.reverse}, history={call.history}; particle "
                                   "filters need a forward scan with history=1 (the default).")
    for name in cap.before + cap.after:
        if tr[name]["is_observed"]:
            raise StateSpaceModelError(
                f"Observed site {name!r} is outside the scan: every observation must be inside the scan body (the "
                "filter weights particles by the observations of each time step). Move it into the body, or use "
                "the lower-level StateSpace form.")
    for name in cap.after:
        raise StateSpaceModelError(f"Latent site {name!r} is sampled after the scan: static parameters must be "
                                   "sampled before the scan, the latent state inside its body.")
    latent = tuple(k for k, s in cap.inside.items() if s["type"] == "sample" and not s["is_observed"])
    observed = tuple(k for k, s in cap.inside.items() if s["type"] == "sample" and s["is_observed"])
    if not observed:
        raise StateSpaceModelError("The scan body has no observed site (numpyro.sample(..., obs=y_t)): there is "
                                   "nothing to filter on. Pass the observations to the model.")
    before = [k for k in cap.before if tr[k]["type"] == "sample"]
    example = {k: tr[k]["value"] for k in before}
    def initial_carry(values):
        return _prefix(model, args, kwargs, values, jax.random.key(0))[0].init

    used = inputs_used(initial_carry, example) if before else set()
    static = tuple(k for k in before if k not in used)
    for k in static:
        if not jnp.issubdtype(jnp.result_type(example[k]), jnp.floating):
            raise StateSpaceModelError(
                f"Static parameter {k!r} is discrete ({jnp.result_type(example[k])}): particle MCMC "
                "moves continuous parameters only. Make it continuous, fix it (pass it as data), or marginalise it.")
    shapes = {k: jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v)) for k, v in example.items()}
    return ScanStructure(static, tuple(k for k in before if k in used), latent, observed, call.length, shapes,
                         {k: tr[k]["fn"].support for k in static})


def _site_log_prob(site, num_particles: Optional[int] = None):
    """A site's log-density: summed to a scalar, or per particle (``[num_particles]``: summed over the axes
    after a leading particle axis; a log-density without that axis is the same for every particle)."""
    lp = jnp.asarray(site["fn"].log_prob(site["value"]))
    if num_particles is None:
        lp = jnp.sum(lp)
    elif lp.shape[:1] == (num_particles,):
        lp = lp.reshape(num_particles, -1).sum(axis=1)
    else:
        lp = jnp.full((num_particles,), jnp.sum(lp))
    return lp if site.get("scale") is None else site["scale"] * lp


def run_body(f: Callable, carry: Any, x_t: Any, key: Optional[jax.Array] = None,
             latent: Optional[dict] = None, num_particles: Optional[int] = None) -> tuple:
    """Run the scan body once, ``f(carry, x_t)``: latent sites drawn with ``key`` (``handlers.seed``) or set
    to ``latent``. Returns ``(new carry, latent values, log f, log g)`` (sums of the latent and observed
    sites' log-densities). ``num_particles``: the carry holds a whole population on a leading axis (the body
    broadcasts over it, :func:`body_broadcasts`) and ``log f``, ``log g`` are per particle."""
    fn = f if latent is None else handlers.substitute(f, data=latent)
    fn = fn if key is None else handlers.seed(fn, key)
    cap = capture_scan(fn)
    with handlers.block(), handlers.trace() as tr:
        new_carry, _ = cap(carry, x_t)
    if cap.calls:
        raise StateSpaceModelError("The scan body calls scan itself: nested scans are not supported.")
    _refuse_subsampling(tr.values())
    sites = [s for s in tr.values() if s["type"] == "sample"]
    z = {s["name"]: s["value"] for s in sites if not s["is_observed"]}
    zero = jnp.zeros(() if num_particles is None else (num_particles,))
    log_f = sum((_site_log_prob(s, num_particles) for s in sites if not s["is_observed"]), zero)
    log_g = sum((_site_log_prob(s, num_particles) for s in sites if s["is_observed"]), zero)
    return new_carry, z, log_f, log_g


def _traced(args: tuple, kwargs: dict) -> bool:
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves((args, kwargs)))


PROBE_PARTICLES = 5  # population size of the broadcasting check (not a dimension a model is likely to have)


def body_broadcasts(model: Callable, args: tuple, kwargs: dict) -> bool:
    """Whether the scan body of ``model`` runs a whole population at once: called with a carry of ``n``
    particles on a leading axis (and one key), it must draw latent sites ``[n, ...]`` and return the carry,
    ``log f`` and ``log g`` of the per-particle body (``vmap`` over particles and keys) at the same latent
    values. Checked numerically, eagerly, at trace time, on ``PROBE_PARTICLES`` particles after one
    per-particle step from one prior draw of the sites before the scan (broadcasting is a property of the
    code, not of the parameter values). False when the body does not broadcast (e.g. ``A @ x`` on a vector
    state, a latent site whose distribution does not depend on the state), when the check fails for any
    reason, or when the model's arguments are traced (nothing concrete can be run). Elementwise bodies (most
    one-dimensional models) broadcast."""
    if _traced(args, kwargs):
        return False
    n = PROBE_PARTICLES
    leaves, tree = jax.tree_util.tree_leaves, jax.tree_util.tree_structure
    def probe():
        call = _prefix(model, args, kwargs, {}, jax.random.key(0))[0]
        f, x_1 = call.f, time_slice(call.xs, min(1, call.length - 1))
        keys = jax.random.split(jax.random.key(1), 2 * n)
        tiled = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n,) + jnp.shape(a)), call.init)
        per_particle = jax.vmap(lambda k, c: run_body(f, c, x_1, k))
        carry = per_particle(keys[:n], tiled)[0]  # distinct per particle
        c1, z1, lf1, lg1 = per_particle(keys[n:], carry)
        cd, zd, _, _ = run_body(f, carry, x_1, jax.random.key(2), num_particles=n)
        cb, _, lfb, lgb = run_body(f, carry, x_1, latent=z1, num_particles=n)
        return (cd, zd), (c1, z1), (cb, lfb, lgb), (c1, lf1, lg1)

    try:
        # compiled ahead of time, as one program without LLVM optimisations (it runs once per model and input
        # signature), then run with concrete values while the sampler's program is being traced; jit(probe)()
        # under ensure_compile_time_eval ran op by op (~40 small compilations, ~1 s in a fresh process)
        check = jax.jit(probe).lower().compile(ONE_SHOT_COMPILER_OPTIONS)
        with jax.ensure_compile_time_eval():
            drawn, expected, batched, reference = check()
        if tree(drawn) != tree(expected) or any(jnp.shape(a) != jnp.shape(b)
                                                for a, b in zip(leaves(drawn), leaves(expected))):
            return False
        return all(np.allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, equal_nan=True)
                   for a, b in zip(leaves(batched), leaves(reference)))
    except Exception:  # a body that does not broadcast may raise (shapes); the per-particle vmap then runs it
        return False


def time_slice(inputs: Any, t: ArrayLike) -> Any:
    """The time-``t`` slice of an inputs pytree (leading time axis)."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a)[t], inputs)  # NumPy data indexed by a traced t


def prior_draw(model: Callable, static_sites: Sequence[str], key: jax.Array, *args, **kwargs) -> dict:
    """One draw of the static parameters from the prior, in NumPyro's unconstrained space."""
    call_tr = _prefix(model, args, kwargs, {}, key)[1]
    return {k: biject_to(call_tr[k]["fn"].support).inv(call_tr[k]["value"]) for k in static_sites}


def static_log_prior(model: Callable, static_sites: Sequence[str], u: dict, *args, **kwargs) -> tuple:
    """``(theta, log p(theta) + log |det d theta / d u|)`` for unconstrained values ``u`` of the static sites
    (NumPyro's reparametrisation ``theta_s = biject_to(support_s)(u_s)``, as in ``potential_energy``)."""
    fn = handlers.substitute(model, substitute_fn=partial(_unconstrain_reparam, u))
    cap = capture_scan(handlers.seed(fn, jax.random.key(0)), stop=True)
    with handlers.block(), handlers.trace() as tr:
        cap.run(*args, **kwargs)
    names = [k for k in static_sites] + [f"_{k}_log_det" for k in static_sites if f"_{k}_log_det" in tr]
    return {k: tr[k]["value"] for k in static_sites}, sum((_site_log_prob(tr[k]) for k in names), jnp.zeros(()))


def scan_state_space(model: Callable, theta: dict, *args, check_markov: bool = True,
                     vectorize: Optional[bool] = None, **kwargs) -> StateSpace:
    """The lower-level form of a scan-declared model for static parameters ``theta`` (site -> constrained
    value; missing static sites are an error). States are ``{"carry", "prev", "latent", "initial"}`` dicts
    (module docstring; ``initial``: the initial-state sites' values, carried along each path); ``inputs`` are the
    scan's ``xs``. Key use: ``sample_initial(key)`` splits ``key`` into
    ``(k_init, k_step)``: the initial-state sites are drawn under ``handlers.seed(k_init)`` and step 0 under
    ``handlers.seed(k_step)``; ``sample_transition(key, ...)`` runs the body under ``handlers.seed(key)``.
    ``check_markov=False`` skips the check that gates ``log_transition`` (module docstring) and keeps it.
    ``vectorize``: give ``population_step``, the body run once on the whole population under
    ``handlers.seed(key)`` (``N`` draws from one key, no per-particle key split), when the body broadcasts over
    a leading particle axis; None (default) decides by :func:`body_broadcasts`, True requires it (a body that
    fails the check raises :class:`StateSpaceModelError`; not checked when the arguments are traced), False
    never (the filters then ``vmap`` ``step`` over split keys, the same draws as a lower-level form with the
    same functions)."""
    def call_for(key):
        return _prefix(model, args, kwargs, dict(theta), key)[0]

    def init_for(key):
        """The scan's init carry and the initial-state site values, drawn with ``key``."""
        call_k, tr = _prefix(model, args, kwargs, dict(theta), key)
        return call_k.init, {k: s["value"] for k, s in tr.items()
                             if s["type"] == "sample" and not s["is_observed"] and k not in theta}

    call = call_for(jax.random.key(0))
    f = call.f

    def state(carry, x_prev, z):
        return {"carry": carry, "prev": x_prev["carry"], "latent": z, "initial": x_prev["initial"]}

    def initial(key, x_0):
        k_init, k_step = jax.random.split(key)
        init, sites = init_for(k_init)
        carry, z, _, log_g = run_body(f, init, x_0, k_step)
        return state(carry, {"carry": init, "initial": sites}, z), log_g

    def step(key, x_prev, x_t, t):
        carry, z, _, log_g = run_body(f, x_prev["carry"], x_t, key)
        return state(carry, x_prev, z), log_g

    def population_step(key, x_prev, x_t, t):
        n = jax.tree_util.tree_leaves(x_prev)[0].shape[0]
        carry, z, _, log_g = run_body(f, x_prev["carry"], x_t, key, num_particles=n)
        return state(carry, x_prev, z), log_g

    def log_observation(x, x_t, t):
        return run_body(f, x["prev"], x_t, latent=x["latent"])[3]

    def log_transition(x_prev, x, x_t, t):
        return run_body(f, x_prev["carry"], x_t, latent=x["latent"])[2]

    def complete(x_prev, z, x_t, t):
        carry, _, log_f, log_g = run_body(f, x_prev["carry"], x_t, latent=z)
        return state(carry, x_prev, z), log_f, log_g

    # f_t(x_t | x_{t-1}) as a density of the latent sites is a density of the state only if the new carry is
    # a function of the latent sites (not of the previous carry too, e.g. an AR(2) carry (x_t, x_{t-1}))
    x0 = time_slice(call.xs, 0)
    c0, z0, _, _ = run_body(f, call.init, x0, jax.random.key(0))
    def next_carry(v):
        return run_body(f, v["carry"], x0, latent=v["latent"])[0]

    markov = not check_markov or "carry" not in inputs_used(next_carry, {"carry": call.init, "latent": z0})
    if vectorize is None:
        vectorize = body_broadcasts(model, args, kwargs)
    elif vectorize and not _traced(args, kwargs) and not body_broadcasts(model, args, kwargs):
        raise StateSpaceModelError(
            "vectorize=True, but the scan body does not give the per-particle results when run on the whole "
            "population at once (a carry with a leading particle axis): e.g. a matrix applied as A @ x to a "
            "vector state (write x @ A.T), or a latent site whose distribution does not depend on the state. "
            "Use vectorize=None (decide by this check) or False.")
    return StateSpace(lambda key, x_0: initial(key, x_0)[0], lambda key, x_prev, x_t, t: step(key, x_prev, x_t, t)[0],
                      log_observation,
                      log_transition=log_transition if markov else None,
                      inputs=call.xs, num_steps=call.length, step=step, step_initial=initial,
                      complete=complete, record=lambda x: x["latent"],
                      population_step=population_step if vectorize else None)
