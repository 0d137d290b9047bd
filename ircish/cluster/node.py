"""One node of a network of ircish servers sharing one Redis.

The network's changes are one ordered log: a Redis stream. A reader thread that makes a
shared change (`ircish.shared`: a JOIN, a PRIVMSG, a nick change...) does not make it: it
queues it for the node's appender thread, which appends everything waiting in one round
trip, and waits for it to be applied (a message does not wait: its refusal and echo come
from the bus, and the client's next other command waits for it, `settle`). Every node's
bus thread reads the stream and runs each entry against its own copy of the network, in
the stream's order, the writer's node included; only the bus delivers. So every member of
a room, on any node, sees its events in one order, and a check (a nick taken, a ban, +m)
gives the same answer on every node, since each makes it against the same state at the
same point of the log: whichever of two claims of one nick comes first in the log wins,
everywhere.

Nodes hold leases (a Redis key that expires). A node that stops renewing is declared gone
by any other, with one entry in the log: every node then removes its users (one QUIT
each) at that point, and ignores anything that node's life writes after it; a node that
was only stopped and wakes up learns it was declared gone, closes its users and joins
again. Redis losing its data (an epoch key gone) makes every node start again the same way.

A node joining a running network asks for the state at a point of the log (a `hello`
entry): a node already in answers with its copy as it was at that entry, and the new node
reads the log from there. The log is trimmed up to the entry the slowest live node has
applied.

Threads: `cluster-bus` (reads and applies the log), `cluster-append` (writes what reader
threads queued) and `cluster-lease` (renews the lease, finds nodes gone, sends again QUITs
that Redis refused, watches the epoch). Locks: `Cluster.tickets_lock` and
`Cluster.up_lock`, each taken alone. No Redis call is made while any lock is held
(`locks.expect_none_held`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis

from ircish import protocol as p
from ircish.accounts import Accounts
from ircish.cluster import ClusterError
from ircish.cluster.replica import Codec, RemoteConn, node_of
from ircish.events import act_for, fixed_clock, free_clock, is_gathering
from ircish.locks import expect_none_held, new_lock
from ircish.protocol import IRCError, Message
from ircish.shared import SHARED
from ircish.store import AccountState, RoomState, StoredLine, is_private_target
from ircish.store.redis import redis_client
from ircish.world import UNSTORED_LIMIT, Room, User, World

if TYPE_CHECKING:
    from ircish.config import ClusterConfig
    from ircish.store.writer import Writer

log = logging.getLogger(__name__)

#: How long the bus waits in one XREAD before it looks again (milliseconds).
BLOCK_MS = 1000
#: Entries the bus takes in one read.
READ_COUNT = 512
#: Entries the appender writes in one round trip at most.
APPEND_BATCH = 256
#: Changes whose caller waits for nothing (messages), and the commands that make them: see
#: `Cluster.call` and `Cluster.settle`.
DETACHED = frozenset({"Room.send_from", "World.tell_user"})
RELAYED = frozenset({"PRIVMSG", "NOTICE", "TAGMSG"})
#: Commands answered without catching up with the log first (`settle`): messages (checked
#: where the log applies them) and what is about the connection alone. (A PING catches up:
#: its PONG comes after everything that happened anywhere before it, as on one server.)
UNSYNCED = RELAYED | {"PONG", "QUIT"}
#: What users of a node get when it starts again: Redis lost the network's data, or the
#: other nodes declared this one gone (it could not renew its lease in time).
LOST_ERROR = "The network lost its state (Redis restarted without its data); please reconnect"
GONE_ERROR = "This server lost contact with the network; please reconnect"
#: Connections for the node's own calls outside its threads (joining, a mark after a
#: failed append): reader threads do not call Redis (the appender thread writes for them).
CALLER_CONNECTIONS = 4
#: How long a joining node's state stays in Redis for it to read (seconds).
STATE_TTL = 60
#: This node's room lines a node keeps track of until its writer has written them
#: (`OwnKeeper`): past this, newer ones are not (they count as written, as a window lets
#: its oldest unwritten lines go past UNSTORED_LIMIT: a store that keeps failing holds
#: nothing back forever).
OWN_UNWRITTEN_LIMIT = 100_000

#: A place in the log: an entry id (`ms-seq`) as something that sorts in the log's order.
At = tuple[int, int]
#: Past every entry: where a gone node's lines all count as written.
END: At = (sys.maxsize, 0)

# Compare and renew: our life still holds the name. GONE: the table of nodes no longer
# names this life (another node declared it gone, then took it out). LATE: the key lapsed
# while Redis was away and nobody declared us gone, so it is still ours.
_RENEW = """
if redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[1] then return 'GONE' end
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'OK'
end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'LATE'
end
return 'TAKEN'
"""
# Release the name at a clean stop, if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
"""
# A gone node leaves the table of nodes, if no newer life of it took its place.
_FORGET_NODE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""


