"""Rooms: JOIN PART TOPIC NAMES LIST."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ircish import modes
from ircish import protocol as p
from ircish.commands import Context, IRCError, command
from ircish.locks import held
from ircish.protocol import Message, casefold, clip, safe_param
from ircish.world import Room, Snapshot, status_prefix, valid_room_name

from .history import replay_lines_locked

#: What LIST can filter on (ISUPPORT ELIST, modern.ircdocs.horse "ELIST"): Creation time
#: (`C<n`, `C>n`: created less, or more, than n minutes ago), a Mask (`#a*`), a mask Not
#: matched (`!#a*`), Topic time (`T<n`, `T>n`, as C) and User count (`<n`, `>n`).
ELIST = "CMNTU"
#: One C, T or U term of a LIST: `C<10`, `T>5`, `<3`.
_LIST_CONDITION = re.compile(r"([CT]?)([<>])(\d{1,9})")


def room_or_error(ctx: Context, name: str) -> Room:
    room = ctx.world.find_room(name)
    if room is None:
        raise IRCError(p.ERR_NOSUCHCHANNEL, safe_param(name), "No such room")
    return room


def topic_lines_locked(ctx: Context, room: Room, always: bool = True) -> list[Message]:
    """332 and 333, or 331 when there is no topic (only if `always`: a JOIN says nothing
    then). Called under the room's lock."""
    assert held(room.lock)
    if room.topic:
        return [
            ctx.numeric(p.RPL_TOPIC, room.name, room.topic),
            ctx.numeric(p.RPL_TOPICWHOTIME, room.name, room.topic_setter, str(room.topic_time)),
        ]
    return [ctx.numeric(p.RPL_NOTOPIC, room.name, "No topic is set")] if always else []


def names_lines_locked(ctx: Context, room: Room) -> list[Message]:
    """353 lines, then 366 (called under the room's lock)."""
    assert held(room.lock)
    return [*namreply_lines_locked(ctx, room), names_end(ctx, room.name)]


def names_end(ctx: Context, asked: str) -> Message:
    """366, naming what was asked: a room, a list of rooms, or `*` for your rooms."""
    return ctx.numeric(p.RPL_ENDOFNAMES, safe_param(asked), "End of /NAMES list")


def namreply_lines_locked(ctx: Context, room: Room) -> list[Message]:
    """353 lines (nicks with their @/+ prefix) split so each fits in 512 bytes. A secret
    room (+s) shows nobody to outsiders. Called under the room's lock."""
    assert held(room.lock)
    if room.is_secret_to(ctx.user):
        return []
    symbol = "@" if "s" in room.flags else "="  # RFC 2812 3.2.5: '@' secret, '=' public
    caps = ctx.session.caps
    every = "multi-prefix" in caps
    if "userhost-in-names" in caps:
        nicks = [status_prefix(status, every) + m.prefix for m, status in room.members.items()]
    else:
        nicks = [status_prefix(status, every) + m.nick for m, status in room.members.items()]
    nick = ctx.user.nick or "*"
    return p.numeric_lines(ctx.server.name, p.RPL_NAMREPLY, nick, [symbol, room.name], nicks)


def joined_lines_locked(ctx: Context, room: Room) -> list[Message]:
    """What a joiner is told about the room right after its JOIN: topic, names, then the
    last lines said there (for a client that cannot ask for them)."""
    assert held(room.lock)
    return [
        *topic_lines_locked(ctx, room, always=False),
        *names_lines_locked(ctx, room),
        *replay_lines_locked(ctx, room),
    ]


def visible_topic_lines_locked(ctx: Context, room: Room) -> list[Message]:
    """A TOPIC query's answer; 442 for an outsider of a secret room."""
    assert held(room.lock)
    room.require_visible_locked(ctx.user)
    return topic_lines_locked(ctx, room)


@command("JOIN", min_params=1, syntax="<#room>{,<#room>} [<key>{,<key>}]", targets=0)
def join(ctx: Context, msg: Message) -> None:
    """Join rooms (created on first join, with you as operator); JOIN 0 leaves them all."""
    if msg.params[0] == "0":
        for room in list(ctx.user.rooms.values()):
            ctx.world.part(ctx.user, room, "Left all rooms")
        return
    limits = ctx.config.limits
    keys = msg.param(1).split(",")  # the n-th key goes with the n-th room (RFC 2812 3.2.1)
    for index, name in enumerate(msg.params[0].split(",")):
        if not valid_room_name(name, limits.room_length):
            ctx.reply(
                p.ERR_BADCHANMASK,
                safe_param(name),
                f"Bad room name: # then up to {limits.room_length - 1} characters, "
                "no spaces, commas or colons",
            )
            continue
        ctx.flush()  # earlier rooms' replies go out before this room's JOIN echo
        try:
            ctx.world.join(
                ctx.user,
                name,
                keys[index] if index < len(keys) else None,
                max_rooms=limits.max_rooms_per_user,
                # Topic and names go out under the room's lock, right after the JOIN.
                answer=(ctx.send_now, lambda room: joined_lines_locked(ctx, room)),
            )
        except IRCError as exc:
            ctx.reply(exc.numeric, *exc.params)
        # Already there: nothing to say, as other servers do.


