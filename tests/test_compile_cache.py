"""Compiled code is reused: a second run with inputs of the same shapes does not recompile and gives
the same results as a fresh object; new data of the same shapes gives that data's answer; a fresh
process re-uses the persistent compilation cache."""
import json
import logging
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from smcppl import SMC, TemperedSMC
from smcppl.core.plan import settings_signature
from smcppl.diagnostics.export import to_datatree
from smcppl.runner import compilation_cache_dir
from smcppl.models import zoo

DATA = zoo.conjugate_gaussian_data(dim=3, num_obs=5, seed=2)
OTHER = zoo.conjugate_gaussian_data(dim=3, num_obs=5, seed=9)  # same shapes, other values


def _alg():
    return TemperedSMC(zoo.conjugate_gaussian, move="rwm", num_mcmc_steps=2, tuning="weighted")


def test_second_run_reuses_compiled_code_and_matches_a_fresh_object():
    smc = SMC(_alg(), num_particles=300, num_chains=2)
    smc.run(jax.random.key(0), **DATA)
    assert smc.timing["reused_compiled"] == 0
    smc.run(jax.random.key(1), **DATA)
    assert smc.timing["reused_compiled"] == 1
    second = np.asarray(smc.log_evidence)
    fresh = SMC(smc.algorithm, num_particles=300, num_chains=2).run(jax.random.key(1), **DATA)
    np.testing.assert_array_equal(second, np.asarray(fresh.log_evidence))

    # NumPyro's habit, a legacy raw key: the same stream as key(1), so the same run, on the same program
    smc.run(jax.random.PRNGKey(1), **DATA)
    assert smc.timing["reused_compiled"] == 1
    np.testing.assert_array_equal(second, np.asarray(smc.log_evidence))

    smc.to_arviz()  # compiles the export's programs (sample_stats, pointwise log-likelihood)

    # new data of the same shapes: no compilation, and the posterior of the new data (exact mean known;
    # posterior sd 1/sqrt(6) = 0.41, 600 draws with ESS >= 100 give se < 0.05, so 0.2 is > 4 se)
    smc.run(jax.random.key(2), **OTHER)
    assert smc.timing["reused_compiled"] == 1
    # its export traces nothing (the programs take the data as an input; they used to be traced again for every
    # run) and holds the new data's log-likelihood
    traced = _CompileLog()
    logging.getLogger("jax").addHandler(traced)
    try:
        with jax.log_compiles(True):
            tree = to_datatree(smc)
    finally:
        logging.getLogger("jax").removeHandler(traced)
    assert traced.traced == [], traced.traced
    np.testing.assert_allclose(tree["log_likelihood"]["y"].values.reshape(2, 300, -1).sum(-1).reshape(-1),
                               np.asarray(smc.final_particles["loglik"]).reshape(-1), rtol=1e-4, atol=1e-3)
    exact = zoo.conjugate_gaussian_exact(**OTHER)
    assert np.max(np.abs(np.asarray(smc.get_samples()["theta"]).mean(0) - exact["mean"])) < 0.2
    assert abs(float(np.mean(smc.log_evidence)) - exact["log_evidence"]) < 0.5

    # another kind of key is another program (it used to be handed to the threefry one: a TypeError of XLA's)
    smc.run(jax.random.key(1, impl="rbg"), **DATA)
    assert smc.timing["reused_compiled"] == 0 and np.all(np.isfinite(np.asarray(smc.log_evidence)))
    for bad in (1, jax.random.split(jax.random.key(0), 2), np.zeros(2)):
        with pytest.raises(TypeError, match="rng_key must be one JAX PRNG key"):
            smc.run(bad, **DATA)

    # a different shape compiles again, and so does a number of particles changed in place (it used to
    # re-use the program of the old number and return its draws)
    smc.num_particles = 400
    smc.run(jax.random.key(3), **zoo.conjugate_gaussian_data(dim=3, num_obs=6, seed=2))
    assert smc.timing["reused_compiled"] == 0
    assert np.asarray(smc.get_samples(group_by_chain=True)["theta"]).shape == (2, 400, 3)


