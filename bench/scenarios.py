"""The scenarios: each starts the load-generator workers against a running server, drives
them through their phases and returns one flat dict of metrics.

- fanout: N members of one room, S senders; `max` rate (each sender keeps at most W
  messages undelivered at its worker's monitor member) or a `fixed` total rate.
- dm: P pairs, each side sending to the other, max rate with a window per direction;
  with `in_rooms` each pair talks in a room of its own two members instead.
- idle: N clients in rooms of 100; setup time, server RSS per connection, then every
  client PINGs and must get its PONG within 10 s.
- churn: connect/register/join/quit cycles, C at a time.

fanout and dm take `caps_fraction`: that share of the members asks for `caps` (IRCv3,
default `server-time message-tags echo-message`) before registering, and goes on without
them where the server has not got them. With echo-message a sender gets its own messages
back: echoes are counted apart from deliveries (deliveries/s, lost and latency are about
the other members only), with their own lost count and latency.

Throughput is measured over a fixed window after a warm-up; then sending stops and the
drain waits (bounded) for every in-flight message: lost = expected - received. The
server's CPU (from /proc) and the generator's own CPU are measured over the same window.

Against a server with a history store on disk (`ircish-store`), the PRIVMSG rows in its
SQLite file are counted as the window opens and closes (the writer's rows/s) and during
the drain, until every message sent is a row (`stored` of `sent`, and when that was
reached): while the clients are still in their rooms, since a room that ends takes its
history with it. Private messages are not stored (dm counts 0 rows), but on a server
whose clients are logged in to accounts (`ircish-accounts`, `server.private_history`)
each one is a private-history row, counted the same way.

Against a cluster kind (several ircish nodes through one Redis: issue 17) the clients
take the nodes' ports in turn, the server's CPU is its nodes' sum (and each node's in
`node_cpu_cores`), and Redis's CPU and commands over the same window are reported apart
(`redis_cpu_cores`, `redis_us_per_msg`, `redis_xread_per_msg`); Redis is not counted as
other work on the machine.

Against a server whose clients log in (`server.login_password`), every client sends
`PASS <nick>:<password>` before NICK/USER; the setup counts the clients that got 900
(`logged_in`), and a run where fewer than all of them did is an error, not a result.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from loadgen import worker_main
from servers import ServerProcess

_source_counter = 0


def next_source_ip() -> str:
    """A fresh loopback source address per worker, so no run inherits another's ports."""
    global _source_counter
    _source_counter += 1
    n = _source_counter
    base = 20 + os.getpid() % 200
    return f"127.{base}.{n // 250 % 250}.{n % 250 + 1}"


