"""ArviZ export, netCDF round trip, loo, summary and plots (run under ArviZ 0.x and 1.x).

Two small runs are shared by all tests: tempered SMC on a NumPyro model with plates (hierarchical
normal: ``alpha`` over plate ``group``, ``y`` over plate ``obs``) and a bootstrap particle filter
(fixed number of stages, no temperature, no MCMC moves).
"""
import io
import warnings

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure

from smcppl import SMC, Plan, Resampling, TemperedSMC
from smcppl.diagnostics import export, plots
from smcppl.diagnostics import load_netcdf, output_to_datatree, print_summary, save_netcdf, to_arviz
from smcppl.diagnostics import to_datatree
from smcppl.inference.state_space.bootstrap import bootstrap_feynman_kac
from smcppl.models import zoo
from smcppl.models.state_space import LinearGaussian, linear_gaussian, simulate

ARVIZ_1 = export.arviz_major_version() >= 1
GROUPS = {"posterior", "sample_stats", "log_likelihood", "observed_data", "smc_stats"}
N, C = 64, 2
HIER = zoo._hierarchical_data(seed=0, num_groups=4, per_group=5)


@pytest.fixture(scope="module")
def tempered():
    smc = SMC(TemperedSMC(zoo.hierarchical_normal, move="rwm", num_mcmc_steps=2), num_particles=N, num_chains=C,
              record_ancestors=True)
    return smc.run(jax.random.key(0), **HIER)


@pytest.fixture(scope="module")
def tree(tempered):
    return to_datatree(tempered)


@pytest.fixture(scope="module")
def exported(tempered):
    return to_arviz(tempered)


LG = LinearGaussian(np.eye(1) * 0.9, np.eye(1) * 0.5, np.eye(1), np.eye(1) * 0.3, np.eye(1))
_, LG_Y = simulate(LG, 8, seed=1)


class _Bootstrap:
    """The bootstrap filter as an algorithm of the SMC runner."""

    def build(self, num_particles):
        fk = bootstrap_feynman_kac(linear_gaussian(LG), LG_Y, num_particles)
        return Plan(fk=fk, num_stages=len(LG_Y) - 1, max_stages=len(LG_Y) - 1, postprocess=lambda x: {"x": x},
                    resampling=Resampling("systematic", "ess", 0.5), name="BootstrapFilter",
                    metadata={"dims": {"x": ["state"]}, "coords": {"state": ["position"]}},
                    attrs={"flag": True, "nothing": None, "nested": {"a": 1}})


@pytest.fixture(scope="module")
def boot():
    return SMC(_Bootstrap(), num_particles=32, num_chains=3, record_ancestors=True).run(jax.random.key(1))


def _groups(obj):
    return set(obj.children) if isinstance(obj, xr.DataTree) else set(obj.groups())


def _group(obj, name):
    return obj[name].to_dataset() if isinstance(obj, xr.DataTree) else getattr(obj, name)


def _valid_events(smc):
    res, n = np.asarray(smc.trace.resampled), np.asarray(smc.n_stages)
    return sum(int(res[c, 1: n[c]].sum()) for c in range(res.shape[0]))


def _check_attrs(attrs):
    for k, v in attrs.items():
        assert type(v) in (str, int, float), (k, v, type(v))


# ------------------------------------------------------------------------------------------ export
def test_groups_variables_dims_coords(tempered, tree):
    assert set(tree.children) == GROUPS
    post = tree["posterior"].to_dataset()
    assert set(post.data_vars) == {"mu", "sigma_group", "sigma", "alpha"}
    assert post["alpha"].dims == ("chain", "draw", "group")
    assert post["mu"].dims == ("chain", "draw")
    np.testing.assert_array_equal(post["group"].values, np.arange(4))
    assert post.sizes["chain"] == C and post.sizes["draw"] == N
    samples = tempered.get_samples(group_by_chain=True)
    for k in post.data_vars:
        np.testing.assert_array_equal(post[k].values, np.asarray(samples[k]))

    stats = tree["sample_stats"].to_dataset()
    assert {"lp", "acceptance_rate", "diverging"} <= set(stats.data_vars)
    assert "log_weight" not in stats  # equally weighted draws
    assert all(stats[v].dims == ("chain", "draw") for v in stats.data_vars)

    ll = tree["log_likelihood"].to_dataset()
    assert ll["y"].dims == ("chain", "draw", "obs") and ll.sizes["obs"] == HIER["y"].size
    # pointwise log-likelihood sums to the sampler's own log-likelihood of the same draws
    np.testing.assert_allclose(ll["y"].values.sum(-1), np.asarray(tempered.final_particles["loglik"]), rtol=1e-4,
                               atol=1e-3)
    obs = tree["observed_data"].to_dataset()
    assert obs["y"].dims == ("obs",)
    np.testing.assert_allclose(obs["y"].values, HIER["y"])


