"""What a new user feels on models of their own (issue 13): whole calls of ``SMC(TemperedSMC(model), 2000,
num_chains=4).run`` against NumPyro NUTS, each in a fresh process (CPU).

    python benchmarks/user_models.py                          # every model, 2 rounds
    python benchmarks/user_models.py --models eight_schools,radon --rounds 1
    python benchmarks/user_models.py --logz                   # linear regression: log Z against its exact value
    python benchmarks/user_models.py --invariance             # its moves and increments on exact tempered draws
    python benchmarks/user_models.py --steps                  # fixed against adaptive transitions per stage
    python benchmarks/user_models.py --waste-free             # the standard move against waste-free ones

The models are written here the way a NumPyro user writes them (not taken from ``smcppl.models.zoo``), on
data simulated with fixed seeds: eight schools (centred, the funnel), a radon-like varying-intercept model
(85 counties, 919 houses), a Poisson change point with a continuous switch time, a two-component Gaussian
mixture (Dirichlet weights, unordered means: label switching), a correlated multivariate normal with an
LKJ prior on its Cholesky factor plus Dirichlet-multinomial counts, and a 4-parameter linear regression.

Per model and round, fresh Python processes (order alternating by round):

* ``smcppl-cold``: ``SMCPPL_COMPILATION_CACHE`` = a new, empty folder; the first ``run`` (import, model
  inspection, tracing, compiling, pilot, chains, draws, health check), then a second call with a new key;
* ``smcppl-warm``: a new process on the cache the cold one filled (a notebook re-run in a new kernel);
* ``nuts``: ``MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4)`` (NumPyro's default
  ``chain_method``; with one CPU device the chains run one after another), ``run`` then a second ``run``
  with a new key, JAX's persistent cache off (JAX's default).

One JSON line per process: ``import_s``, ``first_call_s``, ``second_call_s`` (whole calls, wall seconds),
smcppl's ``compile_seconds``/``run_seconds`` of each call, its health flags and log Z per chain, and the
posterior mean and sd of every scalar of every latent site (flattened), so that the two methods can be
compared: ``summarise`` (run at the end) prints the largest |mean difference| in NUTS posterior sd. On the
mixture only the label-free scale is compared: smcppl's population holds both labellings of the components
(as the posterior does), each NUTS chain one.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

MODELS = ("eight_schools", "radon", "change_point", "mixture", "lkj_dirichlet", "linear_regression")
METHODS = ("smcppl-cold", "smcppl-warm", "nuts")


def emit(record):
    print(json.dumps(record), flush=True)
    return record


def user_model(name):
    """``(model, kwargs)`` of one user model with its data (numpy arrays, fixed seeds)."""
    import numpy as np
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    rng = np.random.default_rng(20261203)
    if name == "eight_schools":
        y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
        sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

        def model(sigma, y=None):
            mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
            tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
            with numpyro.plate("school", sigma.shape[0]):
                theta = numpyro.sample("theta", dist.Normal(mu, tau))
                numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)
        return model, {"sigma": sigma, "y": y}
    if name == "radon":
        counties, houses = 85, 919
        county = rng.integers(0, counties, houses)
        floor = rng.integers(0, 2, houses).astype(float)
        alpha = rng.normal(1.5, 0.3, counties)
        log_radon = alpha[county] - 0.7 * floor + rng.normal(0.0, 0.75, houses)

        def model(county, floor, num_counties, log_radon=None):
            mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 10.0))
            sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(1.0))
            beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
            sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(1.0))
            with numpyro.plate("counties", num_counties):
                a = numpyro.sample("a", dist.Normal(mu_a, sigma_a))
            with numpyro.plate("houses", county.shape[0]):
                numpyro.sample("obs", dist.Normal(a[county] + beta * floor, sigma_y), obs=log_radon)
        return model, {"county": county, "floor": floor, "num_counties": counties, "log_radon": log_radon}
    if name == "change_point":
        years = np.arange(100, dtype=float)
        counts = rng.poisson(np.where(years < 40, 3.0, 1.0)).astype(float)

        def model(years, counts=None):
            early = numpyro.sample("early_rate", dist.Exponential(1.0))
            late = numpyro.sample("late_rate", dist.Exponential(1.0))
            switch = numpyro.sample("switch", dist.Uniform(0.0, years.shape[0]))
            rate = jnp.where(years < switch, early, late)
            with numpyro.plate("year", years.shape[0]):
                numpyro.sample("obs", dist.Poisson(rate), obs=counts)
        return model, {"years": years, "counts": counts}
    if name == "mixture":
        y = np.concatenate([rng.normal(-2.0, 1.0, 120), rng.normal(2.5, 1.0, 80)])

        def model(y=None, num_obs=200):
            weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
            locs = numpyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
            scale = numpyro.sample("scale", dist.HalfNormal(2.0))
            mix = dist.MixtureSameFamily(dist.Categorical(probs=weights), dist.Normal(locs, scale))
            with numpyro.plate("obs_plate", num_obs):
                numpyro.sample("obs", mix, obs=y)
        return model, {"y": y, "num_obs": 200}
    if name == "lkj_dirichlet":
        corr = np.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.0]])
        scales = np.array([1.0, 2.0, 0.5])
        cov = corr * np.outer(scales, scales)
        x = rng.multivariate_normal(np.array([0.5, -1.0, 2.0]), cov, 150)
        counts = rng.multinomial(300, [0.2, 0.5, 0.3]).astype(float)

        def model(x, counts):
            mu = numpyro.sample("mu", dist.Normal(0.0, 5.0).expand([3]).to_event(1))
            sd = numpyro.sample("sd", dist.HalfNormal(3.0).expand([3]).to_event(1))
            chol_corr = numpyro.sample("chol_corr", dist.LKJCholesky(3, 2.0))
            chol_cov = sd[:, None] * chol_corr
            with numpyro.plate("rows", x.shape[0]):
                numpyro.sample("x", dist.MultivariateNormal(mu, scale_tril=chol_cov), obs=x)
            probs = numpyro.sample("probs", dist.Dirichlet(jnp.ones(3)))
            numpyro.sample("counts", dist.Multinomial(total_count=int(counts.sum()), probs=probs), obs=counts)
        return model, {"x": x, "counts": counts}
    if name == "linear_regression":
        X = rng.normal(size=(100, 3))
        y = 1.0 + X @ np.array([0.5, -1.0, 2.0]) + rng.normal(0.0, 0.5, 100)

        def model(X, y=None):
            intercept = numpyro.sample("intercept", dist.Normal(0.0, 10.0))
            coef = numpyro.sample("coef", dist.Normal(0.0, 10.0).expand([X.shape[1]]).to_event(1))
            sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
            with numpyro.plate("data", X.shape[0]):
                numpyro.sample("y", dist.Normal(intercept + X @ coef, sigma), obs=y)
        return model, {"X": X, "y": y}
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def _noise_scale_marginal(beta: float, num_points: int) -> tuple:
    """``(grid, log f, A, y)`` for the ``linear_regression`` model: ``log f(sigma) = log p(sigma) + log Z(beta |
    sigma)`` on a grid of ``num_points`` in (0, 25], with the intercept and coefficients (prior ``N(0, 10^2)``)
    integrated out in closed form: ``L^beta = (2 pi sigma^2)^{n (1 - beta) / 2} beta^{-n/2} N(y; A theta,
    sigma^2 / beta)``, so ``Z(beta | sigma) = (2 pi sigma^2)^{n (1 - beta) / 2} beta^{-n/2} N(y; 0, sigma^2 /
    beta I + 100 A A^T)``."""
    import numpy as np

    _, data = user_model("linear_regression")
    y = data["y"]
    n = y.shape[0]
    A = np.column_stack([np.ones(n), data["X"]])
    eig, vecs = np.linalg.eigh(100.0 * A @ A.T)
    y2 = (vecs.T @ y) ** 2
    grid = np.linspace(1e-3, 25.0, num_points)
    var = eig[None, :] + grid[:, None] ** 2 / beta
    log_normal = -0.5 * np.sum(np.log(2 * np.pi * var) + y2[None, :] / var, axis=1)
    log_prior = 0.5 * np.log(2 / np.pi) - np.log(5.0) - 0.5 * (grid / 5.0) ** 2
    log_f = log_prior + 0.5 * n * (1 - beta) * np.log(2 * np.pi * grid**2) - 0.5 * n * np.log(beta) + log_normal
    return grid, log_f, A, y


def linear_regression_log_evidence(beta: float = 1.0) -> float:
    """Exact ``log Z(beta) = log int p(theta) L(theta)^beta dtheta`` of the ``linear_regression`` model (ours:
    no sampler involved): :func:`_noise_scale_marginal` integrated over ``sigma ~ HalfNormal(5)`` by a Riemann
    sum on 20,000 points of (0, 25] (changing the grid moves the result by < 1e-9)."""
    import numpy as np
    from scipy.special import logsumexp

    grid, log_f, _, _ = _noise_scale_marginal(beta, 20001)
    return float(logsumexp(log_f) + np.log(grid[1] - grid[0]))


def linear_regression_tempered_draws(beta: float, num_draws: int, rng) -> tuple:
    """Exact draws ``(theta [M, 4] = (intercept, coef), sigma [M])`` of the ``linear_regression`` model's
    tempered posterior ``p(theta, sigma) L^beta``: ``sigma`` by inverse CDF of :func:`_noise_scale_marginal` on
    200,000 points, then ``theta | sigma`` Gaussian (prior ``N(0, 100 I)``, likelihood ``N(y; A theta,
    sigma^2 / beta)``)."""
    import numpy as np

    grid, log_f, A, y = _noise_scale_marginal(beta, 200001)
    cdf = np.cumsum(np.exp(log_f - log_f.max()))
    sigma = np.interp(rng.uniform(size=num_draws), cdf / cdf[-1], grid)
    theta = np.empty((num_draws, A.shape[1]))
    for i, s in enumerate(sigma):
        precision = np.eye(A.shape[1]) / 100.0 + beta * A.T @ A / s**2
        chol = np.linalg.cholesky(precision)
        mean = np.linalg.solve(precision, beta * A.T @ y / s**2)
        theta[i] = mean + np.linalg.solve(chol.T, rng.normal(size=A.shape[1]))
    return theta, sigma


def invariance_study(beta=0.05, num_draws=20000, ladder=(0.0011, 0.0068, 0.0187, 0.0331, 0.0472, 0.0632, 0.0875,
                                                         0.1364, 0.2307, 0.4149, 0.8004, 1.0)):
    """Is the linear regression's low log Z the moves' fault or the increments'? (1) Each move (5 transitions,
    the particles' covariance as metric) applied to ``num_draws`` exact draws at ``beta``: the mean
    log-likelihood and log-sigma before and after (an invariant move leaves them equal within Monte Carlo
    error). (2) With 2000 exact draws at each temperature of a default run's ladder (key 7, N = 2000), the
    next increment's weights: ESS/N and ArviZ's Pareto k-hat (5 repeats)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.flatten_util import ravel_pytree

    from smcppl import TemperedSMC
    from smcppl.kernels.moves import MoveSettings, move_population, particle_preconditioner

    model, kwargs = user_model("linear_regression")
    dens = TemperedSMC(model).density(**kwargs)
    loglik = jax.jit(jax.vmap(lambda x: dens.log_parts(x, dens.data)[1]))

    def positions(theta, sigma):  # the model's flat unconstrained position of each exact draw
        return jnp.asarray(np.stack([ravel_pytree({"coef": t[1:], "intercept": t[0], "sigma": np.log(s)})[0]
                                     for t, s in zip(theta, sigma)]), jnp.float32)

    rng = np.random.default_rng(0)
    u = positions(*linear_regression_tempered_draws(beta, num_draws, rng))
    ll0 = np.asarray(loglik(u))
    pre = particle_preconditioner(u, jnp.zeros(num_draws), "full")
    se = np.sqrt(2 / num_draws)
    for kind, h in (("hmc", 0.3), ("hmc", 0.8), ("nuts", 0.5), ("mala", 0.5), ("rwm", 0.5)):
        res = move_population(jax.random.key(1), u, jnp.zeros(num_draws),
                              lambda x: (lambda p: p[0] + beta * p[1])(dens.log_parts(x, dens.data)), h,
                              MoveSettings(kind, 5, "full", None, None, 5, False, False), pre, adapt=False)
        ll1 = np.asarray(loglik(res.position))
        emit({"bench": "user_models_invariance", "beta": beta, "move": kind, "step_size": h,
              "acceptance": float(jnp.mean(res.acceptance)), "loglik_mean_change": float(ll1.mean() - ll0.mean()),
              "loglik_se": float(ll0.std() * se),
              "log_sigma_mean_change": float(np.mean(res.position[:, -1] - u[:, -1])),
              "log_sigma_se": float(np.std(u[:, -1]) * se)})
    import arviz as az  # ArviZ 0.x: psislw

    for b0, b1 in zip(ladder[:-1], ladder[1:]):
        khat, ess = [], []
        for _ in range(5):
            lw = (b1 - b0) * np.asarray(loglik(positions(*linear_regression_tempered_draws(b0, 2000, rng))), float)
            khat.append(float(az.psislw(lw.copy())[1]))
            w = np.exp(lw - lw.max())
            ess.append(float(w.sum() ** 2 / (w**2).sum() / lw.shape[0]))
        emit({"bench": "user_models_increments", "beta_from": b0, "beta_to": b1, "khat": np.round(khat, 3).tolist(),
              "ess_over_n": float(np.mean(ess))})


