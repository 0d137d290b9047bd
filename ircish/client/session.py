"""One client's conversation with an IRC server: the TCP link (a reader thread, a sending
thread behind a queue; with TLS, ircish/tls.py lets those two threads share it), registration
(CAP negotiation, PASS, NICK, USER, nick fallback), logging in to an account (SASL while
registering, else NickServ; /login and /register), the state the UI reads (our nick and
account, rooms and their members, the current room, the private-chat target), a room's
earlier lines (asked for on joining it and by /history, shown between markers) and
reconnecting with backoff. It knows nothing about terminals: every event goes to one listener
callback that the UI supplies, from whichever thread produced it.
"""

from __future__ import annotations

import email.utils
import itertools
import logging
import queue
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ircish import __version__, modes, sasl
from ircish import protocol as p
from ircish.client.login import Credentials, LoginFailed, SaslLogin, choose_mechanism
from ircish.locks import held
from ircish.protocol import (
    NICKSERV,
    Message,
    ProtocolError,
    casefold,
    parse,
    redacted,
    to_nickserv,
)
from ircish.render import MEMBER_PREFIXES, strip_formatting
from ircish.tls import TlsError, TlsTransport

log = logging.getLogger(__name__)

ROOM_PREFIXES = "#&"
MAX_BACKOFF = 30.0
#: Bytes without a newline after which the server's stream is taken as broken.
READ_LIMIT = 1 << 16
#: Seconds /quit waits for the server to close the link after QUIT before closing it itself.
QUIT_WAIT = 3.0
#: Replies before 001 that no retry can fix: erroneous nick, wrong password, banned.
_FATAL_BEFORE_WELCOME = frozenset({p.ERR_ERRONEUSNICKNAME, p.ERR_PASSWDMISMATCH, "465"})
#: 433 nick in use; 437 nick temporarily unavailable (some servers, after a netsplit).
_NICK_TAKEN = frozenset({p.ERR_NICKNAMEINUSE, "437"})
#: Refusals of a JOIN, naming the room: full, invite-only, banned, bad key, no such room...
_JOIN_REFUSED = frozenset(
    {
        p.ERR_CHANNELISFULL,
        p.ERR_INVITEONLYCHAN,
        p.ERR_BANNEDFROMCHAN,
        p.ERR_BADCHANNELKEY,
        p.ERR_NOSUCHCHANNEL,
        p.ERR_BADCHANMASK,
        "405",  # ERR_TOOMANYCHANNELS
    }
)
#: Commands whose last parameter is a password: PASS <password>, OPER <name> <password>,
#: REGISTER <account> <email> <password>.
# NickServ (protocol.NICKSERV), the services pseudo-user that keeps accounts (ircish's,
# Atheme's, Anope's): what is said to it may hold a password (IDENTIFY, REGISTER), and it
# answers in NOTICEs.
_USERNAME_JUNK = re.compile(r"[^A-Za-z0-9._-]")
#: The burst after 001 (server info, LUSERS, MOTD): shown once, not again on each reconnect.
_WELCOME_BURST = frozenset(
    {"002", "003", "004", "005", "250", "251", "252", "253", "254", "255", "265", "266"}
    | {"375", "372", "376", "422"}
)
#: Refusals of a PRIVMSG/NOTICE that name the refused target in parameter 1: no such nick,
#: server or room, cannot send (+m, +n, banned), and other servers' "you must be identified"
#: (477, 486) and "cannot send to user" (531).
_SEND_REFUSED_TO = frozenset(
    {
        p.ERR_NOSUCHNICK,
        p.ERR_NOSUCHSERVER,
        p.ERR_NOSUCHCHANNEL,
        p.ERR_CANNOTSENDTOCHAN,
        p.ERR_NEEDREGGEDNICK,
        p.ERR_NONONREG,
        p.ERR_CANTSENDTOUSER,
    }
)
#: Refusals of a whole PRIVMSG/NOTICE, whatever its targets (and `FAIL PRIVMSG ...`). Not
#: 417 (input too long), which any long command may earn, and our text is split to fit.
_SEND_REFUSED = frozenset({p.ERR_TOOMANYTARGETS, p.ERR_NORECIPIENT, p.ERR_NOTEXTTOSEND})
#: The IRCv3 capabilities the client asks for, when offered (issue 12), in the order requested:
#: server-time (a line shows when it was said), echo-message (our own line is shown as the
#: server relays it), multi-prefix and away-notify (read in `_apply` and `_away_changed`),
#: message-tags and batch (tags are parsed and unknown ones ignored; BATCH and TAGMSG lines
#: are not shown), draft/chathistory (issue 13: we ask for a room's earlier lines, and the
#: server does not replay them on join; with --history 0 too, which means none). Not
#: labeled-response: PING barriers already tie replies to what we sent. Not
#: draft/event-playback: history is what people said, not who came and went.
WANTED_CAPS = (
    "server-time",
    "echo-message",
    "multi-prefix",
    "away-notify",
    "message-tags",
    "batch",
    "draft/chathistory",
)
#: Lines with nothing for a person to read: a TAGMSG (typing notices, reactions: tags without
#: text) and a labeled-response ACK. render() would show them as raw words. (A batch's start
#: and end are read in `_batch`; the lines of any batch but history are shown as they come.)
_NOT_SHOWN = frozenset({"TAGMSG", "ACK"})
#: Earlier lines of a room shown on joining it, unless --history says otherwise; as many as
#: the server's own replay on join shows a client that cannot ask (history.replay_on_join).
HISTORY_ON_JOIN = 20
#: A history batch is shown at its end, so its lines wait: at most this many of them, and
#: at most this many such batches open at once (a server's batch past that is cut, or, when
#: too many are open, its lines are shown as they come).
HISTORY_BATCH_LINES = 10_000
HISTORY_BATCHES_OPEN = 8
#: CTCP requests answered (CTCP spec, ircdocs.horse): what CLIENTINFO lists.
CTCP_ANSWERED = ("ACTION", "CLIENTINFO", "PING", "TIME", "VERSION")
#: CTCP replies: this many at once, then one every CTCP_REPLY_INTERVAL seconds; requests
#: past that are dropped, so a CTCP flood cannot make us flood the server and be cut off.
CTCP_REPLY_BURST = 3
CTCP_REPLY_INTERVAL = 2.0
#: A CTCP PING's token is sent back; a longer one is cut to this many characters.
CTCP_PING_TOKEN_MAX = 100


class ConnectError(Exception):
    """The server could not be reached; the text is one line for a person. `certificate` is
    true when the server's TLS certificate was not trusted (the CLI says how to trust it)."""

    def __init__(self, text: str, *, certificate: bool = False) -> None:
        super().__init__(text)
        self.certificate = certificate


def is_room(name: str) -> bool:
    return name[:1] in ROOM_PREFIXES


def backoff_delay(failures: int) -> float:
    """Seconds to wait before reconnect attempt number `failures` + 1: 1, 2, 4, ... 30."""
    return min(2.0 ** min(failures, 16), MAX_BACKOFF)


