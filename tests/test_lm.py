"""Language-model adapters (smcppl.models.lm, extra ``smcppl[lm]``): a tiny GPT-2 built from a config at test
time (no download, no tokenizer), vocabulary {0..4} with delimiter 3 and EOS 4, units of at most 2 tokens, 2
units after the prompt [0, 1]: 225 possible continuations, whose exact probabilities come from running the
model on every prefix without any cache (``EXACT``)."""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from scipy import stats  # noqa: E402

from smcppl import Resampling  # noqa: E402
from smcppl.inference.sequence import ParticleFilter, run_host  # noqa: E402
from smcppl.inference.sequence.proposals import ead_schedule  # noqa: E402
from smcppl.models.lm import CallablePRM, LMPolicy, RewardModelPRM  # noqa: E402

transformers.logging.set_verbosity_error()
PROMPT, DELIM, EOS, CAP, UNITS = [0, 1], 3, 4, 2, 2


def tiny_model(seed=1, cls=None, **kw):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=5, n_layer=2, n_head=2, n_embd=16, n_positions=16,
                                  initializer_range=0.1, **kw)
    return (cls or transformers.GPT2LMHeadModel)(cfg).eval()


MODEL = tiny_model()


def exact_next(prefix):
    """log p(. | prefix) [V] in float64, from the whole prefix (no cache)."""
    with torch.no_grad():
        return MODEL(torch.as_tensor([list(prefix)])).logits[0, -1].double().log_softmax(-1).numpy()


def enumerate_sequences():
    """{continuation tokens: log p} over every continuation of PROMPT (units end at DELIM, EOS or CAP tokens)."""
    out = {}

    def unit(seq, lp, u, ulen=0):
        lv = exact_next(seq)
        for v in range(5):
            s2, lp2 = seq + [v], lp + lv[v]
            if v == EOS or ((v == DELIM or ulen + 1 >= CAP) and u + 1 >= UNITS):
                out[tuple(s2[len(PROMPT):])] = lp2
            elif v == DELIM or ulen + 1 >= CAP:
                unit(s2, lp2, u + 1)
            else:
                unit(s2, lp2, u, ulen + 1)

    unit(list(PROMPT), 0.0, 0)
    return out


EXACT = enumerate_sequences()
KEYS = list(EXACT)
P_EXACT = np.exp(np.array([EXACT[k] for k in KEYS]))


def policy(**kw):
    return LMPolicy(MODEL, max_length=len(PROMPT) + UNITS * CAP, delimiters=[DELIM], eos_token_id=EOS,
                    max_unit_tokens=CAP, **kw)


def cells(tokens, lengths):
    index = {k: i for i, k in enumerate(KEYS)}
    return np.array([index[tuple(t[len(PROMPT):k].tolist())] for t, k in zip(tokens, lengths)])


class Constant:
    """Constant potential (log psi = log phi = 0): the filter's target is the policy's own distribution."""

    def prefix(self, state):
        return np.zeros(np.shape(state.lengths)[0])

    complete = prefix


class Switch:
    """A policy whose implementation can be swapped between runs of one compiled filter."""

    def __init__(self, inner):
        self.inner = inner

    def init(self, rng, prompt):
        return self.inner.init(rng, prompt)

    def step(self, rng, state):
        return self.inner.step(rng, state)


class WrongLogQ:
    """Draws at temperature 2 but reports log q = log p: the filter then believes it samples the policy."""

    def __init__(self):
        self.hot = policy(temperature=2.0)

    def init(self, rng, prompt):
        return self.hot.init(rng, prompt)

    def step(self, rng, state):
        new, log_p, _ = self.hot.step(rng, state)
        return new, log_p, log_p


def test_exact_enumeration_is_a_distribution():
    assert len(EXACT) == 225
    np.testing.assert_allclose(P_EXACT.sum(), 1.0, atol=1e-9)
    assert P_EXACT.max() < 0.5 and P_EXACT.min() > 0  # not degenerate: the tests below can tell p from q