LOGZ_SETTINGS = ({}, {"num_mcmc_steps": 10}, {"num_mcmc_steps": 20}, {"target_ess": 0.7},
                 {"move": "rwm", "num_mcmc_steps": 20}, {"move": "imh", "num_mcmc_steps": 10})


def logz_study(sizes=(500, 2000, 8000), num_chains=8, seed=7):
    """log Z of ``linear_regression`` against :func:`linear_regression_log_evidence`, per setting and N
    (one call of ``num_chains`` chains each; the chains share one pilot), with the error accumulated up to
    each temperature of chain 0 (where the bias builds up)."""
    import warnings

    import jax
    import numpy as np

    from smcppl import SMC, TemperedSMC

    model, kwargs = user_model("linear_regression")
    exact = linear_regression_log_evidence()
    for n in sizes:
        for settings in LOGZ_SETTINGS:
            smc = SMC(TemperedSMC(model, **settings), n, num_chains=num_chains, progress_bar=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                smc.run(jax.random.key(seed), **kwargs)
            err = np.asarray(smc.log_evidence, float) - exact
            k = int(np.asarray(smc.n_stages)[0])
            betas = np.asarray(smc.trace.params["beta"], float)[0, :k]
            path = np.asarray(smc.trace.log_evidence, float)[0, :k] - [linear_regression_log_evidence(b) for b in betas]
            emit({"bench": "user_models_logz", "model": "linear_regression", "N": n, "num_chains": num_chains,
                  "settings": settings, "exact_log_evidence": exact, "error_mean": float(err.mean()),
                  "error_se": float(err.std(ddof=1) / np.sqrt(num_chains)), "error_sd": float(err.std(ddof=1)),
                  "errors": np.round(err, 4).tolist(), "health_flags": [f.check for f in smc.health.flags],
                  "run_seconds": smc.timing["run_seconds"], "chain0_betas": np.round(betas, 5).tolist(),
                  "chain0_error_path": np.round(path, 4).tolist()})


STEPS_SETTINGS = ({}, {"num_mcmc_steps": 10}, {"max_mcmc_steps": 20}, {"num_mcmc_steps": 2, "max_mcmc_steps": 20})
WASTE_FREE_SETTINGS = ({"waste_free": False}, {"waste_free": True, "num_mcmc_steps": 10},
                       {"waste_free": True, "num_mcmc_steps": 20})
NUTS_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "user_models_cpu.jsonl")


