"""The ``SMC`` front end shared by every sampler (tempered SMC, sequence filters, correctors).

Usage, familiar to NumPyro users::

    smc = SMC(TemperedSMC(model), num_particles=2000, num_chains=4)
    smc.run(jax.random.key(0), *model_args, **model_kwargs)
    smc.get_samples(); smc.log_evidence; smc.print_summary(); smc.to_arviz()

An *algorithm* is any object with ``build(num_particles, *args, **kwargs) -> Plan``: it checks its
inputs in Python (before any compilation) and returns the Feynman–Kac model to run plus how to turn
particles into named samples. Independent runs ("chains") are a ``vmap`` over keys, optionally with
the chain axis sharded across devices (``jax.sharding``); both give identical results.
"""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.entropic import with_entropic_correction
from smcppl.core.engine import FeynmanKac, SMCOutput, raise_if_failed, run_adaptive, run_fixed, validate_num_particles
from smcppl.core.policy import Resampling, validate_resampling
from smcppl.core.resampling import systematic
from smcppl.core.watchdog import call_with_timeout, validate_timeout
from smcppl.core.weights import normalize

__all__ = ["Plan", "SMC", "final_draws", "make_run_one", "enable_compilation_cache", "compilation_cache_dir",
           "count_distinct"]


class Plan(NamedTuple):
    """What an algorithm hands to the runner.

    fk: the Feynman–Kac model, or a function ``data -> FeynmanKac`` of the array inputs ``data``
    (then jitted code takes the data as an argument and is reused for new data of the same shapes).
    num_steps: steps of a fixed-length run, or None for an adaptive run of at most ``max_stages``
    stages. postprocess(particles[, data]) -> dict name -> [N, ...] arrays (e.g. constrained values
    and deterministic sites); jit-able. resampling: the algorithm's default policy.
    summary_fn: optional per-stage statistic. entropic_correction: resolve an unset
    ``Entropic.correct`` to True (samplers that estimate ``log Z``). metadata: anything the exporter needs (observed data,
    dims, log-likelihood function, site names); attrs: settings (str/int/float only).
    """

    fk: FeynmanKac
    num_steps: Optional[int]
    max_stages: int
    postprocess: Callable
    resampling: Resampling = Resampling()
    summary_fn: Optional[Callable] = None
    metadata: dict = {}
    attrs: dict = {}
    name: str = "SMC"
    progress_fn: Optional[Callable] = None
    data: Any = None
    entropic_correction: bool = False  # an unset Entropic.correct means True (the plan estimates log Z)


def count_distinct(particles):
    """Number of distinct particles in a population (any pytree with a leading particle axis): each
    particle is projected on a fixed random direction and the distinct projections are counted
    (exact copies, as resampling makes them, project to the same value)."""
    leaves = [jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32) for x in jax.tree_util.tree_leaves(particles)]
    flat = jnp.concatenate(leaves, axis=1)
    direction = jax.random.normal(jax.random.key(20261201), (flat.shape[1],), flat.dtype)
    proj = jnp.sort(jnp.where(jnp.isfinite(flat), flat, 0.0) @ direction)
    return 1 + jnp.sum(proj[1:] != proj[:-1]).astype(jnp.int32)


def final_draws(rng_key, particles, log_weights, postprocess, lineage=None, resample_final=True):
    """Equally weighted draws: systematic resampling of the final weights, then a random order in which
    the draws of one lineage (same ancestor ``LINEAGE_LAG`` resampling events back, see
    :func:`smcppl.core.engine.update_lineage`) stay contiguous — so that ArviZ's autocorrelation-based
    ESS and MCSE see their correlation instead of counting copies as independent draws.

    Returns ``(postprocess(draws), draws, draw_stats)``, ``draw_stats = {"lineage": [N] cluster id of
    each draw, "n_unique": number of distinct draws}``."""
    k1, k2, k3 = jax.random.split(rng_key, 3)
    n = log_weights.shape[0]
    idx = systematic(k1, normalize(log_weights), n) if resample_final else jnp.arange(n)
    cluster = idx if lineage is None else lineage[-1][idx]
    # random order of the clusters, random order inside each cluster
    cluster_rank = jax.random.permutation(k2, n)[cluster]
    order = jnp.lexsort((jax.random.uniform(k3, (n,)), cluster_rank))
    idx, cluster = idx[order], cluster[order]
    particles = jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), particles)
    draw_stats = {"lineage": cluster.astype(jnp.int32), "n_unique": count_distinct(particles)}
    return postprocess(particles), particles, draw_stats


