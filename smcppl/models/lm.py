"""Language-model adapters (optional extra ``smcppl[lm]``: PyTorch and Hugging Face ``transformers``): a
sequence policy over any ``transformers`` causal LM and process-reward-model (PRM) potentials, for the
sequence filter's host driver (``smcppl.run_host``; ARCHITECTURE.md, "Parts and who may import whom": a
model is data, the samplers live in ``smcppl.inference.sequence``).

:class:`LMPolicy` follows the host protocol of :mod:`smcppl.core.sequence_state` (a
``numpy.random.Generator`` in place of the JAX key):

* **Units.** One ``step`` appends one reasoning step to every unfinished sequence: tokens are drawn one at
  a time, batched over the particles, until the unit ends with one of the ``delimiters`` (token-id
  sequences, e.g. the ids of a blank line), at ``eos_token_id`` (the sequence is then ``done``), after
  ``max_unit_tokens`` tokens, or when the token buffer (``max_length``) is full (``done``). Sequences whose
  unit has ended stay in the batch as masked padding until every unit has ended.
* **Proposal and exact log q.** Token ``v`` is drawn from ``q(v | x) ∝ p(v | x)^(1/T) 1[v in K(x)]``,
  ``T`` the temperature of the unit (a number, an EAD table indexed by the unit's number, e.g.
  ``ead_schedule(...)`` of :mod:`smcppl.inference.sequence.proposals`, or a function of it) and ``K(x)``
  the top-p set (the smallest set of most probable tokens under ``p^(1/T)`` whose preceding mass is below
  ``top_p``; ties kept, as in that module's ``proposal_log_probs``). ``step`` returns ``(state, log_p,
  log_q)``, both summed over the unit's tokens: ``log p`` at temperature 1 without truncation (the
  target), ``log q`` the renormalised log-softmax of the tempered, truncated logits (in float64). With
  ``T = 1`` and no truncation ``log_q`` is ``log_p`` itself, so the filter's ``log p - log q`` is exactly 0.
* **Key-value cache (no prefix recomputation).** The cache never travels through JAX: it stays in the
  policy object, one entry per *generation* (one ``step`` call, or ``init``), holding the keys/values of
  every layer ``[B, heads, L, head_dim]`` and an attention mask ``[B, L]`` (left padding and holes where
  a row was idle are masked; positions are explicit, so they are harmless). The cache covers every token
  of a row but its last one, which the next ``step`` feeds first. The state carries a small integer
  handle per particle, ``aux["gen"]`` and ``aux["row"]``; the engine gathers every state leaf by the
  ancestor indices when it resamples, so ``step`` sees which cache row each particle descends from and
  gathers the keys/values of those rows (``index_select`` on the batch axis of every layer, rows of
  several generations concatenated after left-padding to one length), then numbers the new generation's
  rows ``0..B-1``. A ``step`` never changes an existing generation, so the look-ahead's ``k`` calls on one
  state (and the stored successors of ``LookAhead(reuse=True)``) are correct. Generations older than
  every handle of an unfinished particle in the current call are dropped (every later call's state
  descends from this one), so about two stages' generations (plus the look-ahead's ``k``) are held;
  ``init`` starts afresh (one run of a filter at a time per policy object). The gather works on the
  tensors (``index_select``) rather than on ``DynamicCache.batch_select_indices`` (in place, one cache)
  because one batch may take rows of several generations; a ``DynamicCache`` is built once per ``step``
  over the gathered tensors (no copy). When the ancestors are the identity (no resampling) nothing is
  gathered, and while no cache column is masked the model is called without an attention mask.
* **State.** ``tokens [T_max]`` holds the prompt's token ids then the generated ones, ``lengths`` counts
  tokens (prompt included), ``aux`` also carries ``units`` (units generated: the EAD index) and
  ``prompt_length`` (what the PRM adapters split on). The policy works on token ids (``decode`` and a
  tokenizer are optional), so tests build a tiny model from a config without any download.

PRM adapters (potentials: ``prefix(state)``, ``complete(state)`` -> ``[N]``) return ``log r`` for a score
``r in (0, 1)``: the convention of both filter modes (``weights="score"`` turns ``log r`` into
``logit r``; ``weights="twist"`` uses it as ``log psi``, smcppl.inference.sequence.weights).
:class:`CallablePRM` wraps ``score(prompts, partial_texts) -> floats``; :class:`RewardModelPRM` a
``transformers`` sequence-classification model (``r = sigmoid(logit)`` with one label, the softmax
probability of ``label`` otherwise). Both score each distinct (prompt, text) once per state and reuse the
result for ``complete`` on the same state (the filter asks for both).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from smcppl.core.checks import positive_int
from smcppl.core.sequence_state import SequenceState

try:
    import torch
    import transformers
except ImportError as e:  # pragma: no cover - exercised only where the extra is absent
    raise ImportError("smcppl.models.lm needs PyTorch and transformers: pip install 'smcppl[lm]'") from e

__all__ = ["LMPolicy", "CallablePRM", "RewardModelPRM", "proposal_log_q"]


def proposal_log_q(log_p: "torch.Tensor", temperature: "torch.Tensor", top_p: Optional[float] = None) -> "torch.Tensor":
    """Exact ``log q [B, V]`` of the tempered, top-p truncated proposal from ``log p [B, V]`` and one
    temperature per row (module docstring): ``log_softmax`` of ``log p / T`` restricted to the top-p set."""
    logits = log_p / temperature[:, None]
    if top_p is not None:
        desc = torch.sort(logits, dim=-1, descending=True).values
        probs = torch.softmax(desc, dim=-1)
        kept = (torch.cumsum(probs, -1) - probs) < top_p  # the most probable token is always kept
        threshold = torch.where(kept, desc, torch.full_like(desc, float("inf"))).amin(-1, keepdim=True)
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


class _Generation:
    """One generation of the cache: per-layer ``keys``/``values`` ``[B, H, L, D]`` and ``mask [B, L]``."""

    __slots__ = ("keys", "values", "mask")

    def __init__(self, keys: list, values: list, mask: "torch.Tensor"):
        self.keys, self.values, self.mask = keys, values, mask

    def select(self, index: "torch.Tensor", rows: bool = True) -> "_Generation":
        """The given rows (batch axis), or columns (sequence axis) with ``rows=False``."""
        kv, m = (0, 0) if rows else (2, 1)
        return _Generation([k.index_select(kv, index) for k in self.keys],
                           [v.index_select(kv, index) for v in self.values], self.mask.index_select(m, index))

    def left_pad(self, length: int) -> "_Generation":
        extra = length - self.mask.shape[1]
        if extra == 0:
            return self
        pad = lambda x: torch.nn.functional.pad(x, (0, 0, extra, 0))  # noqa: E731  (axis -2: the sequence)
        return _Generation([pad(k) for k in self.keys], [pad(v) for v in self.values],
                           torch.nn.functional.pad(self.mask, (extra, 0)))


class LMPolicy:
    """A sequence policy over a ``transformers`` causal LM (module docstring), for ``smcppl.run_host``::

        policy = LMPolicy(model, max_length=256, delimiters=[tok.encode("\\n\\n")], eos_token_id=tok.eos_token_id,
                          tokenizer=tok, temperature=ead_schedule("cosine", 2.0, 1.0, 8))
        res = run_host(ParticleFilter(policy, CallablePRM(score, policy), weights="score", max_steps=8),
                       jax.random.key(0), 16, prompt="Q: ...")

    model: a causal LM (``model(input_ids, attention_mask, position_ids, cache) -> logits``; put it in eval
    mode and on its device first). max_length: token buffer ``T_max`` (prompt included). delimiters:
    token-id sequences ending a unit (a unit ends when its tokens end with one of them). eos_token_id:
    ends the sequence (None: never). max_unit_tokens: token cap per unit. temperature: a positive number,
    a table indexed by the unit's number (EAD) or a function ``unit -> T``. top_p: None or in (0, 1].
    tokenizer: optional, to encode string prompts and decode texts; decode: ``list[int] -> str``
    (default ``tokenizer.decode``; without either, texts are tuples of token ids). pad_token_id: the id
    fed at masked (idle) positions.
    """

    def __init__(self, model: Any, *, max_length: int, delimiters: Sequence[Union[int, Sequence[int]]] = (),
                 eos_token_id: Optional[int] = None, max_unit_tokens: int = 64,
                 temperature: Union[float, Sequence[float], Callable[[int], float]] = 1.0,
                 top_p: Optional[float] = None, tokenizer: Any = None, decode: Optional[Callable] = None,
                 pad_token_id: int = 0):
        if not callable(model):
            raise TypeError(f"LMPolicy: model must be a transformers causal LM, got {type(model).__name__}.")
        self.model = model
        self.max_length = positive_int(max_length, "LMPolicy max_length")
        self.max_unit_tokens = positive_int(max_unit_tokens, "LMPolicy max_unit_tokens")
        self.delimiters = [tuple(int(t) for t in np.atleast_1d(d)) for d in delimiters]
        if any(len(d) == 0 for d in self.delimiters):
            raise ValueError("LMPolicy: every delimiter must be a non-empty token-id sequence (e.g. tokenizer.encode("
                             "'\\n\\n')).")
        self.eos_token_id = None if eos_token_id is None else int(eos_token_id)
        if callable(temperature):
            self._temps = temperature
        else:
            table = np.atleast_1d(np.asarray(temperature, float))
            if table.ndim != 1 or table.size == 0 or not np.all(np.isfinite(table) & (table > 0)):
                raise ValueError(f"LMPolicy: temperature must be a positive number, a 1-d table of positive numbers "
                                 f"(e.g. ead_schedule(...)) or a function unit -> temperature, got {temperature!r}.")
            self._temps = table
        if top_p is not None and not 0.0 < float(top_p) <= 1.0:
            raise ValueError(f"LMPolicy: top_p must be in (0, 1] or None, got {top_p!r}.")
        self.top_p = None if top_p is None or float(top_p) == 1.0 else float(top_p)
        self.tokenizer = tokenizer
        self.decode = decode if decode is not None else (tokenizer.decode if tokenizer is not None else None)
        self.pad_token_id = int(pad_token_id)
        params = inspect.signature(model.forward).parameters if hasattr(model, "forward") else {}
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers >= 5 / 4.x
        self._gens: dict[int, _Generation] = {}
        self._next_gen = 0
        self.forward_calls = 0  # model forward passes (batched), for benchmarks

    # ------------------------------------------------------------------ model plumbing
    @property
    def device(self) -> "torch.device":
        return next(self.model.parameters()).device

    def _forward(self, ids: "torch.Tensor", mask: Optional["torch.Tensor"], pos: "torch.Tensor", cache: Any):
        """``(logits [B, V] of the last position, cache)`` after feeding ``ids [B, S]`` to the model with the
        ``transformers`` cache object ``cache`` (which the model extends by new tensors); ``mask=None``: no
        column of the cache is masked (the model attends to all of them, as with a mask of ones)."""
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         **{self._cache_kw: cache})
        self.forward_calls += 1
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        return out.logits[:, -1], cache

    def _store(self, gen: _Generation) -> int:
        g = self._next_gen
        self._gens[g] = gen
        self._next_gen += 1
        return g

    def _gather(self, gens: np.ndarray, rows: np.ndarray) -> _Generation:
        """The cache rows ``rows`` of generations ``gens`` (one per particle, in order), masked-only columns dropped."""
        dev = self.device
        missing = sorted(set(gens.tolist()) - set(self._gens))
        if missing:
            raise RuntimeError(f"LMPolicy: cache generation(s) {missing} were dropped; was a state kept from an "
                               "earlier run, or is one policy object used by two filters at once?")
        parts, order = [], []
        if np.all(gens == gens[0]) and rows.size == self._gens[int(gens[0])].mask.shape[0] \
                and np.array_equal(rows, np.arange(rows.size)):
            return self._gens[int(gens[0])]  # the ancestors are the identity: nothing to gather (nor copy)
        for g in np.unique(gens):
            sel = np.flatnonzero(gens == g)
            parts.append(self._gens[int(g)].select(torch.as_tensor(rows[sel], dtype=torch.long, device=dev)))
            order.append(sel)
        if len(parts) == 1:
            out = parts[0]
        else:
            length = max(p.mask.shape[1] for p in parts)
            parts = [p.left_pad(length) for p in parts]
            inv = torch.as_tensor(np.argsort(np.concatenate(order)), dtype=torch.long, device=dev)
            cat = lambda xs: torch.cat(xs, 0).index_select(0, inv)  # noqa: E731
            out = _Generation([cat([p.keys[i] for p in parts]) for i in range(len(parts[0].keys))],
                              [cat([p.values[i] for p in parts]) for i in range(len(parts[0].values))],
                              cat([p.mask for p in parts]))
        keep = out.mask.bool().any(0)
        if not bool(keep.all()):  # columns masked in every row (left padding, idle holes) cost attention time
            out = out.select(torch.nonzero(keep)[:, 0], rows=False)
        return out

    def _temperature(self, units: np.ndarray) -> "torch.Tensor":
        if callable(self._temps):
            t = np.asarray([float(self._temps(int(u))) for u in units])
            if not np.all(np.isfinite(t) & (t > 0)):
                raise ValueError(f"LMPolicy: the temperature function returned {t}; temperatures must be positive.")
        else:
            t = self._temps[np.clip(units, 0, self._temps.size - 1)]
        return torch.as_tensor(t, dtype=torch.float64, device=self.device)

    # ------------------------------------------------------------------ host protocol
    def init(self, rng: np.random.Generator, prompt: Any) -> SequenceState:
        """One sequence holding the prompt (token ids, or a string with a tokenizer); the prompt's cache
        (all tokens but the last) becomes generation 0. Clears the caches of earlier runs."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise TypeError("LMPolicy.init: a string prompt needs LMPolicy(tokenizer=...); or pass token ids.")
            prompt = self.tokenizer.encode(prompt)
        ids = np.asarray([] if prompt is None else prompt, dtype=np.int64).ravel()
        if ids.size == 0 or ids.size >= self.max_length:
            raise ValueError(f"LMPolicy.init: the prompt must hold between 1 and max_length - 1 = "
                             f"{self.max_length - 1} token ids (start with a BOS token if empty), got {ids.size}.")
        self._gens.clear()
        self._next_gen = 0
        dev = self.device
        p = ids.size
        if p > 1:
            with torch.inference_mode():
                x = torch.as_tensor(ids[None, :-1], device=dev)
                _, cache = self._forward(x, torch.ones_like(x), torch.arange(p - 1, device=dev)[None],
                                         transformers.DynamicCache())
            gen = _Generation(*_cache_tensors(cache), torch.ones((1, p - 1), dtype=torch.long, device=dev))
        else:
            gen = _Generation([], [], torch.zeros((1, 0), dtype=torch.long, device=dev))
        g = self._store(gen)
        tokens = np.full(self.max_length, self.pad_token_id, np.int32)
        tokens[:p] = ids
        aux = {"gen": np.int32(g), "row": np.int32(0), "units": np.int32(0), "prompt_length": np.int32(p)}
        return SequenceState(tokens, np.int32(p), np.bool_(False), aux)

    def _start(self, state: SequenceState, rows: np.ndarray):
        """``(logits [B, V], cache, mask, full)``: the logits of the next token of ``rows`` of ``state``, from
        their gathered cache with the last token fed (then in ``cache``, a ``transformers`` cache object);
        ``full``: no column of ``mask`` is masked."""
        aux = state.aux
        gen = self._gather(np.asarray(aux["gen"])[rows], np.asarray(aux["row"])[rows])
        lengths = np.asarray(state.lengths)[rows]
        dev = self.device
        last = torch.as_tensor(np.asarray(state.tokens)[rows, lengths - 1], dtype=torch.long, device=dev)[:, None]
        mask = torch.cat([gen.mask, torch.ones((rows.size, 1), dtype=gen.mask.dtype, device=dev)], 1)
        full = bool(gen.mask.all())
        pos = torch.as_tensor(lengths - 1, dtype=torch.long, device=dev)[:, None]
        cache = _dynamic_cache(gen.keys, gen.values) if gen.keys else transformers.DynamicCache()
        logits, cache = self._forward(last, None if full else mask, pos, cache)
        return logits, cache, mask, full

    def next_token_log_probs(self, state: SequenceState) -> np.ndarray:
        """``log p(v | x) [N, V]`` of the next token of every unfinished sequence, from the gathered cache (what
        ``step`` uses; a check of the cache against recomputation); NaN rows for finished sequences."""
        state = _np_state(state)
        rows = np.flatnonzero(~state.done)
        with torch.inference_mode():
            logits, _, _, _ = self._start(state, rows)
        out = np.full((state.done.size, logits.shape[-1]), np.nan)
        out[rows] = torch.log_softmax(logits.double(), -1).cpu().numpy()
        return out

    def step(self, rng: np.random.Generator, state: SequenceState):
        """One unit for every unfinished sequence: ``(state, log_p [N], log_q [N])`` (module docstring).

        The per-token work stays in torch on the batch (no host round trip but the one ``live.any()`` that
        ends the unit): the float32 logits are taken to float64, the token is drawn by inversion
        (:func:`_sample`, uniforms from ``rng`` drawn once per unit) and ``log p``/``log q`` of the drawn
        tokens are accumulated in float64 on ``[B]`` vectors; the state's NumPy arrays are written once."""
        state = _np_state(state)
        tokens, lengths, done = state.tokens.copy(), state.lengths.copy(), state.done.copy()
        aux = {k: np.array(v) for k, v in state.aux.items()}
        n, t_max = tokens.shape
        log_p_out, log_q_out = np.zeros(n), np.zeros(n)
        rows = np.flatnonzero(~done & (lengths < t_max))
        if rows.size == 0:
            return SequenceState(tokens, lengths, done, aux), log_p_out, log_q_out
        b, dev = rows.size, self.device
        temps = self._temperature(aux["units"][rows])
        exact = self.top_p is None and bool(torch.all(temps == 1.0))
        cap_np = np.minimum(self.max_unit_tokens, t_max - lengths[rows])
        width = int(cap_np.max())
        cap = torch.as_tensor(cap_np, device=dev)
        uniforms = torch.as_tensor(rng.random((width, b)), device=dev)
        delims = [(len(d), torch.as_tensor(d, device=dev)) for d in self.delimiters]
        buf = torch.full((b, width), self.pad_token_id, dtype=torch.long, device=dev)  # the unit's tokens
        live = torch.ones(b, dtype=torch.bool, device=dev)
        unit_len = torch.zeros(b, dtype=torch.long, device=dev)
        lp = torch.zeros(b, dtype=torch.float64, device=dev)
        lq = lp if exact else torch.zeros(b, dtype=torch.float64, device=dev)
        eos = torch.zeros(b, dtype=torch.bool, device=dev)
        oldest = int(np.min(aux["gen"][rows]))
        for g in [g for g in self._gens if g < oldest]:
            del self._gens[g]  # no later step's state can refer to them (module docstring)
        with torch.inference_mode():
            logits, cache, mask, full = self._start(state, rows)
            pos = torch.as_tensor(lengths[rows] - 1, dtype=torch.long, device=dev)[:, None]
            for t in range(width):
                tok, lp_v, lq_v = _sample(logits, uniforms[t], None if exact else temps, self.top_p)
                buf[:, t] = tok
                unit_len += live
                lp += torch.where(live, lp_v, 0.0)
                if not exact:
                    lq += torch.where(live, lq_v, 0.0)
                ended = unit_len >= cap
                if self.eos_token_id is not None:
                    eos |= live & (tok == self.eos_token_id)
                    ended |= eos
                for m, d in delims:
                    if t + 1 >= m:  # every live row holds t + 1 tokens of this unit
                        ended |= (buf[:, t + 1 - m:t + 1] == d).all(1)
                live &= ~ended
                num_live = int(live.sum())
                if num_live == 0:
                    break
                full = full and num_live == b
                mask = torch.cat([mask, live[:, None].to(mask.dtype)], 1)
                pos = pos + live[:, None]
                feed = torch.where(live, tok, self.pad_token_id)[:, None]
                logits, cache = self._forward(feed, None if full else mask, pos, cache)
        g = self._store(_Generation(*_cache_tensors(cache), mask))
        new = unit_len.cpu().numpy()
        i, j = np.nonzero(np.arange(width)[None, :] < new[:, None])
        tokens[rows[i], lengths[rows][i] + j] = buf.cpu().numpy()[i, j]
        lengths[rows] += new
        aux["gen"][rows], aux["row"][rows] = g, np.arange(b)
        aux["units"][rows] += 1
        done[rows] |= eos.cpu().numpy() | (lengths[rows] >= t_max)
        log_p_out[rows], log_q_out[rows] = lp.cpu().numpy(), lq.cpu().numpy()
        return SequenceState(tokens, lengths, done, aux), log_p_out, log_q_out

    # ------------------------------------------------------------------ texts
    def texts(self, state: SequenceState) -> tuple[list, list]:
        """``(prompts, partial_texts)`` of the N sequences: decoded strings, or tuples of token ids without a
        decoder (the prompt is the first ``aux["prompt_length"]`` tokens)."""
        return split_texts(state, self.decode)


