"""Reloading the config without a restart (issue 15): REHASH and SIGHUP re-read the file,
apply what a running server can take, keep (and name) what needs a restart, change
nothing for a bad file, and drop nobody."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    COMMANDS,
    HOST,
    OPER_PASSWORD,
    ROOT,
    TIMEOUT,
    Client,
    ServerProcess,
    oper_config,
    wait_for,
)

from ircish import protocol as p
from ircish.config import ClusterConfig, Config, HistoryConfig, RoomConfig
from ircish.server import Server


class Reloadable:
    """A server whose "file" is `self.next`: a reload reads whatever it holds."""

    def __init__(self, config: Config) -> None:
        self.next = config
        self.server = Server(config, COMMANDS, reread=lambda: self.next, source="test.yaml")
        self.server.start()

    def change(self, **sections: object) -> None:
        """The next reload reads the current config with these top-level sections."""
        self.next = dataclasses.replace(self.server.config, **sections)


@pytest.fixture
def reloadable() -> Iterator[Callable[[Config], Reloadable]]:
    started: list[Reloadable] = []

    def start(config: Config) -> Reloadable:
        started.append(Reloadable(config))
        return started[-1]

    yield start
    for item in started:
        item.server.shutdown(timeout=2.0)


def operator(clients: list[Client], server: Server, nick: str = "root") -> Client:
    client = Client(server.address)
    clients.append(client)
    client.register(nick)
    client.send(f"OPER root :{OPER_PASSWORD}")
    client.expect(f" {p.RPL_YOUREOPER} ")
    return client


def user(clients: list[Client], server: Server, nick: str) -> Client:
    client = Client(server.address)
    clients.append(client)
    client.register(nick)
    return client


def newcomer_reads_motd(address: tuple[str, int], clients: list[Client], motd: str) -> Client:
    """A client that connects now is shown `motd` (the config in force, for newcomers)."""
    newcomer = Client(address)
    clients.append(newcomer)
    newcomer.register("newcomer")
    newcomer.send("MOTD")
    newcomer.expect(rf" 372 newcomer :- {re.escape(motd)}$")
    return newcomer


def test_rehash_applies_what_it_can_and_names_what_needs_a_restart(reloadable, clients):
    item = reloadable(oper_config())
    root = operator(clients, item.server)
    old = item.server.config
    item.change(
        server=dataclasses.replace(old.server, motd="Fresh news", port=6999, name="other.name"),
        limits=dataclasses.replace(old.limits, topic_length=100),
    )
    root.send("REHASH")
    root.expect(rf" {p.RPL_REHASHING} root test\.yaml :Rehashing$")
    root.expect(r"NOTICE root :Config reloaded: server\.motd, limits\.topic_length$")
    root.expect(r"NOTICE root :server\.name needs a restart to change; still test\.server$")
    root.expect(r"NOTICE root :server\.port needs a restart to change; still 0$")
    config = item.server.config
    assert (config.server.motd, config.limits.topic_length) == ("Fresh news", 100)
    assert (config.server.name, config.server.port) == (old.server.name, old.server.port)
    # The one who asked is still there, and a newcomer reads the new MOTD.
    root.sync()
    newcomer_reads_motd(item.server.address, clients, "Fresh news")


def test_rehash_is_for_server_operators(reloadable, clients):
    item = reloadable(oper_config())
    someone = user(clients, item.server, "someone")
    someone.send("REHASH")
    someone.expect(rf" {p.ERR_NOPRIVILEGES} someone :Permission denied")


def test_a_bad_file_changes_nothing_and_says_why(reloadable, clients, caplog):
    item = reloadable(oper_config(motd="Old news"))

    def broken() -> Config:
        from ircish.config import parse_config

        return parse_config({"limits": {"flood_rate": "fast"}}, "ircish.yaml")

    item.server._reread = broken
    root = operator(clients, item.server)
    before = item.server.config
    root.send("REHASH")
    root.expect(
        r"NOTICE root :Config not reloaded, nothing changed: ircish\.yaml: limits\.flood_rate: "
        r"expected a number, got 'fast'"
    )
    assert item.server.config is before
    assert "Config not reloaded" in caplog.text
    root.send("MOTD")
    root.expect(r" 372 root :- Old news$")


def test_caps_that_come_or_go_are_announced(reloadable, clients):
    item = reloadable(oper_config())
    modern = Client(item.server.address)
    clients.append(modern)
    modern.send("CAP LS 302")
    modern.expect(r"CAP \* LS :.*draft/account-registration=before-connect")
    modern.send("CAP END")
    modern.register("modern")
    old_school = user(clients, item.server, "oldschool")  # no cap-notify: told nothing

    accounts = item.server.config.accounts
    item.change(accounts=dataclasses.replace(accounts, registration="closed"))
    item.server.reload()
    modern.expect(r"^:test\.server CAP modern DEL :draft/account-registration$")
    modern.send("CAP LIST")  # cancelled, not just announced (cap-notify's MUST)
    listed = modern.expect(r" CAP modern LIST :")
    assert "draft/account-registration" not in listed.string
    item.change(accounts=dataclasses.replace(accounts, register_before_connect=False))
    item.server.reload()
    # Back, with its new value: offered again, and new to this client.
    modern.expect(r"^:test\.server CAP modern NEW :draft/account-registration$")
    modern.send("CAP LS 302")
    modern.expect(r"CAP modern LS :.* draft/account-registration ")
    assert not [line for line in old_school.sync() if " CAP " in line]


def test_operators_removed_from_the_config_lose_their_status(reloadable, clients):
    item = reloadable(oper_config())
    root = operator(clients, item.server)
    item.change(operators=())
    item.server.reload()
    root.expect(r"^:test\.server MODE root -o$")
    root.expect(r"NOTICE root :Your operator status ended")
    root.send("KILL root")
    root.expect(rf" {p.ERR_NOPRIVILEGES} ")
    assert item.server.world.counts().operators == 0


def test_config_rooms_come_with_a_reload(reloadable, clients):
    item = reloadable(oper_config())
    alice = user(clients, item.server, "alice")
    alice.join("#lounge")  # an ordinary room: gone when it empties
    item.change(rooms=(RoomConfig("#lounge", "Sit down"), RoomConfig("#news", "What's new")))
    outcome = item.server.reload()
    assert outcome.rooms == ("#lounge", "#news")
    # The existing room becomes permanent before its members' eyes, with the config's
    # topic, since nobody set one; the new room exists though nobody is in it.
    alice.expect(r"^:test\.server MODE #lounge \+P$")
    alice.expect(r"^:test\.server TOPIC #lounge :Sit down$")
    alice.send("LIST")
    listing = alice.collect_until(rf" {p.RPL_LISTEND} ")
    assert any(" #news 0 :" in line and "What's new" in line for line in listing), listing
    alice.send("PART #lounge")
    alice.sync()
    assert item.server.world.find_room("#lounge") is not None
    # A second reload with the same rooms changes nothing.
    assert item.server.reload().rooms == ()


def test_history_retention_reloads_and_reads_follow_it(reloadable, clients):
    config = dataclasses.replace(oper_config(), history=HistoryConfig(max_lines=50))
    item = reloadable(config)
    alice = user(clients, item.server, "alice")
    alice.send("CAP REQ :draft/chathistory batch server-time message-tags")
    alice.join("#h")
    for i in range(20):
        alice.send(f"PRIVMSG #h :line {i}")
    alice.sync()
    item.change(history=HistoryConfig(max_lines=5))
    outcome = item.server.reload()
    assert outcome.applied == ("history.max_lines",)
    alice.send("CHATHISTORY LATEST #h * 50")
    lines = alice.collect_until(r"BATCH -")
    said = [line for line in lines if "PRIVMSG #h" in line]
    assert [line.rsplit(":", 1)[1] for line in said] == [f"line {i}" for i in range(15, 20)]


def test_kept_settings_must_still_agree_with_the_new_ones(reloadable):
    """window needs a restart; a file that raises it and replay_on_join past the old one
    would leave replay_on_join > window in force: refused whole."""
    item = reloadable(oper_config())
    item.change(history=HistoryConfig(window=500, replay_on_join=300))
    outcome = item.server.reload()
    assert outcome.error is not None
    assert "history.replay_on_join: must be at most window (200), got 300" in outcome.error
    assert item.server.config.history == HistoryConfig()


def test_turning_history_on_or_off_needs_a_restart(reloadable):
    item = reloadable(oper_config())
    item.change(history=HistoryConfig(max_lines=0))
    outcome = item.server.reload()
    assert outcome.kept == (("history.max_lines", "10000"),)
    assert item.server.config.history.enabled


def test_joining_a_cluster_needs_a_restart(reloadable):
    """A single process does not become a node of a network (issue 17) by a reload: it
    would have to hand its users and rooms to Redis while they talk."""
    item = reloadable(oper_config())
    item.change(cluster=ClusterConfig("redis://127.0.0.1:6379/0"))
    outcome = item.server.reload()
    assert (outcome.applied, outcome.kept, outcome.error) == ((), (("cluster", "null"),), None)
    assert item.server.config.cluster is None


def test_limits_reach_new_connections_and_leave_old_ones_as_they_were(reloadable, clients):
    item = reloadable(oper_config())
    veteran = user(clients, item.server, "veteran")
    limits = dataclasses.replace(
        item.server.config.limits, flood_burst=2, flood_rate=2.0, flood_disconnect_seconds=1.0
    )
    item.change(limits=limits)
    assert item.server.reload().applied == (
        "limits.flood_burst",
        "limits.flood_rate",
        "limits.flood_disconnect_seconds",
    )
    newcomer = user(clients, item.server, "newcomer")
    burst = b"".join(b"PRIVMSG nobody :x%d\r\n" % i for i in range(40))
    newcomer.send(burst)
    assert newcomer.expect_closed(timeout=10)[-1] == "ERROR :Excess Flood"
    veteran.send(burst)  # no flood control when it connected: never cut off
    veteran.sync()


# -- ircish-server itself: SIGHUP, the log file, check-config ------------------------------

FIRST = """
server:
  motd: Old news
