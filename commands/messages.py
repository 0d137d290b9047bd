"""Talking: PRIVMSG and NOTICE to a room or a nick."""

from __future__ import annotations

import time

from ircish import protocol as p
from ircish.accounts import SERVICES
from ircish.commands import Context, IRCError, command
from ircish.protocol import NICKSERV, Message, casefold, safe_param

from .accounts import nickserv
from .chanserv import chanserv

#: Targets one PRIVMSG/NOTICE may name (advertised as TARGMAX).
MAX_TARGETS = 4


#: STATUSMSG: `PRIVMSG @#room` reaches the room's operators, `+#room` the voiced ones too
#: (the status letters each prefix reaches; advertised as STATUSMSG=@+).
STATUS_TARGETS = {"@": "o", "+": "ov"}


def relay(ctx: Context, msg: Message, kind: str) -> None:
    """Deliver a PRIVMSG, NOTICE or TAGMSG stamped with the sender's own prefix, the
    sender's client tags with it (`+typing`: only receivers with message-tags see them).

    NOTICE never gets an error or away reply (RFC 2812 3.3.2); TAGMSG has no text, reaches
    only clients with message-tags, and gets no away reply.
    """
    user = ctx.user
    quiet = kind == "NOTICE"
    tagmsg = kind == "TAGMSG"
    if not msg.params or not msg.params[0]:
        if quiet:
            return
        raise IRCError(p.ERR_NORECIPIENT, f"No recipient given ({msg.command})")
    if not tagmsg and (len(msg.params) < 2 or not msg.params[1]):
        if quiet:
            return
        raise IRCError(p.ERR_NOTEXTTOSEND, "No text to send")
    named = msg.params[0]
    # Each target once (a repeated one would get the message twice).
    targets = (
        [named] if "," not in named else list({casefold(t): t for t in named.split(",")}.values())
    )
    if len(targets) > MAX_TARGETS:
        if quiet:
            return
        raise IRCError(p.ERR_TOOMANYTARGETS, safe_param(msg.params[0]), "Too many targets")
    text = [] if tagmsg else [msg.params[1]]
    needs = "message-tags" if tagmsg else None
    tags = dict(msg.tags)  # the client tags the session let through
    # A person sees where each line went ("[#room] <carol> hi", "-> *bob* hi": issue 11),
    # and an IRC client with echo-message gets its own line back as relayed, with its msgid.
    echo = ctx.session.is_text or "echo-message" in ctx.session.caps
    if not tagmsg:
        user.last_spoke = time.time()
    # In a cluster a message does not wait for its node to catch up with the log (it is
    # checked where the log applies it), but a nick or room the node does not know may
    # have come a moment ago on another node: it catches up, once, and looks again. (A
    # flag, not a helper: nothing is made per message on one server.)
    behind = ctx.world.cluster is not None
    sent = False
    for target in targets:
        if sent:  # (in a cluster its answers come from the log: before the next target's)
            ctx.world.wait_for_messages()
            sent = False
        status = STATUS_TARGETS.get(target[:1], "")
        if status or target.startswith("#"):
            name = target[1:] if status else target
            room = ctx.world.find_room(name)
            if room is None and behind:
                behind = False
                ctx.world.catch_up()
                room = ctx.world.find_room(name)
            if room is None:
                if not quiet:
                    ctx.reply(p.ERR_NOSUCHCHANNEL, safe_param(target), "No such room")
                continue
            if echo or ctx.replies:
                ctx.flush()  # the echo is queued in the room's order, after the replies so far
            shown = target[0] + room.name if status else room.name
            relayed = Message(msg.command, [shown, *text], user.prefix, tags)
            try:
                copies = room.send_from(user, relayed, echo, needs=needs, only=status)
                sent = True
            except IRCError as exc:
                if not quiet:
                    ctx.reply(exc.numeric, *exc.params)
                continue
            ctx.conn.tally.relay(kind, "room", copies)
            continue
        if casefold(target) in SERVICES:
            if kind == "PRIVMSG":  # a notice or tags to a service are dropped
                if behind:  # (a command to it, answered as any command is)
                    behind = False
                    ctx.world.catch_up()
                talk_to_service(ctx, casefold(target), msg.params[1])
            continue
        recipient = ctx.world.find_user(target)
        if recipient is None and behind:
            behind = False
            ctx.world.catch_up()
            recipient = ctx.world.find_user(target)
        if recipient is None:
            if not tagmsg and leave_message(ctx, target, msg.command, text[0], tags, echo):
                continue
            if not quiet:
                ctx.reply(p.ERR_NOSUCHNICK, safe_param(target), "No such nick")
            continue
        if echo or ctx.replies:
            # The sender sees their line, and the answers to earlier targets, before the
            # answer to this one (a 301, from tell_user) can come.
            ctx.flush()
        relayed = Message(msg.command, [recipient.nick, *text], user.prefix, tags)
        copies = ctx.world.tell_user(user, recipient, relayed, echo, needs=needs)
        sent = True
        ctx.conn.tally.relay(kind, "private", copies)


def leave_message(
    ctx: Context, target: str, command: str, text: str, tags: dict[str, str], echo: bool
) -> bool:
    """A message for an account nobody is logged in to, from someone logged in: kept in
    their private history, shown when they next log in. False if it cannot be."""
    state = ctx.world.accounts.get(target)
    if state is None or ctx.user.account is None:
        return False
    online = [user.nick for user in ctx.world.users_of(state.name) if user.nick]
    if online:  # logged in under another nick: say so rather than keep it unseen
        if command == "PRIVMSG":  # a NOTICE is never answered
            ctx.reply(
                p.ERR_NOSUCHNICK,
                safe_param(target),
                f"No such nick; the account {state.name} is online as {', '.join(online[:3])}",
            )
        return True
    if echo:
        ctx.flush()
    relayed = Message(command, [state.name, text], ctx.user.prefix, tags)
    if not ctx.world.tell_account(ctx.user, state.name, relayed, echo):
        return False
    if command == "PRIVMSG":
        ctx.send(
            Message(
                "NOTICE",
                [
                    ctx.user.nick or "*",
                    f"{state.name} is not online; they will see it when they log in",
                ],
                ctx.server.name,
            )
        )
    return True


def talk_to_service(ctx: Context, service: str, text: str) -> None:
    """A PRIVMSG to NickServ or ChanServ: a command for it, never relayed or stored."""
    if service == casefold(NICKSERV):
        nickserv(ctx, text)
    else:
        chanserv(ctx, text)


@command("PRIVMSG", syntax="<nick|#room>{,<target>} :<text>", targets=0)
def privmsg(ctx: Context, msg: Message) -> None:
    """Send a message to a room you are in or to a nick."""
    relay(ctx, msg, "PRIVMSG")


@command("NOTICE", syntax="<nick|#room>{,<target>} :<text>", targets=0)
def notice(ctx: Context, msg: Message) -> None:
    """Like PRIVMSG, but never answered automatically."""
    relay(ctx, msg, "NOTICE")


@command("TAGMSG", min_params=1, syntax="<nick|#room>{,<target>}", targets=0)
def tagmsg(ctx: Context, msg: Message) -> None:
    """Send only tags (`+typing`) to a room or nick: for clients with message-tags."""
    relay(ctx, msg, "TAGMSG")
