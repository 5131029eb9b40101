"""Per-call and per-stage costs of tempered SMC on small models (issue 13, time to posterior): the model
inspection kept across runs of one TemperedSMC, and the early stop of the temperature bisection. Both
are exact (the same numbers as without them); these tests check that, without compiling a sampler."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from smcppl import ModelError, TemperedSMC
from smcppl.core.schedules import next_temperature
from smcppl.core.weights import conditional_ess_ratio, ess_ratio, sanitize

TRACES = {"n": 0}


def counted_regression(x, y=None):
    """A 2-parameter linear regression that counts how often it is run (traced or eager)."""
    TRACES["n"] += 1
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    with numpyro.plate("obs", x.shape[0]):
        numpyro.sample("y", dist.Normal(a + b * x, 0.5), obs=y)


def _data(seed, n=20):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).astype(np.float32)
    return x, (0.3 + 1.2 * x + 0.5 * rng.normal(size=n)).astype(np.float32)


def test_second_inspection_reuses_the_first_and_reads_the_new_data():
    alg = TemperedSMC(counted_regression)
    x1, y1 = _data(0)
    x2, y2 = _data(1)
    d1 = alg.density(x1, y=y1)
    n_after_first = TRACES["n"]
    d2 = alg.density(x2, y=y2)
    assert TRACES["n"] == n_after_first  # nothing traced again: the compiled first evaluation re-checks
    np.testing.assert_array_equal(d2.observed_data["y"], y2)
    assert d2.observed_data["y"].dtype == d1.observed_data["y"].dtype
    # the reused density evaluates on the new data exactly as a fresh inspection of it does
    fresh = TemperedSMC(counted_regression).density(x2, y=y2)
    u = jnp.array([0.2, -0.4])
    assert float(d2.loglik(u, d2.data)) == float(fresh.loglik(u, fresh.data))
    assert float(d2.log_jacobian(u)) == float(fresh.log_jacobian(u))
    assert float(d2.loglik(u, d2.data)) != float(d1.loglik(u, d1.data))
    # other shapes: inspected again
    alg.density(*_data(2, n=30))
    assert TRACES["n"] > n_after_first


def test_reused_inspection_still_refuses_bad_data():
    alg = TemperedSMC(counted_regression)
    x, y = _data(0)
    alg.density(x, y=y)
    y_bad = y.copy()
    y_bad[3] = np.nan
    with pytest.raises(ModelError, match=r"Observed site 'y'.*NaN or infinite"):
        alg.density(x, y=y_bad)
    x_bad = x.copy()
    x_bad[0] = np.nan  # a NaN covariate makes the log-likelihood NaN: the error names the input
    for a in (alg, TemperedSMC(counted_regression)):  # the reused inspection and a fresh one agree
        with pytest.raises(ModelError, match=r"argument 'x' \(position 0\).*NaN or infinite"):
            a.density(x_bad, y=y)


def test_reused_inspection_refuses_a_nan_covariate_that_the_compiled_check_cannot_see():
    """Under Bernoulli(logits=...) a NaN covariate gives a finite log-likelihood in the compiled first
    evaluation (NumPyro masks the invalid logits), so a reused inspection must not rely on it: the second
    call with a NaN covariate raises as a fresh inspection does."""
    from smcppl.models import zoo

    d = zoo.challenger_data()
    alg = TemperedSMC(zoo.logistic_regression)
    alg.density(d["x"], d["y"])
    x_bad = d["x"].copy()
    x_bad[3, 0] = np.nan
    for a in (alg, TemperedSMC(zoo.logistic_regression)):
        with pytest.raises(ModelError, match=r"argument 'x' \(position 0\).*N"):
            a.density(x_bad, d["y"])


def _bisection_50(ll, lw, beta, target, criterion, num_iter=50, min_increment=1e-6):
    """The temperature rule as it was: a fixed 50 halvings (the reference for the early stop)."""
    ll, lw = sanitize(ll), sanitize(lw)
    remaining = jnp.maximum(1.0 - beta, 0.0)

    def measure(delta):
        inc = jnp.where(jnp.isfinite(ll), delta * ll, jnp.where(delta > 0, -jnp.inf, 0.0))
        if criterion == "cess":
            return conditional_ess_ratio(lw, inc)
        return ess_ratio(lw + inc) * jnp.where(jnp.all(~jnp.isfinite(lw + inc)), 0.0, 1.0)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        ok = measure(mid) >= target
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    full_ok = measure(remaining) >= target
    lo, _ = jax.lax.fori_loop(0, num_iter, body, (jnp.zeros_like(remaining), remaining))
    delta = jnp.where(full_ok, remaining, jnp.maximum(lo, jnp.minimum(min_increment, remaining)))
    new_beta = beta + delta
    return jnp.where(new_beta >= 1.0 - 1e-6, 1.0, new_beta).astype(jnp.result_type(beta, float))


@pytest.mark.parametrize("criterion", ["cess", "ess"])
def test_bisection_early_stop_is_bit_identical_to_fifty_halvings(criterion):
    # log-likelihood spreads from 0.01 to 1e4 nats (increments from ~1 down to ~1e-5, where the bracket
    # needs more halvings), weights uniform or uneven, a few -inf likelihoods, beta near 0 and near 1
    new = jax.jit(lambda ll, lw, b: next_temperature(ll, lw, b, 0.5, criterion))
    old = jax.jit(lambda ll, lw, b: _bisection_50(ll, lw, b, 0.5, criterion))
    key = jax.random.key(13)
    for i, scale in enumerate([0.01, 1.0, 30.0, 1e3, 1e4]):
        k1, k2, key = jax.random.split(key, 3)
        ll = -scale * jnp.abs(jax.random.normal(k1, (500,)))
        ll = ll.at[:3].set(-jnp.inf) if i % 2 else ll
        lw = jnp.zeros(500) if i % 2 == 0 else jax.random.normal(k2, (500,))
        for beta in (0.0, 0.37, 0.999):
            a, b = float(new(ll, lw, beta)), float(old(ll, lw, beta))
            assert a == b, (scale, beta, a, b)


def test_inspection_runs_the_model_abstractly_and_op_by_op_only_where_it_must():
    """A fresh process compiled one small XLA program per operation of the model's op-by-op inspection run
    (~20 for a regression: ~0.3 s warm, ~0.6 s cold, issue 13). The inspection now traces the model with
    abstract values and compiles one program (the prior draw and its log density); models that only a
    concrete run can inspect (an observed value computed inside the model, NaN inputs) still get one, with
    the same results."""
    runs = []

    def regression(x, y=None, computed_obs=False):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        runs.append(not isinstance(a, jax.core.Tracer))  # True: an op-by-op run with concrete values
        with numpyro.plate("obs", x.shape[0]):
            numpyro.sample("y", dist.Normal(a + b * x, 0.5), obs=jnp.asarray(y) * 1.0 if computed_obs else y)

    x, y = _data(0)
    u = jnp.array([0.2, -0.4])
    dens = TemperedSMC(regression).density(x, y=y)
    assert runs and not any(runs), runs
    runs.clear()
    eager = TemperedSMC(regression).density(x, y=y, computed_obs=True)
    assert any(runs), runs  # the computed observation needs its value: a concrete run
    for d in (dens, eager):
        np.testing.assert_array_equal(d.observed_data["y"], y)
        assert d.dim == 2 and d.dims["y"] == ["obs"]
    assert float(eager.loglik(u, eager.data)) == float(dens.loglik(u, dens.data))
    assert float(eager.log_jacobian(u)) == float(dens.log_jacobian(u)) == 0.0


def test_tracing_a_tempered_run_runs_the_model_three_times_and_the_move_once():
    """Tracing cost (issue 13): the program's tracing re-ran the NumPyro model (slow Python handlers) at every
    density evaluation — 9 runs, the move traced twice (once for the stage-0 padding of its diagnostics).
    Now the density is a jitted function traced once per input type and the engine step is traced once, so
    tracing the whole run runs the model three times: the prior draw, the log density, the final values.
    Tracing only: nothing is compiled."""
    from smcppl.core.chain import make_run_one

    x, y = _data(0)
    plan = TemperedSMC(counted_regression).build(100, x, y=y)
    fk_moves = {"n": 0}
    fk_of = plan.fk

    def counting_fk(data, tables=None):
        fk = fk_of(data, tables)

        def move(*a):
            fk_moves["n"] += 1
            return fk.move(*a)

        return fk._replace(move=move)

    plan = plan._replace(fk=counting_fk)
    TRACES["n"] = 0
    jax.jit(make_run_one(plan, plan.resampling)).trace(jax.random.key(0), plan.data, plan.pilot.blank)
    assert fk_moves["n"] == 1
    assert TRACES["n"] == 3
