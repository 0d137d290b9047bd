"""Relayed events, and the wire formats they are delivered in.

An `Event` is one thing users are told about: a message, a join, a part, a kick, a nick
change, a quit, a topic or mode change. It gets its time and its id (`msgid`) once, when the
server accepts it, and carries the sender's account (None until accounts exist), so every
receiver of one event sees the same time and id, and the history store can keep it by them.

Receivers differ in what they asked for (capabilities that add tags) and in how their
transport frames a line. That pair is a `WireFormat`. An event's bytes are made once per
wire format among its receivers and kept for that broadcast, never once per receiver (ergo
irc/message_cache.go). Wire formats are interned, so the cache is keyed by identity.
A text session (nc) gets no wire format: each person's line is rendered for them.
"""

from __future__ import annotations

import base64
import datetime
import os
import threading
import time
from collections.abc import Callable, Iterable

from ircish.protocol import Message, format_tags

#: Capabilities that change what a relayed event looks like, or whether it is sent at all
#: (IRCv3): server-time adds `time`; message-tags adds `msgid`, `bot` and the client-only
#: `+tags`, and lets TAGMSG through; account-tag adds `account`; extended-join adds the
#: account and realname to JOIN; away-notify, setname, invite-notify and account-notify let
#: their events
#: through. Which caps the server offers is the capability table's business (ircish/caps.py).
RELAY_CAPS = frozenset(
    {
        "server-time",
        "message-tags",
        "account-tag",
        "extended-join",
        "away-notify",
        "setname",
        "invite-notify",
        "account-notify",
    }
)

Framer = Callable[[bytes], bytes]


class WireFormat:
    """How one client's lines look: the relay capabilities it has (`RELAY_CAPS`), and its
    transport's framing (None: lines go out as they are, CRLF-terminated, as on TCP and TLS).
    Get them from `WireFormat.of`, which returns one shared object per distinct pair."""

    __slots__ = ("caps", "frame")
    _known: dict[tuple[frozenset[str], Framer | None], WireFormat] = {}

    def __init__(self, caps: frozenset[str], frame: Framer | None) -> None:
        self.caps = caps
        self.frame = frame

    @classmethod
    def of(cls, caps: Iterable[str], frame: Framer | None = None) -> WireFormat:
        relay_caps = RELAY_CAPS.intersection(caps)
        key = (relay_caps, frame)
        # dict.setdefault is atomic, so two threads asking at once get one object.
        return cls._known.get(key) or cls._known.setdefault(key, cls(relay_caps, frame))

    def __repr__(self) -> str:
        return f"<WireFormat {sorted(self.caps)} {getattr(self.frame, '__name__', 'lines')}>"


#: Lines as they are, with no tags: what every client gets until it asks for more.
PLAIN = WireFormat.of(())

# msgids: unique across restarts and threads without coordination. Each thread that accepts
# events draws a random prefix once and counts from there, so no counter is shared (a shared
# itertools.count is atomic under the GIL, but not on every free-threaded build).
_per_thread = threading.local()


def _next_id() -> tuple[str, int]:
    try:
        state = _per_thread.state
    except AttributeError:
        state = _per_thread.state = [base64.b32encode(os.urandom(5)).decode("ascii").lower(), 0]
    state[1] += 1
    return state[0], state[1]


def now() -> float:
    """time.time(), or the time of the shared event being applied on this thread (a
    cluster's bus thread, ircish/cluster: every node then gives an event the same time)."""
    fixed = getattr(_per_thread, "fixed", None)
    return time.time() if fixed is None else fixed[0]


def fixed_clock(when: float, prefix: str) -> None:
    """From now on this thread's events get time `when` and msgids `prefix` + a count:
    what every node of a cluster gives the events of one shared entry. `free_clock` ends it."""
    _per_thread.fixed = [when, prefix, 0]


def free_clock() -> None:
    _per_thread.fixed = None


def acting_thread() -> int:
    """The thread a reply belongs to: this one, or, while a cluster's bus thread runs a
    command that a reader thread is waiting for (`act_for`), that reader thread (its
    labeled answer gathers what the command causes)."""
    acting = getattr(_per_thread, "acting", None)
    return threading.get_ident() if acting is None else acting


def act_for(thread: int | None) -> None:
    _per_thread.acting = thread


def gathering(on: bool) -> None:
    """This thread is (or no longer is) gathering a labeled answer (connection.py): what
    its command causes must come back to it before it answers."""
    _per_thread.gathering = on


def is_gathering() -> bool:
    return getattr(_per_thread, "gathering", False)


def millis(when: float) -> int:
    """`when` (time.time()) in whole milliseconds, as the `time` tag shows it (history
    compares times in these, so a time copied from a tag matches its line)."""
    seconds = int(when)
    return seconds * 1000 + int((when - seconds) * 1000)


def server_time(when: float) -> str:
    """The `time` tag: ISO 8601 UTC with milliseconds (IRCv3 server-time)."""
    return time_tag(millis(when))


def time_tag(ms: int) -> str:
    """The `time` tag of a time in whole milliseconds (a stored line's)."""
    global _last_second
    seconds, ms = divmod(ms, 1000)
    last, text = _last_second
    if last != seconds:  # once a second: the date and time to the second
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second = (seconds, text)  # one tuple, swapped whole: safe between threads
    return f"{text}.{ms:03d}Z"


