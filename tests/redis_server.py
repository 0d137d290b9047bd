"""A real redis-server for the cluster tests (issue 17): one process per test, on a free
loopback port, with its own folder. Its append-only file is written and fsynced at every
write (`--appendfsync always`), so `restart()` (and `kill()` then `restart()`, a crash)
keeps everything Redis acknowledged; `pause()` stops it without closing a socket, as a
Redis that hangs does. Not tests/redis.py, which would shadow the redis package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

#: The redis-server binary, or None (the tests that need it are skipped).
REDIS_SERVER = shutil.which("redis-server")
HOW_TO_GET_IT = "redis-server not installed (apt-get install redis-server)"
#: For a test that needs it; a module of such tests skips itself once instead, one line
#: in the report: `if REDIS_SERVER is None: pytest.skip(HOW_TO_GET_IT, allow_module_level=True)`.
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason=HOW_TO_GET_IT)

#: The longest a start waits for PING (replaying a long append-only file takes a while).
START_TIMEOUT = 10.0
#: The longest stop() waits after SIGTERM before SIGKILL.
STOP_TIMEOUT = 10.0
#: Ports tried when another process takes the free one between our probe and the bind.
PORT_ATTEMPTS = 5
#: What redis-server logs when its port is taken.
PORT_TAKEN = "Address already in use"


def free_port() -> int:
    """A loopback port nobody listens on now (another process may take it before we do)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisStartError(RuntimeError):
    """redis-server exited at start, or did not answer PING in time; the message ends
    with the tail of its log."""


class RedisProcess:
    """redis-server in a subprocess with `directory` as its working folder (the append-only
    file) and `directory/redis.log` as its stdout and stderr, kept across restarts. Started
    on a free port on construction; the port stays the same through `restart()`."""

    def __init__(self, directory: Path) -> None:
        if REDIS_SERVER is None:
            raise RedisStartError(HOW_TO_GET_IT)
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "redis.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._clients: list[redis.Redis] = []
        for _attempt in range(PORT_ATTEMPTS):
            if self._start(free_port()):
                return
        raise RedisStartError(f"no free port after {PORT_ATTEMPTS} tries{self._log_tail(0)}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "redis-server is not running"
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, **options: Any) -> redis.Redis:
        """A client of this server (5 s socket timeout unless `options` say otherwise), closed
        by `close()`. redis-py retries a command that failed on a connection or timeout
        error, 10 times in 8.x, unless given `retry=None`."""
        client = redis.Redis.from_url(self.url, **{"socket_timeout": 5, **options})
        self._clients.append(client)
        return client

    def stop(self) -> int | None:
        """SIGTERM (Redis fsyncs its append-only file and exits 0), SIGKILL past
        STOP_TIMEOUT. The exit status; None if it was not running."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.terminate()
            if self._paused:
                self.resume()  # a stopped process takes no signal but SIGKILL and SIGCONT
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        return self._reap()

    def kill(self) -> int | None:
        """SIGKILL, as a crash: no shutdown, only what the append-only file already holds."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.kill()
        return self._reap()

    def restart(self) -> None:
        """Stop (if it still runs) and start again on the same port and folder: it reloads
        its append-only file. RedisStartError if it cannot (the port was taken meanwhile)."""
        self.stop()
        if not self._start(self.port):
            raise RedisStartError(f"port {self.port} was taken{self._log_tail(0)}")

    def pause(self) -> None:
        """SIGSTOP: connections still open (and are accepted), nothing is answered."""
        os.kill(self.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        """Close every client `client()` made, then stop the server."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        self.stop()

    def _start(self, port: int) -> bool:
        """Start redis-server on `port`; False if the port was taken, True once it answers
        PING. RedisStartError if it exits for any other reason or answers too late."""
        assert REDIS_SERVER is not None
        start_of_log = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Append: the log of every start stays, for a test that fails after a restart.
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    *("--port", str(port), "--bind", "127.0.0.1"),
                    *("--dir", str(self.directory)),
                    *("--appendonly", "yes", "--appendfsync", "always"),
                    *("--save", ""),  # no RDB snapshots: the append-only file is the data
                    *("--daemonize", "no", "--protected-mode", "no"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.directory,
            )
        self.port = port
        self._paused = False
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers_ping():
            if self._proc.poll() is not None:
                status = self._reap()
                if PORT_TAKEN in self._log_since(start_of_log):
                    return False
                raise RedisStartError(
                    f"redis-server exited at start ({status}){self._log_tail(start_of_log)}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RedisStartError(
                    f"redis-server did not answer PING within {START_TIMEOUT} s"
                    f"{self._log_tail(start_of_log)}"
                )
            time.sleep(0.02)
        return True

    def _answers_ping(self) -> bool:
        """It is ours that answers (not another test's, which won the port) and is ready
        (not still loading its append-only file)."""
        assert self._proc is not None
        probe = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=None,
        )
        try:
            ours = probe.info("server")["process_id"] == self._proc.pid
            return ours and probe.ping()
        except redis.RedisError:
            return False
        finally:
            probe.close()

    def _reap(self) -> int:
        assert self._proc is not None
        status = self._proc.wait()
        self._paused = False
        return status

    def _log_since(self, offset: int) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")

    def _log_tail(self, offset: int, lines: int = 20) -> str:
        tail = self._log_since(offset).splitlines()[-lines:]
        return "; its log ends:\n" + "\n".join(tail) if tail else "; its log is empty"
