"""The watchdog for compiled runs (smcppl.core.watchdog): a run that exceeds its timeout raises the
documented error quickly instead of waiting forever; normal results and errors pass through."""
import threading
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smcppl.core.engine import SMCError
from smcppl.core.watchdog import (MITIGATION_FLAG, SMCTimeoutError, call_with_timeout, cpu_eigen_mitigation_active,
                                  validate_timeout)


def _check_message(msg, what, timeout):
    assert f"{what} did not finish within {timeout:g} s" in msg
    assert "cannot be cancelled" in msg and "restart the kernel" in msg


def test_compiled_run_past_timeout_raises_documented_error(monkeypatch):
    # A jitted function whose execution blocks in a host callback for 1 s: jit returns at once (async
    # dispatch) and the wait happens in block_until_ready, as in the reported hang.
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # message for an unmitigated environment
    finished = threading.Event()

    def slow_host(x):
        time.sleep(1.0)
        finished.set()
        return x

    f = jax.jit(lambda x: jax.pure_callback(slow_host, jax.ShapeDtypeStruct(x.shape, x.dtype), x) + 1.0)
    t0 = time.perf_counter()
    with pytest.raises(SMCTimeoutError) as info:
        call_with_timeout(f, jnp.zeros(3), timeout=0.1, what="SMC run (test)")
    assert time.perf_counter() - t0 < 0.9  # did not wait for the 1 s computation
    err = info.value
    assert isinstance(err, SMCError) and isinstance(err, TimeoutError)
    msg = str(err)
    _check_message(msg, "SMC run (test)", 0.1)
    assert "Eigen thread pool" in msg and "vmapped" in msg
    assert f"XLA_FLAGS={MITIGATION_FLAG}" in msg and "BEFORE jax is imported" in msg
    assert "larger timeout" in msg
    finished.wait(5.0)  # leave no computation running behind the test


def test_timeout_message_when_flag_already_set(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", MITIGATION_FLAG)
    with pytest.raises(SMCTimeoutError) as info:
        call_with_timeout(time.sleep, 0.5, timeout=0.05)
    msg = str(info.value)
    _check_message(msg, "SMC run", 0.05)
    assert "already contains" in msg and "larger timeout" in msg


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_result_passes_through(timeout):
    f = jax.jit(lambda x, y: {"s": x * y, "t": (x + y,)})
    out = call_with_timeout(f, jnp.arange(3.0), 2.0, timeout=timeout)
    np.testing.assert_allclose(out["s"], [0.0, 2.0, 4.0])
    np.testing.assert_allclose(out["t"][0], [2.0, 3.0, 4.0])


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_exception_propagates_unchanged(timeout):
    original = ValueError("boom in the model")

    def failing_inner(x):
        raise original

    with pytest.raises(ValueError) as info:
        call_with_timeout(failing_inner, 1, timeout=timeout)
    assert info.value is original
    frames = [fr.name for fr in traceback.extract_tb(info.value.__traceback__)]
    assert "failing_inner" in frames  # the traceback still reaches the raising frame


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "10"])
def test_bad_timeout_is_rejected(bad):
    with pytest.raises(ValueError, match="timeout must be None"):
        validate_timeout(bad)


def test_mitigation_flag_parsing():
    assert not cpu_eigen_mitigation_active("")
    assert cpu_eigen_mitigation_active(MITIGATION_FLAG)
    assert cpu_eigen_mitigation_active("--xla_force_host_platform_device_count=4 --xla_cpu_multi_thread_eigen=False")
    assert not cpu_eigen_mitigation_active("--xla_cpu_multi_thread_eigen=false --xla_cpu_multi_thread_eigen=true")
    assert not cpu_eigen_mitigation_active("--xla_cpu_multi_thread_eigen_other=false")


def test_smc_run_timeout_raises_the_documented_error():
    """SMC.run(timeout=...) goes through the watchdog: a compiled run made to exceed a tiny timeout
    (a host callback sleeping inside the model) raises SMCTimeoutError naming the cause and workaround."""
    import time as _time

    import numpyro
    import numpyro.distributions as dist

    from smcppl import SMC, TemperedSMC

    slept = []

    def _sleep(x):  # sleeps once inside the compiled run (not while the model is checked before compiling)
        if not slept and threading.current_thread() is not threading.main_thread():
            slept.append(1)
            _time.sleep(1.0)
        return x

    def slow_model(y):
        m = numpyro.sample("m", dist.Normal(0.0, 1.0))
        m = jax.pure_callback(_sleep, jax.ShapeDtypeStruct((), m.dtype), m, vmap_method="sequential")
        numpyro.sample("y", dist.Normal(m, 1.0), obs=y)

    smc = SMC(TemperedSMC(slow_model, move="rwm", num_mcmc_steps=1, tuning="weighted"), num_particles=4)
    with pytest.raises(SMCTimeoutError, match="xla_cpu_multi_thread_eigen"):
        smc.run(jax.random.key(0), jnp.ones(3), timeout=0.2)
    with pytest.raises(ValueError):
        smc.run(jax.random.key(0), jnp.ones(3), timeout=-1)
