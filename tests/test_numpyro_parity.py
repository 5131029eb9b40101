"""NumPyro habits work on SMC runs (issue 14): print_summary(prob, exclude_deterministic), get_extra_fields,
posterior predictive (ArviZ's posterior_predictive group), save/reload, pickling refused with the way out,
NumPyro's chain-method names, array inputs the model turns into Python values, and one progress bar."""
import contextlib
import io
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from smcppl import SMC, ModelError, TemperedSMC
from smcppl.diagnostics import load_netcdf, print_summary
from smcppl.diagnostics.export import arviz_major_version

X = np.linspace(-1.0, 1.0, 30)
Y = 0.7 * X + 0.3 * np.random.default_rng(0).normal(size=30)


def line(x, y=None):
    w = numpyro.sample("w", dist.Normal(0, 1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1))
    mu = numpyro.deterministic("mu", w * x)
    with numpyro.plate("obs", len(x)):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


@pytest.fixture(scope="module")
def run():
    """One compiled run shared by the tests (with the progress bar on, its text captured)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        smc = SMC(TemperedSMC(line), num_particles=500, num_chains=2, progress_bar=True)
        smc.run(jax.random.key(0), X, y=Y)
    return smc, err.getvalue()


def test_progress_bar_one_bar_with_compiling_pilot_and_chains(run):
    _, text = run
    for phase in ("compiling", "pilot", "chain 1/2", "chain 2/2", "beta 1.000", "100%"):
        assert phase in text, (phase, text[-500:])


def test_print_summary_prob_and_exclude_deterministic(run):
    smc, _ = run
    table = smc.print_summary(prob=0.8, file=io.StringIO())
    assert list(table.index) == ["w", "sigma"]  # deterministic "mu" left out, as NumPyro does
    assert "mcse_smc" in table.columns
    # the prob-mass highest-density interval, named as each ArviZ generation names it
    hdi = {"hdi_10%", "hdi_90%"} if arviz_major_version() < 1 else {"hdi80_lb", "hdi80_ub"}
    assert hdi <= set(table.columns), table.columns
    full = smc.print_summary(exclude_deterministic=False, file=io.StringIO())
    assert len(full.index) == 2 + len(X)  # w, sigma and the 30 components of mu


def test_get_extra_fields(run):
    smc, _ = run
    flat, grouped = smc.get_extra_fields(), smc.get_extra_fields(group_by_chain=True)
    assert {"lp", "acceptance_rate", "diverging", "lineage"} <= set(flat)
    assert flat["lp"].shape == (1000,) and grouped["lp"].shape == (2, 500)
    assert np.all(np.isfinite(flat["lp"]))


def test_posterior_predictive_fills_the_arviz_group(run):
    smc, _ = run
    pp = smc.posterior_predictive(jax.random.key(1), X)
    assert pp["y"].shape == (2, 500, len(X))
    # y_rep = mu + sigma * eps with the posterior draw's mu: the mean over 1000 draws of y_rep - mu has sd
    # sigma / sqrt(ESS) ~ 0.3 / sqrt(100) = 0.03 even if copies cut the ESS to 100; 0.15 is 5 sd
    mu = np.asarray(smc.get_samples(group_by_chain=True)["mu"])
    assert np.max(np.abs((pp["y"] - mu).mean(axis=(0, 1)))) < 0.15
    data = smc.to_arviz()
    groups = set(data.children) if arviz_major_version() >= 1 else set(data.groups())
    assert {"posterior_predictive", "observed_data"} <= groups
    import arviz as az
    import matplotlib.pyplot as plt

    plot_ppc = az.plot_ppc if arviz_major_version() < 1 else az.plot_ppc_dist  # ArviZ 1.x's name
    plot_ppc(data)
    plt.close("all")


def test_save_reload_and_pickle_refused(run, tmp_path):
    smc, _ = run
    path = smc.save(tmp_path / "run.nc")
    live = smc.print_summary(file=io.StringIO())
    loaded = print_summary(load_netcdf(path), file=io.StringIO())
    np.testing.assert_allclose(loaded["mean"].values, live["mean"].values, rtol=1e-6)
    assert list(loaded.index) == list(live.index)
    assert loaded.attrs["health"].ok == live.attrs["health"].ok
    with pytest.raises(TypeError, match="save"):
        pickle.dumps(smc)


def test_chain_method_names():
    with pytest.raises(ValueError, match="chain_method"):
        SMC(TemperedSMC(line), 100, 2, chain_method="pmap")
    from smcppl.runner import resolve_chain_method

    assert resolve_chain_method("parallel", 2) == ("sharded" if jax.device_count() > 1 else "sequential")
    assert resolve_chain_method(None, 4) == ("sequential" if jax.default_backend() == "cpu" else "vectorized")
    assert resolve_chain_method(None, 400) == "vectorized"


def multinomial(counts):
    p = numpyro.sample("p", dist.Dirichlet(jnp.ones(3)))
    numpyro.sample("obs", dist.Multinomial(int(counts.sum()), p), obs=counts)  # needs a concrete total


def test_model_that_needs_a_concrete_input_runs_like_nuts():
    counts = np.array([12, 5, 3])
    smc = SMC(TemperedSMC(multinomial, move="rwm", num_mcmc_steps=5), 1000, 2).run(jax.random.key(0), counts)
    # Dirichlet(1 + counts) posterior: mean (counts + 1) / 23, sd <= 0.1; 2000 draws with ESS >= 200 give
    # se <= 0.007, so 0.03 is > 4 se
    exact = (counts + 1) / (counts.sum() + 3)
    np.testing.assert_allclose(np.asarray(smc.get_samples()["p"]).mean(0), exact, atol=0.03)


def test_latent_value_in_python_control_flow_is_named():
    def branchy(y):
        s = numpyro.sample("s", dist.HalfNormal(1))
        if s > 1:  # Python control flow on a latent value: cannot be compiled
            s = s * 2
        numpyro.sample("y", dist.Normal(0, s), obs=y)

    with pytest.raises(ModelError, match="jnp.where"):
        SMC(TemperedSMC(branchy), 100).run(jax.random.key(0), np.ones(3))
