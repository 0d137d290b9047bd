"""Shared chat state: the nick table, the room table, rooms and user records.

`World` owns who is online and which rooms exist; each `Room` owns its member
set (with each member's status: operator, voice), topic and modes. All fan-out goes
through `Room` and `World` methods, so nothing else needs to know how delivery works.
Who may do what in a room is checked here, under the lock that guards the state the
answer depends on; a refusal is an `IRCError` the dispatcher turns into a numeric.

Lock order (a thread may take a later lock while holding an earlier one,
never the reverse):

    World.lock  ->  Room.lock  ->  Connection outbox lock  ->  TlsTransport._lock

- `World.lock` guards the nick table, the room table, every `User.rooms`, and the
  LUSERS counters with the user modes they count (+i, +o; read without it, a
  single attribute read). Joining and leaving take it, so creating a room on
  first join and deleting it on last leave is one atomic step.
- `Room.lock` guards `members` (and their status), the topic, the modes, the ban list
  and the invite list. A room broadcast enqueues to
  every member while holding it, so all members see one room's messages in the
  same order. Several room locks at once only while holding `World.lock`
  (nick change, quit), which makes their order irrelevant.
- The outbox lock: `Connection.send` only appends to a queue under it.
- `TlsTransport._lock` (ircish/tls.py, TLS connections only) guards the SSL
  object; it is last in the order (no code holds it with another lock) and is
  never held while waiting.
- `Server.connections_lock` (ircish/server.py) is taken alone.
- The scrypt semaphore (ircish/passwords.py, OPER) is taken alone: a reader thread
  may wait on it, holding nothing else.
No socket I/O and no blocking call happens under any of these locks.
"""

from __future__ import annotations

import threading
import time
import weakref
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ircish import modes
from ircish import protocol as p
from ircish.protocol import IRCError, Message, casefold

if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Iterable


class Deliverer(Protocol):
    """What a user record needs from its connection: a non-blocking send."""

    def send(self, msg: Message, wire: bytes | None = None) -> None: ...

    def close(self, reason: str, error: str | None = None, flush: bool = True) -> None: ...


NICK_SPECIALS = "[]\\`_^{|}"


def valid_nick(nick: str, max_length: int) -> bool:
    """RFC 2812 2.3.1 nick: a letter or special first, then letters, digits, specials, '-'."""
    if not 0 < len(nick) <= max_length or not nick.isascii():
        return False
    if not (nick[0].isalpha() or nick[0] in NICK_SPECIALS):
        return False
    return all(c.isalnum() or c in NICK_SPECIALS or c == "-" for c in nick)


def valid_room_name(name: str, max_length: int) -> bool:
    """A room is '#' then at least one char; no space, comma, BEL, colon or control chars."""
    if not 1 < len(name) <= max_length or name[0] != "#":
        return False
    # No separators, no C0/C1 controls or DEL, and no Unicode spaces that a
    # client might split on.
    return not any(c in ",:" or c.isspace() or ord(c) < 32 or 127 <= ord(c) < 160 for c in name)


class User:
    """One person: identity, away state and rooms. Belongs to one connection."""

    def __init__(self, conn: Deliverer, host: str) -> None:
        self.conn = conn
        self.nick: str | None = None
        self.username = ""
        self.realname = ""
        # An IPv6 address may start with ':', which cannot begin a middle
        # parameter (WHO, WHOIS): prefix '0' as other servers do.
        self.host = "0" + host if host.startswith(":") else host
        self.registered = False
        self.invisible = False
        self.away: str | None = None
        #: User mode +o: a server operator (OPER), an operator in every room.
        self.oper = False
        self.signon = time.time()
        self.last_spoke = time.time()
        #: Rooms by casefolded name, in join order. Guarded by World.lock.
        self.rooms: dict[str, Room] = {}

    @property
    def prefix(self) -> str:
        return f"{self.nick}!{self.username}@{self.host}"

    @property
    def current_room(self) -> str | None:
        """The last joined room still joined: where a text session's plain lines go."""
        return next(reversed(self.rooms.values())).name if self.rooms else None

    def send(self, msg: Message, wire: bytes | None = None) -> None:
        self.conn.send(msg, wire)

    def __repr__(self) -> str:
        return f"<User {self.nick}>"


