"""Server configuration: the schema (frozen dataclasses with defaults), the YAML loader
that turns a file into those objects, and every check a setting must pass. The schema is
declared once below; the loader walks the dataclass fields and type hints generically, so
adding a setting means adding one field. A bad file becomes one `ConfigError` line naming
the file, the key path and the problem. Operator passwords are only ever stored as hashes
(`ircish.passwords`); a plain-text one is refused here.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import ipaddress
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ircish.passwords import SCHEME, hash_password, hash_problem
from ircish.protocol import casefold

__all__ = [
    "ClusterConfig",
    "Config",
    "ConfigError",
    "Limits",
    "OperatorConfig",
    "RoomConfig",
    "ServerConfig",
    "TlsConfig",
    "default_config",
    "load_config",
    "parse_config",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: This machine, as OPER sees a client's address: IPv4 loopback, IPv6 loopback, and IPv4
#: loopback on a dual-stack (`::`) listener.
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "::ffff:127.0.0.1")

#: A rule for one value: returns what is wrong with it, or None when it is fine.
_Check = Callable[[Any], "str | None"]


class ConfigError(Exception):
    """A configuration problem, rendered as one line: ``<file>: <key path>: <problem>``."""

    def __init__(self, source: str, key_path: str, problem: str) -> None:
        self.source = source
        self.key_path = key_path
        self.problem = problem
        super().__init__(": ".join(part for part in (source, key_path, problem) if part))


# --- rules for single values -------------------------------------------------------------


def _between(low: int, high: int) -> _Check:
    def check(value: int) -> str | None:
        if not low <= value <= high:
            return f"must be between {low} and {high}, got {_describe(value)}"
        return None

    return check


def _at_least(low: int) -> _Check:
    def check(value: int) -> str | None:
        if value < low:
            return f"must be at least {low}, got {_describe(value)}"
        return None

    return check


def _positive(value: float) -> str | None:
    if not value > 0:
        return f"must be greater than 0, got {_describe(value)}"
    return None


def _non_negative(value: float) -> str | None:
    if not math.isfinite(value) or value < 0:
        return f"must be a finite number >= 0, got {_describe(value)}"
    return None


def _word(value: str) -> str | None:
    """Names that end up inside protocol lines (server name, network, host)."""
    if not value:
        return "must not be empty"
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return f"must not contain spaces or control characters, got {_describe(value)}"
    return None


def _one_line(value: str) -> str | None:
    # CR, LF and NUL would end an IRC line early (STYLE.md "Edges").
    if any(ch in "\r\n\0" for ch in value):
        return "must not contain line breaks or NUL"
    return None


def _password(value: str) -> str | None:
    if not value:
        return "must not be empty (use null for an open server)"
    return _one_line(value)


def _password_hash(value: str) -> str | None:
    # The reason never quotes the value: it may be a real password pasted by mistake.
    if not value.startswith(f"{SCHEME}$"):
        reason = "plain-text passwords are not accepted"
    else:
        reason = hash_problem(value)
        if reason is None:
            return None
    return f"must be a scrypt hash made by `ircish-server hash-password` ({reason})"


def _not_empty(value: tuple[Any, ...]) -> str | None:
    if not value:
        return "must not be an empty list"
    return None


def _motd(value: str) -> str | None:
    if any(not ch.isprintable() and ch not in "\n\t" for ch in value):
        return "must not contain control characters other than line breaks and tabs"
    return None


def _room_name(value: str) -> str | None:
    if not value.startswith("#"):
        return "room names start with '#'"
    if len(value) < 2:
        return "room names need at least one character after '#'"
    # RFC 2812 2.3.1 chanstring: no space, comma, colon or control characters.
    if any(ch.isspace() or ch in ",:" or not ch.isprintable() for ch in value):
        return (
            "room names may not contain spaces, commas, colons or control characters, "
            f"got {_describe(value)}"
        )
    return None


def _readable_file(value: str) -> str | None:
    """A file the server reads at start (TLS certificate, key): there and readable now, so a
    typo is a config error rather than a failure at the first connection. Relative paths are
    from the directory the server is started in."""
    if not value:
        return "must not be empty"
    # The whole path, however long (`_describe` would cut it): it is what needs fixing.
    try:
        with open(value, "rb"):
            pass
    except FileNotFoundError:
        return f"no such file: {value!r}"
    except IsADirectoryError:
        return f"is a directory, not a file: {value!r}"
    except OSError as exc:
        return f"cannot read {value!r} ({exc.strerror or exc})"
    return None


def _store_path(value: str) -> str | None:
    """The store's file: made at first start, so only its folder must exist now."""
    if not value:
        return "must not be empty (null keeps everything in memory only)"
    return _file_to_make(value)


