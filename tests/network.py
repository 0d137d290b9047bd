"""The single-node tests against a network of nodes (issue 17: "everything the single-node
tests assert about a room still holds when its members are spread over nodes").

With IRCISH_TEST_CLUSTER=N (N >= 2) in the environment, tests/conftest.py's `start_server`
starts N in-process nodes on the test's redis-server for every server a test asks for and
hands back the first; `connect` opens clients round-robin over the nodes (client 1 on
n1, client 2 on n2, ...). Clients wait for nothing more than on one server: a node
catches up with the shared log before it answers a command (ircish/cluster/node.py
`Cluster.settle`), so a test that sees a MODE on n1 and at once asks WHO on n3 gets what
it gets on one server. Only after a `sync` does a client wait until every node has
applied the log (`Network.settled`), for a test that reads the first node's world
instead of asking a client. After each test, every node's copy of
the network must be the same (`Network.same_copies`). Without the variable nothing here
runs and a server is one process, as always.

Every node has the same server name (the tests' `test.server`) and its own node name;
several servers in one test are networks with their own key prefix in the one Redis.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from helpers import TIMEOUT
from nodes import LEASE_MS, POLL, applied_upto, entry_id, log_end, shared_state

from ircish.config import ClusterConfig, Config
from ircish.server import Server

#: The number of nodes every server of a test is made of; 0: one process (the default).
CLUSTER_NODES = int(os.environ.get("IRCISH_TEST_CLUSTER") or 0)
if CLUSTER_NODES == 1 or CLUSTER_NODES < 0:
    raise ValueError(f"IRCISH_TEST_CLUSTER must be 0 (off) or at least 2, got {CLUSTER_NODES}")

#: How long a bus waits in one XREAD here (milliseconds; ircish.cluster.node.BLOCK_MS).
BUS_BLOCK_MS = 100


def node_config(
    config: Config, url: str, prefix: str, node: str, lease_ms: int = LEASE_MS
) -> Config:
    """`config` as node `node` of the network at `url` whose keys start with `prefix`. In a
    cluster the store is Redis and `store.path` must be null (ircish/config.py): a test's
    SQLite file is not used, whatever it holds (tests/cluster_suite.py lists such tests)."""
    cluster = ClusterConfig(redis=url, node=node, lease_ms=lease_ms, timeout_ms=5000, prefix=prefix)
    store = dataclasses.replace(config.store, path=None)
    return dataclasses.replace(config, cluster=cluster, store=store)


class Network:
    """The nodes one `start_server` call started, and where its next client goes."""

    def __init__(self, nodes: list[Server], client: redis.Redis, prefix: str) -> None:
        self.nodes = nodes
        self._redis = client
        self._log_key = f"{prefix}:log"
        self._next = 0

    def close(self) -> None:
        self._redis.close()

    def next_node(self) -> Server:
        """The node the next client connects to: n1, n2, ..., n1 again."""
        node = self.nodes[self._next % len(self.nodes)]
        self._next += 1
        return node

    def live(self) -> list[Server]:
        """The nodes a test has not shut down."""
        return [node for node in self.nodes if not node._stopping.is_set()]

    def same_copies(self) -> None:
        """Once the log stands still and every node has applied all of it, every node's
        copy of the network must be the same (as tests/test_cluster.py's `nodes` checks):
        a change made outside the log, or one that gave another answer on one node,
        shows here. Fails the test otherwise."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.settled()
            last = self._last_id()
            self.caught_up(last)
            # Every node exactly there before and after the copies: none is mid-entry.
            if self._all_at(last):
                copies = comparable([shared_state(node) for node in self.nodes])
                if self._all_at(last):
                    break
            if time.monotonic() > deadline:  # (a QUIT of a client closed at teardown came)
                pytest.fail("the shared log did not stand still after the test")
        for node, copy in zip(self.nodes[1:], copies[1:], strict=True):
            if copy != copies[0]:
                pytest.fail(
                    f"after the test, {node_name(node)}'s copy of the network differs from "
                    f"{node_name(self.nodes[0])}'s: {differences(copies[0], copy)}",
                    pytrace=False,
                )

    def _all_at(self, last: tuple[int, int]) -> bool:
        """The log ends at `last` and every node has applied it, and no more."""
        return self._last_id() == last and all(
            node.cluster is not None and entry_id(node.cluster.applied_id) == last
            for node in self.nodes
        )

    def _last_id(self) -> tuple[int, int]:
        return log_end(self._redis, self._log_key)

    def settled(self) -> None:
        """Wait until every change already on its way to the log (a message's sender goes
        on before it is appended: ircish/cluster/node.py `DETACHED`, so the log's end does
        not show it yet) has been applied by its node, then `caught_up`. Changes made
        meanwhile (other threads of a test keep talking) are not waited for."""
        waiting = {node: _in_flight(node) for node in self.live()}
        deadline = time.monotonic() + TIMEOUT
        while busy := [node_name(node) for node, old in waiting.items() if old & _in_flight(node)]:
            if time.monotonic() > deadline:
                pytest.fail(f"nodes {busy} did not apply changes on their way to the log")
            time.sleep(POLL)
        self.caught_up()

    def caught_up(self, last: tuple[int, int] | None = None) -> None:
        """Wait until every live node has applied the whole log as it is now (or up to
        `last`)."""
        applied_upto(self.live(), last or self._last_id())


def _in_flight(server: Server) -> set[int]:
    """The changes `server`'s users made that its bus has not applied yet."""
    return set() if server.cluster is None else server.cluster.in_flight()


def comparable(copies: list[dict]) -> list[dict]:
    """Nodes' copies of the network (`shared_state`) as they must be the same on every
    node: a room's window is cut where that node's writer has written up to (OwnKeeper),
    so each node keeps a different stretch of the same lines; the last lines that every
    node keeps are compared (and whether a window is complete is left out). As JSON, as a
    joining node gets one: a tuple and a list of the same items are the same."""
    copies = [json.loads(json.dumps(copy)) for copy in copies]
    shortest: dict[str, int] = {}
    for copy in copies:
        for room in copy["rooms"]:
            name = room["state"]["name"]
            shortest[name] = min(shortest.get(name, len(room["window"])), len(room["window"]))
    same = []
    for copy in copies:
        rooms = []
        for room in copy["rooms"]:
            kept = {key: value for key, value in room.items() if key != "complete"}
            keep = shortest[room["state"]["name"]]
            kept["window"] = room["window"][len(room["window"]) - keep :]
            rooms.append(kept)
        same.append({**copy, "rooms": rooms})
    return same


def node_name(server: Server) -> str:
    return server.cluster.node if server.cluster is not None else server.name


def differences(first: dict, second: dict, limit: int = 3) -> str:
    """Where two copies of the network (`shared_state`) differ: the first few records (a
    user by uid, a room by name) that are not equal."""
    found = []
    for part in sorted(first.keys() | second.keys()):
        mine, theirs = first.get(part), second.get(part)
        if mine == theirs:
            continue
        if not (isinstance(mine, list) and isinstance(theirs, list)):
            found.append(f"{part}: {mine!r} != {theirs!r}")
            continue
        mine_by, theirs_by = _by_name(mine), _by_name(theirs)
        for name in sorted(mine_by.keys() | theirs_by.keys()):
            if mine_by.get(name) != theirs_by.get(name):
                found.append(f"{part} {name}: {mine_by.get(name)!r} != {theirs_by.get(name)!r}")
    return "; ".join(found[:limit]) or "the same records in another order"


def _by_name(records: list) -> dict[str, object]:
    named: dict[str, object] = {}
    for index, record in enumerate(records):
        name: object = index
        if isinstance(record, dict):
            state = record.get("state")
            name = record.get("uid") or (state or {}).get("name") or record.get("name") or index
        named[str(name)] = record
    return named


def start_network(
    start_node: Callable[[Config], Server], config: Config, url: str, index: int, size: int
) -> Network:
    """Start `size` nodes of `config` (the `index`th network of the test) on Redis `url`."""
    prefix = "ircish" if index == 0 else f"ircish{index}"
    nodes = [start_node(node_config(config, url, prefix, f"n{n + 1}")) for n in range(size)]
    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT, decode_responses=True)
    return Network(nodes, client, prefix)


@contextlib.contextmanager
def short_bus_reads() -> Iterator[None]:
    """Buses that wait BUS_BLOCK_MS in a read, not a second, while the nodes started
    within run: a node that stops waits for its bus to come out of its read, and a second
    for each of every test's networks would be most of the run. All that changes is how
    often an idle bus asks Redis again."""
    from ircish.cluster import node  # (imports redis: only in cluster mode)

    usual = node.BLOCK_MS
    node.BLOCK_MS = BUS_BLOCK_MS
    try:
        yield
    finally:
        node.BLOCK_MS = usual


def shut_down(servers: list[Server], timeout: float) -> None:
    """Shut every node down at once: each waits for its bus to come out of a blocking
    read, and those waits one after another would add up."""
    threads = [
        threading.Thread(target=server.shutdown, kwargs={"timeout": timeout}) for server in servers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
