"""Imports run one way (DESIGN.md): no import cycle between avlib's units (``avlib.X``), and ``avlib.nets`` holds
modules only, importing nothing from the layers above it nor any plotting library.

The import graph is read from the source with ``ast`` (every ``import`` and ``from ... import``, relative ones resolved,
also those inside functions), so a lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ABOVE_NETS = ("avlib.engine", "avlib.eval", "avlib.methods", "avlib.viz", "avlib.cli")
PLOTTING = ("plotly", "matplotlib", "bokeh", "seaborn", "altair", "ipywidgets", "IPython")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, module: str) -> set[str]:
    """Every module named by an import in ``path`` (``from a import b`` gives ``a`` and ``a.b``; relative imports are
    resolved against ``module``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def unit(module: str) -> str:
    """``avlib.methods.run`` -> ``avlib.methods``; ``avlib`` stays ``avlib``."""
    return ".".join(module.split(".")[:2])


def import_graph(root: Path, package: str = "avlib") -> dict[str, set[str]]:
    """Module -> the modules (of ``package`` or outside it) its source imports."""
    graph = {}
    for path in sorted((root / package).rglob("*.py")):
        mod = module_name(path, root)
        graph[mod] = imported_names(path, mod)
    return graph


def unit_edges(graph: dict[str, set[str]], package: str = "avlib") -> dict[str, set[str]]:
    """Edges between units of ``package``: ``avlib.engine -> avlib.viz`` where any engine module imports viz. The
    package's own ``__init__`` (``import avlib``) is not a unit of its own."""
    units = {unit(m) for m in graph if m != package}
    edges: dict[str, set[str]] = {u: set() for u in units}
    for mod, names in graph.items():
        if mod == package:
            continue
        for name in names:
            target = unit(name)
            if target in units and target != unit(mod):
                edges[unit(mod)].add(target)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        path.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                return path[path.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        state[u] = 2
        path.pop()
        return None

    for u in sorted(edges):
        if u not in state and (found := visit(u)):
            return found
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_the_walk_sees_every_module_and_the_known_edges(graph):
    assert {"avlib.cli", "avlib.methods.run", "avlib.nets.dmc", "avlib.engine.loop", "avlib.eval.avc"} <= set(graph)
    edges = unit_edges(graph)
    assert "avlib.methods" in edges["avlib.cli"] and "avlib.engine" in edges["avlib.methods"]
    assert "avlib.cluster" in edges["avlib.nets"]  # nets stand on the pure layers


def test_no_import_cycle_between_units(graph):
    cycle = find_cycle(unit_edges(graph))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nets_import_nothing_above_them_nor_plotting(graph):
    bad = sorted(f"{mod} imports {name}" for mod, names in graph.items() if unit(mod) == "avlib.nets"
                 for name in names if name.startswith(ABOVE_NETS) or name.split(".")[0] in PLOTTING)
    assert not bad, "; ".join(bad)


def test_the_checks_catch_a_cycle_a_relative_import_and_a_lazy_one(tmp_path):
    pkg = tmp_path / "avlib"
    (pkg / "nets").mkdir(parents=True)
    (pkg / "eval").mkdir()
    (pkg / "__init__.py").write_text("from avlib import nets\n")
    (pkg / "nets" / "__init__.py").write_text("")
    (pkg / "nets" / "a.py").write_text("def f():\n    import plotly.express\n    from ..eval import b\n")
    (pkg / "eval" / "__init__.py").write_text("")
    (pkg / "eval" / "b.py").write_text("from avlib.nets.a import f\n")
    graph = import_graph(tmp_path)
    assert graph["avlib.nets.a"] >= {"plotly.express", "avlib.eval", "avlib.eval.b"}
    assert find_cycle(unit_edges(graph)) == ["avlib.eval", "avlib.nets", "avlib.eval"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