def make_run_one(plan: Plan, resampling: Resampling, record_ancestors=False, progress=None):
    """``run_one(key, data) -> (SMCOutput, draws, raw particles of the draws, draw_stats)`` for one
    chain (see :func:`final_draws`); pure and jit/vmap-able over keys and (for SBC-style studies) over
    datasets."""
    def run_one(key, data):
        k_run, k_draw = jax.random.split(key)
        fk = plan.fk(data) if callable(plan.fk) and not isinstance(plan.fk, FeynmanKac) else plan.fk
        if plan.num_steps is not None:
            out = run_fixed(k_run, fk, plan.num_steps, resampling, record_ancestors, plan.summary_fn)
        else:
            out = run_adaptive(k_run, fk, plan.max_stages, resampling, record_ancestors, progress, plan.summary_fn)
        post = plan.postprocess if plan.data is None else (lambda p: plan.postprocess(p, data))
        return (out,) + final_draws(k_draw, out.state.particles, out.state.log_weights, post, out.state.lineage)

    return run_one


CACHE_ENV = "SMCPPL_COMPILATION_CACHE"


def compilation_cache_dir() -> Optional[str]:
    """Folder of JAX's persistent compilation cache used by smcppl: ``$SMCPPL_COMPILATION_CACHE`` if set
    (``off``, ``0`` or empty switch it off), else ``$XDG_CACHE_HOME/smcppl/jax`` (``~/.cache/smcppl/jax``)."""
    import os

    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "false", "no") else os.path.expanduser(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "smcppl", "jax")


