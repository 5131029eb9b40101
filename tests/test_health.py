"""Runs that cannot be vouched for are flagged (issue 10), honest Monte Carlo error, divergences in
every kernel and corrected entropic resampling by default in the tempered samplers (issue 11)."""
import io
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from smcppl import SMC, AnnealedLangevin, Entropic, Resampling, SMCHealthWarning, TemperedSMC
from smcppl.core.entropic import with_entropic_correction
from smcppl.diagnostics.mcse import lineage_mcse
from smcppl.models import zoo

CONJ2 = zoo.conjugate_gaussian_data(dim=2, num_obs=10, seed=3)
CONJ2_EXACT = zoo.conjugate_gaussian_exact(**CONJ2)
CONJ20 = zoo.conjugate_gaussian_data(dim=20, num_obs=10, seed=0)


def _flags(smc):
    return {f.check for f in smc.health.flags}


# ------------------------------------------------------------------------------------ honest MCSE
@pytest.fixture(scope="module")
def many_runs():
    """128 independent runs (chains) of the default sampler on a 2-d conjugate model."""
    smc = SMC(TemperedSMC(zoo.conjugate_gaussian, num_mcmc_steps=2, num_integration_steps=3),
              num_particles=400, num_chains=128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SMCHealthWarning)
        return smc.run(jax.random.key(7), **CONJ2)


def test_lineage_mcse_covers_the_true_error_at_its_nominal_rate(many_runs):
    draws = np.asarray(many_runs.get_samples(group_by_chain=True)["theta"], float)  # [128, 400, 2]
    lineage = np.asarray(many_runs.draw_stats["lineage"])
    covered, naive_covered = [], []
    for c in range(draws.shape[0]):
        mean, mcse, _ = lineage_mcse(draws[c:c + 1], lineage[c:c + 1])
        err = np.abs(mean - CONJ2_EXACT["mean"])
        covered.extend(err <= 2 * mcse)
        naive_covered.extend(err <= 2 * draws[c].std(0) / np.sqrt(draws.shape[1]))
    rate, naive = np.mean(covered), np.mean(naive_covered)
    # 256 intervals (128 runs x 2 coordinates) of nominal 95.4%: binomial sd ~1.3%, so an honest MCSE
    # lands in [0.90, 0.99] (more than 3.5 sd of slack at each end). (The MCSE that treats resampled
    # copies as independent draws covers less; on this well-mixed 2-d model only a little: ~0.91.)
    assert 0.90 <= rate <= 0.99, (rate, naive)


def test_draws_of_one_lineage_are_contiguous_so_arviz_sees_their_correlation(many_runs):
    lineage = np.asarray(many_runs.draw_stats["lineage"])[:4]
    for row in lineage:
        changes = np.count_nonzero(np.diff(row))
        assert changes == len(np.unique(row)) - 1  # each cluster is one block
        blocks = row[np.r_[0, np.flatnonzero(np.diff(row)) + 1]]
        assert not np.all(np.diff(blocks) > 0)  # in a random order, not sorted by lineage id
    uniq = np.asarray(many_runs.draw_stats["n_unique"])
    assert np.all((uniq > 0.2 * 400) & (uniq <= 400))


# ------------------------------------------------------------------------------------ collapse is flagged
@pytest.fixture(scope="module")
def collapsed():
    """HMC with a step far too large and no adaptation: every move is rejected, resampling leaves copies."""
    alg = TemperedSMC(zoo.conjugate_gaussian, step_size=40.0, adapt_step_size=False, num_mcmc_steps=2,
                      num_integration_steps=3)
    smc = SMC(alg, num_particles=200, num_chains=2)
    with pytest.warns(SMCHealthWarning) as record:
        smc.run(jax.random.key(0), **CONJ20)
    return smc, record


