"""Rendering: one IRC `Message` -> the one line a person reads (or None for protocol chatter),
shared by the server's text mode and the terminal client, plus `strip_formatting`, which makes
any peer-supplied text safe to print (no IRC formatting, no control characters, no CR/LF/NUL).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone

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
    if ctcp is not None:
        return f"* {source} sent a CTCP {ctcp[0]}"
    if _is_room(target):
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
    return f"* {_source(msg)} kicked {victim} from {room}{_reason(reason)}"


def _mode(msg: Message, me: str | None) -> str:
    target, modes = _param(msg, 0), " ".join(_params(msg, 1))
    if _is_room(target):
        return f"* {_source(msg)} sets mode {modes} on {target}"
    if _same_nick(msg.param(0), me):
        return f"* Your modes: {modes}"
    return f"* {_source(msg)} sets mode {modes} on {target}"


def _invite(msg: Message, me: str | None) -> str:
    invitee = "you" if _same_nick(msg.param(0), me) else _param(msg, 0)
    return f"* {_source(msg)} invites {invitee} to {_param(msg, 1)}"


def _error(msg: Message, me: str | None) -> str:
    return f"! {_param(msg, 0)}"


def _standard_reply(msg: Message, me: str | None) -> str:
    # FAIL/WARN/NOTE <command> <code> [context...] :description (IRCv3 standard replies).
    return f"! {strip_formatting(msg.params[-1]) if msg.params else ''}"


_COMMANDS: dict[str, Renderer] = {
    "PRIVMSG": _privmsg,
    "NOTICE": _notice,
    "JOIN": _join,
    "PART": _part,
    "QUIT": _quit,
    "NICK": _nick,
    "TOPIC": _topic,
    "KICK": _kick,
    "MODE": _mode,
    "INVITE": _invite,
    "ERROR": _error,
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
    line = f"  {room}  {nick}  {user}@{host}"
    if realname:
        line += f"  {realname}"
    if msg.param(6).startswith("G"):
        line += " (away)"
    return line


def _whois_user(msg: Message) -> str:
    nick, user, host, realname = _param(msg, 1), _param(msg, 2), _param(msg, 3), _param(msg, 5)
    return f"{nick} is {nick}!{user}@{host}{_reason(realname)}"


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
    middle = " ".join(_params(msg, 1, -1))
    return f"! {_text(msg)}: {middle}" if middle else f"! {_text(msg)}"


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
    p.RPL_UNAWAY: _text,
    p.RPL_NOWAWAY: _text,
    p.RPL_WHOISUSER: _whois_user,
    p.RPL_WHOISSERVER: _whois_server,
    p.RPL_WHOISOPERATOR: lambda msg: f"{_param(msg, 1)} is a server operator",
    p.RPL_WHOISIDLE: _whois_idle,
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