limits:
  flood_rate: 0
log:
  file: {log}
  format: json
"""

SECOND = """
server:
  motd: Fresh news
  name: renamed.example
limits:
  flood_burst: 2
  flood_rate: 2.0
  flood_disconnect_seconds: 1
log:
  file: {log}
  format: json
  level: DEBUG
"""


def log_records(path: Path) -> list[dict]:
    """The JSON log's records (each line one object; a half-written last line waits)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def messages(path: Path) -> list[str]:
    return [record["message"] for record in log_records(path)]


def test_sighup_reloads_motd_and_flood_and_drops_nobody(server_process, tmp_path, clients):
    log = tmp_path / "ircish.log"
    server = server_process(FIRST.format(log=log), log_level=None)  # the file's level
    wait_for(lambda: any("console operator" in m for m in messages(log)))
    veteran = Client(server.address)
    clients.append(veteran)
    veteran.register("veteran")
    server.config_path.write_text(SECOND.format(log=log))
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any(m.startswith("Config reloaded") for m in messages(log)))
    said = messages(log)
    assert (
        "Config reloaded: server.motd, limits.flood_burst, limits.flood_rate, "
        "limits.flood_disconnect_seconds, log.level"
    ) in said
    assert "server.name needs a restart to change; still irc.ircish.local" in said
    newcomer = newcomer_reads_motd(server.address, clients, "Fresh news")
    newcomer.send(b"".join(b"PRIVMSG nobody :x%d\r\n" % i for i in range(40)))
    assert newcomer.expect_closed(timeout=10)[-1] == "ERROR :Excess Flood"
    veteran.send(b"".join(b"PRIVMSG nobody :x%d\r\n" % i for i in range(40)))
    veteran.sync()  # still there
    # log.level DEBUG took effect: the newcomer's flooding was logged at DEBUG.
    wait_for(lambda: any(r["level"] == "DEBUG" for r in log_records(log)))
    assert server.proc.poll() is None
    assert server.stop() == 0


