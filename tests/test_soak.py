"""Churn soak (issue 5): many clients at once join, part, change nick, talk in rooms and in
private, quit, drop their connection or reset it mid-line, and come back, for a while. Then
the invariants are checked precisely:

- nothing in the server log at ERROR or with a traceback;
- every *stable* member (in the same rooms from start to end, never renamed) got every room
  message and topic change of its rooms exactly once, and all stable members of a room saw
  them in one order; a half line cut off by a reset never reached anyone;
- whoever created a room (issue 6) is its operator, as its JOIN's NAMES shows (the stable
  members also get op from the founders before the soak); a TOPIC took effect exactly when
  its sender was the room's operator (rooms are +t), and a refused one (482) reached nobody;
- every private message to a stable member reached it exactly once;
- every JOIN, PART, NICK and QUIT of a churning client reached each stable member sharing a
  room with it exactly once;
- the server's nick and room tables match who is still connected, where, and with which
  status, and its threads and descriptors are back to what they were before the soak.

The short form runs with the suite; the long form (200 clients, 30 s) with
`python -m pytest -q -m slow tests/test_soak.py`. Each client draws its actions from
`random.Random(f"{seed}:{index}")`; the seed is printed and can be set with
IRCISH_SOAK_SEED=<n> to replay a run's choices.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations

import pytest
from helpers import TIMEOUT, Baseline, Client
from nodes import caught_up, cluster_config, shared_state
from redis_server import needs_redis

from ircish import protocol as p
from ircish.cluster.node import CALLER_CONNECTIONS
from ircish.config import RoomConfig
from ircish.modes import MAX_PARAM_CHANGES
from ircish.protocol import casefold
from ircish.store.redis import CONNECTIONS
from ircish.world import Counts

#: #lobby comes from the config, so it must outlive its last member.
LOBBY = "#lobby"
ROOMS = [LOBBY, "#a", "#b", "#c", "#d"]
SEED = int(os.environ.get("IRCISH_SOAK_SEED", "20240501"))
#: Seconds between forced thread switches during the soak (CPython's default is 0.005).
SOAK_SWITCH_INTERVAL = 0.0002
LINE = re.compile(r"^:([^!\s]+)!\S+ (PRIVMSG|TOPIC|JOIN|PART|NICK|QUIT)(?: (\S+))?(?: :?(.*))?$")
NAMES = re.compile(rf"^:\S+ {p.RPL_NAMREPLY} \S+ [=*@] (\S+) :?(.*)$")


def joined_as_operator(lines: list[str], nick: str, room: str) -> bool:
    """Whether the NAMES of `nick`'s JOIN of `room` (in `lines`) lists them as `@nick`.
    Modes change only before the soak (`give_stables_op`): a churner keeps that status
    until it leaves the room."""
    for line in lines:
        match = NAMES.match(line)
        if match is None or match[1] != room:
            continue
        for name in match[2].split():
            if name.lstrip("@+") == nick:
                assert name in (nick, f"@{nick}"), (name, line)  # nobody gives voice here
                return name.startswith("@")
    raise AssertionError(f"{nick} not in the NAMES of {room}: {lines}")


@dataclass
class Ledger:
    """What was sent, as the senders know it; shared by all client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: room -> ids of messages and topics the room certainly got, and those it may have
    #: got (sent just before a reset).
    room_items: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    maybe_items: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: ids of PRIVMSGs (not topics) by sender, to leave a sender's own out of its view.
    privmsg_by: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: stable nick -> ids of private messages sent to it.
    private: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: ids of half lines cut off by a reset: nobody may ever see them.
    never: set[str] = field(default_factory=set)
    #: (kind, who, what, rooms at the time) for JOIN, PART, NICK and QUIT.
    events: list[tuple[str, str, str, frozenset[str]]] = field(default_factory=list)
    actions: Counter = field(default_factory=Counter)

    def note(self, action: str) -> None:
        with self.lock:
            self.actions[action] += 1


