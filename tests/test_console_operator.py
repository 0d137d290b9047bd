"""Moderating out of the box (issue 11): with no `operators:` in its config, ircish-server
makes a console operator, `admin`, whose random token it prints once at start, and who can
OPER only from this machine. A config with operators gets no such thing."""

from __future__ import annotations

import dataclasses
import itertools
import re
import socket
from collections.abc import Callable

import pytest
from helpers import Client, ServerProcess, example_config, make_config, wait_for

from ircish import protocol as p
from ircish.config import LOOPBACK_HOSTS, Config, OperatorConfig
from ircish.passwords import hash_password, verify_password
from ircish.server import Server

TOKEN_LINE = re.compile(
    r"^No operators in the config: from this machine, type /oper admin (\S+) "
    r"to moderate \(add operators: to the config to turn this off\)$",
    re.MULTILINE,
)


def console_token(server: ServerProcess) -> str:
    """The token the server printed; its line follows the "listening" line."""
    wait_for(lambda: TOKEN_LINE.search(server.log()) is not None)
    found = TOKEN_LINE.findall(server.log())
    assert len(found) == 1, server.log()
    return found[0]


def test_the_example_config_prints_one_fresh_token_at_start(server_process):
    tokens = {console_token(server_process(example_config())) for _ in range(2)}
    assert len(tokens) == 2  # a new one every start
    assert all(len(token) >= 32 for token in tokens)


def test_a_person_on_nc_moderates_general_with_the_token(server_process):
    """The README's path, on the example config: a text session that could not /op anyone
    in #general can once it has typed the /oper line the console showed."""
    server = server_process(example_config())
    token = console_token(server)
    bob = Client(server.address, "bob")
    carol = Client(server.address)
    try:
        bob.register("bob")
        bob.join("#general")
        carol.send("/nick carol")
        carol.expect(r"^Welcome to the ")
        carol.send("/join #general")
        carol.expect(r"^Users in #general: ")
        carol.send("/op bob")
        carol.expect(r"^! You're not a room operator: #general$")
        carol.send(f"/oper admin {token}")
        carol.expect(r"^\* You are now a server operator$")
        carol.send("/op bob")
        carol.expect(r"^\* You give operator to bob in #general$")
        bob.expect(r"^:carol!\S+ MODE #general \+o bob$")
    finally:
        bob.close()
        carol.close()
    assert server.stop() == 0


def test_a_wrong_token_is_refused(server_process):
    server = server_process(example_config())
    token = console_token(server)
    bob = Client(server.address, "bob")
    try:
        bob.register("bob")
        bob.join("#general")
        for wrong in ("nope", token[:-1], token.upper()):
            bob.send(f"OPER admin {wrong}")
            bob.expect(rf" {p.ERR_PASSWDMISMATCH} bob :Password incorrect$")
        bob.send("MODE #general +o bob")
        bob.expect(rf" {p.ERR_CHANOPRIVSNEEDED} bob #general ")
    finally:
        bob.close()
    assert server.stop() == 0


def test_a_config_with_operators_makes_no_admin(server_process):
    config = f"operators:\n  - {{name: alice, password: '{hash_password('pw')}'}}\n"
    server = server_process(config)
    bob = Client(server.address, "bob")
    try:
        bob.register("bob")
        bob.send("OPER alice pw")
        bob.expect(rf" {p.RPL_YOUREOPER} bob ")
    finally:
        bob.close()
    assert server.stop() == 0
    assert "No operators" not in server.log()
    assert "/oper admin" not in server.log()


# -- the console operator in the config: only from this machine ------------------------------


def with_admin(config: Config) -> Config:
    return config.with_console_operator("admin", "the-token")


def test_with_console_operator_keeps_only_a_hash_and_leaves_the_original():
    base = make_config()
    config = with_admin(base)
    assert base.operators == ()
    (admin,) = config.operators
    assert (admin.name, admin.hosts) == ("admin", LOOPBACK_HOSTS)
    assert admin.password != "the-token"
    assert verify_password("the-token", admin.password)
    assert "the-token" not in repr(config)


_oper_nicks = itertools.count()


def oper_reply(address: tuple[str, int], source: str | None = None, name: str = "admin") -> str:
    """The numeric an OPER `name` with the right token gets from `source`."""
    # A nick of its own each time: the server frees a closed client's nick a moment later.
    nick = f"bob{next(_oper_nicks)}"
    client = Client(address, source=source)
    try:
        client.register(nick)
        client.send(f"OPER {name} the-token")
        return client.expect(rf" (381|464|491) {nick} ")[1]
    finally:
        client.close()


def test_the_token_works_from_127_0_0_1_only(start_server: Callable[..., Server]):
    server = start_server(with_admin(make_config()))
    assert oper_reply(server.address) == p.RPL_YOUREOPER
    # 127.0.0.2 stands for any other machine: the right token, from the wrong host.
    assert oper_reply(server.address, source="127.0.0.2") == p.ERR_NOOPERHOST


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_the_token_works_over_ipv6_loopback(start_server: Callable[..., Server]):
    server = start_server(with_admin(make_config(host="::1")))
    assert oper_reply(server.address) == p.RPL_YOUREOPER


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_the_token_works_from_127_0_0_1_on_a_dual_stack_listener(
    start_server: Callable[..., Server],
):
    # On `host: "::"` an IPv4 client is seen as ::ffff:127.0.0.1.
    server = start_server(with_admin(make_config(host="::")))
    try:
        reply = oper_reply(("127.0.0.1", server.address[1]))
    except ConnectionRefusedError:
        pytest.skip("this machine's IPv6 sockets are IPv6 only (net.ipv6.bindv6only)")
    assert reply == p.RPL_YOUREOPER
    assert oper_reply(("127.0.0.1", server.address[1]), source="127.0.0.2") == p.ERR_NOOPERHOST


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_operator_host_written_as_ipv6_matches_as_written(start_server: Callable[..., Server]):
    # IRC shows ::1 as 0::1 (a parameter cannot start with ':'); `hosts: ["::1"]` in a
    # config must still mean ::1.
    operator = OperatorConfig(name="bob", password=hash_password("the-token"), hosts=("::1",))
    server = start_server(dataclasses.replace(make_config(host="::1"), operators=(operator,)))
    assert oper_reply(server.address, name="bob") == p.RPL_YOUREOPER


def test_the_token_shows_at_any_log_level_and_never_in_a_log_line(server_process):
    example = example_config()
    # shown, though ERROR hides every warning
    console_token(server_process(example, log_level="ERROR"))
    server = server_process(example, log_level="DEBUG")
    token = console_token(server)
    wait_for(lambda: "console operator admin made" in server.log())
    logged = [line for line in server.log().splitlines() if " WARNING " in line or " INFO " in line]
    assert logged and not [line for line in logged if token in line], logged
