"""Questions about people and the server: WHO WHOIS WHOWAS AWAY MOTD LUSERS INFO LINKS
HELP ..."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from ircish import __version__, modes
from ircish import protocol as p
from ircish.commands import CommandSpec, Context, IRCError, command
from ircish.locks import held
from ircish.protocol import Message, clip, safe_param
from ircish.slash import SLASH_COMMANDS
from ircish.world import Room, User, casefold, status_prefix

from .history import isupport_tokens as history_tokens
from .messages import MAX_TARGETS, STATUS_TARGETS
from .moderation import MAX_KICK_TARGETS
from .presence import MONITOR_LIMIT
from .rooms import ELIST

USERLEN = 16
#: At most 13 tokens per 005 line, so that it fits in 512 bytes with any name.
TOKENS_PER_LINE = 13


def isupport_tokens(ctx: Context) -> list[str]:
    """What 005 advertises: only what the server enforces."""
    limits = ctx.config.limits
    return [
        f"AWAYLEN={limits.away_length}",
        f"BOT={modes.BOT_MODE}",
        "CASEMAPPING=ascii",
        f"CHANLIMIT=#:{limits.max_rooms_per_user}",
        f"CHANMODES={modes.CHANMODES}",
        f"CHANNELLEN={limits.room_length}",
        "CHANTYPES=#",
        f"ELIST={ELIST}",
        f"EXCEPTS={modes.BAN_EXCEPTION}",
        f"INVEX={modes.INVITE_EXCEPTION}",
        f"KEYLEN={modes.KEY_LENGTH}",
        f"KICKLEN={limits.topic_length}",
        f"MAXLIST={modes.MAXLIST}",
        f"MODES={modes.MAX_PARAM_CHANGES}",
        f"MONITOR={MONITOR_LIMIT}",
        f"NETWORK={ctx.config.server.network}",
        f"NICKLEN={limits.nick_length}",
        f"PREFIX={modes.PREFIX}",
        f"STATUSMSG={''.join(STATUS_TARGETS)}",
        f"TARGMAX=JOIN:,NAMES:,PART:,LIST:,PRIVMSG:{MAX_TARGETS},NOTICE:{MAX_TARGETS},"
        f"WHOIS:1,KICK:{MAX_KICK_TARGETS}",
        f"TOPICLEN={limits.topic_length}",
        f"USERLEN={USERLEN}",
        "UTF8ONLY",
        "WHOX",
        *history_tokens(ctx),
    ]


def isupport_replies(ctx: Context) -> None:
    tokens = isupport_tokens(ctx)
    for i in range(0, len(tokens), TOKENS_PER_LINE):
        ctx.reply(p.RPL_ISUPPORT, *tokens[i : i + TOKENS_PER_LINE], "are supported by this server")


def lusers_replies(ctx: Context) -> None:
    users, invisible, operators, rooms, peak = ctx.world.counts()
    if not ctx.user.registered:  # the welcome burst is sent just before registering
        users += 1
        invisible += ctx.user.invisible
        peak = max(peak, users)
    # A connection leaves the server's set before the peer sees it closed, so one that
    # quit unregistered is no longer counted by the time anyone could ask.
    unknown = ctx.server.connection_count() - users
    # One server: its local users are all the users (modern.ircdocs.horse 265/266); in a
    # cluster, the network's users are on its nodes, and this node's are its own.
    servers, local, here = 1, users, peak
    if ctx.server.network is not None:
        servers, local, here = ctx.server.network(not ctx.user.registered)
        unknown = ctx.server.connection_count() - local
    ctx.reply(
        p.RPL_LUSERCLIENT,
        f"There are {users - invisible} users and {invisible} invisible on {servers} servers",
    )
    ctx.reply(p.RPL_LUSEROP, str(operators), "operator(s) online")
    ctx.reply(p.RPL_LUSERUNKNOWN, str(max(unknown, 0)), "unknown connection(s)")
    ctx.reply(p.RPL_LUSERCHANNELS, str(rooms), "rooms formed")
    ctx.reply(p.RPL_LUSERME, f"I have {local} clients and {servers - 1} servers")
    ctx.reply(p.RPL_LOCALUSERS, str(local), str(here), f"Current local users {local}, max {here}")
    ctx.reply(p.RPL_GLOBALUSERS, str(users), str(peak), f"Current global users {users}, max {peak}")


def motd_replies(ctx: Context) -> None:
    motd = ctx.config.server.motd
    if not motd:
        ctx.reply(p.ERR_NOMOTD, "MOTD File is missing")
        return
    ctx.reply(p.RPL_MOTDSTART, f"- {ctx.server.name} Message of the day -")
    for line in motd.splitlines():
        ctx.reply(p.RPL_MOTD, f"- {line}")
    ctx.reply(p.RPL_ENDOFMOTD, "End of /MOTD command")


#: WHOX fields (`WHO mask %fields,token`), in the order 354 gives them whatever the order
#: asked: token, channel, user, IP, host, server, nick, flags, hops, idle, account, op level,
#: realname (https://github.com/ircv3/ircv3-specifications/pull/482).
WHOX_FIELDS = "tcuihsnfdlaor"


@dataclass(frozen=True, slots=True)
class Whox:
    fields: str
    token: str


def read_whox(text: str) -> Whox | None:
    """`%tn,42` -> Whox("tn", "42"); None for a plain WHO (no '%')."""
    if not text.startswith("%"):
        return None
    fields, _, token = text[1:].partition(",")
    token = token if token.isdigit() and len(token) <= 3 else "0"
    return Whox("".join(f for f in WHOX_FIELDS if f in fields), token)


def who_line(
    ctx: Context, user: User, room_name: str, status: str = "", whox: Whox | None = None
) -> Message:
    """352 for `user` (or 354 with the WHOX fields asked for)."""
    # Flags (RFC 2812 3.6.1): H here / G away, '*' server operator, then '@' or '+' (all of
    # them with multi-prefix), then B for a bot (IRCv3 bot mode).
    every = "multi-prefix" in ctx.session.caps
    flags = (
        ("G" if user.away is not None else "H")
        + "*" * user.oper
        + status_prefix(status, every)
        + "B" * user.bot
    )
    if whox is None:
        return ctx.numeric(
            p.RPL_WHOREPLY,
            room_name,
            user.username,
            user.host,
            user.server or ctx.server.name,
            user.nick,
            flags,
            f"0 {user.realname}",
        )
    values = {
        "t": whox.token,
        "c": room_name,
        "u": user.username,
        "i": user.host,
        "h": user.host,
        "s": user.server or ctx.server.name,
        "n": user.nick,
        "f": flags,
        "d": "0",
        "l": str(max(0, int(time.time() - user.last_spoke))),
        "a": user.account or "0",  # 0: not logged in
        "o": "n/a",
        "r": user.realname,
    }
    params = [values[field] for field in whox.fields]
    # Only the last parameter may be empty (a realname may be).
    params = [value or "*" for value in params[:-1]] + params[-1:]
    return ctx.numeric(p.RPL_WHOSPCRPL, *params)


def shares_room(a: User, b: User) -> bool:
    return a is b or not a.rooms.keys().isdisjoint(b.rooms.keys())


def who_lines_locked(ctx: Context, room: Room, whox: Whox | None = None) -> list[Message]:
    """352 (or 354) for each member the asker may see (called under the room's lock)."""
    assert held(room.lock)
    if room.is_secret_to(ctx.user):
        return []
    return [
        who_line(ctx, member, room.name, status, whox)
        for member, status in room.members.items()
        if not member.invisible or shares_room(ctx.user, member)
    ]


@command("WHO", syntax="[<#room>|<mask>] [%<fields>[,<token>]]", cost=2)
def who(ctx: Context, msg: Message) -> None:
    """List the people in a room, or whose nick matches a mask."""
    mask = msg.param(0) or "*"
    whox = read_whox(msg.param(1))
    if mask.startswith("#"):
        room = ctx.world.find_room(mask)
        if room is not None:
            ctx.answer_about(room, lambda room: who_lines_locked(ctx, room, whox))
    elif "*" not in mask and "?" not in mask:
        # An exact nick shows that person even if invisible (+i hides them from masks
        # only): modern.ircdocs.horse "WHO", irctest who.py testWhoInvisible.
        other = ctx.world.find_user(mask)
        if other is not None:
            ctx.send(who_line(ctx, other, "*", whox=whox))
    else:
        # mask_pattern, not fnmatch: fnmatch keeps every pattern a client sends in a cache
        # of 32768; re's cache holds 512.
        pattern = modes.mask_pattern(mask)
        for other in ctx.world.users_snapshot():
            if pattern.fullmatch(casefold(other.nick)) and (
                not other.invisible or shares_room(ctx.user, other)
            ):
                ctx.send(who_line(ctx, other, "*", whox=whox))
    ctx.reply(p.RPL_ENDOFWHO, safe_param(mask), "End of WHO list")


@command("WHOIS", min_params=1, syntax="<nick>")
def whois(ctx: Context, msg: Message) -> None:
    """Show who someone is, where they are and how long they have been idle."""
    target = msg.params[-1]
    other = ctx.world.find_user(target)
    if other is None:
        ctx.reply(p.ERR_NOSUCHNICK, safe_param(target), "No such nick")
        ctx.reply(p.RPL_ENDOFWHOIS, safe_param(target), "End of /WHOIS list")
        return
    ctx.reply(p.RPL_WHOISUSER, other.nick, other.username, other.host, "*", other.realname)
    every = "multi-prefix" in ctx.session.caps
    rooms = whois_rooms(ctx.user, list(other.rooms.values()), other, every)
    if rooms:
        ctx.reply_words(p.RPL_WHOISCHANNELS, other.nick, words=rooms)
    server = other.server or ctx.server.name  # (in a cluster, the node they are on)
    ctx.reply(p.RPL_WHOISSERVER, other.nick, server, ctx.config.server.network)
    if other.oper:
        ctx.reply(p.RPL_WHOISOPERATOR, other.nick, "is a server operator")
    if other.bot:
        ctx.reply(p.RPL_WHOISBOT, other.nick, "is a bot")
    account = other.account
    if account is not None:
        ctx.reply(p.RPL_WHOISACCOUNT, other.nick, account, "is logged in as")
    if other.away is not None:
        ctx.reply(p.RPL_AWAY, other.nick, other.away)
    if server == ctx.server.name:  # (how long someone on another node is idle, it knows)
        idle = int(time.time() - other.last_spoke)
        ctx.reply(
            p.RPL_WHOISIDLE,
            other.nick,
            str(idle),
            str(int(other.signon)),
            "seconds idle, signon time",
        )
    ctx.reply(p.RPL_ENDOFWHOIS, other.nick, "End of /WHOIS list")


def whois_rooms(asker: User, rooms: list[Room], other: User, every: bool = False) -> list[str]:
    """`other`'s rooms with their prefix (all of them with `every`: multi-prefix), leaving
    out secret rooms the asker is not in."""
    return [
        status_prefix(room.members.get(other, ""), every) + room.name
        for room in rooms
        if not room.is_secret_to(asker)
    ]


@command("WHOWAS", min_params=1, syntax="<nick> [<count>]")
def whowas(ctx: Context, msg: Message) -> None:
    """Who had a nick before: the newest first, at most <count> of them."""
    nick = msg.params[0]
    # RFC 2812 3.6.3: a count that is not positive asks for every entry (so does junk).
    try:
        count = int(msg.param(1) or 0)
    except ValueError:
        count = 0
    entries = ctx.world.whowas(nick, count)
    shown = safe_param(nick)
    if not entries:
        ctx.reply(p.ERR_WASNOSUCHNICK, shown, "There was no such nickname")
    for entry in entries:
        ctx.reply(p.RPL_WHOWASUSER, entry.nick, entry.username, entry.host, "*", entry.realname)
        left = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.when))
        ctx.reply(p.RPL_WHOISSERVER, entry.nick, entry.server, f"left {left}")
    ctx.reply(p.RPL_ENDOFWHOWAS, shown, "End of WHOWAS")