def split_texts(state: SequenceState, decode: Optional[Callable] = None) -> tuple[list, list]:
    """``(prompts, partial_texts)`` of a state of :class:`LMPolicy` (``decode`` applied, or token-id tuples)."""
    state = _np_state(state)
    tokens, lengths = np.atleast_2d(state.tokens), np.atleast_1d(state.lengths)
    aux = state.aux if isinstance(state.aux, dict) else {}
    plen = np.broadcast_to(np.asarray(aux.get("prompt_length", 0)), lengths.shape)
    conv = decode if decode is not None else tuple
    prompts = [conv(tokens[i, :plen[i]].tolist()) for i in range(lengths.size)]
    texts = [conv(tokens[i, plen[i]:lengths[i]].tolist()) for i in range(lengths.size)]
    return prompts, texts


def _np_state(state: Any) -> SequenceState:
    aux = state.aux if isinstance(getattr(state, "aux", None), dict) else {}
    return SequenceState(np.asarray(state.tokens), np.asarray(state.lengths), np.asarray(state.done, bool),
                         {k: np.asarray(v) for k, v in aux.items()})


def _sample(logits: "torch.Tensor", u: "torch.Tensor", temperature: Optional["torch.Tensor"] = None,
            top_p: Optional[float] = None) -> tuple:
    """``(v [B], log p(v) [B], log q(v) [B])``: one token per row of ``logits [B, V]`` drawn from ``q`` by
    inversion with the uniforms ``u [B]``, in float64. With ``temperature=None`` (``T = 1``, no truncation)
    ``q = p`` and only ``z = logits``, ``e = exp(z - max z)`` and its cumulative sum ``c`` are formed: ``v``
    is the first index with ``c_v > u c_V`` and ``log p(v) = z_v - max z - log c_V`` (no ``[B, V]``
    log-softmax); otherwise ``log q`` is :func:`proposal_log_q`. Zero-probability tokens are never drawn."""
    z = logits.double()
    if temperature is None:
        zmax = z.amax(-1, keepdim=True)
        cdf = torch.sub(z, zmax).exp_().cumsum_(-1)
        total = cdf[:, -1:]
        tok = torch.searchsorted(cdf, u[:, None] * total, right=True).clamp_(max=z.shape[-1] - 1)
        log_p = (z.gather(1, tok) - zmax - total.log())[:, 0]
        return tok[:, 0], log_p, log_p
    log_p = torch.log_softmax(z, dim=-1)
    log_q = proposal_log_q(log_p, temperature, top_p)
    cdf = torch.exp(log_q).cumsum_(-1)
    tok = torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True).clamp_(max=z.shape[-1] - 1)
    return tok[:, 0], log_p.gather(1, tok)[:, 0], log_q.gather(1, tok)[:, 0]


