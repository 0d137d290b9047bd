"""ChanServ (commands/chanserv.py): registering a room, its access lists applied on join,
the topic lock, DROP, RECOVER through a ban and a key, INFO, the refusals and bad input
(always a NOTICE, never a crash), and a registration that outlives a restart."""

from __future__ import annotations

import contextlib
import re
import signal
import sqlite3

import pytest
from helpers import OPER_PASSWORD, Client, oper_config, oper_hash

from ircish.store import MaskState, RoomState, room_from_json, room_json

CS = re.escape(":ChanServ!ChanServ@services")
PASSWORD = "hunter2hunter2"


@pytest.fixture
def server(start_server):
    """A server with one server operator (root) and accounts open to all."""
    return start_server(oper_config())


def says(client: Client, text: str) -> str:
    """Wait for ChanServ's NOTICE to `client` holding `text` (a regex)."""
    return client.expect(rf"^{CS} NOTICE {client.nick} :.*{text}").string


def logged_in(connect, nick: str) -> Client:
    """`nick`, registered and logged in to the account of that name (NickServ REGISTER)."""
    client = connect(nick)
    client.send(f"PRIVMSG NickServ :REGISTER {PASSWORD}")
    client.expect(rf"NOTICE {nick} :Account {nick} registered")
    return client


def account(connect, nick: str) -> None:
    """Make the account `nick`, and leave (the nick is free again once this returns)."""
    client = logged_in(connect, nick)
    client.send("QUIT")
    client.expect_closed()


def registered_room(connect, nick: str, room: str) -> Client:
    """`nick`, logged in, the founder of `room` (which they made and registered)."""
    client = logged_in(connect, nick)
    client.join(room)
    client.send(f"CS REGISTER {room}")
    says(client, f"{room} is registered to {nick}; it is now permanent")
    return client


def test_register_needs_a_login_and_op_and_makes_the_room_permanent(connect):
    anon = connect("anon")
    anon.join("#r")
    anon.send("PRIVMSG ChanServ :REGISTER #r")
    says(anon, "Log in first")
    bob = logged_in(connect, "bob")
    bob.join("#r")
    bob.send("CS REGISTER #r")
    says(bob, "Only an operator of #r may register it")
    alice = logged_in(connect, "alice")
    alice.join("#mine")
    alice.send("PRIVMSG ChanServ :REGISTER #mine")
    alice.expect(rf"^{CS} MODE #mine \+P$")  # the room sees ChanServ make it permanent
    says(alice, "#mine is registered to alice; it is now permanent")
    alice.send("CS REGISTER #mine")
    says(alice, r"#mine is already registered \(founder: alice\)")
    alice.send("PART #mine")
    alice.send("LIST #mine")
    assert any(" 322 alice #mine 0 " in line for line in alice.sync())  # it outlived us


def test_the_founder_and_the_access_lists_get_their_status_on_join(connect):
    alice = registered_room(connect, "alice", "#r")
    bob = logged_in(connect, "bob")
    carol = logged_in(connect, "carol")
    alice.send("CS OP #r ADD bob")
    says(alice, "bob added to the OP list of #r")
    alice.send("CS OP #r ADD bob")
    says(alice, "bob is already on the OP list of #r")
    alice.send("CS VOICE #r ADD Carol")  # any case: the account's own name is kept
    says(alice, "carol added to the VOICE list of #r")
    alice.send("CS VOICE #r ADD nobody")
    says(alice, "nobody is not a registered account")
    bob.join("#r")
    alice.expect(rf"^{CS} MODE #r \+o bob$")
    carol.join("#r")
    alice.expect(rf"^{CS} MODE #r \+v carol$")
    dave = connect("dave")  # not logged in: nothing given
    dave.join("#r")
    assert not [line for line in alice.sync() if "MODE" in line]
    assert sorted(dave.names("#r")) == ["+carol", "@alice", "@bob", "dave"]
    alice.send("PART #r")
    alice.join("#r")  # the founder gets op back from ChanServ
    bob.expect(rf"^{CS} MODE #r \+o alice$")
    alice.send("CS OP #r LIST")
    says(alice, "OP list of #r: bob")
    alice.send("CS VOICE #r LIST")
    says(alice, "VOICE list of #r: carol")
    # An account on the OP list may change the lists too; anyone else may not.
    bob.send("CS VOICE #r ADD dave")
    says(bob, "dave is not a registered account")
    bob.send("CS VOICE #r DEL carol")
    says(bob, "carol removed from the VOICE list of #r")
    bob.send("CS VOICE #r DEL carol")
    says(bob, "carol is not on the VOICE list of #r")
    carol.send("CS OP #r ADD carol")
    says(carol, "Only the founder of #r and accounts on its OP list may change its access lists")
    alice.send("CS OP #r ADD carol")  # an account has one entry: op replaces voice
    says(alice, "carol added")
    alice.send("CS INFO #r")
    lines = alice.collect_until(r"VOICE list: ")
    assert any(re.search(r":#r: founder alice, registered \d{4}-", line) for line in lines)
    assert any(line.endswith(":  topic lock: off") for line in lines)
    assert any(line.endswith(":  OP list: bob, carol") for line in lines)
    assert lines[-1].endswith(":  VOICE list: empty")