class Sim:
    """One simulated client thread's common parts."""

    def __init__(self, index: int, address: tuple[str, int], ledger: Ledger, stop) -> None:
        self.index = index
        self.address = address
        self.ledger = ledger
        self.stop = stop
        self.rng = random.Random(f"{SEED}:{index}")
        self.client: Client | None = None
        self.nick = ""
        self.rooms: set[str] = set()
        #: Rooms this client runs: it created them, or (a stable member) got op at setup.
        #: The status survives a rename and goes with leaving the room.
        self.ops: set[str] = set()
        self.seq = 0
        self.error: BaseException | None = None

    def new_id(self, kind: str) -> str:
        self.seq += 1
        return f"{kind}{self.index}.{self.seq}"

    def connect(self, nick: str) -> bool:
        """Register as `nick`; False if it is taken."""
        client = Client(self.address)
        client.send_registration(nick)
        reply = client.expect(r" (001|433) ")
        if reply[1] == "433":
            client.close()
            return False
        client.expect(r" 376 | 422 ")
        self.client, self.nick, self.rooms, self.ops = client, nick, set(), set()
        return True

    def set_topic(self, room: str, kind: str) -> list[str]:
        """TOPIC `room`: it takes effect exactly when this client runs the room (+t).
        The lines that came back, for a stable member to take."""
        item = self.new_id("t")
        self.client.send(f"TOPIC {room} :t {item}")
        lines = self.client.sync()
        echoed = f":{self.nick}!u@127.0.0.1 TOPIC {room} :t {item}" in lines
        refusal = f" {p.ERR_CHANOPRIVSNEEDED} {self.nick} {room} "  # (from the client's node)
        refused = any(line.startswith(":") and refusal in line for line in lines)
        assert echoed != refused, lines
        assert echoed == (room in self.ops), (self.nick, room, sorted(self.ops), lines)
        with self.ledger.lock:
            # A refused topic is like a cut-off half line: nobody may ever see it.
            (self.ledger.room_items[room] if echoed else self.ledger.never).add(item)
        self.ledger.note(f"{kind}-topic" if echoed else f"{kind}-topic-refused")
        return lines

    def run(self) -> None:
        try:
            self.main()
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.stop.set()

    def main(self) -> None:
        raise NotImplementedError


class Stable(Sim):
    """Stays connected, in the same rooms, under the same nick; records all it gets."""

    def __init__(self, *args, rooms: list[str], peers: list[str]) -> None:
        super().__init__(*args)
        self.home = rooms
        self.peers = peers
        self.seen: dict[str, list[str]] = defaultdict(list)  # room -> ids in arrival order
        self.private: Counter = Counter()
        self.events: Counter = Counter()
        self.stray: list[str] = []

    def setup(self) -> None:
        assert self.connect(f"s{self.index}")
        for room in self.home:
            self.client.send(f"JOIN {room}")
            lines = self.client.collect_until(rf" {p.RPL_ENDOFNAMES} {self.nick} {room} ")
            if joined_as_operator(lines, self.nick, room):
                self.ops.add(room)
        self.rooms = set(self.home)

    def take(self, lines: list[str]) -> None:
        for line in lines:
            match = LINE.match(line)
            if match is None:
                continue
            who, kind, target, text = match.groups()
            if kind in ("PRIVMSG", "TOPIC"):
                item = (text or "").split(" ", 1)[-1]
                if target.startswith("#"):
                    self.seen[target].append(item)
                elif target == self.nick:
                    self.private[item] += 1
                else:
                    self.stray.append(line)
            elif kind == "NICK":
                self.events["NICK", who, target or text] += 1
            elif kind == "QUIT":
                self.events["QUIT", who, ""] += 1
            else:
                self.events[kind, who, target] += 1

    def main(self) -> None:
        client, rng = self.client, self.rng
        while not self.stop.is_set():
            roll = rng.random()
            if roll < 0.5:
                room, item = rng.choice(self.home), self.new_id("m")
                with self.ledger.lock:
                    self.ledger.room_items[room].add(item)
                    self.ledger.privmsg_by[self.nick].add(item)
                client.send(f"PRIVMSG {room} :r {item}")
                self.ledger.note("stable-room-message")
            elif roll < 0.75:
                peer, item = rng.choice(self.peers), self.new_id("p")
                with self.ledger.lock:
                    self.ledger.private[peer].add(item)
                client.send(f"PRIVMSG {peer} :p {item}")
                self.ledger.note("stable-private")
            elif roll < 0.85:
                self.take(self.set_topic(rng.choice(self.home), "stable"))
            else:
                client.send(rng.choice(["NAMES", f"WHO {rng.choice(ROOMS)}", "LIST", "LUSERS"]))
                self.ledger.note("stable-query")
            self.take(client.sync())
            time.sleep(rng.random() * 0.02)


