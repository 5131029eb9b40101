"""Tempered SMC benchmark, what a user feels: smcppl vs NumPyro NUTS, BlackJAX, PyMC and particles.

Peers: NumPyro NUTS, raw BlackJAX tempered SMC, PyMC ``sample_smc`` and ``particles``.

    pip install -e . -r benchmarks/requirements.txt
    python benchmarks/tempered.py                 # N = 1000, 4000; 3 seeds; all problems, both tables
    python benchmarks/tempered.py --quick         # N = 1000; 3 seeds
    python benchmarks/tempered.py --problems breast_cancer,challenger --sizes 1000 \
        --methods smcppl,blackjax,nuts --fresh-methods smcppl,nuts
    python benchmarks/tempered.py --tables fresh   # only the fresh-process table
    python benchmarks/tempered.py --check-reference          # only: NUTS + large-smcppl checks of Challenger
    python benchmarks/tempered.py --breast-cancer-reference  # only: recompute the breast-cancer reference
    python benchmarks/tempered.py --table-from out.jsonl     # the markdown tables of a saved run
    python benchmarks/tempered.py --overhead --problems bimodal2d,challenger   # where an smcppl call's time goes

Problems (``--problems``):

* ``conjugate``: 20-d conjugate Gaussian (``smcppl.models.zoo.conjugate_gaussian``): exact log Z and
  posterior mean/sd.
* ``bimodal2d``: ``x ~ N(0, 5^2 I_2)`` and a likelihood factor ``0.3 N(x; (-3,-3), 0.5^2 I) +
  0.7 N(x; (4,4), 0.5^2 I)`` (defined here). Exact log Z, posterior moments and mode weights.
* ``challenger``: logistic regression on the Challenger O-ring data
  (``smcppl.models.zoo.logistic_regression``; 2 parameters). Reference log Z, posterior mean and sd by
  2-d quadrature on a fine grid (float64, independent of every sampler); ``--check-reference``
  compares them with a long NumPyro NUTS run (mean) and a large smcppl run (log Z).
* ``breast_cancer``: 31-parameter logistic regression on the breast-cancer Wisconsin diagnostic data
  (569 tumours, 30 features standardised, ``benchmarks/data/``; Wolberg, Street and Mangasarian, UCI,
  CC BY 4.0). Prior: ``intercept ~ N(0, 1)``, ``w_k ~ N(0, 1)`` on the standardised features. Reference
  (``benchmarks/data/breast_cancer_reference.json``, ``--breast-cancer-reference``): log Z by importance
  sampling (1,000,000 draws, float64 NumPy log density) from a multivariate t (5 degrees of freedom)
  fitted to a long NUTS run, with its standard error, checked against a second proposal at the Laplace
  approximation; posterior mean and sd from that long NumPyro NUTS run (2 chains x 10,000 draws,
  float64). No smcppl run enters the reference.

Methods (SMC methods: all started from prior draws, target ESS 0.5, N particles, one chain):

* ``smcppl``: the public front end, as a user calls it: ``SMC(TemperedSMC(model, move="hmc",
  num_mcmc_steps=K, num_integration_steps=L), N, num_chains=1).run(key, **data)``, default
  ``tuning="pilot"``: the runner runs a pilot chain, then the chain, with one compiled program. Wall time =
  the whole ``run`` call (plan, compilation or reuse, pilot, chain, final draws, health checks);
  ``run_s``/``pilot_s``/``compile_s``/``reused_compiled`` are the runner's own ``smc.timing``.
* ``smcppl-weighted``: the same with ``tuning="weighted"`` (kernels and temperatures tuned inside the
  run from the weighted particles, no pilot): the same work per stage as BlackJAX, which tunes in-run.
* ``smcppl-default`` (not run by default): ``TemperedSMC(model)`` with every default, what a user gets
  (since issue 13: waste-free HMC chains of 10 states, 5 leapfrog steps, target ESS 0.5, pilot tuning).
* ``smcppl-vmap`` (not run by default): ``smcppl-weighted`` with ``chain_method="vectorized"`` (a
  ``vmap`` over the one chain), to show that cost.
* ``smcppl-rwm`` / ``smcppl-imh`` (not run by default): ``smcppl`` with ``move="rwm"`` / ``"imh"`` and the
  same K transitions per stage (a random-walk transition costs one likelihood evaluation, an HMC one L
  gradients); ``smcppl-rwm-weighted``: ``move="rwm"`` with ``tuning="weighted"``, particles' recipe
  (K random-walk transitions scaled by the particle covariance, tuned inside the run, no pilot): the
  like-for-like comparison with ``particles``.
* ``blackjax``: raw ``blackjax.adaptive_tempered_smc`` wrapped in ``blackjax.inner_kernel_tuning``
  (BlackJAX's recipe: the inverse mass matrix is the particle covariance, recomputed after every step),
  HMC with the same K, L, the same step-size jitter (uniform in [h/2, 3h/2] per transition) and the
  same step-size rule as smcppl (``log h += 2 (mean acceptance - 0.65)``, from the previous step's
  acceptance, which the wrapped step function passes through its info), systematic resampling, the
  same log densities and prior draws; driven by a jitted ``lax.while_loop`` until beta = 1.
* ``nuts``: NumPyro ``MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=1,
  progress_bar=False).run(key, **data)`` (``--nuts-warmup``/``--nuts-samples``), the wall-time reference
  a NumPyro user compares with: the whole call, and the posterior-mean error of its draws (no log Z).
* ``pymc``: ``pm.sample_smc(draws=N, chains=1)`` with its default kernel (IMH) and settings.
* ``particles``: ``particles.SMC(fk=smc_samplers.AdaptiveTempering(model, len_chain=K + 1,
  wastefree=False), N=N)``: K random-walk Metropolis transitions (particles' adaptive Gaussian RW,
  scaled by the particle covariance) per particle per stage, i.e. as many MCMC transitions per stage
  as smcppl and BlackJAX make (theirs are HMC transitions of L leapfrog steps each).

Two comparisons (``--tables``):

* ``in-process`` (``--methods``; one JSON line per run, ``"bench": "tempered"``): all methods in this
  process, per (problem, N) one first call (compilation; not counted), then one call per seed, the order
  of the methods alternating between seeds. Without the persistent compilation cache
  (``SMCPPL_COMPILATION_CACHE=off`` unless set). Per run: wall time of the call, smcppl's run-only time,
  the first call's time and compile time (NUTS, PyMC: first call minus the median later call), log Z
  error (estimate - reference), posterior-mean error (max over parameters of |mean - reference| /
  reference posterior sd; weighted final particles where a method has weights), the mode-weight error
  (bimodal), and the number of tempering stages. Table: per-cell means over seeds (log Z error: mean
  (bias) ± standard error, and root-mean-square), wall time relative to smcppl and to NUTS.
* ``fresh`` (``--fresh-methods``; ``"bench": "fresh"``): time to first result in a fresh Python process
  per (method, problem, N, seed): this script with ``--child``, timed from just before the parent starts
  it to the first result (interpreter start, imports, build, trace, compile, run), less the loading of
  the data set and its reference; then a second call with a new key in the same process. smcppl runs
  twice: with its persistent compilation cache empty (``SMCPPL_COMPILATION_CACHE`` = a new folder),
  then again with the cache that run filled; PyMC likewise with an empty PyTensor compile folder
  (``base_compiledir``: the C code PyTensor compiles and keeps on disk), then the filled one; the other
  methods run without JAX's persistent cache (JAX's default). Table: means over seeds, and one line per
  problem: smcppl's first call (cold, warm cache), second call and run-only time against NUTS's first and
  second whole calls, with ratios.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree

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
    from smcppl.models import zoo

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


# --------------------------------------------------------------------------------------- breast cancer
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
BREAST_CANCER_CSV = os.path.join(DATA_DIR, "breast_cancer_wisconsin.csv")
BREAST_CANCER_REFERENCE = os.path.join(DATA_DIR, "breast_cancer_reference.json")
BC_PRIOR_SD = 1.0  # Normal(0, 1) on the intercept and on every coefficient of a standardised feature
T_NU = 5  # degrees of freedom of the multivariate-t importance proposals of the reference


def breast_cancer_data():
    """Breast-cancer Wisconsin diagnostic data (569 tumours): ``x`` = the 30 features standardised
    (mean 0, sd 1 over the 569 rows), ``y`` = 1 for malignant, 0 for benign (212 / 357)."""
    raw = np.loadtxt(BREAST_CANCER_CSV, delimiter=",", skiprows=1)
    x = raw[:, 1:]
    return {"x": (x - x.mean(0)) / x.std(0), "y": raw[:, 0].astype(np.int32)}


def breast_cancer_logistic(x, y=None):
    """31-parameter logistic regression: ``intercept ~ N(0, 1)``, ``w_k ~ N(0, 1)`` (k = 1..30, on
    standardised features), ``y_i ~ Bernoulli(logit^-1(intercept + x_i . w))``."""
    n, k = x.shape
    b0 = numpyro.sample("intercept", dist.Normal(0.0, BC_PRIOR_SD))
    with numpyro.plate("feature", k):
        w = numpyro.sample("w", dist.Normal(0.0, BC_PRIOR_SD))
    with numpyro.plate("obs", n):
        numpyro.sample("y", dist.Bernoulli(logits=b0 + x @ w), obs=y)


def breast_cancer_reference():
    """The stored reference (``benchmarks/data/breast_cancer_reference.json``, made by
    ``--breast-cancer-reference``): log Z by importance sampling, posterior mean and sd by NUTS."""
    if not os.path.exists(BREAST_CANCER_REFERENCE):
        raise FileNotFoundError(f"{BREAST_CANCER_REFERENCE} is missing: run `python benchmarks/tempered.py "
                                "--breast-cancer-reference` once to compute it.")
    with open(BREAST_CANCER_REFERENCE) as f:
        ref = json.load(f)
    return {"log_evidence": ref["log_evidence"],
            "mean": {"intercept": np.array(ref["mean"][0]), "w": np.array(ref["mean"][1:])},
            "sd": {"intercept": np.array(ref["sd"][0]), "w": np.array(ref["sd"][1:])}}


def _bc_log_joint(theta, X, y):
    """log p(y, theta) in float64 NumPy (independent of NumPyro): theta [B, 31], X [n, 31] with a
    column of ones first (the intercept), the Normal(0, 1) prior on all 31 coefficients."""
    eta = theta @ X.T
    ll = np.sum(y * eta - np.logaddexp(0.0, eta), axis=1)
    d = theta.shape[1]
    return ll - 0.5 * np.sum((theta / BC_PRIOR_SD) ** 2, axis=1) - d * math.log(BC_PRIOR_SD * math.sqrt(2 * math.pi))


def _importance_sampling(X, y, loc, scale, num_draws, rng, batch=20_000):
    """log Z by importance sampling from a multivariate t (``T_NU`` degrees of freedom, location ``loc``,
    scale matrix ``scale``): ``Z_hat = mean_i p(y, theta_i) / q(theta_i)``; its standard error on the
    log scale is ``sd(w) / (sqrt(M) mean(w))`` (delta method). Also the self-normalised posterior mean."""
    from scipy.special import gammaln

    d = loc.shape[0]
    chol = np.linalg.cholesky(scale)
    log_det = 2.0 * np.sum(np.log(np.diag(chol)))
    log_norm = (gammaln((T_NU + d) / 2) - gammaln(T_NU / 2) - 0.5 * d * math.log(T_NU * math.pi) - 0.5 * log_det)
    lws, num, ref = [], np.zeros(d), None
    for start in range(0, num_draws, batch):
        b = min(batch, num_draws - start)
        z = rng.standard_normal((b, d))
        g = rng.chisquare(T_NU, b) / T_NU
        theta = loc + (z @ chol.T) / np.sqrt(g)[:, None]
        delta = np.sum(z * z, axis=1) / g  # squared Mahalanobis distance of theta under the scale matrix
        lw = _bc_log_joint(theta, X, y) - (log_norm - 0.5 * (T_NU + d) * np.log1p(delta / T_NU))
        lws.append(lw)
        new_ref = lw.max() if ref is None else max(ref, lw.max())  # running max: sum of w * theta
        num = (0.0 if ref is None else num * math.exp(ref - new_ref)) + np.exp(lw - new_ref) @ theta
        ref = new_ref
    lw = np.concatenate(lws)
    w = np.exp(lw - ref)
    return {"log_z": float(math.log(w.mean()) + ref), "se": float(w.std() / (math.sqrt(lw.size) * w.mean())),
            "ess": float(w.sum() ** 2 / np.sum(w * w)), "max_weight_share": float(w.max() / w.sum()),
            "num_draws": int(lw.size), "mean": (num / w.sum()).tolist()}


def compute_breast_cancer_reference(num_draws=1_000_000, nuts_chains=2, nuts_samples=10_000, nuts_warmup=1000,
                                    seed=0):
    """The breast-cancer reference, by methods independent of every benchmarked sampler run (float64):

    * posterior mean and sd: NumPyro NUTS, ``nuts_chains`` chains x ``nuts_samples`` draws after
      ``nuts_warmup`` warm-up steps each; Monte Carlo standard error of each mean ``sd / sqrt(ESS)``.
    * log Z: importance sampling (``num_draws`` draws, a float64 NumPy log density written here) from a
      multivariate t with ``T_NU`` degrees of freedom fitted to the NUTS draws (their mean and
      covariance as location and scale matrix). The estimate is unbiased for Z whatever the proposal; the
      proposal only sets its variance. Checked with a second proposal that involves no sampler: the t at
      the posterior mode with the Laplace covariance ``(-Hessian)^-1`` (Newton's method)."""
    from numpyro.diagnostics import effective_sample_size
    from numpyro.infer import MCMC, NUTS

    jax.config.update("jax_enable_x64", True)
    t0 = time.perf_counter()
    data = breast_cancer_data()
    X = np.column_stack([np.ones(len(data["y"])), data["x"]])
    y = data["y"].astype(float)
    d = X.shape[1]
    theta = np.zeros(d)  # Newton's method: the log density is strictly concave
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(X @ theta)))
        grad = X.T @ (y - p) - theta / BC_PRIOR_SD**2
        neg_hess = (X * (p * (1 - p))[:, None]).T @ X + np.eye(d) / BC_PRIOR_SD**2
        step = np.linalg.solve(neg_hess, grad)
        theta = theta + step
        if np.max(np.abs(step)) < 1e-12:
            break
    laplace_cov = np.linalg.inv(neg_hess)
    t1 = time.perf_counter()
    mcmc = MCMC(NUTS(breast_cancer_logistic), num_warmup=nuts_warmup, num_samples=nuts_samples, num_chains=nuts_chains,
                chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.key(seed), **data)
    s = mcmc.get_samples(group_by_chain=True)
    draws = np.concatenate([np.asarray(s["intercept"], float)[..., None], np.asarray(s["w"], float)], axis=-1)
    flat_draws = draws.reshape(-1, d)
    mean, sd = flat_draws.mean(0), flat_draws.std(0, ddof=1)
    ess = np.asarray(effective_sample_size(draws), float)
    divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    t2 = time.perf_counter()
    rng = np.random.default_rng(seed)
    is_laplace = _importance_sampling(X, y, theta, laplace_cov, num_draws, rng)
    is_nuts = _importance_sampling(X, y, mean, np.cov(flat_draws, rowvar=False), num_draws, rng)
    t3 = time.perf_counter()
    ref = {"problem": "breast_cancer", "log_evidence": is_nuts["log_z"], "log_evidence_se": is_nuts["se"],
           "mean": mean.tolist(), "sd": sd.tolist(),
           "mean_mcse_in_sd_max": float(np.max(1.0 / np.sqrt(ess))), "nuts_ess_min": float(ess.min()),
           "how": {"log_evidence": f"importance sampling, {num_draws} draws from a multivariate t (nu = {T_NU}) with "
                                   "the NUTS draws' mean and covariance, float64 NumPy log density",
                   "mean_sd": f"NumPyro NUTS, {nuts_chains} chains x {nuts_samples} draws after {nuts_warmup} "
                              "warm-up each, float64"},
           "order": "intercept, w[0..29] (features in CSV column order)",
           "mode": theta.tolist(), "importance_laplace_t": is_laplace, "importance_nuts_t": is_nuts,
           "is_mean_vs_nuts_in_sd_max": [float(np.max(np.abs(np.array(r["mean"]) - mean) / sd))
                                         for r in (is_laplace, is_nuts)],
           "nuts_divergences": divergences, "seed": seed,
           "seconds": {"laplace": t1 - t0, "nuts": t2 - t1, "importance": t3 - t2},
           "versions": {"jax": jax.__version__, "numpyro": numpyro.__version__, "numpy": np.__version__}}
    with open(BREAST_CANCER_REFERENCE, "w") as f:
        json.dump(ref, f, indent=1)
    return ref