@dataclass(frozen=True, slots=True)
class Ban:
    """One +b entry: the completed mask, who set it and when (367), and its matcher."""

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


class Counts(NamedTuple):
    """What LUSERS reports, kept as counters (a scan per registration would be O(users))."""

    users: int
    invisible: int
    operators: int
    rooms: int


def status_prefix(status: str) -> str:
    """The highest prefix for a member's status letters: '@', '+' or ''."""
    for letter, prefix in modes.STATUS_PREFIXES.items():
        if letter in status:
            return prefix
    return ""


class Room:
    """A room: its members, topic, modes and lock. `broadcast` is the one fan-out path."""

    def __init__(self, name: str, topic: str = "", persistent: bool = False) -> None:
        self.name = name
        self.key = casefold(name)
        self.lock = threading.Lock()
        #: member -> status letters ("", "o", "v", "ov"), in join order.
        self.members: dict[User, str] = {}
        self.topic = topic
        self.topic_setter = "" if not topic else "server"
        self.topic_time = int(time.time()) if topic else 0
        self.created = int(time.time())
        #: Rooms from the config outlive their last member.
        self.persistent = persistent
        #: Flag modes (modes.FLAG letters) that are on.
        self.flags: set[str] = set(modes.DEFAULT_ROOM_FLAGS)
        self.password: str | None = None  # +k (named so, since `key` is the casefolded name)
        self.limit: int | None = None  # +l
        #: casefolded mask -> Ban, in the order they were set.
        self.bans: dict[str, Ban] = {}
        #: Users invited past +i; an invite is used up by joining, and a user who leaves
        #: the server drops out by itself (weak references).
        self.invited: weakref.WeakSet[User] = weakref.WeakSet()

    # -- who may do what (callers hold self.lock) ------------------------------

    def is_operator_locked(self, user: User) -> bool:
        """A room operator, or a server operator (who acts as one in every room)."""
        return user.oper or "o" in self.members.get(user, "")

    def require_operator_locked(self, user: User) -> None:
        if not self.is_operator_locked(user):
            raise IRCError(p.ERR_CHANOPRIVSNEEDED, self.name, "You're not a room operator")

    def require_member_locked(self, user: User) -> None:
        """Members, and server operators, may act on a room."""
        if user not in self.members and not user.oper:
            raise IRCError(p.ERR_NOTONCHANNEL, self.name, "You're not in that room")

    def is_banned_locked(self, user: User) -> bool:
        if not self.bans:
            return False
        who = casefold(user.prefix)
        return any(ban.pattern.fullmatch(who) for ban in self.bans.values())

    def check_join_locked(self, user: User, password: str | None) -> None:
        """Raise the numeric that keeps `user` out, if any. Server operators pass them all.
        An invite lets one past +i only: without +i any member may invite, so an invite
        must not undo an operator's ban, key or limit."""
        if user.oper:
            return
        if self.is_banned_locked(user):
            raise IRCError(p.ERR_BANNEDFROMCHAN, self.name, "Cannot join room (+b): you are banned")
        if "i" in self.flags and user not in self.invited:
            raise IRCError(
                p.ERR_INVITEONLYCHAN, self.name, "Cannot join room (+i): it is invite only"
            )
        if self.password is not None and password != self.password:
            raise IRCError(
                p.ERR_BADCHANNELKEY, self.name, "Cannot join room (+k): wrong or missing key"
            )
        if self.limit is not None and len(self.members) >= self.limit:
            raise IRCError(p.ERR_CHANNELISFULL, self.name, "Cannot join room (+l): it is full")

    def is_secret_to(self, user: User) -> bool:
        """+s hides a room from LIST, NAMES, WHO and WHOIS of anyone outside it.
        (One dict read: callers need not hold the lock.)"""
        return "s" in self.flags and user not in self.members and not user.oper

    def broadcast_locked(self, msg: Message, exclude: User | None = None) -> None:
        """Enqueue `msg` to every member but `exclude`. Caller holds self.lock."""
        wire = msg.to_bytes()
        for member in self.members:
            if member is not exclude:
                member.conn.send(msg, wire)

    def send_from(self, sender: User, msg: Message) -> None:
        """Relay a message to the members but `sender`; IRCError (404) if the room's modes
        keep `sender` quiet: +n outsiders, +m without voice, banned members without voice."""
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
                if self.bans and self.is_banned_locked(sender):
                    raise IRCError(
                        p.ERR_CANNOTSENDTOCHAN, self.name, "Cannot send to room: you are banned"
                    )
            self.broadcast_locked(msg, exclude=sender)

    def set_topic(self, setter: User, topic: str) -> None:
        """Change the topic and tell the room: members may, only operators under +t."""
        with self.lock:
            self.require_member_locked(setter)
            if "t" in self.flags:
                self.require_operator_locked(setter)
            self.topic = topic
            self.topic_setter = setter.prefix
            self.topic_time = int(time.time())
            self.tell_locked(setter, Message("TOPIC", [self.name, topic], setter.prefix))

    def snapshot(self) -> Snapshot:
        """Members with their status, topic, topic setter and time, read consistently."""
        with self.lock:
            return Snapshot(dict(self.members), self.topic, self.topic_setter, self.topic_time)

    def mode_params(self, viewer: User) -> list[str]:
        """324's mode string and parameters; the key only for members and server operators."""
        with self.lock:
            params = [modes.describe_flags(self.flags, self.password, self.limit)]
            if self.password is not None:
                params.append(self.password if viewer in self.members or viewer.oper else "*")
            if self.limit is not None:
                params.append(str(self.limit))
            return params

    def ban_list(self) -> list[Ban]:
        with self.lock:
            return list(self.bans.values())

    def change_modes(
        self,
        actor: User,
        changes: list[modes.Change],
        find_user: Callable[[str], User | None],
    ) -> list[IRCError]:
        """Apply an operator's changes in order and relay those that took effect as one
        MODE line (modes.split_changes cuts it only past 512 bytes). Raises 482 for a
        non-operator, who changes nothing; returns the refusals of single changes."""
        refusals: list[IRCError] = []
        with self.lock:
            self.require_operator_locked(actor)
            applied: list[modes.Change] = []
            for change in changes:
                try:
                    effect = self._apply_locked(actor, change, find_user)
                except IRCError as exc:
                    refusals.append(exc)
                    continue
                if effect is not None:
                    applied.append(effect)
            head = len(f":{actor.prefix} MODE {self.name} ".encode())
            for group in modes.split_changes(applied, p.DEFAULT_LINE_BYTES - 2 - head):
                params = [self.name, *modes.format_changes(group)]
                self.tell_locked(actor, Message("MODE", params, actor.prefix))
        return refusals

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
            self.invited.add(target)
            target.send(Message("INVITE", [target.nick, self.name], inviter.prefix))

    # -- helpers that expect self.lock to be held --------------------------------

    def tell_locked(self, actor: User, msg: Message) -> None:
        """Broadcast, and echo to an actor acting from outside (a server operator)."""
        self.broadcast_locked(msg)
        if actor not in self.members:
            actor.send(msg)

    def _apply_locked(
        self, actor: User, change: modes.Change, find_user: Callable[[str], User | None]
    ) -> modes.Change | None:
        """One change; the change as relayed if it took effect, None if it changed nothing."""
        letter, adding, arg = change.letter, change.adding, change.arg
        kind = modes.ROOM_MODES[letter]
        if kind == modes.STATUS:
            target = find_user(arg or "")
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
            return self._change_ban_locked(actor, adding, arg or "")
        if letter == "k":
            if not adding:
                if self.password is None:
                    return None
                self.password = None
                return modes.Change(False, "k", "*")
            if not modes.valid_key(arg or ""):
                raise IRCError(
                    p.ERR_INVALIDKEY,
                    self.name,
                    f"Key is not well-formed: 1 to {modes.KEY_LENGTH} characters, "
                    "no spaces or commas",
                )
            if arg == self.password:
                return None
            self.password = arg
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

    def _change_ban_locked(self, actor: User, adding: bool, raw: str) -> modes.Change | None:
        mask = modes.normalize_mask(raw)
        # An empty mask would complete to '*!*@*' (everyone); one with a space or a
        # leading ':' cannot be relayed or listed as a middle parameter.
        if not raw or len(mask) > modes.MASK_LENGTH or p.safe_param(mask) != mask:
            raise IRCError(
                p.ERR_INVALIDMODEPARAM,
                self.name,
                "b",
                p.safe_param(raw),
                f"A ban mask is 1 to {modes.MASK_LENGTH} characters, no spaces, "
                "not starting with ':'",
            )
        folded = casefold(mask)
        if not adding:
            ban = self.bans.pop(folded, None)
            return None if ban is None else modes.Change(False, "b", ban.mask)
        if folded in self.bans:
            return None
        if len(self.bans) >= modes.MAX_BANS:
            raise IRCError(
                p.ERR_BANLISTFULL, self.name, p.safe_param(mask), "The room's ban list is full"
            )
        self.bans[folded] = Ban(mask, actor.prefix, int(time.time()), modes.mask_pattern(mask))
        return modes.Change(True, "b", mask)

    def __repr__(self) -> str:
        return f"<Room {self.name}>"


