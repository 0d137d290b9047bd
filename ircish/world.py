"""Shared chat state: the nick table, the room table, rooms and user records.

`World` owns who is online and which rooms exist; each `Room` owns its member
set (with each member's status: operator, voice), topic and modes. All fan-out goes
through `Room` and `World` methods, so nothing else needs to know how delivery works.
Who may do what in a room is checked here, under the lock that guards the state the
answer depends on; a refusal is an `IRCError` the dispatcher turns into a numeric.

Every relay is an `Event` (ircish/events.py: one time and one msgid for all its receivers).
A room's events are also its history: each is added to the room's window (its last lines,
in memory) under the room's lock, in the order members got them, with the room's next
sequence number. After the relay, with every lock released, the world hands those lines,
a permanent room's new state and the rooms that ended to its `keeper` (the store's writer
thread, ircish/store/writer.py: never blocks), and the event to its `record` hook.

Lock order (a thread may take a later lock while holding an earlier one,
never the reverse; ircish/locks.py holds the same order as data, and checks it in tests):

    World.lock  ->  Room.lock  ->  labeled lock  ->  Connection outbox lock  ->  TlsTransport._lock

- `World.lock` guards the nick table, the room table, every `User.rooms`, the
  LUSERS counters (and the peak) with the user modes they count (+i, +o; read without
  it, a single attribute read), the set of +w users WALLOPS goes to, and the WHOWAS
  history (a bounded deque). Joining and leaving take it, so creating a room on
  first join and deleting it on last leave is one atomic step.
- `Room.lock` guards `members` (and their status), the topic, the modes, the mask lists
  (bans and exceptions), the invite list, the history window (`window`, `seq`) and the
  ChanServ registration (founder, access list, topic lock: read at join under it). A
  room broadcast enqueues to every member while holding it, so all members see one
  room's messages in the same order, and its history keeps that order; a reply
  that describes a room (NAMES, a JOIN's topic and names, WHO, TOPIC, MODE) is built and
  queued under it too (`Room.answer`), so it is never older than an event queued before
  it. Several room locks at once only while holding `World.lock` (nick change, quit),
  which makes their order irrelevant.
- the labeled lock (ircish/connection.py, one per labeled command of a client with
  labeled-response) guards the answer being gathered: its first line is held until a
  second shows whether a batch is needed, and a line for that client that is no part of
  the answer sends the held one first (under the room's lock, before the outbox lock).
- The outbox lock: `Connection.send` only appends to a queue under it.
- `TlsTransport._lock` (ircish/tls.py, TLS connections only) guards the SSL
  object; it is last in the order (no code holds it with another lock) and is
  never held while waiting.
- `Server.connections_lock` (ircish/server.py) is taken alone.
- The scrypt semaphore (ircish/passwords.py, OPER) is taken alone: a reader thread
  may wait on it, holding nothing else.
- `Writer._drops_lock` (ircish/store/writer.py) is taken alone: it counts the history
  lines a full writer queue turned away. `SqliteStore._readers_lock` (the pool of
  reader connections) is taken alone too, and no connection is opened under it. The
  writer's queue is a deque (an append takes no lock) and its wake-up a
  `threading.Event`, whose own lock is never held while anything else is; the world
  hands it lines only after releasing its locks, and reads the store (a history read
  older than the window) only after releasing the room's.
- `Accounts.lock` and `LoginLimiter._lock` (ircish/accounts.py) are taken alone: the
  account table and the failed-login counts. An account's change is handed to the
  writer (a deque append) under `Accounts.lock`, so the store gets changes in order;
  password hashing happens with no lock held. The private history lock (`World`)
  is taken alone too: it gives private lines their order.
- `Cluster.tickets_lock` (ircish/cluster/node.py, a cluster node's commands waiting for
  the shared log) and `Cluster.up_lock` (whether Redis answers) are taken alone, and no
  Redis call happens under any lock.

In a cluster (ircish/cluster), the methods marked `@shared` are the changes every node
makes: called by a reader thread, one is appended to the shared log in Redis (holding no
lock), and every node's bus thread runs it from there, taking the locks above in the same
order as any other thread. The bus is then the only thread that changes shared state.
No socket I/O, no blocking call and no call into code outside this module that could take
a lock (a lookup callback, say) happens under any of these locks, with one exception made
on purpose: `Room.answer` and `World.join(answer=...)` run a builder from the commands
layer under the room's lock (never under World.lock). A builder only reads the room and
returns messages for one client; it is named `*_locked` and asserts the lock like every
other `*_locked` method, which all assert that their caller holds the lock.

Reads without a lock, and what they rely on (free-threaded CPython 3.13t keeps each of
them safe too, since a single dict or set operation and an attribute read are atomic
there as well):
- `World.find_user`, `World.find_room`: one dict read; so is `Accounts.get`, and
  `Accounts.by_fingerprint` copies the table's values in one step (`list(dict.values())`).
- `User.account` and `User.nick_deadline`: attributes read alone (the housekeeping
  thread reads the deadline, and the rename checks it again under World.lock).
- `User.rooms` is copy-on-write: it is replaced, never changed in place, under World.lock,
  so a reader without the lock (`current_room`, WHOIS, NAMES without a room, JOIN 0)
  iterates a dict nobody changes. (Iterating it while a KICK changed it in place crashed
  text sessions: issue 10.)
- `Room.is_secret_to`: a set membership test and a dict membership test.
- Attributes read alone: `User.nick`, `away`, `oper`, `invisible`, `wallops`,
  `registered`; the LUSERS counters are read together under World.lock (`counts`).
- msgids need no shared counter (ircish/events.py: a prefix and a count per thread).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import operator
import secrets
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ircish import modes
from ircish import protocol as p
from ircish.accounts import CHANSERV_PREFIX, Accounts, nickserv_notice
from ircish.config import HistoryConfig
from ircish.events import Event, millis, now
from ircish.locks import held, new_lock
from ircish.protocol import IRCError, Message, casefold

# The nick rule is pure protocol (ircish-client checks a nick with it before connecting); it
# is re-exported here, where the commands have always found it.
from ircish.protocol import valid_nick as valid_nick
from ircish.shared import Network, shared
from ircish.store import (
    MaskState,
    Query,
    RoomState,
    Store,
    StoredLine,
    private_party,
    private_target,
    read_lines,
)

if TYPE_CHECKING:
    import re

#: Called once per relayed event, after the relay, outside every lock.
Recorder = Callable[[Event], None]
#: Builds, under a room's lock, what a reply says about the room (see `Room.answer`).
RoomReply = Callable[["Room"], "Iterable[Message]"]
#: A room's hook into its world, called after a change with no lock held: the event
#: relayed (None if only the state changed), its history lines, the room's state to keep
#: (a permanent room that changed, or stopped being permanent), a room that ended.
RoomRecorder = Callable[..., None]
#: Lines a room's window may hold past `history.window` while the store has not written
#: them (see `Room._trim_locked`). A writer a second behind in one room at a thousand lines
#: a second is far past what rooms see; a disk that stalls (or lines the full queue turned
#: away, which are never written) must not grow every window without end: past this, the
#: oldest go, and an answer reaching back past the window may miss them until written.
UNSTORED_LIMIT = 1_000
#: A full window is trimmed once this many lines past its size, not at every line.
TRIM_EVERY = 32
#: What nick protection renames someone to: Guest12345.
GUEST_PREFIX = "Guest"
#: History is off: no window, nothing kept.
NO_HISTORY = HistoryConfig(max_lines=0)
#: Who sets the modes a registered room gives (the `nick!user@host` of the ChanServ
#: pseudo-user, commands/chanserv.py, which speaks as it too).
#: The status an account on a registered room's access list gets on join: op or voice.
ACCESS_LETTERS = "ov"
#: Accounts one registered room's access list holds at most.
MAX_ACCESS = 100


class Keeper(Protocol):
    """Where history lines and permanent rooms go (the store's writer thread). Every call
    returns at once; the world makes them after the relay, outside every lock."""

    store: Store

    def submit(self, line: StoredLine) -> bool: ...

    def written_upto(self, target: str, epoch: int) -> int | None:
        """The highest seq of `target`'s life `epoch` written so far (None: none yet)."""
        ...

    def forget(self, target: str, epoch: int) -> None: ...

    def save_room(self, state: RoomState) -> None: ...

    def drop_room(self, name: str) -> None: ...

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over so far is written; False on timeout."""
        ...


_seq_of = operator.attrgetter("seq")


def _record_nothing(
    event: Event | None,
    lines: Iterable[StoredLine] = (),
    state: RoomState | None = None,
    ended: Room | None = None,
) -> None:
    """The record hook of a room made outside a world (tests)."""


class Deliverer(Protocol):
    """What a user record needs from its connection: non-blocking sends, and closing."""

    def deliver(self, event: Event, reply: bool = True) -> None:
        """Queue a relayed event, in this client's wire format. `reply=False`: even when the
        client's own command caused it, it is not part of that command's labeled answer."""
        ...

    def send(self, msg: Message) -> None:
        """Queue one message (a reply, a notice) for this client."""
        ...

    def close(self, reason: str, error: str | None = None, flush: bool = True) -> None: ...

    def has_cap(self, name: str) -> bool:
        """Whether the client negotiated capability `name` (IRCv3)."""
        ...


log = logging.getLogger(__name__)


def valid_room_name(name: str, max_length: int) -> bool:
    """A room is '#' then at least one char; no space, comma, BEL, colon or control chars."""
    if not 1 < len(name) <= max_length or name[0] != "#":
        return False
    # No separators, no C0/C1 controls or DEL, and no Unicode spaces that a
    # client might split on.
    return not any(c in ",:" or c.isspace() or ord(c) < 32 or 127 <= ord(c) < 160 for c in name)


def irc_host(address: str) -> str:
    """An address as IRC shows it: an IPv6 address may start with ':', which cannot begin a
    middle parameter (WHO, WHOIS), so it gets a '0' before it as on other servers (`::1` is
    `0::1`). Host patterns in the config go through it too, so `::1` matches."""
    return "0" + address if address.startswith(":") else address


#: The User attribute that holds each user mode of the mode table (`mode_letters`, 221).
USER_MODE_ATTRIBUTES = {
    "i": "invisible",
    "o": "oper",
    modes.WALLOPS_MODE: "wallops",
    modes.BOT_MODE: "bot",
}
assert USER_MODE_ATTRIBUTES.keys() == modes.USER_MODES.keys(), "a user mode without its attribute"


class User:
    """One person: identity, away state and rooms. Belongs to one connection."""

    def __init__(self, conn: Deliverer, host: str) -> None:
        self.conn = conn
        #: In a cluster, this user's name in the shared log, the same on every node
        #: (ircish/cluster); None until a shared change first names them, and always in a
        #: single process.
        self.uid: str | None = None
        #: The server (a cluster's node) they are connected to; None: this one.
        self.server: str | None = None
        self.nick: str | None = None
        self.username = ""
        self.realname = ""
        self.host = irc_host(host)
        self.registered = False
        self.invisible = False
        self.away: str | None = None
        #: User mode +o: a server operator (OPER), an operator in every room.
        self.oper = False
        #: The config's operator they OPERed as (a reload that removes it ends their +o).
        #: Under World.lock.
        self.oper_name: str | None = None
        #: User mode +B: a bot (IRCv3 bot mode: the `bot` tag, 335 in WHOIS, B in WHO).
        self.bot = False
        #: User mode +w: sent WALLOPS (under World.lock, which keeps the set of such users).
        self.wallops = False
        self.signon = time.time()
        self.last_spoke = time.time()
        #: Rooms by casefolded name, in join order. Replaced, never changed in place, under
        #: World.lock (copy-on-write), so it may be read and iterated without the lock.
        self.rooms: Mapping[str, Room] = {}
        #: Casefolded nicks this user watches with MONITOR (under World.lock).
        self.monitoring: set[str] = set()
        #: The account this user is logged in to (its name as registered); None: not
        #: logged in. Set under World.lock (`World.set_account`), read without it.
        self.account: str | None = None
        #: When (time.monotonic()) this user, not logged in to the account their nick
        #: belongs to, is renamed to a guest nick; None: their nick is their own. Under
        #: World.lock.
        self.nick_deadline: float | None = None
        #: Casefolded nicks of accounts this user was renamed off (nick protection): not
        #: theirs to take again on this connection. Added to under World.lock, read alone.
        self.barred_nicks: set[str] = set()
        #: The casefolded room a text session chose with /switch; None: the last joined.
        #: Only the user's own reader thread reads or writes it (a JOIN clears it).
        self.chosen_room: str | None = None

    @property
    def prefix(self) -> str:
        return f"{self.nick}!{self.username}@{self.host}"

    def logged_in_to(self, account: str | None) -> bool:
        """Whether this user is logged in to `account` (any case)."""
        mine = self.account
        return mine is not None and account is not None and casefold(mine) == casefold(account)

    @property
    def mode_letters(self) -> str:
        """The user modes that are on, in the mode table's order (221: `+iw`)."""
        on = USER_MODE_ATTRIBUTES
        return "".join(letter for letter in modes.USER_MODES if getattr(self, on[letter]))

    @property
    def current_room(self) -> str | None:
        """Where a text session's plain lines go: the room chosen with /switch if still
        joined, else the last joined room still joined."""
        rooms = self.rooms  # one read: the dict itself never changes
        if not rooms:
            return None
        chosen = rooms.get(self.chosen_room) if self.chosen_room is not None else None
        return (chosen or next(reversed(rooms.values()))).name

    def send(self, msg: Message) -> None:
        self.conn.send(msg)

    def __repr__(self) -> str:
        return f"<User {self.nick}>"


@dataclass(frozen=True, slots=True)
class MaskEntry:
    """One entry of a mask list (+b, +e, +I): the completed mask, who set it and when (367,
    348, 346), and its matcher."""

    mask: str
    setter: str
    when: int
    pattern: re.Pattern[str]


class Snapshot(NamedTuple):
    """A room's members (each with their status letters) and topic, read consistently."""

    members: dict[User, str]
    topic: str
    topic_setter: str
    topic_time: int


class Access(NamedTuple):
    """An account on a registered room's access list: its name as registered, and the
    status ChanServ gives it when it joins (a letter of ACCESS_LETTERS)."""

    account: str
    letter: str


class Registration(NamedTuple):
    """What ChanServ INFO shows of a registered room, read consistently: its founder's
    account, when it was registered (time.time()), the topic lock, the access list."""

    founder: str | None
    registered: int
    topic_lock: bool
    access: tuple[Access, ...]


class Counts(NamedTuple):
    """What LUSERS reports, kept as counters (a scan per registration would be O(users))."""

    users: int
    invisible: int
    operators: int
    rooms: int
    #: The most users registered at once since the server started (265/266).
    peak: int


class WhowasEntry(NamedTuple):
    """Who had a nick: kept when a registered user quits or changes nick (WHOWAS)."""

    nick: str
    username: str
    host: str
    realname: str
    server: str
    #: When they left the nick (time.time()).
    when: float


#: WHOWAS entries the world keeps; the oldest goes when a new one comes.
WHOWAS_LENGTH = 1000


def status_prefix(status: str, every: bool = False) -> str:
    """The highest prefix for a member's status letters: '@', '+' or ''; with `every`
    (IRCv3 multi-prefix), all of them, highest first: '@+'."""
    prefixes = ""
    for letter, prefix in modes.STATUS_PREFIXES.items():
        if letter in status:
            if not every:
                return prefix
            prefixes += prefix
    return prefixes


#: The client tags that make a TAGMSG worth keeping in history, as in ergo: a reaction is
#: part of the conversation, and `+draft/persist` asks for it (irctest's chathistory tests
#: send it). `+typing` and other tags are over in seconds and would fill the history with
#: noise that every replay then carries.
KEPT_TAGMSG_TAGS = frozenset({"+draft/persist", "+draft/react", "+react"})


def worth_keeping(event: Event) -> bool:
    """Whether history keeps `event`: everything but a TAGMSG without a tag worth keeping."""
    message = event.message
    return message.command != "TAGMSG" or not KEPT_TAGMSG_TAGS.isdisjoint(message.tags)


class Room:
    """A room: its members, topic, modes and lock. `broadcast_locked` is the one fan-out path."""

    #: The cluster this room's world is a node of (see `shared`); None: a single process.
    cluster: Network | None = None

    def __init__(
        self,
        name: str,
        topic: str = "",
        persistent: bool = False,
        record: RoomRecorder | None = None,
        history: HistoryConfig = NO_HISTORY,
        stored: Callable[[str, int], int | None] | None = None,
        epoch: int | None = None,
    ) -> None:
        self.name = name
        #: The casefolded name: the room table's key.
        self.folded = casefold(name)
        self.lock = new_lock("Room.lock")
        #: member -> status letters ("", "o", "v", "ov"), in join order.
        self.members: dict[User, str] = {}
        self.topic = topic
        self.topic_setter = "" if not topic else "server"
        self.topic_time = int(now()) if topic else 0
        self.created = int(now())
        self._record = record if record is not None else _record_nothing
        #: Flag modes (modes.FLAG letters) that are on; +P (permanent) for config rooms.
        self.flags: set[str] = set(modes.DEFAULT_ROOM_FLAGS)
        if persistent:
            self.flags.add(modes.PERMANENT)
        #: History (under self.lock): the last lines of the room, oldest first, and whether
        #: they are all it has (nothing older on disk). `seq` numbers its lines in the order
        #: members saw them; `epoch` tells this life of the room from an earlier one of the
        #: same name (whose history the store forgets). The window keeps its last
        #: `_window_size` lines, and any older ones the store has not written yet, so that
        #: the window and the store together never miss a line (`_trim_locked`).
        self.window: list[StoredLine] | None = [] if history.enabled else None
        self._window_size = history.window_lines
        self.window_complete = True
        self.seq = 0
        self.epoch = time.time_ns() if epoch is None else epoch
        #: The oldest life whose lines this room reads: its own, or every kept one for a
        #: permanent room brought back at start (a forget that failed must not hand a new
        #: `#x` the talk of an earlier one).
        self.oldest_epoch = self.epoch
        self.history = history
        #: The highest seq of this room's life the store has written (None: no store).
        self._stored = stored
        #: The last seq the store had at start (primed lines are written already).
        self._primed_seq = 0
        self.join_key: str | None = None  # +k
        self.limit: int | None = None  # +l
        #: One map per list letter (modes.MASK_LISTS: b e I): casefolded mask -> MaskEntry,
        #: in the order they were set.
        self.mask_lists: dict[str, dict[str, MaskEntry]] = {
            letter: {} for letter in modes.MASK_LISTS
        }
        #: Users invited past +i; an invite is used up by joining, and a user who leaves
        #: the server drops out by itself (weak references).
        self.invited: weakref.WeakSet[User] = weakref.WeakSet()
        #: ChanServ (a registered room, always +P): the founder's account (None: not
        #: registered) and when they registered it; the access list (casefolded account
        #: -> Access), applied when those accounts join; the topic lock (only the founder,
        #: the accounts with op access and server operators change the topic).
        self.founder: str | None = None
        self.registered = 0
        self.access: dict[str, Access] = {}
        self.topic_lock = False

    # -- who may do what (callers hold self.lock) ------------------------------

    def is_operator_locked(self, user: User) -> bool:
        """A room operator, or a server operator (who acts as one in every room)."""
        assert held(self.lock)
        return user.oper or "o" in self.members.get(user, "")

    @property
    def persistent(self) -> bool:
        """+P: the room outlives its last member, and a restart (config rooms have it)."""
        return modes.PERMANENT in self.flags

    def require_operator_locked(self, user: User) -> None:
        assert held(self.lock)
        if not self.is_operator_locked(user):
            raise IRCError(p.ERR_CHANOPRIVSNEEDED, self.name, "You're not a room operator")

    def require_member_locked(self, user: User) -> None:
        """Members, and server operators, may act on a room."""
        assert held(self.lock)
        if user not in self.members and not user.oper:
            raise IRCError(p.ERR_NOTONCHANNEL, self.name, "You're not in that room")

    def require_visible_locked(self, user: User) -> None:
        """What a secret room says about itself (topic, modes, bans) is for its members and
        server operators; others get 442, as they would for any room they are not in."""
        assert held(self.lock)
        if self.is_secret_to(user):
            raise IRCError(p.ERR_NOTONCHANNEL, self.name, "You're not in that room")

    def matches_list_locked(self, letter: str, user: User) -> bool:
        """Whether a mask on list `letter` (b, e, I) matches `user`."""
        assert held(self.lock)
        entries = self.mask_lists[letter]
        if not entries:
            return False
        who = casefold(user.prefix)
        return any(entry.pattern.fullmatch(who) for entry in entries.values())

    def is_banned_locked(self, user: User) -> bool:
        """A +b mask matches `user` and no +e mask does."""
        assert held(self.lock)
        return self.matches_list_locked(modes.BAN, user) and not self.matches_list_locked(
            modes.BAN_EXCEPTION, user
        )

    def check_join_locked(self, user: User, key: str | None) -> None:
        """Raise the numeric that keeps `user` out, if any. Server operators, and the founder
        of a registered room (who can always get back in), pass them all. An invite, or a
        +I mask that matches, lets one past +i only: without +i any member may invite, so
        an invite must not undo an operator's ban, key or limit."""
        assert held(self.lock)
        if user.oper or self.is_founder_locked(user):
            return
        if self.is_banned_locked(user):
            raise IRCError(p.ERR_BANNEDFROMCHAN, self.name, "Cannot join room (+b): you are banned")
        if (
            "i" in self.flags
            and user not in self.invited
            and not self.matches_list_locked(modes.INVITE_EXCEPTION, user)
        ):
            raise IRCError(
                p.ERR_INVITEONLYCHAN, self.name, "Cannot join room (+i): it is invite only"
            )
        if self.join_key is not None and key != self.join_key:
            raise IRCError(
                p.ERR_BADCHANNELKEY, self.name, "Cannot join room (+k): wrong or missing key"
            )
        if self.limit is not None and len(self.members) >= self.limit:
            raise IRCError(p.ERR_CHANNELISFULL, self.name, "Cannot join room (+l): it is full")

    def is_secret_to(self, user: User) -> bool:
        """+s hides a room from LIST, NAMES, WHO and WHOIS of anyone outside it, and its topic,
        modes and mask lists too. (A set test and a dict test: callers need not hold the lock.)"""
        return "s" in self.flags and user not in self.members and not user.oper

    # -- delivery ----------------------------------------------------------------

    def broadcast_locked(self, event: Event, exclude: User | None = None) -> None:
        """Enqueue `event` to every member but `exclude`. Caller holds self.lock."""
        assert held(self.lock)
        for member in self.members:
            if member is not exclude:
                member.conn.deliver(event)

    def keep_locked(self, event: Event) -> tuple[StoredLine, ...]:
        """Add `event` to the room's history, in the order members got it; the lines to
        store: that one, or none when history is off. Caller holds self.lock."""
        assert held(self.lock)
        window = self.window
        if window is None or not worth_keeping(event):
            return ()
        self.seq += 1
        line = StoredLine.of(event, self.folded, self.seq, self.epoch)
        window.append(line)
        if len(window) > self._window_size + TRIM_EVERY:
            self._trim_locked(window)
        return (line,)

    def _trim_locked(self, window: list[StoredLine]) -> None:
        """Drop the window's oldest lines past its size, but only those the store has
        written: a line that left the window before the writer took it would be in
        neither, a hole in every answer that reaches back past the window. (A store that
        keeps failing could hold lines back forever: past UNSTORED_LIMIT they go anyway.)
        A list, cut from the front TRIM_EVERY lines at a time: one slice, no loop."""
        assert held(self.lock)
        written = None if self._stored is None else self._stored(self.folded, self.epoch)
        # No store behind the window (memory only): it is all there is, trim at will.
        upto = self.seq if written is None else max(written, self._primed_seq)
        extra = len(window) - self._window_size
        drop = bisect.bisect_right(window, upto, hi=extra, key=_seq_of)
        drop = max(drop, extra - UNSTORED_LIMIT)
        if drop > 0:
            del window[:drop]
            self.window_complete = False

    def recent_locked(self, count: int, commands: frozenset[str]) -> list[StoredLine]:
        """The last `count` lines of these commands still in the window (replay on join)."""
        assert held(self.lock)
        if not count or self.window is None:
            return []
        return self._reading_locked(Query(count, commands=commands)).pick(self.window)

    def _reading_locked(self, query: Query) -> Query:
        """`query` within retention: no line older than max_age, none past max_lines."""
        assert held(self.lock)
        history = self.history
        oldest_seq = self.seq - history.max_lines
        after_seq = query.after_seq
        if oldest_seq > 0 and (after_seq is None or after_seq < oldest_seq):
            after_seq = oldest_seq
        max_age = history.max_age_seconds
        since = None if max_age is None else millis(time.time() - max_age)
        return dataclasses.replace(
            query, after_seq=after_seq, since=since, since_epoch=self.oldest_epoch
        )

    def read_history(self, reader: User, query: Query, store: Store | None) -> list[StoredLine]:
        """What `query` asks of this room's history, for a member (IRCError 442 for anyone
        else, a server operator too: a secret or keyed room's talk is its members'). The
        window is read under the lock; the store, if needed, after it."""
        with self.lock:
            self._require_reader_locked(reader)
            if self.window is None:
                return []
            window = list(self.window)
            complete = self.window_complete
            query = self._reading_locked(query)
        return read_lines(window, complete, store, self.folded, query)

    def find_line(self, reader: User, msgid: str, store: Store | None) -> StoredLine | None:
        """The line of this room's history with `msgid` (a CHATHISTORY reference), for a
        member (IRCError 442 otherwise): the window first, then the store."""
        with self.lock:
            self._require_reader_locked(reader)
            if self.window is None:
                return None
            for line in reversed(self.window):
                if line.msgid == msgid:
                    return line
            if self.window_complete:
                return None
            epoch = self.epoch
            oldest = self.oldest_epoch
        line = None if store is None else store.find(self.folded, msgid)
        return line if line is not None and oldest <= line.epoch <= epoch else None

    def _require_reader_locked(self, reader: User) -> None:
        assert held(self.lock)
        if reader not in self.members:
            raise IRCError(p.ERR_NOTONCHANNEL, self.name, "You're not in that room")

    def state_locked(self) -> RoomState:
        """What a permanent room keeps across a restart."""
        assert held(self.lock)
        return RoomState(
            self.name,
            self.topic,
            self.topic_setter,
            self.topic_time,
            self.created,
            "".join(sorted(self.flags)),
            self.join_key,
            self.limit,
            {
                letter: tuple(MaskState(e.mask, e.setter, e.when) for e in entries.values())
                for letter, entries in self.mask_lists.items()
                if entries
            },
            founder=self.founder,
            registered=self.registered,
            access={entry.account: entry.letter for entry in self.access.values()},
            topic_lock=self.topic_lock,
        )

    def restore_locked(self, state: RoomState, lines: list[StoredLine]) -> None:
        """Take back a permanent room's state and its last lines (at start)."""
        assert held(self.lock)
        self.topic, self.topic_setter, self.topic_time = (
            state.topic,
            state.topic_setter,
            state.topic_time,
        )
        self.created = state.created or self.created
        self.flags = set(state.flags) & set(modes.ROOM_MODES) | {modes.PERMANENT}
        self.join_key, self.limit = state.key, state.limit
        for letter, entries in state.lists.items():
            if letter in self.mask_lists:
                self.mask_lists[letter] = {
                    casefold(e.mask): MaskEntry(
                        e.mask, e.setter, e.time, modes.mask_pattern(e.mask)
                    )
                    for e in entries
                }
        self.founder, self.registered = state.founder, state.registered
        self.access = {
            casefold(account): Access(account, letter)
            for account, letter in state.access.items()
            if letter in ACCESS_LETTERS
        }
        self.topic_lock = bool(state.topic_lock) and self.founder is not None
        self.prime_locked(lines)

    def set_history_locked(self, history: HistoryConfig) -> None:
        assert held(self.lock)
        self.history = history
        self._window_size = history.window_lines

    def follow_config_locked(
        self, topic: str, server_name: str, made: bool
    ) -> tuple[list[tuple[Event, tuple[StoredLine, ...]]], RoomState] | None:
        """After a reload that names this room in the config: permanent from now on (a
        MODE +P from the server when it was not), and the config's topic if nobody set
        another (a TOPIC from the server). What to record once the locks are released
        (`_record_all`): the events and the state to keep; None if nothing changed."""
        assert held(self.lock)
        relayed = []
        if not self.persistent:
            self.flags.add(modes.PERMANENT)
            relayed += self.relay_modes_locked(
                [modes.Change(True, modes.PERMANENT)], server_name, None
            )
        if not made and self.topic_setter in ("", "server") and topic != self.topic:
            self.follow_config_topic_locked(topic)
            event = Event(Message("TOPIC", [self.name, topic], server_name), (self.name,))
            self.broadcast_locked(event)
            relayed.append((event, self.keep_locked(event)))
        if not relayed and not made:
            return None
        return relayed, self.state_locked()

    def follow_config_topic_locked(self, topic: str) -> None:
        """A config room whose topic nobody changed takes the config's (at start)."""
        assert held(self.lock)
        if topic != self.topic:
            self.topic = topic
            self.topic_setter = "server" if topic else ""
            self.topic_time = int(now()) if topic else 0

    def prime_locked(self, lines: list[StoredLine]) -> None:
        """Start the window with the last stored lines (at start): a permanent room reads
        the lines of every life kept, and its own life comes after theirs whatever the
        clock says (it may have been set back since)."""
        assert held(self.lock)
        self.oldest_epoch = 0
        if lines:
            self.epoch = max(self.epoch, max(line.epoch for line in lines) + 1)
        if self.window is None or not lines:
            return
        self.window.extend(lines)
        self.seq = self._primed_seq = lines[-1].seq
        self.window_complete = len(lines) < self._window_size

    @shared
    def send_from(
        self,
        sender: User,
        msg: Message,
        echo: bool = False,
        *,
        needs: str | None = None,
        only: str = "",
    ) -> int:
        """Relay a message to the members but `sender` (with `echo`, to `sender` too, in the
        room's order: a person's own line never shows after a reply to it); IRCError (404)
        if the room's modes keep `sender` quiet: +n outsiders, +m without voice, banned
        members without voice. `needs`: the cap a receiver needs (TAGMSG: message-tags);
        `only`: only members with one of these status letters get it (STATUSMSG,
        `PRIVMSG @#room`: "o"). Returns how many copies were queued (metrics)."""
        with self.lock:
            # The fan-out hot path: one dict read for a plain member, then two cheap tests.
            status = self.members.get(sender)
            if not status and not sender.oper:
                if status is None and "n" in self.flags:
                    raise IRCError(
                        p.ERR_CANNOTSENDTOCHAN, self.name, "Cannot send to room: join it first"
                    )
                if "m" in self.flags:
                    raise IRCError(
                        p.ERR_CANNOTSENDTOCHAN,
                        self.name,
                        "Cannot send to room: it is moderated (+m) and you have no voice",
                    )
                if self.mask_lists[modes.BAN] and self.is_banned_locked(sender):
                    raise IRCError(
                        p.ERR_CANNOTSENDTOCHAN, self.name, "Cannot send to room: you are banned"
                    )
            event = Event(msg, (self.name,), sender.account, needs=needs, bot=sender.bot)
            lines: tuple[StoredLine, ...] = ()
            if not only:
                self.broadcast_locked(event, exclude=None if echo else sender)
                lines = self.keep_locked(event)
                copies = len(self.members) - (status is not None and not echo)
            else:  # for some members only: not the room's history
                copies = echo
                for member, letters in self.members.items():
                    if member is not sender and any(c in letters for c in only):
                        member.conn.deliver(event)
                        copies += 1
                if echo:
                    sender.conn.deliver(event)
        self._record(event, lines)
        return copies

    def answer(self, send: Callable[[Message], None], build: RoomReply) -> None:
        """Send what `build` says about this room, built and queued under the room's lock, so
        the reply reflects every event of this room queued to its receiver before it (issue
        10: a NAMES snapshot taken before a PART and sent after it left a ghost member).
        `build` only reads the room; it may raise IRCError (a refusal, nothing sent)."""
        with self.lock:
            for msg in build(self):
                send(msg)

    def has_invited(self, user: User) -> bool:
        """Whether an unused invite lets `user` past +i here."""
        with self.lock:
            return user in self.invited

    @shared
    def set_topic(self, setter: User, topic: str) -> None:
        """Change the topic and tell the room: members may, only operators under +t."""
        with self.lock:
            self.require_member_locked(setter)
            if self.topic_lock and not self.may_manage_locked(setter):
                raise IRCError(
                    p.ERR_CHANOPRIVSNEEDED,
                    self.name,
                    "The topic is locked (ChanServ SET TOPICLOCK): only the founder and "
                    "accounts on the room's OP list may change it",
                )
            if "t" in self.flags:
                self.require_operator_locked(setter)
            event = Event(
                Message("TOPIC", [self.name, topic], setter.prefix), (self.name,), setter.account
            )
            self.topic = topic
            self.topic_setter = setter.prefix
            self.topic_time = int(now())
            self.tell_locked(setter, event)
            lines = self.keep_locked(event)
            state = self.state_locked() if self.persistent else None
        self._record(event, lines, state)

    def snapshot(self) -> Snapshot:
        """Members with their status, topic, topic setter and time, read consistently."""
        with self.lock:
            return Snapshot(dict(self.members), self.topic, self.topic_setter, self.topic_time)

    def mode_params_locked(self, viewer: User) -> list[str]:
        """324's mode string and parameters; the key only for members and server operators."""
        assert held(self.lock)
        params = [modes.describe_flags(self.flags, self.join_key, self.limit)]
        if self.join_key is not None:
            params.append(self.join_key if viewer in self.members or viewer.oper else "*")
        if self.limit is not None:
            params.append(str(self.limit))
        return params

    @shared
    def change_modes(
        self, actor: User, changes: list[modes.Change], targets: Mapping[str, User | None]
    ) -> list[IRCError]:
        """Apply an operator's changes in order and relay those that took effect as one
        MODE line (modes.split_changes cuts it only past 512 bytes). Raises 482 for a
        non-operator, who changes nothing; returns the refusals of single changes.
        `targets` holds the user each +o/+v nick names, looked up before the room's lock
        is taken (a lookup may take World.lock, which comes first in the order)."""
        refusals: list[IRCError] = []
        with self.lock:
            self.require_operator_locked(actor)
            was_permanent = self.persistent
            applied: list[modes.Change] = []
            for change in changes:
                try:
                    effect = self._apply_locked(actor, change, targets)
                except IRCError as exc:
                    refusals.append(exc)
                    continue
                if effect is not None:
                    applied.append(effect)
            relayed = self.relay_modes_locked(applied, actor.prefix, actor.account, actor)
            # A permanent room's new state is kept; one that stops being permanent, dropped.
            state = self.state_locked() if applied and (was_permanent or self.persistent) else None
        self._record_all(relayed, state)
        return refusals

    @shared
    def invite(self, inviter: User, target: User) -> None:
        """Let `target` in past +i once, and tell them."""
        with self.lock:
            self.require_member_locked(inviter)
            if "i" in self.flags:
                self.require_operator_locked(inviter)
            if target in self.members:
                raise IRCError(
                    p.ERR_USERONCHANNEL, target.nick, self.name, "is already in the room"
                )
            event = Event(
                Message("INVITE", [target.nick, self.name], inviter.prefix),
                (target.nick,),
                inviter.account,
            )
            self.invited.add(target)
            target.conn.deliver(event)
            # invite-notify: the members who could have sent it too (operators under +i).
            notify = Event(event.message, (self.name,), inviter.account, needs="invite-notify")
            for member in self.members:
                if member is not inviter and ("i" not in self.flags or "o" in self.members[member]):
                    member.conn.deliver(notify)
        self._record(event)

    # -- ChanServ: a registered room (commands/chanserv.py) -------------------------
    #
    # Each refusal is an IRCError raised under the lock that decides it; ChanServ says its
    # text. Modes ChanServ sets are relayed as its own MODE lines, kept in the history.

    @shared
    def register(self, user: User, account: str) -> None:
        """`user`, an operator here, registers the room to `account` (theirs: the caller
        checked the login) and becomes its founder; the room becomes permanent (+P, which
        only server operators set otherwise)."""
        with self.lock:
            if self.founder is not None:
                raise IRCError(
                    p.ERR_UNKNOWNERROR,
                    self.name,
                    f"{self.name} is already registered (founder: {self.founder})",
                )
            if not self.is_operator_locked(user):
                raise IRCError(
                    p.ERR_CHANOPRIVSNEEDED,
                    self.name,
                    f"Only an operator of {self.name} may register it",
                )
            self.founder = account
            self.registered = int(now())
            permanent = [] if self.persistent else [modes.Change(True, modes.PERMANENT)]
            self.flags.add(modes.PERMANENT)
            relayed = self.relay_modes_locked(permanent, CHANSERV_PREFIX, None)
            state = self.state_locked()
        self._record_all(relayed, state)

    def _require_founder_locked(self, user: User, doing: str) -> None:
        """482 unless `user` founded the room or is a server operator."""
        assert held(self.lock)
        if not (user.oper or self.is_founder_locked(user)):
            raise IRCError(
                p.ERR_CHANOPRIVSNEEDED,
                self.name,
                f"Only the founder of {self.name} ({self.founder}) may {doing}",
            )

    def _unregister_locked(self) -> None:
        """The registration goes: founder, access list and topic lock (not +P)."""
        assert held(self.lock)
        self.founder = None
        self.registered = 0
        self.access = {}
        self.topic_lock = False

    @shared
    def drop_registration(self, user: User) -> None:
        """The founder (or a server operator) drops the registration: the founder, access
        list and topic lock go, and the room is no longer permanent (-P: it ends once empty,
        which the caller sees to: `World.end_if_empty`)."""
        with self.lock:
            self._require_registered_locked()
            self._require_founder_locked(user, "drop it")
            self._unregister_locked()
            self.flags.discard(modes.PERMANENT)
            relayed = self.relay_modes_locked(
                [modes.Change(False, modes.PERMANENT)], CHANSERV_PREFIX, None
            )
            state = self.state_locked()
        self._record_all(relayed, state)

    @shared
    def forget_account(self, account: str) -> None:
        """`account` was dropped: it leaves the access list, and if it founded the room,
        the registration ends (the room stays as it is, +P included, for an operator to
        decide): a later account of that name inherits nothing."""
        key = casefold(account)
        with self.lock:
            founded = self.founder is not None and casefold(self.founder) == key
            if not founded and key not in self.access:
                return
            self.access.pop(key, None)
            if founded:
                self._unregister_locked()
            state = self.state_locked()
        self._record(None, (), state)

    @shared
    def change_access(self, user: User, letter: str, account: str, adding: bool) -> bool:
        """Put `account` (its name as registered) on the access list with status `letter`,
        or take it off that list; False if that changed nothing. The founder, accounts with
        op access and server operators may. An account has one entry: adding it to the op
        list takes it off the voice list."""
        with self.lock:
            self._require_registered_locked()
            if not self.may_manage_locked(user):
                raise IRCError(
                    p.ERR_CHANOPRIVSNEEDED,
                    self.name,
                    f"Only the founder of {self.name} and accounts on its OP list may "
                    "change its access lists",
                )
            key = casefold(account)
            entry = self.access.get(key)
            if adding:
                if entry == (account, letter):
                    return False
                if entry is None and len(self.access) >= MAX_ACCESS:
                    raise IRCError(
                        p.ERR_UNKNOWNERROR,
                        self.name,
                        f"The access list of {self.name} is full ({MAX_ACCESS} accounts)",
                    )
                self.access[key] = Access(account, letter)
            else:
                if entry is None or entry.letter != letter:
                    return False
                del self.access[key]
            state = self.state_locked()
        self._record(None, (), state)
        return True

    @shared
    def set_topic_lock(self, user: User, on: bool) -> None:
        """ChanServ SET TOPICLOCK: the founder (or a server operator) turns it on or off."""
        with self.lock:
            self._require_registered_locked()
            self._require_founder_locked(user, "change its settings")
            if self.topic_lock == on:
                return
            self.topic_lock = on
            state = self.state_locked()
        self._record(None, (), state)

    @shared
    def recover(self, user: User) -> tuple[list[str], bool]:
        """The founder takes the room back: the bans that match them are lifted and, if
        they are in it, they get +o. The masks lifted, and whether they are in the room
        (a founder outside it joins past bans, key, limit and +i anyway)."""
        with self.lock:
            self._require_registered_locked()
            if not self.is_founder_locked(user):
                raise IRCError(
                    p.ERR_CHANOPRIVSNEEDED,
                    self.name,
                    f"Only the founder of {self.name} ({self.founder}) may recover it",
                )
            bans = self.mask_lists[modes.BAN]
            who = casefold(user.prefix)
            matching = [key for key, entry in bans.items() if entry.pattern.fullmatch(who)]
            lifted = [bans.pop(key).mask for key in matching]
            changes = [modes.Change(False, modes.BAN, mask) for mask in lifted]
            status = self.members.get(user)
            if status is not None and "o" not in status:
                self.members[user] = "o" + status
                changes.append(modes.Change(True, "o", user.nick))
            relayed = self.relay_modes_locked(changes, CHANSERV_PREFIX, None)
            state = self.state_locked() if lifted else None
        self._record_all(relayed, state)
        return lifted, status is not None

    @shared
    def give_access(self, user: User) -> str:
        """ChanServ UP: a member gets now the status their account's access gives (after
        logging in, or after being added); the letters given."""
        with self.lock:
            self._require_registered_locked()
            status = self.members.get(user)
            if status is None:
                raise IRCError(p.ERR_NOTONCHANNEL, self.name, f"Join {self.name} first")
            given = "".join(c for c in self.access_of_locked(user) if c not in status)
            self.members[user] = status + given
            relayed = self.relay_modes_locked(
                [modes.Change(True, letter, user.nick) for letter in given], CHANSERV_PREFIX, None
            )
        self._record_all(relayed)
        return given

    def registration(self, viewer: User) -> Registration:
        """What ChanServ INFO shows; 442 for an outsider of a secret room."""
        with self.lock:
            self.require_visible_locked(viewer)
            self._require_registered_locked()
            return Registration(
                self.founder, self.registered, self.topic_lock, tuple(self.access.values())
            )

    def is_founder_locked(self, user: User) -> bool:
        assert held(self.lock)
        return user.logged_in_to(self.founder)

    def access_of_locked(self, user: User) -> str:
        """The status ChanServ gives `user` here: 'o' for the founder, their account's
        entry's letter, or ''."""
        assert held(self.lock)
        account = user.account
        if account is None or self.founder is None:
            return ""
        if self.is_founder_locked(user):
            return "o"
        entry = self.access.get(casefold(account))
        return "" if entry is None else entry.letter

    def may_manage_locked(self, user: User) -> bool:
        """The founder, an account with op access, or a server operator."""
        assert held(self.lock)
        return user.oper or self.access_of_locked(user) == "o"

    def _require_registered_locked(self) -> None:
        assert held(self.lock)
        if self.founder is None:
            raise IRCError(
                p.ERR_UNKNOWNERROR, self.name, f"{self.name} is not registered with ChanServ"
            )

    # -- helpers that expect self.lock to be held --------------------------------

    def relay_modes_locked(
        self,
        changes: list[modes.Change],
        source: str,
        account: str | None,
        actor: User | None = None,
    ) -> list[tuple[Event, tuple[StoredLine, ...]]]:
        """Relay `changes` made by `source` (an operator's prefix, or ChanServ's) as MODE
        lines, cut only past 512 bytes, and keep them; each event with its lines to record.
        An `actor` acting from outside the room gets them too."""
        assert held(self.lock)
        relayed = []
        head = len(f":{source} MODE {self.name} ".encode())
        for group in modes.split_changes(changes, p.DEFAULT_LINE_BYTES - 2 - head):
            params = [self.name, *modes.format_changes(group)]
            event = Event(Message("MODE", params, source), (self.name,), account)
            if actor is None:
                self.broadcast_locked(event)
            else:
                self.tell_locked(actor, event)
            relayed.append((event, self.keep_locked(event)))
        return relayed

    def _record_all(
        self,
        relayed: Iterable[tuple[Event, tuple[StoredLine, ...]]],
        state: RoomState | None = None,
    ) -> None:
        """After a change, with the lock released: its events, then the room's new state."""
        for event, lines in relayed:
            self._record(event, lines)
        if state is not None:
            self._record(None, (), state)

    def tell_locked(self, actor: User, event: Event) -> None:
        """Broadcast, and echo to an actor acting from outside (a server operator)."""
        assert held(self.lock)
        self.broadcast_locked(event)
        if actor not in self.members:
            actor.conn.deliver(event)

    def _apply_locked(
        self, actor: User, change: modes.Change, targets: Mapping[str, User | None]
    ) -> modes.Change | None:
        """One change; the change as relayed if it took effect, None if it changed nothing."""
        assert held(self.lock)
        letter, adding, arg = change.letter, change.adding, change.arg
        kind = modes.ROOM_MODES[letter]
        if letter in modes.OPER_ONLY and not actor.oper:
            raise IRCError(
                p.ERR_NOPRIVILEGES,
                f"Permission Denied- only server operators may change +{letter}",
            )
        if letter == modes.PERMANENT and not adding and self.founder is not None:
            raise IRCError(
                p.ERR_CHANOPRIVSNEEDED,
                self.name,
                "The room is registered with ChanServ, which keeps it permanent: "
                "ChanServ DROP it first",
            )
        if kind == modes.STATUS:
            target = targets.get(arg or "")
            if target is None:
                raise IRCError(p.ERR_NOSUCHNICK, p.safe_param(arg or ""), "No such nick")
            status = self.members.get(target)
            if status is None:
                raise IRCError(
                    p.ERR_USERNOTINCHANNEL, target.nick, self.name, "They aren't in that room"
                )
            if (letter in status) == adding:
                return None
            self.members[target] = status + letter if adding else status.replace(letter, "")
            return modes.Change(adding, letter, target.nick)
        if kind == modes.LIST:
            return self._change_mask_list_locked(actor, change)
        if letter == "k":
            if not adding:
                if self.join_key is None:
                    return None
                self.join_key = None
                return modes.Change(False, "k", "*")
            if not modes.valid_key(arg or ""):
                raise IRCError(
                    p.ERR_INVALIDKEY,
                    self.name,
                    f"Key is not well-formed: 1 to {modes.KEY_LENGTH} characters, "
                    "no spaces or commas",
                )
            if arg == self.join_key:
                return None
            self.join_key = arg
            return change
        if letter == "l":
            if not adding:
                if self.limit is None:
                    return None
                self.limit = None
                return change
            limit = modes.parse_limit(arg or "")
            if limit is None:
                raise IRCError(
                    p.ERR_INVALIDMODEPARAM,
                    self.name,
                    "l",
                    p.safe_param(arg or ""),
                    f"The limit must be a whole number from 1 to {modes.MAX_LIMIT}",
                )
            if limit == self.limit:
                return None
            self.limit = limit
            return modes.Change(True, "l", str(limit))
        if (letter in self.flags) == adding:
            return None
        if adding:
            self.flags.add(letter)
        else:
            self.flags.discard(letter)
        return change

    def _change_mask_list_locked(self, actor: User, change: modes.Change) -> modes.Change | None:
        """Add a mask to, or remove one from, the list of `change.letter` (b, e, I)."""
        assert held(self.lock)
        letter, raw = change.letter, change.arg or ""
        noun = modes.MASK_LISTS[letter].noun
        entries = self.mask_lists[letter]
        mask = modes.normalize_mask(raw)
        # An empty parameter is a mistake, not a mask (an operator who means everyone
        # writes '*', or '!@', which completes to '*!*@*' too); a mask with a space or a
        # leading ':' cannot be relayed or listed as a middle parameter.
        if not raw or len(mask) > modes.MASK_LENGTH or p.safe_param(mask) != mask:
            raise IRCError(
                p.ERR_INVALIDMODEPARAM,
                self.name,
                letter,
                p.safe_param(raw),
                f"A {noun} mask is 1 to {modes.MASK_LENGTH} characters, no spaces, "
                "not starting with ':'",
            )
        folded = casefold(mask)
        if not change.adding:
            entry = entries.pop(folded, None)
            return None if entry is None else modes.Change(False, letter, entry.mask)
        if folded in entries:
            return None
        if len(entries) >= modes.MAX_LIST_ENTRIES:
            raise IRCError(p.ERR_BANLISTFULL, self.name, letter, f"The room's {noun} list is full")
        entries[folded] = MaskEntry(mask, actor.prefix, int(now()), modes.mask_pattern(mask))
        return modes.Change(True, letter, mask)

    def __repr__(self) -> str:
        return f"<Room {self.name}>"


class World:
    """The nick table and the room table."""

    #: The cluster this world is a node of (`attach`); None: a single process.
    cluster: Network | None = None

    def __init__(
        self,
        rooms: Iterable[tuple[str, str]] = (),
        record: Recorder | None = None,
        server_name: str = "ircish.local",
        *,
        history: HistoryConfig = NO_HISTORY,
        keeper: Keeper | None = None,
        accounts: Accounts | None = None,
    ) -> None:
        self.lock = new_lock("World.lock")
        #: Registered accounts (ircish/accounts.py: its own lock, taken alone).
        self.accounts = Accounts() if accounts is None else accounts
        #: Private lines' order: the last seq given, under the private history lock
        #: (taken alone). One sequence for every conversation, only ever growing.
        self._private_lock = new_lock("private history lock")
        self._last_private_seq = 0
        #: Private target -> the seq of its last line handed to the keeper this run (under
        #: the private history lock): a read waits for the writer only when it lags.
        self._private_last: dict[str, int] = {}
        #: What rooms remember, and where it goes (None: memory only, the window).
        self.history = history
        self.keeper = keeper
        #: The last room epoch given (under World.lock): epochs only grow.
        self._last_epoch = 0
        #: The source of the server's own notices (MONITOR's 730/731).
        self.server_name = server_name
        #: MONITOR: casefolded nick -> the users watching it.
        self._watchers: dict[str, set[User]] = {}
        self.users: dict[str, User] = {}
        self.rooms: dict[str, Room] = {}
        #: Called once per relayed event, after the relay, outside every lock (history);
        #: None: nothing records.
        self.record: Recorder | None = record
        self._registered = 0  # registered users in `users`
        self._invisible = 0  # of those, with user mode +i
        self._operators = 0  # of those, with user mode +o
        self._peak = 0  # the most registered users at once
        #: Registered users with user mode +w: who a WALLOPS reaches, found without a scan.
        self._wallops: set[User] = set()
        #: Who had which nick (WHOWAS), oldest first; bounded, so memory is too.
        self._history: deque[WhowasEntry] = deque(maxlen=WHOWAS_LENGTH)
        for name, topic in rooms:
            room = self._new_room(name, topic, persistent=True)
            self.rooms[room.folded] = room

    def _new_room(self, name: str, topic: str = "", persistent: bool = False) -> Room:
        """A room object (not yet in the table). Called under World.lock, or at start."""
        # Epochs only grow, whatever the clock does: a room's `forget` drops every life
        # up to its own, so a later `#x` must never get a smaller one.
        stamp = int(now() * 1e9)
        cluster = self.cluster
        if cluster is not None and cluster.applying():
            # The entry's time, the same on every node (its log's times only grow).
            self._last_epoch = stamp
        else:
            self._last_epoch = max(stamp, self._last_epoch + 1)
        room = Room(
            name,
            topic,
            persistent,
            record=self._record_event,
            history=self.history,
            stored=self._stored,
            epoch=self._last_epoch,
        )
        room.cluster = self.cluster
        return room

    def start_again(self, rooms: Iterable[tuple[str, str]]) -> None:
        """Forget every user and every room but `rooms` (the config's, made anew): a
        cluster node whose network lost its state, before it joins again. Its own users'
        connections are closed by then. The accounts stay."""
        with self.lock:
            self.users.clear()
            self.rooms.clear()
            self._watchers.clear()
            self._wallops.clear()
            self._registered = self._invisible = self._operators = 0
            for name, topic in rooms:
                room = self._new_room(name, topic, persistent=True)
                self.rooms[room.folded] = room

    def catch_up(self) -> None:
        """In a cluster: wait until this node has applied every change made anywhere so
        far (a lookup that found nothing may find it then; see `Network.catch_up`). In a
        single process nothing is elsewhere: no wait."""
        if self.cluster is not None:
            self.cluster.catch_up()

    def wait_for_messages(self) -> None:
        """In a cluster: wait until the messages this thread sent so far have been applied
        (their answers, a 404 or a 301, come from the log), so a message to several
        targets is answered in the order of its targets, as in a single process."""
        if self.cluster is not None:
            self.cluster.wait_for_messages()

    def attach(self, cluster: Network) -> None:
        """Become one node of `cluster` (at start, before anyone connects): from now on the
        `shared` changes go through its log."""
        self.cluster = cluster
        self.accounts.cluster = cluster
        for room in self.rooms.values():
            room.cluster = cluster

    def _stored(self, target: str, epoch: int) -> int | None:
        """How far the store has written a room's life; None when there is no store
        (memory only: the window is all there is)."""
        keeper = self.keeper
        return None if keeper is None else keeper.written_upto(target, epoch) or 0

    @property
    def store(self) -> Store | None:
        """Where history older than a room's window is read (None: memory only)."""
        return None if self.keeper is None else self.keeper.store

    def restore(self, states: Iterable[RoomState]) -> None:
        """Bring back the permanent rooms kept by the last run, with their last lines (at
        start, before anyone connects). A config room's topic that nobody changed follows
        the config: an operator who edits `topic:` sees it at the next start."""
        for state in states:
            folded = casefold(state.name)
            room = self.rooms.get(folded)
            config_topic = None if room is None else room.topic
            if room is None:
                room = self.rooms[folded] = self._new_room(state.name, persistent=True)
            lines = self._kept_lines(folded)
            with room.lock:
                room.restore_locked(state, lines)
                if config_topic is not None and state.topic_setter in ("", "server"):
                    room.follow_config_topic_locked(config_topic)
            self._last_epoch = max(self._last_epoch, room.epoch)

    def _kept_lines(self, folded: str) -> list[StoredLine]:
        """A room's last lines in the store, enough to fill its window (at start)."""
        store = self.store
        return [] if store is None else store.select(folded, Query(self.history.window))

    def prime(self, saved: Iterable[str]) -> None:
        """The permanent rooms that kept no state (config rooms never changed, or new in
        the config): their last lines, and their state kept from now on, so that their
        creation and topic times outlive the next restart (at start)."""
        keeper = self.keeper
        saved = set(saved)
        for room in list(self.rooms.values()):
            if room.folded in saved:
                continue
            lines = self._kept_lines(room.folded)
            with room.lock:
                room.prime_locked(lines)
                state = room.state_locked()
            self._last_epoch = max(self._last_epoch, room.epoch)
            if keeper is not None:
                keeper.save_room(state)

    def _record_event(
        self,
        event: Event | None,
        lines: Iterable[StoredLine] = (),
        state: RoomState | None = None,
        ended: Iterable[Room] = (),
    ) -> None:
        """After a change, with no lock held: hand `event` to the record hook, its history
        lines and a permanent room's new state to the keeper, and tell it which rooms
        ended (their history goes with them). A hook that fails is logged and changes
        nothing: the event has been delivered, and the command goes on (a JOIN list joins
        its next room)."""
        keeper = self.keeper
        try:
            if keeper is not None:
                for line in lines:
                    keeper.submit(line)
                if state is not None:
                    if modes.PERMANENT in state.flags:
                        keeper.save_room(state)
                    else:
                        keeper.drop_room(casefold(state.name))
                for room in ended:
                    keeper.forget(room.folded, room.epoch)
            if event is not None and self.record is not None:
                self.record(event)
        except Exception:
            log.exception("recording %r failed", event)

    # -- lookups (a single dict read is atomic; no lock needed) --------------

    def find_user(self, nick: str) -> User | None:
        """A registered user by nick (a nick held during registration is not a user yet)."""
        user = self.users.get(casefold(nick))
        return user if user is not None and user.registered else None

    def find_room(self, name: str) -> Room | None:
        return self.rooms.get(casefold(name))

    def users_snapshot(self) -> list[User]:
        with self.lock:
            return [u for u in self.users.values() if u.registered]

    def rooms_snapshot(self) -> list[Room]:
        with self.lock:
            return list(self.rooms.values())

    def invites_of(self, user: User) -> list[str]:
        """The rooms `user` is invited to and has not used the invite for (INVITE with no
        parameters). A scan of every room, each under its own lock: asked rarely, it keeps
        the invite in one place (`Room.invited`) rather than two to keep in step."""
        return [room.name for room in self.rooms_snapshot() if room.has_invited(user)]

    def counts(self) -> Counts:
        with self.lock:
            return Counts(
                self._registered, self._invisible, self._operators, len(self.rooms), self._peak
            )

    def counts_unlocked(self) -> Counts:
        """`counts()` without World.lock, for a metrics scrape: each figure is one int read
        as it is now (they may be a moment apart), and nobody on the message path waits."""
        return Counts(
            self._registered, self._invisible, self._operators, len(self.rooms), self._peak
        )

    @shared
    def mark_registered(self, user: User, greet: Callable[[], None] | None = None) -> None:
        """`user` finished registration: it now counts and can be found. `greet` (their
        node's: the welcome burst) is sent first, so nothing anyone sends them can come
        before 001; in a cluster it is sent where the registration is applied, so the
        user is registered on their node once they have their 376."""
        if greet is not None:
            try:
                greet()
            except Exception:  # (the registration is the network's: it goes on)
                log.exception("%s: the welcome burst failed", user)
        with self.lock:
            if not user.registered:
                user.registered = True
                self._registered += 1
                self._peak = max(self._peak, self._registered)
                self._invisible += user.invisible
                self._tell_watchers_locked(user.nick, user.prefix)

    @shared
    def set_invisible(self, user: User, invisible: bool) -> bool:
        """User mode +i/-i; False if it was already so."""
        with self.lock:
            if user.invisible == invisible:
                return False
            user.invisible = invisible
            if user.registered:
                self._invisible += 1 if invisible else -1
            return True

    @shared
    def set_operator(self, user: User, oper: bool, name: str | None = None) -> bool:
        """User mode +o/-o (granted only by OPER, as the config's operator `name`); False
        if it was already so."""
        with self.lock:
            user.oper_name = name if oper else None
            if user.oper == oper:
                return False
            user.oper = oper
            self._operators += 1 if oper else -1
            return True

    def operators_not_in(self, names: Iterable[str]) -> list[User]:
        """Server operators who OPERed as none of `names` (a reload removed theirs)."""
        kept = {casefold(name) for name in names}
        with self.lock:
            return [
                user
                for user in self.users.values()
                if user.oper and casefold(user.oper_name or "") not in kept
            ]

    def set_history(self, history: HistoryConfig) -> None:
        """New history settings (a config reload: the window's size stays): every room
        reads within the new limits from now on, and new rooms take them."""
        self.history = history
        for room in self.rooms_snapshot():
            with room.lock:
                room.set_history_locked(history)

    @shared
    def follow_config_rooms(self, rooms: Iterable[tuple[str, str]]) -> list[str]:
        """The config's rooms after a reload: one the server lacks is made, permanent; an
        existing room the config now names becomes permanent (+P, set by the server); a
        config room whose topic nobody changed takes the config's, and its members see
        it. The names of the rooms that changed."""
        changed = []
        for name, topic in rooms:
            # World.lock, then the room's: the room cannot end (its last member leave, and
            # the table drop it) between being found and being made permanent.
            with self.lock:
                folded = casefold(name)
                room = self.rooms.get(folded)
                made = room is None
                if room is None:
                    room = self.rooms[folded] = self._new_room(name, topic, persistent=True)
                with room.lock:
                    followed = room.follow_config_locked(topic, self.server_name, made)
            if followed is not None:
                room._record_all(*followed)
                changed.append(room.name)
        return changed

    @shared
    def set_wallops(self, user: User, wallops: bool) -> bool:
        """User mode +w/-w (a registered user's own); False if it was already so."""
        with self.lock:
            if user.wallops == wallops:
                return False
            user.wallops = wallops
            if wallops:
                self._wallops.add(user)
            else:
                self._wallops.discard(user)
            return True

    @shared
    def notify(self, user: User, msg: Message, grace: float | None = None) -> None:
        """Send `user` alone `msg` (a service's notice, a numeric). In a cluster the node
        they are on sends it. `grace`: they hold an account's nick without being logged in
        to it, and are renamed to a guest nick after that many seconds (their node's
        housekeeping does it; the deadline means nothing on the others)."""
        if grace is not None:
            user.nick_deadline = time.monotonic() + grace
        user.send(msg)

    @shared
    def set_bot(self, user: User, bot: bool) -> bool:
        """User mode +B/-B (a bot); False if it was already so. Read alone by any thread
        (WHO, WHOIS, the `bot` tag)."""
        if user.bot == bot:
            return False
        user.bot = bot
        return True

    @shared
    def disconnect(self, user: User, told: Message, reason: str, error: str) -> None:
        """Close `user`'s connection (KILL), after telling them `told`: their QUIT says
        `reason`, their ERROR `error`. In a cluster, the node they are on does it."""
        user.send(told)
        user.conn.close(reason, error)

    @shared
    def wallops(self, sender: User, text: str) -> None:
        """WALLOPS from a server operator (the caller checked): to every user with +w, the
        sender too if they have it (RFC 2812 3.7.1)."""
        event = Event(Message("WALLOPS", [text], sender.prefix), (), sender.account, bot=sender.bot)
        with self.lock:
            self._deliver_once_locked(event, self._wallops)
        self._record_event(event)

    def whowas(self, nick: str, count: int = 0) -> list[WhowasEntry]:
        """Who had `nick`, newest first; at most `count` entries, all of them for `count`
        <= 0. The nick exactly, as RFC 2812 3.6.3 has it (wildcards only in its <target>):
        a mask would list everyone who left, the invisible too."""
        with self.lock:
            entries = list(self._history)  # a copy of pointers: the matching runs unlocked
        key = casefold(nick)
        found: list[WhowasEntry] = []
        for entry in reversed(entries):
            if casefold(entry.nick) == key:
                found.append(entry)
                if len(found) == count:
                    break
        return found

    def _remember_locked(self, user: User) -> None:
        """Keep who `user` was under their nick now, for WHOWAS (they quit or change it)."""
        assert held(self.lock)
        if user.registered and user.nick is not None:
            self._history.append(
                WhowasEntry(
                    user.nick,
                    user.username,
                    user.host,
                    user.realname,
                    self.server_name,
                    now(),
                )
            )

    # -- nicks ----------------------------------------------------------------

    @shared
    def claim_nick(self, user: User, nick: str) -> bool:
        """Give an unregistered user `nick` if free. False if someone has it."""
        key = casefold(nick)
        with self.lock:
            holder = self.users.get(key)
            if holder is not None and holder is not user:
                return False
            if user.nick is not None:
                self.users.pop(casefold(user.nick), None)
            self.users[key] = user
            user.nick = nick
            return True

    @shared
    def rename_user(self, user: User, new_nick: str, *, forced_from: str | None = None) -> bool:
        """Change a registered user's nick; tell them and everyone sharing a room, once.
        False if the nick is taken; IRCError (435) while a ban silences them in a room,
        since a new nick would slip past a ban on the old one. `forced_from`: the server
        renames someone off a registered nick (bans do not stop it), only if they still
        hold that nick and have not logged in to it meanwhile."""
        key = casefold(new_nick)
        with self.lock:
            holder = self.users.get(key)
            if holder is not None and holder is not user:
                return False
            if forced_from is not None and (
                user.nick != forced_from or self.owner_of(user, forced_from)
            ):
                return True  # they left the nick, or logged in: nothing to do
            rooms = list(user.rooms.values())
            event = Event(
                Message("NICK", [new_nick], user.prefix),
                tuple(room.name for room in rooms),
                user.account,
            )
            with ExitStack() as stack:
                for room in rooms:
                    stack.enter_context(room.lock)
                for room in rooms:
                    if forced_from is not None:
                        break
                    if not room.members[user] and not user.oper and room.is_banned_locked(user):
                        raise IRCError(
                            p.ERR_BANNICKCHANGE,
                            new_nick,
                            room.name,
                            "Cannot change nick while banned in that room",
                        )
                old = user.nick
                del self.users[casefold(old)]
                self.users[key] = user
                if casefold(old) != key:  # a change of case alone: no news, nick kept
                    self._remember_locked(user)
                    self._tell_watchers_locked(old, None)
                    self._tell_watchers_locked(new_nick, f"{new_nick}!{user.username}@{user.host}")
                # Delivered before the rename so the user's own text session
                # renders it as "You are now known as ...".
                self._deliver_once_locked(event, self._neighbours_locked(user) | {user: None})
                user.nick = new_nick
                user.nick_deadline = None  # the new nick is judged by the caller
                if forced_from is not None:  # not theirs: they may not take it back
                    user.barred_nicks.add(casefold(forced_from))
                lines = [line for room in rooms for line in room.keep_locked(event)]
        self._record_event(event, lines)
        return True

    # -- accounts -------------------------------------------------------------------

    @shared
    def set_account(self, user: User, account: str | None) -> None:
        """`user` logged in to `account` (None: logged out); the people near them with
        account-notify are told (`ACCOUNT name`, `ACCOUNT *`), once registered."""
        with self.lock:
            if user.account == account:
                return
            user.account = account
            if self.owner_of(user, user.nick):
                user.nick_deadline = None
            if not user.registered:
                return
            event = Event(
                Message("ACCOUNT", [account or "*"], user.prefix),
                (user.nick,),
                account,
                needs="account-notify",
            )
            self._deliver_once_locked(event, self._interested_locked(user))
        self._record_event(event)

    def forget_account(self, account: str) -> None:
        """A dropped account leaves every room's founder and access lists."""
        for room in self.rooms_snapshot():
            room.forget_account(account)

    def rename_to_guest(self, user: User, nick_length: int) -> bool:
        """Nick protection: `user` holds an account's nick without being logged in to it,
        past the grace period (or its owner asked for it back). They get a free guest nick
        that is no account's, are told why, and may not take the nick again on this
        connection. False if nothing changed (they left the nick or logged in meanwhile)."""
        old = user.nick
        width = max(1, min(5, nick_length - len(GUEST_PREFIX)))
        for _ in range(20):
            guest = f"{GUEST_PREFIX}{secrets.randbelow(10**width):0{width}d}"
            if self.accounts.get(guest) is None and self.rename_user(user, guest, forced_from=old):
                break
        if old is None or user.nick == old:
            return False
        self.notify(
            user,
            nickserv_notice(
                user.nick, f"{old} belongs to a registered account, so you are now {user.nick}"
            ),
        )
        return True

    def owner_of(self, user: User, nick: str | None) -> bool:
        """Whether `user` may keep `nick`: no account has that name, or it is theirs."""
        if nick is None:
            return True
        state = self.accounts.get(nick)
        return state is None or user.logged_in_to(state.name)

    def users_of(self, account: str) -> list[User]:
        """The users logged in to `account`."""
        return [user for user in self.users_snapshot() if user.logged_in_to(account)]

    # -- away, realname, MONITOR ------------------------------------------------

    @shared
    def set_away(self, user: User, text: str | None) -> None:
        """Mark `user` away (`text`) or back (None), and tell those who asked to know:
        people sharing a room with away-notify, watchers with extended-monitor too."""
        with self.lock:
            user.away = text
            event = self._away_event(user)
            self._deliver_once_locked(event, self._interested_locked(user))
        self._record_event(event)

    @shared
    def set_realname(self, user: User, realname: str) -> None:
        """SETNAME: a new realname, told to the user and to the people near them who have
        the setname cap (and watchers with extended-monitor)."""
        with self.lock:
            user.realname = realname
            event = Event(
                Message("SETNAME", [realname], user.prefix),
                (user.nick,),
                user.account,
                needs="setname",
            )
            self._deliver_once_locked(event, {**self._interested_locked(user), user: None})
        self._record_event(event)

    def _away_event(self, user: User) -> Event:
        params = [] if user.away is None else [user.away]
        return Event(
            Message("AWAY", params, user.prefix), (user.nick,), user.account, needs="away-notify"
        )

    def _interested_locked(self, user: User) -> dict[User, object]:
        """Who hears of `user`'s own changes: neighbours, and watchers that asked for it."""
        assert held(self.lock)
        interested = self._neighbours_locked(user)
        for watcher in self._watchers.get(casefold(user.nick), ()):
            if watcher is not user and watcher.conn.has_cap("extended-monitor"):
                interested[watcher] = None
        return interested

    def monitor_add(
        self, user: User, nicks: list[str], limit: int
    ) -> tuple[list[str], list[str], bool]:
        """Watch `nicks`: the masks of those online (730), the nicks of those offline (731),
        and whether `limit` watched nicks stopped the list short (734)."""
        online: list[str] = []
        offline: list[str] = []
        full = False
        with self.lock:
            for nick in nicks:
                key = casefold(nick)
                if key not in user.monitoring:
                    if len(user.monitoring) >= limit:
                        full = True
                        break
                    user.monitoring.add(key)
                    self._watchers.setdefault(key, set()).add(user)
                other = self.users.get(key)
                if other is not None and other.registered:
                    online.append(other.prefix)
                else:
                    offline.append(nick)
        return online, offline, full

    def monitor_remove(self, user: User, nicks: Iterable[str]) -> None:
        with self.lock:
            for key in map(casefold, nicks):
                user.monitoring.discard(key)
                self._unwatch_locked(user, key)

    def monitor_clear(self, user: User) -> None:
        with self.lock:
            self._drop_monitors_locked(user)

    def monitor_status(self, user: User) -> tuple[list[str], list[str]]:
        """The watched nicks: masks of those online, nicks of those offline."""
        with self.lock:
            online, offline = [], []
            for key in sorted(user.monitoring):
                other = self.users.get(key)
                if other is not None and other.registered:
                    online.append(other.prefix)
                else:
                    offline.append(key)
            return online, offline

    def _unwatch_locked(self, user: User, key: str) -> None:
        assert held(self.lock)
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.discard(user)
            if not watchers:
                del self._watchers[key]

    def _drop_monitors_locked(self, user: User) -> None:
        assert held(self.lock)
        for key in user.monitoring:
            self._unwatch_locked(user, key)
        user.monitoring = set()

    def _tell_watchers_locked(self, nick: str, mask: str | None) -> None:
        """MONITOR: `nick` came online as `mask` (730), or went offline (731, mask None)."""
        assert held(self.lock)
        watchers = self._watchers.get(casefold(nick))
        if not watchers:
            return
        numeric = p.RPL_MONONLINE if mask is not None else p.RPL_MONOFFLINE
        for watcher in watchers:
            if watcher.registered:
                watcher.send(Message(numeric, [watcher.nick, mask or nick], self.server_name))

    # -- rooms ----------------------------------------------------------------

    @shared
    def join(
        self,
        user: User,
        name: str,
        key: str | None = None,
        *,
        max_rooms: int | None = None,
        answer: tuple[Callable[[Message], None], RoomReply] | None = None,
    ) -> Room | None:
        """Add `user` to room `name`, creating it with `user` as its operator; tell the room.
        None if already in; IRCError if the room's modes keep them out, or if they are in
        `max_rooms` rooms already (405). `answer` (send, build) sends the joiner what the
        room looks like under the room's lock, right after the JOIN (see `Room.answer`)."""
        folded = casefold(name)
        with ExitStack() as holding_room:
            with self.lock:
                room = self.rooms.get(folded)
                if room is not None and user in room.members:
                    return None
                if max_rooms is not None and len(user.rooms) >= max_rooms:
                    raise IRCError(
                        p.ERR_TOOMANYCHANNELS,
                        p.safe_param(name),
                        f"You have joined too many rooms (at most {max_rooms})",
                    )
                # Whoever creates a room runs it. A room from the config has no one who made
                # it: it exists before anyone joins, so server operators give op there (as
                # ngIRCd's predefined channels), or ChanServ once it is registered.
                creating = room is None
                if room is None:
                    room = self._new_room(name)
                # Made before anything changes: what cannot be formatted changes nothing.
                event = Event(
                    Message("JOIN", [room.name], user.prefix),
                    (room.name,),
                    user.account,
                    realname=user.realname,
                    bot=user.bot,
                )
                holding_room.enter_context(room.lock)
                room.check_join_locked(user, key)
                if creating:
                    self.rooms[folded] = room
                room.invited.discard(user)
                # A registered room's founder and access list get their status from
                # ChanServ, told right after the JOIN (the joiner's NAMES shows it too).
                given = "" if creating else room.access_of_locked(user)
                room.members[user] = "o" if creating else given
                user.rooms = {**user.rooms, folded: room}
                user.chosen_room = None  # the room joined last is the current one
                room.broadcast_locked(event)
                lines = room.keep_locked(event)
                relayed = room.relay_modes_locked(
                    [modes.Change(True, letter, user.nick) for letter in given],
                    CHANSERV_PREFIX,
                    None,
                )
                if user.away is not None:
                    # away-notify: members learn at once that the joiner is away.
                    room.broadcast_locked(self._away_event(user), exclude=user)
            # World.lock is released here; the room's is still held, so what the joiner is
            # told about the room comes right after its JOIN, with no event in between.
            if answer is not None:
                send, build = answer
                for msg in build(room):
                    send(msg)
        self._record_event(event, lines)
        for mode_event, mode_lines in relayed:
            self._record_event(mode_event, mode_lines)
        return room

    @shared
    def part(self, user: User, room: Room, reason: str | None) -> bool:
        """Remove `user` from `room`, telling the room; drop the room if now empty."""
        params = [room.name] if reason is None else [room.name, reason]
        with self.lock, room.lock:
            if user not in room.members:
                return False
            event = Event(Message("PART", params, user.prefix), (room.name,), user.account)
            room.broadcast_locked(event)
            lines = room.keep_locked(event)
            ended = self._remove_member_locked(user, room)
        self._record_event(event, lines, ended=ended)
        return True

    @shared
    def kick(self, kicker: User, room: Room, target: User, reason: str) -> None:
        """An operator removes `target` from `room`; the room (target included) is told."""
        with self.lock, room.lock:
            room.require_member_locked(kicker)
            room.require_operator_locked(kicker)
            if target not in room.members:
                raise IRCError(
                    p.ERR_USERNOTINCHANNEL, target.nick, room.name, "They aren't in that room"
                )
            event = Event(
                Message("KICK", [room.name, target.nick, reason], kicker.prefix),
                (room.name,),
                kicker.account,
            )
            room.tell_locked(kicker, event)
            lines = room.keep_locked(event)
            ended = self._remove_member_locked(target, room)
        self._record_event(event, lines, ended=ended)

    @shared
    def tell_user(
        self,
        sender: User,
        recipient: User,
        msg: Message,
        echo: bool = False,
        needs: str | None = None,
    ) -> int:
        """A private message (or notice, or TAGMSG: `needs`) from `sender` to `recipient`;
        with `echo`, the sender gets it too, first (once, if they wrote to themselves).
        The sender of a PRIVMSG to someone away gets 301 (RPL_AWAY) after it: away as of
        the message, wherever each of them is. Returns how many copies were queued
        (metrics)."""
        event = Event(msg, (recipient.nick,), sender.account, needs=needs, bot=sender.bot)
        if echo:
            sender.conn.deliver(event)
        if recipient is not sender or not echo:
            recipient.conn.deliver(event)
        elif sender.conn.has_cap("echo-message"):
            # IRCv3 echo-message to oneself: the echo, then the message as received, which
            # is no part of a labeled answer (irctest labeled_responses: one label).
            sender.conn.deliver(event, reply=False)
        away = recipient.away
        if msg.command == "PRIVMSG" and away is not None:
            params = [sender.nick or "*", recipient.nick or "*", away]
            sender.conn.send(Message(p.RPL_AWAY, params, self.server_name))
        lines = self._private_lines(event, sender, recipient.account, recipient.nick, needs)
        self._record_event(event, lines)
        return 1 + echo

    @shared
    def tell_account(self, sender: User, account: str, msg: Message, echo: bool) -> bool:
        """A private message to `account`, with no session online: kept for when it logs
        in (private history), and echoed to the sender. False if it cannot be kept
        (the sender is not logged in, or history is off): nothing is sent then."""
        event = Event(msg, (account,), sender.account, bot=sender.bot)
        lines = ()
        if sender.account is not None:
            lines = self._private_lines(event, sender, account, None, None)
        if not lines:
            return False
        if echo:
            sender.conn.deliver(event)
        self._record_event(event, lines)
        return True

    def _private_lines(
        self,
        event: Event,
        sender: User,
        account: str | None,
        nick: str | None,
        needs: str | None,
    ) -> tuple[StoredLine, ...]:
        """The private history line of `event` between `sender` and the other side (its
        `account`, else its `nick`: see `private_party`), when history is kept and at least
        one side is logged in: it is kept for that side (ergo and irctest do the same);
        nothing is kept between two people who are not. Checked in that order, so a
        private message between people not logged in costs no more than before."""
        if (
            (sender.account is None and account is None)
            or needs not in (None, "message-tags")  # messages and TAGMSG, not AWAY and such
            or not worth_keeping(event)
            or self.keeper is None
            or not self.history.enabled
        ):
            return ()
        other = private_party(account, nick)
        target = private_target(private_party(sender.account, sender.nick), other)
        with self._private_lock:
            # (now(): in a cluster, the entry's time, so every node gives the same seq)
            seq = self._last_private_seq = max(int(now() * 1e9), self._last_private_seq + 1)
            self._private_last[target] = seq
        return (StoredLine.of(event, target, seq),)

    def private_written(self, target: str, timeout: float) -> None:
        """Wait (at most `timeout` s) until the store has the private lines of `target`
        handed to it so far; no wait when it has them already (so reads do not make the
        writer flush for nothing)."""
        keeper = self.keeper
        with self._private_lock:
            last = self._private_last.get(target)
        if keeper is None or last is None:
            return
        written = keeper.written_upto(target, 0)
        if written is None or written < last:
            keeper.flush(timeout)

    @shared
    def remove_user(self, user: User, reason: str) -> None:
        """A user leaves the server: drop them everywhere, tell each neighbour once."""
        if user.account is not None:
            # Before the nick goes: a message that finds them gone is kept for them, and
            # must be newer than this (shown at their next login), never older.
            self.accounts.seen(user.account)
        event = None
        lines: list[StoredLine] = []
        ended: list[Room] = []
        with self.lock:
            if user.nick is not None and self.users.get(casefold(user.nick)) is user:
                del self.users[casefold(user.nick)]
                if user.registered:
                    self._registered -= 1
                    self._invisible -= user.invisible
                    self._operators -= user.oper
                    self._wallops.discard(user)
                    self._remember_locked(user)
                    self._tell_watchers_locked(user.nick, None)
            self._drop_monitors_locked(user)
            rooms = list(user.rooms.values())
            if rooms:
                event = Event(
                    Message("QUIT", [reason], user.prefix),
                    tuple(room.name for room in rooms),
                    user.account,
                )
                with ExitStack() as stack:
                    for room in rooms:
                        stack.enter_context(room.lock)
                    neighbours = self._neighbours_locked(user)
                    for room in rooms:
                        lines += room.keep_locked(event)
                        ended.extend(self._remove_member_locked(user, room))
                    self._deliver_once_locked(event, neighbours)
        if event is not None:
            self._record_event(event, lines, ended=ended)

    # -- helpers that expect World.lock (and the rooms' locks) to be held -----

    def _remove_member_locked(self, user: User, room: Room) -> tuple[Room, ...]:
        """Take `user` out of `room`; the room, if that ended it (its history goes too)."""
        assert held(self.lock) and held(room.lock)
        del room.members[user]
        user.rooms = {k: v for k, v in user.rooms.items() if v is not room}
        return self._end_if_empty_locked(room)

    def _end_if_empty_locked(self, room: Room) -> tuple[Room, ...]:
        assert held(self.lock) and held(room.lock)
        if not room.members and not room.persistent and self.rooms.get(room.folded) is room:
            del self.rooms[room.folded]
            return (room,)
        return ()

    @shared
    def end_if_empty(self, room: Room) -> None:
        """A room that stopped being permanent (-P) with nobody in it ends now."""
        with self.lock, room.lock:
            ended = self._end_if_empty_locked(room)
        self._record_event(None, ended=ended)

    def _neighbours_locked(self, user: User) -> dict[User, object]:
        """Everyone sharing a room with `user`, each once, `user` excluded."""
        assert held(self.lock)
        seen: dict[User, object] = {}
        for room in user.rooms.values():
            seen.update(room.members)
        seen.pop(user, None)
        return seen

    def _deliver_once_locked(self, event: Event, recipients: Iterable[User]) -> None:
        assert held(self.lock)
        for member in recipients:
            member.conn.deliver(event)
