"""smcppl.blackjax: drop-ins for blackjax.tempered_smc / blackjax.adaptive_tempered_smc.

The first three tests re-type the cases of BlackJAX's own tests/smc/test_tempered_smc.py (BlackJAX,
Apache License 2.0, Copyright 2020- The Blackjax Authors): adaptive tempered SMC and fixed-schedule
tempered SMC on a linear regression, and the normalizing constant of a bivariate normal. They call our
functions exactly as BlackJAX's tests call its own (positional arguments, BlackJAX's HMC kernel and
resampler, ``info.log_likelihood_increment`` summed along a ``while_loop`` until
``state.tempering_param`` reaches 1), so a signature mismatch fails them. Where BlackJAX checks
``rtol=0.1`` against round numbers we compare with exact answers (2-d quadrature, closed forms) and
tolerances from the Monte Carlo error; and we draw the initial particles from the prior (BlackJAX's
adaptive case starts its coefficients at N(3, 2^2), not the prior). Each test compiles one program.
"""
import inspect
import warnings

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.smc import extend_params, resampling, solver
from jax.scipy import stats
from scipy.special import logsumexp

import smcppl
from smcppl import Resampling
from smcppl import blackjax as bjx
from smcppl.inference.tempered.blackjax_api import _shared_or_per_particle

NUM_PARTICLES = 100
NUM_RUNS = 4  # independent runs of one compiled program per test


def inference_loop(step, rng_key, state):
    """BlackJAX's test loop: step until lambda = 1, summing the log-likelihood increments."""
    def cond(carry):
        return carry[1].tempering_param < 1

    def body(carry):
        i, state, log_z = carry
        state, info = step(jax.random.fold_in(rng_key, i), state)
        return i + 1, state, log_z + info.log_likelihood_increment

    return jax.lax.while_loop(cond, body, (0, state, jnp.zeros(())))


# ---------------------------------------------------------------------------------------------
# linear regression y = 3 x + N(0, 1), 1000 points (BlackJAX's SMCLinearRegressionTestCase)
_rng = np.random.default_rng(0)
X = _rng.normal(size=(1000, 1))
Y = 3 * X + _rng.normal(size=X.shape)


def regression_loglik(log_scale, coefs):
    return jnp.sum(stats.norm.logpdf(Y, jnp.dot(X, coefs), jnp.exp(log_scale)))


def exact_regression(log_prior_log_scale):
    """Posterior means of exp(log_scale) and coefs, and log Z, by quadrature on a 2-d grid (prior
    N(0, 1) on coefs; ``log_prior_log_scale`` vectorised), float64. The posterior sds are ~0.02 and
    ~0.03; the grid spans +-10 of them at a spacing of about 1/40 of them."""
    s = np.log(np.std(Y - 3 * X)) + np.linspace(-0.25, 0.25, 801)
    b = np.sum(X * Y) / np.sum(X * X) + np.linspace(-0.35, 0.35, 801)
    S, B = np.meshgrid(s, b, indexing="ij")
    resid2 = np.sum(Y**2) - 2 * B * np.sum(X * Y) + B**2 * np.sum(X**2)
    n = Y.size
    loglik = -0.5 * resid2 / np.exp(2 * S) - n * S - 0.5 * n * np.log(2 * np.pi)
    logpost = loglik + log_prior_log_scale(S) - 0.5 * B**2 - 0.5 * np.log(2 * np.pi)
    cell = (s[1] - s[0]) * (b[1] - b[0])
    log_z = logsumexp(logpost) + np.log(cell)
    w = np.exp(logpost - logsumexp(logpost))
    sd = np.sqrt(np.sum(w * np.exp(2 * S)) - np.sum(w * np.exp(S)) ** 2), np.sqrt(np.sum(w * B**2) - np.sum(w * B) ** 2)
    return {"scale": np.sum(w * np.exp(S)), "coefs": np.sum(w * B), "sd": sd, "log_z": log_z}