@command("ISON", min_params=1, syntax="<nick>{ <nick>}")
def ison(ctx: Context, msg: Message) -> None:
    """Which of these nicks are online (used by clients' notify lists)."""
    wanted = " ".join(msg.params).split()
    online = [user.nick for user in map(ctx.world.find_user, wanted) if user is not None]
    ctx.reply_words(p.RPL_ISON, words=online)


@command("USERHOST", min_params=1, syntax="<nick>{ <nick>}")
def userhost(ctx: Context, msg: Message) -> None:
    """user@host of up to five nicks."""
    replies = []
    for user in map(ctx.world.find_user, msg.params[:5]):
        if user is not None:
            state = "-" if user.away is not None else "+"
            replies.append(f"{user.nick}={state}{user.username}@{user.host}")
    ctx.reply(p.RPL_USERHOST, " ".join(replies))


@command("VERSION", syntax="")
def version(ctx: Context, msg: Message) -> None:
    """The server's software version."""
    ctx.reply(p.RPL_VERSION, f"ircish-{__version__}", ctx.server.name, "threaded Python IRC server")
    isupport_replies(ctx)


def is_this_server(ctx: Context, target: str) -> bool:
    """Whether a command's optional <target> names this server: its name (or a mask of it,
    `*` and `?`), or the nick of someone on it, which is everyone (RFC 2812 3.4)."""
    name = casefold(ctx.server.name)
    matches = modes.mask_pattern(target).fullmatch(name) is not None
    return matches or ctx.world.find_user(target) is not None