def test_collapsed_run_is_flagged_everywhere(collapsed, tmp_path):
    smc, record = collapsed
    assert not smc.health.ok
    assert {"collapse", "divergences", "stuck_moves"} <= _flags(smc), _flags(smc)
    assert any("[collapse]" in str(w.message) for w in record)
    buf = io.StringIO()
    smc.print_summary(file=buf)
    assert "WARNING [collapse]" in buf.getvalue() and "all checks passed" not in buf.getvalue()
    tree = smc.to_arviz()
    attrs = tree.attrs if hasattr(tree, "children") else tree.posterior.attrs
    assert attrs["health_ok"] == 0 and "collapse" in attrs["health_flags"]
    # the checks are recomputed from a reloaded file
    from smcppl.diagnostics import load_netcdf, save_netcdf
    from smcppl.diagnostics.summary import health_report

    loaded = load_netcdf(save_netcdf(smc, tmp_path / "run.nc"))
    assert "collapse" in {f.check for f in health_report(loaded).flags}


def test_healthy_run_passes(many_runs):
    assert many_runs.health.ok, many_runs.health


def _rhat_stats(chains):
    import xarray as xr
    return xr.Dataset({"n_stages": ("chain", np.ones(chains, int)), "log_evidence": ("chain", np.zeros(chains)),
                       "beta": (("chain", "stage"), np.ones((chains, 1)))}, attrs={"num_particles": 0})


def test_too_few_distinct_draws_are_flagged_whatever_the_number_of_particles():
    """A fraction-based collapse check passes a tiny population (N = 2 ran with a log Z 33 nats off and every check
    passed): fewer than MIN_DISTINCT_DRAWS distinct draws is flagged on its own."""
    from smcppl.diagnostics.health import MIN_DISTINCT_DRAWS, check_health

    stats = _rhat_stats(2)
    stats["n_unique_draws"] = ("chain", np.array([MIN_DISTINCT_DRAWS - 1, MIN_DISTINCT_DRAWS]))
    stats.attrs.update(num_particles=100, continuous_state=1)
    report = check_health(stats)
    assert [(f.check, "chain(s) [0]" in f.message) for f in report.flags] == [("few_draws", True)], report
    stats.attrs.update(num_particles=1000)  # 19 of 1000 is a collapse, flagged as such (not twice)
    assert [f.check for f in check_health(stats).flags] == ["collapse"]
    stats.attrs.update(continuous_state=0)  # copies are expected of discrete states (sequence filters)
    assert check_health(stats).ok


def test_rhat_bound_tightens_with_the_draws_per_chain():
    """Four chains whose centres are 0.2 sd apart (split R-hat ~1.02-1.03): by chance with 300 draws per
    chain (R-hat^2 - 1 ~ 1/ESS_chain, bound 1.05), not with 2000 (bound 1.01, which a fixed 1.05 missed:
    guided diffusion runs as far off as the uncorrected sampler had R-hat 1.012-1.069, see
    ``tests/test_correctors.py``). Draws are fixed normal quantiles, so the R-hats are deterministic."""
    from scipy.special import ndtri

    from smcppl.diagnostics.health import MAX_RHAT, MIN_RHAT, check_health, rhat_bound, split_rhat

    assert rhat_bound(100) == rhat_bound(390) == MAX_RHAT and rhat_bound(2000) == rhat_bound(10**6) == MIN_RHAT
    assert abs(rhat_bound(1000) - np.sqrt(1.04)) < 1e-12
    shift = np.array([0.2, -0.2, 0.2, -0.2])[:, None]
    for n, flagged in [(300, False), (2000, True)]:
        z = ndtri((np.arange(n) + 0.5) / n)
        draws = shift + np.random.default_rng(0).permuted(np.tile(z, (4, 1)), axis=1)
        r = split_rhat(draws)
        assert 1.015 < r < MAX_RHAT, r
        report = check_health(_rhat_stats(4), {"x": draws})
        assert ("rhat" in {f.check for f in report.flags}) == flagged, (n, r, report)
    same = np.random.default_rng(1).permuted(np.tile(z, (4, 1)), axis=1)
    assert check_health(_rhat_stats(4), {"x": same}).ok


# ------------------------------------------------------------------------------------ divergences in every kernel
def test_unstable_ula_is_detected_and_flagged():
    """ULA at whitened step 5 is unstable (|1 - h| > 1 on a Gaussian): states explode and log Z is far off.
    Before, the ULA kernel always reported 'no divergence' and acceptance 1, and the run looked healthy."""
    alg = AnnealedLangevin(zoo.conjugate_gaussian, num_temperatures=10, adjusted=False, step_size=5.0)
    smc = SMC(alg, num_particles=100, num_chains=1)
    with pytest.warns(SMCHealthWarning, match="unstable_ula"):
        smc.run(jax.random.key(1), **CONJ2)
    n = int(smc.n_stages[0])
    assert np.asarray(smc.trace.move_info["divergences"])[0, 1:n].max() > 10
    assert np.nanmin(np.asarray(smc.trace.move_info["acceptance_rate"])[0, 1:n]) < 0.02


