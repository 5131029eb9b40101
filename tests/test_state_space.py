"""Particle filters for state-space models (smcppl.inference.state_space) against the Kalman filter.

One 1-d linear-Gaussian model ``x_t = a x_{t-1} + N(0, q)``, ``y_t = x_t + N(0, r)`` with a stationary
initial state, declared twice: as a NumPyro model with ``scan`` and in the lower-level StateSpace form.
Compiled programs are shared through module fixtures (each costs a compile)."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.contrib.control_flow import scan

from smcppl.inference.state_space.filter import StateSpaceFilter
from smcppl.inference.state_space.scan import StateSpaceModelError, inspect_scan_model
from smcppl.inference.state_space.pgibbs import ParticleGibbs
from smcppl.inference.state_space.pmmh import PMMH
from smcppl.inference.state_space.scan import scan_state_space
from smcppl.inference.state_space.smoothing import smooth
from smcppl.inference.state_space.export import filtering_dataset, paths_dataset, plot_filtering
from smcppl.models.state_space import LinearGaussian, StateSpace, kalman_filter, kalman_smoother, simulate
from smcppl.models.state_space import lg_model as lg_zoo  # a ~ U(-1, 1) the only static parameter
from smcppl.core.engine import SMCError
from smcppl.runner import SMC

from lg_grid import lg_grid_posterior

A, Q, R = 0.9, 0.5, 1.0
S0 = Q / (1 - A**2)  # stationary variance of x_init
LG = LinearGaussian(np.eye(1) * A, np.eye(1) * Q, np.eye(1), np.eye(1) * R, np.eye(1) * (A**2 * S0 + Q))
T, N, CHAINS = 20, 256, 64
_, YS = simulate(LG, T, seed=5)  # no observation beyond 1.8 predictive sd: no health warnings
Y = jnp.asarray(YS[:, 0], jnp.float32)
KF_MEAN, KF_COV, KF_LL = kalman_filter(LG, YS)


def lg_model(y):
    a = numpyro.sample("a", dist.Uniform(-1, 1))
    q = numpyro.sample("q", dist.HalfNormal(1.0))
    x_init = numpyro.sample("x_init", dist.Normal(0.0, jnp.sqrt(q / (1 - a**2))))

    def body(x, y_t):
        x = numpyro.sample("x", dist.Normal(a * x, jnp.sqrt(q)))
        numpyro.sample("y", dist.Normal(x, R), obs=y_t)
        return x, None

    scan(body, x_init, y)


THETA = {"a": jnp.float32(A), "q": jnp.float32(Q)}


def _sub(key):
    """The key NumPyro's seed handler gives the first sample site under ``handlers.seed(key)``."""
    return jax.random.split(key)[1]


def lg_lower(population=True):
    """The same model in the lower-level form, drawing with the keys the scan form uses (documented in
    scan_state_space: initial-state sites under seed(k_init), each body step under seed(k); with
    ``population``, the body of every particle at once under seed(k), as the scan form runs a body that
    broadcasts)."""
    a, q = THETA["a"], THETA["q"]

    def sample_initial(key, u):
        k_init, k_step = jax.random.split(key)
        x_init = dist.Normal(0.0, jnp.sqrt(q / (1 - a**2))).sample(_sub(k_init))
        return dist.Normal(a * x_init, jnp.sqrt(q)).sample(_sub(k_step))

    def sample_transition(key, x, u, t):
        return dist.Normal(a * x, jnp.sqrt(q)).sample(_sub(key))

    def log_observation(x, u, t):
        return dist.Normal(x, R).log_prob(u)

    def population_step(key, x, u, t):  # the scan form's vectorized body: N draws under seed(key)
        x = dist.Normal(a * x, jnp.sqrt(q)).sample(_sub(key))
        return x, log_observation(x, u, t)

    return StateSpace(sample_initial, sample_transition, log_observation,
                      log_transition=lambda xp, x, u, t: dist.Normal(a * xp, jnp.sqrt(q)).log_prob(x), inputs=Y,
                      population_step=population_step if population else None)


def _run(algorithm, *args, key=0):
    return SMC(algorithm, num_particles=N, num_chains=CHAINS, chain_method="sequential").run(jax.random.key(key), *args)


@pytest.fixture(scope="module")
def scan_run():
    return _run(StateSpaceFilter(lg_model, theta=THETA), Y)


