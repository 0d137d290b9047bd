"""Hostile clients against a live server (issue 5): random bytes, a megabyte without a
newline, a line dribbled in 1000 writes, half-finished registrations, a 10 000 command
burst, invalid UTF-8 everywhere, overlong nicks, rooms and topics.

Each test ends the same way (`Arena.assert_recovered`): the hostile client is gone, the
server's threads and open descriptors are back to what they were before it came, a healthy
pair of clients still chats, and nothing was logged as an error.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from helpers import TIMEOUT, Baseline, Client, make_config, prefix

from ircish import protocol as p
from ircish.protocol import parse
from ircish.server import Server

ROOM = "#r"
#: Longest line body a client may receive: 512 bytes with CRLF.
MAX_BODY = 510
FAIL_UTF8 = r"^:test\.server FAIL \* INVALID_UTF8 :"


def crash_records(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.levelno >= logging.ERROR or r.exc_info is not None]


@dataclass
class Arena:
    """A server, a healthy pair (alice and bob in ROOM) and the baseline taken after them."""

    server: Server
    alice: Client
    bob: Client
    caplog: pytest.LogCaptureFixture
    clients: list[Client] = field(default_factory=list)
    baseline: Baseline | None = None

    def client(self, nick: str | None = None, *, join: bool = False) -> Client:
        client = Client(self.server.address)
        self.clients.append(client)
        if nick:
            client.register(nick)
        if join:
            client.join(ROOM)
            self.alice.expect(rf"^:{re.escape(prefix(nick))} JOIN {ROOM}$")
            self.bob.expect(rf"^:{re.escape(prefix(nick))} JOIN {ROOM}$")
        return client

    def assert_recovered(self, *hostile: Client) -> None:
        for client in hostile:
            client.close()
        assert self.baseline is not None
        self.baseline.wait_restored()
        assert self.server.connection_count() == 2
        assert sorted(u.nick for u in self.server.world.users_snapshot()) == ["alice", "bob"]
        for sender, receiver in ((self.alice, self.bob), (self.bob, self.alice)):
            text = f"still chatting {time.monotonic_ns()}"
            sender.send(f"PRIVMSG {ROOM} :{text}")
            receiver.expect(rf"^:{re.escape(prefix(sender.nick))} PRIVMSG {ROOM} :{text}$")
        assert crash_records(self.caplog.records) == []


@pytest.fixture
def make_arena(start_server, caplog) -> Iterator[Callable[..., Arena]]:
    arenas: list[Arena] = []

    def make(**settings: object) -> Arena:
        server = start_server(make_config(**settings))
        alice, bob = Client(server.address), Client(server.address)
        arena = Arena(server, alice, bob, caplog, [alice, bob])
        arenas.append(arena)
        alice.register("alice")
        bob.register("bob")
        alice.join(ROOM)
        bob.join(ROOM)
        alice.expect(rf"^:{re.escape(prefix('bob'))} JOIN {ROOM}$")
        arena.baseline = Baseline()
        return arena

    yield make
    for arena in arenas:
        for client in arena.clients:
            client.close()


def relayed(lines: list[str]) -> list[str]:
    return [line for line in lines if re.match(r"^:\S+ (PRIVMSG|NOTICE|TOPIC) ", line)]


def assert_clean_lines(lines: list[str]) -> None:
    """What any client got: each line parses and fits 512 bytes with its CRLF."""
    for line in lines:
        assert len(line.encode()) <= MAX_BODY, line
        assert "\0" not in line and "\r" not in line
        parse(line)


def send_ignoring_reset(client: Client, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server may cut us off mid-send
        client.sock.sendall(data)


# -- random bytes -----------------------------------------------------------------------------


@pytest.mark.parametrize("registered", [True, False], ids=["registered", "fresh"])
def test_random_bytes_leave_everyone_else_alone(make_arena, registered):
    seed = 20240501
    print(f"random seed {seed}")
    rng = random.Random(seed)
    arena = make_arena()
    mallory = arena.client("mallory", join=True) if registered else arena.client()

    garbage = rng.randbytes(256 * 1024)
    # Newlines every ~256 bytes on average: many lines, all refused one way or another.
    sent = 0
    while sent < len(garbage):
        step = rng.randint(1, 8192)
        mallory.send(garbage[sent : sent + step])
        sent += step
    mallory.send(b"\r\n")

    if registered:
        got = mallory.sync()  # alive, and every line was answered before this PONG
        assert_clean_lines(got)
        assert any(re.match(FAIL_UTF8, line) for line in got), got[:5]
        assert any(f" {p.ERR_INPUTTOOLONG} mallory " in line for line in got), got[:5]
    assert relayed(arena.bob.sync()) == []
    assert relayed(arena.alice.sync()) == []
    arena.assert_recovered(mallory)


# -- a megabyte without a newline -------------------------------------------------------------


@pytest.mark.parametrize("registered", [True, False], ids=["registered", "fresh"])
def test_a_megabyte_without_newline_is_cut_off(make_arena, registered):
    arena = make_arena()
    mallory = arena.client("mallory", join=True) if registered else arena.client()

    send_ignoring_reset(mallory, b"x" * (1 << 20))
    lines = mallory.expect_closed()

    assert "ERROR :Input buffer exceeded: line without newline" in lines, lines
    if registered:
        arena.bob.expect(rf"^:{re.escape(prefix('mallory'))} QUIT :Input buffer exceeded$")
    arena.assert_recovered(mallory)


# -- one line dribbled in a thousand writes ---------------------------------------------------


def _privmsg_of_size(size: int, filler: str) -> bytes:
    """A PRIVMSG to ROOM of exactly `size` bytes with CRLF: `filler` repeated, x's to pad."""
    head, tail = f"PRIVMSG {ROOM} :".encode(), b"\r\n"
    room = size - len(head) - len(tail)
    text = (filler * room).encode()[:room].decode("utf-8", "ignore").encode()
    return head + text + b"x" * (room - len(text)) + tail