def get_problem(name):
    """Return (numpyro model, model kwargs, exact dict with log_evidence / mean / sd (site dicts))."""
    if name == "breast_cancer":  # defined here: loading it imports no smcppl (the NUTS child process)
        return breast_cancer_logistic, breast_cancer_data(), breast_cancer_reference()
    if name == "bimodal2d":
        return bimodal2d, {}, bimodal2d_exact()
    from smcppl.models import zoo

    if name == "conjugate":
        data = zoo.conjugate_gaussian_data(dim=20, num_obs=10, seed=0)
        ex = zoo.conjugate_gaussian_exact(**data)
        exact = {"log_evidence": ex["log_evidence"], "mean": {"theta": ex["mean"]}, "sd": {"theta": np.sqrt(ex["var"])}}
        return zoo.conjugate_gaussian, data, exact
    if name == "challenger":
        return zoo.logistic_regression, zoo.challenger_data(), challenger_reference()
    raise ValueError(f"unknown problem {name!r}: use one of {PROBLEMS}.")


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
# Every method: ``first(seed)`` = the first call (compiles where the method compiles), ``run(seed)`` = a
# later call with a new key. Both return the wall time of the whole call (``wall_s``), the estimates, and
# what the method reports about itself (smcppl: its ``timing``; BlackJAX: compile time).
WARMUP_SEED = 10_000  # the in-process first call (compilation), not counted as a seed
SECOND_CALL_SEED = 1_000  # fresh-process runs: the second call uses seed + SECOND_CALL_SEED
LOGISTIC_PRIOR_SD = {"challenger": (5.0, 2.5), "breast_cancer": (BC_PRIOR_SD, BC_PRIOR_SD)}  # (intercept, w)