def test_cache_gather_equals_recomputation():
    """After resamplings with repeated ancestors (and two steps from one state, as the look-ahead does), the
    next-token log-probabilities from the gathered cache equal those of the model run on the whole prefix.
    Both are float32 forward passes of the same weights on the same tokens, differing only by summation
    order (masked, padded cache columns): |difference| ~ 1e-6; 1e-5 is float32 tolerance for logits O(1)."""
    pol = LMPolicy(MODEL, max_length=16, delimiters=[DELIM], eos_token_id=None, max_unit_tokens=3)
    rng = np.random.default_rng(0)
    n = 6
    state = jax.tree_util.tree_map(lambda x: np.repeat(np.asarray(x)[None], n, 0), pol.init(rng, PROMPT))

    def worst(st):
        lp = pol.next_token_log_probs(st)
        return max(np.abs(lp[i] - exact_next(st.tokens[i, :st.lengths[i]].tolist())).max()
                   for i in range(n) if not st.done[i])

    for anc in ([0, 0, 1, 1, 5, 2], list(range(n)), [3, 3, 3, 0, 1, 4], [5, 5, 2, 2, 2, 0]):  # identity: no gather
        a, _, _ = pol.step(rng, state)
        b, _, _ = pol.step(rng, state)  # a second draw from the same state (look-ahead): must not disturb a
        state = jax.tree_util.tree_map(lambda x: x[np.asarray(anc)], a)
        assert worst(state) < 1e-5 and worst(b) < 1e-5
    assert len(set(state.aux["gen"].tolist())) == 1 and len(set(state.lengths.tolist())) > 1  # ragged rows
    # rows of two different generations in one batch (the look-ahead's reuse) gather correctly too
    mixed = jax.tree_util.tree_map(lambda x, y: np.concatenate([x[:3], y[3:]]), state, b)
    assert len(set(mixed.aux["gen"].tolist())) == 2 and worst(mixed) < 1e-5
    # a one-token prompt has an empty cache
    one = pol.init(rng, [2])
    one = jax.tree_util.tree_map(lambda x: np.repeat(np.asarray(x)[None], 3, 0), one)
    one, _, _ = pol.step(rng, one)
    assert np.abs(pol.next_token_log_probs(one)[0] - exact_next(one.tokens[0, :one.lengths[0]].tolist())).max() < 1e-5


@pytest.fixture(scope="module")
def chi_square_runs():
    """Constant potential, multinomial resampling at every step. The weights are all 0, so the ancestor
    indices are independent of the sequences: final particles with distinct first-stage origins have
    disjoint genealogies and are i.i.d. draws of the filter's target (one per origin, ~N(1 - 1/e))."""
    switch = Switch(policy())
    pf = ParticleFilter(switch, Constant(), weights="twist", resampling="multinomial", max_steps=UNITS,
                        check_scores=False)
    out = {}
    for name, inner in (("policy", policy()), ("wrong_log_q", WrongLogQ())):
        switch.inner = inner
        res = run_host(pf, jax.random.key(7), 3000, PROMPT)
        parts = res.output.state.particles
        _, first = np.unique(parts.origin, return_index=True)
        out[name] = (cells(parts.seq.tokens[first], parts.seq.lengths[first]), parts)
    return out