def test_a_line_split_across_1000_writes(make_arena):
    arena = make_arena()
    mallory = arena.client("mallory", join=True)
    mallory.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # 1000 one-byte writes: two 480-byte lines (their relayed copies still fit 512 bytes)
    # whose 2-, 3- and 4-byte characters and CR/LF arrive byte by byte, then a PING.
    first, second = _privmsg_of_size(480, "héllo ✓ "), _privmsg_of_size(480, "🎉 wörld ")
    ping = b"PING dribble".ljust(38, b"e") + b"\r\n"
    payload = first + second + ping
    assert len(payload) == 1000

    for i in range(len(first) - 1):
        mallory.sock.sendall(payload[i : i + 1])
    assert relayed(arena.bob.quiet(0.2)) == []  # nothing until the line is complete
    for i in range(len(first) - 1, len(payload)):
        mallory.sock.sendall(payload[i : i + 1])

    assert mallory.collect_until(r" PONG test\.server dribblee+$") == [
        ":test.server PONG test.server " + ping.decode()[5:-2]
    ]
    got = relayed(arena.bob.collect_until(r" PRIVMSG #r :🎉"))
    assert got == [f":{prefix('mallory')} {line.decode()[:-2]}" for line in (first, second)]
    arena.assert_recovered(mallory)


# -- half-finished registration ---------------------------------------------------------------

HALF_REGISTRATIONS = {
    "silent": [],
    "nick-only": ["NICK ghost"],
    "user-only": ["USER ghost 0 * :Ghost"],
    "cap-never-ended": ["CAP LS 302", "NICK ghost", "USER ghost 0 * :Ghost"],
    "text-session-no-nick": ["/help"],
}


@pytest.mark.parametrize("lines", HALF_REGISTRATIONS.values(), ids=HALF_REGISTRATIONS.keys())
def test_half_finished_registration_times_out_and_frees_the_nick(make_arena, lines):
    arena = make_arena(registration_timeout=0.5)
    ghost = arena.client()
    for line in lines:
        ghost.send(line)
    if "NICK ghost" in lines:
        ghost.sync()  # its NICK has been handled (a PING is allowed before registering)
        # While it waits, the nick is held: nobody else may take it ...
        rival = arena.client()
        rival.send_registration("ghost")
        rival.expect(rf" {p.ERR_NICKNAMEINUSE} \* ghost ")
        rival.close()
        # ... and nobody can talk to it: it is not a user yet.
        arena.alice.send("PRIVMSG ghost :hello?")
        arena.alice.expect(rf" {p.ERR_NOSUCHNICK} alice ghost ")

    started = time.monotonic()
    closing = ghost.expect_closed(timeout=3.0)
    assert time.monotonic() - started < 2.0
    # An IRC session gets "ERROR :Registration timed out", a text session that text.
    assert any(line.endswith("Registration timed out") for line in closing), closing

    ghost.close()
    arena.baseline.wait_restored()  # the server is done with the ghost ...
    late = arena.client("ghost")  # ... and the nick is free again
    late.close()
    arena.assert_recovered(ghost)


