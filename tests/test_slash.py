"""Slash translation: every slash command, its defaults, its errors, and the raw fallback."""

from __future__ import annotations

import re

import pytest

from ircish import modes
from ircish.protocol import Message, parse
from ircish.slash import HISTORY_DEFAULT, SLASH_COMMANDS, SlashError, history_count, translate

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
        # /mode: a first word that is a mode string, or none, means the current room
        ("/mode #r +o bob", None, Message("MODE", ["#r", "+o", "bob"])),
        ("/mode carol", None, Message("MODE", ["carol"])),
        ("/mode carol -i", ROOM, Message("MODE", ["carol", "-i"])),
        ("/mode", ROOM, Message("MODE", [ROOM])),
        ("/mode +m", ROOM, Message("MODE", [ROOM, "+m"])),
        ("/mode -t+l 10", ROOM, Message("MODE", [ROOM, "-t+l", "10"])),
        ("/mode +k  hunter2 ", ROOM, Message("MODE", [ROOM, "+k", "hunter2"])),
        ("/mode #r", ROOM, Message("MODE", ["#r"])),
        # /op /deop /voice /devoice: one MODE line, the room first if it starts with '#'
        ("/op bob", ROOM, Message("MODE", [ROOM, "+o", "bob"])),
        ("/op bob carol", ROOM, Message("MODE", [ROOM, "+oo", "bob", "carol"])),
        ("/op #r bob", ROOM, Message("MODE", ["#r", "+o", "bob"])),
        ("/op #r bob", None, Message("MODE", ["#r", "+o", "bob"])),
        ("/OP  a b c d", ROOM, Message("MODE", [ROOM, "+oooo", "a", "b", "c", "d"])),
        ("/deop bob", ROOM, Message("MODE", [ROOM, "-o", "bob"])),
        ("/deop #r bob carol", ROOM, Message("MODE", ["#r", "-oo", "bob", "carol"])),
        ("/voice bob", ROOM, Message("MODE", [ROOM, "+v", "bob"])),
        ("/voice #r bob carol", ROOM, Message("MODE", ["#r", "+vv", "bob", "carol"])),
        ("/devoice bob", ROOM, Message("MODE", [ROOM, "-v", "bob"])),
        # /kick: the reason keeps its spacing, as /leave's does
        ("/kick bob", ROOM, Message("KICK", [ROOM, "bob"])),
        ("/kick bob be  nice", ROOM, Message("KICK", [ROOM, "bob", "be  nice"])),
        ("/kick #r bob", None, Message("KICK", ["#r", "bob"])),
        ("/kick #r bob go away", ROOM, Message("KICK", ["#r", "bob", "go away"])),
        ("/kick #r bob   ", ROOM, Message("KICK", ["#r", "bob"])),
        # /ban /unban: the mask as typed (the server completes bob to bob!*@*)
        ("/ban", ROOM, Message("MODE", [ROOM, "+b"])),
        ("/ban #r", None, Message("MODE", ["#r", "+b"])),
        ("/ban bob", ROOM, Message("MODE", [ROOM, "+b", "bob"])),
        ("/ban *!*@spam.example", ROOM, Message("MODE", [ROOM, "+b", "*!*@spam.example"])),
        ("/ban #r bob!*@*", ROOM, Message("MODE", ["#r", "+b", "bob!*@*"])),
        ("/unban bob!*@*", ROOM, Message("MODE", [ROOM, "-b", "bob!*@*"])),
        ("/unban #r bob", None, Message("MODE", ["#r", "-b", "bob"])),
        # /invite: the room second, '#' added as /join does
        ("/invite bob", ROOM, Message("INVITE", ["bob", ROOM])),
        ("/invite bob #r", ROOM, Message("INVITE", ["bob", "#r"])),
        ("/invite bob r", None, Message("INVITE", ["bob", "#r"])),
        ("/invite", None, Message("INVITE", [])),  # your invites
        # /oper /kill
        ("/oper admin s3cret", None, Message("OPER", ["admin", "s3cret"])),
        ("/oper admin pass word", None, Message("OPER", ["admin", "pass word"])),
        ("/oper admin  s3cret ", None, Message("OPER", ["admin", "s3cret"])),  # slips
        ("/kill bob", None, Message("KILL", ["bob"])),
        ("/kill bob stop  spamming", ROOM, Message("KILL", ["bob", "stop  spamming"])),
        # /motd, /lusers
        ("/motd", None, Message("MOTD")),
        ("/lusers", None, Message("LUSERS")),
        # unknown names go out as a raw IRC line
        ("/userhost bob carol", ROOM, parse("userhost bob carol")),
        ("/userhost bob carol", ROOM, Message("USERHOST", ["bob", "carol"])),
        ("/WALLOPS :hello there", ROOM, Message("WALLOPS", ["hello there"])),
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
        ("/mode", None, "no current room; usage: /mode [#room|nick]"),
        ("/mode +m", None, "no current room"),
        ("/op", ROOM, "usage: /op [#room] <nick>..."),
        ("/op #r", ROOM, "usage: /op [#room] <nick>..."),
        ("/op bob", None, "no current room; usage: /op"),
        ("/op a b c d e", ROOM, "at most 4 nicks at a time; usage: /op"),
        ("/deop", ROOM, "usage: /deop [#room] <nick>..."),
        ("/voice #r", ROOM, "usage: /voice [#room] <nick>..."),
        ("/devoice a b c d e", ROOM, "at most 4 nicks"),
        ("/op :bob carol", ROOM, "cannot send"),  # only the last parameter may start with ":"
        ("/kick", ROOM, "usage: /kick [#room] <nick> [reason]"),
        ("/kick #r", ROOM, "usage: /kick"),
        ("/kick #r  ", ROOM, "usage: /kick"),
        ("/kick bob", None, "no current room; usage: /kick"),
        ("/ban", None, "no current room; usage: /ban [#room] [mask|nick]"),
        ("/ban a b", ROOM, "usage: /ban"),
        ("/unban", ROOM, "usage: /unban [#room] <mask>"),
        ("/unban #r", ROOM, "usage: /unban"),
        ("/unban a b", ROOM, "usage: /unban"),
        ("/unban bob", None, "no current room"),
        ("/invite bob", None, "no current room; usage: /invite"),
        ("/invite bob #r extra", ROOM, "usage: /invite"),
        ("/oper", ROOM, "usage: /oper <name> <password>"),
        ("/oper admin", ROOM, "usage: /oper <name> <password>"),
        ("/kill", ROOM, "usage: /kill <nick> [reason]"),
        ("/kill   ", ROOM, "usage: /kill"),
        ("/kill :bob bye", ROOM, "cannot send"),
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
        "topic", "list", "names", "whois", "away", "help", "mode", "motd", "lusers", "rehash",
        "op", "deop", "voice", "devoice", "kick", "ban", "unban", "invite", "oper", "kill",
        "pass", "switch", "history", "register", "login",
    }  # fmt: skip


