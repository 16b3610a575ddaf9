"""The package's import graph: no cycles, and dependencies point one way (prep -> data -> train -> ...).

Every ``import`` and ``from ... import`` of an ``srp_megatron`` module counts: at module level, inside a function
or under ``if TYPE_CHECKING:`` (each is a dependency, even when Python would tolerate the cycle at run time). An
edge goes to the module named (``from a.b import c`` reaches ``a.b.c`` when that is a module, else ``a.b``).
"""

from __future__ import annotations

import ast
import os

import pytest

PACKAGE = "srp_megatron"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), PACKAGE)
#: Layer of each top-level part of the package: a module may import its own layer and lower ones only.
#: Parts not listed (new packages) are checked for cycles but not yet for direction.
LAYERS = {
    "errors": 0, "registry": 0, "config": 0, "formats": 0, "llm": 0,
    "prep": 1, "data": 2, "train": 3, "posttrain": 4, "eval": 5,
    "demo": 9, "cli": 9,
}


def modules() -> dict[str, str]:
    """``{dotted module name: file path}`` of every module in the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[: -len(".py")].split(os.sep)
                out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = path
    return out


def imports_of(name: str, path: str, known: dict[str, str]) -> set[str]:
    """The package modules ``name`` imports."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t.split(".")[0] == PACKAGE and t in known)
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    """The import graph of the package."""
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    assert find_cycles(graph()) == []


def test_dependencies_point_one_way():
    def layer(module: str) -> int | None:
        parts = module.split(".")
        return LAYERS.get(parts[1]) if len(parts) > 1 else None

    upward = [f"{a} -> {b}" for a, targets in graph().items() for b in targets
              if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)]
    assert upward == []


def test_the_graph_is_read():
    edges = graph()
    assert "srp_megatron.formats.labels" in edges["srp_megatron.prep.label.stage"]
    assert "srp_megatron.train.checkpoint" in edges["srp_megatron.train.trainer"]  # `from pkg import module`


@pytest.mark.parametrize(
    "edges, cycles",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b", "c"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["c", "d"], ["a", "b"]]),
    ],
)
def test_find_cycles(edges, cycles):
    assert find_cycles(edges) == cycles