class ReplyBudget:
    """A token bucket for automatic replies: `burst` at once, then one per `interval` seconds.
    Used by the network thread alone; the clock is injected so tests can drive it."""

    def __init__(
        self,
        burst: int = CTCP_REPLY_BURST,
        interval: float = CTCP_REPLY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = float(burst)
        self.interval = interval
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()

    def take(self) -> bool:
        """True (one reply spent) if a reply may go out now."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) / self.interval)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def ctcp_reply(request: str, now: Callable[[], str] | None = None) -> str | None:
    """The NOTICE text that answers the CTCP request `request` ("\x01VERSION\x01"), or None
    for text that is no CTCP request we answer (ACTION is shown, never answered)."""
    if not request.startswith("\x01"):
        return None
    command, _, argument = request[1:].removesuffix("\x01").partition(" ")
    command = command.upper()
    if command == "VERSION":
        answer = f"ircish-client {__version__}"
    elif command == "PING":
        answer = argument.replace("\x01", "")[:CTCP_PING_TOKEN_MAX]
    elif command == "TIME":
        answer = now() if now is not None else email.utils.formatdate(localtime=True)
    elif command == "CLIENTINFO":
        answer = " ".join(CTCP_ANSWERED)
    else:
        return None
    return f"\x01{command} {answer}\x01" if answer else f"\x01{command}\x01"


def describe(exc: BaseException) -> str:
    """A socket error as a few words ("Connection refused"), without errno noise."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class SessionConfig:
    """Where to connect and as whom; built by the CLI."""

    nick: str
    host: str = "127.0.0.1"
    port: int = 6667
    realname: str | None = None
    #: The server's password (PASS), not an account's.
    password: str | None = field(default=None, repr=False)
    #: Log in to this account (SASL while connecting, else NickServ IDENTIFY once connected)
    #: with `account_password`; no password, no login. The CLI names the nick's account
    #: when only the password is given.
    account: str | None = None
    account_password: str | None = field(default=None, repr=False)
    #: Rooms to join once registered (the last one becomes the current room).
    rooms: tuple[str, ...] = ()
    reconnect: bool = True
    #: Speak TLS with this context (ircish.tls.client_context); None: plain TCP.
    tls_context: ssl.SSLContext | None = None
    connect_timeout: float = 10.0
    #: Seconds of silence before we PING the server; as long again without an answer = lost.
    idle_timeout: float = 60.0
    #: Earlier lines of a room to show on joining it (CHATHISTORY LATEST); 0: none.
    history: int = HISTORY_ON_JOIN

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def username(self) -> str:
        return _USERNAME_JUNK.sub("", self.nick)[:16] or "user"


# Events handed to the listener.


@dataclass(frozen=True)
class Incoming:
    """A message to show: from the server, or our own PRIVMSG/NOTICE as sent (local echo).
    `me` is our nick when it arrived: a NICK must be rendered with the old one."""

    msg: Message
    me: str | None


@dataclass(frozen=True)
class Note:
    """A line from the client itself: `info` (status), `error` (a hint or failure), `plain`,
    `marker` (the line before or after a room's earlier lines: `-- now --`)."""

    text: str
    kind: str = "info"


@dataclass(frozen=True)
class Changed:
    """Nick, rooms, current target or online state changed: redraw the prompt."""


@dataclass(frozen=True)
class Closed:
    """The session is over (quit, fatal error, or lost with reconnect off)."""

    exit_code: int


Event = Incoming | Note | Changed | Closed
Listener = Callable[[Event], None]


@dataclass(frozen=True)
class View:
    """A consistent snapshot of the session state for the prompt and completion."""

    nick: str
    online: bool
    rooms: tuple[str, ...]  # in join order
    current_room: str | None
    query: str | None
    members: tuple[str, ...]  # nicks in the current room
    nicks: tuple[str, ...]  # everyone we share a room with
    #: The private-chat nick is away (away-notify or a 301 told us): the prompt says so.
    query_away: bool = False
    #: The account we are logged in to (900 said so; 901 or a lost link ends it).
    account: str | None = None

    @property
    def target(self) -> str | None:
        """Where plain text goes: the private-chat nick, else the current room."""
        return self.query or self.current_room


@dataclass
class _Room:
    name: str
    members: dict[str, str] = field(default_factory=dict)  # casefolded nick -> nick


@dataclass
class _Unconfirmed:
    """A PRIVMSG/NOTICE we sent and the server has not yet confirmed. Without echo-message it
    is shown as ours when the PONG to the PING sent after it comes back, to the targets no
    refusal named first; with echo-message the server's echo shows it, one target at a time,
    and the PONG shows only what neither an echo nor a refusal named."""

    msg: Message
    me: str
    targets: dict[str, str]  # casefolded -> as written, for the targets not refused or echoed

    def refuse(self, targets: list[str]) -> str:
        """Drop `targets` (casefolded) from those it went to; the ones dropped, as written."""
        gone = [self.targets.pop(key) for key in targets if key in self.targets]
        return ",".join(gone)

    def shown_text(self) -> str:
        """The text as a person reads it in "Not sent to #room: <text>"."""
        text = self.msg.param(1)
        if text.startswith("\x01ACTION"):
            return f"* {self.me} {strip_formatting(text[7:].strip(chr(1)).lstrip())}"
        return strip_formatting(text)


@dataclass(frozen=True)
class _Said:
    """Where a line shown sits in its room's history, for a CHATHISTORY reference: its msgid
    and its `time` tag, as the server sent them (a line with neither cannot be one)."""

    msgid: str | None
    time: str | None

    @classmethod
    def of(cls, msg: Message) -> _Said | None:
        msgid, when = msg.tags.get("msgid"), msg.tags.get("time")
        return cls(msgid, when) if msgid or when else None

    @property
    def reference(self) -> str:
        # A msgid names one line; a time may be shared by two (then one of them is skipped).
        return f"msgid={self.msgid}" if self.msgid else f"timestamp={self.time}"


@dataclass
class _Shown:
    """What we have shown of one room's lines. `oldest` (since joining it on this link):
    /history asks for the lines before it. `newest` outlives a lost link: the rejoin asks for
    the lines after it, those missed, not the last few again."""

    oldest: _Said | None = None
    newest: _Said | None = None


@dataclass
class _HistoryAsked:
    """A CHATHISTORY request not yet answered (or whose answer is not all here). `kind`:
    `join` (the lines before we came) or
    `earlier` (/history). `meanwhile`: the msgids of the room's lines shown since it was sent,
    which a LATEST answer holds too; the answer has at most `limit` lines, so that many
    suffice."""

    room: str
    kind: str
    limit: int
    meanwhile: deque[str] = field(init=False)
    #: Its answer's batch has begun (a second request for the room waits for the next one).
    answering: bool = False

    def __post_init__(self) -> None:
        self.meanwhile = deque(maxlen=self.limit)


@dataclass
class _HistoryBatch:
    """A `chathistory` batch under way: its lines wait for its end, to be shown with their
    count. `asked` is None for a batch we did not ask for (the server's replay on join)."""

    room: str
    asked: _HistoryAsked | None
    lines: list[Message] = field(default_factory=list)


@dataclass
class _AskedNickServ:
    """A line to NickServ (IDENTIFY, REGISTER) waiting for its answer. The answer is its
    NOTICEs (and a 900 when it logs us in) between the PONGs to a PING sent before the line
    and one sent after: a notice before the first (a warning that our nick is registered)
    answers something else. `what` starts the line that says how it went ("Login as
    alice"); `done` is said on success beside the 900's "Logged in as ..." (or nothing)."""

    what: str
    credentials: Credentials
    before: str  # the PING tokens
    after: str
    done: str | None = None
    answering: bool = False  # the PONG to `before` came
    said: list[str] = field(default_factory=list)  # NickServ's notices since
    logged_in: bool = False
    no_nickserv: bool = False  # 401: the server has no NickServ


_CLOSE = None  # the sending thread's stop mark


class _Link:
    """One TCP connection: the socket, its outbound queue and the thread that drains it.

    `send` only queues, so the UI never waits on the network; the sending thread joins
    whatever has queued into one write. `read` is for the network thread alone.
    """

    def __init__(self, sock: socket.socket | TlsTransport) -> None:
        self.sock = sock
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._buffer = b""
        self._sender = threading.Thread(target=self._drain, name="ircish-client-send", daemon=True)
        self._sender.start()

    def send(self, msg: Message) -> None:
        """Queue `msg`. Raises ProtocolError if it cannot be one IRC line."""
        data = msg.to_bytes()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(">> %s", redacted(msg) or data.rstrip(b"\r\n").decode())
        self._outbox.put(data)

    def read(self) -> list[str] | None:
        """The complete lines that one recv brought (maybe none), or None at end of stream.
        Raises TimeoutError after the socket's idle timeout, OSError if the link broke."""
        data = self.sock.recv(65536)
        if not data:
            return None
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > READ_LIMIT:
            raise ConnectionError(f"the server sent {READ_LIMIT} bytes without a line end")
        return [line.rstrip(b"\r").decode("utf-8", "replace") for line in lines]

    def _drain(self) -> None:
        while True:
            batch = [self._outbox.get()]
            while True:
                try:
                    batch.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            data = b"".join(itertools.takewhile(lambda item: item is not _CLOSE, batch))
            if data:
                try:
                    self.sock.sendall(data)
                except OSError as exc:
                    log.debug("send failed: %s", describe(exc))
                    self.interrupt()
                    return
            if _CLOSE in batch:
                return

    def interrupt(self) -> None:
        """Shut the socket down both ways: a blocked recv or sendall returns at once."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Send what is queued (briefly), then close the socket."""
        self._outbox.put(_CLOSE)
        self._sender.join(timeout=2.0)
        if self._sender.is_alive():
            self.interrupt()
            self._sender.join(timeout=1.0)
        self.sock.close()


class Session:
    """The client's connection and state. `start` connects; the network thread then
    registers, answers PING, keeps the state and reconnects; the UI thread calls `send`,
    `view`, `query`, `switch`, `sync` and `quit`. `_lock` guards the state below it."""

    def __init__(self, config: SessionConfig, listener: Listener) -> None:
        self.config = config
        self._listener = listener
        self._lock = threading.Lock()
        self._state_changed = threading.Condition(self._lock)
        self._nick = config.nick  # the nick we have, or are trying
        self._wanted_nick = config.nick  # what to ask for on (re)connect
        self._registered = False
        self._closed = False
        self._rooms: dict[str, _Room] = {}  # casefolded name -> room, in join order
        self._current_room: str | None = None
        self._query: str | None = None
        self._pending_names: dict[str, dict[str, str]] = {}
        self._to_join: list[str] = list(config.rooms)  # JOINed after the next 001
        self._rejoining: set[str] = set()  # a rejoin keeps the person's current room
        # Casefolded room -> its key (+k): as typed in /join or set while we are in, so a
        # rejoin after a reconnect gets back into a keyed room.
        self._keys: dict[str, str] = {}
        self._link: _Link | None = None
        self._syncs: dict[str, threading.Event] = {}
        # Casefolded rooms in the order they were last current (the latest last): leaving the
        # current room (/leave, a KICK) goes back to the one before, as a person expects.
        self._recent: list[str] = []
        # PING token -> the messages sent before that PING and not yet confirmed, in the
        # order sent.
        self._unconfirmed: dict[str, list[_Unconfirmed]] = {}
        # The capabilities the server acknowledged on this link (CAP ACK), none before.
        self._caps: frozenset[str] = frozenset()
        # Casefolded nick -> away message, for the people away-notify (or a 301) told us of.
        self._away: dict[str, str] = {}
        # Casefolded room -> what we have shown of its lines (kept over a reconnect).
        self._shown: dict[str, _Shown] = {}
        # CHATHISTORY requests in the order sent: the server answers them in that order.
        self._history_asked: list[_HistoryAsked] = []
        # What we log in with on each link: the CLI's, or those a /login or /register made
        # good. Dropped after a failed login: a wrong password stays wrong, and each try
        # counts against the server's limit on failed logins.
        self._credentials: Credentials | None = (
            Credentials(config.account or config.nick, config.account_password)
            if config.account_password is not None
            else None
        )
        # Those of a /login or /register under way, kept once a 900 says they work.
        self._pending_login: Credentials | None = None
        self._account: str | None = None  # logged in to, on this link
        self._nickserv_asked: _AskedNickServ | None = None
        # The capabilities the server offers on this link (CAP LS, NEW and DEL).
        self._server_caps: frozenset[str] = frozenset()
        # Written by the network thread only.
        self._failures = 0
        self._welcomed_before = False
        self._quiet_burst = False  # a reconnect's welcome burst, which is not shown again
        self._fatal: str | None = None
        self._quitting = threading.Event()
        self._tokens = itertools.count(1)
        self._ctcp_budget = ReplyBudget()
        # CAP LS words so far, name -> value (a 302 LS may take several lines).
        self._offered: dict[str, str] = {}
        # SASL on this link: the exchange under way, the mechanisms tried (none: SASL was not
        # tried), the server's `sasl=` value and the list a 908 gave.
        self._sasl: SaslLogin | None = None
        self._sasl_tried: frozenset[str] = frozenset()
        self._sasl_offered = ""
        self._sasl_listed: str | None = None
        self._history_batches: dict[str, _HistoryBatch] = {}  # batch reference -> batch
        # The last line was a message to ourselves, shown: with echo-message its twin follows.
        self._twin: tuple[str, str] | None = None
        self._thread: threading.Thread | None = None
        self.exit_code: int | None = None

    # -- the UI's side ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start the network thread. Raises ConnectError if the server can't be
        reached (only this first time: later losses reconnect)."""
        link = self._open_link()
        with self._lock:
            self._link = link
        self._note(self._connected_text(link))
        self._thread = threading.Thread(
            target=self._run, args=(link,), name="ircish-client-net", daemon=True
        )
        self._thread.start()

    def view(self) -> View:
        with self._lock:
            rooms = list(self._rooms.values())
            current = self._rooms.get(casefold(self._current_room or ""))
            members = sorted(current.members.values(), key=casefold) if current else []
            everyone = {nick for room in rooms for nick in room.members.values()}
            query_away = self._query is not None and casefold(self._query) in self._away
            return View(
                nick=self._nick,
                online=self._registered,
                rooms=tuple(room.name for room in rooms),
                current_room=self._current_room,
                query=self._query,
                members=tuple(members),
                nicks=tuple(sorted(everyone, key=casefold)),
                query_away=query_away,
                account=self._account,
            )

    def send(self, msg: Message, echo: bool = False) -> bool:
        """Queue `msg` for the server; never blocks. False (nothing sent) if not registered.
        With `echo`, a PRIVMSG/NOTICE is also shown as our own once the server has taken it
        (see `send_all`). Raises ProtocolError if `msg` cannot be one IRC line."""
        return self.send_all([msg], echo)

    def send_all(self, msgs: list[Message], echo: bool = False) -> bool:
        """Queue `msgs` in order; never blocks. False (nothing sent) if not registered.
        Raises ProtocolError (nothing sent) if one cannot be an IRC line.

        With `echo`, each PRIVMSG/NOTICE is shown as ours only once the server has taken it.
        One PING follows the lot, and the server answers one client's lines in order, so a
        refusal of one of them (404 in a +m room, 401 no such nick...) comes before the PONG:
        that one is shown as "Not sent to <target>: <text> (<why>)". The others are shown
        as the server relays them back with echo-message (in the room's order, with the
        server's time), or, on a server without it, when the PONG comes. One PING per call,
        not per message: each line costs flood tokens on the server, and a paste is many."""
        for msg in msgs:
            msg.to_bytes()  # raises ProtocolError before anything is queued
        token = f"ircish-echo-{next(self._tokens)}"
        with self._lock:
            link = self._link if self._registered else None
            me = self._nick
            waiting = [
                _Unconfirmed(msg, me, {casefold(t): t for t in msg.param(0).split(",") if t})
                for msg in msgs
                if echo
                and msg.command in ("PRIVMSG", "NOTICE")
                and len(msg.params) > 1
                # Sent to ourselves, it comes back from the server anyway.
                and casefold(msg.param(0)) != casefold(me)
                # A line to NickServ is never relayed, so never echoed, and it may hold a
                # password: never shown. NickServ's NOTICE answers it.
                and not to_nickserv(msg)
            ]
            if link is not None and waiting:
                # Waiting before the lines go out: a refusal can come back at once.
                self._unconfirmed[token] = waiting
        if link is None:
            return False
        for msg in msgs:
            link.send(msg)
            if msg.command == "JOIN" and len(msg.params) > 1:
                self._remember_keys(msg.params[0], msg.params[1])
        if waiting:
            link.send(Message("PING", [token]))
        return True

    def query(self, nick: str | None) -> None:
        """Make `nick` the target of plain text; None goes back to the current room."""
        with self._lock:
            self._query = nick
        self._emit(Changed())

    def switch(self, room: str) -> str | None:
        """Make a joined room current (and leave any private chat); its name, or None."""
        with self._lock:
            joined = self._rooms.get(casefold(room if is_room(room) else "#" + room))
            if joined is None:
                return None
            self._make_current_locked(joined.name)
            self._query = None
        self._emit(Changed())
        return joined.name

    def ask_history(self, room: str, limit: int) -> str | None:
        """Ask for `limit` lines of `room` from before the oldest one shown (the room's last
        ones, if none was); the answer is shown between markers when it comes. None if
        asked, else why not, in words for the person."""
        with self._lock:
            link = self._link if self._registered else None
            joined = self._rooms.get(casefold(room))
            if link is None:
                return "not connected to the server; nothing was sent"
            if not self._history_ready_locked():
                return "the server offers no history to ask for (no draft/chathistory)"
            if joined is None:
                return f"you are not in {room}"
            if any(casefold(asked.room) == casefold(room) for asked in self._history_asked):
                return f"still waiting for the earlier lines of {joined.name}"
            shown = self._shown.get(casefold(room))
            oldest = shown.oldest if shown is not None else None
            where = ["LATEST", joined.name, "*"] if oldest is None else ["BEFORE", joined.name]
            if oldest is not None:
                where.append(oldest.reference)
            self._ask_history_locked(link, _HistoryAsked(joined.name, "earlier", limit), where)
        return None

    def log_in(self, account: str | None, password: str) -> str | None:
        """Log in to `account` (default: the one we log in to on connecting, else our nick)
        with NickServ IDENTIFY; once it works, a reconnect logs in with these. None if
        asked (how it went is said when NickServ answers), else why not, for the person."""
        with self._lock:
            link = self._link if self._registered else None
            if link is None:
                return "not connected to the server; nothing was sent"
            if account is None:
                account = self._credentials.account if self._credentials else self._nick
            return self._ask_nickserv_locked(
                link,
                f"Login as {account}",
                Credentials(account, password),
                f"IDENTIFY {account} {password}",
            )

    def register(self, password: str, email: str | None) -> str | None:
        """Register an account named after our nick and log in to it: REGISTER where the
        server offers draft/account-registration, else NickServ REGISTER. None if asked (the
        answer is shown when it comes), else why not, for the person."""
        with self._lock:
            link = self._link if self._registered else None
            if link is None:
                return "not connected to the server; nothing was sent"
            credentials = Credentials(self._nick, password)
            if "draft/account-registration" not in self._server_caps:
                text = f"REGISTER {password} {email}" if email else f"REGISTER {password}"
                return self._ask_nickserv_locked(
                    link, f"Registering {self._nick}", credentials, text, f"Registered {self._nick}"
                )
            request = Message("REGISTER", ["*", email or "*", password])
            try:
                request.to_bytes()
            except ProtocolError as exc:
                return f"cannot send that: {exc}"
            self._pending_login = credentials
            link.send(request)
        return None

    def wait_registered(self, timeout: float | None = None) -> bool:
        """Wait until registered (True) or the session is over or `timeout` passed (False)."""
        with self._state_changed:
            self._state_changed.wait_for(lambda: self._registered or self._closed, timeout)
            return self._registered

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until the server has answered everything sent so far (a PING round trip),
        so every reply to it has been handed to the listener. That includes the history we
        ask for when our JOIN comes back, which may go out after the PING: while such a
        request waits, one more round trip."""
        deadline = time.monotonic() + timeout
        if not self._round_trip(deadline):
            return False
        with self._lock:
            asked = bool(self._history_asked)
        return self._round_trip(deadline) if asked else True

    def _round_trip(self, deadline: float) -> bool:
        token = f"ircish-sync-{next(self._tokens)}"
        done = threading.Event()
        with self._lock:
            link = self._link if self._registered else None
            if link is None:
                return False
            self._syncs[token] = done
        link.send(Message("PING", [token]))
        answered = done.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._syncs.pop(token, None)
        return answered

    def quit(self, reason: str = "") -> None:
        """Send QUIT, wait a bounded time for the server to close the link, stop for good."""
        self._quitting.set()
        with self._lock:
            link = self._link
        if link is not None:
            try:
                link.send(Message("QUIT", [reason] if reason else []))
            except ProtocolError:
                link.send(Message("QUIT", []))
        thread = self._thread
        if thread is None:
            self._finish(0)
            return
        if thread is threading.current_thread():
            return
        thread.join(QUIT_WAIT)
        if thread.is_alive() and link is not None:
            link.interrupt()
            thread.join(QUIT_WAIT)

    def wait_closed(self, timeout: float | None = None) -> int | None:
        """The exit code once the session is over, or None if still running after `timeout`."""
        with self._state_changed:
            self._state_changed.wait_for(lambda: self._closed, timeout)
            return self.exit_code

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def caps(self) -> frozenset[str]:
        """The IRCv3 capabilities the server acknowledged on the current link."""
        with self._lock:
            return self._caps

    @property
    def connected(self) -> bool:
        """A link is up (registered or registering); False while waiting to reconnect."""
        with self._lock:
            return self._link is not None

    # -- the network thread -------------------------------------------------------------------

    def _open_link(self) -> _Link:
        try:
            sock = socket.create_connection(
                (self.config.host, self.config.port), timeout=self.config.connect_timeout
            )
        except (OSError, UnicodeError) as exc:
            reason = describe(exc)
            raise ConnectError(f"cannot connect to {self.config.address}: {reason}") from None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self.config.tls_context is None:
            sock.settimeout(self.config.idle_timeout)
            return _Link(sock)
        transport = TlsTransport(
            sock, self.config.tls_context, server_side=False, server_hostname=self.config.host
        )
        try:
            transport.handshake(self.config.connect_timeout)
        except OSError as exc:
            transport.close()
            certificate = isinstance(exc, TlsError) and exc.verify_failed
            raise ConnectError(
                f"cannot connect to {self.config.address}: {describe(exc)}", certificate=certificate
            ) from None
        transport.settimeout(self.config.idle_timeout)
        return _Link(transport)

    def _connected_text(self, link: _Link) -> str:
        text = f"Connected to {self.config.address}"
        context = self.config.tls_context
        if isinstance(link.sock, TlsTransport) and context is not None:
            checked = "" if context.verify_mode != ssl.CERT_NONE else ", certificate not checked"
            text += f" ({link.sock.version()}{checked})"
        return text

    def _run(self, link: _Link) -> None:
        code = 1
        try:
            code = self._serve_until_done(link)
        except Exception:
            log.exception("the network thread failed")
        finally:
            self._finish(code)

    def _serve_until_done(self, link: _Link | None) -> int:
        while link is not None:
            reason = self._serve(link)
            self._lose(link)
            if self._quitting.is_set():
                return 0
            if self._fatal is not None:
                return 1
            self._note(f"Connection lost: {reason}" if reason else "Connection lost", "error")
            if not self.config.reconnect:
                return 1
            link = self._reconnect()
        return 0  # /quit while waiting to reconnect

    def _reconnect(self) -> _Link | None:
        while True:
            delay = backoff_delay(self._failures)
            self._failures += 1
            self._note(f"Reconnecting to {self.config.address} in {delay:g} s")
            if self._quitting.wait(delay):
                return None
            try:
                link = self._open_link()
            except ConnectError as exc:
                self._note(str(exc), "error")
                continue
            with self._lock:
                self._link = link
            self._note(self._connected_text(link))
            return link

    def _serve(self, link: _Link) -> str | None:
        """Register on `link` and handle what arrives until it ends; why it ended (None when
        the server said so in an ERROR line the person has already seen)."""
        with self._lock:
            self._link = link
            self._nick = self._wanted_nick
            self._caps = frozenset()  # negotiated again on each link
            self._server_caps = frozenset()
        self._offered = {}
        self._sasl, self._sasl_tried, self._sasl_listed = None, frozenset(), None
        self._sasl_offered = ""
        self._twin = None
        self._history_batches = {}
        try:
            self._register(link)
        except ProtocolError as exc:
            self._fatal = f"cannot register: {exc}"
            self._note(self._fatal, "error")
            return self._fatal
        waiting_for_pong = False
        error_shown = False
        while True:
            try:
                lines = link.read()
            except TimeoutError:
                if waiting_for_pong or self._quitting.is_set():
                    return f"no answer from the server for {2 * self.config.idle_timeout:g} s"
                link.send(Message("PING", ["ircish-idle"]))
                waiting_for_pong = True
                continue
            except OSError as exc:
                return describe(exc)
            if lines is None:
                return None if error_shown else "the server closed the connection"
            waiting_for_pong = False
            for line in lines:
                if not line:
                    continue
                log.debug("<< %s", line)
                try:
                    msg = parse(line)
                except ProtocolError as exc:
                    log.warning("ignoring a line from the server (%s): %r", exc, line)
                    continue
                self._handle(link, msg)
                if self._fatal is not None:
                    return self._fatal
                error_shown = error_shown or msg.command == "ERROR"

    def _register(self, link: _Link) -> None:
        config = self.config
        # CAP LS first: a server that knows CAP holds registration until our CAP END, which
        # `_negotiate` sends after the LS (and our REQ's ACK or NAK). A server from before
        # CAP answers 421 and registers us without it.
        link.send(Message("CAP", ["LS", "302"]))
        if config.password is not None:
            link.send(Message("PASS", [config.password]))
        link.send(Message("NICK", [self._nick]))
        link.send(Message("USER", [config.username, "0", "*", config.realname or config.nick]))

    def _handle(self, link: _Link, msg: Message) -> None:
        command = msg.command
        if command == "PING":
            link.send(Message("PONG", list(msg.params[-1:]) or ["ircish"]))
            return
        if command == "PONG":
            token = msg.params[-1] if msg.params else ""
            if not self._nickserv_pong(token):
                self._answered(token)
            return
        if command == "BATCH":
            self._batch(msg)
            return
        held = self._history_batches.get(msg.tags.get("batch", ""))
        if held is not None:
            # Shown at the batch's end, never acted on: an old CTCP is not answered, our own
            # old line is no echo of what we just sent.
            if len(held.lines) < HISTORY_BATCH_LINES:
                held.lines.append(msg)
            return
        if command == "FAIL" and msg.param(0).upper() == "CHATHISTORY":
            self._history_refused(msg)
            return
        if self._account_reply(link, msg):
            return
        if (command in _SEND_REFUSED_TO or command in _SEND_REFUSED or command == "FAIL") and (
            self._refused(msg)
        ):
            return
        if command == "CAP":
            self._negotiate(link, msg)
            return
        if not self._registered and self._before_welcome(link, msg):
            return
        if command == p.RPL_WELCOME:
            self._welcome(link, msg)
            return
        twin, self._twin = self._twin, None
        if command in _NOT_SHOWN:
            return
        me = self._nick
        if command == "AWAY":
            self._away_changed(msg)
            return
        if command in ("PRIVMSG", "NOTICE"):
            if not self._own_echo(msg, me, twin):
                return
            self._said_live(msg)
        with self._lock:
            room_before = self._current_room
        changed = self._apply(msg, me)
        quiet = (command == "ERROR" and self._quitting.is_set()) or (
            command in _WELCOME_BURST and self._quiet_burst
        )
        if command in (p.RPL_ENDOFMOTD, p.ERR_NOMOTD):
            self._quiet_burst = False  # the burst is over: a later /motd is shown
        if not quiet:
            self._emit(Incoming(msg, me))
        if changed and command in ("PART", "KICK"):
            self._tell_where_text_goes(room_before)
        if changed and command == "JOIN":  # our own: what was said before we came
            self._ask_history_on_join(link, msg.param(0))
        if changed:
            self._emit(Changed())
        if command == "PRIVMSG" and msg.param(1).startswith("\x01"):
            self._answer_ctcp(link, msg, me)
        if command == "KILL" and casefold(msg.param(0)) == casefold(me):
            # A server operator put us out. Reconnecting (and rejoining) at once would undo
            # that, as rejoining would undo a KICK: the session ends instead.
            self._fatal = f"killed by {strip_formatting(msg.source_nick or 'the server')}"
            self._note("Disconnected by a server operator; not reconnecting", "error")

    def _tell_where_text_goes(self, room_before: str | None) -> None:
        """After we left the current room (/leave, a KICK): where plain text goes now, as a
        script has no prompt to show it."""
        with self._lock:
            room, query = self._current_room, self._query
        if room == room_before or query is not None:
            return
        if room is not None:
            self._note(f"Talking in {room}")
        else:
            self._note("You are in no room now: /join #room")

    # -- history (issue 13) -----------------------------------------------------------------

    def _history_ready_locked(self) -> bool:
        """We may ask for history: CHATHISTORY, and its answers framed in batches."""
        assert held(self._lock)
        return "draft/chathistory" in self._caps and "batch" in self._caps

    def _ask_history_locked(self, link: _Link, asked: _HistoryAsked, where: list[str]) -> None:
        """Send `CHATHISTORY <where...> <limit>` and wait for its answer. Under the lock, so
        the requests go out in the order `_history_asked` has them (`send` only queues)."""
        assert held(self._lock)
        link.send(Message("CHATHISTORY", [*where, str(asked.limit)]))
        self._history_asked.append(asked)

    def _ask_history_on_join(self, link: _Link, room: str) -> None:
        """We joined `room`: ask for the lines said before, up to --history of them. After a
        lost link, the lines after the last one shown: the ones missed, none twice."""
        limit = self.config.history
        with self._lock:
            if not limit or not self._history_ready_locked():
                return  # a server without draft/chathistory replays on its own, or not at all
            shown = self._shown.get(casefold(room))
            newest = shown.newest if shown is not None else None
            after = "*" if newest is None else newest.reference
            self._ask_history_locked(
                link, _HistoryAsked(room, "join", limit), ["LATEST", room, after]
            )

    def _said_live(self, msg: Message) -> None:
        """A room's line shown as it came: the newest shown, and the oldest if the first.
        A request under way for the room will find it in its answer too."""
        room, said = msg.param(0), _Said.of(msg)
        if not is_room(room) or said is None:
            return
        key = casefold(room)
        with self._lock:
            shown = self._shown.get(key)
            if shown is None:
                return  # not a room we are in
            shown.newest = said
            shown.oldest = shown.oldest or said
            if said.msgid:
                for asked in self._history_asked:
                    if casefold(asked.room) == key:
                        asked.meanwhile.append(said.msgid)

    def _batch(self, msg: Message) -> None:
        """`BATCH +ref chathistory #room` starts a room's earlier lines, held until `BATCH
        -ref`: the answer to the first request for that room, or, asked by no one, the
        server's replay on join. The start and end of any other batch are not shown."""
        ref = msg.param(0)
        if ref.startswith("-"):
            batch = self._history_batches.pop(ref[1:], None)
            if batch is not None:
                self._show_history(batch)
                self._history_answered(batch.asked)
            return
        opened = len(self._history_batches)
        if msg.param(1) != "chathistory" or len(ref) < 2 or opened >= HISTORY_BATCHES_OPEN:
            return
        room = msg.param(2)
        with self._lock:
            asked = self._first_asked_locked(room)
            if asked is not None:
                asked.answering = True
        self._history_batches[ref[1:]] = _HistoryBatch(asked.room if asked else room, asked)

    def _first_asked_locked(self, room: str | None) -> _HistoryAsked | None:
        """The request the next answer about `room` (any room: None) is for: the server
        answers in the order asked."""
        assert held(self._lock)
        return next(
            (
                asked
                for asked in self._history_asked
                if not asked.answering and (room is None or casefold(asked.room) == casefold(room))
            ),
            None,
        )

    def _history_answered(self, asked: _HistoryAsked | None) -> None:
        with self._lock:
            if asked in self._history_asked:
                self._history_asked.remove(asked)

    def _show_history(self, batch: _HistoryBatch) -> None:
        """`-- 3 earlier messages in #room --`, the lines (each with its own time), then
        `-- now --` (on joining) or `-- end of earlier messages in #room --` (/history).
        An empty answer on joining shows nothing; to /history, that there is nothing more."""
        asked, room = batch.asked, strip_formatting(batch.room)
        seen = set(asked.meanwhile) if asked is not None else set()
        lines = [line for line in batch.lines if line.tags.get("msgid") not in seen]
        earlier = asked is not None and asked.kind == "earlier"
        if not lines:
            if earlier:
                self._note(f"-- no earlier messages in {room} --", "marker")
            return
        refs = [said for said in map(_Said.of, lines) if said is not None]
        with self._lock:
            shown = self._shown.get(casefold(batch.room))
            if shown is not None and refs:
                # Older than anything shown: the answer to a request, or the replay on join.
                shown.oldest = refs[0]
                shown.newest = shown.newest or refs[-1]
        noun = "message" if len(lines) == 1 else "messages"
        self._note(f"-- {len(lines)} earlier {noun} in {room} --", "marker")
        me = self._nick
        for line in lines:
            self._emit(Incoming(line, me))
        self._note(f"-- end of earlier messages in {room} --" if earlier else "-- now --", "marker")

    def _history_refused(self, msg: Message) -> None:
        """`FAIL CHATHISTORY <code> <subcommand> [<room>...] :text`: one line saying so. It
        answers the first request still waiting (for the room it names, if it names one)."""
        named = next((word for word in msg.params[2:-1] if is_room(word)), None)
        with self._lock:
            asked = self._first_asked_locked(named)
        self._history_answered(asked)
        room = asked.room if asked is not None else named
        reason = strip_formatting(msg.params[-1]) if len(msg.params) > 2 else msg.param(1)
        of = f" of {strip_formatting(room)}" if room else ""
        self._note(f"Cannot show the earlier lines{of}: {reason}", "error")

    # -- accounts ------------------------------------------------------------------------------

    def _account_reply(self, link: _Link, msg: Message) -> bool:
        """SASL, 900/901, REGISTER's answers and NickServ's answers to what we asked it: the
        state follows them, and each ends in one line; True if `msg` was one of them."""
        command = msg.command
        if command == "AUTHENTICATE":
            self._sasl_step(link, msg.param(0))
            return True
        if command == p.RPL_LOGGEDIN:  # <me> <nick!user@host> <account> :text
            self._logged_in(msg.param(2) if len(msg.params) > 3 else self._nick)
            return True
        if command == p.RPL_LOGGEDOUT:
            with self._lock:
                self._account = None
            self._note("Logged out")
            self._emit(Changed())
            return True
        if command in (p.RPL_SASLMECHS, p.RPL_SASLSUCCESS, p.ERR_SASLALREADY):
            if command == p.RPL_SASLMECHS:  # what it has, after we asked for what it lacks
                self._sasl_listed = msg.param(1)
            elif self._sasl is not None:
                self._end_sasl(link)
            return True  # the 900 before says all a person needs
        if command in (p.ERR_NICKLOCKED, p.ERR_SASLFAIL, p.ERR_SASLTOOLONG, p.ERR_SASLABORTED):
            return self._sasl_refused(link, msg)
        if command == "REGISTER" and msg.param(0).upper() == "SUCCESS":
            self._note(f"Registered {strip_formatting(msg.param(1))}")
            return True
        if command == "FAIL" and msg.param(0).upper() == "REGISTER":
            # `FAIL REGISTER <code> <account> :text`; the account as we sent it: `*`, our nick.
            with self._lock:
                pending, self._pending_login = self._pending_login, None
            name = msg.param(2) if msg.param(2) != "*" or pending is None else pending.account
            reason = strip_formatting(msg.params[-1]) if len(msg.params) > 3 else msg.param(1)
            self._note(f"Registering {strip_formatting(name)} failed: {reason}", "error")
            return True
        with self._lock:
            asked = self._nickserv_asked
            if asked is None or not asked.answering:
                return False
            if command == "NOTICE" and casefold(msg.source_nick or "") == casefold(NICKSERV):
                asked.said.append(strip_formatting(msg.param(1)))
                return True  # said in the one line at the end
            if command == p.ERR_NOSUCHNICK and casefold(msg.param(1)) == casefold(NICKSERV):
                asked.no_nickserv = True
                return True
        return False

    def _start_sasl(self, link: _Link) -> bool:
        """Open a SASL exchange with the best mechanism offered and not yet tried on this
        link; False if there is none (or nothing to log in with)."""
        with self._lock:
            credentials = self._credentials
        offered = self._sasl_listed if self._sasl_listed is not None else self._sasl_offered
        mechanism = choose_mechanism(offered, self._sasl_tried)
        if credentials is None or mechanism is None:
            return False
        if mechanism == sasl.PLAIN and sasl.SCRAM_SHA_256 in self._sasl_offered.split(","):
            # It offered SCRAM in CAP LS and now lists PLAIN alone: never send the password
            # itself to a server that changes its story (a downgrade).
            return False
        self._sasl = SaslLogin(credentials, mechanism)
        self._sasl_tried |= {mechanism}
        self._sasl_listed = None
        link.send(Message("AUTHENTICATE", self._sasl.start()))
        return True

    def _sasl_step(self, link: _Link, param: str) -> None:
        exchange = self._sasl
        if exchange is None:
            return  # no exchange of ours: nothing to answer
        try:
            answers = exchange.answer(param)
        except LoginFailed as exc:
            link.send(Message("AUTHENTICATE", ["*"]))  # its 906 is not shown: we said why
            self._login_failed(f"Login as {exchange.credentials.account}", str(exc))
            self._end_sasl(link)
            return
        for answer in answers:
            link.send(Message("AUTHENTICATE", [answer]))

    def _sasl_refused(self, link: _Link, msg: Message) -> bool:
        """902, 904, 905, 906: the exchange under way failed. A 904 after a 908 (the server
        lacks the mechanism we asked for) tries the next one it has; any other failure is
        one line, and we go on connecting, not logged in. True if it was ours."""
        exchange = self._sasl
        if exchange is None:
            return bool(self._sasl_tried)  # a late answer to an exchange we ended
        if msg.command == p.ERR_SASLFAIL and self._sasl_listed is not None:
            if self._start_sasl(link):
                return True
        text = strip_formatting(msg.params[-1]) if len(msg.params) > 1 else msg.command
        head, colon, reason = text.partition(": ")
        if colon and head.lower() == "sasl authentication failed":
            text = reason  # the why, without the words our own line starts with
        self._login_failed(f"Login as {exchange.credentials.account}", text)
        self._end_sasl(link)
        return True

    def _end_sasl(self, link: _Link) -> None:
        self._sasl = None
        if not self._registered:
            link.send(Message("CAP", ["END"]))

    def _logged_in(self, account: str) -> None:
        """900: we are logged in to `account`. The credentials of a /login or /register are
        now those a reconnect logs in with."""
        with self._lock:
            self._account = account
            pending, self._pending_login = self._pending_login, None
            if pending is not None:
                self._credentials = Credentials(account, pending.password)
            if self._nickserv_asked is not None and self._nickserv_asked.answering:
                self._nickserv_asked.logged_in = True
        self._note(f"Logged in as {strip_formatting(account)}")
        self._emit(Changed())

    def _login_failed(self, what: str, reason: str, tried: Credentials | None = None) -> None:
        """One line; the credentials that failed (by default the ones we connect with) are
        not tried again, not even after a reconnect."""
        with self._lock:
            if tried is None or tried == self._credentials:
                self._credentials = None
            if tried is not None and tried == self._pending_login:
                self._pending_login = None
        self._note(f"{what} failed: {reason}", "error")

    def _ask_nickserv_locked(
        self, link: _Link, what: str, credentials: Credentials, text: str, done: str | None = None
    ) -> str | None:
        """Say `text` to NickServ, between two PINGs (see `_AskedNickServ`). None if sent,
        else why not."""
        assert held(self._lock)
        if self._nickserv_asked is not None:
            return "still waiting for NickServ's answer to the last login or registration"
        request = Message("PRIVMSG", [NICKSERV, text])
        try:
            request.to_bytes()
        except ProtocolError as exc:
            return f"cannot send that: {exc}"
        number = next(self._tokens)
        asked = _AskedNickServ(what, credentials, f"ircish-ns-{number}", f"ircish-ns-{number}.")
        asked.done = done
        self._nickserv_asked = asked
        self._pending_login = credentials
        link.send(Message("PING", [asked.before]))
        link.send(request)
        link.send(Message("PING", [asked.after]))
        return None

    def _nickserv_pong(self, token: str) -> bool:
        """A PONG that opens or closes NickServ's answer; at its close, one line says how
        it went. True if the token was one of those."""
        with self._lock:
            asked = self._nickserv_asked
            if asked is None or token not in (asked.before, asked.after):
                return False
            if token == asked.before:
                asked.answering = True
                return True
            self._nickserv_asked = None
        if asked.logged_in:
            if asked.done:
                self._note(asked.done)
        elif asked.no_nickserv:
            self._login_failed(
                asked.what, "this server has no accounts (no SASL, no NickServ)", asked.credentials
            )
        elif asked.said:
            self._login_failed(asked.what, asked.said[-1], asked.credentials)
        # Else NickServ has not answered yet (on a network, services are a server away): its
        # notices are shown as they come, and a 900 still logs us in.
        return True

    def _negotiate(self, link: _Link, msg: Message) -> None:
        """CAP replies (https://ircv3.net/specs/extensions/capability-negotiation): after the
        LS, one REQ for what we want of what is offered; CAP END once the server answered it
        (or at once, if there is nothing to ask for). Later, CAP NEW and DEL (cap-notify,
        implied by LS 302) add and remove capabilities while registered."""
        sub = msg.param(1).upper()
        words = msg.params[-1].split() if len(msg.params) > 2 else []
        if sub in ("LS", "NEW"):
            # `CAP * LS * :caps`: more lines follow (302). A word may carry a value: sasl=PLAIN.
            for word in words:
                name, _, value = word.partition("=")
                self._offered[name] = value
            if sub == "LS" and msg.param(2) == "*":
                return
            offered, self._offered = self._offered, {}
            with self._lock:
                self._server_caps |= offered.keys()
                wanted = [cap for cap in WANTED_CAPS if cap in offered and cap not in self._caps]
                login = self._credentials is not None
            # SASL while registering only: then the login comes before anything we do.
            if sub == "LS" and not self._registered and login and "sasl" in offered:
                self._sasl_offered = offered["sasl"]
                if choose_mechanism(self._sasl_offered) is not None:
                    wanted.append("sasl")
            if wanted:
                link.send(Message("CAP", ["REQ", " ".join(wanted)]))
            elif sub == "LS" and not self._registered:
                link.send(Message("CAP", ["END"]))
        elif sub in ("ACK", "DEL"):
            with self._lock:
                caps = set(self._caps)
                for word in words:
                    if sub == "DEL" or word.startswith("-"):
                        caps.discard(word.removeprefix("-"))
                    else:
                        caps.add(word)
                self._caps = frozenset(caps)
                if sub == "DEL":
                    self._server_caps -= set(words)
            if sub == "ACK" and not self._registered:
                # With sasl, CAP END waits for the login's end (`_end_sasl`).
                if "sasl" not in words or not self._start_sasl(link):
                    link.send(Message("CAP", ["END"]))
        elif sub == "NAK":
            # All or nothing, so none of them: we go on as with a server that offers none.
            log.info("the server refused capabilities: %s", " ".join(words))
            if not self._registered:
                link.send(Message("CAP", ["END"]))

    def _own_echo(self, msg: Message, me: str, twin: tuple[str, str] | None) -> bool:
        """A PRIVMSG/NOTICE from us is the server's echo (echo-message): it confirms what we
        sent to its targets. False if it is not to be shown: the second copy of a message to
        ourselves, which with echo-message comes twice (the echo, then the message as
        received) and is shown once."""
        if casefold(msg.source_nick or "") != casefold(me):
            return True
        with self._lock:
            if "echo-message" not in self._caps:
                return True
            targets = [casefold(target) for target in msg.param(0).split(",") if target]
            for key in targets:
                # The server echoes in the order we sent, so the first message still waiting
                # for this target is the one echoed (as a refusal refuses the first it fits).
                for batch in self._unconfirmed.values():
                    sent = next(
                        (s for s in batch if s.msg.command == msg.command and key in s.targets),
                        None,
                    )
                    if sent is not None:
                        sent.targets.pop(key)
                        break
        if targets == [casefold(me)]:
            copy = (msg.command, msg.param(1))
            if twin == copy:
                return False
            self._twin = copy
        return True

    def _away_changed(self, msg: Message) -> None:
        """`:nick!u@h AWAY :reason` (away-notify; no reason: back). Kept for the prompt, and
        said only about the person in the private chat: a room's comings and goings are not
        worth a line each."""
        nick = msg.source_nick or ""
        reason = msg.param(0)
        with self._lock:
            was_away = casefold(nick) in self._away
            if reason:
                self._away[casefold(nick)] = reason
            else:
                self._away.pop(casefold(nick), None)
            private = self._query is not None and casefold(self._query) == casefold(nick)
        if not private or (was_away and reason):
            return
        who = strip_formatting(nick)
        self._note(f"{who} is away: {strip_formatting(reason)}" if reason else f"{who} is back")
        self._emit(Changed())

    def _before_welcome(self, link: _Link, msg: Message) -> bool:
        """Registration replies the person needn't see as such; True if `msg` was one."""
        command = msg.command
        if command in _NICK_TAKEN:
            taken = self._nick
            with self._lock:
                self._nick = taken + "_"
            self._note(f"Nick {taken} is taken, trying {self._nick}")
            link.send(Message("NICK", [self._nick]))
            return True
        if command in _FATAL_BEFORE_WELCOME:
            self._emit(Incoming(msg, None))
            self._fatal = strip_formatting(msg.params[-1] if msg.params else command)
            if command == p.ERR_ERRONEUSNICKNAME and self._nick != self._wanted_nick:
                self._note(f"Nick {self._wanted_nick} is taken and {self._nick} is refused")
            return True
        if command == p.ERR_UNKNOWNCOMMAND and msg.param(1).upper() == "CAP":
            return True  # a server from before CAP: it registers us without it
        if command == "NOTICE":
            # Pre-registration notices ("*** Looking up your hostname", ircish's hint for
            # nc users to type /nick) are not meant for a client that registers itself.
            log.info("server notice: %s", strip_formatting(msg.param(1)))
            return True
        return False

    def _apply(self, msg: Message, me: str) -> bool:
        """Update the state for `msg`; True if the prompt may show something new."""
        command = msg.command
        source = msg.source_nick or ""
        mine = casefold(source) == casefold(me)
        with self._state_changed:
            if command == "JOIN":
                if mine:
                    self._joined_locked(msg.param(0))
                    return True
                self._add_member_locked(msg.param(0), source)
            elif command in ("PART", "KICK"):
                gone = source if command == "PART" else msg.param(1)
                if casefold(gone) == casefold(me):
                    self._left_locked(msg.param(0))
                    return True
                room = self._rooms.get(casefold(msg.param(0)))
                if room is not None:
                    room.members.pop(casefold(gone), None)
            elif command == "QUIT":
                for room in self._rooms.values():
                    room.members.pop(casefold(source), None)
                self._away.pop(casefold(source), None)
            elif command == p.RPL_AWAY and len(msg.params) >= 3:
                # `<me> <nick> :reason`, the answer to a message to someone away.
                self._away[casefold(msg.param(1))] = msg.params[-1]
                return self._query is not None and casefold(self._query) == casefold(msg.param(1))
            elif command == "NICK":
                return self._renamed_locked(source, msg.param(0), mine)
            elif command == "MODE" or command == p.RPL_CHANNELMODEIS:
                self._room_mode_locked(msg.params if command == "MODE" else msg.params[1:])
            elif command in _JOIN_REFUSED:
                # A rejoin that was refused (banned, +i, new key): a later /join of that
                # room is the person's own and makes it current. A refused key is no use.
                self._rejoining.discard(casefold(msg.param(1)))
                if casefold(msg.param(1)) not in self._rooms:
                    self._shown.pop(casefold(msg.param(1)), None)
                if command == p.ERR_BADCHANNELKEY:
                    self._keys.pop(casefold(msg.param(1)), None)
            elif command == p.RPL_NAMREPLY and len(msg.params) >= 3:
                key = casefold(msg.params[-2])
                names = self._pending_names.setdefault(key, {})
                joined = self._rooms.get(key)
                for name in msg.params[-1].split():
                    nick = name.lstrip(MEMBER_PREFIXES)
                    if nick:
                        names[casefold(nick)] = nick
                        # Known at once, not only at the end of the list: once "Users in
                        # #room: ..." is on screen, Tab completes those nicks.
                        if joined is not None:
                            joined.members[casefold(nick)] = nick
            elif command == p.RPL_ENDOFNAMES:
                # `NAMES #a,#b` ends once, naming the list it was asked for.
                for key in casefold(msg.param(1)).split(","):
                    names = self._pending_names.pop(key, None)
                    if key in self._rooms and names is not None:
                        self._rooms[key].members = names
        return False

    def _welcome(self, link: _Link, msg: Message) -> None:
        with self._lock:
            if msg.param(0) and msg.param(0) != "*":
                self._nick = msg.param(0)
            rooms, self._to_join = self._to_join, []
            rejoining = bool(self._rejoining)
            keys = dict(self._keys)
            me = self._nick
            credentials = self._credentials if self._account is None else None
            if credentials is not None and not self._sasl_tried:
                # No SASL here (none offered, or no mechanism we speak): NickServ, before
                # the JOINs, as a room may let in only those logged in.
                self._ask_nickserv_locked(
                    link,
                    f"Login as {credentials.account}",
                    credentials,
                    f"IDENTIFY {credentials.account} {credentials.password}",
                )
        self._failures = 0
        self._quiet_burst, self._welcomed_before = self._welcomed_before, True
        self._emit(Incoming(msg, me))
        if rejoining and rooms:
            self._note(f"Rejoining {', '.join(rooms)}")
        # The JOINs go out before we count as registered, so whatever the UI sends next
        # (a script's line waits for registration, then a PING round trip) finds the
        # rooms joined.
        for room in rooms:
            key = keys.get(casefold(room))
            link.send(Message("JOIN", [room, key] if key else [room]))
        with self._state_changed:
            self._registered = True
            self._state_changed.notify_all()
        self._emit(Changed())

    def _joined_locked(self, name: str) -> None:
        assert held(self._lock)
        key = casefold(name)
        self._rooms[key] = _Room(name, {casefold(self._nick): self._nick})
        self._shown.setdefault(key, _Shown()).oldest = None  # nothing shown since this join
        if key in self._rejoining:
            self._rejoining.discard(key)
            if self._current_room is None or casefold(self._current_room) == key:
                self._make_current_locked(name)
        else:
            # A room the person asked to join becomes where their text goes.
            self._make_current_locked(name)
            self._query = None

    def _make_current_locked(self, name: str) -> None:
        assert held(self._lock)
        key = casefold(name)
        self._current_room = name
        if key in self._recent:
            self._recent.remove(key)
        self._recent.append(key)

    def _left_locked(self, name: str) -> None:
        assert held(self._lock)
        key = casefold(name)
        self._rooms.pop(key, None)
        self._pending_names.pop(key, None)
        self._keys.pop(key, None)
        self._shown.pop(key, None)
        if key in self._recent:
            self._recent.remove(key)
        if self._current_room is not None and casefold(self._current_room) == key:
            # Back to the room that was current before (a room never current: the one joined
            # last), after a /leave or a KICK alike.
            before = next((k for k in reversed(self._recent) if k in self._rooms), None)
            if before is None and self._rooms:
                before = next(reversed(self._rooms))
            self._current_room = None
            if before is not None:
                self._make_current_locked(self._rooms[before].name)

    def _room_mode_locked(self, params: tuple[str, ...] | list[str]) -> None:
        """Follow the key of a room we are in, from a MODE line or a 324 reply:
        <room> <modestring> [<args>...]."""
        assert held(self._lock)
        key = casefold(params[0]) if params else ""
        if key not in self._rooms or len(params) < 2:
            return
        parsed = modes.parse_changes(params[1], params[2:])
        if parsed.unknown:
            return  # another server's letter may take a parameter: the pairing is a guess
        for change in parsed.changes:
            if change.letter != "k":
                continue
            if change.adding and change.arg:
                self._keys[key] = change.arg
            elif not change.adding:
                self._keys.pop(key, None)

    def _remember_keys(self, rooms: str, keys: str) -> None:
        # JOIN #a,#b key_a,key_b: the keys pair with the rooms in order.
        with self._lock:
            for room, key in zip(rooms.split(","), keys.split(","), strict=False):
                if room and key:
                    self._keys[casefold(room)] = key

    def _add_member_locked(self, room_name: str, nick: str) -> None:
        assert held(self._lock)
        room = self._rooms.get(casefold(room_name))
        if room is not None and nick:
            room.members[casefold(nick)] = nick

    def _renamed_locked(self, old: str, new: str, mine: bool) -> bool:
        assert held(self._lock)
        for room in self._rooms.values():
            if room.members.pop(casefold(old), None) is not None:
                room.members[casefold(new)] = new
        reason = self._away.pop(casefold(old), None)
        if reason is not None:
            self._away[casefold(new)] = reason
        changed = mine
        if mine:
            self._nick = self._wanted_nick = new
        if self._query is not None and casefold(self._query) == casefold(old):
            self._query, changed = new, True
        return changed

    def _answered(self, token: str) -> None:
        with self._lock:
            done = self._syncs.pop(token, None)
            confirmed = self._unconfirmed.pop(token, [])
        if done is not None:
            done.set()
        for sent in confirmed:
            if sent.targets:
                # Taken by the server: shown as ours, to the targets no refusal named.
                targets = ",".join(sent.targets.values())
                echo = Message(sent.msg.command, [targets, *sent.msg.params[1:]], prefix=sent.me)
                self._emit(Incoming(echo, sent.me))

    def _refused(self, msg: Message) -> bool:
        """If `msg` (a refusal of a PRIVMSG/NOTICE) refuses a message not yet confirmed, say
        so; True if it did. It refuses the first message it fits of those sent before the
        next PONG, as replies come in order."""
        command = msg.command
        whole = command in _SEND_REFUSED or command == "FAIL"  # not naming one target
        with self._lock:
            for sent in next(iter(self._unconfirmed.values()), []):
                if command == "FAIL" and msg.param(0).upper() != sent.msg.command:
                    continue
                refused = sent.refuse(list(sent.targets) if whole else [casefold(msg.param(1))])
                if refused:
                    break
            else:
                return False
        reason = strip_formatting(msg.params[-1]) if len(msg.params) > 1 else command
        text = f"Not sent to {strip_formatting(refused)}: {sent.shown_text()} ({reason})"
        self._note(text, "error")
        return True

    def _answer_ctcp(self, link: _Link, msg: Message, me: str) -> None:
        source = msg.source_nick or ""
        from_server = "!" not in (msg.prefix or "") and "." in source
        if not source or from_server or casefold(source) == casefold(me):
            return
        reply = ctcp_reply(msg.param(1))
        if reply is None:
            return
        if not self._ctcp_budget.take():
            log.info("CTCP from %s not answered: too many requests", strip_formatting(source))
            return
        try:
            link.send(Message("NOTICE", [source, reply]))
        except ProtocolError as exc:
            log.info("cannot answer a CTCP from %s: %s", strip_formatting(source), exc)

    def _lose(self, link: _Link) -> None:
        """The link is gone: close it, remember the rooms to rejoin, wake every waiter."""
        link.close()
        with self._state_changed:
            # Lost before 001: what we meant to join is still in _to_join.
            if self._registered:
                self._to_join = [room.name for room in self._rooms.values()]
                self._rejoining = {casefold(name) for name in self._to_join}
            self._registered = False
            self._link = None
            self._account = None
            self._pending_login = None
            self._nickserv_asked = None  # no answer comes on another link
            self._rooms.clear()
            self._pending_names.clear()
            self._away.clear()
            self._history_asked.clear()  # no answer comes on another link
            waiters, self._syncs = list(self._syncs.values()), {}
            unconfirmed = [sent for batch in self._unconfirmed.values() for sent in batch]
            self._unconfirmed = {}
            self._state_changed.notify_all()
        for done in waiters:
            done.set()
        for sent in unconfirmed:
            if sent.targets:
                where = strip_formatting(",".join(sent.targets.values()))
                self._note(
                    f"Maybe not sent to {where}: {sent.shown_text()} (the connection was lost "
                    "before the server confirmed it)",
                    "error",
                )
        self._emit(Changed())

    def _finish(self, code: int) -> None:
        with self._state_changed:
            self.exit_code = code
            self._closed = True
            self._state_changed.notify_all()
        self._emit(Closed(code))

    def _note(self, text: str, kind: str = "info") -> None:
        self._emit(Note(text, kind))

    def _emit(self, event: Event) -> None:
        try:
            self._listener(event)
        except Exception:
            log.exception("the UI failed to show %r", event)
