"""Feynman–Kac engine and bootstrap filter against the Kalman filter (exact)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smcppl.core import Entropic, FeynmanKac, Resampling, SMCError, raise_if_failed, run_adaptive, run_fixed
from smcppl.inference.state_space.bootstrap import bootstrap_filter
from smcppl.models.state_space import LinearGaussian, kalman_filter, linear_gaussian, simulate

PARAMS = LinearGaussian(A=np.array([[0.9]]), Q=np.array([[0.5]]), C=np.array([[1.0]]), R=np.array([[1.0]]),
                        P0=np.array([[1.0]]))
T = 15
XS, YS = simulate(PARAMS, T, seed=3)
KF_MEANS, _, KF_LOGLIK = kalman_filter(PARAMS, YS)
SSM = linear_gaussian(PARAMS)
N, R = 256, 64  # particles, independent runs

POLICIES = {
    "multinomial-always": Resampling("multinomial", "always"),
    "stratified-always": Resampling("stratified", "always"),
    "systematic-always": Resampling("systematic", "always"),
    "residual-always": Resampling("residual", "always"),
    "multinomial-ess": Resampling("multinomial", "ess", 0.5),
    "stratified-ess": Resampling("stratified", "ess", 0.5),
    "systematic-ess": Resampling("systematic", "ess", 0.5),
    "residual-ess": Resampling("residual", "ess", 0.5),
    "entropic-corrected": Resampling("systematic", "ess", 0.5, Entropic("epf_ess", correct=True)),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_bootstrap_matches_kalman(name):
    run = jax.jit(jax.vmap(lambda k: bootstrap_filter(k, SSM, YS, N, POLICIES[name])))
    out = run(jax.random.split(jax.random.key(11), R))
    lz = np.asarray(out.log_evidence, float)
    # Z_hat is unbiased: the mean of Z_hat / Z over R runs is 1 within its standard error
    ratio = np.exp(lz - KF_LOGLIK)
    se = ratio.std() / np.sqrt(R)
    assert abs(ratio.mean() - 1.0) < 4 * se + 0.01, (name, ratio.mean(), se)
    # filtering means: average of R self-normalised estimates; error <= 4 se + O(1/N) bias allowance
    fm = np.asarray(out.trace.summary, float)[:, :, 0]  # (R, T)
    err = np.abs(fm.mean(0) - KF_MEANS[:, 0])
    se_m = fm.std(0) / np.sqrt(R)
    assert np.all(err < 4 * se_m + 0.02), (name, err.max(), se_m.max())


def test_never_resampling_is_unbiased_sis():
    ys = YS[:4]  # sequential importance sampling degenerates quickly: keep it short
    ll = kalman_filter(PARAMS, ys)[2]
    run = jax.jit(jax.vmap(lambda k: bootstrap_filter(k, SSM, ys, N, Resampling(when="never"))))
    out = run(jax.random.split(jax.random.key(5), R))
    ratio = np.exp(np.asarray(out.log_evidence, float) - ll)
    assert abs(ratio.mean() - 1) < 4 * ratio.std() / np.sqrt(R) + 0.01
    assert not np.any(np.asarray(out.trace.resampled))


def test_trace_fields_and_determinism():
    f = jax.jit(lambda k: bootstrap_filter(k, SSM, YS, 64, Resampling("systematic", "always"), record_ancestors=True))
    a, b = f(jax.random.key(0)), f(jax.random.key(0))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))  # bit-identical
    tr = a.trace
    assert tr.ess.shape == (T,) and tr.ancestors.shape == (T, 64)
    assert np.all(np.asarray(tr.resampled)[1:]) and not bool(tr.resampled[0])
    assert np.all((np.asarray(tr.ess) > 0) & (np.asarray(tr.ess) <= 1))
    assert np.all((np.asarray(tr.n_unique_ancestors)[1:] >= 1) & (np.asarray(tr.n_unique_ancestors)[1:] <= 64))
    # vmap over keys gives the same result as one key at a time
    keys = jax.random.split(jax.random.key(9), 3)
    batched = jax.jit(jax.vmap(f))(keys)
    for i in range(3):
        single = f(keys[i])
        assert np.array_equal(np.asarray(single.trace.ancestors), np.asarray(batched.trace.ancestors[i]))
        np.testing.assert_allclose(np.asarray(single.log_evidence), np.asarray(batched.log_evidence[i]), rtol=1e-6)


def _toy_fk(die_at, nan=False):
    """Particles on R; potential -inf (or NaN) for every particle from step `die_at` on."""
    def init(key):
        return jax.random.normal(key, (16,)), jnp.zeros(16), jnp.zeros((), jnp.int32)

    def move(key, x, lw, t, ancestry):
        return x + 0.1 * jax.random.normal(key, x.shape), None

    def update(x, lw, t, info):
        return t + 1

    def log_potential(x, prev, t, t_new):
        bad = jnp.nan if nan else -jnp.inf
        return jnp.where(t_new >= die_at, bad, -0.5 * x**2)

    return FeynmanKac(init, move, update, log_potential, progress=lambda t: t / 10.0, done=lambda t: t >= 10)


@pytest.mark.parametrize("nan", [False, True])
def test_all_dead_raises_naming_stage(nan):
    out = jax.jit(lambda k: run_fixed(k, _toy_fk(3, nan), 6, Resampling()))(jax.random.key(0))
    assert int(out.dead_stage) == 3
    assert not np.any(np.isnan(np.asarray(out.trace.ess)))
    with pytest.raises(SMCError, match="stage 3"):
        raise_if_failed(out)
    out = jax.jit(lambda k: run_adaptive(k, _toy_fk(4, nan), 20, Resampling()))(jax.random.key(0))
    assert int(out.dead_stage) == 4 and int(out.n_stages) == 5
    with pytest.raises(SMCError, match="stage 4"):
        raise_if_failed(out)


def test_nan_potential_kills_only_that_particle():
    def log_potential(x, prev, t, t_new):
        return jnp.where(jnp.arange(16) == 0, jnp.nan, 0.0)
    fk = _toy_fk(100)._replace(log_potential=log_potential)
    out = run_fixed(jax.random.key(0), fk, 2, Resampling(when="never"))
    lw = np.asarray(out.state.log_weights)
    assert np.isneginf(lw[0]) and np.all(np.isfinite(lw[1:]))
    assert np.isfinite(float(out.log_evidence))


def test_adaptive_trace_is_padded():
    out = run_adaptive(jax.random.key(1), _toy_fk(100), 30, Resampling())
    n = int(out.n_stages)
    assert n == 11  # init + 10 steps until t >= 10
    assert np.all(np.isnan(np.asarray(out.trace.ess)[n:])) and np.all(np.isfinite(np.asarray(out.trace.ess)[:n]))
    assert np.all(np.asarray(out.trace.n_unique_ancestors)[n:] == -1)


@pytest.mark.parametrize("bad", [0, -5, 2.5])
def test_bad_particle_counts(bad):
    with pytest.raises((ValueError, TypeError), match="num_particles"):
        bootstrap_filter(jax.random.key(0), SSM, YS, bad)
