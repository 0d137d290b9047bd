"""Talking: PRIVMSG and NOTICE to a room or a nick."""

from __future__ import annotations

import time

from ircish import protocol as p
from ircish.commands import Context, IRCError, command
from ircish.protocol import Message, casefold, safe_param

#: Targets one PRIVMSG/NOTICE may name (advertised as TARGMAX).
MAX_TARGETS = 4


def relay(ctx: Context, msg: Message, notice: bool) -> None:
    """Deliver a PRIVMSG/NOTICE stamped with the sender's own prefix.

    NOTICE never gets an error or away reply (RFC 2812 3.3.2).
    """
    user = ctx.user
    if not msg.params or not msg.params[0]:
        if notice:
            return
        raise IRCError(p.ERR_NORECIPIENT, f"No recipient given ({msg.command})")
    if len(msg.params) < 2 or not msg.params[1]:
        if notice:
            return
        raise IRCError(p.ERR_NOTEXTTOSEND, "No text to send")
    named = msg.params[0]
    # Each target once (a repeated one would get the message twice).
    targets = (
        [named] if "," not in named else list({casefold(t): t for t in named.split(",")}.values())
    )
    if len(targets) > MAX_TARGETS:
        if notice:
            return
        raise IRCError(p.ERR_TOOMANYTARGETS, safe_param(msg.params[0]), "Too many targets")
    text = msg.params[1]
    user.last_spoke = time.time()
    for target in targets:
        if target.startswith("#"):
            room = ctx.world.find_room(target)
            if room is None:
                if not notice:
                    ctx.reply(p.ERR_NOSUCHCHANNEL, safe_param(target), "No such room")
                continue
            # A person sees where each line went, "[#room] <carol> hi" (issue 11), queued in
            # the room's order, after the replies so far.
            echo = ctx.session.is_text
            if echo:
                ctx.flush()
            try:
                room.send_from(user, Message(msg.command, [room.name, text], user.prefix), echo)
            except IRCError as exc:
                if not notice:
                    ctx.reply(exc.numeric, *exc.params)
            continue
        recipient = ctx.world.find_user(target)
        if recipient is None:
            if not notice:
                ctx.reply(p.ERR_NOSUCHNICK, safe_param(target), "No such nick")
            continue
        relayed = Message(msg.command, [recipient.nick, text], user.prefix)
        if ctx.session.is_text:
            # A person sees what they sent, "-> *bob* hi", before bob can answer it.
            ctx.flush()
            ctx.send_now(relayed)
        ctx.world.tell_user(user, recipient, relayed)
        if not notice and recipient.away is not None:
            ctx.reply(p.RPL_AWAY, recipient.nick, recipient.away)


@command("PRIVMSG", syntax="<nick|#room>{,<target>} :<text>", targets=0)
def privmsg(ctx: Context, msg: Message) -> None:
    """Send a message to a room you are in or to a nick."""
    relay(ctx, msg, notice=False)


@command("NOTICE", syntax="<nick|#room>{,<target>} :<text>", targets=0)
def notice(ctx: Context, msg: Message) -> None:
    """Like PRIVMSG, but never answered automatically."""
    relay(ctx, msg, notice=True)
