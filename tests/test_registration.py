"""Registration over real sockets: the welcome burst, CAP, PASS, NICK, USER, the
dispatcher's 451/421/461, PING/PONG and the ping, registration and client-count limits.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from helpers import HOST, SERVER, wait_for

from ircish.protocol import parse


def numerics(lines: list[str]) -> list[str]:
    """The commands of `lines`, with runs of the same one (005, 372) collapsed."""
    out: list[str] = []
    for line in lines:
        command = parse(line).command
        if not out or out[-1] != command:
            out.append(command)
    return out


def without_greeting(lines: list[str]) -> list[str]:
    """Drop the server NOTICE a connection may get before it says anything."""
    return [line for line in lines if not line.startswith(f":{SERVER} NOTICE * :")]


def welcome_burst(client) -> list[str]:
    """The lines from 001 through the end of the MOTD (or 422)."""
    lines = client.collect_until(r" (376|422) ")
    return lines[next(i for i, line in enumerate(lines) if " 001 " in line) :]


# -- the welcome burst ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("motd", "motd_numerics"),
    [
        ("Hello there\nSecond line", ["375", "372", "376"]),
        (None, ["422"]),
    ],
)
def test_welcome_burst_order(start_server, connect, motd, motd_numerics):
    srv = start_server(motd=motd)
    client = connect(target=srv)
    client.send_registration("alice")
    burst = welcome_burst(client)
    assert numerics(burst) == [
        "001",
        "002",
        "003",
        "004",
        "005",
        "251",
        "252",
        "253",
        "254",
        "255",
        "265",
        "266",
        *motd_numerics,
    ]
    for line in burst:
        msg = parse(line)
        assert msg.prefix == SERVER
        assert msg.params[0] == "alice"
    assert burst[0].endswith(f"alice!u@{HOST}")
    if motd is not None:
        motd_lines = [parse(line).params[1] for line in burst if " 372 " in line]
        assert motd_lines == ["- Hello there", "- Second line"]


def test_isupport_reflects_config_limits(start_server, connect):
    srv = start_server(
        network="TestNet", nick_length=12, room_length=20, topic_length=100, away_length=50
    )
    client = connect(target=srv)
    client.send_registration("alice")
    burst = welcome_burst(client)
    tokens: dict[str, str | None] = {}
    for line in burst:
        msg = parse(line)
        if msg.command == "005":
            assert msg.params[-1] == "are supported by this server"
            for token in msg.params[1:-1]:
                key, eq, value = token.partition("=")
                tokens[key] = value if eq else None
    assert tokens["NETWORK"] == "TestNet"
    assert tokens["CASEMAPPING"] == "ascii"
    assert tokens["CHANTYPES"] == "#"
    assert tokens["NICKLEN"] == "12"
    assert tokens["CHANNELLEN"] == "20"
    assert tokens["TOPICLEN"] == "100"
    assert tokens["AWAYLEN"] == "50"
    # Room operators and voice; invite exceptions, bans, ban exceptions, key, limit and
    # five flag modes (issues 6 and 12).
    assert tokens["PREFIX"] == "(ov)@+"
    assert tokens["CHANMODES"] == "Ibe,k,l,Pimnst"
    assert "UTF8ONLY" in tokens


# -- CAP -------------------------------------------------------------------------------


@pytest.mark.parametrize("opening", ["CAP LS 302", "CAP REQ :multi-prefix"])
def test_cap_negotiation_suspends_registration_until_cap_end(connect, opening):
    client = connect()
    client.send(opening)
    client.expect(rf"^:{SERVER} CAP \* (LS|ACK) :?")
    client.send_registration("alice")
    assert not any(" 001 " in line for line in client.sync())
    client.send("CAP END")
    client.expect(rf"^:{SERVER} 001 alice :")
    client.expect(r" (376|422) alice ")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("CAP LIST", rf"^:{SERVER} CAP alice LIST :$"),
        ("CAP REQ :multi-prefix sasl", rf"^:{SERVER} CAP alice ACK :multi-prefix sasl$"),
        ("CAP REQ :multi-prefix frob", rf"^:{SERVER} CAP alice NAK :multi-prefix frob$"),
        ("CAP FROB", rf"^:{SERVER} 410 alice FROB :"),
    ],
)
def test_cap_subcommands(connect, line, expected):
    client = connect("alice")
    client.send(line)
    assert re.search(expected, client.sync()[0])


def test_cap_req_nak_before_registration(connect):
    client = connect()
    client.send("CAP REQ :foo")
    client.expect(rf"^:{SERVER} CAP \* NAK :?foo$")


# -- PASS ------------------------------------------------------------------------------


def test_right_password_registers(start_server, connect):
    srv = start_server(password="s3cret")
    client = connect(target=srv)
    client.send("PASS s3cret")
    client.send_registration("alice")
    client.expect(rf"^:{SERVER} 001 alice :")


@pytest.mark.parametrize("password", ["wrong", None])
def test_wrong_or_missing_password_is_refused(start_server, connect, password):
    srv = start_server(password="s3cret")
    client = connect(target=srv)
    if password is not None:
        client.send(f"PASS {password}")
    client.send_registration("alice")
    lines = without_greeting(client.expect_closed())
    assert [parse(line).command for line in lines] == ["464", "ERROR"]
    assert lines[0].startswith(f":{SERVER} 464 alice :")
    wait_for(lambda: srv.connection_count() == 0)


def test_pass_ignored_without_configured_password(connect):
    client = connect()
    client.send("PASS anything")
    client.send_registration("alice")
    client.expect(rf"^:{SERVER} 001 alice :")


# -- NICK ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["1abc", "a" * 13, "a!b", "#x", "-dash", "é"])
def test_erroneous_nick_is_432(start_server, connect, bad):
    srv = start_server(nick_length=12)
    client = connect("alice", target=srv)
    client.send(f"NICK {bad}")
    client.expect(rf"^:{SERVER} 432 alice {re.escape(bad)} :")
    client.send("NICK " + "b" * 12)  # the longest allowed nick still works
    client.expect(rf"^:alice!u@{HOST} NICK :?{'b' * 12}$")


@pytest.mark.parametrize(
    ("nick", "taken", "shown"),
    [(None, "ALICE", r"\*"), ("bob", "Alice", "bob")],
    ids=["at-registration", "nick-change"],
)
def test_nick_in_use_is_433_case_insensitively(connect, nick, taken, shown):
    connect("alice")
    other = connect(nick)
    other.send(f"NICK {taken}")
    other.expect(rf"^:{SERVER} 433 {shown} {taken} :")


def test_nick_change_is_relayed_to_self_and_frees_old_nick(connect):
    alice = connect("alice")
    alice.send("NICK alicia")
    alice.expect(rf"^:alice!u@{HOST} NICK :?alicia$")
    # The old nick is free for someone else; the new one is not.
    connect("alice")
    third = connect()
    third.send("NICK ALICIA")
    third.expect(rf"^:{SERVER} 433 \* ALICIA :")


def test_nick_change_of_case_only(connect):
    alice = connect("alice")
    alice.send("NICK ALICE")
    alice.expect(rf"^:alice!u@{HOST} NICK :?ALICE$")
    alice.send("WHOIS alice")
    alice.expect(rf"^:{SERVER} 311 ALICE ALICE u {HOST} \* :")


# -- USER ------------------------------------------------------------------------------


def test_user_twice_before_registration_is_462(connect):
    client = connect()
    client.send("USER first 0 * :First")
    client.send("USER second 0 * :Second")
    client.expect(rf"^:{SERVER} 462 \* :")
    client.send("NICK alice")
    client.expect(rf"^:{SERVER} 001 alice :Welcome to the \S+ Network, alice!first@{HOST}$")


def test_user_with_too_few_params_is_461(connect):
    client = connect()
    client.send("USER only two")
    client.expect(rf"^:{SERVER} 461 \* USER :")


# -- refused once registered ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "numeric"),
    [("PASS late", "462"), ("NICK", "431"), ("USER again 0 * :Again", "462")],
    ids=["pass-again", "nick-without-name", "user-again"],
)
def test_registered_client_gets_an_error_numeric(connect, line, numeric):
    client = connect("alice")
    client.send(line)
    client.expect(rf"^:{SERVER} {numeric} alice :")


# -- the dispatcher's checks ------------------------------------------------------------


def test_command_before_registration_is_451(connect):
    client = connect()
    client.send("JOIN #room")
    client.expect(rf"^:{SERVER} 451 \* :")
    client.send("NICK alice")
    client.send("USER u 0 * :Real")
    client.expect(rf"^:{SERVER} 001 alice ")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("FROBNICATE x", rf"^:{SERVER} 421 alice FROBNICATE :"),
        ("JOIN", rf"^:{SERVER} 461 alice JOIN :"),
        ("WHOIS", rf"^:{SERVER} 461 alice WHOIS :"),
    ],
)
def test_dispatcher_errors_after_registration(connect, line, expected):
    client = connect("alice")
    client.send(line)
    lines = client.sync()
    assert len(lines) == 1
    assert re.search(expected, lines[0])


# -- PING / PONG -----------------------------------------------------------------------


@pytest.mark.parametrize("registered", [False, True])
def test_ping_is_answered_with_pong(connect, registered):
    client = connect("alice" if registered else None)
    client.send("PING :hello there")
    client.expect(rf"^:{SERVER} PONG {SERVER} :hello there$")


def test_idle_client_gets_ping_then_ping_timeout(start_server, connect):
    srv = start_server(ping_interval=0.3, ping_timeout=0.5)
    client = connect("alice", target=srv)
    lines = client.expect_closed()
    assert lines[0] == f"PING {SERVER}"
    assert re.match(r"^ERROR :.*Ping timeout", lines[-1])
    wait_for(lambda: srv.connection_count() == 0)


def test_client_answering_pings_stays_connected(start_server, connect):
    srv = start_server(ping_interval=0.3, ping_timeout=0.5)
    client = connect("alice", target=srv)
    started = time.monotonic()
    for _ in range(3):
        # Only the PING arrives: no ERROR, and no 421 for our PONG.
        assert client.collect_until(r"PING ") == [f"PING {SERVER}"]
        client.send(f"PONG :{SERVER}")
    # Longer than ping_interval + ping_timeout since the last line we sent before PONGs.
    assert time.monotonic() - started > 0.8
    client.send("LUSERS")
    client.expect(rf"^:{SERVER} 255 alice :")


# -- timeouts and limits --------------------------------------------------------------


@pytest.mark.parametrize("sent", [None, "NICK half"])
def test_registration_timeout_closes_only_the_unregistered(start_server, connect, sent):
    srv = start_server(registration_timeout=0.5)
    registered = connect("alice", target=srv)
    lurker = connect(target=srv)
    if sent:
        lurker.send(sent)
    lines = lurker.expect_closed()
    assert re.match(r"^ERROR :.*[Rr]egistration", lines[-1])
    wait_for(lambda: srv.connection_count() == 1)
    assert registered.sync() == []


def test_quit_closes_with_error(connect):
    client = connect("alice")
    client.send("QUIT :see you later")
    lines = client.expect_closed()
    assert lines == [f"ERROR :Closing Link: {HOST} (Quit: see you later)"]


def test_max_clients(start_server, connect):
    srv = start_server(max_clients=2)
    first = connect("alice", target=srv)
    connect("bob", target=srv)
    refused = connect(target=srv)
    lines = refused.expect_closed()
    assert len(lines) == 1
    assert lines[0].startswith("ERROR :Server is full")
    first.send("QUIT")
    first.expect_closed()
    wait_for(lambda: srv.connection_count() == 1)
    carol = connect("carol", target=srv)
    assert carol.sync() == []


def test_max_clients_per_ip(start_server, connect):
    """Extra connections from one address get ERROR and no thread; other addresses get in."""
    srv = start_server(max_clients_per_ip=2)
    first = connect("alice", target=srv)
    connect("bob", target=srv)
    threads_before = threading.active_count()
    refused = connect(target=srv)
    assert refused.expect_closed() == ["ERROR :Too many connections from your address (at most 2)"]
    assert threading.active_count() == threads_before
    other_address = connect(target=srv, source="127.0.0.2")
    other_address.register("carol")
    first.send("QUIT")
    first.expect_closed()
    wait_for(lambda: srv.connection_count() == 2)
    connect("dave", target=srv)  # a place was freed for 127.0.0.1
