"""The import arrows of ARCHITECTURE.md hold: core imports nothing above it, kernels only core, models no
sampler, diagnostics no sampler or front end. Walks every module's imports (ast, no execution)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "smcppl"

# part -> smcppl parts it may import (besides itself)
ALLOWED = {
    "core": set(),
    "kernels": {"core"},
    "models": {"core"},
    "diagnostics": {"core"},
}


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_no_import_crosses_a_forbidden_arrow():
    bad = []
    for part, allowed in ALLOWED.items():
        for path in sorted((PACKAGE / part).rglob("*.py")):
            for name in _imports(path):
                if name == "smcppl" or (name.startswith("smcppl.") and name.split(".")[1] not in allowed | {part}):
                    bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not bad, "forbidden imports (see ARCHITECTURE.md):\n" + "\n".join(bad)


def test_the_walk_sees_imports():
    """The check can fail: it finds the core import of a kernel module."""
    assert "smcppl.core.weights" in set(_imports(PACKAGE / "kernels" / "moves.py"))
