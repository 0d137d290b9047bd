"""Bad and heavy input over real sockets: each bad line gets a clear error to its sender and
a log record, nobody else is affected; bursts, many concurrent clients and a client that
stops reading leave everyone else's conversation intact and in order."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import pytest
from helpers import COMMANDS, TIMEOUT, Client, prefix

from ircish import protocol as p

ROOM = "#r"


def relayed(lines: list[str]) -> list[str]:
    return [line for line in lines if " PRIVMSG " in line or " NOTICE " in line]


def room_pair(connect) -> tuple[Client, Client]:
    """alice and bob in ROOM, bob's join already seen by alice."""
    alice, bob = connect("alice"), connect("bob")
    alice.join(ROOM)
    bob.join(ROOM)
    alice.expect(rf"^:{re.escape(prefix('bob'))} JOIN {ROOM}$")
    return alice, bob


def assert_chat_works(sender: Client, receiver: Client, text: str) -> None:
    sender.send(f"PRIVMSG {receiver.nick} :{text}")
    receiver.expect(rf"^:{re.escape(prefix(sender.nick))} PRIVMSG {receiver.nick} :{text}$")


def privmsg(text: bytes) -> bytes:
    """A raw PRIVMSG line to ROOM carrying `text` as it is."""
    return f"PRIVMSG {ROOM} :".encode() + text + b"\r\n"


TOO_LONG = rf"^:test\.server {p.ERR_INPUTTOOLONG} alice :.+"
BAD_UTF8 = r"^:test\.server FAIL \* INVALID_UTF8 :.+"
ERROR_NUMERIC = r"^:test\.server [45]\d\d alice .+"

# Each bad line: what is sent, and the one reply line the sender must get for it.
BAD_LINES = [
    pytest.param(privmsg(b"x" * 588), TOO_LONG, id="600-bytes"),
    pytest.param(privmsg(b"x" * 499), TOO_LONG, id="511-bytes"),
    pytest.param(privmsg("é".encode() * 300), TOO_LONG, id="300-chars-612-bytes"),
    pytest.param(privmsg(b"\xff\xfe"), BAD_UTF8, id="invalid-utf8"),
    pytest.param(privmsg(b"caf\xc3"), BAD_UTF8, id="truncated-utf8"),
    pytest.param(privmsg(b"a\x00b"), ERROR_NUMERIC, id="nul-in-text"),
    pytest.param(b"PRIV\x00MSG " + ROOM.encode() + b" :hi\r\n", ERROR_NUMERIC, id="nul-in-command"),
]


#: One case per kind of rejection, for the logging check.
LOGGED_KINDS = {"600-bytes", "invalid-utf8", "nul-in-text"}


@pytest.mark.parametrize(("data", "reply"), BAD_LINES)
def test_bad_line_gets_an_error_and_is_not_relayed(connect, data, reply):
    alice, bob = room_pair(connect)

    alice.send(data)
    got = alice.sync()

    assert len(got) == 1, got
    assert re.match(reply, got[0]), got
    assert relayed(bob.sync()) == []
    # The same connection goes on working.
    alice.send(f"PRIVMSG {ROOM} :still here")
    bob.expect(rf"^:{re.escape(prefix('alice'))} PRIVMSG {ROOM} :still here$")


@pytest.mark.parametrize(("data", "reply"), [case for case in BAD_LINES if case.id in LOGGED_KINDS])
def test_bad_line_is_logged(connect, caplog, data, reply):
    caplog.set_level(logging.DEBUG, logger="ircish")
    alice, _ = room_pair(connect)
    alice.sync()
    caplog.clear()

    alice.send(data)
    alice.sync()

    about_alice = [r for r in caplog.records if "alice" in r.getMessage()]
    assert about_alice, [r.getMessage() for r in caplog.records]


def test_line_at_the_limit_is_accepted(connect):
    alice, bob = room_pair(connect)
    text = "x" * (510 - len(f"PRIVMSG {ROOM} :"))

    alice.send(f"PRIVMSG {ROOM} :{text}")

    assert alice.sync() == []
    [line] = relayed(bob.sync())
    assert re.fullmatch(rf":{re.escape(prefix('alice'))} PRIVMSG {ROOM} :?x+", line), line
    assert len(line.encode()) <= 510  # cut to fit, never sent longer than the limit


def test_kilobytes_without_newline_disconnect_only_that_client(connect, caplog):
    caplog.set_level(logging.DEBUG, logger="ircish")
    alice, bob = room_pair(connect)
    mallory = connect("mallory")
    mallory.join(ROOM)
    alice.expect(rf"^:{re.escape(prefix('mallory'))} JOIN {ROOM}$")

    with contextlib.suppress(OSError):  # the server may cut us off mid-send
        mallory.send(b"x" * 20000)
    lines = mallory.expect_closed()

    assert [line for line in lines if line.startswith("ERROR :")], lines
    alice.expect(rf"^:{re.escape(prefix('mallory'))} QUIT :.+")
    assert any("mallory" in r.getMessage() for r in caplog.records)
    assert_chat_works(alice, bob, "still talking")
    assert_chat_works(bob, alice, "me too")