def listen_overflows() -> int:
    """TcpExt ListenOverflows + ListenDrops: connects the kernel dropped for a full backlog."""
    try:
        with open("/proc/net/netstat") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return 0
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        if header.startswith("TcpExt:"):
            table = dict(zip(header.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0)) + int(table.get("ListenDrops", 0))
    return 0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def percentile(sorted_values: list[int] | list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return float(sorted_values[index])


def ms(value_ns: float | None) -> float | None:
    return None if value_ns is None else round(value_ns / 1e6, 2)


#: The capabilities the mixed scenarios' capped clients ask for.
MIX_CAPS = "server-time message-tags echo-message"


def capped_set(groups: list[list[int]], fraction: float) -> set[int]:
    """Every 1/fraction-th client of `groups` taken in turn (the first one included), so
    each group, and each worker's part of it, gets its share of capped clients."""
    chosen: set[int] = set()
    j = 0
    for group in groups:
        for idx in group:
            if int((j + 1) * fraction + 0.5) > int(j * fraction + 0.5):
                chosen.add(idx)
            j += 1
    return chosen


class GeneratorError(RuntimeError):
    pass


class Generator:
    """The worker processes and the pipe protocol to them; their clients connect to
    `server.client_ports` in turn (one port, or a cluster kind's nodes; over WebSocket
    where the server has `subprotocol`)."""

    def __init__(self, server: ServerProcess, workers: int) -> None:
        context = multiprocessing.get_context("fork")
        self.pipes = []
        self.procs = []
        for wid in range(workers):
            parent, child = context.Pipe()
            proc = context.Process(
                target=worker_main,
                args=(wid, child, server.client_ports, next_source_ip(), server.subprotocol),
                name=f"loadgen-{wid}",
                daemon=True,
            )
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.workers = workers

    def call(self, name: str, params: list[dict[str, Any]], timeout: float) -> list[dict]:
        """Send one command to every worker (its own params each); wait for all replies."""
        for pipe, param in zip(self.pipes, params, strict=True):
            pipe.send((name, param))
        return self.collect(timeout, name)

    def collect(self, timeout: float, what: str) -> list[dict]:
        replies: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        pending = {pipe: wid for wid, pipe in enumerate(self.pipes)}
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GeneratorError(f"{what}: no reply from workers {sorted(pending.values())}")
            for pipe in wait(list(pending), left):
                wid = pending.pop(pipe)  # type: ignore[call-overload]
                try:
                    reply = pipe.recv()  # type: ignore[union-attr]
                except EOFError:
                    raise GeneratorError(f"{what}: worker {wid} died") from None
                if "error" in reply:
                    raise GeneratorError(f"{what}: worker {wid} failed:\n{reply['error']}")
                replies[wid] = reply
        return [replies[wid] for wid in range(self.workers)]

    def same(self, name: str, wait_s: float, **params: Any) -> list[dict]:
        return self.call(name, [params] * self.workers, wait_s)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send(("exit", {}))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()  # our own child, by its PID
                proc.join(5)
        for pipe in self.pipes:
            pipe.close()


def split(items: list, workers: int) -> list[list]:
    return [items[wid::workers] for wid in range(workers)]


def summed_errors(replies: list[dict]) -> tuple[int, list[str]]:
    count = sum(r["error_count"] for r in replies)
    samples = [text for r in replies for text in r["errors"]][:5]
    return count, samples


def pending_share(server: ServerProcess, workers: int) -> int:
    """Each worker's cap on unwelcomed connects: all together never exceed the backlog."""
    backlog = server.backlog or 10
    return max(1, backlog // workers)


def setup_clients(
    server: ServerProcess,
    gen: Generator,
    per_worker: list[list[tuple[int, str, str]]] | list[list[tuple[int, str, str, bool]]],
    rate: float,
    window: int,
    timeout: float = 120.0,
    caps: str = "",
) -> dict[str, Any]:
    """Paced connect + register + join of each worker's `(index, nick, room[, capped])`
    clients; the capped ones ask for `caps` (CAP LS 302, REQ, END) first.

    At most `rate` connects/s, at most `window` clients between connect and end of
    NAMES, and never more unwelcomed connects than the server's listen backlog.
    """
    password = server.login_password
    replies = gen.call(
        "setup",
        [
            {
                "clients": part,
                "rate": rate / gen.workers,
                "window": max(1, window // gen.workers),
                "pending_max": pending_share(server, gen.workers),
                "timeout": timeout,
                **({"caps": caps} if caps else {}),
                **({"password": password} if password else {}),
            }
            for part in per_worker
        ],
        timeout + 30,
    )
    firsts = [r["first_connect"] for r in replies if r["first_connect"] is not None]
    lasts = [r["last_ready"] for r in replies if r["last_ready"] is not None]
    setup_ns = sorted(v for r in replies for v in r["setup_ns"])
    errors, samples = summed_errors(replies)
    extra = {}
    if caps:
        extra = {
            "caps": caps,
            "cap_asked": sum(r["cap_asked"] for r in replies),
            # The clients the server gave the caps to (0 where it has not got them).
            "capped": sum(r["capped"] for r in replies),
            "echo_clients": sum(r["echo_clients"] for r in replies),
        }
    if password:
        # Logged in (900) and joined; the rest measured logged-out clients.
        extra["logged_in"] = sum(r["logged_in"] for r in replies)
        extra["login_sample"] = next((r["login_sample"] for r in replies if r["login_sample"]), "")
    return {
        **extra,
        "ready": sum(r["ready"] for r in replies),
        "failed": sum(r["failed"] for r in replies),
        "setup_s": round((max(lasts) - min(firsts)) / 1e9, 3) if firsts and lasts else None,
        "join_p50_ms": ms(percentile(setup_ns, 0.5)),
        "join_p99_ms": ms(percentile(setup_ns, 0.99)),
        "setup_errors": errors,
        "setup_error_samples": samples,
        # Fresh workers start at 0 CPU seconds, so their totals are the setup's cost.
        "gen_cpu_setup_s": round(sum(r["cpu"] for r in replies), 2),
    }


def setup_some_capped(
    server: ServerProcess,
    gen: Generator,
    per_worker: list[list[tuple[int, str, str]]],
    groups: list[list[int]],
    fraction: float,
    caps: str,
    rate: float,
    window: int,
) -> dict[str, Any]:
    """`setup_clients` with every 1/fraction-th client of `groups` (`capped_set`) asking
    for `caps`; with `fraction` 0 every client is plain."""
    if fraction <= 0:
        return setup_clients(server, gen, per_worker, rate, window)
    capped = capped_set(groups, fraction)
    tagged = [[(idx, nick, room, idx in capped) for idx, nick, room in part] for part in per_worker]
    return setup_clients(server, gen, tagged, rate, window, caps=caps)


def nicks(prefix: str, count: int) -> list[str]:
    """The nicks of a scenario's clients: fanout's members and dm's 2 x pairs clients are
    `nicks(tag, clients)` (so `ircish-accounts` can make their accounts first)."""
    return [f"{prefix}{i}" for i in range(count)]


def setup_problem(setup: dict[str, Any], wanted: int) -> str | None:
    """Why the setup leaves nothing worth measuring: clients that did not join, or (with
    logins) joined without logging in."""
    if setup["ready"] < wanted:
        return f"only {setup['ready']} of {wanted} clients joined"
    if "logged_in" in setup and setup["logged_in"] < wanted:
        return f"only {setup['logged_in']} of {wanted} clients logged in (900)"
    return None


def _traffic(
    server: ServerProcess,
    gen: Generator,
    command: str,
    params: list[dict[str, Any]],
    recipients_per_message: int,
    warmup: float,
    measure: float,
    drain_timeout: float,
    on_window: Callable[[float], None] | None = None,
    rows_per_message: int = 1,
) -> dict[str, Any]:
    """Run a traffic phase already described by `params`; measure, stop, drain, collect.

    `on_window(seconds)` is called as the measurement window opens (e.g. to attach a
    profiler for exactly that long). `rows_per_message`: the history rows a message
    makes in the server's store, if it has one (a room's line 1, a private message 0, or
    1 between two logged-in clients); the drain then also waits for the store to hold
    them all.
    """
    start = time.monotonic_ns() + 200_000_000
    times = {
        "start": start,
        "measure_from": start + int(warmup * 1e9),
        "measure_to": start + int((warmup + measure) * 1e9),
    }
    times["stop"] = times["measure_to"]
    for param in params:
        param["times"] = times
    overflows_before = listen_overflows()
    for pipe, param in zip(gen.pipes, params, strict=True):
        pipe.send((command, param))
    # The server's CPU over the same window as the deliveries.
    _sleep_until(times["measure_from"])
    if on_window is not None:
        on_window(measure)
    server_cpu_from = server.cpu_times()
    nodes_from = server.node_cpu_seconds()
    redis_from = _redis_now(server)
    switches_from = server.context_switches()
    busy_from = machine_busy()[0]
    store_from = _stored_now(server)
    _sleep_until(times["measure_to"])
    server_cpu_to = server.cpu_times()
    nodes_to = server.node_cpu_seconds()
    redis_to = _redis_now(server)
    switches_to = server.context_switches()
    busy_to = machine_busy()[0]
    # The senders stop at measure_to: rows sent by then but not stored are in flight in
    # the server, queued for the writer or in its open batch, or were dropped.
    store_to = _stored_now(server)
    stopped = gen.collect(warmup + measure + 60, command)
    sent = sum(sum(r["sent"].values()) for r in stopped)
    expected = sent * recipients_per_message
    # echo-message: each message of a sender with the cap comes back to it once.
    echo_expected = sum(r["echo_sent"] for r in stopped)
    # The store's rows when every message sent (warm-up included) is stored.
    rows_expected = sent * rows_per_message if store_from and store_to else None
    stored = store_to[1] if store_to else 0
    # Drain: wait for every in-flight message (and echo, and stored row), bounded.
    stop_ns = times["stop"]
    drain_deadline = time.monotonic() + drain_timeout
    received = sum(r["rx"] for r in stopped)
    echoes = sum(r["echo_rx"] for r in stopped)
    drained_at = stored_at = None
    store_moved = time.monotonic()
    while True:
        if received >= expected:
            drained_at = drained_at or time.monotonic_ns()
        if rows_expected is not None and stored >= rows_expected:
            stored_at = stored_at or time.monotonic_ns()
        # Rows that are not there 2 s after everything was delivered (and the count
        # stopped moving) were dropped: a writer with work left adds a batch well within.
        store_done = (
            rows_expected is None
            or stored_at is not None
            or (drained_at is not None and time.monotonic() - store_moved > 2.0)
        )
        if drained_at and echoes >= echo_expected and store_done:
            break
        if time.monotonic() > drain_deadline or not server.alive():
            break
        time.sleep(0.05)
        status = gen.same("status", 30)
        received = sum(r["rx"] for r in status)
        echoes = sum(r["echo_rx"] for r in status)
        if not store_done:
            now_stored = server.stored_rows() or stored
            if now_stored != stored:
                stored, store_moved = now_stored, time.monotonic()
    if rows_expected == 0:  # nothing should be stored (private messages): check, drained
        stored = server.stored_rows() or 0
    finished = gen.same("finish", 60)
    received = sum(r["rx"] for r in finished)
    echoes = sum(r["echo_rx"] for r in finished)
    latencies = sorted(v for r in finished for v in r["latencies"])
    echo_latencies = sorted(v for r in finished for v in r["echo_latencies"])
    # Deliveries in the window: per worker (each snapped its own counter), then summed.
    rate = 0.0
    gen_cpu = 0.0
    window_ok = True
    for r in stopped:
        if r["snap_from"] is None or r["snap_to"] is None:
            window_ok = False
            continue
        (t0, rx0, cpu0), (t1, rx1, cpu1) = r["snap_from"], r["snap_to"]
        rate += (rx1 - rx0) / max(1e-9, (t1 - t0) / 1e9)
        gen_cpu += cpu1 - cpu0
    errors, samples = summed_errors(finished)
    server_cpu = sum(server_cpu_to) - sum(server_cpu_from)
    server_sys = server_cpu_to[1] - server_cpu_from[1]
    delivered_in_window = rate * measure
    store: dict[str, Any] = {}
    if rows_expected is not None and store_from and store_to:
        store["stored"] = stored
        if rows_expected:
            (t0, rows0), (t1, rows1) = store_from, store_to
            store.update(
                rows_expected=rows_expected,
                not_stored=rows_expected - stored,
                stored_share=round(stored / rows_expected, 6),
                store_rows_per_s=round((rows1 - rows0) / max(1e-9, (t1 - t0) / 1e9)),
                unstored_at_stop=rows_expected - rows1,
                store_catchup_s=round((stored_at - stop_ns) / 1e9, 3) if stored_at else None,
            )
    cluster: dict[str, Any] = {}
    redis_cpu = 0.0
    if redis_from is not None and redis_to is not None:
        # A cluster kind: the server's figures are its nodes' sum; Redis is counted apart,
        # per message (one XADD each, read by every node's bus), and each node's share.
        redis_cpu = redis_to[0] - redis_from[0]
        messages_in_window = delivered_in_window / max(1, recipients_per_message)
        calls = {
            name: redis_to[1].get(name, 0) - redis_from[1].get(name, 0)
            for name in sorted(redis_to[1])
            if redis_to[1].get(name, 0) > redis_from[1].get(name, 0) and name != "info"
        }
        cluster = {
            "redis_cpu_cores": round(redis_cpu / measure, 3),
            "redis_us_per_msg": (
                round(redis_cpu / messages_in_window * 1e6, 2) if messages_in_window else None
            ),
            "redis_calls_in_window": calls,
            "redis_xread_per_msg": (
                round(calls.get("xread", 0) / messages_in_window, 3) if messages_in_window else None
            ),
        }
        if len(nodes_to) > 1:
            cluster["node_cpu_cores"] = [
                round((after - before) / measure, 3)
                for before, after in zip(nodes_from, nodes_to, strict=True)
            ]
    echo: dict[str, Any] = {}
    if echo_expected:
        echo = {
            "echo_expected": echo_expected,
            "echoes": echoes,
            "echo_lost": max(0, echo_expected - echoes),
            "echo_p50_ms": ms(percentile(echo_latencies, 0.50)),
            "echo_p99_ms": ms(percentile(echo_latencies, 0.99)),
            "echo_samples": len(echo_latencies),
        }
    return {
        **echo,
        **store,
        **cluster,
        "deliveries_per_s": round(rate) if window_ok else None,
        "sent": sent,
        "expected": expected,
        "received": received,
        "lost": max(0, expected - received),
        "extra": max(0, received - expected),
        "drain_s": round((drained_at - stop_ns) / 1e9, 3) if drained_at else None,
        "p50_ms": ms(percentile(latencies, 0.50)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "max_ms": ms(percentile(latencies, 1.0)),
        "samples": len(latencies),
        "server_cpu_cores": round(server_cpu / measure, 3),
        # Kernel time: syscalls, futex hand-offs, context switches, loopback TCP.
        "server_sys_share": round(server_sys / server_cpu, 2) if server_cpu else None,
        "gen_cpu_cores": round(gen_cpu / measure, 3),
        # Everything else the machine ran meanwhile (kernel softirq included; a cluster's
        # Redis is not "else"): a number well above 0.1 means another job shared the cores
        # during the window.
        "other_cpu_cores": round(
            (busy_to - busy_from - server_cpu - gen_cpu - redis_cpu) / measure, 3
        ),
        "server_switches_per_delivery": (
            round((switches_to - switches_from) / delivered_in_window, 3)
            if switches_from is not None and switches_to is not None and delivered_in_window
            else None
        ),
        "server_us_per_delivery": (
            round(server_cpu / delivered_in_window * 1e6, 2) if delivered_in_window else None
        ),
        "errors": errors,
        "error_samples": samples,
        "lost_clients": sum(r["lost_clients"] for r in finished),
        "listen_overflows": listen_overflows() - overflows_before,
        "server_alive": server.alive(),
    }


def _stored_now(server: ServerProcess) -> tuple[int, int] | None:
    """(monotonic ns, PRIVMSG rows in the server's store), or None without a store."""
    started = time.monotonic_ns()
    rows = server.stored_rows()
    return None if rows is None else ((started + time.monotonic_ns()) // 2, rows)


def _redis_now(server: ServerProcess) -> tuple[float, dict[str, int]] | None:
    """(CPU seconds, calls of each command) of a cluster kind's Redis so far; None for a
    server without one."""
    if server.redis is None:
        return None
    try:
        calls = server.redis.command_calls()
    except (OSError, RuntimeError):
        calls = {}
    return sum(server.redis.cpu_times()), calls


def _sleep_until(deadline_ns: int) -> None:
    left = (deadline_ns - time.monotonic_ns()) / 1e9
    if left > 0:
        time.sleep(left)


def fanout(
    server: ServerProcess,
    tag: str,
    members: int,
    senders: int,
    mode: str = "max",
    rate: float = 0.0,
    window: int = 16,
    warmup: float = 1.0,
    measure: float = 4.0,
    drain_timeout: float = 10.0,
    workers: int = 2,
    connect_rate: float = 2000.0,
    connect_window: int = 100,
    sample_every: int = 50,
    pad: int = 40,
    stagger: bool = False,
    tick_ms: float = 10.0,
    min_period_ms: float = 0.0,
    caps_fraction: float = 0.0,
    caps: str = MIX_CAPS,
    on_window: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """N members in one room; S of them talk. `rate` is the total msg/s in fixed mode.

    Fixed rate sends in lockstep by default: every sender's slot k falls at k / (rate/S)
    s, so the room gets rate/S bursts of S messages per second. `stagger` spreads the
    senders' slots over the period instead and sends on a `tick_ms` clock: smoother
    traffic, but a receiver then reads about one line per recv, and on 2 cores the
    generator needs more CPU than the server. `min_period_ms` makes every generator
    loop turn last at least that long, to batch reads (adds up to that much latency).
    `caps_fraction` of the senders and of the other members (each worker its share) ask
    for `caps`.
    """
    gen = Generator(server, workers)
    try:
        room = f"#{tag}"
        clients = [(i, nick, room) for i, nick in enumerate(nicks(tag, members))]
        per_worker = split(clients, workers)
        # Senders spread evenly over the member list and alternate between the workers
        # (client i lives in worker i % workers); each worker's first non-sender
        # member is its monitor.
        step = max(1, members // senders)
        sender_order = [
            min(members - 1, i * step + (i - i * step) % workers) for i in range(senders)
        ]
        sender_ids = set(sender_order)
        groups = [[idx for idx, _, _ in part if idx in sender_ids] for part in per_worker]
        groups += [[idx for idx, _, _ in part if idx not in sender_ids] for part in per_worker]
        setup = setup_some_capped(
            server, gen, per_worker, groups, caps_fraction, caps, connect_rate, connect_window
        )
        result: dict[str, Any] = dict(setup)
        problem = setup_problem(setup, members)
        if problem:
            result["error"] = problem
            return result
        params = []
        for part in per_worker:
            own = [idx for idx, _, _ in part if idx in sender_ids]
            monitor = next((idx for idx, _, _ in part if idx not in sender_ids), None)
            params.append(
                {
                    "room": room,
                    "senders": own,
                    "phases": {
                        idx: sender_order.index(idx) / senders if stagger else 0.0 for idx in own
                    },
                    "monitor": monitor,
                    "mode": mode,
                    "window": window,
                    "rate_per_sender": rate / senders if mode == "fixed" else 0.0,
                    "sample_every": sample_every,
                    "pad": pad,
                    "tick_ms": tick_ms if stagger else 0.0,
                    "min_period_ms": min_period_ms,
                }
            )
        traffic = _traffic(
            server, gen, "fanout", params, members - 1, warmup, measure, drain_timeout, on_window
        )
        result.update(traffic)
        if traffic["deliveries_per_s"] is not None:
            result["msgs_per_s"] = round(traffic["deliveries_per_s"] / (members - 1))
        if mode == "fixed":
            target = rate * (members - 1)
            result["target_deliveries_per_s"] = round(target)
            achieved = traffic["deliveries_per_s"] or 0
            # Keeping up: the window's delivery rate matches the offered load and the
            # backlog left when sending stops drains within a second.
            result["keeps_up"] = bool(
                achieved >= 0.97 * target
                and traffic["drain_s"] is not None
                and traffic["drain_s"] <= 1.0
            )
        return result
    finally:
        gen.close()


def dm(
    server: ServerProcess,
    tag: str,
    pairs: int,
    window: int = 8,
    warmup: float = 1.0,
    measure: float = 4.0,
    drain_timeout: float = 10.0,
    workers: int = 2,
    connect_rate: float = 2000.0,
    connect_window: int = 100,
    sample_every: int = 10,
    pad: int = 40,
    caps_fraction: float = 0.0,
    caps: str = MIX_CAPS,
    on_window: Callable[[float], None] | None = None,
    in_rooms: bool = False,
) -> dict[str, Any]:
    """P pairs of private chats at max rate; both sides of a pair live in one worker.

    `caps_fraction` of the clients ask for `caps`; at 0.5 that is the first side of
    every pair (its messages go to a plain peer and come back to it tagged as echoes).
    `in_rooms`: each pair shares a room of two and both sides send to the room, so
    every message is a room line (kept in history where the server keeps it) with the
    same one recipient, window and bytes as a private message (the target is longer).
    """
    gen = Generator(server, workers)
    try:
        names = nicks(tag, 2 * pairs)
        # Client 2k and 2k+1 are a pair; pairs are dealt to workers whole. Each client
        # joins a room of its own so all setups look alike (register, join), or with
        # `in_rooms` the pair's room.
        per_worker: list[list[tuple[int, str, str]]] = [[] for _ in range(workers)]
        for k in range(pairs):
            for idx in (2 * k, 2 * k + 1):
                room = f"#{tag}p{k}" if in_rooms else f"#{names[idx]}"
                per_worker[k % workers].append((idx, names[idx], room))
        groups = [[idx for idx, _, _ in part] for part in per_worker]
        setup = setup_some_capped(
            server, gen, per_worker, groups, caps_fraction, caps, connect_rate, connect_window
        )
        result: dict[str, Any] = dict(setup)
        problem = setup_problem(setup, 2 * pairs)
        if problem:
            result["error"] = problem
            return result
        params = []
        for part in per_worker:
            firsts = [(idx, room) for idx, _, room in part if idx % 2 == 0]
            params.append(
                {
                    "pairs": [(idx, idx + 1) for idx, _ in firsts],
                    "mode": "max",
                    "window": window,
                    "rate_per_sender": 0.0,
                    "sample_every": sample_every,
                    "pad": pad,
                    **({"rooms": [room for _, room in firsts]} if in_rooms else {}),
                }
            )
        traffic = _traffic(
            server,
            gen,
            "dm",
            params,
            1,
            warmup,
            measure,
            drain_timeout,
            on_window,
            # A room line is a row; a private message only between two accounts.
            rows_per_message=1 if in_rooms or server.private_history else 0,
        )
        traffic["msgs_per_s"] = traffic.pop("deliveries_per_s")
        traffic["server_us_per_msg"] = traffic.pop("server_us_per_delivery")
        traffic["server_switches_per_msg"] = traffic.pop("server_switches_per_delivery")
        result.update(traffic)
        return result
    finally:
        gen.close()


def idle(
    server: ServerProcess,
    tag: str,
    clients: int,
    room_size: int = 100,
    hold: float = 2.0,
    ping_timeout: float = 10.0,
    workers: int = 2,
    connect_rate: float = 2000.0,
    connect_window: int = 200,
) -> dict[str, Any]:
    """Hold N registered clients in rooms of `room_size`; RSS per connection; PING all."""
    gen = Generator(server, workers)
    try:
        before = server.status()
        cpu_before = server.cpu_seconds()
        busy_before = machine_busy()[0]
        overflows_before = listen_overflows()
        names = nicks(tag, clients)
        specs = [(i, nick, f"#{tag}r{i // room_size}") for i, nick in enumerate(names)]
        setup = setup_clients(
            server, gen, split(specs, workers), connect_rate, connect_window, timeout=180.0
        )
        result: dict[str, Any] = dict(setup)
        server_cpu = server.cpu_seconds() - cpu_before
        result["server_cpu_setup_s"] = round(server_cpu, 2)
        if setup["setup_s"]:
            # As in the traffic windows: other work on the machine during the setup.
            other = machine_busy()[0] - busy_before - server_cpu - setup["gen_cpu_setup_s"]
            result["other_cpu_cores"] = round(other / setup["setup_s"], 3)
        result["connects_per_s"] = (
            round(setup["ready"] / setup["setup_s"]) if setup["setup_s"] else None
        )
        time.sleep(hold)
        after = server.status()
        result.update(
            rss_before_kb=before.get("rss_kb"),
            rss_after_kb=after.get("rss_kb"),
            server_threads=after.get("threads"),
            listen_overflows=listen_overflows() - overflows_before,
        )
        if setup["ready"]:
            delta = after.get("rss_kb", 0) - before.get("rss_kb", 0)
            result["rss_per_conn_kb"] = round(delta / setup["ready"], 1)
        pings = gen.same("ping", ping_timeout + 30, timeout=ping_timeout)
        pong_ns = sorted(v for r in pings for v in r["pong_ns"])
        asked = sum(r["asked"] for r in pings)
        answered = sum(r["answered"] for r in pings)
        result.update(
            ping_asked=asked,
            ping_answered=answered,
            all_ponged=bool(asked == clients and answered == asked),
            pong_p50_ms=ms(percentile(pong_ns, 0.5)),
            pong_p99_ms=ms(percentile(pong_ns, 0.99)),
            pong_max_ms=ms(percentile(pong_ns, 1.0)),
            server_alive=server.alive(),
        )
        errors, samples = summed_errors(pings)
        result["errors"] = errors
        result["error_samples"] = samples
        if setup["ready"] < clients:
            result["error"] = f"only {setup['ready']} of {clients} clients joined"
        return result
    finally:
        gen.close()


def churn(
    server: ServerProcess,
    tag: str,
    cycles: int,
    concurrency: int = 50,
    rooms: int = 10,
    cycle_timeout: float = 10.0,
    workers: int = 2,
) -> dict[str, Any]:
    """Connect, register, join, quit; `concurrency` cycles at once, `cycles` in all."""
    gen = Generator(server, workers)
    try:
        overflows_before = listen_overflows()
        cpu_before = server.cpu_seconds()
        shares = [cycles // workers + (1 if w < cycles % workers else 0) for w in range(workers)]
        replies = gen.call(
            "churn",
            [
                {
                    "cycles": shares[w],
                    "concurrency": max(1, concurrency // workers),
                    "pending_max": pending_share(server, workers),
                    "prefix": f"{tag}w{w}x",
                    "rooms": rooms,
                    "timeout": cycle_timeout,
                }
                for w in range(workers)
            ],
            cycle_timeout * 3 + 60 + cycles / 20,
        )
        done = sum(r["done"] for r in replies)
        elapsed = max(r["elapsed_ns"] for r in replies) / 1e9
        cycle_ns = sorted(v for r in replies for v in r["cycle_ns"])
        errors, samples = summed_errors(replies)
        return {
            "cycles": cycles,
            "done": done,
            "failed": sum(r["failed"] for r in replies),
            "elapsed_s": round(elapsed, 3),
            "cycles_per_s": round(done / elapsed, 1) if elapsed else None,
            "cycle_p50_ms": ms(percentile(cycle_ns, 0.5)),
            "cycle_p99_ms": ms(percentile(cycle_ns, 0.99)),
            "server_cpu_s": round(server.cpu_seconds() - cpu_before, 2),
            "errors": errors,
            "error_samples": samples,
            "listen_overflows": listen_overflows() - overflows_before,
            "server_alive": server.alive(),
        }
    finally:
        gen.close()


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose `key` is the median (the middle one of 3), with every run's `key`."""
    scored = [r for r in runs if r.get(key) is not None]
    if not scored:
        return runs[0]
    scored.sort(key=lambda r: r[key])
    chosen = dict(scored[(len(scored) - 1) // 2])
    chosen[f"{key}_runs"] = [r.get(key) for r in runs]
    chosen["runs"] = len(runs)
    if len(scored) > 1:
        chosen[f"{key}_median"] = statistics.median(r[key] for r in scored)
    return chosen
