"""History: CHATHISTORY (IRCv3 draft/chathistory), and the lines a joiner is shown.

A room's history is read from its in-memory window first and from the store for what is
older (`Room.read_history`); the store's writer is never waited for. Only members read a
room's history; anyone else, a server operator too, is told the target is invalid, exactly
as for a room that does not exist, so a secret or keyed room leaks nothing.

Lines come back as they were relayed: the same msgid and `time`, the sender's client tags,
in the order the room's members saw them. Without draft/event-playback a client gets the
messages only (PRIVMSG, NOTICE); with it, joins, parts, quits, kicks, nick, topic and mode
changes and TAGMSG too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ircish import protocol as p
from ircish.commands import Context, IRCError, command
from ircish.events import parse_time_tag, relay_tags, time_tag
from ircish.locks import held
from ircish.protocol import Message, casefold, valid_nick
from ircish.store import BOT_TAG, Query, StoredLine
from ircish.world import Room

#: What a client without draft/event-playback gets of history, and what a replay on join
#: shows: what people said.
MESSAGES = frozenset({"PRIVMSG", "NOTICE"})
#: With draft/event-playback: every kind of line a room keeps.
EVENTS = frozenset(
    {"PRIVMSG", "NOTICE", "TAGMSG", "JOIN", "PART", "QUIT", "KICK", "NICK", "TOPIC", "MODE"}
)
#: ISUPPORT MSGREFTYPES, in our order of preference.
MSGREFTYPES = ("timestamp", "msgid")
#: Parameters each subcommand takes, the subcommand included.
_SHAPES = {"LATEST": 4, "BEFORE": 4, "AFTER": 4, "AROUND": 4, "BETWEEN": 5, "TARGETS": 4}
SYNTAX = (
    "LATEST|BEFORE|AFTER|AROUND <target> <reference> <limit> | "
    "BETWEEN <target> <reference> <reference> <limit> | "
    "TARGETS <timestamp> <timestamp> <limit>"
)


def isupport_tokens(ctx: Context) -> list[str]:
    """CHATHISTORY= (the most lines an answer holds) and MSGREFTYPES, when history is on."""
    history = ctx.config.history
    if not history.enabled:
        return []
    return [f"CHATHISTORY={history.chathistory_max}", f"MSGREFTYPES={','.join(MSGREFTYPES)}"]


def kinds_for(caps: frozenset[str]) -> frozenset[str]:
    """The kinds of line a client with `caps` gets from history."""
    if "draft/event-playback" not in caps:
        return MESSAGES
    return EVENTS if "message-tags" in caps else EVENTS - {"TAGMSG"}


def history_message(
    line: StoredLine, caps: frozenset[str], batch: str | None = None, stamp: bool = False
) -> Message:
    """`line` as a client with `caps` gets it: its own msgid and time tags where the client
    takes them, in `batch`. `stamp`: the text starts with the line's time, for a client
    that cannot see a `time` tag (replay on join without server-time)."""
    bot = BOT_TAG in line.tags
    tags = relay_tags(caps, line.msgid, line.time, line.account, bot, line.tags)
    if batch is not None:
        tags["batch"] = batch
    params = list(line.params)
    if stamp and line.command in MESSAGES and len(params) >= 2:
        params[1] = _stamped(params[1], line.time)
    return Message(line.command, params, line.prefix, tags)


def _stamped(text: str, ms: int) -> str:
    """`[15:04] text` (UTC; with the date when it was not today); inside a CTCP ACTION."""
    when = time.gmtime(ms // 1000)
    today = time.gmtime()
    pattern = "%H:%M" if when[:3] == today[:3] else "%Y-%m-%d %H:%M"
    label = f"[{time.strftime(pattern, when)} UTC] "
    if text.startswith("\x01ACTION "):
        return "\x01ACTION " + label + text[len("\x01ACTION ") :]
    return label + text


# -- replay on join --------------------------------------------------------------------------


def replay_lines_locked(ctx: Context, room: Room) -> list[Message]:
    """The room's last lines for a joiner whose client cannot ask for them (no
    draft/chathistory; history.replay_on_join of them): in a `chathistory` batch for a
    client with batch, else between two notices (`-- 20 earlier messages in #room --` ...
    `-- now --`), each line with its own time: the `time` tag, or in its text. Built under
    the room's lock, right after the names, so nothing said since comes before it."""
    assert held(room.lock)
    caps = ctx.session.caps
    count = ctx.config.history.replay_on_join
    if "draft/chathistory" in caps or not count:
        return []
    lines = room.recent_locked(count, MESSAGES)
    if not lines:
        return []
    if "batch" in caps and not ctx.session.is_text:
        stamp = "server-time" not in caps  # a batch says the lines are old, not when
        return batched(
            ctx,
            ["chathistory", room.name],
            lambda ref: [history_message(line, caps, ref, stamp) for line in lines],
        )
    return marked_lines(ctx, room.name, lines, "-- now --")


