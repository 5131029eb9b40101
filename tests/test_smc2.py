"""SMC² (smcppl.inference.state_space.SMC2) on the linear-Gaussian model ``lg_model`` (``a ~ U(-1, 1)``, the
only static parameter) against the exact posterior and evidence on a grid (Kalman likelihood).

One run of 8 chains is shared by the tests (module fixture: one compile); the rejuvenation-off variant
compiles a second, much smaller program."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.contrib.control_flow import scan

from smcppl.inference.state_space import SMC2, StateSpaceModelError
from smcppl.models.state_space import LinearGaussian, lg_model, simulate
from smcppl.runner import SMC

from lg_grid import lg_grid_posterior

A, Q, R = 0.9, 0.5, 1.0
S0 = Q / (1 - A**2)
T, N_THETA, N_X, CHAINS = 50, 512, 64, 8
_, YS = simulate(LinearGaussian(np.eye(1) * A, np.eye(1) * Q, np.eye(1), np.eye(1) * R, np.eye(1) * (A**2 * S0 + Q)),
                 T, seed=5)
Y = jnp.asarray(YS[:, 0], jnp.float32)


@pytest.fixture(scope="module")
def exact():
    return lg_grid_posterior(YS, Q, R, num=801)  # (mean, sd, log p(y)); grid step 0.0025 << posterior sd 0.04


@pytest.fixture(scope="module")
def run():
    return SMC(SMC2(lg_model, num_state_particles=N_X), num_particles=N_THETA, num_chains=CHAINS).run(
        jax.random.key(0), Y)


def test_posterior_of_a_matches_the_grid(run, exact):
    mean, sd, _ = exact
    a = run.get_samples(group_by_chain=True)["a"]
    assert a.shape == (CHAINS, N_THETA)
    chain_mean, chain_sd = a.mean(1), a.std(1)
    # The chains are independent runs: the Monte Carlo standard error of the pooled mean is the spread of the
    # chain means / sqrt(chains); 4 MCSE (t with 7 df: a false alarm has probability ~0.5%). The O(1/N)
    # bias of SMC is far below (calibration runs: |z| < 1.7 over 3 seeds).
    mcse = chain_mean.std(ddof=1) / np.sqrt(CHAINS)
    assert abs(chain_mean.mean() - mean) < 4 * mcse, (chain_mean, mean, mcse)
    # The posterior sd within 10%: its relative Monte Carlo error is ~1/sqrt(2 ESS) ~ 2% with ~300 distinct
    # draws per chain and 8 chains; 10% is about 4 of those (calibration runs: +1.0% to +1.5%).
    assert abs(chain_sd.mean() / sd - 1) < 0.1, (chain_sd, sd)


def test_log_evidence_matches_the_grid(run, exact):
    log_z = np.asarray(run.log_evidence, float)
    assert log_z.shape == (CHAINS,)
    # Z_hat is unbiased: Z_hat / p(y) averages to 1 within 4 standard errors of the chains (a biased estimator
    # such as exp(E log Z_hat) sits Var(log Z_hat) / 2 below), and each log Z_hat is within 4 sd of the truth.
    ratio = np.exp(log_z - exact[2])
    assert abs(ratio.mean() - 1) < 4 * ratio.std(ddof=1) / np.sqrt(CHAINS) + 1e-3, (log_z, exact[2])
    assert np.all(np.abs(log_z - exact[2]) < 4 * log_z.std(ddof=1) + 1e-3), (log_z, exact[2])
    assert log_z.std(ddof=1) < 0.5  # the health check's spread bound is 1 nat; calibration runs: 0.08-0.13


def test_acceptance_rate_is_recorded_at_the_resampling_stages(run):
    acc = np.asarray(run.trace.move_info["acceptance_rate"], float)  # [chains, stages]
    resampled = np.asarray(run.trace.resampled, bool)
    assert acc.shape == (CHAINS, T) and resampled[:, 1:].sum() >= CHAINS  # every chain rejuvenated at least once
    assert np.all(np.isfinite(acc) == resampled)  # NaN exactly where nothing was rejuvenated (stage 0 included)
    assert np.all((acc[resampled] > 0) & (acc[resampled] <= 1)), acc[resampled]
    stats = run.to_arviz()
    post = stats["posterior"] if hasattr(stats, "children") else stats.posterior
    smc_stats = stats["smc_stats"] if hasattr(stats, "children") else stats.smc_stats
    assert post["a"].dims == ("chain", "draw") and post["a"].shape == (CHAINS, N_THETA)
    np.testing.assert_array_equal(np.asarray(smc_stats["acceptance_rate"].values, float), acc)
    assert smc_stats["ess"].dims == ("chain", "stage")
    assert not run.health.flags, run.health


def test_without_rejuvenation_the_parameters_degenerate():
    """num_mcmc_steps=0: importance sampling from the prior, whose resampled copies are never moved apart;
    the distinct values of a fall from ~2/3 of N_theta (with rejuvenation, see the fixture run) to ~1/10.
    The same program runs new data of the same shape without compiling again."""
    smc = SMC(SMC2(lg_model, num_state_particles=N_X, num_mcmc_steps=0), num_particles=N_THETA, num_chains=2)
    a = smc.run(jax.random.key(0), Y).get_samples(group_by_chain=True)["a"]
    distinct = [len(np.unique(x)) for x in a]
    assert all(d < 0.2 * N_THETA for d in distinct), distinct
    # the health check's distinct-draw count is over the parameters (Plan.draw_identity), not the inner
    # filters they carry (whose states differ between copies after one more step), and it flags the collapse
    np.testing.assert_array_equal(np.asarray(smc.result.draw_stats["n_unique"]), distinct)
    assert ("collapse" in {f.check for f in smc.health.flags}) == (min(distinct) < 0.1 * N_THETA)
    assert np.all(np.isnan(np.asarray(smc.trace.move_info["acceptance_rate"])))
    log_z = np.asarray(smc.log_evidence)
    smc.run(jax.random.key(0), 0.5 * Y)
    assert smc.timing["reused_compiled"] == 1
    assert np.all(np.asarray(smc.log_evidence) != log_z)


def test_rejuvenation_keeps_the_parameters_diverse(run):
    a = run.get_samples(group_by_chain=True)["a"]
    assert all(len(np.unique(x)) > 0.4 * N_THETA for x in a), [len(np.unique(x)) for x in a]


def _no_parameter(y):
    def body(x, y_t):
        x = numpyro.sample("x", dist.Normal(0.9 * x, 1.0))
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y_t)
        return x, None

    scan(body, 0.0, y)


def test_bad_input_raises_naming_the_argument():
    with pytest.raises(ValueError, match="num_state_particles must be a positive integer"):
        SMC2(lg_model, num_state_particles=0)
    with pytest.raises(ValueError, match="num_mcmc_steps must be a positive integer"):
        SMC2(lg_model, num_mcmc_steps=-1)
    with pytest.raises(ValueError, match="scale must be positive"):
        SMC2(lg_model, scale=0.0)
    with pytest.raises(TypeError, match="SMC2 takes a NumPyro model"):
        SMC2(None)
    with pytest.raises(StateSpaceModelError, match="no static parameter.*nothing for SMC2 to sample"):
        SMC2(_no_parameter).build(8, Y)
    with pytest.raises(StateSpaceModelError, match="has no numpyro.contrib.control_flow.scan"):
        SMC2(lambda y: numpyro.sample("a", dist.Normal(0, 1))).build(8, Y)
