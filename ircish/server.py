"""The listeners: accept threads, housekeeping thread, connection registry, shutdown.

`Server.start()` binds and starts the threads; `Server.shutdown()` (from any
thread, e.g. a signal handler's waker) stops accepting, tells every client
with an `ERROR` line, flushes, and waits for the readers to finish.
`connections_lock` guards the set of live connections and is taken alone.

With a `tls:` section there is a second listener with its own accept thread.
Its sockets are wrapped in a `TlsTransport` (ircish/tls.py) and then served
like any other; the handshake runs in the connection's reader thread, so a
peer that never finishes it holds up no one.

Wiring is explicit: the server is given its command table (ircish/commands.py builds
ours) and refuses to start with an empty one; it builds the `World` and the `Dispatcher`
and hands each connection its transport.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import sqlite3
import ssl
import sys
import threading
import time
from collections.abc import Mapping

from ircish.accounts import Accounts
from ircish.commands import CommandSpec
from ircish.config import Config
from ircish.connection import Connection, SenderPool
from ircish.dispatch import Dispatcher
from ircish.locks import new_lock
from ircish.protocol import Message, casefold
from ircish.store.sqlite import NewerSchemaError, SqliteStore
from ircish.store.writer import Retention, Writer
from ircish.tls import TlsTransport, server_context
from ircish.transport import StreamTransport
from ircish.world import Recorder, World

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 4096
#: Seconds a thread may hold the GIL before a waiting thread forces a switch
#: (CPython's default is 0.005). Every waiting thread wakes once per interval
#: to ask, so with thousands of readers runnable at once (a PING to everyone)
#: the default spends the CPU on those wake-ups: 10 000 idle clients answered
#: 6 PINGs in 10 s at 0.005 and all of them within 1.1 s at 0.05; fanout and
#: dm were no worse (bench/RESULTS.md). Our threads block on I/O long before
#: 50 ms, so the longer slice costs nothing in practice.
GIL_SWITCH_INTERVAL = 0.05
#: accept() failures that mean "out of descriptors or memory": wait, don't spin.
RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class StoreError(Exception):
    """The store could not be opened (`where`: its path); nothing is left running."""

    def __init__(self, where: str, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.where = where


class ListenError(OSError):
    """A listener could not be bound; `where` names it ("127.0.0.1:6697 (TLS)")."""

    def __init__(self, where: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.where = where


class Server:
    """One ircish server: its world, its listener and its threads."""

    def __init__(
        self,
        config: Config,
        commands: Mapping[str, CommandSpec],
        record: Recorder | None = None,
    ) -> None:
        """`commands` is the command table (ircish.commands.command_table()); ValueError if
        it is empty. `record` is called once per relayed event, after the relay, outside
        every lock (the history store's hook)."""
        self.config = config
        self.name = config.server.name
        self.world = World(
            ((room.name, room.topic) for room in config.rooms),
            record=record,
            server_name=self.name,
            history=config.history,
            accounts=Accounts(failed_per_minute=config.accounts.failed_logins_per_minute),
        )
        #: The store's writer thread, from `start()` on (ircish/store/writer.py).
        self.writer: Writer | None = None
        self.dispatcher = Dispatcher(commands, self.world, config, self.connection_count)
        self.senders = SenderPool(config.server.sender_threads)
        self.connections: set[Connection] = set()
        #: Live connections per source address (max_clients_per_ip), under connections_lock.
        self._per_ip: dict[str, int] = {}
        self.connections_lock = threading.Condition(new_lock("Server.connections_lock"))
        self.address: tuple[str, int] = (config.server.host, config.server.port)
        #: Where the TLS listener is, once started (None without a `tls:` section).
        self.tls_address: tuple[str, int] | None = None
        self._listener: socket.socket | None = None
        self._tls_listener: socket.socket | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._not_tls_reply = b""
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # For people (nc, telnet): sent only to a connection that says nothing for a
        # moment (ircish/connection.py GREETING_DELAY), since IRC clients speak first.
        first_step = (
            "type /pass <password>, then /nick <name>"
            if config.server.password is not None
            else "type /nick <name> to choose your name"
        )
        self._greeting = Message(
            "NOTICE",
            ["*", f"*** Welcome to ircish. To start, {first_step}; /help lists the commands"],
            self.name,
        )

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Bind the listeners and start the accept, sender and housekeeping threads.

        Raises `ConfigError` (key path `tls...`) if the TLS certificate or key can't be
        used, and `ListenError` if a port can't be bound; nothing is left running then.
        """
        tls = self.config.tls
        if tls is not None:
            # Before binding anything: a bad certificate must stop the start, not the
            # first client's handshake.
            self._tls_context = server_context(tls)
        host, port = self.address
        self._listener = self._bind(host, port, f"{host}:{port}")
        self.address = self._listener.getsockname()[:2]
        if tls is not None:
            try:
                self._tls_listener = self._bind(host, tls.port, f"{host}:{tls.port} (TLS)")
            except ListenError:
                self._listener.close()
                raise
            self.tls_address = self._tls_listener.getsockname()[:2]
            # Read by someone typing on the TLS port: the one line they can understand.
            self._not_tls_reply = Message(
                "ERROR",
                [f"This port speaks TLS only; plain connections go to port {self.address[1]}"],
            ).to_bytes()
        try:
            self._open_store()
        except StoreError:
            for listener in (self._listener, self._tls_listener):
                if listener is not None:
                    listener.close()
            raise
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.senders.start()
        loops = [("accept", self._accept_loop, (self._listener, False))]
        if self._tls_listener is not None:
            loops.append(("accept-tls", self._accept_loop, (self._tls_listener, True)))
        loops.append(("housekeeping", self._housekeeping, ()))
        for name, target, args in loops:
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        # No "listening" log line: whoever started the server says where it listens, from
        # `address` and `tls_address` (ircish-server prints one line; two was issue 11).

    def _open_store(self) -> None:
        """Open the store, bring back the permanent rooms and their last lines, and start
        the writer thread. A room that was not permanent ended with the last run: its
        history is dropped here (the next person to make `#x` must not read the last
        group's talk). Raises StoreError."""
        path = self.config.store.path
        try:
            store = SqliteStore(path)
        except (sqlite3.Error, NewerSchemaError, OSError) as exc:
            raise StoreError(path or ":memory:", exc) from exc
        history = self.config.history
        writer = Writer(
            store,
            max_queue=self.config.store.queue,
            flush_ms=self.config.store.flush_ms,
            retention=Retention(history.max_lines, history.max_age_seconds),
        )
        try:
            self.world.accounts.load(store.accounts())
            self.world.accounts.keeper = writer
            states = store.rooms()
            permanent = {casefold(state.name) for state in states}
            permanent.update(casefold(room.name) for room in self.config.rooms)
            store.keep_only(permanent)
            writer.prune_now()
            self.world.keeper = writer
            self.world.restore(states)
            self.world.prime(casefold(state.name) for state in states)
        except sqlite3.Error as exc:
            self.world.keeper = None
            self.world.accounts.keeper = None
            store.close()
            raise StoreError(path or ":memory:", exc) from exc
        writer.start()
        self.writer = writer
        if path is not None:
            log.info(
                "store: %s (%d permanent rooms, %d accounts)",
                path,
                len(permanent),
                self.world.accounts.count(),
            )

    @staticmethod
    def _bind(host: str, port: int, where: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(LISTEN_BACKLOG)
        except OSError as exc:
            listener.close()
            raise ListenError(where, exc) from exc
        return listener

    def shutdown(self, reason: str = "Server shutting down", timeout: float = 3.0) -> None:
        """Stop accepting, say goodbye to everyone, flush, and stop the threads."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        log.info("shutting down: %s", reason)
        for listener in (self._listener, self._tls_listener):
            if listener is not None:
                try:
                    listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
                except OSError:
                    pass
        for conn in self._snapshot():
            conn.close(reason, reason)
        if not self._wait_for_readers(timeout):
            for conn in self._snapshot():
                conn.close(reason, flush=False)
            self._wait_for_readers(1.0)
        for thread in self._threads:
            thread.join(timeout=2.0)
        self.senders.stop()
        for listener in (self._listener, self._tls_listener):
            if listener is not None:
                listener.close()
        if self.writer is not None:
            # Every queued line and room change is written before the process ends.
            self.writer.close()
            self.writer.store.close()
        log.info("stopped")

    def _wait_for_readers(self, timeout: float) -> bool:
        with self.connections_lock:
            return self.connections_lock.wait_for(lambda: not self.connections, timeout)

    # -- connections ----------------------------------------------------------

    def _snapshot(self) -> list[Connection]:
        with self.connections_lock:
            return list(self.connections)

    def connection_count(self) -> int:
        return len(self.connections)

    def _accept_loop(self, listener: socket.socket, tls: bool) -> None:
        starved = False  # out of descriptors: said once, then quiet until it passes
        while not self._stopping.is_set():
            try:
                sock, address = listener.accept()
            except OSError as exc:
                if self._stopping.is_set():
                    return
                if exc.errno in RESOURCE_ERRNOS:
                    if not starved:
                        log.warning("accept: %s; pausing before accepting again", exc.strerror)
                        starved = True
                    self._stopping.wait(0.1)
                else:
                    log.warning("accept failed: %s", exc)
                continue
            if starved:
                log.warning("accept: descriptors are free again; accepting")
                starved = False
            try:
                self._admit(sock, address, tls)
            except Exception:
                log.exception("could not set up connection from %s", address)
                sock.close()

    def _admit(self, sock: socket.socket, address: tuple, tls: bool = False) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._enable_keepalive(sock)
        limits = self.config.limits
        if tls:
            assert self._tls_context is not None
            # No I/O here: the handshake happens in the reader thread, within the
            # registration timeout, so a silent peer blocks nobody's accept.
            stream = TlsTransport(
                sock,
                self._tls_context,
                server_side=True,
                handshake_timeout=limits.registration_timeout,
                not_tls_reply=self._not_tls_reply,
            )
            transport = StreamTransport(stream, limits.read_buffer_bytes, kind="tls")
        else:
            transport = StreamTransport(sock, limits.read_buffer_bytes, kind="tcp")
        conn = Connection(
            transport,
            address,
            dispatcher=self.dispatcher,
            senders=self.senders,
            limits=limits,
            on_finish=self.remove_connection,
            greeting=self._greeting,
        )
        ip = address[0]
        per_ip = limits.max_clients_per_ip
        with self.connections_lock:
            if len(self.connections) >= limits.max_clients:
                refusal = "Server is full, try again later"
            elif per_ip and self._per_ip.get(ip, 0) >= per_ip:
                refusal = f"Too many connections from your address (at most {per_ip})"
            else:
                refusal = None
                self.connections.add(conn)
                self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        if refusal is not None:
            # Refused before any thread exists for it: one line, then closed. A TLS
            # peer could not read a plain line, and the handshake needs a thread: it
            # is just closed.
            log.info("refusing %s%s: %s", ip, " (TLS)" if tls else "", refusal)
            if not tls:
                with contextlib.suppress(OSError):
                    sock.send(Message("ERROR", [refusal]).to_bytes(), socket.MSG_DONTWAIT)
            sock.close()
            return
        log.info("connection from %s:%d%s", address[0], address[1], " (TLS)" if tls else "")
        try:
            conn.start()
        except RuntimeError as exc:  # can't start new thread: out of threads
            log.warning("cannot serve %s: %s", ip, exc)
            # As if its reader had run and ended: leave the registry, close the fd.
            conn.finish("Could not start a reader thread")

    def _enable_keepalive(self, sock: socket.socket) -> None:
        """TCP keepalive finds peers that vanish silently (text sessions get no PING)."""
        limits = self.config.limits
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(limits.ping_interval))
            )
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(limits.ping_timeout / 3))
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)

    def remove_connection(self, conn: Connection, reason: str) -> None:
        """Called by a connection's reader when it ends: leave the world, tell the rooms.
        The connection's slot and its address's count are freed even if leaving the world
        fails (the reader logs that)."""
        try:
            if conn.user.nick is not None:
                self.world.remove_user(conn.user, reason)
        finally:
            ip = conn.address[0]
            with self.connections_lock:
                if conn in self.connections:
                    self.connections.discard(conn)
                    left = self._per_ip[ip] - 1
                    if left:
                        self._per_ip[ip] = left
                    else:
                        del self._per_ip[ip]
                self.connections_lock.notify_all()
            log.info("%s left: %s", conn, reason)

    # -- housekeeping ---------------------------------------------------------

    def _housekeeping(self) -> None:
        limits = self.config.limits
        tick = max(
            0.05,
            min(
                1.0,
                limits.registration_timeout / 5,
                limits.ping_timeout / 5,
                limits.ping_interval / 5,
            ),
        )
        ping = Message("PING", [self.name])
        while not self._stopping.wait(tick):
            now = time.monotonic()
            for conn in self._snapshot():
                try:
                    self._check_timeouts(conn, now, ping)
                except Exception:
                    log.exception("housekeeping failed for %s", conn)

    def _check_timeouts(self, conn: Connection, now: float, ping: Message) -> None:
        limits = self.config.limits
        deadline = conn.user.nick_deadline
        if deadline is not None and now >= deadline and not conn.closing:
            self.world.rename_to_guest(conn.user, self.config.limits.nick_length)
        if conn.closing:
            if conn.close_deadline is not None and now > conn.close_deadline:
                conn.close("Closing timed out", flush=False)
        elif not conn.user.registered:
            if now - conn.connected_at > limits.registration_timeout:
                conn.close("Registration timeout", "Registration timed out")
        elif conn.is_irc:
            if conn.ping_sent_at is not None and conn.last_recv >= conn.ping_sent_at:
                conn.ping_sent_at = None
            if conn.ping_sent_at is None:
                if now - conn.last_recv > limits.ping_interval:
                    conn.ping_sent_at = now
                    conn.send(ping)
            elif now - conn.ping_sent_at > limits.ping_timeout:
                seconds = int(now - conn.last_recv)
                conn.close(f"Ping timeout: {seconds} seconds", f"Ping timeout: {seconds} seconds")