class Churner(Sim):
    """Comes and goes: joins, parts, renames, talks, quits, drops or resets, reconnects."""

    def __init__(self, *args, stable_nicks: list[str]) -> None:
        super().__init__(*args)
        self.stable_nicks = stable_nicks
        self.generation = 0
        self.reusable: str | None = None  # the nick to take back after a clean exit

    def event(self, kind: str, who: str, what: str, rooms: set[str]) -> None:
        with self.ledger.lock:
            self.ledger.events.append((kind, who, what, frozenset(rooms)))

    def reconnect(self) -> None:
        while not self.stop.is_set():
            if self.reusable is not None:
                nick, self.reusable = self.reusable, None
            else:
                self.generation += 1
                nick = f"c{self.index}x{self.generation}"
            if self.connect(nick):
                self.ledger.note("connect")
                return

    def main(self) -> None:
        rng = self.rng
        while not self.stop.is_set():
            if self.client is None:
                self.reconnect()
                continue
            roll = rng.random()
            if roll < 0.2:
                self.join(rng.choice([*ROOMS, f"#tmp{self.index}"]))
            elif roll < 0.3 and self.rooms:
                self.part(rng.choice(sorted(self.rooms)))
            elif roll < 0.32:
                self.part_all()
            elif roll < 0.52 and self.rooms:
                self.say(rng.choice(sorted(self.rooms)))
            elif roll < 0.62:
                self.whisper()
            elif roll < 0.67 and self.rooms:
                self.set_topic(rng.choice(sorted(self.rooms)), "churner")
            elif roll < 0.77:
                self.rename()
            elif roll < 0.80:
                self.rename_to_taken()
            elif roll < 0.96:
                self.client.send(rng.choice(["NAMES", "LIST", f"WHOIS {rng.choice(ROOMS)}"]))
                self.client.sync()
            else:
                self.leave(rng.choice(["quit", "close", "reset", "reset-mid-line"]))
            time.sleep(rng.random() * 0.02)
        if self.client is not None:
            self.client.sync()

    def join(self, room: str) -> None:
        if room in self.rooms:
            return
        self.client.send(f"JOIN {room}")
        lines = self.client.sync()
        assert f":{self.nick}!u@127.0.0.1 JOIN {room}" in lines, lines
        self.rooms.add(room)
        if joined_as_operator(lines, self.nick, room):
            self.ops.add(room)
        self.event("JOIN", self.nick, room, self.rooms)
        self.ledger.note("join")

    def part(self, room: str) -> None:
        self.client.send(f"PART {room} :bye")
        lines = self.client.sync()
        assert f":{self.nick}!u@127.0.0.1 PART {room} :bye" in lines, lines
        self.event("PART", self.nick, room, self.rooms)
        self.rooms.discard(room)
        self.ops.discard(room)
        self.ledger.note("part")

    def part_all(self) -> None:
        self.client.send("JOIN 0")
        lines = self.client.sync()
        for room in sorted(self.rooms):
            assert f":{self.nick}!u@127.0.0.1 PART {room} :Left all rooms" in lines, lines
            self.event("PART", self.nick, room, self.rooms)
        self.rooms, self.ops = set(), set()
        self.ledger.note("join-0")

    def say(self, room: str) -> None:
        item = self.new_id("m")
        with self.ledger.lock:
            self.ledger.room_items[room].add(item)
            self.ledger.privmsg_by[self.nick].add(item)
        self.client.send(f"PRIVMSG {room} :r {item}")
        self.client.sync()
        self.ledger.note("churner-room-message")

    def whisper(self) -> None:
        peer, item = self.rng.choice(self.stable_nicks), self.new_id("p")
        with self.ledger.lock:
            self.ledger.private[peer].add(item)
        self.client.send(f"PRIVMSG {peer} :p {item}")
        self.client.sync()
        self.ledger.note("churner-private")

    def rename(self) -> None:
        new = f"c{self.index}n{self.seq + 1}"
        self.seq += 1
        self.client.send(f"NICK {new}")
        lines = self.client.sync()
        assert f":{self.nick}!u@127.0.0.1 NICK {new}" in lines, lines
        self.event("NICK", self.nick, new, self.rooms)
        self.nick = new
        self.ledger.note("rename")

    def rename_to_taken(self) -> None:
        taken = self.rng.choice(self.stable_nicks)
        self.client.send(f"NICK {taken.upper()}")  # casefolded, it is taken
        lines = self.client.sync()
        assert any(f" 433 {self.nick} {taken.upper()} " in line for line in lines), lines
        self.ledger.note("rename-refused")

    def leave(self, how: str) -> None:
        client, nick, rooms = self.client, self.nick, set(self.rooms)
        if how == "quit":
            client.send("QUIT :see you")
            client.expect_closed()
            self.reusable = nick  # the server removed it before closing
        elif how == "close":
            client.sock.shutdown(socket.SHUT_WR)
            client.expect_closed()
            self.reusable = nick
        else:
            if rooms and how == "reset":
                room, item = self.rng.choice(sorted(rooms)), self.new_id("m")
                with self.ledger.lock:
                    self.ledger.maybe_items[room].add(item)
                    self.ledger.privmsg_by[nick].add(item)
                client.send(f"PRIVMSG {room} :r {item}")
            elif rooms:
                room, item = self.rng.choice(sorted(rooms)), self.new_id("h")
                with self.ledger.lock:
                    self.ledger.never.add(item)
                client.send(f"PRIVMSG {room} :r {item}".encode())  # no line end
            # SO_LINGER 0: close() sends RST, as when a process is killed with unread input.
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        self.event("QUIT", nick, "", rooms)
        self.client, self.rooms, self.ops = None, set(), set()
        self.ledger.note(f"leave-{how}")


