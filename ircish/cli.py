"""`ircish-server`: a thin Click layer that loads the config and runs a `Server`, plus the
`hash-password` subcommand that makes the password hashes the `operators:` section holds."""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import secrets
import signal
import socket
import sys
import threading
import typing
from collections.abc import Callable

import click
from click.core import ParameterSource

from ircish import __version__
from ircish.config import (
    LOG_LEVELS,
    Config,
    ConfigError,
    OperatorConfig,
    default_config,
    load_config,
)
from ircish.passwords import hash_password

log = logging.getLogger("ircish")

#: The operator ircish-server makes when the config names none (see `run`).
CONSOLE_OPERATOR = "admin"


#: A SIGHUP that came before the server could reload (see `main`).
EARLY_HUP = threading.Event()


def notify_systemd(state: str) -> None:
    """Tell systemd how the service is (sd_notify: `READY=1` once it listens, so a
    `Type=notify` unit's `systemctl start` returns only then, and `STOPPING=1`). Nothing
    without $NOTIFY_SOCKET; a socket that fails is logged, never fatal."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path  # "@": abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not tell systemd %s: %s", state, exc.strerror or exc)


def check_os_limits(max_clients: int) -> None:
    """Every client is a descriptor and a thread: lift the soft file limit as far as the
    server can use, and say clearly if the machine cannot hold `max_clients`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Descriptors the server needs besides clients: listeners, poller pipe, logs.
    needed = max_clients + 32
    # Where the hard limit is unlimited (macOS), asking for it fails: the kernel caps a
    # process lower (kern.maxfilesperproc). Ask for what max_clients needs instead.
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-file limit is %d but max_clients is %d: at most about %d clients "
            "(raise it with `ulimit -n` or LimitNOFILE=)",
            soft,
            max_clients,
            soft - 32,
        )
    for path in ("/proc/sys/kernel/threads-max", "/proc/sys/kernel/pid_max"):
        try:
            with open(path) as f:
                threads = int(f.read())
        except (OSError, ValueError):
            continue
        if threads < max_clients + 32:
            log.warning(
                "%s is %d but max_clients is %d and each client needs a thread",
                path,
                threads,
                max_clients,
            )


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "Example: ircish-server -c examples/config.yaml --port 6667\n\n"
        "Without a command, the server runs; the options above are for running it."
    ),
)
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    envvar="IRCISH_CONFIG",
    help="YAML config file (see examples/config.yaml). Default: built-in defaults.",
)
@click.option("--host", help="Address to listen on (overrides server.host).")
@click.option("--port", type=int, help="TCP port (overrides server.port; 0 picks a free one).")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Logging verbosity (overrides log.level).",
)
@click.version_option(__version__, prog_name="ircish-server")
@click.pass_context
def main(
    ctx: click.Context,
    config_path: str | None,
    host: str | None,
    port: int | None,
    log_level: str | None,
) -> None:
    """Run an ircish chat server.

    IRC clients (irssi, WeeChat, HexChat, ircish-client) connect as to any IRC
    server; `nc HOST PORT` gives a human text session (/nick carol, /join
    #general, then type). SIGINT or SIGTERM shuts down cleanly; SIGHUP reloads
    the config file and reopens the log file.
    """
    if ctx.invoked_subcommand is not None:
        # `--port 7000 hash-password` would silently ignore --port; say so instead.
        # (IRCISH_CONFIG from the environment is fine: it is not a request.)
        for param in ("config_path", "host", "port", "log_level"):
            if ctx.get_parameter_source(param) is ParameterSource.COMMANDLINE:
                option = next(p for p in ctx.command.params if p.name == param)
                raise click.UsageError(
                    f"{option.opts[-1]} is for running the server, not for {ctx.invoked_subcommand}"
                )
        return
    # From here on a SIGHUP is a reload, never the end of the process (its default, exit
    # 129): one that comes before the server can reload is kept for when it can.
    signal.signal(signal.SIGHUP, lambda *_: EARLY_HUP.set())

    def read(empty_ok: bool = False) -> Config:
        config = load_config(config_path, empty_ok=empty_ok) if config_path else default_config()
        return config.with_overrides(host=host, port=port, log_level=log_level)

    try:
        config = read(empty_ok=True)
    except ConfigError as exc:
        click.echo(f"ircish-server: {exc}", err=True)
        sys.exit(2)
    run(config, config_path or "built-in defaults", read if config_path else None)


@main.command("check-config")
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The YAML config file to check.",
)
def check_config_command(config_path: str) -> None:
    """Check a config file the way a start or a reload would, and exit: 0 if it is good,
    2 with one line naming the problem if not. The TLS certificate and key are loaded too,
    and a cluster's Redis must answer (its node name may be in use: by the node itself).

    \b
        ircish-server check-config -c /etc/ircish/config.yaml
    """
    try:
        config = load_config(config_path)
        if config.tls is not None:
            from ircish.tls import server_context

            server_context(config.tls)
    except ConfigError as exc:
        _fail(str(ConfigError(config_path, exc.key_path, exc.problem)))
    if config.cluster is not None:
        import redis

        from ircish.store.redis import redis_client

        client = redis_client(config.cluster.redis, 3.0, 1)
        try:
            client.ping()
        except redis.RedisError as exc:
            _fail(
                f"{config_path}: cluster.redis: cannot reach Redis at {config.cluster.redis}: {exc}"
            )
        finally:
            client.close()
    click.echo(f"{config_path}: OK")


