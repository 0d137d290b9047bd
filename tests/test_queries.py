"""Queries over real sockets: WHO, WHOIS, AWAY, MODE, MOTD, LUSERS and HELP."""

from __future__ import annotations

import re
import time

import pytest
from helpers import HOST, SERVER, wait_for

from ircish import __version__
from ircish.protocol import parse


def replies(client, line: str, last: str) -> list[tuple[str, ...]]:
    """Send `line`; each reply up to the numeric `last` as (command, *params)."""
    client.send(line)
    lines = client.collect_until(rf"^:{SERVER} {last} ")
    messages = [parse(text) for text in lines]
    assert all(msg.prefix == SERVER for msg in messages), lines
    return [(msg.command, *msg.params) for msg in messages]


@pytest.fixture
def people(connect):
    """alice and bob (user bobu, "Bob Builder") share #room; bob is also in #other.
    Each founded the rooms they joined first, so alice runs #room and bob #other."""
    alice = connect("alice")
    bob = connect()
    bob.register("bob", user="bobu", realname="Bob Builder")
    alice.join("#room")
    bob.join("#room")
    bob.join("#other")
    alice.expect(rf"^:bob!bobu@{HOST} JOIN :?#room$")
    return alice, bob


# -- WHO -------------------------------------------------------------------------------


def test_who_room_lists_each_member_then_315(people):
    alice, _ = people
    got = replies(alice, "WHO #room", "315")
    assert sorted(got[:-1]) == sorted(
        [
            ("352", "alice", "#room", "u", HOST, SERVER, "alice", "H@", "0 Real Name"),
            ("352", "alice", "#room", "bobu", HOST, SERVER, "bob", "H", "0 Bob Builder"),
        ]
    )
    assert got[-1][:3] == ("315", "alice", "#room")


def test_who_nick_and_away_flag(people):
    alice, bob = people
    # WHO by nick names no room, so no status: bob runs #other but shows plain "H".
    assert replies(alice, "WHO bob", "315") == [
        ("352", "alice", "*", "bobu", HOST, SERVER, "bob", "H", "0 Bob Builder"),
        ("315", "alice", "bob", "End of WHO list"),
    ]
    bob.send("AWAY :out to lunch")
    bob.expect(rf"^:{SERVER} 306 bob ")
    assert replies(alice, "WHO bob", "315")[0][7] == "G"
    member_flags = {row[6]: row[7] for row in replies(alice, "WHO #room", "315")[:-1]}
    assert member_flags == {"alice": "H@", "bob": "G"}


def test_who_unknown_room_is_only_315(connect):
    alice = connect("alice")
    got = replies(alice, "WHO #nowhere", "315")
    assert [row[:3] for row in got] == [("315", "alice", "#nowhere")]


def test_invisible_user_hidden_from_strangers_masks_only(people, connect):
    alice, bob = people
    bob.send("MODE bob +i")
    bob.expect(r"MODE bob :?\+i$")
    stranger = connect("dave")
    for mask in ("b*", "*", "bo?"):
        got = replies(stranger, f"WHO {mask}", "315")
        assert "bob" not in [row[6] for row in got[:-1]], (mask, got)
    # alice shares #room with bob, so she still sees him.
    assert [row[6] for row in replies(alice, "WHO b*", "315")[:-1]] == ["bob"]
    # His exact nick shows him to anyone (modern.ircdocs.horse "WHO": +i hides from masks).
    assert [row[6] for row in replies(stranger, "WHO BOB", "315")[:-1]] == ["bob"]


# -- WHOIS -----------------------------------------------------------------------------


def test_whois_lists_everything_in_order(people):
    alice, bob = people
    before = int(time.time())
    bob.send("AWAY :gone fishing")
    bob.expect(rf"^:{SERVER} 306 bob ")
    got = replies(alice, "WHOIS bob", "318")
    assert [row[0] for row in got] == ["311", "319", "312", "301", "317", "318"]
    assert got[0] == ("311", "alice", "bob", "bobu", HOST, "*", "Bob Builder")
    assert got[1][:3] == ("319", "alice", "bob")
    assert sorted(got[1][3].split()) == sorted(["#room", "@#other"])  # bob runs #other
    assert got[2][:4] == ("312", "alice", "bob", SERVER)
    assert got[3] == ("301", "alice", "bob", "gone fishing")
    _, _, _, idle, signon, _ = got[4]
    assert 0 <= int(idle) < 10
    assert before - 10 <= int(signon) <= int(time.time())
    assert got[5][:3] == ("318", "alice", "bob")


def test_whois_not_away_has_no_301(people):
    alice, _ = people
    got = replies(alice, "WHOIS BOB", "318")
    assert "301" not in [row[0] for row in got]
    assert got[0][2] == "bob"


