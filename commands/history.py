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
from typing import NamedTuple, Protocol

from ircish import protocol as p
from ircish.commands import Context, IRCError, command
from ircish.events import millis, parse_time_tag, relay_tags, time_tag
from ircish.locks import held
from ircish.protocol import Message, casefold, valid_nick
from ircish.store import ANONYMOUS, BOT_TAG, Query, StoredLine, private_party, private_target
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


class Source(Protocol):
    """Where one CHATHISTORY target's lines are read: a room, or a private conversation."""

    name: str

    def find(self, msgid: str) -> StoredLine | None: ...

    def read(self, query: Query) -> list[StoredLine]: ...


class RoomSource:
    """A room's history, for a member (IRCError otherwise): window first, then the store."""

    def __init__(self, ctx: Context, room: Room) -> None:
        self.name = room.name
        self._room, self._reader, self._store = room, ctx.user, ctx.world.store

    def find(self, msgid: str) -> StoredLine | None:
        return self._room.find_line(self._reader, msgid, self._store)

    def read(self, query: Query) -> list[StoredLine]:
        return self._room.read_history(self._reader, query, self._store)


class PrivateSource:
    """The private lines between the reader's account and another, read from the store
    once the writer has written what was handed to it (a line said a moment ago is there),
    within retention."""

    def __init__(self, ctx: Context, name: str, target: str, flush: bool = True) -> None:
        self.name = name
        self._target = target
        self._store = ctx.world.store
        max_age = ctx.config.history.max_age_seconds
        self._since = None if max_age is None else millis(time.time() - max_age)
        if flush:
            ctx.world.private_written(target, PRIVATE_FLUSH_SECONDS)

    def find(self, msgid: str) -> StoredLine | None:
        return None if self._store is None else self._store.find(self._target, msgid)

    def read(self, query: Query) -> list[StoredLine]:
        if self._store is None:
            return []
        return self._store.select(self._target, dataclasses.replace(query, since=self._since))


#: How long a private CHATHISTORY waits at most for the writer to write what it has.
PRIVATE_FLUSH_SECONDS = 2.0


def private_source(ctx: Context, target: str) -> Source | None:
    """The conversation between the reader's account and `target`: a nick online (its
    account, or the nick itself if not logged in), or else an account's name, or a nick
    that was not logged in. None when the reader is not logged in (nothing is kept for
    them) or `target` cannot be a nick."""
    me = ctx.user.account
    if me is None or not ctx.config.history.enabled:
        return None
    anonymous = target.startswith(ANONYMOUS)  # `~nick`, as TARGETS names one (see there)
    nick = target[len(ANONYMOUS) :] if anonymous else target
    if not valid_nick(nick, ctx.config.limits.nick_length):
        return None
    online = None if anonymous else ctx.world.find_user(nick)
    if online is not None:
        other = private_party(online.account, online.nick)
    else:
        state = None if anonymous else ctx.world.accounts.get(nick)
        other = private_party(None if state is None else state.name, nick)
    return PrivateSource(ctx, target, private_target(casefold(me), other))


def _history(ctx: Context, sub: str, target: str, refs: list[str], limit: int) -> None:
    room = ctx.world.find_room(target)
    source: Source | None = None if room is None else RoomSource(ctx, room)
    if source is None:
        source = private_source(ctx, target)
    if source is None:
        if valid_nick(target, ctx.config.limits.nick_length) and "#" not in target:
            # A nick that is no account, or a reader not logged in: nothing is kept.
            _send_batch(ctx, target, [], sub)
            return
        raise Refusal("INVALID_TARGET", sub, p.safe_param(target))
    kinds = kinds_for(ctx.session.caps)
    try:
        resolved = [_reference(source, sub, text) for text in refs]
        if any(ref is _UNKNOWN for ref in resolved):
            lines: list[StoredLine] = []  # a msgid nobody knows: nothing around it (ergo)
        else:
            lines = _read(source, sub, resolved, limit, kinds)
    except IRCError as exc:  # not a member
        raise Refusal("INVALID_TARGET", sub, p.safe_param(target)) from exc
    _send_batch(ctx, target, lines, sub, refs)