def _file_to_make(value: str) -> str | None:
    """A file the server makes if need be (the store, the log): its folder must exist."""
    if any(ch in "\r\n\0" for ch in value):
        return "must not contain line breaks or NUL"
    path = Path(value)
    if path.is_dir():
        return f"is a directory, not a file: {value!r}"
    folder = path.resolve().parent
    if not folder.is_dir():
        return f"its folder does not exist: {str(folder)!r} (make it first)"
    return None


def _log_level(value: str) -> str | None:
    if value not in LOG_LEVELS:
        return f"must be one of {', '.join(LOG_LEVELS)}, got {_describe(value)}"
    return None


#: How log lines are written: for people, or one JSON object per line (for collectors).
LOG_FORMATS = ("text", "json")


def _log_format(value: str) -> str | None:
    if value not in LOG_FORMATS:
        return f"must be one of {', '.join(LOG_FORMATS)}, got {_describe(value)}"
    return None


def _log_file(value: str) -> str | None:
    """A log file: opened (made if need be) at start and at each reload."""
    if not value:
        return "must not be empty (null logs to stderr)"
    return _file_to_make(value)


def _listen_address(value: str) -> str | None:
    """`host:port` (`[::1]:9108` for IPv6)."""
    if split_listen(value) is None:
        return f"expected host:port such as 127.0.0.1:9108 or [::1]:9108, got {_describe(value)}"
    return None


def split_listen(value: str) -> tuple[str, int] | None:
    """`127.0.0.1:9108` -> ("127.0.0.1", 9108); `[::1]:0` -> ("::1", 0); None if malformed."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return None  # an IPv6 address needs its brackets: [::1]:9108
    if not sep or not host or _word(host) is not None or not port.isdigit():
        return None
    number = int(port)
    return (host, number) if number <= 65535 else None


def _setting(
    default: Any = dataclasses.MISSING,
    check: _Check | None = None,
    *,
    normalize: Callable[[Any], Any] | None = None,
    each: _Check | None = None,
    repr: bool = True,
) -> Any:
    """A dataclass field carrying its own rule; `normalize` runs before `check`. For a
    list setting, `each` is the rule for every item (its errors name the item: `hosts[1]`).
    `repr=False` keeps a value out of reprs, and so out of logs."""
    metadata = {"check": check, "normalize": normalize, "each": each}
    return field(default=default, metadata=metadata, repr=repr)


# --- the schema ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomConfig:
    """A room that exists from startup, whether or not anyone is in it."""

    name: str = _setting(check=_room_name)
    topic: str = _setting("", _one_line)


@dataclass(frozen=True)
class OperatorConfig:
    """A server operator: OPER <name> <password> from a matching host grants the role."""

    name: str = _setting(check=_word)
    #: Made by `ircish-server hash-password`; never the password itself.
    password: str = _setting(check=_password_hash, repr=False)
    #: Glob patterns (fnmatch) for the client's host or IP address; any one must match.
    hosts: tuple[str, ...] = _setting(("*",), _not_empty, each=_word)


@dataclass(frozen=True)
class ServerConfig:
    """Who the server is and where it listens."""

    name: str = _setting("irc.ircish.local", _word)
    network: str = _setting("ircish", _word)
    #: A line about the server (LINKS, INFO), as other servers' "server info".
    description: str = _setting("ircish chat server", _one_line)
    host: str = _setting("127.0.0.1", _word)
    port: int = _setting(6667, _between(0, 65535))
    motd: str | None = _setting(None, _motd)
    password: str | None = _setting(None, _password)
    sender_threads: int = _setting(1, _at_least(1))


@dataclass(frozen=True)
class TlsConfig:
    """The optional second listener, for IRC over TLS (6697 is the usual port: RFC 7194)."""

    cert: str = _setting(check=_readable_file)  # PEM chain, the server's certificate first
    key: str = _setting(check=_readable_file)  # PEM private key, not password-protected
    port: int = _setting(6697, _between(0, 65535))
    #: CA certificates (PEM) that client certificates must be signed by for SASL EXTERNAL;
    #: null: the server asks for no client certificate, and EXTERNAL is not offered.
    client_ca: str | None = _setting(None, _readable_file)


def _network(value: str) -> str | None:
    """A proxy's address or network (`127.0.0.1`, `10.0.0.0/8`, `::1`)."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"expected an IP address or network such as 10.0.0.0/8, got {_describe(value)}"
    return None


