"""Tests for examples/ircish.service, the systemd unit: it keeps what makes ircish a
well-behaved service (the command line, reload and stop signals, the state directory its
comment points the store at, the sandbox, no capabilities), and systemd's own
`systemd-analyze` accepts it where that tool is installed."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from ircish.config import Config, Limits, StoreConfig
from ircish.server import Server

UNIT = Path(__file__).resolve().parent.parent / "examples" / "ircish.service"
CONFIG = "/etc/ircish/config.yaml"
ANALYZE = shutil.which("systemd-analyze")
#: Seconds a systemd-analyze run may take (it answers in well under one): less than
#: pytest's own 60 s timeout, so a hang fails with this call named.
ANALYZE_TIMEOUT = 30

#: A parsed unit file: section -> key -> values (see `parse_unit`).
Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Section -> key -> every value assigned to it, in order, as systemd reads a unit:
    `#` and `;` lines are comments, a line ending in a backslash goes on on the next one,
    and a key may be assigned more than once (ExecReload=, SystemCallFilter=). An empty
    assignment (`CapabilityBoundingSet=`) is kept as "", since it means "none"."""
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment before any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def one(unit: Unit, section: str, key: str) -> str:
    """The single value of `key`; a second assignment would be a surprise worth a failure."""
    values = unit[section].get(key)
    assert values is not None, f"{key}= is missing from [{section}]"
    assert len(values) == 1, f"{key}= is set {len(values)} times: {values}"
    return values[0]


def seconds(span: str) -> float:
    """A systemd time span such as `10s`, `1min 30s` or a bare `10` (seconds)."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts, f"not a time span: {span!r}"
    return sum(float(number) * units[unit or "s"] for number, unit in parts)


def comment_setting(key: str) -> dict:
    """The YAML config snippet that a comment in the unit gives, such as
    `#   store: {path: /var/lib/ircish/ircish.db}`, loaded as YAML."""
    found = re.findall(rf"^#\s+({key}: \{{.*\}})\s*$", UNIT.read_text(encoding="utf-8"), re.M)
    assert len(found) == 1, f"the unit should show one `{key}: {{...}}` line, found {found}"
    return yaml.safe_load(found[0])[key]


# --- what the server is told to do --------------------------------------------------------


def test_exec_start_runs_ircish_server_on_the_etc_config(unit: Unit) -> None:
    argv = shlex.split(one(unit, "Service", "ExecStart"))
    assert PurePosixPath(argv[0]).name == "ircish-server"
    assert PurePosixPath(argv[0]).is_absolute(), "which ircish-server runs is not left to PATH"
    assert argv[1:] == ["-c", CONFIG]
    # The server says READY=1 once it listens (ircish/cli.py notify_systemd).
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"


def test_config_is_checked_before_start_with_the_same_binary_and_file(unit: Unit) -> None:
    server = shlex.split(one(unit, "Service", "ExecStart"))[0]
    assert shlex.split(one(unit, "Service", "ExecStartPre")) == [
        server,
        "check-config",
        "-c",
        CONFIG,
    ]


def test_reload_sends_sighup_to_the_main_process(unit: Unit) -> None:
    reload = [shlex.split(command) for command in unit["Service"]["ExecReload"]]
    # Last: anything before it (the config check) must pass for the signal to be sent.
    kill = reload[-1]
    assert PurePosixPath(kill[0]).name == "kill"
    assert kill[1:] == ["-HUP", "$MAINPID"]
    for check in reload[:-1]:
        assert check[1:] == ["check-config", "-c", CONFIG]


def test_stop_is_sigterm_with_time_for_the_servers_own_grace(unit: Unit) -> None:
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    grace = inspect.signature(Server.shutdown).parameters["timeout"].default
    stop = seconds(one(unit, "Service", "TimeoutStopSec"))
    # Clients get `grace` seconds, then a forced close and the store's last flush; a
    # SIGKILL before that loses the history still queued.
    assert grace + 3 <= stop <= 60, (grace, stop)
    assert one(unit, "Service", "Restart") == "on-failure"


def test_unit_starts_after_the_network_and_installs_into_multi_user(unit: Unit) -> None:
    assert one(unit, "Unit", "After") == "network-online.target"
    assert one(unit, "Unit", "Wants") == "network-online.target"
    assert one(unit, "Unit", "Description")
    assert one(unit, "Unit", "Documentation")
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


# --- where it keeps things ----------------------------------------------------------------


def test_state_directory_holds_the_store_path_the_comment_gives(unit: Unit) -> None:
    assert one(unit, "Service", "StateDirectory") == "ircish"
    state = PurePosixPath("/var/lib") / one(unit, "Service", "StateDirectory")
    store = PurePosixPath(comment_setting("store")["path"])
    assert store.parent == state
    # The snippet names real config keys, so pasting it into config.yaml works.
    assert "store" in {f.name for f in dataclasses.fields(Config)}
    assert "path" in {f.name for f in dataclasses.fields(StoreConfig)}
    # Relative paths in the config land in the one writable place too.
    assert one(unit, "Service", "WorkingDirectory") == str(state)


def test_logs_directory_holds_the_log_file_the_comment_gives(unit: Unit) -> None:
    logs = PurePosixPath("/var/log") / one(unit, "Service", "LogsDirectory")
    assert PurePosixPath(comment_setting("log")["file"]).parent == logs
    assert one(unit, "Service", "ConfigurationDirectory") == "ircish"
    assert PurePosixPath(CONFIG).parent == PurePosixPath("/etc/ircish")


def test_limits_leave_room_for_the_default_max_clients(unit: Unit) -> None:
    # Every client is a descriptor and a thread, plus ~32 of the server's own
    # (ircish.cli.check_os_limits).
    needed = Limits().max_clients + 32
    assert int(one(unit, "Service", "LimitNOFILE")) >= needed
    tasks = one(unit, "Service", "TasksMax")
    assert tasks == "infinity" or int(tasks) >= needed


# --- the sandbox --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
    ],
)
def test_sandbox_setting(unit: Unit, key: str, value: str) -> None:
    assert one(unit, "Service", key) == value


def test_system_calls_are_limited_to_a_services(unit: Unit) -> None:
    filters = unit["Service"]["SystemCallFilter"]
    # The first assignment is the allow list; later `~...` ones only take away from it.
    assert filters[0] == "@system-service"
    assert all(f.startswith("~") for f in filters[1:]), filters


def test_no_capabilities_unless_the_admin_uncomments_them(unit: Unit) -> None:
    assert one(unit, "Service", "CapabilityBoundingSet") == ""
    assert one(unit, "Service", "AmbientCapabilities") == ""
    active = [v for keys in unit.values() for values in keys.values() for v in values]
    assert not [v for v in active if "CAP_NET_BIND_SERVICE" in v]
    # ...while the lines to uncomment for a port below 1024 are there.
    text = UNIT.read_text(encoding="utf-8")
    assert "#AmbientCapabilities=CAP_NET_BIND_SERVICE" in text
    assert "#CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in text


def test_parse_unit_reads_systemd_syntax() -> None:
    text = "# c\n[A]\n; c\nK=1\nK=\nL=a \\\n  b\n[B]\nK = x=y\n"
    assert parse_unit(text) == {"A": {"K": ["1", ""], "L": ["a b"]}, "B": {"K": ["x=y"]}}


# --- what systemd says --------------------------------------------------------------------


@pytest.fixture
def analyzable_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose commands point at an executable that exists here, since
    `systemd-analyze verify` checks that ExecStart= and friends can be run."""
    if ANALYZE is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    stand_in = tmp_path / "ircish-server"
    stand_in.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stand_in.chmod(0o755)
    text = UNIT.read_text(encoding="utf-8")
    assert text.count("/usr/local/bin/ircish-server") >= 2
    copy = tmp_path / "ircish.service"
    copy.write_text(text.replace("/usr/local/bin/ircish-server", str(stand_in)), encoding="utf-8")
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANALYZE, *args],
        capture_output=True,
        text=True,
        timeout=ANALYZE_TIMEOUT,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "cat"},
    )


