"""Nodes of one network in the tests (issue 17): their config, waiting until every node
has applied the log, and a node's copy of the network to compare with another's."""

from __future__ import annotations

import dataclasses
import time

from helpers import make_config, wait_for
from redis_server import RedisProcess

from ircish.config import ClusterConfig, Config
from ircish.server import Server

#: Short leases, so a dead node's users leave within seconds in the tests.
LEASE_MS = 2000


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


def _id(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def caught_up(redis_server: RedisProcess, *servers: Server) -> None:
    """Wait until every node has applied the whole log, and the log has stopped growing
    for a moment. A node answers a lookup (is bob online?) from its own copy, which may be
    a moment behind the log: a test that has just seen bob registered on n2 waits for n1
    to know it too (a client has its 376 just before its registration goes in the log)."""
    client = redis_server.client(decode_responses=True)

    def last() -> tuple[int, int]:
        return _id(client.xinfo_stream("ircish:log")["last-generated-id"])

    seen = None
    while seen != (now := last()):
        seen = now
        wait_for(
            lambda: all(
                _id(server.cluster.applied_id) >= now
                for server in servers
                if server.cluster is not None
            )
        )
        time.sleep(0.05)
