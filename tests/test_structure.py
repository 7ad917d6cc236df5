"""The package's shape: small modules, small classes, no import cycles (issue 17's "Done when").

- No module in moesim/ over MAX_MODULE_LINES lines (physical lines, as `wc -l` counts them).
- No class over MAX_CLASS_LINES lines (from its `class` line, decorators included, to its last line).
- No import cycle between moesim modules. The graph has an edge A -> B for every import of B that
  runs when A is imported: module-level statements, including those inside `try`/`if` at module
  level, but not `if TYPE_CHECKING:` blocks (never run). A function-local import does not count: it
  runs when the function is called, after both modules have finished loading, so it cannot leave a
  module half-initialised; it is how moesim defers heavy imports (torch, triton, ray) and keeps
  `moesim --help` fast. `from pkg import name` is an edge to pkg.name when that is a module, else to
  pkg. Parent packages' __init__ modules are not edges of their children (Python loads them first
  whatever imports what).

"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "moesim"
MAX_MODULE_LINES = 450
MAX_CLASS_LINES = 250

# TEMPORARY: oversized modules and classes being split on other branches (traces/ restructure,
# parquet hardening, GPU benchmarks). The coordinator empties this when those branches merge.


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def module_lengths() -> dict[str, int]:
    return {_rel(p): len(p.read_text().splitlines()) for p in _modules().values()}


def class_lengths() -> dict[str, int]:
    """'moesim/x.py::Outer.Inner' -> lines, for every class (nested ones too)."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                name = f"{prefix}{child.name}"
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                out[f"{where}::{name}"] = (child.end_lineno or child.lineno) - first + 1
                visit(child, name + ".", where)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, prefix + child.name + ".", where)

    for path in _modules().values():
        visit(ast.parse(path.read_text()), "", _rel(path))
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _load_time_imports(body: list[ast.stmt]):
    """Import statements that run when the module loads (not in functions, classes' methods or
    `if TYPE_CHECKING:`)."""
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            yield stmt
        elif isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                yield from _load_time_imports(stmt.body)
            yield from _load_time_imports(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody, *[h.body for h in stmt.handlers]):
                yield from _load_time_imports(block)
        elif isinstance(stmt, (ast.With, ast.ClassDef)):
            yield from _load_time_imports(stmt.body)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for stmt in _load_time_imports(ast.parse(path.read_text()).body):
            if isinstance(stmt, ast.Import):
                targets = [alias.name for alias in stmt.names]
            else:
                base = stmt.module or ""
                if stmt.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (stmt.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in stmt.names]
            for target in targets:
                while target and target not in modules:  # `import moesim.x.y` of a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("moesim"):
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_no_module_over_the_limit():
    over = {m: n for m, n in module_lengths().items() if n > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}"


def test_no_class_over_the_limit():
    over = {c: n for c, n in class_lengths().items() if n > MAX_CLASS_LINES}
    assert not over, f"classes over {MAX_CLASS_LINES} lines: {over}"


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, f"import cycles between moesim modules: {cycles}"


def test_the_checks_catch_what_they_check():
    """The checkers on hand-made inputs: a cycle, a long class, a type-only import."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("import x\nif TYPE_CHECKING:\n    import y\ndef f():\n    import z\ntry:\n    import w\n"
                     "except ImportError:\n    pass\n")
    assert [a.name for s in _load_time_imports(tree.body) for a in s.names] == ["x", "w"]


def _all_imports(path: Path) -> set[str]:
    """Every moesim module a file imports, function-local imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("moesim")}


def test_reports_read_results_without_the_sweeps():
    """Sweeps write through reports (run files, tables); reports never reach back into sweeps, not even
    from inside a function (issue 17: the reports <-> sweeps cycle)."""
    offenders = {_rel(p): sorted(m for m in _all_imports(p) if m.startswith("moesim.sweeps"))
                 for p in (PACKAGE / "reports").rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}, offenders