# One sample argument string per row, so each row's builder is checked against its own
# declared IRC command (the table is what /help and the server read).
SAMPLE_ARGS = {
    "history": "5",
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
    "rehash": "",
    "op": "bob",
    "deop": "bob",
    "voice": "bob",
    "devoice": "bob",
    "kick": "bob",
    "ban": "bob",
    "unban": "bob",
    "invite": "bob",
    "oper": "admin secret",
    "kill": "bob",
    "pass": "open sesame",
    "register": "hunter22 me@example.org",
    "login": "alice hunter22",
}
#: Rows the session answers itself: never sent.
LOCAL_ROWS = {"switch"}


def test_every_row_has_a_sample() -> None:
    assert set(SAMPLE_ARGS) | LOCAL_ROWS == set(SLASH_COMMANDS)
    assert {name for name, row in SLASH_COMMANDS.items() if row.local} == LOCAL_ROWS


@pytest.mark.parametrize("name", sorted(LOCAL_ROWS))
def test_a_local_row_is_never_sent(name: str) -> None:
    with pytest.raises(SlashError):
        translate(f"/{name} #r", ROOM)


@pytest.mark.parametrize(
    ("line", "text"),
    [
        ("/register hunter22", "REGISTER hunter22"),
        ("/register hunter22 me@example.org", "REGISTER hunter22 me@example.org"),
        ("/register correct horse battery", "REGISTER correct horse battery"),
        ("/register correct horse  me@example.org ", "REGISTER correct horse me@example.org"),
        ("/login hunter22", "IDENTIFY hunter22"),
        ("/login alice open  sesame ", "IDENTIFY alice open  sesame"),
    ],
)
def test_register_and_login_talk_to_nickserv(line: str, text: str) -> None:
    assert translate(line, ROOM) == Message("PRIVMSG", ["NickServ", text])