HMC_PARAMS = extend_params({"step_size": 10e-2, "inverse_mass_matrix": jnp.eye(2), "num_integration_steps": 10})


def _weighted_moments(weights, x):
    mean = jnp.sum(weights * x)
    return mean, jnp.sqrt(jnp.sum(weights * (x - mean) ** 2))


def _check_regression(moments, exact, what):
    """``moments``: per run, ((mean, sd) of the scale, (mean, sd) of the coefficient)."""
    # Mean: a run's Monte Carlo error is posterior sd / sqrt(ESS); with N = 100 at ESS target 0.5 and
    # poorly mixing moves (HMC with step 0.1 and unit mass on posterior sds of 0.02-0.03) we count on at
    # least 10 effective draws: 4 sd / sqrt(10) = 1.26 sd (observed errors: < 0.3 sd). A wrong weight
    # lands at the prior or an over-fitted mode, many sds away.
    # Sd: the posterior sds are 0.023 and 0.033; stopping at an earlier temperature (the last rung but
    # one is lambda = 0.28) would widen them by 1/sqrt(lambda) = 1.9x, a collapsed population shrinks
    # them. Their relative Monte Carlo error is about 1/sqrt(2 ESS) = 0.22 at ESS 10: we allow 0.6.
    for i, name in enumerate(("scale", "coefs")):
        mean = np.array([float(m[i][0]) for m in moments])
        sd = np.array([float(m[i][1]) for m in moments])
        ex_mean, ex_sd = exact[name], exact["sd"][i]
        assert np.all(np.abs(mean - ex_mean) < 4 * ex_sd / np.sqrt(10)), (what, name, mean, ex_mean, ex_sd)
        assert np.all(np.abs(np.log(sd / ex_sd)) < 0.6), (what, name, sd, ex_sd)


def _check_log_z(log_z, exact):
    # the runs are independent: their mean is within 4 standard errors (estimated from the runs, floored
    # at 0.02 against an unluckily small spread of 4 runs) plus the Jensen bias of log Z_hat, about
    # -var/2, of log Z
    se = max(log_z.std(ddof=1) / np.sqrt(len(log_z)), 0.02)
    assert abs(log_z.mean() - exact) < 4 * se + log_z.var(ddof=1) / 2, (log_z, exact)


def test_adaptive_tempered_smc():
    # prior: scale ~ Exp(1) on log_scale (with the Jacobian), coefs ~ N(0, 1)
    def logprior_fn(x):
        return stats.expon.logpdf(jnp.exp(x[0]), 0, 1) + x[0] + stats.norm.logpdf(x[1])

    def loglikelihood_fn(x):
        return regression_loglik(*x)

    # BlackJAX runs shared, per-particle and mixed parameters; mixed (per-particle step size, shared
    # mass matrix and number of steps) exercises both (the split itself: test_parameter_split)
    mixed = dict(HMC_PARAMS, step_size=jnp.repeat(HMC_PARAMS["step_size"], NUM_PARTICLES, axis=0))
    tempering = bjx.adaptive_tempered_smc(
        logprior_fn,
        loglikelihood_fn,
        blackjax.hmc.build_kernel(),
        blackjax.hmc.init,
        mixed,
        resampling.systematic,
        0.5,
        solver.dichotomy,
        5,
    )

    @jax.jit
    def run(key):
        k_scale, k_coef, k_run = jax.random.split(key, 3)
        particles = [jnp.log(jax.random.exponential(k_scale, (NUM_PARTICLES,))),
                     jax.random.normal(k_coef, (NUM_PARTICLES,))]
        n_iter, state, log_z = inference_loop(tempering.step, k_run, tempering.init(particles))
        moments = (_weighted_moments(state.weights, jnp.exp(state.particles[0])),
                   _weighted_moments(state.weights, state.particles[1]))
        return n_iter, state, log_z, moments

    exact = exact_regression(lambda s: s - np.exp(s))
    out = [run(jax.random.key(seed)) for seed in range(NUM_RUNS)]
    n_iter = np.array([o[0] for o in out])
    assert np.all((n_iter > 3) & (n_iter < 100)), n_iter
    assert all(float(o[1].tempering_param) == 1.0 for o in out)
    _check_regression([o[3] for o in out], exact, "adaptive")
    log_z = np.array([float(o[2]) for o in out])
    _check_log_z(log_z, exact["log_z"])
    # the running estimate the state carries is the sum of the increments
    np.testing.assert_allclose([float(o[1].log_evidence) for o in out], log_z, rtol=1e-5)


