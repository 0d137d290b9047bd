"""Run the benchmark matrix against ircish, ngircd and miniircd and print one table.

    python bench/run.py                 # full matrix, all servers (~9 min on 2 cores)
    python bench/run.py --quick         # smaller and shorter (~1.5 min), for a smoke check
    python bench/run.py --servers ircish --only fanout200
    python bench/run.py --servers ircish,ircish-store --only fanout200,dm200,rooms200
    python bench/run.py --servers ircish,ircish-store,ircish-accounts --only fanout200,dm200
    python bench/run.py --servers ircish,ircish-metrics --only fanout200,dm200
    python bench/run.py --servers ircish,ircish-ws --only fanout200,dm200
    python bench/run.py --servers ircish,ircish-cluster1,ircish-cluster3 --only fanout200,dm200
    python bench/run.py --record        # also rewrite bench/RESULTS.md with this run

ircish runs twice where the history store matters (the scenarios with `store`): `ircish`
with history off and `ircish-store` with the store on disk (issue 13), same run; where
accounts matter (`accounts`) also `ircish-accounts`: `ircish-store` with every client
logged in to an account of its own (issue 14), so a private message is a stored row;
where metrics matter (`metrics`) also `ircish-metrics`: `ircish` with the metrics
endpoint on, so every command is timed, scraped once a second by the harness during the
run (issue 15); a failed scrape fails the run; where the transport matters (`websocket`)
also `ircish-ws`: `ircish` with every client speaking IRC over WebSocket (issue 16);
where the cluster matters (`cluster`) also `ircish-cluster1` and `ircish-cluster3`:
`ircish` as one node, or three, of a network through a Redis the harness starts (issue
17), the clients spread over the nodes.

Every run of a scenario gets a fresh server on its own free port (so CPU, RSS and room
state start clean), and the servers take turns scenario by scenario. Results go to
bench/results/<stamp>.jsonl (one line per run, plus a header with the machine) and
bench/results/latest.md (the table, the targets of issue 4 and the machine).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import scenarios  # noqa: E402
import servers  # noqa: E402

RESULTS_DIR = BENCH / "results"


@dataclass
class Scenario:
    name: str
    title: str
    run: Callable[..., dict[str, Any]]
    params: dict[str, Any]
    #: The table's rows: (result key, label, "up"/"down"/"" = which way is better).
    rows: list[tuple[str, str, str]]
    repeats: int = 1
    #: The key that picks the median run when repeated.
    median_key: str | None = None
    #: Clients the scenario holds at once (a server with fewer is marked n/a).
    clients: int = 0
    #: The number shown in the progress lines.
    headline: str = ""
    #: Run it on `ircish-store` too (ircish with its history store on disk).
    store: bool = False
    #: Run it on `ircish-accounts` too (ircish-store with every client logged in).
    accounts: bool = False
    #: Run it on `ircish-metrics` too (ircish with the metrics endpoint, scraped).
    metrics: bool = False
    #: Run it on `ircish-ws` too (ircish with every client over WebSocket).
    websocket: bool = False
    #: Run it on `ircish-cluster1` and `ircish-cluster3` too (ircish as nodes of a network).
    cluster: bool = False

    def runs_on(self, kind: str) -> bool:
        if kind == "ircish-store":
            return self.store
        if kind == "ircish-accounts":
            return self.accounts
        if kind == "ircish-metrics":
            return self.metrics
        if kind == "ircish-ws":
            return self.websocket
        if kind in servers.CLUSTER_KINDS:
            return self.cluster
        return True


FANOUT_ROWS = [
    ("deliveries_per_s", "deliveries/s", "up"),
    ("p50_ms", "latency p50 ms", "down"),
    ("p99_ms", "latency p99 ms", "down"),
    ("lost", "lost", "down"),
    ("server_us_per_delivery", "server CPU µs/delivery", "down"),
    ("server_cpu_cores", "server CPU cores", ""),
    ("gen_cpu_cores", "generator CPU cores", ""),
]
FIXED_ROWS = [
    ("target_deliveries_per_s", "offered deliveries/s", ""),
    ("deliveries_per_s", "deliveries/s", "up"),
    ("keeps_up", "keeps up", ""),
    ("drain_s", "drain after stop s", "down"),
    ("p50_ms", "latency p50 ms", "down"),
    ("p99_ms", "latency p99 ms", "down"),
    ("lost", "lost", "down"),
    ("server_cpu_cores", "server CPU cores", ""),
    ("gen_cpu_cores", "generator CPU cores", ""),
]
DM_ROWS = [
    ("msgs_per_s", "messages/s", "up"),
    ("p50_ms", "latency p50 ms", "down"),
    ("p99_ms", "latency p99 ms", "down"),
    ("lost", "lost", "down"),
    ("server_us_per_msg", "server CPU µs/message", "down"),
    ("server_cpu_cores", "server CPU cores", ""),
    ("gen_cpu_cores", "generator CPU cores", ""),
]
#: The mixed rows: how many clients got the caps (0 on a peer without them), then the
#: plain rows, then the echoes (echo-message) that came back to the capped senders.
CAPS_HEAD = [("capped", "clients with caps", "")]
#: The history store's rows (ircish-store only): the PRIVMSG rows in its SQLite file,
#: counted while the clients are still in their rooms, against the messages sent in the
#: whole run (warm-up included; each one is one row).
STORE_ROWS = [
    ("sent", "messages sent (warm-up included)", ""),
    ("stored", "history rows stored (PRIVMSG)", ""),
    ("not_stored", "sent but not stored", "down"),
    ("store_rows_per_s", "rows stored/s in the window", "up"),
    ("unstored_at_stop", "sent but not stored when sending stopped", "down"),
    ("store_catchup_s", "all stored, s after sending stopped", "down"),
    ("writer_behind", '"history writer behind" log lines', "down"),
]
#: dm200: a private message is stored only between two accounts (ircish-accounts, issue
#: 14); on ircish-store the row count must be 0 and the other rows are empty.
DM_STORE_ROWS = [
    ("stored", "history rows stored (PRIVMSG; DMs only between accounts)", ""),
    *STORE_ROWS[2:],
]
#: Clients logged in to their accounts (ircish-accounts): the ones that got 900.
ACCOUNT_ROWS = [("logged_in", "clients logged in (got 900)", "")]
#: The harness's scrapes of /metrics (ircish-metrics), all answered 200 in time or the
#: run is an error, and the PRIVMSG count of the command-time histogram at the end.
METRICS_ROWS = [
    ("scrapes", f"metrics scrapes (every {servers.SCRAPE_INTERVAL:g} s)", ""),
    ("scrape_max_ms", "slowest scrape ms", "down"),
    ("privmsg_timed", "PRIVMSG timed (histogram count)", ""),
]
#: A cluster kind's Redis (issue 17), measured apart from the server's CPU (the nodes'
#: sum): per message, one XADD by the sender's node and one read by each node's bus.
CLUSTER_ROWS = [
    ("redis_cpu_cores", "Redis CPU cores (not in server CPU)", ""),
    ("redis_us_per_msg", "Redis CPU µs/message", "down"),
    ("redis_xread_per_msg", "Redis XREADs/message (all nodes)", ""),
    ("node_cpu_cores", "server CPU cores of each node", ""),
    ("cluster_refused", 'commands refused ("cannot reach Redis" log lines)', "down"),
    ("cluster_pool_full", 'log lines naming redis-py\'s "Too many connections"', "down"),
    ("cluster_late", 'commands late ("not applied within" log lines)', "down"),
]
ECHO_ROWS = [
    ("echo_lost", "echoes lost", "down"),
    ("echo_p50_ms", "echo latency p50 ms", "down"),
    ("echo_p99_ms", "echo latency p99 ms", "down"),
]
IDLE_ROWS = [
    ("ready", "clients joined", "up"),
    ("setup_s", "setup s (first connect to last 366)", "down"),
    ("join_p99_ms", "connect-to-366 p99 ms", "down"),
    ("rss_per_conn_kb", "server RSS kB/connection", "down"),
    ("ping_answered", "PONGs within 10 s", "up"),
    ("pong_max_ms", "slowest PONG ms", "down"),
    ("server_threads", "server threads", ""),
]
CHURN_ROWS = [
    ("cycles_per_s", "cycles/s", "up"),
    ("failed", "failed cycles", "down"),
    ("cycle_p99_ms", "cycle p99 ms", "down"),
    ("listen_overflows", "listen overflows (system-wide)", "down"),
]


def matrix(quick: bool) -> list[Scenario]:
    short = {"warmup": 1.0, "measure": 2.0} if quick else {"warmup": 1.0, "measure": 4.0}
    mix = {"caps_fraction": 0.5, "caps": scenarios.MIX_CAPS}
    return [
        Scenario(
            "fanout200",
            "fanout, 200 members, 10 senders, max rate (window 16 per sender)",
            scenarios.fanout,
            {"members": 200, "senders": 10, "mode": "max", "window": 16, **short},
            FANOUT_ROWS + ACCOUNT_ROWS + METRICS_ROWS + CLUSTER_ROWS + STORE_ROWS,
            repeats=1 if quick else 3,
            median_key="deliveries_per_s",
            clients=200,
            store=True,
            accounts=True,
            metrics=True,
            websocket=True,
            cluster=True,
        ),
        Scenario(
            "fanout200caps",
            "fanout200 with 100 of the 200 members (5 of the 10 senders) asking for "
            f"`{scenarios.MIX_CAPS}`; peers without these caps run it without them",
            scenarios.fanout,
            {"members": 200, "senders": 10, "mode": "max", "window": 16, **short, **mix},
            CAPS_HEAD + FANOUT_ROWS + ECHO_ROWS,
            repeats=1 if quick else 3,
            median_key="deliveries_per_s",
            clients=200,
        ),
        Scenario(
            "fanout1000",
            "fanout, 1000 members, 10 senders, 300 msg/s fixed",
            scenarios.fanout,
            {
                "members": 1000,
                "senders": 10,
                "mode": "fixed",
                "rate": 300.0,
                "warmup": 1.0,
                "measure": 3.0 if quick else 5.0,
                "sample_every": 10,
            },
            FIXED_ROWS,
            repeats=1 if quick else 3,
            median_key="p99_ms",
            clients=1000,
            headline="p99_ms",
        ),
        Scenario(
            "dm200",
            "dm, 200 pairs, max rate (window 8 per direction)",
            scenarios.dm,
            {"pairs": 200, "window": 8, **short},
            [
                *DM_ROWS,
                *ACCOUNT_ROWS,
                ("sent", "messages sent (warm-up included)", ""),
                *METRICS_ROWS,
                *CLUSTER_ROWS,
                *DM_STORE_ROWS,
            ],
            repeats=1 if quick else 3,
            median_key="msgs_per_s",
            clients=400,
            store=True,
            accounts=True,
            metrics=True,
            websocket=True,
            cluster=True,
        ),
        Scenario(
            "dm200caps",
            f"dm200 with one side of every pair asking for `{scenarios.MIX_CAPS}`; "
            "peers without these caps run it without them",
            scenarios.dm,
            {"pairs": 200, "window": 8, **short, **mix},
            CAPS_HEAD + DM_ROWS + ECHO_ROWS,
            repeats=1 if quick else 3,
            median_key="msgs_per_s",
            clients=400,
        ),
        Scenario(
            "rooms200",
            "dm200 in 200 rooms of two: each pair shares a room and both sides send to it "
            "at max rate (window 8 per direction), so every message is a stored history line",
            scenarios.dm,
            {"pairs": 200, "window": 8, "in_rooms": True, **short},
            DM_ROWS + STORE_ROWS,
            repeats=1 if quick else 3,
            median_key="msgs_per_s",
            clients=400,
            store=True,
        ),
        Scenario(
            "idle10000" if not quick else "idle2000",
            f"idle, {2000 if quick else 10000} clients in rooms of 100, then PING all",
            scenarios.idle,
            {"clients": 2000 if quick else 10000},
            IDLE_ROWS,
            clients=2000 if quick else 10000,
            headline="setup_s",
        ),
        Scenario(
            "churn2000" if not quick else "churn500",
            f"churn, {500 if quick else 2000} connect/register/join/quit cycles, 50 at once",
            scenarios.churn,
            {"cycles": 500 if quick else 2000, "concurrency": 50},
            CHURN_ROWS,
            clients=50,
        ),
    ]


# --- machine and environment ---------------------------------------------------------------


def machine_info(rev: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    git = ["git", "-C", str(servers.REPO)]
    info["ircish_commit"] = _run([*git, "rev-parse", "--short", rev or "HEAD"])
    if rev is None:  # the work tree as it is, maybe with someone's edits in progress
        info["ircish_dirty"] = bool(_run([*git, "status", "--porcelain", "ircish", "commands"]))
    info["ngircd"] = (_run([servers.NGIRCD, "--version"]) or "").splitlines()[:1]
    info["miniircd"] = _run([sys.executable, "-m", "miniircd", "--version"])
    return info


def _run(command: list[str]) -> str | None:
    try:
        return (
            subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def wait_for_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (bounded) until the machine is nearly idle; return the busy cores last seen.

    The cores are shared with whatever else runs here; a run that starts on a busy
    machine measures that other job too.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy0 = scenarios.machine_busy()[0]
        time.sleep(0.5)
        busy1 = scenarios.machine_busy()[0]
        cores = (busy1 - busy0) / 0.5
        if cores < threshold or time.monotonic() > deadline:
            return round(cores, 2)


# --- running ---------------------------------------------------------------------------------


def run_one(kind: str, scenario: Scenario, rep: int, args: argparse.Namespace) -> dict[str, Any]:
    """One scenario against a fresh `kind` server; never raises."""
    record: dict[str, Any] = {"scenario": scenario.name, "server": kind, "rep": rep}
    if scenario.clients > servers.MAX_CLIENTS[kind]:
        record["na"] = f"{kind} cannot hold {scenario.clients} clients (select() limit)"
        return record
    record["background_cores"] = wait_for_quiet(args.quiet_wait)
    workdir = Path(tempfile.mkdtemp(prefix=f"ircish-bench-{kind}-"))
    started = time.monotonic()
    server = None
    scraper = None
    tag = f"{scenario.name[0]}{rep}{kind[0]}"
    try:
        server = servers.start_server(
            kind,
            servers.free_port(),
            workdir,
            sender_threads=args.sender_threads,
            ircish_dir=args.ircish_dir,
            # ircish-accounts: an account per client, named as the scenario names them.
            accounts=scenarios.nicks(tag, scenario.clients)
            if kind in servers.ACCOUNT_KINDS
            else None,
        )
        record["backlog"] = server.backlog
        if server.metrics_port is not None:
            # ircish-metrics: scraped from start to stop, setup and drain included.
            scraper = servers.MetricsScraper(server.metrics_port)
            scraper.start()
        record.update(
            scenario.run(server, tag, workers=args.workers, **scenario.params),
        )
        if scraper is not None:
            record["privmsg_timed"] = scraper.finish()  # ScrapeFailed if any scrape failed
            if record.get("sent") and not record.get("privmsg_timed"):
                raise RuntimeError("metrics on, but the server timed no PRIVMSG")
    except Exception as exc:  # a harness or server failure is a result, not a crash
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if scraper is not None:
            scraper.close()  # before the server stops: a scrape then would fail
            record["scrapes"] = scraper.scrapes
            if scraper.scrapes:
                record["scrape_max_ms"] = round(scraper.slowest_s * 1000, 1)
        if server is not None:
            record["server_cpu_total_s"] = round(server.cpu_seconds(), 2)
            if server.redis is not None:  # before it stops
                record["redis_cpu_total_s"] = round(sum(server.redis.cpu_times()), 2)
            stop_started = time.monotonic()
            code = server.stop(timeout=args.stop_timeout)
            record["stop_s"] = round(time.monotonic() - stop_started, 2)
            record["stop_code"] = code
            if server.store_path is not None:
                # A history line that found the writer's queue full was not stored.
                record["writer_behind"] = server.log_count(servers.WRITER_BEHIND)
            if server.redis is not None:
                # Commands the nodes could not order (each a message lost), or ran late;
                # counted after the stop, so QUITs of the clients leaving are in.
                for name, text in servers.CLUSTER_LOG.items():
                    record[name] = server.log_count(text)
                # Every warning of the cluster code (not the start-up ones every node logs).
                record["cluster_warnings"] = sum(
                    server.log_count(f" {level} ircish.cluster") for level in ("WARNING", "ERROR")
                )
            if (
                record.get("error")
                or not record.get("server_alive", True)
                or record.get("cluster_warnings")
            ):
                record["server_log_tail"] = server.log_tail(8)
        if record.get("error"):
            record["workdir"] = str(workdir)  # kept: config and server log
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    record["wall_s"] = round(time.monotonic() - started, 1)
    return record


def pick(runs: list[dict[str, Any]], scenario: Scenario) -> dict[str, Any]:
    if len(runs) == 1 or not scenario.median_key:
        return runs[0]
    return scenarios.median_run(runs, scenario.median_key)


# --- the table -------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) < 1:
            return f"{value:.2g}" if value else "0"
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):  # one value per node of a cluster kind
        return " / ".join(fmt(v) for v in value)
    return str(value)


def ratio(ours: Any, theirs: Any) -> str:
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return ""
    if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)):
        return ""
    if theirs == 0:
        return "" if ours == 0 else "∞"
    return f"{ours / theirs:.2f}x"


def cell(result: dict[str, Any] | None, key: str) -> Any:
    if result is None:
        return None
    if "na" in result:
        return "n/a"
    if "error" in result and key not in result:
        return "error"
    return result.get(key)


#: The feature columns after the peers': each ircish kind over the one it adds a feature
#: to, both from the same run (store, accounts, metrics, WebSocket, cluster: issues 13-17).
FEATURE_RATIOS = [
    ("ircish-store", "ircish"),
    ("ircish-accounts", "ircish-store"),
    ("ircish-metrics", "ircish"),
    ("ircish-ws", "ircish"),
    ("ircish-cluster1", "ircish"),
    ("ircish-cluster3", "ircish"),
]


def table(
    chosen: dict[str, dict[str, dict[str, Any]]], plan: list[Scenario], kinds: list[str]
) -> str:
    peers = [k for k in kinds if k not in servers.IRCISH_KINDS]
    features = [(on, off) for on, off in FEATURE_RATIOS if on in kinds and off in kinds]
    head = ["scenario", "metric", *kinds]
    if "ircish" in kinds:
        head += [f"ircish/{peer}" for peer in peers]
    head += [f"{on}/{off}" for on, off in features]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario in plan:
        results = chosen.get(scenario.name, {})
        for n, (key, label, better) in enumerate(scenario.rows):
            arrow = {"up": " ↑", "down": " ↓"}.get(better, "")
            row = [scenario.name if n == 0 else "", label + arrow]
            values = {kind: cell(results.get(kind), key) for kind in kinds}
            row += [fmt(values[kind]) for kind in kinds]
            if "ircish" in kinds:
                # Ratios only where one way is better; a thread count ratio means nothing.
                row += [ratio(values["ircish"], values[peer]) if better else "" for peer in peers]
            row += [ratio(values[on], values[off]) if better else "" for on, off in features]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def targets(
    chosen: dict[str, dict[str, dict[str, Any]]], plan: list[Scenario]
) -> list[tuple[str, str, str]]:
    """Issue 4's targets, each as (target, PASS/FAIL/?, the numbers behind it)."""

    def get(scenario: str, kind: str, key: str) -> Any:
        return chosen.get(scenario, {}).get(kind, {}).get(key)

    out: list[tuple[str, str, str]] = []

    def check(scenario: str, peer: str, name: str, ok: bool | None, detail: str) -> None:
        """Record one target, unless this run left out the scenario or the peer."""
        if all(kind in chosen.get(scenario, {}) for kind in ("ircish", peer)):
            out.append((name, "?" if ok is None else ("PASS" if ok else "FAIL"), detail))

    ours = get("fanout200", "ircish", "deliveries_per_s")
    theirs = get("fanout200", "miniircd", "deliveries_per_s")
    lost = get("fanout200", "ircish", "lost")
    check(
        "fanout200",
        "miniircd",
        "fanout 200/10 max: deliveries/s >= 1.0x miniircd, 0 lost",
        None if ours is None or theirs is None else (ours >= theirs and lost == 0),
        f"{fmt(ours)} vs {fmt(theirs)} ({ratio(ours, theirs)}), lost {fmt(lost)}",
    )
    keeps = get("fanout1000", "ircish", "keeps_up")
    p99 = get("fanout1000", "ircish", "p99_ms")
    ng99 = get("fanout1000", "ngircd", "p99_ms")
    lost = get("fanout1000", "ircish", "lost")
    check(
        "fanout1000",
        "ngircd",
        "fanout 1000/10 at 300 msg/s: keeps up, p99 <= 2x ngircd, 0 lost",
        None if p99 is None or ng99 is None else bool(keeps and p99 <= 2 * ng99 and lost == 0),
        f"keeps up {fmt(keeps)}, p99 {fmt(p99)} ms vs ngircd {fmt(ng99)} ms "
        f"({ratio(p99, ng99)}), lost {fmt(lost)}",
    )
    ours = get("dm200", "ircish", "msgs_per_s")
    theirs = get("dm200", "miniircd", "msgs_per_s")
    check(
        "dm200",
        "miniircd",
        "dm 200 pairs max: messages/s >= 1.0x miniircd",
        None if ours is None or theirs is None else ours >= theirs,
        f"{fmt(ours)} vs {fmt(theirs)} ({ratio(ours, theirs)})",
    )
    idle = next((name for name in chosen if name.startswith("idle")), None)
    if idle:
        ready = get(idle, "ircish", "ready")
        setup = get(idle, "ircish", "setup_s")
        ng_setup = get(idle, "ngircd", "setup_s")
        ponged = get(idle, "ircish", "all_ponged")
        rss = get(idle, "ircish", "rss_per_conn_kb")
        wanted = next(s.params["clients"] for s in plan if s.name == idle)
        check(
            idle,
            "ngircd",
            f"{idle}: all joined no slower than ngircd, all PONG within 10 s, RSS <= 40 kB/conn",
            None
            if setup is None or ng_setup is None or rss is None
            else bool(ready == wanted and setup <= ng_setup and ponged and rss <= 40),
            f"joined {fmt(ready)}/{wanted} in {fmt(setup)} s vs ngircd {fmt(ng_setup)} s, "
            f"all PONG in 10 s {fmt(ponged)}, RSS {fmt(rss)} kB/conn",
        )
    return out


