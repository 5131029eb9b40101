"""Particle filters over sequence policies (smcppl.inference.sequence) against exact answers.

Compile time dominates on CPU, so every compiled filter is built once (module-level caches) and
vmapped over seeds; PRM tables are passed as traced arguments so that one compiled filter serves
several potentials (honest / misleading / degenerate).
"""
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smcppl import SMC, Entropic, Resampling, SMCError
from smcppl.core import raise_if_failed
from smcppl.core.weights import normalize
from smcppl.inference.sequence import LookAhead, ParticleFilter, SequenceState, particle_filter, run_host, select_index
from smcppl.models.sequence_tasks import lagged_verifier, strategy_trap

# XLA's backend optimisation level 0 halves compile time here; the compiled runs are short anyway.
FAST = {"xla_backend_optimization_level": 0}


def fast_jit(fn):
    """``jax.jit(fn)`` compiled on the first call with ``FAST`` options (later calls: same shapes)."""
    cache = {}

    def call(*args):
        if "c" not in cache:
            cache["c"] = jax.jit(fn).lower(*args).compile(compiler_options=FAST)
        return cache["c"](*args)

    return call


# ------------------------------------------------------------------------------------------ exact target
SMALL = lagged_verifier(num_units=4)  # 46 sequences with p(x) > 0, enumerable
TOK, LOGP, LOGPHI, _ = SMALL.enumerate()
Z_EXACT = float(np.sum(np.exp(LOGP + LOGPHI)))
TARGET = np.exp(LOGP + LOGPHI) / Z_EXACT
CODES = (TOK * SMALL.vocab_size ** np.arange(SMALL.T)).sum(1)
N_EX, R_EX = 64, 1000

EXACT_CONFIGS = {
    # plain twisted PF, multinomial resampling at every step
    "pf": dict(),
    # the properly weighted variants together: ESS-triggered systematic resampling, corrected entropic
    # resampling (flattening whenever it resamples: threshold 1 and no early-phase gate) and look-ahead
    # with reuse and the auxiliary-particle-filter correction
    "corrected": dict(resampling=Resampling("systematic", "ess", 0.9),
                      entropic=Entropic("epf_linear", ess_threshold=1.0, early_phase=1.0, correct=True),
                      lookahead=LookAhead(k=2, reuse=True, correct=True)),
}


@lru_cache(None)
def exact_runner(name):
    def run(keys, logH, logR):
        pf = ParticleFilter(SMALL.policy(), SMALL.potential(logH, logR), weights="twist", **EXACT_CONFIGS[name])
        return jax.vmap(lambda k: particle_filter(k, pf, N_EX, SMALL.prompt()))(keys)

    return fast_jit(run)


@lru_cache(None)
def exact_output(name):
    keys = jax.random.split(jax.random.key(7), R_EX)
    return exact_runner(name)(keys, jnp.asarray(SMALL.logH, jnp.float32), jnp.asarray(SMALL.logR, jnp.float32))


def _per_run_measure(out):
    """``[R, M]``: each run's weighted particle measure on the enumerated sequences."""
    tk = np.asarray(out.state.particles.seq.tokens)
    w = np.asarray(jax.vmap(normalize)(out.state.log_weights), float)
    c = (tk * SMALL.vocab_size ** np.arange(SMALL.T)).sum(-1)
    order = np.argsort(CODES)
    pos = np.searchsorted(CODES[order], c)
    assert np.all(CODES[order][np.clip(pos, 0, len(CODES) - 1)] == c), "a particle left the support of p"
    per = np.zeros((c.shape[0], len(CODES)))
    np.add.at(per, (np.repeat(np.arange(c.shape[0]), c.shape[1]), order[pos].ravel()), w.ravel())
    return per