def test_up_gives_a_member_who_logged_in_later_their_status(connect):
    alice = registered_room(connect, "alice", "#r")
    account(connect, "bob")  # the account exists; bob is gone
    alice.send("CS OP #r ADD bob")
    says(alice, "bob added")
    bob = connect("bob")
    bob.join("#r")
    bob.send("CS UP #r")
    says(bob, "Nothing more for you in #r")
    bob.send(f"PRIVMSG NickServ :IDENTIFY {PASSWORD}")
    bob.expect("You are now logged in as bob")
    bob.send("CS UP #r")
    alice.expect(rf"^{CS} MODE #r \+o bob$")
    says(bob, r"You get \+o in #r")
    bob.send("CS UP #elsewhere")
    says(bob, "No such room: #elsewhere")


def test_the_topic_lock_keeps_the_topic_for_the_founder_and_the_op_list(connect):
    alice = registered_room(connect, "alice", "#r")
    bob = logged_in(connect, "bob")
    eve = connect("eve")
    alice.send("CS OP #r ADD bob")
    says(alice, "bob added")
    for client in (bob, eve):
        client.join("#r")
    alice.send("MODE #r +o eve")  # an operator, but not on the list
    alice.expect(r"MODE #r \+o eve")
    bob.send("CS SET #r TOPICLOCK ON")
    says(bob, r"Only the founder of #r \(alice\) may change its settings")
    alice.send("CS SET #r TOPICLOCK ON")
    says(alice, "Topic lock of #r is on")
    eve.send("TOPIC #r :mine now")
    eve.expect(
        r" 482 eve #r :The topic is locked \(ChanServ SET TOPICLOCK\): only the founder and "
        "accounts on the room's OP list may change it"
    )
    bob.send("TOPIC #r :kept by the list")
    eve.expect(r"TOPIC #r :kept by the list")
    alice.send("TOPIC #r :and by the founder")
    eve.expect(r"TOPIC #r :and by the founder")
    alice.send("CS SET #r TOPICLOCK OFF")
    says(alice, "Topic lock of #r is off")
    eve.send("TOPIC #r :free again")
    alice.expect(r"TOPIC #r :free again")


def test_drop_is_the_founders_or_a_server_operators_and_ends_an_empty_room(connect):
    alice = registered_room(connect, "alice", "#r")
    bob = logged_in(connect, "bob")
    bob.join("#r")
    bob.send("CS DROP #r")
    says(bob, r"Only the founder of #r \(alice\) may drop it")
    root = connect("root")
    root.send(f"OPER root :{OPER_PASSWORD}")
    root.expect(" 381 ")
    root.send("MODE #r -P")  # ChanServ keeps it permanent while registered
    root.expect(r" 482 root #r :The room is registered with ChanServ, which keeps it permanent")
    alice.send("CS DROP #r")
    bob.expect(rf"^{CS} MODE #r -P$")
    says(alice, "#r is no longer registered, nor permanent")
    alice.send("CS INFO #r")
    says(alice, "#r is not registered with ChanServ")
    alice.send("CS DROP #r")
    says(alice, "#r is not registered with ChanServ")
    # A server operator may drop anyone's room; once empty, it is gone.
    alice.send("CS REGISTER #r")
    says(alice, "#r is registered to alice")
    for client in (alice, bob):
        client.send("PART #r")
        client.expect(rf"^:{client.nick}!\S+ PART #r")
    root.send("CS DROP #r")
    says(root, "#r is no longer registered")
    root.send("CS INFO #r")
    says(root, "No such room: #r")