@pytest.fixture(scope="module")
def lower_run():
    return _run(StateSpaceFilter(lg_lower()))


def _check_z_unbiased(log_z, z_true, what):
    # Z_hat is unbiased: the ratios Z_hat/Z of independent runs average to 1 within 4 standard errors
    # (the standard error estimated from the runs themselves; the test fails for a biased estimator
    # such as exp(E log Z_hat), which sits Var(log Z_hat)/2 below).
    ratio = np.exp(np.asarray(log_z, float) - z_true)
    se = ratio.std(ddof=1) / np.sqrt(len(ratio))
    assert abs(ratio.mean() - 1) < 4 * se + 1e-3, (what, ratio.mean(), se)


def test_scan_and_lower_level_forms_identical(scan_run, lower_run):
    """Same key, same draws: the scan-declared model (its body broadcasts, so it runs vectorized) and its
    hand-written lower-level form agree."""
    assert scan_run.result.attrs["population_step"] == "vectorized"
    np.testing.assert_allclose(np.asarray(scan_run.log_evidence), np.asarray(lower_run.log_evidence), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(scan_run.trace.summary["mean"]["x"]),
                               np.asarray(lower_run.trace.summary["mean"]), rtol=1e-5, atol=1e-6)


def test_per_particle_scan_form_and_lower_level_form_identical():
    """Without vectorization (the body vmapped over particles and split keys) the two forms agree too."""
    from smcppl.core.engine import run_fixed
    from smcppl.core.policy import Resampling
    from smcppl.inference.state_space.filter import complete_state_space, filter_feynman_kac

    def log_z(ssm):
        ssm = complete_state_space(ssm)
        return run_fixed(jax.random.key(3), filter_feynman_kac(ssm, 64), T - 1, Resampling()).log_evidence

    forms = (scan_state_space(lg_model, THETA, Y, vectorize=False), lg_lower(population=False))
    assert forms[0].population_step is None
    both = jax.jit(lambda: tuple(log_z(f) for f in forms))()
    np.testing.assert_allclose(float(both[0]), float(both[1]), rtol=1e-6)


def test_body_broadcast_check():
    """The vectorized step is used only for bodies whose population run equals the per-particle one."""
    from smcppl.inference.state_space.scan import body_broadcasts

    def vector_state(matmul_ok):
        def model(y):
            m = jnp.array([[0.9, 0.1], [0.0, 0.8]])
            x0 = numpyro.sample("x0", dist.Normal(jnp.zeros(2), 1.0).to_event(1))

            def body(x, y_t):
                loc = x @ m.T if matmul_ok else m @ x  # m @ x mixes particles when x is [N, 2]
                x = numpyro.sample("x", dist.Normal(loc, 0.5).to_event(1))
                numpyro.sample("y", dist.Normal(x.sum(-1), 1.0), obs=y_t)
                return x, None

            scan(body, x0, y)
        return model

    def shared_noise(y):  # a latent site that does not depend on the state: one draw for all particles
        x0 = numpyro.sample("x0", dist.Normal(0.0, 1.0))

        def body(x, y_t):
            x = 0.9 * x + numpyro.sample("e", dist.Normal(0.0, 1.0))
            numpyro.sample("y", dist.Normal(x, 1.0), obs=y_t)
            return x, None

        scan(body, x0, y)

    assert body_broadcasts(lg_model, (Y,), {})
    assert body_broadcasts(vector_state(True), (Y,), {})
    assert not body_broadcasts(vector_state(False), (Y,), {})
    assert not body_broadcasts(shared_noise, (Y,), {})
    with pytest.raises(StateSpaceModelError, match="vectorize=True, but the scan body"):
        scan_state_space(shared_noise, {}, Y, vectorize=True)


