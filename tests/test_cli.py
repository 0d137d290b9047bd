"""The `ircish-server` command: config errors, overrides, and SIGTERM shutdown."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import TIMEOUT, Client

SERVER = [sys.executable, "-m", "ircish.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVER, *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("limits:\n  sendq_bytes: abc\n", r"limits\.sendq_bytes: expected an integer, got 'abc'"),
        ("server:\n  colour: red\n", r"server\.colour: unknown key"),
        ("rooms:\n  - name: general\n", r"rooms\[0\]\.name: "),
        ("server: [1, 2\n", r"not valid YAML"),
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


def test_bad_port_override_exits_2():
    result = run_cli("--port", "70000")
    assert result.returncode == 2
    assert "--port" in result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def connect_with_retry(port: int) -> Client:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return Client(("127.0.0.1", port))
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(tmp_path, signum):
    """Every client is told, the process exits 0 within a few seconds."""
    config = tmp_path / "config.yaml"
    config.write_text("rooms:\n  - name: '#general'\n")
    port = free_port()
    proc = subprocess.Popen(
        [*SERVER, "-c", str(config), "--port", str(port), "--log-level", "INFO"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    clients = []
    try:
        for nick in ("alice", "bob"):
            client = connect_with_retry(port)
            clients.append(client)
            client.register(nick)
            client.send("JOIN #general")
            client.expect(r" 366 ")
        proc.send_signal(signum)
        for client in clients:
            lines = client.expect_closed()
            assert any(re.match(r"ERROR :.*shutting down", line) for line in lines), lines
        assert proc.wait(timeout=5) == 0
    finally:
        for client in clients:
            client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_port_in_use_is_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_low_file_limit_is_warned_about(tmp_path):
    """With max_clients above the hard open-file limit, the server says so at start."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256))

    config = tmp_path / "config.yaml"
    config.write_text("limits:\n  max_clients: 5000\n")
    port = free_port()
    proc = subprocess.Popen(
        [*SERVER, "-c", str(config), "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_limit,
    )
    try:
        connect_with_retry(port).close()  # it is up, so the start-up checks have run
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "open-file limit is 256 but max_clients is 5000" in stderr
