"""Issue 12's gaps about users and the server, over real sockets: WHOWAS history, INFO,
LINKS, HELPOP, WALLOPS with user mode +w, LUSERS' 265/266, and USER with an empty field."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers import HOST, OPER_PASSWORD, SERVER, Client, Harness, oper_config, wait_for

from ircish import protocol as p
from ircish import world
from ircish.protocol import parse
from ircish.server import Server

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
        ("WHOWAS *w?n", []),  # a nick, not a mask: a mask would list everyone who left
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
    found = [p.RPL_WHOWASUSER, p.RPL_WHOISSERVER] * len(users) or [p.ERR_WASNOSUCHNICK]
    assert [row[0] for row in got] == [*found, p.RPL_ENDOFWHOWAS]


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
    for n in range(5):  # one nick, five people: told apart by their usernames
        gone = harness.connect()
        gone.line("NICK gone")
        gone.line(f"USER u{n} 0 * :gone")
        gone.hang_up()
    asker.line("WHOWAS gone")
    got = [msg.params[2] for msg in asker.messages() if msg.command == p.RPL_WHOWASUSER]
    assert got == ["u4", "u3", "u2"]


# -- INFO, LINKS, HELPOP ---------------------------------------------------------------


@pytest.mark.parametrize("command", ["INFO", f"INFO {SERVER}", "INFO *.server", "INFO alice"])
def test_info_lines_then_374(connect: Connect, command: str) -> None:
    alice = connect("alice")
    got = replies(alice, command)
    assert {row[0] for row in got[:-1]} == {p.RPL_INFO}
    assert len(got) >= 3
    assert got[-1][:2] == (p.RPL_ENDOFINFO, "alice")
    assert any("ircish-" in row[2] for row in got[:-1])


@pytest.mark.parametrize("target", ["other.server", "nobody"])
def test_info_for_another_server_is_402(connect: Connect, target: str) -> None:
    alice = connect("alice")
    assert [row[:3] for row in replies(alice, f"INFO {target}")] == [
        (p.ERR_NOSUCHSERVER, "alice", target)
    ]


def test_links_lists_this_server_with_its_description(
    start_server: Callable[..., Server], connect: Connect
) -> None:
    srv = start_server(description="test server")
    alice = connect("alice", target=srv)
    assert replies(alice, "LINKS") == [
        (p.RPL_LINKS, "alice", SERVER, SERVER, "0 test server"),
        (p.RPL_ENDOFLINKS, "alice", "*", "End of /LINKS list"),
    ]
    assert replies(alice, "LINKS *.server")[0][0] == p.RPL_LINKS
    assert [row[:3] for row in replies(alice, "LINKS other.*")] == [
        (p.RPL_ENDOFLINKS, "alice", "other.*")
    ]
    assert [row[:3] for row in replies(alice, "LINKS far.away *")] == [
        (p.ERR_NOSUCHSERVER, "alice", "far.away")
    ]


@pytest.mark.parametrize("topic", ["", " PRIVMSG", " nosuch"])
def test_helpop_is_help(connect: Connect, topic: str) -> None:
    alice = connect("alice")
    help_ = replies(alice, f"HELP{topic}")
    assert replies(alice, f"HELPOP{topic}") == help_
    assert help_[0][0] in (p.RPL_HELPSTART, p.ERR_HELPNOTFOUND)


# -- WALLOPS and user mode +w ----------------------------------------------------------


@pytest.fixture
def opers(start_server: Callable[..., Server]) -> Server:
    return start_server(oper_config())


def test_wallops_reaches_those_with_plus_w(opers: Server, connect: Connect) -> None:
    root, listener, deaf = (connect(nick, target=opers) for nick in ("root", "listener", "deaf"))
    listener.send("MODE listener +w")
    listener.expect(r"^:listener!\S+ MODE listener :?\+w$")
    assert replies(listener, "MODE listener") == [(p.RPL_UMODEIS, "listener", "+w")]
    root.send(f"OPER root :{OPER_PASSWORD}")
    root.expect(f" {p.RPL_YOUREOPER} ")

    root.send("WALLOPS :the server restarts at noon")
    wallops = f":root!u@{HOST} WALLOPS :the server restarts at noon"
    assert listener.expect(r" WALLOPS ").string == wallops
    assert root.sync() == []  # the sender has no +w
    assert deaf.sync() == []

    # With +w the sender gets it too; with -w the listener no longer does.
    root.send("MODE root +w")
    root.expect(r"^:root!\S+ MODE root :?\+w$")
    assert replies(root, "MODE root") == [(p.RPL_UMODEIS, "root", "+ow")]
    listener.send("MODE listener -w")
    listener.expect(r"^:listener!\S+ MODE listener :?-w$")
    root.send("WALLOPS :again")
    assert root.expect(r" WALLOPS ").string == f":root!u@{HOST} WALLOPS :again"
    assert listener.sync() == []


def test_wallops_needs_a_server_operator(connect: Connect) -> None:
    alice = connect("alice")
    bob = connect("bob")
    bob.send("MODE bob +w")
    bob.expect(r" MODE bob :?\+w$")
    assert [row[:2] for row in replies(alice, "WALLOPS :hi everyone")] == [
        (p.ERR_NOPRIVILEGES, "alice")
    ]
    assert bob.sync() == []


def test_a_plus_w_user_who_quits_gets_no_more(opers: Server, connect: Connect) -> None:
    root = connect("root", target=opers)
    gone = connect("gone", target=opers)
    gone.send("MODE gone +w")
    gone.expect(r" MODE gone :?\+w$")
    leave(gone, root)
    root.send(f"OPER root :{OPER_PASSWORD}")
    root.expect(f" {p.RPL_YOUREOPER} ")
    root.send("WALLOPS :anyone?")
    assert root.sync() == []  # no error: the one who left is simply not there


# -- LUSERS ----------------------------------------------------------------------------


def lusers(client: Client) -> dict[str, tuple[str, ...]]:
    got = replies(client, "LUSERS")
    assert [row[0] for row in got] == ["251", "252", "253", "254", "255", "265", "266"]
    return {row[0]: row[2:] for row in got}


def test_lusers_counts_current_and_peak_users(server: Server, connect: Connect) -> None:
    alice = connect("alice")
    assert lusers(alice)["265"] == ("1", "1", "Current local users 1, max 1")
    bob = connect("bob")
    unregistered = connect()
    unregistered.send("NICK half")
    wait_for(lambda: server.connection_count() == 3)
    counts = lusers(bob)
    assert counts["251"][0].startswith("There are 2 users and 0 invisible on 1 server")
    assert counts["253"][0] == "1"
    assert counts["255"][0].startswith("I have 2 clients")
    assert counts["265"] == ("2", "2", "Current local users 2, max 2")
    assert counts["266"] == ("2", "2", "Current global users 2, max 2")
    # The peak stays when people leave; an unregistered connection that quits is gone
    # from the count before its client sees the connection close.
    leave(bob, alice)
    unregistered.send("QUIT")
    unregistered.expect_closed()
    counts = lusers(alice)
    assert counts["253"][0] == "0"
    assert counts["265"][:2] == ("1", "2")
    assert counts["266"][:2] == ("1", "2")


def test_welcome_burst_counts_the_newcomer(connect: Connect) -> None:
    connect("alice")
    bob = connect()
    bob.send_registration("bob")
    burst = [parse(line) for line in bob.collect_until(r" 376 | 422 ")]
    counted = {msg.command: msg.params[1:3] for msg in burst if msg.command in ("265", "266")}
    assert counted == {"265": ("2", "2"), "266": ("2", "2")}


# -- USER ------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["USER u 0 * :", "USER u 0 * ", "USER u 0 *"])
def test_user_without_realname_is_461_and_not_registered(connect: Connect, line: str) -> None:
    client = connect()
    client.send("NICK carol")
    client.send(line)
    reply = parse(client.expect(rf" {p.ERR_NEEDMOREPARAMS} ").string)
    assert reply.params[:2] == ("carol", "USER")
    client.send("PRIVMSG carol :hi")
    client.expect(rf" {p.ERR_NOTREGISTERED} ")
    # A complete USER afterwards registers.
    client.send("USER u 0 * :Carol")
    client.expect(rf" {p.RPL_WELCOME} carol ")


def test_user_realname_is_cut_to_the_setname_limit(connect: Connect) -> None:
    alice = connect("alice")
    bob = connect()
    bob.register("bob", realname="x" * 150)
    got = replies(alice, "WHOIS bob")
    assert got[0][-1] == "x" * 100
