"""Talking over real sockets: PRIVMSG/NOTICE delivery and errors, nick and quit fan-out,
clients that vanish, and message text kept intact up to the line limit."""

from __future__ import annotations

import socket
import struct

import pytest
from helpers import SERVER, prefix, settle, wait_for

from ircish import protocol as p
from ircish.protocol import Message, parse


@pytest.fixture
def trio(connect):
    """alice, bob and carol in #r; bob alone in #other."""
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    for client in (alice, bob, carol):
        client.join("#r")
    bob.join("#other")
    settle(alice, bob, carol)
    return alice, bob, carol


# -- delivery --------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["PRIVMSG", "NOTICE"])
@pytest.mark.parametrize(
    "line",
    ["{verb} #r :hello all", ":mallory!x@y {verb} #r :hello all"],
    ids=["plain", "fake-prefix"],
)
def test_room_message_reaches_each_other_member_once_as_the_sender(trio, verb, line):
    alice, bob, carol = trio
    alice.send(line.format(verb=verb))
    assert alice.messages() == []
    expected = Message(verb, ["#r", "hello all"], prefix("alice"))
    assert bob.messages() == [expected]
    assert carol.messages() == [expected]


@pytest.mark.parametrize("verb", ["PRIVMSG", "NOTICE"])
def test_private_message_reaches_only_its_target(trio, verb):
    alice, bob, carol = trio
    alice.send(f"{verb} bob :just for you")
    assert alice.messages() == []
    assert bob.messages() == [Message(verb, ["bob", "just for you"], prefix("alice"))]
    assert carol.messages() == []


@pytest.mark.parametrize("verb", ["PRIVMSG", "NOTICE"])
def test_comma_targets_reach_each(trio, verb):
    alice, bob, carol = trio
    alice.send(f"{verb} bob,carol :hi both")
    assert alice.messages() == []
    assert bob.messages() == [Message(verb, ["bob", "hi both"], prefix("alice"))]
    assert carol.messages() == [Message(verb, ["carol", "hi both"], prefix("alice"))]


@pytest.mark.parametrize("verb", ["PRIVMSG", "NOTICE"])
def test_a_repeated_target_gets_the_message_once(trio, verb):
    alice, bob, _ = trio
    alice.send(f"{verb} bob,BOB,bob :once")
    assert alice.messages() == []  # handled (sync on the sender first)
    assert bob.messages() == [Message(verb, ["bob", "once"], prefix("alice"))]


#: Each bad way to address a message: what follows the verb; the numeric PRIVMSG gets for
#: it, and the target that numeric names (None where it names none). NOTICE gets nothing.
BAD_ADDRESSING = {
    "no-recipient": ("", p.ERR_NORECIPIENT, None),
    "no-text": (" bob", p.ERR_NOTEXTTOSEND, None),
    "empty-text": (" bob :", p.ERR_NOTEXTTOSEND, None),
    "unknown-nick": (" nobody :hi", p.ERR_NOSUCHNICK, "nobody"),
    "unknown-room": (" #nowhere :hi", p.ERR_NOSUCHCHANNEL, "#nowhere"),
    "not-a-member": (" #other :hi", p.ERR_CANNOTSENDTOCHAN, "#other"),
    "five-targets": (" bob,carol,dave,erin,fred :hi", p.ERR_TOOMANYTARGETS, None),
}


@pytest.mark.parametrize(
    ("rest", "numeric", "target"), list(BAD_ADDRESSING.values()), ids=list(BAD_ADDRESSING)
)
def test_privmsg_errors(trio, rest, numeric, target):
    alice, bob, carol = trio
    alice.send(f"PRIVMSG{rest}")
    (reply,) = alice.messages()
    assert reply.prefix == SERVER
    assert reply.command == numeric
    assert reply.params[0] == "alice"
    if target is not None:
        assert reply.params[1] == target
    assert reply.params[-1]  # a human-readable reason
    assert bob.messages() == []
    assert carol.messages() == []


@pytest.mark.parametrize(
    "rest", [rest for rest, _, _ in BAD_ADDRESSING.values()], ids=list(BAD_ADDRESSING)
)
def test_notice_never_gets_an_error_reply(trio, rest):
    alice, bob, carol = trio
    alice.send(f"NOTICE{rest}")
    assert alice.messages() == []
    assert bob.messages() == []
    assert carol.messages() == []


