"""Accounts (issue 14): REGISTER and NickServ, SASL PLAIN, SCRAM-SHA-256 and EXTERNAL with
their framing and numerics, PASS account:password, nick protection, account-notify,
account-tag, extended-join, WHOIS 330 and WHOX %a, failed-login limits, private history,
and accounts kept across a restart. Real servers on 127.0.0.1, raw sockets."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import scramp
import trustme
from helpers import HOST, TIMEOUT, Client, make_config, wait_for

from ircish import accounts as accounts_module
from ircish import passwords
from ircish import protocol as p
from ircish.accounts import CHANGES_PER_MINUTE, Accounts, LoginLimiter, Throttled
from ircish.config import AccountsConfig, StoreConfig, TlsConfig
from ircish.protocol import parse
from ircish.sasl import CHUNK, Assembler, SaslError, encode_response
from ircish.server import Server

PASSWORD = "open sesame"
Start = Callable[..., Server]


def open_client(server: Server, clients: list[Client], source: str | None = None) -> Client:
    client = Client(server.address, source=source)
    clients.append(client)
    return client


def gone(server: Server, nick: str) -> None:
    """Wait until the server has let `nick` go (a closed client's reader thread ends)."""
    wait_for(lambda: server.world.find_user(nick) is None)


def registered(server: Server, clients: list[Client], nick: str, caps: str = "") -> Client:
    """A client registered as `nick` that has made the account `nick` (and is in it)."""
    client = open_client(server, clients)
    if caps:
        client.send(f"CAP REQ :{caps}")
        client.send("CAP END")
    client.register(nick)
    client.send(f"PRIVMSG NickServ :REGISTER {PASSWORD}")
    client.expect(rf" 900 {nick} ")
    client.sync()
    return client


def sasl_client(server: Server, clients: list[Client], nick: str, source: str | None = None):
    client = open_client(server, clients, source)
    client.send("CAP LS 302")
    client.send("CAP REQ :sasl")
    client.send_registration(nick)
    client.expect(r" CAP \S+ ACK :sasl")
    return client


def plain(account: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{account}\0{password}".encode()).decode()


def finish(client: Client) -> list[str]:
    client.send("CAP END")
    return client.collect_until(r" 376 | 422 ")


# -- REGISTER (draft/account-registration) -----------------------------------------------


def test_register_before_connecting_logs_in_and_keeps_the_nick(server, clients) -> None:
    client = open_client(server, clients)
    client.send("CAP LS 302")
    client.send("CAP REQ :draft/account-registration")
    client.send("NICK alice")
    client.send(f"REGISTER * * :{PASSWORD}")
    client.expect(r" 900 alice \S+ alice :You are now logged in as alice")
    client.expect(r"^:\S+ REGISTER SUCCESS alice :")
    client.send("USER a 0 * :A")
    lines = finish(client)
    assert not any("NickServ" in line for line in lines)  # its own nick: no warning
    assert server.world.accounts.get("ALICE").name == "alice"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("REGISTER bob * :open sesame", "ACCOUNT_NAME_MUST_BE_NICK"),
        ("REGISTER * * :short", "WEAK_PASSWORD"),
        ("REGISTER * not-an-email :open sesame", "INVALID_EMAIL"),
        ("REGISTER NickServ * :open sesame", "BAD_ACCOUNT_NAME"),
    ],
)
def test_register_refusals(server, clients, line, code) -> None:
    client = open_client(server, clients)
    client.register("carol")
    client.send(line)
    client.expect(rf"^:\S+ FAIL REGISTER {code} \S+ :")
    assert server.world.accounts.count() == 0


def test_register_an_account_that_exists_or_a_nick_someone_holds(server, clients) -> None:
    registered(server, clients, "alice")
    holder = open_client(server, clients)
    holder.register("root")
    # A second client that asked for `root` cannot register it from under the holder.
    other = open_client(server, clients)
    other.send("NICK root")
    other.send(f"REGISTER * * :{PASSWORD}")
    other.expect(r" FAIL REGISTER ACCOUNT_EXISTS root :")
    other.send("NICK alice")
    other.send(f"REGISTER * * :{PASSWORD}")
    other.expect(r" FAIL REGISTER ACCOUNT_EXISTS alice :")


def test_register_before_connect_can_be_turned_off(start_server, clients) -> None:
    server = start_server(accounts=AccountsConfig(register_before_connect=False))
    client = open_client(server, clients)
    client.send("CAP LS 302")
    line = client.expect(r" CAP \* LS :.*").group(0)
    offered = line.split(" LS :", 1)[1].split()
    assert "draft/account-registration" in offered  # offered, without before-connect
    client.send("NICK bar")
    client.send(f"REGISTER * * :{PASSWORD}")
    client.expect(r" FAIL REGISTER COMPLETE_CONNECTION_REQUIRED \S+ :")