def _dynamic_cache(keys: list, values: list):
    """A ``transformers`` cache object over the given per-layer tensors, without copying them where the cache
    has ``layers`` (``DynamicCache(list)`` concatenates each tensor onto an empty one: a copy of the whole
    cache per ``step``; here it is built on empty slices and the layers then point at the tensors)."""
    try:
        cache = transformers.DynamicCache([(k[..., :0, :], v[..., :0, :]) for k, v in zip(keys, values)])
    except TypeError:  # transformers 4.x
        return transformers.DynamicCache.from_legacy_cache(tuple(zip(keys, values)))
    if not all(hasattr(layer, "keys") for layer in getattr(cache, "layers", [None])):
        return transformers.DynamicCache(list(zip(keys, values)))
    for layer, k, v in zip(cache.layers, keys, values):
        layer.keys, layer.values = k, v
    return cache


def _cache_tensors(cache: Any) -> tuple[list, list]:
    if hasattr(cache, "layers"):
        return [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers]
    if hasattr(cache, "key_cache"):  # transformers 4.x
        return list(cache.key_cache), list(cache.value_cache)
    return [kv[0] for kv in cache], [kv[1] for kv in cache]


# ---------------------------------------------------------------------------------------------- PRM adapters
class _MemoPRM:
    """Shared part of the PRM adapters: ``log r`` per row from :meth:`_scores` on the distinct (prompt, text)
    pairs, memoised on the last state (``prefix`` and ``complete`` of one state score once)."""

    name = "PRM"

    def __init__(self):
        self._memo: tuple = (None, None)
        self.calls = 0  # scoring calls (batches of distinct sequences)

    def _log_r(self, state: SequenceState) -> np.ndarray:
        state = _np_state(state)
        key = (state.tokens.tobytes(), state.lengths.tobytes(), np.asarray(state.aux.get("prompt_length", 0)).tobytes())
        if self._memo[0] == key:
            return self._memo[1]
        seqs = [(row[:k].tobytes(), int(p)) for row, k, p in zip(
            np.atleast_2d(state.tokens), np.atleast_1d(state.lengths),
            np.broadcast_to(np.asarray(state.aux.get("prompt_length", 0)), np.shape(np.atleast_1d(state.lengths))))]
        first_of: dict = {}
        for i, s in enumerate(seqs):
            first_of.setdefault(s, i)
        uniq = {s: j for j, s in enumerate(first_of)}
        first = np.array(list(first_of.values()))
        sub = SequenceState(np.atleast_2d(state.tokens)[first], np.atleast_1d(state.lengths)[first], None,
                            {k: np.broadcast_to(v, np.shape(np.atleast_1d(state.lengths)))[first]
                             for k, v in state.aux.items()})
        r = np.asarray(self._scores(sub), float).ravel()
        self.calls += 1
        if r.shape != (first.size,) or not np.all((r >= 0) & (r <= 1)):
            bad = r[~((r >= 0) & (r <= 1))][:3] if r.shape == (first.size,) else r.shape
            raise ValueError(f"{self.name}: scores must be {first.size} probabilities in [0, 1] (one per sequence), "
                             f"got {bad}; return probabilities, not logits (apply a sigmoid).")
        with np.errstate(divide="ignore"):
            out = np.log(r)[[uniq[s] for s in seqs]]
        self._memo = (key, out)
        return out

    def prefix(self, state: SequenceState) -> np.ndarray:
        """``log r`` of every partial sequence."""
        return self._log_r(state)

    def complete(self, state: SequenceState) -> np.ndarray:
        """``log r`` of every complete sequence (the same scorer)."""
        return self._log_r(state)


