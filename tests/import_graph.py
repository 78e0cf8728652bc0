"""Import circles in an import graph (Tarjan's strongly connected components), for the tests that keep lai_bench's
imports one-way (test_imports.py: the whole package; test_model_registry.py: the models package)."""
import sys
from collections.abc import Mapping, Set


def import_circles(edges: Mapping[str, Set[str]]) -> list[list[str]]:
    """Every group of two or more modules that import each other, directly or not, and every module that imports
    itself; `edges` maps a module to the modules it imports directly (others are ignored)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in edges[module] & edges.keys():
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1 or module in edges[module]:
                circles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(edges):
        if module not in index:
            visit(module)
    return circles