def give_stables_op(stables: list[Stable]) -> None:
    """Each room's founder gives op to the other stable members in it, so their topics take
    effect too (rooms are +t). #lobby, from the config, has no founder: nobody runs it."""
    founders = {room: member for member in stables for room in member.ops}
    assert LOBBY not in founders
    for room, founder in sorted(founders.items()):
        members = [m for m in stables if room in m.home]
        assert [m for m in members if room in m.ops] == [founder], room
        nicks = [m.nick for m in members if m is not founder]
        for start in range(0, len(nicks), MAX_PARAM_CHANGES):
            batch = nicks[start : start + MAX_PARAM_CHANGES]
            founder.client.send(f"MODE {room} +{'o' * len(batch)} {' '.join(batch)}")
            founder.client.expect(rf"^:{founder.nick}!\S+ MODE {room} \+o+ {' '.join(batch)}$")
        for member in members:
            member.ops.add(room)


def _expected_events(ledger: Ledger, member: Stable) -> Counter:
    expected: Counter = Counter()
    home = set(member.home)
    for kind, who, what, rooms in ledger.events:
        if kind in ("JOIN", "PART"):
            if what in home:
                expected[kind, who, what] += 1
        elif rooms & home:
            expected[kind, who, what] += 1
    return expected


def _room_view(member: Stable, room: str, ledger: Ledger, other: Stable) -> list[str]:
    """`member`'s sequence for `room` without what one of the two could not get (own
    PRIVMSGs are not echoed)."""
    skip = ledger.privmsg_by[member.nick] | ledger.privmsg_by[other.nick]
    return [item for item in member.seen[room] if item not in skip]