def _origin(value: str) -> str | None:
    """A page's origin (`https://chat.example`, `http://localhost:8097`), or `*`."""
    if value == "*":
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        return f"expected an origin such as https://chat.example, or *, got {_describe(value)}"
    return None


@dataclass(frozen=True)
class WebSocketConfig:
    """The optional WebSocket listener (IRC over WebSocket, for browsers)."""

    port: int = _setting(8097, _between(0, 65535))
    #: wss:// with the `tls:` section's certificate and key (that section must be there).
    tls: bool = _setting(False)
    #: Pages (origins) that may connect besides the server's own; `*`: any page.
    origins: tuple[str, ...] = _setting((), each=_origin)
    #: Reverse proxies whose X-Forwarded-For is believed (addresses or networks).
    proxies: tuple[str, ...] = _setting((), each=_network)


@dataclass(frozen=True)
class Limits:
    """Bounds on clients, lines, queues and timers; every input is capped by one of these."""

    max_clients: int = _setting(1000, _at_least(1))
    max_clients_per_ip: int = _setting(10, _at_least(0))
    max_line_bytes: int = _setting(512, _between(512, 8192))
    read_buffer_bytes: int = _setting(8192, _at_least(1))
    sendq_bytes: int = _setting(1048576, _at_least(4096))
    registration_timeout: float = _setting(30.0, _positive)
    ping_interval: float = _setting(120.0, _positive)
    ping_timeout: float = _setting(60.0, _positive)
    nick_length: int = _setting(30, _between(1, 200))
    room_length: int = _setting(50, _between(2, 200))
    topic_length: int = _setting(390, _between(1, 400))
    away_length: int = _setting(200, _between(1, 400))
    max_rooms_per_user: int = _setting(50, _between(1, 10000))
    flood_burst: int = _setting(20, _at_least(1))
    flood_rate: float = _setting(4.0, _non_negative)
    flood_disconnect_seconds: float = _setting(60.0, _positive)

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        if self.read_buffer_bytes < self.max_line_bytes:
            yield (
                "read_buffer_bytes",
                (
                    f"must be at least max_line_bytes ({self.max_line_bytes}), "
                    f"got {self.read_buffer_bytes}"
                ),
            )


#: history.max_age's units: seconds, minutes, hours, days, weeks.
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhdw])")


def _duration(value: str) -> str | None:
    if _DURATION.fullmatch(value) is None:
        return f"expected a duration such as 30d, 12h, 90m or 3600s, got {_describe(value)}"
    return None


def duration_seconds(value: str) -> int:
    """A checked duration (`30d`) in seconds."""
    match = _DURATION.fullmatch(value)
    assert match is not None, value
    return int(match[1]) * _DURATION_UNITS[match[2]]


@dataclass(frozen=True)
class StoreConfig:
    """Where what outlives a connection is kept (history, permanent rooms): one SQLite file."""

    #: The database file, relative to the directory the server starts in; None (null):
    #: memory only, nothing survives a restart.
    path: str | None = _setting(None, _store_path)
    #: A line waits at most this long for its transaction: after a crash or power cut, at
    #: most the last flush_ms of history is missing.
    flush_ms: int = _setting(100, _between(1, 60000))
    #: Lines waiting for the disk at most; past it new lines are delivered but not stored.
    queue: int = _setting(10000, _between(100, 10_000_000))


