"""What a typed line means: plain text for the current target, a slash command from the shared
table (`ircish/slash.py`), or one of the client's own commands in `LOCAL_COMMANDS` (/query,
/switch, /history, /register, /login, /raw, /help), which need the client's state rather than
the server. Also
what a paste of several lines becomes (`paste_lines`: one message each), the Tab-completion
candidates for a half-typed line and `/help`, which lists both tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ircish import slash
from ircish.client.session import ROOM_PREFIXES, Note, Session, View, is_room
from ircish.protocol import Message, ProtocolError, casefold, parse
from ircish.slash import SLASH_COMMANDS, SlashError, register_args, split_long_message

#: Slash commands whose first argument is a room / a nick, for Tab completion.
ROOM_ARGUMENT = frozenset(
    {"join", "leave", "part", "switch", "who", "names", "topic", "list", "mode"}
)
#: /op, /kick and the like complete from the current room's members (the default pool);
#: these may name anyone we share a room with.
NICK_ARGUMENT = frozenset({"msg", "notice", "query", "whois", "invite", "kill"})
#: The most messages one paste sends. Each costs a flood token: with ircish's defaults
#: (a burst of 20, 4 a second, cut off 60 s behind) 100 wait 20 s at most, while some 260
#: would get us cut off ("Excess Flood"). Longer text belongs in a file or a link.
MAX_PASTE_MESSAGES = 100
#: Line ends in pasted text: terminals send CR (xterm), LF or CRLF (iTerm2) between lines.
_LINE_END = re.compile(r"\r\n|\r|\n")
#: Typed lines that hold a password: kept out of the input history (Up would show them).
_SECRET_LINE = re.compile(
    r"/(login|register|pass|oper)\b|/(msg|raw)\s+(nickserv|pass|oper|authenticate)\b"
    r"|/raw\s+(ns|register)\b|/raw\s+(privmsg|notice)\s+nickserv\b",
    re.I,
)


def holds_secret(line: str) -> bool:
    """`line` (as typed) may hold a password: /login, /register, /pass, /oper, a /msg to
    NickServ, a /raw PASS, OPER, AUTHENTICATE, REGISTER, NS or PRIVMSG NickServ."""
    return _SECRET_LINE.match(line.lstrip(" ")) is not None


def paste_lines(text: str) -> list[str]:
    """The messages a paste of `text` (with what the input line held around it) becomes: one
    per line; blank lines and NULs are left out (IRC can send neither)."""
    return [line for line in _LINE_END.split(text.replace("\0", "")) if line.strip()]


def paste_as_one_line(text: str) -> str:
    """A paste that holds one line (maybe with line ends around it), as one line to edit."""
    return _LINE_END.sub("", text.replace("\0", ""))


@dataclass(frozen=True, slots=True)
class LocalCommand:
    """A command the client answers itself; `run` returns True when the client should exit."""

    name: str
    syntax: str
    summary: str
    run: Callable[[CommandLine, str], bool]

    @property
    def usage(self) -> str:
        return f"usage: /{self.name} {self.syntax}".rstrip()


class CommandLine:
    """Acts on typed lines for one session; hints and help go to `show`."""

    def __init__(self, session: Session, show: Callable[[Note], None]) -> None:
        self.session = session
        self.show = show

    def handle(self, line: str) -> bool:
        """Act on one typed line; True when the client should exit (/quit)."""
        line = line.rstrip("\r\n")
        if not line.strip():
            return False
        if line.startswith("//"):  # irssi: a doubled slash sends the text with one slash
            return self._say(line[1:])
        if not line.startswith("/"):
            return self._say(line)
        name, _, args = line[1:].partition(" ")
        key = name.lower()
        local = LOCAL_COMMANDS.get(key)
        if local is not None:
            return local.run(self, args)
        if key not in SLASH_COMMANDS:
            # Unlike the server's text mode, an unknown word is not sent as a raw line: a
            # typo should not reach the server. /raw is the explicit way.
            what = f"unknown command /{name}" if name else "empty command"
            self.hint(f"{what}; /help lists the commands, /raw sends an IRC line as is")
            return False
        view = self.session.view()
        # /me acts in a private chat too; the other commands default to the current room.
        context = view.target if key == "me" else view.current_room
        try:
            msg = slash.translate(line, context)
        except SlashError as exc:
            self.hint(str(exc))
            return False
        if msg.command == "QUIT":
            self.session.quit(msg.param(0))
            return True
        self.send(msg, echo=True)
        return False

    def send(self, msg: Message, echo: bool) -> None:
        self._send_all(split_long_message(msg), echo)

    def _send_all(self, msgs: list[Message], echo: bool) -> None:
        try:
            sent = self.session.send_all(msgs, echo=echo)
        except ProtocolError as exc:
            self.hint(f"cannot send that: {exc}")
            return
        if not sent:
            self.hint("not connected to the server; nothing was sent")

    def paste(self, lines: list[str]) -> None:
        """Send pasted lines as text, one message each, even those that start with '/': a
        pasted path or code is not a command (typed commands run; pasted ones are said)."""
        target = self.session.view().target
        if target is None:
            self.hint(f"you are in no room: {len(lines)} pasted lines not sent (/join #room)")
            return
        parts = [
            part
            for line in lines
            for part in split_long_message(Message("PRIVMSG", [target, line]))
        ]
        if len(parts) > MAX_PASTE_MESSAGES:
            self.hint(
                f"a paste of {len(parts)} messages was not sent: the server would cut you off "
                f"for flooding; paste at most {MAX_PASTE_MESSAGES} at a time"
            )
            return
        self._send_all(parts, echo=True)

    def info(self, text: str) -> None:
        self.show(Note(text))

    def hint(self, text: str) -> None:
        self.show(Note(text, "error"))

    def _say(self, text: str) -> bool:
        target = self.session.view().target
        if target is None:
            self.hint("you are in no room: /join #room first (or /query nick)")
        else:
            self.send(Message("PRIVMSG", [target, text]), echo=True)
        return False


# The client's own commands.


def _query(line: CommandLine, args: str) -> bool:
    words = args.split()
    view = line.session.view()
    if not words:
        line.session.query(None)
        if view.current_room:
            line.info(f"Talking in {view.current_room}")
        else:
            line.info("No private chat; you are in no room (/join #room)")
        return False
    if len(words) > 1 or is_room(words[0]) or "," in words[0]:
        if is_room(words[0]):
            line.hint(f"{words[0]} is a room: /switch {words[0]}")
        else:
            line.hint(LOCAL_COMMANDS["query"].usage)
        return False
    line.session.query(words[0])
    line.info(f"Talking privately to {words[0]} (/query alone goes back to the room)")
    return False


def _switch(line: CommandLine, args: str) -> bool:
    words = args.split()
    view = line.session.view()
    if len(words) != 1:
        rooms = ", ".join(view.rooms) or "no room"
        line.hint(f"{LOCAL_COMMANDS['switch'].usage} (you are in {rooms})")
        return False
    room = line.session.switch(words[0])
    if room is None:
        name = words[0] if is_room(words[0]) else "#" + words[0]
        line.hint(f"you are not in {name}: /join {name} first")
    else:
        line.info(f"Talking in {room}")
    return False


def _history(line: CommandLine, args: str) -> bool:
    # The slash table's row says what /history takes; the session knows what it has shown.
    try:
        count = slash.history_count(args)
    except SlashError as exc:
        line.hint(str(exc))
        return False
    room = line.session.view().current_room
    if room is None:
        line.hint(f"no current room; {LOCAL_COMMANDS['history'].usage}")
        return False
    why_not = line.session.ask_history(room, count)
    if why_not is not None:
        line.hint(why_not)
    return False


def _register(line: CommandLine, args: str) -> bool:
    # The slash table's row says what /register takes; the session knows whether the server
    # offers REGISTER (draft/account-registration) or only NickServ.
    try:
        password, email = register_args(args)
    except SlashError as exc:
        line.hint(str(exc))
        return False
    why_not = line.session.register(password, email)
    if why_not is not None:
        line.hint(why_not)
    return False


def _login(line: CommandLine, args: str) -> bool:
    # As NickServ IDENTIFY reads it: one word is the password; more, the account, then the
    # password (the rest of the line).
    text = args.strip(" ")
    account, _, password = text.partition(" ")
    if not password.strip(" "):
        account, password = "", text
    if not password:
        line.hint(LOCAL_COMMANDS["login"].usage)
        return False
    why_not = line.session.log_in(account or None, password.strip(" "))
    if why_not is not None:
        line.hint(why_not)
    return False


def _raw(line: CommandLine, args: str) -> bool:
    if not args.strip():
        line.hint(LOCAL_COMMANDS["raw"].usage)
        return False
    try:
        msg = parse(args.strip())
    except ProtocolError as exc:
        line.hint(f"not an IRC line: {exc}")
        return False
    if msg.command == "QUIT":  # so it is not taken for a lost connection and redialled
        line.session.quit(msg.param(0))
        return True
    line.send(msg, echo=False)
    return False


def _help(line: CommandLine, args: str) -> bool:
    words = args.split()
    if not words:
        line.show(Note("Commands (plain text goes to the current room or private chat):", "plain"))
        for text in help_lines():
            line.show(Note(text, "plain"))
        return False
    name = words[0].lstrip("/").lower()
    if name not in LOCAL_COMMANDS and name not in SLASH_COMMANDS:
        line.hint(f"no command /{name}; /help lists them")
        return False
    line.show(Note(help_lines([name])[0].strip(), "plain"))
    return False


LOCAL_COMMANDS: dict[str, LocalCommand] = {
    row.name: row
    for row in (
        LocalCommand(
            "query", "[nick]", "Talk privately to nick; /query alone goes back to the room.", _query
        ),
        LocalCommand("switch", "<#room>", "Make another room you are in the current one.", _switch),
        # Its words are the slash table's, which the server's HELP reads too.
        LocalCommand(
            "history", SLASH_COMMANDS["history"].syntax, SLASH_COMMANDS["history"].summary, _history
        ),
        LocalCommand(
            "register",
            SLASH_COMMANDS["register"].syntax,
            SLASH_COMMANDS["register"].summary + " A reconnect logs in again.",
            _register,
        ),
        LocalCommand(
            "login",
            SLASH_COMMANDS["login"].syntax,
            SLASH_COMMANDS["login"].summary + " A reconnect logs in again.",
            _login,
        ),
        LocalCommand("raw", "<IRC line>", "Send a line to the server as is.", _raw),
        LocalCommand("help", "[command]", "Show the commands, or help for one.", _help),
    )
}


def _help_entry(name: str) -> tuple[str, str]:
    local = LOCAL_COMMANDS.get(name)
    if local is not None:
        return f"/{name} {local.syntax}".rstrip(), local.summary
    row = SLASH_COMMANDS[name]
    summary = f"Same as /{row.alias_of}." if row.alias_of else row.summary
    return f"/{name} {row.syntax}".rstrip(), summary


def help_lines(names: list[str] | None = None) -> list[str]:
    """`/name syntax  summary` for the given commands (default: every one), aligned."""
    names = names or sorted(set(SLASH_COMMANDS) | set(LOCAL_COMMANDS))
    entries = [_help_entry(name) for name in names]
    width = max(len(usage) for usage, _ in entries)
    return [f"  {usage:<{width}}  {summary}" for usage, summary in entries]


def command_names() -> list[str]:
    return sorted(set(SLASH_COMMANDS) | set(LOCAL_COMMANDS))


def completions(text: str, view: View) -> tuple[str, list[str]]:
    """For the line typed so far: the word being completed and what it may become."""
    words = text.split(" ")
    word = words[-1]
    if len(words) == 1 and word.startswith("/") and not word.startswith("//"):
        stem = word[1:].lower()
        # The space saves a keystroke: after a command name comes its argument.
        return word, [f"/{name} " for name in command_names() if name.startswith(stem)]
    command = words[0][1:].lower() if words[0].startswith("/") else None
    first_argument = len(words) == 2
    if word.startswith(tuple(ROOM_PREFIXES)) or (command in ROOM_ARGUMENT and first_argument):
        stem = casefold(word)
        return word, [
            room
            for room in view.rooms
            if casefold(room).startswith(stem) or casefold(room)[1:].startswith(stem)
        ]
    pool = list(view.nicks if command in NICK_ARGUMENT and first_argument else view.members)
    if view.query and view.query not in pool:
        pool.append(view.query)
    stem = casefold(word)
    me = casefold(view.nick)
    return word, [nick for nick in pool if casefold(nick).startswith(stem) and casefold(nick) != me]
