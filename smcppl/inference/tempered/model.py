"""Tempered SMC: ``pi_beta(u) ∝ prior(u) L(u)^beta`` from ``beta = 0`` (prior) to ``beta = 1`` (posterior).

As a Feynman–Kac model of the engine (one step = resample -> move -> update -> reweight):

* ``M0``: prior draws ``u_i ~ p(u)``; ``G0 = beta_1 * loglik(u)`` with ``beta_1`` chosen adaptively;
* ``M_t``: ``num_mcmc_steps`` BlackJAX transitions invariant for ``pi_{beta_t}``, preconditioned by the
  particle covariance, step size tuned toward a target acceptance (:mod:`smcppl.kernels.moves`);
* ``update``: ``beta_{t+1}`` by bisection on the conditional ESS (or ESS) of
  ``(beta_{t+1} - beta_t) * loglik`` (:mod:`smcppl.core.schedules`), or the next rung of a fixed ladder;
* ``log G_t = (beta_{t+1} - beta_t) * loglik(u_t)``.

``log Z_hat`` estimates the log marginal likelihood ``log p(y)``.

Front end: :class:`TemperedSMC` (a NumPyro model, run through :class:`~smcppl.SMC`). BlackJAX's own
interface (``logprior_fn``/``loglikelihood_fn``, ``init``/``step``) is :mod:`smcppl.blackjax`.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.checks import one_of, positive_int
from smcppl.core.engine import FeynmanKac, SMCOutput, run_adaptive
from smcppl.core.entropic import with_entropic_correction
from smcppl.core.plan import Pilot, Plan
from smcppl.core.policy import Resampling, as_resampling
from smcppl.core.schedules import next_temperature, validate_schedule
from smcppl.core.weights import normalize, sanitize
from smcppl.inference.tempered.numpyro_model import NumPyroDensity, numpyro_density
from smcppl.inference.tempered.tempering import (log_increment, log_parts, tempered_logdensity,
                                                 validate_criterion, validate_target_ess)
from smcppl.kernels.independent import proposal_fit, proposal_fit_template
from smcppl.kernels.moves import (MoveSettings, default_step_size, move_population,
                                  particle_preconditioner, target_acceptance, validate_move)

__all__ = ["TemperedSMC", "tempered_feynman_kac"]


def _evaluate(logprior_fn, loglik_fn, positions):
    """``(log p, log L)`` of every particle, NaN read as ``-inf``."""
    lp, ll = jax.vmap(log_parts(logprior_fn, loglik_fn))(positions)
    return sanitize(lp), sanitize(ll)


TUNINGS = ("pilot", "weighted", "resampled")


def _validate_tuning(tuning: str) -> str:
    return one_of(tuning, TUNINGS, "tuning")


def blank_pilot_tables(dim: int, capacity: int, preconditioning: str = "full", dtype=jnp.float32,
                       move: Optional[MoveSettings] = None) -> dict:
    """The ``tables`` input of a pilot run itself (``use = False``: the run tunes itself, as
    ``tuning="weighted"``); same structure and shapes as :func:`pilot_tables` returns."""
    return jax.tree.map(lambda x: x, _blank_pilot_tables(dim, capacity, preconditioning, jnp.dtype(dtype), move))


@functools.lru_cache(maxsize=32)
def _blank_pilot_tables(dim, capacity, preconditioning, dtype, move):
    """:func:`blank_pilot_tables`, built once per setting (its proposal template traces a fit: ~30 ms)."""
    full = preconditioning == "full" and dim > 1

    def zeros(shape, dt):  # device_put of NumPy zeros: jnp.zeros compiles small programs (~10 ms each, fresh process)
        return jax.device_put(np.zeros(shape, dt))

    return {"use": zeros((), bool), "beta": zeros(capacity, dtype), "step_size": zeros(capacity, dtype),
            "mu": zeros((capacity, dim), dtype),
            "L": zeros((capacity, dim, dim) if full else (capacity, dim), dtype),
            "proposal": jax.tree.map(lambda s: zeros((capacity,) + s.shape, s.dtype),
                                     {} if move is None else proposal_fit_template(dim, move, dtype)),
            "num_mcmc_steps": zeros(capacity, np.int32)}


def pilot_tables(output: SMCOutput) -> dict:
    """A pilot run's per-stage kernels, for main runs of ``tuning="pilot"``: from row ``t`` of its trace,
    the temperature ``beta_t`` and the preconditioner ``(mu_t, L_t)`` of the move at ``beta_t``, and the
    step size the pilot moved with there — the smaller of the step of its last transition at ``beta_t``
    (tested on the pilot's particles) and the step its within-stage adaptation proposed after it (which
    may have shrunk the step after divergences); a step the pilot never tried is never transferred; and
    the number of transitions the pilot made there (adaptive with ``max_mcmc_steps``)."""
    params, info = output.trace.params, output.trace.move_info
    last, proposed = info["step_size_tested"], info["step_size"]
    # move_info row t + 1 is the move at beta_t (engine step: resample -> move -> update -> reweight)
    used = jnp.minimum(last, proposed)
    used = jnp.concatenate([used[1:], used[-1:]])
    step = jnp.where(jnp.isfinite(used), used, params["step_size"])
    steps = info["num_mcmc_steps"]
    return {"use": jnp.ones((), bool), "beta": params["beta"], "step_size": step, "mu": params["mu"], "L": params["L"],
            "proposal": params["proposal"], "num_mcmc_steps": jnp.concatenate([steps[1:], steps[-1:]])}


def tempered_feynman_kac(logprior_fn: Callable, loglik_fn: Optional[Callable], sample_initial: Callable,
                         dim: int, num_particles: int, move: MoveSettings = MoveSettings(), target_ess: float = 0.5,
                         criterion: str = "cess", schedule=None, tuning: str = "weighted",
                         pilot_particles: Optional[int] = None, pilot_resampling: Resampling = Resampling(),
                         max_stages: int = 500, tables: Optional[dict] = None,
                         settings: Optional[dict] = None) -> FeynmanKac:
    """The tempered Feynman–Kac model on flat positions ``[N, dim]``.

    ``logprior_fn``/``loglik_fn``: functions of one position; or pass ``loglik_fn=None`` and a
    ``logprior_fn`` returning ``(log prior, log lik)`` from one model evaluation (what
    :class:`TemperedSMC` does: half the cost per gradient). ``sample_initial(key, n) -> [n, dim]`` prior draws.
    ``schedule``: None (adaptive, bisection on
    the ``criterion`` to ``target_ess``) or an increasing ladder ending at 1.

    ``tuning`` — how the temperatures and the moves' preconditioner/step size are chosen:

    * ``"weighted"``: from the weighted particles of the previous stage, before resampling (the step
      size is also adapted within each stage's move);
    * ``"resampled"``: from the resampled particles that are then moved (BlackJAX's recipe);
    * ``"pilot"``: an independent pilot SMC run (tuned as ``"weighted"``) fixes the ladder and every
      stage's kernel; the main run then uses them unchanged, so its kernels and potentials do not depend
      on its own particles and ``Z_hat`` is exactly unbiased. ``tables`` (:func:`pilot_tables` of a pilot
      run, or :func:`blank_pilot_tables` for the pilot run itself, which then tunes itself) come from
      outside — the runner runs the pilot with this same model, so pilot and main runs share compiled
      code; ``tables=None`` runs a pilot of ``pilot_particles`` inside ``init``.

    Kernels tuned on the particles they move make ``Z_hat`` biased (upwards, ~+0.15 in log Z on the
    20-d conjugate model at N = 1000: ``benchmarks/logz_bias.py``); ``"pilot"`` removes that bias at
    the cost of the pilot run.

    ``settings``: traced values that replace ``target_ess`` and (HMC) ``move.num_integration_steps``
    (:meth:`TemperedSMC.build_from_density`'s ``Plan.settings``: one compiled program serves every value).
    """
    _validate_tuning(tuning)
    move = validate_move(move)
    given_move, given_ess = move, target_ess  # checked Python values (a nested pilot checks them again)
    if settings is not None:
        target_ess = settings.get("target_ess", target_ess)
        if "num_integration_steps" in settings:
            move = move._replace(num_integration_steps=settings["num_integration_steps"])
    h0 = move.step_size if move.step_size is not None else default_step_size(move.kind, dim)
    # tuning runs (the pilot, "weighted", "resampled") adapt the step size during each stage's move;
    # main runs of tuning="pilot" use the pilot's step sizes unchanged (kernels fixed in advance)
    adapt_target = target_acceptance(move) if (move.adapt_step_size and move.kind != "ula") else None
    ladder = None if schedule is None else jnp.asarray(validate_schedule(schedule))
    pilot_fk = None
    if tuning == "pilot" and tables is None:
        pilot_fk = tempered_feynman_kac(logprior_fn, loglik_fn, sample_initial, dim,
                                        pilot_particles or num_particles, given_move, given_ess, criterion,
                                        schedule, "weighted", max_stages=max_stages, settings=settings)._replace(
            record=lambda p: {"beta": p["beta"], "step_size": p["step_size"], "mu": p["mu"], "L": p["L"],
                              "proposal": p["proposal"]})

    def from_tables(params):
        """True where this run follows a pilot's tables (main runs of tuning="pilot")."""
        return params["pilot"]["use"] if tuning == "pilot" else jnp.zeros((), bool)

    def choose(ll, lw, params):
        beta, index = params["beta"], params["ladder_index"]
        if ladder is None:
            own, own_index = next_temperature(ll, lw, beta, target_ess, criterion), index
        else:
            own, own_index = ladder[index].astype(beta.dtype), jnp.minimum(index + 1, ladder.shape[0] - 1)
        if tuning != "pilot":
            return own, own_index
        lad = params["pilot"]["beta"]
        use = from_tables(params)
        return (jnp.where(use, lad[index].astype(beta.dtype), own),
                jnp.where(use, jnp.minimum(index + 1, lad.shape[0] - 1), own_index))

    def kernel_of(params):
        """(mu, L, step size, proposal fit) of the move at the current stage."""
        own = (params["mu"], params["L"], params["step_size"], params["proposal"])
        if tuning != "pilot":
            return own
        row = params["ladder_index"] - 1  # the pilot row whose temperature is the current one
        pil = params["pilot"]
        tab = (pil["mu"][row], pil["L"][row], pil["step_size"][row].astype(params["step_size"].dtype),
               jax.tree.map(lambda a: a[row], pil["proposal"]))
        use = from_tables(params)
        return jax.tree.map(lambda t, o: jnp.where(use, t, o), tab, own)

    def steps_of(params):
        """Transitions of the move at the current stage where the run follows a pilot (else None: its own)."""
        return params["pilot"]["num_mcmc_steps"][params["ladder_index"] - 1] if tuning == "pilot" else None

    def init(key):
        k_pilot, k_init = jax.random.split(key)
        x = sample_initial(k_init, num_particles)
        lp, ll = _evaluate(logprior_fn, loglik_fn, x)
        zeros = jnp.zeros(x.shape[0], x.dtype)
        params = {"beta": jnp.zeros((), x.dtype), "ladder_index": jnp.zeros((), jnp.int32)}
        if tuning == "pilot":
            if tables is None:
                out = run_adaptive(k_pilot, pilot_fk, max_stages if ladder is None else ladder.shape[0],
                                   pilot_resampling)
                params["pilot"] = pilot_tables(out)
                params["pilot_failed"] = out.dead_stage >= 0
            else:
                params["pilot"] = dict(tables)
                params["pilot_failed"] = jnp.zeros((), bool)  # the runner checks its pilot run
        beta1, idx = choose(ll, zeros, params)
        lw = jnp.where(jnp.isfinite(lp), log_increment(ll, beta1), -jnp.inf)
        particles = {"position": x, "logprior": lp, "loglik": ll, "acceptance": jnp.full(x.shape[0], jnp.nan, x.dtype),
                     "diverging": jnp.zeros(x.shape[0], bool), "divergent_share": zeros}
        params.update(beta=beta1, ladder_index=idx)
        mu, L = particle_preconditioner(x, lw, move.preconditioning)
        params.update(step_size=jnp.asarray(h0, x.dtype), mu=mu, L=L, proposal=proposal_fit(x, lw, (mu, L), move))
        if tuning == "pilot":
            lw = jnp.where(params["pilot_failed"], -jnp.inf, lw)  # a failed nested pilot fails the run loudly
        return particles, lw, params

    def move_fn(key, particles, log_weights, params, ancestry):
        logdensity = tempered_logdensity(logprior_fn, loglik_fn, params["beta"])
        mu, L, h, prop = kernel_of(params)
        pre = None if tuning == "resampled" else (mu, L, prop)
        res = move_population(key, particles["position"], log_weights, logdensity, h, move, pre,
                              adapt_target=adapt_target, adapt=~from_tables(params), num_mcmc_steps=steps_of(params))
        x, acc, div = res.position, res.acceptance, res.divergent
        lp, ll = _evaluate(logprior_fn, loglik_fn, x)
        new = {"position": x, "logprior": lp, "loglik": ll, "acceptance": acc.astype(x.dtype), "diverging": div > 0,
               "divergent_share": div.astype(x.dtype)}
        # divergences: divergent transitions in particle units (transitions / num_mcmc_steps)
        info = {"acceptance_rate": jnp.mean(acc), "divergences": jnp.sum(div).astype(x.dtype),
                "step_size": res.step_size, "step_size_tested": res.step_size_tested,
                "num_mcmc_steps": res.num_mcmc_steps, "start_correlation": res.start_correlation}
        return new, info

    def update(particles, log_weights, params, move_info):
        beta, idx = choose(particles["loglik"], log_weights, params)
        new = dict(params, beta=beta, ladder_index=idx)
        # own tuning (ignored where the run follows a pilot's tables): the step adapted during the move, and
        # the preconditioner for the next move from the particles reweighted to the new temperature
        lw_new = log_weights + log_increment(particles["loglik"], beta - params["beta"])
        mu, L = particle_preconditioner(particles["position"], lw_new, move.preconditioning)
        new.update(step_size=move_info["step_size"], mu=mu, L=L,
                   proposal=proposal_fit(particles["position"], lw_new, (mu, L), move))
        return new

    def log_potential(particles, prev, params, new_params):
        return log_increment(particles["loglik"], new_params["beta"] - params["beta"])

    if tuning == "pilot":
        # what a pilot run hands on (pilot_tables); the step recorded is the one a main run moves with
        def record(p):
            return {"beta": p["beta"], "step_size": kernel_of(p)[2], "mu": p["mu"], "L": p["L"],
                    "proposal": p["proposal"]}
    else:
        def record(p):
            return {"beta": p["beta"], "step_size": p["step_size"]}
    return FeynmanKac(init, move_fn, update, log_potential, progress=lambda p: p["beta"],
                      done=lambda p: p["beta"] >= 1.0, record=record)


DEFAULT_MCMC_STEPS = 5  # transitions per particle and stage of the standard move
WASTE_FREE_CHAIN_LENGTH = 10  # states per chain of the default waste-free HMC move
WASTE_FREE_MIN_DIM = 10  # unconstrained parameters from which the default HMC move is waste-free


def default_move_length(move, num_mcmc_steps: Optional[int], waste_free: Optional[bool],
                        max_mcmc_steps: Optional[int], entropic: bool = False, dim: Optional[int] = None) -> tuple:
    """``(num_mcmc_steps, waste_free)`` of :class:`TemperedSMC` from what the user gave (None: not given).

    The rule: HMC (the default move) on a model of ``dim >= WASTE_FREE_MIN_DIM = 10`` unconstrained parameters
    with neither ``num_mcmc_steps``, ``waste_free``, ``max_mcmc_steps`` nor an entropic resampler given runs
    waste-free chains of ``WASTE_FREE_CHAIN_LENGTH = 10`` states (each stage
    ``M = N / 10`` resampled particles make 9 transitions each and every state is kept: about ``N``
    transitions per stage instead of ``5 N``). Measured (``benchmarks/defaults.py``, N = 1000, 16 seeds,
    whole second calls, against 5 transitions per particle): 1.9-3.8x shorter calls, (log Z RMSE)^2 x call
    time 0.48-0.56x and (posterior mean error)^2 x call time 0.13-0.95x on a 2-, a 20- and a 31-parameter
    posterior; at 5x the particles (1.3-1.4x the call time) log Z RMSE 1.7-2.2x smaller. On two separated
    modes that no move crosses, the mode masses rest on the M chains' starts (a systematic resample of M):
    posterior mean error 0.063 sd against 0.047 at equal N; and on 2-parameter models at N = 4000
    (``benchmarks/tempered.py``, 5 seeds) the standard move's log Z was more accurate per second (Challenger
    RMSE 0.017 against 0.065 in 4.8x the time), so models below 10 parameters, cheap anyway, keep it. Anything
    else keeps the standard move: ``num_mcmc_steps`` (default 5) transitions per particle. ``dim=None``: not
    known (the standard move)."""
    if waste_free is None:
        waste_free = (num_mcmc_steps is None and max_mcmc_steps is None and not entropic
                      and isinstance(move, str) and move.lower() == "hmc" and dim is not None
                      and dim >= WASTE_FREE_MIN_DIM)
    if num_mcmc_steps is None:
        num_mcmc_steps = WASTE_FREE_CHAIN_LENGTH if waste_free else DEFAULT_MCMC_STEPS
    return num_mcmc_steps, bool(waste_free)


def _sample_stats(particles, data=None):
    """ArviZ's ``sample_stats`` of the final particles (``data``: unused, the export's calling convention)."""
    return {"lp": particles["logprior"] + particles["loglik"], "acceptance_rate": particles["acceptance"],
            "diverging": particles["diverging"]}


@functools.lru_cache(maxsize=32)
def _pointwise_log_likelihood(pointwise_loglik: Callable) -> Callable:
    """``(particles, data) -> {site: [particle, ...]}``, one function per density (kept across calls)."""
    def per_particle(particles, data):
        return jax.vmap(pointwise_loglik, in_axes=(0, None))(particles["position"], data)
    return per_particle


class TemperedSMC:
    """Adaptive tempered SMC for a NumPyro model (use with :class:`~smcppl.SMC`)::

        smc = SMC(TemperedSMC(model, move="hmc"), num_particles=2000, num_chains=4)
        smc.run(jax.random.key(0), X, y=y)

    move: ``"hmc"`` (default) ``| "mala" | "nuts" | "rwm" | "imh"`` (BlackJAX kernels; ``"imh"``: independent
    MH from a t fitted to the weighted particles, one density evaluation and no gradient per transition —
    for near-Gaussian posteriors (or ``proposal_components > 1`` for separated modes), with
    ``num_mcmc_steps >= log(0.01) / log(1 - acceptance)`` (~10-20); see :mod:`smcppl.kernels.independent`).
    num_mcmc_steps / waste_free: by default (HMC, neither given, a model of >= 10 unconstrained parameters)
    the move is **waste-free**: each stage
    ``M = N / 10`` particles of the resampled population start chains of 10 states and all of them are the
    next population (``num_mcmc_steps`` is then the chain length; :func:`default_move_length` gives the rule
    and its measurements). Given ``num_mcmc_steps`` (or ``max_mcmc_steps``, or ``waste_free=False``), every
    particle makes ``num_mcmc_steps`` transitions per stage (default 5); ``waste_free=True`` with it makes
    chains of that length. HMC takes ``num_integration_steps = 5`` leapfrog steps per transition (the
    setting with the least log Z error per second of a whole call among those measured on a 2-, a 20- and a
    31-parameter model, ``benchmarks/defaults.py``). More accuracy: more particles (a waste-free stage costs
    about ``N`` transitions whatever the chain length).
    Random-walk moves mix slowly on correlated or narrow posteriors and then give very noisy ``log Z``.
    max_mcmc_steps: None, or the most transitions per stage: the pilot then goes on from ``num_mcmc_steps``
    while some coordinate of the particles is correlated with the stage's start by more than
    ``correlation_threshold`` (default 0.05; :class:`~smcppl.kernels.moves.MoveSettings`), and every chain
    repeats the pilot's count per stage (``smc_stats.num_mcmc_steps``; ``smc_stats.start_correlation`` is
    recorded on every run). For posteriors with a slowly mixing direction (a noise scale, a funnel), where
    the population lags the tempered targets and ``log Z`` comes out low with every chain agreeing:
    ``num_mcmc_steps=2, max_mcmc_steps=20`` took the log Z error of the linear regression of
    ``benchmarks/user_models.py --steps`` from -0.54 +- 0.04 to -0.16 +- 0.05 (as a fixed 10 did) with 97
    transitions in all instead of 55. Multimodal populations and centred hierarchical models keep the
    correlation high and run to the cap (2-4x the transitions of the default; measured in the same study).
    target_ess: target (conditional) ESS ratio of each tempering increment; it and ``num_integration_steps``
    are inputs of the compiled program, so a ``TemperedSMC`` that differs only in them compiles nothing new
    (the persistent compilation cache holds the program). criterion: ``"cess"`` or
    ``"ess"``. schedule: a fixed ladder instead of the adaptive rule. likelihood_sites: names of the
    sites whose log-density is tempered (default: observed sites, plus ``numpyro.factor`` sites if
    ``factors_as_likelihood``). preconditioning / step_size / target_acceptance /
    num_integration_steps / proposal_components / proposal_dof: see
    :class:`~smcppl.kernels.moves.MoveSettings`.
    tuning: ``"pilot"`` (default: one independent pilot run of ``pilot_particles`` — default ``N``,
    so that it re-uses the chains' compiled program — fixes the ladder and every stage's kernel of every
    chain, so ``Z_hat`` stays unbiased, for the cost of one more chain: +25% with 4 chains, 2x with one;
    a smaller ``pilot_particles`` runs faster but compiles a second program: ``N / 4`` took 34-41% off one
    chain's call and added 60-90% to the first call's compilation, at a log Z error within the noise of 10
    seeds, ``benchmarks/defaults.py``, so it pays for repeated calls), ``"weighted"`` (temperatures,
    preconditioner and step size from the
    weighted particles of the previous stage: cheaper, but ``log Z`` is biased upwards by O(1/N)), or
    ``"resampled"`` (BlackJAX's recipe, same bias); see :func:`tempered_feynman_kac`.
    resampling: default ``Resampling("systematic", when="ess", threshold=0.5)``.
    """

    def __init__(self, model: Callable, *, move: str = "hmc", num_mcmc_steps: Optional[int] = None,
                 target_ess: float = 0.5,
                 criterion: str = "cess", schedule=None, likelihood_sites: Optional[Sequence[str]] = None,
                 factors_as_likelihood: bool = True, preconditioning: str = "full",
                 step_size: Optional[float] = None, target_acceptance: Optional[float] = None,
                 num_integration_steps: int = 5, waste_free: Optional[bool] = None, max_stages: int = 500,
                 resampling: Optional[Resampling] = None, tuning: str = "pilot",
                 pilot_particles: Optional[int] = None, adapt_step_size: bool = True,
                 proposal_components: int = 1, proposal_dof: Optional[float] = MoveSettings().proposal_dof,
                 max_mcmc_steps: Optional[int] = None,
                 correlation_threshold: float = MoveSettings().correlation_threshold):
        if not callable(model):
            raise TypeError(f"model must be a NumPyro model (a callable), got {type(model).__name__}.")
        self.model = model
        self._densities = {}  # the model's inspections by input signature (numpyro_density's cache)
        self.resampling = with_entropic_correction(
            as_resampling(resampling, default=Resampling("systematic", "ess", 0.5)),
            type(self).__name__)
        entropic = self.resampling.entropic is not None
        if waste_free and entropic and self.resampling.entropic.correct:
            raise ValueError("waste_free=True starts its chains from an equally weighted resampled population; "
                             "entropic resampling with correct=True carries weights through resampling. Use one "
                             "or the other (waste_free=False keeps the entropic resampler).")
        # the default rule also depends on the model's dimension (move_for); the settings kept here are those
        # it gives where the dimension is not known
        self._given = (move, num_mcmc_steps, waste_free, max_mcmc_steps, entropic)
        num_mcmc_steps, waste_free = default_move_length(*self._given)
        if waste_free:
            self.resampling = self.resampling._replace(when="always")  # every stage's chains start resampled
        self.move = validate_move(MoveSettings(move, num_mcmc_steps, preconditioning, target_acceptance, step_size,
                                               num_integration_steps, waste_free, adapt_step_size,
                                               proposal_components=proposal_components, proposal_dof=proposal_dof,
                                               max_mcmc_steps=max_mcmc_steps,
                                               correlation_threshold=correlation_threshold))
        self.target_ess = validate_target_ess(target_ess)
        self.criterion = validate_criterion(criterion)
        self.schedule = None if schedule is None else validate_schedule(schedule)
        self.likelihood_sites = likelihood_sites
        self.factors_as_likelihood = factors_as_likelihood
        self.tuning = _validate_tuning(tuning)
        if pilot_particles is not None and positive_int(pilot_particles, "pilot_particles") < 2:
            raise ValueError(f"pilot_particles must be >= 2, got {pilot_particles}.")
        self.pilot_particles = pilot_particles
        self.max_stages = positive_int(max_stages, "max_stages")

    def move_for(self, dim: int) -> tuple:
        """``(MoveSettings, Resampling)`` for a model of ``dim`` unconstrained parameters: the waste-free default
        of :func:`default_move_length` where it applies (``dim >= WASTE_FREE_MIN_DIM`` and nothing given), else
        the settings of ``__init__``."""
        num_mcmc_steps, waste_free = default_move_length(*self._given, dim=dim)
        if waste_free == self.move.waste_free:
            return self.move, self.resampling
        return (self.move._replace(waste_free=True, num_mcmc_steps=num_mcmc_steps),
                self.resampling._replace(when="always"))

    def density(self, *args, **kwargs) -> NumPyroDensity:
        """The model's tempering split on these inputs: ``log p(u)`` and ``log L(u)`` (tempered sites:
        ``likelihood_sites``) on the flat unconstrained position ``u``, prior draws and the map back to
        the model's values (:func:`~smcppl.inference.tempered.numpyro_model.numpyro_density`)."""
        return numpyro_density(self.model, args, kwargs, self.likelihood_sites, self.factors_as_likelihood,
                               cache=self._densities)

    def build(self, num_particles: int, *args, **kwargs) -> Plan:
        """The :class:`~smcppl.core.plan.Plan` for ``num_particles`` particles on the model's inputs
        ``args``/``kwargs``: ``build_from_density(num_particles, density(*args, **kwargs))``."""
        return self.build_from_density(num_particles, self.density(*args, **kwargs))

    def build_from_density(self, num_particles: int, dens: NumPyroDensity) -> Plan:
        """The plan on a given :meth:`density` (what needs the density and the plan together, such as
        simulation-based calibration, builds them once: :mod:`smcppl.validation.sbc`). ``plan.fk(data)``
        and ``plan.postprocess(particles, data)`` take the density's data pytree (``dens.data`` or another
        of its structure)."""
        (move, resampling), target_ess, criterion, schedule = (self.move_for(dens.dim), self.target_ess,
                                                                self.criterion, self.schedule)
        pilot_res = resampling if resampling.entropic is None else resampling._replace(entropic=None)
        # the runner's pilot (Plan.pilot): N particles by default, so that it re-uses the chains' program;
        # a pilot nested in the run (plan.fk(data) without tables, e.g. simulation-based calibration) is
        # compiled with the run anyway and keeps the cheaper max(N // 4, min(N, 128)) particles
        pilot_n = self.pilot_particles or num_particles
        nested_n = self.pilot_particles or max(num_particles // 4, min(num_particles, 128))

        def make_fk(data, tables=None, settings=None):
            return tempered_feynman_kac(lambda u: dens.log_parts(u, data), None,
                                        lambda key, n: dens.sample_prior(key, n, data), dens.dim, num_particles,
                                        move, target_ess, criterion, schedule, self.tuning, nested_n,
                                        pilot_res, self.max_stages, tables, settings)

        # inputs of the compiled program, not constants in it: a TemperedSMC that differs only in these runs the
        # same program (a new object, or a new process through the persistent cache, compiles nothing)
        traced = {"target_ess": np.asarray(target_ess, jnp.result_type(float))}
        if move.kind == "hmc":
            traced["num_integration_steps"] = np.asarray(move.num_integration_steps, np.int32)

        max_stages = self.max_stages if self.schedule is None else len(self.schedule)
        pilot = None
        if self.tuning == "pilot":
            pilot = Pilot(blank_pilot_tables(dens.dim, max_stages + 1, move.preconditioning,
                                             jnp.result_type(float), move), pilot_tables, pilot_n)

        metadata = {
            "observed_data": dens.observed_data,
            # functions of (particles, data) that stay the same objects from call to call (the export's programs
            # are kept per function: a new run's export traces nothing), with the data they take
            "pointwise_log_likelihood": _pointwise_log_likelihood(dens.pointwise_loglik),
            "sample_stats": _sample_stats,
            "data": dens.data,
            "dims": dens.dims,
            "coords": dens.coords,
            "latent_sites": dens.latent_sites,
            "likelihood_sites": dens.likelihood_sites,
        }
        attrs = {"sampler": "TemperedSMC", "move": move.kind, "num_mcmc_steps": move.num_mcmc_steps,
                 "max_mcmc_steps": move.max_mcmc_steps or move.num_mcmc_steps,
                 "target_ess": self.target_ess, "criterion": self.criterion,
                 "preconditioning": move.preconditioning, "waste_free": int(move.waste_free),
                 "schedule": "adaptive" if self.schedule is None else "fixed", "dim": dens.dim,
                 "tuning": self.tuning, "model": getattr(self.model, "__name__", "model"), "continuous_state": 1}

        def divergent_weight(particles, log_weights):
            """Weighted share of divergent transitions (weights after the stage's reweighting): divergent
            particles that the next temperature discards are harmless, those that carry the weight are not."""
            return {"divergent_weight": jnp.sum(normalize(log_weights) * particles["divergent_share"])}

        return Plan(fk=make_fk, num_stages=None, max_stages=max_stages, summary_fn=divergent_weight,
                    postprocess=lambda particles, data: jax.vmap(dens.postprocess, in_axes=(0, None))(
                        particles["position"], data),
                    resampling=resampling, metadata=metadata, attrs=attrs, name="TemperedSMC",
                    progress_name="beta", data=dens.data, entropic_correction=True, pilot=pilot,
                    settings=traced)
