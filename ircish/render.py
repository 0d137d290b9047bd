"""Rendering: one IRC `Message` -> the one line a person reads (or None for protocol chatter),
shared by the server's text mode and the terminal client, plus `strip_formatting`, which makes
any peer-supplied text safe to print (no IRC formatting, no control characters, no CR/LF/NUL),
and `Tables`, which gathers WHO, LIST, mask-list (bans, exceptions) and invite-list rows into
one aligned table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone

from ircish import modes
from ircish import protocol as p
from ircish.protocol import Message

# Colour codes carry their arguments (\x03 fg[,bg], \x04 hex[,hex]); strip those first so the
# digits go too. Everything else left in C0, DEL and C1 is dropped: \x02 \x0f \x16 \x1d \x1e
# \x1f \x11 are formatting, the rest could move a terminal's cursor (ESC, C1 CSI \x9b).
_COLOUR = re.compile(
    r"\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_ROOM_PREFIXES = "#&"
#: Status marks before a nick in NAMES and WHO flags: ours are modes.STATUS_PREFIXES (@ +);
#: other servers' ISUPPORT PREFIX adds ~ (owner), & (admin) and % (half-operator).
MEMBER_PREFIXES = "~&@%+"
_UNKNOWN_SOURCE = "*"
_TIME_FORMAT = "%Y-%m-%d %H:%M"


Renderer = Callable[[Message, str | None], str | None]
NumericRenderer = Callable[[Message], str | None]


def strip_formatting(text: str) -> str:
    """Remove IRC formatting codes and every control character (C0, DEL, C1) from `text`."""
    return _CONTROL.sub("", _COLOUR.sub("", text))


def render(msg: Message, me: str | None) -> str | None:
    """The human line for `msg` as seen by nick `me`, or None if a person needn't see it."""
    command = msg.command.upper()
    if len(command) == 3 and command.isascii() and command.isdigit():
        return _render_numeric(command, msg)
    if command in _HIDDEN_COMMANDS:
        return None
    renderer = _COMMANDS.get(command)
    if renderer is None:
        return _raw(msg)
    return renderer(msg, me)


# Helpers. `_param` and `_source` return cleaned text; only CTCP parsing sees raw text.


def _param(msg: Message, index: int) -> str:
    return strip_formatting(msg.param(index))


def _params(msg: Message, start: int, stop: int | None = None) -> list[str]:
    return [strip_formatting(x) for x in msg.params[start:stop]]


def _source(msg: Message) -> str:
    return strip_formatting(msg.source_nick or "") or _UNKNOWN_SOURCE


