"""`ircish-client`: the Click layer. It checks the arguments, builds a `SessionConfig` (with
the TLS context, made once), picks the interactive UI (stdin and stdout are a terminal) or
the scripted one, connects, and exits with the session's status: 0 after /quit or end of
input, 1 if the server can't be reached or is lost for good, 2 for bad arguments.
"""

from __future__ import annotations

import logging
import ssl
import sys

import click

from ircish import __version__
from ircish.client.session import HISTORY_ON_JOIN, ConnectError, Session, SessionConfig
from ircish.client.ui import InteractiveUI, ScriptedUI, colour_wanted, default_streams
from ircish.protocol import NICK_SPECIALS, valid_nick
from ircish.tls import client_context, describe_ssl_error

EXAMPLES = """\b
Examples:
  ircish-client --nick carol                       # 127.0.0.1:6667
  ircish-client -n carol --join '#general' --join '#ops'
  IRCISH_HOST=chat.example IRCISH_NICK=carol ircish-client
  ircish-client -n carol --host chat.example --tls  # TLS, port 6697
  printf '/join #ops\\nhello\\n' | ircish-client --nick bot
  ircish-client -n carol --account carol  # asks for the account's password

\b
In the chat: /join #room, /msg nick text, /query nick, /switch #room,
/history, /who, /list, /register, /login, /help; plain text goes to the current room or
private chat.
"""

PLAIN_PORT, TLS_PORT = 6667, 6697
#: Said after "certificate verify failed: ...".
CERTIFICATE_HINT = "trust its CA with --ca-file FILE, or skip the check with --insecure"


