"""The command handlers, from the top-level commands/ folder, as the package `ircish.commands`.

Our layout keeps the handlers in commands/ beside this package (installed beside it too;
setup.cfg). They are never imported as a top-level `commands`: a `commands.py` of someone
else's on sys.path (the working directory, say) must not stand in for them and give a
server with no commands. So this module is their package: `__path__` below names that
folder, and `ircish.commands.rooms` is commands/rooms.py, found by its place on disk, not
by sys.path. The handler modules import each other relatively (`from .rooms import ...`).

`command_table()` is the table the server is given (ircish/server.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from ircish.dispatch import CommandSpec, build_table

#: The folder of handler modules: commands/, beside the folder of this package.
FOLDER = Path(__file__).resolve().parent.parent / "commands"
__path__ = [str(FOLDER)]

#: The handler modules, one per command family.
MODULES = ("registration", "rooms", "messages", "queries", "moderation")


def modules() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{name}") for name in MODULES]


def command_table() -> dict[str, CommandSpec]:
    """Every command the server knows, by name. Raises RuntimeError if none is found (the
    handler folder is missing), so a server never starts with an empty table."""
    if not (FOLDER / "registration.py").is_file():
        raise RuntimeError(f"the command handlers are missing: no {FOLDER / 'registration.py'}")
    table = build_table(modules())
    if not table:
        raise RuntimeError(f"no command handlers found in {FOLDER}")
    return table
