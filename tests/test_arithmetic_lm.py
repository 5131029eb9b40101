"""The arithmetic language, its verifier and the tiny GPT-2 trainer (smcppl.models.arithmetic_lm, extra ``lm``)."""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from smcppl.inference.sequence import ParticleFilter, run_host  # noqa: E402
from smcppl.models import arithmetic_lm as A  # noqa: E402
from smcppl.models.lm import CallablePRM  # noqa: E402

PROB = (7, "+", 5, "*", 3, "-", 4)  # 7 + 15 - 4 = 18
TINY = A.ModelConfig(n_layer=1, n_head=2, n_embd=16, n_positions=48)


def test_solution_chain_and_exact_final_answer():
    assert A.solution_text(PROB) == "5*3=15;7+15=22;22-4=18;$"
    assert A.evaluate(PROB) == 18 and A.evaluate((2, "*", 3, "*", 4, "-", 9)) == 15
    assert A.solution_text((1, "-", 9, "+", 2, "*", 3)) == "2*3=6;1-9=-8;-8+6=-2;$"
    good = A.solution_text(PROB)
    assert A.final_answer_correct(PROB, good)
    assert not A.final_answer_correct(PROB, good[:-1])  # unfinished
    assert not A.final_answer_correct(PROB, "5*3=15;7+15=22;22-4=17;$")  # wrong answer
    assert not A.final_answer_correct(PROB, "5*3=15;7+15=22;22-4=18;$5")  # trailing tokens
    assert not A.final_answer_correct(PROB, "5*3=15;7+15=22;22-=18;$")  # malformed step
    # right answer by a wrong route still counts: the check is on the final answer only
    assert A.final_answer_correct(PROB, "9+9=18;$")


def test_verifier_is_exact_on_constructed_prefixes():
    v = A.StepVerifier()
    cases = {"": v.r_ok, "5*": v.r_ok, "5*3=15;": v.r_ok, "5*3=15;7+15=22;": v.r_ok, A.solution_text(PROB): v.r_done,
             "5*3=16;": v.r_bad, "7+5=12;": v.r_bad,  # wrong result; wrong order (precedence)
             "5*3=15;7+15=22;22-4=18;": v.r_ok,  # every step right, end token not yet drawn
             "5*3=15;7+15=22;22-4=18;1+1=2;": v.r_bad, "9+9=18;$": v.r_bad, "5*3=15;$": v.r_bad, "5*3==;": v.r_bad}
    got = v(["^7+5*3-4:"] * len(cases), list(cases))
    np.testing.assert_array_equal(got, np.array(list(cases.values())))


def test_overconfidence_raises_early_scores_only():
    """Over the held-out problems, a wrong first step scores r_bad honestly and >= 1/2 with full over-confidence
    (the knob's definition); the score of a later wrong step and of a finished solution is unchanged."""
    honest, over = A.StepVerifier(0.0), A.StepVerifier(1.0)
    half = A.StepVerifier(0.5)
    for p in A.held_out_problems(20):
        steps = A.solution_steps(p)
        x, op, y, z = steps[0]
        wrong1 = f"{x}{op}{y}={z + 1};"
        prompt = "^" + A.problem_text(p) + ":"
        assert honest([prompt], [wrong1])[0] == honest.r_bad
        r_over, r_half = over([prompt], [wrong1])[0], half([prompt], [wrong1])[0]
        assert 0.5 <= r_over < 1.0 and honest.r_bad < r_half < r_over
        assert over([prompt], [wrong1])[0] == r_over  # deterministic in the prefix
        right1 = f"{x}{op}{y}={z};"
        x2, op2, y2, z2 = steps[1]
        wrong2 = right1 + f"{x2}{op2}{y2}={z2 + 1};"
        assert over([prompt], [wrong2])[0] == honest.r_bad
        assert over([prompt], [A.solution_text(p)])[0] == honest.r_done
    with pytest.raises(ValueError, match="overconfidence"):
        A.StepVerifier(1.5)


def test_held_out_problems_are_never_trained_on():
    held = A.held_out_problems(30, seed=3)
    assert len(set(held)) == 30 and all(A.is_held_out(p) for p in held)
    ids, _ = A._batch(np.random.default_rng(0), 256, 48)
    for row in ids.tolist():
        text = A.decode(row)
        prob = A._prompt_problem(text[:text.index(":") + 1])
        assert not A.is_held_out(prob)


def test_training_reduces_the_loss_and_weights_round_trip(tmp_path, monkeypatch):
    """200 AdamW steps (about 5 s) on a 1-layer width-16 GPT-2: the per-token cross-entropy on the solution
    starts at log 19 = 2.94 (uniform over the vocabulary) and falls to about 1.5 (two seeds: 1.52, 1.53;
    the format tokens and digit frequencies are learnt first); a failed update (mask misaligned, no
    optimiser step) would stay near 2.9, so 2.0 separates the two with a wide margin."""
    monkeypatch.setenv("SMCPPL_CACHE_DIR", str(tmp_path))
    tc = A.TrainConfig(seed=1, max_steps=200, max_seconds=120.0, lr=1e-2)
    model, info = A.load_or_train(TINY, tc)
    assert info["source"] == "trained" and info["steps"] == 200
    assert A.cache_path(TINY, tc).is_file() and str(tmp_path) in str(A.cache_path(TINY, tc))
    assert info["initial_loss"] > 2.8 and info["loss"] < 2.0, info
    again, info2 = A.load_or_train(TINY, tc)
    assert info2["source"] == "cache" and info2["steps"] == 200
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    other = A.TrainConfig(seed=2, max_steps=200, max_seconds=120.0, lr=1e-2)
    assert A.cache_path(TINY, other) != A.cache_path(TINY, tc)  # the key covers the training settings

    # the model is a policy of the host filter: units are steps, texts decode to the language
    policy = A.make_policy(again)
    pf = ParticleFilter(policy, CallablePRM(A.StepVerifier(1.0), decode=policy), weights="score", max_steps=4)
    res = run_host(pf, jax.random.key(0), 4, A.prompt_ids(PROB))
    texts = policy.texts(res.output.state.particles.seq)[1]
    assert len(texts) == 4 and all(set(t) <= set(A.VOCAB) for t in texts)
    assert res.policy_calls <= 16 and res.potential_calls >= res.policy_calls


def test_shipped_default_weights_load(tmp_path, monkeypatch):
    """The package's weights are those of the default settings (an empty user cache falls back to them)."""
    monkeypatch.setenv("SMCPPL_CACHE_DIR", str(tmp_path))
    model, info = A.load_or_train()
    assert info["source"] == "package" and info["steps"] == A.TrainConfig().max_steps
    assert sum(p.numel() for p in model.parameters()) < 200_000 and not model.training
