"""The embedded store: SQLite through the stdlib `sqlite3`, nothing to install or start.

One file (or, with no path, a private in-memory database). WAL, so readers never wait for
the writer's transaction; `synchronous=NORMAL`, so a commit costs no fsync and a power cut
loses at most the last commits, never the database. The schema is versioned in
`PRAGMA user_version` and brought up to date by `MIGRATIONS` when the store opens.

The writer thread writes on the connection this object opens. Reads go through a small
pool of other connections (`READERS`), one query at a time each, whatever thread asks:
a connection per reader thread would hold three file descriptors (the file, its WAL and
its shared memory) for every connected client that ever read history.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import queue
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from ircish.locks import new_lock
from ircish.protocol import casefold
from ircish.store import (
    ANONYMOUS,
    AccountState,
    Query,
    RoomState,
    StoredLine,
    account_from_json,
    account_json,
    is_private_target,
    private_target,
    room_from_json,
    room_json,
)

log = logging.getLogger(__name__)

#: Schema steps: MIGRATIONS[n] takes a database from version n to n + 1. Append only; a
#: released step is never edited.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE history (
        target TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        msgid TEXT NOT NULL UNIQUE,
        time INTEGER NOT NULL,
        command TEXT NOT NULL,
        prefix TEXT NOT NULL,
        params TEXT NOT NULL,
        tags TEXT NOT NULL,
        account TEXT,
        PRIMARY KEY (target, epoch, seq)
    ) WITHOUT ROWID;
    CREATE TABLE rooms (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL
    );
    """,
    # Issue 14: accounts, and which private targets each account is part of (so that
    # CHATHISTORY TARGETS and missed messages never scan the history table).
    """
    CREATE TABLE accounts (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL
    );
    CREATE TABLE correspondents (
        account TEXT NOT NULL,
        target TEXT NOT NULL,
        PRIMARY KEY (account, target)
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

#: Connections reads share at most (each one query at a time): a history read is a few
#: milliseconds, so a handful serve every reader thread.
READERS = 4

_COLUMNS = "target, msgid, time, command, prefix, params, tags, account, seq, epoch"
#: IRC parameters never hold a line feed (it ends the line), so it joins them for the
#: `params` column and splits them again exactly.
_PARAMS_SEPARATOR = "\n"
#: A room's lines in the order its members saw them. The table is keyed by
#: (target, epoch, seq): a permanent room's later life has a later epoch and carries its
#: seq on, so (epoch, seq) orders as seq does, and the key is the only index reads need.
_ORDER = "epoch {0}, seq {0}"

#: Lines one INSERT statement takes at most (10 values each: SQLite allows 32 766): a
#: batch is one statement, so the writer lets go of the GIL once for it, not per row.
INSERT_ROWS = 3000


@functools.cache
def _insert_sql(rows: int) -> str:
    """`INSERT OR IGNORE ... VALUES (?, ...), (?, ...)` for `rows` lines."""
    row = "(" + ", ".join("?" * (_COLUMNS.count(",") + 1)) + ")"
    return f"INSERT OR IGNORE INTO history ({_COLUMNS}) VALUES " + ", ".join([row] * rows)


#: In-memory databases are named apart, so two stores in one process share nothing.
_memory_names = itertools.count(1)


class NewerSchemaError(RuntimeError):
    """The database was written by a newer ircish: opening it could lose what it keeps."""


class SqliteStore:
    """`Store` on one SQLite database: `path`, or memory only when None."""

    def __init__(self, path: str | Path | None) -> None:
        self._memory = path is None
        if path is None:
            self._uri = f"file:ircish-memory-{next(_memory_names)}?mode=memory&cache=shared"
        else:
            self._uri = Path(path).resolve().as_uri()
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        #: Reader connections made so far (at most READERS), under `_readers_lock`, taken
        #: alone; the connection itself is opened after it is released.
        self._readers_made = 0
        self._readers_lock = new_lock("SqliteStore._readers_lock")
        #: Private targets whose correspondents rows are written (the writer thread's).
        self._correspondents: set[str] = set()
        # The writer's connection; for a memory database it also keeps the data alive.
        self._writer = self._connect()
        try:
            self._refuse_newer()  # before anything changes the file
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._migrate()
        except BaseException:
            self._writer.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA busy_timeout = 5000")
        if self._memory:
            # A memory database is shared between connections through SQLite's shared
            # cache, where WAL does not apply: a table the writer's transaction holds is
            # SQLITE_LOCKED to a reader (busy_timeout does not wait for it), and a reader's
            # lock fails the writer's batch. Readers that take no table locks meet neither;
            # they may see a batch before its commit, which history does not mind (the
            # window has those lines already).
            db.execute("PRAGMA read_uncommitted = 1")
        return db

    def _refuse_newer(self) -> None:
        version = self._writer.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise NewerSchemaError(
                f"the store is at schema version {version}; this ircish knows up to "
                f"{SCHEMA_VERSION}"
            )

    def _migrate(self) -> None:
        db = self._writer
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for step in range(version, SCHEMA_VERSION):
            # One transaction per step: a step is applied whole or not at all.
            db.executescript(f"BEGIN; {MIGRATIONS[step]} PRAGMA user_version = {step + 1}; COMMIT;")

    @property
    def schema_version(self) -> int:
        return self._read("PRAGMA user_version", ())[0][0]

    # -- the writer thread ------------------------------------------------------------

    def append(self, lines: list[StoredLine]) -> None:
        values: list[object] = []
        for line in lines:
            values += (
                line.target,
                line.msgid,
                line.time,
                line.command,
                line.prefix,
                _PARAMS_SEPARATOR.join(line.params),
                json.dumps(line.tags) if line.tags else "{}",
                line.account,
                line.seq,
                line.epoch,
            )
        # A conversation's correspondents are written once, not with every line of it.
        private = {
            line.target
            for line in lines
            if line.target not in self._correspondents and is_private_target(line.target)
        }
        with self._transaction():
            if private:
                self._writer.executemany(
                    "INSERT OR IGNORE INTO correspondents (account, target) VALUES (?, ?)",
                    [(name, target) for target in private for name in target.split(" ")],
                )
            # One statement per INSERT_ROWS lines, not executemany: sqlite3 lets go of the
            # GIL around every statement it steps, and a writer that must win the GIL back
            # once a row from a server's busy threads managed 4 000 rows/s, not 40 000.
            # A msgid is unique: the same event handed in twice is kept once.
            width = _COLUMNS.count(",") + 1
            for start in range(0, len(lines), INSERT_ROWS):
                chunk = values[start * width : (start + INSERT_ROWS) * width]
                self._writer.execute(_insert_sql(len(chunk) // width), chunk)
        self._correspondents |= private

    def forget(self, target: str, epoch: int) -> None:
        with self._transaction():
            self._writer.execute(
                "DELETE FROM history WHERE target = ? AND epoch <= ?", (target, epoch)
            )

    def keep_only(self, targets: Iterable[str]) -> None:
        keep = set(targets)
        with self._transaction():
            known = [row[0] for row in self._writer.execute("SELECT DISTINCT target FROM history")]
            self._writer.executemany(
                "DELETE FROM history WHERE target = ?",
                [
                    (target,)
                    for target in known
                    if target not in keep and not is_private_target(target)
                ],
            )

    def prune(self, max_lines: int, since: int | None) -> None:
        with self._transaction():
            targets = [
                row[0] for row in self._writer.execute("SELECT DISTINCT target FROM history")
            ]
            for target in targets:
                # The seq of the newest line past the limit: it and every older line go.
                cut = self._writer.execute(
                    "SELECT seq FROM history WHERE target = ?"
                    f" ORDER BY {_ORDER.format('DESC')} LIMIT 1 OFFSET ?",
                    (target, max_lines),
                ).fetchone()
                if cut is not None:
                    self._writer.execute(
                        "DELETE FROM history WHERE target = ? AND seq <= ?", (target, cut[0])
                    )
                if since is not None:
                    self._writer.execute(
                        "DELETE FROM history WHERE target = ? AND time < ?", (target, since)
                    )
            # Conversations whose lines have all gone are no one's correspondents now.
            self._writer.execute(
                "DELETE FROM correspondents WHERE target NOT IN"
                " (SELECT DISTINCT target FROM history)"
            )
        self._correspondents.clear()

    def save_room(self, state: RoomState) -> None:
        with self._transaction():
            self._writer.execute(
                "INSERT OR REPLACE INTO rooms (name, state) VALUES (?, ?)",
                (casefold(state.name), json.dumps(room_json(state))),
            )

    def drop_room(self, name: str) -> None:
        with self._transaction():
            self._writer.execute("DELETE FROM rooms WHERE name = ?", (name,))

    def save_account(self, state: AccountState) -> None:
        with self._transaction():
            self._writer.execute(
                "INSERT OR REPLACE INTO accounts (name, state) VALUES (?, ?)",
                (casefold(state.name), json.dumps(account_json(state))),
            )

    def drop_account(self, name: str) -> None:
        # The dropped side's history goes. A conversation with another account stays that
        # account's, filed as with the nick `~name` (someone not logged in), so that
        # whoever registers the name later reads none of it.
        with self._transaction():
            targets = [
                row[0]
                for row in self._writer.execute(
                    "SELECT target FROM correspondents WHERE account = ?", (name,)
                )
            ]
            for target in targets:
                first, _, second = target.partition(" ")
                other = second if first == name else first
                self._writer.execute("DELETE FROM correspondents WHERE target = ?", (target,))
                if other == name or other.startswith(ANONYMOUS):
                    self._writer.execute("DELETE FROM history WHERE target = ?", (target,))
                    continue
                kept = private_target(other, ANONYMOUS + name)
                self._writer.execute(
                    "UPDATE history SET target = ? WHERE target = ?", (kept, target)
                )
                self._writer.execute(
                    "INSERT OR IGNORE INTO correspondents (account, target) VALUES (?, ?)",
                    (other, kept),
                )
            self._writer.execute("DELETE FROM accounts WHERE name = ?", (name,))
        self._correspondents.clear()  # written again with the next lines, where needed

    def _transaction(self) -> _Transaction:
        return _Transaction(self._writer)

    # -- any thread ----------------------------------------------------------------------

    def select(self, target: str, query: Query) -> list[StoredLine]:
        where = ["target = ?"]
        args: list[object] = [target]
        for test, value in (
            ("seq > ?", query.after_seq),
            ("time > ?", query.after_time),
            ("seq < ?", query.before_seq),
            ("time < ?", query.before_time),
            ("time >= ?", query.since),
            ("epoch >= ?", query.since_epoch),
        ):
            if value is not None:
                where.append(test)
                args.append(value)
        if query.commands is not None:
            where.append(f"command IN ({', '.join('?' * len(query.commands))})")
            args.extend(sorted(query.commands))
        order = "DESC" if query.newest else "ASC"
        rows = self._read(
            f"SELECT {_COLUMNS} FROM history WHERE {' AND '.join(where)}"
            f" ORDER BY {_ORDER.format(order)} LIMIT ?",
            (*args, query.limit),
        )
        if query.newest:
            rows.reverse()
        return [_line(row) for row in rows]

    def find(self, target: str, msgid: str) -> StoredLine | None:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM history WHERE msgid = ? AND target = ?", (msgid, target)
        )
        return _line(rows[0]) if rows else None

    def rooms(self) -> list[RoomState]:
        states = []
        for name, text in self._read("SELECT name, state FROM rooms ORDER BY name", ()):
            try:
                states.append(room_from_json(json.loads(str(text))))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                # One room's unreadable state must not keep the server from starting.
                log.error(
                    "store: the state of room %s cannot be read (%s); not restored", name, exc
                )
        return states

    def accounts(self) -> list[AccountState]:
        states = []
        for name, text in self._read("SELECT name, state FROM accounts ORDER BY name", ()):
            try:
                states.append(account_from_json(json.loads(str(text))))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.error("store: account %s cannot be read (%s); not loaded", name, exc)
        return states

    def private_targets(self, account: str) -> list[tuple[str, int]]:
        # The newest line of each target is the last in its key order (seq only grows).
        rows = self._read(
            "SELECT c.target, (SELECT h.time FROM history h WHERE h.target = c.target"
            f" ORDER BY {_ORDER.format('DESC')} LIMIT 1)"
            " FROM correspondents c WHERE c.account = ?",
            (account,),
        )
        return [(str(target), int(when)) for target, when in rows if when is not None]  # type: ignore[call-overload]

    def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        """One query on a pooled reader connection; waits for one when all are busy."""
        db = self._take_reader()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            self._idle.put(db)

    def _take_reader(self) -> sqlite3.Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._readers_lock:
            make = self._readers_made < READERS
            if make:
                self._readers_made += 1
        if not make:
            return self._idle.get()
        try:
            return self._connect()
        except BaseException:
            with self._readers_lock:
                self._readers_made -= 1
            raise

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break
        self._writer.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def _line(row: tuple[object, ...]) -> StoredLine:
    target, msgid, when, command, prefix, params, tags, account, seq, epoch = row
    return StoredLine(
        str(target),
        str(msgid),
        int(when),  # type: ignore[call-overload]
        str(command),
        str(prefix),
        tuple(str(params).split(_PARAMS_SEPARATOR)),
        json.loads(str(tags)),
        None if account is None else str(account),
        int(seq),  # type: ignore[call-overload]
        int(epoch),  # type: ignore[call-overload]
    )
