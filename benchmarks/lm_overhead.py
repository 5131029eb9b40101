"""Overhead of the particle filter around a ``transformers`` causal LM (extra ``smcppl[lm]``).

    python benchmarks/lm_overhead.py --repeats 7     # N = 4, 16, 64
    python benchmarks/lm_overhead.py --N 16 --repeats 9

A GPT-2 built from a config (no download): vocabulary 1000, 4 layers, 4 heads, width 128, so that a
forward pass costs what a small real model's does per token on a CPU. Every sequence generates
``units * unit_tokens`` tokens after an 8-token prompt (no delimiter, no EOS: every unit has exactly
``unit_tokens`` tokens, so both sides generate the same number of tokens). One JSON line per N:

* ``plain_generate``: ``model.generate(do_sample=True)`` on N copies of the prompt (KV cache, batched);
* ``plain_loop``: the minimal batched sampling loop (one forward per token with the cache, softmax and
  ``torch.multinomial``);
* ``filter``: :class:`smcppl.models.lm.LMPolicy` inside ``ParticleFilter`` (score mode, multinomial
  resampling at every unit, so the cache is gathered by ancestor indices ``units - 1`` times) through
  ``run_host``, with a :class:`~smcppl.models.lm.CallablePRM` of a cheap toy score.

Timing: one warm-up of each (the filter's first call, which compiles the engine, is reported as
``filter_first_call_s``), then ``--repeats`` rounds, each timing the three methods once in a rotating
order (the machine may be shared: a slow spell hits every method alike), with ``--threads`` torch
intra-op threads (default 1: stable timings) and one inter-op thread. Per round, the overhead is the
filter's time over the faster plain method's in that round, minus 1, in wall time and in process CPU time
(less sensitive to other jobs on the machine; it counts JAX's threads too); reported as the median and
[min, max] over rounds (``overhead``, ``overhead_range``, ``cpu_overhead``, ``cpu_overhead_range``);
``overhead_of_minimums`` compares the fastest round of each (other jobs only ever add time).
tokens/s are from the medians of wall times. Where the filter's time goes (medians, wall seconds per run):
``model_s`` (inside ``model.forward``) against the loop's ``loop_model_s``, ``policy_s`` (LMPolicy.step
and init: model, sampling, cache gather), ``prm_s`` (PRM calls) and ``engine_s`` (filter minus policy and
PRM: engine, resampling, host callbacks); ``*_ms_per_token`` divide the time outside ``model.forward``
by the tokens of one sequence (what one batched step of sampling and bookkeeping costs).
"""
from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import platform
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
import torch
import transformers

from smcppl.inference.sequence import ParticleFilter, run_host
from smcppl.models.lm import CallablePRM, LMPolicy

transformers.logging.set_verbosity_error()


class Timed:
    """Wraps a method of an object, accumulating its wall time."""

    def __init__(self, obj, *names):
        self.obj, self.seconds = obj, 0.0
        for name in names:
            setattr(self, name, self._wrap(getattr(obj, name)))

    def _wrap(self, fn):
        def timed(*args):
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.seconds += time.perf_counter() - t
        return timed


class ForwardTimer:
    """Accumulates the wall time spent inside ``model.forward`` (wrapped on the instance)."""

    def __init__(self, model):
        self.seconds, inner = 0.0, model.forward

        @functools.wraps(inner)  # keeps the signature (the cache keyword is looked up on it)
        def forward(*args, **kwargs):
            t = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
        model.forward = forward


def plain_loop(model, prompt, n, new_tokens):
    ids = prompt.repeat(n, 1)
    kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        tok = torch.multinomial(torch.softmax(out.logits[:, -1], -1), 1)
        for _ in range(new_tokens - 1):
            out = model(input_ids=tok, use_cache=True, **{kw: cache})
            cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
            tok = torch.multinomial(torch.softmax(out.logits[:, -1], -1), 1)


def timed(fn):
    """(wall seconds, process CPU seconds, seconds inside model.forward) of one call."""
    FORWARD.seconds = 0.0
    t, c = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - t, time.process_time() - c, FORWARD.seconds


FORWARD = None