def verify(unit_file: Path) -> tuple[int, list[str]]:
    """Run `systemd-analyze verify` on `unit_file`; its exit status and the lines of its
    output about that unit (it may also talk about the host's own units)."""
    result = analyze("verify", "--man=no", "--generators=no", str(unit_file))
    output = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in output if unit_file.name in line]


def test_systemd_analyze_verify_accepts_the_unit(analyzable_unit: Path) -> None:
    status, about_unit = verify(analyzable_unit)
    assert about_unit == []
    assert status == 0


def test_systemd_analyze_verify_would_report_a_mistake(analyzable_unit: Path) -> None:
    # verify exits 0 even on an unknown key: only its output shows the mistake, so
    # check that the filter above would see one.
    text = analyzable_unit.read_text(encoding="utf-8")
    analyzable_unit.write_text(text.replace("ProtectClock=", "ProtectClok="), encoding="utf-8")
    _, about_unit = verify(analyzable_unit)
    assert any("ProtectClok" in line for line in about_unit), about_unit


def test_systemd_analyze_security_rates_the_unit_well(analyzable_unit: Path) -> None:
    result = analyze("security", "--offline=yes", "--no-pager", str(analyzable_unit))
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"this systemd-analyze cannot rate a unit file offline: {result.stderr}")
    assert result.returncode == 0, result.stderr
    score = re.search(r"Overall exposure level for ircish\.service: ([\d.]+)", result.stdout)
    assert score, result.stdout[-500:]
    # 0 is best, 10 worst. With systemd 252 the unit scores 1.2, and 3.0 with the
    # capabilities back; the tests above guard each setting, this one systemd's overall
    # view, with room for newer versions that weigh more settings.
    assert float(score[1]) <= 2.0, result.stdout
