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

from smcppl.core.engine import FeynmanKac, SMCOutput, raise_if_failed, run_adaptive, run_fixed, validate_num_particles
from smcppl.core.policy import Resampling, validate_resampling
from smcppl.core.resampling import permute, systematic
from smcppl.core.weights import normalize

__all__ = ["Plan", "SMC", "final_draws", "make_run_one"]


class Plan(NamedTuple):
    """What an algorithm hands to the runner.

    fk: the Feynman–Kac model, or a function ``data -> FeynmanKac`` of the array inputs ``data``
    (then jitted code takes the data as an argument and is reused for new data of the same shapes).
    num_steps: steps of a fixed-length run, or None for an adaptive run of at most ``max_stages``
    stages. postprocess(particles[, data]) -> dict name -> [N, ...] arrays (e.g. constrained values
    and deterministic sites); jit-able. resampling: the algorithm's default policy.
    summary_fn: optional per-stage statistic. metadata: anything the exporter needs (observed data,
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


def final_draws(rng_key, particles, log_weights, postprocess, resample_final=True):
    """Equally weighted draws: systematic resampling of the final weights, then a random permutation
    (sorted systematic output would make ArviZ's autocorrelation ESS collapse).

    Returns ``(postprocess(particles), particles)`` after resampling and permutation."""
    k1, k2 = jax.random.split(rng_key)
    n = log_weights.shape[0]
    if resample_final:
        idx = systematic(k1, normalize(log_weights), n)
        particles = jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), particles)
    particles = permute(k2, particles)
    return postprocess(particles), particles


def make_run_one(plan: Plan, resampling: Resampling, record_ancestors=False, progress=None):
    """``run_one(key, data) -> (SMCOutput, draws, raw particles of the draws)`` for one chain; pure and
    jit/vmap-able over keys and (for SBC-style studies) over datasets."""
    def run_one(key, data):
        k_run, k_draw = jax.random.split(key)
        fk = plan.fk(data) if callable(plan.fk) and not isinstance(plan.fk, FeynmanKac) else plan.fk
        if plan.num_steps is not None:
            out = run_fixed(k_run, fk, plan.num_steps, resampling, record_ancestors, plan.summary_fn)
        else:
            out = run_adaptive(k_run, fk, plan.max_stages, resampling, record_ancestors, progress, plan.summary_fn)
        post = plan.postprocess if plan.data is None else (lambda p: plan.postprocess(p, data))
        draws, raw = final_draws(k_draw, out.state.particles, out.state.log_weights, post)
        return out, draws, raw

    return run_one


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

    # ------------------------------------------------------------------ running
    def _run_one_fn(self, plan: Plan, resampling: Resampling):
        progress = None
        if self.progress_bar and plan.num_steps is None and plan.progress_fn is not None:
            progress = plan.progress_fn

        return make_run_one(plan, resampling, self.record_ancestors, progress)

    def run(self, rng_key, *args, **kwargs):
        """Build the algorithm's plan for these arguments (errors surface here, before compiling),
        then run ``num_chains`` independent SMC runs."""
        if not isinstance(rng_key, jax.Array):
            raise TypeError("rng_key must be a JAX PRNG key, e.g. jax.random.key(0).")
        plan = self.algorithm.build(self.num_particles, *args, **kwargs)
        resampling = self.resampling if self.resampling is not None else plan.resampling
        resampling = validate_resampling(resampling)
        run_one = self._run_one_fn(plan, resampling)
        keys = jax.random.split(rng_key, self.num_chains)
        if self.num_chains == 1 and self.chain_method == "vectorized":
            # one chain: no vmap (a batched while_loop of size 1 still costs ~2x), add the chain axis after
            fn = jax.jit(lambda ks, d: jax.tree_util.tree_map(lambda x: x[None], run_one(ks[0], d)))
        else:
            fn = jax.jit(jax.vmap(run_one, in_axes=(0, None)))
        if self.chain_method == "sharded":
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            devices = np.array(jax.devices())
            if self.num_chains % len(devices):
                raise ValueError(f"chain_method='sharded' needs num_chains ({self.num_chains}) to be a multiple of "
                                 f"the number of devices ({len(devices)}).")
            mesh = Mesh(devices, ("chain",))
            keys = jax.device_put(keys, NamedSharding(mesh, PartitionSpec("chain")))
        t0 = time.perf_counter()
        compiled = fn.lower(keys, plan.data).compile()
        t1 = time.perf_counter()
        out, draws, raw = compiled(keys, plan.data)
        jax.block_until_ready((out, draws, raw))
        t2 = time.perf_counter()
        self.timing = {"compile_seconds": t1 - t0, "run_seconds": t2 - t1}
        self.plan, self.output, self._samples, self.final_particles = plan, out, draws, raw
        self.resampling_used = resampling
        raise_if_failed(out, plan.name)
        return self

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

    def print_summary(self, prob: float = 0.9):
        """Print ArviZ's summary of the draws plus log Z, stages, resampling count, final ESS."""
        self._check()
        from smcppl.diagnostics.summary import print_summary

        return print_summary(self, prob=prob)
