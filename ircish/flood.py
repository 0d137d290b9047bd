"""Flood control: a token bucket per connection, charged in the reader thread.

Each command costs tokens (the `cost` column of the command table). The
bucket holds `burst` tokens and refills at `rate` per second. A command that
finds too few tokens runs into debt, and its reader thread waits until the
debt is paid ("fakelag"): the flooding client slows itself down and nobody
else notices. A client that stays in debt for `disconnect_after` seconds in a
row is cut off ("Excess Flood"). The clock is injected so tests can drive it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ExcessFlood(Exception):
    """The client has been slowed down for too long: disconnect it."""


class FloodGate:
    """One connection's token bucket. Used by that connection's reader thread only."""

    __slots__ = ("burst", "clock", "disconnect_after", "lagged_since", "rate", "tokens", "updated")

    def __init__(
        self,
        burst: int,
        rate: float,
        disconnect_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = float(burst)
        self.rate = rate
        self.disconnect_after = disconnect_after
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()
        #: When the current run of slowed-down commands began (None: not slowed).
        self.lagged_since: float | None = None

    def charge(self, cost: float) -> float:
        """Take `cost` tokens. Returns the seconds to wait before running the command.

        Raises ExcessFlood if the client would then have been slowed down for
        longer than `disconnect_after` without a break.
        """
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= cost
        if self.tokens >= 0:
            self.lagged_since = None
            return 0.0
        if self.lagged_since is None:
            self.lagged_since = now
        wait = -self.tokens / self.rate
        if now + wait - self.lagged_since > self.disconnect_after:
            raise ExcessFlood
        return wait