class CallablePRM(_MemoPRM):
    """PRM from a callable ``score_fn(prompts, partial_texts) -> [n] floats in [0, 1]`` (module docstring):
    ``prefix``/``complete`` return ``log score``. ``decode``: ``list[int] -> str`` for the texts, or an
    :class:`LMPolicy` (its decoder); None: texts are tuples of token ids."""

    name = "CallablePRM"

    def __init__(self, score_fn: Callable[[list, list], Any], decode: Any = None):
        if not callable(score_fn):
            raise TypeError(f"CallablePRM: score_fn must be callable(prompts, partial_texts), got {score_fn!r}.")
        super().__init__()
        self.score_fn = score_fn
        self.decode = decode.decode if isinstance(decode, LMPolicy) else decode

    def _scores(self, state: SequenceState) -> Any:
        return self.score_fn(*split_texts(state, self.decode))


class RewardModelPRM(_MemoPRM):
    """PRM from a ``transformers`` sequence-classification (reward) model: ``r = sigmoid(logit)`` with one
    label, else ``softmax(logits)[label]``; ``prefix``/``complete`` return ``log r``.

    tokenizer: None (the reward model shares the policy's vocabulary: the token ids of prompt and text are
    scored as they are) or the reward model's tokenizer (the policy's texts are decoded with ``decode`` and
    ``prompt + text`` re-encoded). Sequences are batched by token length (no padding, so no assumption on
    a pad token or on which position the model pools), ``batch_size`` at a time."""

    name = "RewardModelPRM"

    def __init__(self, model: Any, tokenizer: Any = None, decode: Any = None, label: int = -1, batch_size: int = 64):
        super().__init__()
        self.model, self.tokenizer, self.label = model, tokenizer, int(label)
        self.decode = decode.decode if isinstance(decode, LMPolicy) else decode
        if tokenizer is not None and self.decode is None:
            raise ValueError("RewardModelPRM: with a tokenizer, give decode= (the policy's LMPolicy or its decoder) to "
                             "turn the policy's token ids into text.")
        self.batch_size = positive_int(batch_size, "RewardModelPRM batch_size")

    def _scores(self, state: SequenceState) -> np.ndarray:
        if self.tokenizer is None:
            seqs = [row[:k].tolist() for row, k in zip(state.tokens, state.lengths)]
        else:
            prompts, texts = split_texts(state, self.decode)
            seqs = [self.tokenizer.encode(p + t) for p, t in zip(prompts, texts)]
        out = np.zeros(len(seqs))
        dev = next(self.model.parameters()).device
        by_len: dict[int, list] = {}
        for i, s in enumerate(seqs):
            by_len.setdefault(len(s), []).append(i)
        with torch.inference_mode():
            for idx in by_len.values():
                for j in range(0, len(idx), self.batch_size):
                    chunk = idx[j:j + self.batch_size]
                    logits = self.model(input_ids=torch.as_tensor([seqs[i] for i in chunk], device=dev)).logits.double()
                    r = (torch.sigmoid(logits[:, 0]) if logits.shape[-1] == 1
                         else torch.softmax(logits, -1)[:, self.label])
                    out[chunk] = r.cpu().numpy()
        return out
