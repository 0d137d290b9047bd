"""The layers (issue 10; README "Architecture"): every import in the server's code, at any
depth and under TYPE_CHECKING too, points down this stack or within a layer, and the import
graph has no circle. Read from the source with `ast`, so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Top to bottom. A module may import modules of its own layer or of a lower one.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("programs", ("ircish.__main__", "ircish.cli", "ircish.client")),
    ("server", ("ircish.server",)),
    ("cluster", ("ircish.cluster",)),
    ("connection", ("ircish.connection",)),
    ("transport", ("ircish.transport", "ircish.tls", "ircish.websocket", "ircish.webfiles")),
    ("session", ("ircish.session",)),
    ("dispatch", ("ircish.dispatch",)),
    ("commands", ("ircish.commands",)),
    ("world", ("ircish.world",)),
    ("accounts", ("ircish.accounts",)),
    ("store", ("ircish.store",)),
    (
        "leaves",
        (
            "ircish.caps",
            "ircish.config",
            "ircish.events",
            "ircish.flood",
            "ircish.locks",
            "ircish.logs",
            "ircish.metrics",
            "ircish.modes",
            "ircish.passwords",
            "ircish.protocol",
            "ircish.render",
            "ircish.sasl",
            "ircish.shared",
            "ircish.slash",
        ),
    ),
]


def module_files() -> dict[str, Path]:
    """Every module of the server's code by its import name: ircish/**, and the handler
    folder commands/, which is the package ircish.commands (ircish/commands.py)."""
    files = {}
    for path in (ROOT / "ircish").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    for path in (ROOT / "commands").glob("*.py"):
        if path.stem != "__init__":
            files[f"ircish.commands.{path.stem}"] = path
    return files


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and the README)"
    return best[0]


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules `name` imports (of those in `known`), wherever the import statement is."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            # `from ircish import protocol` imports a module; `from x import name` its module.
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def test_every_module_has_a_layer():
    for name in module_files():
        if name != "ircish":
            layer_of(name)


def test_no_import_points_up():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in graph().items()
        if module != "ircish"
        for target in targets
        if target != "ircish" and layer_of(target) < layer_of(module)
    ]
    assert upward == []


def test_no_import_circle():
    edges = graph()
    state: dict[str, str] = {}
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_check_sees_what_it_must():
    """The checker is not blind: the edges it finds include ones we know are there."""
    edges = graph()
    assert "ircish.commands" in edges["ircish.commands.moderation"]  # from ircish.commands
    assert "ircish.commands.rooms" in edges["ircish.commands.moderation"]  # from .rooms
    assert "ircish.dispatch" in edges["ircish.connection"]  # under TYPE_CHECKING
    assert "ircish.protocol" in edges["ircish.world"]  # from ircish import protocol as p
    assert layer_of("ircish.world") > layer_of("ircish.commands") > layer_of("ircish.session")


def test_a_connection_keeps_few_enough_attributes(server, connect):
    """Past MAX_ATTRIBUTES each Connection gets a dict of its own (CPython 3.11): more
    memory per client and slower stores on the fan-out path (ircish/connection.py)."""
    from ircish.connection import MAX_ATTRIBUTES

    client = connect("alice")
    client.join("#r")
    client.send("PRIVMSG #r :hi")
    client.sync()
    (conn,) = list(server.connections)
    conn.close("checked")  # what closing sets is counted too
    assert len(vars(conn)) <= MAX_ATTRIBUTES, sorted(vars(conn))
