"""Particle-filter benchmark: smcppl's state-space filters vs a hand-written jitted bootstrap filter (same
process) and vs ``particles`` (N. Chopin's library, if importable; see benchmarks/requirements.txt).

    python benchmarks/state_space.py            # all sections, N = 1e2 .. 1e5, T = 100 and 1000
    python benchmarks/state_space.py --quick    # N = 1e3, 1e4, T = 100, fewer repeats
    python benchmarks/state_space.py --sections lg,sv,pmmh,pgibbs
    python benchmarks/state_space.py --sections first --trees OLD,NEW --rounds 3   # fresh-process first calls

Every filter is the bootstrap filter with systematic resampling at every step and returns ``log Z_hat``;
one call = one whole filter run. JAX timings are after compilation (reported separately), with
``block_until_ready``; medians over ``repeats`` calls with fresh keys, the methods of one (N, T) cell
interleaved in the same process. The log Z columns (mean and sd over the repeats) check that all methods
estimate the same quantity and give the variance of ``log Z_hat`` at equal N.

``lg``: the 1-d linear-Gaussian model ``x_t = 0.9 x_{t-1} + N(0, 0.5)``, ``y_t = x_t + N(0, 1)``, stationary
initial state, ``T = 100`` observations simulated once (Kalman log-likelihood alongside):

* ``smcppl_scan``: the model declared in NumPyro with ``scan`` (:func:`smcppl.models.state_space.lg_model`),
  turned into the lower-level form by the scan handler (its body broadcasts over particles, so it runs
  vectorized: ``scan_state_space(..., vectorize=None)``), run by the engine (``run_fixed`` of
  ``filter_feynman_kac``: per-step ESS, entropy, unique ancestors and lineages recorded);
* ``smcppl_scan_per_particle``: the same with ``vectorize=False`` (the body ``vmap``-ed over split keys);
* ``smcppl_lower``: a hand-written :class:`~smcppl.models.state_space.StateSpace` of per-particle functions;
* ``smcppl_population``: the same with ``population_step``/``population_initial`` (vectorised, as
  ``particles``' models are);
* ``hand``: a ``lax.scan`` bootstrap filter written by hand (resample, propagate, reweight; nothing recorded);
* ``particles``: ``particles.SMC(fk=Bootstrap(LinearGauss), resampling="systematic", ESSrmin=1)`` (NumPy).

``sv``: stochastic volatility ``h_t = mu + phi (h_{t-1} - mu) + sigma N(0, 1)``, ``y_t ~ N(0, exp(h_t))``
(``mu = -1, phi = 0.95, sigma = 0.3``), one series of 1000 simulated once and shared by every method (its
first ``T`` values): ``smcppl_scan`` (:func:`smcppl.models.state_space.stochastic_volatility`, static
parameters given), ``smcppl_front_end`` (the same through ``SMC(StateSpaceFilter(...))``, which also records
the filtering means, variances and quantiles at every step: a second ``run`` with the same shapes, which
compiles nothing; it resamples with the filter's default policy, systematic when ESS/N < 0.5, hence its
smaller log Z sd), ``hand`` and ``particles`` (``StochVol``).

``pmmh``: PMMH iterations per second on the SV series (T = 100; ``particles.mcmc.PMMH`` against
:class:`smcppl.inference.state_space.PMMH`, one chain, N particles per likelihood estimate). smcppl's rate is
from a second ``run`` of the same object (which reuses the compiled chain); the first call's extra time is
reported as the compile time.

``pgibbs``: the conditional-SMC sweep of particle Gibbs (the path update at fixed ``a = 0.9`` on the ``lg``
series, 4 chains ``vmap``-ed, 100 sweeps per call, each sweep's path the next one's reference) with its
resampling of the ``N - 1`` free particles done two ways, interleaved in one process: ``inverse_cdf``
(:func:`smcppl.core.resampling.multinomial`, the default: ``O(N log N)`` per step) and ``gumbel``
(``jax.random.categorical`` with a sample shape, as before: ``N`` Gumbel draws per index, ``N^2`` per step).
``smoother_err``: the largest error of the sweeps' mean path against the Kalman (RTS) smoother, a check that
both draw from the same law.

``first``: what a user waits for in a fresh process (``SMCPPL_COMPILATION_CACHE=off``: nothing read from the
persistent cache), per sampler on the ``lg`` model declared with ``scan`` (T = 100, tutorial settings):
``SMC(StateSpaceFilter(lg_model, theta={"a": 0.9}), 500, num_chains=8)``, ``SMC(SMC2(lg_model,
num_state_particles=64), 256, num_chains=2)``, ``PMMH(lg_model, 100, 200, 600, 4)`` and ``ParticleGibbs(lg_model,
32, 150, 600, 4)``: the first call (build, inspection, compilation, run) and the XLA compilations in it, then a
second call of the same object with a new key. One fresh process per (round, tree, sampler), the trees
alternating; ``value`` (the mean log Z or posterior mean of ``a``) compares trees bit for bit.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np

from smcppl.core.engine import run_fixed
from smcppl.core.policy import Resampling
from smcppl.core.resampling import systematic
from smcppl.core.weights import log_normalize
from smcppl.inference.state_space.filter import complete_state_space, filter_feynman_kac
from smcppl.inference.state_space.scan import scan_state_space
from smcppl.models.state_space import LinearGaussian, StateSpace, kalman_filter, lg_model, simulate

A, Q, R, T = 0.9, 0.5, 1.0, 100
LG = LinearGaussian(np.eye(1) * A, np.eye(1) * Q, np.eye(1), np.eye(1) * R, np.eye(1) * Q / (1 - A**2))
ALWAYS = Resampling("systematic", when="always")
SV = {"mu": -1.0, "phi": 0.95, "sigma": 0.3}
SV_THETA = {"mu": np.float32(SV["mu"]), "phi_half": np.float32((SV["phi"] + 1) / 2), "sigma": np.float32(SV["sigma"])}


def lower_form(y, population=False) -> StateSpace:
    sq, s0 = np.float32(np.sqrt(Q)), np.float32(np.sqrt(Q / (1 - A**2)))

    def log_g(x, u, t):
        return -0.5 * (u - x) ** 2 / R - 0.5 * np.log(2 * np.pi * R)

    def population_step(k, x, u, t):
        x = A * x + sq * jax.random.normal(k, x.shape)
        return x, log_g(x, u, t)

    def population_initial(k, u, n):
        k0, k1 = jax.random.split(k)
        return population_step(k1, s0 * jax.random.normal(k0, (n,)), u, 0)

    return StateSpace(lambda k, u: s0 * jax.random.normal(k), lambda k, x, u, t: A * x + sq * jax.random.normal(k),
                      log_g, inputs=y, population_step=population_step if population else None,
                      population_initial=population_initial if population else None)


def engine_fn(ssm, n):
    ssm = complete_state_space(ssm)
    fk = filter_feynman_kac(ssm, n)
    return lambda key: run_fixed(key, fk, ssm.num_steps - 1, ALWAYS).log_evidence


def hand_fn(y, n, sample_initial, transition, log_g):
    """A bootstrap filter by hand: x_0 ~ m_0; per step resample (systematic), propagate, reweight; the
    transition draws N normals from one key (``transition(key, x)``)."""
    num_steps = y.shape[0]

    def run(key):
        k0, k_run = jax.random.split(key)
        x = transition(jax.random.fold_in(k0, 1), sample_initial(k0, n))
        lw = log_g(x, y[0])

        def step(carry, inp):
            x, lw, logz = carry
            k, y_t = inp
            k_res, k_move = jax.random.split(k)
            log_w, total = log_normalize(lw)
            x = transition(k_move, x[systematic(k_res, jnp.exp(log_w), n)])
            return (x, log_g(x, y_t), logz + total - jnp.log(n)), None

        (x, lw, logz), _ = jax.lax.scan(step, (x, lw, jnp.zeros(())), (jax.random.split(k_run, num_steps - 1), y[1:]))
        return logz + log_normalize(lw)[1] - jnp.log(n)

    return run


def hand_lg(y, n):
    sq, s0 = np.float32(np.sqrt(Q)), np.float32(np.sqrt(Q / (1 - A**2)))
    return hand_fn(y, n, lambda k, n: s0 * jax.random.normal(k, (n,)),
                   lambda k, x: A * x + sq * jax.random.normal(k, x.shape),
                   lambda x, y_t: -0.5 * (y_t - x) ** 2 / R - 0.5 * np.log(2 * np.pi * R))


def hand_sv(y, n):
    mu, phi, sigma = (np.float32(SV[k]) for k in ("mu", "phi", "sigma"))
    s0 = np.float32(SV["sigma"] / np.sqrt(1 - SV["phi"] ** 2))
    return hand_fn(y, n, lambda k, n: mu + s0 * jax.random.normal(k, (n,)),
                   lambda k, h: mu + phi * (h - mu) + sigma * jax.random.normal(k, h.shape),
                   lambda h, y_t: -0.5 * (y_t**2 * jnp.exp(-h) + h + np.log(2 * np.pi)))


def particles_fn(model, ys, n):
    """One ``particles`` bootstrap filter run per call (seed = the call's repeat index)."""
    import particles
    from particles import state_space_models as ssms

    def run(seed):
        np.random.seed(seed)
        alg = particles.SMC(fk=ssms.Bootstrap(ssm=model, data=list(ys)), N=n, resampling="systematic", ESSrmin=1.0,
                            collect=None)
        alg.run()
        return alg.logLt

    return run


def particles_models():
    try:
        from particles import state_space_models as ssms
        from particles.kalman import LinearGauss
    except ImportError:
        return None
    return {"lg": LinearGauss(rho=A, sigmaX=np.sqrt(Q), sigmaY=np.sqrt(R)),  # sigma0 = stationary by default
            "sv": ssms.StochVol(mu=SV["mu"], rho=SV["phi"], sigma=SV["sigma"])}


def emit(row):
    print(json.dumps(row), flush=True)
    return row


def simulate_sv(num_steps=1000, seed=0):
    rng = np.random.default_rng(seed)
    h = SV["mu"] + SV["sigma"] / np.sqrt(1 - SV["phi"] ** 2) * rng.normal()
    ys = []
    for _ in range(num_steps):
        h = SV["mu"] + SV["phi"] * (h - SV["mu"]) + SV["sigma"] * rng.normal()
        ys.append(np.exp(h / 2) * rng.normal())
    return np.asarray(ys)


def time_cell(section, n, num_steps, jax_fns, host_fns, repeats, reference):
    """Compile every JAX method, then run all methods interleaved ``repeats`` times; one row per method."""
    compiled, compile_s = {}, {}
    for name, fn in jax_fns.items():
        t0 = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(jax.random.key(0)).compile()
        compile_s[name] = time.perf_counter() - t0
        compiled[name](jax.random.key(0)).block_until_ready()
    times = {k: [] for k in list(compiled) + list(host_fns)}
    logz = {k: [] for k in times}
    host_repeats = max(3, repeats // 4) if n * num_steps >= 10**7 else repeats
    for r in range(repeats):
        for name, c in compiled.items():
            t0 = time.perf_counter()
            logz[name].append(float(c(jax.random.key(r + 1)).block_until_ready()))
            times[name].append(time.perf_counter() - t0)
        if r < host_repeats:
            for name, fn in host_fns.items():
                t0 = time.perf_counter()
                logz[name].append(float(fn(r)))
                times[name].append(time.perf_counter() - t0)
    hand = statistics.median(times["hand"])
    return [emit(_row(section, name, n, num_steps, times[name], logz[name], reference, compile_s.get(name), hand))
            for name in times]


def front_end_fn(model, theta, y, n):
    """``SMC(StateSpaceFilter(model, theta), n, 1)`` as a function of the key; its first call compiles."""
    from smcppl import SMC
    from smcppl.inference.state_space.filter import StateSpaceFilter

    smc = SMC(StateSpaceFilter(model, theta=theta), num_particles=n, num_chains=1, progress_bar=False)

    def run(key):
        return jnp.asarray(smc.run(key, y).log_evidence)[0]

    return run


def bench_lg(sizes, repeats, peers):
    _, ys = simulate(LG, T, seed=0)
    y = jnp.asarray(ys[:, 0], jnp.float32)
    kf_ll = kalman_filter(LG, ys)[2]
    rows = []
    for n in sizes:
        theta = {"a": jnp.float32(A)}
        jax_fns = {"smcppl_scan": engine_fn(scan_state_space(lg_model, theta, y, q=Q, r=R), n),
                   "smcppl_scan_per_particle": engine_fn(scan_state_space(lg_model, theta, y, q=Q, r=R,
                                                                          vectorize=False), n),
                   "smcppl_lower": engine_fn(lower_form(y), n),
                   "smcppl_population": engine_fn(lower_form(y, population=True), n), "hand": hand_lg(y, n)}
        host = {} if peers is None else {"particles": particles_fn(peers["lg"], ys[:, 0], n)}
        rows += time_cell("lg", n, T, jax_fns, host, repeats, kf_ll)
    return rows


def bench_sv(sizes, steps, repeats, peers):
    from smcppl.models.state_space import stochastic_volatility

    series = simulate_sv(max(steps))
    rows = []
    for num_steps in steps:
        ys = series[:num_steps]
        y = jnp.asarray(ys, jnp.float32)
        for n in sizes:
            jax_fns = {"smcppl_scan": engine_fn(scan_state_space(stochastic_volatility, SV_THETA, y), n),
                       "hand": hand_sv(y, n)}
            host = {"smcppl_front_end": _front_end_timed(stochastic_volatility, y, n)}
            if peers is not None:
                host["particles"] = particles_fn(peers["sv"], ys, n)
            rows += time_cell("sv", n, num_steps, jax_fns, host, repeats, None)
    return rows


def _front_end_timed(model, y, n):
    run = front_end_fn(model, SV_THETA, y, n)
    run(jax.random.key(0))  # compiles; later calls reuse the compiled program

    def call(seed):
        return float(run(jax.random.key(seed + 1)))

    return call


def bench_pmmh(n, iterations, peers):
    from smcppl.inference.state_space import PMMH
    from smcppl.models.state_space import stochastic_volatility

    ys = simulate_sv(100)
    y = jnp.asarray(ys, jnp.float32)
    rows = []
    pmmh = PMMH(stochastic_volatility, num_particles=n, num_warmup=iterations // 5, num_samples=iterations,
                num_chains=1)
    runs = []
    for seed in (0, 1):  # the first call compiles, the second reuses the compiled chain
        t0 = time.perf_counter()
        pmmh.run(jax.random.key(seed), y)
        runs.append(time.perf_counter() - t0)
    total = iterations + iterations // 5
    rows.append(emit({"bench": "state_space_pmmh", "method": "smcppl", "N": n, "T": 100,
                      "iterations_per_s": total / runs[1], "compile_s": runs[0] - runs[1],
                      "calls": [(total, t) for t in runs], "acceptance": float(pmmh.acceptance_rate.mean())}))
    if peers is not None:
        from particles import distributions as dists
        from particles import mcmc
        from particles import state_space_models as ssms

        class Prior(dists.StructDist):  # particles 0.4 on NumPy 2: its PMMH stores logpdf of one theta in a scalar
            def logpdf(self, theta):
                lp = super().logpdf(theta)
                return lp.item() if np.size(lp) == 1 else lp

        prior = Prior({"mu": dists.Normal(scale=3.0), "rho": dists.LinearD(dists.Beta(20.0, 1.5), a=2.0, b=-1.0),
                       "sigma": dists.TruncNormal(mu=0.0, sigma=1.0, a=0.0, b=np.inf)})
        niter = 100
        np.random.seed(0)
        alg = mcmc.PMMH(ssm_cls=ssms.StochVol, prior=prior, data=list(ys), Nx=n, niter=niter)
        t0 = time.perf_counter()
        alg.run()
        dt = time.perf_counter() - t0
        rows.append(emit({"bench": "state_space_pmmh", "method": "particles", "N": n, "T": 100,
                          "iterations_per_s": niter / dt, "compile_s": None, "calls": [(niter, dt)]}))
    return rows


def bench_pgibbs(sizes, repeats, sweeps=100, chains=4):
    from smcppl.core.resampling import multinomial
    from smcppl.inference.state_space.pgibbs import conditional_smc
    from smcppl.inference.state_space.scan import time_slice
    from smcppl.models.state_space import kalman_smoother

    _, ys = simulate(LG, T, seed=1)
    y = jnp.asarray(ys[:, 0], jnp.float32)
    ssm = complete_state_space(scan_state_space(lg_model, {"a": jnp.float32(A)}, y, check_markov=False))
    exact = kalman_smoother(LG, ys)[0][:, 0]
    resamplers = {"inverse_cdf": multinomial,
                  "gumbel": lambda k, w, n: jax.random.categorical(k, jnp.log(w), shape=(n,))}

    def program(n, resampler):
        def chain(key):
            k_path, k_sweeps = jax.random.split(key)
            x0 = ssm.sample_initial(k_path, time_slice(ssm.inputs, 0))

            def forward(x, inp):
                x = ssm.sample_transition(inp[0], x, time_slice(ssm.inputs, inp[1]), inp[1])
                return x, x

            _, rest = jax.lax.scan(forward, x0, (jax.random.split(k_path, T - 1), jnp.arange(1, T)))
            path = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), x0, rest)

            def sweep(path, k):
                path = conditional_smc(k, ssm, path, n, resampler)
                return path, path["latent"]["x"]

            return jnp.mean(jax.lax.scan(sweep, path, jax.random.split(k_sweeps, sweeps))[1], axis=0)

        return jax.jit(lambda key: jax.vmap(chain)(jax.random.split(key, chains)))

    rows = []
    for n in sizes:
        fns = {name: program(n, r) for name, r in resamplers.items()}
        compile_s, times, means = {}, {name: [] for name in fns}, {name: [] for name in fns}
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(jax.random.key(0)))
            compile_s[name] = time.perf_counter() - t0
        for r in range(repeats):
            for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                t0 = time.perf_counter()
                means[name].append(np.asarray(jax.block_until_ready(fns[name](jax.random.key(r + 1)))))
                times[name].append(time.perf_counter() - t0)
        for name in fns:
            med = statistics.median(times[name])
            rows.append(emit({"bench": "state_space_pgibbs", "method": name, "N": n, "T": T, "chains": chains,
                              "sweeps": sweeps, "median_s": med, "ms_per_sweep": 1e3 * med / sweeps,
                              "vs_inverse_cdf": med / statistics.median(times["inverse_cdf"]),
                              "compile_and_first_s": compile_s[name], "repeats": repeats,
                              "smoother_err": float(np.max(np.abs(np.mean(means[name], axis=(0, 1)) - exact)))}))
    return rows