def test_whois_unknown_nick(connect):
    alice = connect("alice")
    assert [row[:3] for row in replies(alice, "WHOIS nosuch", "318")] == [
        ("401", "alice", "nosuch"),
        ("318", "alice", "nosuch"),
    ]


# -- AWAY ------------------------------------------------------------------------------


def test_away_replies_and_auto_301(connect):
    alice = connect("alice")
    bob = connect("bob")
    bob.send("AWAY :back in five")
    bob.expect(rf"^:{SERVER} 306 bob :")

    alice.send("PRIVMSG bob :are you there?")
    bob.expect(rf"^:alice!u@{HOST} PRIVMSG bob :are you there\?$")
    assert alice.sync() == [f":{SERVER} 301 alice bob :back in five"]

    # NOTICE is never answered automatically (RFC 2812 3.3.2).
    alice.send("NOTICE bob :just so you know")
    bob.expect(rf"^:alice!u@{HOST} NOTICE bob :just so you know$")
    assert alice.sync() == []

    bob.send("AWAY")
    bob.expect(rf"^:{SERVER} 305 bob :")
    alice.send("PRIVMSG bob :welcome back")
    bob.expect(rf"^:alice!u@{HOST} PRIVMSG bob :welcome back$")
    assert alice.sync() == []


def test_the_away_reply_comes_in_the_order_of_the_targets(connect):
    """PRIVMSG to several targets: each one's answer in the order they were named, the
    301 of an away recipient after the 401 of a nick before it (the 301 comes from the
    delivery, the 401 from the command's replies)."""
    alice = connect("alice")
    bob = connect("bob")
    bob.send("AWAY :back in five")
    bob.expect(rf"^:{SERVER} 306 bob :")
    alice.send("PRIVMSG nosuch,bob,#nosuch :hi")
    assert alice.sync() == [
        f":{SERVER} 401 alice nosuch :No such nick",
        f":{SERVER} 301 alice bob :back in five",
        f":{SERVER} 403 alice #nosuch :No such room",
    ]


# -- MODE ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("MODE alice", [("221", "alice", "+")]),
        ("MODE ALICE +x", [("501", "alice")]),
        ("MODE bob", [("502", "alice")]),
        ("MODE bob +i", [("502", "alice")]),
        ("MODE nosuch", [("401", "alice", "nosuch")]),
        ("MODE #room b", [("368", "alice", "#room")]),
        ("MODE #room +b", [("368", "alice", "#room")]),
        ("MODE #room +q", [("472", "alice", "q")]),
        ("MODE #nosuch", [("403", "alice", "#nosuch")]),
    ],
)
def test_mode_replies(people, line, expected):
    alice, _ = people
    alice.send(line)
    got = [(msg.command, *msg.params) for msg in map(parse, alice.sync())]
    assert len(got) == len(expected), got
    for row, want in zip(got, expected, strict=True):
        assert row[: len(want)] == want


def test_mode_room_shows_modes_and_creation_time(people):
    alice, _ = people
    got = replies(alice, "MODE #room", "329")
    assert got[0] == ("324", "alice", "#room", "+nt")
    assert got[1][:3] == ("329", "alice", "#room")
    assert abs(int(got[1][3]) - time.time()) < 60
    assert len(got) == 2


def test_mode_invisible_is_echoed_and_shown(connect):
    alice = connect("alice")
    alice.send("MODE alice +i")
    assert re.match(r"^:alice(!u@\S+)? MODE alice :?\+i$", alice.collect_until(r" MODE ")[-1])
    assert replies(alice, "MODE alice", "221") == [("221", "alice", "+i")]
    alice.send("MODE alice -i")
    alice.expect(r"^:alice(!u@\S+)? MODE alice :?-i$")
    assert replies(alice, "MODE alice", "221") == [("221", "alice", "+")]


# -- MOTD and LUSERS -------------------------------------------------------------------


def test_motd_command(start_server, connect):
    srv = start_server(motd="Be nice.\nNo spam.")
    alice = connect("alice", target=srv)
    got = replies(alice, "MOTD", "376")
    assert [row[0] for row in got] == ["375", "372", "372", "376"]
    assert [row[2] for row in got[1:3]] == ["- Be nice.", "- No spam."]


def test_motd_command_without_motd_is_422(connect):
    alice = connect("alice")
    alice.send("MOTD")
    assert [parse(line).command for line in alice.sync()] == ["422"]


