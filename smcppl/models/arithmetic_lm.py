"""A synthetic multi-step arithmetic language, a tiny GPT-2 trained on it and process reward models over it
(optional extra ``smcppl[lm]``): the small-LM setting of the sequence-policy papers on a CPU, for
``benchmarks/lm_arithmetic.py`` and ``notebooks/lm_arithmetic.ipynb`` (ARCHITECTURE.md, "Parts and who may
import whom": a model is data; the samplers live in ``smcppl.inference.sequence``).

**Language.** A problem is ``a o1 b o2 c o3 d`` with digits ``a..d`` in 1..9 and operators in ``+ - *``,
evaluated with the usual precedence (products first, then sums left to right). Its solution is a chain of
three steps, each one operation written out and ended by ``;`` (the unit delimiter), then the end token::

    ^7+5*3-4:5*3=15;7+15=22;22-4=18;$

``^`` starts the prompt, ``:`` ends it, ``$`` ends the solution; the answer is the result of the last step.
The next step of a prefix is unique (:func:`solution_steps`): the leftmost ``*`` of the current
expression, else its leftmost ``+``/``-``. Vocabulary: 19 characters, one token each (:data:`VOCAB`).

**Model.** :func:`load_or_train` returns a GPT-2 (``transformers.GPT2LMHeadModel``, default 3 layers, width
64) trained with AdamW on freshly drawn problems (loss on the solution tokens only) until a wall-clock
budget or step count; problems whose hash falls in the held-out tenth (:func:`is_held_out`) are never
trained on, and :func:`held_out_problems` draws test problems from them. Weights are cached in
``$SMCPPL_CACHE_DIR/arithmetic_lm/<hash of config, seed and training settings>.pt`` (default
``~/.cache/smcppl``); the default model also ships with the package (``models/data/arithmetic_lm.pt``).

**Process reward models.** :class:`StepVerifier` checks each step of a prefix against the problem's
unique solution: the honest score of a prefix whose steps are all right is ``r_ok`` (``r_done`` once the
correct answer is complete), of one with a wrong or malformed step ``r_bad``. With ``overconfidence =
c in [0, 1]`` the first ``early_steps`` steps are scored as the ePF paper describes a PRM trained on
final correctness behaving early in the chain: too high whatever their correctness,

    ``r = (1 - c) r_honest + c (1/2 + (1/2 - eps) u(prefix))``,

``u in [0, 1)`` a deterministic hash of the prefix text, so early scores are confident (``>= 1/2`` when
``c = 1``) and unrelated to correctness; later steps are scored honestly. :func:`final_answer_correct` is
the exact final-answer check.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from smcppl.core.checks import open_unit_interval, positive_int

try:
    import torch
    import transformers
except ImportError as e:  # pragma: no cover - exercised only where the extra is absent
    raise ImportError("smcppl.models.arithmetic_lm needs PyTorch and transformers: pip install 'smcppl[lm]'") from e

__all__ = ["VOCAB", "BOS", "SEP", "EOS", "PAD", "DELIM", "ModelConfig", "TrainConfig", "encode", "decode",
           "problem_text", "evaluate", "solution_steps", "solution_text", "random_problem", "is_held_out",
           "held_out_problems", "parse_steps", "final_answer", "final_answer_correct", "StepVerifier",
           "build_model", "train", "load_or_train", "cache_path", "make_policy", "prompt_ids", "sample_solutions",
           "sample_accuracy"]

VOCAB = "0123456789+-*=;:^$_"
BOS, SEP, EOS, PAD, DELIM = (VOCAB.index(c) for c in "^:$_;")
OPS = "+-*"
_STEP = re.compile(r"^(-?\d+)([+\-*])(-?\d+)=(-?\d+);$")
_STOI = {c: i for i, c in enumerate(VOCAB)}


# ---------------------------------------------------------------------------------------------- the language
def encode(text: str) -> list[int]:
    """Token ids of ``text`` (one per character of :data:`VOCAB`)."""
    bad = sorted(set(text) - set(VOCAB))
    if bad:
        raise ValueError(f"encode: characters {bad} are not in the vocabulary {VOCAB!r}.")
    return [_STOI[c] for c in text]


def decode(ids: Sequence[int]) -> str:
    """The text of token ids (padding dropped)."""
    return "".join(VOCAB[int(i)] for i in ids if int(i) != PAD)


def problem_text(problem: tuple) -> str:
    """``(a, o1, b, o2, c, o3, d) -> "a o1 b o2 c o3 d"`` (no spaces)."""
    return "".join(str(x) for x in problem)


def _apply(x: int, op: str, y: int) -> int:
    return x + y if op == "+" else x - y if op == "-" else x * y


def solution_steps(problem: tuple) -> list[tuple[int, str, int, int]]:
    """The unique chain ``[(x, op, y, x op y), ...]``: the leftmost ``*`` first, then ``+``/``-`` left to right."""
    nums, ops = list(problem[0::2]), list(problem[1::2])
    steps = []
    while ops:
        i = ops.index("*") if "*" in ops else 0
        z = _apply(nums[i], ops[i], nums[i + 1])
        steps.append((nums[i], ops[i], nums[i + 1], z))
        nums[i:i + 2], ops[i:i + 1] = [z], []
    return steps


def evaluate(problem: tuple) -> int:
    """The value of the problem (precedence: products first)."""
    return solution_steps(problem)[-1][3]


def solution_text(problem: tuple) -> str:
    """The correct solution, ``"x op y=z;"`` per step then the end token."""
    return "".join(f"{x}{op}{y}={z};" for x, op, y, z in solution_steps(problem)) + "$"


def random_problem(rng: np.random.Generator) -> tuple:
    """A problem ``(a, o1, b, o2, c, o3, d)``: digits uniform on 1..9, operators uniform on ``+ - *``."""
    d = rng.integers(1, 10, 4)
    o = rng.integers(0, 3, 3)
    return (int(d[0]), OPS[o[0]], int(d[1]), OPS[o[1]], int(d[2]), OPS[o[2]], int(d[3]))


def is_held_out(problem: tuple) -> bool:
    """Whether the problem belongs to the held-out tenth (by a hash of its text), never used in training."""
    return hashlib.sha256(problem_text(problem).encode()).digest()[0] % 10 == 0


def held_out_problems(n: int, seed: int = 0) -> list[tuple]:
    """``n`` distinct held-out problems drawn with ``seed``."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < positive_int(n, "held_out_problems n"):
        p = random_problem(rng)
        if is_held_out(p) and p not in out:
            out.append(p)
    return out