def test_the_founder_recovers_the_room_through_a_ban_a_key_a_limit_and_invite_only(connect):
    alice = registered_room(connect, "alice", "#r")
    account(connect, "bob")
    alice.send("CS OP #r ADD bob")
    says(alice, "bob added")
    bob = connect("bob")
    bob.send(f"PRIVMSG NickServ :IDENTIFY {PASSWORD}")
    bob.expect("You are now logged in as bob")
    bob.join("#r")
    bob.send("MODE #r -o+b alice alice!*@*")
    alice.expect(r"MODE #r -o\+b alice alice!\*@\*")
    alice.send("CS RECOVER #r")
    bob.expect(rf"^{CS} MODE #r -b\+o alice!\*@\* alice$")
    says(alice, r"Bans lifted in #r: alice!\*@\*")
    says(alice, "You are an operator of #r")
    alice.send("PART #r")
    bob.send("MODE #r +bkil alice sesame 1")
    bob.expect(r"MODE #r \+bkil alice!\*@\* sesame 1")
    carol = connect("carol")
    carol.send("JOIN #r sesame")
    carol.expect(" 473 carol #r ")  # invite only (and full, and keyed) for others
    alice.send("JOIN #r")  # no key, banned, full, not invited: still in
    alice.expect(r" 366 alice #r ")
    bob.expect(rf"^{CS} MODE #r \+o alice$")
    alice.send("CS RECOVER #r")
    bob.expect(rf"^{CS} MODE #r -b alice!\*@\*$")
    bob.send("CS RECOVER #r")
    says(bob, r"Only the founder of #r \(alice\) may recover it")
    alice.send("PART #r")
    alice.send("CS RECOVER #r")
    says(alice, "Join #r: as its founder you pass its bans, key, limit and \\+i")


def test_a_secret_rooms_registration_is_its_members_alone(connect):
    alice = registered_room(connect, "alice", "#hidden")
    alice.send("MODE #hidden +s")
    alice.expect(r"MODE #hidden \+s")
    bob = logged_in(connect, "bob")
    bob.send("CS INFO #hidden")
    says(bob, "You're not in that room")
    bob.send("CS OP #hidden LIST")
    says(bob, "You're not in that room")


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("CS", "ChanServ commands:"),
        ("CS HELP", "ChanServ commands:"),
        ("PRIVMSG ChanServ :help", "ChanServ commands:"),
        ("CS FROB #r", "Unknown command FROB; the commands are:"),
        ("CS REGISTER", r"Usage: REGISTER <#room>"),
        ("CS REGISTER r", r"Usage: REGISTER <#room>"),
        ("CS REGISTER #nowhere", "No such room: #nowhere"),
        ("CS INFO", r"Usage: INFO <#room>"),
        ("CS OP", r"Usage: OP <#room> ADD\|DEL <account> \| OP <#room> LIST"),
        ("CS OP #r", r"Usage: OP <#room> ADD"),
        ("CS VOICE #r FROB x", r"Usage: VOICE <#room> ADD"),
        ("CS OP #r ADD", r"Usage: OP <#room> ADD"),
        ("CS OP #r ADD a b", r"Usage: OP <#room> ADD"),
        ("CS SET #r", r"Usage: SET <#room> TOPICLOCK ON\|OFF"),
        ("CS SET #r TOPICLOCK maybe", r"Usage: SET <#room> TOPICLOCK ON\|OFF"),
        ("CS SET #r COLOR red", r"Usage: SET <#room> TOPICLOCK ON\|OFF"),
        ("CS RECOVER #nowhere", "No such room: #nowhere"),
        ("CS OP #unregistered LIST", "#unregistered is not registered with ChanServ"),
        ("CS INFO #unregistered", "#unregistered is not registered with ChanServ"),
        ("CS RECOVER #unregistered", "#unregistered is not registered with ChanServ"),
        ("CS SET #unregistered TOPICLOCK ON", "#unregistered is not registered with ChanServ"),
        ("CS UP #unregistered", "#unregistered is not registered with ChanServ"),
        ("CS DROP #unregistered", "#unregistered is not registered with ChanServ"),
    ],
)
def test_bad_input_gets_a_clear_notice(connect, line, answer):
    alice = registered_room(connect, "alice", "#r")
    alice.join("#unregistered")
    alice.send(line)
    says(alice, answer)
    alice.sync()  # the connection goes on


def test_a_notice_to_chanserv_is_dropped(connect):
    alice = connect("alice")
    alice.send("NOTICE ChanServ :HELP")
    assert alice.sync() == []