def test_lusers_counts(server, connect):
    alice = connect("alice")
    bob = connect("bob")
    carol = connect("carol")
    alice.join("#one")
    bob.join("#one")
    alice.expect(rf"^:bob!u@{HOST} JOIN :?#one$")
    carol.join("#two")
    connect()  # a connection that has not registered
    wait_for(lambda: server.connection_count() == 4)
    got = replies(alice, "LUSERS", "266")
    assert [row[0] for row in got] == ["251", "252", "253", "254", "255", "265", "266"]
    assert re.match(r"There are 3 users\b", got[0][2])
    assert got[2][:3] == ("253", "alice", "1")
    assert got[3][:3] == ("254", "alice", "2")
    assert re.match(r"I have 3 clients\b", got[4][2])

    # The counters follow +i and leaving: carol hides, then bob quits.
    carol.send("MODE carol +i")
    carol.expect(r" MODE carol :?\+i$")
    bob.send("QUIT")
    alice.expect(rf"^:bob!u@{HOST} QUIT ")
    got = replies(alice, "LUSERS", "266")
    assert got[0][2].startswith("There are 1 users and 1 invisible")
    assert re.match(r"I have 2 clients\b", got[4][2])


# -- HELP ------------------------------------------------------------------------------


def test_help_lists_commands_with_syntax(connect):
    alice = connect("alice")
    got = replies(alice, "HELP", "706")
    assert got[0][0] == "704"
    assert got[-1][0] == "706"
    body = got[1:-1]
    assert len(body) >= 5
    assert {row[0] for row in body} == {"705"}
    texts = [row[-1] for row in body]
    assert any(text.startswith("/join <#room>") for text in texts), texts
    assert any(text.startswith("/msg <nick|#room> <text>") for text in texts), texts


@pytest.mark.parametrize("topic", ["join", "JOIN", "/join"])
def test_help_one_command(connect, topic):
    alice = connect("alice")
    got = replies(alice, f"HELP {topic}", "706")
    assert [row[0] for row in got] == ["704", "706"]
    assert got[0][-1].startswith("/join <#room>")


def test_help_unknown_topic_is_524(connect):
    alice = connect("alice")
    alice.send("HELP nosuch")
    got = [parse(line) for line in alice.sync()]
    assert [(msg.command, *msg.params[:2]) for msg in got] == [("524", "alice", "nosuch")]


# -- small queries clients send on their own --------------------------------------------


def test_ison_names_only_online_nicks(people):
    alice, _ = people
    assert replies(alice, "ISON bob nobody ALICE", "303") == [("303", "alice", "bob alice")]


def test_userhost_shows_away_state(people):
    alice, bob = people
    bob.send("AWAY :gone")
    bob.expect(rf"^:{SERVER} 306 bob ")
    assert replies(alice, "USERHOST alice bob nobody", "302") == [
        ("302", "alice", f"alice=+u@{HOST} bob=-bobu@{HOST}")
    ]


def test_version_and_time(connect):
    alice = connect("alice")
    alice.send("VERSION")
    # 351, then the 005 lines (as many as the tokens need): all of it, up to the PONG.
    messages = alice.messages()
    assert all(msg.prefix == SERVER for msg in messages), messages
    got = [(msg.command, *msg.params) for msg in messages]
    assert got[0][0] == "351" and got[0][1:3] == ("alice", f"ircish-{__version__}")
    assert len(got) > 1 and all(row[:2] == ("005", "alice") for row in got[1:]), got
    assert "CASEMAPPING=ascii" in [token for row in got[1:] for token in row[2:-1]]
    (time_reply,) = replies(alice, "TIME", "391")
    assert time_reply[:3] == ("391", "alice", SERVER)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", time_reply[3])


def test_ipv6_client_shows_in_who_and_whois(start_server, connect):
    """'::1' cannot start a middle parameter: the host is shown as '0::1'."""
    srv = start_server(host="::1")
    alice = connect("alice", target=srv)
    bob = connect("bob", target=srv)
    assert replies(bob, "WHOIS alice", "318")[0] == (
        "311",
        "bob",
        "alice",
        "u",
        "0::1",
        "*",
        "Real Name",
    )
    assert replies(bob, "WHO alice", "315")[0][4] == "0::1"
    assert alice.sync() == []  # and nobody was disconnected


def test_invisible_member_hidden_from_who_room_by_strangers(people, connect):
    alice, bob = people
    bob.send("MODE bob +i")
    bob.expect(r" MODE bob :?\+i$")
    stranger = connect("stranger")
    assert [row[6] for row in replies(stranger, "WHO #room", "315")[:-1]] == ["alice"]
    assert sorted(row[6] for row in replies(alice, "WHO #room", "315")[:-1]) == ["alice", "bob"]


def test_who_mask_brackets_are_nick_characters(connect):
    connect("[bot]")
    asker = connect("asker")
    assert [row[6] for row in replies(asker, "WHO [bot]", "315")[:-1]] == ["[bot]"]
