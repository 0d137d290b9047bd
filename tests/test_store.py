"""The store (issue 13, first step): SQLite files in a temp dir, and the writer thread."""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import TIMEOUT, open_fds, wait_for

from ircish.events import Event, millis, server_time, time_tag
from ircish.protocol import Message
from ircish.store import (
    AccountState,
    MaskState,
    Query,
    RoomState,
    ScramKeys,
    StoredLine,
    read_lines,
)
from ircish.store.redis import RedisStore
from ircish.store.sqlite import READERS, SCHEMA_VERSION, NewerSchemaError, SqliteStore
from ircish.store.writer import Writer

ROOT = Path(__file__).resolve().parent.parent


def line(n: int, target: str = "#r", when: int | None = None, epoch: int = 1) -> StoredLine:
    return StoredLine(
        target,
        f"id{n}",
        1_000_000 + n * 10 if when is None else when,
        "PRIVMSG",
        "alice!a@127.0.0.1",
        (target, f"line {n}"),
        {"+draft/reply": "id0"} if n == 1 else {},
        seq=n,
        epoch=epoch,
    )


def latest(store: SqliteStore, target: str, limit: int) -> list[StoredLine]:
    return store.select(target, Query(limit))


def texts(lines: list[StoredLine]) -> list[str]:
    return [stored.params[1] for stored in lines]


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    """Each store test runs on SQLite, and on Redis (a cluster's store: a real
    redis-server, skipped with one line where it is not installed)."""
    if request.param == "sqlite":
        opened = SqliteStore(tmp_path / "ircish.db")
    else:
        opened = RedisStore(request.getfixturevalue("redis_server").url)
    yield opened
    opened.close()


def test_a_new_file_gets_the_schema_and_a_reopened_one_keeps_its_lines(tmp_path):
    path = tmp_path / "ircish.db"
    first = SqliteStore(path)
    assert first.schema_version == SCHEMA_VERSION
    first.append([line(1), line(2)])
    first.close()

    again = SqliteStore(path)  # a restart: the migrations have nothing left to do
    assert again.schema_version == SCHEMA_VERSION
    assert latest(again, "#r", 10) == [line(1), line(2)]  # client tags kept
    again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_database_from_a_newer_ircish_is_not_opened(tmp_path):
    path = tmp_path / "ircish.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(NewerSchemaError, match="schema version"):
        SqliteStore(path)
    with sqlite3.connect(path) as db:  # refused, and not changed: still no WAL
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_reads_are_oldest_first_within_the_limit_and_per_target(store):
    store.append([line(n) for n in range(1, 8)] + [line(99, "#other")])
    assert texts(latest(store, "#r", 3)) == ["line 5", "line 6", "line 7"]
    assert texts(store.select("#r", Query(2, before_seq=5))) == ["line 3", "line 4"]
    assert texts(store.select("#r", Query(2, before_time=1_000_050))) == ["line 3", "line 4"]
    assert texts(store.select("#r", Query(2, after_seq=2, newest=False))) == ["line 3", "line 4"]
    assert texts(store.select("#r", Query(2, after_time=1_000_020, newest=False))) == [
        "line 3",
        "line 4",
    ]
    assert texts(store.select("#r", Query(9, after_seq=1, before_seq=4))) == ["line 2", "line 3"]
    assert texts(store.select("#r", Query(9, since=1_000_060))) == ["line 6", "line 7"]
    assert texts(latest(store, "#other", 10)) == ["line 99"]
    assert latest(store, "#nowhere", 10) == []
    assert store.find("#r", "id4") == line(4)
    assert store.find("#other", "id4") is None  # a msgid of another room finds nothing


def test_the_same_event_handed_in_twice_is_kept_once(store):
    store.append([line(1)])
    store.append([line(1), line(2)])
    assert texts(latest(store, "#r", 10)) == ["line 1", "line 2"]


def test_forget_drops_one_target_only(store):
    store.append([line(1), line(2, "#other")])
    store.forget("#r", 1)
    assert latest(store, "#r", 10) == []
    assert texts(latest(store, "#other", 10)) == ["line 2"]