def test_fixed_schedule_tempered_smc():
    def logprior_fn(x):
        return stats.norm.logpdf(x["log_scale"]) + stats.norm.logpdf(x["coefs"])

    def loglikelihood_fn(x):
        return regression_loglik(**x)

    lambda_schedule = np.logspace(-5, 0, 10)
    tempering = bjx.tempered_smc(
        logprior_fn,
        loglikelihood_fn,
        blackjax.hmc.build_kernel(),
        blackjax.hmc.init,
        HMC_PARAMS,
        resampling.systematic,
        10,
    )

    @jax.jit
    def run(key):
        k_init, k_run = jax.random.split(key)
        ks, kc = jax.random.split(k_init)
        init_state = tempering.init({"log_scale": jax.random.normal(ks, (NUM_PARTICLES,)),
                                     "coefs": jax.random.normal(kc, (NUM_PARTICLES,))})

        def body_fn(carry, tempering_param):
            i, state = carry
            new_state, info = tempering.step(jax.random.fold_in(k_run, i), state, tempering_param)
            return (i + 1, new_state), info.log_likelihood_increment

        (_, result), _ = jax.lax.scan(body_fn, (0, init_state), lambda_schedule)
        return result, (_weighted_moments(result.weights, jnp.exp(result.particles["log_scale"])),
                        _weighted_moments(result.weights, result.particles["coefs"]))

    exact = exact_regression(lambda s: -0.5 * s**2 - 0.5 * np.log(2 * np.pi))
    out = [run(jax.random.key(seed)) for seed in range(NUM_RUNS)]
    for result, _ in out:
        assert float(result.tempering_param) == 1.0
    _check_regression([m for _, m in out], exact, "fixed")


def normal_logdensity_fn(x, chol_cov):
    """log-density of N(0, chol_cov chol_cov^T) at x."""
    dim = chol_cov.shape[0]
    y = jax.scipy.linalg.solve_triangular(chol_cov, x, lower=True)
    normalizing_constant = np.sum(np.log(np.abs(np.diag(chol_cov)))) + dim * np.log(2 * np.pi) / 2.0
    return -(0.5 * jnp.sum(y * y, -1) + normalizing_constant)


def _normal_problem():
    num_dim = 2
    rng_key = jax.random.key(2356)
    rng_key, cov_key = jax.random.split(rng_key, 2)
    chol_cov = jax.random.uniform(cov_key, shape=(num_dim, num_dim)).at[np.triu_indices(num_dim, 1)].set(0.0)
    cov = np.asarray(chol_cov @ chol_cov.T, float)

    def logprior_fn(x):
        return stats.multivariate_normal.logpdf(x, jnp.zeros((num_dim,)), jnp.eye(num_dim))

    def loglikelihood_fn(x):
        return normal_logdensity_fn(x, chol_cov)

    # Z = int N(x; 0, I) N(x; 0, cov) dx = N(0; 0, I + cov)
    exact = -0.5 * np.linalg.slogdet(np.eye(num_dim) + cov)[1] - num_dim / 2 * np.log(2 * np.pi)
    params = extend_params({"step_size": 10e-2, "inverse_mass_matrix": jnp.eye(num_dim), "num_integration_steps": 10})
    return rng_key, num_dim, logprior_fn, loglikelihood_fn, params, exact