class SmcpplMethod:
    """smcppl through its public front end, as a user runs it: ``SMC(TemperedSMC(model, move="hmc",
    num_mcmc_steps=K, num_integration_steps=L, target_ess=0.5[, tuning]), N, num_chains=1[,
    chain_method]).run(key, **data)``. The first call builds the plan, compiles (or loads the program from
    JAX's persistent compilation cache) and runs; later calls with new keys reuse the compiled program
    (``smc.timing["reused_compiled"] == 1``). The wall time is the whole ``run`` call: plan, compilation,
    pilot (default ``tuning="pilot"``), the chain, final draws and health checks."""

    def __init__(self, model, data, n, k, L, tuning=None, chain_method=None, move="hmc", defaults=False):
        from smcppl import SMC, TemperedSMC

        kw = {} if tuning is None else {"tuning": tuning}
        alg = TemperedSMC(model) if defaults else TemperedSMC(model, move=move, num_mcmc_steps=k,
                                                               num_integration_steps=L, target_ess=TARGET_ESS, **kw)
        self.smc = SMC(alg, num_particles=n, num_chains=1, chain_method=chain_method)
        self.data = data

    def run(self, seed):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # health warnings: their flags are recorded instead
            t0 = time.perf_counter()
            self.smc.run(jax.random.key(seed), **self.data)
            wall = time.perf_counter() - t0
        out, timing, health = self.smc.output, self.smc.timing, self.smc.health
        n_stages = int(out.n_stages[0])  # rows of the trace = temperatures beta > 0 visited
        return {"wall_s": wall, "compile_s": timing["compile_seconds"], "run_s": timing["run_seconds"],
                "pilot_s": timing["pilot_seconds"], "reused_compiled": timing["reused_compiled"],
                "log_z": float(out.log_evidence[0]), "positions": np.asarray(out.state.particles["position"][0]),
                "log_weights": np.asarray(out.state.log_weights[0]), "stages": n_stages, "move_rounds": n_stages - 1,
                "health_flags": None if health is None else [f.check for f in health.flags]}

    first = run