@pytest.mark.parametrize("name", sorted(EXACT_CONFIGS))
def test_twist_matches_exact_target_and_normaliser(name):
    out = exact_output(name)
    if name == "corrected":  # the variants were really exercised
        tau, res = np.asarray(out.trace.tau), np.asarray(out.trace.resampled)
        assert np.any(tau > 1.0) and np.any(~res[:, 1:]) and np.any(res[:, 1:])
    # log Z: Z_hat is unbiased for Z = E_p[phi] (exact here), so the mean of Z_hat / Z over R independent
    # runs is 1 within Monte Carlo error; 4 standard errors gives a false-alarm rate < 1e-4.
    ratio = np.exp(np.asarray(out.log_evidence, float) - np.log(Z_EXACT))
    se = ratio.std() / np.sqrt(R_EX)
    assert abs(ratio.mean() - 1.0) < 4 * se, (ratio.mean(), se)
    # Output distribution: the average over R runs of the self-normalised particle measure has expectation
    # q_N with TV(q_N, target) = O(1/N) (SMC bias); we allow 1/N for it. Its Monte Carlo part satisfies
    # E TV <= 0.5 sum_x se_x (se_x: standard error of the average at sequence x); allow 3x that.
    per = _per_run_measure(out)
    est, se_x = per.mean(0), per.std(0) / np.sqrt(R_EX)
    tv = 0.5 * np.abs(est - TARGET).sum()
    assert tv < 1.0 / N_EX + 3 * 0.5 * se_x.sum(), (tv, 0.5 * se_x.sum())
    # the Z-weighted measure E[Z_hat * sum_i W_i delta_{x_i}] = Z * target exactly (no 1/N bias)
    zper = ratio[:, None] * per
    tv_u = 0.5 * np.abs(zper.mean(0) / ratio.mean() - TARGET).sum()
    assert tv_u < 3 * 0.5 * (zper.std(0) / np.sqrt(R_EX)).sum() + 0.005, tv_u
    # a wrong target would be far off: e.g. the policy itself (no weighting) is at TV = P(phi = 0)
    assert 0.5 * np.abs(np.exp(LOGP) - TARGET).sum() > 0.3


def test_all_minus_inf_potential_is_a_clear_error():
    """Twist mode: if phi = 0 everywhere every particle dies; the run reports the stage, raise_if_failed
    raises SMCError (the SMC runner calls it)."""
    keys = jax.random.split(jax.random.key(0), R_EX)  # same shapes: no recompilation
    out = exact_runner("pf")(keys, jnp.asarray(SMALL.logH, jnp.float32), jnp.full(SMALL.logR.shape, -jnp.inf))
    assert np.all(np.asarray(out.dead_stage) == SMALL.T - 1)
    with pytest.raises(SMCError, match="every particle has log-weight -inf"):
        raise_if_failed(out, "ParticleFilter")


# ------------------------------------------------------------------------------------------ ePF temperatures
class Scripted:
    """Writes the particle's row index as token; with the PRM below the weight of every stage is a fixed
    table entry whatever the resampling did: a scripted weight history."""

    def __init__(self, xp, T):
        self.xp, self.T = xp, T

    def init(self, key, prompt):
        xp = self.xp
        return SequenceState(xp.zeros((self.T,), xp.int32), xp.asarray(0, xp.int32), xp.asarray(False), None)

    def step(self, key, state):
        xp = self.xp
        n = state.tokens.shape[0]
        pos = xp.arange(self.T)[None, :]
        tok = xp.where(pos == state.lengths[:, None], xp.arange(n, dtype=xp.int32)[:, None], state.tokens)
        lengths = state.lengths + 1
        return SequenceState(tok, lengths, lengths >= self.T, None), xp.zeros(n, xp.float32)


class ScriptedPRM:
    def __init__(self, xp, odds):
        self.xp, self.logr = xp, xp.asarray(np.log(odds / (1.0 + odds)), xp.float32)  # r = w / (1 + w)

    def prefix(self, state):
        xp = self.xp
        last = xp.take_along_axis(state.tokens, xp.maximum(state.lengths - 1, 0)[:, None], axis=1)[:, 0]
        return self.logr[state.lengths, last]

    complete = prefix


