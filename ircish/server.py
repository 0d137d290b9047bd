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
import queue
import socket
import sqlite3
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ircish import caps
from ircish.accounts import Accounts
from ircish.cluster import ClusterError
from ircish.commands import CommandSpec
from ircish.config import (
    RESTART_ONLY,
    Config,
    ConfigError,
    changed_settings,
    check_again,
    describe_setting,
    setting,
    with_setting,
)
from ircish.connection import Connection, SenderPool
from ircish.dispatch import Dispatcher
from ircish.locks import held, new_lock
from ircish.logs import LogSetup
from ircish.metrics import MetricsEndpoint, Tally, disconnect_reason, registry_for
from ircish.protocol import Message, casefold
from ircish.store.sqlite import NewerSchemaError, SqliteStore
from ircish.store.writer import Retention, Writer
from ircish.tls import TlsTransport, files_digest, server_context
from ircish.transport import RECV_BYTES, StreamTransport, Transport
from ircish.websocket import Origins, Proxies, WebSocketTransport, http_answer
from ircish.world import Recorder, World

if TYPE_CHECKING:
    from ircish.cluster.node import Cluster
    from ircish.store import Store

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


@dataclass(frozen=True)
class Reload:
    """What a reload did: the settings now in effect, those that need a restart (kept as
    they were), or the error that changed nothing."""

    applied: tuple[str, ...] = ()
    #: Each setting that needs a restart, with the value still in force (as YAML-ish text).
    kept: tuple[tuple[str, str], ...] = ()
    #: Rooms the config's rooms made or changed.
    rooms: tuple[str, ...] = ()
    error: str | None = None

    def lines(self) -> list[str]:
        """What the operator who asked is told (and the log says)."""
        if self.error is not None:
            return [f"Config not reloaded, nothing changed: {self.error}"]
        if self.applied:
            lines = [f"Config reloaded: {', '.join(self.applied)}"]
        elif self.kept:
            lines = ["Config reloaded: nothing that can change without a restart changed"]
        else:
            lines = ["Config reloaded: nothing changed"]
        if self.rooms:
            lines[0] += f"; rooms made or updated: {', '.join(self.rooms)}"
        for path, value in self.kept:
            lines.append(f"{path} needs a restart to change; still {value}")
        return lines


@dataclass
class Figures:
    """The server's counts at one moment, for a metrics scrape (`Server.figures`)."""

    live: list[Connection]
    #: Connections that left whose last lines may still be being written.
    departing: list[Connection]
    #: Tallies of the connections that ended, by transport.
    retired: dict[str, Tally]
    accepted: dict[str, int]
    refused: dict[str, int]
    disconnects: dict[str, int]
    reloads: dict[str, int]


def page_load_key(ip: str) -> str:
    """Where a WebSocket-port connection from `ip` counts until its upgrade."""
    return f"page load {ip}"


