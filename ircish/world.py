"""Shared chat state: the nick table, the room table, rooms and user records.

`World` owns who is online and which rooms exist; each `Room` owns its member
set and topic. All fan-out goes through `Room` and `World` methods, so nothing
else needs to know how delivery works.

Lock order (a thread may take a later lock while holding an earlier one,
never the reverse):

    World.lock  ->  Room.lock  ->  Connection outbox lock  ->  TlsTransport._lock

- `World.lock` guards the nick table, the room table and every `User.rooms`.
  Joining and leaving take it, so creating a room on first join and deleting
  it on last leave is one atomic step.
- `Room.lock` guards `members` and the topic. A room broadcast enqueues to
  every member while holding it, so all members see one room's messages in the
  same order. Several room locks at once only while holding `World.lock`
  (nick change, quit), which makes their order irrelevant.
- The outbox lock: `Connection.send` only appends to a queue under it.
- `TlsTransport._lock` (ircish/tls.py, TLS connections only) guards the SSL
  object; it is last in the order (no code holds it with another lock) and is
  never held while waiting.
- `Server.connections_lock` (ircish/server.py) is taken alone.
No socket I/O and no blocking call happens under any of these locks.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Protocol

from ircish.protocol import Message, casefold

if TYPE_CHECKING:
    from collections.abc import Iterable


class Deliverer(Protocol):
    """What a user record needs from its connection: a non-blocking send."""

    def send(self, msg: Message, wire: bytes | None = None) -> None: ...


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


class Room:
    """A room: its members, topic and lock. `broadcast` is the one fan-out path."""

    def __init__(self, name: str, topic: str = "", persistent: bool = False) -> None:
        self.name = name
        self.key = casefold(name)
        self.lock = threading.Lock()
        self.members: dict[User, None] = {}  # insertion-ordered set
        self.topic = topic
        self.topic_setter = "" if not topic else "server"
        self.topic_time = int(time.time()) if topic else 0
        self.created = int(time.time())
        #: Rooms from the config outlive their last member.
        self.persistent = persistent

    def broadcast_locked(self, msg: Message, exclude: User | None = None) -> None:
        """Enqueue `msg` to every member but `exclude`. Caller holds self.lock."""
        wire = msg.to_bytes()
        for member in self.members:
            if member is not exclude:
                member.conn.send(msg, wire)

    def send_from(self, sender: User, msg: Message) -> bool:
        """Relay a member's message to the others; False if `sender` is not a member."""
        with self.lock:
            if sender not in self.members:
                return False
            self.broadcast_locked(msg, exclude=sender)
            return True

    def set_topic(self, setter: User, topic: str) -> bool:
        """Change the topic and tell the room; False if `setter` is not a member."""
        with self.lock:
            if setter not in self.members:
                return False
            self.topic = topic
            self.topic_setter = setter.prefix
            self.topic_time = int(time.time())
            self.broadcast_locked(Message("TOPIC", [self.name, topic], setter.prefix))
            return True

    def snapshot(self) -> tuple[list[User], str, str, int]:
        """Members, topic, topic setter and time, read consistently."""
        with self.lock:
            return list(self.members), self.topic, self.topic_setter, self.topic_time

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

    def counts(self) -> tuple[int, int, int]:
        """(users, invisible users, rooms): kept as counters, since every
        registration asks (LUSERS) and a scan would make that O(users)."""
        with self.lock:
            return self._registered, self._invisible, len(self.rooms)

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
        """Change a registered user's nick; tell them and everyone sharing a room, once."""
        key = casefold(new_nick)
        with self.lock:
            holder = self.users.get(key)
            if holder is not None and holder is not user:
                return False
            msg = Message("NICK", [new_nick], user.prefix)
            with ExitStack() as stack:
                for room in user.rooms.values():
                    stack.enter_context(room.lock)
                del self.users[casefold(user.nick)]
                self.users[key] = user
                # Delivered before the rename so the user's own text session
                # renders it as "You are now known as ...".
                self._deliver_once(msg, self._neighbours_locked(user) | {user: None})
                user.nick = new_nick
            return True

    # -- rooms ----------------------------------------------------------------

    def join(self, user: User, name: str) -> Room | None:
        """Add `user` to room `name`, creating it; tell the room. None if already in."""
        key = casefold(name)
        with self.lock:
            room = self.rooms.get(key)
            if room is None:
                room = self.rooms[key] = Room(name)
            with room.lock:
                if user in room.members:
                    return None
                room.members[user] = None
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

    def remove_user(self, user: User, reason: str) -> None:
        """A user leaves the server: drop them everywhere, tell each neighbour once."""
        with self.lock:
            if user.nick is not None and self.users.get(casefold(user.nick)) is user:
                del self.users[casefold(user.nick)]
                if user.registered:
                    self._registered -= 1
                    self._invisible -= user.invisible
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
    def _neighbours_locked(user: User) -> dict[User, None]:
        """Everyone sharing a room with `user`, each once, `user` excluded."""
        seen: dict[User, None] = {}
        for room in user.rooms.values():
            seen.update(room.members)
        seen.pop(user, None)
        return seen

    @staticmethod
    def _deliver_once(msg: Message, recipients: Iterable[User]) -> None:
        wire = msg.to_bytes()
        for member in recipients:
            member.conn.send(msg, wire)
