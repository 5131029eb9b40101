"""Simulation-based calibration of TemperedSMC (each move kernel) and AnnealedLangevin on four
NumPyro models: a location model, a constrained scale model, a hierarchical model and a logistic
regression. One JSON line per (sampler, model) with the chi-square uniformity p-value of the PIT
values of every parameter (pooled over components), and the smallest one; plus the deliberately
broken sampler (Jacobian dropped) that must fail.

    python benchmarks/sbc.py [--datasets 500] [--particles 512] [--quick] [--samplers ...] [--models ...]
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from smcppl import AnnealedLangevin, TemperedSMC
from smcppl.validation.sbc import simulation_based_calibration


def location(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    with numpyro.plate("obs", 4):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def scale(y=None):
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("obs", 2):
        numpyro.sample("y", dist.Normal(0.0, sigma), obs=y)


def hierarchical(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    with numpyro.plate("group", 3):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, 1.0), obs=y)


X = np.linspace(-1.5, 1.5, 8)


def logistic(y=None):
    a = numpyro.sample("a", dist.Normal(0.0, 1.5))
    b = numpyro.sample("b", dist.Normal(0.0, 1.5))
    with numpyro.plate("obs", 8):
        numpyro.sample("y", dist.Bernoulli(logits=a + b * jnp.asarray(X)), obs=y)


MODELS = {"location": (location, np.zeros(4)), "scale": (scale, np.zeros(2)),
          "hierarchical": (hierarchical, np.zeros(3)), "logistic": (logistic, np.zeros(8))}


class NoJacobianTemperedSMC(TemperedSMC):
    def density(self, *args, **kwargs):
        d = super().density(*args, **kwargs)

        def broken(u, data):
            lp, ll = d.log_parts(u, data)
            return lp - d.log_jacobian(u), ll
        return d._replace(log_parts=broken)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", type=int, default=500)
    p.add_argument("--particles", type=int, default=512)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--samplers", nargs="+", default=None, help="subset of samplers (default: all)")
    p.add_argument("--models", nargs="+", default=None, choices=list(MODELS), help="subset of models (default: all)")
    a = p.parse_args()
    if a.quick:
        a.datasets, a.particles = 200, 256
    samplers = {f"tempered-{m}": (lambda model, m=m: TemperedSMC(model, move=m, num_mcmc_steps=10 if m == "rwm" else 5))
                for m in ("rwm", "mala", "hmc", "nuts")}
    samplers["annealed-langevin"] = lambda model: AnnealedLangevin(model, num_temperatures=50)
    samplers["broken-no-jacobian"] = lambda model: NoJacobianTemperedSMC(model, move="rwm", num_mcmc_steps=25)
    for sname, make in samplers.items():
        if a.samplers and sname not in a.samplers:
            continue
        for mname, (model, y0) in MODELS.items():
            if a.models and mname not in a.models:
                continue
            if sname == "broken-no-jacobian" and mname not in ("scale", "hierarchical"):
                continue
            t = time.perf_counter()
            r = simulation_based_calibration(make(model), jax.random.key(1), a.datasets, a.particles, ["y"], y=y0)
            print(json.dumps({"sampler": sname, "model": mname, "datasets": a.datasets, "particles": a.particles,
                              "p_values": {k: round(v, 4) for k, v in r.p_values.items()},
                              "min_p_value": round(r.min_p_value, 5), "failed_runs": r.failed_runs,
                              "seconds": round(time.perf_counter() - t, 1)}), flush=True)


if __name__ == "__main__":
    main()
