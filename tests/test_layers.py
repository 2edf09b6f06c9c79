"""The import graph is layered and acyclic: core <- data, hil, analysis, config <- drivers <- calibration <- lab
<- studies, monitor <- cli. Imports are read with ``ast``, so nothing is executed.

The package facade (``xyoptics/__init__.py``) sits just above core: it imports core eagerly, and names from
higher layers only lazily, by string, when first asked for (PEP 562), so any layer may import ``__version__``."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("xyoptics", "drivers", "calibration")

# Rank of each layer; a module may import its own layer or lower ranks, never a higher rank, and never a
# different layer of the same rank (data, hil, analysis and config know nothing of each other).
LAYERS = {
    "xyoptics.core": 0,
    "xyoptics": 0.5,
    "xyoptics.data": 1, "xyoptics.hil": 1, "xyoptics.analysis": 1, "xyoptics.config": 1,
    "drivers": 2,
    "calibration": 3,
    "xyoptics.lab": 4,
    "xyoptics.studies": 5, "xyoptics.monitor": 5,
    "xyoptics.cli": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The longest key of LAYERS that is ``module`` or one of its parents."""
    for key in sorted(LAYERS, key=len, reverse=True):
        if module == key or module.startswith(key + "."):
            return key
    raise KeyError(f"{module} belongs to no layer; add it to LAYERS")


def imports_of(path: Path, modules: set[str], text: str | None = None) -> set[str]:
    """Project modules imported by the file (or by ``text`` placed at ``path``), resolved to module names
    (``from pkg import mod`` -> ``pkg.mod``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in PACKAGES)
    found.discard(name)
    return found


def project_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


GRAPH = project_graph()


def test_every_module_has_a_layer():
    assert len(GRAPH) > 40
    for module in GRAPH:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    here = layer_of(module)
    for target in GRAPH[module]:
        there = layer_of(target)
        upward = LAYERS[there] > LAYERS[here] or (LAYERS[there] == LAYERS[here] and there != here)
        assert not upward, f"{module} ({here}) imports {target} ({there}), against the layer order"


def test_module_graph_is_acyclic():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module, path):
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [module, target]))
            if target in GRAPH and target not in state:
                visit(target, path + [module])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])


def test_the_checker_catches_an_upward_import():
    """The check itself can fail: a core module importing the lab or hil is reported as upward."""
    pretend = ROOT / "xyoptics" / "core" / "network.py"
    text = "from ..lab import trainer\nfrom xyoptics.hil.optical import OpticalXYMachine\nimport numpy\n"
    found = imports_of(pretend, set(GRAPH), text)
    assert found == {"xyoptics.lab.trainer", "xyoptics.hil.optical"}
    assert all(LAYERS[layer_of(t)] > LAYERS["xyoptics.core"] for t in found)
