"""Slash translation: every slash command, its defaults, its errors, and the raw fallback."""

from __future__ import annotations

import pytest

from ircish.protocol import Message, parse
from ircish.slash import SLASH_COMMANDS, SlashError, translate

ROOM = "#cur"


@pytest.mark.parametrize(
    ("line", "room", "expected"),
    [
        # /nick
        ("/nick robert", ROOM, Message("NICK", ["robert"])),
        ("/NICK robert", None, Message("NICK", ["robert"])),
        # /join
        ("/join #general", None, Message("JOIN", ["#general"])),
        ("/join general", None, Message("JOIN", ["#general"])),
        ("/join a,#b", None, Message("JOIN", ["#a,#b"])),
        ("/join #a,,b", None, Message("JOIN", ["#a,#b"])),
        ("/join #secret hunter2", None, Message("JOIN", ["#secret", "hunter2"])),
        # /msg keeps the text's inner and trailing spacing; one separator space is consumed
        ("/msg bob hi", None, Message("PRIVMSG", ["bob", "hi"])),
        ("/msg #general hello  there ", None, Message("PRIVMSG", ["#general", "hello  there "])),
        ("/msg bob  indented", None, Message("PRIVMSG", ["bob", " indented"])),
        ("/msg bob :colon", None, Message("PRIVMSG", ["bob", ":colon"])),
        # /notice
        ("/notice bob ping  me", None, Message("NOTICE", ["bob", "ping  me"])),
        ("/notice #general hi", None, Message("NOTICE", ["#general", "hi"])),
        # /me
        ("/me waves  twice", ROOM, Message("PRIVMSG", [ROOM, "\x01ACTION waves  twice\x01"])),
        # /who
        ("/who", ROOM, Message("WHO", [ROOM])),
        ("/who #other", ROOM, Message("WHO", ["#other"])),
        ("/who b*", None, Message("WHO", ["b*"])),
        # /leave and its alias /part
        ("/leave", ROOM, Message("PART", [ROOM])),
        ("/leave #other", ROOM, Message("PART", ["#other"])),
        ("/leave #other bye  now", ROOM, Message("PART", ["#other", "bye  now"])),
        ("/leave bye now", ROOM, Message("PART", [ROOM, "bye now"])),
        ("/leave see  you ", ROOM, Message("PART", [ROOM, "see  you "])),
        ("/leave #other", None, Message("PART", ["#other"])),
        ("/part", ROOM, Message("PART", [ROOM])),
        ("/part #other so long", ROOM, Message("PART", ["#other", "so long"])),
        # /quit
        ("/quit", ROOM, Message("QUIT")),
        ("/quit gone  fishing", ROOM, Message("QUIT", ["gone  fishing"])),
        # /topic: no text queries
        ("/topic", ROOM, Message("TOPIC", [ROOM])),
        ("/topic #r", ROOM, Message("TOPIC", ["#r"])),
        ("/topic #r new  topic", ROOM, Message("TOPIC", ["#r", "new  topic"])),
        ("/topic new topic", ROOM, Message("TOPIC", [ROOM, "new topic"])),
        ("/topic new  topic ", ROOM, Message("TOPIC", [ROOM, "new  topic "])),
        # /list
        ("/list", None, Message("LIST")),
        ("/list #a,#b", None, Message("LIST", ["#a,#b"])),
        # /names
        ("/names", ROOM, Message("NAMES", [ROOM])),
        ("/names #r", ROOM, Message("NAMES", ["#r"])),
        ("/names", None, Message("NAMES")),
        # /whois
        ("/whois bob", None, Message("WHOIS", ["bob"])),
        # /away: no text means back
        ("/away", None, Message("AWAY")),
        ("/away lunch  break", None, Message("AWAY", ["lunch  break"])),
        # /help
        ("/help", None, Message("HELP")),
        ("/help join", None, Message("HELP", ["join"])),
        ("/help /join", None, Message("HELP", ["join"])),
        # /mode
        ("/mode #r +o bob", None, Message("MODE", ["#r", "+o", "bob"])),
        ("/mode carol", None, Message("MODE", ["carol"])),
        # /motd, /lusers
        ("/motd", None, Message("MOTD")),
        ("/lusers", None, Message("LUSERS")),
        # unknown names go out as a raw IRC line
        ("/kick #r bob go away", ROOM, parse("kick #r bob go away")),
        ("/kick #r bob go away", ROOM, Message("KICK", ["#r", "bob", "go", "away"])),
        ("/KICK #r bob :go away", ROOM, Message("KICK", ["#r", "bob", "go away"])),
        ("/foo", None, Message("FOO")),
        # // sends a plain message that starts with '/'
        ("//etc/passwd is  here", ROOM, Message("PRIVMSG", [ROOM, "/etc/passwd is  here"])),
        ("//", ROOM, Message("PRIVMSG", [ROOM, "/"])),
    ],
)
def test_translate(line: str, room: str | None, expected: Message) -> None:
    msg = translate(line, room)
    assert msg == expected
    msg.to_line()  # whatever translate returns can go on the wire


