"""Figures for operators: counted on the message path without a lock, read at scrape time.

Each connection has a `Tally` of what it did. Its reader thread writes the inbound parts
(bytes in, relayed messages and their deliveries, flood slowdowns, command times) and the
sender that owns its writer role writes the bytes out, so every field has one writer at a
time and no lock is needed: an increment is a few attribute operations, and a server
without `metrics:` does the same cheap counting minus the command timer. When a connection
ends, its tally is added to the server's `retired` one (under `Server.connections_lock`,
which the removal takes anyway), so nothing it counted is lost or counted twice.

A scrape (`ServerCollector.collect`, in the HTTP endpoint's thread) copies the live
connections and the retired tally under `Server.connections_lock`, then adds them up and
reads the gauges (users, rooms, accounts, the store writer's queue) with no room lock.
`MetricsEndpoint` serves it as Prometheus text (prometheus_client) on /metrics, with
/healthz beside it. No nick or room name is ever a label.
"""

from __future__ import annotations

import bisect
import http.server
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from ircish import __version__

log = logging.getLogger(__name__)

#: Upper bounds (seconds) of the command-time histogram's buckets; +Inf follows.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5)
#: A command's entry in `Tally.commands`: count, sum, then one count per bucket (not
#: cumulative: a time adds to one bucket only), the last for +Inf.
_COUNT, _SUM, _FIRST_BUCKET = 0, 1, 2
#: The histogram's label for a command the table does not know (the client's word for it
#: is never a label: anyone could make up a new one per line).
UNKNOWN_COMMAND = "unknown"

#: Why connections end, as the `reason` label: the first prefix of the quit reason that
#: matches, else "closed" (the peer hung up, a read error). One place for these words.
DISCONNECT_REASONS = (
    ("Quit", "quit"),
    ("Ping timeout", "ping_timeout"),
    ("Registration timeout", "registration_timeout"),
    ("SendQ exceeded", "sendq"),
    ("Excess Flood", "excess_flood"),
    ("Input buffer exceeded", "input_buffer"),
    ("Killed", "killed"),
    ("Server shutting down", "shutdown"),
)


#: The label values each labeled counter shows from the start (see `_zeroed`).
RELAYS = [
    (command, where) for command in ("PRIVMSG", "NOTICE", "TAGMSG") for where in ("room", "private")
]
REFUSALS = ["full", "per_ip"]
CONNECTION_STATES = ("registering", "registered", "closing")
LOGIN_REFUSALS = ["invalid", "throttled"]
RELOAD_RESULTS = ["applied", "failed"]


def disconnect_reason(quit_reason: str) -> str:
    """A quit reason as one of a few label values (see DISCONNECT_REASONS)."""
    for prefix, label in DISCONNECT_REASONS:
        if quit_reason.startswith(prefix):
            return label
    return "closed"


class Tally:
    """What one connection did (see the module's docstring for who writes which field)."""

    __slots__ = ("bytes_in", "bytes_out", "commands", "deliveries", "relayed", "slowdowns")

    def __init__(self) -> None:
        self.bytes_in = 0
        self.bytes_out = 0
        #: (command, "room" | "private") -> messages relayed (PRIVMSG, NOTICE, TAGMSG).
        self.relayed: dict[tuple[str, str], int] = {}
        #: Copies of those messages queued to receivers (echoes included).
        self.deliveries = 0
        #: Lines held back by flood control (fakelag).
        self.slowdowns = 0
        #: Command -> [count, sum of seconds, bucket counts...] (only with metrics on).
        self.commands: dict[str, list[float]] = {}

    def relay(self, command: str, where: str, deliveries: int) -> None:
        """One message relayed to a room or a person, queued to `deliveries` receivers."""
        key = (command, where)
        self.relayed[key] = self.relayed.get(key, 0) + 1
        self.deliveries += deliveries

    def time_command(self, command: str, seconds: float) -> None:
        entry = self.commands.get(command)
        if entry is None:
            entry = self.commands[command] = [0] * (_FIRST_BUCKET + len(BUCKETS) + 1)
        entry[_COUNT] += 1
        entry[_SUM] += seconds
        entry[_FIRST_BUCKET + bisect.bisect_left(BUCKETS, seconds)] += 1

    def add(self, other: Tally) -> None:
        """Add `other`'s counts to this one (a retired connection's, or a scrape's sum)."""
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.deliveries += other.deliveries
        self.slowdowns += other.slowdowns
        for key, count in list(other.relayed.items()):
            self.relayed[key] = self.relayed.get(key, 0) + count
        for command, entry in list(other.commands.items()):
            mine = self.commands.get(command)
            self.commands[command] = (
                list(entry) if mine is None else [a + b for a, b in zip(mine, entry, strict=True)]
            )

    def copy(self) -> Tally:
        total = Tally()
        total.add(self)
        return total