def test_settings_changed_in_place_change_the_programs_key():
    alg = _alg()
    before = settings_signature(alg)
    assert settings_signature(alg) == before and hash(before) is not None
    alg.max_stages = 100  # a constant of the compiled program (the target ESS, an input of it, is keyed too)
    assert settings_signature(alg) != before
    alg.max_stages = _alg().max_stages
    assert settings_signature(alg) == before


class _CompileLog(logging.Handler):
    """Counts XLA compilations of the runner's program (``jit(run_one)``) through JAX's compile log, and
    every XLA compilation (``names``: the compiled functions, in order)."""

    def __init__(self):
        super().__init__()
        self.count, self.names, self.traced = 0, [], []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Finished tracing"):
            self.traced.append(message[:120])
        if message.startswith("Finished XLA compilation of "):
            self.names.append(message.split("Finished XLA compilation of ", 1)[1].split(" in ")[0])
        if "Finished XLA compilation of jit(run_one)" in message:
            self.count += 1


def test_pilot_and_chains_share_one_compilation_and_a_second_run_compiles_nothing():
    """Default tuning="pilot": the pilot and the three chains run one compiled program (one XLA compilation
    of the runner's program on the first call, none on the second; the second call compiles nothing at all,
    the model check on the new call's data included), and the second call gives what a fresh object gives
    for the same key."""
    log = _CompileLog()
    logger = logging.getLogger("jax")
    logger.addHandler(log)
    try:
        with jax.log_compiles(True):
            smc = SMC(TemperedSMC(zoo.conjugate_gaussian, move="rwm", num_mcmc_steps=2), num_particles=200,
                      num_chains=3, chain_method="sequential")
            smc.run(jax.random.key(0), **DATA)
            first, compiled_before = log.count, len(log.names)
            smc.run(jax.random.key(1), **DATA)
            second, compiled_second = log.count - first, log.names[compiled_before:]
    finally:
        logger.removeHandler(log)
    assert (first, second) == (1, 0), (first, second)
    assert compiled_second == [], compiled_second
    assert smc.timing["reused_compiled"] == 1 and smc.timing["pilot_seconds"] > 0
    again = np.asarray(smc.log_evidence)
    fresh = SMC(smc.algorithm, num_particles=200, num_chains=3, chain_method="sequential").run(jax.random.key(1),
                                                                                               **DATA)
    np.testing.assert_array_equal(again, np.asarray(fresh.log_evidence))
    # the chains are independent given the pilot: different keys, different estimates, all near the truth
    assert len(set(again.tolist())) == 3
    exact = zoo.conjugate_gaussian_exact(**DATA)["log_evidence"]
    assert np.all(np.abs(again - exact) < 0.5), (again, exact)


def test_compilation_cache_dir_is_configurable(monkeypatch):
    monkeypatch.setenv("SMCPPL_COMPILATION_CACHE", "off")
    assert compilation_cache_dir() is None
    monkeypatch.setenv("SMCPPL_COMPILATION_CACHE", "/tmp/somewhere")
    assert compilation_cache_dir() == "/tmp/somewhere"
    monkeypatch.delenv("SMCPPL_COMPILATION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/tmp/xdg")
    assert compilation_cache_dir() == os.path.join("/tmp/xdg", "smcppl", "jax")


SCRIPT = textwrap.dedent("""
    import json, jax
    from jax import monitoring
    hits = []
    monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
    from smcppl import SMC, TemperedSMC
    from smcppl.models import zoo
    smc = SMC(TemperedSMC(zoo.beta_binomial, move="rwm", num_mcmc_steps=1, tuning="weighted"), num_particles=64)
    smc.run(jax.random.key(0), n=20, k=7)
    import sys  # a run (health checks included) loads no xarray/pandas: they are the export's (~0.2 s)
    print(json.dumps({"hits": len(hits), "log_z": float(smc.log_evidence[0]),
                      "export_modules": sorted(m for m in ("xarray", "pandas", "arviz") if m in sys.modules)}))
""")


