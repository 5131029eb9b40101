"""Tempered SMC on NumPyro models against exact answers (conjugate evidences, quadrature, mode weights)."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from smcppl import SMC, Entropic, ModelError, Resampling, TemperedSMC
from smcppl.models import zoo

from conjugate_check import CONJ, assert_matches_conjugate_exact


@pytest.fixture(scope="module")
def conjugate_hmc():
    smc = SMC(TemperedSMC(zoo.conjugate_gaussian, move="hmc", num_mcmc_steps=3, num_integration_steps=5),
              num_particles=1000, num_chains=8)
    return smc.run(jax.random.key(0), **CONJ)


def test_conjugate_gaussian_evidence_and_posterior(conjugate_hmc):
    assert_matches_conjugate_exact(conjugate_hmc)
    beta = np.asarray(conjugate_hmc.trace.params["beta"])
    n = np.asarray(conjugate_hmc.n_stages)
    for c in range(beta.shape[0]):
        b = beta[c, : n[c]]
        assert np.all(np.diff(b) > 0) and b[-1] == 1.0
        assert np.all(np.isnan(beta[c, n[c]:]))
    acc = np.asarray(conjugate_hmc.trace.move_info["acceptance_rate"])[:, 1:]
    assert np.nanmean(acc) > 0.4  # step size tuned toward 0.65


def test_entropic_resampling_keeps_tempered_smc_unbiased():
    ent = Entropic("epf_ess", ess_threshold=0.6, early_phase=1.0, correct=True)
    smc = SMC(TemperedSMC(zoo.conjugate_gaussian, move="hmc", num_mcmc_steps=3, num_integration_steps=5,
                          resampling=Resampling("systematic", "ess", 0.5, ent)),
              num_particles=1000, num_chains=8)
    smc.run(jax.random.key(1), **CONJ)
    assert np.nanmax(np.asarray(smc.trace.tau)) > 1.0  # entropic flattening really happened
    assert_matches_conjugate_exact(smc)


def test_beta_binomial_evidence():
    smc = SMC(TemperedSMC(zoo.beta_binomial, move="rwm", num_mcmc_steps=5), num_particles=2000, num_chains=4)
    smc.run(jax.random.key(2), n=20, k=7)
    ex = zoo.beta_binomial_exact(20, 7)
    lz = np.asarray(smc.log_evidence, float)
    # 1-d problem, 2000 particles: sd(log Z_hat) ~ 0.02; 0.05 is > 4 standard errors of a single chain
    assert np.all(np.abs(lz - ex["log_evidence"]) < 0.05), (lz, ex)
    # posterior mean of p within 4 se (posterior sd = 0.094, >= 1000 effective draws)
    assert abs(float(np.mean(smc.get_samples()["p"])) - ex["mean"]) < 0.015


def test_constrained_support_evidence_by_quadrature():
    y = np.array([0.5, -1.2, 0.3, 0.8, -0.4, 1.1, -0.2, 0.6])
    ex = zoo.halfnormal_scale_exact(y)
    smc = SMC(TemperedSMC(zoo.halfnormal_scale, move="mala", num_mcmc_steps=5), num_particles=2000, num_chains=4)
    smc.run(jax.random.key(3), y=y)
    lz = np.asarray(smc.log_evidence, float)
    # if the log-Jacobian of sigma = exp(u) were tempered or dropped, log Z would be off by O(1)
    assert np.all(np.abs(lz - ex["log_evidence"]) < 0.05), (lz, ex)
    assert abs(float(np.mean(smc.get_samples()["sigma"])) - ex["mean"]) < 0.02


def test_bimodal_mode_weights_where_nuts_fails():
    ex = zoo.bimodal_exact()
    smc = SMC(TemperedSMC(zoo.bimodal, move="rwm", num_mcmc_steps=10), num_particles=2000, num_chains=4)
    smc.run(jax.random.key(4))
    x = np.asarray(smc.get_samples(group_by_chain=True)["x"])
    frac = (x > 0).mean(axis=1)
    # each chain: binomial sd sqrt(0.21/2000) = 0.010, inflated by resampling; 0.06 is > 4 sd
    assert np.all(np.abs(frac - ex["mode_weights"][1]) < 0.06), frac
    from numpyro.infer import MCMC, NUTS
    mcmc = MCMC(NUTS(zoo.bimodal), num_warmup=300, num_samples=500, progress_bar=False)
    mcmc.run(jax.random.key(0))
    nuts_frac = float((mcmc.get_samples()["x"] > 0).mean())
    assert abs(nuts_frac - ex["mode_weights"][1]) > 0.2  # a single NUTS chain stays in one mode


def test_fixed_schedule_and_factor_override():
    smc = SMC(TemperedSMC(zoo.beta_binomial, move="rwm", schedule=np.linspace(0, 1, 6)[1:], num_mcmc_steps=3),
              num_particles=2000, num_chains=2)
    smc.run(jax.random.key(5), n=20, k=7)
    assert np.all(np.asarray(smc.n_stages) == 5)
    np.testing.assert_allclose(np.asarray(smc.trace.params["beta"])[0, :5], [0.2, 0.4, 0.6, 0.8, 1.0], rtol=1e-6)
    lz = np.asarray(smc.log_evidence)
    assert np.all(np.abs(lz - zoo.beta_binomial_exact(20, 7)["log_evidence"]) < 0.1)


def test_deterministic_sites_and_plates():
    data = zoo.ZOO["eight_schools"].data()
    smc = SMC(TemperedSMC(zoo.eight_schools, move="hmc", num_mcmc_steps=2), num_particles=200)
    smc.run(jax.random.key(6), **data)
    s = smc.get_samples()
    assert s["theta"].shape == (200, 8) and s["eta"].shape == (200, 8) and np.all(np.asarray(s["tau"]) > 0)
    np.testing.assert_allclose(s["theta"], s["mu"][:, None] + s["tau"][:, None] * s["eta"], rtol=1e-4, atol=1e-4)
    assert smc.plan.metadata["dims"]["eta"] == ["school"]


# ------------------------------------------------------------------------------------ clear errors
def _raising_model(y=None):
    numpyro.sample("x", dist.Normal(0, 1))
    raise RuntimeError("boom")


def _no_obs_model():
    numpyro.sample("x", dist.Normal(0, 1))


def _discrete_model(y=None):
    z = numpyro.sample("z", dist.Bernoulli(0.5))
    numpyro.sample("y", dist.Normal(z, 1.0), obs=y)


def test_clear_errors_before_compilation():
    key = jax.random.key(0)
    with pytest.raises(ModelError, match="raised RuntimeError.*boom"):
        SMC(TemperedSMC(_raising_model), 10).run(key, y=1.0)
    with pytest.raises(ModelError, match="no observed sites"):
        SMC(TemperedSMC(_no_obs_model), 10).run(key)
    with pytest.raises(ModelError, match=r"discrete latent site\(s\) \['z'\]"):
        SMC(TemperedSMC(_discrete_model, move="hmc"), 10).run(key, y=1.0)
    with pytest.raises(ModelError, match="NaN or infinite"):
        SMC(TemperedSMC(zoo.halfnormal_scale), 10).run(key, y=np.array([1.0, np.nan]))
    with pytest.raises(ModelError, match="log density of 'conjugate_gaussian'.*Incompatible shapes"):
        SMC(TemperedSMC(zoo.conjugate_gaussian), 10).run(key, dim=3, num_obs=2, y=np.zeros((2, 4)))
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="target_ess"):
            TemperedSMC(zoo.beta_binomial, target_ess=bad)
    with pytest.raises(ValueError, match="num_particles"):
        SMC(TemperedSMC(zoo.beta_binomial), num_particles=0)
    with pytest.raises(ValueError, match="Unknown move"):
        TemperedSMC(zoo.beta_binomial, move="gibbs")
    with pytest.raises(ValueError, match="schedule"):
        TemperedSMC(zoo.beta_binomial, schedule=[0.5, 0.3, 1.0])


def test_blackjax_style_api_composes_with_inner_kernel_tuning():
    import blackjax
    from smcppl.blackjax import adaptive_tempered_smc
    from smcppl.core.resampling import systematic

    y = np.asarray(CONJ["y"])[:, :3]
    ex = zoo.conjugate_gaussian_exact(y=y)

    def logprior(x):
        return jnp.sum(jax.scipy.stats.norm.logpdf(x))

    def loglik(x):
        return jnp.sum(jax.scipy.stats.norm.logpdf(jnp.asarray(y), x))

    def update_fn(key, state, info):
        std = jnp.std(state.particles, axis=0)
        return {"step_size": jnp.array([0.3]), "inverse_mass_matrix": std[None] ** 2,
                "num_integration_steps": jnp.array([5])}

    n = 1000
    alg = blackjax.inner_kernel_tuning(
        smc_algorithm=adaptive_tempered_smc, logprior_fn=logprior, loglikelihood_fn=loglik, target_ess=0.5,
        mcmc_step_fn=blackjax.hmc.build_kernel(), mcmc_init_fn=blackjax.hmc.init, resampling_fn=systematic,
        mcmc_parameter_update_fn=update_fn, num_mcmc_steps=3,
        initial_parameter_value={"step_size": jnp.array([0.3]), "inverse_mass_matrix": jnp.ones((1, 3)),
                                 "num_integration_steps": jnp.array([5])})
    step = jax.jit(alg.step)

    def run(seed):
        key = jax.random.key(seed)
        state = alg.init(jax.random.normal(key, (n, 3)))
        for i in range(100):
            state, info = step(jax.random.fold_in(key, i), state)
            if float(state.sampler_state.tempering_param) >= 1.0:
                break
        return state
    states = [run(s) for s in range(4)]
    lz = np.array([float(s.sampler_state.log_evidence) for s in states])
    # 3-d conjugate model, 1000 particles: sd(log Z_hat) ~ 0.05
    assert np.all(np.abs(lz - ex["log_evidence"]) < 0.25), (lz, ex["log_evidence"])
    # the final particles carry the weights of the last reweighting (BlackJAX's step order)
    mean = np.mean([np.asarray(s.sampler_state.weights) @ np.asarray(s.sampler_state.particles) for s in states],
                   axis=0)
    assert np.max(np.abs(mean - ex["mean"])) < 0.05


SHARDING_SCRIPT = r"""
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np
from smcppl import SMC, TemperedSMC
from smcppl.models import zoo
assert len(jax.devices()) == 4
res = {}
for method in ("vectorized", "sharded", "sequential", "parallel"):
    # in-run tuning: one compilation per method (the pilot's extra run adds nothing to what sharding tests)
    smc = SMC(TemperedSMC(zoo.beta_binomial, move="rwm", num_mcmc_steps=2, tuning="weighted"), num_particles=256,
              num_chains=4, chain_method=method)
    smc.run(jax.random.key(7), n=20, k=7)
    res[method] = (np.asarray(smc.log_evidence), np.asarray(smc.get_samples()["p"]))
