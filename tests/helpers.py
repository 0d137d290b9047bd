"""What the tests share: a test config, a raw-socket IRC `Client`, a server in a subprocess
(`ServerProcess`), and polling helpers. Every read has a timeout; waits poll for a condition.

Test modules import from here (`from helpers import Client`); tests/conftest.py holds only
the fixtures built on these.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest

from ircish import locks
from ircish import protocol as p
from ircish.accounts import new_credentials
from ircish.client import session as client_session
from ircish.commands import command_table
from ircish.config import (
    AccountsConfig,
    Config,
    HistoryConfig,
    Limits,
    LogConfig,
    OperatorConfig,
    RoomConfig,
    ServerConfig,
    StoreConfig,
)
from ircish.connection import Connection
from ircish.dispatch import Dispatcher
from ircish.events import Event
from ircish.passwords import hash_password
from ircish.protocol import Message, parse
from ircish.render import render
from ircish.server import Server
from ircish.store import AccountState
from ircish.world import World

#: The server's command table, as ircish-server builds it.
COMMANDS = command_table()
TIMEOUT = 5.0
#: The name of every test server (see `make_config`).
SERVER = "test.server"
#: The host part of every prefix: all test clients come from loopback.
HOST = "127.0.0.1"


#: The time a text session's line starts with; no IRC line starts so.
TEXT_STAMP = re.compile(r"^\d\d:\d\d ")


def unstamped(line: str) -> str:
    """A text session's line without the time before it (an IRC line as it is)."""
    return TEXT_STAMP.sub("", line, count=1)


def prefix(nick: str, user: str = "u") -> str:
    """The prefix of `nick`'s lines: IRC test clients register as user `u`."""
    return f"{nick}!{user}@{HOST}"


def make_config(
    *,
    rooms: tuple[RoomConfig, ...] = (),
    log_level: str = "WARNING",
    history: HistoryConfig | None = None,
    store: StoreConfig | None = None,
    accounts: AccountsConfig | None = None,
    **settings: object,
) -> Config:
    """A test config: ephemeral port; keyword settings go to `server` or `limits` by name;
    `history` and `store` sections as given (default: their defaults, a memory store)."""
    server_fields = {f.name for f in dataclasses.fields(ServerConfig)}
    server_kw = {k: v for k, v in settings.items() if k in server_fields}
    # Tests open many clients from 127.0.0.1 and send bursts: the per-address
    # limit and flood control are off unless a test turns them on.
    limits_kw = {"max_clients_per_ip": 0, "flood_rate": 0.0}
    limits_kw.update({k: v for k, v in settings.items() if k not in server_fields})
    server = ServerConfig(**{"name": SERVER, "port": 0, **server_kw})
    return Config(
        server=server,
        limits=Limits(**limits_kw),
        rooms=rooms,
        log=LogConfig(level=log_level),
        history=history or HistoryConfig(),
        store=store or StoreConfig(),
        accounts=accounts or AccountsConfig(),
    )


#: The password of `root`, the server operator of `oper_config` servers.
OPER_PASSWORD = "correct horse"


@functools.cache
def oper_hash() -> str:
    """OPER_PASSWORD's hash, made once (scrypt is slow by design)."""
    return hash_password(OPER_PASSWORD)


def oper_config(hosts: tuple[str, ...] = ("*",), **settings: object) -> Config:
    """`make_config(**settings)` with one server operator: `root`, OPER_PASSWORD, `hosts`."""
    operators = (OperatorConfig(name="root", password=oper_hash(), hosts=hosts),)
    return dataclasses.replace(make_config(**settings), operators=operators)


#: The password of the accounts `add_account` makes.
ACCOUNT_PASSWORD = "correct horse battery"


@functools.cache
def account_credentials(password: str) -> tuple[str, object]:
    """The scrypt hash and SCRAM keys of `password`, made once (scrypt is slow by design)."""
    return new_credentials(password)


def add_account(server: Server, name: str, password: str = ACCOUNT_PASSWORD) -> None:
    """An account kept by `server`, as if registered earlier."""
    encoded, scram = account_credentials(password)
    assert server.world.accounts.create(AccountState(name, encoded, scram))  # type: ignore[arg-type]


class Settling(Protocol):
    """A network of nodes as its clients wait for it (tests/network.py `Network`)."""

    def settled(self) -> None:
        """No node has a change on the way to the log, and every node has caught up."""


