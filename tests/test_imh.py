"""Independent Metropolis–Hastings moves (``move="imh"``, :mod:`smcppl.kernels.independent`) against exact
answers: the kernel leaves a known target invariant, tempered SMC with it recovers a conjugate posterior
and its evidence, and the mixture proposal finds both modes of a bimodal posterior with their weights.
Tolerances are Monte Carlo ones, stated next to each assertion.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from smcppl import SMC, TemperedSMC
from smcppl.kernels.independent import fit_mixture, proposal_logdensity
from smcppl.kernels.moves import MoveSettings, move_population, validate_move
from smcppl.models import zoo

CONJ = zoo.conjugate_gaussian_data(dim=4, num_obs=10, seed=1)
CONJ_EXACT = zoo.conjugate_gaussian_exact(**CONJ)
NUM_CHAINS = 8


def _within_chain_se(values, exact, k=4.5):
    """``|mean over chains - exact| < k * se`` with the se from the independent chains' spread: with 8
    chains, (mean - exact) / se is t-distributed with 7 degrees of freedom, and P(|t_7| > 4.5) = 0.003."""
    values = np.asarray(values, float)
    se = values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])
    return np.abs(values.mean(axis=0) - exact) < k * se


@pytest.fixture(scope="module")
def conjugate_imh():
    smc = SMC(TemperedSMC(zoo.conjugate_gaussian, move="imh", num_mcmc_steps=3), num_particles=1000,
              num_chains=NUM_CHAINS)
    return smc.run(jax.random.key(0), **CONJ)


@pytest.fixture(scope="module")
def bimodal_mixture():
    smc = SMC(TemperedSMC(zoo.bimodal, move="imh", proposal_components=2, num_mcmc_steps=3), num_particles=1000,
              num_chains=NUM_CHAINS)
    return smc.run(jax.random.key(4))


# ------------------------------------------------------------------------------------------ kernel level
def _gaussian_target(dtype):
    m = jnp.array([1.0, -2.0, 0.5], dtype)
    a = jnp.array([[1.0, 0.0, 0.0], [0.5, 2.0, 0.0], [0.3, -0.4, 0.7]], dtype)
    s_inv = jnp.linalg.inv(a @ a.T)
    return m, a, lambda x: -0.5 * (x - m) @ s_inv @ (x - m)


def _check_invariance(x1, m, a, n):
    """Started from exact draws, a kernel fixed in advance moves each particle independently, so the moved
    particles are again i.i.d. from the target: the standard error of the sample mean is sqrt(S_jj / n),
    of the sample covariance entry S_jk sqrt((S_jj S_kk + S_jk^2) / n) (Gaussian fourth moments). 4.5 se
    over the 9 statistics: a false alarm with probability < 1e-4."""
    s = np.asarray(a @ a.T, float)
    x1 = np.asarray(x1, float)
    assert np.all(np.abs(x1.mean(0) - np.asarray(m)) < 4.5 * np.sqrt(np.diag(s) / n)), x1.mean(0)
    se_cov = np.sqrt((np.outer(np.diag(s), np.diag(s)) + s**2) / n)
    assert np.all(np.abs(np.cov(x1.T) - s) < 4.5 * se_cov), np.cov(x1.T) - s


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_leaves_target_invariant(dtype):
    n = 20000
    with jax.enable_x64(dtype == "float64"):
        dt = jnp.dtype(dtype)
        m, a, logp = _gaussian_target(dt)
        x0 = m + jax.random.normal(jax.random.key(1), (n, 3), dt) @ a.T
        # deliberately poor proposals, so that rejections matter: shifted by ~0.8 sd and 1.5x too wide (one
        # t component); and a fixed two-component Gaussian mixture on top of the same shift and scale, fitted
        # to other points (centres near -+0.7 on the first whitened axis, spreads 0.3 and 1, weights 1/3, 2/3:
        # unequal components, so that their normalising constants matter)
        pre = (m + 0.8, 1.5 * a)
        g = jax.random.normal(jax.random.key(2), (600, 3), dt)
        pts = jnp.concatenate([0.3 * g[:200] - jnp.array([0.7, 0, 0], dt), g[200:] + jnp.array([0.7, 0, 0], dt)])
        two = fit_mixture(pts, jnp.zeros(600, dt), 2)._asdict()
        moves = (validate_move(MoveSettings("imh", num_mcmc_steps=3)),
                 validate_move(MoveSettings("independent", num_mcmc_steps=3, proposal_components=2, proposal_dof=None)))
        for key, mv, p in zip((3, 4), moves, (pre, pre + (two,)), strict=True):
            res = jax.jit(lambda k, x, mv=mv, p=p: move_population(k, x, jnp.zeros(n, dt), logp, 1.0, mv, p))(
                jax.random.key(key), x0)
            assert res.position.dtype == dt
            acc = float(res.acceptance.mean())
            assert 0.05 < acc < 0.95, acc  # both proposals are poor: real rejections, but the kernel moves
            assert not bool(res.divergent.any())
            assert float(res.step_size) == 1.0  # the scale is never adapted
            _check_invariance(res.position, m, a, n)


def test_proposal_density_matches_scipy():
    """``proposal_logdensity`` is the normalised mixture density (component constants matter for K > 1)."""
    z = np.random.default_rng(0).normal(size=(5, 2)) * 2
    two = fit_mixture(jnp.asarray(np.r_[np.random.default_rng(1).normal(size=(300, 2)) * [0.5, 1.0] + [2, 0],
                                        np.random.default_rng(2).normal(size=(100, 2)) - [2, 0]], jnp.float32),
                      jnp.zeros(400), 2)
    w, mean, c = (np.asarray(v, float) for v in two)
    for dof, scale in ((None, 1.0), (5.0, 1.3)):
        ours = np.array([float(proposal_logdensity(jnp.asarray(zi, jnp.float32), two, scale, dof)) for zi in z])
        comps = []
        for k in range(2):
            cov = scale**2 * c[k] @ c[k].T
            comps.append(w[k] + (stats.multivariate_normal(mean[k], cov).logpdf(z) if dof is None
                                 else stats.multivariate_t(mean[k], cov, df=dof).logpdf(z)))
        np.testing.assert_allclose(ours, np.logaddexp(*comps), rtol=1e-4)
        single = np.array([float(proposal_logdensity(jnp.asarray(zi, jnp.float32), None, scale, dof)) for zi in z])
        ref = (stats.multivariate_normal(np.zeros(2), scale**2 * np.eye(2)).logpdf(z) if dof is None
               else stats.multivariate_t(np.zeros(2), scale**2 * np.eye(2), df=dof).logpdf(z))
        np.testing.assert_allclose(single, ref, rtol=1e-4)


def test_mixture_fit_recovers_separated_components():
    """Weighted k-means on draws from 0.3 N(-4, 0.5^2) + 0.7 N(4, 0.5^2), given as uniform particles plus
    weights: with 4000 particles the weight's binomial se is sqrt(0.21 / 4000) = 0.007 (0.03 is > 4 se),
    each mean's se < 0.5 / sqrt(1200) = 0.015 (0.07 is > 4 se). Deterministic: a refit is identical."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-6, 6, size=(4000, 1)), jnp.float32)
    dens = 0.3 * stats.norm(-4, 0.5).pdf(np.asarray(x[:, 0])) + 0.7 * stats.norm(4, 0.5).pdf(np.asarray(x[:, 0]))
    lw = jnp.asarray(np.log(dens), jnp.float32)
    fit = fit_mixture(x, lw, 2)
    again = fit_mixture(x, lw, 2)
    assert all(bool(jnp.all(a == b)) for a, b in zip(fit, again, strict=True))
    order = np.argsort(np.asarray(fit.means[:, 0]))
    np.testing.assert_allclose(np.exp(np.asarray(fit.log_weights))[order], [0.3, 0.7], atol=0.03)
    np.testing.assert_allclose(np.asarray(fit.means[:, 0])[order], [-4, 4], atol=0.07)
    # the component sd (0.5) after shrinkage toward the whole population's (1 here) with d + 2 = 3 pseudo-particles
    assert np.all(np.abs(np.asarray(fit.chols[:, 0, 0]) - 0.5) < 0.03)