def test_smc_stats(tempered, tree):
    ds = tree["smc_stats"].to_dataset()
    n = np.asarray(tempered.n_stages)
    assert ds.sizes["stage"] == n.max() and ds.sizes["chain"] == C and ds.sizes["particle"] == N
    for v in ("beta", "ess", "entropy", "tau", "resampled", "log_evidence_increment", "acceptance_rate",
              "step_size", "n_unique_ancestors"):
        assert ds[v].dims == ("chain", "stage"), v
    assert ds["ancestors"].dims == ("chain", "stage", "particle")
    assert ds["log_evidence"].dims == ("chain",) and ds["n_stages"].dims == ("chain",)
    np.testing.assert_array_equal(ds["n_stages"].values, n)
    lz = np.asarray(tempered.log_evidence, float)
    np.testing.assert_allclose(ds["log_evidence"].values, lz, rtol=1e-6)
    np.testing.assert_allclose(np.nansum(ds["log_evidence_increment"].values, axis=1), lz, rtol=1e-5)
    beta = ds["beta"].values
    for c in range(C):
        assert beta[c, n[c] - 1] == 1.0 and np.all(np.diff(beta[c, : n[c]]) > 0)
        assert np.all(np.isnan(beta[c, n[c]:]))  # padding of the shorter chain stays NaN
    valid = np.arange(n.max()) < n[:, None]
    np.testing.assert_array_equal(ds["resampled"].values, np.asarray(tempered.trace.resampled)[:, : n.max()] & valid)
    assert ds["resampled"].values.sum() > 0  # the run really resampled (the plots below count the events)
    np.testing.assert_allclose(np.exp(ds["final_log_weight"].values).sum(1), 1.0, rtol=1e-5)
    _check_attrs(tree.attrs)
    for g in tree.children.values():
        _check_attrs(g.attrs)
    assert tree.attrs["sampler"] == "TemperedSMC" and tree.attrs["num_particles"] == N
    assert "compile_seconds" in tree.attrs and tree.attrs["resampling_when"] == "ess"


def test_the_public_result_is_what_the_diagnostics_read(tempered, tree):
    """SMC.run stores one SMCResult; the export, the summary and the smc_stats read it alone (the same export
    from the result as from the SMC object), and the export names log Z ``log_evidence`` with PyMC's
    ``log_marginal_likelihood`` as an alias of the same values."""
    from smcppl.core.result import SMCResult
    from smcppl.diagnostics import get_smc_stats

    res = tempered.result
    assert isinstance(res, SMCResult) and res.name == "TemperedSMC"
    np.testing.assert_array_equal(np.asarray(res.log_evidence), np.asarray(tempered.log_evidence))
    assert res.health is tempered.health and res.attrs["num_chains"] == C
    again = to_datatree(res)
    for g in ("posterior", "smc_stats"):
        xr.testing.assert_equal(again[g].to_dataset(), tree[g].to_dataset())  # attrs differ in created_at only
    ds = get_smc_stats(res)
    np.testing.assert_array_equal(ds["log_marginal_likelihood"].values, ds["log_evidence"].values)
    table = print_summary(res, file=io.StringIO())
    assert table.attrs["smc"]["num_chains"] == C


def test_to_arviz_api(exported):
    import arviz as az

    if ARVIZ_1:
        assert isinstance(exported, xr.DataTree)
    else:
        assert isinstance(exported, az.InferenceData)
    assert _groups(exported) >= GROUPS


def test_netcdf_round_trip(tree, exported, tmp_path):
    for obj, name in ((exported, "arviz.nc"), (tree, "tree.nc")):
        path = save_netcdf(obj, tmp_path / name)
        back = load_netcdf(path)
        assert _groups(back) >= GROUPS
        for g in GROUPS:
            xr.testing.assert_identical(_group(back, g), _group(obj, g))
        assert dict(back.attrs) == dict(obj.attrs)
    # the plain xarray route (what the command line writes) reads back equal as well
    tree.to_netcdf(tmp_path / "plain.nc")
    with xr.open_datatree(tmp_path / "plain.nc") as back:
        assert back.identical(tree)


def test_loo_runs_on_export(exported):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ARVIZ_1:
            from arviz_stats import loo
        else:
            from arviz import loo
        res = loo(exported)
    assert np.isfinite(float(res.elpd)) if ARVIZ_1 else np.isfinite(float(res["elpd_loo"]))