@command("INFO", syntax="[<target>]")
def info(ctx: Context, msg: Message) -> None:
    """What this server is: software, version, when it started."""
    target = msg.param(0)
    if target and not is_this_server(ctx, target):
        raise IRCError(p.ERR_NOSUCHSERVER, safe_param(target), "No such server")
    server = ctx.config.server
    for line in (
        f"ircish-{__version__}: a threaded Python IRC server",
        f"{ctx.server.name}: {server.description}",
        f"Network: {server.network}",
        f"Started: {ctx.server.created_text}",
    ):
        ctx.reply(p.RPL_INFO, line)
    ctx.reply(p.RPL_ENDOFINFO, "End of /INFO")


@command("LINKS", syntax="[[<remote>] <mask>]")
def links(ctx: Context, msg: Message) -> None:
    """The servers of this network: this one alone, with its description."""
    # LINKS [[<remote>] <mask>] (RFC 2812 3.4.5): the mask filters the list, the remote
    # server answers it; there is no other server to ask.
    if len(msg.params) > 1 and not is_this_server(ctx, msg.params[0]):
        raise IRCError(p.ERR_NOSUCHSERVER, safe_param(msg.params[0]), "No such server")
    mask = msg.params[-1] if msg.params else "*"
    name = ctx.server.name
    if modes.mask_pattern(mask).fullmatch(casefold(name)):
        # "<mask> <server> :<hopcount> <server info>": the mask a server is reached
        # through is its own name here.
        ctx.reply(p.RPL_LINKS, name, name, f"0 {ctx.config.server.description}")
    ctx.reply(p.RPL_ENDOFLINKS, safe_param(mask), "End of /LINKS list")


