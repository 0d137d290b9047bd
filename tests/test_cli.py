"""The `ircish-server` command: config errors, overrides, SIGTERM shutdown, and the
`hash-password` subcommand on a terminal (a pty, via pexpect) and in a pipe."""

from __future__ import annotations

import io
import logging
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from helpers import TIMEOUT, Client

from ircish import cli
from ircish.passwords import hash_password, verify_password

SERVER = [sys.executable, "-m", "ircish.cli"]
ROOT = Path(__file__).resolve().parent.parent
HASH_LINE = re.compile(r"scrypt\$\S+")


def run_cli(*args: str, stdin: str | bytes = "") -> subprocess.CompletedProcess[str]:
    # Always a pipe for stdin (empty by default): a test must never wait on the terminal.
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run([*SERVER, *args], input=data, capture_output=True, timeout=30)
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("limits:\n  sendq_bytes: abc\n", r"limits\.sendq_bytes: expected an integer, got 'abc'"),
        ("server:\n  colour: red\n", r"server\.colour: unknown key"),
        ("rooms:\n  - name: general\n", r"rooms\[0\]\.name: "),
        ("server: [1, 2\n", r"not valid YAML"),
        (
            "operators:\n  - {name: alice, password: hunter2}\n",
            r"operators\[0\]\.password: must be a scrypt hash made by "
            r"`ircish-server hash-password` \(plain-text passwords are not accepted\)$",
        ),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_cli("-c", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert re.search(expected, lines[0])
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_a_usage_error(tmp_path):
    result = run_cli("-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_help_explains_options():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--config", "--host", "--port", "--log-level"):
        assert option in result.stdout


def test_help_lists_the_hash_password_command():
    result = run_cli("--help")
    assert result.returncode == 0
    assert re.search(r"^\s+hash-password\s+\S", result.stdout, re.MULTILINE), result.stdout
    result = run_cli("hash-password", "--help")
    assert result.returncode == 0
    assert "ircish-server hash-password" in result.stdout


def test_version_still_works():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("ircish-server, version ")


def test_server_options_are_refused_with_a_subcommand():
    result = run_cli("--port", "7000", "hash-password", stdin="pw\n")
    assert result.returncode == 2
    assert "--port is for running the server, not for hash-password" in result.stderr
    assert result.stdout == ""


def test_unknown_subcommand_is_a_usage_error():
    result = run_cli("hash-pasword")
    assert result.returncode == 2
    assert "No such command 'hash-pasword'" in result.stderr


# --- hash-password ----------------------------------------------------------------------------


class PasswordPrompt:
    """`ircish-server hash-password` on a pseudo-terminal, with `redirect` (shell syntax)
    applied to it; everything the terminal shows is kept in `shown`."""

    def __init__(self, redirect: str = "") -> None:
        self.pexpect = pytest.importorskip("pexpect")
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRCISH_")}
        command = f"exec {shlex.join([*SERVER, 'hash-password'])} {redirect}"
        self.child = self.pexpect.spawn(
            "/bin/sh", ["-c", command], cwd=str(ROOT), env=env, encoding="utf-8", timeout=TIMEOUT
        )
        self.shown = io.StringIO()
        self.child.logfile_read = self.shown

    def answer(self, prompt: str, text: str) -> None:
        # The prompt's trailing space is written by getpass after it has turned echo off
        # (and flushed pending input), so typing after it is typing as a person would.
        self.child.expect_exact(prompt)
        self.child.send(text + "\r")

    def finish(self) -> tuple[int, str]:
        """The exit status, and everything the terminal showed."""
        self.child.expect(self.pexpect.EOF)
        self.child.close()
        return self.child.exitstatus, self.shown.getvalue()

    def close(self) -> None:
        self.child.close(force=True)


@pytest.fixture
def password_prompt() -> Iterator[Callable[..., PasswordPrompt]]:
    prompts: list[PasswordPrompt] = []

    def start(redirect: str = "") -> PasswordPrompt:
        prompts.append(PasswordPrompt(redirect))
        return prompts[-1]

    yield start
    for prompt in prompts:
        prompt.close()


def test_hash_password_on_a_terminal_does_not_echo(password_prompt):
    term = password_prompt()
    term.answer("Password: ", "tr0ub4dor &3")
    term.answer("Repeat for confirmation: ", "tr0ub4dor &3")
    status, shown = term.finish()
    assert status == 0, shown
    assert "tr0ub4dor" not in shown
    hashes = HASH_LINE.findall(shown)
    assert len(hashes) == 1, shown
    assert verify_password("tr0ub4dor &3", hashes[0])


def test_hash_password_confirmation_mismatch_asks_again(password_prompt):
    term = password_prompt()
    term.answer("Password: ", "first-attempt")
    term.answer("Repeat for confirmation: ", "second-attempt")
    term.child.expect_exact("Error: The two entered values do not match.")
    term.answer("Password: ", "third-attempt")
    term.answer("Repeat for confirmation: ", "third-attempt")
    status, shown = term.finish()
    assert status == 0, shown
    for typed in ("first-attempt", "second-attempt", "third-attempt"):
        assert typed not in shown
    (encoded,) = HASH_LINE.findall(shown)
    assert verify_password("third-attempt", encoded)
    assert not verify_password("first-attempt", encoded)


def test_hash_password_prompts_stay_out_of_stdout(password_prompt, tmp_path):
    """`ircish-server hash-password > file` on a terminal: the file holds the hash alone."""
    out = tmp_path / "hash.txt"
    term = password_prompt(f"> {shlex.quote(str(out))}")
    term.answer("Password: ", "to a file")
    term.answer("Repeat for confirmation: ", "mistyped")
    term.child.expect_exact("Error: The two entered values do not match.")
    term.answer("Password: ", "to a file")
    term.answer("Repeat for confirmation: ", "to a file")
    status, shown = term.finish()
    assert status == 0, shown
    assert HASH_LINE.search(shown) is None  # not on the terminal: in the file
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    assert verify_password("to a file", lines[0])


@pytest.mark.parametrize(
    ("stdin", "password"),
    [
        ("s3cret\n", "s3cret"),
        ("s3cret", "s3cret"),  # no newline at the end
        ("s3cret\r\n", "s3cret"),
        ("  spaces kept  \n", "  spaces kept  "),
        ("first line\nsecond line\n", "first line"),
        ("pässwörd ✓\n", "pässwörd ✓"),
    ],
)
def test_hash_password_from_a_pipe(stdin, password):
    result = run_cli("hash-password", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no prompt for a script
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert result.stdout == lines[0] + "\n"
    assert verify_password(password, lines[0])
    assert not verify_password(password + "x", lines[0])


@pytest.mark.parametrize(
    ("stdin", "problem"),
    [
        (b"", "the password is empty"),
        (b"\n", "the password is empty"),
        (b"\r\n", "the password is empty"),
        (b"a\0b\n", "the password contains CR, LF or NUL, which no IRC line can carry"),
        (b"a\rb\n", "the password contains CR, LF or NUL, which no IRC line can carry"),
        (b"caf\xe9\n", "the password is not valid UTF-8"),
    ],
)
def test_hash_password_refuses_a_bad_password_with_exit_2(stdin, problem):
    result = run_cli("hash-password", stdin=stdin)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"ircish-server: {problem}\n"


def test_bad_port_override_exits_2():
    result = run_cli("--port", "70000")
    assert result.returncode == 2
    assert "--port" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(server_process, signum):
    """Every client is told, the process exits 0 within a few seconds."""
    server = server_process("rooms:\n  - name: '#general'\n")
    clients = []
    try:
        for nick in ("alice", "bob"):
            client = Client(server.address)
            clients.append(client)
            client.register(nick)
            client.send("JOIN #general")
            client.expect(r" 366 ")
        server.proc.send_signal(signum)
        for client in clients:
            lines = client.expect_closed()
            assert any(re.match(r"ERROR :.*shutting down", line) for line in lines), lines
        assert server.wait() == 0
    finally:
        for client in clients:
            client.close()


def test_server_starts_with_operators_in_the_config(server_process):
    server = server_process(
        f"operators:\n  - {{name: alice, password: '{hash_password('pw')}', hosts: ['127.*']}}\n"
    )
    Client(server.address).close()
    assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("log_level", ["INFO", "DEBUG", "WARNING"])
def test_listening_is_said_once(server_process, log_level, tmp_path):
    """Someone starting the server in a terminal sees where it listens, once, whatever the
    log level (issue 11: the log and the cli both said it)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    issued = trustme.CA().issue_cert("127.0.0.1")
    issued.private_key_pem.write_to_path(str(key))
    issued.cert_chain_pems[0].write_to_path(str(cert))
    config = f"tls: {{cert: '{cert}', key: '{key}', port: 0}}\n"
    server = server_process(config, log_level=log_level)
    assert server.stop() == 0
    said = [line for line in server.log().splitlines() if "listening" in line]
    assert len(said) == 1, server.log()
    assert re.fullmatch(
        r"ircish-server listening on 127\.0\.0\.1:\d+, TLS on 127\.0\.0\.1:\d+", said[0]
    )


def test_the_start_line_says_where_the_web_client_is(server_process):
    server = server_process("websocket: {port: 0}\n")
    assert server.stop() == 0
    said = [line for line in server.log().splitlines() if "listening" in line]
    found = re.search(
        r", WebSocket on ws://127\.0\.0\.1:(\d+)/ \(the web client: http://127\.0\.0\.1:(\d+)/\)$",
        said[0],
    )
    assert found and found[1] == found[2], said


def test_port_in_use_is_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_low_file_limit_is_warned_about(server_process):
    """With max_clients above the hard open-file limit, the server says so at start."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256))

    server = server_process("limits:\n  max_clients: 5000\n", preexec_fn=low_limit)
    # It is listening, so the start-up checks have run.
    assert server.stop() == 0
    assert "open-file limit is 256 but max_clients is 5000" in server.log()


class _MacLimits:
    """resource's calls as on macOS: the hard open-file limit is unlimited, and asking for
    an unlimited (or too high) soft limit raises ValueError."""

    RLIMIT_NOFILE = resource.RLIMIT_NOFILE
    RLIM_INFINITY = resource.RLIM_INFINITY
    MAX_PER_PROCESS = 10240

    def __init__(self, soft: int) -> None:
        self.soft = soft

    def getrlimit(self, which: int) -> tuple[int, int]:
        return self.soft, self.RLIM_INFINITY

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        soft, _ = limits
        if soft == self.RLIM_INFINITY or soft > self.MAX_PER_PROCESS:
            raise ValueError("current limit exceeds maximum limit")
        self.soft = soft


@pytest.mark.parametrize(
    ("max_clients", "soft_after", "warned"),
    [(1000, 1032, False), (20000, 256, True)],
    ids=["raised-to-what-is-needed", "too-many-for-the-machine"],
)
def test_an_unlimited_hard_file_limit_is_no_crash(
    monkeypatch, caplog, max_clients, soft_after, warned
):
    """On macOS the hard limit is unlimited and setrlimit(hard, hard) raised ValueError at
    start. Now the soft limit is raised to what max_clients needs, or the server says why
    it could not be."""
    limits = _MacLimits(soft=256)
    monkeypatch.setattr(cli, "resource", limits)
    caplog.set_level(logging.WARNING, logger="ircish")
    cli.check_os_limits(max_clients)
    assert limits.soft == soft_after
    assert ("could not raise the open-file limit from 256 to 20032" in caplog.text) == warned
    assert ("open-file limit is 256 but max_clients is 20000" in caplog.text) == warned