class Ticket:
    """A shared change this node wrote and a reader thread waits for: what it returned,
    or raised, when the bus ran it here."""

    __slots__ = (
        "detached",
        "done",
        "error",
        "finished",
        "local",
        "name",
        "result",
        "sender",
        "thread",
    )

    def __init__(self, local: list[Any], detached: bool) -> None:
        #: Nobody waits for it (a message): a refusal goes to the sender from the bus, and
        #: the wake-up is made only if someone waits after all (`wait`): one per message
        #: would cost more than the rest of its ticket.
        self.detached = detached
        self.done = None if detached else threading.Event()
        self.finished = False
        self.local = local
        #: The waiting thread: replies the change causes belong to it (labeled-response).
        self.thread = threading.get_ident()
        self.result: Any = None
        self.error: BaseException | None = None
        #: The change, and who made it (the first argument, a user, if it is one).
        self.name = ""
        self.sender: User | None = None

    def finish(self) -> None:
        """It ran here, or never will: wake whoever waits."""
        self.finished = True
        done = self.done
        if done is not None:
            done.set()

    def wait(self, timeout: float | None) -> bool:
        """Wait until it is finished (at most `timeout`); False on timeout. (`finish` sets
        the flag, then reads the wake-up; this sets the wake-up, then reads the flag: one
        of them sees the other's write, so no wake-up is lost.)"""
        done = self.done
        if done is None:
            self.done = done = threading.Event()
            if self.finished:
                return True
        return done.wait(timeout)


#: How a log entry names the accounts as the owner of a change (room names start with #).
ACCOUNTS = "*accounts"


#: One encoder made once (json.dumps with options makes one a call).
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _encoded(entry: dict[str, Any]) -> str:
    """A log entry as the stream keeps it: compact JSON."""
    return _JSON.encode(entry)


def _message_command(entry: dict[str, Any]) -> str:
    """The IRC command of a detached message's entry (PRIVMSG, NOTICE, TAGMSG)."""
    return next(arg["M"][0] for arg in entry["a"] if isinstance(arg, dict) and "M" in arg)


