"""ChanServ: rooms registered to an account (PRIVMSG ChanServ, CS). A room operator who
is logged in registers a room and becomes its founder; the room becomes permanent (+P)
and keeps, across restarts, its founder, its access list (accounts given op or voice when
they join) and its topic lock.

The state and every check live in the room (ircish/world.py `Room.register` and the
methods after it), under its lock; this module reads the command, finds the room and the
accounts, and answers in NOTICEs from ChanServ. A room's refusal is an IRCError whose text
is said as it is; nothing here raises past `chanserv`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ircish.accounts import CHANSERV_PREFIX
from ircish.commands import Context, IRCError, command
from ircish.protocol import Message
from ircish.world import ACCESS_LETTERS, Room

from .accounts import Refused, require_login

#: The access lists by the command that changes each, and the status it gives.
LISTS = {"OP": "o", "VOICE": "v"}
assert set(LISTS.values()) == set(ACCESS_LETTERS), "an access letter without its list"

CHANSERV_HELP = (
    ("REGISTER <#room>", "register a room you operate (log in first); it becomes permanent"),
    ("OP <#room> ADD|DEL <account>", "give an account op when it joins, or stop"),
    ("OP <#room> LIST", "the accounts given op"),
    ("VOICE <#room> ADD|DEL <account> | LIST", "the same for voice"),
    ("UP <#room>", "take now the status your account is given there"),
    ("INFO <#room>", "founder, when registered, topic lock, access lists"),
    ("SET <#room> TOPICLOCK ON|OFF", "only the founder and the OP list may change the topic"),
    ("RECOVER <#room>", "founder: lift the bans on you and take op"),
    ("DROP <#room>", "founder: unregister the room; it is no longer permanent"),
)


def chanserv_says(ctx: Context, text: str) -> None:
    ctx.send(Message("NOTICE", [ctx.user.nick or "*", text], CHANSERV_PREFIX))


def chanserv(ctx: Context, text: str) -> None:
    """A line sent to ChanServ (PRIVMSG ChanServ, CS)."""
    word, *args = text.split() or [""]
    action = ACTIONS.get(word.upper())
    if action is None:
        if word and word.upper() != "HELP":
            chanserv_says(ctx, f"Unknown command {word[:40]}; the commands are:")
        chanserv_help(ctx)
        return
    try:
        action(ctx, args)
    except Refused as refusal:
        chanserv_says(ctx, refusal.text)
    except IRCError as exc:  # a room's refusal: its last parameter is the text
        chanserv_says(ctx, exc.params[-1])


def chanserv_help(ctx: Context) -> None:
    chanserv_says(ctx, "ChanServ commands:")
    for syntax, summary in CHANSERV_HELP:
        chanserv_says(ctx, f"  {syntax} - {summary}")


def room_named(ctx: Context, args: list[str], usage: str) -> Room:
    """The room the first argument names; Refused with the usage if there is none."""
    if not args or not args[0].startswith("#"):
        raise Refused("USAGE", f"Usage: {usage}")
    room = ctx.world.find_room(args[0])
    if room is None:
        raise Refused("NO_SUCH_ROOM", f"No such room: {args[0]}")
    return room


def register(ctx: Context, args: list[str]) -> None:
    room = room_named(ctx, args, "REGISTER <#room>")
    account = require_login(ctx).name
    room.register(ctx.user, account)
    chanserv_says(ctx, f"{room.name} is registered to {account}; it is now permanent")


def access_list(ctx: Context, args: list[str], name: str) -> None:
    """OP / VOICE <#room> ADD|DEL <account>, or LIST."""
    usage = f"{name} <#room> ADD|DEL <account> | {name} <#room> LIST"
    room = room_named(ctx, args, usage)
    letter = LISTS[name]
    action = args[1].upper() if len(args) > 1 else ""
    if action == "LIST":
        accounts = [e.account for e in room.registration(ctx.user).access if e.letter == letter]
        chanserv_says(ctx, f"{name} list of {room.name}: {', '.join(accounts) or 'empty'}")
        return
    if action not in ("ADD", "DEL") or len(args) != 3:
        raise Refused("USAGE", f"Usage: {usage}")
    account = args[2]
    if action == "ADD":
        state = ctx.world.accounts.get(account)
        if state is None:
            raise Refused("NO_SUCH_ACCOUNT", f"{account} is not a registered account")
        if room.change_access(ctx.user, letter, state.name, adding=True):
            chanserv_says(ctx, f"{state.name} added to the {name} list of {room.name}")
        else:
            chanserv_says(ctx, f"{state.name} is already on the {name} list of {room.name}")
        return
    if room.change_access(ctx.user, letter, account, adding=False):
        chanserv_says(ctx, f"{account} removed from the {name} list of {room.name}")
    else:
        chanserv_says(ctx, f"{account} is not on the {name} list of {room.name}")


