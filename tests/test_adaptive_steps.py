"""Transitions per stage chosen by the pilot from the particles' correlation with the stage's start
(``max_mcmc_steps``): the rule's statistic, its settings' errors, and an exact answer with it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smcppl import SMC, TemperedSMC
from smcppl.kernels.moves import MoveSettings, start_correlation, validate_move
from smcppl.models import zoo

from conjugate_check import CONJ, assert_matches_conjugate_exact


def test_start_correlation_of_unmoved_and_of_independent_particles():
    """rho_j = 1 - D_j / (2 v_j): 1 for particles that did not move, ~0 for independent redraws (standard
    error of D_j / (2 v_j) for Gaussian coordinates: sqrt(2 / N) = 0.014 at N = 10,000; 5 se allowed), and
    the between-mode share of v_j for particles that cannot leave their mode."""
    n = 10_000
    z0 = jax.random.normal(jax.random.key(0), (n, 3))
    w = jnp.full(n, 1.0 / n)
    np.testing.assert_allclose(start_correlation(z0, z0, w), 1.0, atol=1e-6)
    fresh = jax.random.normal(jax.random.key(1), (n, 3))
    assert np.all(np.abs(np.asarray(start_correlation(z0, fresh, w))) < 5 * np.sqrt(2 / n))
    # two modes at -+3 with unit spread, each particle redrawn within its own mode: v = 1 + 9, D = 2,
    # rho = 1 - 2 / 20 = 0.9
    side = jnp.where(jax.random.uniform(jax.random.key(2), (n, 1)) < 0.5, -3.0, 3.0)
    start, moved = side + z0[:, :1], side + fresh[:, :1]
    assert abs(float(start_correlation(start, moved, w)[0]) - 0.9) < 0.02


def test_adaptive_transition_settings_are_checked():
    assert validate_move(MoveSettings("hmc", 3, max_mcmc_steps=3)).max_mcmc_steps is None  # no room to adapt
    with pytest.raises(ValueError, match="max_mcmc_steps .* must be >= num_mcmc_steps"):
        TemperedSMC(zoo.conjugate_gaussian, num_mcmc_steps=5, max_mcmc_steps=4)
    with pytest.raises(ValueError, match="waste_free"):
        TemperedSMC(zoo.conjugate_gaussian, move="rwm", num_mcmc_steps=4, waste_free=True, max_mcmc_steps=8)
    with pytest.raises(ValueError, match="correlation_threshold"):
        TemperedSMC(zoo.conjugate_gaussian, max_mcmc_steps=8, correlation_threshold=1.5)


def test_adaptive_transitions_keep_log_evidence_and_posterior_exact():
    """One HMC transition of one leapfrog step leaves the particles correlated with where they started, so
    the pilot adds transitions (up to 8) until rho < 0.05; every chain repeats the pilot's counts, so its
    kernels are fixed in advance and Z_hat stays unbiased. Tolerances as tests/test_tempered.py's
    conjugate check: 4 standard errors of the 8 chains' mean plus the Jensen bias var/2 (+0.05); posterior
    mean within 0.06 of the exact one (sd 0.30, >= 1000 effective draws per chain)."""
    smc = SMC(TemperedSMC(zoo.conjugate_gaussian, move="hmc", num_mcmc_steps=1, num_integration_steps=1,
                          max_mcmc_steps=8),
              num_particles=1000, num_chains=8, progress_bar=False)
    smc.run(jax.random.key(3), **CONJ)
    steps = np.asarray(smc.trace.move_info["num_mcmc_steps"])
    n = np.asarray(smc.n_stages)
    assert np.all(n == n[0])  # the pilot's ladder
    rows = steps[:, 1:n[0]]  # the moves at beta_1 .. beta_{T-1}
    assert np.all(rows == rows[0]), "every chain repeats the pilot's count per stage"
    assert rows.min() >= 1 and rows.max() <= 8 and rows.max() > 1, rows[0]
    assert_matches_conjugate_exact(smc, mean_tol=0.06)
    assert {"num_mcmc_steps", "start_correlation"} <= set(smc.to_arviz()["smc_stats"].data_vars)
    assert smc.result.attrs["max_mcmc_steps"] == 8