#: Each mixed scenario, the plain one it copies, and the throughput key they share.
MIXED_PAIRS = [
    ("fanout200caps", "fanout200", "deliveries_per_s"),
    ("dm200caps", "dm200", "msgs_per_s"),
]


def mixed_vs_plain(chosen: dict[str, dict[str, dict[str, Any]]], kinds: list[str]) -> list[str]:
    """One line per mixed scenario run with its plain one: each server's mixed/plain ratio."""
    lines = []
    for mixed, plain, key in MIXED_PAIRS:
        cells = []
        for kind in kinds:
            ours = chosen.get(mixed, {}).get(kind, {}).get(key)
            base = chosen.get(plain, {}).get(kind, {}).get(key)
            if isinstance(ours, (int, float)) and isinstance(base, (int, float)) and base:
                capped = chosen[mixed][kind].get("capped")
                cells.append(f"{kind} {ratio(ours, base)} ({fmt(capped)} clients with caps)")
        if cells:
            lines.append(f"- {mixed} / {plain} {key.replace('_per_s', '/s')}: " + ", ".join(cells))
    return lines


def store_vs_off(
    chosen: dict[str, dict[str, dict[str, Any]]],
    plan: list[Scenario],
    runs: dict[str, dict[str, list[dict[str, Any]]]],
) -> list[str]:
    """One line per scenario run on both `ircish` and `ircish-store`: the store's cost in
    throughput (issue 13: within 10% for fanout200 and dm200) and whether its writer kept
    up (every message sent stored, no line dropped in any run)."""
    lines = []
    for scenario in plan:
        off = chosen.get(scenario.name, {}).get("ircish", {})
        on = chosen.get(scenario.name, {}).get("ircish-store", {})
        key = scenario.median_key or ""
        if not scenario.store or not isinstance(on.get(key), (int, float)):
            continue
        text = f"- {scenario.name} {key.replace('_per_s', '/s')}: "
        if isinstance(off.get(key), (int, float)) and off[key]:
            share = on[key] / off[key]
            verdict = "PASS" if share >= 0.9 else "FAIL"
            text += f"ircish-store/ircish {ratio(on[key], off[key])} (within 10%: {verdict})"
        else:
            text += "no store-off run to compare with"
        if on.get("rows_expected"):
            text += (
                f"; stored {fmt(on.get('stored'))} of {fmt(on['rows_expected'])} sent "
                f"({on['stored_share']:.1%}), the writer {fmt(on.get('store_rows_per_s'))} "
                f"rows/s in the window ({fmt(on.get('msgs_per_s'))} messages/s), "
                f"{fmt(on.get('unstored_at_stop'))} not stored when sending stopped, "
                + (
                    f"all stored {fmt(on['store_catchup_s'])} s after"
                    if on.get("store_catchup_s") is not None
                    else "never all stored"
                )
            )
        elif "stored" in on:
            text += f"; {fmt(on['stored'])} history rows stored (private messages are not)"
        every = runs.get(scenario.name, {}).get("ircish-store", [on])
        behind = [r.get("writer_behind") for r in every]
        missing = [r.get("not_stored") for r in every if r.get("not_stored")]
        text += (
            f'; {fmt(sum(b or 0 for b in behind))} "history writer behind" log lines in '
            f"{len(every)} run{'s' if len(every) != 1 else ''}"
        )
        if missing:
            text += f", rows missing in {len(missing)} of them ({fmt(sum(missing))} in all)"
        lines.append(text)
    return lines


