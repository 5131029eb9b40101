"""Feynman–Kac correctors (FKC) for score-based models, and FK steering (ARCHITECTURE.md; formulas in the module docstrings).

Target at noise level ``t`` for score models ``s_i(x, t) = grad log q_t^(i)(x)`` and exponents ``beta_i``::

    p_t(x) ∝ prod_i q_t^(i)(x)^beta_i,      B = sum_i beta_i,      S = sum_i beta_i s_i.

Simulated in reverse time ``tau = 1 - t`` with any noise scale ``sigma_t`` (Euler–Maruyama, scores at
the pre-move state; left-point weight rule)::

    dx = [ -f_t(x) + (g_t^2 + sigma_t^2) / 2 * S(x) ] dtau + sigma_t dW
    dw = [ (B - 1) div f_t + g_t^2 / 2 * ( |S|^2 - sum_i beta_i |s_i|^2 ) ] dtau

This weight is ``d/dtau log p~_t - (L* p~_t) / p~_t`` for the unnormalised ``p~_t = prod_i q_t^beta_i`` and
the simulated SDE's Fokker–Planck operator ``L*``; the drift coefficient ``(g^2 + sigma^2)/2`` makes the
Laplacian terms cancel, so no divergence of a score is ever needed. Hence the weighted particles target
``p_t`` at every step and ``E[exp(w)] = Z_0 / Z_1`` with ``Z_t = int prod_i q_t^beta_i``.

Initial particles are drawn from ``N(0, v/B I)`` (``v = sde.prior_variance``), which is ``p_1`` when every
``q_1^(i)`` is the reference ``N(0, v I)``; its normaliser is ``log Z_1 = D/2 [(1 - B) log(2 pi v) - log B]``.
Initial log-weights (``t_1 = times[0]``):

* with ``log_densities`` (``log q_t^(i)(x)``, known for the analytic targets of
  :mod:`smcppl.models.diffusion_targets`): the exact ratio of the diffused target to that proposal,
  ``w_1(x) = log Z_1 + sum_i beta_i [log q_{t_1}^(i)(x) - log N(x; 0, v I)]``;
* without: the constant ``log Z_1``, i.e. the **approximation** ``q_{t_1}^(i) = N(0, v I)``. It is good
  when the SDE forgets the data by ``t_1`` (VP, or VE with ``sigma_max`` much larger than the data's
  spread); with a VE SDE and a modest ``sigma_max`` it biases everything (on ``0.3 N(-6, 1) + 0.7 N(6, 1)``,
  ``beta = 2``, ``sigma_max = 5``: mode mass 0.75 instead of 0.845, log Z -1.47 instead of -1.81).

The log-evidence estimate is ``log int prod_i q_{t_min}^(i)(x)^beta_i dx`` (exactly so with
``log_densities``); it includes the ``(B - 1) div f`` term, which is the same for every particle: it never
changes resampling, only log Z.

**Safe settings.** The weights are exact for any noise scale, but their variance is not. With ``B > 1``
the drift ``(g^2 + sigma^2)/2 * S`` contracts the particles faster than the target ``p_t`` shrinks
(for a Gaussian ``q_t`` the relative variance lag is about ``(1 - 1/B) g^2 / (g^2 + sigma^2)``), and the
weights must undo it: with ``eta = sigma/g < 1`` (the probability-flow ODE is ``eta = 0``) the particles
miss the target's tails, which no reweighting can restore, and the answer is confidently wrong (a
Gaussian ``N(0, 0.5^2)`` at ``beta = 2``, 100 VP steps: sd 0.002 with ``eta = 0``, 0.25 with ``eta = 0.5``,
0.35 with ``eta >= 1``; exact 0.354). The per-step ESS and ancestor counts do not show it (with
resampling at every step they stay near 1 and N), so the constructor warns: use ``eta >= 1`` (the reverse
SDE, the default, or more noise) when ``B > 1``.

Cases (:func:`annealed`, :func:`product_of_experts`, :func:`guided`):
annealing ``q^beta``: ``dw = [(beta - 1) div f + g^2/2 beta (beta - 1) |s|^2] dtau``;
product ``q1 q2``: ``[div f + g^2 <s1, s2>] dtau``; classifier-free guidance ``q^(1-w) q_c^w``:
``g^2/2 w (w - 1) |s_c - s|^2 dtau``. ``corrected=False`` (or :meth:`FeynmanKacCorrector.uncorrected`) runs
the same SDE without weights: the usual score-scaling heuristic, biased for ``B != 1``.

**FK steering** (reward-tilted targets ``p(x_0) exp(lam r(x_0))``, :func:`fk_steering`): at the end of
every block of ``interval`` SDE steps the reward ``r`` of the Tweedie ``x0``-prediction
``(x + sigma_t^2 S) / alpha_t`` gives the potential ``log G``: ``diff`` ``lam (r_t - r_prev)``, ``max``
``lam max_{s >= t} r_s``, ``sum`` ``lam sum_{s >= t} r_s``, ``rt`` ``lam r_t``; the final step uses
``lam r(x) - sum of the particle's earlier log G`` (carried along its ancestry), so the final target is
exactly ``p_{t_min}(x) exp(lam r(x))`` whatever the intermediate potentials. Resampling happens at most
once per block (``interval``), by the resampling policy (default: always).

Which potentials are usable: ``diff`` and ``max`` at any number of blocks. ``rt`` tilts the intermediate
targets by ``exp(lam sum_blocks r_t)``, about ``K`` times the final tilt after ``K`` blocks, and ``sum`` by
about ``K^2 / 2`` times; the final step divides that back out, so with resampling the estimates become
heavy-tailed as ``K`` grows. On the tilted Gaussian of the tests (``N(0, 1) exp(-3 (x - 2)^2 / 2)``, 100
VP steps, N = 500, resampling every block), ``E[Z_hat] / Z`` is 1.01 (both) at ``K = 2``, 1.03 / 1.07
(``sum`` / ``rt``) at 3, 0.90 +- 0.17 / 0.99 at 4, 0.33 / 1.2 +- 0.4 at 5, 0.002 / 0.35 at 10 and 0.000 for
both at ``K = 100`` (``interval = 1``), the posterior mean drifting from 1.5 to 2.0. They are sound with at
most ``MAX_TILTED_BLOCKS = 3`` resampling blocks (or without resampling, where every potential reduces
to importance sampling with ``exp(lam r)``); the constructor warns beyond that.

Usage::

    fkc = annealed(score, beta=2.0, sde=VPSDE(), num_steps=200, event_shape=(1,))
    smc = SMC(fkc, num_particles=8000, num_chains=4).run(jax.random.key(0))
    smc.get_samples()["x"], smc.log_evidence          # log int q_0^2
    SMC(fkc.uncorrected(), 8000).run(key)             # the uncorrected baseline
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.engine import FeynmanKac, positive_int, validate_num_particles
from smcppl.core.policy import Resampling, as_resampling
from smcppl.core.plan import Plan
from smcppl.models.sde import SDE, validate_sde, x0_prediction

__all__ = [
    "FeynmanKacCorrector",
    "POTENTIALS",
    "annealed",
    "product_of_experts",
    "guided",
    "fk_steering",
    "corrector_feynman_kac",
]

POTENTIALS = ("diff", "max", "sum", "rt")
MAX_TILTED_BLOCKS = 3  # "sum" / "rt" potentials: most resampling blocks before the estimates degenerate


def _finite_float(v, what):
    try:
        f = float(v)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{what} must be a real number, got {v!r}.") from e
    if not math.isfinite(f):
        raise ValueError(f"{what} must be finite, got {v!r}.")
    return f


class FeynmanKacCorrector:
    """Weighted SDE sampler for ``p_t ∝ prod_i q_t^(i)^beta_i`` (see the module docstring); an algorithm
    for :class:`~smcppl.SMC`.

    scores: a score function ``s(x, t) -> grad_x log q_t(x)`` (one point ``x`` of shape ``event_shape``,
    scalar ``t``; adapt noise/denoiser models with :mod:`smcppl.models.sde`) or a sequence of them.
    betas: the exponents, one per score (``B = sum(betas) > 0``). sde: :class:`~smcppl.models.sde.VPSDE`
    or :class:`~smcppl.models.sde.VESDE`. num_steps: Euler–Maruyama steps from ``t = 1`` to ``t_min`` on a
    uniform grid (or pass ``times``, strictly decreasing from 1, ``num_steps + 1`` entries).
    noise: ``eta >= 0`` for ``sigma_t = eta g_t`` (1: the reverse SDE, 0: the probability-flow drift), or a
    function ``t -> sigma_t``. resampling: a :class:`~smcppl.Resampling` (default: systematic at every
    stage, never when uncorrected; ESS-triggered and entropic resampling are allowed, but waiting for the
    ESS to drop lets the weights of guided targets degenerate, see ``benchmarks/correctors.py``).
    event_shape: shape of one particle (required). corrected: ``False`` drops the weights (baseline).
    reward, reward_scale (``lam``), potential, interval: FK steering (see the module docstring);
    ``interval`` also sets how often resampling may happen without a reward.
    init_variance: variance ``v`` of the Gaussian reference at ``t = 1`` (default ``sde.prior_variance``).
    log_densities: optional ``log q_t(x)`` of each score model (a function ``(x, t) -> scalar``, or one per
    score; with run parameters ``(x, t, params)``), used at ``t = times[0]`` for exact initial weights
    (module docstring); without it the initial weights assume ``q_{times[0]} = N(0, v I)``.
    name: name of the draws in ``get_samples()``.

    Safe range: with ``B = sum(betas) > 1`` use ``noise >= 1`` (``sigma_t >= g_t``); below it (the
    probability-flow ODE included) the answer is confidently wrong (module docstring). FK
    steering with ``potential="sum"`` or ``"rt"`` needs at most ``MAX_TILTED_BLOCKS`` resampling blocks.
    Both are warned about (``UserWarning``) when the sampler is built.
    """

    def __init__(self, scores: Union[Callable, Sequence[Callable]], betas, sde: SDE, num_steps: int,
                 noise: Union[float, Callable] = 1.0, resampling: Optional[Resampling] = None, *,
                 event_shape=None, t_min: float = 0.0, times=None, corrected: bool = True,
                 reward: Optional[Callable] = None, reward_scale: float = 1.0, potential: str = "diff",
                 interval: int = 1, init_variance: Optional[float] = None,
                 log_densities: Union[Callable, Sequence[Callable], None] = None, name: str = "x"):
        if callable(scores):
            scores = (scores,)
        try:
            scores = tuple(scores)
        except TypeError:
            raise TypeError(f"scores must be a score function or a sequence of them, got {type(scores).__name__}.")
        if not scores:
            raise ValueError("scores is empty: give at least one score function.")
        for i, s in enumerate(scores):
            if not callable(s):
                raise TypeError(f"scores[{i}] must be a function (x, t) -> score, got {type(s).__name__}.")
        b = np.atleast_1d(np.asarray(betas, dtype=float))
        if b.ndim != 1 or b.shape[0] != len(scores):
            raise ValueError(f"betas must have one entry per score function: got {b.size} beta(s) "
                             f"(shape {np.shape(betas)}) for {len(scores)} score function(s).")
        if not np.all(np.isfinite(b)):
            raise ValueError(f"betas must be finite, got {b.tolist()}.")
        if not b.sum() > 0:
            raise ValueError(f"sum(betas) must be > 0 (the initial target is N(0, v / sum(betas))), got {b.sum()}.")
        self.scores, self.betas = scores, tuple(float(x) for x in b)
        self.sde = validate_sde(sde)
        self.num_steps = positive_int(num_steps, "num_steps")
        if callable(noise):
            self.noise = noise
        else:
            eta = _finite_float(noise, "noise")
            if eta < 0:
                raise ValueError(f"noise (eta, with sigma_t = eta * g_t) must be >= 0, got {eta}.")
            self.noise = eta
        if event_shape is None:
            raise ValueError("event_shape is required: the shape of one particle, e.g. (2,) for 2-D points.")
        if isinstance(event_shape, (int, np.integer)):
            event_shape = (int(event_shape),)
        event_shape = tuple(int(e) for e in event_shape)
        if any(e <= 0 for e in event_shape):
            raise ValueError(f"event_shape must have positive entries, got {event_shape}.")
        self.event_shape = event_shape
        self.dim = int(np.prod(event_shape))
        self.t_min = _finite_float(t_min, "t_min")
        if not 0.0 <= self.t_min < 1.0:
            raise ValueError(f"t_min must be in [0, 1), got {self.t_min}.")
        if times is None:
            times = np.linspace(1.0, self.t_min, self.num_steps + 1)
        times = np.asarray(times, dtype=float)
        if times.shape != (self.num_steps + 1,):
            raise ValueError(f"times must have num_steps + 1 = {self.num_steps + 1} entries, got shape {times.shape}.")
        if not (np.all(np.isfinite(times)) and np.all(np.diff(times) < 0) and times[0] <= 1.0 and times[-1] >= 0.0):
            raise ValueError("times must be finite and strictly decreasing within [0, 1] (from t = 1 towards 0).")
        self.times = times
        self.corrected = bool(corrected)
        if reward is not None and not callable(reward):
            raise TypeError(f"reward must be a function x -> scalar, got {type(reward).__name__}.")
        self.reward = reward
        self.reward_scale = _finite_float(reward_scale, "reward_scale")
        if potential not in POTENTIALS:
            raise ValueError(f"potential must be one of {POTENTIALS}, got {potential!r}.")
        self.potential = potential
        self.interval = positive_int(interval, "interval")
        v = self.sde.prior_variance if init_variance is None else _finite_float(init_variance, "init_variance")
        if not v > 0:
            raise ValueError(f"init_variance must be > 0, got {v}.")
        self.init_variance = float(v)
        if resampling is None:
            if not self.corrected and reward is None:
                resampling = Resampling("systematic", "never")
            else:
                resampling = Resampling("systematic", "always")
        self.resampling = as_resampling(resampling)
        if log_densities is not None:
            log_densities = (log_densities,) if callable(log_densities) else tuple(log_densities)
            if len(log_densities) != len(scores) or not all(callable(f) for f in log_densities):
                raise ValueError(f"log_densities must be one function (x, t) -> log q_t(x) per score function: got "
                                 f"{len(log_densities)} for {len(scores)} score function(s).")
        self.log_densities = log_densities
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}.")
        self.name = name
        self._warn_degenerate()

    def _min_noise_ratio(self):
        """``min_t sigma_t / g_t`` over the grid (None if a noise function cannot be evaluated here)."""
        if not callable(self.noise):
            return self.noise
        try:
            return min(float(self.noise(float(t))) / float(self.sde.g(float(t))) for t in self.times[:-1])
        except Exception:  # noqa: BLE001 - e.g. a noise function that needs tracing: not checked
            return None

    def _warn_degenerate(self):
        """Construction-time warnings for settings whose weights are known to degenerate (class docstring)."""
        if self.corrected and self.total_beta > 1.0:
            eta = self._min_noise_ratio()
            if eta is not None and eta < 1.0:
                warnings.warn(f"noise={eta:.3g} (sigma_t / g_t) below 1 with sum(betas)={self.total_beta:.3g} > 1: the "
                              "particles contract faster than the target and miss its tails; the weights cannot "
                              "restore them and the ESS does not show it (at noise=0, the probability-flow ODE, a "
                              "Gaussian at beta=2 comes out 100x too narrow). Use noise >= 1.", UserWarning,
                              stacklevel=3)
        if (self.reward is not None and self.potential in ("sum", "rt") and self.resampling.when != "never"
                and self.num_stages > MAX_TILTED_BLOCKS):
            warnings.warn(f"potential={self.potential!r} with resampling over {self.num_stages} blocks (num_steps / "
                          f"interval): its intermediate targets over-tilt by a factor that grows with the number of "
                          f"blocks and the final correction makes the estimates heavy-tailed (useless log Z and "
                          f"weights beyond {MAX_TILTED_BLOCKS} blocks). Use potential='diff' or 'max', a larger "
                          f"interval, or resampling when='never'.", UserWarning, stacklevel=3)

    # ------------------------------------------------------------------ derived quantities
    @property
    def total_beta(self) -> float:
        return float(sum(self.betas))

    @property
    def num_stages(self) -> int:
        """Engine stages (resampling opportunities): ``ceil(num_steps / interval)``."""
        return -(-self.num_steps // self.interval)

    def log_z_init(self) -> float:
        """``log Z_1 = log int prod_i N(x; 0, v I)^beta_i dx = D/2 [(1 - B) log(2 pi v) - log B]``
        (0 when uncorrected)."""
        if not self.corrected:
            return 0.0
        b, v, d = self.total_beta, self.init_variance, self.dim
        return 0.5 * d * ((1.0 - b) * math.log(2 * math.pi * v) - math.log(b))

    def div_f_log_weight(self) -> float:
        """The part of every particle's log-weight (and of log Z) due to the ``(B - 1) div f`` term:
        ``sum_k (B - 1) div f_{t_k} (t_k - t_{k+1})`` on this sampler's grid (0 for VE or ``B = 1``)."""
        t = self.times
        divf = np.asarray([float(self.sde.div_f(tk, self.dim)) for tk in t[:-1]])
        return float(np.sum((self.total_beta - 1.0) * divf * (t[:-1] - t[1:]))) if self.corrected else 0.0

    def uncorrected(self) -> "FeynmanKacCorrector":
        """The same SDE (drift ``(g^2 + sigma^2)/2 * S``) without the FKC weights and without resampling:
        the usual score-scaling heuristic, for comparison. Rewards (if any) are dropped too."""
        return FeynmanKacCorrector(self.scores, self.betas, self.sde, self.num_steps, self.noise,
                                   Resampling("systematic", "never"), event_shape=self.event_shape,
                                   t_min=self.t_min, times=self.times, corrected=False, interval=self.interval,
                                   init_variance=self.init_variance, name=self.name)

    def _sampler_name(self):
        if self.reward is not None:
            return "FKSteering"
        return "FeynmanKacCorrector" if self.corrected else "UncorrectedSDE"

    def attrs(self) -> dict:
        noise = (getattr(self.noise, "__name__", type(self.noise).__name__) if callable(self.noise)
                 else float(self.noise))
        out = {"sampler": self._sampler_name(), "num_steps": self.num_steps, "betas": str(list(self.betas)),
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

    # ------------------------------------------------------------------ input checks
    def check_functions(self, num_probe: int = 4, params=None, has_params: bool = False):
        """Evaluate every score (and the reward) on a few draws of the initial Gaussian at the first,
        middle and last grid times; raise a ValueError naming the function, ``t`` and the problem
        (wrong output shape, NaN/inf) before any compilation work."""
        key = jax.random.key(12345)
        scale = math.sqrt(self.init_variance / self.total_beta)
        x = scale * jax.random.normal(key, (num_probe,) + self.event_shape)
        k = self.num_steps

        def probe(fn, label, *time):
            """``fn`` on the probe draws (with ``params`` when given); its failure named with ``label``."""
            try:
                return jax.vmap(lambda xi: fn(xi, *time, params) if has_params else fn(xi, *time))(x)
            except Exception as e:  # noqa: BLE001
                at = f" at t={float(time[0]):.4g}" if time else ""
                raise ValueError(f"{label} failed on x of shape {self.event_shape}{at}: {type(e).__name__}: {e}") from e

        for t in sorted({float(self.times[0]), float(self.times[k // 2]), float(self.times[k - 1])}, reverse=True):
            for i, s in enumerate(self.scores):
                out = probe(s, f"scores[{i}]", jnp.asarray(t, x.dtype))
                if getattr(out, "shape", None) != (num_probe,) + self.event_shape:
                    raise ValueError(f"scores[{i}] returned shape {tuple(getattr(out, 'shape', ()))[1:]} for x of shape "
                                     f"{self.event_shape}; a score must have the shape of x (event_shape).")
                if not bool(jnp.all(jnp.isfinite(out))):
                    raise ValueError(f"scores[{i}] returned NaN or inf at t={t:.4g} (on draws of the initial "
                                     f"N(0, {self.init_variance / self.total_beta:.3g} I)); check the score model, "
                                     "its time convention (data at t = 0) and the SDE.")
        for i, f in enumerate(self.log_densities or ()):
            t = float(self.times[0])
            out = probe(f, f"log_densities[{i}]", jnp.asarray(t, x.dtype))
            if getattr(out, "shape", None) != (num_probe,):
                raise ValueError(f"log_densities[{i}] must return a scalar per point, got shape "
                                 f"{tuple(getattr(out, 'shape', ()))[1:]}.")
            if not bool(jnp.all(jnp.isfinite(out))):
                raise ValueError(f"log_densities[{i}] returned NaN or inf at t={t:.4g} on draws of the initial "
                                 "Gaussian; it must be log q_t(x) of the matching score model.")
        if self.reward is not None:
            r = probe(self.reward, "reward")
            if getattr(r, "shape", None) != (num_probe,):
                raise ValueError(f"reward must return a scalar per point, got shape {tuple(getattr(r, 'shape', ()))[1:]}.")
            if not bool(jnp.all(jnp.isfinite(r))):
                raise ValueError("reward returned NaN or inf on draws of the initial Gaussian.")
        if callable(self.noise):
            sig = jnp.asarray(self.noise(jnp.asarray(0.5)))
            if sig.shape != () or not bool(jnp.isfinite(sig)) or float(sig) < 0:
                raise ValueError(f"noise(t) must return a finite scalar >= 0, got {sig} at t=0.5.")

    # ------------------------------------------------------------------ the plan
    def build(self, num_particles, *args, **kwargs) -> Plan:
        """Check inputs and return the :class:`~smcppl.runner.Plan` for ``SMC``.

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
            except Exception as e:  # noqa: BLE001
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
        return Plan(fk=fk, num_steps=self.num_stages, max_stages=self.num_stages, postprocess=postprocess,
                    resampling=self.resampling, metadata=metadata, attrs=dict(self.attrs(), continuous_state=1),
                    name=self._sampler_name(), data=params if has_params else None,
                    entropic_correction=self.corrected)


def corrector_feynman_kac(c: FeynmanKacCorrector, num_particles: int, params=None, has_params: bool = False) -> FeynmanKac:
    """The :class:`~smcppl.core.engine.FeynmanKac` model of a :class:`FeynmanKacCorrector`.

    Particles: ``{"x": [N, *event_shape], "log_g": [N]}`` (plus ``"reward", "r_run", "log_g_acc"`` when
    steering); ``log_g`` is the log-potential of the last block, computed in the move from the scores at
    the pre-move states (left-point rule). Stage parameter: the number of completed blocks (int32);
    recorded as ``{"t": noise level at the end of the block}``. With ``has_params`` the scores are called
    as ``s(x, t, params)`` and the reward as ``reward(x, params)``.
    """
    sde, betas = c.sde, c.betas
    if has_params:
        bind = lambda f: (lambda x, t: f(x, t, params))  # noqa: E731
        scores = tuple(bind(s) for s in c.scores)
        log_dens = None if c.log_densities is None else tuple(bind(f) for f in c.log_densities)
        reward = None if c.reward is None else (lambda x: c.reward(x, params))
    else:
        scores, reward, log_dens = c.scores, c.reward, c.log_densities
    big_b, dim, es = c.total_beta, c.dim, c.event_shape
    k_total, interval, n_stages = c.num_steps, c.interval, c.num_stages
    corrected, steer, lam, potential = c.corrected, c.reward is not None, c.reward_scale, c.potential
    log_z1 = c.log_z_init()
    init_sd = math.sqrt(c.init_variance / big_b)
    noise = c.noise
    times_np = c.times
    axes = tuple(range(1, 1 + len(es)))

    def sigma_of(t):
        return noise(t) if callable(noise) else noise * sde.g(t)

    def combined(x, t):
        ss = [jax.vmap(s, in_axes=(0, None))(x, t) for s in scores]
        big_s = sum(b * s for b, s in zip(betas, ss))
        return big_s, ss

    def sqnorm(v):
        return jnp.sum(v**2, axis=axes)

    def x0_reward(x, t, final):
        """Reward of the x0-prediction at t (of x itself at the final stage)."""
        big_s, _ = combined(x, t)
        x0 = jnp.where(final, x, x0_prediction(x, big_s, t, sde))
        return jax.vmap(reward)(x0)

    def init(key):
        times = jnp.asarray(times_np)
        x = init_sd * jax.random.normal(key, (num_particles,) + es, dtype=times.dtype)
        p = {"x": x, "log_g": jnp.zeros(num_particles, x.dtype)}
        if steer:
            r0 = x0_reward(x, times[0], jnp.array(False))
            p.update(reward=r0, r_run=jnp.full_like(r0, -jnp.inf if potential == "max" else 0.0),
                     log_g_acc=jnp.zeros_like(r0))
        lw = jnp.full((num_particles,), log_z1 if corrected else 0.0, x.dtype)
        if corrected and log_dens is not None:
            # exact ratio of prod_i q_{t_1}^beta_i to the proposal prod_i N(0, v I)^beta_i / Z_1
            log_ref = -0.5 * sqnorm(x) / c.init_variance - 0.5 * dim * math.log(2 * math.pi * c.init_variance)
            lw = lw + sum(b * (jax.vmap(f, in_axes=(0, None))(x, times[0]) - log_ref) for b, f in zip(betas, log_dens))
        return p, lw, jnp.zeros((), jnp.int32)

    def move(key, p, log_weights, stage, ancestry):
        times = jnp.asarray(times_np, p["x"].dtype)

        def substep(carry, inp):
            x, lg, bad = carry
            j, k_sub = inp
            k = stage * interval + j
            valid = k < k_total
            kc = jnp.minimum(k, k_total - 1)
            t, t_next = times[kc], times[kc + 1]
            dt = t - t_next
            big_s, ss = combined(x, t)
            g2 = sde.g(t) ** 2
            sig = sigma_of(t)
            drift = -sde.f(x, t) + 0.5 * (g2 + sig**2) * big_s
            x_new = x + drift * dt + sig * jnp.sqrt(dt) * jax.random.normal(k_sub, x.shape, x.dtype)
            if corrected:
                inc = ((big_b - 1.0) * sde.div_f(t, dim)
                       + 0.5 * g2 * (sqnorm(big_s) - sum(b * sqnorm(s) for b, s in zip(betas, ss)))) * dt
            else:
                inc = jnp.zeros(x.shape[0], x.dtype)
            finite = jnp.all(jnp.isfinite(x_new), axis=axes) & jnp.isfinite(inc)
            inc = jnp.where(finite, inc, -jnp.inf)
            x_new = jnp.where(finite.reshape((-1,) + (1,) * len(es)), x_new, x)
            x = jnp.where(valid, x_new, x)
            lg = lg + jnp.where(valid, inc, 0.0)
            bad = bad + jnp.sum(valid & ~finite, dtype=jnp.int32)  # int32 under x64 too (scan carry)
            return (x, lg, bad), None

        keys = jax.random.split(key, interval)
        lg0 = jnp.zeros(p["x"].shape[0], p["x"].dtype)
        (x, lg, bad), _ = jax.lax.scan(substep, (p["x"], lg0, jnp.zeros((), jnp.int32)),
                                       (jnp.arange(interval), keys))
        out = dict(p, x=x)
        info = {"n_nonfinite": bad}
        if steer:
            final = stage + 1 >= n_stages
            k_end = jnp.minimum((stage + 1) * interval, k_total)
            t_eval = jnp.where(final, times[k_total - 1], times[k_end])  # the score is unused at the final stage
            r_new = x0_reward(x, t_eval, final)
            r_prev, r_run, acc = p["reward"], p["r_run"], p["log_g_acc"]
            if potential == "diff":
                log_pot = lam * (r_new - r_prev)
            elif potential == "max":
                r_run = jnp.maximum(r_run, r_new)
                log_pot = lam * r_run
            elif potential == "sum":
                r_run = r_run + r_new
                log_pot = lam * r_run
            else:  # "rt"
                log_pot = lam * r_new
            log_pot = jnp.where(final, lam * r_new - acc, log_pot)
            out.update(reward=r_new, r_run=r_run, log_g_acc=acc + log_pot)
            lg = lg + log_pot
            info["reward_mean"] = jnp.mean(jnp.where(jnp.isfinite(r_new), r_new, jnp.nan))
        out["log_g"] = lg
        return out, info

    def update(p, log_weights, stage, move_info):
        return stage + 1

    def log_potential(p, prev, stage, new_stage):
        return p["log_g"]

    def record(stage):
        k_end = jnp.minimum(stage * interval, k_total)
        return {"t": jnp.asarray(times_np)[k_end]}

    return FeynmanKac(init, move, update, log_potential, progress=lambda s: s / n_stages, record=record)


# ---------------------------------------------------------------------------------------- presets
def annealed(score: Callable, beta: float, sde: SDE, num_steps: int, **kwargs) -> FeynmanKacCorrector:
    """Anneal one score model to ``p^beta``: weight ``[(beta - 1) div f + g^2/2 beta (beta - 1) |s|^2] dtau``."""
    b = _finite_float(beta, "beta")
    if not b > 0:
        raise ValueError(f"beta must be > 0, got {beta}.")
    return FeynmanKacCorrector((score,), (b,), sde, num_steps, **kwargs)


def product_of_experts(scores: Sequence[Callable], sde: SDE, num_steps: int, **kwargs) -> FeynmanKacCorrector:
    """Product ``prod_i q_i`` of score models (all ``beta_i = 1``); for two: ``[div f + g^2 <s1, s2>] dtau``."""
    scores = tuple(scores) if not callable(scores) else (scores,)
    if len(scores) < 2:
        raise ValueError(f"product_of_experts needs at least two score functions, got {len(scores)}.")
    return FeynmanKacCorrector(scores, (1.0,) * len(scores), sde, num_steps, **kwargs)


def guided(score: Callable, cond_score: Callable, w: float, sde: SDE, num_steps: int, **kwargs) -> FeynmanKacCorrector:
    """Classifier-free guidance ``q^(1-w) q_c^w`` (``score``: unconditional, ``cond_score``: conditional):
    drift with ``S = (1 - w) s + w s_c``, weight ``g^2/2 w (w - 1) |s_c - s|^2 dtau``."""
    w = _finite_float(w, "w (guidance weight)")
    return FeynmanKacCorrector((score, cond_score), (1.0 - w, w), sde, num_steps, **kwargs)


def fk_steering(score: Union[Callable, Sequence[Callable]], reward: Callable, sde: SDE, num_steps: int, *,
                lam: float = 1.0, potential: str = "diff", interval: int = 10, betas=None,
                **kwargs) -> FeynmanKacCorrector:
    """FK steering to ``p(x_0) exp(lam r(x_0))`` (``p`` the product of ``score`` models with exponents ``betas``,
    default one model with ``beta = 1``): potentials ``diff | max | sum | rt`` on the reward of the
    ``x0``-prediction, resampling every ``interval`` steps, final correction (see module docstring)."""
    if reward is None or not callable(reward):
        raise TypeError("fk_steering needs a reward function x -> scalar.")
    scores = (score,) if callable(score) else tuple(score)
    betas = (1.0,) * len(scores) if betas is None else betas
    return FeynmanKacCorrector(scores, betas, sde, num_steps, reward=reward, reward_scale=lam,
                               potential=potential, interval=interval, **kwargs)