def parse_time_tag(text: str) -> int | None:
    """A `time` tag's value (`2026-12-02T15:04:05.123Z`) in whole milliseconds; None if it
    is not one (CHATHISTORY's `timestamp=`)."""
    if not text.endswith("Z"):
        return None
    try:
        when = datetime.datetime.strptime(text[:-1], "%Y-%m-%dT%H:%M:%S.%f")
    except ValueError:
        try:
            when = datetime.datetime.strptime(text[:-1], "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return None
    when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp()) * 1000 + when.microsecond // 1000


def relay_tags(
    caps: frozenset[str],
    msgid: str,
    ms: int,
    account: str | None,
    bot: bool,
    tags: dict[str, str],
) -> dict[str, str]:
    """The tags a receiver with relay caps `caps` sees on a relayed line, live or from
    history: server tags first (the spec's order), then the sender's client tags (those of
    `tags` that start with '+')."""
    out: dict[str, str] = {}
    tagged = "message-tags" in caps
    if tagged:
        out["msgid"] = msgid
    if "server-time" in caps:
        out["time"] = time_tag(ms)
    if "account-tag" in caps and account is not None:
        out["account"] = account
    if tagged:
        if bot:
            out["bot"] = ""
        out.update((k, v) for k, v in tags.items() if k.startswith("+"))
    return out


#: The last second `time_tag` formatted, and its text.
_last_second: tuple[int, str] = (-1, "")


class Event:
    """One relayed message with its time, id, account and targets (room names or a nick).

    Its plain bytes (`data`: no tags, lines as they are) are made when it is created, before
    anyone gets it: a message that cannot be formatted fails there and reaches nobody, and
    most receivers take those bytes after one identity test (`Connection.deliver`).
    Other wire formats are made on first use and kept for the next receiver (`wire`).

    `needs` names a capability without which a receiver gets nothing (b""): message-tags
    for TAGMSG, away-notify for AWAY, setname for SETNAME, invite-notify for an INVITE
    shown to a room's operators. Text sessions (people) never get those. `realname` is a
    JOIN's, for extended-join; `bot` marks a sender with user mode +B (the `bot` tag)."""

    __slots__ = (
        "_bare",
        "_id",
        "_more",
        "account",
        "bot",
        "data",
        "message",
        "needs",
        "realname",
        "targets",
        "time",
    )

    def __init__(
        self,
        message: Message,
        targets: tuple[str, ...],
        account: str | None = None,
        *,
        needs: str | None = None,
        realname: str | None = None,
        bot: bool = False,
    ) -> None:
        self.message = message
        self.targets = targets
        self.account = account
        self.needs = needs
        self.realname = realname
        self.bot = bot
        fixed = getattr(_per_thread, "fixed", None)
        if fixed is None:
            self.time = time.time()
            self._id = _next_id()
        else:  # a cluster's shared event: the same time and msgid on every node
            self.time = fixed[0]
            fixed[2] += 1
            self._id = (fixed[1], fixed[2])
        #: The line without tags, made now: this raises ProtocolError before any delivery.
        #: Every wire format but extended-join's is its tags in front of these bytes.
        bare = (
            message
            if not message.tags
            else Message(message.command, message.params, message.prefix)
        )
        self._bare = bare.to_bytes()
        #: The PLAIN bytes (none for an event only some caps get).
        self.data = self._bare if needs is None else b""
        self._more: dict[WireFormat, bytes] | None = None

    @property
    def msgid(self) -> str:
        """Fixed when the event is accepted; its text is made when first asked for."""
        prefix, number = self._id
        return f"{prefix}{number:x}"

    def wire(self, fmt: WireFormat) -> bytes:
        """This event's bytes in `fmt`, made on first use and kept for the next receiver."""
        if fmt is PLAIN:
            return self.data
        more = self._more
        if more is None:
            more = self._more = {}
        data = more.get(fmt)
        if data is None:
            data = more[fmt] = self._format(fmt)
        return data

    def formats_made(self) -> int:
        """How many times this event was formatted (one per distinct wire format)."""
        return 1 + len(self._more or ())

    def reaches(self, caps: frozenset[str]) -> bool:
        """Whether a receiver with these relay caps gets this event at all."""
        return self.needs is None or self.needs in caps

    def tags_for(self, caps: frozenset[str]) -> dict[str, str]:
        """The tags a receiver with relay caps `caps` sees."""
        if not caps:
            return {}
        return relay_tags(
            caps, self.msgid, millis(self.time), self.account, self.bot, self.message.tags
        )

    def message_for(self, caps: frozenset[str]) -> Message:
        """The message a receiver with relay caps `caps` gets (with its tags, and the
        extended JOIN where asked for)."""
        msg = self.message
        params = msg.params
        if self.realname is not None and "extended-join" in caps:
            params = (*params, self.account or "*", self.realname)
        if caps or msg.tags:  # (the message's own tags go only with message-tags)
            msg = Message(msg.command, params, msg.prefix, self.tags_for(caps))
        return msg

    def _format(self, fmt: WireFormat) -> bytes:
        caps = fmt.caps
        if not self.reaches(caps):
            return b""
        if self.realname is not None and "extended-join" in caps:
            data = self.message_for(caps).to_bytes()
        else:  # the tags in front of the bare line: its text is not formatted again
            tags = self.tags_for(caps)
            data = format_tags(tags).encode("utf-8") + b" " + self._bare if tags else self._bare
        return data if fmt.frame is None else fmt.frame(data)

    def __repr__(self) -> str:
        return f"<Event {self.msgid} {self.message.command} {self.targets}>"