@dataclass(frozen=True)
class HistoryConfig:
    """What a room remembers, and what a joiner is shown of it."""

    #: Lines shown to someone joining a room whose client cannot ask for history
    #: (no draft/chathistory): irssi, WeeChat, nc. 0: none. At most `window`.
    replay_on_join: int = _setting(20, _at_least(0))
    #: Recent lines each room keeps in memory, for replay and CHATHISTORY without the disk.
    window: int = _setting(200, _between(1, 100_000))
    #: Lines kept per room (older ones are pruned); 0 turns history off.
    max_lines: int = _setting(10000, _at_least(0))
    #: How long a line is kept; null: no age limit.
    max_age: str | None = _setting("30d", _duration)
    #: The most lines one CHATHISTORY answer holds (ISUPPORT CHATHISTORY=).
    chathistory_max: int = _setting(1000, _between(1, 100_000))

    @property
    def enabled(self) -> bool:
        return self.max_lines > 0

    @property
    def window_lines(self) -> int:
        """Lines a room's window keeps: `window`, but never more than `max_lines`."""
        return min(self.window, self.max_lines)

    @property
    def max_age_seconds(self) -> int | None:
        return None if self.max_age is None else duration_seconds(self.max_age)

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        if self.replay_on_join > self.window:
            yield (
                "replay_on_join",
                f"must be at most window ({self.window}), got {self.replay_on_join}",
            )


@dataclass(frozen=True)
class LogConfig:
    """Where the server's log goes, in which form, and how much of it."""

    #: A file to append to (reopened on SIGHUP, for logrotate); null: stderr (the journal
    #: under systemd).
    file: str | None = _setting(None, _log_file)
    #: text: one line for people; json: one JSON object per line.
    format: str = _setting("text", _log_format)
    level: str = _setting("INFO", _log_level, normalize=str.upper)


@dataclass(frozen=True)
class MetricsConfig:
    """The optional HTTP endpoint for Prometheus: /metrics and /healthz."""

    #: host:port; keep it on loopback (or behind a firewall): it is not authenticated.
    listen: str = _setting("127.0.0.1:9108", _listen_address)

    @property
    def address(self) -> tuple[str, int]:
        address = split_listen(self.listen)
        assert address is not None, self.listen
        return address


#: Who may register an account: anyone, only server operators (for others), or nobody.
REGISTRATION_MODES = ("open", "operators", "closed")


def _registration(value: str) -> str | None:
    if value not in REGISTRATION_MODES:
        return f"must be one of {', '.join(REGISTRATION_MODES)}, got {_describe(value)}"
    return None


@dataclass(frozen=True)
class AccountsConfig:
    """Registered accounts: who may register, what a password needs, how a nick is kept."""

    #: open: anyone registers their nick; operators: only server operators register
    #: accounts (for others); closed: nobody (accounts already kept still log in).
    registration: str = _setting("open", _registration)
    #: REGISTER may come before the connection is complete (draft/account-registration
    #: before-connect).
    register_before_connect: bool = _setting(True)
    #: REGISTER needs an email address (kept, never mailed: there is no verification).
    email_required: bool = _setting(False)
    min_password_length: int = _setting(8, _between(1, 300))
    #: How long someone who takes a registered nick without logging in keeps it before
    #: they are renamed to a guest nick.
    nick_grace: str = _setting("30s", _duration)
    #: Failed logins allowed per address, and per account, in a minute (then refused).
    failed_logins_per_minute: int = _setting(5, _between(1, 1000))

    @property
    def nick_grace_seconds(self) -> int:
        return duration_seconds(self.nick_grace)


#: The URL schemes redis-py's `Redis.from_url` takes: TCP, TCP over TLS, a Unix socket.
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
#: A node's name and the Redis key prefix: both go into Redis keys (and the node's name into
#: what other nodes log), so a short, plain word; no `:` or `{`, which mean something there.
_REDIS_WORD = re.compile(r"[A-Za-z0-9._-]{1,32}")


def _redis_word(value: str) -> str | None:
    if _REDIS_WORD.fullmatch(value) is None:
        return f"must be 1 to 32 letters, digits, '.', '-' or '_', got {_describe(value)}"
    return None


