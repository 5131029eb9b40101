"""Resamplers and entropic resampling against exact expectations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smcppl.core import Entropic, Resampling, resample
from smcppl.core.entropic import rule_temperature, target_temperature, temperature
from smcppl.core.resampling import RESAMPLERS
from smcppl.core.weights import (PREFIX_BLOCK, conditional_ess_ratio, ess_ratio, log_normalize, normalize,
                                 normalized_entropy, prefix_sum)

N = 8
K = 20000  # repetitions
W = np.array([0.30, 0.02, 0.15, 0.08, 0.25, 0.05, 0.10, 0.05])


@pytest.fixture(scope="module")
def copy_counts():
    out = {}
    keys = jax.random.split(jax.random.key(0), K)
    for name, fn in RESAMPLERS.items():
        f = jax.jit(jax.vmap(lambda k: jnp.bincount(fn(k, jnp.asarray(W), N), length=N)))
        out[name] = np.asarray(f(keys))
    return out


@pytest.mark.parametrize("name", sorted(RESAMPLERS))
def test_resampler_unbiased(copy_counts, name):
    counts = copy_counts[name]
    assert counts.shape == (K, N) and np.all(counts.sum(1) == N)
    mean = counts.mean(0)
    # Monte Carlo error of the mean copy count: sd / sqrt(K) (sd estimated; for multinomial sd^2 = N w (1-w)).
    # 5 standard errors: a false alarm has probability < 1e-5 per particle.
    se = counts.std(0) / np.sqrt(K)
    assert np.all(np.abs(mean - N * W) <= 5 * se + 1e-9), (name, mean, N * W, se)


def test_low_variance_schemes(copy_counts):
    var = {k: v.var(0).sum() for k, v in copy_counts.items()}
    # multinomial: sum_i N w_i (1 - w_i) = 6.4; stratified/systematic are far below (each count is within 1 of N w_i)
    assert var["stratified"] < var["multinomial"] and var["systematic"] < var["multinomial"], var
    assert var["residual"] < var["multinomial"], var


def test_resamplers_reject_nothing_on_degenerate_weights():
    w = jnp.zeros(N).at[3].set(1.0)
    for fn in RESAMPLERS.values():
        assert np.all(np.asarray(fn(jax.random.key(1), w, N)) == 3)


def test_weight_utilities():
    lw = jnp.log(jnp.asarray(W))
    assert np.isclose(float(ess_ratio(lw)), 1 / np.sum(W**2) / N, rtol=1e-5)
    h = -np.sum(W * np.log(W)) / np.log(N)
    assert np.isclose(float(normalized_entropy(lw)), h, rtol=1e-5)
    # NaN counts as -inf, never poisons the others
    w = normalize(jnp.array([jnp.nan, 0.0, 0.0]))
    assert np.allclose(np.asarray(w), [0, 0.5, 0.5])
    # every -inf: uniform weights, no NaN
    lwn, tot = log_normalize(jnp.full(4, -jnp.inf))
    assert np.allclose(np.exp(np.asarray(lwn)), 0.25) and np.isneginf(float(tot))
    # conditional ESS equals the ESS of the increments when the current weights are uniform
    inc = jnp.asarray(np.random.default_rng(0).normal(size=50))
    assert np.isclose(float(conditional_ess_ratio(jnp.zeros(50), inc)), float(ess_ratio(inc)), rtol=1e-5)


@pytest.mark.parametrize("shape,axis", [((1,), 0), ((PREFIX_BLOCK,), 0), ((PREFIX_BLOCK + 1,), 0), ((4000,), 0),
                                        ((PREFIX_BLOCK ** 2 + 3,), 0), ((3, 130), 1), ((130, 3), 0)])
def test_prefix_sum_is_the_cumulative_sum_across_blocks(shape, axis):
    """The blocked prefix sum (one product per block of PREFIX_BLOCK, then the block totals' own prefix sums,
    two levels past PREFIX_BLOCK**2 entries) against float64 ``cumsum``: float32 sums of n uniforms in [0, 1)
    err by at most ~n eps relative in any order; observed ~1e-7, so 1e-5 of the total fails a wrong offset or
    a dropped block (errors of order 1 / num_blocks). Sums of non-negative entries never decrease (a
    systematic resampler's search needs a sorted cdf), zeros included; integers are exact."""
    rng = np.random.default_rng(0)
    x = rng.random(shape).astype(np.float32)
    x[rng.random(shape) < 0.3] = 0.0
    got = np.asarray(prefix_sum(jnp.asarray(x), axis))
    want = np.cumsum(x.astype(np.float64), axis)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(want)
    assert np.all(np.diff(got, axis=axis) >= 0)
    ints = np.arange(12).reshape(3, 4)
    assert np.array_equal(np.asarray(prefix_sum(jnp.asarray(ints), 1)), np.cumsum(ints, 1))


@pytest.mark.parametrize("name", ["systematic", "stratified", "multinomial"])
def test_resamplers_never_draw_a_zero_weight(name):
    """Half the weights zero (dead particles), N = 10000, 1000 resamplings: a zero weight has an empty cdf
    interval, but the float cdf's rounding can give it one ~1e-7 wide. Without the move of such picks to a
    positive weight (resampling._positive_at_or_before) this test drew a zero weight 3 (systematic), 7
    (stratified) and 7 (multinomial) times; the former associative-scan prefix sum drew ~60 per 1000
    systematic resamplings. So zero is a test that can fail."""
    n, reps = 10000, 1000
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    w = jax.random.exponential(k1, (reps, n)) * (jax.random.uniform(k2, (reps, n)) > 0.5)
    fn = RESAMPLERS[name]
    idx = jax.jit(jax.vmap(lambda k, wi: fn(k, wi, n)))(jax.random.split(k3, reps), w)
    picked = np.take_along_axis(np.asarray(w), np.asarray(idx), axis=1)
    assert np.sum(picked == 0) == 0


def _weights_with_ess_ratio(r, n=100):
    """Log-weights with ESS/N = r: one heavy particle of weight a, the rest equal."""
    # ESS = 1 / (a^2 + (1-a)^2/(n-1)) = r n  -> solve for a
    from scipy.optimize import brentq
    a = brentq(lambda a: 1 / (a**2 + (1 - a) ** 2 / (n - 1)) - r * n, 1 / n, 1 - 1e-12)
    w = np.full(n, (1 - a) / (n - 1))
    w[0] = a
    return jnp.log(jnp.asarray(w))


def test_entropic_rules_hand_values():
    e = Entropic("epf_ess")
    lw = _weights_with_ess_ratio(0.2)
    assert np.isclose(float(ess_ratio(lw)), 0.2, rtol=1e-4)
    assert np.isclose(float(rule_temperature(lw, 0.2, e)), 4.0, rtol=1e-3)  # (1/0.2)(1-0.2)
    assert np.isclose(float(temperature(lw, 0.2, e)), 4.0, rtol=1e-3)  # gates open: ESS/N<0.5, progress<0.5
    lw5 = _weights_with_ess_ratio(0.5)
    assert np.isclose(float(rule_temperature(lw5, 0.8, e)), 1.0)  # max(1, 2 * 0.2)
    # epf_entropy: H_n = 0.5 at progress 0.3 -> beta = 0.5 + 0.5*0.3 = 0.65 -> tau = 1/0.65
    from scipy.optimize import brentq
    n = 100

    def h_of(a):
        w = np.full(n, (1 - a) / (n - 1))
        w[0] = a
        return -np.sum(w * np.log(w)) / np.log(n)
    a = brentq(lambda a: h_of(a) - 0.5, 1 / n + 1e-9, 1 - 1e-9)
    w = np.full(n, (1 - a) / (n - 1))
    w[0] = a
    lwh = jnp.log(jnp.asarray(w))
    assert np.isclose(float(normalized_entropy(lwh)), 0.5, atol=1e-5)
    assert np.isclose(float(rule_temperature(lwh, 0.3, Entropic("epf_entropy"))), 1 / 0.65, atol=1e-3)
    assert np.isclose(float(rule_temperature(lw, 0.5, Entropic("epf_linear"))), 1.5)
    # gates: ESS above threshold or past the early phase -> no flattening
    assert float(temperature(lw5, 0.1, Entropic("epf_linear", ess_threshold=0.4))) == 1.0
    assert float(temperature(lw, 0.6, Entropic("epf_ess", early_phase=0.5))) == 1.0


@pytest.mark.parametrize("kind", ["ess", "entropy"])
@pytest.mark.parametrize("target", [0.05, 0.3, 0.6, 0.9])
def test_target_rule_reaches_target(kind, target):
    lw = jnp.asarray(np.random.default_rng(1).normal(scale=3.0, size=200))
    tau = target_temperature(lw, target, kind)
    meas = ess_ratio if kind == "ess" else normalized_entropy
    reached = float(meas(lw / tau))
    if float(meas(lw)) >= target:  # already diverse enough: the smallest tau >= 1 is 1
        assert float(tau) == 1.0
    else:
        assert float(tau) > 1.0 and abs(reached - target) < 1e-3, (tau, reached)


def test_entropic_correction_unbiased():
    """Corrected entropic resampling keeps exp(inc) * mean_j exp(r_j) f(x_{a_j}) unbiased for
    (1/N) sum_i exp(l_i) f(x_i); the faithful (uncorrected) step is biased for the weighted mean."""
    n, reps = 16, 40000
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=n))
    lw = jnp.asarray(rng.normal(scale=2.0, size=n))
    exact_z = float(jnp.mean(jnp.exp(lw)))
    exact_fz = float(jnp.mean(jnp.exp(lw) * x))

    def est(policy):
        def one(k):
            r = resample(k, lw, 0.0, policy)
            wj = jnp.exp(r.log_weights)
            return jnp.exp(r.log_evidence_increment) * jnp.stack([jnp.mean(wj), jnp.mean(wj * x[r.indices])])
        return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(3), reps)))

    ent = Entropic("epf_linear", ess_threshold=1.0, early_phase=1.0, correct=True)
    vals = est(Resampling("multinomial", "always", entropic=ent))
    mean, se = vals.mean(0), vals.std(0) / np.sqrt(reps)
    # unbiased: within 5 standard errors of the exact values
    assert abs(mean[0] - exact_z) < 5 * se[0] + 1e-6, (mean[0], exact_z, se[0])
    assert abs(mean[1] - exact_fz) < 5 * se[1], (mean[1], exact_fz, se[1])
    # faithful ePF (no correction): the weighted mean estimate is visibly biased
    faithful = est(Resampling("multinomial", "always", entropic=ent._replace(correct=False)))
    ratio_exact = exact_fz / exact_z
    ratio_faithful = faithful[:, 1].mean() / faithful[:, 0].mean()
    ratio_corrected = mean[1] / mean[0]
    assert abs(ratio_corrected - ratio_exact) < 0.2 * abs(ratio_faithful - ratio_exact)


def test_policy_validation_messages():
    from smcppl.core.policy import validate_resampling
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            validate_resampling(Resampling(threshold=bad))
    with pytest.raises(ValueError, match="Unknown resampling scheme"):
        validate_resampling(Resampling(scheme="bogus"))
    with pytest.raises(ValueError, match="when"):
        validate_resampling(Resampling(when="sometimes"))
    with pytest.raises(ValueError, match="temperature rule"):
        validate_resampling(Resampling(entropic=Entropic(rule="hot")))
    with pytest.raises(ValueError, match="ess_threshold"):
        validate_resampling(Resampling(entropic=Entropic(ess_threshold=0.0)))
