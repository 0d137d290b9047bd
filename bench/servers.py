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
`ircish-cluster1` and `ircish-cluster3` (issue 17) are `ircish` with a `cluster:` section:
one node, or three (n1, n2, n3, each on its own port), on a redis-server the harness
starts on a free loopback port with a temporary folder and no persistence; the clients
take the nodes' ports in turn, so a room's members and a pair's two sides span nodes.

`start_server(kind, port, workdir)` writes the server's config into `workdir`, starts
it as a child process, waits until its port accepts connections and returns a
`ServerProcess`, which reads the server's CPU time and RSS from /proc and stops it
(SIGTERM, then SIGKILL) by its own PID; for a cluster kind, summed over every node, with
Redis measured and stopped apart. The configs lift every limit that would make
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
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_KINDS = (
    "ircish",
    "ircish-store",
    "ircish-accounts",
    "ircish-metrics",
    "ircish-ws",
    "ircish-cluster1",
    "ircish-cluster3",
    "ngircd",
    "miniircd",
)
#: The ircish kinds (run from this checkout, or from `--ircish-rev`).
IRCISH_KINDS = (
    "ircish",
    "ircish-store",
    "ircish-accounts",
    "ircish-metrics",
    "ircish-ws",
    "ircish-cluster1",
    "ircish-cluster3",
)
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
#: The cluster kinds (issue 17) and their number of nodes, all on one redis-server.
CLUSTER_KINDS = {"ircish-cluster1": 1, "ircish-cluster3": 3}
#: Most clients a peer can hold; miniircd is one select() loop (FD_SETSIZE = 1024).
MAX_CLIENTS = {
    "ircish": 20000,
    "ircish-store": 20000,
    "ircish-accounts": 20000,
    "ircish-metrics": 20000,
    "ircish-ws": 20000,
    "ircish-cluster1": 20000,
    "ircish-cluster3": 20000,
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
#: What a cluster node logs (ircish/cluster/node.py) when a command could not be written
#: to the log (refused, nothing done: a message lost), when one was written but not run
#: here within cluster.timeout_ms (late), and when a QUIT had to wait for a retry; and
#: redis-py's words when its connection pool is at max_connections (a ConnectionPool, 100
#: by default in redis-py 8, fails at once; a BlockingConnectionPool after its timeout),
#: counted apart as a cause of the first and the third.
CLUSTER_LOG = {
    "cluster_refused": "cluster: cannot reach Redis",
    "cluster_late": "not applied within",
    "cluster_quit_retried": "Redis refused a QUIT",
    "cluster_pool_full": "Too many connections",
    "cluster_pool_timeout": "No connection available",
}
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


def proc_cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process `pid`, all threads included (nan: gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return float("nan"), float("nan")
    # The command name may hold spaces: fields are counted after its ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def stop_processes(procs: list[subprocess.Popen], timeout: float) -> list[int | None]:
    """SIGTERM every one of `procs` at once, wait up to `timeout` for all, then SIGKILL
    the rest: only these processes, by their PIDs. Their exit statuses."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)
    return [proc.returncode for proc in procs]


@dataclass
class NodeProcess:
    """One more ircish node of a cluster kind (the first is the ServerProcess's own)."""

    name: str
    port: int
    proc: subprocess.Popen
    log_path: Path


@dataclass
class RedisProcess:
    """The redis-server of a cluster kind, started by the harness on a free loopback port
    with its own folder and nothing saved (`--save "" --appendonly no`: a bench network
    lives one run, and persistence would measure the disk). Its CPU is reported apart
    from the server's."""

    port: int
    proc: subprocess.Popen
    directory: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cpu_times(self) -> tuple[float, float]:
        return proc_cpu_times(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def command(self, *words: str, timeout: float = 5.0) -> bytes:
        """One command over a socket of its own (RESP by hand: the harness needs nothing
        outside the standard library); the reply's payload: a simple or bulk string."""
        request = f"*{len(words)}\r\n".encode()
        for word in words:
            data = word.encode()
            request += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
            conn.sendall(request)
            reply = b""
            while b"\r\n" not in reply:
                reply += _recv_some(conn)
            head, _, rest = reply.partition(b"\r\n")
            if head[:1] in (b"+", b":"):
                return head[1:]
            if head[:1] != b"$":
                raise RuntimeError(f"redis {words[0]}: {head.decode(errors='replace')}")
            size = int(head[1:])
            while len(rest) < size + 2:
                rest += _recv_some(conn)
            return rest[:size]

    def command_calls(self) -> dict[str, int]:
        """Calls of each command so far (INFO commandstats), e.g. {"xadd": 1200}."""
        calls: dict[str, int] = {}
        for line in self.command("INFO", "commandstats").decode().splitlines():
            if line.startswith("cmdstat_"):
                name, _, stats = line[len("cmdstat_") :].partition(":")
                fields = dict(item.split("=", 1) for item in stats.split(","))
                calls[name] = int(fields.get("calls", 0))
        return calls

    def stop(self, timeout: float = 10.0) -> int | None:
        return stop_processes([self.proc], timeout)[0]


def _recv_some(conn: socket.socket) -> bytes:
    data = conn.recv(65536)
    if not data:
        raise RuntimeError("redis closed the connection")
    return data


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
    #: A cluster kind's nodes after the first (`proc`, node n1): ircish-cluster3's n2, n3.
    more_nodes: list[NodeProcess] = field(default_factory=list)
    #: A cluster kind's redis-server (None: not a cluster), measured apart: its CPU is not
    #: in `cpu_times`.
    redis: RedisProcess | None = None

    @property
    def pid(self) -> int:
        """The first node's PID (the only one, except in ircish-cluster3)."""
        return self.proc.pid

    @property
    def procs(self) -> list[subprocess.Popen]:
        """Every process of the server: one, or a cluster kind's nodes (not Redis)."""
        return [self.proc, *(node.proc for node in self.more_nodes)]

    @property
    def log_paths(self) -> list[Path]:
        return [self.log_path, *(node.log_path for node in self.more_nodes)]

    @property
    def client_port(self) -> int:
        """Where the bench clients connect: the WebSocket port if they speak WebSocket."""
        return self.port if self.websocket_port is None else self.websocket_port

    @property
    def client_ports(self) -> list[int]:
        """Where the bench clients connect, client i to the (i mod n)-th: one port, or one
        per node of a cluster kind."""
        return [self.client_port, *(node.port for node in self.more_nodes)]

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server, all threads of all its processes (a
        cluster kind's nodes, not Redis)."""
        times = [proc_cpu_times(proc.pid) for proc in self.procs]
        return sum(user for user, _ in times), sum(system for _, system in times)

    def node_cpu_seconds(self) -> list[float]:
        """CPU seconds of each process (node) apart."""
        return [sum(proc_cpu_times(proc.pid)) for proc in self.procs]

    def cpu_seconds(self) -> float:
        return sum(self.cpu_times())

    def status(self) -> dict[str, int]:
        """VmRSS/VmHWM in kB and the thread count, from /proc/PID/status, summed over a
        cluster kind's nodes."""
        wanted = {"VmRSS": "rss_kb", "VmHWM": "hwm_kb", "Threads": "threads"}
        out: dict[str, int] = {}
        for proc in self.procs:
            try:
                with open(f"/proc/{proc.pid}/status") as handle:
                    for line in handle:
                        key, _, value = line.partition(":")
                        if key in wanted:
                            out[wanted[key]] = out.get(wanted[key], 0) + int(value.split()[0])
            except OSError:
                pass
        return out

    def context_switches(self, max_threads: int = 3000) -> int | None:
        """Context switches of all the server's threads so far (None past `max_threads`)."""
        total = 0
        for proc in self.procs:
            try:
                tasks = os.listdir(f"/proc/{proc.pid}/task")
            except OSError:
                return None
            if len(tasks) > max_threads:
                return None
            for task in tasks:
                try:
                    with open(f"/proc/{proc.pid}/task/{task}/status") as handle:
                        for line in handle:
                            if "ctxt_switches:" in line:  # voluntary + nonvoluntary
                                total += int(line.split()[1])
                except (OSError, ValueError, IndexError):
                    continue
        return total

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs) and (
            self.redis is None or self.redis.alive()
        )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL: only this server's processes, by their PIDs. A
        cluster's nodes all at once, then its Redis (a node's users leave through it).
        The first node's exit status, or the first of another node's that is not a clean
        stop."""
        codes = stop_processes(self.procs, timeout)
        if self.redis is not None:
            self.redis.stop(timeout)
        return next((code for code in codes[1:] if code not in (0, -15)), codes[0])

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
        """Lines of the server's logs that contain `text`."""
        count = 0
        for path in self.log_paths:
            try:
                with open(path, errors="replace") as log:
                    count += sum(text in line for line in log)
            except OSError:
                pass
        return count

    def log_tail(self, lines: int = 15) -> str:
        tails = []
        for path in self.log_paths:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            tails.append(f"[{path.name}]\n{tail}" if self.more_nodes else tail)
        return "\n".join(tails)


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
    redis_url: str | None = None,
    node: str | None = None,
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
    name = "bench.ircish.local"
    config = workdir / "ircish.yaml"
    if redis_url is not None and node is not None:
        # A node of a network (issue 17): its own name, the settings at their defaults,
        # written out so the record shows them. History stays off as in `ircish`, so the
        # cluster kinds differ from it by the cluster alone.
        sections += (
            f'cluster:\n  redis: "{redis_url}"\n  node: {node}\n'
            "  lease_ms: 10000\n  timeout_ms: 5000\n  prefix: ircish\n"
        )
        name = f"{node}.bench.ircish.local"
        config = workdir / f"ircish-{node}.yaml"
    config.write_text(
        f"""\
server:
  name: {name}
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
    redis_url: str | None = None,
    node: str | None = None,
) -> list[str]:
    if kind in IRCISH_KINDS:
        return _ircish_config(
            workdir,
            port,
            sender_threads,
            store=kind in STORE_KINDS,
            metrics_port=metrics_port,
            websocket_port=websocket_port,
            redis_url=redis_url,
            node=node,
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
    if kind in CLUSTER_KINDS and not os.access(REDIS_SERVER, os.X_OK):
        return "redis-server not found: apt-get install -y redis-server"
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


def start_redis(workdir: Path, attempts: int = 5) -> RedisProcess:
    """A redis-server on a free loopback port, its folder `workdir/redis`, saving nothing,
    once it answers PING; another port if one was taken between the probe and the bind."""
    directory = workdir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "redis.log"
    for _attempt in range(attempts):
        port = free_port()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    *("--port", str(port), "--bind", "127.0.0.1"),
                    *("--dir", str(directory)),
                    # A bench network lives for one run: no snapshot, no append-only file.
                    *("--save", "", "--appendonly", "no"),
                    *("--daemonize", "no", "--protected-mode", "no"),
                ],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        redis = RedisProcess(port, proc, directory, log_path)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError, RuntimeError):
                if redis.command("PING", timeout=0.5) == b"PONG":
                    # Ours, not another process's that won the port.
                    info = redis.command("INFO", "server").decode()
                    if f"process_id:{proc.pid}" in info:
                        return redis
            time.sleep(0.05)
        redis.stop()
        if "Address already in use" not in log_path.read_text(errors="replace"):
            break
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-5:])
    raise RuntimeError(f"redis-server did not start:\n{tail}")


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
    if kind in CLUSTER_KINDS:
        return _start_cluster(kind, port, workdir, sender_threads, ircish_dir)
    if kind in ACCOUNT_KINDS:
        if not accounts:
            raise ValueError(f"{kind} needs the clients' nicks to make their accounts")
        make_accounts(ircish_store_path(workdir), accounts, ACCOUNT_PASSWORD)
    metrics_port = another_free_port(port) if kind in METRICS_KINDS else None
    websocket_port = another_free_port(port) if kind in WEBSOCKET_KINDS else None
    command = server_command(kind, port, workdir, sender_threads, metrics_port, websocket_port)
    log_path = workdir / f"{kind}.log"
    proc = _start_process(command, log_path, ircish_dir)
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


def _start_process(command: list[str], log_path: Path, ircish_dir: Path | None) -> subprocess.Popen:
    """A server process, its output to `log_path`, run from `ircish_dir` or this checkout."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command,
            cwd=ircish_dir or REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_file_limit,
        )


def _start_cluster(
    kind: str, port: int, workdir: Path, sender_threads: int | None, ircish_dir: Path | None
) -> ServerProcess:
    """A redis-server, then the kind's nodes n1, n2, ... one after the other (each joins
    the network, asking the nodes already in for its state, before it listens), n1 on
    `port` and the others on free ports."""
    redis = start_redis(workdir)
    server: ServerProcess | None = None
    taken = [port]
    try:
        for number in range(1, CLUSTER_KINDS[kind] + 1):
            node = f"n{number}"
            node_port = port if number == 1 else another_free_port(*taken)
            taken.append(node_port)
            command = server_command(
                kind, node_port, workdir, sender_threads, redis_url=redis.url, node=node
            )
            log_path = workdir / f"{kind}-{node}.log"
            proc = _start_process(command, log_path, ircish_dir)
            if server is None:
                server = ServerProcess(kind, port, proc, workdir, log_path, command, redis=redis)
            else:
                server.more_nodes.append(NodeProcess(node, node_port, proc, log_path))
            wait_for_port(node_port, proc, timeout=30.0)
    except Exception:
        if server is not None:
            server.stop()
        else:
            redis.stop()
        raise
    time.sleep(0.2)  # let the probe connections be reaped before measuring anything
    server.backlog = min(listen_backlog(p) or 10 for p in server.client_ports)
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