def test_closed_and_operator_only_registration(start_server, clients) -> None:
    closed = start_server(accounts=AccountsConfig(registration="closed"))
    client = open_client(closed, clients)
    client.send("CAP LS 302")
    assert "draft/account-registration" not in client.expect(r" CAP \* LS :.*").group(0)
    client.send("CAP END")
    client.register("dave")
    client.send(f"REGISTER * * :{PASSWORD}")
    client.expect(r" FAIL REGISTER TEMPORARILY_UNAVAILABLE dave :Registration is closed")

    from helpers import OPER_PASSWORD, oper_config

    config = dataclasses.replace(oper_config(), accounts=AccountsConfig(registration="operators"))
    server = start_server(config)
    user = open_client(server, clients)
    user.register("erin")
    user.send(f"PRIVMSG NickServ :REGISTER {PASSWORD}")
    user.expect(r"NickServ\S* NOTICE erin :Registration is closed here; a server operator")
    oper = open_client(server, clients)
    oper.register("boss")
    oper.send(f"OPER root :{OPER_PASSWORD}")
    oper.expect(" 381 ")
    oper.send(f"REGISTER erin * :{PASSWORD}")  # for someone else: the operator stays as is
    oper.expect(r" REGISTER SUCCESS erin :")
    assert server.world.find_user("boss").account is None
    user.send(f"PRIVMSG NickServ :IDENTIFY {PASSWORD}")
    user.expect(r" 900 erin \S+ erin ")


# -- SASL -----------------------------------------------------------------------------------


def test_sasl_plain_logs_in_before_welcome(server, clients) -> None:
    registered(server, clients, "alice").close()
    gone(server, "alice")
    client = sasl_client(server, clients, "alice")
    client.send("AUTHENTICATE PLAIN")
    client.expect(r"^AUTHENTICATE \+$|^:\S+ AUTHENTICATE \+$")
    client.send(f"AUTHENTICATE {plain('alice', PASSWORD)}")
    client.expect(r" 900 alice alice!u@127\.0\.0\.1 alice :You are now logged in as alice")
    client.expect(r" 903 alice :SASL authentication successful")
    lines = finish(client)
    assert not any("NickServ" in line for line in lines)
    client.send("AUTHENTICATE PLAIN")
    client.expect(r" 907 alice :")


@pytest.mark.parametrize("account", ["alice", "nobody"])
def test_sasl_plain_wrong_password_or_unknown_account_fail_alike(server, clients, account):
    registered(server, clients, "alice")
    client = sasl_client(server, clients, "guest")
    client.send("AUTHENTICATE PLAIN")
    client.expect(r"AUTHENTICATE \+")
    client.send(f"AUTHENTICATE {plain(account, 'wrong password')}")
    line = client.expect(r" 904 guest :(.*)").group(1)
    assert line == "SASL authentication failed: Invalid account name or password"
    finish(client)
    assert server.world.find_user("guest").account is None


def test_sasl_plain_with_someone_elses_authzid_fails(server, clients) -> None:
    registered(server, clients, "alice")
    client = sasl_client(server, clients, "guest")
    client.send("AUTHENTICATE PLAIN")
    client.expect(r"AUTHENTICATE \+")
    client.send(f"AUTHENTICATE {plain('alice', PASSWORD, authzid='bob')}")
    client.expect(r" 904 guest :")


def _scram(client: Client, account: str, password: str) -> scramp.ScramClient:
    scram = scramp.ScramClient(["SCRAM-SHA-256"], account, password)
    client.send("AUTHENTICATE SCRAM-SHA-256")
    client.expect(r"AUTHENTICATE \+")
    client.send("AUTHENTICATE " + base64.b64encode(scram.get_client_first().encode()).decode())
    first = client.expect(r"AUTHENTICATE (\S+)$").group(1)
    scram.set_server_first(base64.b64decode(first).decode())
    client.send("AUTHENTICATE " + base64.b64encode(scram.get_client_final().encode()).decode())
    return scram


def test_sasl_scram_sha_256(server, clients) -> None:
    registered(server, clients, "alice").close()
    gone(server, "alice")
    client = sasl_client(server, clients, "alice")
    scram = _scram(client, "alice", PASSWORD)
    final = client.expect(r"AUTHENTICATE (\S+)$").group(1)
    scram.set_server_final(base64.b64decode(final).decode())  # raises if the server lies
    client.send("AUTHENTICATE +")
    client.expect(r" 900 alice \S+ alice ")
    client.expect(r" 903 alice ")


@pytest.mark.parametrize("account", ["alice", "nobody"])
def test_sasl_scram_wrong_password_or_unknown_account(server, clients, account) -> None:
    registered(server, clients, "alice")
    client = sasl_client(server, clients, "guest")
    _scram(client, account, "wrong password")
    client.expect(r" 904 guest :SASL authentication failed: Invalid account name or password$")
    finish(client)
    assert server.world.find_user("guest").account is None


