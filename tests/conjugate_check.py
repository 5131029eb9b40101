"""The exact-answer check of a tempered run on the 20-d conjugate Gaussian, shared by the tests that use it."""
import numpy as np

from smcppl.models import zoo

CONJ = zoo.conjugate_gaussian_data(dim=20, num_obs=10, seed=0)
CONJ_EXACT = zoo.conjugate_gaussian_exact(**CONJ)


def assert_matches_conjugate_exact(smc, mean_tol: float = 0.06) -> None:
    """log Z, posterior means, variances and covariances of a run on ``CONJ`` against the exact ones."""
    lz = np.asarray(smc.log_evidence, float)
    c = len(lz)
    # log Z: the chains are independent; the mean is within 4 standard errors (estimated from the chains)
    # plus the Jensen bias of log(Z_hat), about var/2, of the exact value.
    se = lz.std(ddof=1) / np.sqrt(c)
    assert abs(lz.mean() - CONJ_EXACT["log_evidence"]) < 4 * se + lz.var(ddof=1) / 2 + 0.05, (lz, CONJ_EXACT)
    th = np.asarray(smc.get_samples()["theta"], float)
    # posterior sd is 1/sqrt(11) = 0.30; with >= 1000 effective draws the standard error is < 0.01 per
    # coordinate, so 0.06 over 20 coordinates allows for the SMC's correlation between draws.
    assert np.max(np.abs(th.mean(0) - CONJ_EXACT["mean"])) < mean_tol
    np.testing.assert_allclose(th.var(0).mean(), CONJ_EXACT["var"].mean(), rtol=0.1)
    # off-diagonal covariance is zero in the exact posterior (sd of a sample covariance 0.091 / sqrt(ESS):
    # <= 0.005 with >= 400 effective draws, so 0.03 is > 5 sd for the largest of 190 pairs)
    cov = np.cov(th.T)
    assert np.max(np.abs(cov - np.diag(np.diag(cov)))) < 0.03
