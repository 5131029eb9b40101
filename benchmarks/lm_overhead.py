"""Overhead of the particle filter around a ``transformers`` causal LM (extra ``smcppl[lm]``).

    python benchmarks/lm_overhead.py                 # N = 4, 16, 64
    python benchmarks/lm_overhead.py --N 16 --repeats 5

A GPT-2 built from a config (no download): vocabulary 1000, 4 layers, 4 heads, width 128, so that a
forward pass costs what a small real model's does per token on a CPU. Every sequence generates
``units * unit_tokens`` tokens after an 8-token prompt (no delimiter, no EOS: every unit has exactly
``unit_tokens`` tokens, so both sides generate the same number of tokens). One JSON line per N:

* ``plain_generate``: ``model.generate(do_sample=True)`` on N copies of the prompt (KV cache, batched);
* ``plain_loop``: the minimal batched sampling loop (one forward per token with the cache, multinomial);
* ``filter``: :class:`smcppl.models.lm.LMPolicy` inside ``ParticleFilter`` (score mode, multinomial
  resampling at every unit, so the cache is gathered by ancestor indices ``units - 1`` times) through
  ``run_host``, with a :class:`~smcppl.models.lm.CallablePRM` of a cheap toy score;
* tokens/s of each (medians of ``--repeats`` interleaved timed runs after a warm-up; the filter's first
  call, which compiles the engine, is reported as ``filter_first_call_s``), ``overhead = filter time /
  best plain time - 1``, and the filter's time split into ``policy_s`` (LMPolicy.step: model, sampling,
  cache gather), ``prm_s`` (PRM calls) and ``engine_s`` (filter minus both medians: engine, resampling,
  host callbacks; noisy).
"""
from __future__ import annotations

import argparse
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


def plain_loop(model, prompt, n, new_tokens):
    ids = prompt.repeat(n, 1)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        tok = torch.multinomial(torch.softmax(out.logits[:, -1], -1), 1)
        for _ in range(new_tokens - 1):
            out = model(input_ids=tok, use_cache=True, **{kw: cache})
            cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
            tok = torch.multinomial(torch.softmax(out.logits[:, -1], -1), 1)


def timed(fn):
    t = time.perf_counter()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--unit-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable timings)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=1000, n_layer=4, n_head=4, n_embd=128, n_positions=512)
    model = transformers.GPT2LMHeadModel(cfg).eval()
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
        with torch.inference_mode():
            gen()
        plain_loop(model, prompt, n, new_tokens)
        # interleaved repeats (the machine is shared: a slow spell hits every method alike)
        rows = []
        for key in jax.random.split(jax.random.key(1), args.repeats):
            policy.seconds = prm.seconds = 0.0
            t_filter = timed(lambda: run_host(pf, key, n, prompt_ids))
            rows.append((t_filter, policy.seconds, prm.seconds, timed(gen),
                         timed(lambda: plain_loop(model, prompt, n, new_tokens))))
        t_filter, policy_s, prm_s, t_gen, t_loop = (statistics.median(c) for c in zip(*rows))
        best = min(t_gen, t_loop)
        print(json.dumps({
            "N": n, "tokens_per_run": n * new_tokens, "units": args.units, "unit_tokens": args.unit_tokens,
            "plain_generate_tok_s": round(n * new_tokens / t_gen, 1), "plain_loop_tok_s": round(n * new_tokens / t_loop, 1),
            "filter_tok_s": round(n * new_tokens / t_filter, 1), "overhead": round(t_filter / best - 1.0, 4),
            "filter_s": round(t_filter, 4), "policy_s": round(policy_s, 4), "prm_s": round(prm_s, 4),
            "engine_s": round(t_filter - policy_s - prm_s, 4), "plain_generate_s": round(t_gen, 4),
            "plain_loop_s": round(t_loop, 4), "filter_first_call_s": round(first, 3),
            "torch": torch.__version__, "transformers": transformers.__version__, "jax": jax.__version__,
            "python": platform.python_version(), "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