def test_weighted_export(tempered):
    tree = to_datatree(tempered, weighted=True)
    lw = tree["sample_stats"]["log_weight"].values
    assert lw.shape == (C, N)
    np.testing.assert_allclose(np.exp(lw).sum(1), 1.0, rtol=1e-5)


def test_bootstrap_export_and_raw_output(boot):
    tree = to_datatree(boot)
    assert set(tree.children) == {"posterior", "sample_stats", "smc_stats"}
    assert list(tree["sample_stats"].to_dataset().data_vars) == ["lineage"]  # clusters of the draws (MCSE)
    post = tree["posterior"].to_dataset()
    assert post["x"].dims == ("chain", "draw", "state") and list(post["state"].values) == ["position"]
    ds = tree["smc_stats"].to_dataset()
    assert "beta" not in ds and ds["param"].dims == ("chain", "stage")  # the time index t
    assert ds.sizes["stage"] == len(LG_Y)
    np.testing.assert_allclose(ds["log_evidence_increment"].values.sum(1), np.asarray(boot.log_evidence),
                               rtol=1e-5)
    assert tree.attrs["flag"] == 1 and tree.attrs["nothing"] == "None" and tree.attrs["nested_a"] == 1
    # raw engine output of one chain (no chain axis): weighted particles with their log-weights
    one = jax.tree_util.tree_map(lambda x: x[0], boot.output)
    raw = output_to_datatree(one)
    assert raw["posterior"]["x"].dims == ("chain", "draw", "x_dim_0") and raw["posterior"].sizes["chain"] == 1
    np.testing.assert_allclose(np.exp(raw["sample_stats"]["log_weight"].values).sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(raw["smc_stats"]["log_evidence"].values, np.asarray(boot.log_evidence)[:1])


def test_print_summary(tempered, capsys):
    table = tempered.print_summary(prob=0.8)
    out = capsys.readouterr().out
    assert {"mu", "sigma", "alpha[0]"} <= set(table.index)
    lz = np.asarray(tempered.log_evidence, float)
    assert f"{lz.mean():.3f} ± {lz.std(ddof=1):.3f}" in out
    assert "resampling events" in out and "final ESS/N" in out and "acceptance rate" in out
    info = table.attrs["smc"]
    np.testing.assert_array_equal(info["resampling_events"].sum(), _valid_events(tempered))
    # the same from the exported object
    table2 = print_summary(to_arviz(tempered), prob=0.8)
    assert list(table2.index) == list(table.index)


# ------------------------------------------------------------------------------------------ plots
@pytest.fixture(params=["smc", "export"])
def source(request, tempered, exported):
    return tempered if request.param == "smc" else exported


def _save(fig, tmp_path, name):
    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    assert path.stat().st_size > 1000
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _markers(ax):
    cols = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(cols) == 1
    return len(cols[0].get_offsets())


def _chain_legend(ax, num_chains=C):
    legend = ax.get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert [f"chain {c}" for c in range(num_chains)] == [lab for lab in labels if lab.startswith("chain ")]


def test_plot_tempering_schedule(source, tempered, tmp_path):
    fig = plots.plot_tempering_schedule(source)
    assert fig.get_layout_engine() is not None  # constrained layout: titles and ticks do not overlap
    ax = fig.axes[0]
    n = np.asarray(tempered.n_stages)
    beta = np.asarray(tempered.trace.params["beta"])
    stairs = [line for line in ax.lines if line.get_label().startswith("chain ")]
    assert len(stairs) == C
    for c, line in enumerate(stairs):
        x, y = line.get_xdata(), line.get_ydata()
        assert len(x) == 2 * n[c] and y[0] == 0.0  # from the prior, beta = 0, at stage 0
        np.testing.assert_allclose(y[1::2], beta[c, : n[c]], rtol=1e-6)  # beta_t reached at stage t
        assert y[-1] == pytest.approx(1.0)
    _chain_legend(ax)
    _save(fig, tmp_path, "schedule")


def test_plot_ess_marks_each_resampling_event(source, tempered, tmp_path):
    fig = plots.plot_ess(source)
    ax_ess, ax_ent = fig.axes
    events = _valid_events(tempered)
    assert events > 0
    assert _markers(ax_ess) == events and _markers(ax_ent) == events
    assert len(ax_ess.lines) == C + 1  # one per chain + the ESS threshold
    assert len(ax_ent.lines) == C
    _chain_legend(ax_ess)
    _save(fig, tmp_path, "ess")


def test_plot_acceptance(source, tmp_path):
    fig = plots.plot_acceptance(source)
    assert [a.get_ylabel() for a in fig.axes] == ["acceptance rate", "step size", "start correlation"]
    assert all(len(a.lines) == C for a in fig.axes)
    _chain_legend(fig.axes[0])
    _save(fig, tmp_path, "acceptance")


def test_plot_genealogy(source, tempered, tmp_path):
    n = int(np.asarray(tempered.n_stages)[1])
    fig = plots.plot_genealogy(source, chain=1, max_lines=10)
    ax = fig.axes[0]
    assert len(ax.lines) == 10
    (links,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(links.get_segments()) == N * (n - 1)
    assert all(len(line.get_xdata()) == n for line in ax.lines)
    _save(fig, tmp_path, "genealogy")
    assert len(plots.plot_genealogy(source, max_lines=10_000).axes[0].lines) == N
    plt.close("all")


def test_lineages():
    anc = np.array([[0, 1, 2], [0, 0, 2], [1, 2, 2]])  # stage 0 = identity
    paths = plots.lineages(anc)
    np.testing.assert_array_equal(paths, [[0, 2, 2], [1, 2, 2], [0, 1, 2]])


def test_plot_log_evidence(source, tempered, tmp_path):
    fig = plots.plot_log_evidence(source, reference=-40.0)
    ax_run, ax_lz = fig.axes
    assert len(ax_run.lines) == C + 1  # one per chain + the reference
    lz = np.asarray(tempered.log_evidence, float)
    # one marker per chain, in the chain's colour, then the legend proxy, the mean and the reference
    np.testing.assert_allclose([line.get_ydata()[0] for line in ax_lz.lines[:C]], lz, rtol=1e-6)
    assert len(ax_lz.lines) == C + 3
    assert ax_lz.lines[-1].get_ydata()[0] == -40.0 and ax_run.lines[-1].get_ydata()[0] == -40.0
    assert f"sd {lz.std(ddof=1):.3f}" in ax_lz.get_title()  # the sample sd, as in print_summary
    _chain_legend(ax_run)
    _save(fig, tmp_path, "log_evidence")


def test_plot_weights(source, tmp_path):
    fig = plots.plot_weights(source)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * C  # per chain: a translucent filled histogram and its outline
    assert len(ax.lines) == 1
    _chain_legend(ax)
    _save(fig, tmp_path, "weights")


@pytest.mark.parametrize("kind", ["rank", "dist"])
def test_plot_posterior_with_arviz(exported, kind, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = plots.plot_posterior(exported, var_names=["mu", "alpha"], kind=kind)
    assert fig.get_layout_engine() is not None
    # mu and every component of alpha (4 groups) get their own panel (rank: density + ranks)
    assert len([a for a in fig.axes if a.has_data()]) == (2 if kind == "rank" else 1) * (1 + HIER["num_groups"])
    if kind == "rank":  # a chain legend
        texts = [t.get_text() for lg in [*fig.legends, *(a.get_legend() for a in fig.axes)] if lg is not None
                 for t in lg.get_texts()]
        assert {str(c) for c in range(C)} <= set(texts)
    _save(fig, tmp_path, f"posterior_{kind}")


def test_plot_posterior_refuses_a_trace(exported):
    with pytest.raises(ValueError, match="no time order"):
        plots.plot_posterior(exported, kind="trace")


def test_missing_diagnostics_give_clear_errors(tree, boot):
    no_anc = tree.copy()
    no_anc["smc_stats"] = xr.DataTree(tree["smc_stats"].to_dataset().drop_vars("ancestors"))
    with pytest.raises(plots.DiagnosticUnavailable, match=r"record_ancestors=True"):
        plots.plot_genealogy(no_anc)
    with pytest.raises(plots.DiagnosticUnavailable, match="beta"):
        plots.plot_tempering_schedule(boot)
    with pytest.raises(plots.DiagnosticUnavailable, match="acceptance_rate"):
        plots.plot_acceptance(boot)
    with pytest.raises(ValueError, match="smc_stats"):
        plots.plot_ess(xr.DataTree.from_dict({"/posterior": tree["posterior"].to_dataset()}))
    with pytest.raises(RuntimeError, match="run"):
        to_datatree(SMC(_Bootstrap(), num_particles=8))


def test_save_diagnostic_plots(boot, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = plots.save_diagnostic_plots(boot, tmp_path / "plots", prefix="pf_")
    names = sorted(p.split("/")[-1] for p in written)
    assert names == sorted(f"pf_{k}.png" for k in ("ess", "genealogy", "log_evidence", "weights", "posterior_rank"))
    for p in written:
        with open(p, "rb") as f:
            assert f.read(4) == b"\x89PNG"
    # the events of a fixed-length run are marked too
    fig = plots.plot_ess(boot)
    assert _markers(fig.axes[0]) == _valid_events(boot)
    plt.close(fig)
