"""Keeping rooms civil: MODE (room and user modes), KICK, INVITE, and the server
operators' OPER, KILL and WALLOPS. Who may do what is checked in ircish/world.py under the
room's lock; this module reads the command and answers."""

from __future__ import annotations

import fnmatch
import logging
import os

from ircish import modes, passwords
from ircish import protocol as p
from ircish.commands import Context, IRCError, command
from ircish.locks import held
from ircish.protocol import Message, casefold, clip, safe_param
from ircish.world import Room, irc_host

from .rooms import room_or_error

log = logging.getLogger(__name__)

#: Nicks one KICK may name (advertised as TARGMAX=KICK:...).
MAX_KICK_TARGETS = 4
#: OPER runs scrypt: dear enough that guessing is slow, even within the flood burst.
OPER_COST = 10
#: What an OPER with an unknown name is checked against: a hash of a random password
#: nobody knows (`ircish-server hash-password` made it).
DECOY_HASH = (
    "scrypt$16384$8$1$NY7vAYoqqGMy5HBATf7pww==$jYHyHixJnwlY1S0j9FEwHP2NNnqiupzirMwCstJYN3c="
)


@command("MODE", min_params=1, syntax="<#room|nick> [<modes> [<argument>...]]")
def mode(ctx: Context, msg: Message) -> None:
    """Show or change a room's modes (operators) or your own (+i, +w, +B, -o)."""
    if msg.params[0].startswith("#"):
        room_mode(ctx, room_or_error(ctx, msg.params[0]), msg.param(1), msg.params[2:])
    else:
        user_mode(ctx, msg.params[0], msg.param(1))


def room_mode(ctx: Context, room: Room, modestring: str, args: tuple[str, ...]) -> None:
    # MODE #room <modestring> [<args>...]
    if not modestring:
        ctx.answer_about(room, lambda room: mode_lines_locked(ctx, room))
        return
    parsed = modes.parse_changes(modestring, args)
    for letter in parsed.unknown:
        ctx.reply(p.ERR_UNKNOWNMODE, safe_param(letter), "is not a room mode here")
    for signed in parsed.missing:
        ctx.reply(p.ERR_NEEDMOREPARAMS, "MODE", f"Not enough parameters: {signed} needs one")
    # `MODE #r b`, `MODE #r +eI`: each list asked for, once, in the order asked.
    queried = list(dict.fromkeys(c.letter for c in parsed.changes if c.is_list_query))
    changes = [c for c in parsed.changes if not c.is_list_query]
    changes, dropped = limit_param_changes(changes)
    if changes:
        # Nicks are looked up before the room's lock is taken (World.lock comes first).
        targets = {
            c.arg: ctx.world.find_user(c.arg)
            for c in changes
            if modes.ROOM_MODES[c.letter] == modes.STATUS and c.arg is not None
        }
        for refusal in room.change_modes(ctx.user, changes, targets):
            ctx.reply(refusal.numeric, *refusal.params)
        if not room.persistent and any(c.letter == modes.PERMANENT for c in changes):
            ctx.world.end_if_empty(room)  # -P from outside an empty room: it ends now
    if dropped:
        ctx.reply(
            p.ERR_UNKNOWNERROR,
            "MODE",
            f"At most {modes.MAX_PARAM_CHANGES} changes with a parameter per MODE; "
            f"not applied: {' '.join(modes.format_changes(dropped))}",
        )
    if queried:
        ctx.answer_about(
            room,
            lambda room: [
                line for letter in queried for line in mask_list_lines_locked(ctx, room, letter)
            ],
        )


def mode_lines_locked(ctx: Context, room: Room) -> list[Message]:
    """324 and 329 (called under the room's lock); 442 to outsiders of a secret room."""
    assert held(room.lock)
    room.require_visible_locked(ctx.user)
    return [
        ctx.numeric(p.RPL_CHANNELMODEIS, room.name, *room.mode_params_locked(ctx.user)),
        ctx.numeric(p.RPL_CREATIONTIME, room.name, str(room.created)),
    ]


def mask_list_lines_locked(ctx: Context, room: Room, letter: str) -> list[Message]:
    """The list of `letter`: an entry numeric for each mask (367 bans, 348 ban exceptions,
    346 invite exceptions), then its end (368, 349, 347). Called under the room's lock;
    442 to outsiders of a secret room."""
    assert held(room.lock)
    room.require_visible_locked(ctx.user)
    kind = modes.MASK_LISTS[letter]
    return [
        *(
            ctx.numeric(kind.entry, room.name, entry.mask, entry.setter, str(entry.when))
            for entry in room.mask_lists[letter].values()
        ),
        ctx.numeric(kind.end, room.name, f"End of room {kind.noun} list"),
    ]


