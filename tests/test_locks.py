"""Lock rules that check themselves (issue 10): every `*_locked` method asserts its lock, the
checker in ircish/locks.py catches a lock taken out of the written order (and the whole
suite runs with it: conftest.py fails any test that leaves a violation), and the written
order is one: locks.ORDER, world.py's picture and the README's say the same."""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path

import pytest
from helpers import Harness

from ircish import locks
from ircish.events import Event
from ircish.locks import CheckedLock, held, new_lock
from ircish.protocol import Message
from ircish.world import Room, World

ROOT = Path(__file__).resolve().parent.parent


def provoked(start: int) -> list[str]:
    """The violations since `start`, provoked on purpose: taken out of the shared list, so
    the suite-wide check does not fail the test for them."""
    found = locks.violations[start:]
    del locks.violations[start:]
    return found


def in_thread(action) -> None:
    thread = threading.Thread(target=action)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_suite_runs_with_checked_locks():
    assert locks.CHECKING
    assert isinstance(new_lock("Room.lock"), CheckedLock)
    assert isinstance(World().lock, CheckedLock)


def test_a_lock_without_a_place_in_the_order_is_refused():
    with pytest.raises(ValueError, match="no place"):
        new_lock("Some.new_lock")


def test_room_then_world_is_out_of_order():
    world, room = World(), Room("#r")
    start = len(locks.violations)

    def backwards():
        with room.lock, world.lock:
            pass

    in_thread(backwards)
    found = provoked(start)
    assert len(found) == 1
    assert "World.lock taken after Room.lock, against the order" in found[0]
    assert "backwards" in found[0]  # the stack that did it


def test_the_written_order_is_not_a_violation():
    world, room = World(), Room("#r")
    start = len(locks.violations)
    outbox = new_lock("Connection outbox lock")

    def forwards():
        with world.lock, room.lock, outbox:
            pass

    in_thread(forwards)
    assert provoked(start) == []


def test_two_rooms_only_under_the_world_lock():
    world, a, b = World(), Room("#a"), Room("#b")
    start = len(locks.violations)

    def without_world():
        with a.lock, b.lock:
            pass

    def with_world():
        with world.lock, a.lock, b.lock:
            pass

    in_thread(without_world)
    in_thread(with_world)
    found = provoked(start)
    assert len(found) == 1 and "a second Room.lock without World.lock" in found[0]


def test_locks_taken_alone():
    world = World()
    start = len(locks.violations)
    connections = new_lock("Server.connections_lock")

    def under_world():
        with world.lock, connections:
            pass

    def world_under_it():
        with connections, world.lock:
            pass

    in_thread(under_world)
    in_thread(world_under_it)
    found = provoked(start)
    assert len(found) == 2
    assert "Server.connections_lock must be taken alone" in found[0]
    assert "which must be held alone" in found[1]


def test_held_means_held_by_this_thread():
    room = Room("#r")
    taken, done = threading.Event(), threading.Event()

    def hold():
        with room.lock:
            taken.set()
            done.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert taken.wait(5)
        assert room.lock.locked()
        assert not held(room.lock)  # another thread has it, not this one
    finally:
        done.set()
        thread.join(5)
    with room.lock:
        assert held(room.lock)


def test_a_locked_method_called_without_its_lock_fails():
    harness = Harness()
    alice = harness.connect("alice")
    alice.line("JOIN #r")
    room = harness.world.find_room("#r")
    event = Event(Message("PRIVMSG", ["#r", "hi"], alice.user.prefix), ("#r",))
    with pytest.raises(AssertionError):
        room.broadcast_locked(event)
    with pytest.raises(AssertionError):
        room.is_operator_locked(alice.user)
    with pytest.raises(AssertionError):
        harness.world._neighbours_locked(alice.user)
    with room.lock:
        room.broadcast_locked(event)  # no error with the lock held


def _locked_methods() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for path in sorted([*(ROOT / "ircish").rglob("*.py"), *(ROOT / "commands").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_locked"):
                found.append((f"{path.relative_to(ROOT)}:{node.name}", node))
    return found


def test_every_locked_method_asserts_its_lock():
    methods = _locked_methods()
    assert len(methods) >= 15  # the rooms', the world's, the outbox's, TLS's
    missing = []
    for name, node in methods:
        body = node.body[1:] if ast.get_docstring(node) is not None else node.body
        first = body[0]
        asserts_held = isinstance(first, ast.Assert) and "held(" in ast.unparse(first.test)
        if not asserts_held:
            missing.append(name)
    assert missing == []


def test_the_order_is_written_the_same_everywhere():
    picture = "  ->  ".join(sorted(locks.ORDER, key=locks.ORDER.get))
    world_doc = (ROOT / "ircish" / "world.py").read_text()
    readme = (ROOT / "README.md").read_text()
    assert picture in world_doc
    assert picture in readme
    for name in locks.ALONE:
        assert re.search(re.escape(name.split()[0]), readme), name


def test_taking_a_lock_twice_raises_instead_of_hanging(capfd):
    world = World()
    start = len(locks.violations)
    errors: list[BaseException] = []

    def twice():
        with world.lock:
            try:
                world.lock.acquire()
            except RuntimeError as exc:
                errors.append(exc)

    in_thread(twice)
    found = provoked(start)
    assert len(found) == 1 and "taken again by the thread that holds it" in found[0]
    assert len(errors) == 1
    # Said on stderr too, where a test of a server in a subprocess finds it.
    assert f"{locks.VIOLATION_MARKER}: World.lock taken again" in capfd.readouterr().err