def accounts_vs_off(
    chosen: dict[str, dict[str, dict[str, Any]]],
    plan: list[Scenario],
    runs: dict[str, dict[str, list[dict[str, Any]]]],
) -> list[str]:
    """One line per scenario run on `ircish-accounts`: its throughput over ircish-store's
    (the accounts' cost: same store, same load, only the logins differ) and over
    ircish's, every run's value of each (the spread is the run-to-run noise), how many
    clients logged in (900) in each run, and what the store kept."""
    lines = []
    for scenario in plan:
        per = chosen.get(scenario.name, {})
        on = per.get("ircish-accounts", {})
        key = scenario.median_key or ""
        if not scenario.accounts or "ircish-accounts" not in per:
            continue
        label = key.replace("_per_s", "/s")
        text = f"- {scenario.name} {label}: "
        ratios = []
        for base in ("ircish-store", "ircish"):
            theirs = per.get(base, {}).get(key)
            if isinstance(on.get(key), (int, float)) and isinstance(theirs, (int, float)):
                ratios.append(f"ircish-accounts/{base} {ratio(on[key], theirs)}")
        text += ", ".join(ratios) or "nothing to compare"
        spread = []
        for kind in ("ircish-accounts", "ircish-store", "ircish"):
            values = [r.get(key) for r in runs.get(scenario.name, {}).get(kind, [])]
            if values:
                spread.append(f"{kind} {' / '.join(fmt(v) for v in values)}")
        if spread:
            text += f" (every run: {'; '.join(spread)})"
        every = runs.get(scenario.name, {}).get("ircish-accounts", [on])
        logins = [f"{fmt(r.get('logged_in'))}/{scenario.clients}" for r in every]
        text += f"; logged in (900) {', '.join(logins)} in {len(every)} run"
        text += "s" if len(every) != 1 else ""
        if on.get("rows_expected"):
            text += (
                f"; stored {fmt(on.get('stored'))} of {fmt(on['rows_expected'])} sent "
                f"({on['stored_share']:.1%}), the writer {fmt(on.get('store_rows_per_s'))} "
                f"rows/s in the window, "
                + (
                    f"all stored {fmt(on['store_catchup_s'])} s after sending stopped"
                    if on.get("store_catchup_s") is not None
                    else "never all stored"
                )
            )
        behind = sum(r.get("writer_behind") or 0 for r in every)
        missing = sum(r.get("not_stored") or 0 for r in every)
        text += f'; {fmt(behind)} "history writer behind" log lines, {fmt(missing)} rows missing'
        if on.get("login_sample"):
            text += f"; a 900: `{on['login_sample']}`"
        lines.append(text)
    return lines