def limit_param_changes(
    changes: list[modes.Change],
) -> tuple[list[modes.Change], list[modes.Change]]:
    """Split off the changes with a parameter past MODES (ISUPPORT); flags always fit."""
    kept: list[modes.Change] = []
    dropped: list[modes.Change] = []
    with_param = 0
    for change in changes:
        if change.arg is not None:
            with_param += 1
            if with_param > modes.MAX_PARAM_CHANGES:
                dropped.append(change)
                continue
        kept.append(change)
    return kept, dropped


def user_mode(ctx: Context, target: str, modestring: str) -> None:
    # MODE <nick> [<modestring>]: only your own; +o comes from OPER alone.
    user = ctx.user
    if casefold(target) != casefold(user.nick):
        if ctx.world.find_user(target) is None:
            raise IRCError(p.ERR_NOSUCHNICK, safe_param(target), "No such nick")
        raise IRCError(p.ERR_USERSDONTMATCH, "Can't change mode for other users")
    if not modestring:
        ctx.reply(p.RPL_UMODEIS, "+" + user.mode_letters)
        return
    parsed = modes.parse_changes(modestring, (), modes.USER_MODES)
    applied: list[modes.Change] = []
    for change in parsed.changes:
        if change.letter == "i":
            changed = ctx.world.set_invisible(user, change.adding)
        elif change.letter == modes.WALLOPS_MODE:
            changed = ctx.world.set_wallops(user, change.adding)
        elif change.letter == modes.BOT_MODE:
            changed = ctx.world.set_bot(user, change.adding)
        elif change.adding:  # +o
            ctx.reply(p.ERR_NOPRIVILEGES, "Permission denied: use OPER to become an operator")
            continue
        else:
            changed = ctx.world.set_operator(user, False)
        if changed:
            applied.append(change)
    if applied:
        ctx.send(Message("MODE", [user.nick, *modes.format_changes(applied)], user.prefix))
    if parsed.unknown:
        known = "".join(modes.USER_MODES)
        ctx.reply(p.ERR_UMODEUNKNOWNFLAG, f"Unknown MODE flag (user modes here: {known})")


@command("KICK", min_params=2, syntax="<#room>{,<#room>} <nick>{,<nick>} [:<reason>]", targets=1)
def kick(ctx: Context, msg: Message) -> None:
    """Remove someone from a room (room operators)."""
    reason = clip(msg.param(2), ctx.config.limits.topic_length) or ctx.user.nick
    pairs = kick_pairs(msg.params[0].split(","), msg.params[1].split(","))
    if len(pairs) > MAX_KICK_TARGETS:
        raise IRCError(p.ERR_TOOMANYTARGETS, safe_param(msg.params[1]), "Too many targets")
    rooms: dict[str, Room] = {}
    refused: set[str] = set()  # rooms refused already: told once, not once per nick
    for name, nick in pairs:
        key = casefold(name)
        if key in refused:
            continue
        try:
            room = rooms.get(key)
            if room is None:
                try:
                    room = rooms[key] = room_or_error(ctx, name)
                except IRCError:
                    refused.add(key)
                    raise
            target = ctx.world.find_user(nick)
            if target is None:
                raise IRCError(p.ERR_NOSUCHNICK, safe_param(nick), "No such nick")
            ctx.flush()  # earlier pairs' refusals go out before this KICK
            # One KICK line per room and nick goes out (RFC 2812 3.2.8: never several).
            ctx.world.kick(ctx.user, room, target, reason)
        except IRCError as exc:
            ctx.reply(exc.numeric, *exc.params)


def kick_pairs(rooms: list[str], nicks: list[str]) -> list[tuple[str, str]]:
    """Who is kicked from where (RFC 2812 3.2.8): one room and any number of nicks, or as
    many rooms as nicks, the n-th nick kicked from the n-th room. Empty names are dropped,
    and a room and nick pair named twice counts once. 461 for any other shape."""
    if len(rooms) == 1:
        pairs = [(rooms[0], nick) for nick in nicks]
    elif len(rooms) == len(nicks):
        pairs = list(zip(rooms, nicks, strict=True))
    else:
        raise IRCError(
            p.ERR_NEEDMOREPARAMS,
            "KICK",
            "Not enough parameters: give one room, or one room for each nick",
        )
    unique = {(casefold(room), casefold(nick)): (room, nick) for room, nick in pairs}
    kept = [pair for pair in unique.values() if all(pair)]
    if not kept:
        raise IRCError(p.ERR_NEEDMOREPARAMS, "KICK", "Not enough parameters: no nick to kick")
    return kept


