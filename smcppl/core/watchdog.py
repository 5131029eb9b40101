"""A watchdog for compiled runs: no silent infinite wait.

On XLA's CPU runtime a compiled program can, rarely, never finish: every worker of the intra-op
(Eigen) thread pool waits for work while the caller waits in ``block_until_ready``, with no CPU used
and no message. Such a computation cannot be cancelled, so :func:`call_with_timeout` runs it in a
daemon thread and, past the deadline, raises :class:`SMCTimeoutError` naming the likely cause and the
workaround instead of freezing the caller (a notebook kernel, a test run).

The workaround is single-threaded Eigen on CPU, which must be in the environment before JAX starts::

    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    import jax  # only now
"""
from __future__ import annotations

import atexit
import math
import os
import threading
import time
from typing import Any, Callable, Optional

import jax

from smcppl.core.engine import SMCError

__all__ = ["SMCTimeoutError", "call_with_timeout", "cpu_eigen_mitigation_active", "MITIGATION_FLAG",
           "validate_timeout"]

MITIGATION_FLAG = "--xla_cpu_multi_thread_eigen=false"
_FLAG_NAME = "--xla_cpu_multi_thread_eigen"


class SMCTimeoutError(SMCError, TimeoutError):
    """A compiled run did not finish within the given timeout (see :func:`call_with_timeout`)."""


def cpu_eigen_mitigation_active(xla_flags: Optional[str] = None) -> bool:
    """True if ``XLA_FLAGS`` (or the string given) turns XLA's multi-threaded Eigen off on CPU, i.e.
    its last ``--xla_cpu_multi_thread_eigen`` setting is false. Says nothing about whether JAX had
    already started when the variable was set (then it has no effect)."""
    flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
    active = False
    for token in flags.split():
        name, _, value = token.partition("=")
        if name == _FLAG_NAME:
            active = value.strip().lower() in ("false", "0", "no")
    return active


def validate_timeout(timeout) -> Optional[float]:
    """``None`` (wait forever) or a positive, finite number of seconds."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or timeout <= 0:
        raise ValueError(f"timeout must be None (wait forever) or a positive finite number of seconds, "
                         f"got {timeout!r}.")
    return float(timeout)


def _timeout_message(what: str, timeout: float) -> str:
    if cpu_eigen_mitigation_active():
        advice = (f"XLA_FLAGS already contains {MITIGATION_FLAG}, so the known CPU thread-pool hang is "
                  f"unlikely: if the run is simply long, pass a larger timeout.")
    else:
        advice = (f"On CPU the likely cause is XLA's CPU runtime wedging its multi-threaded Eigen thread "
                  f"pool in vmapped programs (all workers idle, no CPU used). Workaround: set "
                  f"XLA_FLAGS={MITIGATION_FLAG} in the environment BEFORE jax is imported (e.g. "
                  f"os.environ['XLA_FLAGS'] = '{MITIGATION_FLAG}' at the top of a notebook, then restart "
                  f"the kernel), at some speed cost. If the run is simply long, pass a larger timeout.")
    return (f"{what} did not finish within {timeout:g} s. The compiled computation cannot be cancelled and "
            f"goes on in the background; restart the kernel/process to free it. {advice}")


EXIT_GRACE_SECONDS = 30.0  # at interpreter exit, how long to wait for runs left behind by a timeout
_left_running: set = set()  # worker threads of timed-out calls that have not finished yet


@atexit.register
def _wait_for_left_running():
    """At exit, give computations left running by a timeout up to ``EXIT_GRACE_SECONDS`` in all to finish:
    a daemon thread still inside XLA when the interpreter shuts down aborts the process ("FATAL:
    exception not rethrown") instead of letting it exit cleanly. A truly hung run is not waited for longer."""
    deadline = time.monotonic() + EXIT_GRACE_SECONDS
    for thread in list(_left_running):
        thread.join(max(deadline - time.monotonic(), 0.0))


def call_with_timeout(fn: Callable, *args, timeout: Optional[float] = None, what: str = "SMC run") -> Any:
    """``jax.block_until_ready(fn(*args))``, waiting at most ``timeout`` seconds.

    timeout=None waits forever, in the caller's thread. Otherwise the call runs in a daemon thread; past
    the deadline :class:`SMCTimeoutError` is raised (naming ``what``, the likely cause and the
    workaround) and the computation is left running in the background. Exceptions raised by ``fn``
    propagate unchanged, with their traceback."""
    timeout = validate_timeout(timeout)
    if timeout is None:
        return jax.block_until_ready(fn(*args))

    box: dict = {}
    done = threading.Event()

    def work():
        try:
            box["value"] = jax.block_until_ready(fn(*args))
        except BaseException as err:
            box["error"] = err
        finally:
            done.set()
            _left_running.discard(threading.current_thread())

    worker = threading.Thread(target=work, name=f"smcppl-watchdog[{what}]", daemon=True)
    worker.start()
    if not done.wait(timeout):
        _left_running.add(worker)
        raise SMCTimeoutError(_timeout_message(what, timeout))
    if "error" in box:
        err = box.pop("error")
        try:
            raise err.with_traceback(err.__traceback__)
        finally:
            del err
    return box.pop("value")