def test_a_client_that_leaves_mid_registration_frees_its_nick_at_once(make_arena):
    arena = make_arena(registration_timeout=30)
    ghost = arena.client()
    ghost.send("NICK ghost")
    ghost.sync()
    ghost.close()

    arena.baseline.wait_restored()  # gone long before the 30 s registration timeout
    arena.client("ghost").close()
    arena.assert_recovered(ghost)


def test_a_nick_is_free_once_its_connection_is_seen_closed(make_arena):
    """When a client sees the server close its connection (here: registration timeout),
    its nick is already free, so a client that reconnects at once gets it back.

    Flood control holds each ghost's reader in its fakelag naps when the timeout strikes,
    which makes the moment between "socket closed" and "user removed" long enough to see
    every time instead of once in a while."""
    arena = make_arena(registration_timeout=0.3, flood_rate=1.0, flood_burst=10)
    ghosts = [arena.client() for _ in range(3)]
    for i, ghost in enumerate(ghosts):
        # NICK costs 2 of the 10 tokens, so the ninth PING puts the reader to sleep.
        ghost.send(f"NICK ghost{i}\r\n".encode() + b"PING x\r\n" * 12)
    taken = []
    for i, ghost in enumerate(ghosts):
        closing = ghost.expect_closed()
        assert closing[-1] == "ERROR :Registration timed out", closing
        again = arena.client()
        again.send_registration(f"ghost{i}")
        if again.expect(rf" (001|{p.ERR_NICKNAMEINUSE}) ")[1] != "001":
            taken.append(f"ghost{i}")
        again.close()
    assert taken == [], f"still held after the client saw its connection closed: {taken}"
    arena.assert_recovered(*ghosts)


# -- a burst of 10 000 commands ---------------------------------------------------------------


def _burst(count: int) -> tuple[bytes, int, int]:
    """`count` lines: room messages, PINGs and WHOIS; how many PRIVMSGs and PINGs."""
    lines, privmsgs, pings = [], 0, 0
    for i in range(count):
        if i % 10 == 9:
            lines.append(f"PING burst{i}")
            pings += 1
        elif i % 100 == 50:
            lines.append("WHOIS alice")
        else:
            lines.append(f"PRIVMSG {ROOM} :burst {i}")
            privmsgs += 1
    return "".join(line + "\r\n" for line in lines).encode(), privmsgs, pings


def test_burst_of_10000_commands_is_handled_in_order(make_arena):
    arena = make_arena()
    mallory = arena.client("mallory", join=True)
    data, privmsgs, pings = _burst(10_000)
    expected = [
        f":{prefix('mallory')} PRIVMSG {ROOM} :burst {i}"
        for i in range(10_000)
        if i % 10 != 9 and i % 100 != 50
    ]
    assert len(expected) == privmsgs

    mallory.send(data)
    for member in (arena.bob, arena.alice):
        got = relayed(member.collect_until(rf"PRIVMSG {ROOM} :burst 9998$", timeout=30))
        assert got == expected, member.nick
    pongs = [
        line
        for line in mallory.collect_until(r" PONG test\.server burst9999$", timeout=30)
        if " PONG " in line
    ]
    assert pongs == [f":test.server PONG test.server burst{i}" for i in range(9, 10_000, 10)]
    assert len(pongs) == pings
    arena.assert_recovered(mallory)


def test_burst_of_10000_commands_with_flood_control_is_cut_off(make_arena):
    """With flood control on, the burst slows its sender down and then disconnects it;
    meanwhile the healthy pair's messages go through at once."""
    arena = make_arena(flood_rate=4.0, flood_burst=20, flood_disconnect_seconds=1.0)
    mallory = arena.client("mallory", join=True)
    data, _, _ = _burst(10_000)

    sender = threading.Thread(target=send_ignoring_reset, args=(mallory, data))
    sender.start()
    for i in range(5):
        start = time.monotonic()
        arena.alice.send(f"PRIVMSG bob :while flooded {i}")
        arena.bob.expect(rf"PRIVMSG bob :while flooded {i}$")
        assert time.monotonic() - start < 1.0
    arena.bob.expect(rf"^:{re.escape(prefix('mallory'))} QUIT :Excess Flood$", timeout=10)
    closing = mallory.expect_closed(timeout=10)
    sender.join(timeout=TIMEOUT)
    assert "ERROR :Excess Flood" in closing, closing[-3:]
    # Bounded: the burst allowance plus what the rate let through before the cut.
    through = [line for line in relayed(arena.alice.sync()) if ":burst " in line]
    assert len(through) < 100, len(through)
    arena.assert_recovered(mallory)


# -- invalid UTF-8 ----------------------------------------------------------------------------