FIRST_CALL_CASES = ("filter", "smc2", "pmmh", "pgibbs")


def first_call_child(case: str):
    """One fresh process of the ``first`` section: the first and second call of one sampler (module docstring)."""
    counts = {"compiles": 0, "xla_s": 0.0}

    def listen(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            counts["compiles"] += 1
            counts["xla_s"] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    import smcppl
    from smcppl import SMC, SMC2
    from smcppl.inference.state_space import PMMH, ParticleGibbs, StateSpaceFilter
    from smcppl.models.state_space import LinearGaussian, lg_model, simulate

    lg = LinearGaussian(np.eye(1) * 0.9, np.eye(1) * 0.5, np.eye(1), np.eye(1) * 1.0, np.eye(1) * 0.5 / (1 - 0.81))
    y = np.asarray(simulate(lg, 100, seed=1)[1][:, 0], np.float32)
    if case == "filter":
        obj = SMC(StateSpaceFilter(lg_model, theta={"a": 0.9}), num_particles=500, num_chains=8, progress_bar=False)
    elif case == "smc2":
        obj = SMC(SMC2(lg_model, num_state_particles=64), num_particles=256, num_chains=2, progress_bar=False)
    elif case == "pmmh":
        obj = PMMH(lg_model, num_particles=100, num_warmup=200, num_samples=600, num_chains=4)
    else:
        obj = ParticleGibbs(lg_model, num_particles=32, num_warmup=150, num_samples=600, num_chains=4)

    def call(k):
        t0 = time.perf_counter()
        obj.run(jax.random.key(k), y)
        out = obj.log_evidence if isinstance(obj, SMC) else obj.get_samples()["a"]
        value = float(np.mean(np.asarray(jax.block_until_ready(out))))
        return time.perf_counter() - t0, value

    first, value = call(1)
    first_counts = dict(counts)
    second, _ = call(2)
    print(json.dumps({"bench": "state_space_first", "case": case, "first_call_s": first,
                      "first_compiles": first_counts["compiles"], "first_xla_s": first_counts["xla_s"],
                      "second_call_s": second, "second_compiles": counts["compiles"] - first_counts["compiles"],
                      "value": value, "smcppl_file": smcppl.__file__}), flush=True)


def bench_first_call(trees, rounds):
    """The ``first`` section: fresh processes, trees alternating by round (module docstring)."""
    rows = []
    for r in range(rounds):
        for case in FIRST_CALL_CASES:
            for tree in (trees if r % 2 == 0 else trees[::-1]):
                env = dict(os.environ, SMCPPL_COMPILATION_CACHE="off", PYTHONPATH=tree)
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", case], env=env, cwd=tree,
                                      capture_output=True, text=True, check=False)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"bench": "state_space_first"')]
                if not lines:
                    raise RuntimeError(f"child {case} in {tree} failed:\n{proc.stderr[-3000:]}")
                rows.append(emit(dict(json.loads(lines[-1]), tree=tree, round=r)))
    return rows