# odds w = r / (1 - r), i.e. weights exp(logit r), of the 4 particles after t = 1..8 units
ODDS = np.array([[1, 1, 1, 1]] + [[1, 1, 1, 13], [1, 3, 3, 9], [1, 1, 1, 29], [1, 1, 1, 29]] + [[1, 1, 1, 1]] * 4,
                float)
# epf_ess, tau = max(1, (N / ESS) (1 - t/T)) when ESS/N < 0.5 and t/T < 0.5, N/ESS = N sum p_i^2, T = 8:
#  t=1: p = (1,1,1,13)/16, N sum p^2 = 4 * 172/256 = 2.6875 (ESS/N = 0.372) -> tau = 2.6875 * 7/8 = 2.3515625
#  t=2: p = (1,3,3,9)/16, ESS/N = 256/400 = 0.64 >= 0.5 -> 1
#  t=3: p = (1,1,1,29)/32, N sum p^2 = 4 * 844/1024 = 3.296875 -> tau = 3.296875 * 5/8 = 2.060546875
#  t=4: same weights but t/T = 0.5 is not in the early phase -> 1; t >= 5: uniform -> 1
TAU_EPF_ESS = [1.0, 2.3515625, 1.0, 2.060546875, 1.0, 1.0, 1.0, 1.0]
# epf_linear (v_max = 2): tau = 2 - t/T under the same gates: t=1 -> 1.875, t=3 -> 1.625
TAU_EPF_LINEAR = [1.0, 1.875, 1.0, 1.625, 1.0, 1.0, 1.0, 1.0]


def test_faithful_epf_temperatures_on_scripted_weights():
    pf = ParticleFilter(Scripted(jnp, 8), ScriptedPRM(jnp, ODDS), weights="score", entropic="epf_ess")
    out = fast_jit(lambda k: particle_filter(k, pf, 4))(jax.random.key(0))
    np.testing.assert_allclose(np.asarray(out.trace.tau), TAU_EPF_ESS, rtol=1e-4)
    # faithful: no correction, weights reset to the new scores (logit r) after every resampling
    np.testing.assert_allclose(np.asarray(out.state.log_weights), np.log(ODDS[-1]), atol=1e-4)
    # the host runner shares the jitted resampling/weighting code: the same temperatures
    for rule, expected in (("epf_ess", TAU_EPF_ESS), ("epf_linear", TAU_EPF_LINEAR)):
        host = ParticleFilter(Scripted(np, 8), ScriptedPRM(np, ODDS), weights="score", entropic=rule)
        res = run_host(host, jax.random.key(0), 4)
        np.testing.assert_allclose(res.output.trace.tau, expected, rtol=1e-4)
    # epf_entropy: beta = H_n + (1 - H_n) t/T, tau = 1/beta, hand formula on the t = 1 weights
    p = ODDS[1] / ODDS[1].sum()
    h = -(p * np.log(p)).sum() / np.log(4)
    host = ParticleFilter(Scripted(np, 8), ScriptedPRM(np, ODDS), weights="score", entropic="epf_entropy")
    tau = run_host(host, jax.random.key(0), 4).output.trace.tau
    np.testing.assert_allclose(tau[1], 1.0 / (h + (1 - h) / 8), rtol=1e-4)


# score-mode weights with ESS-triggered resampling: w_t = w_{t-1} * odds(r_t) when the
# resampling is skipped, w_t = odds(r_t) after it. Logits (log odds) of the 3 particles after 1, 2, 3 units:
LOGITS = np.array([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5], [0.3, 0.3, 6.0], [0.1, 0.2, 0.4]])
ESS_POLICY = Resampling("systematic", "ess", 0.4)


def _ess_ratio(l):
    w = np.exp(l - l.max())
    return w.sum() ** 2 / (w**2).sum() / len(l)


def _lme(l):
    return np.log(np.mean(np.exp(l)))