def batched(
    ctx: Context, kind: list[str], make: Callable[[str], Iterable[Message]]
) -> list[Message]:
    """`BATCH +ref <kind...>`, the lines `make(ref)` gives (each tagged with the ref),
    `BATCH -ref` (IRCv3 batch), with a reference new on this connection."""
    ref = ctx.session.new_batch_id()
    return [
        Message("BATCH", [f"+{ref}", *kind], ctx.server.name),
        *make(ref),
        Message("BATCH", [f"-{ref}"], ctx.server.name),
    ]


def marked_lines(ctx: Context, room: str, lines: list[StoredLine], end: str) -> list[Message]:
    """Old lines for a client without batch, or a person: between two notices from the
    server (`-- 3 earlier messages in #room --` ... `end`), each with its own time: its
    `time` tag where the client takes it (a text session shows it as the line's stamp),
    else in its text. `-- no earlier messages in #room --` alone when there are none."""
    if not lines:
        return [Message("NOTICE", [room, f"-- no earlier messages in {room} --"], ctx.server.name)]
    caps = ctx.session.caps | {"server-time"} if ctx.session.is_text else ctx.session.caps
    stamp = "server-time" not in caps
    noun = "message" if len(lines) == 1 else "messages"
    return [
        Message("NOTICE", [room, f"-- {len(lines)} earlier {noun} in {room} --"], ctx.server.name),
        *(history_message(line, caps, stamp=stamp) for line in lines),
        Message("NOTICE", [room, end], ctx.server.name),
    ]


# -- CHATHISTORY -----------------------------------------------------------------------------


class Refusal(Exception):
    """A FAIL CHATHISTORY <code> <params...> :<text>."""

    def __init__(self, code: str, *params: str) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


@dataclass(frozen=True, slots=True)
class Reference:
    """A resolved `msgid=` (its line's seq and time) or `timestamp=` (a time only)."""

    time: int
    seq: int | None = None

    def after(self, inclusive: bool = False) -> dict[str, int | None]:
        """Query edges for lines after this reference (from it, if `inclusive`)."""
        if self.seq is not None:
            return {"after_seq": self.seq - 1 if inclusive else self.seq}
        return {"after_time": self.time - 1 if inclusive else self.time}

    def before(self) -> dict[str, int | None]:
        if self.seq is not None:
            return {"before_seq": self.seq}
        return {"before_time": self.time}

    def precedes(self, other: Reference) -> bool:
        if self.seq is not None and other.seq is not None:
            return self.seq < other.seq
        return self.time < other.time


@command("CHATHISTORY", min_params=1, syntax=SYNTAX, cost=2)
def chathistory(ctx: Context, msg: Message) -> None:
    """Read a room's earlier lines (IRCv3 draft/chathistory)."""
    sub = msg.params[0].upper()
    try:
        if sub not in _SHAPES:
            raise Refusal("INVALID_PARAMS", p.safe_param(msg.params[0]))
        if len(msg.params) != _SHAPES[sub]:
            raise Refusal("INVALID_PARAMS", sub)
        limit = _limit(ctx, sub, msg.params[-1])
        if sub == "TARGETS":
            _targets(ctx, msg.params[1], msg.params[2], limit)
            return
        _history(ctx, sub, msg.params[1], msg.params[2:-1], limit)
    except Refusal as refusal:
        ctx.fail("CHATHISTORY", refusal.code, *refusal.params, _FAIL_TEXT[refusal.code])


_FAIL_TEXT = {
    "INVALID_PARAMS": f"Usage: CHATHISTORY {SYNTAX}",
    "INVALID_TARGET": "No such room, or you are not in it",
    "INVALID_MSGREFTYPE": "A reference is *, msgid=<id> or timestamp=<time>",
}