def nuts_moments(name):
    """The stored NUTS run's posterior moments of model ``name`` (``results/user_models_cpu.jsonl``), or None."""
    if not os.path.exists(NUTS_RESULTS):
        return None
    with open(NUTS_RESULTS) as f:
        for line in f:
            r = json.loads(line)
            if r.get("bench") == "user_models" and r.get("model") == name and r.get("method") == "nuts":
                return r["moments"]
    return None


def steps_study(models=MODELS, num_chains=4, seed=7, settings_list=STEPS_SETTINGS, bench="user_models_steps"):
    """Settings of the move side by side on every model (``--steps``: fixed against adaptive transitions per
    stage, ``max_mcmc_steps``; ``--waste-free``: the standard move against waste-free ones), in one process:
    log Z over ``num_chains`` chains (the linear regression: its error against the exact value), the pilot's
    transitions per stage, the largest per-coordinate correlation with the stage's start after each stage's
    move (``smc_stats.start_correlation`` of chain 0), the second call's run time, the health flags and the
    largest |posterior mean - NUTS's| in NUTS sd (the stored NUTS run; the mixture: its label-free scale)."""
    import warnings

    import jax
    import numpy as np

    from smcppl import SMC, TemperedSMC

    for name in models:
        model, kwargs = user_model(name)
        exact = linear_regression_log_evidence() if name == "linear_regression" else 0.0
        ref = nuts_moments(name)
        for settings in settings_list:
            smc = SMC(TemperedSMC(model, **settings), 2000, num_chains=num_chains, progress_bar=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                smc.run(jax.random.key(seed), **kwargs)
                smc.run(jax.random.key(seed + 1), **kwargs)  # compiled: the run time alone
            lz = np.asarray(smc.log_evidence, float) - exact
            k = int(np.asarray(smc.n_stages)[0])
            info = smc.trace.move_info
            got = moments(smc.get_samples(), smc.result.metadata["latent_sites"])
            diff = None
            if ref:
                keys = [q for q in ref if q in got and (name != "mixture" or q in LABEL_FREE)]
                diff = max(abs(got[q][0] - ref[q][0]) / max(ref[q][1], 1e-12) for q in keys)
            emit({"bench": bench, "model": name, "N": 2000, "num_chains": num_chains,
                  "settings": settings, "log_evidence" if name != "linear_regression" else "error": float(lz.mean()),
                  "se": float(lz.std(ddof=1) / np.sqrt(num_chains)), "stages": k,
                  "steps_per_stage": np.asarray(info["num_mcmc_steps"])[0, 1:k].tolist(),
                  "start_correlation": np.round(np.asarray(info["start_correlation"], float)[0, 1:k], 3).tolist(),
                  "run_seconds": smc.timing["run_seconds"], "health_flags": [f.check for f in smc.health.flags],
                  "max_mean_diff_nuts_sd": diff})


def moments(samples, latent):
    """``{site[k]: [mean, sd]}`` over every scalar of the latent sites in ``samples {site: [draw, ...]}``."""
    import numpy as np

    out = {}
    for site in latent:
        v = np.asarray(samples[site], float).reshape(np.shape(samples[site])[0], -1)
        for k in range(v.shape[1]):
            out[f"{site}[{k}]"] = [float(v[:, k].mean()), float(v[:, k].std())]
    return out


def child(name: str, method: str, launch: float):
    import warnings

    import jax
    import numpy as np
    import numpyro
    from numpyro.infer import MCMC, NUTS

    if method != "nuts":  # NUTS's process does not import smcppl (which turns JAX's persistent cache on)
        import smcppl
        from smcppl import SMC, TemperedSMC

    t_import = time.time() - launch
    model, kwargs = user_model(name)
    latent = [s for s, site in numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(**kwargs).items()
              if site["type"] == "sample" and not site["is_observed"]]
    record = {"bench": "user_models", "model": name, "method": method, "import_s": t_import}
    if method == "nuts":
        mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4, progress_bar=False)
        calls = []
        for seed in (1, 2):
            t0 = time.perf_counter()
            mcmc.run(jax.random.key(seed), **kwargs)
            samples = mcmc.get_samples()
            jax.block_until_ready(samples)
            calls.append(time.perf_counter() - t0)
        div = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
        record.update(first_call_s=calls[0], second_call_s=calls[1], divergences=div, moments=moments(samples, latent))
    else:
        smc = SMC(TemperedSMC(model), 2000, num_chains=4, progress_bar=False)
        calls, timings, flags = [], [], []
        for seed in (1, 2):
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                smc.run(jax.random.key(seed), **kwargs)
                samples = smc.get_samples()
                calls.append(time.perf_counter() - t0)
            timings.append({k: smc.timing[k] for k in ("compile_seconds", "run_seconds", "reused_compiled")})
            flags.append([f.check for f in smc.health.flags])
        record.update(first_call_s=calls[0], second_call_s=calls[1], first_timing=timings[0], second_timing=timings[1],
                      health_flags=flags, log_evidence=np.asarray(smc.log_evidence).tolist(),
                      stages=np.asarray(smc.n_stages).tolist(), moments=moments(samples, latent),
                      smcppl_file=smcppl.__file__)
    emit(record)


