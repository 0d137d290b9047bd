"""The command table, and the dispatcher that checks it before any handler runs.

Handlers in `commands/` are marked with `@command(...)`: name, minimum parameters, whether
they may run before registration, the syntax shown by HELP and 461 replies, and the flood
cost. `build_table` collects the marked handlers of the modules it is given into a table;
the server is given that table (ircish/commands.py builds ours) and refuses to start
without one. The dispatcher answers 421 (unknown), 451 (not registered) and 461 (not enough
parameters) itself, turns `IRCError` into its numeric, and logs and answers a handler that
crashes; the reader thread goes on. Replies are buffered in the `Context` and sent once the
handler is done, so their order is fixed; a reply that describes a room is sent under the
room's lock instead (`Context.answer_about`), so it is never older than the room's events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING

from ircish import protocol
from ircish.protocol import IRCError, Message, ProtocolError, safe_param

if TYPE_CHECKING:
    from ircish.config import Config
    from ircish.session import Session
    from ircish.world import Room, RoomReply, World

__all__ = [
    "DEFAULT_COST",
    "CommandSpec",
    "Context",
    "Dispatcher",
    "IRCError",
    "build_table",
    "command",
]

log = logging.getLogger(__name__)

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


class Dispatcher:
    """The command table and what handlers may use besides their sender: the world, the
    config, the server's name, start time and connection count. Handlers see it as
    `ctx.server`. It does no I/O; a test can drive it with sessions and no socket."""

    def __init__(
        self,
        commands: Mapping[str, CommandSpec],
        world: World,
        config: Config,
        connection_count: Callable[[], int] = lambda: 0,
    ) -> None:
        if not commands:
            raise ValueError("the command table is empty: every line would be answered 421")
        self.commands: Mapping[str, CommandSpec] = MappingProxyType(dict(commands))
        self.world = world
        self.config = config
        self.name = config.server.name
        self.created_text = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.connection_count = connection_count

    def dispatch(self, session: Session, msg: Message) -> None:
        """Check `msg` against the command table and run its handler; send the replies."""
        ctx = Context(session, self)
        spec = self.commands.get(msg.command)
        try:
            if spec is None:
                raise IRCError(
                    protocol.ERR_UNKNOWNCOMMAND, safe_param(msg.command), "Unknown command"
                )
            if not session.user.registered and not spec.pre_registration:
                hint = "Choose a nick first: /nick <name>" if session.is_text else ""
                raise IRCError(protocol.ERR_NOTREGISTERED, hint or "You have not registered")
            if len(msg.params) < spec.min_params:
                raise IRCError(
                    protocol.ERR_NEEDMOREPARAMS,
                    spec.name,
                    f"Not enough parameters (usage: {spec.name} {spec.syntax})",
                )
            spec.handler(ctx, msg)
        except IRCError as exc:
            ctx.reply(exc.numeric, *exc.params)
        except Exception:
            log.exception("%s: handler for %s failed on %r", session.user, msg.command, msg)
            ctx.reply(
                protocol.ERR_UNKNOWNERROR, msg.command, "Internal server error; it was logged"
            )
        ctx.flush()


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

    def __init__(self, session: Session, server: Dispatcher) -> None:
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

    def reply_words(self, numeric: str, *params: str, words: list[str]) -> None:
        """A numeric whose last parameter lists `words`, split over lines that fit 512
        bytes, between words (WHOIS rooms, ISON)."""
        self.replies += protocol.numeric_lines(
            self.server.name, numeric, self.user.nick or "*", list(params), words
        )

    def send(self, msg: Message) -> None:
        """Queue any message for the sender, after the handler's other replies."""
        self.replies.append(msg)

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
