"""Fixtures: a real server on 127.0.0.1 with an ephemeral port, raw-socket clients,
servers in subprocesses, and a real redis-server for the cluster tests. The helpers they
build on are in tests/helpers.py and tests/redis_server.py."""

from __future__ import annotations

import os

# Before anything imports ircish: every lock the servers make checks the lock order
# (ircish/locks.py), and `no_lock_order_violations` fails a test that broke it. Servers in
# subprocesses inherit the setting.
os.environ["IRCISH_CHECK_LOCKS"] = "1"

from collections.abc import Callable, Iterator, Mapping

import pytest
from helpers import COMMANDS, TIMEOUT, Client, Recorder, ServerProcess, make_config
from redis_server import HOW_TO_GET_IT, REDIS_SERVER, RedisProcess

from ircish import locks
from ircish.client.session import Session, SessionConfig
from ircish.commands import CommandSpec
from ircish.config import Config
from ircish.server import Server


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
def start_server() -> Iterator[Callable[..., Server]]:
    """Start servers with `make_config` settings; all are shut down after the test."""
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


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture
def connect(server: Server) -> Iterator[Callable[..., Client]]:
    """Open clients to `server` (registered if a nick is given); all closed afterwards."""
    clients: list[Client] = []

    def open_client(
        nick: str | None = None, target: Server | None = None, source: str | None = None
    ) -> Client:
        client = Client((target or server).address, source=source)
        clients.append(client)
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