def test_empty_lines_and_bare_newlines_are_fine(connect):
    alice, bob = room_pair(connect)

    alice.send(
        b"\r\n\n   \r\n" + f"PRIVMSG {ROOM} :lf only\nPRIVMSG {ROOM} :crlf ending\r\n".encode()
    )

    assert alice.sync() == []
    assert relayed(bob.sync()) == [
        f":{prefix('alice')} PRIVMSG {ROOM} :lf only",
        f":{prefix('alice')} PRIVMSG {ROOM} :crlf ending",
    ]


def test_burst_of_1000_commands_arrives_complete_and_in_order(connect):
    alice, bob = room_pair(connect)
    carol, dave = connect("carol"), connect("dave")
    count = 1000

    alice.send(b"".join(f"PRIVMSG {ROOM} :burst {i}\r\n".encode() for i in range(count)))
    for i in range(5):  # another pair keeps chatting while the burst is handled
        assert_chat_works(carol, dave, f"meanwhile {i}")
        assert_chat_works(dave, carol, f"reply {i}")

    lines = bob.collect_until(rf"PRIVMSG {ROOM} :burst {count - 1}$")
    assert relayed(lines) == [f":{prefix('alice')} PRIVMSG {ROOM} :burst {i}" for i in range(count)]
    assert alice.sync() == []


def test_handler_crash_is_answered_logged_and_survived(start_server, connect, caplog):
    def crash(ctx, msg):
        raise RuntimeError("handler blew up on purpose")

    commands = {**COMMANDS, "AWAY": dataclasses.replace(COMMANDS["AWAY"], handler=crash)}
    server = start_server(commands=commands)
    caplog.set_level(logging.ERROR, logger="ircish")
    alice, bob = room_pair(lambda nick: connect(nick, target=server))

    alice.send("AWAY :gone fishing")
    got = alice.sync()

    assert len(got) == 1, got
    assert re.match(rf"^:test\.server {p.ERR_UNKNOWNERROR} alice AWAY :.+", got[0]), got
    crashes = [
        r
        for r in caplog.records
        if r.exc_info and isinstance(r.exc_info[1], RuntimeError) and r.levelno >= logging.ERROR
    ]
    assert len(crashes) == 1
    assert "handler blew up on purpose" in caplog.text
    assert "Traceback" in caplog.text
    assert relayed(bob.sync()) == []
    alice.send(f"PRIVMSG {ROOM} :after the crash")
    bob.expect(rf"^:{re.escape(prefix('alice'))} PRIVMSG {ROOM} :after the crash$")


def test_many_clients_in_shared_rooms_see_every_message_once_in_one_order(connect):
    rooms = ["#r0", "#r1", "#r2"]
    per_client = 20
    clients = [connect(f"u{i}") for i in range(50)]
    # Every client is in one room; every other one also in the next room.
    membership = {
        c.nick: [rooms[i % 3]] + ([rooms[(i + 1) % 3]] if i % 2 == 0 else [])
        for i, c in enumerate(clients)
    }
    for c in clients:
        c.send(f"JOIN {','.join(membership[c.nick])}")
        c.expect(rf" {p.RPL_ENDOFNAMES} {c.nick} {membership[c.nick][-1]} ")
    sent_to = {room: [] for room in rooms}  # (sender, text) per room
    bursts = {}
    for c in clients:
        lines = []
        for j in range(per_client):
            room = membership[c.nick][j % len(membership[c.nick])]
            text = f"m {c.nick} {j}"
            sent_to[room].append((c.nick, text))
            lines.append(f"PRIVMSG {room} :{text}\r\n")
        bursts[c.nick] = "".join(lines).encode()
    expected = {
        c.nick: Counter(
            (room, sender, text)
            for room in membership[c.nick]
            for sender, text in sent_to[room]
            if sender != c.nick
        )
        for c in clients
    }
    start = threading.Barrier(len(clients), timeout=TIMEOUT)
    pattern = re.compile(r"^:([^!]+)!\S+ PRIVMSG (#\S+) :(.*)$")

    def talk(client: Client) -> list[tuple[str, str, str]]:
        start.wait()
        client.send(bursts[client.nick])
        got = []
        while len(got) < sum(expected[client.nick].values()):
            match = client.expect(pattern.pattern)
            got.append((match[2], match[1], match[3]))
        return got

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        seen = dict(zip((c.nick for c in clients), pool.map(talk, clients), strict=True))

    for c in clients:
        assert relayed(c.sync()) == [], c.nick  # nothing beyond the expected count
        assert Counter(seen[c.nick]) == expected[c.nick], c.nick
    for room in rooms:
        members = [nick for nick, joined_rooms in membership.items() if room in joined_rooms]
        for a, b in combinations(members, 2):
            # Each sees the room's one order, minus its own messages (no echo).
            order_a = [m for m in seen[a] if m[0] == room and m[1] != b]
            order_b = [m for m in seen[b] if m[0] == room and m[1] != a]
            assert order_a == order_b, (room, a, b)