@command("PART", min_params=1, syntax="<#room>{,<#room>} [:<reason>]", targets=0)
def part(ctx: Context, msg: Message) -> None:
    """Leave rooms, with an optional reason."""
    reason = clip(msg.params[1], ctx.config.limits.topic_length) if len(msg.params) > 1 else None
    for name in msg.params[0].split(","):
        try:
            room = room_or_error(ctx, name)
            if not ctx.world.part(ctx.user, room, reason):
                raise IRCError(p.ERR_NOTONCHANNEL, room.name, "You're not in that room")
        except IRCError as exc:
            ctx.reply(exc.numeric, *exc.params)


@command("TOPIC", min_params=1, syntax="<#room> [:<topic>]")
def topic(ctx: Context, msg: Message) -> None:
    """Show a room's topic, or set it (members; only operators when +t; empty clears)."""
    room = room_or_error(ctx, msg.params[0])
    if len(msg.params) == 1:
        ctx.answer_about(room, lambda room: visible_topic_lines_locked(ctx, room))
        return
    room.set_topic(ctx.user, clip(msg.params[1], ctx.config.limits.topic_length))


@command("NAMES", syntax="[<#room>{,<#room>}]", cost=2, targets=0)
def names(ctx: Context, msg: Message) -> None:
    """List who is in a room (default: your rooms)."""
    if not msg.params:
        rooms = list(ctx.user.rooms.values())
        for room in rooms:
            ctx.answer_about(room, lambda room: names_lines_locked(ctx, room))
        if not rooms:
            ctx.send(names_end(ctx, "*"))
        return
    # `NAMES #a,#b`: the 353s of each room, then one 366 naming the list as it was asked
    # (irctest names.py; modern.ircdocs.horse "NAMES"), as ergo and InspIRCd answer.
    for name in msg.params[0].split(","):
        room = ctx.world.find_room(name)
        if room is not None:
            ctx.answer_about(room, lambda room: namreply_lines_locked(ctx, room))
    ctx.send(names_end(ctx, msg.params[0]))


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What a LIST's comma-separated terms ask for (ELIST): rooms named or matching a mask
    (any of them; every room if there is neither), matching none of the `!masks`, and
    meeting every condition. A term that is none of these names a room, so an unreadable
    one (`C<x`) matches nothing."""

    names: tuple[str, ...]  # casefolded, each once, in the order given
    masks: tuple[re.Pattern[str], ...]
    excluded: tuple[re.Pattern[str], ...]
    #: (field, sign, value): field "" users, "C" minutes since creation, "T" minutes since
    #: the topic was set; sign "<" or ">".
    conditions: tuple[tuple[str, str, int], ...]

    @classmethod
    def read(cls, text: str) -> ListQuery:
        names: dict[str, None] = {}  # a set that keeps the order given
        masks: list[re.Pattern[str]] = []
        excluded: list[re.Pattern[str]] = []
        conditions: list[tuple[str, str, int]] = []
        for term in filter(None, text.split(",")):
            if condition := _LIST_CONDITION.fullmatch(term):
                field, sign, value = condition.groups()
                conditions.append((field, sign, int(value)))
            elif term.startswith("!"):
                excluded.append(modes.mask_pattern(term[1:]))
            elif "*" in term or "?" in term:
                masks.append(modes.mask_pattern(term))
            else:
                names[casefold(term)] = None
        return cls(tuple(names), tuple(masks), tuple(excluded), tuple(conditions))

    @property
    def by_name_only(self) -> bool:
        """Only rooms named exactly: they are looked up, not searched for."""
        return bool(self.names) and not self.masks

    def admits(self, room: Room, facts: Snapshot, now: float) -> bool:
        folded = room.folded
        if (self.names or self.masks) and not (
            folded in self.names or any(mask.fullmatch(folded) for mask in self.masks)
        ):
            return False
        if any(mask.fullmatch(folded) for mask in self.excluded):
            return False
        for field, sign, value in self.conditions:
            if field == "":
                measured, limit = len(facts.members), value
            elif field == "C":
                measured, limit = now - room.created, value * 60
            elif not facts.topic:
                return False  # no topic, no topic time to compare
            else:
                measured, limit = now - facts.topic_time, value * 60
            if not (measured < limit if sign == "<" else measured > limit):
                return False
        return True


@command("LIST", syntax="[<term>{,<term>}]", cost=3, targets=0)
def list_(ctx: Context, msg: Message) -> None:
    """List rooms with their user counts and topics (secret rooms only to members).

    Terms (ELIST): #room, mask, !mask, <n >n users, C<n C>n created and T<n T>n topic set
    (minutes ago)."""
    query = ListQuery.read(msg.param(0))
    if query.by_name_only:
        # In the order asked, each room once (`LIST #a,#A` is one room).
        rooms = [room for room in map(ctx.world.find_room, query.names) if room is not None]
    else:
        rooms = sorted(ctx.world.rooms_snapshot(), key=lambda r: r.folded)
    now = time.time()
    ctx.reply(p.RPL_LISTSTART, "Channel", "Users  Name")
    for room in rooms:
        if room.is_secret_to(ctx.user):
            continue
        facts = room.snapshot()
        if query.admits(room, facts, now):
            ctx.reply(p.RPL_LIST, room.name, str(len(facts.members)), facts.topic)
    ctx.reply(p.RPL_LISTEND, "End of /LIST")
