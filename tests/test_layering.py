"""The package reads bottom-up: each layer imports only the layers below it (and itself).

core -> feedback and sim -> integrations -> llm -> add-ons (rescue, genselect) -> cli. Two checks:
every ``import`` statement of every module (function-level ones included, read from the source),
and, per layer, a fresh interpreter that imports all of the layer's modules and must not have
loaded a module of a higher layer.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rollwise"
LAYERS = ["core", "feedback+sim", "integrations", "llm", "add-ons", "cli"]
PREFIXES = [  # most specific first
    ("rollwise.feedback", "feedback+sim"),
    ("rollwise.sim", "feedback+sim"),
    ("rollwise.integrations", "integrations"),
    ("rollwise.llm", "llm"),
    ("rollwise.rescue", "add-ons"),
    ("rollwise.genselect", "add-ons"),
    ("rollwise.cli", "cli"),
    ("rollwise", "core"),
]


def layer_of(module: str) -> int:
    for prefix, layer in PREFIXES:
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS.index(layer)
    raise AssertionError(f"{module} is not a rollwise module")


def modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__":
            out.append(".".join(parts))
    return out


def imported(module: str) -> list[tuple[str, int]]:
    """rollwise modules named by ``module``'s import statements, with their line numbers."""
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("rollwise")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rollwise"):
            for a in node.names:  # `from rollwise.cli import bench` imports rollwise.cli.bench
                sub = f"{node.module}.{a.name}"
                found.append((sub if importlib.util.find_spec(node.module).submodule_search_locations
                              and (PACKAGE.parent / sub.replace(".", "/")).exists() else node.module,
                              node.lineno))
    return found


def test_every_module_has_a_layer():
    assert {layer_of(m) for m in modules()} == set(range(len(LAYERS)))


@pytest.mark.parametrize("module", modules())
def test_imports_point_down(module):
    here = layer_of(module)
    up = [f"{name} (line {line}, layer {LAYERS[layer_of(name)]})" for name, line in imported(module)
          if layer_of(name) > here]
    assert not up, f"{module} (layer {LAYERS[here]}) imports from above: {up}"


PROBE = """
import importlib, json, sys
for name in {names!r}:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m == "rollwise" or m.startswith("rollwise."))))
"""


@pytest.mark.parametrize("layer", range(len(LAYERS) - 1), ids=LAYERS[:-1])
def test_importing_a_layer_loads_nothing_above_it(layer):
    names = [m for m in modules() if layer_of(m) == layer]
    out = subprocess.run([sys.executable, "-c", PROBE.format(names=names)], capture_output=True,
                         text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    above = [m for m in loaded if layer_of(m) > layer]
    assert not above, f"importing the {LAYERS[layer]} layer loaded {above}"
