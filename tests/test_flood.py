"""Flood control: the token bucket with an injected clock, then a live server."""

from __future__ import annotations

import time

import pytest
from helpers import COMMANDS, HOST

from ircish.flood import ExcessFlood, FloodGate


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_burst_is_free_then_each_command_waits_its_share(clock):
    gate = FloodGate(burst=3, rate=2.0, disconnect_after=60, clock=clock)
    assert [gate.charge(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert gate.charge(1) == pytest.approx(0.5)  # one token at 2 per second
    clock.now += 0.5  # the reader waited
    assert gate.charge(1) == pytest.approx(0.5)


def test_tokens_refill_over_time_up_to_the_burst(clock):
    gate = FloodGate(burst=3, rate=2.0, disconnect_after=60, clock=clock)
    for _ in range(3):
        gate.charge(1)
    clock.now += 100  # a long pause refills only up to the burst
    assert [gate.charge(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert gate.charge(1) > 0


def test_cost_counts(clock):
    gate = FloodGate(burst=4, rate=1.0, disconnect_after=60, clock=clock)
    assert gate.charge(3) == 0.0
    assert gate.charge(3) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("paced", "expect_cut"),
    [(0.5, False), (0.4, True)],
    ids=["keeps-to-rate", "faster-than-rate"],
)
def test_excess_flood_only_after_a_long_unbroken_lag(clock, paced, expect_cut):
    """A client that waits out its lag is fine; one that keeps ahead is cut off."""
    gate = FloodGate(burst=1, rate=2.0, disconnect_after=5.0, clock=clock)
    gate.charge(1)
    cut = False
    for _ in range(40):  # 40 commands, `paced` seconds apart, for 16-20 s
        clock.now += paced
        try:
            gate.charge(1)
        except ExcessFlood:
            cut = True
            break
    assert cut is expect_cut


def test_lag_run_ends_when_the_client_pauses(clock):
    gate = FloodGate(burst=2, rate=1.0, disconnect_after=3.0, clock=clock)
    for _ in range(4):  # into debt: lagged
        wait = gate.charge(1)
        clock.now += wait
    assert gate.lagged_since is not None
    clock.now += 10  # quiet: the bucket refills
    assert gate.charge(1) == 0.0
    assert gate.lagged_since is None


def test_command_table_costs():
    assert COMMANDS["PONG"].cost == 0
    assert COMMANDS["QUIT"].cost == 0
    assert COMMANDS["PRIVMSG"].cost == 1
    assert COMMANDS["LIST"].cost > COMMANDS["PRIVMSG"].cost


# -- live server ------------------------------------------------------------------------


def test_flooding_client_is_slowed_not_dropped(start_server, connect):
    """25 messages with a burst of 5 at 20/s cannot all arrive within 1 s."""
    srv = start_server(flood_burst=5, flood_rate=20.0, flood_disconnect_seconds=30)
    flooder = connect("flooder", target=srv)
    reader = connect("reader", target=srv)
    flooder.join("#r")
    reader.join("#r")
    reader.sync()
    start = time.monotonic()
    flooder.send(b"".join(b"PRIVMSG #r :m%d\r\n" % i for i in range(25)))
    for i in range(25):
        reader.expect(rf"PRIVMSG #r :?m{i}$")
    elapsed = time.monotonic() - start
    # At most 5 tokens are left in the bucket, and it refills at 20 per second:
    # the last message cannot be relayed sooner than (25 - 5) / 20 s.
    assert elapsed >= 1.0
    # Still connected and nothing refused: all it got meanwhile is reader's JOIN.
    assert flooder.sync() == [f":reader!u@{HOST} JOIN #r"]


def test_other_clients_are_not_slowed_by_a_flooder(start_server, connect):
    srv = start_server(flood_burst=5, flood_rate=5.0, flood_disconnect_seconds=30)
    flooder = connect("flooder", target=srv)
    flooder.send(b"".join(b"PRIVMSG nobody :x\r\n" for _ in range(100)))  # ~20 s of lag
    alice = connect("alice", target=srv)
    bob = connect("bob", target=srv)
    start = time.monotonic()
    alice.send("PRIVMSG bob :hi")
    bob.expect(rf"^:alice!u@{HOST} PRIVMSG bob :?hi$")
    assert time.monotonic() - start < 2.0  # not behind the flooder's 20 s


def test_excess_flood_disconnects_and_others_are_told(start_server, connect):
    srv = start_server(flood_burst=2, flood_rate=2.0, flood_disconnect_seconds=1.0)
    flooder = connect("flooder", target=srv)
    watcher = connect("watcher", target=srv)
    flooder.join("#r")
    watcher.join("#r")
    flooder.send(b"".join(b"PRIVMSG #r :x%d\r\n" % i for i in range(50)))
    lines = flooder.expect_closed(timeout=10)
    assert lines[-1] == "ERROR :Excess Flood"
    watcher.expect(rf"^:flooder!u@{HOST} QUIT :Excess Flood$", timeout=10)