def _row(section, name, n, num_steps, times, logz, reference, compile_s, hand_median):
    med = statistics.median(times)
    return {"bench": f"state_space_{section}", "method": name, "N": n, "T": num_steps, "median_s": med,
            "ns_per_particle_step": 1e9 * med / (n * num_steps), "vs_hand": med / hand_median,
            "compile_s": compile_s, "log_z_mean": float(np.mean(logz)), "log_z_sd": float(np.std(logz)),
            "log_z_exact": reference, "repeats": len(times)}


def table(rows):
    out = ["| model | T | N | method | median run (ms) | ns / particle / step | x hand | compile (s) | log Z mean (sd) |",
           "|---|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "median_s" not in r or r["bench"] == "state_space_pgibbs":
            continue
        comp = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        out.append(f"| {r['bench'][12:]} | {r['T']} | {r['N']} | {r['method']} | {1e3 * r['median_s']:.2f} | "
                   f"{r['ns_per_particle_step']:.1f} | {r['vs_hand']:.2f} | {comp} | "
                   f"{r['log_z_mean']:.2f} ({r['log_z_sd']:.2f}) |")
    for r in rows:
        if r["bench"] == "state_space_pgibbs":
            out.append(f"\nparticle Gibbs sweep ({r['method']}, N = {r['N']}): {r['ms_per_sweep']:.2f} ms per sweep of "
                       f"{r['chains']} chains, x{r['vs_inverse_cdf']:.2f} inverse_cdf, smoother error "
                       f"{r['smoother_err']:.3f}")
    for r in rows:
        if "iterations_per_s" in r:
            out.append(f"\nPMMH ({r['method']}, N = {r['N']}, T = {r['T']}): {r['iterations_per_s']:.1f} iterations/s")
    return "\n".join(out)


def first_call_table(rows):
    """Medians over rounds per (sampler, tree)."""
    out = ["| sampler | tree | first call (s) | compilations | of it XLA (s) | second call (s) | value |",
           "|---|---|---:|---:|---:|---:|---|"]
    for case in FIRST_CALL_CASES:
        for tree in dict.fromkeys(r["tree"] for r in rows):
            cell = [r for r in rows if r["case"] == case and r["tree"] == tree]
            if cell:
                med = {k: statistics.median(r[k] for r in cell)
                       for k in ("first_call_s", "first_compiles", "first_xla_s", "second_call_s")}
                out.append(f"| {case} | {tree} | {med['first_call_s']:.2f} | {med['first_compiles']:.0f} | "
                           f"{med['first_xla_s']:.2f} | {med['second_call_s']:.2f} | {cell[0]['value']:.6f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--sections", default="lg,sv,pmmh,pgibbs")
    ap.add_argument("--trees", default=None, help="first: comma-separated source trees (default: this checkout)")
    ap.add_argument("--rounds", type=int, default=2, help="first: fresh processes per tree and sampler")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return first_call_child(args.child)
    sizes = [10**3, 10**4] if args.quick else [10**2, 10**3, 10**4, 10**5]
    steps = [100] if args.quick else [100, 1000]
    repeats = args.repeats or (7 if args.quick else 11)
    sections = args.sections.split(",")
    peers = particles_models()
    print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "jax": jax.__version__,
                      "particles": peers is not None}), flush=True)
    rows = []
    if "lg" in sections:
        rows += bench_lg(sizes, repeats, peers)
    if "sv" in sections:
        rows += bench_sv(sizes, steps, repeats, peers)
    if "pmmh" in sections:
        rows += bench_pmmh(256 if args.quick else 1000, 500 if args.quick else 1000, peers)
    if "pgibbs" in sections:
        rows += bench_pgibbs([32, 128] if args.quick else [32, 128, 256], 3)
    if "first" in sections:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        first = bench_first_call([os.path.abspath(t) for t in (args.trees or here).split(",")], args.rounds)
        print(first_call_table(first))
    print(table(rows))


if __name__ == "__main__":
    main()
