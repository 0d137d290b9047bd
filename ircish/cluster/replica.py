"""A node's copy of the network: users of other nodes, and how a shared change and the
whole state travel through Redis as JSON.

Every node keeps the whole network in its `World`: its own users (with their
connections) and everyone else's, whose `RemoteConn` delivers nothing (their own node
delivers to them). A shared change (`ircish.world.shared`) travels as its method's name
and its arguments: a `User` by its uid (with its details the first times, before it is
registered), a `Room` by its name, a `Message` as its parts. A function argument (a
JOIN's answer builder) stays on the caller's node: only that node runs it.

A node that joins a running network loads the state another node had at one point of
the log (`export_state`, `load_state`) and applies the log from that point on.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
from typing import Any

from ircish import modes
from ircish.events import Event
from ircish.locks import held
from ircish.protocol import ERR_NOSUCHCHANNEL, ERR_NOSUCHNICK, IRCError, Message, casefold
from ircish.store import AccountState, MaskState, RoomState, ScramKeys, StoredLine
from ircish.world import Room, User, World


class RemoteConn:
    """The connection of a user on another node: that node delivers to them, so here
    every delivery is dropped."""

    __slots__ = ("node",)

    def __init__(self, node: str) -> None:
        self.node = node

    def deliver(self, event: Event, reply: bool = True) -> None:
        pass

    def send(self, msg: Message) -> None:
        pass

    def close(self, reason: str, error: str | None = None, flush: bool = True) -> None:
        pass

    def has_cap(self, name: str) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<RemoteConn {self.node}>"


#: The kept states a shared change may carry, by class name.
_STATE_TYPES = {cls.__name__: cls for cls in (AccountState, ScramKeys)}

#: What a user's record carries to other nodes before it is registered (its details are
#: set by its own reader thread until then; from registration on, only shared changes
#: change them).
_RECORD = ("username", "realname", "host", "signon", "bot", "server")


def node_of(uid: str) -> tuple[str, str]:
    """The (node, incarnation) a uid was made by: `node/incarnation/number`."""
    node, incarnation, _ = uid.split("/")
    return node, incarnation


class Codec:
    """Arguments to JSON and back, against one node's replica (`users`: uid -> User).
    `encode` runs on the calling thread; `decode` on the bus thread, in log order, so
    every node resolves a uid to the same user (or finds it gone) at the same point."""

    def __init__(self, world: World, node: str, incarnation: str) -> None:
        self.world = world
        self.node = node
        #: This node's life: new users' uids carry it (a node declared gone starts another).
        self.incarnation = incarnation
        self._numbers = itertools.count(1)
        #: Every user the log has named and not yet removed, by uid (bus thread only).
        self.users: dict[str, User] = {}
        #: This node's users named in an entry not yet applied (uid -> User): the entry
        #: that introduces one finds its real object here (`introduce`).
        self._local: dict[str, User] = {}

    # -- encoding (the caller's thread) -----------------------------------------------

    def encode(self, value: Any, local: list[Any]) -> Any:
        """`value` as JSON; functions go to `local` (kept on this node) by index."""
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if isinstance(value, User):
            if value.uid is None:  # named for the first time: one of this node's users
                value.uid = f"{self.node}/{self.incarnation}/{next(self._numbers)}"
                self._local[value.uid] = value
            out: dict[str, Any] = {"U": value.uid}
            if not value.registered:
                out["r"] = {key: getattr(value, key) for key in _RECORD}
                out["r"]["server"] = self.world.server_name  # (theirs: this node's)
            return out
        if isinstance(value, Room):
            return {"R": value.name}
        if isinstance(value, Message):
            return {"M": [value.command, list(value.params), value.prefix, dict(value.tags)]}
        if isinstance(value, modes.Change):
            return {"C": [value.adding, value.letter, value.arg]}
        if isinstance(value, bytes):
            return {"B": base64.b64encode(value).decode("ascii")}
        if type(value).__name__ in _STATE_TYPES:  # an account's state, its SCRAM keys
            fields = dataclasses.fields(value)
            return {
                "S": type(value).__name__,
                "v": [self.encode(getattr(value, f.name), local) for f in fields],
            }
        if callable(value) or (isinstance(value, tuple) and any(map(callable, value))):
            local.append(value)
            return {"X": len(local) - 1}
        if isinstance(value, tuple):
            return {"T": [self.encode(item, local) for item in value]}
        if isinstance(value, list):
            return {"L": [self.encode(item, local) for item in value]}
        if isinstance(value, dict):
            return {"D": [[key, self.encode(item, local)] for key, item in value.items()]}
        raise TypeError(f"a shared change cannot carry {type(value).__name__}: {value!r}")

    # -- decoding (the bus thread, in log order) ----------------------------------------

    def decode(self, value: Any, local: list[Any] | None, origin: User | None = None) -> Any:
        """JSON back to the replica's objects. `local`: this node's functions for an entry
        it wrote (None on the other nodes: such an argument is None there). Raises
        IRCError for a user or room that no longer exists (so on every node)."""
        if not isinstance(value, dict):
            return value
        if "U" in value:
            return self._user(value["U"], value.get("r"))
        if "R" in value:
            room = self.world.find_room(value["R"])
            if room is None:
                raise IRCError(ERR_NOSUCHCHANNEL, value["R"], "No such room")
            return room
        if "M" in value:
            command, params, prefix, tags = value["M"]
            return Message(command, params, prefix, tags)
        if "C" in value:
            return modes.Change(*value["C"])
        if "B" in value:
            return base64.b64decode(value["B"])
        if "S" in value:
            return _STATE_TYPES[value["S"]](*(self.decode(item, local) for item in value["v"]))
        if "X" in value:
            return None if local is None else local[value["X"]]
        if "T" in value:
            return tuple(self.decode(item, local) for item in value["T"])
        if "L" in value:
            return [self.decode(item, local) for item in value["L"]]
        if "D" in value:
            return {key: self.decode(item, local) for key, item in value["D"]}
        raise ValueError(f"not a shared value: {value!r}")

    def _user(self, uid: str, record: dict[str, Any] | None) -> User:
        user = self.users.get(uid)
        if user is None:
            if record is None:
                raise IRCError(ERR_NOSUCHNICK, "*", "No such nick (they left)")
            user = self._local.pop(uid, None) if node_of(uid)[0] == self.node else None
            if user is None:
                user = User(RemoteConn(node_of(uid)[0]), "")
                user.uid = uid
            self.users[uid] = user
        if record is not None and not user.registered:
            for key, item in record.items():
                setattr(user, key, item)
        return user

    def named(self, user: User) -> bool:
        """Whether the log has named `user` (or is about to): other nodes may know them."""
        return user.uid is not None and (user.uid in self.users or user.uid in self._local)

    def forget(self, user: User) -> None:
        """`user` left (their removal was applied): the log names them no more."""
        if user.uid is not None:
            self.users.pop(user.uid, None)

    def forget_all(self) -> list[User]:
        """Forget every user (a node starting again): this node's not yet named ones."""
        local = list(self._local.values())
        self.users, self._local = {}, {}
        return local

    # -- the whole state (a node joining) ---------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """Everything a joining node needs, as JSON: taken under World.lock and each room's
        lock, on the bus thread, between two entries."""
        world = self.world
        with world.lock:
            users = [self._export_user(user) for user in self.users.values()]
            rooms = []
            for room in world.rooms.values():
                with room.lock:
                    rooms.append(self._export_room(room))
            accounts = [self.encode(state, []) for state in world.accounts.all_states()]
            return {
                "users": users,
                "rooms": rooms,
                "peak": world._peak,
                "accounts": accounts,
                "private_seq": world._last_private_seq,
            }

    def _export_user(self, user: User) -> dict[str, Any]:
        out = {key: getattr(user, key) for key in _RECORD}
        out.update(
            uid=user.uid,
            nick=user.nick,
            registered=user.registered,
            invisible=user.invisible,
            away=user.away,
            oper=user.oper,
            oper_name=user.oper_name,
            wallops=user.wallops,
            account=user.account,
            rooms=list(user.rooms),
        )
        return out

    def _export_room(self, room: Room) -> dict[str, Any]:
        assert held(room.lock)
        state = dataclasses.asdict(room.state_locked())
        return {
            "state": state,
            "members": [[member.uid, status] for member, status in room.members.items()],
            "invited": [user.uid for user in room.invited],
            "window": [list(line) for line in room.window or ()],
            "seq": room.seq,
            "epoch": room.epoch,
            "oldest": room.oldest_epoch,
            "complete": room.window_complete,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace this node's (empty of people) world with `state` (at start, before
        anyone connects and before the bus runs)."""
        world = self.world
        with world.lock:
            users: dict[str, User] = {}
            for record in state["users"]:
                user = User(RemoteConn(node_of(record["uid"])[0]), "")
                for key, item in record.items():
                    if key != "rooms":
                        setattr(user, key, item)
                users[user.uid] = user  # type: ignore[index]
                if user.nick is not None:
                    world.users[casefold(user.nick)] = user
                if user.registered:
                    world._registered += 1
                    world._invisible += user.invisible
                    world._operators += user.oper
                    if user.wallops:
                        world._wallops.add(user)
            world._peak = max(world._peak, state["peak"])
            world._last_private_seq = max(world._last_private_seq, state["private_seq"])
            world.rooms.clear()
            for record in state["rooms"]:
                room = self._load_room(record, users)
                world.rooms[room.folded] = room
            for record in state["users"]:
                user = users[record["uid"]]
                user.rooms = {name: world.rooms[name] for name in record["rooms"]}
            self.users = users
        world.accounts.replace_all(self.decode(state, None) for state in state["accounts"])

    def _load_room(self, record: dict[str, Any], users: dict[str, User]) -> Room:
        saved = dict(record["state"])
        saved["lists"] = {
            letter: tuple(MaskState(**entry) for entry in entries)
            for letter, entries in saved["lists"].items()
        }
        state = RoomState(**saved)
        room = self.world._new_room(state.name)
        with room.lock:
            room.restore_locked(state, [StoredLine(*line) for line in record["window"]])
            if modes.PERMANENT not in state.flags:
                room.flags.discard(modes.PERMANENT)
            room.seq = record["seq"]
            room.epoch, room.oldest_epoch = record["epoch"], record["oldest"]
            room.window_complete = record["complete"]
            for uid, status in record["members"]:
                room.members[users[uid]] = status
            for uid in record["invited"]:
                room.invited.add(users[uid])
        return room