class BlackJAXMethod:
    def __init__(self, model, data, n, k, L, max_steps=500):
        import blackjax
        from blackjax.smc import resampling
        from blackjax.smc.tuning.from_particles import particles_covariance_matrix

        from smcppl.inference.tempered.model import TemperedSMC

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

        self._fn, self.compiled = run, None

    def first(self, seed):
        t0 = time.perf_counter()
        self.compiled = jax.jit(self._fn).lower(jax.random.key(0)).compile()
        compile_s = time.perf_counter() - t0
        res = self.run(seed)
        return {**res, "wall_s": compile_s + res["wall_s"], "compile_s": compile_s}

    def run(self, seed):
        t0 = time.perf_counter()
        res = self.compiled(jax.random.key(seed))
        jax.block_until_ready(res)
        wall = time.perf_counter() - t0
        logz, steps, pos, lw = res
        return {"wall_s": wall, "log_z": float(logz), "positions": np.asarray(pos), "log_weights": np.asarray(lw),
                "stages": int(steps), "move_rounds": int(steps)}  # the first move is at beta = 0


class NutsMethod:
    """NumPyro NUTS as a user runs it: ``MCMC(NUTS(model), num_warmup=W, num_samples=S, num_chains=1,
    progress_bar=False).run(key, **data)`` and ``get_samples()``; the wall time of the whole call (the
    first call traces and compiles). No log Z."""

    def __init__(self, model, data, num_warmup=1000, num_samples=1000):
        from numpyro.infer import MCMC, NUTS

        self.mcmc = MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples, num_chains=1,
                         progress_bar=False)
        self.data = data

    def run(self, seed):
        t0 = time.perf_counter()
        self.mcmc.run(jax.random.key(seed), **self.data)
        s = jax.block_until_ready(self.mcmc.get_samples())
        wall = time.perf_counter() - t0
        pos = np.concatenate([np.asarray(s[k], float).reshape(len(s[k]), -1) for k in sorted(s)], axis=1)
        div = self.mcmc.get_extra_fields().get("diverging")
        return {"wall_s": wall, "log_z": None, "positions": pos, "log_weights": None, "stages": None,
                "move_rounds": None, "divergences": None if div is None else int(np.sum(div))}

    first = run


class PyMCMethod:
    def __init__(self, problem, data, n, k, L):
        import pymc as pm

        self.pm, self.n = pm, n
        self.model = pymc_model(problem, data)

    def run(self, seed):
        pm = self.pm
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            with self.model:
                idata = pm.sample_smc(draws=self.n, chains=1, cores=1, random_seed=seed, progressbar=False,
                                      compute_convergence_checks=False, return_inferencedata=True)
            wall = time.perf_counter() - t0
        post = idata.posterior
        names = sorted(post.data_vars)
        cols = [np.asarray(post[v].values[0]).reshape(self.n, -1) for v in names]
        pos = np.concatenate(cols, axis=1)
        lml = np.asarray(idata.sample_stats["log_marginal_likelihood"].values).ravel()  # PyMC's name for it
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

    first = run


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
        elif problem in LOGISTIC_PRIOR_SD:
            s0, s1 = LOGISTIC_PRIOR_SD[problem]
            x = np.asarray(data["x"], float)
            b0 = pm.Normal("intercept", 0.0, s0)
            w = pm.Normal("w", 0.0, s1, shape=x.shape[1])
            pm.Bernoulli("y", logit_p=b0 + pt.dot(x, w), observed=np.asarray(data["y"]))
        else:
            raise ValueError(problem)
    return m


class ParticlesMethod:
    def __init__(self, problem, data, n, k, L):
        import particles
        from particles import smc_samplers as ssp

        self.particles, self.ssp, self.n, self.k = particles, ssp, n, k
        self.model = particles_model(problem, data)
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
                "stages": stages, "move_rounds": max(stages - 1, 0), "compile_s": 0.0}

    first = run


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
    if problem in LOGISTIC_PRIOR_SD:
        s0, s1 = LOGISTIC_PRIOR_SD[problem]
        x, y = np.asarray(data["x"], float), np.asarray(data["y"], float)
        k = x.shape[1]
        w_prior = dists.Normal(0.0, s1) if k == 1 else dists.MvNormal(loc=np.zeros(k), cov=s1**2 * np.eye(k))
        prior = dists.StructDist({"intercept": dists.Normal(0.0, s0), "w": w_prior})

        class Logit(ssp.StaticModel):
            def logpyt(self, theta, t):
                w = np.reshape(theta["w"], (len(theta["intercept"]), k))
                eta = theta["intercept"] + w @ self.data[t, :k]
                return self.data[t, k] * eta - np.logaddexp(0.0, eta)

        return Logit(data=np.column_stack([x, y]), prior=prior)
    raise ValueError(problem)


METHODS = ("smcppl", "smcppl-weighted", "smcppl-default", "smcppl-vmap", "smcppl-rwm", "smcppl-rwm-weighted", "smcppl-imh", "blackjax",
           "nuts", "pymc", "particles")