def _limit(ctx: Context, sub: str, text: str) -> int:
    """The limit asked for, at most CHATHISTORY= (a bigger one is cut, as ergo does)."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise Refusal("INVALID_PARAMS", sub, p.safe_param(text))
    return min(int(text), ctx.config.history.chathistory_max)


def _history(ctx: Context, sub: str, target: str, refs: list[str], limit: int) -> None:
    room = ctx.world.find_room(target)
    if room is None:
        if valid_nick(target, ctx.config.limits.nick_length) and "#" not in target:
            # Private history comes with accounts (nicks are not identities): nothing yet.
            _send_batch(ctx, target, [], sub)
            return
        raise Refusal("INVALID_TARGET", sub, p.safe_param(target))
    kinds = kinds_for(ctx.session.caps)
    try:
        resolved = [_reference(ctx, room, sub, text) for text in refs]
        if any(ref is _UNKNOWN for ref in resolved):
            lines: list[StoredLine] = []  # a msgid nobody knows: nothing around it (ergo)
        else:
            lines = _read(ctx, room, sub, resolved, limit, kinds)
    except IRCError as exc:  # not a member
        raise Refusal("INVALID_TARGET", sub, p.safe_param(target)) from exc
    _send_batch(ctx, target, lines, sub, refs)


#: A `msgid=` that names no line of the room.
_UNKNOWN = Reference(-1)


def _reference(ctx: Context, room: Room, sub: str, text: str) -> Reference | None:
    """A reference read: None for `*` (LATEST only); `_UNKNOWN` for a msgid not kept."""
    if text == "*" and sub == "LATEST":
        return None
    kind, _, value = text.partition("=")
    if kind == "timestamp":
        when = parse_time_tag(value)
        if when is None:
            raise Refusal("INVALID_PARAMS", sub, p.safe_param(text))
        return Reference(when)
    if kind == "msgid" and value:
        line = room.find_line(ctx.user, value, ctx.world.store)
        return _UNKNOWN if line is None else Reference(line.time, line.seq)
    raise Refusal("INVALID_MSGREFTYPE", sub, room.name, p.safe_param(text))


def _read(
    ctx: Context,
    room: Room,
    sub: str,
    refs: list[Reference | None],
    limit: int,
    kinds: frozenset[str],
) -> list[StoredLine]:
    store = ctx.world.store
    base = Query(limit, commands=kinds)

    def read(**edges: object) -> list[StoredLine]:
        return room.read_history(ctx.user, dataclasses.replace(base, **edges), store)

    ref = refs[0]
    if sub == "LATEST":
        return read() if ref is None else read(**ref.after())
    assert ref is not None
    if sub == "BEFORE":
        return read(**ref.before())
    if sub == "AFTER":
        return read(**ref.after(), newest=False)
    if sub == "AROUND":
        # Half the limit before the reference, then the reference and what follows.
        earlier = read(**ref.before(), limit=limit // 2) if limit > 1 else []
        later = read(**ref.after(inclusive=True), newest=False, limit=limit - len(earlier))
        return earlier + later
    other = refs[1]
    assert other is not None
    if ref.precedes(other):  # BETWEEN forwards: the first `limit` after `ref`
        return read(**ref.after(), **other.before(), newest=False)
    return read(**other.after(), **ref.before())  # backwards: the last `limit` before it


def _send_batch(
    ctx: Context, target: str, lines: list[StoredLine], sub: str, refs: Sequence[str] = ()
) -> None:
    """A `chathistory` batch naming the target as the client wrote it (an empty one when
    there is nothing); for a person (the text mode's /history) or a client without
    batch, the lines between markers, each with its own time."""
    caps = ctx.session.caps
    if ctx.session.is_text or "batch" not in caps:
        # Without a batch to say they are old, the lines come between markers, each with
        # its own time (a tag, or in the text), as the replay on join shows them.
        up_to_now = sub == "LATEST" and tuple(refs) == ("*",)
        end = "-- now --" if up_to_now else f"-- end of earlier messages in {target} --"
        for msg in marked_lines(ctx, target, lines, end):
            ctx.send(msg)
        return
    batch = batched(
        ctx,
        ["chathistory", target],
        lambda ref: [history_message(line, caps, ref) for line in lines],
    )
    for msg in batch:
        ctx.send(msg)


def _targets(ctx: Context, first: str, second: str, limit: int) -> None:
    """CHATHISTORY TARGETS: the user's rooms whose latest message falls strictly between
    the two times, oldest first, in a `draft/chathistory-targets` batch."""
    bounds = []
    for text in (first, second):
        kind, _, value = text.partition("=")
        when = parse_time_tag(value) if kind == "timestamp" else None
        if when is None:
            raise Refusal("INVALID_PARAMS", "TARGETS", p.safe_param(text))
        bounds.append(when)
    low, high = sorted(bounds)
    found: list[tuple[int, str]] = []
    store = ctx.world.store
    for room in list(ctx.user.rooms.values()):
        try:
            last = room.read_history(ctx.user, Query(1, commands=MESSAGES), store)
        except IRCError:
            continue  # left it meanwhile
        if last and low < last[-1].time < high:
            found.append((last[-1].time, room.name))
    found.sort(key=lambda item: (item[0], casefold(item[1])))

    def targets(ref: str | None) -> list[Message]:
        tags = {} if ref is None else {"batch": ref}
        return [
            Message("CHATHISTORY", ["TARGETS", name, time_tag(when)], ctx.server.name, tags)
            for when, name in found[:limit]
        ]

    batch = "batch" in ctx.session.caps
    for msg in batched(ctx, ["draft/chathistory-targets"], targets) if batch else targets(None):
        ctx.send(msg)
