"""ircish-client in scripted use: real ircish servers (in the test process, or a subprocess for
the restart test), clients as subprocesses (`python -m ircish.client.cli`) fed on stdin and read
line by line from stdout with a timeout on every read."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import TIMEOUT, Client, ServerProcess

from ircish.protocol import parse

ROOT = Path(__file__).resolve().parent.parent
CLIENT = [sys.executable, "-m", "ircish.client.cli"]
STAMP = r"^\d\d:\d\d "


def client_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRCISH_")}
    env.update(extra)
    return env


class ClientProcess:
    """A scripted ircish-client: lines in on stdin, stdout lines read with a timeout."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*CLIENT, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            cwd=ROOT,
            env=env or client_env(),
        )
        self.seen: list[str] = []  # every stdout line, in order
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr.extend(self.proc.stderr)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def collect_until(self, pattern: str, timeout: float = TIMEOUT) -> list[str]:
        """Lines up to and including the first one matching `pattern` (re.search)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"timed out waiting for {pattern!r}; got {got}; stderr {self.stderr}")
            if line is None:
                self._lines.put(None)
                pytest.fail(f"client exited waiting for {pattern!r}; got {got}; {self.stderr}")
            got.append(line)
            self.seen.append(line)
            if regex.search(line):
                return got

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        line = self.collect_until(pattern, timeout)[-1]
        match = re.search(pattern, line)
        assert match is not None
        return match

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Exit status, once stdout is drained (so `seen` can be checked afterwards)."""
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        while True:
            line = self._lines.get_nowait() if not self._lines.empty() else None
            if line is None:
                break
            self.seen.append(line)
        return code

    def stop(self) -> None:
        self.close_stdin()
        try:
            self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        for thread in self._threads:
            thread.join(TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def spawn(server) -> Iterator[Callable[..., ClientProcess]]:
    """Start scripted clients (`--port` of the test server unless given); all stopped after."""
    started: list[ClientProcess] = []

    def start(*args: str, port: int | None = None, env: dict[str, str] | None = None):
        port_args = ["--port", str(port or server.address[1])]
        client = ClientProcess(*port_args, *args, env=env)
        started.append(client)
        return client

    yield start
    for client in started:
        client.stop()


def joined(client: ClientProcess, nick: str, room: str) -> ClientProcess:
    client.expect(rf"{STAMP}\* You joined {re.escape(room)}$")
    return client


@pytest.fixture
def observer(server) -> Iterator[Callable[..., Client]]:
    """Raw IRC clients in some rooms: they see exactly what went over the wire."""
    clients: list[Client] = []

    def open_observer(nick: str, *rooms: str, address: tuple[str, int] | None = None) -> Client:
        client = Client(address or server.address)
        clients.append(client)
        client.register(nick)
        for room in rooms:
            client.send(f"JOIN {room}")
            client.expect(rf"JOIN {re.escape(room)}")
        return client

    yield open_observer
    for client in clients:
        client.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- chatting ---------------------------------------------------------------------------------


def test_room_messages_go_both_ways(spawn):
    alice = joined(spawn("--nick", "alice", "--join", "#general"), "alice", "#general")
    bob = joined(spawn("--nick", "bob", "--join", "general"), "bob", "#general")
    alice.expect(rf"{STAMP}\* bob joined #general$")

    alice.send("hello bob")
    bob.expect(rf"{STAMP}\[#general\] <alice> hello bob$")
    alice.expect(rf"{STAMP}\[#general\] <alice> hello bob$")  # our own line, shown likewise
    bob.send("hi alice, how are you?")
    alice.expect(rf"{STAMP}\[#general\] <bob> hi alice, how are you\?$")
    bob.send("/me waves")
    alice.expect(rf"{STAMP}\[#general\] \* bob waves$")


def test_private_message_reaches_only_its_target(spawn):
    alice = joined(spawn("--nick", "alice", "--join", "#general"), "alice", "#general")
    bob = joined(spawn("--nick", "bob", "--join", "#general"), "bob", "#general")
    carol = joined(spawn("--nick", "carol", "--join", "#general"), "carol", "#general")
    alice.expect(r"\* carol joined #general$")

    alice.send("/msg bob the secret is 42")
    alice.expect(rf"{STAMP}-> \*bob\* the secret is 42$")
    bob.expect(rf"{STAMP}\[private\] <alice> the secret is 42$")
    # One sender's lines are handled in order, so anything meant for carol would come first.
    alice.send("now everyone")
    before_marker = carol.collect_until(r"\[#general\] <alice> now everyone$")
    assert not any("secret" in line for line in before_marker), before_marker


def test_join_part_nick_and_quit_are_shown_to_others(spawn):
    alice = joined(spawn("--nick", "alice", "--join", "#general"), "alice", "#general")
    bob = joined(spawn("--nick", "bob", "--join", "#general"), "bob", "#general")
    alice.expect(rf"{STAMP}\* bob joined #general$")

    bob.send("/nick robert")
    bob.expect(rf"{STAMP}\* You are now known as robert$")
    alice.expect(rf"{STAMP}\* bob is now known as robert$")
    bob.send("/leave #general off for tea")
    alice.expect(rf"{STAMP}\* robert left #general \(off for tea\)$")
    bob.send("/join #general")
    alice.expect(rf"{STAMP}\* robert joined #general$")
    bob.send("/quit see you")
    alice.expect(rf"{STAMP}\* robert quit \(Quit: see you\)$")
    assert bob.wait() == 0


def test_end_of_input_quits_cleanly_with_status_0(server, observer):
    watcher = observer("watcher", "#ops")
    result = subprocess.run(
        [*CLIENT, "--nick", "bot", "--port", str(server.address[1])],
        input="/join #ops\nhello from a script\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=client_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert any(re.search(rf"{STAMP}\* You joined #ops$", line) for line in out), out
    assert any(re.search(rf"{STAMP}\[#ops\] <bot> hello from a script$", line) for line in out)
    assert "\x1b" not in result.stdout  # no colour when not a terminal
    watcher.expect(r"^:bot!\S+ PRIVMSG #ops :hello from a script$")
    watcher.expect(r"^:bot!\S+ QUIT :Client Quit$")


def test_query_and_switch_choose_where_plain_text_goes(spawn, observer):
    bob = observer("bob", "#a", "#b")
    alice = spawn("--nick", "alice", "--join", "#a", "--join", "#b")
    joined(alice, "alice", "#a")
    joined(alice, "alice", "#b")

    alice.send("to the last room joined")
    bob.expect(r"PRIVMSG #b :to the last room joined$")
    alice.send("/switch a")
    alice.expect(r"-- Talking in #a$")
    alice.send("now in a")
    bob.expect(r"PRIVMSG #a :now in a$")
    alice.send("/query bob")
    alice.expect(r"-- Talking privately to bob")
    alice.send("just between us")
    bob.expect(r"^:alice!\S+ PRIVMSG bob :just between us$")
    alice.expect(rf"{STAMP}-> \*bob\* just between us$")
    alice.send("/query")
    alice.expect(r"-- Talking in #a$")
    alice.send("back in a")
    bob.expect(r"PRIVMSG #a :back in a$")
    alice.send("/switch #nowhere")
    alice.expect(r"! you are not in #nowhere: /join #nowhere first$")


def test_nick_taken_at_connect_falls_back_to_underscores(spawn, observer):
    holder = observer("carol", "#general")
    second = spawn("--nick", "carol", "--join", "#general")
    second.expect(r"-- Nick carol is taken, trying carol_$")
    holder.expect(r"^:carol_!\S+ JOIN #general$")
    third = spawn("--nick", "carol", "--join", "#general")
    third.expect(r"-- Nick carol is taken, trying carol_$")
    third.expect(r"-- Nick carol_ is taken, trying carol__$")
    joined(third, "carol__", "#general")
    third.send("hello")
    holder.expect(r"^:carol__!\S+ PRIVMSG #general :?hello$")


def test_unknown_and_malformed_commands_send_nothing(spawn, observer):
    bob = observer("bob", "#general")
    alice = joined(spawn("--nick", "alice", "--join", "#general"), "alice", "#general")
    alice.send("/frobnicate now")
    alice.expect(r"! unknown command /frobnicate; /help lists the commands")
    alice.send("/msg bob")
    alice.expect(r"! usage: /msg <nick\|#room> <text>$")
    alice.send("marker")
    lines = bob.collect_until(r"PRIVMSG #general :?marker$")
    assert not any("frobnicate" in line.lower() or "PRIVMSG bob" in line for line in lines)
    # ...and the server never answered an unknown command either.
    assert not any("Unknown command" in line for line in alice.collect_until("marker"))


def test_raw_sends_a_line_as_is(spawn, observer):
    bob = observer("bob")
    alice = spawn("--nick", "alice")
    alice.expect(r"Welcome to")
    alice.send("/raw PRIVMSG bob :straight through")
    bob.expect(r"^:alice!\S+ PRIVMSG bob :straight through$")
    alice.send("/raw")
    alice.expect(r"! usage: /raw <IRC line>$")


def test_help_lists_server_and_client_commands(spawn):
    alice = spawn("--nick", "alice")
    alice.send("/help")
    lines = alice.collect_until(r"/whois <nick>")
    text = "\n".join(lines)
    for usage in ("/join <#room>", "/msg <nick|#room> <text>", "/query [nick]", "/switch <#room>"):
        assert usage in text
    assert "/raw <IRC line>" in text
    alice.send("/help query")
    alice.expect(r"/query \[nick\]\s+Talk privately to nick")


def test_who_and_list_are_aligned_tables(spawn, observer):
    observer("bobby_long_nick", "#general")
    alice = joined(spawn("--nick", "al", "--join", "#general"), "al", "#general")
    alice.send("/who")
    alice.expect(rf"{STAMP}Users in #general:$")
    rows = [alice.collect_until(".")[0], alice.collect_until(".")[0]]
    row_shape = rf"({STAMP}  #general  \S+ +)(\S+@127\.0\.0\.1 +)(.+)$"
    cells = [re.match(row_shape, row) for row in rows]
    assert all(cells), rows
    # Columns line up: the user@host column starts at the same place on both rows.
    assert len(cells[0].group(1)) == len(cells[1].group(1))
    assert len(cells[0].group(2)) == len(cells[1].group(2))
    assert {cell.group(3) for cell in cells} == {"al", "Real Name"}
    alice.send("/list")
    alice.expect(r"Rooms:$")
    alice.expect(rf"{STAMP}  #general  2 users$")


def test_a_refused_message_is_shown_as_not_sent_never_as_said(spawn, observer):
    op = observer("op", "#quiet")  # the first in a room is its operator
    alice = joined(spawn("--nick", "alice", "--join", "#quiet"), "alice", "#quiet")
    op.expect(r"^:alice!\S+ JOIN #quiet$")
    op.send("MODE #quiet +m")
    alice.expect(rf"{STAMP}\* op moderates #quiet$")

    alice.send("anyone there?")
    lines = alice.collect_until(
        rf"{STAMP}! Not sent to #quiet: anyone there\? "
        r"\(Cannot send to room: it is moderated \(\+m\) and you have no voice\)$"
    )
    assert not any("<alice> anyone there?" in line for line in lines), lines
    alice.send("/msg nobody psst")
    alice.expect(rf"{STAMP}! Not sent to nobody: psst \(No such nick\)$")
    alice.send("/me waves")
    alice.expect(rf"{STAMP}! Not sent to #quiet: \* alice waves \(Cannot send to room: .*\)$")

    op.send("MODE #quiet +v alice")
    alice.expect(rf"{STAMP}\* op gives voice to you in #quiet$")
    alice.send("thanks")
    alice.expect(rf"{STAMP}\[#quiet\] <alice> thanks$")  # taken: shown as said
    op.expect(r"^:alice!\S+ PRIVMSG #quiet :?thanks$")
    assert not any(re.search(r"<alice> anyone there|-> \*nobody\*", line) for line in alice.seen)


def test_after_a_kick_text_goes_to_the_room_current_before(spawn, observer):
    op = observer("op", "#a", "#b", "#c")
    alice = spawn("--nick", "alice", "--join", "#a,#b,#c")
    for room in ("#a", "#b", "#c"):
        joined(alice, "alice", room)
    alice.send("/switch #a")
    alice.expect(r"-- Talking in #a$")
    alice.send("/switch #b")
    alice.expect(r"-- Talking in #b$")
    op.send("KICK #b alice :out")
    alice.expect(rf"{STAMP}\* You were kicked from #b by op \(out\)$")
    alice.expect(rf"{STAMP}-- Talking in #a$")  # the room before #b, not the last joined
    alice.send("where does this go")
    op.expect(r"^:alice!\S+ PRIVMSG #a :where does this go$")
    alice.send("/leave")
    alice.expect(rf"{STAMP}\* You left #a$")
    alice.expect(rf"{STAMP}-- Talking in #c$")
    alice.send("/leave")
    alice.expect(rf"{STAMP}-- You are in no room now: /join #room$")


def test_ctcp_version_ping_and_time_are_answered(spawn, observer):
    bob = observer("bob")
    alice = spawn("--nick", "alice")
    alice.expect(r"Welcome to")
    for request in ("VERSION", "PING 1712345678 123", "TIME", "CLIENTINFO"):
        bob.send(f"PRIVMSG alice :\x01{request}\x01")
    bob.expect(r"^:alice!\S+ NOTICE bob :\x01VERSION ircish-client \d+\.\d+\.\d+\x01$")
    bob.expect(r"^:alice!\S+ NOTICE bob :\x01PING 1712345678 123\x01$")
    bob.expect(r"^:alice!\S+ NOTICE bob :\x01TIME \w{3}, \d\d \w{3} \d{4} [\d:]{8} [-+]\d{4}\x01$")
    alice.expect(rf"{STAMP}\* bob sent a CTCP CLIENTINFO$")
    # The fourth request in a row came within 2 s of the third: dropped, not answered.
    alice.send("/msg bob done")
    lines = bob.collect_until(r"PRIVMSG bob :?done$")
    assert not any("CLIENTINFO" in line for line in lines), lines


def test_a_ctcp_flood_gets_three_answers_and_the_rest_is_dropped(spawn, observer):
    # Every answer costs the client flood tokens on the server: answering a flood of requests
    # would get it cut off ("Excess Flood"), so it answers 3 at once, then 1 per 2 s.
    bob = observer("bob")
    alice = spawn("--nick", "alice")
    alice.expect(r"Welcome to")
    bob.send("".join(f"PRIVMSG alice :\x01PING {n}\x01\r\n" for n in range(20)).encode())
    bob.send("PRIVMSG alice :that was all")
    alice.expect(r"\[private\] <bob> that was all$")
    alice.send("/msg bob done")
    lines = bob.collect_until(r"PRIVMSG bob :?done$")
    answers = [parse(line).params[1] for line in lines if " NOTICE bob " in line]
    assert answers[:3] == ["\x01PING 0\x01", "\x01PING 1\x01", "\x01PING 2\x01"]
    # A fourth only if handling the twenty took the client 2 s.
    assert len(answers) <= 4, answers


# -- connection trouble -----------------------------------------------------------------------


def test_reconnects_and_rejoins_after_the_server_restarts(spawn, observer, server_process):
    port = free_port()
    first = server_process(port=port, log_level="WARNING")
    second: ServerProcess | None = None
    try:
        alice = spawn("--nick", "alice", "--join", "#general", "--join", "#ops", port=port)
        joined(alice, "alice", "#general")
        joined(alice, "alice", "#ops")
        alice.send("/switch #general")
        alice.expect("-- Talking in #general")
        assert first.stop() == 0
        alice.expect(r"! Server shutting down$")
        alice.expect(r"! Connection lost$")
        alice.expect(rf"-- Reconnecting to 127\.0\.0\.1:{port} in 1 s$")
        second = server_process(port=port, log_level="WARNING")
        alice.expect(r"-- Rejoining #general, #ops$", timeout=10)
        joined(alice, "alice", "#general")
        joined(alice, "alice", "#ops")
        bob = observer("bob", "#general", address=("127.0.0.1", port))
        alice.expect(r"\* bob joined #general$")
        alice.send("still here")  # the current room survived the restart
        bob.expect(r"^:alice!\S+ PRIVMSG #general :still here$")
        # The welcome burst (LUSERS, MOTD) is shown once, not again on every reconnect.
        assert sum("Welcome to the ircish Network" in line for line in alice.seen) == 2
        assert sum("MOTD File is missing" in line for line in alice.seen) == 1
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_without_reconnect_a_lost_server_ends_the_client_with_status_1(start_server):
    server = start_server()
    alice = ClientProcess("--nick", "alice", "--port", str(server.address[1]), "--no-reconnect")
    try:
        alice.expect(r"Welcome to")
        server.shutdown("going down")
        alice.expect(r"! going down$")
        alice.expect(r"! Connection lost$")
        assert alice.wait() == 1
        assert not any("Reconnecting" in line for line in alice.seen)
    finally:
        alice.stop()


def test_unreachable_server_is_one_line_and_status_1():
    port = free_port()
    result = subprocess.run(
        [*CLIENT, "--nick", "carol", "--port", str(port)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=client_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ircish-client: cannot connect to 127.0.0.1:{port}: Connection refused"
    ]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "env", "complaint"),
    [
        ([], {}, "Missing option '-n' / '--nick'"),
        (["--nick", "carol", "--port", "70000"], {}, "--port"),
        (["--nick", "carol", "--port", "abc"], {}, "--port"),
        (["--nick", "bad nick"], {}, "is not a nick"),
        # The server's nick rule (RFC 2812: no digit first), checked before connecting: the
        # unreachable port shows no connection was tried (that would exit 1).
        (["--nick", "9bad", "--port", "1"], {}, "'9bad' is not a nick: it starts with a letter"),
        (["--nick", "caröl", "--port", "1"], {}, "is not a nick"),
        (["--port", "1"], {"IRCISH_NICK": "a.b"}, "'a.b' is not a nick"),
        (["--nick", "carol", "--join", "#a b"], {}, "is not a room name"),
        (["--nick", "carol"], {"IRCISH_PORT": "0"}, "--port"),
        (["--nick", "carol", "--colour"], {}, "No such option"),
    ],
)
def test_bad_arguments_are_usage_errors(args, env, complaint):
    result = subprocess.run(
        [*CLIENT, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=client_env(**env),
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_variables_choose_nick_and_server(server):
    result = subprocess.run(
        CLIENT,
        input="",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=client_env(
            IRCISH_NICK="envnick", IRCISH_HOST="127.0.0.1", IRCISH_PORT=str(server.address[1])
        ),
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Welcome to the ircish Network, envnick!" in result.stdout


def test_help_shows_examples_and_version_prints():
    help_text = subprocess.run(
        [*CLIENT, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=30, check=True
    ).stdout
    for option in ("--nick", "--host", "--port", "--join", "--password", "--no-reconnect"):
        assert option in help_text
    assert "ircish-client --nick carol" in help_text
    version = subprocess.run(
        [*CLIENT, "--version"], capture_output=True, text=True, cwd=ROOT, timeout=30, check=True
    ).stdout
    assert re.match(r"ircish-client, version \d+\.\d+", version)


def test_server_password_is_sent_and_a_wrong_one_ends_with_status_1(start_server):
    server = start_server(password="letmein")
    port = str(server.address[1])
    wrong = ClientProcess("--nick", "carol", "--port", port, "--password", "guess")
    right = ClientProcess(
        "--nick", "dave", "--port", port, env=client_env(IRCISH_PASSWORD="letmein")
    )
    try:
        wrong.expect(r"! Password incorrect$")
        assert wrong.wait() == 1
        assert not any("Reconnecting" in line for line in wrong.seen)  # no retry loop
        right.expect(r"Welcome to the ircish Network, dave!")
    finally:
        wrong.stop()
        right.stop()
