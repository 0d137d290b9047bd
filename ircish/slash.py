"""Slash commands: one table mapping what a person types (`/msg bob hi`) to the IRC `Message`
it means, shared by the server's text mode and the terminal client; `/help` reads the same
table for each command's syntax and summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ircish.modes import MAX_PARAM_CHANGES, Change, format_changes
from ircish.protocol import (
    DEFAULT_LINE_BYTES,
    NICKSERV,
    Message,
    ProtocolError,
    has_forbidden,
    parse,
    truncate_utf8,
)

ROOM_PREFIX = "#"
#: What a relayed `:nick!user@host` prefix may cost; a person's text must leave room for it.
PREFIX_ALLOWANCE = 100
_ACTION = "\x01ACTION "
#: Text is split only into pieces of at least this many bytes; less would be confetti.
MIN_PIECE_BYTES = 64
#: Earlier lines one /history asks for when no count is given (issue 13).
HISTORY_DEFAULT = 20
#: The services pseudo-user /register and /login talk to.


class SlashError(ValueError):
    """A slash line that cannot be sent; the text is a short hint for the person who typed it."""


@dataclass(frozen=True, slots=True)
class SlashCommand:
    """One row of the slash table: `/name syntax` produces an IRC `command`."""

    name: str
    command: str
    syntax: str
    summary: str
    build: Callable[[str, str | None], Message]
    #: For an alias row, the name of the row it duplicates (so /help can say so).
    alias_of: str | None = None
    #: Answered by whoever keeps the person's state (the server's text session, the client),
    #: never sent: `command` is empty and `build` raises SlashError.
    local: bool = False

    @property
    def usage(self) -> str:
        return f"usage: /{self.name} {self.syntax}".rstrip()


def translate(line: str, current_room: str | None) -> Message:
    """Turn a line starting with '/' into the Message to send. Raises SlashError if malformed."""
    if not line.startswith("/"):
        raise SlashError("not a slash command")
    if has_forbidden(line):
        raise SlashError("text may not contain CR, LF or NUL")
    if line.startswith("//"):
        # irssi convention: a doubled slash sends the rest, with one slash, as plain text.
        room = _require_room(current_room, "no current room to send to; /join one first")
        return Message("PRIVMSG", [room, line[1:]])
    name, _, args = line[1:].partition(" ")
    if not name:
        raise SlashError("empty command; try /help")
    entry = SLASH_COMMANDS.get(name.lower())
    msg = entry.build(args, current_room) if entry is not None else _raw_line(name, args)
    try:
        msg.to_line()
    except ProtocolError as exc:
        raise SlashError(f"cannot send that: {exc}") from None
    return msg


def split_long_message(msg: Message, prefix_bytes: int = PREFIX_ALLOWANCE) -> list[Message]:
    """A PRIVMSG/NOTICE whose text would not fit one relayed line, as several messages.
    `prefix_bytes` is what the relay's `:nick!user@host` costs: the server knows it, a
    client allows `PREFIX_ALLOWANCE`."""
    if msg.command not in ("PRIVMSG", "NOTICE") or len(msg.params) != 2:
        return [msg]
    target, text = msg.params
    head = tail = ""
    if text.startswith(_ACTION) and text.endswith("\x01"):  # /me: each piece an action
        head, tail, text = _ACTION, "\x01", text[len(_ACTION) : -1]
    elif text.startswith("\x01"):  # any other CTCP: one unit, never cut
        return [msg]
    overhead = len(f" {msg.command} {target} :{head}{tail}\r\n".encode()) + prefix_bytes
    budget = DEFAULT_LINE_BYTES - overhead
    if budget < MIN_PIECE_BYTES:  # the targets alone nearly fill a line: it goes (or fails) whole
        return [msg]
    pieces = split_text(text, budget)
    return [Message(msg.command, [target, f"{head}{piece}{tail}"]) for piece in pieces]


def split_text(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` UTF-8 bytes, cut at a space when one is near.
    `limit` must hold any one character (4 bytes), or no piece could be cut."""
    if limit < 4:
        raise ValueError(f"cannot split text into pieces of {limit} bytes")
    pieces: list[str] = []
    while len(text.encode()) > limit:
        fits = len(truncate_utf8(text.encode(), limit).decode("utf-8", "ignore"))
        space = text.rfind(" ", 0, fits + 1)
        if space > fits // 2:
            pieces.append(text[:space])
            text = text[space + 1 :]
        else:
            pieces.append(text[:fits])
            text = text[fits:]
    pieces.append(text)
    return [piece for piece in pieces if piece] or [text]