def test_filter_matches_kalman(scan_run):
    """Filtering means/variances per time step and Z_hat against the Kalman filter."""
    summ = scan_run.trace.summary
    means, var = np.asarray(summ["mean"]["x"], float), np.asarray(summ["var"]["x"], float)  # [chains, T]
    # Across the independent chains, the average estimate is within 4.5 standard errors of the exact value
    # (20 time steps: a false alarm has probability ~1e-4); the O(1/N) bias of the self-normalised
    # estimates (~ var/N ~ 0.002 here) is far below the standard error (~0.01).
    for est, exact in ((means, KF_MEAN[:, 0]), (var, KF_COV[:, 0, 0])):
        se = est.std(0, ddof=1) / np.sqrt(CHAINS)
        assert np.all(np.abs(est.mean(0) - exact) < 4.5 * se + 2 * exact.std() / N), (est.mean(0), exact)
    q = np.asarray(summ["quantiles"]["x"], float).mean(0)  # [T, 3] at 5%, 50%, 95%
    sd = np.sqrt(KF_COV[:, 0, 0])
    np.testing.assert_allclose(q[:, 1], KF_MEAN[:, 0], atol=0.1)  # median of a Gaussian = mean
    np.testing.assert_allclose(q[:, 2] - q[:, 0], 2 * 1.6449 * sd, rtol=0.1)
    _check_z_unbiased(scan_run.log_evidence, KF_LL, "bootstrap")


def test_export_and_plot(scan_run):
    """Filtering results with a time dimension (xarray), the runner's own ArviZ export, and the plot."""
    import matplotlib

    matplotlib.use("Agg")
    ds = filtering_dataset(scan_run)
    assert ds["x_mean"].dims == ("chain", "time") and ds["x_mean"].shape == (CHAINS, T)
    assert ds["x_quantiles"].dims == ("chain", "time", "quantile")
    np.testing.assert_allclose(ds["quantile"].values, [0.05, 0.5, 0.95])
    assert ds["ess"].shape == (CHAINS, T) and ds["resampled"].dtype == bool
    # the per-time increments add up to the log-likelihood estimate
    np.testing.assert_allclose(ds["log_likelihood_increment"].sum("time").values,
                               np.asarray(scan_run.log_evidence), rtol=1e-5)
    scan_run.to_arviz()  # the runner's export (smc_stats per stage = per time step) works on the filter
    axes = plot_filtering(scan_run, "x", data=YS[:, 0])
    assert len(axes[0].lines) >= 2
    paths = paths_dataset({"x": np.zeros((3, 5, T))})
    assert paths["x"].dims == ("chain", "draw", "time")


def test_guided_and_auxiliary_match_kalman(lower_run):
    """Fully adapted auxiliary filter (locally optimal proposal q = p(x_t | x_{t-1}, y_t) and look-ahead
    eta_t = p(y_t | x_{t-1})): Z_hat unbiased, and less variable than the bootstrap filter's."""
    s2 = 1 / (1 / Q + 1 / R)

    def proposal(key, xp, y, t):
        m = s2 * (A * xp / Q + y / R)
        x = m + jnp.sqrt(s2) * jax.random.normal(key)
        return x, dist.Normal(m, jnp.sqrt(s2)).log_prob(x)

    def lookahead(xp, y, t):
        return dist.Normal(A * xp, jnp.sqrt(Q + R)).log_prob(y)

    run = _run(StateSpaceFilter(lg_lower(), proposal, lookahead=lookahead), key=1)
    _check_z_unbiased(run.log_evidence, KF_LL, "auxiliary")
    # Var(log Z_hat) at most 0.6 of the bootstrap filter's (observed ~0.36 on this data)
    assert np.var(np.asarray(run.log_evidence)) < 0.6 * np.var(np.asarray(lower_run.log_evidence))
    means = np.asarray(run.trace.summary["mean"], float)
    se = means.std(0, ddof=1) / np.sqrt(CHAINS)
    assert np.all(np.abs(means.mean(0) - KF_MEAN[:, 0]) < 4.5 * se + 0.01)


def test_smoothing_matches_rts():
    """Genealogy and FFBS path draws: their means per time step against the Rauch–Tung–Striebel smoother."""
    ssm, runs, paths = lg_lower(), 32, 64

    def both(key):
        return (smooth(key, ssm, N, paths, "genealogy").paths.mean(0),
                smooth(key, ssm, N, paths, "ffbs").paths.mean(0))

    gen, ffbs = (np.asarray(a, float) for a in jax.jit(jax.vmap(both))(jax.random.split(jax.random.key(2), runs)))
    exact = kalman_smoother(LG, YS)[0][:, 0]
    # each run's path mean is an (O(1/N)-biased) estimate of E[x_t | y]; averaged over independent runs it is
    # within 4.5 standard errors (estimated from the runs) plus 0.02 for the bias
    for est in (gen, ffbs):
        se = est.std(0, ddof=1) / np.sqrt(runs)
        assert np.all(np.abs(est.mean(0) - exact) < 4.5 * se + 0.02), (est.mean(0), exact)
    # FFBS does not suffer the genealogy's path degeneracy: at t = 0 its runs vary less
    assert ffbs[:, 0].std() < gen[:, 0].std()


