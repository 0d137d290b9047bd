"""The servers under test: ircish and its two peers, each started fresh on its own port.

ircish runs in two kinds: `ircish` with history off (`history: {max_lines: 0}`, as
before issue 13) and `ircish-store` with a history store on disk (`store: {path:
<workdir>/ircish.db}`, every other store and history setting at its default), so a run
measures the store on against the store off. `ircish-accounts` (issue 14) is
`ircish-store` with every bench client logged in to an account of its own: the accounts
(named as the generator names its clients) are written into the SQLite file before the
server starts, and the clients send `PASS <nick>:<password>` before NICK/USER. A private
message between two of them is then a stored row (private history) and every event
carries its sender's account. `ircish-metrics` (issue 15) is `ircish` plus `metrics:
{listen: 127.0.0.1:<free port>}`, which also times every command; while a scenario runs,
`MetricsScraper` GETs its /metrics once a second. `ircish-ws` (issue 16) is `ircish`
plus `websocket: {port: <free port>}`, and every bench client connects to that port and
speaks IRC over WebSocket (`binary.ircv3.net`) instead of plain TCP.

`start_server(kind, port, workdir)` writes the server's config into `workdir`, starts
it as a child process, waits until its port accepts connections and returns a
`ServerProcess`, which reads the server's CPU time and RSS from /proc and stops it
(SIGTERM, then SIGKILL) by its own PID. The configs lift every limit that would make
a benchmark measure a policy instead of speed: connection caps, flood penalties,
ping timeouts during a run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NGIRCD = shutil.which("ngircd") or "/usr/sbin/ngircd"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_KINDS = (
    "ircish",
    "ircish-store",
    "ircish-accounts",
    "ircish-metrics",
    "ircish-ws",
    "ngircd",
    "miniircd",
)
#: The ircish kinds (run from this checkout, or from `--ircish-rev`).
IRCISH_KINDS = ("ircish", "ircish-store", "ircish-accounts", "ircish-metrics", "ircish-ws")
#: The ircish kinds with the history store on disk.
STORE_KINDS = ("ircish-store", "ircish-accounts")
#: The kinds whose clients each log in to an account of their own (made before the
#: server starts: `make_accounts`).
ACCOUNT_KINDS = ("ircish-accounts",)
#: The kinds with the metrics endpoint on (and so every command timed), scraped during a
#: run by `MetricsScraper`.
METRICS_KINDS = ("ircish-metrics",)
#: The kinds whose clients speak IRC over WebSocket, on the server's `websocket:` port,
#: and the subprotocol they ask for. binary.ircv3.net: the server takes a binary frame's
#: bytes as they are, as it takes a TCP line, where a text frame is UTF-8-checked and
#: decoded by wsproto and encoded again; IRC lines are bytes, not always UTF-8; and it is
#: the one ircish prefers. Both are framed alike on the way out (only the opcode differs).
WEBSOCKET_KINDS = {"ircish-ws": "binary.ircv3.net"}
#: Most clients a peer can hold; miniircd is one select() loop (FD_SETSIZE = 1024).
MAX_CLIENTS = {
    "ircish": 20000,
    "ircish-store": 20000,
    "ircish-accounts": 20000,
    "ircish-metrics": 20000,
    "ircish-ws": 20000,
    "ngircd": 20000,
    "miniircd": 1000,
}
#: Every bench account's password (`PASS <nick>:<password>`).
ACCOUNT_PASSWORD = "bench-password"
#: The scrypt cost of the bench accounts' hashes: n=2**10, the lowest ircish's
#: passwords.py accepts (its own default is 2**14, ~50 ms a login), so that 400 logins
#: take well under a second of server CPU and the setup does not measure scrypt.
ACCOUNT_SCRYPT = (2**10, 8, 1)
#: What ircish's store writer logs when its queue is full and a line is not stored.
WRITER_BEHIND = "history writer behind"
#: How often the harness scrapes ircish-metrics' /metrics, and how long one scrape may
#: take. Prometheus scrapes every 15 s by default; once a second is harsher on purpose.
#: Prometheus refuses a scrape_timeout longer than the scrape_interval, so a scrape that
#: takes more than the interval is one a real Prometheus at this rate would count as down.
SCRAPE_INTERVAL = 1.0
SCRAPE_TIMEOUT = 1.0


def raise_file_limit() -> None:
    """Every client is a descriptor: lift the soft limit to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class ServerProcess:
    kind: str
    port: int
    proc: subprocess.Popen
    workdir: Path
    log_path: Path
    command: list[str] = field(default_factory=list)
    #: The listener's backlog; the generator never has more connects pending than this.
    backlog: int | None = None
    #: ircish-store's SQLite file (None: no store on disk).
    store_path: Path | None = None
    #: Clients log in: each sends `PASS <nick>:<login_password>` before NICK/USER (None:
    #: no login; ircish-accounts only).
    login_password: str | None = None
    #: A private message between two bench clients is a stored history row (both are
    #: logged in to accounts on a server with the store).
    private_history: bool = False
    #: The port of the metrics endpoint on 127.0.0.1 (None: metrics off).
    metrics_port: int | None = None
    #: The WebSocket listener's port on 127.0.0.1 (None: none), and the subprotocol the
    #: bench clients ask for there.
    websocket_port: int | None = None
    subprotocol: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def client_port(self) -> int:
        """Where the bench clients connect: the WebSocket port if they speak WebSocket."""
        return self.port if self.websocket_port is None else self.websocket_port

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server process, all threads included."""
        try:
            with open(f"/proc/{self.pid}/stat") as handle:
                stat = handle.read()
        except OSError:
            return float("nan"), float("nan")
        # The command name may hold spaces: fields are counted after its ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def cpu_seconds(self) -> float:
        return sum(self.cpu_times())

    def status(self) -> dict[str, int]:
        """VmRSS/VmHWM in kB and the thread count, from /proc/PID/status."""
        wanted = {"VmRSS": "rss_kb", "VmHWM": "hwm_kb", "Threads": "threads"}
        out: dict[str, int] = {}
        try:
            with open(f"/proc/{self.pid}/status") as handle:
                for line in handle:
                    key, _, value = line.partition(":")
                    if key in wanted:
                        out[wanted[key]] = int(value.split()[0])
        except OSError:
            pass
        return out

    def context_switches(self, max_threads: int = 3000) -> int | None:
        """Context switches of all the server's threads so far (None past `max_threads`)."""
        try:
            tasks = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return None
        if len(tasks) > max_threads:
            return None
        total = 0
        for task in tasks:
            try:
                with open(f"/proc/{self.pid}/task/{task}/status") as handle:
                    for line in handle:
                        if "ctxt_switches:" in line:  # voluntary + nonvoluntary
                            total += int(line.split()[1])
            except (OSError, ValueError, IndexError):
                continue
        return total

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL: only this process, by its PID."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def stored_rows(self, command: str = "PRIVMSG") -> int | None:
        """Rows of `command` in the store's history table now (None without a store).

        A connection of our own, read only; the store is in WAL mode, so this read never
        holds up the server's writer. A room that ends (its last member left) takes its
        history with it, so count while the bench clients are still in their rooms.
        """
        if self.store_path is None or not self.store_path.exists():
            return None
        db = sqlite3.connect(f"{self.store_path.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            query = "SELECT count(*) FROM history WHERE command = ?"
            return db.execute(query, (command,)).fetchone()[0]
        except sqlite3.OperationalError:  # the server has not made the table yet
            return None
        finally:
            db.close()

    def log_count(self, text: str) -> int:
        """Lines of the server's log that contain `text`."""
        try:
            with open(self.log_path, errors="replace") as log:
                return sum(text in line for line in log)
        except OSError:
            return 0

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def listen_backlog(port: int) -> int | None:
    """The listen backlog of the socket on 127.0.0.1:`port` (`ss` shows it as Send-Q)."""
    try:
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "LISTEN":
            return int(fields[2])
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def another_free_port(*taken: int) -> int:
    """A free port that is none of `taken`: probes are closed, so the kernel may hand out
    one twice."""
    port = free_port()
    while port in taken:
        port = free_port()
    return port


def ircish_store_path(workdir: Path) -> Path:
    return workdir / "ircish.db"


def account_hash(password: str) -> str:
    """An ircish password hash (`scrypt$n$r$p$salt$hash`, as ircish/passwords.py writes it:
    16 random salt bytes, a 32-byte key, standard padded base64) at `ACCOUNT_SCRYPT`'s
    low cost. passwords.hash_password takes no cost, so the string is built here."""
    n, r, p = ACCOUNT_SCRYPT
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    encoded = (base64.b64encode(part).decode("ascii") for part in (salt, key))
    return "$".join(("scrypt", str(n), str(r), str(p), *encoded))


def make_accounts(path: Path, names: list[str], password: str) -> None:
    """Write an account per name into the SQLite store at `path`, with ircish's own store
    code, before the server opens it (it loads every account at start). No SCRAM keys:
    the clients log in with PASS, which checks the scrypt hash."""
    from ircish import passwords
    from ircish.store import AccountState
    from ircish.store.sqlite import SqliteStore

    # One hash (one salt) for them all: the password is the same, and each login still
    # checks it with scrypt.
    encoded = account_hash(password)
    problem = passwords.hash_problem(encoded)
    if problem is not None or not passwords.verify_password(password, encoded):
        raise RuntimeError(f"the bench's password hash is not one ircish takes: {problem}")
    store = SqliteStore(path)
    try:
        now = int(time.time() * 1000)
        for name in names:
            store.save_account(AccountState(name=name, password=encoded, registered=now))
    finally:
        store.close()


def _ircish_config(
    workdir: Path,
    port: int,
    sender_threads: int | None,
    store: bool,
    metrics_port: int | None = None,
    websocket_port: int | None = None,
) -> list[str]:
    threads = f"\n  sender_threads: {sender_threads}" if sender_threads else ""
    if store:
        # The store on disk, every other store and history setting at its default.
        sections = f"store:\n  path: {ircish_store_path(workdir)}\n"
    else:
        # History off: no room keeps a window and no line goes to the store's writer
        # (ircish as it was before issue 13).
        sections = "history:\n  max_lines: 0\n"
    if metrics_port is not None:
        # The endpoint on, and with it the command timer (the only extra message-path work).
        sections += f'metrics:\n  listen: "127.0.0.1:{metrics_port}"\n'
    if websocket_port is not None:
        # The listener on server.host (127.0.0.1); the bench clients send no Origin, which
        # the default (no `origins:`) lets in.
        sections += f"websocket:\n  port: {websocket_port}\n"
    config = workdir / "ircish.yaml"
    config.write_text(
        f"""\
server:
  name: bench.ircish.local
  host: 127.0.0.1
  port: {port}
  motd: bench{threads}
limits:
  max_clients: 20000
  # Every bench client comes from 127.0.0.1 and sends at full speed, as the
  # peers are configured (MaxConnectionsIP = 0, MaxPenaltyTime = 0).
  max_clients_per_ip: 0
  flood_rate: 0
  sendq_bytes: 16777216
  registration_timeout: 120
  # Idle bench clients must not be pinged mid-run; the idle scenario pings itself.
  ping_interval: 3600
  ping_timeout: 3600
{sections}"""
    )
    # The log level only on the command line: `--log-level` means the same to every
    # revision, while the config key moved (`log_level` became `log.level` in issue 15),
    # so one file would not run both sides of `--ircish-rev`.
    return [
        sys.executable,
        "-m",
        "ircish.cli",
        "-c",
        str(config),
        "--port",
        str(port),
        "--log-level",
        "WARNING",
    ]


def _ngircd_config(workdir: Path, port: int) -> list[str]:
    config = workdir / "ngircd.conf"
    # MaxConnectionsIP and MaxPenaltyTime = 0: every bench client comes from
    # loopback and sends as fast as it may; the defaults would refuse or throttle it.
    config.write_text(
        f"""\
[Global]
Name = bench.ngircd.local
Info = ircish bench peer
AdminInfo1 = bench
AdminInfo2 = bench
AdminEMail = bench@localhost
Ports = {port}
Listen = 127.0.0.1
MotdPhrase = bench
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxPenaltyTime = 0
MaxNickLength = 30
MaxListSize = 100
PingTimeout = 3600
PongTimeout = 3600
[Options]
PAM = no
DNS = no
Ident = no
"""
    )
    os.chmod(workdir, 0o755)  # ngircd drops root for "nobody" and must read its config
    os.chmod(config, 0o644)
    return [NGIRCD, "-n", "-f", str(config)]


def _miniircd_command(port: int) -> list[str]:
    command = [sys.executable, "-m", "miniircd", "--ports", str(port), "--listen", "127.0.0.1"]
    if os.geteuid() == 0:
        command += ["--setuid", "nobody"]  # it refuses to run as root
    return command


def server_command(
    kind: str,
    port: int,
    workdir: Path,
    sender_threads: int | None = None,
    metrics_port: int | None = None,
    websocket_port: int | None = None,
) -> list[str]:
    if kind in IRCISH_KINDS:
        return _ircish_config(
            workdir,
            port,
            sender_threads,
            store=kind in STORE_KINDS,
            metrics_port=metrics_port,
            websocket_port=websocket_port,
        )
    if kind == "ngircd":
        return _ngircd_config(workdir, port)
    if kind == "miniircd":
        return _miniircd_command(port)
    raise ValueError(f"unknown server kind {kind!r}")


def check_installed(kind: str) -> str | None:
    """None if the server can run here, otherwise what to install."""
    if kind == "ngircd" and not os.access(NGIRCD, os.X_OK):
        return "ngircd not found: apt-get install -y ngircd"
    if kind == "miniircd":
        import importlib.util

        if importlib.util.find_spec("miniircd") is None:
            return "miniircd not found: pip install miniircd"
    return None


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                # A bare connect-and-close; every server here shrugs it off.
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} within {timeout:.0f} s")


