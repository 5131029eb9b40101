"""Sequence particle filters guiding a trained small LM (extra ``lm``, CPU): Best-of-N, PF, ePF (each rule),
ePF+LaM, EAD rollouts and PF/ePF with an EAD proposal on held-out multi-step arithmetic problems
(:mod:`smcppl.models.arithmetic_lm`), scored by exact final-answer checking.

    python benchmarks/lm_arithmetic.py                 # 50 problems, N = 4..64 (about 15 min on 2 shared cores)
    python benchmarks/lm_arithmetic.py --quick         # 24 problems, N = 4, 16 (a few minutes)

The policy is the tiny GPT-2 of that module (trained now, or loaded from the cache / the package), run
through ``run_host`` with one unit per solution step (4 units: three steps and the end token). The PRM
is its rule-based step verifier, over-confident on the first step by default (``--prm honest`` for the
honest one). Every method runs in score mode and answers with the argmax of its final weights. Problem
``i`` uses the same engine key and policy seed for every method and N (paired). For each cell one JSON
line: accuracy with a bootstrap 95% interval, the paired difference to PF (multinomial) with its
bootstrap interval, mean distinct first-step ancestors among the final particles, and mean calls.

Call accounting: ``calls`` = policy calls + PRM calls, each counted per particle and unit (one unit of
one sequence generated, or one prefix scored), as the filter records them (``HostResult``). At one N
every method makes the same number of calls except the look-ahead (k = 1 extra unit and score per
particle and step but the last). The equal-compute table gives each method's accuracy at its largest N
within each PF budget (``equal_compute`` of ``benchmarks/sequence.py``) on the *nominal* calls, the most a
run can make: ``N * UNITS`` policy calls and as many PRM calls, ``N * (2 UNITS - 1)`` each with the
look-ahead; the measured means (in each cell) are at most 1% lower, from sequences that end early.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import numpy as np
import torch

from sequence import BASELINE, bootstrap_ci, emit, equal_compute
from smcppl.core import Resampling
from smcppl.inference.sequence import LookAhead, ParticleFilter, ead_schedule, run_host
from smcppl.models import arithmetic_lm as A
from smcppl.models.lm import CallablePRM

UNITS = 4  # three steps and the end token
EAD = ead_schedule("cosine", 1.5, 1.0, UNITS)  # exploratory first step, the policy itself at the end
NEVER = Resampling("multinomial", when="never")
# method -> (proposal temperature: 1.0 or the EAD table, filter options)
METHODS = {
    "BoN": (1.0, dict(resampling=NEVER)),
    "PF-multinomial": (1.0, dict(resampling="multinomial")),
    "PF-systematic": (1.0, dict(resampling="systematic")),
    "ePF-ess": (1.0, dict(entropic="epf_ess")),
    "ePF-entropy": (1.0, dict(entropic="epf_entropy")),
    "ePF-linear": (1.0, dict(entropic="epf_linear")),
    "ePF-target": (1.0, dict(entropic="target")),
    "ePF+LaM": (1.0, dict(entropic="epf_ess", lookahead=LookAhead(k=1))),
    "EAD-rollouts": (EAD, dict(resampling=NEVER)),
    "PF+EAD": (EAD, dict(resampling="multinomial")),
    "ePF+EAD": (EAD, dict(entropic="epf_ess")),
}


def run_cell(pf, n, problems, seed):
    """Per problem: (correct, distinct first-step ancestors, [policy calls, PRM calls])."""
    acc, uniq, calls = [], [], []
    for i, prob in enumerate(problems):
        res = run_host(pf, jax.random.key(seed * 100003 + i), n, A.prompt_ids(prob))
        sel = pf.select(res.output)
        j = int(np.asarray(sel["index"]).ravel()[0])
        text = pf.policy.texts(res.output.state.particles.seq)[1][j]
        acc.append(float(A.final_answer_correct(prob, text)))
        uniq.append(float(np.asarray(res.output.trace.params["unique_origins"])[-1]))
        calls.append((res.policy_calls, res.potential_calls))
    return np.array(acc), np.array(uniq), np.array(calls, float)


def nominal(rows):
    """The cells with their nominal (maximal) calls, for the equal-compute table (module docstring)."""
    out = []
    for r in rows:
        k = METHODS[r["method"]][1].get("lookahead")
        calls = r["N"] * (UNITS + (k.k * (UNITS - 1) if k is not None else 0))
        out.append({**r, "policy_calls": float(calls), "potential_calls": float(calls)})
    return out


def markdown(rows, eq, meta, path):
    lines = ["# Trained small LM on multi-step arithmetic (benchmarks/lm_arithmetic.py)", "",
             f"{meta['problems']} held-out problems; PRM: {meta['prm']}; model accuracy of one sample at "
             f"temperature 1: {meta['sample_accuracy']:.3f}. Accuracy (exact final answer of the argmax particle) "
             "with bootstrap 95% intervals; `diff` the paired difference to PF (multinomial); `uniq` distinct "
             "first-step ancestors among the final particles; `calls` policy + PRM calls per problem.", "",
             "| method | N | accuracy [95% CI] | diff vs PF [95% CI] | uniq | calls |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (list(METHODS).index(r["method"]), r["N"])):
        d = "" if "diff_vs_pf" not in r else \
            f"{r['diff_vs_pf']:+.3f} [{r['diff_vs_pf_ci95'][0]:+.3f}, {r['diff_vs_pf_ci95'][1]:+.3f}]"
        lines.append(f"| {r['method']} | {r['N']} | {r['reward']:.3f} [{r['reward_ci95'][0]:.3f}, "
                     f"{r['reward_ci95'][1]:.3f}] | {d} | {r['unique_first_step_ancestors']:.2f} | "
                     f"{r['policy_calls'] + r['potential_calls']:.0f} |")
    methods = [m for m in METHODS if any(e["method"] == m for e in eq)]
    lines += ["", "Equal compute (accuracy at the largest N within each PF budget of nominal policy + PRM calls):", "",
              "| nominal budget | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for b in sorted({e["budget_calls"] for e in eq}):
        row = {e["method"]: f"{e['reward']:.3f} (N={e['N']})" for e in eq if e["budget_calls"] == b}
        lines.append(f"| {b:.0f} | " + " | ".join(row.get(m, "-") for m in methods) + " |")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"# wrote {path}", file=sys.stderr)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=None, help="held-out problems (default 50; --quick 24)")
    ap.add_argument("--N", type=int, nargs="+", default=None, help="default 4 8 16 32 64 (--quick: 4 16)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--prm", default="overconfident", choices=["overconfident", "honest"])
    ap.add_argument("--overconfidence", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--jsonl", default=None, help="also append the JSON lines to this file")
    ap.add_argument("--table", default="benchmarks/results/lm_arithmetic.md")
    ap.add_argument("--from-jsonl", default=None, help="rebuild the tables from the cells of an earlier run's JSON lines")
    args = ap.parse_args(argv)
    if args.from_jsonl:
        with open(args.from_jsonl) as f:
            old = [json.loads(line) for line in f]
        rows = [r for r in old if r["kind"] == "cell"]
        eq = equal_compute(nominal(rows))
        if args.jsonl:
            with open(args.jsonl, "w") as f:
                f.write("".join(json.dumps(r) + "\n" for r in [r for r in old if r["kind"] == "meta"] + rows + eq))
        print(markdown(rows, eq, next(r for r in old if r["kind"] == "meta"), args.table))
        return
    n_problems = args.problems or (24 if args.quick else 50)
    ns = args.N or ([4, 16] if args.quick else [4, 8, 16, 32, 64])
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, info = A.load_or_train(log_every=200)
    problems = A.held_out_problems(n_problems, seed=1000 + args.seed)
    sample_acc = A.sample_accuracy(model, problems, num=16, seed=args.seed)
    meta = {"kind": "meta", "problems": n_problems, "prm": args.prm, "overconfidence": args.overconfidence,
            "model_source": info["source"], "train_steps": info.get("steps"), "train_seconds": info.get("seconds"),
            "train_loss": info.get("loss"), "sample_accuracy": float(sample_acc.mean()),
            "sample_accuracy_ci95": bootstrap_ci(sample_acc), "ead_schedule": [float(t) for t in EAD],
            "setup_s": round(time.perf_counter() - t0, 1), "torch": torch.__version__, "jax": jax.__version__}
    out = [meta]
    emit(meta)
    verifier = A.StepVerifier(args.overconfidence if args.prm == "overconfident" else 0.0)
    policies = {"T1": A.make_policy(model), "EAD": A.make_policy(model, temperature=EAD)}
    prms = {k: CallablePRM(verifier, decode=p) for k, p in policies.items()}
    methods = [BASELINE] + [m for m in args.methods if m != BASELINE]
    rows = []
    for n in ns:
        base = None
        for method in methods:
            temp, opts = METHODS[method]
            which = "T1" if np.isscalar(temp) else "EAD"
            pf = ParticleFilter(policies[which], prms[which], weights="score", max_steps=UNITS, **opts)
            t1 = time.perf_counter()
            acc, uniq, calls = run_cell(pf, n, problems, args.seed)
            rec = {"kind": "cell", "task": "arithmetic", "prm": args.prm, "method": method, "N": n,
                   "instances": n_problems, "reward": float(acc.mean()), "reward_ci95": bootstrap_ci(acc),
                   "unique_first_step_ancestors": float(uniq.mean()), "policy_calls": float(calls[:, 0].mean()),
                   "potential_calls": float(calls[:, 1].mean()), "run_s": round(time.perf_counter() - t1, 1)}
            if method == BASELINE:
                base = acc
            elif base is not None:
                d = acc - base
                rec["diff_vs_pf"], rec["diff_vs_pf_ci95"] = float(d.mean()), bootstrap_ci(d)
            emit(rec)
            rows.append(rec)
    eq = equal_compute(nominal(rows))
    out += rows + eq
    if args.jsonl:
        with open(args.jsonl, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in out))
    print(markdown(rows, eq, meta, args.table))
    print(f"# total {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
