"""What survives a restart (issue 13): permanent rooms (+P, and the config's) with their
topic, modes, key, limit and lists, and their history; nothing of a room that was not
permanent. A real `ircish-server` subprocess on a SQLite file in a temp dir, stopped with
SIGTERM or killed with SIGKILL, and started again on the same file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from helpers import OPER_PASSWORD, ROOT, SERVER_COMMAND, TIMEOUT, Client, oper_hash, wait_for

from ircish.events import parse_time_tag
from ircish.protocol import parse
from ircish.store.sqlite import SCHEMA_VERSION

HISTORY_CAPS = "message-tags server-time batch echo-message draft/chathistory"


def config(db: Path, **history: object) -> str:
    lines = [
        "store:",
        f"  path: '{db}'",
        "  flush_ms: 50",
        "limits:",
        "  flood_rate: 0",
        "operators:",
        "  - name: root",
        f"    password: '{oper_hash()}'",
        "rooms:",
        "  - name: '#lobby'",
        "    topic: Welcome",
    ]
    if history:
        lines.append("history:")
        lines += [f"  {key}: {value}" for key, value in history.items()]
    return "\n".join(lines) + "\n"


_open: list[Client] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _open:
        _open.pop().close()


def client(address: tuple[str, int], nick: str, caps: str = HISTORY_CAPS) -> Client:
    c = Client(address)
    _open.append(c)
    if caps:
        c.send(f"CAP REQ :{caps}")
    c.send_registration(nick)
    if caps:
        c.send("CAP END")
    c.expect(r" 376 | 422 ")
    return c


def permanent_room(address: tuple[str, int], nick: str, room: str) -> Client:
    """`nick`, a server operator, in `room`, which they made permanent (+P)."""
    c = client(address, nick)
    c.send(f"OPER root :{OPER_PASSWORD}")
    c.expect(" 381 ")
    c.join(room)
    c.send(f"MODE {room} +P")
    c.expect(rf"MODE {room} \+P")
    return c


def said(c: Client, room: str, texts: list[str]) -> list[str]:
    """Say each line in `room`; the msgids of their echoes."""
    ids = []
    for text in texts:
        c.send(f"PRIVMSG {room} :{text}")
        echo = parse(c.expect(rf"PRIVMSG {room} :{text}$").string)
        ids.append(echo.tags["msgid"])
    return ids


def history(c: Client, room: str, limit: int = 100) -> list[tuple[str, str]]:
    """(msgid, text) of the room's history, as CHATHISTORY LATEST gives it."""
    c.send(f"CHATHISTORY LATEST {room} * {limit}")
    lines = c.collect_until(r"^:\S+ BATCH -")
    return [
        (m.tags["msgid"], m.params[1])
        for m in map(parse, lines)
        if m.command == "PRIVMSG" and "batch" in m.tags
    ]


def test_a_permanent_room_survives_a_restart_with_its_state_and_history(tmp_path, server_process):
    db = tmp_path / "ircish.db"
    first = server_process(config(db))
    alice = permanent_room(first.address, "alice", "#keep")
    alice.send("TOPIC #keep :Kept across restarts")
    alice.expect("TOPIC #keep")
    alice.send("MODE #keep +kl sesame 7")
    alice.expect(r"MODE #keep \+kl sesame 7")
    alice.send("MODE #keep +beI bad!*@* good!*@* friend!*@*")
    alice.expect(r"MODE #keep \+beI")
    ids = said(alice, "#keep", ["one", "two", "three"])
    alice.send("QUIT :bye")
    alice.expect_closed()
    assert first.stop(signal.SIGTERM) == 0

    second = server_process(config(db))
    bob = client(second.address, "bob")
    bob.send("JOIN #keep")
    bob.expect(r" 475 bob #keep ")  # the key survived
    bob.send("JOIN #keep sesame")
    bob.expect(r" 366 bob #keep ")
    bob.send("TOPIC #keep")
    bob.expect(r" 332 bob #keep :Kept across restarts")
    bob.expect(r" 333 bob #keep alice!u@127\.0\.0\.1 :?\d+")
    bob.send("MODE #keep")
    assert parse(bob.expect(r" 324 bob #keep ").string).params[2:] == ("+Pklnt", "sesame", "7")
    for letter, mask, end in (("b", "bad", "368"), ("e", "good", "349"), ("I", "friend", "347")):
        bob.send(f"MODE #keep {letter}")
        bob.expect(rf" #keep {mask}!\*@\* alice!u@127\.0\.0\.1 :?\d+")
        bob.expect(f" {end} ")
    # Its history too, with the msgids it was said with.
    assert history(bob, "#keep") == list(zip(ids, ["one", "two", "three"], strict=True))
    bob.close()
    second.stop()


