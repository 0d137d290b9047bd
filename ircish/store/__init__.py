"""What outlives a connection: room history and rooms that last (issue 13), accounts and
private history between them (issue 14). One narrow interface, `Store`, with SQLite
(ircish/store/sqlite.py, the stdlib `sqlite3`) as the embedded implementation; a
cluster's Redis store is one more module.
Nothing outside this package knows which one is in use.

Writes never happen on a reader's path: `Writer` (ircish/store/writer.py) is the one thread
that changes the store, in batches. Reads may come from any thread, each on its own
database connection, and never wait for the writer's transaction (WAL).

A room's history is in the order its members saw it: each line has the room's sequence
number (`seq`, given under the room's lock), and every read orders by it. Times are whole
milliseconds, as the `time` tag shows them, so a `timestamp=` a client copies from a tag
compares equal to the line it came from.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from ircish.events import Event, millis
from ircish.protocol import casefold

#: A stored line's mark that its sender was a bot (shown as the `bot` tag, as live).
BOT_TAG = "bot"


#: The tags of a line whose sender gave none (shared: a stored line's tags are never changed).
NO_TAGS: dict[str, str] = {}


class StoredLine(NamedTuple):
    """One history line: a relayed event as a later reader needs it (CHATHISTORY keeps
    the msgid and time; the client tags go with it). A named tuple: one is made for every
    line a room keeps, under the room's lock, and a tuple is made several times faster
    than a frozen dataclass."""

    #: The room's casefolded name, or two accounts' (`private_target`) for a private line.
    target: str
    msgid: str
    #: When the server accepted it, in whole milliseconds (the `time` tag's value).
    time: int
    command: str
    prefix: str
    params: tuple[str, ...]
    #: The sender's client tags (`+typing`, `+draft/reply`): relayed, so kept; and `bot`
    #: if the sender was a bot (user mode +B). Never changed once made.
    tags: dict[str, str] = NO_TAGS
    account: str | None = None
    #: The line's place in its room's history: every read orders by it.
    seq: int = 0
    #: Which life of the room it was said in (see `Store.forget`).
    epoch: int = 0

    @classmethod
    def of(cls, event: Event, target: str, seq: int = 0, epoch: int = 0) -> StoredLine:
        """`event` as stored under `target` (casefolded)."""
        msg = event.message
        tags = NO_TAGS
        if msg.tags or event.bot:
            tags = {key: value for key, value in msg.tags.items() if key.startswith("+")}
            if event.bot:
                tags[BOT_TAG] = ""  # the sender had user mode +B: the `bot` tag
        return cls(
            target,
            event.msgid,
            millis(event.time),
            msg.command,
            msg.prefix or "",
            tuple(msg.params),
            tags,
            event.account,
            seq,
            epoch,
        )


@dataclass(frozen=True, slots=True)
class Query:
    """Which lines of one target a read wants, newest last in every answer.

    `after` and `before` are exclusive edges: a line's `seq` (a `msgid=` reference, looked
    up) or a time in milliseconds (`timestamp=`). `newest`: of the lines between them, the
    last `limit` (LATEST, BEFORE); otherwise the first (AFTER). `commands`: only these (None:
    all). `since`: nothing older than this time (retention's `max_age`)."""

    limit: int
    after_seq: int | None = None
    after_time: int | None = None
    before_seq: int | None = None
    before_time: int | None = None
    newest: bool = True
    commands: frozenset[str] | None = None
    since: int | None = None
    #: Nothing from a life of the room before this epoch.
    since_epoch: int | None = None

    def admits(self, line: StoredLine) -> bool:
        """Whether `line` is one this read wants (the in-memory window is filtered by it; the
        SQL in a store says the same)."""
        return (
            (self.after_seq is None or line.seq > self.after_seq)
            and (self.after_time is None or line.time > self.after_time)
            and (self.before_seq is None or line.seq < self.before_seq)
            and (self.before_time is None or line.time < self.before_time)
            and (self.commands is None or line.command in self.commands)
            and (self.since is None or line.time >= self.since)
            and (self.since_epoch is None or line.epoch >= self.since_epoch)
        )

    def pick(self, lines: Iterable[StoredLine]) -> list[StoredLine]:
        """The wanted lines of `lines` (in order), at most `limit` of them from the right end."""
        wanted = [line for line in lines if self.admits(line)]
        return wanted[-self.limit :] if self.newest else wanted[: self.limit]


@dataclass(frozen=True, slots=True)
class MaskState:
    mask: str
    setter: str
    time: int


@dataclass(frozen=True, slots=True)
class RoomState:
    """What a permanent room keeps across a restart."""

    name: str
    topic: str = ""
    topic_setter: str = ""
    topic_time: int = 0
    created: int = 0
    #: Flag mode letters that are on (+P among them).
    flags: str = ""
    key: str | None = None
    limit: int | None = None
    #: List letter (b, e, I) -> its entries, in the order they were set.
    lists: dict[str, tuple[MaskState, ...]] = field(default_factory=dict)
    #: ChanServ (a registered room): the founder's account (None: not registered), when
    #: it was registered (time.time(), whole seconds), the access list (account name ->
    #: the status it gets on join, 'o' or 'v') and whether the topic is locked.
    founder: str | None = None
    registered: int = 0
    access: dict[str, str] = field(default_factory=dict)
    topic_lock: bool = False


@dataclass(frozen=True, slots=True)
class ScramKeys:
    """What SCRAM-SHA-256 needs of a password (RFC 5802 section 3), never the password:
    the salt, the iteration count, StoredKey and ServerKey."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True, slots=True)
class AccountState:
    """A registered account as kept: its name as registered (case kept; the nick it
    reserves), the scrypt hash of its password (ircish/passwords.py), its SCRAM keys (None
    when the password cannot be SASLprepped), and when it was made and last used."""

    name: str
    password: str
    scram: ScramKeys | None = None
    email: str | None = None
    #: When it was registered, in ms.
    registered: int = 0
    #: TLS client certificate fingerprints (SHA-256, lowercase hex) SASL EXTERNAL accepts.
    certfps: tuple[str, ...] = ()
    #: When its last session ended, in ms: private messages after it were missed.
    last_seen: int = 0


#: Marks a private party that is not logged in: `~nick` (no account or nick holds '~').
ANONYMOUS = "~"


def private_party(account: str | None, nick: str | None) -> str:
    """Who one side of a private conversation is, for its history: the account
    (casefolded), or `~nick` for someone not logged in (never the same as an account, so
    whoever takes that nick or registers that name later reads nothing of it)."""
    if account is not None:
        return casefold(account)
    return ANONYMOUS + casefold(nick or "*")


def private_target(account: str, other: str) -> str:
    """The history target of the private lines between two parties (`private_party`, in
    either order): `alice bob`, `alice ~guest`. No room name holds a space, and none
    lacks its '#'."""
    first, second = sorted((account, other))
    return f"{first} {second}"


def is_private_target(target: str) -> bool:
    return not target.startswith("#")


class Store(Protocol):
    """History kept for rooms and between accounts, the rooms that last, and accounts.
    A store may name `unreachable`, the errors that mean it cannot be reached just now
    (the writer tries again: every write must be one that can be made twice)."""

    def append(self, lines: list[StoredLine]) -> None:
        """Keep `lines`, in one transaction; a msgid seen before is kept once. The writer
        thread's alone."""

    def select(self, target: str, query: Query) -> list[StoredLine]:
        """The lines of `target` that `query` wants, oldest first."""

    def find(self, target: str, msgid: str) -> StoredLine | None:
        """The line of `target` with this msgid, if kept."""

    def forget(self, target: str, epoch: int) -> None:
        """Drop `target`'s history from its lives up to `epoch` (a room that ended; the next
        room of that name is a later epoch). The writer thread's alone."""

    def keep_only(self, targets: Iterable[str]) -> None:
        """Drop the history of every room but these (at start: rooms that were not
        permanent ended with the last run); private history stays. The writer thread's
        alone."""

    def prune(self, max_lines: int, since: int | None) -> None:
        """Retention: keep at most `max_lines` per target, and nothing older than `since`
        (ms). The writer thread's alone."""

    def save_room(self, state: RoomState) -> None:
        """Keep a permanent room's state (replacing what was kept). The writer's alone."""

    def drop_room(self, name: str) -> None:
        """A room is no longer permanent (`name` casefolded). The writer's alone."""

    def rooms(self) -> list[RoomState]:
        """Every permanent room kept, as saved last."""

    def save_account(self, state: AccountState) -> None:
        """Keep an account (replacing what was kept under its name). The writer's alone."""

    def drop_account(self, name: str) -> None:
        """An account is dropped (`name` casefolded), with its private history. The
        writer's alone."""

    def accounts(self) -> list[AccountState]:
        """Every account kept."""

    def private_targets(self, account: str) -> list[tuple[str, int]]:
        """The private targets `account` (casefolded) is part of, each with the time of
        its newest line (CHATHISTORY TARGETS, missed messages)."""

    def close(self) -> None:
        """Release the database; nothing is used after."""


def read_lines(
    window: list[StoredLine], complete: bool, store: Store | None, target: str, query: Query
) -> list[StoredLine]:
    """What `query` asks of a room's history: its window first (the recent lines, always
    current), the store for what is older than the window. `complete`: the window holds
    all there is. The store may lag behind the window (the writer's queue), never the
    other way round, so its lines are only taken from before the window's first."""
    picked = query.pick(window)
    if complete or store is None or (query.newest and len(picked) >= query.limit):
        return picked
    older = query
    if window:
        first = window[0]
        if (query.after_seq is not None and query.after_seq >= first.seq - 1) or (
            query.after_time is not None and query.after_time >= first.time
        ):
            return picked  # nothing before the window is wanted
        before = first.seq if query.before_seq is None else min(first.seq, query.before_seq)
        older = dataclasses.replace(query, before_seq=before)
    if query.newest:
        older = dataclasses.replace(older, limit=query.limit - len(picked))
        return store.select(target, older) + picked
    return (store.select(target, older) + picked)[: query.limit]


# -- kept states as JSON (the SQLite and Redis stores keep the same shape) ----------------


def room_json(state: RoomState) -> dict[str, object]:
    data = dataclasses.asdict(state)
    data["lists"] = {
        letter: [[entry.mask, entry.setter, entry.time] for entry in entries]
        for letter, entries in state.lists.items()
    }
    return data


def room_from_json(data: dict[str, object]) -> RoomState:
    """A room's saved state; keys this ircish does not know (a later one's) are left out."""
    lists = data.pop("lists", {})
    if not isinstance(lists, dict):
        raise TypeError("lists is not a mapping")
    access = data.get("access", {})
    if not isinstance(access, dict) or not all(
        isinstance(account, str) and isinstance(letter, str) for account, letter in access.items()
    ):
        raise TypeError("access is not a mapping of account names to letters")
    known = {field.name for field in dataclasses.fields(RoomState)}
    return RoomState(
        **{key: value for key, value in data.items() if key in known},  # type: ignore[arg-type]
        lists={
            letter: tuple(MaskState(mask, setter, when) for mask, setter, when in entries)
            for letter, entries in lists.items()
        },
    )


def account_json(state: AccountState) -> dict[str, object]:
    data = dataclasses.asdict(state)
    scram = state.scram
    data["scram"] = (
        None
        if scram is None
        else {
            "salt": b64(scram.salt),
            "iterations": scram.iterations,
            "stored_key": b64(scram.stored_key),
            "server_key": b64(scram.server_key),
        }
    )
    data["certfps"] = list(state.certfps)
    return data


def account_from_json(data: dict[str, object]) -> AccountState:
    """An account as kept; keys this ircish does not know (a later one's) are left out."""
    scram = data.pop("scram", None)
    keys = None
    if scram is not None:
        if not isinstance(scram, dict):
            raise TypeError("scram is not a mapping")
        keys = ScramKeys(
            base64.b64decode(scram["salt"]),
            int(scram["iterations"]),
            base64.b64decode(scram["stored_key"]),
            base64.b64decode(scram["server_key"]),
        )
    known = {field.name for field in dataclasses.fields(AccountState)}
    values = {key: value for key, value in data.items() if key in known}
    values["certfps"] = tuple(values.get("certfps", ()))  # type: ignore[arg-type]
    return AccountState(**values, scram=keys)  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
