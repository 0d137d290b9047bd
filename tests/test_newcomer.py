"""What a person new to ircish meets on nc (issue 11), over real sockets: the greeting only
people see, a first line that names a command without its slash, and the lines of the text
mode that tell them where they are."""

from __future__ import annotations

import re
import time

import pytest
from helpers import SERVER, TIMEOUT, Client
from test_text_mode import ROOM, irc_then_text, sync_text, text_join, text_session

from ircish.connection import GREETING_DELAY
from ircish.protocol import parse

GREETING = rf"^:{re.escape(SERVER)} NOTICE \* :\*\*\* Welcome to ircish\. To start, "


def test_a_silent_connection_is_greeted_with_what_to_type(connect):
    person = connect()
    started = time.monotonic()
    line = person.expect(GREETING, timeout=GREETING_DELAY + TIMEOUT).string
    assert time.monotonic() - started >= GREETING_DELAY * 0.9
    assert "type /nick <name> to choose your name; /help lists the commands" in line


def test_the_greeting_asks_for_the_password_first_where_there_is_one(start_server):
    server = start_server(password="sesame")
    person = Client(server.address)
    try:
        line = person.expect(GREETING, timeout=GREETING_DELAY + TIMEOUT).string
        assert "type /pass <password>, then /nick <name>" in line
    finally:
        person.close()


@pytest.mark.parametrize("opening", ["CAP LS 302", "NICK alice"])
def test_irc_clients_that_speak_at_once_never_see_the_greeting(connect, opening):
    client = connect()
    client.send(opening)
    lines = []
    if opening.startswith("CAP"):
        lines += client.collect_until(r" CAP \* LS ")
        client.send("CAP END")
    client.send_registration("alice")
    lines += client.collect_until(r" (376|422) ")
    lines += client.quiet(GREETING_DELAY + 0.5)
    assert [line for line in lines if "NOTICE * :*** Welcome to ircish" in line] == []
    assert any(" 001 alice " in line for line in lines)


@pytest.mark.parametrize("first", ["help", "nick ivan", "list", "join #general"])
def test_a_first_line_naming_a_command_without_a_slash_is_the_text_mode(connect, first):
    ivan = connect()
    ivan.send(first)
    ivan.expect(rf"^! Commands start with a slash: type /{re.escape(first)}$")
    # Still a text session: the slash form works, and what comes back is for people.
    ivan.send("/nick ivan")
    ivan.expect(r"^Welcome to the \S+ Network, ivan!")
    raw = [line for line in sync_text(ivan) if re.match(r"^(:|\d{3} )", line)]
    assert raw == []


def test_a_person_taken_for_irc_turns_to_text_with_a_slash(connect):
    ivan = connect()
    ivan.send("HELP")  # capitals: read as IRC, as a script's HELP would be
    ivan.expect(r" 704 \* ")
    ivan.send("/nick ivan")
    ivan.expect(r"^Welcome to the \S+ Network, ivan!")


def test_an_irc_client_after_cap_keeps_irc_whatever_it_sends(connect):
    client = connect()
    client.send("CAP LS 302")
    client.expect(r" CAP \* LS ")
    client.send("/nick ivan")
    client.expect(rf"^:{re.escape(SERVER)} 421 \* /NICK ")


def test_own_room_lines_are_shown_with_the_room_they_went_to(connect):
    bob, carol = irc_then_text(connect, ROOM, "#other")
    carol.send("hello there")
    carol.expect(r"^\[#other\] <carol> hello there$")
    bob.expect(r"^:carol!\S+ PRIVMSG #other :hello there$")
    carol.send(f"/msg {ROOM} and here")
    carol.expect(rf"^\[{ROOM}\] <carol> and here$")


def test_switch_and_join_of_a_joined_room_change_the_current_room(connect):
    bob, carol = irc_then_text(connect, ROOM, "#other")
    carol.send(f"/switch {ROOM}")
    carol.expect(rf"^\* Now talking in {ROOM}$")
    carol.send("to general")
    carol.expect(rf"^\[{ROOM}\] <carol> to general$")
    bob.expect(rf"PRIVMSG {ROOM} :to general$")
    carol.send("/join other")  # already in: no JOIN, but it becomes current
    carol.expect(r"^\* Now talking in #other$")
    carol.send(f"/join {ROOM} somekey")  # with a key too
    carol.expect(rf"^\* Now talking in {ROOM}$")
    carol.send("/switch #other")
    carol.expect(r"^\* Now talking in #other$")
    carol.send("to other")
    carol.expect(r"^\[#other\] <carol> to other$")
    assert not [line for line in bob.sync() if " JOIN " in line]
    # A new room is current once joined; leaving it returns to the last joined.
    text_join(carol, "#third")
    carol.send(f"/switch {ROOM}")
    carol.expect(rf"^\* Now talking in {ROOM}$")
    carol.send(f"/leave {ROOM}")
    carol.expect(rf"^\* You left {ROOM}")
    carol.send("where now")
    carol.expect(r"^\[#third\] <carol> where now$")


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("/switch #nowhere", r"^! You are not in #nowhere: /join #nowhere$"),
        ("/switch", rf"^! usage: /switch <#room> \(you are in {ROOM}\)$"),
        ("/switch #a #b", rf"^! usage: /switch <#room> \(you are in {ROOM}\)$"),
    ],
)
def test_switch_explains_what_it_cannot_do(connect, line, answer):
    carol = text_session(connect, "carol")
    text_join(carol, ROOM)
    carol.send(line)
    carol.expect(answer)


