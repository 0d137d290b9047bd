"""Several nodes as one network through a real redis-server (issue 17): nicks unique
network-wide, rooms and private messages across nodes in one order, nodes joining a
running network, and a node that dies or stops: its users leave everywhere, once."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import ROOT, SERVER_COMMAND, TIMEOUT, Client, ServerProcess, wait_for
from nodes import LEASE_MS, caught_up, cluster_config, shared_state
from prometheus_client import generate_latest
from redis_server import RedisProcess, needs_redis

from ircish.config import HistoryConfig, RoomConfig, StoreConfig
from ircish.metrics import registry_for
from ircish.server import Server

pytestmark = needs_redis

Nodes = Callable[..., list[Server]]


@pytest.fixture
def nodes(redis_server: RedisProcess, start_server: Callable[..., Server]) -> Iterator[Nodes]:
    """Start in-process nodes of one network (on the test's redis-server), by name (Redis
    first, so it stops after the nodes, whose writers write their last lines). After
    the test, once every node has applied the whole log, every node's copy of the network
    must be the same (each applies every change; a change that gave a different answer
    on one node, or a value it made up itself, shows here)."""
    started: list[Server] = []

    def start(*names: str, **settings: object) -> list[Server]:
        servers = [
            start_server(cluster_config(redis_server.url, name, **settings)) for name in names
        ]
        started.extend(servers)
        return servers

    yield start
    live = [server for server in started if not server._stopping.is_set()]
    if len(live) > 1 and redis_server.running:
        caught_up(redis_server, *live)
        copies = [shared_state(server) for server in live]
        for server, copy in zip(live[1:], copies[1:], strict=True):
            assert copy == copies[0], f"{server.name}'s copy differs from {live[0].name}'s"


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    opened: list[Client] = []

    def open_client(server: Server | ServerProcess, nick: str | None = None) -> Client:
        client = Client(server.address)
        opened.append(client)
        if nick is not None:
            client.register(nick)
        return client

    yield open_client
    for client in opened:
        client.close()


def capped(client: Client, nick: str, caps: str) -> Client:
    """`client` registered as `nick` with `caps` (CAP REQ before NICK/USER, then END)."""
    client.send(f"CAP REQ :{caps}")
    client.send_registration(nick)
    client.send("CAP END")
    client.expect(r" (376|422) ")
    return client


def members_of_r(servers: list[Server], clients: Callable[..., Client]) -> list[Client]:
    """One member of #r on each node (m0, m1, ...), each with echo-message, so each sees
    its own lines in the room's order."""
    members = []
    for index, server in enumerate(servers):
        client = capped(clients(server), f"m{index}", "echo-message")
        client.join("#r")
        members.append(client)
    return members


def texts(client: Client, count: int, pattern: str = r" PRIVMSG #r :(.*)$") -> list[str]:
    """The next `count` texts matching `pattern` that `client` gets, in order."""
    found = []
    while len(found) < count:
        found.append(client.expect(pattern)[1])
    return found


def test_a_room_spans_nodes(nodes: Nodes, clients: Callable[..., Client]) -> None:
    n1, n2, n3 = nodes("n1", "n2", "n3", rooms=(RoomConfig("#general", "welcome"),))
    alice, bob, carol = clients(n1, "alice"), clients(n2, "bob"), clients(n3, "carol")
    alice.join("#r")
    bob.join("#r")
    alice.expect(r"^:bob!u@\S+ JOIN #r")
    names = bob.names("#r")
    assert sorted(names) == ["@alice", "bob"]
    carol.join("#r")
    for member in (alice, bob):
        member.expect(r"^:carol!u@\S+ JOIN #r")
    bob.send("PRIVMSG #r :hello from n2")
    # The sender's name as the network knows it, on both other nodes.
    for member in (alice, carol):
        member.expect(r"^:bob!u@127\.0\.0\.1 PRIVMSG #r :hello from n2$")
    carol.send("PART #r :bye")
    for member in (alice, bob):
        member.expect(r"^:carol!u@\S+ PART #r :bye$")
    assert sorted(alice.names("#r")) == ["@alice", "bob"]