def versus(
    scenario: Scenario,
    per: dict[str, dict[str, Any]],
    every: dict[str, list[dict[str, Any]]],
    on_kind: str,
    off_kind: str,
) -> str:
    """The start of a feature's line: `on_kind`'s throughput over `off_kind`'s (the run
    each shows in the table), every run's value of each (with 2+ runs each, whether their
    ranges overlap: the noise), and the ratio of their server CPU per message."""
    on, off = per.get(on_kind, {}), per.get(off_kind, {})
    key = scenario.median_key or ""
    text = f"- {scenario.name} {key.replace('_per_s', '/s')}: "
    text += f"{on_kind}/{off_kind} {ratio(on.get(key), off.get(key)) or '?'}"
    on_values = [r.get(key) for r in every.get(on_kind, [on])]
    off_values = [r.get(key) for r in every.get(off_kind, [off])]
    text += (
        f" (every run: {on_kind} {' / '.join(fmt(v) for v in on_values)}; "
        f"{off_kind} {' / '.join(fmt(v) for v in off_values)}"
    )
    on_runs = [v for v in on_values if isinstance(v, (int, float))]
    off_runs = [v for v in off_values if isinstance(v, (int, float))]
    if len(on_runs) >= 2 and len(off_runs) >= 2:
        overlap = min(on_runs) <= max(off_runs) and min(off_runs) <= max(on_runs)
        text += f"; ranges overlap: {'yes' if overlap else 'NO'}"
    text += ")"
    for cpu, label, _ in scenario.rows:
        if cpu.startswith("server_us_per_") and ratio(on.get(cpu), off.get(cpu)):
            text += f"; {label} {on_kind}/{off_kind} {ratio(on.get(cpu), off.get(cpu))}"
    return text