def test_normalizing_constant():
    rng_key, num_dim, logprior_fn, loglikelihood_fn, hmc_parameters, exact = _normal_problem()
    tempering = bjx.adaptive_tempered_smc(
        logprior_fn,
        loglikelihood_fn,
        blackjax.hmc.build_kernel(),
        blackjax.hmc.init,
        hmc_parameters,
        resampling.systematic,
        0.9,
        solver.dichotomy,
        10,
    )

    @jax.jit
    def run(key):
        k_init, k_run = jax.random.split(key)
        x_init = jax.random.normal(k_init, shape=(NUM_PARTICLES, num_dim))
        return inference_loop(tempering.step, k_run, tempering.init(x_init))

    out = [run(jax.random.fold_in(rng_key, seed)) for seed in range(2 * NUM_RUNS)]
    log_z = np.array([float(o[2]) for o in out])
    _check_log_z(log_z, exact)
    # BlackJAX's own check
    np.testing.assert_allclose(log_z.mean(), exact, rtol=1e-1)


def test_ess_triggered_resampling_keeps_log_z():
    """smcppl's extra (keyword): resample only when ESS/N < 0.5; weights are carried between steps."""
    rng_key, num_dim, logprior_fn, loglikelihood_fn, hmc_parameters, exact = _normal_problem()
    tempering = bjx.adaptive_tempered_smc(
        logprior_fn, loglikelihood_fn, blackjax.hmc.build_kernel(), blackjax.hmc.init, hmc_parameters,
        resampling.systematic, 0.9, None, 10, resampling=Resampling("systematic", "ess", 0.5))

    @jax.jit
    def run(key):
        k_init, k_run = jax.random.split(key)
        state = tempering.init(jax.random.normal(k_init, shape=(NUM_PARTICLES, num_dim)))

        def body(carry, i):
            state, log_z = carry
            state, info = tempering.step(jax.random.fold_in(k_run, i), state)
            return (state, log_z + info.log_likelihood_increment), info.resampled
        (state, log_z), resampled = jax.lax.scan(body, (state, 0.0), jnp.arange(30))
        return state, log_z, resampled

    out = [run(jax.random.fold_in(rng_key, seed)) for seed in range(2 * NUM_RUNS)]
    assert all(float(o[0].tempering_param) == 1.0 for o in out)
    # with CESS 0.9 per step the ESS falls below 0.5 only every few steps: some steps carry weights
    resampled = np.array([np.asarray(o[2]) for o in out])
    assert 0 < resampled.mean() < 0.8, resampled
    np.testing.assert_allclose(np.asarray(out[0][0].weights), np.asarray(jax.nn.softmax(out[0][0].log_weights)),
                               rtol=1e-5, atol=1e-8)
    _check_log_z(np.array([float(o[1]) for o in out]), exact)


# ---------------------------------------------------------------------------------------------
# the interface itself (no compilation)
def _positional_names(fn):
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def test_signatures_and_fields_match_blackjax():
    import blackjax.smc.adaptive_tempered as bj_adaptive
    import blackjax.smc.base as bj_base
    import blackjax.smc.tempered as bj_tempered

    assert _positional_names(bjx.adaptive_tempered_smc) == _positional_names(bj_adaptive.as_top_level_api)
    assert _positional_names(bjx.tempered_smc) == _positional_names(bj_tempered.as_top_level_api)
    for ours, theirs in ((bjx.adaptive_tempered_smc, bj_adaptive.as_top_level_api),
                         (bjx.tempered_smc, bj_tempered.as_top_level_api)):
        sig_o, sig_t = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
        for name in ("num_mcmc_steps", "batch_size"):  # same defaults (root_solver: ignored, default None)
            assert sig_o[name].default == sig_t[name].default, name
    n = len(bj_tempered.TemperedSMCState._fields)
    assert bjx.TemperedSMCState._fields[:n] == bj_tempered.TemperedSMCState._fields
    assert bjx.TemperedSMCInfo._fields[:len(bj_base.SMCInfo._fields)] == bj_base.SMCInfo._fields

    alg = bjx.tempered_smc(lambda x: 0.0, lambda x: 0.0, blackjax.hmc.build_kernel(), blackjax.hmc.init,
                           HMC_PARAMS, resampling.systematic)
    assert _positional_names(alg.step)[:3] == ["rng_key", "state", "tempering_param"]
    state = alg.init(jnp.zeros((5, 2)))
    assert float(state.tempering_param) == 0.0 and float(state.lmbda) == 0.0
    np.testing.assert_allclose(np.asarray(state.weights), 0.2)
    # every other name of smcppl.blackjax is BlackJAX's own
    assert bjx.hmc is blackjax.hmc and bjx.inner_kernel_tuning is blackjax.inner_kernel_tuning