def test_sasl_chunks_of_400_bytes_and_a_final_plus(server, clients) -> None:
    long_password = "p" * 293  # NUL alice NUL ...: a payload of exactly 400 base64 bytes
    client = open_client(server, clients)
    client.register("alice")
    client.send(f"PRIVMSG NickServ :REGISTER {long_password}")
    client.expect(" 900 ")
    client.close()
    gone(server, "alice")
    payload = plain("alice", long_password)
    assert len(payload) == CHUNK
    client = sasl_client(server, clients, "alice")
    client.send("AUTHENTICATE PLAIN")
    client.expect(r"AUTHENTICATE \+")
    client.send(f"AUTHENTICATE {payload}")
    assert not any(" 90" in line for line in client.sync())  # waiting for the rest
    client.send("AUTHENTICATE +")
    client.expect(r" 903 alice ")

    longer = "q" * 400
    client = open_client(server, clients)
    client.register("bob")
    client.send(f"PRIVMSG NickServ :REGISTER {longer}")
    client.expect(" 900 ")
    client.close()
    gone(server, "bob")
    client = sasl_client(server, clients, "bob")
    client.send("AUTHENTICATE PLAIN")
    client.expect(r"AUTHENTICATE \+")
    for chunk in encode_response(f"\0bob\0{longer}".encode()):
        client.send(f"AUTHENTICATE {chunk}")
    client.expect(r" 903 bob ")


def test_sasl_abort_too_long_and_unknown_mechanism(server, clients) -> None:
    client = sasl_client(server, clients, "guest")
    client.send("AUTHENTICATE PLAIN")
    client.expect(r"AUTHENTICATE \+")
    client.send("AUTHENTICATE *")
    client.expect(r" 906 guest :SASL authentication aborted")
    client.send("AUTHENTICATE PLAIN")
    client.expect(r"AUTHENTICATE \+")
    client.send("AUTHENTICATE " + "A" * 401)
    client.expect(r" 905 guest :")
    client.send("AUTHENTICATE PLAIN")
    client.expect(r"AUTHENTICATE \+")
    client.send("AUTHENTICATE !!!notbase64")
    client.expect(r" 904 guest :SASL message is not valid base64")
    client.send("AUTHENTICATE DIGEST-MD5")
    client.expect(r" 908 guest PLAIN,SCRAM-SHA-256 :are available SASL mechanisms")
    client.expect(r" 904 guest :")
    finish(client)  # and the connection goes on


def test_authenticate_without_the_cap_is_refused(server, clients) -> None:
    client = open_client(server, clients)
    client.register("guest")
    client.send("AUTHENTICATE PLAIN")
    client.expect(r" 904 guest :Request the sasl capability first")


def test_pass_account_password_logs_in(server, clients) -> None:
    registered(server, clients, "alice").close()
    gone(server, "alice")
    client = open_client(server, clients)
    client.send(f"PASS :alice:{PASSWORD}")
    client.register("alice")
    assert server.world.find_user("alice").account == "alice"
    wrong = open_client(server, clients)
    wrong.send("PASS alice:nope")
    wrong.send_registration("bob")
    lines = wrong.collect_until(r" 376 | 422 ")
    assert any("NOTICE bob :PASS login failed: Invalid account name" in line for line in lines)
    assert server.world.find_user("bob").account is None


# -- EXTERNAL ---------------------------------------------------------------------------------