class Server:
    """One ircish server: its world, its listener and its threads."""

    def __init__(
        self,
        config: Config,
        commands: Mapping[str, CommandSpec],
        record: Recorder | None = None,
        *,
        reread: Callable[[], Config] | None = None,
        source: str = "built-in defaults",
        logs: LogSetup | None = None,
    ) -> None:
        """`commands` is the command table (ircish.commands.command_table()); ValueError if
        it is empty. `record` is called once per relayed event, after the relay, outside
        every lock (the history store's hook). `reread` reads the config again for a
        reload (REHASH, SIGHUP; None: there is no file, nothing to reload), `source` names
        it, and `logs` is the log setup a reload changes (None: logging is left alone)."""
        self.config = config
        self.config_source = source
        self._reread = reread
        self.logs = logs
        self.started_at = time.time()
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
        #: This node's part in a network of nodes (ircish/cluster); None: on its own.
        self.cluster: Cluster | None = None
        #: The most registered users connected here at once, as LUSERS last saw it.
        self._local_peak = 0
        if config.cluster is not None:
            from ircish.cluster.node import Cluster

            rooms = [(room.name, room.topic) for room in config.rooms]
            self.cluster = Cluster(config.cluster, config.node_name, self.world, rooms)
            self.world.attach(self.cluster)
        self.dispatcher = Dispatcher(commands, self.world, config, self.connection_count)
        self.dispatcher.reload = lambda tell: self.request_reload(lambda done: tell(done.lines()))
        self.dispatcher.config_source = source if reread is not None else "*"
        if self.cluster is not None:
            self.dispatcher.network = self._network_figures
        self.senders = SenderPool(config.server.sender_threads)
        self.connections: set[Connection] = set()
        #: Live connections per source address (max_clients_per_ip), under connections_lock.
        self._per_ip: dict[str, int] = {}
        self._connections_mutex = new_lock("Server.connections_lock")
        self.connections_lock = threading.Condition(self._connections_mutex)
        self.address: tuple[str, int] = (config.server.host, config.server.port)
        #: Where the TLS listener is, once started (None without a `tls:` section).
        self.tls_address: tuple[str, int] | None = None
        self._listener: socket.socket | None = None
        self._tls_listener: socket.socket | None = None
        self._ws_listener: socket.socket | None = None
        #: Where the WebSocket listener is, once started (None without `websocket:`).
        self.websocket_address: tuple[str, int] | None = None
        self._tls_context: ssl.SSLContext | None = None
        #: What the TLS files held when they were last loaded (`tls.files_digest`).
        self._tls_files = ""
        self._not_tls_reply = b""
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._greeting = self._greeting_for(config)
        #: The WebSocket listener's origin and proxy rules, made once per config.
        self._ws_rules = _websocket_rules(config)
        # Metrics (ircish/metrics.py). Under connections_lock: the tallies of connections
        # that ended, and the accept and disconnect counts. Only the reloader thread
        # counts reloads.
        self._retired: dict[str, Tally] = {}
        #: Connections that left (not in `connections`) whose descriptor is not closed
        #: yet: their sender may still write their last lines, so their tallies are
        #: read live until `_retire` adds them to `_retired`.
        self._departing: set[Connection] = set()
        self._accepted: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._disconnects: Counter[str] = Counter()
        self._reloads: Counter[str] = Counter()
        self.metrics: MetricsEndpoint | None = None
        #: Reload requests (REHASH, SIGHUP), each with what to do with the outcome; the
        #: reloader thread takes them one at a time. None stops it.
        self._reload_requests: queue.SimpleQueue[Callable[[Reload], None] | None] = (
            queue.SimpleQueue()
        )

    def _greeting_for(self, config: Config) -> Message:
        # For people (nc, telnet): sent only to a connection that says nothing for a
        # moment (ircish/connection.py GREETING_DELAY), since IRC clients speak first.
        first_step = (
            "type /pass <password>, then /nick <name>"
            if config.server.password is not None
            else "type /nick <name> to choose your name"
        )
        return Message(
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
            self._tls_files = files_digest(tls)
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
            websocket = self.config.websocket
            if websocket is not None:
                where = f"{host}:{websocket.port} (WebSocket)"
                self._ws_listener = self._bind(host, websocket.port, where)
                self.websocket_address = self._ws_listener.getsockname()[:2]
            if self.config.metrics is not None:
                self._open_metrics(self.config.metrics.address)
            self._open_store()
            self._join_network()
        except (StoreError, ListenError, ClusterError):
            for listener in self._listeners():
                listener.close()
            if self.metrics is not None:
                self.metrics.close()
            if self.writer is not None:
                self.writer.close()
                self.writer.store.close()
            raise
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.senders.start()
        loops = [("accept", self._accept_loop, (self._listener, "tcp"))]
        if self._tls_listener is not None:
            loops.append(("accept-tls", self._accept_loop, (self._tls_listener, "tls")))
        if self._ws_listener is not None:
            assert self.config.websocket is not None
            kind = "wss" if self.config.websocket.tls else "ws"
            loops.append(("accept-websocket", self._accept_loop, (self._ws_listener, kind)))
        loops.append(("housekeeping", self._housekeeping, ()))
        loops.append(("reloader", self._reloader, ()))
        if self.metrics is not None:
            self.metrics.start()
            self.dispatcher.timed = True
        for name, target, args in loops:
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        # No "listening" log line: whoever started the server says where it listens, from
        # `address` and `tls_address` (ircish-server prints one line; two was issue 11).

    def _join_network(self) -> None:
        """In a cluster: join the network (its state replaces this node's), and make sure
        the rooms this node's config names exist there. Raises ClusterError."""
        if self.cluster is None:
            return
        self.cluster.start()
        self.world.follow_config_rooms([(room.name, room.topic) for room in self.config.rooms])

    def _open_metrics(self, address: tuple[str, int]) -> None:
        """Bind the metrics endpoint (started with the other threads). ListenError."""
        where = f"{address[0]}:{address[1]}"
        try:
            self.metrics = MetricsEndpoint(address, registry_for(self), self.health)
        except OSError as exc:
            raise ListenError(f"{where} (metrics)", exc) from exc
        if address[0] not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "metrics.listen is %s: /metrics is open to whoever reaches that address",
                where,
            )

    def _open_store(self) -> None:
        """Open the store, bring back the permanent rooms and their last lines, and start
        the writer thread. A room that was not permanent ended with the last run: its
        history is dropped here (the next person to make `#x` must not read the last
        group's talk). Raises StoreError."""
        path = self.config.store.path
        cluster = self.config.cluster
        failures: tuple[type[Exception], ...] = (sqlite3.Error, NewerSchemaError, OSError)
        try:
            if cluster is None:
                store: Store = SqliteStore(path)
            else:  # the network's store, in Redis (ircish/store/redis.py)
                from redis import RedisError

                from ircish.store.redis import RedisStore

                failures += (RedisError,)
                path = "in Redis at " + cluster.redis
                store = RedisStore(cluster.redis, cluster.prefix, cluster.timeout_ms / 1000)
        except failures as exc:
            raise StoreError(path or ":memory:", exc) from exc
        history = self.config.history
        writer = Writer(
            store,
            max_queue=self.config.store.queue,
            flush_ms=self.config.store.flush_ms,
            retention=Retention(history.max_lines, history.max_age_seconds),
        )
        # In a cluster every node applies every change, and the node that made one writes
        # it (ircish/cluster/node.py `OwnKeeper`).
        keeper = writer if self.cluster is None else self.cluster.keeper(writer)
        try:
            self.world.accounts.load(store.accounts())
            self.world.accounts.keeper = keeper
            states = store.rooms()
            permanent = {casefold(state.name) for state in states}
            permanent.update(casefold(room.name) for room in self.config.rooms)
            if self.cluster is None:  # (the rooms of a running network are not over)
                store.keep_only(permanent)
            writer.prune_now()
            self.world.keeper = keeper
            self.world.restore(states)
            self.world.prime(casefold(state.name) for state in states)
        except failures as exc:
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
        for listener in self._listeners():
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
        self._reload_requests.put(None)
        for thread in self._threads:
            thread.join(timeout=2.0)
        if self.cluster is not None:  # after its users' QUITs are in the log
            self.cluster.stop()
        self.senders.stop()
        if self.metrics is not None:
            self.metrics.close()
        for listener in self._listeners():
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

    def _network_figures(self, joining: int) -> tuple[int, int, int]:
        """A cluster node's LUSERS: the network's nodes, the registered users connected
        here (and `joining`, about to be), and the most there have been, as LUSERS saw."""
        assert self.cluster is not None
        here = sum(conn.user.registered for conn in self._snapshot()) + joining
        self._local_peak = peak = max(self._local_peak, here)
        return max(1, self.cluster.node_count), here, peak

    def figures(self) -> Figures:
        """The live connections and the counts so far, copied at one moment under
        connections_lock (a connection is in one or the other, never both)."""
        with self.connections_lock:
            return Figures(
                list(self.connections),
                list(self._departing),
                {kind: tally.copy() for kind, tally in self._retired.items()},
                dict(self._accepted),
                dict(self._refused),
                dict(self._disconnects),
                dict(self._reloads),
            )

    def health(self) -> str | None:
        """None while the server serves; else what is wrong (/healthz says it, with 503)."""
        if self._stopping.is_set():
            return "shutting down"
        for thread in self._threads:
            if not thread.is_alive():
                return f"the {thread.name} thread stopped"
        if self.writer is not None and not self.writer.alive:
            return "the store's writer thread stopped"
        if self.cluster is not None:
            return self.cluster.health()
        return None

    def _listeners(self) -> list[socket.socket]:
        return [
            listener
            for listener in (self._listener, self._tls_listener, self._ws_listener)
            if listener is not None
        ]

    def _accept_loop(self, listener: socket.socket, kind: str) -> None:
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
                self._admit(sock, address, kind)
            except Exception:
                log.exception("could not set up connection from %s", address)
                sock.close()

    def _admit(self, sock: socket.socket, address: tuple, kind: str = "tcp") -> None:
        """Serve an accepted socket: `kind` is its listener's (tcp, tls, ws, wss)."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._enable_keepalive(sock)
        limits = self.config.limits
        tls = kind in ("tls", "wss")
        stream: socket.socket | TlsTransport = sock
        if tls:
            assert self._tls_context is not None
            # No I/O here: the handshake happens in the reader thread, within the
            # registration timeout, so a silent peer blocks nobody's accept.
            stream = TlsTransport(
                sock,
                self._tls_context,
                server_side=True,
                handshake_timeout=limits.registration_timeout,
                not_tls_reply=self._not_tls_reply if kind == "tls" else b"",
            )
        transport: Transport
        rules = self._ws_rules if kind in ("ws", "wss") else None
        if rules is not None:
            # The upgrade, too, happens in the reader thread (ircish/websocket.py).
            origins, proxies = rules
            transport = WebSocketTransport(
                stream,
                limits.read_buffer_bytes,
                origins=origins,
                proxies=proxies,
                peer=address[0],
                kind=kind,
            )
        else:
            transport = StreamTransport(stream, limits.read_buffer_bytes, kind=kind)
        conn = Connection(
            transport,
            address,
            dispatcher=self.dispatcher,
            senders=self.senders,
            limits=limits,
            on_finish=self.remove_connection,
            greeting=self._greeting,
            on_closed=self._retire,
            on_address=self._readdress,
        )
        ip = address[0]
        per_ip = limits.max_clients_per_ip
        # The WebSocket port's connections count in a budget of their own until their
        # upgrade (`_readdress`): loading the page's files never competes with the
        # address's chat connections, and half-open requests are bounded all the same.
        counted = ip if rules is None else page_load_key(ip)
        if rules is not None and ip in rules[1]:
            per_ip = 0  # everyone behind a reverse proxy comes from its address
        with self.connections_lock:
            if len(self.connections) >= limits.max_clients:
                refusal, why = "Server is full, try again later", "full"
            elif per_ip and self._per_ip.get(counted, 0) >= per_ip:
                refusal = f"Too many connections from your address (at most {per_ip})"
                why = "per_ip"
            else:
                refusal = why = None
                self.connections.add(conn)
                self._per_ip[counted] = self._per_ip.get(counted, 0) + 1
                conn.counted_ip = counted
                self._accepted[kind] += 1
            if why is not None:
                self._refused[why] += 1
        if refusal is not None:
            # Refused before any thread exists for it: one line, then closed. A TLS
            # peer could not read a plain line, and the handshake needs a thread: it
            # is just closed.
            log.info("refusing %s (%s): %s", ip, kind, refusal)
            answer = {
                "tcp": Message("ERROR", [refusal]).to_bytes(),
                "ws": http_answer(503, refusal + "\n"),
            }
            if kind in answer:
                with contextlib.suppress(OSError):
                    # A request already here, unread at close, would make it a reset
                    # that hides the answer from a browser.
                    sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
                with contextlib.suppress(OSError):
                    sock.send(answer[kind], socket.MSG_DONTWAIT)
            sock.close()
            return
        log.info("connection from %s:%d (%s)", address[0], address[1], kind)
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
            with self.connections_lock:
                if conn in self.connections:
                    self.connections.discard(conn)
                    self._uncount_locked(conn.counted_ip)
                    # Still counted live until its descriptor closes (`_retire`).
                    self._departing.add(conn)
                    why = disconnect_reason(reason)
                    self._disconnects[why] += 1
                self.connections_lock.notify_all()
            log.info("%s left: %s", conn, reason)

    def _uncount_locked(self, ip: str | None) -> None:
        """One connection fewer from `ip` (max_clients_per_ip). Caller holds
        connections_lock."""
        assert held(self._connections_mutex)
        if ip is None:
            return
        left = self._per_ip[ip] - 1
        if left:
            self._per_ip[ip] = left
        else:
            del self._per_ip[ip]

    def _readdress(self, conn: Connection, host: str) -> str | None:
        """A WebSocket's upgrade is done, and named its client (the peer, or behind one of
        our proxies the address in X-Forwarded-For): the connection leaves the page-load
        budget it was accepted in and counts against that address's max_clients_per_ip
        from now on (a proxy itself is held to none). The refusal to send if that address
        has too many already, else None."""
        per_ip = self.config.limits.max_clients_per_ip
        rules = self._ws_rules
        if rules is not None and host in rules[1]:
            per_ip = 0
        with self.connections_lock:
            if conn not in self.connections:
                return None
            if per_ip and self._per_ip.get(host, 0) >= per_ip:
                self._refused["per_ip"] += 1
                return f"Too many connections from your address (at most {per_ip})"
            self._uncount_locked(conn.counted_ip)
            self._per_ip[host] = self._per_ip.get(host, 0) + 1
            conn.counted_ip = host
        return None

    def _retire(self, conn: Connection) -> None:
        """A connection's descriptor closed: nothing more will be counted for it, so its
        tally joins the retired ones. A scrape sees it in one place or the other (under
        connections_lock), never both and never neither: no count goes down."""
        with self.connections_lock:
            if conn.transport.kind not in self._retired:
                self._retired[conn.transport.kind] = Tally()
            retired = self._retired[conn.transport.kind]
            retired.add(conn.tally)
            retired.bytes_in += conn.transport.received
            self._departing.discard(conn)

    # -- housekeeping ---------------------------------------------------------

    def _housekeeping(self) -> None:
        ping = Message("PING", [self.name])
        while not self._stopping.wait(self._tick()):
            now = time.monotonic()
            for conn in self._snapshot():
                try:
                    self._check_timeouts(conn, now, ping)
                except Exception:
                    log.exception("housekeeping failed for %s", conn)

    def _tick(self) -> float:
        """How often housekeeping looks, from the limits now in force (a reload may
        change them)."""
        limits = self.config.limits
        return max(
            0.05,
            min(
                1.0,
                limits.registration_timeout / 5,
                limits.ping_timeout / 5,
                limits.ping_interval / 5,
            ),
        )

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

    # -- reloading ------------------------------------------------------------

    def request_reload(self, done: Callable[[Reload], None] | None = None) -> None:
        """Reload the config in the reloader thread; `done` gets the outcome there. Only
        queues, so a signal handler may call it."""
        self._reload_requests.put(done or _nothing)

    def _reloader(self) -> None:
        while True:
            done = self._reload_requests.get()
            if done is None:
                return
            try:
                outcome = self.reload()
            except Exception:
                log.exception("reload failed")
                outcome = Reload(error="an internal error; the log has it")
            try:
                done(outcome)
            except Exception:
                log.exception("telling the outcome of a reload failed")

    def reload(self) -> Reload:
        """Re-read the config and apply what a running server can take; what needs a
        restart is kept as it is and named. A file that fails its checks changes
        nothing. The log file is reopened either way (logrotate's SIGHUP). Runs in the
        reloader thread (a test may call it while nothing else reloads)."""
        if self.logs is not None:
            try:
                self.logs.reopen()
            except OSError as exc:
                log.error("cannot reopen the log file: %s", exc.strerror or exc)
        outcome = self._reload()
        result = "failed" if outcome.error is not None else "applied"
        self._reloads[result] += 1
        lines = outcome.lines()
        log.log(logging.ERROR if outcome.error is not None else logging.INFO, "%s", lines[0])
        for line in lines[1:]:  # settings that need a restart: the file and the server differ
            log.warning("%s", line)
        return outcome

    def _reload(self) -> Reload:
        if self._reread is None:
            return Reload(error="the server was started without a config file (-c)")
        old = self.config
        try:
            new = self._reread()
        except ConfigError as exc:
            return Reload(error=str(exc))
        kept = [path for path in changed_settings(old, new) if path in RESTART_ONLY]
        if old.history.enabled != new.history.enabled:
            kept.append("history.max_lines")  # turning history on or off
        for path in kept:
            new = with_setting(new, path, setting(old, path))
        try:
            check_again(new, self.config_source)
        except ConfigError as exc:
            kept_text = ", ".join(kept)
            return Reload(error=f"{exc} (with what needs a restart kept as it is: {kept_text})")
        applied = changed_settings(old, new)
        # What can fail comes first, before anything changes. The TLS files are read again
        # even at the same paths: a renewed certificate must not need a restart.
        tls_context, tls_files = self._tls_context, self._tls_files
        try:
            if new.tls is not None:
                tls_files = files_digest(new.tls)
                tls_context = server_context(new.tls)
        except ConfigError as exc:
            return Reload(error=str(ConfigError(self.config_source, exc.key_path, exc.problem)))
        except OSError as exc:
            return Reload(error=f"tls: cannot read its files: {exc.strerror or exc}")
        try:
            prepared = None if self.logs is None else self.logs.prepare(new.log)
        except OSError as exc:
            return Reload(error=f"log.file: cannot open {new.log.file!r}: {exc.strerror or exc}")
        if tls_files != self._tls_files and not any(key.startswith("tls.") for key in applied):
            applied.append("tls files (renewed)")
        self._tls_files = tls_files
        self._apply(old, new, tls_context)
        if prepared is not None:
            self.logs.apply(prepared)  # type: ignore[union-attr]
        rooms = []
        if "rooms" in applied:
            rooms = self.world.follow_config_rooms([(room.name, room.topic) for room in new.rooms])
        return Reload(
            tuple(applied),
            tuple((path, describe_setting(setting(old, path))) for path in kept),
            tuple(rooms),
        )

    def _apply(self, old: Config, new: Config, tls_context: ssl.SSLContext | None) -> None:
        """Make `new` the config in force: handlers read it from their next command, new
        connections take its limits, and the parts with state of their own follow."""
        self.config = new
        self.dispatcher.config = new
        self._tls_context = tls_context
        self._greeting = self._greeting_for(new)
        self._ws_rules = _websocket_rules(new)
        if new.history != old.history:
            self.world.set_history(new.history)
            if self.writer is not None:
                history = new.history
                self.writer.set_retention(Retention(history.max_lines, history.max_age_seconds))
        limit = new.accounts.failed_logins_per_minute
        if limit != old.accounts.failed_logins_per_minute:
            self.world.accounts.limiter.set_budget(limit)
        if new.cluster is not None and self.cluster is not None:
            self.cluster.timeout = new.cluster.timeout_ms / 1000
        if new.operators != old.operators:
            here = set(self._snapshot())  # (in a cluster, others OPERed on their own node)
            for user in self.world.operators_not_in(o.name for o in new.operators):
                if user.conn not in here:
                    continue
                self.world.set_operator(user, False)
                log.info("%s is no longer a server operator: not in the config", user.nick)
                user.conn.send(Message("MODE", [user.nick or "*", "-o"], self.name))
                user.conn.send(
                    Message(
                        "NOTICE",
                        [user.nick or "*", "Your operator status ended: the config changed"],
                        self.name,
                    )
                )
        self._announce_caps(old, new)

    def _announce_caps(self, old: Config, new: Config) -> None:
        """CAP NEW and CAP DEL to every client with cap-notify, for the caps a reload
        offers or takes away (and new values: sasl's mechanisms)."""
        told: dict[int, tuple[list[str], list[str]]] = {}
        for conn in self._snapshot():
            session = conn.session
            if "cap-notify" not in session.caps or conn.closing:
                continue
            version = session.cap_version
            if version not in told:
                told[version] = caps.announcements(old, new, version)
            added, removed = told[version]
            nick = conn.user.nick or "*"
            if removed:
                conn.send(Message("CAP", [nick, "DEL", " ".join(removed)], self.name))
                # "Servers MUST cancel any capability-specific behavior" (cap-notify).
                session.set_caps(session.caps - set(removed))
            if added:
                conn.send(Message("CAP", [nick, "NEW", " ".join(added)], self.name))


def _websocket_rules(config: Config) -> tuple[Origins, Proxies] | None:
    """The `websocket:` section's origins and proxies, parsed (None: no such section)."""
    websocket = config.websocket
    return None if websocket is None else (Origins(websocket.origins), Proxies(websocket.proxies))


def _nothing(outcome: Reload) -> None:
    """What a reload nobody waits for does with its outcome (the log has it)."""