@command("INVITE", syntax="[<nick> <#room>]")
def invite(ctx: Context, msg: Message) -> None:
    """Invite someone into a room (operators, when it is +i); alone, list your invites."""
    if not msg.params:
        # modern.ircdocs.horse "INVITE": 336 for each room you may join by invite, then 337.
        for name in ctx.world.invites_of(ctx.user):
            ctx.reply(p.RPL_INVITELIST, name)
        ctx.reply(p.RPL_ENDOFINVITELIST, "End of /INVITE list")
        return
    if len(msg.params) < 2:
        raise ctx.server.commands[msg.command].not_enough_params()
    target = ctx.world.find_user(msg.params[0])
    if target is None:
        raise IRCError(p.ERR_NOSUCHNICK, safe_param(msg.params[0]), "No such nick")
    room = room_or_error(ctx, msg.params[1])
    room.invite(ctx.user, target)
    ctx.reply(p.RPL_INVITING, target.nick, room.name)
    if target.away is not None:
        ctx.reply(p.RPL_AWAY, target.nick, target.away)


@command("OPER", min_params=2, syntax="<name> <password>", cost=OPER_COST)
def oper(ctx: Context, msg: Message) -> None:
    """Become a server operator with a name and password from the config."""
    name, password = msg.params[0], msg.params[1]
    user = ctx.user
    # Operator names are told apart ignoring case (the config refuses two that differ only so).
    entry = next((o for o in ctx.config.operators if casefold(o.name) == casefold(name)), None)
    # An unknown name and a wrong password get the same answer, after the same scrypt
    # work, so neither the reply nor its timing tells which names exist; the host is
    # judged only after the password, for the same reason.
    stored = entry.password if entry is not None else DECOY_HASH
    if not passwords.verify_password(password, stored) or entry is None:
        log.warning("%s: OPER %s refused: bad name or password", ctx.conn, safe_param(name))
        raise IRCError(p.ERR_PASSWDMISMATCH, "Password incorrect")
    if not any(fnmatch.fnmatchcase(user.host, irc_host(pattern)) for pattern in entry.hosts):
        log.warning("%s: OPER %s refused: host %s not allowed", ctx.conn, name, user.host)
        raise IRCError(p.ERR_NOOPERHOST, "No operator block for your host")
    log.info("%s: OPER %s: now a server operator", ctx.conn, name)
    if ctx.world.set_operator(user, True, entry.name):
        ctx.send(Message("MODE", [user.nick, "+o"], user.prefix))
    ctx.reply(p.RPL_YOUREOPER, "You are now a server operator")


@command("REHASH", syntax="")
def rehash(ctx: Context, msg: Message) -> None:
    """Reload the server's config file (server operators); what changed comes as NOTICEs."""
    if not ctx.user.oper:
        raise IRCError(p.ERR_NOPRIVILEGES, "Permission denied: you're not a server operator")
    request = ctx.server.reload
    if request is None:
        raise IRCError(p.ERR_UNKNOWNERROR, "REHASH", "This server cannot reload its config")
    user, server_name = ctx.user, ctx.server.name
    log.info("%s: REHASH", ctx.conn)

    def tell(lines: list[str]) -> None:  # in the reloader thread, once it is done
        for line in lines:
            user.conn.send(Message("NOTICE", [user.nick or "*", line], server_name))

    # 382's file is a middle parameter: a name with a space in it is shown without it.
    shown = os.path.basename(ctx.server.config_source).replace(" ", "_") or "*"
    ctx.reply(p.RPL_REHASHING, safe_param(shown), "Rehashing")
    ctx.flush()  # 382 before the outcome, which may come at once
    request(tell)


@command("KILL", min_params=1, syntax="<nick> [:<reason>]")
def kill(ctx: Context, msg: Message) -> None:
    """Disconnect someone from the server (server operators)."""
    if not ctx.user.oper:
        raise IRCError(p.ERR_NOPRIVILEGES, "Permission denied: you're not a server operator")
    target = ctx.world.find_user(msg.params[0])
    if target is None:
        raise IRCError(p.ERR_NOSUCHNICK, safe_param(msg.params[0]), "No such nick")
    reason = clip(msg.param(1), ctx.config.limits.topic_length) or "No reason given"
    quit_reason = f"Killed ({ctx.user.nick} ({reason}))"
    log.info("%s: KILL %s: %s", ctx.conn, target.nick, reason)
    told = Message("KILL", [target.nick, reason], ctx.user.prefix)
    ctx.world.disconnect(target, told, quit_reason, f"Closing Link: {target.host} ({quit_reason})")
    if target is not ctx.user:
        ctx.send(
            Message("NOTICE", [ctx.user.nick, f"Killed {target.nick}: {reason}"], ctx.server.name)
        )


@command("WALLOPS", min_params=1, syntax=":<text>")
def wallops(ctx: Context, msg: Message) -> None:
    """Tell everyone with user mode +w (server operators)."""
    if not ctx.user.oper:
        raise IRCError(p.ERR_NOPRIVILEGES, "Permission denied: you're not a server operator")
    text = msg.params[0]
    if not text:
        raise IRCError(p.ERR_NEEDMOREPARAMS, "WALLOPS", "Not enough parameters: no text")
    ctx.world.wallops(ctx.user, text)
