"""Fixtures: a real server on 127.0.0.1 with an ephemeral port, raw-socket clients, and
servers in subprocesses. The helpers they build on are in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from helpers import Client, ServerProcess, make_config

from ircish.config import Config
from ircish.server import Server


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """Start servers with `make_config` settings; all are shut down after the test."""
    servers: list[Server] = []

    def start(config: Config | None = None, **settings: object) -> Server:
        server = Server(config or make_config(**settings))
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