def make_method(m, problem, model, data, n, a):
    k, L = a.num_mcmc_steps, a.num_integration_steps
    if m == "smcppl":
        return SmcpplMethod(model, data, n, k, L)
    if m == "smcppl-weighted":
        return SmcpplMethod(model, data, n, k, L, tuning="weighted")
    if m == "smcppl-default":  # TemperedSMC(model) as it comes: waste-free HMC chains of 10 states, L = 5
        return SmcpplMethod(model, data, n, k, L, defaults=True)
    if m == "smcppl-vmap":
        return SmcpplMethod(model, data, n, k, L, tuning="weighted", chain_method="vectorized")
    if m in ("smcppl-rwm", "smcppl-imh"):  # the same number of transitions, cheaper ones (default pilot tuning)
        return SmcpplMethod(model, data, n, k, L, move=m.split("-")[1])
    if m == "smcppl-rwm-weighted":  # particles' recipe: K random-walk transitions, tuned in the run
        return SmcpplMethod(model, data, n, k, L, tuning="weighted", move="rwm")
    if m == "blackjax":
        return BlackJAXMethod(model, data, n, k, L)
    if m == "nuts":
        return NutsMethod(model, data, a.nuts_warmup, a.nuts_samples)
    if m == "pymc":
        return PyMCMethod(problem, data, n, k, L)
    if m == "particles":
        return ParticlesMethod(problem, data, n, k, L)
    raise ValueError(f"unknown method {m!r}: use one of {METHODS}.")


def accuracy(res, problem, exact):
    """log Z error, posterior-mean error (in posterior sd) and, on the bimodal problem, mode-weight error."""
    est = weighted_mean(res["positions"], res["log_weights"])
    out = {"log_z": res["log_z"], "log_z_err": None if res["log_z"] is None else res["log_z"] - exact["log_evidence"],
           "mean_err_sd": mean_error(est, exact)}
    if problem == "bimodal2d":
        out["mode_weight_err"] = mode_weight_error(res["positions"], res["log_weights"], exact)
    return out


REPORTED = ("compile_s", "run_s", "pilot_s", "reused_compiled", "health_flags", "divergences", "stages", "move_rounds")


def reported(res, prefix=""):
    return {prefix + key: res[key] for key in REPORTED if key in res}


# ============================================================================================ driver
def _fmt(x, nd=3):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.mean(xs) if xs else None


