"""The command table and the dispatcher that checks it before any handler runs.

Handlers in `commands/` register themselves with `@command(...)`: name,
minimum parameters, whether they may run before registration, and the syntax
shown by HELP and 461 replies. The dispatcher answers 421 (unknown), 451
(not registered) and 461 (not enough parameters) itself, turns `IRCError`
into its numeric, and logs and answers a handler that crashes; the reader
thread goes on. Replies are buffered in the `Context` and sent once the
handler is done, so their order is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ircish import protocol, slash
from ircish.protocol import IRCError, Message, ProtocolError, safe_param

if TYPE_CHECKING:
    from ircish.connection import Connection

__all__ = ["COMMANDS", "CommandSpec", "Context", "IRCError", "command", "dispatch"]

log = logging.getLogger(__name__)

Handler = Callable[["Context", Message], None]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    handler: Handler
    min_params: int
    pre_registration: bool
    syntax: str
    summary: str
    #: Flood-control tokens the command takes (ircish/flood.py); 0 is free.
    cost: int = 1


#: What a line costs when it names no known command or cannot be read at all.
DEFAULT_COST = 1


#: Every IRC command the server knows, built once at import of `commands`.
COMMANDS: dict[str, CommandSpec] = {}


def command(
    name: str,
    *,
    min_params: int = 0,
    pre_registration: bool = False,
    syntax: str = "",
    cost: int = DEFAULT_COST,
) -> Callable[[Handler], Handler]:
    """Register a handler. Its docstring's first line is the HELP summary."""

    def register(handler: Handler) -> Handler:
        summary = (handler.__doc__ or "").strip().splitlines()[0] if handler.__doc__ else ""
        COMMANDS[name] = CommandSpec(
            name, handler, min_params, pre_registration, syntax, summary, cost
        )
        return handler

    return register


class Context:
    """What a handler works with: the sender, the server, and a reply buffer."""

    __slots__ = ("closing", "config", "conn", "replies", "server", "user", "world")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.user = conn.user
        self.server = conn.server
        self.world = conn.server.world
        self.config = conn.server.config
        self.replies: list[Message] = []
        self.closing: tuple[str, str] | None = None

    def reply(self, numeric: str, *params: str) -> None:
        """Queue a numeric addressed to the sender (`*` before they have a nick)."""
        self.replies.append(Message(numeric, [self.user.nick or "*", *params], self.server.name))

    def send(self, msg: Message) -> None:
        """Queue any message for the sender, after the handler's other replies."""
        self.replies.append(msg)

    def disconnect(self, reason: str, error: str) -> None:
        """Close the sender's connection once the replies so far are sent."""
        self.closing = (reason, error)

    def flush(self) -> None:
        for msg in self.replies:
            try:
                self.conn.send(msg)
            except ProtocolError:
                # A reply that cannot be formatted is a server bug: log it, keep
                # the connection (and its reader thread) going.
                log.exception("%s: reply could not be formatted: %r", self.conn, msg)
        self.replies.clear()
        if self.closing is not None:
            self.conn.close(*self.closing)


def dispatch(conn: Connection, msg: Message) -> None:
    """Check `msg` against the command table and run its handler."""
    ctx = Context(conn)
    spec = COMMANDS.get(msg.command)
    try:
        if spec is None:
            raise IRCError(protocol.ERR_UNKNOWNCOMMAND, safe_param(msg.command), "Unknown command")
        if not conn.user.registered and not spec.pre_registration:
            hint = "Choose a nick first: /nick <name>" if conn.mode == "text" else ""
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
        log.exception("%s: handler for %s failed on %r", conn, msg.command, msg)
        ctx.reply(protocol.ERR_UNKNOWNERROR, msg.command, "Internal server error; it was logged")
    ctx.flush()


def session_kind(line: str) -> str:
    """'irc' if the first line is an IRC command we know, else 'text' (nc users)."""
    if line.startswith("/"):
        return "text"
    try:
        return "irc" if protocol.parse(line).command in COMMANDS else "text"
    except ProtocolError:
        return "text"


def dispatch_line(conn: Connection, line: str) -> None:
    """Turn one decoded input line into a Message, charge its flood cost, dispatch it."""
    if conn.mode is None:
        conn.mode = session_kind(line)
        log.debug("%s: %s session", conn, conn.mode)
    msg = line_to_message(conn, line)
    spec = None if msg is None else COMMANDS.get(msg.command)
    # Refused lines cost too: flooding junk is flooding.
    if conn.throttle(DEFAULT_COST if spec is None else spec.cost) and msg is not None:
        dispatch(conn, msg)


def line_to_message(conn: Connection, line: str) -> Message | None:
    """The Message a line stands for, per the session kind; None (answered) if refused."""
    if "\0" in line or "\r" in line:
        # Refused before translation, so no session kind can smuggle them on.
        log.info("%s: line with NUL or CR refused", conn)
        why = "Line refused: it contains NUL or CR"
        if conn.mode == "text":
            conn.send(Message("FAIL", ["*", "INVALID_LINE", why], conn.server.name))
        else:
            word = line.split(" ", 1)[0].upper()
            conn.reply_error(protocol.ERR_UNKNOWNERROR, safe_param(word), why)
        return None
    if conn.mode != "irc":
        return text_line_to_message(conn, line)
    try:
        return protocol.parse(line)
    except ProtocolError as exc:
        log.info("%s: malformed line refused: %s", conn, exc)
        word = line.split(" ", 1)[0].upper()
        if word in COMMANDS:
            conn.reply_error(protocol.ERR_UNKNOWNERROR, word, f"Malformed line: {exc}")
        else:
            conn.reply_error(protocol.ERR_UNKNOWNCOMMAND, safe_param(word), "Unknown command")
        return None


def text_line_to_message(conn: Connection, line: str) -> Message | None:
    """A text session's line: a slash command, or plain text for the current room."""
    room = conn.user.current_room
    if line.startswith("/") and not line.startswith("//"):
        try:
            return slash.translate(line, room)
        except (slash.SlashError, ProtocolError) as exc:
            conn.send(Message("FAIL", ["*", "USAGE", str(exc)], conn.server.name))
            return None
    if line.startswith("//"):
        line = line[1:]
    if room is None and conn.user.registered:
        conn.send(
            Message(
                "FAIL", ["PRIVMSG", "NO_ROOM", "You are in no room: /join #room"], conn.server.name
            )
        )
        return None
    return Message("PRIVMSG", [room or "*", line])