def test_a_memory_store_keeps_lines_for_every_thread_and_apart_from_another(tmp_path):
    first, second = SqliteStore(None), SqliteStore(None)
    first.append([line(1)])
    seen: list[list[StoredLine]] = []
    reader = threading.Thread(target=lambda: seen.append(latest(first, "#r", 10)))
    reader.start()
    reader.join(TIMEOUT)
    assert seen == [[line(1)]]
    assert latest(second, "#r", 10) == []
    first.close()
    second.close()


def test_a_relayed_event_is_stored_with_its_msgid_time_and_client_tags():
    msg = Message("PRIVMSG", ["#r", "hi"], "alice!a@h", {"+typing": "active", "label": "x"})
    event = Event(msg, ("#r",), account="alice")
    stored = StoredLine.of(event, "#r")
    assert (stored.msgid, stored.time) == (event.msgid, millis(event.time))
    assert time_tag(stored.time) == server_time(event.time)  # the tag clients saw
    assert (stored.command, stored.prefix, stored.params) == ("PRIVMSG", "alice!a@h", ("#r", "hi"))
    assert stored.tags == {"+typing": "active"}  # a server tag like label is not history
    assert stored.account == "alice"


def test_the_writer_writes_what_was_submitted_and_close_flushes_it(store):
    writer = Writer(store)
    writer.start()
    for n in range(1, 1001):
        assert writer.submit(line(n))
    assert writer.flush(TIMEOUT)
    assert len(latest(store, "#r", 5000)) == 1000
    for n in range(1001, 1101):
        writer.submit(line(n))
    writer.close()  # SIGTERM: everything queued is written before it returns
    assert len(latest(store, "#r", 5000)) == 1100
    assert (writer.written, writer.dropped, writer.failed) == (1100, 0, 0)


def test_forget_comes_after_the_lines_queued_before_it(store):
    writer = Writer(store)
    writer.start()
    writer.submit(line(1))
    writer.forget("#r", 1)
    writer.submit(line(2, epoch=2))  # the next room of that name
    writer.submit(line(3, epoch=1))  # a late line of the room that ended: not kept
    assert writer.flush(TIMEOUT)
    assert texts(latest(store, "#r", 10)) == ["line 2"]
    writer.close()


def test_a_full_queue_drops_counts_and_warns_once_and_never_blocks(store, caplog):
    writer = Writer(store, max_queue=5)  # not started: nothing drains the queue
    caplog.set_level(logging.WARNING, "ircish.store.writer")

    def warnings() -> int:
        return len([r for r in caplog.records if "queue of 5 is full" in r.message])

    accepted = [writer.submit(line(n)) for n in range(1, 21)]
    assert accepted == [True] * 5 + [False] * 15
    assert (writer.dropped, warnings()) == (15, 1)
    writer._items.popleft()  # the disk took one line (line 1): room for one more
    assert writer.submit(line(21))
    assert not any(writer.submit(line(n)) for n in range(22, 31))
    # A queue that fills, drains a little and fills again is one warning, not one a drop.
    assert (writer.dropped, warnings()) == (24, 1)
    writer.forget("#gone", 1)  # a room's end is never turned away, and never blocks
    assert not writer.flush(timeout=0.05)  # nothing drains the queue: it says so
    writer.start()
    assert writer.flush(TIMEOUT)
    assert texts(latest(store, "#r", 10)) == ["line 2", "line 3", "line 4", "line 5", "line 21"]
    writer.close()


class FailingOnce(SqliteStore):
    """A real store whose next append fails, as a full disk would make it."""

    fail = True

    def append(self, lines: list[StoredLine]) -> None:
        if self.fail:
            self.fail = False
            raise sqlite3.OperationalError("database or disk is full")
        super().append(lines)


def test_a_failed_write_is_logged_and_counted_and_the_writer_goes_on(tmp_path, caplog):
    store = FailingOnce(tmp_path / "ircish.db")
    writer = Writer(store)
    writer.start()
    writer.submit(line(1))
    assert writer.flush(TIMEOUT)
    writer.submit(line(2))
    assert writer.flush(TIMEOUT)
    wait_for(lambda: writer.written == 1)
    assert writer.failed == 1
    assert texts(latest(store, "#r", 10)) == ["line 2"]
    assert any("a write to the store failed" in r.message for r in caplog.records)
    writer.close()
    store.close()


