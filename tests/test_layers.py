"""The package's layers (design.md): each module imports only its own layer and those
below, and no import cycle exists, counting every import (TYPE_CHECKING and
function-level ones included)."""

from __future__ import annotations

import ast
import fnmatch
import pathlib
from typing import Dict, List, Set

import puregrpc

ROOT = pathlib.Path(puregrpc.__file__).parent

# Lowest first. The call core is dispatch: the connection (I/O) never imports it; it
# knows calls as ``_connection.StreamCall`` and gets them from its server.
LAYERS = [
    ("HTTP/2 engine", ["_h2", "_h2.*"]),
    ("gRPC protocol", ["_status", "_compression", "_protocol", "_errors", "_stats", "_options"]),
    ("I/O", ["_loop", "_addresses", "_credentials", "_malloc", "_connection"]),
    ("dispatch", ["_callbacks", "_pool", "_handlers", "_call", "_context", "_sync_call", "_aio_call"]),
    ("lifecycle", ["_lifecycle", "_server", "_aio_server", "_run", "_supervisor"]),
    (
        "public API",
        [
            "",
            "aio",
            "__main__",
            "_descriptors",
            "_builtin_protos",
            "health",
            "health.*",
            "reflection",
            "reflection.*",
            "prometheus",
            "instrumentation",
            "demo",
            "demo.*",
            "interop",
            "interop.*",
        ],
    ),
]


def _modules() -> Dict[str, pathlib.Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.endswith("_pb2") or part.endswith("_pb2_grpc") for part in parts):
            continue
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: pathlib.Path, modules: Dict[str, pathlib.Path]) -> Set[str]:
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    targets: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        candidates: List[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("puregrpc"):
                module = node.module[len("puregrpc.") :] if node.module != "puregrpc" else ""
            else:
                continue
            candidates = [module, *(f"{module}.{alias.name}".lstrip(".") for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [a.name[len("puregrpc.") :] for a in node.names if a.name.startswith("puregrpc.")]
        targets.update(c for c in candidates if c in modules and c != name)
    return targets


def _layer(name: str) -> int:
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return index
    raise AssertionError(f"module puregrpc.{name} is in no layer of LAYERS: add it")


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_imports_only_its_layer_and_below() -> None:
    wrong = []
    for name, targets in _graph().items():
        for target in targets:
            if _layer(target) > _layer(name):
                wrong.append(
                    f"{name or 'puregrpc'} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
                )
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    graph = _graph()
    state: Dict[str, int] = {}
    stack: List[str] = []
    cycles: List[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "\n".join(cycles)


def test_the_layer_check_sees_imports() -> None:
    # The check is only as good as the graph: known edges must be in it.
    graph = _graph()
    assert "_call" in graph["_sync_call"]
    assert "_h2.connection" in graph["_connection"]
    assert "_aio_server" in graph["aio"]