def export_revision(rev: str, into: Path) -> Path:
    """Check out ircish revision `rev` into `into` (git archive: the work tree is untouched)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "ircish", "commands"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)
    return into


def start_server(
    kind: str,
    port: int,
    workdir: Path,
    sender_threads: int | None = None,
    ircish_dir: Path | None = None,
    accounts: list[str] | None = None,
) -> ServerProcess:
    """Start `kind` on 127.0.0.1:`port`.

    ircish runs from `ircish_dir` (a directory holding the `ircish` and `commands`
    packages, e.g. from `export_revision`), by default from this checkout. For the
    `ACCOUNT_KINDS`, `accounts` are the nicks the clients will use: each gets an account
    of that name in the store first (the accounts are made with this checkout's store
    code even with `ircish_dir`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if kind in ACCOUNT_KINDS:
        if not accounts:
            raise ValueError(f"{kind} needs the clients' nicks to make their accounts")
        make_accounts(ircish_store_path(workdir), accounts, ACCOUNT_PASSWORD)
    metrics_port = another_free_port(port) if kind in METRICS_KINDS else None
    websocket_port = another_free_port(port) if kind in WEBSOCKET_KINDS else None
    command = server_command(kind, port, workdir, sender_threads, metrics_port, websocket_port)
    log_path = workdir / f"{kind}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=ircish_dir or REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_file_limit,
        )
    server = ServerProcess(kind, port, proc, workdir, log_path, command)
    if kind in STORE_KINDS:
        server.store_path = ircish_store_path(workdir)
    if kind in ACCOUNT_KINDS:
        server.login_password = ACCOUNT_PASSWORD
        server.private_history = True
    server.metrics_port = metrics_port
    server.websocket_port = websocket_port
    server.subprotocol = WEBSOCKET_KINDS.get(kind)
    try:
        for listening in (port, metrics_port, websocket_port):
            if listening is not None:
                wait_for_port(listening, proc)
    except Exception:
        server.stop()
        raise
    time.sleep(0.2)  # let the probe connection be reaped before measuring anything
    # The accept queue the clients' connects wait in.
    server.backlog = listen_backlog(server.client_port)
    return server