@pytest.mark.parametrize(
    ("line", "room", "hint"),
    [
        ("/", ROOM, "empty command"),
        ("/ nick bob", ROOM, "empty command"),
        ("hello", ROOM, "not a slash command"),
        ("/nick", ROOM, "usage: /nick <newnick>"),
        ("/nick carol smith", ROOM, "usage: /nick <newnick>"),
        ("/join", ROOM, "usage: /join <#room>[,<#room>...] [key]"),
        ("/join ,", ROOM, "usage: /join"),
        ("/join #a key extra", ROOM, "usage: /join"),
        ("/msg", ROOM, "usage: /msg <nick|#room> <text>"),
        ("/msg bob", ROOM, "usage: /msg <nick|#room> <text>"),
        ("/msg bob ", ROOM, "usage: /msg <nick|#room> <text>"),
        ("/msg bob    ", ROOM, "usage: /msg <nick|#room> <text>"),
        ("/notice bob", ROOM, "usage: /notice <nick|#room> <text>"),
        ("/me waves", None, "current room"),
        ("/me", ROOM, "usage: /me <action>"),
        ("/who", None, "no current room"),
        ("/who #a #b", ROOM, "usage: /who"),
        ("/leave", None, "no current room"),
        ("/leave bye", None, "no current room"),
        ("/part", None, "no current room"),
        ("/topic", None, "no current room"),
        ("/topic some text", None, "no current room"),
        ("/list #a #b", ROOM, "usage: /list"),
        ("/names #a #b", ROOM, "usage: /names"),
        ("/whois", ROOM, "usage: /whois <nick>"),
        ("/whois a b", ROOM, "usage: /whois <nick>"),
        ("/help a b", ROOM, "usage: /help"),
        ("/mode", ROOM, "usage: /mode <target>"),
        ("/motd now", ROOM, "usage: /motd"),
        ("/lusers now", ROOM, "usage: /lusers"),
        ("//hi", None, "no current room"),
        # raw fallback: only a plain word may start it, and it must parse
        ("/:evil PRIVMSG bob :hi", ROOM, "unknown command"),
        ("/@a=b PRIVMSG bob :hi", ROOM, "unknown command"),
        ("/1abc", ROOM, "unknown command"),
        ("/héllo there", ROOM, "unknown command"),
        # unsendable text: a middle parameter starting with ':', or CR/LF/NUL
        ("/msg :bob hi", ROOM, "cannot send"),
        ("/msg bob hi\x00there", ROOM, "CR, LF or NUL"),
        ("/quit bye\r\nJOIN #x", ROOM, "CR, LF or NUL"),
    ],
)
def test_translate_rejects(line: str, room: str | None, hint: str) -> None:
    with pytest.raises(SlashError) as caught:
        translate(line, room)
    assert hint in str(caught.value)


def test_slash_error_is_a_value_error() -> None:
    assert issubclass(SlashError, ValueError)


def test_table_holds_exactly_the_agreed_commands() -> None:
    assert set(SLASH_COMMANDS) == {
        "nick", "join", "msg", "notice", "me", "who", "leave", "part", "quit",
        "topic", "list", "names", "whois", "away", "help", "mode", "motd", "lusers",
    }  # fmt: skip


# One sample argument string per row, so each row's builder is checked against its own
# declared IRC command (the table is what /help and the server read).
SAMPLE_ARGS = {
    "nick": "bob",
    "join": "#r",
    "msg": "bob hi",
    "notice": "bob hi",
    "me": "waves",
    "who": "#r",
    "leave": "#r",
    "part": "#r",
    "quit": "bye",
    "topic": "#r",
    "list": "",
    "names": "#r",
    "whois": "bob",
    "away": "lunch",
    "help": "",
    "mode": "#r",
    "motd": "",
    "lusers": "",
}


@pytest.mark.parametrize("name", sorted(SAMPLE_ARGS))
def test_each_row_builds_its_declared_command(name: str) -> None:
    row = SLASH_COMMANDS[name]
    assert row.name == name
    assert row.summary
    assert row.build(SAMPLE_ARGS[name], ROOM).command == row.command
    assert translate(f"/{name} {SAMPLE_ARGS[name]}", ROOM).command == row.command


def test_part_is_an_alias_of_leave() -> None:
    part, leave = SLASH_COMMANDS["part"], SLASH_COMMANDS["leave"]
    assert part.alias_of == "leave"
    assert leave.alias_of is None
    assert (part.command, part.syntax, part.build) == (leave.command, leave.syntax, leave.build)


@pytest.mark.parametrize(
    ("name", "usage"),
    [
        ("msg", "usage: /msg <nick|#room> <text>"),
        ("join", "usage: /join <#room>[,<#room>...] [key]"),
        ("motd", "usage: /motd"),
    ],
)
def test_usage_line(name: str, usage: str) -> None:
    assert SLASH_COMMANDS[name].usage == usage
