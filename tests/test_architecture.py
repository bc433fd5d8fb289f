"""The package layering and the absence of import cycles (docs/architecture.md).

The layer contract itself (sim <- mpc <- learning <- vmpc) is import-linter's, run by
``make lint``; these tests keep both rules checked from pytest too, on the same import graph
(grimp, which import-linter builds on, sees imports inside functions as well).
"""

from __future__ import annotations

import grimp
import pytest

LAYERS = ("sim", "mpc", "learning", "vmpc")  # each may import only the ones before it


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*LAYERS)


@pytest.mark.parametrize("lower", range(len(LAYERS) - 1))
def test_no_lower_layer_imports_a_higher_one(graph: grimp.ImportGraph, lower: int) -> None:
    for higher in LAYERS[lower + 1 :]:
        chain = graph.find_shortest_chain(importer=LAYERS[lower], imported=higher, as_packages=True)
        assert chain is None, f"{LAYERS[lower]} imports {higher}: {' -> '.join(chain or ())}"


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    """Tarjan's strongly connected components of the module graph: all of size 1."""
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for m in modules:
        if m not in index:
            visit(m)
    assert not cycles, f"import cycles: {cycles}"
