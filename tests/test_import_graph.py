"""No import cycles among mpm's modules.

The graph is read from the source with :mod:`ast` (nothing is imported): an edge ``a -> b`` for
every ``import b`` / ``from b import x`` in module ``a`` — at module level, inside functions and
under ``if TYPE_CHECKING:`` alike — where ``from pkg import x`` names module ``pkg.x`` when that is
a module, else ``pkg``. Importing ``pkg.sub`` also runs ``pkg/__init__.py``; that implicit edge is
left out (a package that imports its own submodules is not a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mpm"
#: cycles known today, each to be broken by the work that owns its modules; the test fails when one
#: of them is gone (remove it here) as when any other cycle appears
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` file under ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of a (possibly relative) ``from`` import's base."""
    if not level:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}

    def target(name: str) -> str | None:
        while name and name not in modules:  # ``import mpm.a.b.func``-like names: the longest module prefix
            name = name.rpartition(".")[0]
        return name or None

    for mod, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_package, node.level, node.module)
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for name in names:
                dep = target(name)
                if dep is not None and dep != mod:
                    graph[mod].add(dep)
    return graph


def strong_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each sorted), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm, iteratively (no recursion limit)
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(components)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module."""
    return [_cycle_in(graph, comp) for comp in strong_components(graph)]


def _cycle_in(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first within the component)."""
    members, start = set(component), component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child not in parents:
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle in component {component}")  # cannot happen for an SCC


def test_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import f\n")
    (pkg / "a.py").write_text("import pkg.b\n\ndef f():\n    from .sub import c\n")
    (pkg / "b.py").write_text("from pkg.sub.c import g as h\nimport os\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("def g():\n    from .. import a\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b", "pkg.sub.c"}, "pkg.b": {"pkg.sub.c"},
                     "pkg.sub": set(), "pkg.sub.c": {"pkg.a"}}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.c", "pkg.a"]]
    (pkg / "sub" / "c.py").write_text("def g():\n    return 1\n")
    assert find_cycles(import_graph(tmp_path, "pkg")) == []


def test_no_import_cycles_in_mpm() -> None:
    graph = import_graph()
    assert len(graph) > 50 and graph["mpm.tables.paper"], "the graph should cover mpm"
    components = [tuple(c) for c in strong_components(graph)]
    new = [_cycle_in(graph, list(c)) for c in components if c not in KNOWN_CYCLES]
    assert not new, "import cycles among mpm's modules: " + "; ".join(" -> ".join(c) for c in new)
    gone = KNOWN_CYCLES - set(components)
    assert not gone, f"no longer a cycle (remove it from KNOWN_CYCLES): {sorted(gone)}"