def test_a_room_that_was_not_permanent_keeps_nothing_across_a_restart(tmp_path, server_process):
    db = tmp_path / "ircish.db"
    first = server_process(config(db, window=2, replay_on_join=2))
    alice = client(first.address, "alice")
    alice.join("#passing")
    said(alice, "#passing", ["secret plans", "more plans", "even more"])
    # Still there while the server runs: the window and the store behind it.
    wait_for(lambda: len(history(alice, "#passing")) == 3)
    assert first.stop(signal.SIGTERM) == 0  # alice is still in the room when it stops

    second = server_process(config(db, window=2, replay_on_join=2))
    mallory = client(second.address, "mallory")
    mallory.join("#passing")
    assert history(mallory, "#passing") == []
    second.stop()
    with sqlite3.connect(db) as check:
        rows = check.execute("SELECT count(*) FROM history WHERE target = '#passing'")
        assert rows.fetchone()[0] == 0  # gone from the disk, not only hidden


def test_config_rooms_are_permanent_and_keep_their_history(tmp_path, server_process):
    db = tmp_path / "ircish.db"
    first = server_process(config(db))
    alice = client(first.address, "alice")
    alice.send("JOIN #lobby")
    topic_time = alice.expect(r" 333 alice #lobby server :?(\d+)")[1]
    alice.expect(r" 366 alice #lobby ")
    time.sleep(1.1)  # so that a room made again at the restart would show another second
    alice.send("MODE #lobby")
    alice.expect(r" 324 alice #lobby :?\+Pnt")
    ids = said(alice, "#lobby", ["hello lobby"])
    alice.send("PART #lobby")
    alice.expect("PART #lobby")
    assert first.stop(signal.SIGTERM) == 0

    second = server_process(config(db))
    bob = client(second.address, "bob", caps="")
    bob.send("JOIN #lobby")
    bob.expect(r" 332 bob #lobby :Welcome")
    # The times of the first start: the room was kept, not made again.
    assert bob.expect(r" 333 bob #lobby server :?(\d+)")[1] == topic_time
    bob.expect(r" 366 bob #lobby ")
    # A client that cannot ask for history is shown it on join.
    bob.expect(r"NOTICE #lobby :-- 1 earlier message in #lobby --")
    bob.expect(r"PRIVMSG #lobby :\[\d\d:\d\d UTC\] hello lobby")
    bob.expect(r"NOTICE #lobby :-- now --")
    carol = client(second.address, "carol")
    carol.join("#lobby")
    assert history(carol, "#lobby") == [(ids[0], "hello lobby")]
    second.stop()


def test_a_config_topic_nobody_changed_follows_the_config_and_a_set_one_is_kept(
    tmp_path, server_process
):
    db = tmp_path / "ircish.db"
    first = server_process(config(db))
    assert first.stop(signal.SIGTERM) == 0  # #lobby kept with the config's "Welcome"
    edited = config(db).replace("topic: Welcome", "topic: Welcome back")
    second = server_process(edited)
    bob = client(second.address, "bob")
    bob.send("TOPIC #lobby")
    bob.expect(r" 332 bob #lobby :Welcome back$")
    root = client(second.address, "root")
    root.send(f"OPER root :{OPER_PASSWORD}")
    root.expect(" 381 ")
    root.send("TOPIC #lobby :Set by hand")
    root.expect("TOPIC #lobby :Set by hand")
    assert second.stop(signal.SIGTERM) == 0
    third = server_process(edited.replace("Welcome back", "Welcome again"))
    carol = client(third.address, "carol")
    carol.send("TOPIC #lobby")
    carol.expect(r" 332 carol #lobby :Set by hand$")  # a topic someone set wins
    third.stop()


def test_a_room_state_that_cannot_be_read_is_skipped_and_the_rest_restored(
    tmp_path, server_process
):
    db = tmp_path / "ircish.db"
    first = server_process(config(db))
    assert first.stop(signal.SIGTERM) == 0
    with sqlite3.connect(db) as edit:
        edit.execute("INSERT INTO rooms VALUES ('#broken', 'not json at all')")
        # A later ircish's field this one does not know: left out, the room restored.
        later = '{"name": "#later", "topic": "from the future", "flags": "Pnt", "shiny": 1}'
        edit.execute("INSERT INTO rooms VALUES ('#later', ?)", (later,))
    second = server_process(config(db))
    bob = client(second.address, "bob")
    bob.send("TOPIC #later")
    bob.expect(r" 332 bob #later :from the future$")
    bob.send("JOIN #broken")  # not restored: a new room, bob its founder
    bob.expect(r" 366 bob #broken ")
    second.stop()
    assert "the state of room #broken cannot be read" in second.log()