def parse_steps(text: str) -> tuple[list[tuple[int, str, int, int]], bool, bool]:
    """``(steps, well_formed, finished)`` of a solution text (prompt excluded): the complete ``;``-ended steps
    parsed as ``(x, op, y, z)``; ``well_formed`` is False if a complete step does not match ``x op y=z;`` or
    anything follows the end token; ``finished``: the text ends with ``$``."""
    finished = text.endswith("$")
    body = text[:-1] if finished else text
    parts = body.split(";")
    complete, tail = parts[:-1], parts[-1]
    steps, ok = [], "$" not in body and (not finished or tail == "")
    for s in complete:
        m = _STEP.match(s + ";")
        if m is None:
            ok = False
            break
        steps.append((int(m[1]), m[2], int(m[3]), int(m[4])))
    return steps, ok, finished


def _prompt_problem(prompt: str) -> tuple:
    m = re.fullmatch(r"\^?(\d)([+\-*])(\d)([+\-*])(\d)([+\-*])(\d):?", prompt)
    if m is None:
        raise ValueError(f"not a problem prompt: {prompt!r} (expected e.g. '^7+5*3-4:').")
    g = m.groups()
    return (int(g[0]), g[1], int(g[2]), g[3], int(g[4]), g[5], int(g[6]))


def final_answer(text: str) -> Optional[int]:
    """The answer of a finished, well-formed solution (the last step's result), else None."""
    steps, ok, finished = parse_steps(text)
    return steps[-1][3] if ok and finished and steps else None


def final_answer_correct(problem: tuple, text: str) -> bool:
    """Exact final-answer check: the solution is finished and its answer equals the problem's value."""
    a = final_answer(text)
    return a is not None and a == evaluate(problem)


