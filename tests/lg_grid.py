"""Exact posterior of ``a`` in ``smcppl.models.state_space.lg_model`` on a grid (shared by the state-space tests)."""
import numpy as np

from smcppl.models.state_space import LinearGaussian, kalman_filter


def lg_grid_posterior(ys, q: float = 0.5, r: float = 1.0, num: int = 2001) -> tuple:
    """``(mean, sd, log p(y))`` of ``a ~ U(-1, 1)`` given ``ys [T, 1]``: the Kalman likelihood (stationary
    initial state) on ``num`` grid points of (-0.999, 0.999) times the prior density 1/2, summed with the
    grid spacing (the likelihood vanishes toward a = +-1, where the stationary variance blows up)."""
    grid = np.linspace(-0.999, 0.999, num)
    ll = np.array([kalman_filter(LinearGaussian(np.eye(1) * a, np.eye(1) * q, np.eye(1), np.eye(1) * r,
                                                np.eye(1) * q / (1 - a * a)), ys)[2] for a in grid])
    w = np.exp(ll - ll.max())
    log_evidence = ll.max() + np.log(w.sum() * 0.5 * (grid[1] - grid[0]))
    w /= w.sum()
    mean = (w * grid).sum()
    return mean, np.sqrt((w * (grid - mean) ** 2).sum()), log_evidence