def test_a_write_redis_cannot_take_just_now_is_made_when_it_is_back(redis_server, caplog):
    """A Redis restarting under traffic: the writer tries again, and every line is stored
    once Redis is back; one warning when it goes and one when it answers, no traceback."""
    store = RedisStore(redis_server.url, timeout=0.5)
    writer = Writer(store, flush_ms=10)
    writer.start()
    try:
        writer.submit(line(1))
        assert writer.flush(TIMEOUT)
        redis_server.stop()
        writer.submit(line(2))
        wait_for(lambda: any("cannot be reached" in r.message for r in caplog.records))
        writer.submit(line(3))
        redis_server.restart()
        assert writer.flush(TIMEOUT)
        assert texts(latest(store, "#r", 10))[-2:] == ["line 2", "line 3"]
        assert writer.failed == 0
        assert any("answers again" in r.message for r in caplog.records)
        assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"
    finally:
        writer.close()
        store.close()


BURST = """
import sys, time
from ircish.store import MaskState, Query, RoomState, StoredLine, read_lines
from ircish.store.sqlite import SqliteStore
from ircish.store.writer import Writer

writer = Writer(SqliteStore(sys.argv[1]), batch=200)
writer.start()
n = 0
while True:  # until killed: lines as fast as the writer takes them
    n += 1
    line = StoredLine(
        "#r", f"id{n}", int(time.time() * 1000), "PRIVMSG", "a!a@h", ("#r", f"line {n}"), seq=n
    )
    while not writer.submit(line):
        time.sleep(0.001)
    if n % 1000 == 0:
        print(writer.written, flush=True)
"""