# ------------------------------------------------------------------------------------------ tempered SMC
def test_conjugate_posterior_and_evidence(conjugate_imh):
    smc = conjugate_imh
    lz = np.asarray(smc.log_evidence, float)
    # log Z: the pilot fixes every chain's kernels, so Z_hat is unbiased and E[log Z_hat] = log Z - var/2
    # (Jensen); the chains are independent: within 4.5 se (t_7) of the exact value, plus that bias.
    se = lz.std(ddof=1) / np.sqrt(len(lz))
    assert abs(lz.mean() + lz.var(ddof=1) / 2 - CONJ_EXACT["log_evidence"]) < 4.5 * se, (lz, CONJ_EXACT)
    assert se < 0.1  # and the estimate is precise (sd ~ 0.1 over chains at N = 1000 here)
    th = np.asarray(smc.get_samples(group_by_chain=True)["theta"], float)  # [chains, draws, dim]
    # posterior means: the chains' means are independent estimates, checked per coordinate (4 of them)
    assert np.all(_within_chain_se(th.mean(axis=1), CONJ_EXACT["mean"])), (th.mean(axis=(0, 1)), CONJ_EXACT["mean"])
    # and small in posterior sd units (sd = 1/sqrt(11) = 0.30): se of a chain mean is ~0.3/sqrt(500)
    assert np.max(np.abs(th.mean(axis=(0, 1)) - CONJ_EXACT["mean"])) < 0.03
    # variance 1/11: the pooled relative se is ~sqrt(2 / 4000) = 0.022 per coordinate; 0.1 is > 4 se
    np.testing.assert_allclose(th.reshape(-1, th.shape[-1]).var(0), CONJ_EXACT["var"], rtol=0.1)