class Client:
    """A raw socket client that speaks lines and waits for expected ones."""

    #: Keep the `HH:MM ` before each text-mode line (most tests compare the text).
    keep_stamps = False
    #: In cluster mode, the network of nodes this client is on (tests/network.py): after a
    #: `sync` the client waits until every node has applied the log, for a test that
    #: looks into a server's world (the first node's). None: one server.
    network: Settling | None = None

    def __init__(
        self, address: tuple[str, int], nick: str | None = None, source: str | None = None
    ) -> None:
        self.sock = socket.create_connection(
            address, timeout=TIMEOUT, source_address=(source, 0) if source else None
        )
        self.nick = nick
        self.buffer = b""
        self.lines: list[str] = []  # everything received, in order

    def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode() + b"\r\n"
        self.sock.sendall(data)

    def _read_more(self, deadline: float) -> bool:
        """Receive once; False on EOF. Raises TimeoutError past the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            data = self.receive()
        except TimeoutError:
            raise TimeoutError from None
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        self.buffer += data
        *complete, self.buffer = self.buffer.split(b"\n")
        decoded = (line.rstrip(b"\r").decode("utf-8", "replace") for line in complete)
        self.lines.extend(decoded if self.keep_stamps else map(unstamped, decoded))
        return True

    def receive(self) -> bytes:
        """One recv (a subclass may count what arrives)."""
        return self.sock.recv(65536)

    def _read_until(self, pattern: str, timeout: float) -> tuple[list[str], re.Match[str]]:
        """Consume lines up to the first matching `pattern`: those lines and the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while True:
            while self.lines:
                line = self.lines.pop(0)
                got.append(line)
                match = regex.search(line)
                if match:
                    return got, match
            try:
                if not self._read_more(deadline):
                    pytest.fail(f"connection closed waiting for {pattern!r}; got {got}")
            except TimeoutError:
                pytest.fail(f"timed out waiting for {pattern!r}; got {got}")

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """Consume lines until one matches `pattern` (re.search); fail on timeout/EOF."""
        return self._read_until(pattern, timeout)[1]

    def collect_until(self, pattern: str, timeout: float = TIMEOUT) -> list[str]:
        """All lines up to and including the first matching `pattern`."""
        return self._read_until(pattern, timeout)[0]

    def expect_closed(self, timeout: float = TIMEOUT) -> list[str]:
        """Read until the server closes the connection; return the lines seen."""
        deadline = time.monotonic() + timeout
        got = []
        try:
            while self._read_more(deadline):
                pass
        except TimeoutError:
            pytest.fail(f"server did not close the connection; got {self.lines}")
        got, self.lines = self.lines, []
        return got

    def quiet(self, timeout: float = 0.3) -> list[str]:
        """Lines that arrive within `timeout` (used to show nothing more came)."""
        deadline = time.monotonic() + timeout
        try:
            while self._read_more(deadline):
                pass
        except TimeoutError:
            pass
        got, self.lines = self.lines, []
        return got

    def send_registration(self, nick: str, user: str = "u", realname: str = "Real Name") -> None:
        """Send NICK and USER without waiting for the answer."""
        self.nick = nick
        self.send(f"NICK {nick}")
        self.send(f"USER {user} 0 * :{realname}")

    def register(self, nick: str, user: str = "u", realname: str = "Real Name") -> None:
        self.send_registration(nick, user, realname)
        self.expect(r" 376 | 422 ")

    def sync(self) -> list[str]:
        """Round-trip a PING; the lines that arrived before the PONG.

        The server handles one connection's lines in order, so everything sent
        earlier has been handled (and its replies are among the lines returned).
        In cluster mode, see `_network_sync`.
        """
        if self.network is not None:
            return self._network_sync()
        return self._ping()

    def _ping(self) -> list[str]:
        token = f"sync{time.monotonic_ns()}"
        self.send(f"PING {token}")
        return self.collect_until(rf"^:(\S+) PONG \1 {token}$")[:-1]

    def _network_sync(self) -> list[str]:
        """`sync` on a network of nodes. The PONG comes after what this client's messages
        caused and after everything that happened anywhere before the PING (the node
        catches up with the log first: ircish/cluster/node.py `Cluster.settle`), as on one
        server; then every node applies the log as far as it goes, for a test that reads
        the first node's world rather than asking a client."""
        assert self.network is not None
        lines = self._ping()
        self.network.settled()
        return lines

    def messages(self) -> list[Message]:
        """`sync`, parsed."""
        return [parse(line) for line in self.sync()]

    def join(self, *rooms: str) -> None:
        """Join `rooms` one by one, waiting for the end of each one's NAMES."""
        for room in rooms:
            self.send(f"JOIN {room}")
            self.expect(rf" {p.RPL_ENDOFNAMES} {self.nick} {re.escape(room)} ")

    def names(self, room: str) -> list[str]:
        """The nicks a NAMES of `room` lists (after dropping what came before)."""
        self.sync()
        self.send(f"NAMES {room}")
        lines = self.collect_until(rf" {p.RPL_ENDOFNAMES} ")
        return [
            nick
            for msg in map(parse, lines)
            if msg.command == p.RPL_NAMREPLY
            for nick in msg.params[3].split()
        ]

    def close(self) -> None:
        self.sock.close()