def _raw_line(name: str, args: str) -> Message:
    # Unknown names go out as a raw IRC line, as in irssi; the server answers 421 if it
    # does not know the command. Only a plain word may start it, so `/:x` or `/@x` cannot
    # smuggle a prefix or tags in.
    if not (name.isascii() and name.isalpha()):
        raise SlashError(f"unknown command /{name}; try /help")
    try:
        return parse(f"{name} {args}")
    except ProtocolError as exc:
        raise SlashError(f"cannot send that: {exc}") from None


def _require_room(room: str | None, hint: str) -> str:
    if not room:
        raise SlashError(hint)
    return room


def _words(args: str, name: str, low: int, high: int | None) -> list[str]:
    words = args.split()
    if len(words) < low or (high is not None and len(words) > high):
        raise SlashError(SLASH_COMMANDS[name].usage)
    return words


def _target_and_text(args: str, name: str) -> tuple[str, str]:
    # Only the one space after the target is a separator; the text keeps its spacing.
    target, _, text = args.lstrip(" ").partition(" ")
    if not target or not text.strip():
        raise SlashError(SLASH_COMMANDS[name].usage)
    return target, text


def _optional_room(args: str, current_room: str | None) -> tuple[str | None, str]:
    """Split `[#room] [text]`: the first word is a room only if it starts with '#'."""
    stripped = args.lstrip(" ")
    if stripped.startswith(ROOM_PREFIX):
        room, _, text = stripped.partition(" ")
        return room, text
    return current_room, args


def _no_room(name: str) -> str:
    return f"no current room; {SLASH_COMMANDS[name].usage}"


def with_room_prefix(name: str) -> str:
    """`general` -> `#general`: what a person means by a room name typed without its '#'."""
    return name if name.startswith(ROOM_PREFIX) else ROOM_PREFIX + name


def _room_and_words(
    args: str, current_room: str | None, name: str, low: int, high: int | None
) -> tuple[str, list[str]]:
    """Split `[#room] word...` for the moderation rows: the room defaults to the current one."""
    room, rest = _optional_room(args, current_room)
    return _require_room(room, _no_room(name)), _words(rest, name, low, high)


# Builders: /name args -> Message. Each names its row for the usage hint.


def _nick(args: str, current_room: str | None) -> Message:
    return Message("NICK", _words(args, "nick", 1, 1))


def _join(args: str, current_room: str | None) -> Message:
    words = _words(args, "join", 1, 2)
    rooms = [with_room_prefix(r) for r in words[0].split(",") if r]
    if not rooms:
        raise SlashError(SLASH_COMMANDS["join"].usage)
    return Message("JOIN", [",".join(rooms), *words[1:]])


def _msg(args: str, current_room: str | None) -> Message:
    return Message("PRIVMSG", _target_and_text(args, "msg"))


def _notice(args: str, current_room: str | None) -> Message:
    return Message("NOTICE", _target_and_text(args, "notice"))


def _me(args: str, current_room: str | None) -> Message:
    room = _require_room(current_room, "/me needs a current room; /join one")
    if not args.strip():
        raise SlashError(SLASH_COMMANDS["me"].usage)
    return Message("PRIVMSG", [room, f"{_ACTION}{args}\x01"])


def _who(args: str, current_room: str | None) -> Message:
    words = _words(args, "who", 0, 1)
    mask = words[0] if words else _require_room(current_room, _no_room("who"))
    return Message("WHO", [mask])


def _leave(args: str, current_room: str | None) -> Message:
    room, reason = _optional_room(args, current_room)
    room = _require_room(room, _no_room("leave"))
    return Message("PART", [room, reason] if reason.strip() else [room])


