"""Rooms: JOIN PART TOPIC NAMES LIST."""

from __future__ import annotations

from ircish import protocol as p
from ircish.dispatch import Context, IRCError, command
from ircish.protocol import Message, clip, safe_param
from ircish.world import Room, status_prefix, valid_room_name

#: Bytes a reply line may use before CRLF (RFC 2812 2.3).
LINE_BUDGET = p.DEFAULT_LINE_BYTES - 2  # CRLF


def room_or_error(ctx: Context, name: str) -> Room:
    room = ctx.world.find_room(name)
    if room is None:
        raise IRCError(p.ERR_NOSUCHCHANNEL, safe_param(name), "No such room")
    return room


def topic_replies(ctx: Context, room: Room, topic: str, setter: str, when: int) -> None:
    if topic:
        ctx.reply(p.RPL_TOPIC, room.name, topic)
        ctx.reply(p.RPL_TOPICWHOTIME, room.name, setter, str(when))
    else:
        ctx.reply(p.RPL_NOTOPIC, room.name, "No topic is set")


def names_replies(ctx: Context, room: Room) -> None:
    """353 lines (nicks with their @/+ prefix) split so each fits in 512 bytes, then 366.
    A secret room (+s) shows nobody to outsiders."""
    if room.is_secret_to(ctx.user):
        ctx.reply(p.RPL_ENDOFNAMES, room.name, "End of /NAMES list")
        return
    members = room.snapshot().members
    nick = ctx.user.nick or "*"
    symbol = "@" if "s" in room.flags else "="  # RFC 2812 3.2.5: '@' secret, '=' public
    head = f":{ctx.server.name} {p.RPL_NAMREPLY} {nick} {symbol} {room.name} :"
    budget = LINE_BUDGET - len(head.encode())
    batch: list[str] = []
    used = 0
    for member, status in members.items():
        name = status_prefix(status) + member.nick
        size = len(name.encode()) + (1 if batch else 0)
        if batch and used + size > budget:
            ctx.reply(p.RPL_NAMREPLY, symbol, room.name, " ".join(batch))
            batch, used = [], 0
            size -= 1
        batch.append(name)
        used += size
    if batch:
        ctx.reply(p.RPL_NAMREPLY, symbol, room.name, " ".join(batch))
    ctx.reply(p.RPL_ENDOFNAMES, room.name, "End of /NAMES list")


@command("JOIN", min_params=1, syntax="<#room>{,<#room>} [<key>{,<key>}]")
def join(ctx: Context, msg: Message) -> None:
    """Join rooms (created on first join, with you as operator); JOIN 0 leaves them all."""
    if msg.params[0] == "0":
        for room in list(ctx.user.rooms.values()):
            ctx.world.part(ctx.user, room, "Left all rooms")
        return
    limit = ctx.config.limits.room_length
    keys = msg.param(1).split(",")  # the n-th key goes with the n-th room (RFC 2812 3.2.1)
    for index, name in enumerate(msg.params[0].split(",")):
        if not valid_room_name(name, limit):
            ctx.reply(
                p.ERR_BADCHANMASK,
                safe_param(name),
                f"Bad room name: # then up to {limit - 1} characters, no spaces, commas or colons",
            )
            continue
        ctx.flush()  # earlier rooms' replies go out before this room's JOIN echo
        try:
            room = ctx.world.join(ctx.user, name, keys[index] if index < len(keys) else None)
        except IRCError as exc:
            ctx.reply(exc.numeric, *exc.params)
            continue
        if room is None:
            continue  # already there: nothing to say, as other servers do
        _, topic, setter, when = room.snapshot()
        if topic:
            topic_replies(ctx, room, topic, setter, when)
        names_replies(ctx, room)


@command("PART", min_params=1, syntax="<#room>{,<#room>} [:<reason>]")
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
        _, text, setter, when = room.snapshot()
        topic_replies(ctx, room, text, setter, when)
        return
    room.set_topic(ctx.user, clip(msg.params[1], ctx.config.limits.topic_length))


@command("NAMES", syntax="[<#room>{,<#room>}]", cost=2)
def names(ctx: Context, msg: Message) -> None:
    """List who is in a room (default: your rooms)."""
    if not msg.params:
        rooms = list(ctx.user.rooms.values())
        for room in rooms:
            names_replies(ctx, room)
        if not rooms:
            ctx.reply(p.RPL_ENDOFNAMES, "*", "End of /NAMES list")
        return
    for name in msg.params[0].split(","):
        room = ctx.world.find_room(name)
        if room is None:
            ctx.reply(p.RPL_ENDOFNAMES, safe_param(name), "End of /NAMES list")
        else:
            names_replies(ctx, room)


@command("LIST", syntax="[<#room>{,<#room>}]", cost=3)
def list_(ctx: Context, msg: Message) -> None:
    """List rooms with their user counts and topics (secret rooms only to members)."""
    if msg.params and msg.params[0]:
        rooms = [r for r in map(ctx.world.find_room, msg.params[0].split(",")) if r is not None]
    else:
        rooms = sorted(ctx.world.rooms_snapshot(), key=lambda r: r.key)
    ctx.reply(p.RPL_LISTSTART, "Channel", "Users  Name")
    for room in rooms:
        if room.is_secret_to(ctx.user):
            continue
        members, text, _, _ = room.snapshot()
        ctx.reply(p.RPL_LIST, room.name, str(len(members)), text)
    ctx.reply(p.RPL_LISTEND, "End of /LIST")
