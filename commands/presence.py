"""Who is around and who you are: MONITOR (IRCv3 monitor, extended-monitor) and SETNAME."""

from __future__ import annotations

from ircish import protocol as p
from ircish.commands import Context, IRCError, command
from ircish.protocol import Message, safe_param

#: Nicks one client may watch (advertised as MONITOR=...).
MONITOR_LIMIT = 100
#: The longest realname kept, by USER and SETNAME alike.
REALNAME_LENGTH = 100


@command("MONITOR", min_params=1, syntax="<+|-|C|L|S> [<nick>{,<nick>}]", cost=2)
def monitor(ctx: Context, msg: Message) -> None:
    """Be told when nicks come online or leave (MONITOR + nick,nick; - ; C; L; S)."""
    # https://ircv3.net/specs/extensions/monitor
    sub = msg.params[0]
    nicks = [nick for nick in msg.param(1).split(",") if nick]
    world, user = ctx.world, ctx.user
    if sub == "+":
        if not nicks:
            raise IRCError(p.ERR_NEEDMOREPARAMS, "MONITOR", "Not enough parameters: no nick")
        online, offline, full = world.monitor_add(user, nicks, MONITOR_LIMIT)
        status_lines(ctx, online, offline)
        if full:
            ctx.reply(
                p.ERR_MONLISTFULL,
                str(MONITOR_LIMIT),
                ",".join(nicks),
                f"Monitor list is full ({MONITOR_LIMIT} nicks)",
            )
    elif sub == "-":
        world.monitor_remove(user, nicks)
    elif sub.upper() == "C":
        world.monitor_clear(user)
    elif sub.upper() == "L":
        online, offline = world.monitor_status(user)
        watched = [mask.split("!", 1)[0] for mask in online] + offline
        if watched:
            ctx.reply_words(p.RPL_MONLIST, words=sorted(watched), sep=",")
        ctx.reply(p.RPL_ENDOFMONLIST, "End of MONITOR list")
    elif sub.upper() == "S":
        status_lines(ctx, *world.monitor_status(user))
    else:
        raise IRCError(
            p.ERR_UNKNOWNERROR, "MONITOR", f"Unknown MONITOR subcommand {safe_param(sub)}"
        )


def status_lines(ctx: Context, online: list[str], offline: list[str]) -> None:
    """730 with the masks online, 731 with the nicks offline, comma lists cut to fit."""
    for numeric, items in ((p.RPL_MONONLINE, online), (p.RPL_MONOFFLINE, offline)):
        if items:
            ctx.reply_words(numeric, words=items, sep=",")


@command("SETNAME", min_params=1, syntax=":<realname>")
def setname(ctx: Context, msg: Message) -> None:
    """Change your realname (people near you with the setname cap are told)."""
    # https://ircv3.net/specs/extensions/setname
    realname = msg.params[0]
    if not realname or len(realname) > REALNAME_LENGTH:
        ctx.fail("SETNAME", "INVALID_REALNAME", f"A realname is 1 to {REALNAME_LENGTH} characters")
        return
    ctx.world.set_realname(ctx.user, realname)