def _entry_key(entry_id: str) -> At:
    """A stream id (`ms-seq`) as something that sorts in the log's order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _owner_name(owner: object) -> str | None:
    if isinstance(owner, World):
        return None
    if isinstance(owner, Room):
        return owner.name
    if isinstance(owner, Accounts):
        return ACCOUNTS
    raise TypeError(f"not something a shared change belongs to: {owner!r}")


def _unreachable(what: str) -> IRCError:
    return IRCError(p.ERR_UNKNOWNERROR, "*", what)


class Cluster:
    """This node's part in the network: the log, the lease, the copy of everyone else."""

    def __init__(
        self,
        config: ClusterConfig,
        node: str,
        world: World,
        rooms: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.config = config
        #: The rooms this node's config names (name, topic): what it starts again with.
        self.rooms = list(rooms)
        self.node = node
        self.world = world
        self.lease_ms = config.lease_ms
        self.timeout = config.timeout_ms / 1000
        self.incarnation = secrets.token_hex(4)
        #: Every life this process has had (a node declared gone comes back as a new one):
        #: its entries' tickets are found by this.
        self._lives = {self.incarnation}
        self.codec = Codec(world, node, self.incarnation)
        self._log_key = self._key("log")
        self._nodes_key = self._key("nodes")
        self._applied_key = self._key("applied")
        self._written_key = self._key("written")
        timeout = max(self.timeout, 1.0)
        # Reader threads share this one (redis-py's pool is thread-safe); the bus and the
        # lease threads have their own, so a slow call of one never holds the other up.
        self._redis = self._connect(timeout, CALLER_CONNECTIONS)
        self._bus_redis = self._connect(BLOCK_MS / 1000 + 2)
        self._lease_redis = self._connect(timeout)
        self._append_redis = self._connect(timeout)
        self._renew = self._lease_redis.register_script(_RENEW)
        self._release = self._lease_redis.register_script(_RELEASE)
        self._forget_node = self._lease_redis.register_script(_FORGET_NODE)
        self._tickets_lock = new_lock("Cluster.tickets_lock")
        #: Guards the flip of `up`, so one thread tells everyone that Redis is down or back.
        self._up_lock = new_lock("Cluster.up_lock")
        #: Per reader thread: its last message not waited for (`settle`).
        self._outstanding = threading.local()
        #: What reader threads queued for the appender thread (`call`): a deque (an append
        #: takes no lock) and the wake-up, whose own lock is never held with another.
        self._outbox: deque[tuple[dict[str, Any], Ticket]] = deque()
        self._outbox_ready = threading.Event()
        self._tickets: dict[int, Ticket] = {}
        self._numbers = itertools.count(1)
        #: Reader threads that asked how far the log goes (`catch_up`), for the appender.
        self._asked: deque[threading.Event] = deque()
        #: Those the appender told, waiting for the bus to apply the log that far: (the
        #: log's end when asked, their wake-up), under tickets_lock.
        self._catching: list[tuple[At, threading.Event]] = []
        #: Lives declared gone (node, incarnation): whatever they write later is ignored.
        self._fenced: set[tuple[str, str]] = set()
        #: The id of the last entry applied (the bus thread's).
        self.applied_id = "0-0"
        #: Whether the entry the bus is applying is this node's (`writing`); the life that
        #: wrote it and its place in the log (the bus's, for `OwnKeeper`).
        self._own_entry = False
        self.entry_origin = ("", "")
        self.entry_at: At = (0, 0)
        #: The store as this node writes it (`keeper`), and the written hash's figures the
        #: lease thread last read, for the bus to take (`_share_bound`).
        self._keeper: OwnKeeper | None = None
        self._read_bounds: dict[tuple[str, str], At] | None = None
        #: How far the log may be trimmed (`_trim_point`); None: not at all yet.
        self._trim_to: str | None = None
        #: Entries applied, and how old the last one was when it was (metrics; the bus's).
        self.applied = 0
        self.lag = 0.0
        self._bus_ident: int | None = None
        self._stopping = threading.Event()
        #: Set by `stop`: this node's own `gone` entry is its last.
        self._leaving = False
        self._threads: list[threading.Thread] = []
        #: QUITs Redis refused (their entries, in order), appended again by the lease
        #: thread: a user who left must leave everywhere.
        self._pending: deque[dict[str, Any]] = deque()
        #: Whether Redis answered the last time the lease thread asked.
        self.up = True
        #: Nodes in the network, as the lease thread last read the table (LUSERS).
        self.node_count = 1
        #: The network's data mark in Redis (`_read_epoch`).
        self.epoch: str | None = None
        #: Set when this node must start again (Redis lost the network's data, or the
        #: network declared this node gone): the bus does it, and users get `_again`.
        self._lost = threading.Event()
        self._again = LOST_ERROR

    def _key(self, *parts: str) -> str:
        return ":".join((self.config.prefix, *parts))

    def _connect(self, timeout: float, connections: int = 1) -> redis.Redis:
        return redis_client(self.config.redis, timeout, connections)

    # -- joining and leaving ------------------------------------------------------------

    def start(self) -> None:
        """Take this node's name, load the network's state, start the threads. Called
        before anyone connects. ClusterError if the name is held by a running node or Redis
        cannot be reached."""
        try:
            self._take_name()
            self._read_epoch()
            at = self._join()
        except redis.RedisError as exc:
            raise ClusterError(f"cannot reach Redis at {self.config.redis}: {exc}") from exc
        self.applied_id = at
        self._start_thread("cluster-bus", self._bus)
        self._start_thread("cluster-append", self._appender)
        # Ready: from now on this node answers joining nodes (it applies the log); the
        # lease thread, which renews only a life the table names, comes after.
        self._lease_redis.hset(self._nodes_key, self.node, self.incarnation)
        self._start_thread("cluster-lease", self._lease_loop)

    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_epoch(self) -> None:
        """The mark of this network's data in Redis: made by the first node, gone (or
        another) if Redis lost its data since, which the lease thread watches for."""
        self._redis.set(self._key("epoch"), secrets.token_hex(8), nx=True)
        self.epoch = self._redis.get(self._key("epoch"))

    def _take_name(self) -> None:
        key = self._key("node", self.node)
        deadline = time.monotonic() + self.lease_ms / 1000 + 1
        told = False
        while not self._redis.set(key, self.incarnation, nx=True, px=self.lease_ms):
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"node name {self.node!r} is in use by a running node "
                    f"(cluster.node must differ on every node)"
                )
            if not told:
                log.info("node name %s is held; waiting for its lease to lapse", self.node)
                told = True
            time.sleep(0.1)
        # A previous life of this name (a crash) may still have users in the network:
        # they leave now, before this life says anything.
        previous = self._redis.hget(self._nodes_key, self.node)
        if previous is not None and previous != self.incarnation:
            self._append({"k": "gone", "n": self.node, "inc": previous})

    def _join(self) -> str:
        """The log id to read on from, with this node's copy made as of it."""
        for _attempt in range(3):
            request = secrets.token_hex(8)
            at = self._append({"k": "hello", "q": request})
            # From here on the log is kept for this node too (see `_trim_point`).
            self._redis.hset(self._applied_key, self.node, at)
            live = self._live_nodes()
            self.node_count = len(live) + 1
            if not live:
                log.info("cluster: first node of the network (log at %s)", at)
                return at
            state = self._wait_for_state(request)
            if state is not None:
                self.codec.load_state(state["state"])
                log.info(
                    "cluster: joined the network: %d users, %d rooms (log at %s)",
                    len(state["state"]["users"]),
                    len(state["state"]["rooms"]),
                    state["at"],
                )
                return str(state["at"])
            log.warning("cluster: no node answered; asking again")
        raise ClusterError("the network's nodes did not send their state; is another node stuck?")

    def _live_nodes(self) -> list[str]:
        """Other nodes in the table whose lease is held by the life the table names."""
        nodes = self._redis.hgetall(self._nodes_key)
        live = []
        for name, incarnation in nodes.items():
            if name != self.node and self._redis.get(self._key("node", name)) == incarnation:
                live.append(name)
        return live

    def _wait_for_state(self, request: str) -> dict[str, Any] | None:
        key = self._key("state", request)
        deadline = time.monotonic() + self.timeout + self.lease_ms / 1000
        while time.monotonic() < deadline:
            raw = self._redis.get(key)
            if raw is not None:
                self._redis.delete(key)
                return json.loads(raw)
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        """Leave the network (after this node's users have left): the name is free at
        once, and any user still here leaves everywhere (a `gone` entry)."""
        if self._stopping.is_set():
            return
        self._leaving = True
        with contextlib.suppress(redis.RedisError):
            self._append({"k": "gone", "n": self.node, "inc": self.incarnation})
            self._release(
                keys=[self._key("node", self.node), self._nodes_key],
                args=[self.incarnation, self.node],
            )
        self._stopping.set()
        self._outbox_ready.set()  # (the appender wakes, and ends)
        for thread in self._threads:
            thread.join(timeout=BLOCK_MS / 1000 + 3)
        for client in (self._redis, self._bus_redis, self._lease_redis, self._append_redis):
            client.close()

    # -- writing to the log (reader threads) --------------------------------------------

    def applying(self) -> bool:
        return threading.get_ident() == self._bus_ident

    def call(self, name: str, owner: World | Room, args: tuple, kwargs: dict) -> Any:
        """Order a shared change in the log and wait until this node has run it (see
        ircish.world.shared). IRCError 400 if Redis cannot be reached (nothing happened),
        or if the network is too slow to run it within cluster.timeout_ms (it will still
        happen)."""
        if name == "World.remove_user" and not self.codec.named(args[0]):
            return None  # never named in the log: no other node knows them
        local: list[Any] = []
        entry = {
            "f": name,
            "s": _owner_name(owner),
            "a": [self.codec.encode(arg, local) for arg in args],
            "kw": {key: self.codec.encode(value, local) for key, value in kwargs.items()},
        }
        number = next(self._numbers)
        entry["t"] = number
        # A message whose sender waits for nothing (`DETACHED`): appended, and the reader
        # thread goes on. Appends from one thread are in the log in the order made, so a
        # sender's lines and commands keep their order; a refusal (404: +m, a ban) and the
        # echo come from the bus when it applies the entry (`_tell_sender`).
        ticket = Ticket(local, name in DETACHED and not is_gathering())
        ticket.name = name
        ticket.sender = args[0] if args and isinstance(args[0], User) else None
        with self._tickets_lock:
            self._tickets[number] = ticket
        # The appender thread writes it, with whatever else is waiting, in one round trip;
        # one queue, so what one thread appends is in the log in the order it came.
        entry["o"], entry["i"] = self.node, self.incarnation
        self._outbox.append((entry, ticket))
        self._outbox_ready.set()
        if ticket.detached:  # (what the relay will make, as far as this node tells now)
            self._outstanding.ticket = ticket
            return len(owner.members) if isinstance(owner, Room) else 1
        # (Twice the timeout: a failed append is settled within one, then the caller knows.)
        if not ticket.wait(2 * self.timeout):
            with self._tickets_lock:
                given_up = self._tickets.pop(number, None) is not None
            if given_up:
                log.warning("cluster: %s not applied within %.1f s", name, 2 * self.timeout)
                raise _unreachable("The network is slow: your last command will happen late")
            ticket.wait(None)  # the bus is running it right now
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def settle(self, command: str) -> None:
        """Before a client's command other than a message:
        - its messages do not wait to be applied (`DETACHED`), but what it sends after
          them is answered only once they have been: its echo and a refusal come before
          the PONG of a PING that follows, as on one server;
        - this node catches up with the log (`catch_up`): a WHO, WHOIS or NAMES answers
          with every change made anywhere before it was asked, so nobody is told of a
          JOIN or a MODE on one node and then asks another that does not know it yet."""
        if command in RELAYED:
            return
        deadline = time.monotonic() + 2 * self.timeout  # (for both waits)
        self.wait_for_messages()
        if command not in UNSYNCED:
            self.catch_up(min(self.timeout, deadline - time.monotonic()))

    def wait_for_messages(self) -> None:
        """Wait until the calling thread's last message (not waited for: `DETACHED`) has
        been applied here, at most twice cluster.timeout_ms (a failed append is settled
        within one)."""
        ticket = getattr(self._outstanding, "ticket", None)
        if ticket is not None:
            self._outstanding.ticket = None
            ticket.wait(2 * self.timeout)

    def catch_up(self, timeout: float | None = None) -> None:
        """Wait until this node has applied the log as far as it went when asked: one round
        trip, which the appender makes with whatever it writes, for every thread asking
        (and a wait for the bus, a few milliseconds at most). If Redis is down, or does not
        answer within `timeout` (cluster.timeout_ms), or the bus is that slow, this node's
        copy answers as it is. (The bus itself never waits for itself.)"""
        if not self.up or self.applying():
            return
        asked = threading.Event()
        self._asked.append(asked)
        self._outbox_ready.set()
        asked.wait(self.timeout if timeout is None else max(0.0, timeout))

    def in_flight(self) -> set[int]:
        """The changes this node's users made that its bus has not applied yet (their
        numbers): appended, or on their way."""
        with self._tickets_lock:
            return set(self._tickets)

    def _caught_up(self, asked: list[threading.Event], end: str | None) -> None:
        """The log ended at `end` (None: nothing in it) when `asked` asked: each is woken
        once the bus has applied that far (the appender thread)."""
        target = (0, 0) if end is None else _entry_key(end)
        with self._tickets_lock:
            if _entry_key(self.applied_id) >= target:
                ready = asked
            else:
                ready = []
                self._catching.extend((target, event) for event in asked)
        for event in ready:
            event.set()

    def _wake_caught_up(self) -> None:
        """The bus applied more of the log: wake those waiting for no more than that. (The
        lock each time, not a look at the list without it: the appender reads how far the
        bus is and adds to the list in one step under it, so none is missed.)"""
        applied = _entry_key(self.applied_id)
        with self._tickets_lock:
            if not self._catching:
                return
            ready = [event for target, event in self._catching if target <= applied]
            if ready:
                self._catching = [item for item in self._catching if item[0] > applied]
        for event in ready:
            event.set()

    def _tell_sender(self, ticket: Ticket, exc: IRCError) -> None:
        """The refusal of a detached message, sent to its sender (the bus, or the appender
        thread when Redis refused it)."""
        sender = ticket.sender
        if sender is not None and not isinstance(sender.conn, RemoteConn):
            params = [sender.nick or "*", *exc.params]
            sender.conn.send(Message(exc.numeric, params, self.world.server_name))

    def _appender(self) -> None:
        """Write what reader threads queued (`call`): each round, everything waiting, in one
        pipeline (one round trip however many entries: "group commit")."""
        client = self._append_redis
        keeper = self._keeper
        while not self._stopping.is_set():
            self._outbox_ready.wait(1.0)
            self._outbox_ready.clear()
            bound = None if keeper is None else keeper.own_bound(_entry_key(self.applied_id))
            while self._outbox or self._asked:
                batch = []
                while self._outbox and len(batch) < APPEND_BATCH:
                    batch.append(self._outbox.popleft())
                asked = []
                while self._asked:
                    asked.append(self._asked.popleft())
                if keeper is not None:
                    bound = keeper.own_bound(_entry_key(self.applied_id))
                pipe = client.pipeline(transaction=False)
                trim = self._trim_to  # (one read: the lease thread replaces it)
                for entry, _ticket in batch:
                    if bound is not None:  # (how far this node's writer is: `OwnKeeper`)
                        entry["w"] = bound
                    pipe.xadd(self._log_key, {"e": _encoded(entry)}, minid=trim, approximate=True)
                if asked:  # (the log's last entry: after these, so it is theirs at least)
                    pipe.xrevrange(self._log_key, count=1)
                try:
                    results = pipe.execute()
                except redis.RedisError as exc:
                    self._caught_up(asked, None)  # (they answer from the copy as it is)
                    if batch:
                        self._settle(batch, exc)
                except Exception:  # (a bug: logged, and the thread goes on)
                    log.exception("cluster: the appender failed a batch")
                    self._caught_up(asked, None)
                    if batch:
                        self._settle(batch, redis.ConnectionError("the appender failed"))
                else:
                    if asked:
                        last = results[-1]
                        self._caught_up(asked, str(last[0][0]) if last else None)

    def _settle(self, batch: list[tuple[dict[str, Any], Ticket]], exc: redis.RedisError) -> None:
        """Redis failed to answer a batch of appends: which were appended all the same
        (Redis ran them, then the connection broke before the answer)? A refused connection
        says none. Otherwise, once Redis answers again, this node appends a mark and waits
        for its bus to reach it: the log has one order, so an entry that is there comes
        before the mark, and the bus will have run it (and taken its ticket). The others
        were not appended, and their senders are told so; past cluster.timeout_ms with no
        answer, they are told the truth: it may have been done. A QUIT is sent again later
        instead (twice in the log is harmless: one QUIT)."""
        definite = "connecting to" in str(exc) or isinstance(exc.__cause__, ConnectionRefusedError)
        self._went_down(exc)
        deadline = time.monotonic() + self.timeout
        mark = None
        while mark is None and not definite and time.monotonic() < deadline:
            try:
                mark = self._append({"k": "mark"})
            except redis.RedisError:
                time.sleep(0.1)
        while mark is not None and _entry_key(self.applied_id) < _entry_key(mark):
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        sure = definite or mark is not None
        text = (
            "The network cannot be reached just now; nothing was done"
            if sure
            else "The network cannot be reached just now; your last command may not have been done"
        )
        for entry, ticket in batch:
            with self._tickets_lock:
                unrun = self._tickets.pop(entry["t"], None) is not None
            if not unrun:
                continue  # the bus ran it: its caller has its answer
            if ticket.name == "World.remove_user":
                log.warning("cluster: a QUIT could not be appended; it is sent again later")
                self._pending.append({**entry, "t": 0})
            elif ticket.name in DETACHED:
                # A message is refused where it was typed: a room's refusal is a 404 (irssi
                # and WeeChat put it in the room's window), a labeled one's too. A TAGMSG
                # (+typing) nobody waits for is not worth one.
                command = _message_command(entry)
                room = entry["s"]
                refusal = (
                    IRCError(p.ERR_CANNOTSENDTOCHAN, room, text)
                    if room
                    else IRCError(p.ERR_UNKNOWNERROR, command, text)
                )
                if not ticket.detached:
                    ticket.error = refusal
                elif command != "TAGMSG":
                    self._tell_sender(ticket, refusal)
            else:
                ticket.error = _unreachable(text)
            ticket.finish()

    def _append(self, entry: dict[str, Any], client: redis.Redis | None = None) -> str:
        """Append one entry now (joining, a mark, a node gone, a QUIT sent again), outside
        the appender's queue; an entry made by an earlier life keeps its origin."""
        expect_none_held("a call to Redis")
        entry.setdefault("o", self.node)
        entry.setdefault("i", self.incarnation)
        trim = self._trim_to  # (one read: the lease thread replaces it)
        added = (client or self._redis).xadd(
            self._log_key, {"e": _encoded(entry)}, minid=trim, approximate=True
        )
        return str(added)

    # -- the bus thread -----------------------------------------------------------------

    def _bus(self) -> None:
        self._bus_ident = threading.get_ident()
        pause = 0.1
        taken = None
        while not self._stopping.is_set():
            if self._lost.is_set():
                self._start_again()
                continue
            read = self._read_bounds  # (a new dict each lease tick: taken once)
            if read is not taken and self._keeper is not None:
                taken = read
                for life, bound in (read or {}).items():
                    self._keeper.advance(life, bound)
            try:
                reply = self._bus_redis.xread(
                    {self._log_key: self.applied_id}, count=READ_COUNT, block=BLOCK_MS
                )
                pause = 0.1
            except redis.RedisError as exc:
                log.warning("cluster bus: %s; reading again in %.1f s", exc, pause)
                self._stopping.wait(pause)
                pause = min(pause * 2, 2.0)
                continue
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    try:
                        self._apply(entry_id, json.loads(fields["e"]))
                    except Exception:
                        log.exception("cluster: entry %s could not be applied", entry_id)
                    self.applied_id = entry_id
                    self.applied += 1
                    self.lag = max(0.0, time.time() - _entry_key(entry_id)[0] / 1000)
            self._wake_caught_up()

    def _start_again(self) -> None:
        """Redis lost the network's data (restarted without its append-only file): the
        log this node's copy follows is gone, and the other nodes may have applied a
        different tail of it. Or the other nodes declared this one gone (it was stopped,
        or cut off from Redis, for longer than its lease): the entries it missed meanwhile
        may have been trimmed. Either way this node closes its users (they reconnect),
        forgets the network, and joins again as a new life, as if started (the bus thread,
        between entries)."""
        error = self._again
        log.warning("cluster: %s; closing every user and joining again", error)
        for user in list(self.codec.users.values()) + list(self.codec.forget_all()):
            if not isinstance(user.conn, RemoteConn):
                user.conn.close(error.partition(";")[0], error)
        with self._tickets_lock:
            waiting, self._tickets = self._tickets, {}
            catching, self._catching = self._catching, []
        for _target, event in catching:
            event.set()
        for ticket in waiting.values():
            ticket.error = _unreachable("The network lost its state; nothing was done")
            ticket.finish()
        self.world.start_again([(room.name, room.topic) for room in self.rooms])
        if self._keeper is not None:
            self._keeper.start_again()
        self.incarnation = secrets.token_hex(4)
        self._lives.add(self.incarnation)
        self.codec.incarnation = self.incarnation
        try:
            self._bus_redis.set(self._key("node", self.node), self.incarnation, px=self.lease_ms)
            self._read_epoch()
            self.applied_id = self._join()
            self._bus_redis.hset(self._nodes_key, self.node, self.incarnation)
            self._lost.clear()
        except (redis.RedisError, ClusterError) as exc:
            log.warning("cluster: could not join again yet: %s", exc)
            self._stopping.wait(1.0)

    def keeper(self, writer: Writer) -> OwnKeeper:
        """`writer` (the store's writer thread), given only what this node must write
        (before `start`)."""
        self._keeper = OwnKeeper(writer, self)
        return self._keeper

    def writing(self) -> bool:
        """Whether what is kept now is this node's to write: at start, and while the bus
        applies an entry this node wrote (every node applies it; one writes it)."""
        return self._own_entry or not self.applying()

    def _apply(self, entry_id: str, entry: dict[str, Any]) -> None:
        origin = (entry["o"], entry["i"])
        self._own_entry = entry["o"] == self.node and entry["i"] in self._lives
        self.entry_origin, self.entry_at = origin, _entry_key(entry_id)
        written = entry.get("w")
        if written is not None and self._keeper is not None:
            self._keeper.advance(origin, (written[0], written[1]))
        ticket = None
        if entry["o"] == self.node and entry["i"] in self._lives and entry.get("t"):
            with self._tickets_lock:
                ticket = self._tickets.pop(entry["t"], None)
        try:
            if origin in self._fenced:
                if ticket is not None:
                    ticket.error = _unreachable("This server lost contact with the network")
                return
            kind = entry.get("k")
            ms, seq = entry_id.split("-")
            # (Half a millisecond in: millis() of it is the entry's millisecond exactly.)
            fixed_clock((int(ms) + 0.5) / 1000, f"{int(ms):x}{int(seq):x}-")
            try:
                if kind is None:
                    self._run(entry, ticket)
                elif kind == "hello":
                    self._answer_hello(entry, entry_id)
                elif kind == "gone":
                    self._remove_node(entry["n"], entry["inc"])
            finally:
                free_clock()
        finally:
            if ticket is not None:
                ticket.finish()

    def _run(self, entry: dict[str, Any], ticket: Ticket | None) -> None:
        codec = self.codec
        local = None if ticket is None else ticket.local
        if ticket is not None and not ticket.detached:
            act_for(ticket.thread)
        try:
            owner = self._owner(entry["s"])
            args = [codec.decode(arg, local) for arg in entry["a"]]
            kwargs = {key: codec.decode(value, local) for key, value in entry["kw"].items()}
            result = SHARED[entry["f"]](owner, *args, **kwargs)
            if entry["f"] == "World.remove_user":
                codec.forget(args[0])
        except IRCError as exc:
            if ticket is not None and ticket.detached:
                if _message_command(entry) == "PRIVMSG":  # (a NOTICE is never answered)
                    self._tell_sender(ticket, exc)
            elif ticket is not None:
                ticket.error = exc
        except Exception as exc:
            log.exception("cluster: %s failed", entry["f"])
            if ticket is not None:
                ticket.error = exc
        else:
            if ticket is not None:
                ticket.result = result
        finally:
            act_for(None)

    def _owner(self, name: str | None) -> object:
        """What a shared change is a method of: the world, the accounts, or a room (IRCError
        if that room has ended)."""
        if name is None:
            return self.world
        if name == ACCOUNTS:
            return self.world.accounts
        return self.codec.decode({"R": name}, None)

    def _answer_hello(self, entry: dict[str, Any], entry_id: str) -> None:
        """A node joins: the first node in the network to see this writes down its copy as
        of this entry (the bus holds no lock between entries; the copy is taken under the
        world's locks)."""
        if entry["o"] == self.node:
            return
        key = self._key("state", entry["q"])
        try:
            if self._bus_redis.exists(key):
                return
            state = {"at": entry_id, "state": self.codec.export_state()}
            data = _encoded(state)
            self._bus_redis.set(key, data, nx=True, ex=STATE_TTL)
        except redis.RedisError as exc:
            log.warning("cluster: could not send the state to %s: %s", entry["o"], exc)

    def _remove_node(self, node: str, incarnation: str) -> None:
        """A node's life is over: its users leave the network, here as everywhere. What
        it has not written of its lines it never will: they count as written."""
        self._fenced.add((node, incarnation))
        if self._keeper is not None:
            self._keeper.advance((node, incarnation), END)
        gone = [
            user for uid, user in self.codec.users.items() if node_of(uid) == (node, incarnation)
        ]
        reason = f"{node} left the network"
        mine = node == self.node and incarnation in self._lives
        if gone:
            log.info("cluster: %s (life %s) is gone: %d users leave", node, incarnation, len(gone))
        for user in gone:
            self.world.remove_user(user, reason)
            self.codec.forget(user)
            if not isinstance(user.conn, RemoteConn):
                user.conn.close(reason, GONE_ERROR)
        if mine and incarnation == self.incarnation and not self._leaving:
            self._start_again_because(GONE_ERROR)

    def _start_again_because(self, error: str) -> None:
        """Have the bus start this node again (`_start_again`): its users get `error`."""
        self._again = error
        self._lost.set()

    # -- the lease thread ---------------------------------------------------------------

    def _lease_loop(self) -> None:
        every = self.lease_ms / 4000
        while not self._stopping.wait(every):
            try:
                if self._lease_redis.get(self._key("epoch")) != self.epoch:
                    self._start_again_because(LOST_ERROR)  # the bus does it
                    continue
                self._renew_lease()
                self._find_gone()
                self._trim_to = self._trim_point()
                self._share_bound()
                self._send_pending()
                with self._up_lock:
                    back, self.up = not self.up, True
                if back and not self._lost.is_set():  # (not if it starts again instead)
                    log.warning("cluster: Redis is back")
                    self._tell_everyone("The network is back: messages go through again")
            except redis.RedisError as exc:
                self._went_down(exc)
            except Exception:
                log.exception("cluster: the lease thread failed a round")

    def health(self) -> str | None:
        """None while this node is part of the network; else what is wrong (/healthz)."""
        for thread in self._threads:
            if not thread.is_alive():
                return f"the {thread.name} thread stopped"
        if not self.up:
            return "Redis cannot be reached: messages are refused"
        return None

    def _went_down(self, exc: redis.RedisError) -> None:
        """Redis failed to answer (the lease or the appender thread): the first to notice
        tells everyone, before the refusals that follow (holding no lock)."""
        with self._up_lock:
            first, self.up = self.up, False
        if first:
            log.warning("cluster: Redis cannot be reached: %s", exc)
            self._tell_everyone(
                "The network cannot be reached (its Redis is down): what you send is "
                "refused until it is back"
            )

    def _tell_everyone(self, text: str) -> None:
        """A server notice to every user of this node (the lease thread, holding no lock)."""
        users = list(self.codec.users.values())  # (one step: the bus may change the dict)
        for user in users:
            if not isinstance(user.conn, RemoteConn) and user.registered:
                user.conn.send(Message("NOTICE", [user.nick or "*", text], self.world.server_name))

    def _renew_lease(self) -> None:
        expect_none_held("a call to Redis")
        incarnation = self.incarnation
        answer = self._renew(
            keys=[self._key("node", self.node), self._nodes_key],
            args=[incarnation, self.lease_ms, self.node],
        )
        if answer == "GONE" and incarnation == self.incarnation:
            self._start_again_because(GONE_ERROR)
        elif answer == "TAKEN":
            log.error("cluster: another life holds the name %s", self.node)

    def _find_gone(self) -> None:
        nodes = self._lease_redis.hgetall(self._nodes_key)
        self.node_count = len(nodes)
        for name, incarnation in nodes.items():
            if name == self.node:
                continue
            if self._lease_redis.get(self._key("node", name)) != incarnation:
                log.info("cluster: %s stopped renewing its lease", name)
                entry = {"k": "gone", "n": name, "inc": incarnation}
                self._append(entry, self._lease_redis)
                self._forget_node(keys=[self._nodes_key], args=[name, incarnation])

    def _trim_point(self) -> str | None:
        """How far the log may be trimmed: up to the entry the slowest node has applied
        (every node says how far it is, each lease tick; a node whose lease is gone no
        longer counts). So no node that is alive ever misses an entry, however far behind
        it falls; a node declared gone joins again from a copy of the state."""
        self._lease_redis.hset(self._applied_key, self.node, self.applied_id)
        points = []
        for name, entry_id in self._lease_redis.hgetall(self._applied_key).items():
            if self._lease_redis.exists(self._key("node", name)):
                points.append(entry_id)
            else:
                self._lease_redis.hdel(self._applied_key, name)
        return min(points, key=_entry_key) if points else None

    def _share_bound(self) -> None:
        """Say how far this node's writer is, and read how far the others' are: entries
        carry it too (`w`), but a node that says nothing for a while would hold the
        other nodes' windows back (`OwnKeeper`)."""
        keeper = self._keeper
        if keeper is None:
            return
        ms, seq = keeper.bound
        self._lease_redis.hset(self._written_key, self.node, f"{self.incarnation} {ms}-{seq}")
        read = {}
        for name, value in self._lease_redis.hgetall(self._written_key).items():
            incarnation, _, at = value.partition(" ")
            read[name, incarnation] = _entry_key(at)
        self._read_bounds = read  # (the bus takes it)

    def _send_pending(self) -> None:
        while self._pending:
            self._append(self._pending[0], self._lease_redis)
            self._pending.popleft()