def _check_nick(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # The server's own rule, before any connection; its length limit (NICKLEN) is the
    # server's to judge, as we have not heard it yet.
    if value is not None and not valid_nick(value):
        raise click.BadParameter(
            f"{value!r} is not a nick: it starts with a letter or one of {NICK_SPECIALS} and "
            f"holds only letters, digits, '-' and those (e.g. carol, carol_2)"
        )
    return value


def _check_account(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Servers name accounts in their own ways (ircish: as nicks; others: emails); only what
    # no IRC line can carry in one word is refused here.
    if value is not None and (not value or any(c.isspace() or ord(c) < 32 for c in value)):
        raise click.BadParameter(f"{value!r} is not an account name (one word, no spaces)")
    return value


def _check_rooms(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    rooms: list[str] = []
    for item in value:
        for name in item.split(","):
            name = name.strip()
            if not name:
                raise click.BadParameter(f"{item!r} has an empty room name")
            if any(c in name for c in " \x07:") or any(ord(c) < 32 for c in name):
                raise click.BadParameter(f"{name!r} is not a room name")
            rooms.append(name if name.startswith("#") else "#" + name)
    return tuple(rooms)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXAMPLES,
)
@click.option(
    "-n",
    "--nick",
    envvar="IRCISH_NICK",
    show_envvar=True,
    required=True,
    callback=_check_nick,
    help="Your nick.",
)
@click.option(
    "--host",
    envvar="IRCISH_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Server address.",
)
@click.option(
    "-p",
    "--port",
    envvar="IRCISH_PORT",
    show_envvar=True,
    type=click.IntRange(1, 65535),
    help=f"Server port.  [default: {PLAIN_PORT}, or {TLS_PORT} with --tls]",
)
@click.option(
    "--tls/--no-tls",
    envvar="IRCISH_TLS",
    show_envvar=True,
    default=False,
    help="Connect with TLS, checking the server's certificate against the system's CAs.",
)
@click.option(
    "--ca-file",
    envvar="IRCISH_CA_FILE",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    help="With --tls: trust the CA certificates in this PEM file instead of the system's.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="With --tls: do not check the server's certificate (anyone in between can read).",
)
@click.option(
    "-j",
    "--join",
    "rooms",
    multiple=True,
    callback=_check_rooms,
    metavar="#ROOM",
    help="Join a room once connected (repeat it, or give a,b); the last one is current.",
)
@click.option(
    "--history",
    envvar="IRCISH_HISTORY",
    show_envvar=True,
    type=click.IntRange(min=0),
    default=HISTORY_ON_JOIN,
    show_default=True,
    metavar="N",
    help="Show the last N lines of a room on joining it (0: none); /history shows more.",
)
@click.option(
    "--password",
    envvar="IRCISH_PASSWORD",
    show_envvar=True,
    help="The server's password (PASS), where it has one; not an account's.",
)
@click.option(
    "--account",
    envvar="IRCISH_ACCOUNT",
    show_envvar=True,
    callback=_check_account,
    metavar="NAME",
    help="Log in to this account (SASL, SCRAM-SHA-256 where offered; else NickServ).",
)
@click.option(
    "--account-password",
    envvar="IRCISH_ACCOUNT_PASSWORD",
    show_envvar=True,
    metavar="PASSWORD",
    help="The account's password; alone, logs in to the account named after --nick. "
    "With --account and none given, asked for on a terminal.",
)
@click.option("--realname", help="Real name shown by /whois (default: your nick).")
@click.option(
    "--reconnect/--no-reconnect",
    default=True,
    show_default=True,
    help="Reconnect (1, 2, 4 ... 30 s apart) and rejoin your rooms if the connection is lost.",
)
@click.option("--debug", is_flag=True, help="Log every line sent and received to stderr.")
@click.version_option(__version__, prog_name="ircish-client")
def main(
    nick: str,
    host: str,
    port: int | None,
    tls: bool,
    ca_file: str | None,
    insecure: bool,
    rooms: tuple[str, ...],
    history: int,
    password: str | None,
    account: str | None,
    account_password: str | None,
    realname: str | None,
    reconnect: bool,
    debug: bool,
) -> None:
    """Chat on an ircish (or any IRC) server from a terminal.

    On a terminal you get an input line that incoming messages never overwrite, with
    history and Tab completion. With stdin not a terminal, each input line is a line you
    typed, events are printed one per line, and end of input quits.
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if debug:
        logging.getLogger("ircish").setLevel(logging.DEBUG)
    tls_context = _tls_context(tls, ca_file, insecure)
    account, account_password = _login(nick, account, account_password)
    config = SessionConfig(
        nick=nick,
        host=host,
        port=port or (TLS_PORT if tls else PLAIN_PORT),
        tls_context=tls_context,
        realname=realname,
        password=password,
        account=account,
        account_password=account_password,
        rooms=rooms,
        history=history,
        reconnect=reconnect,
    )
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if interactive:
        ui: InteractiveUI | ScriptedUI = InteractiveUI(colour=colour_wanted(sys.stdout))
    else:
        ui = ScriptedUI(*default_streams())
    session = Session(config, ui.on_event)
    try:
        session.start()
    except ConnectError as exc:
        hint = f" ({CERTIFICATE_HINT})" if exc.certificate else ""
        click.echo(f"ircish-client: {exc}{hint}", err=True)
        sys.exit(1)
    sys.exit(ui.run(session))


def _login(nick: str, account: str | None, password: str | None) -> tuple[str | None, str | None]:
    """The account to log in to and its password: the nick's account when only the password
    is given; asked for (not echoed) when only the account is, if there is a terminal to ask
    on. A password on the command line is seen by anyone who can list processes: the
    environment or the question is safer."""
    if password is not None:
        return account or nick, password
    if account is None:
        return None, None
    if not sys.stdin.isatty():
        raise click.UsageError(
            "--account needs the account's password: --account-password or "
            "IRCISH_ACCOUNT_PASSWORD (on a terminal, the client asks for it)"
        )
    password = click.prompt(f"Password for account {account}", hide_input=True, err=True)
    return account, password


def _tls_context(tls: bool, ca_file: str | None, insecure: bool) -> ssl.SSLContext | None:
    if not tls:
        for given, option in ((ca_file, "--ca-file"), (insecure, "--insecure")):
            if given:
                raise click.UsageError(f"{option} only makes sense with --tls")
        return None
    if ca_file and insecure:
        raise click.UsageError("--ca-file and --insecure contradict each other")
    try:
        return client_context(verify=not insecure, ca_file=ca_file)
    except ssl.SSLError as exc:
        raise click.BadParameter(
            f"no CA certificate in {ca_file!r} ({describe_ssl_error(exc)})",
            param_hint="--ca-file",
        ) from None
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {ca_file!r} ({exc.strerror or exc})", param_hint="--ca-file"
        ) from None


if __name__ == "__main__":
    main()