# ------------------------------------------------------------------------------------ models users write
def _nuts_means(model, **data):
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(model), num_warmup=400, num_samples=600, progress_bar=False)
    mcmc.run(jax.random.key(3), **data)
    s = mcmc.get_samples()
    return {k: (np.asarray(v).mean(0), np.asarray(v).std(0)) for k, v in s.items()}


def _agrees_or_flagged(smc, ref, names):
    samples = smc.get_samples()
    close = all(np.all(np.abs(np.asarray(samples[k]).mean(0) - ref[k][0]) < 0.2 * ref[k][1] + 1e-6) for k in names)
    if not close:
        assert not smc.health.ok, "posterior means disagree with NUTS but the run reports itself healthy"
    if np.min(np.asarray(smc.draw_stats["n_unique"])) < 0.1 * smc.num_particles:
        assert "collapse" in _flags(smc)


RNG = np.random.default_rng(1)
MIX_Y = np.concatenate([RNG.normal(-2, 1, 60), RNG.normal(2.5, 1, 40)])


def ordered_mixture(y):
    mu = numpyro.sample("mu", dist.TransformedDistribution(dist.Normal(0, 3).expand([2]),
                                                           dist.transforms.OrderedTransform()))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    comps = jnp.stack([jnp.log(0.6) + dist.Normal(mu[0], sigma).log_prob(y),
                       jnp.log(0.4) + dist.Normal(mu[1], sigma).log_prob(y)])
    numpyro.factor("lik", jax.scipy.special.logsumexp(comps, axis=0))


COUNTS = np.array([12, 30, 18])
MVN_Y = RNG.multivariate_normal(np.zeros(3), [[1, 0.5, 0.2], [0.5, 1, 0.3], [0.2, 0.3, 1]], size=40)


def simplex_lkj(counts, y):
    p = numpyro.sample("p", dist.Dirichlet(jnp.ones(3)))
    numpyro.sample("counts", dist.Multinomial(60, p), obs=counts)
    L = numpyro.sample("L", dist.LKJCholesky(3, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([3]).to_event(1))
    with numpyro.plate("obs", y.shape[0]):
        numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(3), scale_tril=sigma[:, None] * L), obs=y)


@pytest.mark.slow
@pytest.mark.parametrize("model,data,names", [
    (ordered_mixture, {"y": MIX_Y}, ["mu", "sigma"]),
    (simplex_lkj, {"counts": COUNTS, "y": MVN_Y}, ["p", "L", "sigma"]),
], ids=["ordered_mixture", "simplex_lkj"])
def test_constrained_models_agree_with_nuts_or_are_flagged(model, data, names):
    smc = SMC(TemperedSMC(model), num_particles=1000, num_chains=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SMCHealthWarning)
        smc.run(jax.random.key(0), **data)
    # 0.2 NUTS sd: the NUTS mean's own error is ~0.05 sd (600 draws, ESS >= 400), the SMC means' ~0.03 sd
    _agrees_or_flagged(smc, _nuts_means(model, **data), names)


def test_bimodal_demo_model_no_longer_diverges():
    """The demo's bimodal posterior: the whole population's covariance spans both narrow modes, so the
    incoming HMC step size is ~4x too large for either mode; before the step size was adapted during each
    pilot stage, 1999 of 2000 particles diverged at every stage (acceptance 0.04-0.08)."""
    smc = SMC(TemperedSMC(zoo.bimodal), num_particles=1000, num_chains=2)
    smc.run(jax.random.key(0))
    n = int(smc.n_stages.min())
    div = np.asarray(smc.trace.move_info["divergences"])[:, 1:n]
    acc = np.asarray(smc.trace.move_info["acceptance_rate"])[:, 1:n]
    assert div.max() < 0.05 * 1000 and acc.min() > 0.3, (div, acc)
    assert smc.health.ok, smc.health