def test_the_room_state_round_trips_through_the_stores_json():
    state = RoomState(
        "#r",
        flags="Pnt",
        lists={"b": (MaskState("x!*@*", "alice", 1),)},
        founder="Alice",
        registered=1_700_000_000,
        access={"bob": "o", "Carol": "v"},
        topic_lock=True,
    )
    assert room_from_json(room_json(state)) == state
    older = room_json(state)
    for key in ("founder", "registered", "access", "topic_lock"):
        del older[key]  # a room kept before ChanServ: not registered
    assert room_from_json(older) == RoomState("#r", flags="Pnt", lists=state.lists)
    with pytest.raises(TypeError):
        room_from_json({**room_json(state), "access": ["bob"]})


def store_config(db) -> str:
    return (
        f"store:\n  path: '{db}'\n  flush_ms: 50\nlimits:\n  flood_rate: 0\n"
        f"operators:\n  - name: root\n    password: '{oper_hash()}'\n"
    )


def test_a_registration_survives_a_restart(tmp_path, server_process):
    db = tmp_path / "ircish.db"
    first = server_process(store_config(db))
    opened: list[Client] = []

    def client(address, nick: str, password: str | None = None) -> Client:
        c = Client(address)
        opened.append(c)
        c.register(nick)
        if password is not None:
            c.send(f"PRIVMSG NickServ :IDENTIFY {password}")
            c.expect(f"You are now logged in as {nick}")
        return c

    try:
        connect = lambda nick: client(first.address, nick)  # noqa: E731
        alice = registered_room(connect, "alice", "#keep")
        account(connect, "bob")
        alice.send("CS OP #keep ADD bob")
        says(alice, "bob added")
        alice.send("CS SET #keep TOPICLOCK ON")
        says(alice, "Topic lock of #keep is on")
        alice.send("MODE #keep +k sesame")
        alice.expect(r"MODE #keep \+k sesame")
        alice.send("QUIT")
        alice.expect_closed()
        assert first.stop(signal.SIGTERM) == 0

        second = server_process(store_config(db))
        eve = client(second.address, "eve")
        eve.send("JOIN #keep")
        eve.expect(" 475 eve #keep ")  # still keyed, and there: it is permanent
        alice = client(second.address, "alice", PASSWORD)
        alice.send("JOIN #keep")  # the founder needs no key
        alice.expect(rf"^{CS} MODE #keep \+o alice$")
        bob = client(second.address, "bob", PASSWORD)
        bob.send("JOIN #keep sesame")
        alice.expect(rf"^{CS} MODE #keep \+o bob$")
        eve.send("JOIN #keep sesame")
        eve.expect(r" 366 eve #keep ")
        alice.send("MODE #keep +o eve")
        eve.expect(r"MODE #keep \+o eve")
        eve.send("TOPIC #keep :eve's")
        eve.expect(r" 482 eve #keep :The topic is locked")
        alice.send("CS INFO #keep")
        lines = alice.collect_until("VOICE list")
        assert any("#keep: founder alice, registered" in line for line in lines)
        assert any(line.endswith("topic lock: on") for line in lines)
        assert any(line.endswith("OP list: bob") for line in lines)
        alice.send("CS DROP #keep")
        says(alice, "#keep is no longer registered")
        for c in (alice, bob, eve):
            c.send("QUIT")
            c.expect_closed()
        assert second.stop(signal.SIGTERM) == 0
        with contextlib.closing(sqlite3.connect(db)) as kept:  # dropped, emptied: gone
            assert kept.execute("SELECT name FROM rooms").fetchall() == []
    finally:
        for c in opened:
            c.close()


def test_a_dropped_account_leaves_founders_and_lists_so_its_name_inherits_nothing(connect):
    alice = registered_room(connect, "alice", "#r")
    bob = logged_in(connect, "bob")
    alice.send("CS OP #r ADD bob")
    says(alice, "bob")
    bob.send("PRIVMSG NickServ :DROP bob")
    bob.expect(r"NOTICE bob :Account bob dropped")
    alice.send("CS OP #r LIST")
    listing = alice.sync()
    assert not any("bob" in line for line in listing if "ChanServ" in line)
    alice.send("PRIVMSG NickServ :DROP alice")
    alice.expect(r"NOTICE alice :Account alice dropped")
    # Someone else registers the name `alice`: they found nothing.
    alice.send("NICK alice_old")
    alice.sync()
    heir = logged_in(connect, "alice")
    heir.send("CS INFO #r")
    says(heir, "not registered")