def _compilations(fn) -> int:
    """How many programs JAX compiles (or looks up in the persistent cache) while ``fn()`` runs: its compile log."""
    import logging

    class Compilations(logging.Handler):
        count = 0

        def emit(self, record):
            Compilations.count += record.getMessage().startswith("Compiling")

    handler, logger = Compilations(), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            fn()
    finally:
        logger.removeHandler(handler)
    return Compilations.count


def test_scan_log_transition_only_for_markov_carries():
    """FFBS needs f_t as a density of the state: the scan form offers it only when the carry is a function
    of the body's latent sites (not for an AR(2) carry (x_t, x_{t-1}))."""
    assert scan_state_space(lg_model, THETA, Y).log_transition is not None

    def ar2(y):
        def body(c, y_t):
            x = numpyro.sample("x", dist.Normal(0.5 * c[0] + 0.3 * c[1], 1.0))
            numpyro.sample("y", dist.Normal(x, 1.0), obs=y_t)
            return (x, c[0]), None
        scan(body, (0.0, 0.0), y)

    assert scan_state_space(ar2, {}, Y).log_transition is None

    def ar2_a(y):  # with a static parameter, for particle Gibbs, which refuses it before compiling anything
        a = numpyro.sample("a", dist.Uniform(-1, 1))

        def body(c, y_t):
            x = numpyro.sample("x", dist.Normal(a * c[0] + 0.3 * c[1], 1.0))
            numpyro.sample("y", dist.Normal(x, 1.0), obs=y_t)
            return (x, c[0]), None
        scan(body, (0.0, 0.0), y)

    with pytest.raises(StateSpaceModelError, match="ancestor sampling needs f_t"):
        ParticleGibbs(ar2_a, 8, 2, 2, 1).run(jax.random.key(0), Y)
    with pytest.raises(ValueError, match="Use method='genealogy'"):
        StateSpaceFilter(ar2).smooth(jax.random.key(0), 8, 2, Y, method="ffbs")
    smoother = StateSpaceFilter(ar2)
    paths = smoother.smooth(jax.random.key(0), 16, 3, Y[:5], method="genealogy").paths
    assert paths["x"].shape == (3, 5) and np.all(np.isfinite(np.asarray(paths["x"])))
    # a second call with a new key and new data of the same shapes runs the kept program: nothing is compiled
    new_y = jax.block_until_ready(Y[5:10])
    again = {}
    assert _compilations(lambda: again.update(smoother.smooth(jax.random.key(1), 16, 3, new_y,
                                                              method="genealogy").paths)) == 0
    assert again["x"].shape == (3, 5) and not np.allclose(again["x"], paths["x"])
    # a NaN observation: the filter loses every particle there; the paths it would draw from NaN weights are
    # refused, with the input named (they used to come back as finite-looking paths)
    with_nan = np.asarray(new_y).copy()
    with_nan[2] = np.nan
    with pytest.raises(SMCError, match=r"smooth: every particle.*stage 2.*argument 'y' \(position 0\) contains NaN"):
        smoother.smooth(jax.random.key(1), 16, 3, with_nan, method="genealogy")


@pytest.fixture(scope="module")
def grid_posterior():
    """Exact posterior mean and sd of ``a`` in ``lg_zoo``: Kalman likelihood on a fine grid times the flat prior."""
    return lg_grid_posterior(YS, Q, R)[:2]


def _check_posterior(draws, idata, mean, sd):
    import arviz as az

    # posterior mean within 4 Monte Carlo standard errors (ArviZ's MCSE, from the chains' autocorrelation)
    mcse = float(az.mcse(idata, var_names=["a"])["a"])
    assert abs(draws.mean() - mean) < 4 * mcse, (draws.mean(), mean, mcse)
    # posterior sd within 20% (its relative Monte Carlo error is ~1/sqrt(2 ESS) < 5% at ESS > 200)
    assert abs(draws.std() / sd - 1) < 0.2, (draws.std(), sd)


