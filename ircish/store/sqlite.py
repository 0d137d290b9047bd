"""The embedded store: SQLite through the stdlib `sqlite3`, nothing to install or start.

One file (or, with no path, a private in-memory database). WAL, so readers never wait for
the writer's transaction; `synchronous=NORMAL`, so a commit costs no fsync and a power cut
loses at most the last commits, never the database. The schema is versioned in
`PRAGMA user_version` and brought up to date by `MIGRATIONS` when the store opens.

The writer thread writes on the connection this object opens; every other thread reads on
a connection of its own (`sqlite3` connections are not to be shared between threads).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from pathlib import Path

from ircish.store import StoredLine

#: Schema steps: MIGRATIONS[n] takes a database from version n to n + 1. Append only; a
#: released step is never edited.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE history (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        msgid TEXT NOT NULL UNIQUE,
        time REAL NOT NULL,
        command TEXT NOT NULL,
        prefix TEXT NOT NULL,
        params TEXT NOT NULL,
        tags TEXT NOT NULL,
        account TEXT
    );
    CREATE INDEX history_by_target ON history (target, time, id);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = "target, msgid, time, command, prefix, params, tags, account"
#: In-memory databases are named apart, so two stores in one process share nothing.
_memory_names = itertools.count(1)


class NewerSchemaError(RuntimeError):
    """The database was written by a newer ircish: opening it could lose what it keeps."""


class SqliteStore:
    """`Store` on one SQLite database: `path`, or memory only when None."""

    def __init__(self, path: str | Path | None) -> None:
        if path is None:
            self._uri = f"file:ircish-memory-{next(_memory_names)}?mode=memory&cache=shared"
        else:
            self._uri = Path(path).resolve().as_uri()
        self._local = threading.local()
        # The writer's connection; for a memory database it also keeps the data alive.
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode = WAL")
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA busy_timeout = 5000")
        return db

    def _migrate(self) -> None:
        db = self._writer
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise NewerSchemaError(
                f"the store is at schema version {version}; this ircish knows up to "
                f"{SCHEMA_VERSION}"
            )
        for step in range(version, SCHEMA_VERSION):
            # One transaction per step: a step is applied whole or not at all.
            db.executescript(f"BEGIN; {MIGRATIONS[step]} PRAGMA user_version = {step + 1}; COMMIT;")

    @property
    def schema_version(self) -> int:
        return self._reader().execute("PRAGMA user_version").fetchone()[0]

    # -- the writer thread ------------------------------------------------------------

    def append(self, lines: list[StoredLine]) -> None:
        rows = [
            (
                line.target,
                line.msgid,
                line.time,
                line.command,
                line.prefix,
                json.dumps(line.params),
                json.dumps(line.tags),
                line.account,
            )
            for line in lines
        ]
        with self._transaction():
            # A msgid is unique: the same event handed in twice is kept once.
            self._writer.executemany(
                f"INSERT OR IGNORE INTO history ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def forget(self, target: str) -> None:
        with self._transaction():
            self._writer.execute("DELETE FROM history WHERE target = ?", (target,))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._writer)

    # -- any thread ----------------------------------------------------------------------

    def latest(self, target: str, limit: int) -> list[StoredLine]:
        return self._newest_first("target = ?", (target,), limit)

    def before(self, target: str, when: float, limit: int) -> list[StoredLine]:
        return self._newest_first("target = ? AND time < ?", (target, when), limit)

    def after(self, target: str, when: float, limit: int) -> list[StoredLine]:
        rows = self._reader().execute(
            f"SELECT {_COLUMNS} FROM history WHERE target = ? AND time > ?"
            " ORDER BY time, id LIMIT ?",
            (target, when, limit),
        )
        return [_line(row) for row in rows]

    def _newest_first(self, where: str, args: tuple[object, ...], limit: int) -> list[StoredLine]:
        rows = self._reader().execute(
            f"SELECT {_COLUMNS} FROM history WHERE {where} ORDER BY time DESC, id DESC LIMIT ?",
            (*args, limit),
        )
        return [_line(row) for row in reversed(rows.fetchall())]

    def _reader(self) -> sqlite3.Connection:
        """This thread's own connection (made on first use)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def close(self) -> None:
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
    target, msgid, when, command, prefix, params, tags, account = row
    return StoredLine(
        str(target),
        str(msgid),
        float(when),  # type: ignore[arg-type]
        str(command),
        str(prefix),
        tuple(json.loads(str(params))),
        json.loads(str(tags)),
        None if account is None else str(account),
    )