class StepVerifier:
    """Rule-based process reward model (module docstring): ``score(prompts, texts) -> [n]`` in (0, 1), for
    :class:`smcppl.models.lm.CallablePRM`. ``overconfidence`` in [0, 1] (0: honest), applied to prefixes with
    at most ``early_steps`` complete steps."""

    def __init__(self, overconfidence: float = 0.0, early_steps: int = 1, r_ok: float = 0.8, r_done: float = 0.99,
                 r_bad: float = 0.02, eps: float = 0.01):
        c = float(overconfidence)
        if not (np.isfinite(c) and 0.0 <= c <= 1.0):
            raise ValueError(f"StepVerifier: overconfidence must be in [0, 1] (0 = honest), got {overconfidence!r}.")
        self.overconfidence, self.early_steps = c, positive_int(early_steps, "StepVerifier early_steps")
        self.r_ok = open_unit_interval(r_ok, "StepVerifier r_ok")
        self.r_done = open_unit_interval(r_done, "StepVerifier r_done")
        self.r_bad = open_unit_interval(r_bad, "StepVerifier r_bad")
        self.eps = open_unit_interval(eps, "StepVerifier eps")

    def honest(self, problem: tuple, text: str) -> float:
        """``r_done`` for the correct finished solution, ``r_ok`` for a correct unfinished prefix, else ``r_bad``."""
        steps, ok, finished = parse_steps(text)
        truth = solution_steps(problem)
        if not ok or steps != truth[:len(steps)] or (finished and len(steps) != len(truth)):
            return self.r_bad
        return self.r_done if finished else self.r_ok

    def score_one(self, problem: tuple, text: str) -> float:
        """The score of one solution prefix (class docstring; the over-confident mix on early steps)."""
        r = self.honest(problem, text)
        c = self.overconfidence
        if c == 0.0 or len(parse_steps(text)[0]) > self.early_steps or text.endswith("$"):
            return r
        u = int.from_bytes(hashlib.sha256((problem_text(problem) + "|" + text).encode()).digest()[:8], "big") / 2.0**64
        return (1 - c) * r + c * (0.5 + (0.5 - self.eps) * u)

    def __call__(self, prompts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        return np.array([self.score_one(_prompt_problem(p), t) for p, t in zip(prompts, texts)])


# ---------------------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class ModelConfig:
    """The GPT-2's shape (``n_positions`` bounds prompt + solution)."""

    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 64
    n_positions: int = 48


@dataclass(frozen=True)
class TrainConfig:
    """Training: AdamW at ``lr`` (100 warm-up steps, then linear decay to 5% over the time budget),
    ``batch_size`` fresh problems per step, until ``max_seconds`` of wall clock or ``max_steps``."""

    seed: int = 0
    max_steps: int = 2000
    max_seconds: float = 180.0
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    threads: int = 1


def build_model(config: ModelConfig = ModelConfig(), seed: int = 0) -> "transformers.GPT2LMHeadModel":
    """An untrained GPT-2 over :data:`VOCAB`."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=len(VOCAB), n_layer=config.n_layer, n_head=config.n_head,
                                  n_embd=config.n_embd, n_positions=config.n_positions, bos_token_id=BOS,
                                  eos_token_id=EOS, pad_token_id=PAD)
    return transformers.GPT2LMHeadModel(cfg)


def _batch(rng: np.random.Generator, size: int, length: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``(ids [B, L], loss mask [B, L-1])``: training problems right-padded, loss on the solution tokens."""
    ids = np.full((size, length), PAD, np.int64)
    mask = np.zeros((size, length - 1), np.float32)
    i = 0
    while i < size:
        p = random_problem(rng)
        if is_held_out(p):
            continue
        prompt = "^" + problem_text(p) + ":"
        seq = encode(prompt + solution_text(p))[:length]
        ids[i, :len(seq)] = seq
        mask[i, len(prompt) - 1:len(seq) - 1] = 1.0  # predict every solution token (the end token included)
        i += 1
    used = int((ids != PAD).sum(1).max())  # trim the common padding (attention cost grows with the length)
    return torch.as_tensor(ids[:, :used]), torch.as_tensor(mask[:, :used - 1])


def train(model: Any, train_config: TrainConfig = TrainConfig(), log_every: int = 0) -> dict:
    """Train ``model`` in place (:class:`TrainConfig`) on the per-token cross-entropy of the solution tokens;
    returns ``{"steps", "seconds", "loss", "initial_loss"}`` (means over the last 50 and the first 10 steps)
    and ``"losses"`` (every step's)."""
    tc = train_config
    threads = torch.get_num_threads()
    torch.set_num_threads(tc.threads)
    try:
        torch.manual_seed(tc.seed)
        rng = np.random.default_rng(tc.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        model.train()
        length = model.config.n_positions
        losses, t0, step = [], time.perf_counter(), 0
        while step < tc.max_steps:
            frac = (time.perf_counter() - t0) / tc.max_seconds
            if frac >= 1.0:
                break
            for g in opt.param_groups:
                g["lr"] = tc.lr * min(1.0, (step + 1) / 100) * max(0.05, 1.0 - max(frac, step / tc.max_steps))
            ids, mask = _batch(rng, tc.batch_size, length)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1]
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                   reduction="none")
            loss = (ce * mask.reshape(-1)).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            if log_every and step % log_every == 0:
                elapsed = time.perf_counter() - t0
                print(f"step {step} loss {np.mean(losses[-log_every:]):.4f} {elapsed:.0f}s", flush=True)
        model.eval()
    finally:
        torch.set_num_threads(threads)
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"steps": step, "seconds": time.perf_counter() - t0, "loss": mean(losses[-50:]),
            "initial_loss": mean(losses[:10]), "losses": losses}