# the mixture's posterior is symmetric in its labels: smcppl's population holds both labellings (locs means
# near the average of the two components), NUTS's chains one each; only the scale is comparable
LABEL_FREE = ("scale[0]",)


def summarise(records):
    """One line per model: medians over rounds of each method's calls, and the largest |mean difference|
    between smcppl and NUTS in NUTS posterior sd (the mixture: its label-free scale only)."""
    import numpy as np

    out = []
    for name in dict.fromkeys(r["model"] for r in records):
        rows = {m: [r for r in records if r["model"] == name and r["method"] == m] for m in METHODS}
        line = {"bench": "user_models_summary", "model": name}
        for m, rs in rows.items():
            if rs:
                line[f"{m}_first_s"] = float(np.median([r["first_call_s"] for r in rs]))
                line[f"{m}_second_s"] = float(np.median([r["second_call_s"] for r in rs]))
        smc = rows["smcppl-cold"] + rows["smcppl-warm"]
        if smc:
            line["smcppl_compile_s_cold"] = float(np.median([r["first_timing"]["compile_seconds"] for r in rows["smcppl-cold"]])) if rows["smcppl-cold"] else None
            line["smcppl_second_run_s"] = float(np.median([r["second_timing"]["run_seconds"] for r in smc]))
            line["health_flags"] = sorted({f for r in smc for call in r["health_flags"] for f in call})
        if smc and rows["nuts"]:
            ref, got = rows["nuts"][0]["moments"], smc[0]["moments"]
            keys = [k for k in ref if k in got and (name != "mixture" or k in LABEL_FREE)]
            diffs = {k: abs(got[k][0] - ref[k][0]) / max(ref[k][1], 1e-12) for k in keys}
            worst = max(diffs, key=diffs.get)
            line["max_mean_diff_nuts_sd"], line["worst_scalar"] = diffs[worst], worst
        out.append(emit(line))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--summarise", default=None, help="summarise the JSON lines of an earlier run (a file)")
    p.add_argument("--logz", action="store_true", help="the linear regression's log Z against its exact value")
    p.add_argument("--invariance", action="store_true", help="the linear regression's moves and increments on "
                   "exact tempered draws")
    p.add_argument("--steps", action="store_true", help="fixed against adaptive transitions per stage")
    p.add_argument("--waste-free", action="store_true", help="the standard move against waste-free ones")
    p.add_argument("--sizes", default="500,2000,8000", help="particle numbers of --logz")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--method", default=None, help=argparse.SUPPRESS)
    p.add_argument("--launch-time", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child(a.child, a.method, a.launch_time)
    if a.summarise:
        with open(a.summarise) as f:
            return summarise([r for r in map(json.loads, f) if r.get("bench") == "user_models"])
    if a.invariance:
        return invariance_study()
    if a.steps:
        return steps_study(tuple(a.models.split(",")))
    if a.waste_free:
        return steps_study(tuple(a.models.split(",")), settings_list=WASTE_FREE_SETTINGS, bench="user_models_waste_free")
    if a.logz:
        return logz_study(tuple(int(x) for x in a.sizes.split(",")))
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    methods = a.methods.split(",")
    records = []
    for r in range(a.rounds):
        for name in a.models.split(","):
            folder = tempfile.mkdtemp(prefix="smcppl-user-models-")
            order = methods if r % 2 == 0 else ["nuts"] * ("nuts" in methods) + [m for m in methods if m != "nuts"]
            for method in order:
                env = dict(os.environ, PYTHONPATH=here)
                env.pop("JAX_COMPILATION_CACHE_DIR", None)
                if method == "nuts":
                    env.pop("SMCPPL_COMPILATION_CACHE", None)
                else:
                    env["SMCPPL_COMPILATION_CACHE"] = folder
                cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--method", method,
                       "--launch-time", repr(time.time())]
                proc = subprocess.run(cmd, env=env, cwd=here, capture_output=True, text=True, check=False)
                found = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith('{"bench"')]
                if proc.returncode or not found:
                    emit({"bench": "user_models_error", "model": name, "method": method,
                          "stderr_tail": proc.stderr[-2000:]})
                    continue
                records.append(emit({**found[-1], "round": r, "load_average": os.getloadavg()[0]}))
            shutil.rmtree(folder, ignore_errors=True)
    summarise(records)


if __name__ == "__main__":
    main()