def test_sigkill_loses_at_most_the_last_flush_ms_of_history(tmp_path, server_process):
    """A crash in the middle of talk: the file is intact, and every line said more than
    store.flush_ms (plus a transaction) before the kill is there after the restart."""
    db = tmp_path / "ircish.db"
    first = server_process(config(db))
    alice = permanent_room(first.address, "alice", "#keep")
    sent: list[tuple[str, int]] = []  # (msgid, time in ms) of every line said
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < 2.0:  # talk for two seconds, then crash
        n += 1
        alice.send(f"PRIVMSG #keep :line {n}")
        echo = parse(alice.expect(rf"PRIVMSG #keep :line {n}$").string)
        when = parse_time_tag(echo.tags["time"])
        assert when is not None
        sent.append((echo.tags["msgid"], when))
    killed_at = time.time() * 1000
    first.stop(signal.SIGKILL)

    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = {row[0] for row in check.execute("SELECT msgid FROM history")}
    # 50 ms of flush_ms, and a generous second for a transaction on a busy machine.
    due = [msgid for msgid, when in sent if when < killed_at - 50 - 1000]
    assert due, "the test said nothing old enough to check"
    assert [msgid for msgid in due if msgid not in kept] == []
    second = server_process(config(db))  # and the server starts on it again
    bob = client(second.address, "bob")
    bob.join("#keep")
    assert history(bob, "#keep", 5)[-1][0] in kept
    second.stop()


def test_only_server_operators_make_a_room_permanent_and_minus_p_ends_an_empty_one(
    tmp_path, server_process
):
    db = tmp_path / "ircish.db"
    server = server_process(config(db))
    alice = client(server.address, "alice")
    alice.join("#mine")  # its founder, a room operator, not a server operator
    alice.send("MODE #mine +P")
    alice.expect(r" 481 alice :Permission Denied- only server operators may change \+P")
    root = client(server.address, "root")
    root.send(f"OPER root :{OPER_PASSWORD}")
    root.expect(" 381 ")
    root.send("MODE #mine +P")  # from outside the room, as a server operator may
    root.expect(r"MODE #mine \+P")
    said(alice, "#mine", ["kept while permanent"])
    alice.send("PART #mine")
    alice.expect("PART #mine")
    root.send("LIST #mine")
    root.expect(r" 322 root #mine 0 ")  # empty, and still there
    root.send("MODE #mine -P")
    root.expect(r"MODE #mine -P")
    root.send("LIST #mine")
    lines = root.collect_until(" 323 ")
    assert not any(" 322 " in line for line in lines)  # -P on an empty room ends it
    alice.join("#mine")
    assert history(alice, "#mine") == []  # and its history went with it
    server.stop()


def test_a_relative_store_path_is_from_the_directory_the_server_starts_in(tmp_path, server_process):
    workdir = tmp_path / "run"
    workdir.mkdir()
    server = server_process("store:\n  path: ircish.db\n", cwd=workdir)
    assert server.stop() == 0
    assert (workdir / "ircish.db").is_file()


@pytest.mark.parametrize(
    "prepare, problem",
    [
        (lambda path: path.write_bytes(b"not a database" * 100), "file is not a database"),
        (
            lambda path: sqlite3.connect(path).execute(
                f"PRAGMA user_version = {SCHEMA_VERSION + 1}"
            ),
            "schema version",
        ),
    ],
)
def test_a_store_that_cannot_be_opened_stops_the_start_with_one_clear_line(
    tmp_path, prepare, problem
):
    path = tmp_path / "ircish.db"
    prepare(path)
    server = ServerProcessExpectingExit(tmp_path, f"store:\n  path: '{path}'\n")
    assert server.status == 1
    assert f"ircish-server: cannot open the store {path}" in server.output
    assert problem in server.output
    assert "Traceback" not in server.output


@pytest.mark.parametrize(
    "path, problem",
    [
        ("''", "store.path: must not be empty (null keeps everything in memory only)"),
        ("'{tmp}'", "store.path: is a directory, not a file"),
        ("'{tmp}/nowhere/ircish.db'", "store.path: its folder does not exist"),
    ],
)
def test_a_store_path_that_cannot_be_is_a_config_error(tmp_path, path, problem):
    server = ServerProcessExpectingExit(tmp_path, f"store:\n  path: {path.format(tmp=tmp_path)}\n")
    assert server.status == 2
    assert problem in server.output
    assert "Traceback" not in server.output


class ServerProcessExpectingExit:
    """`ircish-server` that is expected to refuse to start: its status and output."""

    def __init__(self, workdir: Path, config_text: str) -> None:
        config_path = workdir / "refused.yaml"
        config_path.write_text(config_text)
        done = subprocess.run(
            [*SERVER_COMMAND, "-c", str(config_path), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.status = done.returncode
        self.output = done.stdout + done.stderr