def test_score_mode_multiplies_weights_when_resampling_is_skipped():
    """Hand-computed: after unit 1 the weights are [2, -1, 0.5] (ESS/N = 0.51 >= 0.4: no resampling), so
    after unit 2 they are [2, -1, 0.5] + [0.3, 0.3, 6] = [2.3, -0.7, 6.5] (the old rule replaced them by
    [0.3, 0.3, 6]); ESS/N = 0.344 < 0.4: resampled, so after unit 3 they are the scores [0.1, 0.2, 0.4].
    log Z = log mean exp([2.3, -0.7, 6.5]) + log mean exp([0.1, 0.2, 0.4]). With look-ahead (k = 1, no
    APF correction) the held weights after unit 1 are the successor scores [0.3, 0.3, 6] (resampled),
    after unit 2 [0.3, 0.3, 6] + look-ahead [-0.2, -0.1, -5.6] (ESS/N 0.98: kept), and the look-ahead is
    divided out again: [0.3, 0.3, 6] + [0.1, 0.2, 0.4]. The JAX filter and the host runner agree."""
    held1, held2 = LOGITS[1], LOGITS[1] + LOGITS[2]
    assert _ess_ratio(held1) >= 0.4 > _ess_ratio(held2)  # the hand computation's premises
    odds = np.exp(LOGITS)
    out = fast_jit(lambda k: particle_filter(
        k, ParticleFilter(Scripted(jnp, 3), ScriptedPRM(jnp, odds), weights="score", resampling=ESS_POLICY), 3)
    )(jax.random.key(0))
    host = run_host(ParticleFilter(Scripted(np, 3), ScriptedPRM(np, odds), weights="score", resampling=ESS_POLICY),
                    jax.random.key(0), 3).output
    for o in (out, host):
        np.testing.assert_array_equal(np.asarray(o.trace.resampled), [False, False, True])
        np.testing.assert_allclose(np.asarray(o.trace.log_evidence)[1], _lme(held2), atol=1e-5)
        np.testing.assert_allclose(np.asarray(o.state.log_weights), LOGITS[3], atol=1e-5)
        np.testing.assert_allclose(float(o.log_evidence), _lme(held2) + _lme(LOGITS[3]), atol=1e-5)
    # look-ahead: the resampling flag decides whether the held look-ahead is removed
    la = LookAhead(k=1, lam=1.0)
    a2 = LOGITS[3] - LOGITS[2]
    assert _ess_ratio(LOGITS[2]) < 0.4 <= _ess_ratio(LOGITS[2] + a2)
    out = fast_jit(lambda k: particle_filter(
        k, ParticleFilter(Scripted(jnp, 3), ScriptedPRM(jnp, odds), weights="score", resampling=ESS_POLICY,
                          lookahead=la), 3))(jax.random.key(0))
    host = run_host(ParticleFilter(Scripted(np, 3), ScriptedPRM(np, odds), weights="score", resampling=ESS_POLICY,
                                   lookahead=la), jax.random.key(0), 3).output
    for o in (out, host):
        np.testing.assert_array_equal(np.asarray(o.trace.resampled), [False, True, False])
        np.testing.assert_allclose(np.asarray(o.state.log_weights), LOGITS[2] + LOGITS[3], atol=1e-5)


# ------------------------------------------------------------------------------------------ strategy trap
TRAP, TRAP_HONEST = strategy_trap(), strategy_trap(honest=True)
N_TRAP, R_TRAP = 16, 600


@lru_cache(None)
def trap_runner(entropic):
    def run(keys, logH):
        pf = ParticleFilter(TRAP.policy(), TRAP.potential(logH=logH), weights="score",
                            entropic="epf_ess" if entropic else None)

        def one(key):
            k1, k2 = jax.random.split(key)
            out = particle_filter(k1, pf, N_TRAP, TRAP.prompt())
            i = select_index(k2, out.state.log_weights, "argmax")
            return TRAP.reward_of(out.state.particles.seq)[i], out.trace.params["unique_origins"][-1]

        return jax.vmap(one)(keys)

    return fast_jit(run)


def _paired_bootstrap(d, num=4000, seed=0):
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (num, len(d)))].mean(1)
    return np.quantile(means, [0.025, 0.975])