def test_privmsg_and_notice_with_a_mix_of_good_and_bad_targets(trio):
    alice, bob, _ = trio
    alice.send("PRIVMSG nobody,bob :partly")
    assert [(m.command, m.params[1]) for m in alice.messages()] == [(p.ERR_NOSUCHNICK, "nobody")]
    assert bob.messages() == [Message("PRIVMSG", ["bob", "partly"], prefix("alice"))]
    alice.send("NOTICE nobody,bob :partly")
    assert alice.messages() == []
    assert bob.messages() == [Message("NOTICE", ["bob", "partly"], prefix("alice"))]


# -- text kept intact ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "word",
        "two  spaces   inside",
        "  leading and trailing  ",
        ":starts with a colon",
        "a: b :c ::",
        "héllo ☃",
        "\x01ACTION waves\x01",
        "\x01ACTION waves at ☃ :)\x01",
    ],
)
@pytest.mark.parametrize("target", ["#r", "bob"])
def test_text_is_relayed_exactly(trio, text, target):
    alice, bob, _ = trio
    alice.send(f"PRIVMSG {target} :{text}")
    alice.sync()
    assert bob.messages() == [Message("PRIVMSG", [target, text], prefix("alice"))]


@pytest.mark.parametrize("target", ["#r", "bob"])
@pytest.mark.parametrize(
    "unit",
    ["x", "é", "☃", "𝄞"],
    ids=["ascii", "2-byte", "3-byte", "4-byte"],
)
def test_long_message_is_cut_at_a_utf8_boundary(trio, target, unit):
    alice, bob, _ = trio
    command = f"PRIVMSG {target} :"
    # The longest text the 512-byte input line allows; the relay adds the prefix.
    room = 510 - len(command.encode())
    text = unit * (room // len(unit.encode()))
    alice.send(command + text)
    alice.sync()

    line = bob.expect(r" PRIVMSG ").string
    assert "\ufffd" not in line  # the client decodes with errors="replace"
    wire = line.encode()
    assert len(wire) + 2 <= 512
    # Cut as late as possible: within one character of the limit.
    assert len(wire) + 2 > 512 - len(unit.encode())
    relayed = parse(line)
    assert relayed.prefix == prefix("alice")
    assert relayed.params[0] == target
    assert relayed.params[1] and text.startswith(relayed.params[1])
    assert bob.messages() == []


# -- nick changes and quits reach each neighbour once ---------------------------------------


@pytest.fixture
def neighbours(connect):
    """alice in #a and #b; bob shares both; carol shares #b; dave is alone in #c."""
    alice, bob, carol, dave = connect("alice"), connect("bob"), connect("carol"), connect("dave")
    alice.join("#a", "#b")
    bob.join("#a", "#b")
    carol.join("#b")
    dave.join("#c")
    settle(alice, bob, carol, dave)
    return alice, bob, carol, dave


def test_nick_change_is_relayed_once_to_each_neighbour(server, neighbours):
    alice, bob, carol, dave = neighbours
    alice.send("NICK alicia")
    changed = Message("NICK", ["alicia"], prefix("alice"))
    assert alice.messages() == [changed]
    assert bob.messages() == [changed]
    assert carol.messages() == [changed]
    assert dave.messages() == []
    assert server.world.find_user("alice") is None
    assert server.world.find_user("alicia") is not None


def test_quit_is_relayed_once_and_frees_the_nick(server, connect, neighbours):
    alice, bob, carol, dave = neighbours
    alice.send("QUIT :gone fishing")
    alice.expect_closed()
    wait_for(lambda: server.connection_count() == 3)

    quit_line = Message("QUIT", ["Quit: gone fishing"], prefix("alice"))
    assert bob.messages() == [quit_line]
    assert carol.messages() == [quit_line]
    assert dave.messages() == []
    for room in ("#a", "#b"):
        names = bob.names(room)
        assert "bob" in names
        assert "alice" not in names

    again = connect("alice")  # registers only if the nick is free
    again.join("#a")
    assert bob.messages() == [Message("JOIN", ["#a"], prefix("alice"))]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_vanished_client_is_removed_and_its_nick_freed(server, connect, neighbours, how):
    alice, bob, carol, dave = neighbours
    if how == "reset":
        alice.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    alice.close()
    wait_for(lambda: server.connection_count() == 3)

    for client in (bob, carol):
        (quit_msg,) = client.messages()
        assert quit_msg.command == "QUIT"
        assert quit_msg.prefix == prefix("alice")
        assert quit_msg.params[0]  # some reason
    assert dave.messages() == []
    assert server.world.find_user("alice") is None
    assert "alice" not in {u.nick for u in server.world.find_room("#a").members}

    again = connect("alice")
    again.join("#b")
    assert carol.messages() == [Message("JOIN", ["#b"], prefix("alice"))]