def refused_reload(server: ServerProcess, log: Path, text: str) -> str:
    """Write `text` as the config, send SIGHUP: the log's one "Config not reloaded" line."""
    server.config_path.write_text(text)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any(m.startswith("Config not reloaded") for m in messages(log)))
    (line,) = [m for m in messages(log) if m.startswith("Config not reloaded")]
    return line


def test_sighup_with_a_broken_file_changes_nothing(server_process, tmp_path, clients):
    log = tmp_path / "ircish.log"
    server = server_process(FIRST.format(log=log))
    line = refused_reload(server, log, "server: {motd: [oops\n")
    assert "not valid YAML" in line and str(server.config_path) in line
    assert [r["level"] for r in log_records(log) if r["message"] == line] == ["ERROR"]
    newcomer_reads_motd(server.address, clients, "Old news")
    assert server.stop() == 0


class Spawned:
    """`python -m ircish ARGS` in `cwd`, its stderr read by a thread, so that every wait
    for a line has a timeout."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ircish", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})},
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def line_with(self, text: str) -> str:
        """The first line of stderr holding `text`, once it comes (the test fails if not)."""
        wait_for(lambda: any(text in line for line in self.lines), timeout=TIMEOUT * 2)
        return next(line for line in self.lines if text in line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(TIMEOUT)
            assert self.proc.stderr is not None
            self.proc.stderr.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Spawned]]:
    started: list[Spawned] = []

    def start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Spawned:
        started.append(Spawned(cwd, *args, env=env))
        return started[-1]

    yield start
    for spawned in started:
        spawned.stop()


def test_sighup_without_a_config_file_keeps_serving(spawn, tmp_path, clients):
    """Started with built-in defaults: nothing to re-read, and no exit 129."""
    server = spawn(tmp_path, "--port", "0")
    port = int(server.line_with("listening on").rsplit(":", 1)[1])
    server.proc.send_signal(signal.SIGHUP)
    assert "without a config file" in server.line_with("Config not reloaded")
    client = Client((HOST, port))
    clients.append(client)
    client.register("alice")
    assert server.stop() == 0


def test_a_rotated_log_loses_no_line_under_load(server_process, tmp_path):
    log = tmp_path / "ircish.log"
    rotated = tmp_path / "ircish.log.1"
    server = server_process(FIRST.format(log=log))
    made = 0
    stop = threading.Event()

    def churn() -> None:  # each connection is a "connection from" and a "left" line
        nonlocal made
        while not stop.is_set():
            client = Client(server.address)
            client.register(f"churn{made}")
            client.send("QUIT :bye")
            client.expect_closed()
            client.close()
            made += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        wait_for(lambda: made >= 20)
        log.rename(rotated)  # what logrotate does, before its postrotate SIGHUP
        wait_for(lambda: made >= 40)
        server.proc.send_signal(signal.SIGHUP)
        # Until the reopened file has some of the churn (under load the 80th connection
        # may come before the reopen, and the last lines with it).
        wait_for(
            lambda: (
                made >= 80
                and log.exists()
                and any(m.startswith("connection from") for m in messages(log))
            )
        )
    finally:
        stop.set()
        thread.join(TIMEOUT)
    wait_for(lambda: sum("left: Quit: bye" in m for m in messages(rotated) + messages(log)) == made)
    both = messages(rotated) + messages(log)
    assert sum(m.startswith("connection from") for m in both) == made
    assert any(m.startswith("connection from") for m in messages(log))
    assert server.stop() == 0


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ircish", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        cwd=cwd,
    )


def test_check_config(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text((ROOT / "examples" / "config.yaml").read_text())
    result = run_cli("check-config", "-c", str(good), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"{good}: OK\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits: {flood_rate: fast}\nlog_level: INFO\n")
    result = run_cli("check-config", "-c", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"ircish-server: {bad}: limits.flood_rate: expected a number, got 'fast'\n"
    )
    result = run_cli("check-config", "-c", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot read the file" in result.stderr and result.stderr.count("\n") == 1


def test_check_config_asks_the_cluster_s_redis(tmp_path, redis_server):
    config = tmp_path / "node.yaml"
    config.write_text(f"cluster: {{redis: '{redis_server.url}', node: n1}}\n")
    result = run_cli("check-config", "-c", str(config), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"{config}: OK\n")
    redis_server.stop()
    result = run_cli("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"ircish-server: {config}: cluster.redis: cannot reach Redis at {redis_server.url}: "
    )
    assert result.stderr.count("\n") == 1


def test_check_config_loads_the_tls_files(tmp_path):
    broken = tmp_path / "key.pem"
    broken.write_text("not a key\n")
    config = tmp_path / "tls.yaml"
    config.write_text(f"tls: {{cert: {broken}, key: {broken}}}\n")
    result = run_cli("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"ircish-server: {config}: tls.")


def test_python_dash_m_is_ircish_server(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: ircish-server")
    assert "check-config" in result.stdout and "SIGHUP" in result.stdout


def test_old_log_level_key_is_told_where_it_went(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text("log_level: DEBUG\n")
    result = run_cli("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "log_level: moved to log.level" in result.stderr


def test_the_log_has_a_line_per_event_and_never_what_was_said(server_process, tmp_path):
    log = tmp_path / "ircish.log"
    server = server_process(FIRST.format(log=log))
    alice = Client(server.address)
    bob = Client(server.address)
    try:
        alice.register("alice")
        bob.register("bob")
        alice.join("#room")
        bob.join("#room")
        alice.send("PRIVMSG #room :the secret words")
        alice.send("PRIVMSG bob :more secret words")
        bob.send("PRIVMSG NickServ :IDENTIFY bob hunter2hunter2")
        bob.expect("Invalid account name or password")
        alice.send("QUIT :off to lunch")
        alice.expect_closed()
        bob.sync()
    finally:
        alice.close()
        bob.close()
    wait_for(lambda: any("left: Quit: off to lunch" in m for m in messages(log)))
    said = messages(log)
    assert any(m.startswith("connection from 127.0.0.1:") for m in said)
    assert any(m.endswith(f"registered: alice!u@{HOST} (IRC)") for m in said)
    assert any(m.endswith("login as bob refused (invalid)") for m in said)
    text = log.read_text()
    assert "secret" not in text and "hunter2" not in text
    assert all(set(record) == {"time", "level", "logger", "message"} for record in log_records(log))
    assert server.stop() == 0


def test_an_empty_file_is_not_a_reload_to_every_default(server_process, tmp_path, clients):
    """An editor that truncated the file, or a half-written one: the running config stays."""
    log = tmp_path / "ircish.log"
    server = server_process(FIRST.format(log=log))
    assert "the file is empty" in refused_reload(server, log, "# nothing here yet\n")
    newcomer_reads_motd(server.address, clients, "Old news")
    assert server.stop() == 0


def test_382_names_a_config_file_with_a_space_in_it(clients):
    config = oper_config()
    server = Server(config, COMMANDS, reread=lambda: config, source="/etc/my ircish/my config.yaml")
    server.start()
    try:
        root = operator(clients, server)
        root.send("REHASH")
        root.expect(rf" {p.RPL_REHASHING} root my_config\.yaml :Rehashing$")
        root.expect(r"NOTICE root :Config reloaded: nothing changed$")
    finally:
        server.shutdown(timeout=2.0)


def catches_sighup(pid: int) -> bool:
    """Whether the process has a handler for SIGHUP (/proc's SigCgt mask, bit 0)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_sighup_while_starting_is_a_reload_once_it_runs(spawn, tmp_path):
    """systemd may send the reload before the server listens: kept, not exit 129."""
    (tmp_path / "config.yaml").write_text("server: {motd: hello}\n")
    server = spawn(tmp_path, "-c", "config.yaml", "--port", "0")
    wait_for(lambda: catches_sighup(server.proc.pid), timeout=TIMEOUT * 2)
    server.proc.send_signal(signal.SIGHUP)  # before it listens, most likely; after, it is fine
    server.line_with("Config reloaded")
    server.line_with("listening on")
    assert server.stop() == 0


def test_systemd_is_told_ready_then_stopping(server_process, tmp_path):
    """sd_notify for `Type=notify`: READY=1 once it listens, STOPPING=1 at SIGTERM."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(TIMEOUT)
        server = server_process(
            "metrics: {listen: '127.0.0.1:0'}\n", env={"NOTIFY_SOCKET": str(path)}
        )
        assert listener.recv(100) == b"READY=1"
        said = [line for line in server.log().splitlines() if "listening on" in line]
        assert re.search(r", metrics on http://127\.0\.0\.1:\d+/metrics$", said[0]), said
        server.proc.send_signal(signal.SIGTERM)
        assert listener.recv(100) == b"STOPPING=1"
        assert server.wait() == 0


def test_what_users_type_cannot_steer_a_terminal_reading_the_log(server_process, tmp_path):
    log = tmp_path / "ircish.log"
    server = server_process(f"log: {{file: {log}}}\n")
    client = Client(server.address)
    try:
        client.register("mallory")
        client.send("QUIT :bye \x1b]0;pwned\x07 \x1b[2J")
        client.expect_closed()
    finally:
        client.close()
    wait_for(lambda: "left: Quit: bye" in log.read_text())
    text = log.read_text()
    assert "\x1b" not in text and "\x07" not in text
    assert "left: Quit: bye \\x1b]0;pwned\\x07 \\x1b[2J" in text
    assert server.stop() == 0
