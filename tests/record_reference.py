"""Record the reference values of tests/test_reference_values.py (run from the repository root).

    python tests/record_reference.py > tests/reference_values_<jax version>.json
    python tests/record_reference.py --add-to tests/reference_values.json    # another machine kind's values

One small case per sampler family, a fixed key each; the test asserts that the refactored code gives
the same numbers bit for bit (on the JAX version the values were recorded with)."""
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_platform_name", "cpu")


def cases():
    from smcppl import SMC, AnnealedLangevin, ParticleFilter, TemperedSMC
    from smcppl import blackjax as bjx
    from smcppl.models import zoo
    from smcppl.models.sequence_tasks import lagged_verifier
    from smcppl.models.state_space import linear_gaussian, simulate
    from smcppl.inference.state_space.bootstrap import bootstrap_filter
    from smcppl.inference.sequence.host import run_host
    from smcppl.inference.correctors.corrector import annealed
    from smcppl.models import diffusion_targets as dt
    from smcppl.models.sde import VPSDE
    import blackjax
    from blackjax.smc import resampling as bres
    from blackjax.smc import extend_params

    out = {}
    DATA = zoo.conjugate_gaussian_data(dim=3, num_obs=5)
    # the standard move (every particle makes 5 HMC transitions), the default when these values were recorded;
    # the waste-free default of later is checked against exact answers (tests/test_tempered.py)
    smc = SMC(TemperedSMC(zoo.conjugate_gaussian, waste_free=False), 128, 2).run(jax.random.key(1), **DATA)
    out["tempered"] = [float(np.asarray(smc.log_evidence).sum()),
                       float(sum(np.asarray(v, np.float64).sum() for v in smc.get_samples().values()))]

    smc = SMC(AnnealedLangevin(zoo.conjugate_gaussian, num_temperatures=10), 64, 1).run(jax.random.key(2), **DATA)
    out["annealed_langevin"] = [float(np.asarray(smc.log_evidence).sum()),
                                float(sum(np.asarray(v, np.float64).sum() for v in smc.get_samples().values()))]

    # BlackJAX-style API: three fixed-schedule steps on a 2-d Gaussian
    def logprior(x):
        return -0.5 * jnp.sum(x ** 2)

    def loglik(x):
        return -0.5 * jnp.sum((x - 1.0) ** 2)

    kernel = bjx.tempered_smc(logprior, loglik, blackjax.hmc.build_kernel(), blackjax.hmc.init,
                              extend_params({"step_size": 0.3, "inverse_mass_matrix": jnp.ones(2),
                                                 "num_integration_steps": 3}),
                              bres.systematic, 2)
    state = kernel.init(jax.random.normal(jax.random.key(3), (50, 2)))
    step = jax.jit(kernel.step)
    lz = 0.0
    for i, lam in enumerate([0.3, 0.7, 1.0]):
        state, info = step(jax.random.key(10 + i), state, lam)
        lz += float(info.log_likelihood_increment)
    out["blackjax_api"] = [lz, float(np.asarray(state.particles).sum())]

    task = lagged_verifier(num_units=4)
    smc = SMC(ParticleFilter(task.policy(), task.potential(), weights="score", entropic="epf_ess"), 16, 2).run(
        jax.random.key(4), task.prompt())
    out["sequence"] = [float(np.asarray(smc.log_evidence).sum()),
                       float(np.asarray(smc.get_samples()["score"], np.float64).sum())]

    res = run_host(ParticleFilter(task.numpy_policy(), task.numpy_potential(), weights="score", entropic="epf_ess"),
                   jax.random.key(5), 16, task.prompt())
    out["host"] = [float(res.log_evidence), float(np.asarray(res.output.state.particles.score, np.float64).sum())]

    sde = VPSDE()
    alg = annealed(lambda x, t, m: m.score(x, t, sde), 2.0, sde, 20, event_shape=(1,))
    smc = SMC(alg, 64, 1).run(jax.random.key(8), dt.two_mode_1d())
    out["corrector"] = [float(np.asarray(smc.log_evidence).sum()), float(np.asarray(smc.get_samples()["x"]).sum())]

    from smcppl.models.state_space import LinearGaussian
    lg = LinearGaussian(np.eye(1) * 0.9, np.eye(1) * 0.5, np.eye(1), np.eye(1), np.eye(1))
    ssm = linear_gaussian(lg)
    _, ys = simulate(lg, 20, seed=6)
    o = jax.jit(lambda k: bootstrap_filter(k, ssm, ys, 64))(jax.random.key(7))
    out["bootstrap"] = [float(o.log_evidence), float(np.asarray(o.state.particles).sum())]

    from smcppl import SMC2, StateSpaceFilter
    from smcppl.models.state_space import lg_model
    y = jnp.asarray(ys[:, 0], jnp.float32)
    smc = SMC(StateSpaceFilter(lg_model, theta={"a": 0.9}), 64, 1).run(jax.random.key(9), y)
    out["state_space_filter"] = [float(np.asarray(smc.log_evidence).sum()),
                                 float(np.asarray(smc.get_samples()["x"], np.float64).sum())]
    smc = SMC(SMC2(lg_model, 16, num_mcmc_steps=1), 32, 1).run(jax.random.key(10), y)
    out["smc2"] = [float(np.asarray(smc.log_evidence).sum()),
                   float(np.asarray(smc.get_samples()["a"], np.float64).sum())]
    return out


def add_to(path: str) -> None:
    """Append this machine's values to each family's list in ``path`` where they are not there yet (the
    file holds ``{jax version: {family: [[log Z, sum of draws], ...]}}``, one pair per machine kind)."""
    with open(path) as f:
        recorded = json.load(f)
    here = recorded.setdefault(jax.__version__, {})
    for family, values in cases().items():
        pairs = here.setdefault(family, [])
        if values not in pairs:
            pairs.append(values)
    with open(path, "w") as f:
        f.write(json.dumps(recorded, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--add-to"]:
        add_to(sys.argv[2])
    else:
        json.dump({"jax": jax.__version__, "values": cases()}, sys.stdout, indent=1)
        print()