np.testing.assert_allclose(res["vectorized"][0], res["sharded"][0], rtol=1e-5)
np.testing.assert_allclose(res["vectorized"][1], res["sharded"][1], rtol=1e-5)
for method in ("sequential", "parallel"):  # parallel = sharded here (4 devices, 4 chains)
    np.testing.assert_allclose(res["vectorized"][0], res[method][0], rtol=1e-4)
    np.testing.assert_allclose(res["vectorized"][1], res[method][1], rtol=1e-4, atol=1e-5)
print("SHARDED_OK")
"""


def test_sharded_chains_equal_vectorized():
    r = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT], capture_output=True, text=True, timeout=600)
    assert "SHARDED_OK" in r.stdout, r.stdout + r.stderr


def test_annealed_langevin_agrees_with_exact_and_tempered(conjugate_hmc):
    from smcppl import AnnealedLangevin

    smc = SMC(AnnealedLangevin(zoo.conjugate_gaussian, num_temperatures=100, adjusted=True), num_particles=1000,
              num_chains=8).run(jax.random.key(8), **CONJ)
    assert_matches_conjugate_exact(smc)
    a, b = np.asarray(smc.log_evidence, float), np.asarray(conjugate_hmc.log_evidence, float)
    # two independent estimators of the same log Z: difference of means within 4 combined standard errors
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean()) < 4 * se + 0.05
    assert smc.plan.attrs["sampler"] == "AnnealedLangevin"


def test_annealed_langevin_num_temperatures_and_its_deprecated_alias():
    """``num_temperatures`` counts the rungs of the linear ladder; ``num_steps`` (its earlier name) still
    works, warns and names the new keyword. Constructors only: nothing is compiled."""
    from smcppl import AnnealedLangevin

    assert np.array_equal(AnnealedLangevin(zoo.conjugate_gaussian, num_temperatures=4).schedule,
                          [0.25, 0.5, 0.75, 1.0])
    with pytest.warns(DeprecationWarning, match="num_temperatures"):
        old = AnnealedLangevin(zoo.conjugate_gaussian, num_steps=4)
    assert np.array_equal(old.schedule, [0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="num_temperatures"):
        AnnealedLangevin(zoo.conjugate_gaussian, num_temperatures=0)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="num_steps"):
        AnnealedLangevin(zoo.conjugate_gaussian, num_steps=0)


def test_waste_free_smc_evidence():
    """2000 particles, chains of P = 3 states: 667 chains, the last one cut to 2 states (N need not be a
    multiple of P). 1-d, so sd(log Z_hat) is a few 0.01: 0.08 is > 3 sd; the posterior mean's Monte Carlo
    error is ~0.1 / sqrt(ESS ~ 500) < 0.005, 0.02 allows for the correlation within chains."""
    smc = SMC(TemperedSMC(zoo.beta_binomial, move="rwm", num_mcmc_steps=3, waste_free=True),
              num_particles=2000, num_chains=2)
    smc.run(jax.random.key(12), n=20, k=7)
    ex = zoo.beta_binomial_exact(20, 7)
    assert np.all(np.abs(np.asarray(smc.log_evidence) - ex["log_evidence"]) < 0.08), smc.log_evidence
    assert abs(float(np.mean(smc.get_samples()["p"])) - ex["mean"]) < 0.02
    assert smc.result.attrs["waste_free"] == 1


def test_default_move_is_waste_free_hmc_from_ten_parameters_and_explicit_settings_keep_the_standard_move():
    """The rule of default_move_length: waste-free HMC chains of 10 states only on models of >= 10
    unconstrained parameters where the user gave neither a transition count, waste_free, max_mcmc_steps nor
    an entropic resampler; the plan's move, resampling and attrs say which ran."""
    def plan_of(alg):  # on the 20-d conjugate model
        return alg.build(100, **CONJ)

    m = zoo.conjugate_gaussian
    plan = plan_of(TemperedSMC(m))
    assert (plan.attrs["waste_free"], plan.attrs["num_mcmc_steps"], plan.resampling.when) == (1, 10, "always")
    small = TemperedSMC(zoo.beta_binomial).build(100, n=20, k=7)  # 1 parameter: the standard move
    assert (small.attrs["waste_free"], small.attrs["num_mcmc_steps"], small.resampling.when) == (0, 5, "ess")
    for kw in ({"num_mcmc_steps": 5}, {"max_mcmc_steps": 20}, {"move": "rwm"}, {"waste_free": False},
               {"resampling": Resampling("systematic", "ess", 0.5, Entropic("epf_ess"))}):
        attrs = plan_of(TemperedSMC(m, **kw)).attrs
        assert attrs["waste_free"] == 0 and attrs["num_mcmc_steps"] == kw.get("num_mcmc_steps", 5), kw
    assert plan_of(TemperedSMC(m, waste_free=True, num_mcmc_steps=4)).attrs["num_mcmc_steps"] == 4
    assert TemperedSMC(zoo.beta_binomial, waste_free=True).build(100, n=20, k=7).attrs["waste_free"] == 1
    with pytest.raises(ValueError, match="waste_free=True .* entropic"):
        TemperedSMC(m, waste_free=True, resampling=Resampling("systematic", "ess", 0.5, Entropic("epf_ess")))