INVALID_UTF8 = [
    b"\xff",
    b"\xc0\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\x80",  # a lone continuation byte
    b"caf\xc3",  # cut short
    b"\xe2\x82",  # cut short, 3-byte
]


def test_invalid_utf8_anywhere_is_refused_line_by_line(make_arena):
    arena = make_arena()
    fresh = arena.client()
    # Before the session kind is known, during registration, then in every field.
    templates = [b"%s", b"NICK %s", b"USER %s 0 * :x"]
    for bad in INVALID_UTF8:
        for template in templates:
            fresh.send(template.replace(b"%s", bad) + b"\r\n")
    fresh.register("mallory")
    fresh.join(ROOM)
    arena.bob.expect(rf"^:{re.escape(prefix('mallory'))} JOIN {ROOM}$")
    templates = [
        b"JOIN #%s",
        b"PRIVMSG #r :hi %s",
        b"PRIVMSG bob :%s",
        b"TOPIC #r :%s",
        b"AWAY :%s",
        b"PART #r :%s",
        b"QUIT :%s",
        b"NICK m%s",
    ]
    for bad in INVALID_UTF8:
        for template in templates:
            fresh.send(template.replace(b"%s", bad) + b"\r\n")

    got = fresh.sync()  # QUIT and PART were refused too: still connected, still in ROOM
    fails = [line for line in got if re.match(FAIL_UTF8, line)]
    assert len(fails) == len(INVALID_UTF8) * len(templates), got
    assert [line for line in got if not re.match(FAIL_UTF8, line)] == []
    assert relayed(arena.bob.sync()) == []
    assert arena.bob.names(ROOM) == ["@alice", "bob", "mallory"]  # alice founded ROOM
    arena.assert_recovered(fresh)


def test_invalid_utf8_in_a_text_session_gets_one_error_line(make_arena):
    arena = make_arena()
    carol = arena.client()
    carol.send("/nick carol")
    carol.expect(r"Welcome to the ")
    carol.send("/join #r")
    carol.expect(r"You joined #r")
    arena.bob.expect(rf"^:{re.escape(prefix('carol', 'carol'))} JOIN {ROOM}$")

    for bad in INVALID_UTF8:
        carol.send(b"hi " + bad + b"\r\n")
    carol.send("/msg bob after the junk")
    carol.expect(r"^-> \*bob\* after the junk$")
    arena.bob.expect(r"PRIVMSG bob :after the junk$")

    assert relayed(arena.alice.sync()) == []
    arena.assert_recovered(carol)


# -- overlong nicks, rooms, topics ------------------------------------------------------------


