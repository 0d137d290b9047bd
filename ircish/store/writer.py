"""The store's one writer thread: relayed lines go to disk in batches, never on a reader's path.

A reader thread that relays a message hands its line over with `Writer.submit`, which never
blocks: the queue takes it, or, when `max_queue` lines are waiting already (the disk cannot
keep up), the line is not stored. It was still delivered; it is only missing from history.
Such drops are counted (`dropped`) and logged: the first at once, then one warning a minute
at most with the count since, never a line per drop. Changes other than lines (a room that
ended, a permanent room's new state) are few and always queued, in order with the lines.

The thread takes what has queued up and writes it in one transaction, as soon as `batch`
lines are waiting or the oldest has waited `flush_ms`: after a SIGKILL or a power cut, at
most the last `flush_ms` of history (and whatever was still queued behind a slow disk) is
missing. A write that fails is logged and counted (`failed`) and the thread goes on with
the next batch; but while the store cannot be reached (a Redis restarting: the store's
`unreachable` errors), a write is tried again, for up to RETRY_FOR seconds, the queue
filling meanwhile, with one log line when it goes and one when it is back. Retention
(`prune`) runs here too, once a minute, never on a reader.
`close()` writes everything queued before it returns (SIGTERM loses nothing).
"""

from __future__ import annotations

import collections
import logging
import operator
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ircish.locks import new_lock
from ircish.store import AccountState, RoomState, Store, StoredLine

log = logging.getLogger(__name__)

#: Lines waiting for the writer at most; past it `submit` drops (and counts) them.
DEFAULT_QUEUE = 10_000
#: Lines written in one transaction at most.
DEFAULT_BATCH = 3000
#: Milliseconds a line waits at most for its transaction (store.flush_ms).
DEFAULT_FLUSH_MS = 100
#: Seconds between two warnings about lines dropped (a flapping queue is one warning).
DROP_WARNING_INTERVAL = 60.0
#: Seconds between two retention passes.
PRUNE_INTERVAL = 60.0
#: How long a write is tried again while the store cannot be reached (seconds), and the
#: pauses between tries (doubling).
RETRY_FOR = 120.0
RETRY_FIRST = 0.05
RETRY_MOST = 2.0
#: Seconds a forgotten room's late lines are still turned away (a reader thread may hand
#: over the last lines of a room that ended just after the room's end was queued).
FORGOTTEN_FOR = 60.0


@dataclass(frozen=True, slots=True)
class Retention:
    """history.max_lines per target, and history.max_age in seconds (None: no limit)."""

    max_lines: int
    max_age: float | None = None


@dataclass(frozen=True, slots=True)
class _Forget:
    """Drop a target's history up to an epoch, in its place among the lines around it."""

    target: str
    epoch: int


_STOP = object()
_TARGET, _EPOCH, _SEQ = (operator.attrgetter(name) for name in ("target", "epoch", "seq"))
#: What the writer thread sleeps for (`Writer._sleeping`).
AWAKE = ""
ANY = "any"
FULL = "full"