def test_sasl_external_with_a_client_certificate(start_server, clients, tmp_path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert(HOST)
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    for blob in issued.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    client_cert = ca.issue_cert("alice@example.org")
    tls = TlsConfig(cert=str(cert), key=str(key), port=0, client_ca=str(ca_file))
    server = start_server(dataclasses.replace(make_config(), tls=tls))

    def tls_client(with_cert: bool) -> Client:
        context = ssl.create_default_context(cafile=str(ca_file))
        if with_cert:
            client_cert.configure_cert(context)
        sock = context.wrap_socket(
            socket.create_connection(server.tls_address, timeout=TIMEOUT), server_hostname=HOST
        )
        client = Client.__new__(Client)
        client.sock, client.nick, client.buffer, client.lines = sock, None, b"", []
        clients.append(client)
        return client

    der = ssl.PEM_cert_to_DER_cert(client_cert.cert_chain_pems[0].bytes().decode())
    import hashlib

    fingerprint = hashlib.sha256(der).hexdigest()
    owner = tls_client(with_cert=True)
    owner.send("CAP LS 302")
    assert "sasl=PLAIN,SCRAM-SHA-256,EXTERNAL" in owner.expect(r" CAP \* LS :.*").group(0)
    owner.send("CAP END")
    owner.register("alice")
    owner.send(f"PRIVMSG NickServ :REGISTER {PASSWORD}")
    owner.expect(" 900 ")
    owner.send("PRIVMSG NickServ :CERT ADD")
    owner.expect(rf"NOTICE alice :Certificate {fingerprint} added to alice")
    owner.close()
    gone(server, "alice")

    again = tls_client(with_cert=True)
    again.send("CAP REQ :sasl")
    again.send_registration("alice")
    again.send("AUTHENTICATE EXTERNAL")
    again.expect(r"AUTHENTICATE \+")
    again.send("AUTHENTICATE +")
    again.expect(r" 900 alice \S+ alice ")
    again.expect(r" 903 alice ")

    bare = tls_client(with_cert=False)
    bare.send("CAP REQ :sasl")
    bare.send_registration("bob")
    bare.send("AUTHENTICATE EXTERNAL")
    bare.expect(r"AUTHENTICATE \+")
    bare.send("AUTHENTICATE +")
    bare.expect(r" 904 bob :SASL authentication failed: no client certificate was given")


# -- NickServ ---------------------------------------------------------------------------------


def test_nickserv_identify_info_set_password_logout_and_drop(server, clients) -> None:
    alice = registered(server, clients, "alice")
    alice.send("PRIVMSG NickServ :LOGOUT")
    alice.expect(r" 901 alice \S+ :You are now logged out")
    alice.expect(r"NickServ\S* NOTICE alice :The nick alice belongs to a registered account")
    alice.send("PRIVMSG NickServ :IDENTIFY wrong")
    alice.expect(r"NickServ\S* NOTICE alice :Invalid account name or password")
    alice.send(f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}")
    alice.expect(r" 900 alice \S+ alice ")
    alice.send("NS INFO")
    alice.expect(r"NOTICE alice :Account alice: registered \d{4}-")
    alice.expect(r"NOTICE alice :  logged in now as: alice")
    alice.send("PRIVMSG NickServ :SET PASSWORD a new password")
    alice.expect(r"NOTICE alice :Password changed")
    bob = open_client(server, clients)
    bob.register("bob")
    bob.send("PRIVMSG NickServ :IDENTIFY alice a new password")
    bob.expect(r" 900 bob \S+ alice ")
    bob.send("PRIVMSG NickServ :DROP alice")
    bob.expect(r"NOTICE bob :Account alice dropped")
    assert server.world.accounts.get("alice") is None
    wait_for(lambda: server.world.find_user("alice").account is None)
    bob.send("PRIVMSG NickServ :FROB")
    bob.expect(r"NickServ\S* NOTICE bob :NickServ commands:")


def test_nobody_takes_a_services_nick(server, clients) -> None:
    client = open_client(server, clients)
    client.register("carol")
    client.send("NICK NickServ")
    client.expect(r" 433 carol NickServ :Nickname is reserved for services")


# -- nick protection --------------------------------------------------------------------------


def test_a_registered_nick_taken_without_login_is_renamed(start_server, clients) -> None:
    server = start_server(accounts=AccountsConfig(nick_grace="1s"))
    registered(server, clients, "alice").close()
    gone(server, "alice")
    squatter = open_client(server, clients)
    squatter.register("alice")
    squatter.expect(r"NickServ\S* NOTICE alice :The nick alice belongs to a registered account")
    renamed = squatter.expect(r"^:alice!\S+ NICK (Guest\d+)$").group(1)
    squatter.expect(
        rf"NOTICE {renamed} :alice belongs to a registered account, so you are now {renamed}"
    )
    # Not again on this connection: no new grace period for a second try.
    squatter.send("NICK alice")
    squatter.expect(rf" 433 {renamed} alice :Nickname is reserved for its account")
    # Logging in within the grace period keeps the nick.
    keeper = open_client(server, clients)
    keeper.register("alice")
    keeper.send(f"PRIVMSG NickServ :IDENTIFY {PASSWORD}")
    keeper.expect(" 900 alice ")
    time.sleep(1.5)
    assert server.world.find_user("alice") is not None
    assert not any(" NICK Guest" in line for line in keeper.sync())


def test_account_tag_notify_extended_join_whois_and_whox(server, clients) -> None:
    watcher = open_client(server, clients)
    watcher.send("CAP REQ :account-notify account-tag extended-join message-tags")
    watcher.send("CAP END")
    watcher.register("watcher")
    watcher.join("#room")
    bob = open_client(server, clients)
    bob.register("bob")
    bob.join("#room")
    bob.send(f"PRIVMSG NickServ :REGISTER {PASSWORD}")
    watcher.expect(r":bob!\S+ ACCOUNT bob$")
    bob.send("PRIVMSG #room :hello")
    watcher.expect(r"account=bob[;\s].*:bob!\S+ PRIVMSG #room :hello$")
    bob.send("PART #room")
    bob.send("JOIN #room")
    watcher.expect(r":bob!\S+ JOIN #room bob :Real Name$")
    watcher.send("WHOIS bob")
    watcher.expect(r" 330 watcher bob bob :is logged in as")
    watcher.send("WHO bob %na")
    watcher.expect(r" 354 watcher bob :?bob$")
    bob.send("PRIVMSG NickServ :LOGOUT")
    watcher.expect(r":bob!\S+ ACCOUNT \*$")
    plain_client = open_client(server, clients)
    plain_client.register("plainly")
    plain_client.join("#room")
    bob.send("PRIVMSG #room :tags?")
    line = plain_client.expect(r"PRIVMSG #room :tags\?$").string
    assert line.startswith(":bob!")  # no tags for a client that asked for none


# -- failed logins ----------------------------------------------------------------------------


def test_failed_logins_are_limited_per_address_and_nobody_else_waits(start_server, clients) -> None:
    server = start_server(
        accounts=AccountsConfig(failed_logins_per_minute=3), flood_rate=4.0, flood_burst=20
    )
    registered(server, clients, "alice").close()
    gone(server, "alice")
    flooder = sasl_client(server, clients, "flood")
    refusals = []
    for _ in range(6):
        flooder.send("AUTHENTICATE PLAIN")
        answer = flooder.expect(r"AUTHENTICATE \+$| 904 flood :(.*)")
        if answer.group(1) is None:  # a password is checked
            flooder.send(f"AUTHENTICATE {plain('alice', 'guess')}")
            answer = flooder.expect(r" 904 flood :(.*)")
        refusals.append(answer.group(1))
    assert refusals[:3] == ["SASL authentication failed: Invalid account name or password"] * 3
    assert all("too many failed logins" in text.lower() for text in refusals[3:])
    # The owner, from another address, logs in at once: one address cannot lock them out.
    owner = sasl_client(server, clients, "alice", source="127.0.0.2")
    started = time.monotonic()
    owner.send("AUTHENTICATE PLAIN")
    owner.expect(r"AUTHENTICATE \+")
    owner.send(f"AUTHENTICATE {plain('alice', PASSWORD)}")
    owner.expect(r" 903 alice ")
    assert time.monotonic() - started < TIMEOUT


def test_login_limiter_forgets_after_a_minute() -> None:
    now = [1000.0]
    limiter = LoginLimiter(2, clock=lambda: now[0])
    for _ in range(2):
        assert limiter.wait("1.2.3.4", "alice") == 0
        limiter.failed("1.2.3.4", "alice")
    assert limiter.wait("1.2.3.4", "alice") == pytest.approx(60.0)
    assert limiter.wait("5.6.7.8", "alice") == 0  # the account's budget is larger
    now[0] += 61
    assert limiter.wait("1.2.3.4", "alice") == 0


def test_an_unknown_account_costs_a_password_check_too() -> None:
    accounts = Accounts()
    assert accounts.check_password("nobody", "x") is None
    assert accounts._decoy is not None  # a real scrypt check ran, as for a known name


def test_sasl_framing_units() -> None:
    assert encode_response(b"") == ["+"]
    assert encode_response(b"x" * 300) == [base64.b64encode(b"x" * 300).decode(), "+"]
    assembler = Assembler()
    assert assembler.add("A" * CHUNK) is None
    assert assembler.add("+") == base64.b64decode("A" * CHUNK)
    with pytest.raises(SaslError):
        Assembler().add("B" * (CHUNK + 1))


# -- private history ---------------------------------------------------------------------------

HISTORY_CAPS = "draft/chathistory batch server-time message-tags"


def test_private_typing_is_not_kept_but_a_reaction_is(server, clients) -> None:
    alice = registered(server, clients, "alice", HISTORY_CAPS + " draft/event-playback")
    bob = registered(server, clients, "bob", HISTORY_CAPS)
    alice.send("@+typing=active TAGMSG bob")
    bob.expect(r"^@\S*\+typing=active\S* :alice!\S+ TAGMSG bob$")
    alice.send("@+draft/react=yes TAGMSG bob")
    bob.expect(r"^@\S*\+draft/react=yes\S* :alice!\S+ TAGMSG bob$")
    alice.send("CHATHISTORY LATEST bob * 10")
    kept = [parse(line) for line in alice.collect_until(r"BATCH -") if " TAGMSG " in line]
    assert [msg.tags.get("+draft/react") for msg in kept] == ["yes"]


def test_private_history_between_accounts(server, clients) -> None:
    alice = registered(server, clients, "alice", HISTORY_CAPS)
    bob = registered(server, clients, "bob", HISTORY_CAPS)
    stranger = open_client(server, clients)
    stranger.register("stranger")
    alice.send("PRIVMSG bob :secret plans")
    bob.expect("PRIVMSG bob :secret plans")
    stranger.send("PRIVMSG bob :for bob only")
    bob.expect("PRIVMSG bob :for bob only")
    bob.send("CHATHISTORY LATEST alice * 10")
    lines = bob.collect_until(r"BATCH -")
    said = [parse(line) for line in lines if " PRIVMSG " in line]
    assert [msg.params[1] for msg in said] == ["secret plans"]
    assert said[0].tags["msgid"] and said[0].tags["time"]
    # Kept for bob, who is logged in (as ergo does); the stranger, who is not, reads
    # nothing, and whoever registers `stranger` later reads nothing of it either.
    bob.send("CHATHISTORY LATEST stranger * 10")
    kept = [line for line in bob.collect_until(r"BATCH -") if " PRIVMSG " in line]
    assert [parse(line).params[1] for line in kept] == ["for bob only"]
    stranger.send("CAP REQ :draft/chathistory batch")
    stranger.send("CHATHISTORY LATEST bob * 10")
    assert not [line for line in stranger.collect_until(r"BATCH -") if " PRIVMSG " in line]
    stranger.send(f"PRIVMSG NickServ :REGISTER {PASSWORD}")
    stranger.expect(" 900 stranger ")
    stranger.send("CHATHISTORY LATEST bob * 10")
    assert not [line for line in stranger.collect_until(r"BATCH -") if " PRIVMSG " in line]
    bob.send(
        "CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z "
        "timestamp=2100-01-01T00:00:00.000Z 10"
    )
    targets = bob.collect_until(r"BATCH -")
    assert any(re.search(r"CHATHISTORY TARGETS alice \S+Z$", line) for line in targets)


def test_messages_to_an_account_offline_are_shown_at_its_next_login(server, clients) -> None:
    alice = registered(server, clients, "alice")
    bob = registered(server, clients, "bob")
    alice.send("QUIT :bye")
    wait_for(lambda: server.world.find_user("alice") is None)
    bob.send("PRIVMSG alice :are you there?")
    bob.expect(r"NOTICE bob :alice is not online; they will see it when they log in")
    back = sasl_client(server, clients, "alice")
    back.send("AUTHENTICATE PLAIN")
    back.expect(r"AUTHENTICATE \+")
    back.send(f"AUTHENTICATE {plain('alice', PASSWORD)}")
    back.expect(" 903 ")
    lines = finish(client=back) + back.sync()
    text = "\n".join(lines)
    assert "-- 1 private message while you were away --" in text
    assert re.search(r":bob!\S+ PRIVMSG alice :\[\d\d:\d\d UTC\] are you there\?", text)
    # Someone not logged in cannot leave messages: nothing is kept of them.
    back.send("QUIT")
    wait_for(lambda: server.world.find_user("alice") is None)
    stranger = open_client(server, clients)
    stranger.register("stranger")
    stranger.send("PRIVMSG alice :hello?")
    stranger.expect(r" 401 stranger alice :No such nick")


# -- what a restart keeps -------------------------------------------------------------------------


def test_accounts_survive_a_restart(start_server, clients, tmp_path: Path) -> None:
    store = StoreConfig(path=str(tmp_path / "ircish.db"), flush_ms=10)
    server = start_server(store=store)
    registered(server, clients, "alice").close()
    gone(server, "alice")
    assert server.writer is not None and server.writer.flush(TIMEOUT)
    server.shutdown(timeout=2.0)
    again = start_server(store=store)
    client = sasl_client(again, clients, "alice")
    _scram(client, "alice", PASSWORD)  # SCRAM keys were kept, not only the hash
    client.expect(r"AUTHENTICATE (\S+)$")
    client.send("AUTHENTICATE +")
    client.expect(r" 903 alice ")
    assert p.RPL_SASLSUCCESS == "903"


def test_history_lines_keep_the_account_they_were_said_from(server, clients) -> None:
    alice = registered(server, clients, "alice")
    alice.join("#room")
    alice.send("PRIVMSG #room :said while logged in")
    alice.sync()
    reader = open_client(server, clients)
    reader.send("CAP REQ :account-tag message-tags batch draft/chathistory")
    reader.send("CAP END")
    reader.register("reader")
    reader.join("#room")
    reader.send("CHATHISTORY LATEST #room * 10")
    line = reader.expect(r"PRIVMSG #room :said while logged in$").string
    assert parse(line).tags["account"] == "alice"


# -- what the review found (issue 14) ------------------------------------------------------------


@contextlib.contextmanager
def scrypt_busy() -> Iterator[None]:
    """Hold both password-check slots: a login's scrypt waits until the block ends, so a
    test can act while a password is being checked."""
    slots = passwords._scrypt_slots
    slots.acquire()
    slots.acquire()
    try:
        yield
    finally:
        slots.release()
        slots.release()


def test_a_login_that_a_drop_overtakes_is_refused(server, clients) -> None:
    owner = registered(server, clients, "alice")
    other = open_client(server, clients)
    other.register("bob")
    with scrypt_busy():
        other.send(f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}")
        time.sleep(0.2)  # bob's password check waits for a slot
        owner.send("PRIVMSG NickServ :DROP alice")
        owner.expect(r"NOTICE alice :Account alice dropped")
        owner.expect(r" 901 alice \S+ :You are now logged out: alice was dropped")
    other.expect(r"NickServ\S* NOTICE bob :Invalid account name or password")
    assert server.world.find_user("bob").account is None
    # Whoever registers the name next owns it alone.
    owner.send("NICK alice_was")
    owner.sync()
    heir = registered(server, clients, "alice")
    heir.send("PRIVMSG NickServ :INFO alice")
    heir.expect(r"NOTICE alice :  logged in now as: alice$")


def some_clients(server: Server, clients: list[Client], stem: str, count: int) -> list[Client]:
    """`count` registered clients, nicks `<stem>0`, `<stem>1`, ..."""
    made = []
    for index in range(count):
        client = open_client(server, clients)
        client.register(f"{stem}{index}")
        made.append(client)
    return made


def test_parallel_guesses_count_while_their_password_is_checked(start_server, clients) -> None:
    server = start_server(accounts=AccountsConfig(failed_logins_per_minute=3))
    registered(server, clients, "alice")
    guessers = some_clients(server, clients, "g", 6)
    with scrypt_busy():
        for guesser in guessers:
            guesser.send("PRIVMSG NickServ :IDENTIFY alice wrong password")
        # Three are being checked; the other three wait for them, not for a slot of
        # their own: none is answered while no password has been checked.
        assert not any("NickServ" in line for g in guessers for line in g.quiet(0.1))
    answers = [g.expect(r"Invalid account name|Too many failed logins").group(0) for g in guessers]
    assert sorted(answers) == ["Invalid account name"] * 3 + ["Too many failed logins"] * 3
    assert server.world.accounts.limiter.refusals() == {"invalid": 3, "throttled": 3}


def test_right_passwords_in_parallel_from_one_address_all_get_in(start_server, clients) -> None:
    # More logins at once than the failure budget (a bouncer, a NAT): while their
    # passwords are checked they fill the budget, and the rest wait instead of being
    # refused.
    server = start_server(accounts=AccountsConfig(failed_logins_per_minute=2))
    registered(server, clients, "alice").close()
    users = some_clients(server, clients, "u", 8)
    with scrypt_busy():
        for user in users:
            user.send(f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}")
    for index, user in enumerate(users):
        user.expect(rf" 900 u{index} ")
    assert server.world.accounts.limiter.refusals() == {}


def test_a_login_waiting_for_others_is_refused_once_they_fail() -> None:
    limiter = LoginLimiter(1)
    outcome: list[str] = []

    def second() -> None:
        try:
            with limiter.attempt("1.2.3.4", "alice"):
                outcome.append("checked")
        except Throttled as refusal:
            outcome.append(f"throttled {refusal.wait:.0f}")

    with limiter.attempt("1.2.3.4", "alice"):  # under way: the budget of 1 is taken
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.1)
        assert outcome == []  # it waits
    waiter.join(TIMEOUT)
    assert outcome == ["throttled 60"]  # the first failed: no room for a second guess


