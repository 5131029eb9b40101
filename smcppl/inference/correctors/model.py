"""The Feynman–Kac model of a corrector: Euler–Maruyama blocks of the weighted SDE (:mod:`.weights`), with
FK-steering potentials at the end of each block (:mod:`.steering`).

One engine stage is one block of ``interval`` SDE steps. The move simulates the block and returns the
block's ``log G`` (the FKC weight integrated along the path, plus the steering potential) as its third
element, so the model has no ``log_potential`` (ARCHITECTURE.md, "One engine").
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from smcppl.core.engine import FeynmanKac
from smcppl.inference.correctors.steering import POTENTIALS, block_potential, x0_reward
from smcppl.inference.correctors.weights import combined_score, initial_log_weights, log_weight_rate

if TYPE_CHECKING:
    from smcppl.inference.correctors.corrector import FeynmanKacCorrector

__all__ = ["corrector_feynman_kac"]


def corrector_feynman_kac(c: "FeynmanKacCorrector", num_particles: int, params: Any = None,
                          has_params: bool = False) -> FeynmanKac:
    """The :class:`~smcppl.core.engine.FeynmanKac` model of a
    :class:`~smcppl.inference.correctors.corrector.FeynmanKacCorrector` ``c``.

    Particles: ``{"x": [N, *event_shape]}`` (plus ``"reward", "r_run", "log_g_acc"`` when steering).
    The move returns ``log G`` of its block, computed from the scores at the pre-move states (left-point
    rule). Stage parameter: the number of completed blocks (int32); recorded as ``{"t": noise level at
    the end of the block}``. With ``has_params`` the scores are called as ``s(x, t, params)`` and the
    reward as ``reward(x, params)``.
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
    k_total, interval, n_stages = c.num_sde_steps, c.interval, c.num_stages
    corrected, steer, lam, potential = c.corrected, c.reward is not None, c.reward_scale, c.potential
    init_sd = math.sqrt(c.init_variance / big_b)
    noise = c.noise
    times_np = c.times
    axes = tuple(range(1, 1 + len(es)))

    def sigma_of(t):
        return noise(t) if callable(noise) else noise * sde.g(t)

    def total_score(x, t):
        return combined_score(scores, betas, x, t)[0]

    def init(key):
        times = jnp.asarray(times_np)
        x = init_sd * jax.random.normal(key, (num_particles,) + es, dtype=times.dtype)
        p = {"x": x}
        if steer:
            r0 = x0_reward(reward, total_score, x, times[0], sde, jnp.array(False))
            p.update(reward=r0, r_run=jnp.full_like(r0, POTENTIALS[potential].run_start),
                     log_g_acc=jnp.zeros_like(r0))
        lw = initial_log_weights(x, times[0], c.log_z_init(), betas, log_dens if corrected else None,
                                 c.init_variance)
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
            big_s, ss = combined_score(scores, betas, x, t)
            g2 = sde.g(t) ** 2
            sig = sigma_of(t)
            drift = -sde.f(x, t) + 0.5 * (g2 + sig**2) * big_s
            x_new = x + drift * dt + sig * jnp.sqrt(dt) * jax.random.normal(k_sub, x.shape, x.dtype)
            if corrected:
                inc = log_weight_rate(big_s, ss, betas, big_b, g2, sde.div_f(t, dim)) * dt
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
        (x, log_g, bad), _ = jax.lax.scan(substep, (p["x"], lg0, jnp.zeros((), jnp.int32)),
                                          (jnp.arange(interval), keys))
        out = dict(p, x=x)
        info = {"n_nonfinite": bad}
        if steer:
            final = stage + 1 >= n_stages
            k_end = jnp.minimum((stage + 1) * interval, k_total)
            t_eval = jnp.where(final, times[k_total - 1], times[k_end])  # the score is unused at the final stage
            r_new = x0_reward(reward, total_score, x, t_eval, sde, final)
            log_pot, r_run = block_potential(potential, lam, r_new, p["reward"], p["r_run"], p["log_g_acc"], final)
            out.update(reward=r_new, r_run=r_run, log_g_acc=p["log_g_acc"] + log_pot)
            log_g = log_g + log_pot
            info["reward_mean"] = jnp.mean(jnp.where(jnp.isfinite(r_new), r_new, jnp.nan))
        return out, info, log_g

    def update(p, log_weights, stage, move_info):
        return stage + 1

    def record(stage):
        k_end = jnp.minimum(stage * interval, k_total)
        return {"t": jnp.asarray(times_np)[k_end]}

    return FeynmanKac(init, move, update, None, progress=lambda s: s / n_stages, record=record)
