"""Calibration of the chain-agreement check (``rhat`` in ``smcppl.diagnostics.health``) and of two corrector
tests: how often a sampler's run is wrong, and whether the health check flags it; how large R-hat gets on
healthy runs. One JSON line per key (4 chains each).

    python benchmarks/health_calibration.py guided --keys 48      # tests/test_correctors.py guidance w = 3
    python benchmarks/health_calibration.py bimodal --keys 16     # tests/test_correctors.py bimodal beta = 2
    python benchmarks/health_calibration.py zoo --keys 6 --particles 1000 [--models ...]
    python benchmarks/health_calibration.py sv --keys 16 --particles 1000   # the README's state-space filter

``guided``: energy distance (ED) of each chain's 2000 draws to 4000 exact draws, the best uncorrected
chain's ED, the 4 chains' split R-hat and log Z. ``bimodal``: each chain's mass on the narrow mode minus
the exact 0.77. ``zoo``: the worst split R-hat over all parameters of a default ``TemperedSMC`` run with 4
chains, and its health flags. ``sv``: the same for the README's particle filter (stochastic volatility
on the shipped GDP-growth series, fixed theta; the draws are the final filtering states).
"""
from __future__ import annotations

import argparse
import json
import warnings

import jax
import numpy as np

from smcppl import SMC, Resampling, TemperedSMC
from smcppl.diagnostics.health import rhat_bound, split_rhat
from smcppl.inference.correctors import annealed, guided
from smcppl.models import diffusion_targets as dt
from smcppl.models.sde import VPSDE
from smcppl.models.zoo import ZOO
from smcppl.runner import make_run_one

SDE = VPSDE()
CHAINS = 4


def _compiled(alg, num_particles, params):
    plan = alg.build(num_particles, params)
    fn = jax.jit(jax.vmap(make_run_one(plan, plan.resampling), in_axes=(0, None)))
    return lambda key: fn(jax.random.split(key, CHAINS), params)[:2]


def guided_runs(keys):
    p, w = dt.labelled_2d(), 3.0
    alg = guided(lambda x, t, q: q.score(x, t, SDE), lambda x, t, q: q.conditional(1).score(x, t, SDE), w, SDE, 200,
                 event_shape=(2,), resampling=Resampling("systematic", "always"))
    exact = dt.sample_guided(jax.random.key(7), p, 1, w, 4000)
    log_z = float(dt.log_integral(dt.guided_log_density(p, 1, w), p))
    fkc, unc = _compiled(alg, 2000, p), _compiled(alg.uncorrected(), 2000, p)
    for s in keys:
        out, draws = fkc(jax.random.key(s))
        x, xu = np.asarray(draws["x"]), np.asarray(unc(jax.random.key(s))[1]["x"])
        ed = [float(dt.energy_distance(xi, exact)) for xi in x]
        ed_u = min(float(dt.energy_distance(xi, exact)) for xi in xu)
        rhat = max(split_rhat(x[..., k]) for k in range(x.shape[-1]))
        yield {"sampler": "guided_w3", "key": s, "ed": ed, "ed_uncorrected_best": ed_u, "rhat": rhat,
               "rhat_bound": rhat_bound(x.shape[1]), "log_z_err": [float(v) - log_z for v in out.log_evidence],
               "wrong": [e > 0.5 * ed_u for e in ed]}


def bimodal_runs(keys):
    p = dt.two_mode_1d()
    fkc = _compiled(annealed(lambda x, t, m: m.score(x, t, SDE), 2.0, SDE, 400, event_shape=(1,)), 8000, p)
    exact = float(np.asarray(dt.exact_mode_masses(lambda z: 2.0 * p.log_prob(z), p))[0])
    for s in keys:
        out, draws = fkc(jax.random.key(s))
        mass = [float(np.asarray(dt.mode_masses(xi, p.means))[0]) for xi in np.asarray(draws["x"])]
        yield {"sampler": "annealed_bimodal_beta2", "key": s, "mode_mass_err": [m - exact for m in mass],
               "log_evidence": [float(v) for v in out.log_evidence]}


def zoo_runs(keys, num_particles, models):
    for name in models:
        entry = ZOO[name]
        smc = SMC(TemperedSMC(entry.model), num_particles, num_chains=CHAINS)
        for s in keys:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                smc.run(jax.random.key(100 + s), **entry.data())
            worst, where = 1.0, None
            for k, v in jax.device_get(smc.get_samples(group_by_chain=True)).items():
                v = np.asarray(v).reshape(CHAINS, num_particles, -1)
                for j in range(v.shape[2]):
                    r = split_rhat(v[:, :, j])
                    if r > worst:
                        worst, where = r, f"{k}[{j}]"
            yield {"sampler": "tempered_default", "model": name, "num_particles": num_particles, "key": s,
                   "rhat": worst, "where": where, "rhat_bound": rhat_bound(num_particles),
                   "flags": [f.check for f in smc.health.flags]}


def sv_runs(keys, num_particles):
    import jax.numpy as jnp

    from smcppl import StateSpaceFilter
    from smcppl.models.state_space import load_us_gdp_growth, stochastic_volatility

    y = jnp.asarray(load_us_gdp_growth()[1], jnp.float32)
    theta = {"mu": 0.0, "phi_half": 0.975, "sigma": 0.3}
    smc = SMC(StateSpaceFilter(stochastic_volatility, theta=theta), num_particles, num_chains=CHAINS)
    for s in keys:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            smc.run(jax.random.key(s), y)
        h = np.asarray(jax.device_get(smc.get_samples(group_by_chain=True))["h"]).reshape(CHAINS, num_particles)
        yield {"sampler": "state_space_sv", "num_particles": num_particles, "key": s, "rhat": split_rhat(h),
               "rhat_bound": rhat_bound(num_particles), "log_evidence": [float(v) for v in smc.log_evidence],
               "flags": [f.check for f in smc.health.flags]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["guided", "bimodal", "zoo", "sv"])
    ap.add_argument("--keys", type=int, default=12)
    ap.add_argument("--first-key", type=int, default=0)
    ap.add_argument("--particles", type=int, default=1000, help="zoo and sv")
    ap.add_argument("--models", nargs="+", default=list(ZOO), help="zoo only")
    a = ap.parse_args()
    keys = range(a.first_key, a.first_key + a.keys)
    rows = {"guided": lambda: guided_runs(keys), "bimodal": lambda: bimodal_runs(keys),
            "zoo": lambda: zoo_runs(keys, a.particles, a.models), "sv": lambda: sv_runs(keys, a.particles)}[a.what]()
    for row in rows:
        print(json.dumps({k: (np.round(v, 4).tolist() if isinstance(v, (float, list)) and k != "flags" and k != "wrong"
                              else v) for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
