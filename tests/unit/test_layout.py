"""The package's layout (issue 22): no import circles between its modules (counting imports
inside functions, which run later but still tie the modules together), and the pure
protocol layer imports no I/O, no native code and nothing of the layers above it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import orc_executor

PACKAGE = Path(orc_executor.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """Every module ``name`` imports, anywhere in it (absolute names; for ``from X import
    Y``, ``X.Y`` where that is a module, else ``X``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
    return out


GRAPH = {name: {m for m in _imports(name) if m in MODULES and m != name} for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_is_read() -> None:
    assert "orc_executor.serve.handover" in GRAPH["orc_executor.serve.worker"]
    assert "orc_executor.serve.connection" in GRAPH["orc_executor.serve.zygote"]  # in a function
    assert "orc_executor.protocol.sps" in GRAPH["orc_executor.protocol.names"]


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert _cycles(GRAPH) == []


def test_the_protocol_layer_is_pure() -> None:
    """``orc_executor.protocol`` (SPS, framing, names, ...): no trio, no cffi, and nothing of
    the layers that use it (native code, I/O, the executor, serving, launching)."""
    above = ("orc_executor.native", "orc_executor.io", "orc_executor.executor",
             "orc_executor.serve", "orc_executor.launch", "orc_executor.controller",
             "orc_executor.cli")
    for name in MODULES:
        if name == "orc_executor.protocol" or name.startswith("orc_executor.protocol."):
            for imported in _imports(name):
                top = imported.split(".")[0]
                assert top not in ("trio", "cffi", "_cffi_backend"), (name, imported)
                assert not imported.startswith(above), (name, imported)


def test_the_handover_messages_are_pure() -> None:
    """``orc_executor.serve.handover`` builds and parses bytes only: no trio, no sockets, and
    nothing else of the package."""
    for imported in _imports("orc_executor.serve.handover"):
        assert imported.split(".")[0] not in ("trio", "socket", "cffi", "orc_executor"), imported


def test_the_controller_uses_the_protocol_and_io_layers_only() -> None:
    """``orc_executor.controller`` talks SimpleRemoteEPC through ``protocol/`` and ``io/``
    (plus the error tree and host facts): it knows nothing of the executor, serving,
    launching or native code."""
    allowed = ("orc_executor.protocol", "orc_executor.io", "orc_executor.errors",
               "orc_executor.host")
    imported = _imports("orc_executor.controller")
    ours = {m for m in imported if m.split(".")[0] == "orc_executor"}
    assert "orc_executor.protocol.setup" in ours
    for name in ours:
        assert name.startswith(allowed), name
    others = {m.split(".")[0] for m in imported} - {"orc_executor", "trio"}
    assert others <= set(sys.stdlib_module_names), others


def test_the_python_launcher_starts_on_what_the_interpreter_loaded() -> None:
    """Importing the Python launcher (:mod:`orc_executor.launch.client`, which parses its
    command line with :mod:`orc_executor.io.spec`) loads no stdlib module the interpreter had
    not loaded at start-up: its warm handover is decided before any other import."""
    import subprocess

    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import orc_executor.launch.client\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], check=True, capture_output=True,
                         text=True, timeout=60).stdout.split()
    assert "orc_executor.io.spec" in out
    assert [m for m in out if m.split(".")[0] not in ("orc_executor", "__future__")] == []