class OwnKeeper:
    """The store's writer as a cluster node's world and accounts see it: every node
    applies every change, and each history line, room state and account is written by one
    node, the one whose entry made it (the node that declared another gone writes its
    users' QUITs).

    A room's window keeps a line until the store has it (World `_trim_locked`), so an
    answer reaching past the window finds it in one or the other. For this node's lines
    its writer says how far it is. Another node's line is that node's to write, so each
    node says how far its writer is, as a place in the log (`own_bound`: every room line
    of its entries before it is written), with each entry it appends and each lease
    tick; a window keeps another node's line until that node has said it is past it
    (`advance`), or is gone."""

    def __init__(self, writer: Writer, cluster: Cluster) -> None:
        self._writer = writer
        self._cluster = cluster
        self.store = writer.store
        #: Room -> the seq of the last line of it this node handed its writer.
        self._mine: dict[str, int] = {}
        #: Lines this node's writer took (Writer.handled counts the ones it is done with).
        self._taken = 0
        #: This node's room lines not known written, in order: (the entry that made it,
        #: its number among the lines taken). The bus adds; the appender thread takes
        #: those written from the front (`own_bound`).
        self._own: deque[tuple[At, int]] = deque()
        #: How far this node's writer is, as `own_bound` last found.
        self.bound: At = (0, 0)
        #: Room -> other nodes' lines of it not known written, in order: (the life that
        #: made it, its entry, its seq). The bus adds; taken from the front under the
        #: room's lock (`written_upto`).
        self._theirs: dict[str, deque[tuple[tuple[str, str], At, int]]] = {}
        #: Each life's writer: its lines of entries before this are written (the bus's).
        self._bounds: dict[tuple[str, str], At] = {}

    def submit(self, line: StoredLine) -> bool:
        cluster = self._cluster  # (the bus thread's: shared changes make the lines)
        room = not is_private_target(line.target)
        if not cluster.writing():
            if room:
                theirs = self._theirs.get(line.target)
                if theirs is None:
                    theirs = self._theirs[line.target] = deque(maxlen=UNSTORED_LIMIT)
                theirs.append((cluster.entry_origin, cluster.entry_at, line.seq))
            return True
        if room:  # (a room that ends leaves it: `forget`; a private read asks the writer)
            self._mine[line.target] = line.seq
        if not self._writer.submit(line):
            return False
        self._taken += 1
        if room and cluster.applying() and len(self._own) < OWN_UNWRITTEN_LIMIT:
            self._own.append((cluster.entry_at, self._taken))
        return True

    def own_bound(self, applied: At) -> At:
        """How far this node's writer is: every room line of this node's entries before the
        place returned is written. `applied`: how far the bus was, read before this call
        (its lines were handed over by then). The appender thread's."""
        own, handled = self._own, self._writer.handled
        while own and own[0][1] <= handled:
            own.popleft()
        self.bound = own[0][0] if own else (applied[0], applied[1] + 1)
        return self.bound

    def advance(self, life: tuple[str, str], bound: At) -> None:
        """`life`'s writer has written its lines of the entries before `bound` (the bus)."""
        if bound > self._bounds.get(life, (0, 0)):
            self._bounds[life] = bound

    def start_again(self) -> None:
        """The node starts again with a new copy of the network: the rooms it tracked went
        (a room made again starts its seqs again)."""
        self._theirs.clear()
        self._mine.clear()

    def written_upto(self, target: str, epoch: int) -> int | None:
        """How far the window of `target` may let lines go: up to the last one this node's
        writer has written while it has not written all of its own, and short of the
        oldest line of another node that node has not said it wrote. (Under the room's
        lock.) A private conversation has no window: how far this node's writer is."""
        if is_private_target(target):
            return self._writer.written_upto(target, epoch)
        upto: int | None = sys.maxsize
        mine = self._mine.get(target)
        if mine is not None:
            written = self._writer.written_upto(target, epoch)
            if written is None or written < mine:
                upto = written
        theirs = self._theirs.get(target)
        if theirs:
            bounds = self._bounds
            while theirs and theirs[0][1] < bounds.get(theirs[0][0], (0, 0)):
                theirs.popleft()
            if theirs:
                upto = min(upto or 0, theirs[0][2] - 1)
        return upto

    def forget(self, target: str, epoch: int) -> None:
        """A room ended (at the same entry on every node): every node's writer forgets its
        history, after its own lines of it. Had only one node's, a line another node's
        writer wrote later (a QUIT of the same moment) would outlive the room in Redis."""
        self._mine.pop(target, None)  # (nothing of it left to wait for)
        self._theirs.pop(target, None)
        self._writer.forget(target, epoch)

    def save_room(self, state: RoomState) -> None:
        if self._cluster.writing():
            self._writer.save_room(state)

    def drop_room(self, name: str) -> None:
        if self._cluster.writing():
            self._writer.drop_room(name)

    def save_account(self, state: AccountState) -> None:
        if self._cluster.writing():
            self._writer.save_account(state)

    def drop_account(self, name: str) -> None:
        if self._cluster.writing():
            self._writer.drop_account(name)

    def flush(self, timeout: float | None = None) -> bool:
        return self._writer.flush(timeout)