def _key(config: ModelConfig, train_config: TrainConfig) -> str:
    tc = {k: v for k, v in asdict(train_config).items() if k != "threads"}
    blob = json.dumps({"model": asdict(config), "train": tc, "vocab": VOCAB}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(config: ModelConfig = ModelConfig(), train_config: TrainConfig = TrainConfig()) -> Path:
    """``$SMCPPL_CACHE_DIR/arithmetic_lm/<hash>.pt`` (default ``~/.cache/smcppl``)."""
    root = Path(os.environ.get("SMCPPL_CACHE_DIR") or Path.home() / ".cache" / "smcppl")
    return root / "arithmetic_lm" / f"{_key(config, train_config)}.pt"


def _save(model: Any, path: Path, config: ModelConfig, train_config: TrainConfig, info: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    meta = {k: v for k, v in info.items() if k != "losses"}
    tmp = path.with_suffix(".tmp")
    torch.save({"key": _key(config, train_config), "model": asdict(config), "train": asdict(train_config),
                "info": meta, "state_dict": state}, tmp)
    os.replace(tmp, path)


def _load(path: Any, config: ModelConfig, train_config: TrainConfig) -> Optional[tuple[Any, dict]]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError):
        return None
    if blob.get("key") != _key(config, train_config):
        return None
    model = build_model(config)
    model.load_state_dict(blob["state_dict"])
    return model.eval(), dict(blob.get("info", {}))


def load_or_train(config: ModelConfig = ModelConfig(), train_config: TrainConfig = TrainConfig(),
                  cache: bool = True, log_every: int = 0) -> tuple[Any, dict]:
    """``(model, info)``: the trained model from the user cache (:func:`cache_path`), else from the package's
    shipped weights when they were trained with the same settings, else trained now (:func:`train`) and
    cached. ``info["source"]`` says which; ``info`` also holds the training ``steps``, ``seconds``, ``loss``."""
    path = cache_path(config, train_config)
    if cache:
        got = _load(path, config, train_config)
        if got is not None:
            return got[0], {**got[1], "source": "cache", "path": str(path)}
    shipped = resources.files("smcppl.models").joinpath("data/arithmetic_lm.pt")
    if shipped.is_file():
        with resources.as_file(shipped) as p:
            got = _load(p, config, train_config)
        if got is not None:
            return got[0], {**got[1], "source": "package", "path": str(shipped)}
    model = build_model(config, train_config.seed)
    info = train(model, train_config, log_every)
    if cache:
        _save(model, path, config, train_config, info)
    return model.eval(), {**{k: v for k, v in info.items() if k != "losses"}, "source": "trained", "path": str(path)}


def make_policy(model: Any, temperature: Any = 1.0, top_p: Optional[float] = None, max_length: int = 48):
    """An :class:`smcppl.models.lm.LMPolicy` over the model whose units are steps (ended by ``;`` or ``$``)."""
    from smcppl.models.lm import LMPolicy

    return LMPolicy(model, max_length=max_length, delimiters=[DELIM], eos_token_id=EOS, max_unit_tokens=14,
                    temperature=temperature, top_p=top_p, decode=decode, pad_token_id=PAD)


def prompt_ids(problem: tuple) -> list[int]:
    """The token ids of the prompt ``^problem:``."""
    return encode("^" + problem_text(problem) + ":")


def sample_solutions(model: Any, problem: tuple, num: int, rng: np.random.Generator, temperature: float = 1.0,
                     max_steps: int = 6) -> list[str]:
    """``num`` solutions drawn from the model at ``temperature`` (at most ``max_steps`` units), as texts."""
    policy = make_policy(model, temperature=temperature)
    state = policy.init(rng, prompt_ids(problem))
    n = positive_int(num, "sample_solutions num")
    tile = lambda x: np.repeat(np.asarray(x)[None], n, axis=0)  # noqa: E731
    state = type(state)(tile(state.tokens), tile(state.lengths), tile(state.done),
                        {k: tile(v) for k, v in state.aux.items()})
    for _ in range(positive_int(max_steps, "sample_solutions max_steps")):
        state = policy.step(rng, state)[0]
        if np.all(state.done):
            break
    return policy.texts(state)[1]


def sample_accuracy(model: Any, problems: Sequence[tuple], num: int = 16, seed: int = 0,
                    temperature: float = 1.0) -> np.ndarray:
    """Per problem, the fraction of ``num`` samples at ``temperature`` whose final answer is exactly right."""
    rng = np.random.default_rng(seed)
    return np.array([np.mean([final_answer_correct(p, t) for t in sample_solutions(model, p, num, rng, temperature)])
                     for p in problems])
