"""The server's locks, named and ranked, and the checker that holds the code to its lock order.

Every lock the server takes is made here, by `new_lock(name)`, and its place in the order is
`ORDER` below (the picture in ircish/world.py and the README). In production a lock is a
plain `threading.Lock`: nothing is checked and nothing costs more. With the environment
variable IRCISH_CHECK_LOCKS=1 (tests/conftest.py sets it), each lock records which thread
holds it, and taking a lock out of order, or one that must be taken alone, is recorded in
`violations` with the stack that did it; the test suite fails any test that leaves one.

`held(lock)` is what the `*_locked` methods assert: with checking on, "this thread holds it";
without, the weaker "somebody holds it" (`Lock.locked()`), which is all a plain lock can say.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import Any

#: Ranks: a thread may take a lock of a higher rank while holding one of a lower rank, never
#: the reverse. Locks of the same rank at once only where `SAME_RANK_UNDER` allows it.
ORDER: dict[str, int] = {
    "World.lock": 10,
    "Room.lock": 20,
    "labeled lock": 25,
    "Connection outbox lock": 30,
    "TlsTransport._lock": 40,
}
#: Locks taken alone: no other lock may be held while taking one, or taken while holding one.
ALONE = frozenset(
    {
        "Server.connections_lock",
        "scrypt semaphore",
        "Writer._drops_lock",
        "SqliteStore._readers_lock",
        "Accounts.lock",
        "LoginLimiter._lock",
        "private history lock",
        "Cluster.tickets_lock",
        "Cluster.up_lock",
    }
)
#: Several locks of one name at once only under another: room locks (nick change, quit).
SAME_RANK_UNDER = {"Room.lock": "World.lock"}

CHECKING = os.environ.get("IRCISH_CHECK_LOCKS") == "1"

#: What the checker found: one text per violation, with the stack that caused it.
violations: list[str] = []
#: Starts each violation the checker writes to stderr.
VIOLATION_MARKER = "LOCK ORDER VIOLATION"
_held = threading.local()


def _held_now() -> list[CheckedLock]:
    stack = getattr(_held, "stack", None)
    if stack is None:
        stack = _held.stack = []
    return stack


class CheckedLock:
    """A lock (or a semaphore, with `value`) that checks the order it is taken in."""

    def __init__(self, name: str, value: int | None = None) -> None:
        if name not in ORDER and name not in ALONE:
            raise ValueError(f"lock {name!r} has no place in ircish.locks.ORDER")
        self.name = name
        self._counting = value is not None
        self._inner: Any = threading.Lock() if value is None else threading.BoundedSemaphore(value)
        self._owners: dict[int, int] = {}  # thread id -> times held (a semaphore: several)

    def __repr__(self) -> str:
        return f"<CheckedLock {self.name}>"

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self._check_order()
        if timeout == -1:
            got = self._inner.acquire(blocking)  # a Semaphore has no timeout=-1 for "forever"
        else:
            got = self._inner.acquire(blocking, timeout)
        if got:
            me = threading.get_ident()
            self._owners[me] = self._owners.get(me, 0) + 1
            _held_now().append(self)
        return got

    def release(self) -> None:
        me = threading.get_ident()
        stack = _held_now()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is self:
                del stack[i]
                break
        count = self._owners.get(me, 0)
        if count <= 1:
            self._owners.pop(me, None)
        else:
            self._owners[me] = count - 1
        self._inner.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def locked(self) -> bool:
        return bool(self._owners)

    def held_by_this_thread(self) -> bool:
        return threading.get_ident() in self._owners

    # threading.Condition asks its lock this (else it probes with acquire(False)).
    _is_owned = held_by_this_thread

    def _check_order(self) -> None:
        stack = _held_now()
        if not stack or (self._counting and all(lock is self for lock in stack)):
            return  # (a thread may hold several slots of one semaphore)
        held_names = [lock.name for lock in stack]
        problem = None
        if self in stack:
            problem = "taken again by the thread that holds it"
        elif self.name in ALONE:
            problem = "must be taken alone"
        else:
            for lock in stack:
                if lock.name in ALONE:
                    problem = f"taken while holding {lock.name}, which must be held alone"
                elif ORDER[lock.name] > ORDER[self.name]:
                    problem = f"taken after {lock.name}, against the order"
                elif lock.name == self.name and SAME_RANK_UNDER.get(self.name) not in held_names:
                    problem = f"a second {self.name} without {SAME_RANK_UNDER.get(self.name)}"
                if problem:
                    break
        if problem:
            _report(f"{self.name} {problem}", held_names)
            if self in stack:
                # Waiting would deadlock this thread for good, and the test with it.
                raise RuntimeError(f"{self.name} {problem}")


def _report(problem: str, held_names: list[str]) -> None:
    where = "".join(traceback.format_stack(limit=12)[:-3])
    text = f"{problem} (thread {threading.current_thread().name} held {held_names})\n{where}"
    violations.append(text)
    # Also on stderr, for servers in subprocesses: their tests look for the marker.
    sys.stderr.write(f"{VIOLATION_MARKER}: {text}\n")


def expect_none_held(doing: str) -> None:
    """Before network I/O (a call to Redis): no lock may be held. A violation when checking
    finds one; nothing is checked (or costs anything) otherwise."""
    if CHECKING and _held_now():
        _report(f"{doing} while holding a lock", held_by_this_thread())


def new_lock(name: str) -> Any:
    """The lock called `name` (a key of ORDER, or of ALONE): checked when CHECKING is on."""
    if CHECKING:
        return CheckedLock(name)
    if name not in ORDER and name not in ALONE:
        raise ValueError(f"lock {name!r} has no place in ircish.locks.ORDER")
    return threading.Lock()


def new_semaphore(name: str, value: int) -> Any:
    """A semaphore that takes part in the order like a lock (see `new_lock`)."""
    return CheckedLock(name, value) if CHECKING else threading.BoundedSemaphore(value)


def held(lock: Any) -> bool:
    """For `assert held(self.lock)` in `*_locked` methods: this thread holds `lock` when
    checking; otherwise somebody does."""
    if isinstance(lock, CheckedLock):
        return lock.held_by_this_thread()
    return lock.locked()


def held_by_this_thread() -> list[str]:
    """Names of the checked locks this thread holds now (always empty when not checking)."""
    return [lock.name for lock in _held_now()]