def summarise(rows):
    """Markdown table of the in-process runs: per-cell means over seeds."""
    cells = {}
    for r in rows:
        cells.setdefault((r["problem"], r["N"], r["method"]), []).append(r)
    lines = [("| problem | N | method | wall (s) | run only (s) | first call (s) | compile (s) | log Z err mean ± se | "
              "log Z RMSE | mean err (sd) | mode-w err | stages | time/stage (ms) | wall / smcppl | wall / NUTS |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    walls = {key: statistics.mean(x["wall_s"] for x in rs) for key, rs in cells.items()}
    for (problem, n, method), rs in cells.items():
        wall = walls[(problem, n, method)]
        errs = [x["log_z_err"] for x in rs if x["log_z_err"] is not None]
        if errs:
            bias, rmse = statistics.mean(errs), math.sqrt(statistics.mean(e * e for e in errs))
            se = statistics.stdev(errs) / math.sqrt(len(errs)) if len(errs) > 1 else None
            logz = f"{bias:+.3f} ± {_fmt(se)}"
        else:
            logz, rmse = "-", None
        mw = _mean(x.get("mode_weight_err") for x in rs)
        stages = _mean(x.get("stages") for x in rs)
        per_stage = _mean(None if not x.get("move_rounds") else
                          1e3 * (x["run_s"] - x["pilot_s"] if "run_s" in x else x["wall_s"]) / x["move_rounds"]
                          for x in rs)
        ref, ref_nuts = walls.get((problem, n, "smcppl")), walls.get((problem, n, "nuts"))
        lines.append(f"| {problem} | {n} | {method} | {wall:.3f} | {_fmt(_mean(x.get('run_s') for x in rs))} | "
                     f"{_fmt(rs[0]['first_call_s'], 2)} | {_fmt(rs[0]['compile_s'], 2)} | {logz} | {_fmt(rmse)} | "
                     f"{_fmt(_mean(x['mean_err_sd'] for x in rs))} | {_fmt(mw)} | {_fmt(stages, 1)} | "
                     f"{_fmt(per_stage, 1)} | {_fmt(ref and wall / ref, 2)} | {_fmt(ref_nuts and wall / ref_nuts, 2)} |")
    return "\n".join(lines)


def fresh_label(r):
    return r["method"] + ("" if r.get("cache") is None else f" ({r['cache']} cache)")


def summarise_fresh(rows):
    """Markdown tables of the fresh-process runs: per (problem, N, method[, cache]) means over seeds, then
    one line per (problem, N) with smcppl's times against NUTS's."""
    cells = {}
    for r in rows:
        cells.setdefault((r["problem"], r["N"], fresh_label(r)), []).append(r)

    def m(rs, key):
        return _mean(x.get(key) for x in rs)

    def other(x, call, parts):  # the part of a call outside the runner's compile and run timers
        if any(x.get(f"{call}_{k}") is None for k in parts):
            return None
        return x[f"{call}_wall_s"] - sum(x[f"{call}_{k}"] for k in parts)

    lines = [("| problem | N | method | import (s) | first call (s) | 1st: compile (s) | 1st: other (s) | "
              "second call (s) | 2nd: run only (s) | 2nd: pilot (s) | 2nd: other (s) | 2nd reused | "
              "log Z err 1st / 2nd | mean err (sd) 1st / 2nd | 1st / NUTS 1st | 2nd / NUTS 2nd |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (problem, n, label), rs in cells.items():
        nuts = cells.get((problem, n, "nuts"))
        f1, f2 = m(rs, "first_call_s"), m(rs, "second_wall_s")
        reused = m(rs, "second_reused_compiled")
        o1 = _mean(other(x, "first", ("compile_s", "run_s")) for x in rs)
        o2 = _mean(other(x, "second", ("compile_s", "run_s")) for x in rs)
        lines.append(
            f"| {problem} | {n} | {label} | {_fmt(m(rs, 'import_s'), 1)} | {_fmt(f1, 1)} | "
            f"{_fmt(m(rs, 'first_compile_s'), 1)} | {_fmt(o1, 1)} | {_fmt(f2, 2)} | {_fmt(m(rs, 'second_run_s'), 2)} | "
            f"{_fmt(m(rs, 'second_pilot_s'), 2)} | {_fmt(o2, 2)} | {_fmt(reused, 0) if reused is not None else '-'} | "
            f"{_fmt(m(rs, 'first_log_z_err'))} / {_fmt(m(rs, 'second_log_z_err'))} | "
            f"{_fmt(m(rs, 'first_mean_err_sd'))} / {_fmt(m(rs, 'second_mean_err_sd'))} | "
            f"{_fmt(nuts and f1 / m(nuts, 'first_call_s'), 2)} | {_fmt(nuts and f2 / m(nuts, 'second_wall_s'), 2)} |")
    lines += ["", ("| problem | N | smcppl 1st call, cold cache (s) | 1st call, warm cache (s) | 2nd call (s) | "
                   "2nd: run only (s) | NUTS 1st call (s) | NUTS 2nd call (s) | cold / NUTS 1st | warm / NUTS 1st | "
                   "2nd / NUTS 2nd | run only / NUTS 2nd |"),
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for problem, n in dict.fromkeys((p, n) for p, n, _ in cells):
        cold, warm, nuts = (cells.get((problem, n, x)) for x in ("smcppl (cold cache)", "smcppl (warm cache)", "nuts"))
        if not (cold and warm and nuts):
            continue
        both = cold + warm  # the second call of both processes
        c, w, s2, ro = m(cold, "first_call_s"), m(warm, "first_call_s"), m(both, "second_wall_s"), m(both, "second_run_s")
        n1, n2 = m(nuts, "first_call_s"), m(nuts, "second_wall_s")
        lines.append(f"| {problem} | {n} | {c:.1f} | {w:.1f} | {s2:.2f} | {ro:.2f} | {n1:.1f} | {n2:.2f} | "
                     f"{c / n1:.2f} | {w / n1:.2f} | {s2 / n2:.2f} | {ro / n2:.2f} |")
    return "\n".join(lines)


def smcppl_tree():
    """Commit of the smcppl checkout plus a hash of its uncommitted changes (read-only git)."""
    import hashlib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", "smcppl"], cwd=root, capture_output=True, timeout=10,
                              check=False).stdout
        return head + ("" if not diff else "+dirty:" + hashlib.sha1(diff).hexdigest()[:8])
    except Exception:
        return "unknown"


def check_reference(k, L):
    """Problem (c): quadrature vs a long NumPyro NUTS run (mean, sd) and a large smcppl run (log Z)."""
    from numpyro.infer import MCMC, NUTS

    from smcppl import SMC, TemperedSMC

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
    smc = SMC(TemperedSMC(model, move="hmc", num_mcmc_steps=2 * k, num_integration_steps=L), num_particles=20_000,
              num_chains=4)
    smc.run(jax.random.key(321), **data)
    lz = np.asarray(smc.log_evidence, float)
    emit({"bench": "reference", "problem": "challenger", "what": "large_smcppl_vs_quadrature", "N": 20_000,
          "chains": 4, "log_z_chains": lz.tolist(), "log_z_mean": float(lz.mean()),
          "log_z_se": float(lz.std(ddof=1) / math.sqrt(len(lz))), "quadrature_log_z": exact["log_evidence"],
          "timing": smc.timing})


def run_in_process(a, problems, sizes, methods):
    """Every method in this process: per (problem, N) one first call (compilation; seed ``WARMUP_SEED``),
    then one call per seed (the order of the methods alternates between seeds)."""
    rows = []
    for problem in problems:
        model, data, exact = get_problem(problem)
        for n in sizes:
            runners = {m: make_method(m, problem, model, data, n, a) for m in methods}
            first = {m: r.first(WARMUP_SEED) for m, r in runners.items()}
            cell = {m: [] for m in runners}
            for seed in range(a.seeds):
                for m in (list(runners) if seed % 2 == 0 else list(runners)[::-1]):
                    res = runners[m].run(seed)
                    cell[m].append({"bench": "tempered", "problem": problem, "N": n, "method": m, "seed": seed,
                                    "wall_s": res["wall_s"], "first_call_s": first[m]["wall_s"],
                                    "compile_s": first[m].get("compile_s"), **reported(res, "call_"),
                                    **{k: v for k, v in reported(res).items() if k != "compile_s"},
                                    **accuracy(res, problem, exact), "num_mcmc_steps": a.num_mcmc_steps,
                                    "num_integration_steps": a.num_integration_steps
                                    if m.startswith("smcppl") or m == "blackjax" else None})
            for m, xs in cell.items():
                if first[m].get("compile_s") is None:  # NUTS, PyMC: first call minus the median later call
                    med = statistics.median(x["wall_s"] for x in xs)
                    for x in xs:
                        x["compile_s"] = max(first[m]["wall_s"] - med, 0.0)
                for x in xs:
                    rows.append(emit(x))
    return rows


def run_fresh(a, problems, sizes, methods):
    """Time to first result in a fresh Python process per (method, problem, N, seed): this script in
    ``--child`` mode (imports, model and data, build, compile, run), then a second call with a new key in
    the same process. smcppl runs twice per seed: with an empty persistent compilation cache (a new
    folder in ``SMCPPL_COMPILATION_CACHE``), then again with the cache that run filled; PyMC likewise with
    an empty PyTensor compile folder (``base_compiledir``), then the filled one. The other methods run
    without JAX's persistent cache (JAX's default)."""
    import shutil
    import tempfile

    rows = []
    for problem in problems:
        for n in sizes:
            for seed in range(a.seeds if a.fresh_seeds is None else a.fresh_seeds):
                for m in (methods if seed % 2 == 0 else methods[::-1]):
                    if m.startswith("smcppl") or m == "pymc":  # both keep compiled code on disk
                        folder = tempfile.mkdtemp(prefix=f"{m}-cache-")
                        for cache in ("cold", "warm"):
                            rows.append(_fresh_process(a, m, problem, n, seed, cache, folder))
                        shutil.rmtree(folder, ignore_errors=True)
                    else:
                        rows.append(_fresh_process(a, m, problem, n, seed, None, None))
    return [r for r in rows if r is not None]


def _fresh_process(a, method, problem, n, seed, cache, folder):
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["SMCPPL_COMPILATION_CACHE"] = folder or "off"
    if method == "pymc" and folder:  # PyTensor's C-code cache in the same folder: empty (cold), then filled (warm)
        env["PYTENSOR_FLAGS"] = ",".join(x for x in (env.get("PYTENSOR_FLAGS"), f"base_compiledir={folder}") if x)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method, "--problems", problem, "--sizes", str(n),
           "--child-seed", str(seed), "--num-mcmc-steps", str(a.num_mcmc_steps),
           "--num-integration-steps", str(a.num_integration_steps), "--nuts-warmup", str(a.nuts_warmup),
           "--nuts-samples", str(a.nuts_samples), "--launch-time"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + [repr(time.time())], env=env, capture_output=True, text=True,
                          timeout=a.child_timeout, check=False)
    process_s = time.perf_counter() - t0
    found = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith('{"bench": "fresh"')]
    if proc.returncode or not found:
        return emit({"bench": "fresh_error", "problem": problem, "N": n, "method": method, "cache": cache,
                     "seed": seed, "returncode": proc.returncode, "stderr_tail": proc.stderr[-2000:]}) and None
    extra = {"cache": cache, "process_s": process_s}
    if folder:
        extra["cache_files"] = sum(len(files) for _, _, files in os.walk(folder))
    return emit({**found[-1], **extra})


def child(a):
    """One fresh-process run (``--child METHOD``): the times are measured from ``--launch-time`` (the
    parent's clock just before it started this process). ``first_call_s`` = launch to the first result,
    less the loading of the data set and its reference answers (``load_problem_s``; for NUTS on
    Challenger that loading imports smcppl's model zoo, which a NumPyro user would not)."""
    m = a.child
    if m.startswith("smcppl"):
        import smcppl
    elif m == "blackjax":
        import blackjax  # noqa: F401

        import smcppl.inference.tempered.model  # noqa: F401  (the shared log densities and prior draws)
    elif m == "nuts":
        import numpyro.infer  # noqa: F401
    elif m in ("pymc", "particles"):
        __import__(m)
    t_imported = time.time()
    problem, n = a.problems, int(a.sizes)
    model, data, exact = get_problem(problem)
    t_loaded = time.time()
    runner = make_method(m, problem, model, data, n, a)
    r1 = runner.first(a.child_seed)
    t_result = time.time()
    acc1 = accuracy(r1, problem, exact)
    r2 = runner.run(a.child_seed + SECOND_CALL_SEED)
    acc2 = accuracy(r2, problem, exact)
    emit({"bench": "fresh", "problem": problem, "N": n, "method": m, "seed": a.child_seed,
          "import_s": t_imported - a.launch_time, "load_problem_s": t_loaded - t_imported,
          "first_call_s": (t_imported - a.launch_time) + (t_result - t_loaded), "first_wall_s": r1["wall_s"],
          **reported(r1, "first_"), **{"first_" + k: v for k, v in acc1.items()},
          "second_wall_s": r2["wall_s"], **reported(r2, "second_"), **{"second_" + k: v for k, v in acc2.items()}})


def _min_time(fn, reps):
    ts = []
    for i in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(i))
        ts.append(time.perf_counter() - t0)
    return min(ts)


def overhead(a, problems, sizes, moves=("hmc", "rwm"), reps=15):
    """Where the time of one smcppl call goes on a problem (``--overhead``; ``"bench": "overhead"``):

    * the whole ``SMC(TemperedSMC(model, move=m), N, num_chains=1).run`` call (median of ``a.seeds + 2``
      calls after the first), split into the runner's pilot and chain times and the rest (building the
      plan, final draws, health checks);
    * per move round of one chain (``tuning="weighted"``, compiled alone, min over ``reps`` runs, the
      variants interleaved): the whole engine step, and the step with the move replaced by the identity
      (resampling, ESS/entropy/unique-ancestor count/lineage bookkeeping, the temperature bisection, the
      preconditioner, the trace): the move's share is the difference;
    * the temperature bisection alone (``next_temperature`` on the final particles)."""
    from smcppl import SMC, TemperedSMC
    from smcppl.core import engine
    from smcppl.core.schedules import next_temperature
    from smcppl.inference.tempered.model import tempered_feynman_kac

    rows = []
    for problem in problems:
        model, data, exact = get_problem(problem)
        for n in sizes:
            for move in moves:
                smc = SMC(TemperedSMC(model, move=move, num_mcmc_steps=a.num_mcmc_steps,
                                      num_integration_steps=a.num_integration_steps, target_ess=TARGET_ESS), n)
                calls = []
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for seed in range(a.seeds + 3):
                        t0 = time.perf_counter()
                        smc.run(jax.random.key(seed), **data)
                        calls.append((time.perf_counter() - t0, smc.timing["run_seconds"], smc.timing["pilot_seconds"],
                                      float(smc.log_evidence[0]) - exact["log_evidence"]))
                calls = calls[1:]
                dens, res = TemperedSMC(model).density(**data), smc.resampling_used
                fk = tempered_feynman_kac(lambda u: dens.log_parts(u, dens.data), None,
                                          lambda k, m: dens.sample_prior(k, m, dens.data), dens.dim, n,
                                          smc.algorithm.move, TARGET_ESS, "cess", None, "weighted")

                def identity(key, particles, log_weights, params, ancestry, _move=fk.move):
                    info = jax.eval_shape(lambda: _move(key, particles, log_weights, params, ancestry)[1])
                    return particles, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info)

                progs = {}
                for name, f in (("step", fk), ("no_move", fk._replace(move=identity))):
                    progs[name] = jax.jit(lambda k, f=f: (lambda o: (o.n_stages, o.state))(
                        engine.run_adaptive(k, f, 500, res)))
                    jax.block_until_ready(progs[name](jax.random.key(0)))
                times = {name: [] for name in progs}
                stages = {}
                for i in range(reps):
                    for name, prog in progs.items():
                        t0 = time.perf_counter()
                        stages[name], state = jax.block_until_ready(prog(jax.random.key(i)))
                        times[name].append(time.perf_counter() - t0)
                per_round = {name: 1e3 * min(t) / max(int(stages[name]) - 1, 1) for name, t in times.items()}
                bis = jax.jit(lambda ll, lw, b: next_temperature(ll, lw, b, TARGET_ESS, "cess"))
                ll = state.particles["loglik"]
                bis_ms = 1e3 * _min_time(lambda i: bis(ll, jnp.zeros_like(ll), 0.01 + 1e-4 * i), reps)
                med = {k: statistics.median(c[j] for c in calls) for j, k in enumerate(("wall", "run", "pilot"))}
                errs = [c[3] for c in calls]
                rows.append(emit({
                    "bench": "overhead", "problem": problem, "N": n, "move": move,
                    "call_ms": 1e3 * med["wall"], "pilot_ms": 1e3 * med["pilot"], "chain_ms": 1e3 * (med["run"] - med["pilot"]),
                    "other_ms": 1e3 * (med["wall"] - med["run"]), "log_z_rmse": math.sqrt(statistics.mean(e * e for e in errs)),
                    "stages": int(smc.output.n_stages[0]), "round_ms": per_round["step"],
                    "round_without_move_ms": per_round["no_move"], "move_ms": per_round["step"] - per_round["no_move"],
                    "bisection_ms": bis_ms, "calls": len(calls), "load_average": os.getloadavg()}))
    print()
    print("| problem | N | move | call (ms) | pilot (ms) | chain (ms) | other (ms) | stages | round (ms) | move (ms) | "
          "rest of round (ms) | of which bisection (ms) | log Z RMSE |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['problem']} | {r['N']} | {r['move']} | {r['call_ms']:.1f} | {r['pilot_ms']:.1f} | {r['chain_ms']:.1f} | "
              f"{r['other_ms']:.1f} | {r['stages']} | {r['round_ms']:.2f} | {r['move_ms']:.2f} | "
              f"{r['round_without_move_ms']:.2f} | {r['bisection_ms']:.2f} | {r['log_z_rmse']:.3f} |")
    return rows


