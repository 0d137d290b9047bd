"""The commands layer: the API handlers are written against, and the package of handlers.

Handlers are plain functions marked with `@command(...)`: name, minimum parameters, whether
they may run before registration, the syntax shown by HELP and 461 replies, and the flood
cost. They work with a `Context` (the sender, the server as handlers see it, a reply buffer)
and raise `IRCError` for a refusal. `build_table` collects the marked handlers of some
modules into a command table; `command_table()` is ours, the one ircish-server is given
(ircish/server.py checks it before any handler runs: ircish/dispatch.py).

The handlers themselves live in the top-level commands/ folder (our layout), which an
install puts inside this package as ircish/_commands (setup.cfg), so that it takes no
top-level name. They are never imported as a top-level `commands`: a `commands.py` of
someone else's on sys.path (the working directory, say) must not stand in for them and give
a server with no commands. So this module is their package: `__path__` below names that
folder, and `ircish.commands.rooms` is commands/rooms.py, found by its place on disk, not
by sys.path. The handler modules import each other relatively.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from ircish import protocol
from ircish.protocol import IRCError, Message, ProtocolError

if TYPE_CHECKING:
    from ircish.config import Config
    from ircish.world import Room, RoomReply, User, World

__all__ = [
    "DEFAULT_COST",
    "CommandSpec",
    "Context",
    "IRCError",
    "build_table",
    "command",
    "command_table",
]

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
#: The folder of handler modules: ircish/_commands once installed, else (a checkout)
#: commands/ beside this package's folder.
FOLDER = _HERE / "_commands" if (_HERE / "_commands").is_dir() else _HERE.parent / "commands"
__path__ = [str(FOLDER)]

#: The handler modules, one per command family.
MODULES = (
    "registration",
    "rooms",
    "messages",
    "queries",
    "moderation",
    "presence",
    "history",
    "accounts",
    "chanserv",
)


Handler = Callable[["Context", Message], None]

#: What a line costs when it names no known command or cannot be read at all.
DEFAULT_COST = 1


@dataclass(frozen=True)
class CommandSpec:
    name: str
    handler: Handler
    min_params: int
    pre_registration: bool
    syntax: str
    summary: str
    #: Flood-control tokens the command takes (ircish/flood.py); 0 is free.
    cost: int = DEFAULT_COST
    #: The index of the parameter that is a comma list of targets, if any: the command
    #: then costs `cost` per target (JOIN #a,#b,#c costs three times JOIN #a).
    targets: int | None = None

    def not_enough_params(self) -> IRCError:
        """461 with the usage: the dispatcher's answer below `min_params`, and a handler's
        whose arity depends on what it was given (INVITE: none or two)."""
        return IRCError(
            protocol.ERR_NEEDMOREPARAMS,
            self.name,
            f"Not enough parameters (usage: {self.name} {self.syntax})",
        )

    def cost_of(self, msg: Message) -> int:
        if self.targets is None or self.targets >= len(msg.params):
            return self.cost
        return self.cost * max(1, msg.params[self.targets].count(",") + 1)


def command(
    name: str,
    *,
    min_params: int = 0,
    pre_registration: bool = False,
    syntax: str = "",
    cost: int = DEFAULT_COST,
    targets: int | None = None,
) -> Callable[[Handler], Handler]:
    """Mark a handler for `build_table`. Its docstring's first line is the HELP summary."""

    def mark(handler: Handler) -> Handler:
        summary = (handler.__doc__ or "").strip().splitlines()[0] if handler.__doc__ else ""
        handler.command_spec = CommandSpec(  # type: ignore[attr-defined]
            name, handler, min_params, pre_registration, syntax, summary, cost, targets
        )
        return handler

    return mark


def build_table(modules: Iterable[ModuleType]) -> dict[str, CommandSpec]:
    """The command table: every `@command` handler defined in `modules`, by name. Raises
    ValueError if two handlers claim one name."""
    table: dict[str, CommandSpec] = {}
    for module in modules:
        for value in vars(module).values():
            spec = getattr(value, "command_spec", None)
            if not isinstance(spec, CommandSpec) or value.__module__ != module.__name__:
                continue  # not a handler, or one imported from another module
            if spec.name in table:
                raise ValueError(f"two handlers for {spec.name}: {module.__name__} and another")
            table[spec.name] = spec
    return table


