"""docs/architecture.md is the contract of the package layout: its module table lists exactly the modules
of ``src/mvhand``, each key API name it gives exists, and every import follows the table's layers."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "mvhand"
DOC = REPO / "docs" / "architecture.md"
LAYERS = {"base": 0, "geometry": 1, "formats": 2, "synthetic": 3, "model": 3, "post": 3, "stages": 4}
ROW = re.compile(r"^\| `([\w.]+)` \| (\w+) \| (.*?) \| (.*?) \|$", re.M)


def table() -> dict[str, tuple[str, str]]:
    """``{module: (layer, key API cell)}`` from the module table."""
    return {m.group(1): (m.group(2), m.group(4)) for m in ROW.finditer(DOC.read_text())}


def package_modules() -> set[str]:
    """Dotted names (without ``mvhand.``) of every module of the package, ``__init__`` files excluded."""
    return {
        ".".join(p.relative_to(PKG).with_suffix("").parts)
        for p in PKG.rglob("*.py")
        if p.name != "__init__.py"
    }


def imports_of(module: str) -> set[str]:
    """Modules of mvhand (dotted, without ``mvhand.``) that ``module`` imports, at any depth of its code."""
    tree = ast.parse((PKG / (module.replace(".", "/") + ".py")).read_text())
    found = set()
    known = package_modules()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mvhand":
            base = node.module.removeprefix("mvhand").lstrip(".")
            for alias in node.names:  # `from mvhand.geometry import cameras` imports a module
                sub = f"{base}.{alias.name}".lstrip(".")
                found.add(sub if sub in known else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("mvhand.") for a in node.names if a.name.startswith("mvhand.")}
    return found - {""}


def test_table_lists_exactly_the_modules():
    listed, present = set(table()), package_modules()
    assert listed == present, (
        f"docs/architecture.md module table: missing {sorted(present - listed)}, stale {sorted(listed - present)}"
    )


def test_layers_are_known_and_match_packages():
    for module, (layer, _) in table().items():
        assert layer in LAYERS, (module, layer)
        if "." in module:
            assert layer == module.split(".")[0], (
                f"{module} lives in {module.split('.')[0]}/, table says {layer}"
            )
        else:
            assert layer in ("base", "stages"), (
                f"top-level module {module} must be base or stages, not {layer}"
            )


@pytest.mark.parametrize("module", sorted(package_modules()))
def test_imports_follow_the_layers(module):
    layer = table()[module][0]
    for target in imports_of(module):
        t_layer = table()[target][0]
        if t_layer == layer:
            continue  # within one layer (one package, or the top-level base / stages modules)
        assert LAYERS[t_layer] < LAYERS[layer], (
            f"{module} ({layer}) imports {target} ({t_layer}): only layers above it in docs/architecture.md"
        )


def test_key_api_names_exist():
    missing = []
    for module, (_, api) in table().items():
        mod = importlib.import_module(f"mvhand.{module}")
        for token in re.findall(r"`([^`]+)`", api):
            name = re.match(r"[A-Za-z_]\w*", token)
            if name and not hasattr(mod, name.group(0)):
                missing.append(f"{module}.{name.group(0)}")
    assert not missing, f"docs/architecture.md names what the modules do not have: {missing}"


def test_inference_loads_models_without_the_training_loop():
    """Predicting needs the model-file contract (model.checkpoint), not the training module."""
    assert "model.checkpoint" in imports_of("model.inference")
    assert "model.training" not in imports_of("model.inference")