def metrics_vs_off(
    chosen: dict[str, dict[str, dict[str, Any]]],
    plan: list[Scenario],
    runs: dict[str, dict[str, list[dict[str, Any]]]],
) -> list[str]:
    """One line per scenario run on both `ircish` and `ircish-metrics`: the metrics' cost
    (issue 15: "within noise of metrics off") in throughput and in server CPU per message,
    every run's throughput on each (with 2+ runs each, whether their ranges overlap: the
    noise), and the scrapes of every run."""
    lines = []
    for scenario in plan:
        per = chosen.get(scenario.name, {})
        on = per.get("ircish-metrics", {})
        if not scenario.metrics or "ircish-metrics" not in per or "ircish" not in per:
            continue
        text = versus(scenario, per, runs.get(scenario.name, {}), "ircish-metrics", "ircish")
        every = runs.get(scenario.name, {}).get("ircish-metrics", [on])
        scrapes = [r.get("scrapes") for r in every]
        slowest = [r.get("scrape_max_ms") for r in every if r.get("scrape_max_ms") is not None]
        failed = [r for r in every if r.get("error") and "ScrapeFailed" in r["error"]]
        text += (
            f"; {fmt(sum(n or 0 for n in scrapes))} scrapes in {len(every)} "
            f"run{'s' if len(every) != 1 else ''} ({' / '.join(fmt(n) for n in scrapes)}), "
            + (f"slowest {fmt(max(slowest))} ms" if slowest else "none timed")
            + (f", FAILED in {len(failed)} run(s)" if failed else "")
        )
        if on.get("sent"):
            text += f"; PRIVMSG timed {fmt(on.get('privmsg_timed'))} of {fmt(on['sent'])} sent"
        lines.append(text)
    return lines