def _quit(args: str, current_room: str | None) -> Message:
    return Message("QUIT", [args] if args.strip() else [])


def _topic(args: str, current_room: str | None) -> Message:
    room, text = _optional_room(args, current_room)
    room = _require_room(room, _no_room("topic"))
    return Message("TOPIC", [room, text] if text.strip() else [room])


def _list(args: str, current_room: str | None) -> Message:
    return Message("LIST", _words(args, "list", 0, 1))


def _names(args: str, current_room: str | None) -> Message:
    words = _words(args, "names", 0, 1)
    if not words and current_room:
        words = [current_room]
    return Message("NAMES", words)


def _whois(args: str, current_room: str | None) -> Message:
    return Message("WHOIS", _words(args, "whois", 1, 1))


def _away(args: str, current_room: str | None) -> Message:
    return Message("AWAY", [args] if args.strip() else [])


def _help(args: str, current_room: str | None) -> Message:
    words = _words(args, "help", 0, 1)
    # `/help /join` and `/help join` ask the same thing.
    return Message("HELP", [w.lstrip("/") for w in words if w.lstrip("/")])


def _mode(args: str, current_room: str | None) -> Message:
    words = _words(args, "mode", 0, None)
    # No target, or a first word that is a mode string (`/mode +m`): the current room.
    if not words or words[0].startswith(("+", "-")):
        words.insert(0, _require_room(current_room, _no_room("mode")))
    return Message("MODE", words)


def _member_status(name: str, adding: bool, letter: str) -> Callable[[str, str | None], Message]:
    """The builder of /op, /deop, /voice, /devoice: one MODE line for all the nicks."""

    def build(args: str, current_room: str | None) -> Message:
        room, nicks = _room_and_words(args, current_room, name, 1, None)
        if len(nicks) > MAX_PARAM_CHANGES:
            # The server applies only MAX_PARAM_CHANGES of them (ISUPPORT MODES); refusing
            # here beats a line that half works.
            raise SlashError(
                f"at most {MAX_PARAM_CHANGES} nicks at a time; {SLASH_COMMANDS[name].usage}"
            )
        changes = [Change(adding, letter, nick) for nick in nicks]
        return Message("MODE", [room, *format_changes(changes)])

    return build


def _kick(args: str, current_room: str | None) -> Message:
    room, rest = _optional_room(args, current_room)
    room = _require_room(room, _no_room("kick"))
    # Like /leave, the reason keeps its spacing; only the space after the nick separates.
    nick, _, reason = rest.lstrip(" ").partition(" ")
    if not nick:
        raise SlashError(SLASH_COMMANDS["kick"].usage)
    return Message("KICK", [room, nick, reason] if reason.strip() else [room, nick])


def _ban(args: str, current_room: str | None) -> Message:
    # The mask goes out as typed: the server completes `bob` to `bob!*@*`. No mask: the list.
    room, mask = _room_and_words(args, current_room, "ban", 0, 1)
    return Message("MODE", [room, "+b", *mask])


def _unban(args: str, current_room: str | None) -> Message:
    room, mask = _room_and_words(args, current_room, "unban", 1, 1)
    return Message("MODE", [room, "-b", *mask])


def _invite(args: str, current_room: str | None) -> Message:
    words = _words(args, "invite", 0, 2)
    if not words:
        return Message("INVITE", [])  # the invites you have not used yet (336/337)
    # The room is the second word, so a missing '#' can be added as /join does.
    room = with_room_prefix(words[1]) if len(words) == 2 else current_room
    return Message("INVITE", [words[0], _require_room(room, _no_room("invite"))])


def _oper(args: str, current_room: str | None) -> Message:
    # The password is the rest of the line: it may contain spaces, but not at either end
    # (a doubled or trailing space is a typing slip, as for /pass).
    name, password = _target_and_text(args, "oper")
    return Message("OPER", [name, password.strip(" ")])


