"""The ``SMC`` front end shared by every sampler (tempered SMC, sequence filters, correctors).

Usage, familiar to NumPyro users::

    smc = SMC(TemperedSMC(model), num_particles=2000, num_chains=4)
    smc.run(jax.random.key(0), *model_args, **model_kwargs)
    smc.get_samples(); smc.log_evidence; smc.print_summary(); smc.to_arviz()

An *algorithm* is any object with ``build(num_particles, *args, **kwargs) -> Plan``: it checks its
inputs in Python (before any compilation) and returns the Feynman–Kac model to run plus how to turn
particles into named samples. Independent runs ("chains") are one compiled one-chain program called
per chain key (``"sequential"``), or a ``vmap`` over keys, optionally with the chain axis sharded across
devices (``jax.sharding``); all give identical results. A plan's pilot run re-uses the same program.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.entropic import with_entropic_correction
from smcppl.core.engine import SMCError, SMCOutput, StepInfo, raise_if_failed, validate_num_particles
from smcppl.core.checks import prng_key
from smcppl.core.chain import count_distinct, final_draws, make_run_one
from smcppl.core.plan import Pilot, Plan, input_signature, settings_signature
from smcppl.core.result import SMCResult
from smcppl.core.policy import Resampling, validate_resampling
from smcppl.core.watchdog import call_with_timeout, validate_timeout

__all__ = ["Plan", "Pilot", "SMC", "CHAIN_METHODS", "final_draws", "make_run_one", "enable_compilation_cache",
           "compilation_cache_dir",
           "count_distinct"]


CACHE_ENV = "SMCPPL_COMPILATION_CACHE"
PILOT_KEY = 0x9E3779B9 % (2**31)  # fold_in constant: the pilot's key, independent of the chains' keys


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
        # also the small programs (eager model tracing, pilot tables, summaries): each compiles in
        # 0.02-0.2 s but loads in milliseconds, and a first call has ~50 of them
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


def _data_holds_every_array(args, kwargs, data) -> bool:
    """True if the plan takes every array input as an argument of the compiled code (``Plan.data``, same
    count and shapes), so that compiled code can be reused for new values; False if an algorithm bakes
    an array input into the compiled code as a constant (then reusing it would run on the old values)."""
    arrays = [x for x in jax.tree_util.tree_leaves((tuple(args), dict(kwargs)))
              if isinstance(x, (np.ndarray, jax.Array)) and np.ndim(x) > 0]
    held = jax.tree_util.tree_leaves(data)
    return len(arrays) == len(held) and all(np.shape(a) == np.shape(b) for a, b in zip(arrays, held))


@functools.partial(jax.jit, static_argnums=1)
def _run_keys(rng_key, num_chains):
    """``(pilot key, chain keys [num_chains], each chain's key)`` from the user's key, in one small program
    (split, fold_in and iterating over the keys op by op would compile one each in a fresh process)."""
    keys = jax.random.split(rng_key, num_chains)
    return jax.random.fold_in(rng_key, PILOT_KEY), keys, tuple(keys[c] for c in range(num_chains))


@functools.lru_cache(maxsize=16)
def _jitted(fn):
    """``jax.jit(fn)``, one per function (so that repeated runs do not recompile small helpers)."""
    return jax.jit(fn)


def _tqdm():
    """tqdm's notebook widget where ipywidgets is installed, its plain text bar otherwise (``tqdm.auto``
    without ipywidgets warns "IProgress not found" in Jupyter)."""
    try:
        import ipywidgets  # noqa: F401

        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm


class ProgressBar:
    """One progress bar per ``SMC.run``: a "compiling" phase, then the pilot (if any) and each chain
    (vectorized chains: one run) from 0 to 100% of ``fk.progress`` (e.g. beta), with the stage shown."""

    def __init__(self, name: str, label: str, runs: list):
        self.name, self.label, self.runs, self.index = name, label, runs, -1
        self.bar = _tqdm()(total=100 * len(runs), desc=f"{name}: compiling", unit="%", leave=True,
                           bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]")

    def start(self, index: int) -> None:
        self.index = index
        self.bar.set_description(f"{self.name}: {self.runs[index]}")
        self.bar.n = 100 * index
        self.bar.refresh()

    def __call__(self, stage, progress):
        stage, progress = np.min(np.asarray(stage)), float(np.min(np.asarray(progress)))
        if not np.isfinite(progress):
            return
        self.bar.n = int(100 * max(self.index, 0) + min(max(progress, 0.0), 1.0) * 100)
        self.bar.set_postfix_str(f"stage {int(stage)}, {self.label} {progress:.3f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.n = self.bar.total
        self.bar.refresh()
        self.bar.close()


CHAIN_METHODS = ("sequential", "vectorized", "parallel", "sharded")
MAX_AUTO_SEQUENTIAL_CHAINS = 16  # chain_method=None on CPU: up to this many chains run one after another


def resolve_chain_method(chain_method: Optional[str], num_chains: int) -> str:
    """The chain method a run uses. ``None`` (default): ``"sequential"`` on CPU with at most
    ``MAX_AUTO_SEQUENTIAL_CHAINS`` chains (one program compiled for one chain and called per chain:
    compiling dominates on CPU, and a ``vmap`` over chains compiles ~1.5x longer for little run-time
    gain), ``"vectorized"`` otherwise (accelerators, many chains). ``"parallel"`` (NumPyro's name) is
    ``"sharded"`` where the chains divide over several devices, else ``"sequential"``, as NumPyro falls
    back."""
    if chain_method is None:
        cpu = jax.default_backend() == "cpu"
        return "sequential" if (cpu and num_chains <= MAX_AUTO_SEQUENTIAL_CHAINS) else "vectorized"
    if chain_method == "parallel":
        n_dev = jax.device_count()
        return "sharded" if (n_dev > 1 and num_chains % n_dev == 0) else "sequential"
    return chain_method


class SMC:
    """Run an SMC algorithm with ``num_particles`` particles in each of ``num_chains`` independent runs.

    resampling: override the algorithm's default :class:`~smcppl.Resampling` policy.
    chain_method: ``None`` (default: chosen by :func:`resolve_chain_method`), ``"sequential"`` (one
    compiled one-chain program called per chain), ``"vectorized"`` (``vmap`` over chains),
    ``"sharded"`` (``vmap`` with the chain axis split across ``jax.devices()``; ``num_chains`` must be a
    multiple of the device count) or ``"parallel"`` (NumPyro's name: sharded where possible, else
    sequential). All give identical results for the same key.
    record_ancestors: keep the ancestor indices of every stage (memory O(N * stages)).
    progress_bar: one ``tqdm`` bar per run (a notebook widget where ``ipywidgets`` is installed): the
    compiling phase, then the pilot and each chain with its stage and progress (e.g. beta).
    """

    def __init__(self, algorithm, num_particles: int = 1000, num_chains: int = 1, *, resampling=None,
                 chain_method: Optional[str] = None, record_ancestors: bool = False, progress_bar: bool = False):
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
        if chain_method is not None and chain_method not in CHAIN_METHODS:
            raise ValueError(f"chain_method must be None or one of {CHAIN_METHODS}, got {chain_method!r}.")
        self.chain_method = chain_method
        self.record_ancestors = bool(record_ancestors)
        self.progress_bar = bool(progress_bar)
        self.plan: Optional[Plan] = None
        self.result: Optional[SMCResult] = None  # the public result of the last run (smcppl.core.result)
        self.timing: dict = {}
        self.predictions = None  # posterior predictive draws (posterior_predictive)
        self._compiled: dict = {}  # (input signature, settings, program kind) -> compiled program (see run)

    # ------------------------------------------------------------------ running
    def _on_progress(self, stage, progress):
        """Host callback of the compiled runs (stable across runs, so compiled code can be reused)."""
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar(stage, progress)

    def _run_one_fn(self, plan: Plan, resampling: Resampling):
        progress = self._on_progress if self.progress_bar else None
        return make_run_one(plan, resampling, self.record_ancestors, progress)

    def _program(self, kind, plan, resampling, keys, tuning, cache_key):
        """The compiled program of one kind (``"one"``: one chain, ``"vmap"``: a batch of chains), from the
        in-object cache when ``cache_key`` matches, else compiled now. Returns ``(program, reused)``."""
        key = None if cache_key is None else cache_key + (kind,)
        if key is not None and key in self._compiled:
            return self._compiled[key], True
        run_one = self._run_one_fn(plan, resampling)
        if kind == "vmap":
            fn = jax.jit(jax.vmap(run_one, in_axes=(0, None, None, None)))
            program = fn.lower(keys, plan.data, tuning, plan.settings).compile()
        else:
            one_key = jax.ShapeDtypeStruct(keys.shape[1:], keys.dtype)  # abstract: indexing keys compiles
            program = jax.jit(run_one).lower(one_key, plan.data, tuning, plan.settings).compile()
        if key is not None:
            self._compiled = {k: v for k, v in self._compiled.items() if k[:-1] == cache_key}  # latest inputs only
            self._compiled[key] = program
        return program, False

    def run(self, rng_key: jax.Array, *args, timeout: Optional[float] = None, **kwargs) -> "SMC":
        """Build the algorithm's plan for these arguments (errors surface here, before compiling),
        then run ``num_chains`` independent SMC runs.

        A plan with a :class:`~smcppl.core.plan.Pilot` (e.g. ``TemperedSMC``'s default ``tuning="pilot"``)
        first runs the same program once as a pilot (its own key) and gives its tables to every chain.
        Compiled code is reused: within a call the pilot and the chains share one program (sequential
        chains); a second call with inputs of the same structure, shapes and dtypes (and the same non-array
        arguments) runs the code compiled by the first (new keys and new data need no compilation);
        across processes JAX's persistent compilation cache (:func:`enable_compilation_cache`,
        ``$SMCPPL_COMPILATION_CACHE``) re-uses compiled programs. A setting changed in place between calls
        (``smc.num_particles``, ``smc.algorithm.max_stages``: :func:`~smcppl.core.plan.settings_signature`)
        or another kind of key compiles again rather than re-using a program built for the old one.

        timeout: seconds to wait for the compiled runs (None: no limit). Past it,
        :class:`~smcppl.core.watchdog.SMCTimeoutError` names the likely cause (on CPU, XLA's thread pool
        wedging) and the workaround, instead of a silent infinite wait."""
        rng_key = prng_key(rng_key)  # a legacy PRNGKey(s) becomes key(s): the same stream, the same program
        timeout = validate_timeout(timeout)
        deadline = None if timeout is None else time.perf_counter() + timeout
        enable_compilation_cache()  # before building: building the plan compiles small programs too
        plan = self.algorithm.build(self.num_particles, *args, **kwargs)
        resampling = self.resampling if self.resampling is not None else plan.resampling
        resampling = validate_resampling(resampling)
        if plan.entropic_correction:
            resampling = with_entropic_correction(resampling, plan.name)
        method = resolve_chain_method(self.chain_method, self.num_chains)
        pilot_key, keys, chain_keys = _run_keys(rng_key, self.num_chains)
        # arrays held as constants by the compiled code (not in plan.data): reused only for equal contents
        signature = input_signature(args, kwargs, by_value=not _data_holds_every_array(args, kwargs, plan.data))
        cache_key = None
        if signature is not None:
            cache_key = (id(self.algorithm), settings_signature(self.algorithm), signature, rng_key.dtype,
                         self.num_particles, self.num_chains, method, self.record_ancestors, self.progress_bar,
                         resampling)
            try:
                hash(cache_key)
            except TypeError:
                cache_key = None
        if method == "sharded":
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            devices = np.array(jax.devices())
            if self.num_chains % len(devices):
                raise ValueError(f"chain_method='sharded' needs num_chains ({self.num_chains}) to be a multiple of "
                                 f"the number of devices ({len(devices)}).")
            mesh = Mesh(devices, ("chain",))
            keys = jax.device_put(keys, NamedSharding(mesh, PartitionSpec("chain")))

        def remaining():
            return None if deadline is None else max(deadline - time.perf_counter(), 1e-3)

        runs = (["pilot"] if plan.pilot is not None else []) + (
            [f"chain {c + 1}/{self.num_chains}" for c in range(self.num_chains)] if method == "sequential"
            else [f"{self.num_chains} chains"])
        self._bar = ProgressBar(plan.name, plan.progress_name, runs) if self.progress_bar else None
        try:
            return self._run(plan, resampling, method, keys, (pilot_key, chain_keys), cache_key, remaining, args,
                             kwargs)
        finally:
            if self._bar is not None:
                self._bar.close()
            self._bar = None

    def _start(self, index):
        if getattr(self, "_bar", None) is not None:
            self._bar.start(index)

    def _run(self, plan, resampling, method, keys, run_keys, cache_key, remaining, args, kwargs):
        pilot_key, chain_keys = run_keys

        compile_s, reused, t_pilot = 0.0, [], 0.0
        tuning = None
        if plan.pilot is not None:
            pilot = plan.pilot
            same = pilot.num_particles == self.num_particles
            pilot_plan = plan if same else self.algorithm.build(pilot.num_particles, *args, **kwargs)
            t0 = time.perf_counter()
            program, hit = self._program("one" if same else "pilot", pilot_plan, resampling, keys, pilot.blank,
                                         cache_key)
            t1 = time.perf_counter()
            self._start(0)
            pilot_out = call_with_timeout(program, pilot_key, plan.data, pilot.blank, pilot_plan.settings,
                                          timeout=remaining(), what=f"{plan.name} pilot run")[0]
            t_pilot = time.perf_counter() - t1
            compile_s += t1 - t0
            reused.append(hit)
            if int(pilot_out.dead_stage) >= 0:
                raise SMCError(
                    f"{plan.name}: the pilot run (which fixes the tempering ladder and the moves of every chain) "
                    f"lost every particle at stage {int(pilot_out.dead_stage)}: the model's log density is -inf/NaN "
                    "where the particles are; check the data and the parameters' supports, or use more particles.")
            tuning = _jitted(pilot.tables)(pilot_out)
        first = int(plan.pilot is not None)
        t0 = time.perf_counter()
        if method == "sequential":
            program, hit = self._program("one", plan, resampling, keys, tuning, cache_key)
            t1 = time.perf_counter()
            outs = []
            for c, k in enumerate(chain_keys):
                self._start(first + c)
                outs.append(call_with_timeout(program, k, plan.data, tuning, plan.settings, timeout=remaining(),
                                              what=f"{plan.name} run"))
            # stacked on the host and put back with device_put: jnp.stack / jnp.asarray would each compile a
            # small program per leaf shape (~10 ms apiece in a fresh process)
            result = jax.tree_util.tree_map(lambda *xs: jax.device_put(np.stack([np.asarray(x) for x in xs])), *outs)
        else:
            program, hit = self._program("vmap", plan, resampling, keys, tuning, cache_key)
            t1 = time.perf_counter()
            self._start(first)
            result = call_with_timeout(program, keys, plan.data, tuning, plan.settings, timeout=remaining(),
                                       what=f"{plan.name} run")
        out, draws, raw, draw_stats = result
        jax.block_until_ready(out.log_evidence)
        t2 = time.perf_counter()
        compile_s += t1 - t0
        reused.append(hit)
        timing = {"compile_seconds": compile_s, "run_seconds": t2 - t1 + t_pilot, "pilot_seconds": t_pilot,
                  "reused_compiled": int(all(reused))}
        raise_if_failed(out, plan.name, (getattr(self.algorithm, "model", None), args, kwargs))
        post = plan.postprocess if plan.data is None else (lambda p, _d=plan.data: plan.postprocess(p, _d))
        result = SMCResult(plan.name, out, draws, raw, draw_stats, plan.metadata,
                           self._run_attrs(plan, resampling, method, timing), resampling, None, post)
        self.timing, self.chain_method_used, self.plan = timing, method, plan
        self.result = result._replace(health=self._check_health(result))
        self.predictions = None
        return self

    def _run_attrs(self, plan: Plan, resampling: Resampling, method: str, timing: dict) -> dict:
        """The run's settings and timings, as the export's attributes (str/int/float values)."""
        attrs = {"sampler": plan.name, **dict(plan.attrs or {}), "num_particles": self.num_particles,
                 "num_chains": self.num_chains, "record_ancestors": self.record_ancestors, "chain_method": method}
        latent = (plan.metadata or {}).get("latent_sites")
        if latent:
            attrs["latent_sites"] = ",".join(latent)  # print_summary(exclude_deterministic=True) keeps these
        scheme = resampling.scheme if isinstance(resampling.scheme, str) else getattr(resampling.scheme, "__name__",
                                                                                      "custom")
        attrs.update({"resampling_scheme": scheme, "resampling_when": resampling.when,
                      "resampling_threshold": float(resampling.threshold),
                      "resampling_entropic": "None" if resampling.entropic is None else repr(resampling.entropic),
                      "max_stages": int(plan.max_stages), "adaptive": int(plan.num_stages is None)})
        attrs.update({k: float(v) for k, v in timing.items()})
        return attrs

    @staticmethod
    def _check_health(result: SMCResult):
        """Health checks of this run (:mod:`smcppl.diagnostics.health`), one warning per failed check."""
        from smcppl.diagnostics.health import check_health, warn_health
        from smcppl.diagnostics.stats import smc_stats_arrays  # plain arrays: a run imports no xarray

        stats = smc_stats_arrays(result.output, result.attrs, result.draw_stats)
        report = check_health(stats, jax.device_get(result.samples))
        warn_health(report, result.name, stacklevel=5)
        return report

    # ------------------------------------------------------------------ results
    def _check(self):
        if self.result is None:
            raise RuntimeError("Call .run(rng_key, ...) before asking for results.")

    # views of the public result (smc.result, an SMCResult), as NumPyro's MCMC names them
    @property
    def output(self) -> Optional[SMCOutput]:
        """The engine's output of the last run (``smc.result.output``), or None before a run."""
        return None if self.result is None else self.result.output

    @property
    def final_particles(self) -> Any:
        self._check()
        return self.result.final_particles

    @property
    def draw_stats(self) -> Mapping:
        self._check()
        return self.result.draw_stats

    @property
    def health(self) -> Any:
        """The :class:`~smcppl.diagnostics.health.HealthReport` of the last run (None before a run)."""
        return None if self.result is None else self.result.health

    @property
    def resampling_used(self) -> Resampling:
        self._check()
        return self.result.resampling

    def get_samples(self, group_by_chain: bool = False) -> dict:
        """Equally weighted draws (final resampling; the draws of one lineage contiguous, lineages in a random
        order) as a dict name -> array with leading ``(num_chains * num_particles,)`` axis, or
        ``(num_chains, num_particles)`` if ``group_by_chain``."""
        self._check()
        if group_by_chain:
            return dict(self.result.samples)
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self.result.samples.items()}

    def get_weighted_particles(self) -> tuple:
        """Final particles (unresampled, postprocessed) and their normalised log-weights, per chain."""
        self._check()
        return self.result.get_weighted_particles()

    @property
    def log_evidence(self) -> jax.Array:
        """Log marginal likelihood estimate ``log Z_hat`` of each chain, shape ``(num_chains,)``."""
        self._check()
        return self.output.log_evidence

    @property
    def n_stages(self) -> jax.Array:
        self._check()
        return self.output.n_stages

    @property
    def trace(self) -> StepInfo:
        """Per-stage trace (:class:`~smcppl.core.engine.StepInfo`), shape ``(num_chains, stages, ...)``."""
        self._check()
        return self.output.trace

    def to_arviz(self) -> Any:
        """Export draws and SMC diagnostics (see :func:`smcppl.diagnostics.to_arviz`)."""
        self._check()
        from smcppl.diagnostics.export import to_arviz

        return to_arviz(self)

    def print_summary(self, prob: float = 0.9, exclude_deterministic: bool = True, **kwargs) -> Any:
        """Print ArviZ's summary of the draws plus log Z, stages, resampling count, final ESS and the
        health checks, as NumPyro's ``MCMC.print_summary``: ``prob`` is the mass of the credible interval
        (ArviZ's HDI), ``exclude_deterministic`` leaves out deterministic sites (see
        :func:`smcppl.diagnostics.print_summary` for ``var_names``, ``file``)."""
        self._check()
        from smcppl.diagnostics.summary import print_summary

        return print_summary(self, prob=prob, exclude_deterministic=exclude_deterministic, **kwargs)

    def get_extra_fields(self, group_by_chain: bool = False) -> dict:
        """Per-draw statistics of the equally weighted draws, as NumPyro's ``MCMC.get_extra_fields``: the
        sampler's per-particle stats (TemperedSMC: ``lp`` = log prior + log likelihood, ``acceptance_rate``
        and ``diverging`` of the particle's last move) and ``lineage`` (the draw's cluster for the MCSE).
        Leading axis ``(num_chains * num_particles,)``, or ``(num_chains, num_particles)`` if
        ``group_by_chain``."""
        self._check()
        from smcppl.diagnostics.export import _apply_per_chain

        fields = {}
        metadata = self.plan.metadata or {}
        if callable(metadata.get("sample_stats")):
            fields.update(_apply_per_chain(metadata["sample_stats"], self.final_particles, "sample_stats",
                                           metadata.get("data")))
        fields["lineage"] = self.draw_stats["lineage"]
        fields = {k: np.asarray(v) for k, v in fields.items()}
        if group_by_chain:
            return fields
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in fields.items()}

    def posterior_predictive(self, rng_key: jax.Array, *args, return_sites=None, **kwargs) -> dict:
        """Posterior predictive draws ``y_rep ~ p(y | theta)`` for every posterior draw ``theta``, with
        NumPyro's ``Predictive`` on the algorithm's model: pass the model's arguments *without* the
        observations (e.g. ``smc.posterior_predictive(key, x)`` for ``model(x, y=None)``), or new inputs
        for predictions. Returns ``{site: (num_chains, num_particles, ...)}`` (default sites: the observed
        ones) and keeps them for :meth:`to_arviz`'s ``posterior_predictive`` group (``az.plot_ppc``)."""
        self._check()
        from numpyro.infer import Predictive

        rng_key = prng_key(rng_key)
        if str(jax.random.key_impl(rng_key)) != "threefry2x32":  # NumPyro's Predictive fails on e.g. "rbg" keys
            rng_key = jax.random.wrap_key_data(jax.random.bits(rng_key, (2,), jnp.uint32), impl="threefry2x32")

        model = getattr(self.algorithm, "model", None)
        if model is None:
            raise TypeError(f"{type(self.algorithm).__name__} has no NumPyro model: posterior_predictive needs a "
                            "model-based algorithm such as TemperedSMC(model).")
        sites = return_sites
        if sites is None:
            sites = list((self.plan.metadata.get("observed_data") or {}).keys()) or None
        samples = {k: jnp.asarray(v) for k, v in self.result.samples.items()}
        pred = Predictive(model, posterior_samples=samples, batch_ndims=2, return_sites=sites)
        out = {k: np.asarray(v) for k, v in pred(rng_key, *args, **kwargs).items()}
        self.predictions = out
        return out

    def save(self, path: Union[str, os.PathLike]) -> str:
        """Write the run (draws, ``smc_stats``, health, attrs; see :meth:`to_arviz`) to a netCDF file that
        :func:`smcppl.diagnostics.load_netcdf` reads back for ``print_summary`` and the plots."""
        self._check()
        from smcppl.diagnostics.export import save_netcdf

        return save_netcdf(self, path)

    def __getstate__(self):
        raise TypeError("An SMC object holds compiled programs and the model function and cannot be pickled. Save "
                        "the run with smc.save('run.nc') (or smcppl.diagnostics.save_netcdf(smc, path)) and read it "
                        "back with smcppl.diagnostics.load_netcdf(path): print_summary and the plots accept it.")