def test_a_login_waits_at_most_queue_wait(monkeypatch) -> None:
    monkeypatch.setattr(accounts_module, "QUEUE_WAIT", 0.2)
    limiter = LoginLimiter(1)
    with limiter.attempt("1.2.3.4", None) as first:
        started = time.monotonic()
        with pytest.raises(Throttled), limiter.attempt("1.2.3.4", None):
            pass
        assert 0.2 <= time.monotonic() - started < TIMEOUT
        first.succeeded("alice")
    with limiter.attempt("1.2.3.4", None):  # the first one succeeded: nothing counts
        pass


def told_too_many(guesser: Client, wait: float) -> bool:
    return any("Too many failed logins" in line for line in guesser.quiet(wait))


def test_failures_from_other_addresses_never_keep_the_owner_out(start_server, clients) -> None:
    server = start_server(accounts=AccountsConfig(failed_logins_per_minute=1))
    owner = registered(server, clients, "alice")
    owner.send("PRIVMSG NickServ :LOGOUT")
    owner.send(f"PRIVMSG NickServ :IDENTIFY {PASSWORD}")  # 127.0.0.1 logged in before
    owner.expect(" 900 alice ")
    owner.send("PRIVMSG NickServ :LOGOUT")
    for last in range(2, 6):  # four addresses fill the account's budget of 4
        guesser = open_client(server, clients, source=f"127.0.0.{last}")
        guesser.register(f"g{last}")
        guesser.send("PRIVMSG NickServ :IDENTIFY alice wrong")
        guesser.expect(r"Invalid account name or password")
    stranger = open_client(server, clients, source="127.0.0.9")
    stranger.register("stranger")
    stranger.send(f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}")
    stranger.expect(r"Too many failed logins")
    owner.send(f"PRIVMSG NickServ :IDENTIFY {PASSWORD}")
    owner.expect(" 900 alice ")