def capped(
    connect: Callable[..., Client], nick: str, *caps: str, target: object | None = None
) -> Client:
    """A client of `connect` (the fixture; `target`: another server) registered with `caps`
    negotiated (CAP LS 302, REQ, END)."""
    client = connect(target=target) if target is not None else connect()
    client.send("CAP LS 302")
    if caps:
        client.send(f"CAP REQ :{' '.join(caps)}")
        client.expect(rf"^:{SERVER} CAP \* ACK :")
    client.send_registration(nick)
    client.send("CAP END")
    client.expect(r" (376|422) ")
    return client


def settle(*clients: Client) -> None:
    """Drop whatever each client has been sent so far (JOINs, NAMES, ...)."""
    for client in clients:
        client.sync()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Baseline:
    """The test process's threads and descriptors now (the server runs in this process)."""

    def __init__(self) -> None:
        self.threads = set(threading.enumerate())
        self.fds = open_fds()

    def wait_restored(self, timeout: float = TIMEOUT) -> None:
        """Poll until no thread started since is alive and no more descriptors are open."""
        deadline = time.monotonic() + timeout
        while True:
            extra = [t.name for t in threading.enumerate() if t not in self.threads]
            fds = open_fds()
            if not extra and fds <= self.fds:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"not back to baseline: threads {extra[:10]}, fds {fds} > {self.fds}")
            time.sleep(0.01)


def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll `condition` until true; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.01)


#: The checkout under test.
ROOT = Path(__file__).resolve().parent.parent
#: `ircish-server` as a subprocess (the module form, so no console script is needed).
SERVER_COMMAND = [sys.executable, "-m", "ircish.cli"]
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def example_config() -> str:
    """examples/config.yaml as a test runs it: its WebSocket port is any free one, not 8097
    (tests run in parallel)."""
    text = (ROOT / "examples" / "config.yaml").read_text(encoding="utf-8")
    fixed = "websocket:\n  port: 8097\n"
    assert fixed in text, "examples/config.yaml's websocket section changed"
    return text.replace(fixed, "websocket:\n  port: 0\n")