def test_waste_free_hmc_adapts_its_step_and_stays_exact():
    """Waste-free HMC started with a step size 3 whitened units long (acceptance near 0 in 20-d): the pilot
    adapts the step within each stage (the chains run side by side, one transition of all at a time), so
    the chains move with the pilot's smaller steps, accept often, and log Z and the posterior match the
    exact ones. Tolerances as the conjugate checks above: 4 se of the 4 chains' mean log Z plus the
    Jensen bias var/2 (+0.05); posterior mean within 0.08 of the exact one (posterior sd 0.30; 4000 draws
    from chains of 10 correlated states, so >= 400 effective: se <= 0.015, and 0.08 > 5 se)."""
    smc = SMC(TemperedSMC(zoo.conjugate_gaussian, waste_free=True, num_mcmc_steps=10, step_size=3.0),
              num_particles=1000, num_chains=4, progress_bar=False)
    smc.run(jax.random.key(5), **CONJ)
    n = int(np.asarray(smc.n_stages)[0])
    info = smc.trace.move_info
    steps = np.asarray(info["step_size"], float)[:, 1:n]
    acc = np.asarray(info["acceptance_rate"], float)[:, 1:n]
    assert steps.max() < 1.5, steps[0]  # shrunk from 3
    assert acc.min() > 0.3, acc
    assert_matches_conjugate_exact(smc, mean_tol=0.08)