def _redis_url(value: str) -> str | None:
    """Where the cluster's Redis listens, as `redis.Redis.from_url` takes it. The problem
    never quotes a password the URL carries (it goes to the log)."""
    shown = _describe(_without_password(value))
    if not value.startswith(REDIS_SCHEMES):
        return (
            "expected a URL starting redis://, rediss:// or unix://, such as "
            f"redis://127.0.0.1:6379/0, got {shown}"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return f"must not contain spaces or control characters, got {shown}"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (reading it is the check: a bad port raises)
    except ValueError as exc:  # a bad port, an unclosed [ of an IPv6 address
        return f"not a valid URL ({exc}), got {shown}"
    if parts.scheme == "unix" and not parts.path:
        return f"needs the socket's path, such as unix:///run/redis/redis.sock, got {shown}"
    return None


def _without_password(url: str) -> str:
    """`redis://:secret@host` as `redis://:***@host`."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return url
    return url if not password else url.replace(f":{password}@", ":***@", 1)


@dataclass(frozen=True)
class ClusterConfig:
    """Several ircish-server nodes as one network, through one Redis (issue 17). Absent
    (or null): a single process, as before."""

    #: redis://host:port/db, rediss:// (TLS) or unix:///path. May carry a password, so it is
    #: kept out of reprs.
    redis: str = _setting(check=_redis_url, repr=False)
    #: This node's name, unique in the network; None (null): server.name.
    node: str | None = _setting(None, _redis_word)
    #: How long a node that stops renewing its lease keeps its users before the other nodes
    #: remove them.
    lease_ms: int = _setting(10000, _between(1000, 600_000))
    #: How long a command waits for Redis to order it before the user is told it failed.
    timeout_ms: int = _setting(5000, _between(100, 60_000))
    #: Every Redis key starts with it, so several networks can share one Redis.
    prefix: str = _setting("ircish", _redis_word)


@dataclass(frozen=True)
class Config:
    """The whole configuration; build it with `load_config` or `parse_config`."""

    server: ServerConfig = field(default_factory=ServerConfig)
    limits: Limits = field(default_factory=Limits)
    rooms: tuple[RoomConfig, ...] = ()
    log: LogConfig = field(default_factory=LogConfig)
    #: None (the default, or `tls: null`): plain TCP only.
    tls: TlsConfig | None = None
    operators: tuple[OperatorConfig, ...] = ()
    store: StoreConfig = field(default_factory=StoreConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    #: None (the default, or `metrics: null`): no HTTP endpoint.
    metrics: MetricsConfig | None = None
    #: None (the default, or `websocket: null`): no WebSocket listener.
    websocket: WebSocketConfig | None = None
    #: None (the default, or `cluster: null`): a single process, the network's only node.
    cluster: ClusterConfig | None = None

    @property
    def node_name(self) -> str:
        """This node's name in the network: cluster.node, or else server.name (a single
        process is a network of one node, named after the server)."""
        if self.cluster is not None and self.cluster.node is not None:
            return self.cluster.node
        return self.server.name

    def _cross_checks(self) -> Iterator[tuple[str, str]]:
        if self.tls is not None and self.tls.port != 0 and self.tls.port == self.server.port:
            yield ("tls.port", f"must differ from server.port (both are {self.tls.port})")
        websocket = self.websocket
        if websocket is not None:
            if websocket.tls and self.tls is None:
                yield ("websocket.tls", "needs the tls: section (its certificate and key)")
            for key, taken in (
                ("server.port", self.server.port),
                ("tls.port", self.tls and self.tls.port),
            ):
                if websocket.port != 0 and websocket.port == taken:
                    yield ("websocket.port", f"must differ from {key} (both are {websocket.port})")
        if self.metrics is not None:
            port = self.metrics.address[1]
            for key, taken in (
                ("server.port", self.server.port),
                ("tls.port", self.tls and self.tls.port),
                ("websocket.port", self.websocket and self.websocket.port),
            ):
                if port != 0 and port == taken:
                    yield ("metrics.listen", f"its port must differ from {key} (both are {port})")
        seen: dict[str, int] = {}
        for index, room in enumerate(self.rooms):
            where = f"rooms[{index}]"
            if len(room.name) > self.limits.room_length:
                yield (
                    f"{where}.name",
                    (
                        f"room names may be at most {self.limits.room_length} characters "
                        f"(limits.room_length), got {len(room.name)}"
                    ),
                )
            if len(room.topic) > self.limits.topic_length:
                yield (
                    f"{where}.topic",
                    (
                        f"topics may be at most {self.limits.topic_length} characters "
                        f"(limits.topic_length), got {len(room.topic)}"
                    ),
                )
            folded = casefold(room.name)
            if folded in seen:
                yield (
                    f"{where}.name",
                    f"duplicate room {_describe(room.name)} (same as rooms[{seen[folded]}])",
                )
            seen.setdefault(folded, index)
        # Casefolded like nicks, so `Alice` and `alice` cannot be two operators with two
        # passwords whichever way OPER compares names.
        operator_seen: dict[str, int] = {}
        for index, operator in enumerate(self.operators):
            folded = casefold(operator.name)
            if folded in operator_seen:
                yield (
                    f"operators[{index}].name",
                    (
                        f"duplicate operator {_describe(operator.name)} "
                        f"(same as operators[{operator_seen[folded]}])"
                    ),
                )
            operator_seen.setdefault(folded, index)
        cluster = self.cluster
        if cluster is not None:
            if self.store.path is not None:
                yield (
                    "store.path",
                    (
                        "must be null with cluster: (in a cluster, history, accounts and "
                        "permanent rooms are kept in Redis, at cluster.redis)"
                    ),
                )
            # The node is named after the server unless told; that name goes into Redis keys.
            if cluster.node is None and _redis_word(self.server.name) is not None:
                yield (
                    "cluster.node",
                    (
                        f"must be given: server.name ({_describe(self.server.name)}) cannot "
                        "name the node (1 to 32 letters, digits, '.', '-' or '_')"
                    ),
                )

    def with_console_operator(self, name: str, token: str) -> Config:
        """A copy with one more operator: `name`, whose password is `token` (kept only as a
        hash), and who can OPER only from this machine (`LOOPBACK_HOSTS`). ircish-server
        adds one when the config has no `operators:`, so someone at the console can
        moderate out of the box (issue 11)."""
        entry = {"name": name, "password": hash_password(token), "hosts": list(LOOPBACK_HOSTS)}
        # Through the same checks as the file's operators: a bad name fails here, not at OPER.
        operator = _build(OperatorConfig, entry, "operators", "console operator")
        return dataclasses.replace(self, operators=(*self.operators, operator))

    def with_overrides(
        self,
        host: str | None = None,
        port: int | None = None,
        log_level: str | None = None,
    ) -> Config:
        """A copy with command-line overrides applied; None leaves a setting as it is."""
        source = "command line"
        server_changes: dict[str, Any] = {}
        if host is not None:
            server_changes["host"] = _read_field(ServerConfig, "host", host, "--host", source)
        if port is not None:
            server_changes["port"] = _read_field(ServerConfig, "port", port, "--port", source)
        config = self
        if server_changes:
            config = dataclasses.replace(
                config, server=dataclasses.replace(config.server, **server_changes)
            )
        tls = config.tls
        if port is not None and tls is not None and tls.port != 0 and tls.port == port:
            raise ConfigError(source, "--port", f"{port} is already tls.port")
        if log_level is not None:
            level = _read_field(LogConfig, "level", log_level, "--log-level", source)
            config = dataclasses.replace(config, log=dataclasses.replace(config.log, level=level))
        return config


# --- reloading ------------------------------------------------------------------------------

#: Settings a running server cannot take (listeners, its name, the store, the metrics
#: listener, the rooms' window size, joining or leaving a cluster and how it reaches and
#: names itself there): a reload keeps what the server started with, and says so. `tls` is
#: the whole section coming or going; its cert, key and client_ca do reload, and so does
#: cluster.timeout_ms.
RESTART_ONLY = frozenset(
    {
        "server.name",
        "server.host",
        "server.port",
        "server.sender_threads",
        "tls",
        "tls.port",
        "store.path",
        "store.flush_ms",
        "store.queue",
        "metrics",
        "metrics.listen",
        "websocket",
        "websocket.port",
        "websocket.tls",
        "history.window",
        "cluster",
        "cluster.redis",
        "cluster.node",
        "cluster.prefix",
        "cluster.lease_ms",
    }
)


def changed_settings(old: object, new: object, path: str = "") -> list[str]:
    """The key paths whose values differ between two configs, finest first: `limits.
    flood_rate`, `rooms` (a list is one setting), `tls` (a section added or removed)."""
    if dataclasses.is_dataclass(old) and type(old) is type(new):
        changed = []
        for spec in dataclasses.fields(old):
            changed += changed_settings(
                getattr(old, spec.name), getattr(new, spec.name), _join(path, spec.name)
            )
        return changed
    return [] if old == new else [path]


def check_again(config: object, source: str, path: str = "") -> None:
    """Run every section's cross-checks again (a reload puts restart-only values back into
    the file's config, which must still hold together). ConfigError if one fails."""
    if not dataclasses.is_dataclass(config):
        return
    cross_checks = getattr(config, "_cross_checks", None)
    if cross_checks is not None:
        for relative, problem in cross_checks():
            raise ConfigError(source, _join(path, relative), problem)
    for spec in dataclasses.fields(config):
        check_again(getattr(config, spec.name), source, _join(path, spec.name))