def enable_compilation_cache(path: Optional[str] = None) -> Optional[str]:
    """Turn on JAX's persistent compilation cache (compiled programs are stored on disk, keyed by the
    program itself, so a fresh process re-uses them for an unchanged model and shapes). Called by the
    first :meth:`SMC.run`; leaves a cache folder the user configured in JAX untouched. Returns the folder
    in use (None if off)."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    path = path or compilation_cache_dir()
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
    return path


def _input_signature(args, kwargs):
    """Hashable description of model inputs for the compiled-code cache: structure, array shapes and
    dtypes (arrays are arguments of the compiled code) and the values of everything else (Python numbers,
    0-d arrays, strings: compile-time constants). None if a value cannot be hashed (then no caching)."""
    leaves, treedef = jax.tree_util.tree_flatten((tuple(args), dict(kwargs)))
    sig = []
    for x in leaves:
        if isinstance(x, (np.ndarray, jax.Array)) and np.ndim(x) > 0:
            sig.append(("array", tuple(np.shape(x)), str(x.dtype)))
        elif isinstance(x, (np.ndarray, jax.Array, np.generic)):
            sig.append(("scalar", str(x.dtype), np.asarray(x).item()))
        else:
            try:
                hash(x)
            except TypeError:
                return None
            sig.append(("value", type(x).__name__, x))
    return (treedef, tuple(sig))


def _data_holds_every_array(args, kwargs, data) -> bool:
    """True if the plan takes every array input as an argument of the compiled code (``Plan.data``, same
    count and shapes), so that compiled code can be reused for new values; False if an algorithm bakes
    an array input into the compiled code as a constant (then reusing it would run on the old values)."""
    arrays = [x for x in jax.tree_util.tree_leaves((tuple(args), dict(kwargs)))
              if isinstance(x, (np.ndarray, jax.Array)) and np.ndim(x) > 0]
    held = jax.tree_util.tree_leaves(data)
    return len(arrays) == len(held) and all(np.shape(a) == np.shape(b) for a, b in zip(arrays, held))


class SMC:
    """Run an SMC algorithm with ``num_particles`` particles in each of ``num_chains`` independent runs.

    resampling: override the algorithm's default :class:`~smcppl.Resampling` policy.
    chain_method: ``"vectorized"`` (vmap) or ``"sharded"`` (vmap with the chain axis split across
    ``jax.devices()``; ``num_chains`` must be a multiple of the device count).
    record_ancestors: keep the ancestor indices of every stage (memory O(N * stages)).
    progress_bar: print stage and parameter (e.g. beta) while an adaptive run goes.
    """

    def __init__(self, algorithm, num_particles: int = 1000, num_chains: int = 1, *, resampling=None,
                 chain_method: str = "vectorized", record_ancestors: bool = False, progress_bar: bool = False):
        if not callable(getattr(algorithm, "build", None)):
            what = getattr(algorithm, "__name__", type(algorithm).__name__)
            hint = (f"e.g. SMC(TemperedSMC({what}), num_particles=...) for a NumPyro model" if callable(algorithm)
                    else "e.g. TemperedSMC(model), ParticleFilter(policy, potential) or a corrector")
            raise TypeError(f"SMC takes an algorithm (an object with a .build method), got {what!r}: {hint}.")
        self.algorithm = algorithm
        self.num_particles = validate_num_particles(num_particles)
        if int(num_chains) != num_chains or num_chains < 1:
            raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}.")
        self.num_chains = int(num_chains)
        self.resampling = None if resampling is None else validate_resampling(resampling)
        if chain_method not in ("vectorized", "sharded"):
            raise ValueError(f"chain_method must be 'vectorized' or 'sharded', got {chain_method!r}.")
        self.chain_method = chain_method
        self.record_ancestors = bool(record_ancestors)
        self.progress_bar = bool(progress_bar)
        self.plan: Optional[Plan] = None
        self.output: Optional[SMCOutput] = None
        self._samples = None
        self.timing: dict = {}
        self.health = None  # HealthReport of the last run (smcppl.diagnostics.health)
        self._compiled: dict = {}  # input signature and settings -> compiled run (see run)

    # ------------------------------------------------------------------ running
    def _run_one_fn(self, plan: Plan, resampling: Resampling):
        progress = None
        if self.progress_bar and plan.num_steps is None and plan.progress_fn is not None:
            progress = plan.progress_fn

        return make_run_one(plan, resampling, self.record_ancestors, progress)

    def run(self, rng_key, *args, timeout: Optional[float] = None, **kwargs):
        """Build the algorithm's plan for these arguments (errors surface here, before compiling),
        then run ``num_chains`` independent SMC runs.

        Compiled code is reused: a second call with inputs of the same structure, shapes and dtypes (and
        the same non-array arguments) runs the code compiled by the first (new keys and new data need no
        compilation); across processes JAX's persistent compilation cache (:func:`enable_compilation_cache`,
        ``$SMCPPL_COMPILATION_CACHE``) re-uses compiled programs. Changing the algorithm object's settings
        in place after a run is not detected: build a new algorithm instead.

        timeout: seconds to wait for the compiled run (None: no limit). Past it,
        :class:`~smcppl.core.watchdog.SMCTimeoutError` names the likely cause (on CPU, XLA's thread pool
        wedging) and the workaround, instead of a silent infinite wait."""
        if not isinstance(rng_key, jax.Array):
            raise TypeError("rng_key must be a JAX PRNG key, e.g. jax.random.key(0).")
        timeout = validate_timeout(timeout)
        plan = self.algorithm.build(self.num_particles, *args, **kwargs)
        resampling = self.resampling if self.resampling is not None else plan.resampling
        resampling = validate_resampling(resampling)
        if plan.entropic_correction:
            resampling = with_entropic_correction(resampling, plan.name)
        keys = jax.random.split(rng_key, self.num_chains)
        signature = _input_signature(args, kwargs) if _data_holds_every_array(args, kwargs, plan.data) else None
        cache_key = None
        if signature is not None:
            cache_key = (id(self.algorithm), signature, self.num_chains, self.chain_method, self.record_ancestors,
                         self.progress_bar, resampling)
            try:
                hash(cache_key)
            except TypeError:
                cache_key = None
        if self.chain_method == "sharded":
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            devices = np.array(jax.devices())
            if self.num_chains % len(devices):
                raise ValueError(f"chain_method='sharded' needs num_chains ({self.num_chains}) to be a multiple of "
                                 f"the number of devices ({len(devices)}).")
            mesh = Mesh(devices, ("chain",))
            keys = jax.device_put(keys, NamedSharding(mesh, PartitionSpec("chain")))
        t0 = time.perf_counter()
        compiled = self._compiled.get(cache_key) if cache_key is not None else None
        cached = compiled is not None
        if not cached:
            enable_compilation_cache()
            run_one = self._run_one_fn(plan, resampling)
            if self.num_chains == 1 and self.chain_method == "vectorized":
                # one chain: no vmap (a batched while_loop of size 1 still costs ~2x), add the chain axis after
                fn = jax.jit(lambda ks, d: jax.tree_util.tree_map(lambda x: x[None], run_one(ks[0], d)))
            else:
                fn = jax.jit(jax.vmap(run_one, in_axes=(0, None)))
            compiled = fn.lower(keys, plan.data).compile()
            if cache_key is not None:
                self._compiled = {cache_key: compiled}  # the latest inputs' code (bounded memory)
        t1 = time.perf_counter()
        out, draws, raw, draw_stats = call_with_timeout(compiled, keys, plan.data, timeout=timeout,
                                                        what=f"{plan.name} run")
        t2 = time.perf_counter()
        self.timing = {"compile_seconds": t1 - t0, "run_seconds": t2 - t1, "reused_compiled": int(cached)}
        self.plan, self.output, self._samples, self.final_particles = plan, out, draws, raw
        self.draw_stats = draw_stats
        self.resampling_used = resampling
        raise_if_failed(out, plan.name)
        self.health = self._check_health()
        return self

    def _check_health(self):
        """Health checks of this run (:mod:`smcppl.diagnostics.health`), one warning per failed check."""
        from smcppl.diagnostics.export import _smc_attrs, smc_stats_dataset
        from smcppl.diagnostics.health import check_health, warn_health

        stats = smc_stats_dataset(self.output, _smc_attrs(self), self.draw_stats)
        report = check_health(stats, jax.device_get(self._samples))
        warn_health(report, self.plan.name, stacklevel=4)
        return report

    # ------------------------------------------------------------------ results
    def _check(self):
        if self.output is None:
            raise RuntimeError("Call .run(rng_key, ...) before asking for results.")

    def get_samples(self, group_by_chain: bool = False):
        """Equally weighted draws (final resampling + permutation) as a dict name -> array with leading
        ``(num_chains * num_particles,)`` axis, or ``(num_chains, num_particles)`` if ``group_by_chain``."""
        self._check()
        if group_by_chain:
            return dict(self._samples)
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self._samples.items()}

    def get_weighted_particles(self):
        """Final particles (unresampled, postprocessed) and their normalised log-weights, per chain."""
        self._check()
        post = self.plan.postprocess if self.plan.data is None else (lambda p: self.plan.postprocess(p, self.plan.data))
        parts = jax.vmap(post)(self.output.state.particles)
        from smcppl.core.weights import log_normalize

        return parts, jax.vmap(lambda lw: log_normalize(lw)[0])(self.output.state.log_weights)

    @property
    def log_evidence(self):
        """Log marginal likelihood estimate ``log Z_hat`` of each chain, shape ``(num_chains,)``."""
        self._check()
        return self.output.log_evidence

    @property
    def n_stages(self):
        self._check()
        return self.output.n_stages

    @property
    def trace(self):
        """Per-stage trace (:class:`~smcppl.core.engine.StepInfo`), shape ``(num_chains, stages, ...)``."""
        self._check()
        return self.output.trace

    def to_arviz(self):
        """Export draws and SMC diagnostics (see :func:`smcppl.diagnostics.to_arviz`)."""
        self._check()
        from smcppl.diagnostics.export import to_arviz

        return to_arviz(self)

    def print_summary(self, prob: float = 0.9, **kwargs):
        """Print ArviZ's summary of the draws plus log Z, stages, resampling count, final ESS and the
        health checks (see :func:`smcppl.diagnostics.print_summary` for ``var_names``, ``file``)."""
        self._check()
        from smcppl.diagnostics.summary import print_summary

        return print_summary(self, prob=prob, **kwargs)
