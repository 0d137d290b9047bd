"""`ircish-server`: a thin Click layer that loads the config and runs a `Server`."""

from __future__ import annotations

import logging
import resource
import signal
import sys
import threading

import click

from ircish import __version__
from ircish.config import LOG_LEVELS, Config, ConfigError, default_config, load_config

log = logging.getLogger("ircish")


def check_os_limits(max_clients: int) -> None:
    """Every client is a descriptor and a thread: lift the soft file limit to the
    hard one, and say clearly if the machine cannot hold `max_clients`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Descriptors the server needs besides clients: listener, poller pipe, logs.
    if hard < max_clients + 32:
        log.warning(
            "open-file limit is %d but max_clients is %d: at most about %d clients "
            "(raise it with `ulimit -n` or LimitNOFILE=)",
            hard,
            max_clients,
            hard - 32,
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


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Example: ircish-server -c examples/config.yaml --port 6667",
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
    help="Logging verbosity (overrides log_level).",
)
@click.version_option(__version__, prog_name="ircish-server")
def main(
    config_path: str | None, host: str | None, port: int | None, log_level: str | None
) -> None:
    """Run an ircish chat server.

    IRC clients (irssi, WeeChat, HexChat, ircish-client) connect as to any IRC
    server; `nc HOST PORT` gives a human text session (/nick carol, /join
    #general, then type). SIGINT or SIGTERM shuts down cleanly.
    """
    try:
        config = load_config(config_path) if config_path else default_config()
        config = config.with_overrides(host=host, port=port, log_level=log_level)
    except ConfigError as exc:
        click.echo(f"ircish-server: {exc}", err=True)
        sys.exit(2)
    run(config, config_path or "built-in defaults")


def run(config: Config, source: str = "config") -> None:
    """Start a server and serve until SIGINT/SIGTERM. `source` names the config in errors."""
    from ircish.server import ListenError, Server

    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    check_os_limits(config.limits.max_clients)
    server = Server(config)
    # Handlers first: a signal that arrives once clients can connect must
    # already mean "shut down cleanly".
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
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
    except OSError as exc:
        where = f"{config.server.host}:{config.server.port}"
        click.echo(f"ircish-server: cannot listen on {where}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    listening = f"ircish-server listening on {server.address[0]}:{server.address[1]}"
    if server.tls_address is not None:
        listening += f", TLS on {server.tls_address[0]}:{server.tls_address[1]}"
    click.echo(listening, err=True)
    while not stop.wait(0.5):  # a timed wait lets the main thread run signal handlers
        pass
    server.shutdown("Server shutting down")


if __name__ == "__main__":
    main()