def test_regain_takes_the_nick_back_at_once(server, clients) -> None:
    registered(server, clients, "alice").close()
    gone(server, "alice")
    squatter = open_client(server, clients)
    squatter.register("alice")
    owner = open_client(server, clients)
    owner.register("owner")
    owner.send(f"PRIVMSG NickServ :IDENTIFY alice {PASSWORD}")
    owner.expect(" 900 owner ")
    owner.send("PRIVMSG NickServ :REGAIN")
    owner.expect(r"^:owner!\S+ NICK alice$")
    squatter.expect(r"^:alice!\S+ NICK Guest\d+$")
    assert server.world.find_user("alice").account == "alice"


def test_a_message_to_an_account_online_under_another_nick(server, clients) -> None:
    alice = registered(server, clients, "alice")
    alice.send("NICK al")
    alice.expect(r"NICK al$")
    bob = registered(server, clients, "bob")
    bob.send("PRIVMSG alice :hello?")
    bob.expect(r" 401 bob alice :No such nick; the account alice is online as al")


def test_a_conversation_with_a_nick_that_is_now_an_account_stays_apart(server, clients):
    alice = registered(server, clients, "alice", HISTORY_CAPS)
    anon = open_client(server, clients)
    anon.register("bob")
    anon.send("PRIVMSG alice :hi from an anonymous bob")
    alice.expect("anonymous bob")
    anon.close()
    gone(server, "bob")
    registered(server, clients, "bob")  # an account named bob now
    alice.send(
        "CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z "
        "timestamp=2100-01-01T00:00:00.000Z 10"
    )
    assert any(" TARGETS ~bob " in line for line in alice.collect_until(r"BATCH -"))
    alice.send("CHATHISTORY LATEST ~bob * 10")
    assert any("anonymous bob" in line for line in alice.collect_until(r"BATCH -"))
    alice.send("CHATHISTORY LATEST bob * 10")
    assert not any("anonymous bob" in line for line in alice.collect_until(r"BATCH -"))