def test_pmmh_recovers_grid_posterior(grid_posterior):
    """PMMH on p(a | y) against the exact posterior."""
    pmmh = PMMH(lg_zoo, num_particles=128, num_warmup=200, num_samples=800, num_chains=4).run(jax.random.key(0), Y)
    idata = pmmh.to_arviz()
    assert pmmh.rhat()["a"] < 1.05
    _check_posterior(pmmh.get_samples()["a"], idata, *grid_posterior)
    assert np.all((pmmh.acceptance_rate > 0.05) & (pmmh.acceptance_rate < 0.6))
    assert idata.posterior["a"].shape == (4, 800)

    # a second run on new data of the same shape reuses the compiled chains and the model's inspection (nothing
    # is compiled again, nor looked up in the persistent cache) and runs on the new data
    first, reversed_y = pmmh.log_target.copy(), jax.block_until_ready(Y[::-1])
    assert _compilations(lambda: pmmh.run(jax.random.key(0), reversed_y)) == 0
    assert not np.allclose(pmmh.log_target, first)
    assert pmmh.health.ok, pmmh.health

    # a NaN among the observations: every likelihood estimate is NaN, the chain never moves. It used to return its
    # starting point as the posterior without a word; now it is flagged, with the input named
    _check_flagged_chains(pmmh, {"log_target", "stuck_moves"})


def test_particle_gibbs_recovers_grid_posterior(grid_posterior):
    """Particle Gibbs with ancestor sampling: p(a | y) against the exact posterior, and the paths' means
    against the RTS smoother at the posterior mean of a (the paths average over a, whose posterior sd ~0.05
    moves the smoothing means by < 0.1)."""
    pg = ParticleGibbs(lg_zoo, num_particles=32, num_warmup=150, num_samples=500, num_chains=4)
    pg = pg.run(jax.random.key(1), Y)
    idata = pg.to_arviz()
    assert pg.rhat()["a"] < 1.05
    _check_posterior(pg.get_samples()["a"], idata, *grid_posterior)
    assert idata.posterior["x"].dims == ("chain", "draw", "time")
    a_hat = grid_posterior[0]
    exact = kalman_smoother(LinearGaussian(np.eye(1) * a_hat, np.eye(1) * Q, np.eye(1), np.eye(1) * R,
                                           np.eye(1) * Q / (1 - a_hat**2)), YS)[0][:, 0]
    np.testing.assert_allclose(pg.get_samples()["x"].mean(0), exact, atol=0.15)
    assert pg.health.ok, pg.health
    _check_flagged_chains(pg, {"stuck_moves"})


def _check_flagged_chains(sampler, checks):
    """``sampler`` run again on the observations with one NaN: an SMCHealthWarning per check in ``checks``, each
    naming the input, in ``health``, ``print_summary`` and ``to_arviz``'s attrs."""
    import contextlib
    import io

    from smcppl import SMCHealthWarning

    with_nan = np.asarray(Y).copy()
    with_nan[10] = np.nan
    with pytest.warns(SMCHealthWarning) as record:
        sampler.run(jax.random.key(2), with_nan)
    assert checks <= {f.check for f in sampler.health.flags}, sampler.health
    assert all("argument 'y' (position 0) contains NaN" in f.message for f in sampler.health.flags)
    assert {str(w.message).split("[")[1].split("]")[0] for w in record} >= checks
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        sampler.print_summary()
    assert all(f"WARNING [{c}]" in out.getvalue() for c in checks), out.getvalue()
    assert sampler.to_arviz().posterior.attrs["health_ok"] == 0


# ------------------------------------------------------------------ declarations that do not fit
def _model_with(kind):
    def model(y):
        a = numpyro.sample("a", dist.Uniform(-1, 1))
        if kind == "discrete":
            numpyro.sample("k", dist.Poisson(2.0))
        if kind == "obs_outside":
            numpyro.sample("y0", dist.Normal(0, 1), obs=y[0])

        def body(x, y_t):
            x = numpyro.sample("x", dist.Normal(a * x, 1.0))
            if kind == "subsample":
                with numpyro.plate("rep", 3, subsample_size=1):
                    numpyro.sample("y", dist.Normal(x, 1.0), obs=jnp.full((1,), y_t))
            elif kind != "no_obs":
                numpyro.sample("y", dist.Normal(x, 1.0), obs=y_t)
            return x, None

        if kind != "no_scan":
            scan(body, 0.0, y)
        if kind == "latent_after":
            numpyro.sample("b", dist.Normal(0, 1))
    return model