def _same_nick(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    return p.casefold(a) == p.casefold(b)


def _is_room(target: str) -> bool:
    return target.startswith(tuple(_ROOM_PREFIXES))


def _is_me(msg: Message, me: str | None) -> bool:
    return _same_nick(msg.source_nick, me)


def _reason(text: str) -> str:
    return f" ({text})" if text else ""


def _timestamp(raw: str) -> str:
    try:
        return datetime.fromtimestamp(int(raw), tz=timezone.utc).strftime(_TIME_FORMAT)
    except (ValueError, OverflowError, OSError):
        return strip_formatting(raw)


def _duration(raw: str) -> str:
    try:
        seconds = int(raw)
    except ValueError:
        seconds = -1
    if seconds < 0:
        return strip_formatting(raw)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count or parts:
            parts.append(f"{count}{unit}")
    parts.append(f"{seconds}s")
    return " ".join(parts)


def _split_ctcp(text: str) -> tuple[str, str] | None:
    """(command, argument) if `text` is a CTCP message ("\\x01CMD arg\\x01"), else None."""
    if not text.startswith("\x01"):
        return None
    body = text[1:].removesuffix("\x01")
    command, _, argument = body.partition(" ")
    command = strip_formatting(command).upper()
    if not command:
        return None
    return command, argument


# Commands (one function each: `:source COMMAND params`).


def _privmsg(msg: Message, me: str | None) -> str:
    target, source = _param(msg, 0), _source(msg)
    ctcp = _split_ctcp(msg.param(1))
    if ctcp is None:
        line, echo = f"<{source}> {_param(msg, 1)}", _param(msg, 1)
    elif ctcp[0] == "ACTION":
        line = echo = f"* {source} {strip_formatting(ctcp[1])}"
    else:
        return f"* {source} sent a CTCP {ctcp[0]}"
    if _is_room(target):
        return f"[{target}] {line}"
    if _is_me(msg, me) and not _same_nick(target, me):
        # Our own message to someone else, echoed back (echo-message or the text-mode echo).
        return f"-> *{target}* {echo}"
    return f"[private] {line}"


def _notice(msg: Message, me: str | None) -> str:
    target, source, text = _param(msg, 0), _source(msg), _param(msg, 1)
    ctcp = _split_ctcp(msg.param(1))
    if ctcp is not None:  # a NOTICE carries CTCP replies, never requests
        answer = strip_formatting(ctcp[1])
        if _is_me(msg, me) and not _same_nick(target, me):
            return f"* You answered {target}'s CTCP {ctcp[0]}"
        return f"* CTCP {ctcp[0]} reply from {source}" + (f": {answer}" if answer else "")
    if _is_room(target):
        if "!" not in (msg.prefix or "!"):
            return text  # the server's own line about the room (history's markers)
        return f"[{target}] -{source}- {text}"
    if _is_me(msg, me) and not _same_nick(target, me):
        return f"-> -{target}- {text}"
    return f"-{source}- {text}"


def _join(msg: Message, me: str | None) -> str:
    who = "You" if _is_me(msg, me) else _source(msg)
    return f"* {who} joined {_param(msg, 0)}"


def _part(msg: Message, me: str | None) -> str:
    who = "You" if _is_me(msg, me) else _source(msg)
    return f"* {who} left {_param(msg, 0)}{_reason(_param(msg, 1))}"


def _quit(msg: Message, me: str | None) -> str:
    return f"* {_source(msg)} quit{_reason(_param(msg, 0))}"


def _nick(msg: Message, me: str | None) -> str:
    # The caller renders before it updates `me`, so the old nick is still ours here.
    if _is_me(msg, me):
        return f"* You are now known as {_param(msg, 0)}"
    return f"* {_source(msg)} is now known as {_param(msg, 0)}"


def _topic(msg: Message, me: str | None) -> str:
    room, text = _param(msg, 0), _param(msg, 1)
    if not text:
        return f"* {_source(msg)} cleared the topic of {room}"
    return f"* {_source(msg)} changed the topic of {room} to: {text}"


def _kick(msg: Message, me: str | None) -> str:
    room, victim, reason = _param(msg, 0), _param(msg, 1), _param(msg, 2)
    if _same_nick(msg.param(1), me):
        return f"* You were kicked from {room} by {_source(msg)}{_reason(reason)}"
    who = "You" if _is_me(msg, me) else _source(msg)
    return f"* {who} kicked {victim} from {room}{_reason(reason)}"


def _kill(msg: Message, me: str | None) -> str:
    # `:alice KILL bob :reason` reaches only the victim; the others see bob's QUIT.
    reason = _reason(_param(msg, 1))
    if _same_nick(msg.param(0), me):
        return f"* You were killed by {_source(msg)}{reason}"
    return f"* {_source(msg)} killed {_param(msg, 0)}{reason}"


# A room mode change in words: (signed letter) -> (verb, what). The verb is in the base form
# ("give"; "gives" after another's nick). In `what`, {arg} is the change's parameter (paired
# with its letter by modes.parse_changes, never by a table here) and {room} the room: named
# the first time, "the room" after; a line that never names it ends with "in #room".
_ROOM_MODE_WORDS: dict[str, tuple[str, str]] = {
    "+o": ("give", "operator to {arg}"),
    "-o": ("remove", "operator from {arg}"),
    "+v": ("give", "voice to {arg}"),
    "-v": ("remove", "voice from {arg}"),
    "+b": ("ban", "{arg}"),
    "-b": ("unban", "{arg}"),
    "+e": ("exempt", "{arg} from bans"),
    "-e": ("remove", "the ban exception for {arg}"),
    "+I": ("let", "{arg} into {room} without an invite"),
    "-I": ("remove", "the invite exception for {arg}"),
    "+k": ("set", "the key of {room} to {arg}"),
    "-k": ("remove", "the key from {room}"),
    "+l": ("limit", "{room} to {arg} {people}"),
    "-l": ("remove", "the user limit from {room}"),
    "+i": ("make", "{room} invite-only"),
    "-i": ("remove", "invite-only from {room}"),
    "+m": ("moderate", "{room}"),
    "-m": ("stop", "moderating {room}"),
    "+s": ("make", "{room} secret"),
    "-s": ("make", "{room} public"),
    "+t": ("let", "only operators set the topic of {room}"),
    "-t": ("let", "anyone set the topic of {room}"),
    "+n": ("block", "messages from outside {room}"),
    "-n": ("allow", "messages from outside {room}"),
    "+P": ("make", "{room} permanent"),
    "-P": ("make", "{room} temporary"),
}
# Our own user modes, after "You are ".
_USER_MODE_WORDS: dict[str, str] = {
    "+o": "now a server operator",
    "-o": "no longer a server operator",
    "+i": "now invisible",
    "-i": "no longer invisible",
    "+B": "now marked as a bot",
    "-B": "no longer marked as a bot",
    "+w": "now receiving WALLOPS",
    "-w": "no longer receiving WALLOPS",
}
# A status someone gives their own nick: "You give yourself operator", not "You give operator
# to you" (issue 11). Taking it reads well as it is: "bob removes operator from themself".
_REFLEXIVE_MODE_WORDS: dict[str, str] = {"+o": "{arg} operator", "+v": "{arg} voice"}
_STATUS_LETTERS = frozenset(modes.STATUS_PREFIXES)
# One pass over the template, so a nick or room holding "{arg}" is never filled in again.
_PLACEHOLDER = re.compile(r"\{(arg|room|people)\}")


def _mode(msg: Message, me: str | None) -> str:
    target = _param(msg, 0)
    if _is_room(target):
        return _room_mode(msg, me) or _mode_as_letters(msg, me)
    if _same_nick(msg.param(0), me):
        return _own_mode(msg) or f"* Your modes: {' '.join(_params(msg, 1))}"
    return _mode_as_letters(msg, me)


def _mode_as_letters(msg: Message, me: str | None) -> str:
    # For letters we cannot put in words (another server's), as the server wrote them.
    who, verb = ("You", "set") if _is_me(msg, me) else (_source(msg), "sets")
    changes = " ".join(x for x in _params(msg, 1) if x)
    return " ".join(x for x in ("*", who, verb, "mode", changes, "on", _param(msg, 0)) if x)


def _readable_changes(msg: Message, table: dict[str, str]) -> list[modes.Change] | None:
    """The changes of a relayed MODE line, or None unless every letter and parameter was
    understood: after an unknown letter, which parameter belongs to which is a guess."""
    args = msg.params[2:]
    parsed = modes.parse_changes(msg.param(1), args, table)
    used = sum(change.arg is not None for change in parsed.changes)
    if parsed.unknown or parsed.missing or used != len(args) or not parsed.changes:
        return None
    return parsed.changes


def _room_mode(msg: Message, me: str | None) -> str | None:
    changes = _readable_changes(msg, modes.ROOM_MODES)
    if changes is None:
        return None
    # Runs of one change share their words: "+oo bob carol" gives operator to "bob and carol".
    mine = _is_me(msg, me)
    runs: list[tuple[str, list[str], list[bool]]] = []  # (signed, args, whether each is self)
    for change in changes:
        words = _ROOM_MODE_WORDS.get(change.signed)
        if words is None or (change.arg is None and "{arg}" in words[1]):
            return None  # a letter with no words, or a list query (never relayed)
        arg = strip_formatting(change.arg or "")
        self_given = change.letter in _STATUS_LETTERS and _same_nick(change.arg, msg.source_nick)
        if self_given:
            arg = "yourself" if mine else "themself"
        elif change.letter in _STATUS_LETTERS and _same_nick(change.arg, me):
            arg = "you"
        if runs and runs[-1][0] == change.signed and "{room}" not in words[1]:
            runs[-1][1].append(arg)
            runs[-1][2].append(self_given)
        else:
            runs.append((change.signed, [arg], [self_given]))
    room, named = _param(msg, 0), False
    # Consecutive changes with one verb share it: "gives operator to bob and voice to carol".
    groups: list[tuple[str, list[str]]] = []
    for signed, args, selves in runs:
        verb, template = _ROOM_MODE_WORDS[signed]
        if selves == [True]:
            template = _REFLEXIVE_MODE_WORDS.get(signed, template)
        values = {
            "arg": _and(args),
            "room": "the room" if named else room,
            "people": "person" if args == ["1"] else "people",
        }
        named = named or "{room}" in template
        what = _fill(template, values)
        if groups and groups[-1][0] == verb:
            groups[-1][1].append(what)
        else:
            groups.append((verb, [what]))
    clauses = [f"{verb if mine else verb + 's'} {_and(whats)}" for verb, whats in groups]
    who = "You" if mine else _source(msg)
    return f"* {who} {_and(clauses)}" + ("" if named else f" in {room}")


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda found: values[found.group(1)], template)