def describe_setting(value: object) -> str:
    """A setting's value as one would write it in the file: `6667`, `irc.example`, `null`,
    `{listen: '127.0.0.1:9108'}`; a URL's password as `***` (a reload names the value a
    restart-only setting keeps, to the log and the operator: cluster.redis may carry one)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...")


def _plain(value: object) -> object:
    """Tuples as lists, all the way down, and URLs without their password, for
    yaml.safe_dump."""
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, str) and "://" in value:
        return _without_password(value)
    return value


def setting(config: object, path: str) -> Any:
    """The value at a key path (`server.port`)."""
    for key in path.split("."):
        config = getattr(config, key)
    return config


def with_setting(config: Any, path: str, value: Any) -> Any:
    """A copy of `config` with the value at `path` replaced (no checks: for values taken
    from another checked config)."""
    key, _, rest = path.partition(".")
    if rest:
        value = with_setting(getattr(config, key), rest, value)
    return dataclasses.replace(config, **{key: value})


# --- public entry points --------------------------------------------------------------------


def default_config() -> Config:
    """The configuration used when no file is given: every setting at its default."""
    return Config()


def load_config(path: str | os.PathLike[str], *, empty_ok: bool = True) -> Config:
    """Read and validate a YAML config file; an empty file means all defaults (unless
    `empty_ok` is False: a reload, where an empty file is far likelier a half-written one
    than a wish to go back to every default).

    Raises `ConfigError` for an unreadable file, bad YAML or any invalid setting.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not valid UTF-8 (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictSafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"not valid YAML ({_describe_yaml_error(exc)})") from None
    if data is None and not empty_ok:
        raise ConfigError(
            source,
            "",
            "the file is empty (or only comments): the running config is kept rather than "
            "every setting reset to its default; restart to run on defaults",
        )
    return parse_config(data, source)


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate an already-loaded YAML object (a dict, or None for all defaults).

    `source` names where the data came from in error messages.
    """
    if data is None:
        return Config()
    if not isinstance(data, dict):
        raise ConfigError(
            source, "", f"the top level must be a mapping of settings, got {_describe(data)}"
        )
    return _build(Config, data, "", source)


#: Settings that moved, by their old key path: where to, and how to write it there (`{}`:
#: the value the file gave).
_MOVED = {"log_level": ("log.level", "log: {{level: {}}}")}


# --- the generic walker ---------------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: object, path: str, source: str) -> Any:
    """Make a `cls` instance from a mapping, checking every key against the schema."""
    if not isinstance(data, dict):
        raise ConfigError(source, path, f"expected a mapping, got {_describe(data)}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        key_path = _join(path, _key_text(key))
        if key not in known:
            moved = _MOVED.get(key_path)
            if moved is None:
                raise ConfigError(source, key_path, "unknown key")
            where, how = moved
            written = how.format(_describe(raw).strip("'"))
            raise ConfigError(source, key_path, f"moved to {where} (write `{written}`)")
        values[key] = _read_field(cls, key, raw, key_path, source)
    for name, spec in known.items():
        required = spec.default is dataclasses.MISSING
        required = required and spec.default_factory is dataclasses.MISSING
        if required and name not in values:
            raise ConfigError(source, _join(path, name), "required key is missing")
    instance = cls(**values)
    cross_checks = getattr(instance, "_cross_checks", None)
    if cross_checks is not None:
        for relative, problem in cross_checks():
            raise ConfigError(source, _join(path, relative), problem)
    return instance


def _read_field(cls: type, name: str, raw: object, path: str, source: str) -> Any:
    """Convert one value to the field's declared type, then apply the field's own rule."""
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    if raw is None and dataclasses.is_dataclass(_hints(cls)[name]):
        # `server:` with every line under it commented out: the section's defaults.
        return spec.default_factory()  # type: ignore[misc]
    value = _convert(_hints(cls)[name], raw, path, source)
    if value is None:
        return None
    if spec.metadata.get("normalize") is not None:
        value = spec.metadata["normalize"](value)
    check = spec.metadata.get("check")
    if check is not None:
        problem = check(value)
        if problem is not None:
            raise ConfigError(source, path, problem)
    each = spec.metadata.get("each")
    if each is not None:
        for index, item in enumerate(value):
            problem = each(item)
            if problem is not None:
                raise ConfigError(source, f"{path}[{index}]", problem)
    return value


def _convert(hint: Any, raw: object, path: str, source: str) -> Any:
    """_Check `raw` against a type hint and return it in that type."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, raw, path, source)
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise ConfigError(source, path, f"expected a list, got {_describe(raw)}")
        return tuple(
            _convert(item_hint, item, f"{path}[{index}]", source) for index, item in enumerate(raw)
        )
    if origin in (types.UnionType, typing.Union):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if raw is None:
            return None
        if len(options) == 1 and dataclasses.is_dataclass(options[0]):
            # An optional section (`tls:`): absent or null means off, a mapping turns it on.
            return _build(options[0], raw, path, source)
        if len(options) == 1 and _matches(options[0], raw):
            return _convert(options[0], raw, path, source)
        raise ConfigError(source, path, _wrong_type(options[0], raw, or_null=True))
    if not _matches(hint, raw):
        raise ConfigError(source, path, _wrong_type(hint, raw))
    if hint is float:
        if not math.isfinite(raw):  # type: ignore[arg-type]
            raise ConfigError(source, path, f"expected a finite number, got {_describe(raw)}")
        return float(raw)  # type: ignore[arg-type]
    return raw