def websocket_vs_tcp(
    chosen: dict[str, dict[str, dict[str, Any]]],
    plan: list[Scenario],
    runs: dict[str, dict[str, list[dict[str, Any]]]],
) -> list[str]:
    """One line per scenario run on both `ircish` and `ircish-ws`: what WebSocket costs
    over TCP (issue 16) in throughput and in server CPU per message (as a ratio and in µs),
    every run's throughput on each, the generator's CPU on each (its framing shares the 2
    cores with the server), and the messages lost and client errors of every WebSocket
    run (a client the server dropped or a frame the generator refused is an error)."""
    lines = []
    for scenario in plan:
        per = chosen.get(scenario.name, {})
        if not scenario.websocket or "ircish-ws" not in per or "ircish" not in per:
            continue
        every = runs.get(scenario.name, {})
        text = versus(scenario, per, every, "ircish-ws", "ircish")
        ws, tcp = per["ircish-ws"], per["ircish"]
        for cpu, label, _ in scenario.rows:
            if cpu.startswith("server_us_per_"):
                more, base = ws.get(cpu), tcp.get(cpu)
                if isinstance(more, (int, float)) and isinstance(base, (int, float)):
                    unit = label.rpartition("/")[2]
                    text += f" ({more - base:+.2f} µs a {unit})"
        text += (
            f"; generator CPU cores ircish-ws {fmt(ws.get('gen_cpu_cores'))}, "
            f"ircish {fmt(tcp.get('gen_cpu_cores'))}"
        )
        ws_runs = every.get("ircish-ws", [ws])
        text += (
            f"; in the {len(ws_runs)} ircish-ws run{'s' if len(ws_runs) != 1 else ''}: lost "
            f"{' / '.join(fmt(r.get('lost')) for r in ws_runs)}, client errors "
            f"{' / '.join(fmt(r.get('errors')) for r in ws_runs)}"
        )
        lines.append(text)
    return lines


def cluster_vs_one(
    chosen: dict[str, dict[str, dict[str, Any]]],
    plan: list[Scenario],
    runs: dict[str, dict[str, list[dict[str, Any]]]],
) -> list[str]:
    """One line per scenario and cluster kind run with `ircish`: the cluster's cost (issue
    17) in throughput (over `ircish` and over each peer, same run), the server CPU its
    nodes add per delivery in µs (over `ircish`'s, Redis apart), Redis's CPU per message
    and per delivery, the XREADs per message (how many entries each bus read takes at
    once), and the lost messages and client errors of every run of the kind."""
    lines = []
    for scenario in plan:
        per = chosen.get(scenario.name, {})
        every = runs.get(scenario.name, {})
        one = per.get("ircish", {})
        key = scenario.median_key or ""
        cpu_key = next((k for k, _, _ in scenario.rows if k.startswith("server_us_per_")), "")
        unit = "delivery" if cpu_key.endswith("delivery") else "message"
        recipients = scenario.params.get("members", 2) - 1
        for kind in servers.CLUSTER_KINDS:
            if not scenario.cluster or kind not in per or "ircish" not in per:
                continue
            ours = per[kind]
            text = versus(scenario, per, every, kind, "ircish")
            peers = [
                f"{kind}/{peer} {ratio(ours.get(key), per[peer].get(key))}"
                for peer in per
                if peer not in servers.IRCISH_KINDS and ratio(ours.get(key), per[peer].get(key))
            ]
            if peers:
                text += "; " + ", ".join(peers)
            more, base = ours.get(cpu_key), one.get(cpu_key)
            redis_msg = ours.get("redis_us_per_msg")
            if isinstance(more, (int, float)) and isinstance(base, (int, float)):
                text += f"; server CPU {more - base:+.2f} µs a {unit} over ircish"
                if isinstance(redis_msg, (int, float)):
                    redis_each = redis_msg / recipients
                    text += (
                        f", {more - base + redis_each:+.2f} µs with Redis's "
                        f"{redis_each:.2f} µs a {unit}"
                    )
            text += (
                f"; Redis {fmt(ours.get('redis_cpu_cores'))} cores, {fmt(redis_msg)} µs a "
                f"message, {fmt(ours.get('redis_xread_per_msg'))} XREADs a message"
            )
            if ours.get("node_cpu_cores"):
                text += f"; each node's server CPU cores {fmt(ours['node_cpu_cores'])}"
            kind_runs = every.get(kind, [ours])
            text += (
                f"; in the {len(kind_runs)} {kind} run{'s' if len(kind_runs) != 1 else ''}: "
                f"lost {' / '.join(fmt(r.get('lost')) for r in kind_runs)}, client errors "
                f"{' / '.join(fmt(r.get('errors')) for r in kind_runs)}"
            )
            refused = [r.get("cluster_refused") for r in kind_runs]
            if any(refused):
                text += (
                    f'; "cannot reach Redis" (command refused) log lines '
                    f'{" / ".join(fmt(n) for n in refused)}, "Too many connections" '
                    f"{' / '.join(fmt(r.get('cluster_pool_full')) for r in kind_runs)}, "
                    '"No connection available" '
                    f"{' / '.join(fmt(r.get('cluster_pool_timeout')) for r in kind_runs)}"
                )
            late = [r.get("cluster_late") for r in kind_runs]
            if any(late):
                text += f"; late (not applied within timeout_ms) {' / '.join(fmt(n) for n in late)}"
            failed = [r["error"].splitlines()[0] for r in kind_runs if r.get("error")]
            if failed:
                text += f", FAILED: {'; '.join(failed)}"
            lines.append(text)
    return lines