class Source(Protocol):
    """What a scrape reads: the server (ircish/server.py), seen from below."""

    started_at: float
    #: The World: `counts_unlocked()`, `accounts` (`count()`, `limiter.refusals()`).
    world: Any
    #: The store's Writer, or None: `queued`, `lag()`, `written`, `dropped`, `failed`.
    writer: Any
    #: The node's Cluster (ircish/cluster), or None: `up`, `lag`, `applied`.
    cluster: Any

    def figures(self) -> Any:
        """Live connections and retired counts (ircish/server.py `Figures`)."""
        ...


class ServerCollector:
    """The server's figures for prometheus_client, made at each scrape (no room lock)."""

    def __init__(self, server: Source) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        server = self._server
        figures = server.figures()
        by_transport: dict[str, Tally] = {}
        # Every state of every transport that has had a connection reads 0 rather than
        # vanishing when none is in it.
        states: dict[tuple[str, str], int] = {
            (kind, state): 0 for kind in figures.accepted for state in CONNECTION_STATES
        }
        for conn in figures.departing + figures.live:
            kind = conn.transport.kind
            tally = by_transport.get(kind)
            if tally is None:
                tally = by_transport[kind] = Tally()
            tally.add(conn.tally)
            tally.bytes_in += conn.transport.received
        for conn in figures.live:
            kind = conn.transport.kind
            if conn.closing:
                state = "closing"
            elif conn.user.registered:
                state = "registered"
            else:
                state = "registering"
            states[(kind, state)] = states.get((kind, state), 0) + 1
        for kind, retired in figures.retired.items():
            tally = by_transport.get(kind)
            if tally is None:
                tally = by_transport[kind] = Tally()
            tally.add(retired)
        total = Tally()
        for tally in by_transport.values():
            total.add(tally)

        yield _gauge(
            "ircish_info",
            "The server's version (the value is always 1).",
            ["version"],
            [((__version__,), 1)],
        )
        yield _gauge(
            "ircish_start_time_seconds",
            "When the server started (Unix time).",
            [],
            [((), server.started_at)],
        )
        yield _gauge(
            "ircish_connections",
            "Open connections by transport and state (registering, registered, closing).",
            ["transport", "state"],
            [((kind, state), count) for (kind, state), count in sorted(states.items())],
        )
        yield _counter(
            "ircish_connections_accepted",
            "Connections accepted, by transport.",
            ["transport"],
            sorted(((kind,), n) for kind, n in figures.accepted.items()),
        )
        yield _counter(
            "ircish_connections_refused",
            "Connections refused at accept (full: max_clients; per_ip: max_clients_per_ip).",
            ["reason"],
            _zeroed(figures.refused, REFUSALS),
        )
        yield _counter(
            "ircish_disconnects",
            "Connections ended, by reason (quit, ping_timeout, sendq, excess_flood, "
            "killed, closed, ...).",
            ["reason"],
            _zeroed(figures.disconnects, [label for _, label in DISCONNECT_REASONS] + ["closed"]),
        )
        world = server.world
        counts = world.counts_unlocked()
        yield _gauge("ircish_users", "Users who completed registration.", [], [((), counts.users)])
        yield _gauge(
            "ircish_operators", "Users who are server operators.", [], [((), counts.operators)]
        )
        yield _gauge(
            "ircish_rooms", "Rooms that exist (permanent ones included).", [], [((), counts.rooms)]
        )
        yield _gauge("ircish_accounts", "Registered accounts.", [], [((), world.accounts.count())])
        yield _counter(
            "ircish_messages",
            "PRIVMSG, NOTICE and TAGMSG relayed, by command and target (room or private).",
            ["command", "target"],
            _zeroed(total.relayed, RELAYS),
        )
        yield _counter(
            "ircish_deliveries",
            "Copies of relayed messages queued to receivers (echoes included).",
            [],
            [((), total.deliveries)],
        )
        yield _counter(
            "ircish_received_bytes",
            "Bytes received from clients, by transport (after TLS).",
            ["transport"],
            sorted(((kind,), tally.bytes_in) for kind, tally in by_transport.items()),
        )
        yield _counter(
            "ircish_sent_bytes",
            "Bytes written to clients, by transport (before TLS).",
            ["transport"],
            sorted(((kind,), tally.bytes_out) for kind, tally in by_transport.items()),
        )
        yield _counter(
            "ircish_flood_slowdowns",
            "Lines held back by flood control (Excess Flood drops are ircish_disconnects).",
            [],
            [((), total.slowdowns)],
        )
        yield _counter(
            "ircish_failed_logins",
            "Refused logins (SASL, IDENTIFY, PASS), by reason (invalid, throttled).",
            ["reason"],
            _zeroed(world.accounts.limiter.refusals(), LOGIN_REFUSALS),
        )
        histogram = HistogramMetricFamily(
            "ircish_command_duration_seconds",
            "Commands handled, by command, and the time their handler took.",
            labels=["command"],
        )
        for command, entry in sorted(total.commands.items()):
            buckets, running = [], 0
            for bound, count in zip((*BUCKETS, float("inf")), entry[_FIRST_BUCKET:], strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            histogram.add_metric([command], buckets, entry[_SUM])
        yield histogram
        yield _counter(
            "ircish_config_reloads",
            "Config reloads (SIGHUP, REHASH), by result (applied, failed).",
            ["result"],
            _zeroed(figures.reloads, RELOAD_RESULTS),
        )
        writer = server.writer
        if writer is not None:
            yield _gauge(
                "ircish_history_queue",
                "Lines and changes waiting for the store's writer.",
                [],
                [((), writer.queued)],
            )
            yield _gauge(
                "ircish_history_lag_seconds",
                "How long the oldest line waiting for the writer has waited (0: none waits).",
                [],
                [((), writer.lag())],
            )
            yield _counter(
                "ircish_history_written",
                "History lines written to the store.",
                [],
                [((), writer.written)],
            )
            yield _counter(
                "ircish_history_dropped",
                "History lines not stored because the "
                "writer's queue was full (they were delivered).",
                [],
                [((), writer.dropped)],
            )
            yield _counter(
                "ircish_history_failed_writes",
                "Store writes that failed.",
                [],
                [((), writer.failed)],
            )
        cluster = getattr(server, "cluster", None)
        if cluster is not None:
            yield _gauge(
                "ircish_cluster_redis_up",
                "1 while Redis answers this node (cluster:), 0 while it cannot be reached.",
                [],
                [((), int(cluster.up))],
            )
            yield _gauge(
                "ircish_cluster_bus_lag_seconds",
                "How old the last entry of the network's log this node applied was then.",
                [],
                [((), cluster.lag)],
            )
            yield _counter(
                "ircish_cluster_entries_applied",
                "Entries of the network's log this node has applied.",
                [],
                [((), cluster.applied)],
            )
        yield _gauge(
            "ircish_threads", "Threads in the server process.", [], [((), threading.active_count())]
        )


def _zeroed(counts: dict, keys: list) -> list[tuple[tuple[str, ...], float]]:
    """Samples for a labeled counter: every known label value from the start (at 0), so an
    alert on one has a series to match before the first event; then any other seen."""
    every = dict.fromkeys(keys, 0) | counts
    return sorted(((key if isinstance(key, tuple) else (key,)), n) for key, n in every.items())


def _gauge(
    name: str, doc: str, labels: list[str], samples: list[tuple[tuple[str, ...], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


def _counter(
    name: str, doc: str, labels: list[str], samples: list[tuple[tuple[str, ...], float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


def registry_for(server: Source) -> CollectorRegistry:
    """The server's figures and the process's own (CPU, memory, descriptors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return registry


class MetricsEndpoint:
    """The HTTP listener of `metrics.listen`: GET /metrics (Prometheus text, or OpenMetrics
    when asked) and GET /healthz (200 "ok", or 503 and what is wrong), in threads of its
    own. `health` returns None when all is well, else the problem."""

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        health: Callable[[], str | None],
    ) -> None:
        handler = _handler_for(registry, health)
        self._httpd = _HttpServer(address, handler)
        self.address: tuple[str, int] = self._httpd.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="metrics",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=2.0)


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    #: Scrapers that connect at once wait in the backlog (socketserver's default, 5, sent
    #: the sixth to TCP's one-second SYN retry).
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up mid-answer, or sent junk: one DEBUG line in the log, never
        a traceback on stderr (socketserver's default)."""
        log.debug("metrics: request from %s failed", client_address, exc_info=True)

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)


def _handler_for(
    registry: CollectorRegistry, health: Callable[[], str | None]
) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = f"ircish/{__version__}"
        sys_version = ""  # the Server header names ircish, not the Python it runs on
        #: A slow or silent client holds one endpoint thread, never the server.
        timeout = 10
        #: HEAD: the same headers as GET, no body.
        head_only = False

        def do_HEAD(self) -> None:
            self.head_only = True
            self.do_GET()

        def do_POST(self) -> None:
            self.send_response(405)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_DELETE = do_PATCH = do_POST

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                started = time.perf_counter()
                body = encoder(registry)
                log.debug("scrape took %.1f ms", (time.perf_counter() - started) * 1000)
                self._answer(200, body, content_type)
            elif path == "/healthz":
                problem = health()
                if problem is None:
                    self._answer(200, b"ok\n")
                else:
                    self._answer(503, f"{problem}\n".encode())
            else:
                self._answer(404, b"not found: try /metrics or /healthz\n")

        def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not self.head_only:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("metrics: %s %s", self.address_string(), format % args)

    return Handler
