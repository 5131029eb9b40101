"""Tempered SMC benchmark: smcppl vs raw BlackJAX vs PyMC ``sample_smc`` vs ``particles``.

    pip install -e . -r benchmarks/requirements.txt
    python benchmarks/tempered.py                 # N = 1000, 4000; 3 seeds; all methods
    python benchmarks/tempered.py --quick         # N = 1000; 3 seeds
    python benchmarks/tempered.py --methods smcppl,blackjax --sizes 1000 --seeds 5
    python benchmarks/tempered.py --check-reference   # only: NUTS + large-smcppl checks of problem (c)
    python benchmarks/tempered.py --table-from out.jsonl  # the markdown table of a saved run

Problems (``--problems``):

* ``conjugate``: 20-d conjugate Gaussian (``smcppl.models.zoo.conjugate_gaussian``): exact log Z and
  posterior mean/sd.
* ``bimodal2d``: ``x ~ N(0, 5^2 I_2)`` and a likelihood factor ``0.3 N(x; (-3,-3), 0.5^2 I) +
  0.7 N(x; (4,4), 0.5^2 I)`` (defined here). Exact log Z, posterior moments and mode weights.
* ``challenger``: logistic regression on the Challenger O-ring data
  (``smcppl.models.zoo.logistic_regression``; 2 parameters). Reference log Z, posterior mean and sd by
  2-d quadrature on a fine grid (float64, independent of every sampler); ``--check-reference``
  compares them with a long NumPyro NUTS run (mean) and a large smcppl run (log Z).

Methods (``--methods``), all started from prior draws, target ESS 0.5, N particles:

* ``smcppl``: ``TemperedSMC(model, move="hmc", num_mcmc_steps=K, num_integration_steps=L)``, run through
  the same code path as ``SMC(..., num_chains=1).run`` (``make_run_one``, ``jit`` without a chain vmap), compiled once per
  (problem, N) with ``lower().compile()`` and called once per seed.
  With the default ``tuning="pilot"`` (where the installed smcppl has it) the wall time includes the
  pilot run that fixes the ladder and kernels.
* ``smcppl-weighted``: the same with ``tuning="weighted"`` (kernels and temperatures tuned inside the
  run from the weighted particles, no pilot): the same work per stage as BlackJAX, which tunes in-run.
* ``smcppl-vmap`` (not run by default): ``smcppl-weighted`` compiled as ``jit(vmap(run_one))`` over a
  single chain (what ``SMC.run`` did before it skipped the vmap for one chain), to show that cost.
* ``blackjax``: raw ``blackjax.adaptive_tempered_smc`` wrapped in ``blackjax.inner_kernel_tuning``
  (BlackJAX's recipe: the inverse mass matrix is the particle covariance, recomputed after every step),
  HMC with the same K, L, the same step-size jitter (uniform in [h/2, 3h/2] per transition) and the
  same step-size rule as smcppl (``log h += 2 (mean acceptance - 0.65)``, from the previous step's
  acceptance, which the wrapped step function passes through its info), systematic resampling, the
  same log densities and prior draws; driven by a jitted ``lax.while_loop`` until beta = 1.
* ``pymc``: ``pm.sample_smc(draws=N, chains=1)`` with its default kernel (IMH) and settings; the first
  call per (problem, N) is a warm-up (compilation) and is not counted; ``compile_s`` = first call's
  time minus the median of the timed calls.
* ``particles``: ``particles.SMC(fk=smc_samplers.AdaptiveTempering(model, len_chain=K + 1,
  wastefree=False), N=N)``: K random-walk Metropolis transitions (particles' adaptive Gaussian RW,
  scaled by the particle covariance) per particle per stage, i.e. as many MCMC transitions per stage
  as smcppl and BlackJAX make (theirs are HMC transitions of L leapfrog steps each).

Per run (one JSON line): wall time after compilation, compile time, log Z error (estimate - exact),
posterior-mean error (max over parameters of |mean - exact| / exact posterior sd; weighted final
particles where a method has weights), the mode-weight error (bimodal), and the number of tempering
stages (number of temperatures beta > 0 visited, i.e. of reweighting steps). Then a markdown table of
the per-cell means over seeds (log Z error: mean (bias) and root-mean-square).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from smcppl.inference.runner import make_run_one  # noqa: E402
from smcppl.inference.tempered import TemperedSMC  # noqa: E402
from smcppl.models import zoo  # noqa: E402

TARGET_ESS = 0.5
TARGET_ACC = 0.65  # smcppl's HMC target acceptance


def emit(record):
    print(json.dumps(record), flush=True)
    return record


# =========================================================================================== problems
BIMODAL_W = np.array([0.3, 0.7])
BIMODAL_M = np.array([[-3.0, -3.0], [4.0, 4.0]])
BIMODAL_SD = 0.5
BIMODAL_PRIOR_SD = 5.0


def bimodal2d():
    """``x ~ N(0, 5^2 I_2)``; likelihood factor ``sum_k w_k N(x; m_k, 0.5^2 I_2)``."""
    x = numpyro.sample("x", dist.Normal(0.0, BIMODAL_PRIOR_SD).expand([2]).to_event(1))
    comps = jnp.stack([jnp.log(w) + dist.Normal(jnp.asarray(m), BIMODAL_SD).log_prob(x).sum(-1)
                       for w, m in zip(BIMODAL_W, BIMODAL_M)])
    numpyro.factor("mixture_likelihood", jax.scipy.special.logsumexp(comps))


def bimodal2d_exact():
    s0, s = BIMODAL_PRIOR_SD**2, BIMODAL_SD**2
    v = s0 + s
    log_c = np.array([math.log(w) - 0.5 * (m @ m) / v - math.log(2 * math.pi * v) for w, m in zip(BIMODAL_W, BIMODAL_M)])
    log_z = float(np.logaddexp.reduce(log_c))
    pk = np.exp(log_c - log_z)  # posterior mode masses
    means = BIMODAL_M * s0 / v  # component posterior means
    var_k = s0 * s / v  # component posterior variance (isotropic)
    mean = pk @ means
    second = pk @ (means**2 + var_k)
    return {"log_evidence": log_z, "mean": {"x": mean}, "sd": {"x": np.sqrt(second - mean**2)},
            "mode_weights": pk}


def mode_weight_error(positions, log_weights, exact):
    """|estimated - exact| mass of the first mode (particles closer to m_1 than to m_2)."""
    x = np.asarray(positions, float)
    if log_weights is None:
        w = np.full(x.shape[0], 1.0 / x.shape[0])
    else:
        w = np.exp(np.asarray(log_weights, float) - np.logaddexp.reduce(np.asarray(log_weights, float)))
    d = BIMODAL_M[1] - BIMODAL_M[0]
    mid = 0.5 * (BIMODAL_M[0] + BIMODAL_M[1])
    in_first = (x - mid) @ d < 0
    return float(abs(np.sum(w * in_first) - exact["mode_weights"][0]))


def challenger_reference(grid_points=1201):
    """log Z, posterior mean and sd of the Challenger logistic regression by 2-d quadrature (float64)."""
    data = zoo.challenger_data()
    x, y = np.asarray(data["x"][:, 0], float), np.asarray(data["y"], float)

    def log_joint(b0, w):
        eta = b0[..., None] + w[..., None] * x
        ll = np.sum(y * eta - np.logaddexp(0.0, eta), axis=-1)
        lp = (-0.5 * (b0 / 5.0) ** 2 - math.log(5.0 * math.sqrt(2 * math.pi))
              - 0.5 * (w / 2.5) ** 2 - math.log(2.5 * math.sqrt(2 * math.pi)))
        return ll + lp

    # coarse grid to find the support, then a fine grid over (mode +- 12 sd-ish box)
    lo, hi = -15.0, 15.0
    for _ in range(2):
        b = np.linspace(lo, hi, 301)
        B, W = np.meshgrid(b, b, indexing="ij")
        lj = log_joint(B, W)
        keep = lj > lj.max() - 40.0
        bb, ww = B[keep], W[keep]
        box = (bb.min(), bb.max(), ww.min(), ww.max())
        pad_b, pad_w = 0.1 * (box[1] - box[0]), 0.1 * (box[3] - box[2])
        box = (box[0] - pad_b, box[1] + pad_b, box[2] - pad_w, box[3] + pad_w)
        lo, hi = min(box[0], box[2]), max(box[1], box[3])
    b = np.linspace(box[0], box[1], grid_points)
    w = np.linspace(box[2], box[3], grid_points)
    B, W = np.meshgrid(b, w, indexing="ij")
    lj = log_joint(B, W)
    m = lj.max()
    p = np.exp(lj - m)
    # Simpson weights in each direction
    def simpson(n, h):
        c = np.ones(n)
        c[1:-1:2], c[2:-1:2] = 4.0, 2.0
        return c * h / 3.0
    cb, cw = simpson(grid_points, b[1] - b[0]), simpson(grid_points, w[1] - w[0])
    wts = cb[:, None] * cw[None, :]
    z = np.sum(wts * p)
    mb, mw = np.sum(wts * p * B) / z, np.sum(wts * p * W) / z
    vb, vw = np.sum(wts * p * (B - mb) ** 2) / z, np.sum(wts * p * (W - mw) ** 2) / z
    return {"log_evidence": float(np.log(z) + m), "mean": {"intercept": np.array(mb), "w": np.array([mw])},
            "sd": {"intercept": np.array(math.sqrt(vb)), "w": np.array([math.sqrt(vw)])}}


def get_problem(name):
    """Return (numpyro model, model kwargs, exact dict with log_evidence / mean / sd (site dicts))."""
    if name == "conjugate":
        data = zoo.conjugate_gaussian_data(dim=20, num_obs=10, seed=0)
        ex = zoo.conjugate_gaussian_exact(**data)
        exact = {"log_evidence": ex["log_evidence"], "mean": {"theta": ex["mean"]}, "sd": {"theta": np.sqrt(ex["var"])}}
        return zoo.conjugate_gaussian, data, exact
    if name == "bimodal2d":
        return bimodal2d, {}, bimodal2d_exact()
    if name == "challenger":
        return zoo.logistic_regression, zoo.challenger_data(), challenger_reference()
    raise ValueError(name)


def flat(d):
    """Flatten a dict of site arrays in the order NumPyro/smcppl use for flat positions (sorted keys)."""
    return np.asarray(ravel_pytree({k: jnp.asarray(v, jnp.float32) for k, v in d.items()})[0], float)


def weighted_mean(positions, log_weights=None):
    x = np.asarray(positions, float)
    if log_weights is None:
        return x.mean(0)
    lw = np.asarray(log_weights, float)
    w = np.exp(lw - np.logaddexp.reduce(lw))
    return w @ x


def mean_error(est_flat, exact):
    return float(np.max(np.abs(np.asarray(est_flat) - flat(exact["mean"])) / flat(exact["sd"])))


# ============================================================================================ methods
class SmcpplMethod:
    """``vmap=False``: what ``SMC(..., num_chains=1).run`` compiles (``jit(run_one)``);
    ``vmap=True`` (method ``smcppl-vmap``): ``jit(vmap(run_one))`` over one chain, to show the cost of a
    chain ``vmap``."""

    name = "smcppl"

    def __init__(self, model, data, n, k, L, vmap=False, tuning=None):
        kw = {} if tuning is None else {"tuning": tuning}
        alg = TemperedSMC(model, move="hmc", num_mcmc_steps=k, num_integration_steps=L, target_ess=TARGET_ESS, **kw)
        self.plan = alg.build(n, **data)
        self.vmap = vmap
        run_one = make_run_one(self.plan, self.plan.resampling)
        fn = jax.jit(jax.vmap(run_one, in_axes=(0, None)) if vmap else run_one)
        t0 = time.perf_counter()
        self.compiled = fn.lower(self._keys(0), self.plan.data).compile()
        self.compile_s = time.perf_counter() - t0

    def _keys(self, seed):
        return jax.random.split(jax.random.key(seed), 1) if self.vmap else jax.random.key(seed)

    def run(self, seed):
        keys = self._keys(seed)
        t0 = time.perf_counter()
        out, draws, raw = self.compiled(keys, self.plan.data)[:3]
        jax.block_until_ready((out, draws, raw))
        wall = time.perf_counter() - t0
        if not self.vmap:
            out = jax.tree_util.tree_map(lambda a: a[None], out)
        pos = np.asarray(out.state.particles["position"][0])
        lw = np.asarray(out.state.log_weights[0])
        n_stages = int(out.n_stages[0])  # rows of the trace = temperatures beta > 0 visited
        return {"wall_s": wall, "log_z": float(out.log_evidence[0]), "positions": pos, "log_weights": lw,
                "stages": n_stages, "move_rounds": n_stages - 1}


class BlackJAXMethod:
    name = "blackjax"

    def __init__(self, model, data, n, k, L, max_steps=500):
        import blackjax
        from blackjax.smc import resampling
        from blackjax.smc.tuning.from_particles import particles_covariance_matrix

        dens = TemperedSMC(model).density(**data)  # the same log densities and prior draws as smcppl
        ddata = dens.data
        d = dens.dim
        h0 = 1.0 / d**0.25  # smcppl's default HMC step size (in whitened units = with M^-1 = cov)
        hmc = blackjax.mcmc.hmc.build_kernel()

        def logprior(u):
            return dens.logprior(u, ddata)

        def loglik(u):
            return dens.loglik(u, ddata)

        def step_fn(key, state, logdensity_fn, step_size, inverse_mass_matrix):
            k_h, k = jax.random.split(key)
            h = step_size * jax.random.uniform(k_h, (), minval=0.5, maxval=1.5)
            st, info = hmc(k, state, logdensity_fn, h, inverse_mass_matrix, L)
            return st, (info.acceptance_rate, step_size)

        def update_fn(key, state, info):
            acc, h = info.update_info  # [N, k] each
            factor = jnp.exp(jnp.clip(2.0 * (jnp.mean(acc) - TARGET_ACC), jnp.log(0.2), jnp.log(3.0)))
            h = jnp.mean(h) * jnp.where(jnp.isfinite(jnp.mean(acc)), factor, 1.0)
            return {"step_size": h[None], "inverse_mass_matrix": particles_covariance_matrix(state.particles)[None]}

        def run(key):
            k0, k1 = jax.random.split(key)
            x0 = dens.sample_prior(k0, n, ddata)
            params0 = {"step_size": jnp.asarray([h0]), "inverse_mass_matrix": particles_covariance_matrix(x0)[None]}
            alg = blackjax.inner_kernel_tuning(
                smc_algorithm=blackjax.adaptive_tempered_smc, logprior_fn=logprior, loglikelihood_fn=loglik,
                mcmc_step_fn=step_fn, mcmc_init_fn=blackjax.hmc.init, resampling_fn=resampling.systematic,
                mcmc_parameter_update_fn=update_fn, initial_parameter_value=params0, num_mcmc_steps=k,
                target_ess=TARGET_ESS)
            state = alg.init(x0)

            def cond(c):
                s, _, _, i = c
                return (s.sampler_state.tempering_param < 1.0) & (i < max_steps)

            def body(c):
                s, key, logz, i = c
                key, sub = jax.random.split(key)
                s, info = alg.step(sub, s)
                return s, key, logz + info.log_likelihood_increment, i + 1

            s, _, logz, i = jax.lax.while_loop(cond, body, (state, k1, jnp.zeros(()), jnp.zeros((), jnp.int32)))
            return logz, i, s.sampler_state.particles, jnp.log(s.sampler_state.weights)

        t0 = time.perf_counter()
        self.compiled = jax.jit(run).lower(jax.random.key(0)).compile()
        self.compile_s = time.perf_counter() - t0

    def run(self, seed):
        t0 = time.perf_counter()
        res = self.compiled(jax.random.key(seed))
        jax.block_until_ready(res)
        wall = time.perf_counter() - t0
        logz, steps, pos, lw = res
        return {"wall_s": wall, "log_z": float(logz), "positions": np.asarray(pos), "log_weights": np.asarray(lw),
                "stages": int(steps), "move_rounds": int(steps)}  # the first move is at beta = 0


class PyMCMethod:
    name = "pymc"

    def __init__(self, problem, data, n, k, L):
        import pymc as pm

        self.pm, self.n = pm, n
        self.model = pymc_model(problem, data)
        self.compile_s = None
        self._first = None

    def _sample(self, seed):
        pm = self.pm
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            with self.model:
                idata = pm.sample_smc(draws=self.n, chains=1, cores=1, random_seed=seed, progressbar=False,
                                      compute_convergence_checks=False, return_inferencedata=True)
            wall = time.perf_counter() - t0
        return idata, wall

    def warmup(self):
        _, self._first = self._sample(10_000)

    def run(self, seed):
        idata, wall = self._sample(seed)
        post = idata.posterior
        names = sorted(post.data_vars)
        cols = [np.asarray(post[v].values[0]).reshape(self.n, -1) for v in names]
        pos = np.concatenate(cols, axis=1)
        lml = np.asarray(idata.sample_stats["log_marginal_likelihood"].values).ravel()
        lml = np.array([np.asarray(v, float).ravel()[-1] if np.ndim(v) else float(v) for v in lml]) \
            if lml.dtype == object else lml
        lml = lml[np.isfinite(lml)]
        stats = idata.sample_stats
        betas = np.asarray(stats["beta"].values).ravel() if "beta" in stats else None
        stages = int(stats.attrs.get("_n_tune", 0)) if betas is None else None
        if betas is not None:
            if betas.dtype == object:
                betas = np.asarray(betas[0], float).ravel()
            stages = int(np.sum(betas > 0))
        return {"wall_s": wall, "log_z": float(lml[-1]), "positions": pos, "log_weights": None,
                "stages": stages, "move_rounds": stages}


def pymc_model(problem, data):
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model() as m:
        if problem == "conjugate":
            theta = pm.Normal("theta", 0.0, 1.0, shape=data["dim"])
            pm.Normal("y", theta, 1.0, observed=data["y"])
        elif problem == "bimodal2d":
            x = pm.Normal("x", 0.0, BIMODAL_PRIOR_SD, shape=2)
            comps = [math.log(w) + pm.logp(pm.Normal.dist(mu, BIMODAL_SD, shape=2), x).sum()
                     for w, mu in zip(BIMODAL_W, BIMODAL_M)]
            pm.Potential("mixture_likelihood", pm.math.logsumexp(pt.stack(comps)))
        elif problem == "challenger":
            b0 = pm.Normal("intercept", 0.0, 5.0)
            w = pm.Normal("w", 0.0, 2.5, shape=1)
            pm.Bernoulli("y", logit_p=b0 + pt.dot(np.asarray(data["x"]), w), observed=np.asarray(data["y"]))
    return m


class ParticlesMethod:
    name = "particles"

    def __init__(self, problem, data, n, k, L):
        import particles
        from particles import smc_samplers as ssp

        self.particles, self.ssp, self.n, self.k = particles, ssp, n, k
        self.model = particles_model(problem, data)
        self.compile_s = 0.0
        self.fields = sorted(self.model.prior.laws.keys())

    def run(self, seed):
        particles, ssp = self.particles, self.ssp
        np.random.seed(seed)
        # len_chain counts the starting point: len_chain = K + 1 gives K MCMC transitions per particle
        fk = ssp.AdaptiveTempering(model=self.model, len_chain=self.k + 1, wastefree=False, ESSrmin=TARGET_ESS)
        alg = particles.SMC(fk=fk, N=self.n, verbose=False, store_history=False, collect=[])
        t0 = time.perf_counter()
        alg.run()
        wall = time.perf_counter() - t0
        th = alg.X.theta
        pos = np.concatenate([np.asarray(th[f], float).reshape(self.n, -1) for f in self.fields], axis=1)
        stages = int(alg.t)  # number of tempering steps (iterations of the sampler)
        return {"wall_s": wall, "log_z": float(alg.logLt), "positions": pos, "log_weights": np.asarray(alg.wgts.lw),
                "stages": stages, "move_rounds": max(stages - 1, 0)}


def particles_model(problem, data):
    from particles import distributions as dists
    from particles import smc_samplers as ssp
    from scipy import stats

    if problem == "conjugate":
        y = np.asarray(data["y"], float)
        dim = y.shape[1]
        prior = dists.StructDist({"theta": dists.MvNormal(loc=np.zeros(dim), cov=np.eye(dim))})

        class Conj(ssp.StaticModel):
            def logpyt(self, theta, t):
                return stats.norm.logpdf(self.data[t][None, :] - theta["theta"]).sum(axis=1)

        return Conj(data=y, prior=prior)
    if problem == "bimodal2d":
        prior = dists.StructDist({"x": dists.MvNormal(loc=np.zeros(2), cov=BIMODAL_PRIOR_SD**2 * np.eye(2))})

        class Bimodal(ssp.StaticModel):
            def logpyt(self, theta, t):
                x = theta["x"]
                comps = [math.log(w) + stats.norm.logpdf(x, m, BIMODAL_SD).sum(axis=1) for w, m in zip(BIMODAL_W, BIMODAL_M)]
                return np.logaddexp(comps[0], comps[1])

        return Bimodal(data=np.zeros((1, 1)), prior=prior)  # one pseudo-datum: the factor
    if problem == "challenger":
        x, y = np.asarray(data["x"][:, 0], float), np.asarray(data["y"], float)
        prior = dists.StructDist({"intercept": dists.Normal(0.0, 5.0), "w": dists.Normal(0.0, 2.5)})

        class Logit(ssp.StaticModel):
            def logpyt(self, theta, t):
                eta = theta["intercept"] + theta["w"] * self.data[t, 0]
                return self.data[t, 1] * eta - np.logaddexp(0.0, eta)

        return Logit(data=np.stack([x, y], axis=1), prior=prior)
    raise ValueError(problem)


# ============================================================================================ driver
def summarise(rows):
    cells = {}
    for r in rows:
        cells.setdefault((r["problem"], r["N"], r["method"]), []).append(r)
    lines = ["| problem | N | method | wall (s) | compile (s) | log Z err mean ± se | log Z RMSE | mean err (sd) | "
             "mode-w err | stages | time/stage (ms) | wall / smcppl |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    walls = {key: statistics.mean(x["wall_s"] for x in rs) for key, rs in cells.items()}
    for (problem, n, method), rs in cells.items():
        wall = walls[(problem, n, method)]
        comp = rs[0]["compile_s"]
        errs = [x["log_z_err"] for x in rs]
        bias, rmse = statistics.mean(errs), math.sqrt(statistics.mean(e * e for e in errs))
        se = statistics.stdev(errs) / math.sqrt(len(errs)) if len(errs) > 1 else float("nan")
        merr = statistics.mean(x["mean_err_sd"] for x in rs)
        mw = [x["mode_weight_err"] for x in rs if x.get("mode_weight_err") is not None]
        stages = statistics.mean(x["stages"] for x in rs)
        per_stage = statistics.mean(1e3 * x["wall_s"] / max(x["move_rounds"], 1) for x in rs)
        ref = walls.get((problem, n, "smcppl"))
        ratio = f"{wall / ref:.2f}" if ref else "-"
        lines.append(f"| {problem} | {n} | {method} | {wall:.3f} | {comp if comp is None else round(comp, 2)} | "
                     f"{bias:+.3f} ± {se:.3f} | {rmse:.3f} | {merr:.3f} | {statistics.mean(mw) if mw else float('nan'):.3f} | "
                     f"{stages:.1f} | {per_stage:.1f} | {ratio} |")
    return "\n".join(lines).replace("| nan |", "| - |")


def smcppl_tree():
    """Commit of the smcppl checkout plus a hash of its uncommitted changes (read-only git)."""
    import hashlib
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", "smcppl"], cwd=root, capture_output=True, timeout=10).stdout
        return head + ("" if not diff else "+dirty:" + hashlib.sha1(diff).hexdigest()[:8])
    except Exception:  # noqa: BLE001
        return "unknown"


def check_reference(k, L):
    """Problem (c): quadrature vs a long NumPyro NUTS run (mean, sd) and a large smcppl run (log Z)."""
    from numpyro.infer import MCMC, NUTS

    model, data, exact = get_problem("challenger")
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(model), num_warmup=2000, num_samples=50_000, num_chains=1, progress_bar=False)
    mcmc.run(jax.random.key(123), **data)
    s = mcmc.get_samples()
    nuts_mean = flat({"intercept": s["intercept"].mean(0), "w": s["w"].mean(0)})
    emit({"bench": "reference", "problem": "challenger", "what": "nuts_vs_quadrature", "num_samples": 50_000,
          "nuts_mean": nuts_mean.tolist(), "quadrature_mean": flat(exact["mean"]).tolist(),
          "quadrature_sd": flat(exact["sd"]).tolist(), "max_abs_diff_in_sd": mean_error(nuts_mean, exact),
          "seconds": time.perf_counter() - t0})
    from smcppl import SMC
    smc = SMC(TemperedSMC(model, move="hmc", num_mcmc_steps=2 * k, num_integration_steps=L), num_particles=20_000,
              num_chains=4)
    smc.run(jax.random.key(321), **data)
    lz = np.asarray(smc.log_evidence, float)
    emit({"bench": "reference", "problem": "challenger", "what": "large_smcppl_vs_quadrature", "N": 20_000,
          "chains": 4, "log_z_chains": lz.tolist(), "log_z_mean": float(lz.mean()),
          "log_z_se": float(lz.std(ddof=1) / math.sqrt(len(lz))), "quadrature_log_z": exact["log_evidence"],
          "timing": smc.timing})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 1000 only")
    p.add_argument("--sizes", default=None, help="comma-separated N (default 1000,4000; --quick: 1000)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--problems", default="conjugate,bimodal2d,challenger")
    p.add_argument("--methods", default="smcppl,smcppl-weighted,blackjax,pymc,particles",
                   help="smcppl (defaults, as SMC.run compiles it), smcppl-weighted (tuning='weighted': in-run "
                        "tuning, the same work as BlackJAX), smcppl-vmap (weighted, with a chain vmap over 1 chain), "
                        "blackjax, pymc, particles")
    p.add_argument("--num-mcmc-steps", type=int, default=5)
    p.add_argument("--num-integration-steps", type=int, default=10)
    p.add_argument("--check-reference", action="store_true")
    p.add_argument("--table-from", default=None, help="only print the markdown table of a saved JSON-lines output")
    a = p.parse_args(argv)
    if a.table_from:
        with open(a.table_from) as f:
            rows = [json.loads(x) for x in f if x.startswith("{")]
        print(summarise([r for r in rows if r.get("bench") == "tempered"]))
        return
    sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else ([1000] if a.quick else [1000, 4000])
    methods = a.methods.split(",")
    k, L = a.num_mcmc_steps, a.num_integration_steps
    versions = {"python": platform.python_version(), "jax": jax.__version__, "numpyro": numpyro.__version__}
    for mod in ("blackjax", "pymc", "particles"):
        if mod in methods:
            try:
                versions[mod] = __import__(mod).__version__
            except Exception as e:  # noqa: BLE001
                emit({"bench": "skip", "method": mod, "reason": f"{type(e).__name__}: {e}"})
                methods.remove(mod)
    versions["smcppl_tree"] = smcppl_tree()
    emit({"bench": "env", **versions, "cpu_count": os.cpu_count(), "argv": sys.argv[1:], "num_mcmc_steps": k,
          "num_integration_steps": L, "target_ess": TARGET_ESS})
    if a.check_reference:
        check_reference(k, L)
        return
    rows = []
    for problem in a.problems.split(","):
        model, data, exact = get_problem(problem)
        emit({"bench": "problem", "problem": problem, "log_evidence": exact["log_evidence"],
              "mean": flat(exact["mean"]).tolist(), "sd": flat(exact["sd"]).tolist()})
        for n in sizes:
            runners = {}
            for m in methods:
                if m == "smcppl":
                    runners[m] = SmcpplMethod(model, data, n, k, L)
                elif m == "smcppl-weighted":
                    runners[m] = SmcpplMethod(model, data, n, k, L, tuning="weighted")
                elif m == "smcppl-vmap":
                    runners[m] = SmcpplMethod(model, data, n, k, L, vmap=True, tuning="weighted")
                elif m == "blackjax":
                    runners[m] = BlackJAXMethod(model, data, n, k, L)
                elif m == "pymc":
                    runners[m] = PyMCMethod(problem, data, n, k, L)
                elif m == "particles":
                    runners[m] = ParticlesMethod(problem, data, n, k, L)
            cell = {m: [] for m in runners}
            for seed in range(a.seeds):
                order = list(runners) if seed % 2 == 0 else list(runners)[::-1]  # alternate the order
                for m in order:
                    r = runners[m]
                    if m == "pymc" and r._first is None:
                        r.warmup()
                    res = r.run(seed)
                    est = weighted_mean(res["positions"], res["log_weights"])
                    row = {"bench": "tempered", "problem": problem, "N": n, "method": m, "seed": seed,
                           "wall_s": res["wall_s"], "compile_s": r.compile_s, "log_z": res["log_z"],
                           "log_z_err": res["log_z"] - exact["log_evidence"], "mean_err_sd": mean_error(est, exact),
                           "stages": res["stages"], "move_rounds": res["move_rounds"],
                           "num_mcmc_steps": k, "num_integration_steps": L if m.startswith("smcppl") or m == "blackjax" else None}
                    if problem == "bimodal2d":
                        row["mode_weight_err"] = mode_weight_error(res["positions"], res["log_weights"], exact)
                    cell[m].append(row)
            if "pymc" in runners:  # compile estimate: first call minus the median timed call
                r = runners["pymc"]
                med = statistics.median(x["wall_s"] for x in cell["pymc"])
                for x in cell["pymc"]:
                    x["compile_s"] = max(r._first - med, 0.0)
                    x["first_call_s"] = r._first
            for m in runners:
                for x in cell[m]:
                    rows.append(emit(x))
    print()
    print(summarise(rows))


if __name__ == "__main__":
    main()
