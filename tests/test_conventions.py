"""Conventions of the code base: tests share data and writers through tests/fixtures.py only; every stage
script and tool has the one entry point."""

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


def test_every_stage_script_and_tool_has_the_one_entry_point():
    """Stage scripts and tools start the same way: ``sys.exit(run(main, "<name>"))`` (logging, SIGTERM as a
    clean exit, user errors as one line; mvhand.cli.run)."""
    root = TESTS.parent
    scripts = sorted([*root.glob("workflow/scripts/*.py"), *root.glob("tools/*.py")])
    assert scripts
    for path in scripts:
        text = path.read_text()
        assert f'sys.exit(run(main, "{path.stem}"))' in text, f"{path.relative_to(root)}: end with that line"
        assert "setup_logging()" not in text, f"{path.relative_to(root)}: mvhand.cli.run sets up logging"