def _matches(hint: Any, raw: object) -> bool:
    # bool is a subclass of int, but `port: true` is a mistake, not port 1.
    if isinstance(raw, bool):
        return hint is bool
    if hint is float:
        return isinstance(raw, (int, float))
    if hint in (int, str):
        return isinstance(raw, hint)
    raise TypeError(f"config schema uses an unsupported type: {hint!r}")


def _type_name(hint: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[hint]


def _wrong_type(hint: Any, raw: object, *, or_null: bool = False) -> str:
    """The problem with a value of the wrong type, with how to fix it when quotes are it."""
    expected = _type_name(hint) + (" or null" if or_null else "")
    return f"expected {expected}, got {_describe(raw)}{_quoting_hint(hint, raw)}"


def _quoting_hint(hint: Any, raw: object) -> str:
    """Quotes decide a YAML scalar's type (issue 11): `ping_interval: "60"` is a string and
    `name: 42` a number. Say which way to fix it, but only when that fix alone would do."""
    # date: `motd: 2024-05-01` is read as a date, and quoting makes it the text it looks like.
    if hint is str and isinstance(raw, (int, float, datetime.date)):  # bool is an int
        return " (quote it)"
    if hint in (int, float) and isinstance(raw, str):
        unquoted = _unquoted(raw)
        if _matches(hint, unquoted) and math.isfinite(unquoted):  # type: ignore[arg-type]
            return " (write it without quotes)"
    return ""


def _unquoted(text: str) -> object:
    """What YAML reads when `text` is written without quotes (text itself if it can't)."""
    try:
        return yaml.load(text, Loader=_StrictSafeLoader)
    except yaml.YAMLError:
        return text


# --- message helpers ------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _key_text(key: object) -> str:
    if isinstance(key, str) and key and key.isprintable() and key.strip() == key:
        return key
    return _describe(key)


def _describe(value: object) -> str:
    """A value as the user wrote it in YAML, short and on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = repr(value) if isinstance(value, (str, int, float)) else " ".join(str(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or exc.context or "syntax error"
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())


class _StrictSafeLoader(yaml.SafeLoader):
    """`yaml.safe_load`'s loader, but a key written twice is an error instead of last-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` may legitimately be overridden by later keys
            key = self.construct_object(key_node, deep=False)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable key; the base constructor reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {_describe(key)}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