def chi_square_p(idx):
    """Pearson chi-square p-value of the counts against EXACT, cells with expected count < 5 pooled."""
    expected = P_EXACT * idx.size
    obs = np.bincount(idx, minlength=len(KEYS)).astype(float)
    small = expected < 5
    obs = np.append(obs[~small], obs[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    return stats.chisquare(obs, expected).pvalue


def test_constant_potential_filter_reproduces_the_lm_distribution(chi_square_runs):
    """Chi-square test at significance 1e-3 (false rejection probability 1e-3 for a correct sampler). The
    filter resampled with repeated ancestors (the cache was gathered), and its log p is the exact one."""
    idx, parts = chi_square_runs["policy"]
    assert idx.size > 1500 and len(np.unique(parts.origin)) < 3000 * 0.7
    assert chi_square_p(idx) > 1e-3
    all_idx = cells(parts.seq.tokens, parts.seq.lengths)
    np.testing.assert_allclose(parts.log_p, np.array([EXACT[KEYS[i]] for i in all_idx]), atol=1e-4)


def test_a_wrong_log_q_is_rejected(chi_square_runs):
    """The same test rejects a sampler that draws at temperature 2 and reports log q = log p."""
    assert chi_square_p(chi_square_runs["wrong_log_q"][0]) < 1e-6


def first_units():
    """Index of each continuation's first unit (17 classes): the unit that the EAD proposal tempers."""
    first = {}
    unit_end = lambda k: next(j + 1 for j, t in enumerate(k) if t in (DELIM, EOS) or j + 1 >= CAP)  # noqa: E731
    return np.array([first.setdefault(k[:unit_end(k)], len(first)) for k in KEYS]), len(first)


def weighted_tv(idx, W, groups, num_groups):
    """(TV of the weighted frequencies to p on a partition of the sequences, its bound, unweighted TV).
    SNIS bias O(1/n); Monte Carlo error per class se_c = sqrt(sum_i W_i^2 (1[c_i = c] - p_hat_c)^2)
    (delta method), E TV <= 0.5 sum_c se_c: the bound is 3 times that plus 1/n (tests/test_proposals.py)."""
    g = groups[idx]
    p_hat = np.bincount(g, W, num_groups)
    se = np.sqrt((W[:, None] ** 2 * ((g[:, None] == np.arange(num_groups)) - p_hat[None, :]) ** 2).sum(0))
    p_exact = np.bincount(groups, P_EXACT, num_groups)
    unweighted = np.bincount(g, minlength=num_groups) / idx.size
    return (0.5 * np.abs(p_hat - p_exact).sum(), 1.5 * se.sum() + 1.0 / idx.size,
            0.5 * np.abs(unweighted - p_exact).sum())


def test_ead_weights_reproduce_the_temperature_one_distribution():
    """EAD proposal (T = 3 for the first unit, 1 for the second), no resampling: the final weights are
    log p - log q, and the self-normalised weighted frequencies match p, over whole sequences and over
    first units (:func:`weighted_tv`); on first units the unweighted draws are outside the bound (the test
    can fail). Z = 1 (phi = 1) and Z_hat = mean(p / q) is unbiased: within 4 standard errors of 1."""
    n = 4000
    pol = policy(temperature=ead_schedule("linear", 3.0, 1.0, UNITS))
    pf = ParticleFilter(pol, Constant(), weights="twist", resampling=Resampling(when="never"), max_steps=UNITS,
                        check_scores=False)
    res = run_host(pf, jax.random.key(3), n, PROMPT)
    parts, lw = res.output.state.particles, np.asarray(res.output.state.log_weights, float)
    idx = cells(parts.seq.tokens, parts.seq.lengths)
    W = np.exp(lw - lw.max())
    W /= W.sum()
    tv, bound, _ = weighted_tv(idx, W, np.arange(len(KEYS)), len(KEYS))
    assert tv < bound, (tv, bound)
    tv, bound, tv_unweighted = weighted_tv(idx, W, *first_units())
    assert tv < bound < tv_unweighted, (tv, bound, tv_unweighted)
    rho = np.exp(lw)
    assert abs(rho.mean() - 1.0) < 4 * rho.std() / np.sqrt(n)
    assert abs(res.log_evidence - np.log(rho.mean())) < 1e-4


def top_p_log_q(log_p, temperature, top_p):
    """Reference (NumPy, sort-free): token v is kept iff the tempered mass of the tokens strictly more probable
    than v is below top_p; log q = log-softmax of the kept tempered logits."""
    z = log_p / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    keep = np.array([p[p > p[v]].sum() < top_p for v in range(p.size)])
    zq = np.where(keep, z, -np.inf)
    return zq - np.logaddexp.reduce(zq[keep])


def test_top_p_log_q_is_exact():
    """log p and log q of a unit (sum over its tokens) equal the reference from the exact next-token
    distributions, to float32 logit tolerance; the truncation cut some tokens and none was drawn."""
    pol = policy(temperature=1.5, top_p=0.7)
    rng = np.random.default_rng(1)
    st = jax.tree_util.tree_map(lambda x: np.repeat(np.asarray(x)[None], 200, 0), pol.init(rng, PROMPT))
    new, log_p, log_q = pol.step(rng, st)
    cut = 0
    for i in range(200):
        seq, rp, rq = list(PROMPT), 0.0, 0.0
        for v in new.tokens[i, len(PROMPT):new.lengths[i]]:
            lv = exact_next(seq)
            lq = top_p_log_q(lv, 1.5, 0.7)
            cut += np.isinf(lq).sum()
            rp, rq = rp + lv[v], rq + lq[v]
            seq.append(int(v))
        assert abs(log_p[i] - rp) < 1e-5 and abs(log_q[i] - rq) < 1e-5, (i, log_p[i], rp, log_q[i], rq)
    assert cut > 0 and np.all(np.isfinite(log_q))


def test_sample_is_inversion_of_the_float64_distribution():
    """_sample draws token v = the first index whose float64 cumulative probability exceeds u (inversion),
    and returns log p(v) (and log q(v)) equal to the float64 log-softmax, with and without a tempered,
    truncated proposal. Reference in NumPy from the same float32 logits; only a u within rounding (1e-12)
    of a cumulative boundary could differ, which these 4000 draws avoid (checked)."""
    from smcppl.models.lm import _sample, proposal_log_q

    gen = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(8, 50, generator=gen)
    u = torch.as_tensor(np.random.default_rng(0).random((500, 8)))
    z = logits.double().numpy()
    ref_p = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    temps = torch.full((8,), 1.7, dtype=torch.float64)
    ref_q = proposal_log_q(torch.as_tensor(ref_p), temps, 0.8).numpy()
    for log_ref, args in ((ref_p, ()), (ref_q, (temps, 0.8))):
        cdf = np.cumsum(np.exp(log_ref), 1)
        for uu in u:
            tok, lp, lq = (x.numpy() for x in _sample(logits, uu, *args))
            gap = np.abs(cdf - uu.numpy()[:, None] * cdf[:, -1:]).min(1)
            assert gap.min() > 1e-12
            expect = (cdf > uu.numpy()[:, None] * cdf[:, -1:]).argmax(1)
            np.testing.assert_array_equal(tok, expect)
            np.testing.assert_allclose(lp, ref_p[np.arange(8), tok], rtol=0, atol=1e-12)
            np.testing.assert_allclose(lq, log_ref[np.arange(8), tok], rtol=0, atol=1e-12)
            assert np.all(np.isfinite(lq))


def test_prm_adapters_give_log_scores():
    """CallablePRM: log of the callable's probability, each distinct sequence scored once per state (prefix
    and complete share it); bad scores are refused. RewardModelPRM: log sigmoid of a one-label model's
    logit, log softmax[label] with two labels, equal to the model run on each sequence alone."""
    pol = policy()
    rng = np.random.default_rng(2)
    st = jax.tree_util.tree_map(lambda x: np.repeat(np.asarray(x)[None], 8, 0), pol.init(rng, PROMPT))
    st, _, _ = pol.step(rng, st)
    seen = []

    def score(prompts, texts):
        seen.append(len(texts))
        return [0.1 + 0.2 * len(t) for t in texts]

    prm = CallablePRM(score, decode=lambda ids: "".join(map(str, ids)))
    expect = np.log(0.1 + 0.2 * (st.lengths - len(PROMPT)))
    np.testing.assert_allclose(prm.prefix(st), expect, rtol=1e-12)
    np.testing.assert_allclose(prm.complete(st), expect, rtol=1e-12)
    distinct = len({st.tokens[i, :st.lengths[i]].tobytes() for i in range(8)})
    assert seen == [distinct] and distinct < 8  # once per state, duplicates scored once
    assert CallablePRM(lambda p, t: [tuple(p[0]) == tuple(PROMPT)] * len(t)).prefix(st)[0] == 0.0  # token ids
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        CallablePRM(lambda p, t: [1.5] * len(t)).prefix(st)
    for labels in (1, 2):
        rm = tiny_model(seed=3, cls=transformers.GPT2ForSequenceClassification, num_labels=labels, pad_token_id=0)
        got = RewardModelPRM(rm).prefix(st)
        for i in range(8):
            with torch.no_grad():
                logits = rm(torch.as_tensor([st.tokens[i, :st.lengths[i]].tolist()])).logits[0].double()
            ref = torch.nn.functional.logsigmoid(logits[0]) if labels == 1 else logits.log_softmax(-1)[-1]
            assert abs(got[i] - float(ref)) < 1e-6
    # with the reward model's own tokenizer: texts decoded by the policy's decoder, prompt + text re-encoded
    chars = type("Chars", (), {"encode": staticmethod(lambda text: [ord(c) - 97 for c in text])})()
    via_text = RewardModelPRM(rm, tokenizer=chars, decode=lambda ids: "".join(chr(97 + i) for i in ids)).prefix(st)
    np.testing.assert_allclose(via_text, got, atol=1e-12)
    with pytest.raises(ValueError, match="decode="):
        RewardModelPRM(rm, tokenizer=chars)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="temperature"):
        policy(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        policy(top_p=1.5)
    with pytest.raises(ValueError, match="prompt"):
        policy().init(np.random.default_rng(0), [])
    with pytest.raises(TypeError, match="tokenizer"):
        policy().init(np.random.default_rng(0), "text")


def test_lookahead_with_reuse_keeps_the_caches_consistent():
    """Look-ahead draws k successors per particle from one state and reuse keeps one of them (rows of several
    cache generations in one batch): every particle's log p still equals the exact one (a wrong cache row
    would give another next-token distribution)."""
    from smcppl.inference.sequence import LookAhead

    prm = CallablePRM(lambda prompts, texts: [0.2 + 0.15 * len(t) for t in texts])
    pf = ParticleFilter(policy(), prm, weights="score", lookahead=LookAhead(k=2, reuse=True), max_steps=UNITS)
    parts = run_host(pf, jax.random.key(1), 8, PROMPT).output.state.particles
    idx = cells(parts.seq.tokens, parts.seq.lengths)
    np.testing.assert_allclose(parts.log_p, np.array([EXACT[KEYS[i]] for i in idx]), atol=1e-4)