# Documented bound (smcppl/diagnostics/health.py, benchmarks/README.md): with the default move, on every zoo
# model, at most 15% of all MCMC transitions diverge and no stage has more than half of its transitions
# divergent or more than half of its weight on them (the health check's threshold). Measured at N = 1000,
# 4 chains: hierarchical_normal (centred, a funnel) 8.7% overall and 0.39 at worst, the others <= 6%.
ZOO_DIVERGENT_SHARE_BOUND = 0.15


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_default_move_divergences_under_the_bound_on_every_zoo_model(name):
    entry = zoo.ZOO[name]
    smc = SMC(TemperedSMC(entry.model), num_particles=1000, num_chains=2)
    smc.run(jax.random.key(0), **entry.data())
    n = np.asarray(smc.n_stages)
    stages = np.arange(smc.trace.move_info["divergences"].shape[1])[None]
    moved = (stages >= 1) & (stages < n[:, None])  # stage 0 is the initialisation: no move
    div = np.where(moved, np.asarray(smc.trace.move_info["divergences"], float), 0.0) / 1000
    weight = np.where(moved, np.asarray(smc.trace.summary["divergent_weight"], float), 0.0)
    share = div.sum() / max(moved.sum(), 1)
    assert share <= ZOO_DIVERGENT_SHARE_BOUND, (name, share)
    assert div.max() <= 0.5 and weight.max() <= 0.5, (name, div.max(), weight.max())
    assert "divergences" not in [f.check for f in smc.health.flags], smc.health


# ------------------------------------------------------------------------------------ entropic correction
def test_entropic_defaults_to_corrected_where_log_z_is_estimated():
    res = Resampling("systematic", "ess", 0.5, Entropic())
    assert Entropic().correct is None
    assert TemperedSMC(zoo.beta_binomial, resampling=res).resampling.entropic.correct is True
    assert AnnealedLangevin(zoo.beta_binomial, resampling=res).resampling.entropic.correct is True
    with pytest.warns(UserWarning, match="not an unbiased estimate"):
        TemperedSMC(zoo.beta_binomial, resampling=res._replace(entropic=Entropic(correct=False)))
    with pytest.warns(UserWarning, match="not an unbiased estimate"):
        with_entropic_correction(res._replace(entropic=Entropic(correct=False)), "tempered_smc")


def test_default_entropic_tempered_evidence_is_unbiased():
    """Two-rung ladder [0.3, 1] with entropic flattening at every resampling: E[Z_hat] / Z over 400
    independent runs. Corrected (the default now): within 3.5 standard errors of 1. The faithful rule
    (explicit correct=False) is biased by several standard errors here (the test's power check)."""
    exact = zoo.beta_binomial_exact(20, 7)["log_evidence"]
    ent = Entropic("epf_linear", ess_threshold=1.0, early_phase=1.0, v_max=3.0)

    def ratio(entropic):
        alg = TemperedSMC(zoo.beta_binomial, schedule=[0.3, 1.0], move="rwm", num_mcmc_steps=1, tuning="weighted",
                          resampling=Resampling("systematic", "always", 0.5, entropic))
        smc = SMC(alg, num_particles=16, num_chains=400)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            smc.run(jax.random.key(11), n=20, k=7)
        r = np.exp(np.asarray(smc.log_evidence, float) - exact)
        return r.mean(), r.std(ddof=1) / np.sqrt(r.size)

    m, se = ratio(ent)
    assert abs(m - 1) < 3.5 * se, (m, se)
    m_raw, se_raw = ratio(ent._replace(correct=False))
    assert abs(m_raw - 1) > 3.5 * se_raw, (m_raw, se_raw)


# ------------------------------------------------------------------------------------ clear errors
def test_clear_errors_for_common_mistakes():
    with pytest.raises(TypeError, match=r"SMC\(TemperedSMC\(beta_binomial\)"):
        SMC(zoo.beta_binomial, num_particles=100)  # the model instead of an algorithm
    with pytest.raises(ValueError, match="at least 2"):
        SMC(TemperedSMC(zoo.beta_binomial), num_particles=1)
    assert TemperedSMC(zoo.beta_binomial, move="HMC").move.kind == "hmc"  # move names are case-insensitive
    with pytest.raises(ValueError, match="Unknown move"):
        TemperedSMC(zoo.beta_binomial, move="gibbs")
