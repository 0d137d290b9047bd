"""Fixtures: a real server on 127.0.0.1 with an ephemeral port, raw-socket clients,
servers in subprocesses, and a real redis-server for the cluster tests. The helpers they
build on are in tests/helpers.py and tests/redis_server.py."""

from __future__ import annotations

import contextlib
import os

# Before anything imports ircish: every lock the servers make checks the lock order
# (ircish/locks.py), and `no_lock_order_violations` fails a test that broke it. Servers in
# subprocesses inherit the setting.
os.environ["IRCISH_CHECK_LOCKS"] = "1"

from collections.abc import Callable, Iterator, Mapping

import pytest
from cluster_suite import cluster_mark, unknown_names
from helpers import COMMANDS, TIMEOUT, Client, Recorder, ServerProcess, make_config
from network import CLUSTER_NODES, Network, short_bus_reads, shut_down, start_network
from redis_server import HOW_TO_GET_IT, REDIS_SERVER, RedisProcess

from ircish import locks
from ircish.client.session import Session, SessionConfig
from ircish.commands import CommandSpec
from ircish.config import Config
from ircish.server import Server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "single_node(reason): looks at one server process; skipped with IRCISH_TEST_CLUSTER",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With IRCISH_TEST_CLUSTER: skip what needs one process or a feature the network does
    not share yet, and expect the known server bugs to fail (tests/cluster_suite.py)."""
    if not CLUSTER_NODES:
        return
    unknown = unknown_names(items)
    if unknown:
        raise pytest.UsageError(f"tests/cluster_suite.py names no such test: {unknown}")
    for item in items:
        mark = cluster_mark(item)
        if mark is not None:
            item.add_marker(mark)


@pytest.fixture(autouse=True)
def no_lock_order_violations() -> Iterator[None]:
    """Fail any test during which a thread took locks out of the order in ircish/locks.py."""
    assert locks.CHECKING, "IRCISH_CHECK_LOCKS was set too late"
    before = len(locks.violations)
    yield
    found = locks.violations[before:]
    del locks.violations[before:]
    if found:
        pytest.fail("locks taken out of order:\n" + "\n".join(found), pytrace=False)


@pytest.fixture
def start_server(request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    """Start servers with `make_config` settings; all are shut down after the test.
    With IRCISH_TEST_CLUSTER=N each is a network of N nodes, the first handed back (see
    tests/network.py); a config that names its own cluster is one node as given."""
    if CLUSTER_NODES:
        yield from _start_networks(request)
        return
    servers: list[Server] = []

    def start(
        config: Config | None = None,
        commands: Mapping[str, CommandSpec] = COMMANDS,
        **settings: object,
    ) -> Server:
        server = Server(config or make_config(**settings), commands)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown(timeout=2.0)


def _start_networks(request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    """`start_server` in cluster mode: the networks go to `networks`, by first node."""
    networks: dict[Server, Network] = request.getfixturevalue("networks")
    # Asked for now, not at the first start: then it is stopped after the nodes, not
    # under their feet.
    redis_server: RedisProcess = request.getfixturevalue("redis_server")
    servers: list[Server] = []
    # Only while networks of this mode run (tests/test_cluster.py's nodes keep their own).
    short_reads = contextlib.ExitStack()

    def start_node(config: Config, commands: Mapping[str, CommandSpec] = COMMANDS) -> Server:
        server = Server(config, commands)
        servers.append(server)  # shut down even if it fails to start
        server.start()
        return server

    def start(
        config: Config | None = None,
        commands: Mapping[str, CommandSpec] = COMMANDS,
        **settings: object,
    ) -> Server:
        config = config or make_config(**settings)
        if config.cluster is not None:  # a test of the cluster itself (tests/test_cluster.py)
            return start_node(config, commands)
        if not networks:
            short_reads.enter_context(short_bus_reads())
        network = start_network(
            lambda node: start_node(node, commands),
            config,
            redis_server.url,
            len(networks),
            CLUSTER_NODES,
        )
        networks[network.nodes[0]] = network
        return network.nodes[0]

    with short_reads:
        yield start
        try:
            if redis_server.running:
                for network in networks.values():
                    if network.live() == network.nodes:
                        network.same_copies()
        finally:
            shut_down(servers, timeout=2.0)


@pytest.fixture
def networks() -> Iterator[dict[Server, Network]]:
    """Cluster mode: the networks a test started, by the node `start_server` returned."""
    found: dict[Server, Network] = {}
    yield found
    for network in found.values():
        network.close()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture
def connect(server: Server, request: pytest.FixtureRequest) -> Iterator[Callable[..., Client]]:
    """Open clients to `server` (registered if a nick is given); all closed afterwards.
    In cluster mode they go round-robin over its network's nodes."""
    clients: list[Client] = []
    networks: dict[Server, Network] = request.getfixturevalue("networks") if CLUSTER_NODES else {}

    def open_client(
        nick: str | None = None, target: Server | None = None, source: str | None = None
    ) -> Client:
        network = networks.get(target or server)
        node = (target or server) if network is None else network.next_node()
        client = Client(node.address, source=source)
        clients.append(client)
        if network is not None:
            client.network = network
        if nick:
            client.register(nick)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Every client a test opens goes here and is closed afterwards."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


@pytest.fixture
def server_process(tmp_path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `ircish-server` subprocesses (see `ServerProcess`); any left running is killed."""
    started: list[ServerProcess] = []

    def start(config_text: str = "", *args: str, **kwargs: object) -> ServerProcess:
        proc = ServerProcess(tmp_path / f"server{len(started)}", config_text, *args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def open_session(server: Server) -> Iterator[Callable[..., tuple[Session, Recorder]]]:
    """Start ircish-client Sessions (no terminal) registered on `server`, in `rooms`, with
    other SessionConfig `settings` (reconnect off unless given); they are registered (and
    have logged in, or failed to, if told to) when returned."""
    sessions: list[Session] = []

    def start(nick: str, *rooms: str, **settings: object) -> tuple[Session, Recorder]:
        recorder = Recorder()
        options: dict = {"reconnect": False, **settings}
        config = SessionConfig(nick=nick, port=server.address[1], rooms=rooms, **options)
        session = Session(config, recorder)
        session.start()
        sessions.append(session)
        assert session.wait_registered(TIMEOUT)
        assert session.sync(TIMEOUT)
        return session, recorder

    yield start
    for session in sessions:
        session.quit()


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisProcess]:
    """A real redis-server on a free loopback port, its data in tmp_path/redis (see
    `RedisProcess`); stopped, with every client it made closed, after the test. Skipped
    where redis-server is not installed."""
    if REDIS_SERVER is None:
        pytest.skip(HOW_TO_GET_IT)
    process = RedisProcess(tmp_path / "redis")
    yield process
    process.close()
