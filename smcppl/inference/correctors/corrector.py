"""The corrector front end: :class:`FeynmanKacCorrector` and its presets :func:`annealed`,
:func:`product_of_experts`, :func:`guided` and :func:`fk_steering` (ARCHITECTURE.md).

A corrector samples ``p_t ∝ prod_i q_t^(i)^beta_i`` from score models ``s_i = grad log q_t^(i)`` with a
weighted SDE (the weights and their math: :mod:`.weights`), optionally tilted by a reward (FK steering:
:mod:`.steering`); :mod:`.model` is its Feynman–Kac model and :mod:`.inputs` its input checks.
``corrected=False`` (or :meth:`FeynmanKacCorrector.uncorrected`) runs the same SDE without weights: the
usual score-scaling heuristic, biased for ``B = sum(betas) != 1``.

Usage::

    fkc = annealed(score, beta=2.0, sde=VPSDE(), num_sde_steps=200, event_shape=(1,))
    smc = SMC(fkc, num_particles=8000, num_chains=4).run(jax.random.key(0))
    smc.get_samples()["x"], smc.log_evidence          # log int q_0^2
    SMC(fkc.uncorrected(), 8000).run(key)             # the uncorrected baseline
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.checks import finite_float, positive_float, positive_int
from smcppl.core.engine import validate_num_particles
from smcppl.core.plan import Plan
from smcppl.core.policy import Resampling, as_resampling
from smcppl.inference.correctors import inputs, weights
from smcppl.inference.correctors.model import corrector_feynman_kac
from smcppl.inference.correctors.steering import warn_if_over_tilted
from smcppl.models.sde import SDE, validate_sde

__all__ = ["FeynmanKacCorrector", "annealed", "product_of_experts", "guided", "fk_steering"]


class FeynmanKacCorrector:
    """Weighted SDE sampler for ``p_t ∝ prod_i q_t^(i)^beta_i`` (see :mod:`.weights`); an algorithm
    for :class:`~smcppl.SMC`.

    scores: a score function ``s(x, t) -> grad_x log q_t(x)`` (one point ``x`` of shape ``event_shape``,
    scalar ``t``; adapt noise/denoiser models with :mod:`smcppl.models.sde`) or a sequence of them.
    betas: the exponents, one per score (``B = sum(betas) > 0``). sde: :class:`~smcppl.models.sde.VPSDE`
    or :class:`~smcppl.models.sde.VESDE`. num_sde_steps: Euler–Maruyama steps from ``t = 1`` to ``t_min``
    on a uniform grid (or pass ``times``, strictly decreasing from 1, ``num_sde_steps + 1`` entries);
    ``num_steps`` is its deprecated keyword alias.
    noise: ``eta >= 0`` for ``sigma_t = eta g_t`` (1: the reverse SDE, 0: the probability-flow drift), or a
    function ``t -> sigma_t``. resampling: a :class:`~smcppl.Resampling` or a scheme name (default:
    systematic at every stage, never when uncorrected; ESS-triggered and entropic resampling are allowed,
    but waiting for the ESS to drop lets the weights of guided targets degenerate, see
    ``benchmarks/correctors.py``).
    event_shape: shape of one particle (required). corrected: ``False`` drops the weights (baseline).
    reward, reward_scale (``lam``), potential, interval: FK steering (:mod:`.steering`);
    ``interval`` also sets how often resampling may happen without a reward.
    init_variance: variance ``v`` of the Gaussian reference at ``t = 1`` (default ``sde.prior_variance``).
    log_densities: optional ``log q_t(x)`` of each score model (a function ``(x, t) -> scalar``, or one per
    score; with run parameters ``(x, t, params)``), used at ``t = times[0]`` for exact initial weights
    (:mod:`.weights`); without it the initial weights assume ``q_{times[0]} = N(0, v I)``.
    name: name of the draws in ``get_samples()``.

    Safe range: with ``B = sum(betas) > 1`` use ``noise >= 1`` (``sigma_t >= g_t``); below it (the
    probability-flow ODE included) the answer is confidently wrong (:mod:`.weights`). FK steering with
    ``potential="sum"`` or ``"rt"`` needs at most ``MAX_TILTED_BLOCKS`` resampling blocks
    (:mod:`.steering`). Both are warned about (``UserWarning``) when the sampler is built.
    """

    def __init__(self, scores: Union[Callable, Sequence[Callable]], betas: Union[float, Sequence[float]], sde: SDE,
                 num_sde_steps: Optional[int] = None, noise: Union[float, Callable] = 1.0,
                 resampling: Union[Resampling, str, None] = None, *,
                 event_shape: Union[int, Sequence[int], None] = None, t_min: float = 0.0,
                 times: Optional[Sequence[float]] = None, corrected: bool = True,
                 reward: Optional[Callable] = None, reward_scale: float = 1.0,
                 potential: str = "diff", interval: int = 1, init_variance: Optional[float] = None,
                 log_densities: Union[Callable, Sequence[Callable], None] = None, name: str = "x",
                 num_steps: Optional[int] = None):
        self.scores = inputs.as_scores(scores)
        self.betas = inputs.as_betas(betas, len(self.scores))
        self.sde = validate_sde(sde)
        self.num_sde_steps = inputs.num_sde_steps_keyword(num_sde_steps, num_steps)
        self.noise = inputs.as_noise(noise)
        self.event_shape = inputs.as_event_shape(event_shape)
        self.dim = int(np.prod(self.event_shape))
        self.t_min, self.times = inputs.as_times(times, t_min, self.num_sde_steps)
        self.corrected = bool(corrected)
        self.reward = inputs.as_callable_or_none(reward, "reward", "x -> scalar")
        self.reward_scale = finite_float(reward_scale, "reward_scale")
        self.potential = inputs.as_potential(potential)
        self.interval = positive_int(interval, "interval")
        self.init_variance = (float(self.sde.prior_variance) if init_variance is None
                              else positive_float(init_variance, "init_variance"))
        never = not self.corrected and reward is None
        self.resampling = as_resampling(resampling, default=Resampling("systematic", "never" if never else "always"))
        self.log_densities = inputs.as_log_densities(log_densities, len(self.scores))
        self.name = inputs.as_name(name)
        if self.corrected:
            weights.warn_if_low_noise(self.noise, self.sde, self.times, self.total_beta, stacklevel=2)
        if self.reward is not None:
            warn_if_over_tilted(self.potential, self.num_stages, self.resampling.when != "never", stacklevel=2)

    # ------------------------------------------------------------------ derived quantities
    @property
    def total_beta(self) -> float:
        """``B = sum_i beta_i``."""
        return float(sum(self.betas))

    @property
    def num_stages(self) -> int:
        """Engine stages (resampling opportunities): ``ceil(num_sde_steps / interval)``."""
        return -(-self.num_sde_steps // self.interval)

    def log_z_init(self) -> float:
        """``log Z_1 = D/2 [(1 - B) log(2 pi v) - log B]`` (:func:`.weights.log_z_init`; 0 when uncorrected)."""
        return weights.log_z_init(self.total_beta, self.init_variance, self.dim) if self.corrected else 0.0

    def div_f_log_weight(self) -> float:
        """The ``(B - 1) div f`` part of every log-weight and of log Z (:func:`.weights.div_f_log_weight`;
        0 when uncorrected)."""
        return weights.div_f_log_weight(self.sde, self.times, self.total_beta, self.dim) if self.corrected else 0.0

    def uncorrected(self) -> "FeynmanKacCorrector":
        """The same SDE (drift ``(g^2 + sigma^2)/2 * S``) without the FKC weights and without resampling:
        the usual score-scaling heuristic, for comparison. Rewards (if any) are dropped too."""
        return FeynmanKacCorrector(self.scores, self.betas, self.sde, self.num_sde_steps, self.noise,
                                   Resampling("systematic", "never"), event_shape=self.event_shape,
                                   t_min=self.t_min, times=self.times, corrected=False, interval=self.interval,
                                   init_variance=self.init_variance, name=self.name)

    def _sampler_name(self) -> str:
        if self.reward is not None:
            return "FKSteering"
        return "FeynmanKacCorrector" if self.corrected else "UncorrectedSDE"

    def attrs(self) -> dict:
        """The settings recorded with a run (str/int/float only)."""
        noise = (getattr(self.noise, "__name__", type(self.noise).__name__) if callable(self.noise)
                 else float(self.noise))
        out = {"sampler": self._sampler_name(), "num_sde_steps": self.num_sde_steps, "betas": str(list(self.betas)),
               "num_scores": len(self.scores), "total_beta": self.total_beta, "noise": noise,
               "event_shape": str(self.event_shape), "t_min": float(self.times[-1]), "corrected": int(self.corrected),
               "interval": self.interval, "init_variance": self.init_variance, "log_z_init": self.log_z_init(),
               "exact_init": int(self.log_densities is not None),
               "div_f_log_weight": self.div_f_log_weight()}
        out.update(self.sde.attrs())
        if self.reward is not None:
            out.update({"potential": self.potential, "reward_scale": self.reward_scale,
                        "reward": getattr(self.reward, "__name__", type(self.reward).__name__)})
        return out

    def check_functions(self, num_probe: int = 4, params: Any = None, has_params: bool = False) -> None:
        """Probe the scores, log-densities, reward and noise function before compiling
        (:func:`.inputs.check_functions`)."""
        inputs.check_functions(self, num_probe, params, has_params)

    # ------------------------------------------------------------------ the plan
    def build(self, num_particles: int, *args: Any, **kwargs: Any) -> Plan:
        """Check inputs and return the :class:`~smcppl.core.plan.Plan` for ``SMC``.

        ``SMC(fkc, N).run(key)`` calls the scores as ``s(x, t)``; ``SMC(fkc, N).run(key, params)`` passes
        ``params`` (any pytree of arrays, e.g. network weights or mixture parameters) as a jit argument
        and calls ``s(x, t, params)`` and ``reward(x, params)``, so that compiled code is reused for new
        parameters of the same shapes (see :func:`smcppl.runner.make_run_one`)."""
        if kwargs or len(args) > 1:
            raise TypeError(f"{self._sampler_name()}.build takes at most one argument (the score parameters); got "
                            f"{len(args)} positional and {sorted(kwargs)} keyword argument(s).")
        num_particles = validate_num_particles(num_particles)
        has_params = len(args) == 1
        params = args[0] if has_params else None
        if has_params:
            try:
                params = jax.tree_util.tree_map(jnp.asarray, params)
            except Exception as e:
                raise TypeError(f"score parameters must be a pytree of arrays: {type(e).__name__}: {e}") from e
        self.check_functions(params=params, has_params=has_params)
        name = self.name
        steer = self.reward is not None

        def postprocess(p, data=None):
            out = {name: p["x"]}
            if steer:
                out["reward"] = p["reward"]
            return out

        if has_params:
            fk = lambda data: corrector_feynman_kac(self, num_particles, data, True)  # noqa: E731
        else:
            fk = corrector_feynman_kac(self, num_particles)
        metadata = {"sample_stats": (lambda p: {"reward": p["reward"]}) if steer else None,
                    "times": self.times}
        return Plan(fk=fk, num_stages=self.num_stages, max_stages=self.num_stages, postprocess=postprocess,
                    resampling=self.resampling, metadata=metadata, attrs=dict(self.attrs(), continuous_state=1),
                    name=self._sampler_name(), data=params if has_params else None,
                    entropic_correction=self.corrected)


# ---------------------------------------------------------------------------------------- presets
def annealed(score: Callable, beta: float, sde: SDE, num_sde_steps: Optional[int] = None,
             **kwargs) -> FeynmanKacCorrector:
    """Anneal one score model to ``p^beta``: weight ``[(beta - 1) div f + g^2/2 beta (beta - 1) |s|^2] dtau``."""
    num_sde_steps = inputs.num_sde_steps_keyword(num_sde_steps, kwargs.pop("num_steps", None))
    return FeynmanKacCorrector((score,), (positive_float(beta, "beta"),), sde, num_sde_steps, **kwargs)


def product_of_experts(scores: Sequence[Callable], sde: SDE, num_sde_steps: Optional[int] = None,
                       **kwargs) -> FeynmanKacCorrector:
    """Product ``prod_i q_i`` of score models (all ``beta_i = 1``); for two: ``[div f + g^2 <s1, s2>] dtau``."""
    num_sde_steps = inputs.num_sde_steps_keyword(num_sde_steps, kwargs.pop("num_steps", None))
    scores = tuple(scores) if not callable(scores) else (scores,)
    if len(scores) < 2:
        raise ValueError(f"product_of_experts needs at least two score functions, got {len(scores)}.")
    return FeynmanKacCorrector(scores, (1.0,) * len(scores), sde, num_sde_steps, **kwargs)


def guided(score: Callable, cond_score: Callable, w: float, sde: SDE, num_sde_steps: Optional[int] = None,
           **kwargs) -> FeynmanKacCorrector:
    """Classifier-free guidance ``q^(1-w) q_c^w`` (``score``: unconditional, ``cond_score``: conditional):
    drift with ``S = (1 - w) s + w s_c``, weight ``g^2/2 w (w - 1) |s_c - s|^2 dtau``."""
    num_sde_steps = inputs.num_sde_steps_keyword(num_sde_steps, kwargs.pop("num_steps", None))
    w = finite_float(w, "w (guidance weight)")
    return FeynmanKacCorrector((score, cond_score), (1.0 - w, w), sde, num_sde_steps, **kwargs)


def fk_steering(score: Union[Callable, Sequence[Callable]], reward: Callable, sde: SDE,
                num_sde_steps: Optional[int] = None, *, lam: float = 1.0, potential: str = "diff",
                interval: int = 10, betas: Optional[Sequence[float]] = None, **kwargs) -> FeynmanKacCorrector:
    """FK steering to ``p(x_0) exp(lam r(x_0))`` (``p`` the product of ``score`` models with exponents ``betas``,
    default one model with ``beta = 1``): potentials ``diff | max | sum | rt`` on the reward of the
    ``x0``-prediction, resampling every ``interval`` SDE steps, final correction (:mod:`.steering`)."""
    num_sde_steps = inputs.num_sde_steps_keyword(num_sde_steps, kwargs.pop("num_steps", None))
    if reward is None or not callable(reward):
        raise TypeError("fk_steering needs a reward function x -> scalar.")
    scores = (score,) if callable(score) else tuple(score)
    betas = (1.0,) * len(scores) if betas is None else betas
    return FeynmanKacCorrector(scores, betas, sde, num_sde_steps, reward=reward, reward_scale=lam,
                               potential=potential, interval=interval, **kwargs)