def _kill(args: str, current_room: str | None) -> Message:
    nick, _, reason = args.lstrip(" ").partition(" ")
    if not nick:
        raise SlashError(SLASH_COMMANDS["kill"].usage)
    return Message("KILL", [nick, reason] if reason.strip() else [nick])


def _pass(args: str, current_room: str | None) -> Message:
    # The whole rest of the line: a password may contain spaces.
    password = args.strip(" ")
    if not password:
        raise SlashError(SLASH_COMMANDS["pass"].usage)
    return Message("PASS", [password])


def _register(args: str, current_room: str | None) -> Message:
    # NickServ's REGISTER, which every account-keeping IRC network knows: the account is
    # named after your nick. ircish-client sends REGISTER (draft/account-registration)
    # instead where the server offers it.
    password, email = register_args(args)
    return Message("PRIVMSG", [NICKSERV, " ".join(["REGISTER", password, *filter(None, [email])])])


def register_args(args: str) -> tuple[str, str | None]:
    """`/register <password> [email]`: the password is the rest of the line, spaces and
    all, but for a last word with an '@', which is the email (NickServ reads it so too).
    Raises SlashError without a password."""
    text = args.strip(" ")
    password, email = text, None
    head, _, last = text.rpartition(" ")
    if head.strip(" ") and "@" in last:
        password, email = head.strip(" "), last
    if not password:
        raise SlashError(SLASH_COMMANDS["register"].usage)
    return password, email


def _login(args: str, current_room: str | None) -> Message:
    # NickServ IDENTIFY reads `[account] <password>` itself (with an account, the password
    # is the rest of the line), so the words go as typed, without the spaces at either end.
    text = args.strip(" ")
    if not text:
        raise SlashError(SLASH_COMMANDS["login"].usage)
    return Message("PRIVMSG", [NICKSERV, f"IDENTIFY {text}"])


def _switch(args: str, current_room: str | None) -> Message:
    # Answered by whoever keeps the current room (the server's text session, the client).
    raise SlashError("/switch is answered where the current room is kept, not sent")


def history_count(args: str) -> int:
    """The n of `/history [n]`: a whole number from 1, HISTORY_DEFAULT when left out. The
    server cuts a bigger one to what it allows (ISUPPORT CHATHISTORY=)."""
    words = _words(args, "history", 0, 1)
    if not words:
        return HISTORY_DEFAULT
    if not (words[0].isascii() and words[0].isdigit()) or int(words[0]) < 1:
        raise SlashError(f"n is a number of lines, 1 or more; {SLASH_COMMANDS['history'].usage}")
    return int(words[0])


def _history(args: str, current_room: str | None) -> Message:
    # In the text mode: the room's last n lines, between markers, each at its own time.
    # ircish-client answers /history itself, going further back each time from the oldest
    # line it has shown (it keeps track of them; the text mode keeps no such place).
    count = history_count(args)
    room = _require_room(current_room, "no current room; /join one first")
    return Message("CHATHISTORY", ["LATEST", room, "*", str(count)])


def _motd(args: str, current_room: str | None) -> Message:
    return Message("MOTD", _words(args, "motd", 0, 0))


def _lusers(args: str, current_room: str | None) -> Message:
    return Message("LUSERS", _words(args, "lusers", 0, 0))


def _rehash(args: str, current_room: str | None) -> Message:
    return Message("REHASH", _words(args, "rehash", 0, 0))


def _table(*rows: SlashCommand) -> dict[str, SlashCommand]:
    return {row.name: row for row in rows}


_LEAVE = SlashCommand(
    "leave", "PART", "[#room] [reason]", "Leave a room (default: the current one).", _leave
)

