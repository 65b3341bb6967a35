"""Conventions of the test suite itself: shared data and writers come from tests/fixtures.py only."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module a Python source imports (also inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imported_modules_sees_nested_imports():
    src = "import a.b\nfrom c import d\ndef f():\n    from test_x import y\n"
    assert imported_modules(src) == {"a", "c", "test_x"}


def test_no_test_module_imports_another():
    offenders = {
        str(path.relative_to(TESTS)): sorted(
            m for m in imported_modules(path.read_text()) if m.startswith("test_")
        )
        for path in TESTS.rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"move the shared helpers into tests/fixtures.py: {offenders}"
