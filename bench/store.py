"""The history store alone (issue 13): how fast SQLite takes batched inserts on this machine
(the ceiling), how fast the writer thread keeps up when fed from another thread, and how
long a CHATHISTORY LATEST 100 read takes with many lines stored.

    python bench/store.py                  # 1M lines, a file in a temp dir (~1 min)
    python bench/store.py --rows 200000    # smaller

Runs ircish's own store code from this checkout; the database is a file in a temporary
directory on the same disk as /tmp, deleted afterwards. Then an ircish server is started
on that file (its rooms from the config, so permanent: they keep their history) and a
client times CHATHISTORY over a socket: LATEST 100 (the room's window, in memory) and
BEFORE 100 from the middle of the room's history (SQLite).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ircish.store import Query, StoredLine
from ircish.store.sqlite import SqliteStore
from ircish.store.writer import DEFAULT_BATCH, Writer

ROOMS = 100
TEXT = "a line of ordinary chat length, about as long as most people type " * 2


def lines(start: int, count: int) -> list[StoredLine]:
    """Lines `start`.. spread over ROOMS rooms, each room's in order (seq), 1 ms apart."""
    now = int(time.time() * 1000)
    return [
        StoredLine(
            f"#room{n % ROOMS}",
            f"m{n}",
            now + n,
            "PRIVMSG",
            "alice!alice@127.0.0.1",
            (f"#room{n % ROOMS}", TEXT),
            seq=n // ROOMS + 1,
        )
        for n in range(start, start + count)
    ]


def ceiling(store: SqliteStore, rows: int) -> float:
    """Rows/s of `append` in batches of DEFAULT_BATCH, called directly: SQLite's limit."""
    batches = [lines(n, DEFAULT_BATCH) for n in range(0, rows, DEFAULT_BATCH)]
    started = time.perf_counter()
    for batch in batches:
        store.append(batch)
    return rows / (time.perf_counter() - started)


def through_writer(store: SqliteStore, start: int, rows: int) -> tuple[float, int, int]:
    """Rows/s written when one thread submits as fast as the queue takes them; the deepest
    queue seen, and how many submits found it full (the feeder then waits 1 ms)."""
    writer = Writer(store)
    writer.start()
    todo = lines(start, rows)
    deepest = full = 0
    started = time.perf_counter()
    for n, line in enumerate(todo):
        while not writer.submit(line):
            full += 1
            time.sleep(0.001)
        if n % 64 == 0:  # qsize takes the queue's lock: sampled
            deepest = max(deepest, writer.queued)
    writer.close()
    elapsed = time.perf_counter() - started
    return rows / elapsed, deepest, full


def reads(store: SqliteStore, count: int = 2000) -> list[float]:
    """Milliseconds of the last 100 lines of a room (`select`, as CHATHISTORY LATEST 100
    reads them past the window), from a thread of its own (as a reader's)."""
    times: list[float] = []

    def run() -> None:
        for n in range(count):
            started = time.perf_counter()
            got = store.select(f"#room{n % ROOMS}", Query(100))
            times.append((time.perf_counter() - started) * 1000)
            assert len(got) == 100

    reader = threading.Thread(target=run)
    reader.start()
    reader.join()
    return sorted(times)


def over_irc(db: Path, room: str, count: int = 500) -> tuple[list[float], list[float]]:
    """Milliseconds of CHATHISTORY LATEST 100 and of BEFORE 100 from the middle of `room`'s
    history, each from send to the batch's end, with an ircish server on `db`."""
    with sqlite3.connect(db) as check:
        (middle,) = check.execute(
            "SELECT time FROM history WHERE target = ? ORDER BY seq LIMIT 1 OFFSET "
            "(SELECT count(*) / 2 FROM history WHERE target = ?)",
            (room, room),
        ).fetchone()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(middle // 1000))
    stamp += f".{middle % 1000:03d}Z"
    config = db.parent / "server.yaml"
    rooms = [{"name": f"#room{n}"} for n in range(ROOMS)]
    config.write_text(
        json.dumps(
            {
                "server": {"port": 0, "motd": "bench"},
                "limits": {"flood_rate": 0},
                "store": {"path": str(db)},
                "rooms": rooms,
            }
        )
    )
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(
        # The log level on the command line: the config key moved (issue 15).
        [sys.executable, "-m", "ircish.cli", "-c", str(config), "--log-level", "WARNING"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert server.stderr is not None
        listening = re.search(r"listening on [\d.]+:(\d+)", server.stderr.readline())
        assert listening, "the server did not start"
        sock = socket.create_connection(("127.0.0.1", int(listening[1])), timeout=30)
        reader = sock.makefile("rb")

        def until(pattern: bytes) -> None:
            while pattern not in reader.readline():
                pass

        sock.sendall(
            b"CAP REQ :batch server-time message-tags draft/chathistory\r\n"
            b"NICK bench\r\nUSER bench 0 * :bench\r\nCAP END\r\n" + f"JOIN {room}\r\n".encode()
        )
        until(b" 366 ")
        latest: list[float] = []
        before: list[float] = []
        for _ in range(count):
            for times, request in (
                (latest, f"CHATHISTORY LATEST {room} * 100"),
                (before, f"CHATHISTORY BEFORE {room} timestamp={stamp} 100"),
            ):
                started = time.perf_counter()
                sock.sendall(request.encode() + b"\r\n")
                until(b"BATCH -")
                times.append((time.perf_counter() - started) * 1000)
        sock.close()
    finally:
        server.terminate()
        server.wait(30)
    return sorted(latest), sorted(before)


def summary(ms: list[float]) -> str:
    p99 = ms[int(len(ms) * 0.99) - 1]
    return f"p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="lines to store in all")
    args = parser.parse_args()
    # The feeder below outruns the writer on purpose and waits when the queue is full;
    # the writer's "history writer behind" warning would only repeat what `full` counts.
    logging.getLogger("ircish.store.writer").setLevel(logging.ERROR)
    fed = min(200_000, args.rows // 2)
    with tempfile.TemporaryDirectory(prefix="ircish-store-bench-") as tmp:
        store = SqliteStore(Path(tmp) / "bench.db")
        direct = ceiling(store, args.rows - fed)
        rate, deepest, full = through_writer(store, args.rows - fed, fed)
        ms = reads(store)
        size = (Path(tmp) / "bench.db").stat().st_size
        store.close()
        latest, before = over_irc(Path(tmp) / "bench.db", "#room7")
    print(f"rows stored: {args.rows:,} in {ROOMS} rooms, {size / 2**20:.0f} MiB")
    print(f"SQLite batched inserts (append, {DEFAULT_BATCH}/transaction): {direct:,.0f} rows/s")
    print(f"through the writer thread, fed from another: {rate:,.0f} rows/s")
    print(f"  deepest queue seen: {deepest:,}; submits that found it full: {full:,}")
    print(f"select(room, last 100) with {args.rows:,} stored: {summary(ms)}")
    print(f"over IRC, CHATHISTORY LATEST 100 (the window): {summary(latest)}")
    print(f"over IRC, CHATHISTORY BEFORE 100 from mid-history (SQLite): {summary(before)}")


if __name__ == "__main__":
    main()