def markdown_report(
    chosen: dict[str, dict[str, dict[str, Any]]],
    plan: list[Scenario],
    kinds: list[str],
    info: dict[str, Any],
    command: str,
    elapsed: float,
    runs: dict[str, dict[str, list[dict[str, Any]]]] | None = None,
) -> str:
    parts = [
        f"Command: `{command}` ({elapsed / 60:.1f} min, {info.get('stamp')})",
        "",
        f"Machine: {info.get('cores')} cores ({info.get('cpu', '?')}), "
        f"{info.get('memory_gib', '?')} GiB, Linux {info.get('kernel')}, "
        f"Python {info.get('python')}; ircish {info.get('ircish_commit')}"
        f"{' (with uncommitted changes)' if info.get('ircish_dirty') else ''}, "
        f"{' '.join(info.get('ngircd') or ['ngircd ?'])}, miniircd {info.get('miniircd')}.",
        "",
        "Scenarios:",
    ]
    parts += [
        f"- `{s.name}`: {s.title}" + (f" (median of {s.repeats})" if s.repeats > 1 else "")
        for s in plan
    ]
    parts += ["", table(chosen, plan, kinds), ""]
    results = targets(chosen, plan)
    if results:
        parts += ["Targets (issue 4):", ""]
        parts += [f"- {verdict} {name}: {detail}" for name, verdict, detail in results]
        parts.append("")
    mixed = mixed_vs_plain(chosen, kinds)
    if mixed:
        parts += [
            "Mixed vs plain (issue 12; the peers give no caps, so theirs show the noise):",
            "",
            *mixed,
            "",
        ]
    store = store_vs_off(chosen, plan, runs or {})
    if store:
        parts += [
            "Store on vs off (issue 13; `ircish` with history off, `ircish-store` with the "
            "store on disk, the rest default):",
            "",
            *store,
            "",
        ]
    accounts = accounts_vs_off(chosen, plan, runs or {})
    if accounts:
        parts += [
            "Accounts on vs off (issue 14; `ircish-accounts` is `ircish-store` with every "
            "client logged in to its own account with `PASS <nick>:<password>`, so a DM "
            "between two of them is a private-history row):",
            "",
            *accounts,
            "",
        ]
    metrics = metrics_vs_off(chosen, plan, runs or {})
    if metrics:
        parts += [
            "Metrics on vs off (issue 15; `ircish-metrics` is `ircish` with `metrics: "
            "{listen: ...}`, so every command is timed, and the harness GETs /metrics "
            f"every {servers.SCRAPE_INTERVAL:g} s during the run):",
            "",
            *metrics,
            "",
        ]
    websocket = websocket_vs_tcp(chosen, plan, runs or {})
    if websocket:
        parts += [
            "WebSocket vs TCP (issue 16; `ircish-ws` is `ircish` with a `websocket:` "
            "listener, and every client speaks IRC over WebSocket there, subprotocol "
            f"`{servers.WEBSOCKET_KINDS['ircish-ws']}`, instead of plain TCP):",
            "",
            *websocket,
            "",
        ]
    cluster = cluster_vs_one(chosen, plan, runs or {})
    if cluster:
        parts += [
            "One node vs three (issue 17; `ircish-cluster1` and `ircish-cluster3` are "
            "`ircish` as one or three nodes of a network through one Redis, the clients "
            "taking the nodes' ports in turn; server CPU is the nodes' sum, Redis's apart):",
            "",
            *cluster,
            "",
        ]
    notes = []
    for scenario in plan:
        for kind in kinds:
            result = chosen.get(scenario.name, {}).get(kind)
            if not result:
                continue
            if "error" in result:
                notes.append(f"- {scenario.name} / {kind}: {result['error']}")
            elif "na" in result:
                notes.append(f"- {scenario.name} / {kind}: n/a, {result['na']}")
            gen, srv = result.get("gen_cpu_cores"), result.get("server_cpu_cores")
            if gen is not None and srv is not None and gen > 0.9 and gen + srv > 1.8:
                notes.append(
                    f"- {scenario.name} / {kind}: the 2 cores were saturated and the "
                    f"generator had {gen} of them (server {srv}): the generator may be the "
                    "bottleneck, so this is a lower bound for the server"
                )
            other = result.get("other_cpu_cores")
            if other is not None and other > 0.3:
                notes.append(
                    f"- {scenario.name} / {kind}: {other} cores of other work ran during "
                    "the window (a shared machine): treat as noisy"
                )
            if result.get("errors"):
                samples = "; ".join(result.get("error_samples", [])[:2])
                notes.append(
                    f"- {scenario.name} / {kind}: {result['errors']} client errors ({samples})"
                )
            if result.get("stop_code") not in (0, None, -15):
                notes.append(
                    f"- {scenario.name} / {kind}: did not stop within the stop timeout "
                    f"after SIGTERM (exit {result.get('stop_code')}, {result.get('stop_s')} s)"
                )
    if notes:
        parts += ["Notes:", "", *notes, ""]
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller, shorter matrix")
    parser.add_argument(
        "--servers",
        default=",".join(servers.SERVER_KINDS),
        help=f"comma list of {','.join(servers.SERVER_KINDS)} (default: all; ircish-store "
        "runs only the scenarios where the store matters, ircish-accounts, ircish-metrics, "
        "ircish-ws and the cluster kinds only fanout200 and dm200)",
    )
    parser.add_argument("--only", help="comma list of scenario names to run")
    parser.add_argument("--repeats", type=int, help="override the repeat count of every scenario")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--sender-threads", type=int, help="ircish server.sender_threads")
    parser.add_argument(
        "--ircish-rev",
        help="run ircish as committed at this git revision (e.g. HEAD), not the work tree",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="seconds to wait at most for an idle machine before each run (default 20)",
    )
    parser.add_argument(
        "--no-retry-noisy",
        dest="retry_noisy",
        action="store_false",
        help="keep a run during which other jobs used > 0.3 cores (default: run it again once)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        help="seconds a server gets after SIGTERM before SIGKILL (default 10)",
    )
    parser.add_argument(
        "--record", action="store_true", help="also write bench/RESULTS.md from this run"
    )
    parser.add_argument(
        "--report",
        metavar="JSONL",
        type=Path,
        help="run nothing: rebuild the report from a results file (with --record: RESULTS.md)",
    )
    args = parser.parse_args()
    if args.report:
        return report_from(args.report, args.record)
    servers.raise_file_limit()
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    kinds.sort(key=lambda k: servers.SERVER_KINDS.index(k) if k in servers.SERVER_KINDS else 99)
    for kind in kinds:
        if kind not in servers.SERVER_KINDS:
            parser.error(f"unknown server {kind!r}")
        missing = servers.check_installed(kind)
        if missing:
            parser.error(missing)
    plan = matrix(args.quick)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        unknown = wanted - {s.name for s in plan}
        if unknown:
            parser.error(f"unknown scenario(s) {sorted(unknown)}; have {[s.name for s in plan]}")
        plan = [s for s in plan if s.name in wanted]
    if args.repeats:
        for scenario in plan:
            scenario.repeats = args.repeats

    args.ircish_dir = None
    if args.ircish_rev and any(kind in servers.IRCISH_KINDS for kind in kinds):
        try:
            args.ircish_dir = servers.export_revision(
                args.ircish_rev, Path(tempfile.mkdtemp(prefix="ircish-rev-"))
            )
        except subprocess.CalledProcessError as exc:
            parser.error(f"cannot export {args.ircish_rev}: {exc.stderr.decode().strip()}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    info = machine_info(args.ircish_rev)
    info["stamp"] = stamp
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    RESULTS_DIR.mkdir(exist_ok=True)
    jsonl = RESULTS_DIR / f"{stamp}.jsonl"
    started = time.monotonic()
    chosen: dict[str, dict[str, dict[str, Any]]] = {}
    every: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with open(jsonl, "w") as out:
        out.write(json.dumps({"machine": info, "command": command.strip()}) + "\n")
        for scenario in plan:
            runs: dict[str, list[dict[str, Any]]] = {
                kind: [] for kind in kinds if scenario.runs_on(kind)
            }
            every[scenario.name] = runs
            for rep in range(scenario.repeats):
                for kind in runs:
                    record = run_one(kind, scenario, rep, args)
                    if noisy(record) and args.retry_noisy:
                        # Another job shared the cores during the window: once more.
                        _progress(scenario, record, "noisy, running it again")
                        out.write(json.dumps({**record, "discarded": "noisy"}) + "\n")
                        record = run_one(kind, scenario, rep, args)
                        record["retried_noisy"] = True
                    runs[kind].append(record)
                    out.write(json.dumps(record) + "\n")
                    out.flush()
                    _progress(scenario, record)
            chosen[scenario.name] = {kind: pick(runs[kind], scenario) for kind in runs}
        elapsed = time.monotonic() - started
        out.write(json.dumps({"elapsed_s": round(elapsed, 1)}) + "\n")
    if args.ircish_dir is not None:
        shutil.rmtree(args.ircish_dir, ignore_errors=True)
    report = markdown_report(chosen, plan, kinds, info, command.strip(), elapsed, every)
    (RESULTS_DIR / "latest.md").write_text(report)
    if args.record:
        _write_results_md(report)
    print()
    print(report)
    print(f"results: {jsonl.relative_to(servers.REPO)}, bench/results/latest.md")
    return 0


def report_from(path: Path, record: bool) -> int:
    """Rebuild the report (and with `record`, RESULTS.md) from a results file."""
    header: dict[str, Any] = {}
    elapsed = None
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if "machine" in entry:
            header = entry
        elif "elapsed_s" in entry:
            elapsed = entry["elapsed_s"]
        elif "scenario" in entry and "discarded" not in entry:
            runs.setdefault(entry["scenario"], {}).setdefault(entry["server"], []).append(entry)
    known = {s.name: s for s in matrix(False) + matrix(True)}
    plan = [known[name] for name in runs if name in known]
    present = {kind for per in runs.values() for kind in per}
    kinds = [k for k in servers.SERVER_KINDS if k in present]
    chosen = {
        scenario.name: {kind: pick(rs, scenario) for kind, rs in runs[scenario.name].items()}
        for scenario in plan
    }
    if elapsed is None:  # older files: the runs' own time, without the waits between
        elapsed = sum(
            r.get("wall_s") or 0 for per in runs.values() for rs in per.values() for r in rs
        )
    report = markdown_report(
        chosen, plan, kinds, header.get("machine", {}), header.get("command", "?"), elapsed, runs
    )
    RESULTS_DIR.mkdir(exist_ok=True)  # a fresh checkout has none: results/ is not committed
    (RESULTS_DIR / "latest.md").write_text(report)
    if record:
        _write_results_md(report)
    print(report)
    return 0


def noisy(record: dict[str, Any], limit: float = 0.3) -> bool:
    other = record.get("other_cpu_cores")
    return other is not None and other > limit


def _progress(scenario: Scenario, record: dict[str, Any], extra: str = "") -> None:
    key = scenario.headline or scenario.median_key or scenario.rows[0][0]
    if "na" in record:
        status = "n/a"
    elif "error" in record:
        status = "ERROR " + record["error"].splitlines()[0][:100]
    else:
        status = f"{key}={fmt(record.get(key))}"
        if record.get("lost"):
            status += f" lost={fmt(record['lost'])}"
        if record.get("rows_expected"):
            status += f" stored={fmt(record.get('stored'))}/{fmt(record['rows_expected'])}"
        if "logged_in" in record:
            status += f" logged_in={fmt(record['logged_in'])}/{fmt(record.get('ready'))}"
        if record.get("writer_behind"):
            status += " WRITER BEHIND"
        if "scrapes" in record:
            status += f" scrapes={record['scrapes']} slowest={fmt(record.get('scrape_max_ms'))}ms"
    if record.get("other_cpu_cores") is not None:
        status += f" other={record['other_cpu_cores']}"
    print(
        f"[{scenario.name} #{record['rep']}] {record['server']:12} {status} "
        f"({record.get('wall_s')} s) {extra}".rstrip(),
        flush=True,
    )


#: Everything in RESULTS.md from this line on is written by hand (profile,
#: what was tried) and survives `--record`.
ANALYSIS_MARKER = "<!-- analysis: written by hand, kept by run.py --record -->"


def _write_results_md(report: str) -> None:
    path = BENCH / "RESULTS.md"
    old = path.read_text() if path.exists() else ""
    analysis = old[old.index(ANALYSIS_MARKER) :] if ANALYSIS_MARKER in old else ANALYSIS_MARKER
    text = (
        "# Benchmark results\n\n"
        "The latest full run of the matrix in bench/README.md: ircish against ngircd and\n"
        "miniircd on the same machine, same generator, one command. Ratios are\n"
        "ircish/peer; ↑ means higher is better, ↓ lower is better.\n\n"
        + report.rstrip()
        + "\n\n"
        + analysis.rstrip()
        + "\n"
    )
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