def test_sigkill_during_a_write_burst_leaves_an_intact_database(tmp_path):
    """A power cut or SIGKILL mid-transaction: WAL keeps the file whole, and only the lines
    not yet committed are missing (a committed batch is there entire)."""
    path = tmp_path / "ircish.db"
    burst = subprocess.Popen(
        [sys.executable, "-c", BURST, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # its "writer behind" warnings: it outruns the disk
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert burst.stdout is not None
        for _ in range(20):  # well into the burst: thousands of lines committed
            reported = burst.stdout.readline()
            assert reported, "the writer process ended early"
        committed = int(reported)  # written (committed) when it last said so
    finally:
        burst.kill()  # SIGKILL
        burst.wait(TIMEOUT)
        assert burst.stdout is not None
        burst.stdout.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count, top = db.execute(
            "SELECT count(*), max(CAST(substr(msgid, 3) AS INTEGER)) FROM history"
        ).fetchone()
    assert count >= committed > 0
    assert count == top  # no hole: what is there is every line up to the last committed
    store = SqliteStore(path)  # and it opens as a store again
    assert texts(latest(store, "#r", 1)) == [f"line {count}"]
    store.close()


def test_prune_keeps_the_last_max_lines_of_each_target_and_nothing_too_old(store):
    store.append([line(n) for n in range(1, 11)] + [line(n, "#other") for n in range(11, 14)])
    store.prune(max_lines=4, since=None)
    assert texts(latest(store, "#r", 100)) == ["line 7", "line 8", "line 9", "line 10"]
    assert len(latest(store, "#other", 100)) == 3
    store.prune(max_lines=100, since=1_000_090)  # line n was said at 1_000_000 + 10 n
    assert texts(latest(store, "#r", 100)) == ["line 9", "line 10"]
    assert latest(store, "#other", 100) == latest(store, "#other", 3)  # all newer: kept


def test_keep_only_drops_every_other_target(store):
    store.append([line(1), line(2, "#other"), line(3, "#third")])
    store.keep_only({"#r", "#third"})
    assert [latest(store, t, 9) != [] for t in ("#r", "#other", "#third")] == [True, False, True]


def test_a_room_state_is_kept_replaced_and_dropped(store):
    state = RoomState(
        "#Keep",
        "a topic",
        "alice!a@h",
        123,
        100,
        "Pnt",
        "sesame",
        7,
        {"b": (MaskState("bad!*@*", "alice!a@h", 124),)},
    )
    store.save_room(state)
    assert store.rooms() == [state]
    newer = dataclasses.replace(state, topic="another")
    store.save_room(newer)  # keyed by the casefolded name: replaced, not added
    assert store.rooms() == [newer]
    store.drop_room("#keep")
    assert store.rooms() == []


def test_a_read_takes_the_window_first_and_only_older_lines_from_the_store(store):
    """The store lags behind the window (the writer's queue), never the other way round."""
    store.append([line(n) for n in range(1, 8)])  # 1..7 written; 8..10 still queued
    window = [line(n) for n in range(6, 11)]  # the room's last five lines
    whole = [f"line {n}" for n in range(1, 11)]
    assert texts(read_lines(window, False, store, "#r", Query(100))) == whole
    assert texts(read_lines(window, False, store, "#r", Query(3))) == whole[-3:]
    assert texts(read_lines(window, False, store, "#r", Query(4, newest=False))) == whole[:4]
    after = Query(3, after_seq=4, newest=False)
    assert texts(read_lines(window, False, store, "#r", after)) == whole[4:7]
    before = Query(3, before_seq=7)
    assert texts(read_lines(window, False, store, "#r", before)) == whole[3:6]
    # A window that holds all there is never asks the store (here: one with other lines).
    assert texts(read_lines(window, True, store, "#r", Query(100))) == whole[5:]


def test_reads_from_many_threads_share_a_few_connections(store):
    """A connection per reader thread would hold three descriptors per client that ever
    read history; the pool keeps it to READERS whatever the number of threads."""
    store.append([line(n) for n in range(1, 51)])
    before = open_fds()
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda: answers.append(len(latest(store, "#r", 50))))
        for _ in range(40)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert answers == [50] * 40
    assert open_fds() - before <= 3 * READERS


def test_a_small_queue_is_written_when_half_full_not_only_every_flush_ms(store):
    """With a queue smaller than a batch, waiting for a full batch (or flush_ms) would fill
    the queue and turn lines away while the disk sat idle."""
    writer = Writer(store, max_queue=100, flush_ms=60_000)
    writer.start()
    accepted = [writer.submit(line(n)) for n in range(1, 61)]
    assert all(accepted)
    wait_for(lambda: writer.written >= 50)  # long before a minute
    writer.close()
    assert (writer.written, writer.dropped) == (60, 0)


def test_a_read_can_leave_out_earlier_lives_of_a_room(store):
    """A room made anew reads its own life only, even if an earlier life's lines are still
    in the file (a forget that failed)."""
    store.append([line(1, epoch=1), line(2, epoch=1), line(3, epoch=2), line(4, epoch=2)])
    assert texts(store.select("#r", Query(10, since_epoch=2))) == ["line 3", "line 4"]
    assert len(store.select("#r", Query(10))) == 4  # a permanent room reads every life


def test_accounts_and_private_history_are_kept_and_dropped_together(store):
    keys = ScramKeys(b"salt", 4096, b"stored", b"server")
    alice = AccountState("Alice", "$scrypt$x", keys, "a@example.org", 5, ("ab" * 32,), 9)
    store.save_account(alice)
    store.save_account(AccountState("bob", "$scrypt$y"))
    assert store.accounts() == [alice, AccountState("bob", "$scrypt$y")]
    store.append([line(1, "alice bob", when=100), line(2, "alice bob", when=200)])
    store.append([line(3, "alice ~guest", when=300)])
    assert store.private_targets("alice") == [("alice bob", 200), ("alice ~guest", 300)]
    assert store.private_targets("bob") == [("alice bob", 200)]
    assert store.find("alice bob", "id2") == line(2, "alice bob", when=200)
    store.drop_account("alice")
    assert store.accounts() == [AccountState("bob", "$scrypt$y")]
    assert store.private_targets("alice") == []
    assert latest(store, "alice bob", 10) == []
    # bob keeps the conversation, filed as with the nick ~alice (whoever registers alice
    # later reads none of it); the one with a guest goes.
    assert store.private_targets("bob") == [("bob ~alice", 200)]
    assert texts(latest(store, "bob ~alice", 10)) == ["line 1", "line 2"]
    assert latest(store, "alice ~guest", 10) == []
