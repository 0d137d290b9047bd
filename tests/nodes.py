"""Nodes of one network in the tests (issue 17): their config, waiting until every node
has applied the log, and a node's copy of the network to compare with another's."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable

import pytest
import redis
from helpers import TIMEOUT, make_config
from redis_server import RedisProcess

from ircish.config import ClusterConfig, Config
from ircish.server import Server

#: Short leases, so a dead node's users leave within seconds in the tests.
LEASE_MS = 2000
#: How often a wait looks at the nodes again (seconds): applying an entry takes far less.
POLL = 0.002


def cluster_config(url: str, node: str, lease_ms: int = LEASE_MS, **settings: object) -> Config:
    config = make_config(name=f"{node}.test", **settings)
    cluster = ClusterConfig(redis=url, node=node, lease_ms=lease_ms, timeout_ms=5000)
    return dataclasses.replace(config, cluster=cluster)


def shared_state(server: Server) -> dict:
    """A node's copy of the network, as a joining node would get it, but for what a user
    not yet registered has set on their own node only (USER's username and realname:
    the network learns them with the registration)."""
    assert server.cluster is not None
    state = server.cluster.codec.export_state()
    for user in state["users"]:
        if not user["registered"]:
            user["username"] = user["realname"] = None
    return state


def entry_id(text: str) -> tuple[int, int]:
    """A stream entry's id (`ms-seq`) as something that sorts in the log's order."""
    ms, seq = text.split("-")
    return int(ms), int(seq)


def log_end(client: redis.Redis, key: str = "ircish:log") -> tuple[int, int]:
    """The id of the last entry ever appended to the log at `key`."""
    return entry_id(client.xinfo_stream(key)["last-generated-id"])


def applied_upto(servers: Iterable[Server], last: tuple[int, int]) -> None:
    """Wait until every node of `servers` has applied the log up to `last`; fail the test
    past TIMEOUT (a node that stopped applying is a bug, not a slow machine)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        behind = [
            server.cluster.node
            for server in servers
            if server.cluster is not None and entry_id(server.cluster.applied_id) < last
        ]
        if not behind:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"nodes {behind} did not apply the shared log up to {last}")
        time.sleep(POLL)


def caught_up(redis_server: RedisProcess, *servers: Server) -> None:
    """Wait until every node has applied the whole log, and the log has stopped growing
    for a moment (a test that reads the nodes' worlds directly, not through a client:
    a client's command is answered once its node has caught up)."""
    client = redis_server.client(decode_responses=True)
    seen = None
    while seen != (now := log_end(client)):
        seen = now
        applied_upto(servers, now)
        time.sleep(0.05)