def test_epf_beats_pf_on_strategy_trap():
    keys = jax.random.split(jax.random.key(2024), R_TRAP)  # paired: the same seeds for both methods
    rewards = {}
    for H, task in (("misleading", TRAP), ("honest", TRAP_HONEST)):
        for entropic in (False, True):
            r, _ = trap_runner(entropic)(keys, jnp.asarray(task.logH, jnp.float32))
            rewards[H, entropic] = np.asarray(r, float)
    # over-confident early PRM: PF collapses onto the trap (reward ~ its success rate 0.1); ePF keeps other
    # strategies alive. Paired bootstrap 95% interval of the mean difference must exclude 0.
    d = rewards["misleading", True] - rewards["misleading", False]
    lo, hi = _paired_bootstrap(d)
    assert lo > 0.0, (d.mean(), lo, hi)
    assert rewards["misleading", False].mean() < 0.2 < rewards["misleading", True].mean()
    # honest PRM: ePF may not be worse than PF by more than 0.02 in mean reward (interval lower bound)
    d = rewards["honest", True] - rewards["honest", False]
    lo, _ = _paired_bootstrap(d)
    assert lo > -0.02, (d.mean(), lo)


def test_score_mode_errors_and_fallbacks():
    keys = jax.random.split(jax.random.key(1), R_TRAP)  # same shapes: no recompilation
    # probabilities outside [0, 1] (log r > 0) are a clear error (raised once per run)
    bad = np.array(TRAP.logH, np.float32)
    bad[3] = 0.5
    with pytest.raises(Exception, match=r"outside \[0, 1\]"):
        jax.block_until_ready(trap_runner(False)(keys, jnp.asarray(bad)))
    # all-zero scores in score mode: documented fallback, scores are clipped to eps, weights stay finite
    r, _ = trap_runner(False)(keys, jnp.full(TRAP.logH.shape, -jnp.inf, jnp.float32))
    assert np.all(np.isfinite(np.asarray(r)))


# ------------------------------------------------------------------------------------------ absorbing states
class Geometric:
    """Appends token 1 + row parity; stops (done) with probability 1/2 after each unit."""

    T = 6

    def init(self, key, prompt):
        return SequenceState(jnp.zeros((self.T,), jnp.int32), jnp.asarray(0, jnp.int32), jnp.asarray(False), None)

    def step(self, key, state):
        n = state.tokens.shape[0]
        pos = jnp.arange(self.T)[None, :]
        tok = jnp.where(pos == state.lengths[:, None], 1 + jnp.arange(n, dtype=jnp.int32)[:, None] % 2, state.tokens)
        stop = jax.random.bernoulli(key, 0.5, (n,))
        new = SequenceState(tok, state.lengths + 1, stop | (state.lengths + 1 >= self.T), None)
        return new, jnp.full(n, jnp.log(0.5))


class LengthPRM:
    """log psi = -0.3 * length (prefix), log phi = -length + (number of 2s) (complete)."""

    def prefix(self, state):
        return -0.3 * state.lengths.astype(jnp.float32)

    def complete(self, state):
        return -state.lengths.astype(jnp.float32) + jnp.sum(state.tokens == 2, axis=1).astype(jnp.float32)