def test_client_that_stops_reading_is_dropped_for_sendq(start_server, connect):
    srv = start_server(sendq_bytes=65536)
    flooder, reader, sleeper = (connect(n, target=srv) for n in ("flooder", "reader", "sleeper"))
    left, right = connect("left", target=srv), connect("right", target=srv)
    for client in (flooder, reader, sleeper):
        client.join("#flood")
    reader.expect(rf"^:{re.escape(prefix('sleeper'))} JOIN #flood$")
    # From here on the sleeper is never read. Small batches keep the reader's own queue
    # far below sendq because the test drains it after each one.
    batch, filler = 20, "y" * 380
    numbers: list[int] = []
    sent = 0
    dropped_at = None
    while dropped_at is None or sent < dropped_at + 10 * batch:
        flooder.send(
            "".join(f"PRIVMSG #flood :{n} {filler}\r\n" for n in range(sent, sent + batch))
        )
        sent += batch
        for line in reader.collect_until(rf" PRIVMSG #flood :{sent - 1} "):
            if " PRIVMSG " in line:
                numbers.append(int(line.split(" :", 1)[1].split()[0]))
            elif dropped_at is None and line.startswith(f":{prefix('sleeper')} QUIT"):
                assert line == f":{prefix('sleeper')} QUIT :SendQ exceeded"
                dropped_at = sent
        if sent % (50 * batch) == 0:
            assert_chat_works(left, right, f"still chatting {sent}")
        assert sent < 200_000, "the sleeper was never dropped"

    assert numbers == list(range(sent))
    assert_chat_works(right, left, "all good here")
    assert [line for line in flooder.sync() if re.match(r":\S+ [45]\d\d ", line)] == []
    sleeper.expect_closed()


def test_readers_that_keep_up_are_not_dropped_by_bursts_below_sendq(start_server, connect):
    srv = start_server(sendq_bytes=65536)
    flooder = connect("flooder", target=srv)
    readers = [connect(f"reader{i}", target=srv) for i in range(3)]
    for client in (flooder, *readers):
        client.join("#flood")
    # Each burst is about 50 KB on a reader's wire, below the 64 KiB sendq, and the test
    # reads all of it before the next one: no reader's queue ever holds more than that.
    batch, filler = 120, "y" * 380
    line_bytes = len(f":{prefix('flooder')} PRIVMSG #flood :{batch * 300} {filler}\r\n")
    assert batch * line_bytes < 65536
    for start in range(0, 300 * batch, batch):
        flooder.send(
            "".join(f"PRIVMSG #flood :{n} {filler}\r\n" for n in range(start, start + batch))
        )
        for reader in readers:
            got = relayed(reader.collect_until(rf" PRIVMSG #flood :{start + batch - 1} "))
            assert len(got) == batch, (reader.nick, start)


@pytest.mark.parametrize(
    "room",
    ["#café", "#日本語", "#a.b-c!", "##double", "#ünïcødé-ß"],
)
def test_unicode_and_odd_room_names_work(connect, room):
    alice, bob = connect("alice"), connect("bob")
    alice.join(room)
    bob.join(room)
    alice.expect(rf"^:{re.escape(prefix('bob'))} JOIN {re.escape(room)}$")

    bob.send(f"PRIVMSG {room} :héllo wörld ✓ 🎉")
    alice.expect(rf"^:{re.escape(prefix('bob'))} PRIVMSG {re.escape(room)} :héllo wörld ✓ 🎉$")
    alice.send(f"NAMES {room}")
    alice.expect(rf" {p.RPL_NAMREPLY} alice = {re.escape(room)} :@alice bob$")


def test_room_names_fold_ascii_case_only(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#Café")
    bob.send("JOIN #cafÉ")  # É is not ASCII: CASEMAPPING=ascii makes this another room
    bob.expect(rf" {p.RPL_ENDOFNAMES} bob #cafÉ ")
    bob.send("JOIN #CAFé")
    bob.expect(rf" {p.RPL_NAMREPLY} bob = #Café :@alice bob$")  # alice founded #Café
    alice.expect(rf"^:{re.escape(prefix('bob'))} JOIN #Café$")


@pytest.mark.parametrize("nick", ["[x]", "a|b", "x^_`{}", "n-1\\", "Z"])
def test_odd_but_valid_nicks_work(connect, nick):
    alice = connect("alice")
    odd = connect(nick)

    alice.send(f"PRIVMSG {nick.lower()} :hi {nick}")
    odd.expect(rf"^:{re.escape(prefix('alice'))} PRIVMSG {re.escape(nick)} :hi {re.escape(nick)}$")
    odd.send("PRIVMSG alice :hi back")
    alice.expect(rf"^:{re.escape(prefix(nick))} PRIVMSG alice :hi back$")


@pytest.mark.parametrize("nick", ["José", "1abc", "-x", "a b", "#room"])
def test_invalid_nick_is_refused_and_the_connection_goes_on(connect, nick):
    client = connect()
    client.send(f"NICK :{nick}")
    client.expect(rf" {p.ERR_ERRONEUSNICKNAME} \* ")
    client.register("fine")