def test_acceptance_recorded_per_stage(conjugate_imh):
    smc = conjugate_imh
    acc = np.asarray(smc.trace.move_info["acceptance_rate"], float)
    n = np.asarray(smc.n_stages)
    for c in range(acc.shape[0]):
        a = acc[c, 1:n[c]]  # row 0 is the initialisation (no move)
        assert a.size >= 1 and np.all(np.isfinite(a)) and np.all((a > 0) & (a <= 1)), a
    # a t fitted to a 4-d Gaussian posterior accepts most proposals (measured 0.86)
    assert np.nanmean(acc[:, 1:]) > 0.6
    assert smc.health.ok, smc.health.lines()  # the health checks read the same acceptance


def test_mixture_finds_both_modes_with_their_weights(bimodal_mixture):
    smc = bimodal_mixture
    ex = zoo.bimodal_exact()
    x = np.asarray(smc.get_samples(group_by_chain=True)["x"], float)
    frac = (x > 0).mean(axis=1)
    # share of the mode at +4: a weighted mean of mode indicators over a population of ESS >= N / 2 (the
    # target ESS of the last increment), so sd <= sqrt(0.21 / 500) = 0.021 per chain (measured: 0.017-0.020
    # over 64 chains); the 8 independent chains' mean: se <= 0.0072, 4 se = 0.029; every chain within 4 sd.
    # (A known bound, not the chains' own spread: 8 chains can show a spread 3x too small by chance.)
    assert abs(frac.mean() - ex["mode_weights"][1]) < 0.029, (frac, ex["mode_weights"])
    assert np.all(np.abs(frac - ex["mode_weights"][1]) < 0.082), frac
    lz = np.asarray(smc.log_evidence, float)
    se = lz.std(ddof=1) / np.sqrt(len(lz))
    assert abs(lz.mean() + lz.var(ddof=1) / 2 - ex["log_evidence"]) < 4.5 * se, (lz, ex["log_evidence"])
    # the two-component proposal fits each mode: it accepts far more than one t over both modes does
    # (measured: 0.43 with proposal_components=1, 0.91 with 2)
    acc = np.asarray(smc.trace.move_info["acceptance_rate"], float)[:, 1:]
    assert np.nanmean(acc) > 0.6, acc
    assert smc.plan.attrs["move"] == "imh"


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="proposal_components"):
        TemperedSMC(zoo.bimodal, move="imh", proposal_components=0)
    with pytest.raises(ValueError, match="move='imh'"):
        TemperedSMC(zoo.bimodal, move="hmc", proposal_components=2)
    with pytest.raises(ValueError, match="preconditioning='none'"):
        TemperedSMC(zoo.bimodal, move="imh", preconditioning="none")
    with pytest.raises(ValueError, match="target_acceptance"):
        TemperedSMC(zoo.bimodal, move="imh", target_acceptance=0.5)
    with pytest.raises(ValueError, match="proposal_dof"):
        TemperedSMC(zoo.bimodal, move="imh", proposal_dof=0)
    assert TemperedSMC(zoo.bimodal, move="Independent").move.kind == "imh"