def test_chains_vmapped_equal_chains_one_at_a_time():
    from smcppl.runner import make_run_one

    smc = SMC(TemperedSMC(zoo.beta_binomial, move="rwm", num_mcmc_steps=2), num_particles=300, num_chains=3)
    smc.run(jax.random.key(13), n=20, k=7)
    run_one = make_run_one(smc.plan, smc.resampling_used)
    keys = jax.random.split(jax.random.key(13), 3)  # the per-chain keys SMC.run derives from its key
    single = jax.jit(run_one)
    for i in range(3):
        out, draws, _, _ = single(keys[i], smc.plan.data)
        np.testing.assert_allclose(np.asarray(out.log_evidence), np.asarray(smc.log_evidence[i]), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(draws["p"]), np.asarray(smc.get_samples(True)["p"][i]), rtol=1e-5)


def test_move_settings_num_mcmc_steps_and_its_deprecated_alias():
    """MoveSettings' field is num_mcmc_steps; ``num_steps`` (its earlier name) still works as a keyword and
    an attribute, warning and naming the new one. No compilation."""
    from smcppl.kernels.moves import MoveSettings, validate_move

    assert validate_move(MoveSettings("rwm", 4)).num_mcmc_steps == 4
    with pytest.warns(DeprecationWarning, match="num_mcmc_steps"):
        old = MoveSettings("rwm", num_steps=4)
    assert old == MoveSettings("rwm", num_mcmc_steps=4)
    with pytest.warns(DeprecationWarning, match="num_mcmc_steps"):
        assert old.num_steps == 4
    with pytest.raises(ValueError, match="num_mcmc_steps"):
        validate_move(MoveSettings(num_mcmc_steps=0))