def test_every_member_sees_one_order(nodes: Nodes, clients: Callable[..., Client]) -> None:
    """Three senders, one per node, at once: every member on every node (the senders
    too, through echo-message) sees the same sequence; each sender's own lines in the
    order sent."""
    servers = nodes("n1", "n2", "n3")
    members = members_of_r(servers, clients)
    watcher = clients(servers[1], "watcher")
    watcher.join("#r")
    for client in members:
        client.sync()
    per_sender = 40

    def talk(client: Client, index: int) -> None:
        for number in range(per_sender):
            client.send(f"PRIVMSG #r :{index}-{number}")

    threads = [
        threading.Thread(target=talk, args=(client, index)) for index, client in enumerate(members)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    total = per_sender * len(members)
    seen = [texts(client, total) for client in (*members, watcher)]
    assert all(sequence == seen[0] for sequence in seen), "members saw different orders"
    for index in range(len(members)):
        own = [text for text in seen[0] if text.startswith(f"{index}-")]
        assert own == [f"{index}-{number}" for number in range(per_sender)]


def test_a_nick_is_taken_network_wide(nodes: Nodes, clients: Callable[..., Client]) -> None:
    n1, n2 = nodes("n1", "n2")
    alice = clients(n1, "alice")
    other = clients(n2)
    other.send("NICK Alice")
    other.expect(r" 433 \* Alice ")
    other.register("bob")
    other.send("NICK ALICE")
    other.expect(r" 433 bob ALICE ")
    alice.send("QUIT :gone")
    alice.expect_closed()
    # Free again once her QUIT is applied.
    deadline = time.monotonic() + TIMEOUT
    while True:
        other.send("NICK alice")
        line = other.expect(r" 433 bob alice | NICK :?alice$")[0]
        if "NICK" in line:
            break
        assert time.monotonic() < deadline, "alice's nick never came free"
        time.sleep(0.05)


def test_parallel_claims_of_one_nick_have_one_winner(
    nodes: Nodes, clients: Callable[..., Client]
) -> None:
    servers = nodes("n1", "n2", "n3")
    racers = [clients(servers[index % 3]) for index in range(24)]
    for client in racers:
        client.send("NICK racer")
        client.send("USER u 0 * :r")
    outcomes = [client.expect(r" (001|433) ")[1] for client in racers]
    assert outcomes.count("001") == 1, outcomes


def test_private_messages_and_whois_across_nodes(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    n1, n2 = nodes("n1", "n2")
    alice, bob = clients(n1, "alice"), clients(n2, "bob")
    caught_up(redis_server, n1, n2)
    alice.send("PRIVMSG bob :psst")
    bob.expect(r"^:alice!u@\S+ PRIVMSG bob :psst$")
    bob.send("NOTICE alice :heard you")
    alice.expect(r"^:bob!u@\S+ NOTICE alice :heard you$")
    alice.send("WHOIS bob")
    alice.expect(r" 311 alice bob u \S+ \* :Real Name$")
    alice.send("PRIVMSG nobody :hello?")
    alice.expect(r" 401 alice nobody ")


def test_nick_changes_and_quits_reach_every_node(
    nodes: Nodes, clients: Callable[..., Client]
) -> None:
    n1, n2, n3 = nodes("n1", "n2", "n3")
    alice, bob, carol = clients(n1, "alice"), clients(n2, "bob"), clients(n3, "carol")
    for client in (alice, bob, carol):
        client.join("#r")
    alice.expect(r"^:carol!\S+ JOIN #r")
    bob.send("NICK robert")
    for client in (alice, bob, carol):
        client.expect(r"^:bob!u@\S+ NICK :?robert$")
    carol.close()  # vanishes: no QUIT of her own
    for client in (alice, bob):
        client.expect(r"^:carol!u@\S+ QUIT :")
    assert sorted(alice.names("#r")) == ["@alice", "robert"]


def test_a_node_joining_later_gets_the_network(
    nodes: Nodes, clients: Callable[..., Client]
) -> None:
    (n1,) = nodes("n1")
    alice = clients(n1, "alice")
    alice.join("#r")
    alice.send("TOPIC #r :plans")
    alice.send("MODE #r +m")
    alice.send("PRIVMSG #r :said before n2 existed")
    alice.sync()
    (n2,) = nodes("n2")
    bob = clients(n2)
    bob.send("NICK alice")
    bob.expect(r" 433 \* alice ")
    bob.register("bob")
    bob.send("JOIN #r")
    joined = bob.collect_until(r" 366 bob #r ")
    assert any(re.search(r" 332 bob #r :plans$", line) for line in joined), joined
    assert any(re.search(r" 353 bob \S #r :@alice bob$", line) for line in joined), joined
    bob.expect(r"PRIVMSG #r :.*said before n2 existed")  # the room's history came too
    bob.send("PRIVMSG #r :may I?")
    bob.expect(r" 404 bob #r .*moderated")  # +m holds on the new node too
    alice.send("MODE #r +v bob")
    bob.expect(r"MODE #r \+v bob")
    bob.send("PRIVMSG #r :thanks")
    alice.expect(r"^:bob!\S+ PRIVMSG #r :thanks$")


def test_a_labeled_message_gets_one_labeled_echo(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    n1, n2 = nodes("n1", "n2")
    alice = capped(clients(n1), "alice", "echo-message labeled-response batch message-tags")
    bob = clients(n2, "bob")
    caught_up(redis_server, n1, n2)
    alice.send("@label=one PRIVMSG bob :hi")
    echo = alice.collect_until(r"PRIVMSG bob :hi$")[-1]
    assert echo.startswith("@label=one;") or ";label=one" in echo.split(" ")[0], echo
    bob.expect(r"PRIVMSG bob :hi$")
    assert not any("label" in line for line in alice.sync())


def test_redis_gone_refuses_then_recovers(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    n1, n2 = nodes("n1", "n2", lease_ms=10000)
    alice, bob = clients(n1, "alice"), clients(n2, "bob")
    alice.join("#r")
    bob.join("#r")
    alice.expect(r"^:bob!\S+ JOIN #r")
    redis_server.stop()
    # Everyone is told, whether they were saying something or not; so is /healthz, and
    # the metrics.
    for client in (alice, bob):
        client.expect(r"NOTICE \S+ :The network cannot be reached \(its Redis is down\)")
    assert n1.health() == "Redis cannot be reached: messages are refused"
    scraped = generate_latest(registry_for(n1)).decode()
    assert "ircish_cluster_redis_up 0.0" in scraped
    alice.send("PRIVMSG #r :into the void")  # refused where it was typed: #r
    alice.expect(r" 404 alice #r :The network cannot be reached just now; nothing was done")
    alice.send("PRIVMSG bob :are you there?")
    alice.expect(r" 400 alice PRIVMSG :The network cannot be reached just now; nothing was")
    alice.send("@+typing=active TAGMSG #r")  # (a typing notice is not worth a refusal)
    alice.send("JOIN #elsewhere")  # a command that waits for the network
    alice.expect(r" 400 alice \* :The network cannot be reached")
    assert not any("TAGMSG" in line or " 404 " in line for line in alice.sync())
    alice.send("WHOIS bob")  # a lookup is answered from the node's copy as it is
    alice.expect(r" 312 alice bob n2\.test ")
    redis_server.restart()
    for client in (alice, bob):
        client.expect(r"NOTICE \S+ :The network is back")
    assert n1.health() is None
    # Back by itself: the next line goes through, and the refused one never shows up.
    deadline = time.monotonic() + TIMEOUT
    while True:
        alice.send("PRIVMSG #r :are we back?")
        if not any(" 400 " in line or " 404 " in line for line in alice.sync()):
            break
        assert time.monotonic() < deadline, "the node did not come back"
        time.sleep(0.2)
    got = bob.collect_until(r"PRIVMSG #r :are we back\?$")
    assert not any("into the void" in line for line in got)


# -- nodes as processes: killed, stopped ---------------------------------------------------


def node_process(workdir: Path, url: str, node: str, lease_ms: int = LEASE_MS) -> ServerProcess:
    config = (
        f"server: {{name: {node}.test}}\n"
        "limits: {max_clients_per_ip: 0, flood_rate: 0}\n"
        f"cluster: {{redis: '{url}', node: {node}, lease_ms: {lease_ms}}}\n"
    )
    return ServerProcess(workdir / node, config)


def test_a_killed_node_s_users_leave_everywhere_once(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess, tmp_path: Path
) -> None:
    n1, n3 = nodes("n1", "n3")
    n2 = node_process(tmp_path, redis_server.url, "n2")
    try:
        alice, carol = clients(n1, "alice"), clients(n3, "carol")
        bob, dave = clients(n2, "bob"), clients(n2, "dave")
        for client in (alice, carol, bob, dave):
            client.join("#r")
        alice.join("#s")
        bob.join("#s")
        alice.expect(r"^:bob!\S+ JOIN #s")
        carol.sync()
        alice.sync()
        killed = time.monotonic()
        n2.proc.send_signal(signal.SIGKILL)
        n2.proc.wait(TIMEOUT)
        for client in (alice, carol):
            quits = client.collect_until(r"^:dave!\S+ QUIT ", timeout=LEASE_MS / 1000 + TIMEOUT)
            quits += client.quiet(0.5)
            assert sum(bool(re.match(r"^:bob!\S+ QUIT :n2 left", q)) for q in quits) == 1, quits
            assert sum(bool(re.match(r"^:dave!\S+ QUIT :n2 left", q)) for q in quits) == 1, quits
        # Within the lease, a quarter of it to notice, and a little for the log.
        assert time.monotonic() - killed < LEASE_MS / 1000 * 1.25 + 2
        assert sorted(alice.names("#r")) == ["@alice", "carol"]
        newcomer = clients(n3, "bob")  # the nick came free
        newcomer.join("#r")
        alice.expect(r"^:bob!\S+ JOIN #r")
    finally:
        n2.kill()


def test_a_stopped_node_cannot_act_for_its_users_when_it_wakes(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess, tmp_path: Path
) -> None:
    (n1,) = nodes("n1")
    n2 = node_process(tmp_path, redis_server.url, "n2")
    try:
        alice, bob = clients(n1, "alice"), clients(n2, "bob")
        alice.join("#r")
        bob.join("#r")
        alice.expect(r"^:bob!\S+ JOIN #r")
        bob.send("PRIVMSG #r :before the freeze")
        alice.expect("before the freeze")
        n2.proc.send_signal(signal.SIGSTOP)
        alice.expect(r"^:bob!\S+ QUIT :n2 left", timeout=LEASE_MS / 1000 + TIMEOUT)
        bob.send("PRIVMSG #r :from beyond")  # read when it wakes
        n2.proc.send_signal(signal.SIGCONT)
        # It learns from the log that it was declared gone, and closes bob.
        closing = bob.expect_closed()
        assert any("lost contact with the network; please reconnect" in line for line in closing)
        assert not any("from beyond" in line for line in alice.quiet(1.0))
        # It joins again as a new life: a new user there talks with n1.
        wait_for(lambda: "joined the network" in n2.log())
        erin = clients(n2, "erin")
        erin.join("#r")
        alice.expect(r"^:erin!\S+ JOIN #r")
    finally:
        n2.kill()


def test_a_node_name_in_use_is_refused(redis_server: RedisProcess, tmp_path: Path) -> None:
    first = node_process(tmp_path / "a", redis_server.url, "n1")
    try:
        config = "cluster: {redis: '" + redis_server.url + "', node: n1, lease_ms: 1000}\n"
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "config.yaml").write_text(config)
        done = subprocess.run(
            [
                *SERVER_COMMAND,
                "-c",
                str(tmp_path / "b" / "config.yaml"),
                "--port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=tmp_path / "b",
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 1
        assert "node name 'n1' is in use by a running node" in done.stderr
    finally:
        first.kill()


# -- accounts, operators, user modes ---------------------------------------------------------


def test_an_account_made_on_one_node_logs_in_on_another(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    n1, n2 = nodes("n1", "n2")
    alice = clients(n1, "alice")
    alice.send("PRIVMSG NickServ :REGISTER open sesame")
    alice.expect(r" 900 alice ")
    caught_up(redis_server, n1, n2)
    other = clients(n2)
    other.send("CAP LS 302")
    other.send("CAP REQ :sasl")
    other.send_registration("alice2")
    other.expect(r" CAP \S+ ACK :sasl")
    other.send("AUTHENTICATE PLAIN")
    other.expect(r"AUTHENTICATE \+$")
    other.send("AUTHENTICATE " + base64.b64encode(b"\0alice\0open sesame").decode())
    other.expect(r" 903 ")
    other.send("CAP END")
    other.expect(r" (376|422) ")
    caught_up(redis_server, n1, n2)
    # Both nodes see alice2 logged in to alice (WHOIS 330), and alice's nick is hers.
    for client, nick in ((alice, "alice"), (other, "alice2")):
        client.send("WHOIS alice2")
        client.expect(rf" 330 {nick} alice2 alice ")
    # A node started now gets the account too.
    (n3,) = nodes("n3")
    late = clients(n3)
    late.send("CAP LS 302")
    late.send("CAP REQ :sasl")
    late.send_registration("alice3")
    late.expect(r" CAP \S+ ACK :sasl")
    late.send("AUTHENTICATE PLAIN")
    late.expect(r"AUTHENTICATE \+$")
    late.send("AUTHENTICATE " + base64.b64encode(b"\0alice\0open sesame").decode())
    late.expect(r" 903 ")


def test_kill_and_bot_mode_reach_a_user_on_another_node(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    n1, n2 = nodes("n1", "n2")
    bob = clients(n2, "bob")
    bob.join("#r")
    bob.send("MODE bob +B")
    bob.expect(r"MODE bob :?\+B")
    oper = clients(n1, "oper")
    oper.join("#r")
    caught_up(redis_server, n1, n2)
    oper.send("WHOIS bob")
    oper.expect(r" 335 oper bob ")  # +B seen from n1
    n1.world.set_operator(n1.world.find_user("oper"), True, "root")
    caught_up(redis_server, n1, n2)
    oper.send("KILL bob :spam")
    bob.expect(r"KILL bob :spam")
    bob.expect_closed()
    oper.expect(r"^:bob!\S+ QUIT :Killed \(oper \(spam\)\)")


# -- Redis away and back ---------------------------------------------------------------------


def test_a_node_declared_gone_while_redis_was_away_does_not_say_it_is_back(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    """Redis comes back after an outage in which the network declared n2 gone (its lease
    lapsed): n2's users are closed ("lost contact"), and are not first told that the
    network is back."""
    _n1, n2 = nodes("n1", "n2", lease_ms=1000)  # (n1: the network n2 is part of)
    bob = clients(n2, "bob")
    bob.sync()
    assert n2.cluster is not None
    n2.cluster.up = False  # (as the lease thread leaves it while Redis is away)
    redis_server.client().hdel("ircish:nodes", "n2")  # (another node declared it gone)
    lines = bob.expect_closed()
    assert any("lost contact with the network" in line for line in lines), lines
    assert not any("The network is back" in line for line in lines), lines


def test_a_quit_while_redis_is_away_reaches_the_others_when_it_is_back(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    n1, n2 = nodes("n1", "n2", lease_ms=10000)
    alice, bob = clients(n1, "alice"), clients(n2, "bob")
    alice.join("#r")
    bob.join("#r")
    alice.expect(r"^:bob!\S+ JOIN #r")
    redis_server.stop()
    bob.close()
    wait_for(lambda: n2.connection_count() == 0)  # bob's reader is done
    redis_server.restart()
    alice.expect(r"^:bob!\S+ QUIT :", timeout=TIMEOUT)
    assert sorted(alice.names("#r")) == ["@alice"]


def test_a_redis_restart_under_traffic_loses_and_reorders_nothing(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    """Senders on three nodes talk while Redis restarts (with its append-only file): every
    line is either refused to its sender (400) or seen by every member, in one order."""
    servers = nodes("n1", "n2", "n3", lease_ms=10000)
    members = members_of_r(servers, clients)
    caught_up(redis_server, *servers)
    for client in members:
        client.sync()
    per_sender = 60
    refused: list[str] = []

    def talk(client: Client, index: int) -> None:
        for number in range(per_sender):
            client.send(f"PRIVMSG #r :{index}-{number}")
            time.sleep(0.01)

    threads = [
        threading.Thread(target=talk, args=(client, index)) for index, client in enumerate(members)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    redis_server.restart()
    for thread in threads:
        thread.join(TIMEOUT)
    # What each member got, up to a marker everyone sees last.
    members[0].send("PRIVMSG #r :end")
    seen = []
    for client in members:
        lines = client.collect_until(r"PRIVMSG #r :end$", timeout=TIMEOUT * 2)
        seen.append([m[1] for line in lines if (m := re.search(r" PRIVMSG #r :(\d+-\d+)$", line))])
        refused += [line for line in lines if " 400 " in line or " 404 " in line]
    assert all(sequence == seen[0] for sequence in seen), "members saw different orders"
    assert len(seen[0]) + len(refused) == per_sender * len(members), (len(seen[0]), refused)
    assert len(set(seen[0])) == len(seen[0]), "a line was delivered twice"


def test_redis_losing_its_data_starts_the_network_again(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    """Redis restarted without its data: the log the nodes follow is gone (and the last
    entries may have reached some nodes and not others). Users are told and closed, the
    nodes join again, and a reconnect works."""
    n1, n2 = nodes("n1", "n2", lease_ms=2000)
    alice, bob = clients(n1, "alice"), clients(n2, "bob")
    alice.join("#r")
    bob.join("#r")
    alice.expect(r"^:bob!\S+ JOIN #r")
    redis_server.client().flushall()
    for client in (alice, bob):
        closing = client.expect_closed(timeout=TIMEOUT)
        assert any("The network lost its state" in line for line in closing), closing
    # Both nodes have joined again (the bus clears the flag once it has). Two nodes joining
    # at once may each wait once for the other's state before one goes first: then it
    # takes cluster.timeout_ms and a lease more.
    wait_for(
        lambda: not any(node.cluster is None or node.cluster._lost.is_set() for node in (n1, n2)),
        timeout=2 * TIMEOUT + LEASE_MS / 1000 + 5,
    )
    alice2, bob2 = clients(n1, "alice"), clients(n2, "bob")
    caught_up(redis_server, n1, n2)
    alice2.join("#r")
    bob2.join("#r")
    alice2.expect(r"^:bob!\S+ JOIN #r")
    bob2.send("PRIVMSG #r :we are back")
    alice2.expect(r"^:bob!\S+ PRIVMSG #r :we are back$")


# -- history, accounts and registered rooms in Redis -----------------------------------------


def test_history_said_on_two_nodes_is_read_on_a_third(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    """Lines said on n1 and n2, read with CHATHISTORY on n3: the last ones from its window,
    the older ones from Redis (the window holds 5), all in one order, each once."""
    small = HistoryConfig(window=5, replay_on_join=5)
    n1, n2, n3 = nodes("n1", "n2", "n3", history=small)
    alice, bob = clients(n1, "alice"), clients(n2, "bob")
    alice.join("#r")
    bob.join("#r")
    alice.expect(r"^:bob!\S+ JOIN #r")
    for number in range(12):
        (alice if number % 2 else bob).send(f"PRIVMSG #r :line {number}")
        (bob if number % 2 else alice).expect(rf"PRIVMSG #r :line {number}$")
    caught_up(redis_server, n1, n2, n3)
    for server in (n1, n2):  # each node's writer has written its own lines
        assert server.writer is not None and server.writer.flush(TIMEOUT)
    carol = capped(clients(n3), "carol", "batch server-time message-tags draft/chathistory")
    carol.join("#r")
    carol.sync()
    carol.send("CHATHISTORY LATEST #r * 50")
    lines = carol.collect_until(r"^:\S+ BATCH -")
    said = [m[1] for line in lines if (m := re.search(r" PRIVMSG #r :(line \d+)$", line))]
    assert said == [f"line {number}" for number in range(12)]
    msgids = [m[1] for line in lines if (m := re.search(r"msgid=([^; ]+)", line))]
    assert len(msgids) == len(set(msgids))


def test_a_quiet_node_does_not_hold_other_windows_back(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    """n2's window keeps n1's lines until n1 says its writer has written them (so an answer
    reaching past the window finds them in Redis). n1 says so with each entry it appends
    and each lease tick: once n1 has written its lines and said nothing more, n2's window
    still comes back to its size as bob talks."""
    small = HistoryConfig(window=3, replay_on_join=0)
    (n1,) = nodes("n1", lease_ms=1000, history=small, store=StoreConfig(flush_ms=60_000))
    (n2,) = nodes("n2", lease_ms=1000, history=small)  # (its writer writes at once)
    alice, bob = clients(n1, "alice"), clients(n2, "bob")
    alice.join("#r")
    bob.join("#r")
    alice.expect(r"^:bob!\S+ JOIN #r")
    for number in range(5):
        alice.send(f"PRIVMSG #r :alice {number}")
    bob.expect(r"PRIVMSG #r :alice 4$")
    room = n2.world.find_room("#r")
    assert room is not None and room.window is not None
    for number in range(60):  # n1's writer waits (flush_ms): its lines stay in n2's window
        bob.send(f"PRIVMSG #r :bob {number}")
    bob.sync()
    assert any(line.params[-1] == "alice 0" for line in room.window)
    assert n1.writer is not None and n1.writer.flush(TIMEOUT)
    time.sleep(0.6)  # (two lease ticks: n1 says where its writer is)

    def trimmed() -> bool:
        bob.send("PRIVMSG #r :more")
        bob.sync()
        return len(room.window) < 40

    wait_for(trimmed)
    assert not any(line.params[-1].startswith("alice") for line in room.window)


def test_a_room_that_ended_leaves_no_history_in_redis(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    """bob (n2) quits, then alice (n1), the last member: the room ends. n2's writer stores
    bob's QUIT line after n1's writer forgot the room; n2 forgets it too, after its own
    lines, so nothing of the room is left in Redis."""
    (n1,) = nodes("n1")
    (n2,) = nodes("n2", store=StoreConfig(flush_ms=60_000))  # (its writer waits)
    alice, bob = clients(n1, "alice"), clients(n2, "bob")
    alice.join("#gone")
    bob.join("#gone")
    alice.send("PRIVMSG #gone :hello")
    bob.expect(r"PRIVMSG #gone :hello$")
    bob.send("QUIT :bye")
    alice.expect(r"^:bob!\S+ QUIT :Quit: bye$")
    alice.send("PART #gone")
    alice.expect(r"^:alice!\S+ PART #gone")
    caught_up(redis_server, n1, n2)
    assert n1.writer is not None and n1.writer.flush(TIMEOUT)
    assert n2.writer is not None and n2.writer.flush(TIMEOUT)  # (bob's QUIT line, then)
    redis = redis_server.client(decode_responses=True)
    assert not redis.exists("ircish:hist:#gone"), redis.zrange("ircish:hist:#gone", 0, -1)


def test_accounts_and_registered_rooms_outlive_every_node(
    start_server: Callable[..., Server], clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    n1 = start_server(cluster_config(redis_server.url, "n1"))
    alice = clients(n1, "alice")
    alice.send("PRIVMSG NickServ :REGISTER open sesame")
    alice.expect(r" 900 alice ")
    alice.join("#club")
    alice.send("TOPIC #club :members only")
    alice.send("PRIVMSG ChanServ :REGISTER #club")
    alice.expect(r"#club is registered to alice")
    alice.send("PRIVMSG #club :remember me")
    alice.sync()
    alice.close()
    assert n1.writer is not None and n1.writer.flush(TIMEOUT)
    n1.shutdown()  # the network has no node now
    n2 = start_server(cluster_config(redis_server.url, "n2"))
    again = clients(n2)
    again.send("CAP LS 302")
    again.send("CAP REQ :sasl")
    again.send_registration("alice")
    again.expect(r" CAP \S+ ACK :sasl")
    again.send("AUTHENTICATE PLAIN")
    again.expect(r"AUTHENTICATE \+$")
    again.send("AUTHENTICATE " + base64.b64encode(b"\0alice\0open sesame").decode())
    again.expect(r" 903 ")
    again.send("CAP END")
    again.expect(r" (376|422) ")
    again.send("JOIN #club")
    joined = again.collect_until(r" 366 alice #club ")
    assert any(re.search(r" 332 alice #club :members only$", line) for line in joined), joined
    assert any(re.search(r"MODE #club \+o alice$", line) for line in joined), joined  # founder
    again.expect(r"PRIVMSG #club :.*remember me")  # its history, from Redis


def test_regain_renames_a_squatter_on_another_node_and_tells_them(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    n1, n2 = nodes("n1", "n2")
    owner = clients(n1, "alice")
    owner.send("PRIVMSG NickServ :REGISTER open sesame")
    owner.expect(r" 900 alice ")
    owner.send("NICK alice_")
    owner.expect(r"NICK :?alice_$")
    caught_up(redis_server, n1, n2)
    squatter = clients(n2, "alice")
    squatter.expect(r"NickServ!\S+ NOTICE alice :The nick alice belongs to a registered account")
    caught_up(redis_server, n1, n2)
    owner.send("PRIVMSG NickServ :REGAIN")
    owner.expect(r"^:alice_!\S+ NICK :?alice$")
    squatter.expect(r"^:alice!\S+ NICK :?Guest\d+$")
    squatter.expect(r"NOTICE Guest\d+ :alice belongs to a registered account, so you are now Guest")


class Hold:
    """A node's bus held (`held_bus`): `reached` once it waits at an entry it may not
    apply yet, and `release` lets it go on."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def wait(self, entry: dict, only: Callable[[dict], bool] | None) -> None:
        if only is None or only(entry):
            self.reached.set()
            self._released.wait(TIMEOUT)


@contextlib.contextmanager
def held_bus(server: Server, only: Callable[[dict], bool] | None = None) -> Iterator[Hold]:
    """`server`'s bus applies nothing from the first entry `only` picks (any, by default)
    until the block ends or the hold is released (each entry waits at most TIMEOUT)."""
    assert server.cluster is not None
    cluster = server.cluster
    hold = Hold()
    original = cluster._apply

    def slow_apply(entry_id: str, entry: dict) -> None:
        hold.wait(entry, only)
        original(entry_id, entry)

    cluster._apply = slow_apply  # type: ignore[method-assign]
    try:
        yield hold
    finally:
        hold.release()
        cluster._apply = original  # type: ignore[method-assign]


def catching_up(server: Server) -> bool:
    """Whether a reader thread of `server` waits for it to catch up with the log."""
    assert server.cluster is not None
    return bool(server.cluster._catching)


def test_a_lookup_answers_with_every_change_made_before_it(
    nodes: Nodes, clients: Callable[..., Client]
) -> None:
    """A node a moment behind the log (its bus held here) answers WHO, NAMES or WHOIS only
    once it has applied every change made anywhere before it was asked: bob, told of
    nothing, still never gets an answer older than alice's JOIN, her topic or her nick."""
    n1, n2 = nodes("n1", "n2")
    alice, bob = clients(n1, "alice"), clients(n2, "bob")
    bob.sync()
    with held_bus(n2) as hold:
        alice.join("#r")
        alice.send("TOPIC #r :what alice set")
        alice.send("NICK alicia")
        alice.expect(r"^:alice!\S+ NICK :?alicia$")
        bob.send("NAMES #r")
        wait_for(lambda: catching_up(n2))  # (not answered from the copy as it is)
        hold.release()
        assert re.search(r" 353 bob = #r :@alicia$", bob.expect(r" 353 ").string)
    bob.send("TOPIC #r")
    bob.expect(r" 332 bob #r :what alice set$")
    bob.send("WHOIS alicia")
    bob.expect(r" 311 bob alicia ")


def test_a_message_finds_who_and_what_another_node_just_made(
    nodes: Nodes, clients: Callable[..., Client]
) -> None:
    """Messages do not wait for their node to catch up with the log (they are checked
    where the log applies them), but a nick or room this node does not know yet is looked
    for again once it has; and a 301 tells whether the recipient was away as of the
    message, not as the sender's node last knew."""
    n1, n2 = nodes("n1", "n2")
    alice = capped(clients(n1), "alice", "echo-message")
    bob = clients(n2, "bob")
    with held_bus(n1) as hold:
        carol = clients(n2, "carol")  # (n1 knows nothing of her yet)
        carol.join("#new")
        bob.send("AWAY :gone fishing")
        bob.expect(r" 306 bob ")
        alice.send("PRIVMSG bob :are you there?")  # (n1 still thinks bob is here)
        alice.send("PRIVMSG #new :hello room")  # (a 404 once found: alice is no member)
        wait_for(lambda: catching_up(n1))
        hold.release()
        lines = alice.collect_until(r" 404 alice #new ")
        assert any(line.endswith(" 301 alice bob :gone fishing") for line in lines), lines
        assert not any(" 403 " in line for line in lines), lines
    bob.expect(r"^:alice!\S+ PRIVMSG bob :are you there\?$")
    with held_bus(n1) as hold:
        clients(n2, "dave")
        alice.send("PRIVMSG dave :welcome")
        wait_for(lambda: catching_up(n1))
        hold.release()
        lines = alice.collect_until(r" PRIVMSG dave :welcome$")  # (the echo)
        assert not any(" 401 " in line for line in lines), lines


def test_a_message_to_several_targets_is_answered_in_their_order(
    nodes: Nodes, clients: Callable[..., Client]
) -> None:
    """The 301 of a recipient on another node comes from the log, the 401 and 403 from
    the command: still in the order the targets were named, as on one server."""
    n1, n2 = nodes("n1", "n2")
    alice, bob = clients(n1, "alice"), clients(n2, "bob")
    bob.send("AWAY :back in five")
    bob.expect(r" 306 bob ")
    alice.send("PRIVMSG nosuch,bob,#nosuch :hi")
    answers = [line.split(" ", 3)[1] for line in alice.sync()]
    assert answers == ["401", "301", "403"], answers


def test_a_labeled_message_s_echo_comes_before_later_lines_of_the_room(
    nodes: Nodes, clients: Callable[..., Client]
) -> None:
    """A labeled message waits for its entry to be applied, and its echo is the labeled
    answer: the bus goes on with the next entries at once, yet the echo comes before a
    line of the room that is later in the log."""
    n1, n2 = nodes("n1", "n2")
    alice = capped(clients(n1), "alice", "echo-message labeled-response batch")
    bob = clients(n2, "bob")
    alice.join("#r")
    bob.join("#r")
    alice.expect(r"^:bob!\S+ JOIN #r")
    # n1's bus stops at bob's "before": alice's line and bob's next come to it in one read,
    # and it applies them one right after the other.
    with held_bus(n1, only=lambda entry: "'before'" in str(entry.get("a"))) as hold:
        bob.send("PRIVMSG #r :before")
        assert hold.reached.wait(TIMEOUT)
        alice.send("@label=a1 PRIVMSG #r :mine")
        bob.expect(r"PRIVMSG #r :mine$")  # (in the log: n2 applied it)
        bob.send("PRIVMSG #r :theirs")
        bob.sync()  # (after it in the log)
        hold.release()
        lines = alice.collect_until(r"PRIVMSG #r :theirs$")
    mine = [line for line in lines if line.endswith("PRIVMSG #r :mine")]
    assert mine and "label=a1" in mine[0], lines


def test_a_labeled_room_message_redis_refuses_is_refused_in_the_room(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    (n1,) = nodes("n1")
    alice = capped(clients(n1), "alice", "labeled-response")
    alice.join("#r")
    redis_server.stop()
    alice.expect(r"NOTICE alice :The network cannot be reached")
    alice.send("@label=b1 PRIVMSG #r :into the void")
    alice.expect(r"^@label=b1 :\S+ 404 alice #r :The network cannot be reached just now")


def test_a_welcomed_user_is_registered_on_their_node(
    nodes: Nodes, clients: Callable[..., Client]
) -> None:
    """The welcome burst comes from the registration's entry as the node applies it: a
    client that has its 376 is a user there (and in the log, so everywhere), never a
    moment before."""
    (n1,) = nodes("n1")
    alice = clients(n1)
    with held_bus(n1, only=lambda entry: entry.get("f") == "World.mark_registered") as hold:
        alice.send_registration("alice")
        assert hold.reached.wait(TIMEOUT)
        assert not alice.quiet(0.2)  # no 001 while the registration waits to be applied
        hold.release()
        alice.expect(r" (376|422) alice ")
        assert n1.world.find_user("alice") is not None


def test_the_log_is_trimmed_up_to_the_slowest_node_and_no_further(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    """The log is kept only until every live node has applied it: it does not grow without
    end, and a node far behind misses nothing (here n2's bus is held for a while)."""
    n1, n2 = nodes("n1", "n2", lease_ms=1000)
    alice, bob = clients(n1, "alice"), clients(n2, "bob")
    alice.join("#r")
    bob.join("#r")
    alice.expect(r"^:bob!\S+ JOIN #r")
    assert n2.cluster is not None
    redis = redis_server.client(decode_responses=True)
    for number in range(300):
        alice.send(f"PRIVMSG #r :{number}")
    assert texts(bob, 300, r" PRIVMSG #r :(\d+)$") == [str(n) for n in range(300)]
    caught_up(redis_server, n1, n2)

    def trimmed() -> bool:  # (a trim happens with an append, once both nodes are past)
        alice.send("PRIVMSG #r :tick")
        bob.expect(r"PRIVMSG #r :tick$")
        return redis.xlen("ircish:log") < 300

    wait_for(trimmed)
    # n2 stops reading for longer than the old time-based trim would have kept (1 s).
    with held_bus(n2):
        for number in range(300, 400):
            alice.send(f"PRIVMSG #r :{number}")
        alice.sync()
        time.sleep(1.5)  # several lease ticks: n1 trims only up to where n2 is
    assert texts(bob, 100, r" PRIVMSG #r :(\d+)$") == [str(n) for n in range(300, 400)]


def test_whois_who_and_lusers_tell_which_node_a_user_is_on(
    nodes: Nodes, clients: Callable[..., Client], redis_server: RedisProcess
) -> None:
    n1, n2 = nodes("n1", "n2")
    alice, bob = clients(n1, "alice"), clients(n2, "bob")
    alice.join("#r")
    bob.join("#r")
    caught_up(redis_server, n1, n2)
    alice.send("WHOIS bob")
    whois = alice.collect_until(r" 318 alice bob ")
    assert any(" 312 alice bob n2.test " in line for line in whois), whois
    assert not any(" 317 " in line for line in whois)  # idle: only bob's node knows it
    alice.send("WHOIS alice")
    whois = alice.collect_until(r" 318 alice alice ")
    assert any(" 312 alice alice n1.test " in line for line in whois), whois
    assert any(" 317 alice alice " in line for line in whois), whois
    alice.send("WHO #r")
    who = alice.collect_until(r" 315 alice #r ")
    assert any(re.search(r" 352 alice #r u \S+ n2\.test bob ", line) for line in who), who
    assert any(re.search(r" 352 alice #r u \S+ n1\.test alice ", line) for line in who), who
    wait_for(lambda: n1.cluster is not None and n1.cluster.node_count == 2)  # (a lease tick)
    alice.send("LUSERS")
    lusers = alice.collect_until(r" 266 alice ")
    assert any("There are 2 users and 0 invisible on 2 servers" in line for line in lusers)
    assert any(" 255 alice :I have 1 clients and 1 servers" in line for line in lusers)
    assert any(" 265 alice 1 1 " in line for line in lusers), lusers
    assert any(" 266 alice 2 2 " in line for line in lusers), lusers


def test_three_node_processes_share_rooms_private_messages_modes_and_history(
    clients: Callable[..., Client], redis_server: RedisProcess, tmp_path: Path
) -> None:
    """The whole thing as an operator runs it: three ircish-server processes on one
    redis-server, a user on each."""
    processes = [node_process(tmp_path, redis_server.url, f"n{i}") for i in (1, 2, 3)]
    try:
        alice, bob, carol = (
            clients(node, nick) for node, nick in zip(processes, "abc", strict=True)
        )
        for client in (alice, bob, carol):
            client.send("CAP REQ :echo-message")
            client.sync()
        alice.join("#r")
        bob.join("#r")
        carol.join("#r")
        alice.expect(r"^:c!\S+ JOIN #r")
        bob.expect(r"^:c!\S+ JOIN #r")
        bob.send("PRIVMSG #r :one")
        for client in (alice, bob, carol):
            client.expect(r"^:b!\S+ PRIVMSG #r :one$")
        carol.send("PRIVMSG a :psst")
        alice.expect(r"^:c!\S+ PRIVMSG a :psst$")
        alice.send("MODE #r +m")
        for client in (alice, bob, carol):
            client.expect(r"^:a!\S+ MODE #r \+m$")
        bob.send("PRIVMSG #r :muted?")
        bob.expect(r" 404 b #r ")
        alice.send("KICK #r c :out")
        for client in (alice, bob, carol):
            client.expect(r"^:a!\S+ KICK #r c :out$")
        bob.send("NICK bee")
        alice.expect(r"^:b!\S+ NICK :?bee$")
        alice.send("CAP REQ :batch server-time message-tags draft/chathistory")
        alice.expect(r" ACK ")
        alice.send("CHATHISTORY LATEST #r * 10")
        batch = alice.collect_until(r"^:\S+ BATCH -")
        assert any(line.endswith(" PRIVMSG #r :one") for line in batch), batch
    finally:
        for process in processes:
            process.stop()