def test_overlong_names_are_refused_and_overlong_texts_are_clipped(make_arena):
    arena = make_arena()
    limits = arena.server.config.limits
    mallory = arena.client()
    mallory.send("NICK " + "n" * (limits.nick_length + 1))
    mallory.expect(rf" {p.ERR_ERRONEUSNICKNAME} \* ")
    mallory.send("NICK " + "n" * 490)
    mallory.expect(rf" {p.ERR_ERRONEUSNICKNAME} \* ")
    mallory.send("NICK " + "m" * limits.nick_length)  # exactly at the limit is fine
    mallory.send("USER " + "u" * 480 + " 0 * :" + "r" * 10)
    mallory.expect(r" 376 | 422 ")
    nick = "m" * limits.nick_length

    mallory.send("JOIN #" + "a" * limits.room_length)  # one over: '#' counts
    mallory.expect(rf" {p.ERR_BADCHANMASK} {nick} ")
    mallory.send("JOIN #" + "b" * 480)
    mallory.expect(rf" {p.ERR_BADCHANMASK} {nick} ")
    arena.alice.join("#q")  # where alice will see mallory's QUIT, after the PART from ROOM
    mallory.send(f"JOIN {ROOM},#q")
    mallory.expect(rf" {p.RPL_ENDOFNAMES} {nick} #q ")
    who = arena.bob.expect(rf"^:{nick}!(\S+)@\S+ JOIN {ROOM}$")
    assert len(who[1]) <= 16  # USERLEN
    arena.alice.expect(rf"^:{nick}!\S+ JOIN {ROOM}$")
    # ROOM is +t and alice founded it: let mallory, who is no operator, set the topic.
    arena.alice.send(f"MODE {ROOM} -t")
    arena.alice.expect(rf"^:{re.escape(prefix('alice'))} MODE {ROOM} -t$")

    topic = "ü✓" * 200  # 1000 bytes of 2- and 3-byte characters: too long for one line
    mallory.send(f"TOPIC {ROOM} :{topic[:150]}")  # 375 bytes: within TOPICLEN
    mallory.send(f"TOPIC {ROOM} :{topic[:166]}{'x' * 80}")  # 495 bytes: over TOPICLEN
    mallory.send("AWAY :" + "a" * 480)
    mallory.sync()
    arena.alice.send(f"WHOIS {nick}")
    away = arena.alice.expect(rf" {p.RPL_AWAY} alice {nick} :?(a+)$")
    assert len(away[1]) == limits.away_length
    mallory.send(f"PART {ROOM} :" + "é" * 240)
    mallory.send("QUIT :" + "q" * 490)
    mallory.expect_closed()

    got = arena.bob.collect_until(rf"^:{nick}!\S+ PART {ROOM} ")
    assert_clean_lines(got)
    quit_line = arena.alice.collect_until(rf"^:{nick}!\S+ QUIT :?Quit: q")[-1]
    assert_clean_lines([quit_line])
    assert len(quit_line.encode()) == MAX_BODY  # cut to fit, not refused
    topics = [parse(line).params[1] for line in got if " TOPIC " in line]
    assert len(topics) == 2
    assert topics[0] == topic[:150]
    assert limits.topic_length - 3 < len(topics[1].encode()) <= limits.topic_length
    assert topics[1] == topic[: len(topics[1])]  # clipped at a character, nothing added
    part = next(parse(line) for line in got if " PART " in line)
    assert part.params[1] == "é" * (limits.topic_length // 2)
    arena.assert_recovered(mallory)


@pytest.mark.parametrize("space", ["\x85", "\u3000"], ids=ascii)
def test_a_room_name_with_an_odd_space_is_refused_or_usable(make_arena, space):
    """A room name with a character Python counts as whitespace (but IRC does not: only
    ASCII space separates parameters) is either refused at JOIN or works like any other."""
    arena = make_arena()
    room = f"#odd{space}room"
    arena.alice.send(f"JOIN :{room}")
    got = arena.alice.sync()
    if any(f" {p.ERR_BADCHANMASK} " in line for line in got):
        return  # refused: fine
    arena.bob.send(f"JOIN :{room}")
    arena.bob.sync()
    arena.alice.send(f"PRIVMSG {room} :hello odd room")
    assert [line for line in arena.alice.sync() if re.search(r" [45]\d\d alice ", line)] == []
    assert relayed(arena.bob.sync()) == [f":{prefix('alice')} PRIVMSG {room} :hello odd room"]
    arena.assert_recovered()


def test_a_relayed_line_at_the_input_limit_is_cut_to_512_bytes(make_arena):
    arena = make_arena()
    nick = "m" * 30
    mallory = arena.client(nick, join=True)
    # 510 bytes in; the relay adds the sender's prefix, so each copy must be cut to fit.
    head = f"PRIVMSG {ROOM} :"
    text = ("日本語" * 200).encode()[: MAX_BODY - len(head)].decode("utf-8", "ignore")
    assert len((head + text).encode()) > MAX_BODY - 3
    mallory.send(head + text)

    for member in (arena.alice, arena.bob):
        line = member.collect_until(rf"^:{nick}!\S+ PRIVMSG {ROOM} ")[-1]
        assert len(line.encode()) <= MAX_BODY
        assert "\ufffd" not in line  # cut between characters, not inside one
        relayed_text = parse(line).params[1]
        assert text.startswith(relayed_text)
        assert (
            len(relayed_text.encode())
            > MAX_BODY - len(line.encode()) + len(relayed_text.encode()) - 3
        )  # as long as would fit (within one 3-byte character)
    arena.assert_recovered(mallory)


# -- junk from many clients at once -----------------------------------------------------------


def test_many_hostile_clients_at_once(make_arena):
    """Twenty clients each pick a different hostile behaviour at the same time."""
    rng = random.Random(7)
    arena = make_arena(registration_timeout=1.0)
    behaviours = [
        lambda c: c.send(rng.randbytes(20000)),
        lambda c: send_ignoring_reset(c, b"y" * 100_000),
        lambda c: c.send(b"NICK half\r\n"),
        lambda c: c.send(b"".join(b"PING x%d\r\n" % i for i in range(2000))),
        lambda c: c.send(b"\xff\xfe\r\n" * 500),
    ]
    hostile = [arena.client() for _ in range(20)]
    for i, client in enumerate(hostile):
        behaviours[i % len(behaviours)](client)
    for i in range(5):
        arena.alice.send(f"PRIVMSG {ROOM} :amid the junk {i}")
        arena.bob.expect(rf"PRIVMSG {ROOM} :amid the junk {i}$")
    arena.assert_recovered(*hostile)
