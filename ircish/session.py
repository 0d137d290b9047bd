"""One client's side of the protocol, with no I/O: lines in, `Message`s (or a refusal) out.

A `Session` holds what the server knows of a client's protocol state: its kind (IRC, or
human text for people on nc, told apart by the first line), its registration and
capability-negotiation state (CAP, PASS), the capabilities it has and with them the wire
format its events are delivered in, and its flood-control bucket. `take(line)` turns one
received line into an `Inbound`: the message to dispatch or the refusal to send, with how
long the client must wait before it is acted on (fakelag) or whether it is cut off.
`encode` turns a message for this client into its bytes: IRC, or a rendered human line with
the time before it (WHO, LIST and ban replies gathered into aligned tables).

A driver does the I/O around it and calls the dispatcher: ircish/connection.py (a reader
thread and an outbox), or a test with no socket at all (websockets' protocol.py beside its
sync/connection.py is the model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ircish import protocol, slash
from ircish.commands import DEFAULT_COST, CommandSpec
from ircish.events import Framer, WireFormat, parse_time_tag
from ircish.flood import ExcessFlood, FloodGate
from ircish.protocol import Message, ProtocolError, safe_param
from ircish.render import Tables, render

if TYPE_CHECKING:
    from ircish.config import Limits
    from ircish.world import User

#: How much of a person's line a hint quotes back.
_ECHO_CHARS = 60

#: A text session's lines start with the server's local time: `HH:MM `.
_STAMP_FORMAT = "%H:%M "

#: The longest `label` tag kept (IRCv3 labeled-response: 64 bytes).
MAX_LABEL_BYTES = 64

#: Session kinds: an IRC client, or a person typing (nc, telnet).
IRC = "irc"
TEXT = "text"
#: The command an IRC client sends a line with as a person typed it, to have it read here
#: as a text session's line is (`_typed`).
TYPED = "TYPED"
_TYPED_WORD = b"TYPED "


@dataclass(slots=True)
class Inbound:
    """What one received line comes to."""

    #: The message to dispatch, if any.
    message: Message | None = None
    #: More messages to dispatch after it, in order: a text session's long line, split.
    then: tuple[Message, ...] = ()
    #: What to send the client instead of a dispatch: a refusal, or the session's own
    #: answer (a text session's /switch).
    refusal: Message | None = None
    #: Why the line was refused, for the log.
    note: str | None = None
    #: Seconds the client must wait before the line is acted on (flood control).
    wait: float = 0.0
    #: Flooded for too long: cut the client off ("Excess Flood") instead.
    excess_flood: bool = False
    #: Sent at once, before any wait: a person is told when flood control slows them.
    notice: Message | None = None
    #: Whether the line shows the client is alive (a blank line does not).
    alive: bool = True
    #: The `label` of a refused line, so the refusal carries it (labeled-response).
    label: str | None = None


class Session:
    """One client's protocol state (see the module docstring). Used by its reader thread;
    `wire_format` and `kind` are read by any thread that delivers to the client."""

    def __init__(
        self,
        user: User,
        commands: Mapping[str, CommandSpec],
        limits: Limits,
        server_name: str,
        frame: Framer | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_wire_format: Callable[[Session], None] | None = None,
        stamp: Callable[[], str] = lambda: time.strftime(_STAMP_FORMAT),
    ) -> None:
        """`on_wire_format` is told each new wire format (its driver keeps it at hand for
        the fan-out hot path); `stamp` is the time before each line of a text session."""
        self.user = user
        self._commands = commands
        self._max_line_bytes = limits.max_line_bytes
        self.server_name = server_name
        self._frame = frame
        #: IRC or TEXT once the first line has been read.
        self.kind: str | None = None
        #: Capabilities the client has been given (CAP REQ / ACK).
        self.caps: frozenset[str] = frozenset()
        #: The CAP LS version the client named (302: values, multi-line, cap-notify); 0
        #: until it names one. Never lowered.
        self.cap_version = 0
        #: Registration waits while CAP negotiation is open (CAP LS/REQ until CAP END).
        self.cap_negotiating = False
        #: What PASS gave, checked when registration completes.
        self.password: str | None = None
        #: The last nick asked for before registration, taken or not (REGISTER * names it).
        self.wanted_nick: str | None = None
        #: The SASL exchange in progress (commands/accounts.py), if any.
        self.sasl: Any = None
        self._on_wire_format = on_wire_format
        #: How this client's events are formatted; None for a text session (rendered).
        self.wire_format: WireFormat | None = None
        self._update_wire_format()
        self.flood = (
            FloodGate(limits.flood_burst, limits.flood_rate, limits.flood_disconnect_seconds, clock)
            if limits.flood_rate > 0
            else None
        )
        #: Batch reference tags handed out so far (each unique on this connection).
        self._batches = 0
        #: A text session was told it is being slowed, and has not caught up since.
        self._told_slowed = False
        self._stamp = stamp
        #: WHO/LIST/ban rows on their way to a text session's table. Only replies to the
        #: client's own commands carry them, so only its reader thread touches this.
        self._tables = Tables()

    @property
    def is_text(self) -> bool:
        return self.kind == TEXT

    def set_caps(self, caps: Iterable[str]) -> None:
        """The client's capabilities are now `caps`; its events follow in the new format."""
        self.caps = frozenset(caps)
        self._update_wire_format()

    def set_frame(self, frame: Framer | None) -> None:
        """The transport frames lines this way from now on (a WebSocket's subprotocol,
        chosen at its upgrade, before anything is sent)."""
        self._frame = frame
        self._update_wire_format()

    def new_batch_id(self) -> str:
        """A batch reference tag not used before on this connection (IRCv3 batch)."""
        self._batches += 1
        return f"b{self._batches}"

    def _update_wire_format(self) -> None:
        self.wire_format = None if self.kind == TEXT else WireFormat.of(self.caps, self._frame)
        if self._on_wire_format is not None:
            self._on_wire_format(self)

    # -- lines in -----------------------------------------------------------------

    def take(self, raw: bytes) -> Inbound:
        """What the received line `raw` (without its line ending) comes to."""
        if not raw.strip():
            # Nothing to do, but not free: a stream of blank lines is a flood too, and it
            # shows no sign of life (only real commands hold off the ping timeout).
            return self._charge(Inbound(alive=False), DEFAULT_COST)
        # Tags have their own budget (IRCv3 message-tags): the 512 bytes are the line after
        # them. A text session has no tags: a person's '@bob hi' is text.
        tag_bytes = _tag_section(raw) if self.kind != TEXT else 0
        if tag_bytes - 2 > protocol.MAX_CLIENT_TAG_BYTES:
            refusal = self._error(protocol.ERR_INPUTTOOLONG, "Message tags were too long")
            note = f"line with {tag_bytes} bytes of tags refused"
            return self._charge(Inbound(refusal=refusal, note=note), DEFAULT_COST)
        too_long = len(raw) - tag_bytes + 2 > self._max_line_bytes
        # A TYPED line is read as a text session's: long text is cut, not refused.
        if too_long and self.kind == IRC and not _is_typed(raw, tag_bytes):
            return self._charge(self._too_long(len(raw) - tag_bytes + 2), DEFAULT_COST)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            # UTF8ONLY is advertised: refuse rather than guess (IRCv3 standard replies).
            return self._charge(
                Inbound(
                    refusal=self._fail("*", "INVALID_UTF8", "Message rejected: not valid UTF-8"),
                    note="line with invalid UTF-8 refused",
                ),
                DEFAULT_COST,
            )
        turned = False
        if self.kind is None or (line.startswith("/") and self._may_become_text()):
            turned = self.kind == IRC
            self.kind = self._kind_of(line)
            self._update_wire_format()
        if self.kind == TEXT:
            inbound = self._fit_text(self._to_message(line), len(raw) + 2)
            if turned and self.user.nick is not None:
                # `NICK ivan` in capitals, then a slash command: the nick already given
                # registers the person now (a text session needs no USER), then the line.
                first = Message("NICK", [self.user.nick])
                rest = (inbound.message, *inbound.then) if inbound.message else inbound.then
                inbound.message, inbound.then = first, rest
        else:
            inbound = self._to_message(line)
            if inbound.message is not None and inbound.message.command == TYPED:
                inbound = self._fit_text(self._typed(inbound.message), len(raw) + 2)
            elif too_long:
                inbound = self._too_long(len(raw) + 2)
        if self.flood is None:
            return inbound
        # Refused lines cost too: flooding junk is flooding.
        cost = DEFAULT_COST if inbound.message is None else self._cost_of(inbound.message)
        for piece in inbound.then:  # a long line's further pieces (text sessions only)
            cost += self._cost_of(piece)
        return self._charge(inbound, cost)

    def _cost_of(self, msg: Message) -> int:
        spec = self._commands.get(msg.command)
        return DEFAULT_COST if spec is None else spec.cost_of(msg)

    def _too_long(self, size: int) -> Inbound:
        return Inbound(
            refusal=self._error(protocol.ERR_INPUTTOOLONG, "Input line was too long"),
            note=f"line of {size} bytes refused (limit {self._max_line_bytes})",
        )

    def _fit_text(self, inbound: Inbound, size: int) -> Inbound:
        """A text session's line, made to fit. Text for one room or person (plain, /msg,
        /notice, /me) whose relay would pass 512 bytes goes as several messages cut between
        words, as ircish-client sends it (else the relay would be cut short for IRC users);
        any other line of `size` bytes over the limit is refused with the limit."""
        msg = inbound.message
        if msg is None:
            return inbound  # refused anyway (no room, a usage error): say why
        over = size > self._max_line_bytes
        if msg.command not in ("PRIVMSG", "NOTICE"):
            return self._line_too_long(size) if over else inbound
        # The relay's prefix as it will be (a nick may be up to 200 bytes long).
        pieces = slash.split_long_message(msg, len(f":{self.user.prefix}".encode()))
        if len(pieces) < 2:  # it fits, or cannot be cut (a CTCP; targets that fill a line)
            return self._line_too_long(size) if over else inbound
        if "," in msg.params[0]:
            # Each piece would cost once per target: long text goes to one at a time.
            return Inbound(
                refusal=self._fail(
                    "*",
                    "LINE_TOO_LONG",
                    "Text too long for one line to several targets: send it to one at a time",
                )
            )
        if not self.user.registered:
            return inbound  # one "choose a nick first", not one per piece
        return Inbound(pieces[0], then=tuple(pieces[1:]))

    def _line_too_long(self, size: int) -> Inbound:
        text = f"Line too long: {size - 2} bytes, the limit is {self._max_line_bytes - 2}"
        return Inbound(
            refusal=self._fail("*", "LINE_TOO_LONG", text),
            note=f"line of {size} bytes refused (limit {self._max_line_bytes})",
        )

    def _kind_of(self, line: str) -> str:
        """IRC if the first line is a command we know written as IRC clients write it, in
        upper case (CAP, PASS, NICK, USER: every client opens so); else TEXT. A person on
        nc who types `help` or `nick ivan` gets the text mode, and is told about slashes."""
        if line.startswith("/"):
            return TEXT
        if line.startswith("@"):  # a client's tags (CAP LS with a label, say)
            line = line.partition(" ")[2].lstrip(" ")
        word = line.split(" ", 1)[0]
        if not (word.isupper() and word in self._commands):
            return TEXT
        try:
            protocol.parse(line)
        except ProtocolError:
            return TEXT
        return IRC

    def _may_become_text(self) -> bool:
        """A person whose first line was taken for IRC (`HELP` in capitals) and who then types
        a slash command: no IRC client sends a line starting with '/', so until registration
        or CAP, the session turns to text."""
        return (
            self.kind == IRC
            and not self.user.registered
            and not self.cap_negotiating
            and not self.caps
            and self.password is None
        )

    def _to_message(self, line: str) -> Inbound:
        if "\0" in line or "\r" in line:
            # Refused before translation, so no session kind can smuggle them on.
            why = "Line refused: it contains NUL or CR"
            if self.kind == TEXT:
                refusal = self._fail("*", "INVALID_LINE", why)
            else:
                word = line.split(" ", 1)[0].upper()
                refusal = self._error(protocol.ERR_UNKNOWNERROR, safe_param(word), why)
            return Inbound(refusal=refusal, note="line with NUL or CR refused")
        if self.kind == TEXT:
            return self._text_to_message(line)
        try:
            msg = protocol.parse(line)
        except ProtocolError as exc:
            word = line.split(" ", 1)[0].upper()
            if word in self._commands:
                refusal = self._error(protocol.ERR_UNKNOWNERROR, word, f"Malformed line: {exc}")
            else:
                refusal = self._error(
                    protocol.ERR_UNKNOWNCOMMAND, safe_param(word), "Unknown command"
                )
            inbound = Inbound(refusal=refusal, note=f"malformed line refused: {exc}")
            if line.startswith("@") and "labeled-response" in self.caps:
                raw_tags = line[1:].partition(" ")[0]
                inbound.label = self._label_from(protocol.parse_tags(raw_tags))
            return inbound
        if msg.tags:
            msg = self._allowed_tags(msg)
        return Inbound(msg)

    def _allowed_tags(self, msg: Message) -> Message:
        """The tags a client may send with what it negotiated: client tags (`+typing`) with
        message-tags, `label` with labeled-response. Others are dropped, never relayed."""
        kept = {}
        if "message-tags" in self.caps:
            kept = {
                key: value
                for key, value in msg.tags.items()
                if key.startswith("+") and protocol.valid_tag_key(key)
            }
        label = self._label_from(msg.tags)
        if label is not None:
            kept["label"] = label
        return Message(msg.command, msg.params, msg.prefix, kept)

    def _label_from(self, tags: Mapping[str, str]) -> str | None:
        """The `label` tag a client with labeled-response sent, if it is one (1-64 bytes)."""
        label = tags.get("label")
        if label is None or "labeled-response" not in self.caps:
            return None
        return label if 0 < len(label.encode()) <= MAX_LABEL_BYTES else None

    def _text_to_message(self, line: str) -> Inbound:
        """A text session's line: a slash command, or plain text for the current room."""
        room = self.user.current_room
        if line.startswith("/") and not line.startswith("//"):
            switched = self._switch(line)
            if switched is not None:
                return switched
            try:
                return Inbound(slash.translate(line, room))
            except (slash.SlashError, ProtocolError) as exc:
                return Inbound(refusal=self._fail("*", "USAGE", str(exc)))
        if line.startswith("//"):
            line = line[1:]
        elif not self.user.registered and _names_a_slash_command(line):
            # `nick ivan`, `help`: a command without its slash, before there is a room to
            # talk in. Say how to write it rather than "register first".
            return Inbound(
                refusal=self._fail(
                    "*", "USAGE", f"Commands start with a slash: type /{line[:_ECHO_CHARS]}"
                )
            )
        if room is None and self.user.registered:
            return Inbound(
                refusal=self._fail("PRIVMSG", "NO_ROOM", "You are in no room: /join #room")
            )
        return Inbound(Message("PRIVMSG", [room or "*", line]))

    def _typed(self, msg: Message) -> Inbound:
        """`TYPED <#room|nick|*> :<line>`: a line as a person typed it in an IRC client
        that keeps no slash table of its own (the web client), read as a text session's
        line is: a slash command through the one table (ircish/slash.py), else text for
        the conversation named (`*`: none), cut between words where one line would not
        hold it. A usage error is `FAIL TYPED USAGE` with the same hint as everywhere;
        `label` (labeled-response) carries through either way."""
        label = msg.tags.get("label")
        if len(msg.params) != 2 or not msg.params[1].strip():
            text = "usage: TYPED <#room|nick|*> :<text or /command>"
            return Inbound(refusal=self._fail(TYPED, "USAGE", text), label=label)
        target, line = msg.params
        target = None if target == "*" else target
        try:
            if line.startswith("/"):
                meant = slash.translate(line, target)
            elif target is None:
                raise slash.SlashError("no conversation to send to; /join a room first")
            else:
                meant = Message("PRIVMSG", [target, line])
        except (slash.SlashError, ProtocolError) as exc:
            return Inbound(refusal=self._fail(TYPED, "USAGE", str(exc)), label=label)
        if label is not None:
            meant = Message(meant.command, meant.params, tags={"label": label})
        return Inbound(meant)

    def _switch(self, line: str) -> Inbound | None:
        """`/switch #room`, or `/join #room` of a room the person is in already: that room
        becomes the current one, and they are told. None for any other line."""
        name, _, args = line[1:].partition(" ")
        name, words = name.lower(), args.split()
        # `/join #a key` of a room one is in is a switch too; `/join #a,#b` is a join.
        if name not in ("switch", "join") or (name == "join" and not 1 <= len(words) <= 2):
            return None
        if name == "join":
            words = words[:1]
        if not words or len(words) > 1:
            rooms = ", ".join(room.name for room in self.user.rooms.values()) or "no room"
            usage = slash.SLASH_COMMANDS["switch"].usage
            return Inbound(refusal=self._fail("*", "USAGE", f"{usage} (you are in {rooms})"))
        target = slash.with_room_prefix(words[0])
        room = self.user.rooms.get(protocol.casefold(target))
        if room is None:
            if name == "join":
                return None  # a room to join
            return Inbound(
                refusal=self._fail("*", "NOT_JOINED", f"You are not in {target}: /join {target}")
            )
        self.user.chosen_room = room.folded
        return Inbound(refusal=self._note("SWITCH", f"Now talking in {room.name}"))

    def _charge(self, inbound: Inbound, cost: int) -> Inbound:
        """Flood control: how long the client waits before this line counts (fakelag). A
        person is told once when it starts, not on every line."""
        if self.flood is not None and cost:
            try:
                inbound.wait = self.flood.charge(cost)
            except ExcessFlood:
                inbound.excess_flood = True
            if inbound.wait <= 0:
                self._told_slowed = False
            elif self.kind == TEXT and not self._told_slowed:
                self._told_slowed = True
                inbound.notice = self._note(
                    "SLOWED",
                    "You are sending faster than the server takes lines, so each line now "
                    f"waits its turn; {self.flood.disconnect_after:.0f} s behind, you are "
                    "disconnected",
                )
        return inbound

    def _error(self, numeric: str, *params: str) -> Message:
        return Message(numeric, [self.user.nick or "*", *params], self.server_name)

    def _fail(self, command: str, code: str, text: str) -> Message:
        return Message("FAIL", [command, code, text], self.server_name)

    def _note(self, code: str, text: str) -> Message:
        return Message("NOTE", ["*", code, text], self.server_name)

    # -- messages out ---------------------------------------------------------------

    def encode(self, msg: Message) -> bytes:
        """The bytes this client gets for `msg`: IRC framed for its transport, or the one
        human line a text session shows (b"" if a person needn't see it). Raises
        ProtocolError for a message that cannot be formatted."""
        if self.kind == TEXT:
            lines = self._tables.take(msg, self.user.nick)
            if lines is None:
                line = render(msg, self.user.nick)
                lines = [] if line is None else [line]
            if not lines:
                return b""
            # A line from history shows when it was said, not when it is sent.
            said = msg.tags.get("time") if msg.tags else None
            stamp = self._stamp() if said is None else _stamp_of(said)
            each = [f"{stamp}{line}\r\n".encode() for line in lines]
            if self._frame is not None:  # a message-oriented transport: a frame per line
                each = [self._frame(data) for data in each]
            return b"".join(each)
        data = msg.to_bytes()
        return data if self._frame is None else self._frame(data)


def _stamp_of(tag: str) -> str:
    """A text line's stamp for a `time` tag: `HH:MM ` local time, with the date before it
    when that was not today."""
    ms = parse_time_tag(tag)
    if ms is None:
        return time.strftime(_STAMP_FORMAT)
    when = time.localtime(ms // 1000)
    if when[:3] == time.localtime()[:3]:
        return time.strftime(_STAMP_FORMAT, when)
    return time.strftime("%Y-%m-%d " + _STAMP_FORMAT, when)


def _is_typed(raw: bytes, tag_bytes: int) -> bool:
    """Whether the IRC line `raw` (its tags `tag_bytes` long) is a TYPED command."""
    return raw[tag_bytes : tag_bytes + len(_TYPED_WORD)].upper() == _TYPED_WORD


def _tag_section(raw: bytes) -> int:
    """Bytes of an IRC line's tags with their '@' and the space after them (0: none)."""
    if not raw.startswith(b"@"):
        return 0
    space = raw.find(b" ")
    return len(raw) if space < 0 else space + 1


def _names_a_slash_command(line: str) -> bool:
    word = line.split(" ", 1)[0].lower()
    return word in slash.SLASH_COMMANDS