def test_a_password_that_saslprep_empties_is_weak(server, clients) -> None:
    client = open_client(server, clients)
    client.register("carol")
    client.send("REGISTER * * :" + "\u00ad" * 12)
    client.expect(r" FAIL REGISTER WEAK_PASSWORD carol :Passwords need at least 8")


def test_cap_end_aborts_an_open_sasl_exchange(server, clients) -> None:
    client = sasl_client(server, clients, "guest")
    client.send("AUTHENTICATE PLAIN")
    client.expect(r"AUTHENTICATE \+")
    client.send("CAP END")
    client.expect(r" 906 guest :SASL authentication aborted")
    client.expect(r" 001 guest ")


def test_a_dropped_accounts_conversations_stay_with_the_other_side(server, clients) -> None:
    alice = registered(server, clients, "alice", HISTORY_CAPS)
    bob = registered(server, clients, "bob", HISTORY_CAPS)
    alice.send("PRIVMSG bob :before the drop")
    bob.expect("before the drop")
    alice.send("PRIVMSG NickServ :DROP alice")
    alice.expect(r"Account alice dropped")
    assert server.writer is not None and server.writer.flush(TIMEOUT)
    bob.send("CHATHISTORY LATEST alice * 10")
    assert any("before the drop" in line for line in bob.collect_until(r"BATCH -"))
    alice.send("NICK gone")
    alice.sync()
    heir = registered(server, clients, "alice", HISTORY_CAPS)
    heir.send("CHATHISTORY LATEST bob * 10")
    assert not any("before the drop" in line for line in heir.collect_until(r"BATCH -"))


def test_registrations_from_one_address_are_limited(server, clients) -> None:
    client = open_client(server, clients)
    client.register("maker")
    for index in range(CHANGES_PER_MINUTE):
        client.send(f"NICK maker{index}")
        client.send(f"REGISTER * * :{PASSWORD}")
        client.expect(rf"REGISTER SUCCESS maker{index} ")
        client.send("PRIVMSG NickServ :LOGOUT")
    client.send("NICK maker_last")
    client.send(f"REGISTER * * :{PASSWORD}")
    client.expect(r" FAIL REGISTER TEMPORARILY_UNAVAILABLE maker_last :Too many registrations")
