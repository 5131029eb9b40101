"""The import arrows of ARCHITECTURE.md hold: core imports nothing above it, kernels only core, models no
sampler, diagnostics no sampler or front end, a sampler family no other family and no front end.
Walks every module's imports (ast, no execution)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "smcppl"

# part -> smcppl parts it may import (besides itself)
ALLOWED = {
    "core": set(),
    "kernels": {"core"},
    "models": {"core"},
    "diagnostics": {"core"},
    "inference/tempered": {"core", "kernels", "models"},
    "inference/sequence": {"core", "models"},
    "inference/correctors": {"core", "kernels", "models"},
    "inference/state_space": {"core", "kernels", "models"},
    "validation": {"core", "kernels", "models", "inference", "diagnostics"},
}


def _part_of(name):
    """``smcppl.inference.sequence.filter`` -> ``inference/sequence``; ``smcppl.core.engine`` -> ``core``."""
    bits = name.split(".")[1:]
    return "/".join(bits[:2]) if bits and bits[0] == "inference" and len(bits) > 1 else (bits[0] if bits else "")


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
                if not (name == "smcppl" or name.startswith("smcppl.")):
                    continue
                target = _part_of(name)
                ok = target in allowed | {part} or target.split("/")[0] in allowed
                if name == "smcppl" or not ok:
                    bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not bad, "forbidden imports (see ARCHITECTURE.md):\n" + "\n".join(bad)


def test_the_walk_sees_imports():
    """The check can fail: it finds the core import of a kernel module."""
    assert "smcppl.core.weights" in set(_imports(PACKAGE / "kernels" / "moves.py"))


def test_the_families_are_checked():
    """Every sampler family under inference/ has its arrows declared (a new family must be added)."""
    families = {f"inference/{p.name}" for p in (PACKAGE / "inference").iterdir()
                if p.is_dir() and p.name != "__pycache__"}
    assert families <= set(ALLOWED), families - set(ALLOWED)