PROBLEMS = ("conjugate", "bimodal2d", "challenger", "breast_cancer")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 1000 only")
    p.add_argument("--sizes", default=None, help="comma-separated N (default 1000,4000; --quick: 1000)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--fresh-seeds", type=int, default=None, help="seeds of the fresh-process table (default --seeds)")
    p.add_argument("--problems", default=",".join(PROBLEMS))
    p.add_argument("--methods", default="smcppl,smcppl-weighted,blackjax,nuts,pymc,particles",
                   help="in-process table: smcppl (defaults, through SMC.run), smcppl-weighted (tuning='weighted': "
                        "in-run tuning, the same work as BlackJAX), smcppl-vmap (weighted, chain_method='vectorized' "
                        "over 1 chain), blackjax, nuts, pymc, particles")
    p.add_argument("--fresh-methods", default="smcppl,blackjax,nuts",
                   help="fresh-process table (smcppl runs with an empty, then a warm compilation cache)")
    p.add_argument("--tables", default="in-process,fresh", help="which comparisons: in-process, fresh or both")
    p.add_argument("--num-mcmc-steps", type=int, default=5)
    p.add_argument("--num-integration-steps", type=int, default=10)
    p.add_argument("--nuts-warmup", type=int, default=1000)
    p.add_argument("--nuts-samples", type=int, default=1000)
    p.add_argument("--child-timeout", type=float, default=1800.0, help="seconds per fresh process")
    p.add_argument("--check-reference", action="store_true")
    p.add_argument("--overhead", action="store_true",
                   help="only: where the time of an smcppl call goes (move vs the rest of a stage, pilot, plan)")
    p.add_argument("--breast-cancer-reference", action="store_true",
                   help="only: recompute benchmarks/data/breast_cancer_reference.json (NUTS + importance sampling)")
    p.add_argument("--table-from", default=None, help="only print the markdown tables of a saved JSON-lines output")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--launch-time", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child(a)
    if a.table_from:
        with open(a.table_from) as f:
            rows = [json.loads(x) for x in f if x.startswith("{")]
        print(summarise([r for r in rows if r.get("bench") == "tempered"]))
        print()
        print(summarise_fresh([r for r in rows if r.get("bench") == "fresh"]))
        return
    if a.breast_cancer_reference:
        ref = compute_breast_cancer_reference()
        emit({k: v for k, v in ref.items() if k not in ("mean", "sd", "mode")})
        return
    # the in-process compile times: without the persistent compilation cache unless the caller set one
    os.environ.setdefault("SMCPPL_COMPILATION_CACHE", "off")
    sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else ([1000] if a.quick else [1000, 4000])
    problems, tables = a.problems.split(","), a.tables.split(",")
    methods = a.methods.split(",") if "in-process" in tables else []
    fresh_methods = a.fresh_methods.split(",") if "fresh" in tables else []
    for m in methods + fresh_methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}: use one of {METHODS}")
    for pr in problems:
        if pr not in PROBLEMS:
            p.error(f"unknown problem {pr!r}: use one of {PROBLEMS}")
    k, L = a.num_mcmc_steps, a.num_integration_steps
    versions = {"python": platform.python_version(), "jax": jax.__version__, "numpyro": numpyro.__version__}
    for mod in ("blackjax", "pymc", "particles"):
        if mod in methods or mod in fresh_methods:
            try:
                versions[mod] = __import__(mod).__version__
            except Exception as e:
                emit({"bench": "skip", "method": mod, "reason": f"{type(e).__name__}: {e}",
                      "fix": "pip install -r benchmarks/requirements.txt (see its comments for particles)"})
                methods = [m for m in methods if m != mod]
                fresh_methods = [m for m in fresh_methods if m != mod]
    versions["smcppl_tree"] = smcppl_tree()
    emit({"bench": "env", **versions, "cpu_count": os.cpu_count(), "argv": sys.argv[1:] if argv is None else argv,
          "num_mcmc_steps": k, "num_integration_steps": L, "target_ess": TARGET_ESS, "nuts_warmup": a.nuts_warmup,
          "nuts_samples": a.nuts_samples, "in_process_compilation_cache": os.environ["SMCPPL_COMPILATION_CACHE"],
          "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None})
    if a.check_reference:
        check_reference(k, L)
        return
    if a.overhead:
        overhead(a, problems, sizes)
        return
    for problem in problems:
        _, _, exact = get_problem(problem)
        emit({"bench": "problem", "problem": problem, "log_evidence": exact["log_evidence"],
              "mean": flat(exact["mean"]).tolist(), "sd": flat(exact["sd"]).tolist()})
    rows = run_in_process(a, problems, sizes, methods) if methods else []
    fresh = run_fresh(a, problems, sizes, fresh_methods) if fresh_methods else []
    emit({"bench": "end", "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None})
    if rows:
        print()
        print(summarise(rows))
    if fresh:
        print()
        print(summarise_fresh(fresh))


if __name__ == "__main__":
    main()
