"""Time and peak memory of tempered SMC against the number of particles and of stages.

Each configuration runs in a fresh subprocess (so that ``ru_maxrss`` is that run's peak resident
memory). Model: 10-dim conjugate Gaussian (``zoo.conjugate_gaussian``, 10 observations), RWM moves,
in-run tuning (``tuning="weighted"``) so that the particle count is exactly N. The engine keeps only
O(N d) particle state plus an O(stages) trace of scalars, so memory should grow linearly in N and stay
flat in the number of stages. One JSON line per run.

    python benchmarks/scale.py            # N = 1e3 .. 1e6, stages = 10, 50, 200 at N = 1e5
    python benchmarks/scale.py --quick    # N = 1e3 .. 1e5
    python benchmarks/scale.py --only 10000000 5   # one run: 1e7 particles, 5 stages
"""
import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import jax, numpy as np
from smcppl import SMC, TemperedSMC, Resampling
from smcppl.models import zoo
n, stages = int(sys.argv[1]), int(sys.argv[2])
data = zoo.conjugate_gaussian_data(dim=10, num_obs=10, seed=0)
schedule = None if stages == 0 else np.linspace(0, 1, stages + 1)[1:]
smc = SMC(TemperedSMC(zoo.conjugate_gaussian, move="rwm", num_mcmc_steps=2, tuning="weighted", schedule=schedule,
                      resampling=Resampling("systematic", "always")), num_particles=n, num_chains=1)
smc.run(jax.random.key(0), **data)
exact = zoo.conjugate_gaussian_exact(**data)["log_evidence"]
print(json.dumps({"particles": n, "stages": int(np.asarray(smc.n_stages)[0]),
                  "compile_seconds": round(smc.timing["compile_seconds"], 2),
                  "run_seconds": round(smc.timing["run_seconds"], 3),
                  "run_ns_per_particle_stage": round(1e9 * smc.timing["run_seconds"] / (n * int(np.asarray(smc.n_stages)[0])), 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "log_z_error": round(float(np.asarray(smc.log_evidence)[0] - exact), 3)}))
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs=2, type=int, metavar=("N", "STAGES"), help="one run: N particles, STAGES stages")
    a = p.parse_args()
    sizes = [1_000, 10_000, 100_000] if a.quick else [1_000, 10_000, 100_000, 1_000_000]
    runs = [(n, 20) for n in sizes] + [(100_000 if not a.quick else 10_000, s) for s in (10, 50, 200)]
    if a.only:
        runs = [tuple(a.only)]
    for n, s in runs:
        r = subprocess.run([sys.executable, "-c", CHILD, str(n), str(s)], capture_output=True, text=True)
        line = r.stdout.strip().splitlines()[-1] if r.returncode == 0 else json.dumps(
            {"particles": n, "stages": s, "error": r.stderr.strip().splitlines()[-1]})
        print(line, flush=True)


if __name__ == "__main__":
    main()
