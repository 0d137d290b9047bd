"""The store's one writer thread: relayed lines go to disk in batches, never on a reader's path.

A reader thread that relays a message hands its line over with `Writer.submit`, which never
blocks: a bounded queue takes it, or, when the queue is full (the disk cannot keep up), the
line is not stored. It was still delivered; it is only missing from history. Such drops
are counted (`dropped`) and logged: the first at once, then one warning a minute at most
with the count since, never a line per drop. The thread
takes what has queued up, up to `batch` lines, and writes it in one transaction; a write
that fails is logged and counted (`failed`) and the thread goes on with the next batch.
`close()` writes everything queued before it returns (SIGTERM loses nothing).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ircish.locks import new_lock
from ircish.store import Store, StoredLine

log = logging.getLogger(__name__)

#: Lines waiting for the writer at most; past it `submit` drops (and counts) them.
DEFAULT_QUEUE = 10_000
#: Lines written in one transaction at most.
DEFAULT_BATCH = 500
#: Seconds between two warnings about lines dropped (a flapping queue is one warning).
DROP_WARNING_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class _Forget:
    """Drop a target's history, in its place among the lines queued around it."""

    target: str


_STOP = object()


class Writer:
    """The thread that writes to `store`. Start it with `start()`; `close()` flushes."""

    def __init__(
        self, store: Store, max_queue: int = DEFAULT_QUEUE, batch: int = DEFAULT_BATCH
    ) -> None:
        self.store = store
        self._queue: queue.Queue[object] = queue.Queue(max_queue)
        self._batch = batch
        self._thread = threading.Thread(target=self._run, name="store writer", daemon=True)
        #: Lines not stored because the queue was full (any reader thread counts them, under
        #: `_drops_lock`, taken alone), lines whose write failed and lines written (the
        #: writer thread's). Read by anyone.
        self.dropped = 0
        self.failed = 0
        self.written = 0
        self._drops_lock = new_lock("Writer._drops_lock")
        # The first drop is logged at once, then at most one warning per interval.
        self._warned_at = -DROP_WARNING_INTERVAL
        self._warned_count = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, line: StoredLine) -> bool:
        """Queue `line` for the store; never blocks. False if the queue was full."""
        try:
            self._queue.put_nowait(line)
        except queue.Full:
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
                    self._queue.maxsize,
                    news,
                    self.dropped,
                )
            return False
        return True

    def forget(self, target: str) -> None:
        """Drop `target`'s history after the lines already queued; waits for room in the
        queue (a room that ended must not keep its talk for the next group to read)."""
        self._queue.put(_Forget(target))

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout (the wait for
        room in a full queue included)."""
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self) -> None:
        """Write what is queued, then stop the thread (a writer never started writes
        nothing)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            lines: list[StoredLine] = []
            while True:
                if isinstance(item, StoredLine):
                    lines.append(item)
                else:
                    self._write(lines)
                    lines = []
                    if item is _STOP:
                        return
                    if isinstance(item, threading.Event):
                        item.set()
                    elif isinstance(item, _Forget):
                        self._apply(lambda target=item.target: self.store.forget(target))
                if len(lines) >= self._batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._write(lines)

    def _write(self, lines: list[StoredLine]) -> None:
        if lines and self._apply(lambda: self.store.append(lines)):
            self.written += len(lines)
        elif lines:
            self.failed += len(lines)

    def _apply(self, change: Callable[[], None]) -> bool:
        """Run one store change; a failure is logged, never the end of the thread."""
        try:
            change()
        except Exception:
            log.exception("history writer: a write to the store failed")
            return False
        return True