@pytest.mark.parametrize("kind, match", [
    ("discrete", "Static parameter 'k' is discrete"),
    ("obs_outside", "Observed site 'y0' is outside the scan"),
    ("latent_after", "Latent site 'b' is sampled after the scan"),
    ("no_obs", "no observed site"),
    ("no_scan", "has no numpyro.contrib.control_flow.scan"),
])
def test_models_that_do_not_fit_raise(kind, match):
    with pytest.raises(StateSpaceModelError, match=match):
        inspect_scan_model(_model_with(kind), Y)


def test_subsampling_plates_are_refused():
    """A plate with subsample_size in the scan body: a subsample drawn once would be filtered as if it were the
    data (PMMH used to run it; the filter failed inside NumPyro)."""
    model = _model_with("subsample")
    for run in (lambda: StateSpaceFilter(model, theta={"a": 0.5}).build(8, Y),
                lambda: PMMH(model, 8, 2, 2).run(jax.random.key(0), Y)):
        with pytest.raises(StateSpaceModelError, match=r"plate 'rep' subsamples its data \(subsample_size=1 of 3\)"):
            run()


def test_structure_and_theta_errors():
    s = inspect_scan_model(lg_model, Y)
    assert (s.static_sites, s.initial_sites, s.latent_sites, s.observed_sites, s.length) == (
        ("a", "q"), ("x_init",), ("x",), ("y",), T)
    with pytest.raises(StateSpaceModelError, match=r"no value for the static parameter\(s\) \['q'\]"):
        StateSpaceFilter(lg_model, theta={"a": 0.5}).build(8, Y)
    with pytest.raises(StateSpaceModelError, match="not static parameters"):
        StateSpaceFilter(lg_model, theta={**THETA, "x_init": 0.0}).build(8, Y)
    with pytest.raises(ValueError, match="proposal must be 'bootstrap'"):
        StateSpaceFilter(lg_model, proposal="optimal")
    # a seed or a batch of keys where one key is expected: named before anything is traced
    for call in (lambda k: PMMH(lg_model, 8, 2, 2).run(k, Y), lambda k: ParticleGibbs(lg_model, 8, 2, 2).run(k, Y),
                 lambda k: StateSpaceFilter(lg_model, theta=THETA).smooth(k, 8, 2, Y)):
        for bad in (0, jax.random.split(jax.random.key(0), 2)):
            with pytest.raises(TypeError, match="rng_key must be one JAX PRNG key"):
                call(bad)


def test_inspection_computes_nothing():
    """The declaration checks (inspect_scan_model, the filter's build) run the model under an abstract trace: its
    draws are tracers, never values (op by op, in a fresh process each operation compiled a small program: ~1 s
    of a filter's first call)."""
    seen = []

    def watched(y):
        a = numpyro.sample("a", dist.Uniform(-1, 1))  # given by theta in the filter: a value there
        x0 = numpyro.sample("x0", dist.Normal(0.0, 1.0))  # drawn in every run: a tracer unless run op by op
        seen.append(isinstance(x0, jax.core.Tracer))

        def body(x, y_t):
            x = numpyro.sample("x", dist.Normal(a * x, 1.0))
            numpyro.sample("y", dist.Normal(x, R), obs=y_t)
            return x, None

        scan(body, x0, y)

    s = inspect_scan_model(watched, Y)
    assert seen and all(seen)
    assert (s.static_sites, s.initial_sites) == (("a",), ("x0",)) and s.shapes["a"].shape == ()
    seen.clear()
    StateSpaceFilter(watched, theta={"a": A}).build(8, Y)
    assert seen and all(seen)


def test_export_has_a_filtering_group_with_a_time_dimension(scan_run):
    """SMC.to_arviz of a filter run carries the per-time-step filtering moments next to smc_stats, and
    they equal the run's own trace (the export adds no arithmetic)."""
    from smcppl.diagnostics import to_datatree

    tree = to_datatree(scan_run)
    ds = tree["filtering"].to_dataset()
    assert ds["x_mean"].dims == ("chain", "time") and ds.sizes["time"] == len(Y)
    np.testing.assert_allclose(ds["x_mean"].values, np.asarray(scan_run.trace.summary["mean"]["x"]), rtol=1e-6)
    np.testing.assert_allclose(ds["log_likelihood_increment"].values.sum(axis=1),
                               np.asarray(scan_run.log_evidence, float), rtol=1e-5)