#: A `msgid=` that names no line of the room.
_UNKNOWN = Reference(-1)


def _reference(source: Source, sub: str, text: str) -> Reference | None:
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
        line = source.find(value)
        return _UNKNOWN if line is None else Reference(line.time, line.seq)
    raise Refusal("INVALID_MSGREFTYPE", sub, source.name, p.safe_param(text))


def _read(
    source: Source,
    sub: str,
    refs: list[Reference | None],
    limit: int,
    kinds: frozenset[str],
) -> list[StoredLine]:
    base = Query(limit, commands=kinds)

    def read(**edges: object) -> list[StoredLine]:
        return source.read(dataclasses.replace(base, **edges))

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


class Conversation(NamedTuple):
    """One of the user's private conversations: the name a client reads it by, its
    history target, and the time of its newest line."""

    name: str
    target: str
    newest: int


def private_targets(ctx: Context) -> list[Conversation]:
    """The user's account's private conversations; none when not logged in. Each is
    named as CHATHISTORY reads it: the other account's name as registered, or the nick of
    someone who was not logged in (`~nick` when an account now has that name, so the
    two stay apart)."""
    me = ctx.user.account
    store = ctx.world.store
    if me is None or store is None or not ctx.config.history.enabled:
        return []
    keeper = ctx.world.keeper
    if keeper is not None:
        keeper.flush(PRIVATE_FLUSH_SECONDS)
    mine = casefold(me)
    found = []
    for target, when in store.private_targets(mine):
        first, _, second = target.partition(" ")
        other = second if first == mine else first
        if other.startswith(ANONYMOUS):  # someone who was not logged in: their nick
            nick = other[len(ANONYMOUS) :]
            name = other if ctx.world.accounts.get(nick) is not None else nick
        else:
            state = ctx.world.accounts.get(other)
            name = other if state is None else state.name
        found.append(Conversation(name, target, when))
    return found


def _targets(ctx: Context, first: str, second: str, limit: int) -> None:
    """CHATHISTORY TARGETS: the user's rooms and private conversations whose latest
    message falls strictly between the two times, oldest first, in a
    `draft/chathistory-targets` batch."""
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
    found += [(talk.newest, talk.name) for talk in private_targets(ctx) if low < talk.newest < high]
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


# -- private messages missed ----------------------------------------------------------------

#: The most missed private lines shown at login (CHATHISTORY reads the rest).
MISSED_MAX = 100


def missed_private_lines(ctx: Context) -> list[Message]:
    """At login, for a client that cannot ask for history (no draft/chathistory): the
    private messages sent to the account since its last session ended, between markers,
    each with its own time. None when another session of the account was online."""
    me = ctx.user.account
    if me is None or "draft/chathistory" in ctx.session.caps:
        return []
    state = ctx.world.accounts.get(me)
    if state is None or any(user is not ctx.user for user in ctx.world.users_of(me)):
        return []
    mine = casefold(me)
    lines: list[StoredLine] = []
    # From the millisecond the last session ended on: a line of that same millisecond may
    # have missed it (shown twice at worst, never lost).
    since = state.last_seen - 1
    query = Query(MISSED_MAX, after_time=since, commands=MESSAGES)
    for talk in private_targets(ctx):  # (this waited for the writer once, for all)
        if talk.newest > since:
            source = PrivateSource(ctx, talk.name, talk.target, flush=False)
            lines += [line for line in source.read(query) if casefold(line.account or "") != mine]
    if not lines:
        return []
    lines.sort(key=lambda line: (line.time, line.seq))
    lines = lines[-MISSED_MAX:]
    nick = ctx.user.nick or "*"
    caps = ctx.session.caps | {"server-time"} if ctx.session.is_text else ctx.session.caps
    stamp = "server-time" not in caps
    noun = "message" if len(lines) == 1 else "messages"
    return [
        Message(
            "NOTICE",
            [nick, f"-- {len(lines)} private {noun} while you were away --"],
            ctx.server.name,
        ),
        *(history_message(line, caps, stamp=stamp) for line in lines),
        Message("NOTICE", [nick, "-- now --"], ctx.server.name),
    ]
