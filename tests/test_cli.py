"""Command line end to end in a temporary folder, its help text and its error messages."""
import argparse
import json

import pytest
import xarray as xr

from smcppl.cli import build_parser, main
from smcppl.models.zoo import ZOO

FAST = ["--particles", "200", "--chains", "2", "--move", "rwm", "--mcmc-steps", "2"]

USER_MODEL = '''
import numpyro, numpyro.distributions as dist

def model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("obs", len(y)):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
'''


def test_run_user_model_writes_netcdf_and_plots(tmp_path, capsys):
    (tmp_path / "m.py").write_text(USER_MODEL)
    (tmp_path / "d.json").write_text(json.dumps({"y": [0.3, -0.1, 0.8, 0.5]}))
    out, plots = tmp_path / "r.nc", tmp_path / "plots"
    rc = main(["run", f"{tmp_path}/m.py:model", "--data", str(tmp_path / "d.json"), "--out", str(out),
               "--plots", str(plots), *FAST])
    assert rc == 0
    text = capsys.readouterr().out
    assert "log Z" in text and "mu" in text
    tree = xr.open_datatree(out)
    assert {"posterior", "smc_stats", "sample_stats"} <= set(tree.children)
    mu = tree["posterior"]["mu"].values
    assert mu.shape == (2, 200)
    # exact posterior mean of mu: sum(y) / (n + 1) = 1.5 / 5 = 0.3 (posterior sd 0.45; 400 draws)
    assert abs(mu.mean() - 0.3) < 0.15
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert any("ess" in p for p in pngs) and any("tempering" in p for p in pngs)
    import matplotlib.image as mpimg
    assert mpimg.imread(plots / pngs[0]).ndim == 3


def test_run_zoo_model_with_csv(tmp_path):
    (tmp_path / "k.csv").write_text("k\n7\n")
    rc = main(["run", "beta_binomial", "--data", str(tmp_path / "k.csv"), "--out", str(tmp_path / "b.nc"), *FAST])
    assert rc == 0 and (tmp_path / "b.nc").exists()


def test_run_without_out_writes_default_results_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "beta_binomial", *FAST]) == 0
    out = capsys.readouterr().out
    assert "wrote beta_binomial_results.nc" in out
    tree = xr.open_datatree(tmp_path / "beta_binomial_results.nc")
    p = tree["posterior"]["p"].values
    assert p.shape == (2, 200)
    # exact posterior Beta(2 + 7, 3 + 13): mean 9/25 = 0.36, sd 0.094; 400 draws (fewer distinct ones
    # after resampling): 0.06 is several Monte Carlo standard errors
    assert abs(p.mean() - 0.36) < 0.06


def test_help_lists_zoo_models_and_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name, entry in ZOO.items():
        assert name in text and entry.description in text
    assert "_results.nc" in text  # the default results file is documented
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert all(name in top for name in ZOO)
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"smcppl {command}: option {action.dest!r} has no help text"


@pytest.mark.parametrize("args, message", [
    (["run", "no_such_model"], "zoo name"),
    (["run", "missing.py:model"], "does not exist"),
    (["run", "{tmp}/m.py:nope"], "has no function 'nope'"),
    (["run", "{tmp}/m.py:model", "--data", "{tmp}/missing.json"], "does not exist"),
    (["run", "{tmp}/m.py:model", "--data", "{tmp}/d.txt"], "unsupported extension"),
    (["run", "{tmp}/m.py:model", "--data", "{tmp}/bad.json"], "unexpected keyword argument 'z'"),
])
def test_bad_inputs_exit_nonzero_with_clear_message(tmp_path, capsys, args, message):
    (tmp_path / "m.py").write_text(USER_MODEL)
    (tmp_path / "d.txt").write_text("1 2 3")
    (tmp_path / "bad.json").write_text(json.dumps({"z": [1.0]}))
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in args] + FAST)
    assert rc == 2
    assert message in capsys.readouterr().err