def command_table() -> dict[str, CommandSpec]:
    """Every command the server knows, by name. Raises RuntimeError if none is found (the
    handler folder is missing), so a server never starts with an empty table."""
    if not (FOLDER / "registration.py").is_file():
        raise RuntimeError(f"the command handlers are missing: no {FOLDER / 'registration.py'}")
    modules = [importlib.import_module(f"{__name__}.{name}") for name in MODULES]
    table = build_table(modules)
    if not table:
        raise RuntimeError(f"no command handlers found in {FOLDER}")
    return table


class SenderSession(Protocol):
    """What a handler may see of its sender's session (ircish/session.py `Session`)."""

    user: User
    kind: str | None
    caps: frozenset[str]
    cap_version: int
    cap_negotiating: bool
    password: str | None
    wanted_nick: str | None
    sasl: Any

    def set_caps(self, caps: Iterable[str]) -> None: ...

    @property
    def is_text(self) -> bool: ...


class ServerView(Protocol):
    """The server as handlers see it (ircish/dispatch.py `Dispatcher`)."""

    commands: Mapping[str, CommandSpec]
    world: World
    config: Config
    name: str
    created_text: str
    config_source: str
    reload: Callable[[Callable[[list[str]], None]], None] | None

    def connection_count(self) -> int: ...


class Context:
    """What a handler works with: the sender (session, user, connection), the server as
    handlers see it (`server`: the dispatcher), and a reply buffer."""

    __slots__ = (
        "closing",
        "config",
        "conn",
        "replies",
        "server",
        "session",
        "unsendable",
        "user",
        "world",
    )

    def __init__(self, session: SenderSession, server: ServerView) -> None:
        self.session = session
        self.user = session.user
        self.conn = session.user.conn
        self.server = server
        self.world = server.world
        self.config = server.config
        self.replies: list[Message] = []
        self.closing: tuple[str, str] | None = None
        #: Replies that could not be formatted, logged once no lock is held.
        self.unsendable: list[tuple[Message, ProtocolError]] = []

    def reply(self, numeric: str, *params: str) -> None:
        """Queue a numeric addressed to the sender (`*` before they have a nick)."""
        self.replies.append(self.numeric(numeric, *params))

    def numeric(self, numeric: str, *params: str) -> Message:
        """A numeric from the server to the sender, to queue or to send."""
        return Message(numeric, [self.user.nick or "*", *params], self.server.name)

    def reply_words(self, numeric: str, *params: str, words: list[str], sep: str = " ") -> None:
        """A numeric whose last parameter lists `words` (joined by `sep`), split over lines
        that fit 512 bytes, between words (WHOIS rooms, ISON, MONITOR)."""
        self.replies += protocol.numeric_lines(
            self.server.name, numeric, self.user.nick or "*", list(params), words, sep
        )

    def send(self, msg: Message) -> None:
        """Queue any message for the sender, after the handler's other replies."""
        self.replies.append(msg)

    def fail(self, command: str, code: str, *params: str) -> None:
        """Queue an IRCv3 standard reply `FAIL <command> <code> [params...] :<text>` (the
        last of `params` is the text)."""
        self.replies.append(Message("FAIL", [command, code, *params], self.server.name))

    def answer_about(self, room: Room, build: RoomReply) -> None:
        """Send the replies so far, then what `build` says about `room`, built and queued
        under the room's lock (see `Room.answer`). `build` may raise IRCError."""
        self.flush()
        room.answer(self.send_now, build)
        self._log_unsendable()

    def send_now(self, msg: Message) -> None:
        """Queue `msg` to the sender's connection at once (may run under a room's lock)."""
        try:
            self.conn.send(msg)
        except ProtocolError as exc:
            # A reply that cannot be formatted is a server bug: it is logged (later: no
            # logging under a lock), and the connection and its reader thread go on.
            self.unsendable.append((msg, exc))

    def _log_unsendable(self) -> None:
        for msg, exc in self.unsendable:
            log.error("%s: reply could not be formatted (%s): %r", self.user, exc, msg)
        self.unsendable.clear()

    def disconnect(self, reason: str, error: str) -> None:
        """Close the sender's connection once the replies so far are sent."""
        self.closing = (reason, error)

    def flush(self) -> None:
        for msg in self.replies:
            self.send_now(msg)
        self.replies.clear()
        self._log_unsendable()
        if self.closing is not None:
            self.conn.close(*self.closing)