def info(ctx: Context, args: list[str]) -> None:
    room = room_named(ctx, args, "INFO <#room>")
    facts = room.registration(ctx.user)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(facts.registered))
    chanserv_says(ctx, f"{room.name}: founder {facts.founder}, registered {when}")
    chanserv_says(ctx, f"  topic lock: {'on' if facts.topic_lock else 'off'}")
    for name, letter in LISTS.items():
        accounts = [e.account for e in facts.access if e.letter == letter]
        chanserv_says(ctx, f"  {name} list: {', '.join(accounts) or 'empty'}")


def set_(ctx: Context, args: list[str]) -> None:
    usage = "SET <#room> TOPICLOCK ON|OFF"
    room = room_named(ctx, args, usage)
    if len(args) != 3 or args[1].upper() != "TOPICLOCK" or args[2].upper() not in ("ON", "OFF"):
        raise Refused("USAGE", f"Usage: {usage}")
    on = args[2].upper() == "ON"
    room.set_topic_lock(ctx.user, on)
    chanserv_says(ctx, f"Topic lock of {room.name} is {'on' if on else 'off'}")


def recover(ctx: Context, args: list[str]) -> None:
    room = room_named(ctx, args, "RECOVER <#room>")
    lifted, inside = room.recover(ctx.user)
    if lifted:
        chanserv_says(ctx, f"Bans lifted in {room.name}: {' '.join(lifted)}")
    if inside:
        chanserv_says(ctx, f"You are an operator of {room.name}")
    else:
        chanserv_says(ctx, f"Join {room.name}: as its founder you pass its bans, key, limit and +i")


def up(ctx: Context, args: list[str]) -> None:
    room = room_named(ctx, args, "UP <#room>")
    given = room.give_access(ctx.user)
    if given:
        chanserv_says(ctx, f"You get +{given} in {room.name}")
    else:
        chanserv_says(ctx, f"Nothing more for you in {room.name}")


def drop(ctx: Context, args: list[str]) -> None:
    room = room_named(ctx, args, "DROP <#room>")
    room.drop_registration(ctx.user)
    ctx.world.end_if_empty(room)  # no longer permanent: an empty room ends now
    chanserv_says(ctx, f"{room.name} is no longer registered, nor permanent")


ACTIONS: dict[str, Callable[[Context, list[str]], None]] = {
    "REGISTER": register,
    "OP": lambda ctx, args: access_list(ctx, args, "OP"),
    "VOICE": lambda ctx, args: access_list(ctx, args, "VOICE"),
    "UP": up,
    "INFO": info,
    "SET": set_,
    "RECOVER": recover,
    "DROP": drop,
}


@command("CS", syntax="<command> [args]", cost=2)
def cs(ctx: Context, msg: Message) -> None:
    """Talk to ChanServ: CS REGISTER #room, CS INFO #room ... (CS HELP lists them)."""
    chanserv(ctx, " ".join(msg.params))