def test_a_person_told_about_the_password_gives_it_and_is_welcomed(start_server):
    server = start_server(password="open sesame")
    carol = Client(server.address)
    try:
        carol.send("/nick carol")
        carol.expect(r"^! This server needs a password: type /pass <password>")
        carol.send("hello?")  # still the password that is missing, not a nick
        carol.expect(r"^! This server needs a password first: type /pass <password>$")
        carol.send("/pass open sesame")
        carol.expect(r"^Welcome to the \S+ Network, carol!")
    finally:
        carol.close()


def test_a_wrong_password_from_a_person_still_closes_the_connection(start_server):
    server = start_server(password="sesame")
    carol = Client(server.address)
    try:
        carol.send("/pass nope")
        carol.send("/nick carol")
        lines = carol.expect_closed()
        assert "! Password incorrect" in lines
    finally:
        carol.close()


def test_each_text_line_starts_with_the_time(connect):
    carol = connect()
    carol.keep_stamps = True
    carol.send("/nick carol")
    welcome = carol.expect(r"Welcome to the \S+ Network, carol!").string
    assert re.fullmatch(r"\d\d:\d\d Welcome to the \S+ Network, carol!\S+", welcome), welcome
    carol.send("/whois nobody-here")
    answer = carol.expect(r"No such nick: nobody-here$").string
    assert re.fullmatch(r"\d\d:\d\d ! No such nick: nobody-here", answer), answer


def test_a_long_line_goes_as_several_messages_cut_between_words(connect):
    bob = connect("bob")
    bob.join(ROOM)
    carol = text_session(connect, "carol")
    text_join(carol, ROOM)
    words = [f"word{i:03d}" for i in range(150)]  # 1199 bytes: several relayed lines
    carol.send(" ".join(words))
    relayed = [line for line in bob.collect_until(r" word149$") if " PRIVMSG " in line]
    assert len(relayed) > 1 and all(len(line.encode()) + 2 <= 512 for line in relayed)
    got = [line.split(f" PRIVMSG {ROOM} :", 1)[1] for line in relayed]
    assert " ".join(got).split(" ") == words  # every word once, in order, none cut
    shown = [carol.expect(rf"^\[{ROOM}\] <carol> (.*)$").group(1) for _ in got]
    assert shown == got


def test_a_long_action_goes_as_several_actions(connect):
    bob = connect("bob")
    bob.join(ROOM)
    carol = text_session(connect, "carol")
    text_join(carol, ROOM)
    words = [f"waves{i:03d}" for i in range(100)]
    carol.send("/me " + " ".join(words))
    relayed = bob.collect_until(r" waves099\x01$")
    got = [re.search(rf" PRIVMSG {ROOM} :\x01ACTION (.*)\x01$", line) for line in relayed]
    pieces = [match.group(1) for match in got if match]
    assert len(pieces) > 1 and " ".join(pieces).split(" ") == words


def test_a_long_command_that_is_not_text_is_refused_with_the_limit(connect):
    carol = text_session(connect, "carol")
    carol.send("/topic #general " + "x" * 600)
    carol.expect(r"^! Line too long: 616 bytes, the limit is 510$")
    carol.send("/join #after")  # the session goes on
    carol.expect(r"^Users in #after: ")


def test_a_person_is_told_when_flood_control_slows_them(start_server):
    server = start_server(flood_burst=3, flood_rate=2.0)
    carol = Client(server.address)
    try:
        carol.nick = "carol"
        carol.send("/nick carol")
        carol.expect(r"^Welcome to the \S+ Network, carol!")
        carol.send("/join #fast")
        carol.expect(r"^Users in #fast: ")
        for i in range(6):
            carol.send(f"line {i}")
        got = carol.collect_until(r"^\[#fast\] <carol> line 5$")
        # Told when it starts (once per spell: test_session checks that with a fake clock).
        told = [line for line in got if line.startswith("* You are sending faster")]
        assert told, got
        assert got.index(told[0]) < got.index("[#fast] <carol> line 5")
        assert [line for line in got if "<carol>" in line] == [
            f"[#fast] <carol> line {i}" for i in range(6)
        ]  # slowed, not dropped
    finally:
        carol.close()