def test_finished_particles_are_absorbing():
    n = 32
    pf = ParticleFilter(Geometric(), LengthPRM(), weights="twist", resampling=Resampling(when="never"))
    out = fast_jit(jax.vmap(lambda k: particle_filter(k, pf, n)))(jax.random.split(jax.random.key(3), 8))
    seq = out.state.particles.seq
    tokens, lengths = np.asarray(seq.tokens), np.asarray(seq.lengths)
    assert np.all(np.asarray(seq.done)) and lengths.min() == 1 and lengths.max() <= Geometric.T
    assert len(np.unique(lengths)) > 2  # particles finished at different steps
    pos = np.arange(Geometric.T)
    # no move after finishing: nothing written past the length, log-prob of exactly `length` units
    assert np.all(tokens[pos[None, None, :] >= lengths[..., None]] == 0)
    assert np.all(tokens[pos[None, None, :] < lengths[..., None]] > 0)
    np.testing.assert_allclose(np.asarray(out.state.particles.log_p), lengths * np.log(0.5), rtol=1e-6)
    # frozen weight: without resampling the twisted weight telescopes to log phi of the finished sequence
    log_phi = -lengths + (tokens == 2).sum(-1)
    np.testing.assert_allclose(np.asarray(out.state.log_weights), log_phi, atol=1e-5)
    # only unfinished particles are extended and scored: total calls = sum of lengths
    assert np.all(np.asarray(out.trace.params["policy_calls"])[:, -1] == lengths.sum(-1))
    assert np.all(np.asarray(out.trace.params["potential_calls"])[:, -1] == lengths.sum(-1))


# ------------------------------------------------------------------------------------------ bad input
class WrongTokens(Geometric):
    def step(self, key, state):
        new, lp = super().step(key, state)
        return new._replace(tokens=new.tokens[:, :-1]), lp


class WrongLogP(Geometric):
    def step(self, key, state):
        new, lp = super().step(key, state)
        return new, lp[:-1]


class WrongPotential(LengthPRM):
    def prefix(self, state):
        return jnp.zeros((state.tokens.shape[0], 2))


@pytest.mark.parametrize("policy, potential, match", [
    (WrongTokens(), LengthPRM(), r"policy.step returned tokens of shape \(5, 5\).*expected \(5, 6\)"),
    (WrongLogP(), LengthPRM(), r"policy.step returned log_p of shape \(4,\), expected \(5,\)"),
    (Geometric(), WrongPotential(), r"potential.prefix returned shape \(5, 2\), expected \(5,\)"),
])
def test_wrong_shapes_are_clear_errors(policy, potential, match):
    with pytest.raises(ValueError, match=match):
        ParticleFilter(policy, potential, weights="twist").build(5)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="weights must be one of"):
        ParticleFilter(Geometric(), LengthPRM(), weights="logit")
    with pytest.raises(ValueError, match="LookAhead.lam"):
        ParticleFilter(Geometric(), LengthPRM(), lookahead=LookAhead(lam=1.5))
    with pytest.raises(ValueError, match="temperature rule"):
        ParticleFilter(Geometric(), LengthPRM(), entropic="hot")
    with pytest.raises(ValueError, match="answer_fn"):
        ParticleFilter(Geometric(), LengthPRM(), selection="vote")
    with pytest.raises(TypeError, match="SequencePolicy protocol"):
        ParticleFilter(object(), LengthPRM())


def test_selection_rules():
    lw = jnp.log(jnp.array([0.3, 0.25, 0.25, 0.2]))
    answers = jnp.array([7, 3, 3, 5])
    assert int(select_index(None, lw, "argmax")) == 0
    assert int(answers[select_index(None, lw, "vote", answers)]) == 3  # 0.5 of the weight says 3
    draws = fast_jit(jax.vmap(lambda k: select_index(k, lw, "sample")))(jax.random.split(jax.random.key(0), 4000))
    freq = np.bincount(np.asarray(draws), minlength=4) / 4000
    assert np.all(np.abs(freq - np.exp(lw)) < 4 * np.sqrt(0.25 / 4000))