class ServerProcess:
    """`ircish-server` in a subprocess: its config written to `workdir/config.yaml`, its
    stdout and stderr (what a terminal would show: the log and the cli's lines) to
    `workdir/server.log`, a file that never fills up. Started with `--port 0` unless
    `port` is given; `port` is read back from its "listening on" line."""

    def __init__(
        self,
        workdir: Path,
        config_text: str = "",
        *args: str,
        port: int = 0,
        log_level: str | None = "INFO",
        preexec_fn: Callable[[], None] | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(config_text)
        self.log_path = workdir / "server.log"
        self._log = open(self.log_path, "w+b")  # noqa: SIM115 (closed in kill/stop)
        self.proc = subprocess.Popen(
            [
                *SERVER_COMMAND,
                "-c",
                str(self.config_path),
                "--port",
                str(port),
                *(["--log-level", log_level] if log_level is not None else []),
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            # The code under test, whatever the working directory or the installed copy.
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})},
            preexec_fn=preexec_fn,
            # Its own folder unless told: a relative store path (the example config's
            # ircish.db) must land in the temp dir, never in the checkout.
            cwd=cwd or workdir,
        )
        self.port = self._wait_for_port()
        self.address = ("127.0.0.1", self.port)

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + TIMEOUT
        while True:
            found = _LISTENING.search(self.log())
            if found:
                return int(found[1])
            if self.proc.poll() is not None:
                text = self.log()
                self._log.close()
                pytest.fail(f"the server exited at start ({self.proc.returncode}): {text}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the server did not start: {self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        """Everything the server has written to stdout and stderr so far."""
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        """Send `signum` and wait for the exit status (see `wait`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.wait(timeout)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """The exit status, once it has exited; killed, and the test failed, past `timeout`.
        Fails the test too if the server took locks out of order (ircish/locks.py)."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the server did not exit within {timeout} s")
        finally:
            self._log.close()
        self.check_lock_order()
        return status

    def check_lock_order(self) -> None:
        log = self.log()
        if locks.VIOLATION_MARKER in log:
            pytest.fail(log[log.index(locks.VIOLATION_MARKER) :][:3000], pytrace=False)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self.check_lock_order()


# -- the layers above the transport, with no socket --------------------------------------------


class MemoryTransport:
    """A transport with no socket: lines are handed to the connection directly
    (`Connection.handle_line`), and what the server sends is kept in `sent`."""

    kind = "memory"
    frame = None
    received = 0

    def __init__(self) -> None:
        self.sent = bytearray()
        self.read_side_shut = False

    def fileno(self) -> int:
        return -1

    def bind(self, send_raw: object, opened: object, answer: object) -> None:
        pass

    def farewell(self) -> bytes:
        return b""

    speaking = True

    def receive(self) -> list[bytes]:
        raise AssertionError("a Harness has no reader thread")

    def wait_readable(self, timeout: float) -> bool:
        raise AssertionError("a Harness has no reader thread")

    def send(self, data: bytes | memoryview) -> int:
        self.sent += data
        return len(data)

    def shutdown_read(self) -> None:
        self.read_side_shut = True

    def close(self) -> None:
        pass


class InlineSenders:
    """Stands in for the SenderPool: writes an outbox at once, in the calling thread."""

    def schedule(self, conn: Connection) -> None:
        conn._flush()

    def park(self, conn: Connection) -> None:
        raise AssertionError("a MemoryTransport never fills up")


class Peer:
    """One client of a `Harness`: a real `Connection` (session, outbox, delivery) over a
    `MemoryTransport`, with no reader thread: `line` does what the reader does with one
    line, and what the client is sent is kept as bytes."""

    def __init__(self, harness: Harness, host: str, port: int) -> None:
        self.harness = harness
        self.transport = MemoryTransport()
        self.conn = Connection(
            self.transport,
            (host, port),
            dispatcher=harness.dispatcher,
            senders=InlineSenders(),  # type: ignore[arg-type]
            limits=harness.config.limits,
            on_finish=harness.finished,
        )
        self.user = self.conn.user
        self.session = self.conn.session

    @property
    def data(self) -> bytearray:
        """Everything sent to this client not yet taken by `lines`."""
        return self.transport.sent

    @property
    def closed(self) -> bool:
        return self.conn.closing

    def line(self, text: str | bytes) -> None:
        """Receive one line (without its line ending), as the reader thread would hand it
        on. Flood control waits for real, so harness tests leave it off unless they test it."""
        self.conn.handle_line(text.encode("utf-8") if isinstance(text, str) else text)

    def lines(self) -> list[str]:
        """The lines this client was sent since the last call."""
        text = bytes(self.data).decode("utf-8")
        self.data.clear()
        assert not text or text.endswith("\r\n"), text[-80:]
        return [unstamped(line) for line in text.split("\r\n")[:-1]]

    def messages(self) -> list[Message]:
        return [parse(line) for line in self.lines()]

    def register(self, nick: str) -> Peer:
        self.line(f"NICK {nick}")
        self.line(f"USER u 0 * :{nick}")
        assert self.user.registered, self.lines()
        self.lines()
        return self

    def hang_up(self, reason: str = "Connection closed") -> None:
        """The client is gone: what the reader does when its connection ends."""
        self.conn.finish(reason)


class Harness:
    """A server with no socket and no thread: the `World`, the `Dispatcher` with the real
    command table, and `Peer`s (connections over memory) fed lines one at a time.
    Every relayed event the world records is kept in `events`."""

    def __init__(self, config: Config | None = None, **settings: object) -> None:
        self.config = config or make_config(**settings)
        self.events: list[Event] = []
        self.world = World(
            ((room.name, room.topic) for room in self.config.rooms),
            record=self.events.append,
            server_name=self.config.server.name,
        )
        self.peers: list[Peer] = []
        self.dispatcher = Dispatcher(COMMANDS, self.world, self.config, lambda: len(self.peers))

    def connect(self, nick: str | None = None, host: str = HOST) -> Peer:
        peer = Peer(self, host, port=len(self.peers) + 1)
        self.peers.append(peer)
        return peer.register(nick) if nick else peer

    def finished(self, conn: Connection, reason: str) -> None:
        """A connection's end, as the server takes it: its user leaves the world."""
        if conn.user.nick is not None:
            self.world.remove_user(conn.user, reason)


class FakeLink:
    """Stands in for ircish-client's TCP link: keeps what the session sends."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, msg: Message) -> None:
        self.sent.append(msg)

    def close(self) -> None:
        pass

    def joins(self) -> list[list[str]]:
        return [list(msg.params) for msg in self.sent if msg.command == "JOIN"]

    def last(self, command: str) -> Message:
        return next(msg for msg in reversed(self.sent) if msg.command == command)


class Recorder:
    """An ircish-client Session listener that keeps every event (from any thread)."""

    def __init__(self) -> None:
        self.events: list[client_session.Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: client_session.Event) -> None:
        with self.lock:
            self.events.append(event)

    def rendered(self) -> list[str]:
        """The incoming lines as the client renders them."""
        with self.lock:
            events = list(self.events)
        return [
            line
            for event in events
            if isinstance(event, client_session.Incoming)
            for line in [render(event.msg, event.me)]
            if line
        ]

    def notes(self) -> list[str]:
        with self.lock:
            return [event.text for event in self.events if isinstance(event, client_session.Note)]