@pytest.mark.parametrize(
    ("line", "usage"),
    [
        ("/register", "usage: /register <password> [email]"),
        ("/login  ", "usage: /login [account] <password>"),
    ],
)
def test_register_and_login_need_a_password(line: str, usage: str) -> None:
    with pytest.raises(SlashError, match=re.escape(usage)):
        translate(line, ROOM)


def test_pass_keeps_spaces_and_needs_a_password() -> None:
    assert translate("/pass open sesame", ROOM) == Message("PASS", ["open sesame"])
    with pytest.raises(SlashError, match="usage: /pass <password>"):
        translate("/pass  ", ROOM)


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


@pytest.mark.parametrize(
    ("line", "adding", "letter"),
    [
        ("/op #r a b c d", True, "o"),
        ("/deop a b", False, "o"),
        ("/voice a", True, "v"),
        ("/devoice #r a b c", False, "v"),
    ],
)
def test_status_rows_read_back_as_one_change_per_nick(line: str, adding: bool, letter: str) -> None:
    # What the server (and render.py) will make of the line, through the one mode table.
    msg = translate(line, ROOM)
    nicks = [word for word in line.split()[1:] if not word.startswith("#")]
    parsed = modes.parse_changes(msg.params[1], msg.params[2:])
    assert parsed.changes == [modes.Change(adding, letter, nick) for nick in nicks]
    assert not parsed.unknown and not parsed.missing


def test_nick_limit_follows_the_mode_table() -> None:
    nicks = " ".join(f"n{i}" for i in range(modes.MAX_PARAM_CHANGES))
    assert len(translate(f"/op {nicks}", ROOM).params) == 2 + modes.MAX_PARAM_CHANGES
    with pytest.raises(SlashError, match=f"at most {modes.MAX_PARAM_CHANGES} nicks"):
        translate(f"/op {nicks} one_more", ROOM)


@pytest.mark.parametrize(
    ("args", "count"), [("", HISTORY_DEFAULT), ("  ", HISTORY_DEFAULT), ("5", 5), (" 100 ", 100)]
)
def test_history_count(args: str, count: int) -> None:
    assert history_count(args) == count


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        ("0", "1 or more"),
        ("-3", "1 or more"),
        ("five", "1 or more"),
        ("٣", "1 or more"),  # a digit, but not one a person means here
        ("5 #r", "usage: /history [n]"),
    ],
)
def test_history_count_rejects(args: str, hint: str) -> None:
    with pytest.raises(SlashError, match=re.escape(hint)):
        history_count(args)


def test_history_in_the_text_mode_asks_for_the_rooms_last_lines() -> None:
    # ircish-client answers /history itself (further back each time); the text mode sends
    # this, and the server answers a text session between markers, each line at its time.
    assert translate("/history", ROOM) == Message("CHATHISTORY", ["LATEST", ROOM, "*", "20"])
    assert translate("/history 5", ROOM).params == ("LATEST", ROOM, "*", "5")
    with pytest.raises(SlashError, match="1 or more"):
        translate("/history x", ROOM)
    with pytest.raises(SlashError, match="no current room"):
        translate("/history 5", None)