# ------------------------------------------------------------------------------------------ runner, ArviZ, counts
def test_smc_runner_lookahead_counts_and_arviz():
    n, k, T = 8, 2, TRAP.T
    pf = ParticleFilter(TRAP.policy(), TRAP.potential(), weights="score", lookahead=LookAhead(k=k), selection="vote",
                        answer_fn=lambda seq: seq.tokens[:, 0])  # the strategy as the "answer"
    smc = SMC(pf, num_particles=n, num_chains=2).run(jax.random.key(0), TRAP.prompt())
    # every unit extends all n particles once, plus k successors per particle before each of the T-1 resamplings
    calls = np.asarray(smc.trace.params["policy_calls"])
    assert np.all(calls[:, -1] == T * n + (T - 1) * k * n)
    assert np.all(np.asarray(smc.trace.params["potential_calls"]) == calls)
    sel = pf.select(smc)
    assert sel["tokens"].shape == (2, T) and np.all(np.isin(np.asarray(sel["answer"]), 2 + np.arange(4)))
    idata = smc.to_arviz()
    st = idata.smc_stats
    for name in ("ess", "entropy", "tau", "resampled", "n_unique_ancestors", "policy_calls", "potential_calls",
                 "unique_origins", "log_evidence"):
        assert name in st, name
    assert st["unique_origins"].shape == (2, T) and int(st["unique_origins"][0, 0]) == n
    assert idata.posterior["tokens"].shape == (2, n, T)


# ------------------------------------------------------------------------------------------ host runner
def test_host_runner_with_numpy_policy_is_unbiased():
    """NumPy policy and PRM (same chain as SMALL) through the host runner: Z_hat unbiased (4 se) and the
    weighted output matches the exact target up to 1/N + Monte Carlo error (as above)."""
    pf = ParticleFilter(SMALL.numpy_policy(), SMALL.numpy_potential(), weights="twist")
    n, R = 32, 150
    zs, per = [], np.zeros(len(CODES))
    order = np.argsort(CODES)
    for r in range(R):
        res = run_host(pf, jax.random.key(r), n)
        zs.append(np.exp(res.log_evidence - np.log(Z_EXACT)))
        tk = np.asarray(res.output.state.particles.seq.tokens)
        c = (tk * SMALL.vocab_size ** np.arange(SMALL.T)).sum(-1)
        np.add.at(per, order[np.searchsorted(CODES[order], c)], np.asarray(normalize(res.output.state.log_weights)))
    zs = np.array(zs)
    assert abs(zs.mean() - 1) < 4 * zs.std() / np.sqrt(R)
    tv = 0.5 * np.abs(per / R - TARGET).sum()
    # MC part: with ~n*R*ESS-ratio effective draws the TV of an empirical measure on the 46 cells is about
    # 0.5 * sum_x sqrt(p_x / (n R / 4)) (ESS ratio ~ 1/4 conservatively)
    assert tv < 1.0 / n + 3 * 0.5 * np.sqrt(TARGET / (n * R / 4)).sum(), tv
    assert res.policy_calls == n * SMALL.T and res.output.trace.params["unique_origins"][0] == n


class ShortLogP(Scripted):
    def step(self, key, state):
        new, lp = super().step(key, state)
        return new, lp[:-1]


def test_host_runner_reports_a_host_error_as_itself():
    """An exception in a host call (here the policy's shape contract) is raised by run_host as it was raised,
    not as a runtime error of the compiled run; the run stops calling the host after it."""
    calls = []

    class Counting(ScriptedPRM):
        def prefix(self, state):
            calls.append(1)
            return super().prefix(state)

    pf = ParticleFilter(ShortLogP(np, 3), Counting(np, ODDS), weights="score")
    with pytest.raises(ValueError, match=r"policy.step returned log_p of shape \(3,\), expected \(4,\)"):
        run_host(pf, jax.random.key(0), 4)
    assert calls == []  # the first policy call failed: no potential call after it


def test_host_runner_draws_every_lookahead_successor():
    """Look-ahead with k successors through the host: each unit is one policy call, and each of the T - 1
    look-aheads (one before every resampling, none after the last unit) is k separate calls, not one call
    broadcast to k copies: T + (T - 1) k calls of the host policy, and the counters agree."""
    T, k, n = 3, 2, 3
    calls = []

    class Counting(Scripted):
        def step(self, key, state):
            calls.append(1)
            return super().step(key, state)

    pf = ParticleFilter(Counting(np, T), ScriptedPRM(np, np.exp(LOGITS)), weights="score", lookahead=LookAhead(k=k))
    res = run_host(pf, jax.random.key(0), n)
    assert len(calls) == T + (T - 1) * k
    assert res.policy_calls == n * len(calls)
