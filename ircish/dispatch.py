"""The dispatcher: the command table checked before any handler runs.

It answers 421 (unknown), 451 (not registered) and 461 (not enough parameters) itself,
turns `IRCError` into its numeric, and logs and answers a handler that crashes; the reader
thread goes on. Replies are buffered in the handler's `Context` and sent once the handler is
done, so their order is fixed; a reply that describes a room is sent under the room's lock
instead (`Context.answer_about`), so it is never older than the room's events. The table is
given, never found: the server is handed it (ircish.commands.command_table() builds ours)
and refuses to start without one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from ircish import protocol
from ircish.commands import CommandSpec, Context, SenderSession
from ircish.metrics import UNKNOWN_COMMAND
from ircish.protocol import IRCError, Message, safe_param

if TYPE_CHECKING:
    from ircish.config import Config
    from ircish.world import World

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)


class Dispatcher:
    """The command table and what handlers may use besides their sender: the world, the
    config, the server's name, start time and connection count. Handlers see it as
    `ctx.server`. It does no I/O; a test can drive it with sessions and no socket."""

    def __init__(
        self,
        commands: Mapping[str, CommandSpec],
        world: World,
        config: Config,
        connection_count: Callable[[], int] = lambda: 0,
    ) -> None:
        if not commands:
            raise ValueError("the command table is empty: every line would be answered 421")
        self.commands: Mapping[str, CommandSpec] = MappingProxyType(dict(commands))
        self.world = world
        self.config = config
        self.name = config.server.name
        self.created_text = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.connection_count = connection_count
        #: Time each command into its connection's tally (on with `metrics:`).
        self.timed = False
        #: Asks the server to reload its config (REHASH); the callback gets the lines that
        #: tell the outcome. None where there is no server to reload (a test's dispatcher).
        self.reload: Callable[[Callable[[list[str]], None]], None] | None = None
        #: Where the config came from (382 names it).
        self.config_source = "built-in defaults"
        #: In a cluster: (nodes, registered users here, the most there were) for LUSERS,
        #: given how many are about to register; None: one server, all users its own.
        self.network: Callable[[int], tuple[int, int, int]] | None = None

    def dispatch(self, session: SenderSession, msg: Message) -> None:
        """Check `msg` against the command table and run its handler; send the replies."""
        if self.timed:
            name = msg.command if msg.command in self.commands else UNKNOWN_COMMAND
            started = time.perf_counter()
            self._dispatch(session, msg)
            session.user.conn.tally.time_command(name, time.perf_counter() - started)
        else:
            self._dispatch(session, msg)

    def _dispatch(self, session: SenderSession, msg: Message) -> None:
        cluster = self.world.cluster
        if cluster is not None:  # what this client's messages before it caused comes first
            cluster.settle(msg.command)
        ctx = Context(session, self)
        spec = self.commands.get(msg.command)
        try:
            if spec is None:
                raise IRCError(
                    protocol.ERR_UNKNOWNCOMMAND, safe_param(msg.command), "Unknown command"
                )
            if not session.user.registered and not spec.pre_registration:
                hint = ""
                if session.is_text:
                    # Nick given on a server with a password: what is missing is /pass.
                    waiting = session.user.nick is not None and self.config.server.password
                    hint = (
                        "This server needs a password first: type /pass <password>"
                        if waiting
                        else "Choose a nick first: /nick <name>"
                    )
                raise IRCError(protocol.ERR_NOTREGISTERED, hint or "You have not registered")
            if len(msg.params) < spec.min_params:
                raise spec.not_enough_params()
            spec.handler(ctx, msg)
        except IRCError as exc:
            ctx.reply(exc.numeric, *exc.params)
        except Exception:
            shown = protocol.redacted(msg) or repr(msg)  # never a password in the log
            log.exception("%s: handler for %s failed on %s", session.user, msg.command, shown)
            ctx.reply(
                protocol.ERR_UNKNOWNERROR, msg.command, "Internal server error; it was logged"
            )
        ctx.flush()