class World:
    """The nick table and the room table."""

    def __init__(self, rooms: Iterable[tuple[str, str]] = ()) -> None:
        self.lock = threading.Lock()
        self.users: dict[str, User] = {}
        self.rooms: dict[str, Room] = {}
        self._registered = 0  # registered users in `users`
        self._invisible = 0  # of those, with user mode +i
        self._operators = 0  # of those, with user mode +o
        for name, topic in rooms:
            room = Room(name, topic, persistent=True)
            self.rooms[room.key] = room

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

    def counts(self) -> Counts:
        with self.lock:
            return Counts(self._registered, self._invisible, self._operators, len(self.rooms))

    def mark_registered(self, user: User) -> None:
        """`user` finished registration: it now counts and can be found."""
        with self.lock:
            if not user.registered:
                user.registered = True
                self._registered += 1
                self._invisible += user.invisible

    def set_invisible(self, user: User, invisible: bool) -> bool:
        """User mode +i/-i; False if it was already so."""
        with self.lock:
            if user.invisible == invisible:
                return False
            user.invisible = invisible
            if user.registered:
                self._invisible += 1 if invisible else -1
            return True

    def set_operator(self, user: User, oper: bool) -> bool:
        """User mode +o/-o (granted only by OPER); False if it was already so."""
        with self.lock:
            if user.oper == oper:
                return False
            user.oper = oper
            self._operators += 1 if oper else -1
            return True

    # -- nicks ----------------------------------------------------------------

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

    def rename_user(self, user: User, new_nick: str) -> bool:
        """Change a registered user's nick; tell them and everyone sharing a room, once.
        False if the nick is taken; IRCError (435) while a ban silences them in a room,
        since a new nick would slip past a ban on the old one."""
        key = casefold(new_nick)
        with self.lock:
            holder = self.users.get(key)
            if holder is not None and holder is not user:
                return False
            msg = Message("NICK", [new_nick], user.prefix)
            with ExitStack() as stack:
                for room in user.rooms.values():
                    stack.enter_context(room.lock)
                for room in user.rooms.values():
                    if not room.members[user] and not user.oper and room.is_banned_locked(user):
                        raise IRCError(
                            p.ERR_BANNICKCHANGE,
                            new_nick,
                            room.name,
                            "Cannot change nick while banned in that room",
                        )
                del self.users[casefold(user.nick)]
                self.users[key] = user
                # Delivered before the rename so the user's own text session
                # renders it as "You are now known as ...".
                self._deliver_once(msg, self._neighbours_locked(user) | {user: None})
                user.nick = new_nick
            return True

    # -- rooms ----------------------------------------------------------------

    def join(self, user: User, name: str, password: str | None = None) -> Room | None:
        """Add `user` to room `name`, creating it with `user` as its operator; tell the
        room. None if already in; IRCError if the room's modes keep them out."""
        key = casefold(name)
        with self.lock:
            room = self.rooms.get(key)
            # Whoever creates a room runs it. A room from the config has no founder: it
            # exists before anyone joins, so server operators give op there (as ngIRCd's
            # predefined channels).
            founder = room is None
            if founder:
                room = self.rooms[key] = Room(name)
            with room.lock:
                if user in room.members:
                    return None
                room.check_join_locked(user, password)
                room.invited.discard(user)
                room.members[user] = "o" if founder else ""
                user.rooms[key] = room
                room.broadcast_locked(Message("JOIN", [room.name], user.prefix))
            return room

    def part(self, user: User, room: Room, reason: str | None) -> bool:
        """Remove `user` from `room`, telling the room; drop the room if now empty."""
        params = [room.name] if reason is None else [room.name, reason]
        with self.lock, room.lock:
            if user not in room.members:
                return False
            room.broadcast_locked(Message("PART", params, user.prefix))
            self._remove_member_locked(user, room)
            return True

    def kick(self, kicker: User, room: Room, target: User, reason: str) -> None:
        """An operator removes `target` from `room`; the room (target included) is told."""
        with self.lock, room.lock:
            room.require_member_locked(kicker)
            room.require_operator_locked(kicker)
            if target not in room.members:
                raise IRCError(
                    p.ERR_USERNOTINCHANNEL, target.nick, room.name, "They aren't in that room"
                )
            room.tell_locked(
                kicker, Message("KICK", [room.name, target.nick, reason], kicker.prefix)
            )
            self._remove_member_locked(target, room)

    def remove_user(self, user: User, reason: str) -> None:
        """A user leaves the server: drop them everywhere, tell each neighbour once."""
        with self.lock:
            if user.nick is not None and self.users.get(casefold(user.nick)) is user:
                del self.users[casefold(user.nick)]
                if user.registered:
                    self._registered -= 1
                    self._invisible -= user.invisible
                    self._operators -= user.oper
            if not user.rooms:
                return
            with ExitStack() as stack:
                rooms = list(user.rooms.values())
                for room in rooms:
                    stack.enter_context(room.lock)
                neighbours = self._neighbours_locked(user)
                for room in rooms:
                    self._remove_member_locked(user, room)
                self._deliver_once(Message("QUIT", [reason], user.prefix), neighbours)

    # -- helpers that expect World.lock (and the rooms' locks) to be held -----

    def _remove_member_locked(self, user: User, room: Room) -> None:
        del room.members[user]
        del user.rooms[room.key]
        if not room.members and not room.persistent:
            del self.rooms[room.key]

    @staticmethod
    def _neighbours_locked(user: User) -> dict[User, object]:
        """Everyone sharing a room with `user`, each once, `user` excluded."""
        seen: dict[User, object] = {}
        for room in user.rooms.values():
            seen.update(room.members)
        seen.pop(user, None)
        return seen

    @staticmethod
    def _deliver_once(msg: Message, recipients: Iterable[User]) -> None:
        wire = msg.to_bytes()
        for member in recipients:
            member.conn.send(msg, wire)