def test_parameter_split():
    shared, per = _shared_or_per_particle(
        {"step_size": jnp.full((7,), 0.1), "inverse_mass_matrix": jnp.eye(2)[None], "num_integration_steps": 3}, 7)
    assert set(per) == {"step_size"} and per["step_size"].shape == (7,)
    assert shared["inverse_mass_matrix"].shape == (2, 2) and int(shared["num_integration_steps"]) == 3


def test_clear_errors():
    lp = ll = lambda x: 0.0
    kernel, init = blackjax.hmc.build_kernel(), blackjax.hmc.init
    # smcppl's earlier positional order (..., resampling_fn, num_mcmc_steps, target_ess): target_ess = 10
    with pytest.raises(ValueError, match="target_ess"):
        bjx.adaptive_tempered_smc(lp, ll, kernel, init, HMC_PARAMS, resampling.systematic, 10, 0.5)
    with pytest.raises(TypeError, match="target_ess"):
        bjx.adaptive_tempered_smc(lp, ll, kernel, init, HMC_PARAMS, resampling.systematic, solver.dichotomy)
    with pytest.raises(TypeError, match="root_solver"):
        bjx.adaptive_tempered_smc(lp, ll, kernel, init, HMC_PARAMS, resampling.systematic, 0.5, 5)
    with pytest.raises(TypeError, match="mcmc_step_fn"):
        bjx.tempered_smc(lp, ll, HMC_PARAMS, init, HMC_PARAMS, resampling.systematic)
    with pytest.raises(TypeError, match="mcmc_parameters"):
        bjx.tempered_smc(lp, ll, kernel, init, resampling.systematic, resampling.systematic)
    with pytest.raises(ValueError, match="num_mcmc_steps"):
        bjx.tempered_smc(lp, ll, kernel, init, HMC_PARAMS, resampling.systematic, 0)
    with pytest.raises(NotImplementedError, match="update_particles_fn"):
        bjx.tempered_smc(lp, ll, kernel, init, HMC_PARAMS, resampling.systematic, 10, update_particles_fn=lp)


def test_legacy_tempered_smc_is_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="adaptive_tempered_smc"):
        alg = smcppl.tempered_smc(logprior_fn=lambda x: 0.0, loglikelihood_fn=lambda x: 0.0,
                                  mcmc_step_fn=blackjax.hmc.build_kernel(), mcmc_init_fn=blackjax.hmc.init,
                                  mcmc_parameters=HMC_PARAMS, resampling_fn=resampling.systematic, num_mcmc_steps=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(alg.init(jnp.zeros((4, 2))).tempering_param) == 0.0
    # called with BlackJAX's positional order, it names the drop-in (it used to fail inside float())
    with pytest.raises(TypeError, match="smcppl.blackjax.adaptive_tempered_smc"):
        smcppl.tempered_smc(lambda x: 0.0, lambda x: 0.0, blackjax.hmc.build_kernel(), blackjax.hmc.init, HMC_PARAMS,
                            resampling.systematic, 0.5, solver.dichotomy, 5)
