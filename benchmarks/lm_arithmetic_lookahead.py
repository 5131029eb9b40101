"""Look-ahead modulation on the trained arithmetic LM: which LaM settings help, and why ePF+LaM does not.

    python benchmarks/lm_arithmetic_lookahead.py                  # 50 problems, N = 16 and 64: ~15 min
    python benchmarks/lm_arithmetic_lookahead.py --problems 20 --N 16

Same setting as ``benchmarks/lm_arithmetic.py`` (its problems, keys, policy, over-confident PRM and
``run_cell``), with the look-ahead varied: ``k`` (successors per particle), ``lam`` (mixing weight) and
``reuse`` (keep the scored successor as the next unit), under PF (multinomial at every unit) and ePF
(``epf_ess``). One JSON line per (N, method): accuracy with its bootstrap 95% interval, the paired
difference to PF with its interval, distinct first-step ancestors, policy + PRM calls. Then, on the first
``--tau-problems`` problems at the first N, one line per ePF method with the entropic temperature ``tau``
of each stage (``tau > 1`` flattens the resampling weights ``w^(1/tau)``; 1 = plain resampling),
averaged over problems: what ePF does to the weights that look-ahead produces.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm_arithmetic as B  # the benchmark's cells, problems and intervals
from smcppl.inference.sequence import LookAhead, ParticleFilter, run_host
from smcppl.models import arithmetic_lm as A
from smcppl.models.lm import CallablePRM

VARIANTS = {
    "PF": dict(resampling="multinomial"),
    "ePF": dict(entropic="epf_ess"),
    "PF+LaM k1": dict(resampling="multinomial", lookahead=LookAhead(k=1)),
    "ePF+LaM k1": dict(entropic="epf_ess", lookahead=LookAhead(k=1)),  # lm_arithmetic.py's "ePF+LaM"
    "ePF+LaM k1 lam0.5": dict(entropic="epf_ess", lookahead=LookAhead(k=1, lam=0.5)),
    "ePF+LaM k4": dict(entropic="epf_ess", lookahead=LookAhead(k=4)),
    "ePF+LaM k1 reuse": dict(entropic="epf_ess", lookahead=LookAhead(k=1, reuse=True)),
    "PF+LaM k1 reuse": dict(resampling="multinomial", lookahead=LookAhead(k=1, reuse=True)),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=50)
    ap.add_argument("--N", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--tau-problems", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jsonl", default=None, help="also write the JSON lines to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = A.load_or_train()
    problems = A.held_out_problems(args.problems, seed=1000 + args.seed)
    policy = A.make_policy(model)
    prm = CallablePRM(A.StepVerifier(1.0), decode=policy)
    methods = ["PF"] + [m for m in args.methods if m != "PF"]
    out = []
    for n in args.N:
        base = None
        for name in methods:
            pf = ParticleFilter(policy, prm, weights="score", max_steps=B.UNITS, **VARIANTS[name])
            acc, uniq, calls = B.run_cell(pf, n, problems, args.seed)
            base = acc if name == "PF" else base
            d = acc - base
            rec = {"kind": "cell", "N": n, "method": name, "accuracy": float(acc.mean()),
                   "accuracy_ci95": B.bootstrap_ci(acc), "diff_vs_pf": float(d.mean()),
                   "diff_vs_pf_ci95": B.bootstrap_ci(d), "unique_first_step_ancestors": float(uniq.mean()),
                   "calls": float(calls.sum(1).mean())}
            print(json.dumps(rec), flush=True)
            out.append(rec)
    for name in [m for m in methods if m.startswith("ePF")]:
        pf = ParticleFilter(policy, prm, weights="score", max_steps=B.UNITS, **VARIANTS[name])
        taus = []
        for i, prob in enumerate(problems[:args.tau_problems]):
            res = run_host(pf, jax.random.key(args.seed * 100003 + i), args.N[0], A.prompt_ids(prob))
            taus.append(np.asarray(res.output.trace.tau)[:int(res.output.n_stages)])
        taus = np.array(taus)
        rec = {"kind": "tau", "N": args.N[0], "method": name, "problems": len(taus),
               "mean_tau_per_stage": taus.mean(0).round(3).tolist(),
               "fraction_tempered_per_stage": (taus != 1).mean(0).round(3).tolist()}
        print(json.dumps(rec), flush=True)
        out.append(rec)
    if args.jsonl:
        with open(args.jsonl, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in out))


if __name__ == "__main__":
    main()