def main():
    global FORWARD
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--unit-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable timings)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=1000, n_layer=4, n_head=4, n_embd=128, n_positions=512)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    FORWARD = ForwardTimer(model)
    prompt_ids = list(range(1, 9))
    prompt = torch.as_tensor([prompt_ids])
    new_tokens = args.units * args.unit_tokens
    for n in args.N:
        policy = Timed(LMPolicy(model, max_length=len(prompt_ids) + new_tokens, max_unit_tokens=args.unit_tokens),
                       "init", "step")
        prm = Timed(CallablePRM(lambda prompts, texts: [1.0 / (1.0 + 0.01 * len(t)) for t in texts]),
                    "prefix", "complete")
        pf = ParticleFilter(policy, prm, weights="score", resampling="multinomial", max_steps=args.units)
        t0 = time.perf_counter()
        res = run_host(pf, jax.random.key(0), n, prompt_ids)
        first = time.perf_counter() - t0
        generated = int(np.sum(res.output.state.particles.seq.lengths - len(prompt_ids)))
        assert generated == n * new_tokens, (generated, n * new_tokens)
        gen = lambda: model.generate(input_ids=prompt.repeat(n, 1), attention_mask=torch.ones(n, 8, dtype=torch.long),  # noqa: E731
                                     do_sample=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                     pad_token_id=0, top_k=0, top_p=1.0, temperature=1.0)
        loop = lambda: plain_loop(model, prompt, n, new_tokens)  # noqa: E731
        timed(gen), timed(loop)
        rounds = []
        for r, key in enumerate(jax.random.split(jax.random.key(1), args.repeats)):
            row = {}

            def run_filter(key=key):
                policy.seconds = prm.seconds = 0.0
                row["filter"] = timed(lambda: run_host(pf, key, n, prompt_ids))
                row["policy"], row["prm"] = policy.seconds, prm.seconds

            methods = [run_filter, lambda: row.__setitem__("gen", timed(gen)),
                       lambda: row.__setitem__("loop", timed(loop))]
            for m in methods[r % 3:] + methods[:r % 3]:  # rotating order
                m()
            rounds.append(row)
        med = lambda f: statistics.median(f(row) for row in rounds)  # noqa: E731
        ratio = lambda i: [row["filter"][i] / min(row["gen"][i], row["loop"][i]) - 1.0 for row in rounds]  # noqa: E731
        wall, cpu = ratio(0), ratio(1)
        t_filter, t_gen, t_loop = (med(lambda row, k=k: row[k][0]) for k in ("filter", "gen", "loop"))
        model_s, loop_model_s = med(lambda row: row["filter"][2]), med(lambda row: row["loop"][2])
        policy_s, prm_s = med(lambda row: row["policy"]), med(lambda row: row["prm"])
        engine_s = med(lambda row: row["filter"][0] - row["policy"] - row["prm"])
        rnd = lambda x, d=4: round(x, d)  # noqa: E731
        print(json.dumps({
            "N": n, "tokens_per_run": n * new_tokens, "units": args.units, "unit_tokens": args.unit_tokens,
            "plain_generate_tok_s": rnd(n * new_tokens / t_gen, 1), "plain_loop_tok_s": rnd(n * new_tokens / t_loop, 1),
            "filter_tok_s": rnd(n * new_tokens / t_filter, 1),
            "overhead": rnd(statistics.median(wall)), "overhead_range": [rnd(min(wall)), rnd(max(wall))],
            "cpu_overhead": rnd(statistics.median(cpu)), "cpu_overhead_range": [rnd(min(cpu)), rnd(max(cpu))],
            "overhead_of_minimums": rnd(min(row["filter"][0] for row in rounds)
                                        / min(min(row["gen"][0], row["loop"][0]) for row in rounds) - 1.0),
            "filter_s": rnd(t_filter), "plain_generate_s": rnd(t_gen), "plain_loop_s": rnd(t_loop),
            "model_s": rnd(model_s), "loop_model_s": rnd(loop_model_s), "policy_s": rnd(policy_s),
            "prm_s": rnd(prm_s), "engine_s": rnd(engine_s),
            "filter_non_model_ms_per_token": rnd(1e3 * (t_filter - model_s) / new_tokens, 3),
            "loop_non_model_ms_per_token": rnd(1e3 * (t_loop - loop_model_s) / new_tokens, 3),
            "engine_ms_per_unit": rnd(1e3 * engine_s / args.units, 2), "filter_first_call_s": rnd(first, 3),
            "repeats": args.repeats, "load_avg_1min": rnd(os.getloadavg()[0], 2),
            "torch": torch.__version__, "transformers": transformers.__version__, "jax": jax.__version__,
            "python": platform.python_version(), "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