@pytest.mark.parametrize(
    ("clients", "seconds", "nodes"),
    [
        pytest.param(40, 5.0, 1, id="short"),
        pytest.param(200, 30.0, 1, id="long", marks=[pytest.mark.slow, pytest.mark.timeout(300)]),
        # Three nodes of one network (issue 17), the clients spread over them: the same
        # invariants, and every node's copy of the network the same at the end.
        pytest.param(40, 5.0, 3, id="cluster3", marks=needs_redis),
        pytest.param(
            200,
            30.0,
            3,
            id="cluster3-long",
            marks=[needs_redis, pytest.mark.slow, pytest.mark.timeout(300)],
        ),
    ],
)
def test_churn_soak_keeps_every_invariant(request, start_server, caplog, clients, seconds, nodes):
    print(f"soak seed {SEED} (IRCISH_SOAK_SEED), {clients} clients, {seconds} s, {nodes} nodes")
    lobby = (RoomConfig(LOBBY, "the lobby"),)
    if nodes == 1:
        servers = [start_server(rooms=lobby)]
    else:
        url = request.getfixturevalue("redis_server").url
        servers = [start_server(cluster_config(url, f"n{i}", rooms=lobby)) for i in range(nodes)]
    server = servers[0]

    def address(index: int) -> tuple[str, int]:
        return servers[index % len(servers)].address

    # The server asks for long GIL slices (server.GIL_SWITCH_INTERVAL); short ones make
    # threads interleave inside every critical section, so a missing lock shows up here.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SOAK_SWITCH_INTERVAL)
    baseline = Baseline()
    ledger, stop = Ledger(), threading.Event()
    stable_count = max(4, clients // 5)
    stable_nicks = [f"s{i}" for i in range(stable_count)]
    layout = random.Random(SEED)
    stables = [
        Stable(
            i,
            address(i),
            ledger,
            stop,
            rooms=sorted(layout.sample(ROOMS, layout.randint(2, 3))),
            peers=[n for n in stable_nicks if n != f"s{i}"],
        )
        for i in range(stable_count)
    ]
    churners = [
        Churner(i, address(i), ledger, stop, stable_nicks=stable_nicks)
        for i in range(stable_count, clients)
    ]
    everyone: list[Sim] = [*stables, *churners]
    for member in stables:
        member.setup()
    give_stables_op(stables)
    for member in stables:
        member.client.sync()  # the setup JOINs and MODEs are not part of the soak
    threads = [threading.Thread(target=sim.run, name=f"sim-{sim.index}") for sim in everyone]
    try:
        for thread in threads:
            thread.start()
        stop.wait(seconds)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        errors = [(sim.index, sim.error) for sim in everyone if sim.error is not None]
        assert errors == [], f"seed {SEED}: {errors[:3]}"
        assert not any(thread.is_alive() for thread in threads)
        print(f"actions: {dict(sorted(ledger.actions.items()))}")

        # Quiet: every reset has been noticed, then everyone's last lines are in.
        connected = [sim for sim in everyone if sim.client is not None]
        deadline = time.monotonic() + TIMEOUT
        while sum(node.connection_count() for node in servers) != len(connected):
            assert time.monotonic() < deadline, len(connected)
            time.sleep(0.01)
        if nodes > 1:  # every node has applied the whole log, and all agree
            caught_up(request.getfixturevalue("redis_server"), *servers)
            copies = [shared_state(node) for node in servers]
            assert all(copy == copies[0] for copy in copies), f"seed {SEED}: copies differ"
        for sim in connected:
            lines = sim.client.sync()
            if isinstance(sim, Stable):
                sim.take(lines)

        # The server's tables match who is connected and where.
        world = server.world
        assert sorted(casefold(u.nick) for u in world.users_snapshot()) == sorted(
            casefold(sim.nick) for sim in connected
        )
        where: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for sim in connected:
            for room in sim.rooms:
                where[room].add((sim.nick, "o" if room in sim.ops else ""))
        tables = {
            room.name: {(u.nick, status) for u, status in room.snapshot().members.items()}
            for room in world.rooms_snapshot()
        }
        assert tables == {LOBBY: set(), **where}, f"seed {SEED}"
        counts = world.counts()
        assert counts == Counts(
            users=len(connected), invisible=0, operators=0, rooms=len(tables), peak=counts.peak
        )
        assert counts.peak >= counts.users

        # What each stable member got.
        for member in stables:
            tag = f"seed {SEED}, {member.nick}"
            assert member.stray == [], tag
            for room in member.home:
                got = member.seen[room]
                assert len(got) == len(set(got)), f"{tag}: duplicates in {room}"
                own = ledger.privmsg_by[member.nick]
                must = ledger.room_items[room] - own
                may = ledger.maybe_items[room] - own
                assert must <= set(got), f"{tag}: {room} lost {sorted(must - set(got))[:5]}"
                assert set(got) <= must | may, f"{tag}: {room} got {set(got) - must - may}"
            assert not set(member.seen) - set(member.home), tag
            assert not ledger.never & {i for seq in member.seen.values() for i in seq}, tag
            assert dict(member.private) == dict.fromkeys(ledger.private[member.nick], 1), tag
            assert member.events == _expected_events(ledger, member), tag
        for room in ROOMS:
            members = [m for m in stables if room in m.home]
            for a, b in combinations(members, 2):
                assert _room_view(a, room, ledger, b) == _room_view(b, room, ledger, a), (
                    f"seed {SEED}: {a.nick} and {b.nick} saw {room} in different orders"
                )
        # The soak did what it claims.
        for action in (
            *("join", "part", "rename", "leave-quit", "leave-reset", "connect"),
            *("stable-topic", "churner-topic-refused"),
        ):
            assert ledger.actions[action] > 0, (action, ledger.actions)
    finally:
        sys.setswitchinterval(switch_interval)
        stop.set()
        for sim in everyone:
            if sim.client is not None:
                sim.client.close()
    if nodes > 1:  # each node's connections to Redis, made on demand and kept for reuse
        baseline.fds += nodes * (CALLER_CONNECTIONS + CONNECTIONS)
    baseline.wait_restored()
    crashes = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert crashes == [], f"seed {SEED}: {crashes[:5]}"
