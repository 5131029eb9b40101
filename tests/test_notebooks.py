"""The notebooks in notebooks/ are tutorials that read on the web without running: each one is committed
with its outputs, including at least one figure, and runs top to bottom from a clean kernel with inline
figures.

Refresh the committed outputs after changing a notebook (from the repository root):
``python tests/test_notebooks.py [NAME ...]``.
"""
import importlib.util
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# inline figures (image/png outputs), whatever backend the test run itself uses (MPLBACKEND=Agg in CI)
INLINE = "module://matplotlib_inline.backend_inline"


def execute(nb, cwd):
    """Run ``nb`` in place from a clean kernel (the notebook's own kernelspec) with inline figures."""
    env = {**os.environ, "MPLBACKEND": INLINE}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    NotebookClient(nb, timeout=900, kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
                   record_timing=False, resources={"metadata": {"path": str(cwd)}}).execute(env=env)
    return nb


def missing_requirements(nb):
    """The modules a notebook declares in ``metadata.smcppl.requires`` (e.g. the ``lm`` extra's ``torch`` and
    ``transformers``) that this environment cannot import."""
    needs = nb.metadata.get("smcppl", {}).get("requires", [])
    return [m for m in needs if importlib.util.find_spec(m) is None]


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _figures(nb):
    return [o for o in _outputs(nb) if o.output_type in ("display_data", "execute_result")
            and "image/png" in o.get("data", {})]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{path.name}: run it and save its outputs"
    assert not [o for o in _outputs(nb) if o.output_type == "error"], f"{path.name}: committed with an error"
    assert _figures(nb), f"{path.name}: no figure (image/png) among the committed outputs"
    text = "\n".join(c.source for c in code)
    assert 'matplotlib.use("Agg")' not in text, f"{path.name}: figures must be inline"
    assert "__file__" not in text, f"{path.name}: load shipped data through smcppl.models.zoo"


def test_shipped_challenger_data():
    """The notebooks' data helper: the 23 pre-accident flights (Dalal, Fowlkes & Hoadley 1989), 7 of them
    with O-ring distress, launched between 53 and 81 F; challenger_data() are the same flights."""
    import numpy as np

    from smcppl.models import zoo

    raw = zoo.load_challenger()
    t, damage = raw["temperature_f"], raw["damage"]
    assert t.shape == damage.shape == (23,) and damage.sum() == 7 and (t.min(), t.max()) == (53.0, 81.0)
    data = zoo.challenger_data()
    np.testing.assert_array_equal(data["y"], damage)
    np.testing.assert_allclose(data["x"][:, 0] * t.std() + t.mean(), t)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    missing = missing_requirements(nb)
    if missing:
        pytest.skip(f"{path.name} needs {missing} (an optional extra)")
    nb = execute(nb, tmp_path)
    errors = [o for o in _outputs(nb) if o.output_type == "error"]
    assert not errors, errors[0].get("traceback") if errors else None
    assert _figures(nb), f"{path.name}: executing it drew no figure"


if __name__ == "__main__":  # refresh the committed outputs
    import tempfile
    import time

    names = set(sys.argv[1:])
    for path in NOTEBOOKS:
        if names and path.stem not in names and path.name not in names:
            continue
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            nb = execute(nbformat.read(path, as_version=4), tmp)
        nbformat.write(nb, path)
        print(f"{path.name}: {time.perf_counter() - t0:.0f} s, {len(_figures(nb))} figure(s)")