def test_fresh_process_reuses_the_persistent_cache(tmp_path):
    env = dict(os.environ, SMCPPL_COMPILATION_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["hits"] == 0 and runs[1]["hits"] >= 1, runs
    assert runs[0]["log_z"] == runs[1]["log_z"]
    assert runs[0]["export_modules"] == [], runs[0]


def test_no_reuse_when_an_algorithm_bakes_array_inputs_into_the_code():
    """An algorithm that closes over an array input (the sequence filter's prompt) must not have its
    compiled code reused for new values of that input: the signature check refuses it."""
    from smcppl.runner import _data_holds_every_array

    y = np.zeros((5, 3))
    assert _data_holds_every_array((), {"y": y, "dim": 3}, [y])  # TemperedSMC: arrays are jit arguments
    assert not _data_holds_every_array((np.arange(4),), {}, None)  # a prompt baked into the code
    assert _data_holds_every_array((), {}, None)  # no array inputs at all


def _binomial_of_counts(counts):
    """``counts = [k, n]``; ``int(counts[1])`` needs a concrete value, so the whole input stays a compile-time
    constant (as under NUTS)."""
    p = numpyro.sample("p", dist.Beta(1.0, 1.0))
    numpyro.sample("k", dist.Binomial(total_count=int(counts[1]), probs=p), obs=counts[0])


def test_constant_array_inputs_reuse_code_for_equal_contents_only():
    """A model that holds an array input as a constant: a second call with an equal array (a new object)
    reuses the compiled code and gives what a fresh object gives; an array of the same shape with other
    values compiles again and gives its own answer (Beta(1, 1) prior: log Z = -log(n + 1) for any k; 2
    chains of 300 particles of a 1-d posterior, sd(log Z) ~ 0.05, so 0.3 is > 4 sd)."""
    alg = TemperedSMC(_binomial_of_counts, move="rwm", num_mcmc_steps=2, tuning="weighted")
    smc = SMC(alg, num_particles=300, num_chains=2)
    smc.run(jax.random.key(0), np.array([7.0, 20.0]))
    assert smc.timing["reused_compiled"] == 0
    smc.run(jax.random.key(1), np.array([7.0, 20.0]))
    assert smc.timing["reused_compiled"] == 1
    fresh = SMC(TemperedSMC(_binomial_of_counts, move="rwm", num_mcmc_steps=2, tuning="weighted"),
                num_particles=300, num_chains=2).run(jax.random.key(1), np.array([7.0, 20.0]))
    np.testing.assert_array_equal(np.asarray(smc.log_evidence), np.asarray(fresh.log_evidence))
    assert abs(float(np.mean(smc.log_evidence)) + np.log(21.0)) < 0.3
    smc.run(jax.random.key(2), np.array([3.0, 10.0]))
    assert smc.timing["reused_compiled"] == 0
    assert abs(float(np.mean(smc.log_evidence)) + np.log(11.0)) < 0.3, smc.log_evidence


def test_target_ess_and_leapfrog_count_are_inputs_of_the_compiled_program():
    """TemperedSMC's target ESS and HMC's leapfrog count are inputs of the compiled program (``Plan.settings``),
    not constants in it: two algorithms that differ only in them lower to the same program (so a new object,
    or a new process, finds it in the persistent compilation cache instead of compiling), and the traced
    values run exactly as the constants did (same log Z to the bit, same number of stages)."""
    from smcppl.core.chain import make_run_one

    def plan_of(**kw):
        alg = TemperedSMC(zoo.conjugate_gaussian, move="hmc", num_mcmc_steps=2, tuning="weighted", **kw)
        return alg.build(200, **DATA)

    key = jax.random.key(4)
    a, b = plan_of(), plan_of(target_ess=0.8, num_integration_steps=3)
    assert float(b.settings["target_ess"]) == np.float32(0.8) and int(b.settings["num_integration_steps"]) == 3

    def program_text(plan):
        return jax.jit(make_run_one(plan, plan.resampling)).lower(key, plan.data, None, plan.settings).as_text()

    assert program_text(a) == program_text(b)

    run_b = make_run_one(b, b.resampling)
    traced = jax.jit(run_b)(key, b.data, None, b.settings)[0]
    constant = jax.jit(run_b)(key, b.data)[0]  # no settings: the algorithm's values as constants
    assert int(traced.n_stages) == int(constant.n_stages)
    assert float(traced.log_evidence) == float(constant.log_evidence)
    # the settings take effect: a target ESS of 0.8 takes more stages than the default 0.5
    default = jax.jit(make_run_one(a, a.resampling))(key, a.data, None, a.settings)[0]
    assert int(traced.n_stages) > int(default.n_stages), (int(traced.n_stages), int(default.n_stages))
