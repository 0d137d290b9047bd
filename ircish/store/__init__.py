"""What outlives a connection (issue 13): room history now; accounts and rooms that last
come next. One narrow interface, `Store`, with SQLite (ircish/store/sqlite.py, the stdlib
`sqlite3`) as the embedded implementation; a cluster's Redis store is one more module.
Nothing outside this package knows which one is in use.

Writes never happen on a reader's path: `Writer` (ircish/store/writer.py) is the one thread
that calls `Store.append`, in batches. Reads may come from any thread, each on its own
database connection, and never wait for the writer's transaction (WAL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ircish.events import Event


@dataclass(frozen=True, slots=True)
class StoredLine:
    """One history line: a relayed event as a later reader needs it (CHATHISTORY keeps
    the msgid and time; the client tags go with it)."""

    #: The room's casefolded name (or a nick's, for private history once accounts exist).
    target: str
    msgid: str
    #: When the server accepted it (time.time()), the `time` tag's value.
    time: float
    command: str
    prefix: str
    params: tuple[str, ...]
    #: The sender's client tags (`+typing`, `+draft/reply`): relayed, so kept.
    tags: dict[str, str] = field(default_factory=dict)
    account: str | None = None

    @classmethod
    def of(cls, event: Event, target: str) -> StoredLine:
        """`event` as stored under `target` (casefolded)."""
        msg = event.message
        client_tags = {key: value for key, value in msg.tags.items() if key.startswith("+")}
        return cls(
            target,
            event.msgid,
            event.time,
            msg.command,
            msg.prefix or "",
            tuple(msg.params),
            client_tags,
            event.account,
        )


class Store(Protocol):
    """History kept for rooms, newest last in every answer."""

    def append(self, lines: list[StoredLine]) -> None:
        """Keep `lines`, in one transaction. The writer thread's alone."""

    def latest(self, target: str, limit: int) -> list[StoredLine]:
        """The last `limit` lines of `target`."""

    def before(self, target: str, when: float, limit: int) -> list[StoredLine]:
        """The last `limit` lines of `target` older than `when`."""

    def after(self, target: str, when: float, limit: int) -> list[StoredLine]:
        """The first `limit` lines of `target` newer than `when`."""

    def forget(self, target: str) -> None:
        """Drop `target`'s history (a room that ended). The writer thread's alone."""

    def close(self) -> None:
        """Release the database; nothing is used after."""