@main.command("hash-password")
def hash_password_command() -> None:
    """Print a hash of a password, for `operators:` in the config.

    On a terminal it asks for the password twice, without showing it. Otherwise it
    reads the first line of stdin, for scripts:

    \b
        echo "$PASSWORD" | ircish-server hash-password

    The hash goes to stdout; put it in an operator's `password:`. OPER <name>
    <password> (or /oper name password) checks a password against it.
    """
    if sys.stdin.isatty():
        # Prompts on stderr, so `ircish-server hash-password > hash.txt` keeps only the hash.
        password = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True, err=True, type=str
        )
    else:
        # Bytes, not the text stream, so what the locale makes of them doesn't matter.
        line = sys.stdin.buffer.readline()
        line = line.removesuffix(b"\n").removesuffix(b"\r")
        password = line.decode("utf-8", "surrogateescape")
    try:
        # A password that isn't UTF-8 could never match one sent over IRC (the server
        # enforces UTF-8), so it is refused rather than hashed as something else.
        password.encode("utf-8")
    except UnicodeEncodeError:
        _fail("the password is not valid UTF-8")
    if not password:
        _fail("the password is empty")
    if any(ch in "\r\n\0" for ch in password):
        _fail("the password contains CR, LF or NUL, which no IRC line can carry")
    click.echo(hash_password(password))


def _fail(problem: str) -> typing.NoReturn:
    """One line on stderr and exit status 2, like a config error."""
    click.echo(f"ircish-server: {problem}", err=True)
    sys.exit(2)


def run(config: Config, source: str = "config", reread: Callable[[], Config] | None = None) -> None:
    """Start a server and serve until SIGINT/SIGTERM; SIGHUP reloads the config (`reread`
    reads it again; None: there is no file) and reopens the log file. `source` names the
    config in errors."""
    from ircish.cluster import ClusterError
    from ircish.commands import command_table
    from ircish.logs import LogSetup
    from ircish.server import ListenError, Server, StoreError

    logs = LogSetup()
    try:
        logs.use(config.log)
    except OSError as exc:
        _fail(f"{source}: log.file: cannot open {config.log.file!r} ({exc.strerror or exc})")
    check_os_limits(config.limits.max_clients)
    console_token = None
    console: tuple[OperatorConfig, ...] = ()
    if not config.operators:
        # Without it, nobody could moderate a config room such as the example's #general:
        # they start with no room operator (issue 11). A fresh token each start, told only
        # on this console, and usable only from this machine.
        console_token = secrets.token_urlsafe()
        config = config.with_console_operator(CONSOLE_OPERATOR, console_token)
        console = config.operators

    def reload_config() -> Config:
        # A reloaded file without operators keeps this start's console operator (and its
        # token); one that names operators ends it, as a start with them would.
        assert reread is not None
        fresh = reread()
        return fresh if fresh.operators else dataclasses.replace(fresh, operators=console)

    server = Server(
        config,
        command_table(),
        reread=reload_config if reread is not None else None,
        source=source,
        logs=logs,
    )
    # Handlers first: a signal that arrives once clients can connect must
    # already mean "shut down cleanly" (or "reload").
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: server.request_reload())
    if EARLY_HUP.is_set():  # came while the server was being built: reload once it runs
        server.request_reload()
    try:
        server.start()
    except ConfigError as exc:
        # Found only when the server reads the files (a TLS key that doesn't match...):
        # still a config error, reported like the others.
        click.echo(f"ircish-server: {ConfigError(source, exc.key_path, exc.problem)}", err=True)
        sys.exit(2)
    except ListenError as exc:
        click.echo(f"ircish-server: cannot listen on {exc.where}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    except StoreError as exc:
        click.echo(f"ircish-server: cannot open the store {exc.where}: {exc}", err=True)
        sys.exit(1)
    except ClusterError as exc:
        click.echo(f"ircish-server: cannot join the network: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        where = f"{config.server.host}:{config.server.port}"
        click.echo(f"ircish-server: cannot listen on {where}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    listening = f"ircish-server listening on {server.address[0]}:{server.address[1]}"
    if server.tls_address is not None:
        listening += f", TLS on {server.tls_address[0]}:{server.tls_address[1]}"
    if server.websocket_address is not None:
        assert config.websocket is not None
        scheme = "wss" if config.websocket.tls else "ws"
        ws_host, ws_port = server.websocket_address
        web = "https" if config.websocket.tls else "http"
        listening += (
            f", WebSocket on {scheme}://{ws_host}:{ws_port}/ "
            f"(the web client: {web}://{ws_host}:{ws_port}/)"
        )
    if server.metrics is not None:
        host, metrics_port = server.metrics.address
        host = f"[{host}]" if ":" in host else host
        listening += f", metrics on http://{host}:{metrics_port}/metrics"
    click.echo(listening, err=True)
    notify_systemd("READY=1")
    if console_token is not None:
        # On the console whatever the log level, and never to a log handler (a journal or
        # file keeps it): the token is a secret.
        click.echo(
            f"No operators in the config: from this machine, type /oper {CONSOLE_OPERATOR} "
            f"{console_token} to moderate (add operators: to the config to turn this off)",
            err=True,
        )
        log.warning(
            "No operators in the config: console operator %s made, its token shown on the "
            "console only",
            CONSOLE_OPERATOR,
        )
    while not stop.wait(0.5):  # a timed wait lets the main thread run signal handlers
        pass
    notify_systemd("STOPPING=1")
    server.shutdown("Server shutting down")


if __name__ == "__main__":
    main()