SLASH_COMMANDS: dict[str, SlashCommand] = _table(
    SlashCommand("nick", "NICK", "<newnick>", "Change your nickname.", _nick),
    SlashCommand(
        "pass", "PASS", "<password>", "Give the server's password (where it has one).", _pass
    ),
    SlashCommand(
        "join",
        "JOIN",
        "<#room>[,<#room>...] [key]",
        "Join rooms ('#' is added if left out).",
        _join,
    ),
    SlashCommand(
        "msg", "PRIVMSG", "<nick|#room> <text>", "Send a message to a person or room.", _msg
    ),
    SlashCommand(
        "notice", "NOTICE", "<nick|#room> <text>", "Send a notice (no auto-replies).", _notice
    ),
    SlashCommand("me", "PRIVMSG", "<action>", "Describe an action in the current room.", _me),
    SlashCommand("who", "WHO", "[#room|mask]", "List who is in a room (default: current).", _who),
    SlashCommand(
        "switch",
        "",
        "<#room>",
        "Make another room you are in the current one (/join of it does too).",
        _switch,
        local=True,
    ),
    _LEAVE,
    SlashCommand(
        "part", _LEAVE.command, _LEAVE.syntax, _LEAVE.summary, _LEAVE.build, alias_of="leave"
    ),
    SlashCommand("quit", "QUIT", "[reason]", "Disconnect from the server.", _quit),
    SlashCommand(
        "topic", "TOPIC", "[#room] [text]", "Show or set a room's topic (default: current).", _topic
    ),
    SlashCommand(
        "list", "LIST", "[#room,...]", "List rooms with their user counts and topics.", _list
    ),
    SlashCommand(
        "names", "NAMES", "[#room]", "List the nicks in a room (default: current).", _names
    ),
    SlashCommand("whois", "WHOIS", "<nick>", "Show who a person is.", _whois),
    SlashCommand(
        "away", "AWAY", "[text]", "Mark yourself away; no text means you are back.", _away
    ),
    SlashCommand("help", "HELP", "[command]", "Show the commands, or help for one.", _help),
    SlashCommand(
        "mode",
        "MODE",
        "[#room|nick] [modes] [args...]",
        "Show or change a room's modes (default: current) or your own.",
        _mode,
    ),
    SlashCommand(
        "op",
        "MODE",
        "[#room] <nick>...",
        "Make people room operators (@).",
        _member_status("op", True, "o"),
    ),
    SlashCommand(
        "deop",
        "MODE",
        "[#room] <nick>...",
        "Take room operator status (@) away.",
        _member_status("deop", False, "o"),
    ),
    SlashCommand(
        "voice",
        "MODE",
        "[#room] <nick>...",
        "Let people speak in a moderated room (+).",
        _member_status("voice", True, "v"),
    ),
    SlashCommand(
        "devoice",
        "MODE",
        "[#room] <nick>...",
        "Take voice (+) away.",
        _member_status("devoice", False, "v"),
    ),
    SlashCommand("kick", "KICK", "[#room] <nick> [reason]", "Put someone out of a room.", _kick),
    SlashCommand(
        "ban",
        "MODE",
        "[#room] [mask|nick]",
        "Ban a nick or nick!user@host mask; alone, list the bans.",
        _ban,
    ),
    SlashCommand("unban", "MODE", "[#room] <mask>", "Lift a ban.", _unban),
    SlashCommand(
        "invite",
        "INVITE",
        "[<nick> [#room]]",
        "Invite someone to a room (default: current); alone, list your invites.",
        _invite,
    ),
    SlashCommand("oper", "OPER", "<name> <password>", "Become a server operator.", _oper),
    SlashCommand(
        "register",
        "PRIVMSG",
        "<password> [email]",
        "Register an account named after your nick, and log in to it.",
        _register,
    ),
    SlashCommand(
        "login",
        "PRIVMSG",
        "[account] <password>",
        "Log in to your account (default: the one named after your nick).",
        _login,
    ),
    SlashCommand(
        "kill", "KILL", "<nick> [reason]", "Disconnect someone (server operators).", _kill
    ),
    SlashCommand(
        "history",
        "CHATHISTORY",
        "[n]",
        f"Show n (default {HISTORY_DEFAULT}) earlier lines of the current room "
        "(ircish-client: further back each time).",
        _history,
    ),
    SlashCommand("motd", "MOTD", "", "Show the message of the day.", _motd),
    SlashCommand("lusers", "LUSERS", "", "Show how many users and rooms there are.", _lusers),
    SlashCommand(
        "rehash", "REHASH", "", "Reload the server's config file (server operators).", _rehash
    ),
)