def test_list_and_bans_come_as_aligned_tables(connect):
    bob = connect("bob")
    bob.join("#a-long-room-name")
    carol = text_session(connect, "carol")
    text_join(carol, ROOM)
    carol.send("/list")
    assert sync_text(carol) == [
        "Rooms:",
        "  #a-long-room-name  1 user",
        f"  {ROOM}           1 user",
    ]
    carol.send(f"/ban {ROOM} troll")
    carol.send(f"/ban {ROOM} someone-else")
    sync_text(carol)
    carol.send(f"/mode {ROOM} +b")
    heading, *rows = sync_text(carol)
    assert heading == f"Bans in {ROOM}:"
    assert [re.sub(r" on .*", "", row) for row in rows] == [
        f"  {ROOM}  troll!*@*         by carol",
        f"  {ROOM}  someone-else!*@*  by carol",
    ]


@pytest.mark.parametrize(
    ("first", "answer"),
    [
        ("/" + "z" * 700, r"^! Line too long: 701 bytes, the limit is 510$"),
        ("hello " * 200, r"^! .*/nick"),  # one answer asking for a nick, not one per piece
    ],
)
def test_a_long_first_line_from_a_person_gets_a_human_answer(connect, first, answer):
    ivan = connect()
    ivan.send(first)
    got = ivan.collect_until(answer)
    assert not [line for line in got if re.match(r"^:\S+ 417 ", line)], got
    ivan.send("/nick ivan")
    later = ivan.collect_until(r"^Welcome to the \S+ Network, ivan!")
    assert not [line for line in later if line.startswith("!")], later


def test_a_long_message_to_a_very_long_target_list_is_refused_not_split(connect):
    # The targets alone nearly fill a line: splitting the text would make pieces of no
    # bytes (it once looped forever, growing a list, in the reader thread).
    bob = connect("bob")
    carol = text_session(connect, "carol")
    targets = ",".join(["bob"] + [f"nobody{i:03d}" for i in range(45)])  # 453 bytes
    carol.send(f"/msg {targets} " + "words " * 100)
    carol.expect(r"^! Line too long: \d+ bytes, the limit is 510$", timeout=5)
    carol.send("/msg bob still here")
    bob.expect(r" PRIVMSG bob :still here$")


def test_long_text_from_a_long_nick_is_split_to_fit_with_its_prefix(start_server):
    # With a 150-byte nick, a fixed 100-byte allowance for the prefix would make relayed
    # pieces over 512 bytes, cut short on the way out.
    server = start_server(nick_length=200)
    bob = Client(server.address)
    carol = Client(server.address)
    try:
        bob.register("bob")
        bob.join(ROOM)
        nick = "c" * 150
        carol.send(f"/nick {nick}")
        carol.expect(r"^Welcome to the ")
        carol.send(f"/join {ROOM}")
        carol.expect(rf"^Users in {ROOM}: ")
        words = [f"word{i:03d}" for i in range(150)]
        carol.send(" ".join(words))
        relayed = [line for line in bob.collect_until(r" word149$") if " PRIVMSG " in line]
        assert all(len(line.encode()) + 2 <= 512 for line in relayed), relayed
        got = [line.split(f" PRIVMSG {ROOM} :", 1)[1] for line in relayed]
        assert " ".join(got).split(" ") == words
    finally:
        bob.close()
        carol.close()


@pytest.mark.parametrize("length", [480, 509])
def test_text_under_the_line_limit_still_reaches_irc_users_whole(connect, length):
    # 480 typed bytes fit the input limit, but not one relayed line once the server adds
    # ":carol!carol@127.0.0.1 PRIVMSG #general :" (found by a hostile try of issue 11).
    bob, carol = irc_then_text(connect, ROOM)
    words = [f"w{i:03d}" for i in range(length // 5)]  # "w000 w001 ... END00"
    text = " ".join(words)[: length - 6] + " END00"
    text = " ".join(text.split())  # no word cut by the slice is left half
    carol.send(text)
    relayed = [line for line in bob.collect_until(r" END00$") if " PRIVMSG " in line]
    assert all(len(line.encode()) + 2 <= 512 for line in relayed), relayed
    assert " ".join(parse(line).params[1] for line in relayed) == text


def test_long_text_to_several_targets_is_refused_not_charged_per_piece(connect):
    bob = connect("bob")
    carol = text_session(connect, "carol")
    carol.send("/msg bob,nobody " + "words " * 100)
    carol.expect(r"^! Text too long for one line to several targets: send it to one at a time$")
    assert not [line for line in bob.quiet() if " PRIVMSG " in line]


def test_a_nick_given_in_capitals_then_a_slash_command_registers_the_person(connect):
    ivan = connect()
    ivan.send("NICK ivan")  # taken for IRC: it waits for USER
    ivan.send("/join #after")  # a person after all: the nick given is used
    ivan.expect(r"^Welcome to the \S+ Network, ivan!")
    ivan.expect(r"^Users in #after: ")
