"""`ircish-client`: the Click layer. It checks the arguments, builds a `SessionConfig`, picks
the interactive UI (stdin and stdout are a terminal) or the scripted one, connects, and exits
with the session's status: 0 after /quit or end of input, 1 if the server can't be reached
or is lost for good, 2 for bad arguments.
"""

from __future__ import annotations

import logging
import sys

import click

from ircish import __version__
from ircish.client.session import ConnectError, Session, SessionConfig
from ircish.client.ui import InteractiveUI, ScriptedUI, colour_wanted, default_streams

EXAMPLES = """\b
Examples:
  ircish-client --nick carol                       # 127.0.0.1:6667
  ircish-client -n carol --join '#general' --join '#ops'
  IRCISH_HOST=chat.example IRCISH_NICK=carol ircish-client
  printf '/join #ops\\nhello\\n' | ircish-client --nick bot

\b
In the chat: /join #room, /msg nick text, /query nick, /switch #room,
/who, /list, /help; plain text goes to the current room or private chat.
"""

#: Characters no IRC nick may hold; the server judges the rest.
_NICK_FORBIDDEN = set(" ,*?!@:#&") | {chr(c) for c in range(33)} | {"\x7f"}


def _check_nick(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (not value or set(value) & _NICK_FORBIDDEN or value[0] in "$:"):
        raise click.BadParameter(f"{value!r} is not a nick (no spaces, no ,*?!@:#&)")
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
    default=6667,
    show_default=True,
    help="Server port.",
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
    "--password", envvar="IRCISH_PASSWORD", show_envvar=True, help="Server password (PASS)."
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
    port: int,
    rooms: tuple[str, ...],
    password: str | None,
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
    config = SessionConfig(
        nick=nick,
        host=host,
        port=port,
        realname=realname,
        password=password,
        rooms=rooms,
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
        click.echo(f"ircish-client: {exc}", err=True)
        sys.exit(1)
    sys.exit(ui.run(session))


if __name__ == "__main__":
    main()
