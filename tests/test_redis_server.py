"""The `redis_server` fixture the cluster tests (issue 17) stand on: a real redis-server
that answers, keeps what it acknowledged across a restart and a crash, hangs when paused
and comes back when resumed, and is gone when killed."""

from __future__ import annotations

import socket
import time

import pytest
import redis
from redis_server import HOW_TO_GET_IT, REDIS_SERVER, RedisProcess, RedisStartError

if REDIS_SERVER is None:
    pytest.skip(HOW_TO_GET_IT, allow_module_level=True)  # one line for the module


def test_it_answers_on_its_own_port(redis_server: RedisProcess) -> None:
    client = redis_server.client()
    assert client.ping() is True
    assert client.info("server")["process_id"] == redis_server.pid
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "kill"])
def test_what_it_acknowledged_survives_a_restart(redis_server: RedisProcess, crash: bool) -> None:
    client = redis_server.client()
    client.set("greeting", "hello")
    client.rpush("lines", "one", "two")
    port, pid = redis_server.port, redis_server.pid
    # appendfsync always: a SIGKILL right after the answer loses nothing.
    if crash:
        redis_server.kill()
    redis_server.restart()
    assert (redis_server.port, redis_server.running) == (port, True)
    assert redis_server.pid != pid
    assert client.get("greeting") == b"hello"  # the client reconnects by itself
    assert client.lrange("lines", 0, -1) == [b"one", b"two"]


def test_paused_it_times_out_and_resumed_it_answers(redis_server: RedisProcess) -> None:
    client = redis_server.client(socket_timeout=0.5, retry=None)
    assert client.ping() is True
    redis_server.pause()
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        client.ping()
    assert 0.4 < time.monotonic() - started < 3
    redis_server.resume()
    assert client.ping() is True


def test_killed_its_port_refuses(redis_server: RedisProcess) -> None:
    redis_server.client().set("k", "v")
    assert redis_server.kill() == -9
    assert not redis_server.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", redis_server.port), timeout=2).close()


def test_a_paused_server_still_stops(redis_server: RedisProcess) -> None:
    redis_server.pause()
    assert redis_server.stop() == 0


def test_a_taken_port_is_said_at_restart(redis_server: RedisProcess) -> None:
    redis_server.stop()
    with socket.socket() as squatter:
        # As redis-server binds: past any TIME_WAIT, but never beside a listener.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", redis_server.port))
        squatter.listen()
        with pytest.raises(RedisStartError, match=r"port \d+ was taken; its log ends:\n"):
            redis_server.restart()
    # Free again: it starts, with its data.
    redis_server.restart()
    assert redis_server.client().ping() is True


def test_a_second_server_gets_its_own_port_and_folder(redis_server: RedisProcess, tmp_path) -> None:
    other = RedisProcess(tmp_path / "other")
    try:
        assert other.port != redis_server.port
        other.client().set("k", "other")
        assert redis_server.client().get("k") is None
    finally:
        other.close()
