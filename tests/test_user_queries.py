"""Issue 12's gaps about users and the server, over real sockets: WHOWAS history."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers import HOST, SERVER, Client, Harness

from ircish import protocol as p
from ircish import world

Connect = Callable[..., Client]


def replies(client: Client, line: str) -> list[tuple[str, ...]]:
    """Send `line`; every reply up to the PING barrier, as (command, *params)."""
    client.send(line)
    return [(msg.command, *msg.params) for msg in client.messages()]


def leave(client: Client, others: Client) -> None:
    """`client` quits; `others` has seen the server handle it (WHOWAS then knows)."""
    client.send("QUIT :bye")
    client.expect_closed()
    others.sync()


# -- WHOWAS ----------------------------------------------------------------------------


def test_whowas_after_quit_shows_who_had_the_nick(connect: Connect) -> None:
    alice = connect("alice")
    bob = connect()
    bob.register("bob", user="bobu", realname="Bob Builder")
    leave(bob, alice)
    got = replies(alice, "WHOWAS bob")
    assert [row[0] for row in got] == [p.RPL_WHOWASUSER, p.RPL_WHOISSERVER, p.RPL_ENDOFWHOWAS]
    assert got[0] == (p.RPL_WHOWASUSER, "alice", "bob", "bobu", HOST, "*", "Bob Builder")
    assert got[1][:4] == (p.RPL_WHOISSERVER, "alice", "bob", SERVER)
    assert got[2][:3] == (p.RPL_ENDOFWHOWAS, "alice", "bob")


def test_whowas_after_nick_change_keeps_the_old_nick(connect: Connect) -> None:
    alice = connect("alice")
    bob = connect("bob")
    bob.send("NICK robert")
    bob.expect(r" NICK :?robert$")
    got = replies(alice, "WHOWAS BOB")  # nicks are told apart ignoring case
    assert got[0][:4] == (p.RPL_WHOWASUSER, "alice", "bob", "u")
    # A change of case alone keeps the nick: nothing new is remembered.
    bob.send("NICK Robert")
    bob.expect(r" NICK :?Robert$")
    assert [row[0] for row in replies(alice, "WHOWAS robert")] == [
        p.ERR_WASNOSUCHNICK,
        p.RPL_ENDOFWHOWAS,
    ]


@pytest.mark.parametrize(
    ("command", "users"),
    [
        ("WHOWAS twin", ["third", "second"]),
        ("WHOWAS twin 1", ["third"]),
        ("WHOWAS twin 2", ["third", "second"]),
        ("WHOWAS twin 0", ["third", "second"]),
        ("WHOWAS twin -1", ["third", "second"]),
        ("WHOWAS twin junk", ["third", "second"]),
        ("WHOWAS *w?n", ["third", "second"]),
    ],
)
def test_whowas_newest_first_and_count(connect: Connect, command: str, users: list[str]) -> None:
    alice = connect("alice")
    for user in ("second", "third"):
        twin = connect()
        twin.register("twin", user=user)
        leave(twin, alice)
    got = replies(alice, command)
    assert [row[3] for row in got if row[0] == p.RPL_WHOWASUSER] == users
    assert [row[0] for row in got] == [p.RPL_WHOWASUSER, p.RPL_WHOISSERVER] * len(users) + [
        p.RPL_ENDOFWHOWAS
    ]


def test_whowas_unknown_nick_is_406_then_369(connect: Connect) -> None:
    alice = connect("alice")
    got = replies(alice, "WHOWAS nobody 1")
    assert [row[:3] for row in got] == [
        (p.ERR_WASNOSUCHNICK, "alice", "nobody"),
        (p.RPL_ENDOFWHOWAS, "alice", "nobody"),
    ]
    assert [row[:3] for row in replies(alice, "WHOWAS")] == [
        (p.ERR_NEEDMOREPARAMS, "alice", "WHOWAS")
    ]


def test_whowas_keeps_a_bounded_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oldest entries go: memory stays bounded however many people come and go."""
    monkeypatch.setattr(world, "WHOWAS_LENGTH", 3)
    harness = Harness()
    asker = harness.connect("asker")
    for n in range(5):
        harness.connect(f"gone{n}").hang_up()
    asker.line("WHOWAS gone*")
    got = [msg.params[1] for msg in asker.messages() if msg.command == p.RPL_WHOWASUSER]
    assert got == ["gone4", "gone3", "gone2"]