@command("TIME", syntax="")
def time_(ctx: Context, msg: Message) -> None:
    """The server's local time."""
    now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    ctx.reply(p.RPL_TIME, ctx.server.name, now)


@command("AWAY", syntax="[:<message>]")
def away(ctx: Context, msg: Message) -> None:
    """Mark yourself away with a message; AWAY alone marks you back."""
    text = msg.param(0)
    away = clip(text, ctx.config.limits.away_length) if text else None
    if ctx.world.cluster is not None:  # the network may refuse it: confirmed once done
        ctx.world.set_away(ctx.user, away)
    if away is not None:
        ctx.reply(p.RPL_NOWAWAY, "You have been marked as being away")
    else:
        ctx.reply(p.RPL_UNAWAY, "You are no longer marked as being away")
    if ctx.world.cluster is None:
        ctx.flush()  # the answer first, then what away-notify tells others
        ctx.world.set_away(ctx.user, away)


@command("MOTD", syntax="")
def motd(ctx: Context, msg: Message) -> None:
    """Show the message of the day."""
    motd_replies(ctx)


@command("LUSERS", syntax="")
def lusers(ctx: Context, msg: Message) -> None:
    """Count users, connections and rooms."""
    lusers_replies(ctx)


def help_line(slash_name: str, commands: Mapping[str, CommandSpec]) -> str:
    entry = SLASH_COMMANDS[slash_name]
    spec = commands.get(entry.command)
    summary = entry.summary or (spec.summary if spec else "")
    return f"/{slash_name} {entry.syntax}".rstrip() + f"  - {summary}"


@command("HELP", pre_registration=True, syntax="[<command>]")
def help_(ctx: Context, msg: Message) -> None:
    """List the commands, or show one command's syntax."""
    topic = msg.param(0).lstrip("/").lower()
    if not topic:
        ctx.reply(p.RPL_HELPSTART, "*", "Commands (plain text goes to your current room):")
        for name in sorted(SLASH_COMMANDS):
            ctx.reply(p.RPL_HELPTXT, "*", help_line(name, ctx.server.commands))
        ctx.reply(p.RPL_ENDOFHELP, "*", "End of /HELP")
        return
    if topic in SLASH_COMMANDS:
        ctx.reply(p.RPL_HELPSTART, topic, help_line(topic, ctx.server.commands))
    elif topic.upper() in ctx.server.commands:
        spec = ctx.server.commands[topic.upper()]
        ctx.reply(
            p.RPL_HELPSTART, topic, f"{spec.name} {spec.syntax}".rstrip() + f"  - {spec.summary}"
        )
    else:
        raise IRCError(p.ERR_HELPNOTFOUND, safe_param(topic), "No help for that command")
    ctx.reply(p.RPL_ENDOFHELP, topic, "End of /HELP")


@command("HELPOP", pre_registration=True, syntax="[<command>]")
def helpop(ctx: Context, msg: Message) -> None:
    """The same as HELP (the name some servers and clients use)."""
    help_(ctx, msg)