class Writer:
    """The thread that writes to `store`. Start it with `start()`; `close()` flushes."""

    def __init__(
        self,
        store: Store,
        max_queue: int = DEFAULT_QUEUE,
        batch: int = DEFAULT_BATCH,
        flush_ms: int = DEFAULT_FLUSH_MS,
        retention: Retention | None = None,
    ) -> None:
        self.store = store
        # Lines and changes in order. A deque, not a queue.Queue: an append takes no lock
        # (a reader thread that relays a line never waits for the writer's mutex), and the
        # writer is woken only when it sleeps (see `submit` and `_put`). `submit` keeps the lines
        # under `max_queue`; other changes always go in (a room's end must never be lost),
        # and there are few of them.
        self._items: collections.deque[object] = collections.deque()
        self._wake = threading.Event()
        #: What the writer sleeps for: AWAKE, ANY (the first item), FULL (a full batch,
        #: while it waits out flush_ms). Set by the writer, read by everyone.
        self._sleeping = AWAKE
        #: A flush() or close() is waiting: no gathering.
        self._urgent = False
        self._max_queue = max_queue
        # The writer is woken early when a batch is waiting: never more than half the
        # queue, or a small queue would fill (and turn lines away) between two flushes.
        self._batch = max(1, min(batch, max_queue // 2))
        self._flush_s = flush_ms / 1000
        self._retention = retention
        self._thread = threading.Thread(target=self._run, name="store writer", daemon=True)
        #: Lines not stored because the queue was full (any reader thread counts them, under
        #: `_drops_lock`, taken alone), lines whose write failed and lines written (the
        #: writer thread's). Read by anyone.
        self.dropped = 0
        self.failed = 0
        self.written = 0
        #: Lines taken (not dropped) that the thread is done with, written or not (a failed
        #: write, a line of a room life forgotten meanwhile): the n-th line taken is done
        #: once this is n. It only grows, in the queue's order (the writer thread's).
        self.handled = 0
        self._drops_lock = new_lock("Writer._drops_lock")
        #: What the store raises when it cannot be reached just now: tried again.
        self._unreachable: tuple[type[BaseException], ...] = getattr(store, "unreachable", ())
        #: Set by `close`: a write that cannot be made is not tried again.
        self._closing = threading.Event()
        # The first drop is logged at once, then at most one warning per interval.
        self._warned_at = -DROP_WARNING_INTERVAL
        self._warned_count = 0
        # The writer thread's own: target -> (epoch forgotten, until when, monotonic).
        self._forgotten: dict[str, tuple[int, float]] = {}
        #: (target, epoch) -> the highest seq written: changed by the writer thread only,
        #: read by anyone (`written_upto`; one dict read). A room keeps a line in its window
        #: until it is written here.
        self._written: dict[tuple[str, int], int] = {}
        self._pruned_at = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def submit(self, line: StoredLine) -> bool:
        """Queue `line` for the store; never blocks. False if the queue was full."""
        items = self._items
        if len(items) < self._max_queue:
            items.append(line)
            sleeping = self._sleeping
            if sleeping and (sleeping is ANY or len(items) >= self._batch):
                self._wake.set()
            return True
        now = time.monotonic()
        with self._drops_lock:
            self.dropped += 1
            due = now - self._warned_at >= DROP_WARNING_INTERVAL
            if due:
                self._warned_at = now
                news, self._warned_count = self.dropped - self._warned_count, self.dropped
        if due:
            log.warning(
                "history writer behind: its queue of %d is full; lines not stored: %d "
                "since the last warning, %d in all",
                self._max_queue,
                news,
                self.dropped,
            )
        return False

    def forget(self, target: str, epoch: int) -> None:
        """Drop `target`'s history up to `epoch`, after the lines already queued (a room that
        ended must not keep its talk for the next group to read). Never blocks."""
        self._put(_Forget(target, epoch))

    def save_room(self, state: RoomState) -> None:
        """Keep a permanent room's state, in order with the other changes. Never blocks."""
        self._put(state)

    def drop_room(self, name: str) -> None:
        """`name` (casefolded) is no longer a permanent room. Never blocks."""
        self._put(_DropRoom(name))

    def save_account(self, state: AccountState) -> None:
        """Keep an account, in order with the other changes. Never blocks."""
        self._put(state)

    def drop_account(self, name: str) -> None:
        """`name` (casefolded) is no longer an account; its private history goes too."""
        self._put(_DropAccount(name))

    def written_upto(self, target: str, epoch: int) -> int | None:
        """The highest seq of `target`'s life `epoch` written so far (None: none yet)."""
        return self._written.get((target, epoch))

    @property
    def alive(self) -> bool:
        """The writer thread runs (health: a writer that died stores nothing)."""
        return self._thread.is_alive()

    @property
    def queued(self) -> int:
        return len(self._items)

    def lag(self) -> float:
        """Seconds the oldest line still queued has waited since it was said (0: none
        waits). Read without a lock, for metrics: a peek at the queue's head."""
        try:
            head = self._items[0]
        except IndexError:
            return 0.0
        said = getattr(head, "time", None)
        return max(0.0, time.time() - said / 1000) if isinstance(said, int) else 0.0

    def set_retention(self, retention: Retention) -> None:
        """New limits (a config reload): the next pass prunes to them, within a minute;
        reads apply them at once (the rooms' history settings)."""
        self._retention = retention

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        done = threading.Event()
        self._put(done, urgent=True)
        return done.wait(timeout)

    def close(self) -> None:
        """Write what is queued, then stop the thread (a writer never started writes
        nothing)."""
        if self._thread.is_alive():
            self._closing.set()
            self._put(_STOP, urgent=True)
            self._thread.join()

    def _put(self, item: object, urgent: bool = False) -> None:
        self._items.append(item)
        if urgent:
            self._urgent = True
        if urgent or self._sleeping is ANY:
            self._wake.set()

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._sleep_until(ANY, PRUNE_INTERVAL)
            if self._items and not self._urgent:
                # A line waits at most flush_ms for the lines that will share its
                # transaction, unless a batch fills first.
                self._sleep_until(FULL, self._flush_s)
            self._urgent = False
            if self._drain():
                return
            self._prune_if_due()

    def _sleep_until(self, what: str, timeout: float) -> None:
        """Sleep until `what` (ANY: something queued; FULL: a batch's worth, or a flush or
        close waiting), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self._ready(what):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._sleeping = what
            if not self._ready(what):  # a submit that came before it saw us awake
                self._wake.wait(left)
            self._sleeping = AWAKE
            self._wake.clear()

    def _ready(self, what: str) -> bool:
        if what is ANY:
            return bool(self._items)
        return self._urgent or len(self._items) >= self._batch

    def _drain(self) -> bool:
        """Write and apply everything queued, in order, in batches; True at _STOP."""
        items = self._items
        lines: list[StoredLine] = []
        skipped = 0
        while items:
            item = items.popleft()
            if type(item) is StoredLine:
                if not self._forgotten or not self._was_forgotten(item):
                    lines.append(item)
                    if len(lines) >= self._batch:
                        self._write(lines, skipped)
                        lines, skipped = [], 0
                else:
                    skipped += 1
                continue
            self._write(lines, skipped)
            lines, skipped = [], 0
            if item is _STOP:
                return True
            self._change(item)
        self._write(lines, skipped)
        return False

    def _change(self, item: object) -> None:
        """Apply one queued change that is not a line."""
        if isinstance(item, threading.Event):
            item.set()
        elif isinstance(item, _Forget):
            now = time.monotonic()
            self._forgotten = {
                target: entry for target, entry in self._forgotten.items() if entry[1] > now
            }
            self._forgotten[item.target] = (item.epoch, now + FORGOTTEN_FOR)
            for key in [key for key in self._written if key[0] == item.target]:
                if key[1] <= item.epoch:
                    del self._written[key]
            self._apply(lambda: self.store.forget(item.target, item.epoch))
        elif isinstance(item, RoomState):
            self._apply(lambda: self.store.save_room(item))
        elif isinstance(item, _DropRoom):
            self._apply(lambda: self.store.drop_room(item.name))
        elif isinstance(item, AccountState):
            self._apply(lambda: self.store.save_account(item))
        elif isinstance(item, _DropAccount):
            self._apply(lambda: self.store.drop_account(item.name))

    def _was_forgotten(self, line: StoredLine) -> bool:
        """A late line of a room life already forgotten: not stored."""
        entry = self._forgotten.get(line.target)
        return entry is not None and line.epoch <= entry[0]

    def _prune_if_due(self) -> None:
        retention = self._retention
        if retention is None or time.monotonic() - self._pruned_at < PRUNE_INTERVAL:
            return
        self._pruned_at = time.monotonic()
        self.prune_now()

    def prune_now(self) -> None:
        """One retention pass (the writer thread's, or before it starts)."""
        retention = self._retention
        if retention is None:
            return
        since = None
        if retention.max_age is not None:
            since = int((time.time() - retention.max_age) * 1000)
        self._apply(lambda: self.store.prune(retention.max_lines, since))

    def _write(self, lines: list[StoredLine], skipped: int = 0) -> None:
        """Store `lines`; `skipped` more lines before them were not to be stored."""
        try:
            self._store_lines(lines)
        finally:
            self.handled += len(lines) + skipped

    def _store_lines(self, lines: list[StoredLine]) -> None:
        if lines and self._apply(lambda: self.store.append(lines)):
            self.written += len(lines)
            # A room's lines come in seq order: the last one of each room counts. (Mapped
            # in C: this thread shares the GIL with every reader.)
            keys = zip(map(_TARGET, lines), map(_EPOCH, lines), strict=True)
            self._written.update(zip(keys, map(_SEQ, lines), strict=True))
        elif lines:
            self.failed += len(lines)

    def _apply(self, change: Callable[[], None]) -> bool:
        """Run one store change; a failure is logged, never the end of the thread. While the
        store cannot be reached it is tried again (RETRY_FOR), unless the writer closes."""
        pause, given_up_at = RETRY_FIRST, None
        while True:
            try:
                change()
            except self._unreachable as exc:
                now = time.monotonic()
                if given_up_at is None:
                    given_up_at = now + RETRY_FOR
                    log.warning(
                        "history writer: the store cannot be reached (%s); trying again for "
                        "up to %d s",
                        exc,
                        RETRY_FOR,
                    )
                if now >= given_up_at or self._closing.is_set():
                    log.error("history writer: the store could not be reached; a write is lost")
                    return False
                self._closing.wait(pause)
                pause = min(2 * pause, RETRY_MOST)
            except Exception:
                log.exception("history writer: a write to the store failed")
                return False
            else:
                if given_up_at is not None:
                    log.warning("history writer: the store answers again; the write is made")
                return True


@dataclass(frozen=True, slots=True)
class _DropRoom:
    name: str


@dataclass(frozen=True, slots=True)
class _DropAccount:
    name: str