def _own_mode(msg: Message) -> str | None:
    changes = _readable_changes(msg, modes.USER_MODES)
    if changes is None:
        return None
    states = [_USER_MODE_WORDS.get(change.signed, "") for change in changes]
    if not all(states):
        return None
    return f"* You are {_and(states)}"


def _and(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'; with an 'and' inside an item, 'a and b, and c'."""
    if len(items) == 1:
        return items[0]
    last = ", and " if any(" and " in item for item in items) else " and "
    return ", ".join(items[:-1]) + last + items[-1]


def _invite(msg: Message, me: str | None) -> str:
    room = _param(msg, 1)
    if _same_nick(msg.param(0), me):
        return f"* {_source(msg)} invites you to {room} (/join {room})"
    return f"* {_source(msg)} invites {_param(msg, 0)} to {room}"


def _error(msg: Message, me: str | None) -> str:
    return f"! {_param(msg, 0)}"


def _wallops(msg: Message, me: str | None) -> str:
    # From a server operator to everyone with user mode +w.
    return f"[wallops] <{_source(msg)}> {_param(msg, 0)}"


def _standard_reply(msg: Message, me: str | None) -> str:
    # FAIL/WARN/NOTE <command> <code> [context...] :description (IRCv3 standard replies):
    # failures and warnings read as errors, notes as news.
    mark = "*" if msg.command.upper() == "NOTE" else "!"
    return f"{mark} {strip_formatting(msg.params[-1]) if msg.params else ''}"


_COMMANDS: dict[str, Renderer] = {
    "PRIVMSG": _privmsg,
    "NOTICE": _notice,
    "JOIN": _join,
    "PART": _part,
    "QUIT": _quit,
    "NICK": _nick,
    "TOPIC": _topic,
    "KICK": _kick,
    "KILL": _kill,
    "MODE": _mode,
    "INVITE": _invite,
    "ERROR": _error,
    "WALLOPS": _wallops,
    "FAIL": _standard_reply,
    "WARN": _standard_reply,
    "NOTE": _standard_reply,
}
_HIDDEN_COMMANDS = frozenset({"PING", "PONG", "CAP"})


def _raw(msg: Message) -> str:
    words = [strip_formatting(msg.command), *_params(msg, 0)]
    if msg.prefix is not None:
        words.insert(0, _source(msg))
    return " ".join(w for w in words if w)


# Numerics. params[0] is always the recipient's own nick (or '*' before registration).


def _text(msg: Message) -> str:
    """The trailing text after the recipient's nick ('' if there is none)."""
    return strip_formatting(msg.params[-1]) if len(msg.params) > 1 else ""


def _counted_text(msg: Message) -> str:
    # 252/253/254: "<me> <count> :operator(s) online"
    return " ".join(x for x in _params(msg, 1) if x)


def _motd_line(msg: Message) -> str:
    text = _text(msg)
    return "" if text == "-" else text.removeprefix("- ")


def _channel_modes(msg: Message) -> str:
    return f"Modes of {_param(msg, 1)}: {' '.join(_params(msg, 2))}"


def _topic_who_time(msg: Message) -> str:
    setter = strip_formatting(msg.param(2).split("!", 1)[0])
    when = msg.param(3)
    return f"Topic set by {setter} on {_timestamp(when)}" if when else f"Topic set by {setter}"


def _names_reply(msg: Message) -> str:
    # "<me> <symbol> <room> :names"; RFC 1459 servers leave the symbol out.
    room_index = 1 if len(msg.params) == 3 and _is_room(msg.param(1)) else 2
    names = " ".join(_param(msg, room_index + 1).split())
    return f"Users in {_param(msg, room_index)}: {names}"


def _list_entry(msg: Message) -> str:
    room, count, topic = _param(msg, 1), _param(msg, 2), _param(msg, 3)
    line = f"  {room}  {count} {'user' if count == '1' else 'users'}"
    return f"{line}  {topic}" if topic else line


def _who_reply(msg: Message) -> str:
    room, user, host, nick = _param(msg, 1), _param(msg, 2), _param(msg, 3), _param(msg, 5)
    realname = _param(msg, 7).partition(" ")[2]  # "<hopcount> <realname>"
    # Flags (RFC 2812 3.6.1): H here or G away, '*' server operator, then the status marks.
    here, flags = msg.param(6)[:1], msg.param(6)[1:]
    status = next((mark for mark in flags if mark in MEMBER_PREFIXES), "")
    line = f"  {room}  {status}{nick}  {user}@{host}"
    if realname:
        line += f"  {realname}"
    notes = ["server operator"] * ("*" in flags) + ["away"] * (here == "G")
    if notes:
        line += f" ({', '.join(notes)})"
    return line


def _whois_user(msg: Message) -> str:
    nick, user, host, realname = _param(msg, 1), _param(msg, 2), _param(msg, 3), _param(msg, 5)
    return f"{nick} is {nick}!{user}@{host}{_reason(realname)}"


def _whowas_user(msg: Message) -> str:
    nick, user, host, realname = _param(msg, 1), _param(msg, 2), _param(msg, 3), _param(msg, 5)
    return f"{nick} was {nick}!{user}@{host}{_reason(realname)}"


def _links_entry(msg: Message) -> str:
    # "<me> <mask> <server> :<hopcount> <server info>"
    hops, _, description = _param(msg, 3).partition(" ")
    line = f"Server {_param(msg, 2)}"
    if hops not in ("", "0"):
        line += f" ({hops} hops away)"
    return f"{line}: {description}" if description else line


def _whois_server(msg: Message) -> str:
    return f"{_param(msg, 1)} is on {_param(msg, 2)}{_reason(_param(msg, 3))}"


def _whois_idle(msg: Message) -> str:
    # "<me> <nick> <idle> <signon> :seconds idle, signon time"; RFC 1459 has no signon.
    line = f"{_param(msg, 1)} has been idle {_duration(msg.param(2))}"
    signon = msg.param(3)
    if signon.isascii() and signon.isdigit():
        line += f", signed on {_timestamp(signon)}"
    return line


def _error_reply(msg: Message) -> str:
    if len(msg.params) < 2:
        return f"! error {strip_formatting(msg.command)}"
    # ("*" stands for no command or target: 400 <me> * :<text>)
    middle = " ".join(param for param in _params(msg, 1, -1) if param != "*")
    return f"! {_text(msg)}: {middle}" if middle else f"! {_text(msg)}"


def _inviting(msg: Message) -> str:
    # "<me> <nick> <room>"; RFC 1459 has the room first.
    nick, room = _param(msg, 1), _param(msg, 2)
    if _is_room(nick):
        nick, room = room, nick
    return f"You invited {nick} to {room}"


def _ban_entry(msg: Message) -> str:
    # "<me> <room> <mask> [<setter> <time>]": a table row (two spaces between cells).
    room, mask, setter = _param(msg, 1), _param(msg, 2), msg.param(3)
    line = f"  {room}  {mask}"
    if setter:
        line += f"  by {strip_formatting(setter.split('!', 1)[0])}"
        if msg.param(4):
            line += f" on {_timestamp(msg.param(4))}"
    return line


# Join refusals: the numeric says why, whatever words the server chose ("Cannot join channel
# (+l)" means little to someone who never typed a mode).
_CANNOT_JOIN = {
    p.ERR_CHANNELISFULL: "it is full",
    p.ERR_INVITEONLYCHAN: "it is invite-only; an operator can /invite you",
    p.ERR_BANNEDFROMCHAN: "you are banned",
    p.ERR_BADCHANNELKEY: "it needs the right key: /join {room} <key>",
}


def _cannot_join(msg: Message) -> str:
    room = _param(msg, 1)
    return f"! Cannot join {room}: {_CANNOT_JOIN[msg.command].format(room=room)}"


def _mode_param_refused(msg: Message) -> str:
    # "<me> <room|nick> <letter> <param> :why"
    target, letter, value = _param(msg, 1), _param(msg, 2), _param(msg, 3)
    return f"! {_text(msg)}: mode {letter} {value} on {target}"


def _unknown_numeric(msg: Message) -> str | None:
    return " ".join(_params(msg, 1)) or None


_NUMERICS: dict[str, NumericRenderer] = {
    p.RPL_WELCOME: _text,
    p.RPL_YOURHOST: _text,
    p.RPL_CREATED: _text,
    p.RPL_UMODEIS: lambda msg: f"Your modes: {' '.join(_params(msg, 1))}",
    p.RPL_LUSERCLIENT: _text,
    p.RPL_LUSEROP: _counted_text,
    p.RPL_LUSERUNKNOWN: _counted_text,
    p.RPL_LUSERCHANNELS: _counted_text,
    p.RPL_LUSERME: _text,
    p.RPL_LOCALUSERS: _text,
    p.RPL_GLOBALUSERS: _text,
    # No MOTD is not a failure a person should be warned about.
    p.ERR_NOMOTD: _text,
    p.RPL_AWAY: lambda msg: f"{_param(msg, 1)} is away: {_text(msg)}",
    p.RPL_REHASHING: lambda msg: f"Reloading {_param(msg, 1)}...",
    p.RPL_UNAWAY: _text,
    p.RPL_NOWAWAY: _text,
    p.RPL_WHOISUSER: _whois_user,
    p.RPL_WHOISSERVER: _whois_server,
    p.RPL_WHOISOPERATOR: lambda msg: f"{_param(msg, 1)} is a server operator",
    p.RPL_WHOISIDLE: _whois_idle,
    p.RPL_WHOISACCOUNT: lambda msg: f"{_param(msg, 1)} is logged in as {_param(msg, 2)}",
    p.RPL_LOGGEDIN: _text,
    p.RPL_LOGGEDOUT: _text,
    p.RPL_WHOWASUSER: _whowas_user,
    p.RPL_LINKS: _links_entry,
    p.RPL_INFO: _text,
    p.RPL_WHOISCHANNELS: lambda msg: f"{_param(msg, 1)} is in: {' '.join(_text(msg).split())}",
    p.RPL_LISTSTART: lambda msg: "Rooms:",
    p.RPL_LIST: _list_entry,
    p.RPL_CHANNELMODEIS: _channel_modes,
    p.RPL_NOTOPIC: lambda msg: f"No topic is set for {_param(msg, 1)}",
    p.RPL_TOPIC: lambda msg: f"Topic for {_param(msg, 1)}: {_param(msg, 2)}",
    p.RPL_TOPICWHOTIME: _topic_who_time,
    p.RPL_WHOREPLY: _who_reply,
    p.RPL_NAMREPLY: _names_reply,
    p.RPL_MOTD: _motd_line,
    p.RPL_MOTDSTART: _text,
    p.RPL_ENDOFMOTD: _text,
    p.RPL_HELPSTART: _text,
    p.RPL_HELPTXT: _text,
    p.RPL_INVITING: _inviting,
    **{kind.entry: _ban_entry for kind in modes.MASK_LISTS.values()},
    **{
        kind.end: (lambda msg, noun=kind.noun: f"End of {noun} list for {_param(msg, 1)}")
        for kind in modes.MASK_LISTS.values()
    },
    p.RPL_INVITELIST: lambda msg: f"  {_param(msg, 1)}",
    p.RPL_ENDOFINVITELIST: lambda msg: "End of your invites",
    p.ERR_USERONCHANNEL: lambda msg: f"! {_param(msg, 1)} is already in {_param(msg, 2)}",
    p.ERR_UNKNOWNMODE: lambda msg: f"! Mode {_param(msg, 1)} {_text(msg)}",
    p.ERR_INVALIDMODEPARAM: _mode_param_refused,
    **{numeric: _cannot_join for numeric in _CANNOT_JOIN},
}


# End-of-list markers and machine-readable server facts: nothing for a person to read.
_HIDDEN_NUMERICS = frozenset(
    {
        p.RPL_MYINFO,
        p.RPL_ISUPPORT,
        p.RPL_ENDOFWHO,
        p.RPL_ENDOFWHOIS,
        p.RPL_LISTEND,
        p.RPL_CREATIONTIME,
        p.RPL_ENDOFNAMES,
        p.RPL_ENDOFHELP,
        p.RPL_ENDOFWHOWAS,
        p.RPL_ENDOFINFO,
        p.RPL_ENDOFLINKS,
        # OPER success: the MODE +o that comes with it (RFC 2812 3.1.4) already says
        # "* You are now a server operator"; two lines saying so would look like a bug.
        p.RPL_YOUREOPER,
        # SASL's success after 900 "You are now logged in as ...", which says it all.
        p.RPL_SASLSUCCESS,
    }
)


def _render_numeric(numeric: str, msg: Message) -> str | None:
    if numeric in _HIDDEN_NUMERICS:
        return None
    renderer = _NUMERICS.get(numeric)
    if renderer is not None:
        return renderer(msg)
    if p.is_error_numeric(numeric):
        return _error_reply(msg)
    return _unknown_numeric(msg)


# Tables: reply rows gathered until their end numeric, then shown aligned under a heading.

#: A table's row numeric -> its end numeric, and how many columns a rendered row has.
TABLE_ROWS = {
    p.RPL_WHOREPLY: (p.RPL_ENDOFWHO, 4),
    p.RPL_LIST: (p.RPL_LISTEND, 3),
    **{kind.entry: (kind.end, 3) for kind in modes.MASK_LISTS.values()},
    p.RPL_INVITELIST: (p.RPL_ENDOFINVITELIST, 1),
}
_TABLE_ENDS = {end: row for row, (end, _) in TABLE_ROWS.items()}
#: A mask list's row numeric -> the list (its noun heads the table).
_MASK_LIST_ROWS = {kind.entry: kind for kind in modes.MASK_LISTS.values()}


class Tables:
    """WHO, LIST, mask-list and invite-list replies as a person reads them: the rows are
    held until their end numeric, then given back as one table with a heading and aligned
    columns. One per reader of replies, used by one thread (the replies to one client's own
    commands)."""

    def __init__(self) -> None:
        self._rows: dict[str, list[str]] = {}

    def take(self, msg: Message, me: str | None) -> list[str] | None:
        """The lines `msg` completes ([] while a table is gathering), or None when `msg` is
        not part of a table (render it as usual)."""
        command = msg.command
        if command in TABLE_ROWS:
            text = render(msg, me)
            if text is not None:
                self._rows.setdefault(command, []).append(text)
            return []
        if command in _TABLE_ENDS:
            return self._table(_TABLE_ENDS[command], msg)
        return None

    def unfinished(self) -> list[str]:
        """Rows whose end numeric never came (the link went): better shown than lost."""
        rows = [row for pending in self._rows.values() for row in pending]
        self._rows.clear()
        return rows

    def _table(self, row_command: str, end: Message) -> list[str]:
        rows = self._rows.pop(row_command, [])
        header: list[str] = []
        if row_command == p.RPL_WHOREPLY:
            mask = _param(end, 1)
            if not rows:
                return [f"No users match {mask}"]
            header = [f"Users in {mask}:" if _is_room(mask) else f"Users matching {mask}:"]
        elif row_command in _MASK_LIST_ROWS:
            room, noun = _param(end, 1), _MASK_LIST_ROWS[row_command].noun
            if not rows:
                return [f"No {noun}s in {room}"]
            header = [f"{noun[0].upper()}{noun[1:]}s in {room}:"]
        elif row_command == p.RPL_INVITELIST:
            if not rows:
                return ["You have no invites"]
            header = ["You are invited to:"]
        elif not rows:
            return ["  (no rooms)"]
        return header + align_table(rows, TABLE_ROWS[row_command][1])


def align_table(rows: list[str], columns: int) -> list[str]:
    """Rows of cells separated by two spaces (as WHO, LIST and ban rows render), with every
    cell but a row's last padded to its column's width."""
    cells = [row.strip().split("  ", columns - 1) for row in rows]
    widths = [0] * columns
    for row in cells:
        for i, cell in enumerate(row[: columns - 1]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + row[-1:]
        lines.append("  " + "  ".join(padded))
    return lines