class ScrapeFailed(RuntimeError):
    """A GET /metrics that did not answer 200 within SCRAPE_TIMEOUT."""


class MetricsScraper:
    """GET http://127.0.0.1:`port`/metrics every `interval` seconds, as Prometheus would.

    A thread of the bench process: per scrape it opens a connection, sends one request
    and reads the body, and parses nothing (Prometheus parses on its own machine), so the
    server under test pays what a real scraper costs it (collecting and encoding every
    figure, in its endpoint's thread) and the bench process a few hundred µs a second.
    A scrape runs `interval` after the last one started, or at once when it took longer
    (never two at a time). The first failure stops the scraping and `finish` raises it.
    """

    def __init__(
        self, port: int, interval: float = SCRAPE_INTERVAL, timeout: float = SCRAPE_TIMEOUT
    ) -> None:
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.scrapes = 0
        self.slowest_s = 0.0
        self.failure: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def scrape(self) -> bytes:
        """One GET /metrics; its body. ScrapeFailed unless 200 within the timeout."""
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            body = response.read()
        except OSError as exc:  # refused, reset, or socket.timeout
            raise ScrapeFailed(f"GET /metrics: {type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()
        took = time.monotonic() - started
        if response.status != 200:
            raise ScrapeFailed(f"GET /metrics answered {response.status} {response.reason}")
        # A socket timeout bounds each read, not the whole answer.
        if took > self.timeout:
            raise ScrapeFailed(f"GET /metrics took {took:.2f} s (timeout {self.timeout:g} s)")
        self.scrapes += 1
        self.slowest_s = max(self.slowest_s, took)
        return body

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.scrape()
            except ScrapeFailed as exc:
                self.failure = f"scrape {self.scrapes + 1}: {exc}"
                return
            next_at = max(next_at + self.interval, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def finish(self) -> int | None:
        """Stop scraping and scrape once more; ScrapeFailed if any scrape failed. Returns
        the PRIVMSG count of the command-time histogram in that last scrape (None: not in
        it): after the drain, every PRIVMSG the server handled, if each was timed."""
        self.close()
        if self.failure is not None:
            raise ScrapeFailed(f"{self.failure} (after {self.scrapes} good scrapes)")
        body = self.scrape()
        wanted = b'ircish_command_duration_seconds_count{command="PRIVMSG"} '
        for line in body.splitlines():
            if line.startswith(wanted):
                return int(float(line[len(wanted) :]))
        return None
