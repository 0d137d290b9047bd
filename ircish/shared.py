"""Changes every node of a cluster makes (ircish/cluster), marked with `@shared`.

The world's and the accounts' methods that change what every node must agree on (who has
which nick, who is in which room, the modes, the accounts) are marked here. In a single
process nothing changes: the method runs. In a cluster a call is appended to the shared
log and every node runs it from there, in one order (`Network`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast


class Network(Protocol):
    """The cluster this world is one node of (ircish/cluster): it orders a shared change
    with every node's, then runs it on each (`call`); None in a single process."""

    def applying(self) -> bool:
        """Whether this thread is applying the shared log (then a change runs here)."""
        ...

    def settle(self, command: str) -> None:
        """Before `command` of the calling thread's client, unless it is a message too:
        wait until its messages so far (which do not wait: see `call`) have been applied,
        and until this node has applied every change made anywhere before it."""
        ...

    def wait_for_messages(self) -> None:
        """Wait until the calling thread's messages so far have been applied."""
        ...

    def catch_up(self) -> None:
        """Wait until this node has applied the log as far as it went when asked."""
        ...

    def call(self, name: str, owner: object, args: tuple, kwargs: dict) -> Any:
        """Order `owner.name(*args, **kwargs)` in the shared log, wait until this node has
        run it, and return what it returned here (or raise what it raised)."""
        ...


#: The changes every node of a cluster makes, by qualified name ("Room.send_from"): the
#: bus thread finds the method to run for a log entry here (see `shared`).
SHARED: dict[str, Callable[..., Any]] = {}
_Method = TypeVar("_Method", bound=Callable[..., Any])


def shared(method: _Method) -> _Method:
    """Mark a `World`, `Room` or `Accounts` method as a change to shared state. In a single
    process it runs as it is. In a cluster (`cluster` set), a call outside the bus thread is ordered
    in the shared log instead, and every node runs it from there, in the same order, the
    caller's node included (`Network.call`); so every node's rooms and nick table go
    through the same changes, and the checks (bans, modes, a nick taken) give the same
    answers everywhere. Such a method must depend only on its arguments and the shared
    state: its time and msgids come from the entry (events.now), nothing is random."""
    name = method.__qualname__
    SHARED[name] = method

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        cluster = self.cluster
        if cluster is None or cluster.applying():
            return method(self, *args, **kwargs)
        return cluster.call(name, self, args, kwargs)

    return cast(_Method, run)
