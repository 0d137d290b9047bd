"""The store of a cluster: Redis, which every node of the network reads and writes.

History: one sorted set per target (`<prefix>:hist:<target>`), every member with score 0
and the line's place in front (its seq, zero-padded, so Redis orders the members as the
history is ordered and a seq range is a lexical range), then the line as JSON. A member is
the same text whichever node writes it, so a line written twice is kept once. A hash per
target maps msgids to seqs (`find`). The targets are listed in a set (retention,
`keep_only`), the private ones per account too (`private_targets`). Permanent rooms and
accounts are two hashes of JSON, the same shape as SQLite's (`room_json`, `account_json`).

Writes come from each node's writer thread, in pipelines (one round trip a batch); reads
from reader threads, holding no lock. A read that Redis cannot answer raises
`redis.RedisError`, as a SQLite read raises `sqlite3.Error`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ircish.protocol import casefold
from ircish.store import (
    ANONYMOUS,
    AccountState,
    Query,
    RoomState,
    StoredLine,
    account_from_json,
    account_json,
    is_private_target,
    private_target,
    room_from_json,
    room_json,
)

log = logging.getLogger(__name__)

#: Digits of a seq in a member's key (private seqs are nanoseconds: 19 digits).
SEQ_DIGITS = 20
#: Connections to Redis at most (reader threads and the writer share them).
CONNECTIONS = 8
#: Members a read takes from Redis at a time while it filters (commands, times).
PAGE = 200


def redis_client(url: str, timeout: float, connections: int) -> redis.Redis:
    """A client of the Redis at `url` with at most `connections` connections; a thread that
    finds them all busy waits for one (up to `timeout`). No retries inside redis-py: a
    write sent again after a timeout could be made twice (an XADD in the log twice), and a
    timeout must reach the user within `timeout`, not ten tries later."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    return redis.Redis(connection_pool=pool)


def _key(seq: int) -> str:
    return f"{seq:0{SEQ_DIGITS}d}"


def _member(line: StoredLine) -> str:
    data = [
        line.msgid,
        line.time,
        line.command,
        line.prefix,
        list(line.params),
        line.tags,
        line.account,
        line.epoch,
    ]
    return _key(line.seq) + json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _line(target: str, member: str) -> StoredLine:
    msgid, when, command, prefix, params, tags, account, epoch = json.loads(member[SEQ_DIGITS:])
    return StoredLine(
        target,
        msgid,
        when,
        command,
        prefix,
        tuple(params),
        tags,
        account,
        int(member[:SEQ_DIGITS]),
        epoch,
    )


class RedisStore:
    """`Store` on Redis (see the module docstring). `prefix` starts every key."""

    #: Redis cannot be reached just now (restarting, a network blip): the writer tries
    #: again. Every write here can be made twice (a line is a set member, a state a field).
    unreachable = (redis.ConnectionError, redis.TimeoutError)

    def __init__(self, url: str, prefix: str = "ircish", timeout: float = 5.0) -> None:
        self._prefix = prefix
        # A few connections whatever the number of reader threads (a waiting reader waits
        # for one, as for SQLite's pool).
        self._redis = redis_client(url, timeout, CONNECTIONS)
        self._redis.ping()  # a wrong URL or a Redis that is not there fails the start

    def _k(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    # -- writing (the writer thread) --------------------------------------------------

    def append(self, lines: list[StoredLine]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        for line in lines:
            pipe.zadd(self._k("hist", line.target), {_member(line): 0})
            pipe.hset(self._k("msgids", line.target), line.msgid, line.seq)
            pipe.sadd(self._k("targets"), line.target)
            if is_private_target(line.target):
                for party in line.target.split(" "):
                    pipe.sadd(self._k("private", party), line.target)
        pipe.execute()

    def forget(self, target: str, epoch: int) -> None:
        members = self._redis.zrange(self._k("hist", target), 0, -1)
        gone = [member for member in members if _line(target, member).epoch <= epoch]
        if len(gone) == len(members):
            self._drop(target)
        elif gone:
            self._redis.zrem(self._k("hist", target), *gone)
            self._redis.hdel(self._k("msgids", target), *(_line(target, m).msgid for m in gone))

    def _drop(self, target: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._k("hist", target), self._k("msgids", target))
        pipe.srem(self._k("targets"), target)
        pipe.execute()

    def keep_only(self, targets: Iterable[str]) -> None:
        keep = set(targets)
        for target in self._redis.smembers(self._k("targets")):
            if target not in keep and not is_private_target(target):
                self._drop(target)

    def prune(self, max_lines: int, since: int | None) -> None:
        for target in self._redis.smembers(self._k("targets")):
            key = self._k("hist", target)
            extra = self._redis.zcard(key) - max_lines
            gone = self._redis.zrange(key, 0, extra - 1) if extra > 0 else []
            if since is not None:  # oldest first: stop at the first line young enough
                start = len(gone)
                while True:
                    page = self._redis.zrange(key, start, start + PAGE - 1)
                    old = [m for m in page if _line(target, m).time < since]
                    gone += old
                    if len(old) < len(page) or not page:
                        break
                    start += PAGE
            if gone:
                pipe = self._redis.pipeline(transaction=True)
                pipe.zrem(key, *gone)
                pipe.hdel(self._k("msgids", target), *(_line(target, m).msgid for m in gone))
                pipe.execute()
            if not self._redis.exists(key):
                self._redis.srem(self._k("targets"), target)
                if is_private_target(target):
                    for party in target.split(" "):
                        self._redis.srem(self._k("private", party), target)

    def save_room(self, state: RoomState) -> None:
        self._redis.hset(self._k("rooms"), casefold(state.name), json.dumps(room_json(state)))

    def drop_room(self, name: str) -> None:
        self._redis.hdel(self._k("rooms"), name)

    def save_account(self, state: AccountState) -> None:
        self._redis.hset(self._k("accounts"), casefold(state.name), json.dumps(account_json(state)))

    def drop_account(self, name: str) -> None:
        # As in SQLite: the dropped side's history goes; a conversation with another
        # account stays that account's, filed as with the nick `~name` (someone not logged
        # in), so whoever registers the name later reads none of it.
        for target in self._redis.smembers(self._k("private", name)):
            first, _, second = target.partition(" ")
            other = second if first == name else first
            self._redis.srem(self._k("private", other), target)
            if other == name or other.startswith(ANONYMOUS):
                self._drop(target)
                continue
            kept = private_target(other, ANONYMOUS + name)
            ids = self._redis.hgetall(self._k("msgids", target))
            pipe = self._redis.pipeline(transaction=True)
            hist = [self._k("hist", kept), self._k("hist", target)]
            pipe.zunionstore(hist[0], hist)
            if ids:
                pipe.hset(self._k("msgids", kept), mapping=ids)
            pipe.sadd(self._k("targets"), kept)
            pipe.sadd(self._k("private", other), kept)
            pipe.execute()
            self._drop(target)
        self._redis.delete(self._k("private", name))
        self._redis.hdel(self._k("accounts"), name)

    # -- reading (any thread, holding no lock) -----------------------------------------

    def select(self, target: str, query: Query) -> list[StoredLine]:
        key = self._k("hist", target)
        low = "-" if query.after_seq is None else "[" + _key(query.after_seq + 1)
        high = "+" if query.before_seq is None else "(" + _key(query.before_seq)
        found: list[StoredLine] = []
        offset = 0
        while len(found) < query.limit:
            if query.newest:
                page = self._redis.zrevrangebylex(key, high, low, offset, PAGE)
            else:
                page = self._redis.zrangebylex(key, low, high, offset, PAGE)
            found += [line for line in (_line(target, m) for m in page) if query.admits(line)]
            if len(page) < PAGE:
                break
            offset += PAGE
        found = found[: query.limit]
        if query.newest:
            found.reverse()
        return found

    def find(self, target: str, msgid: str) -> StoredLine | None:
        seq = self._redis.hget(self._k("msgids", target), msgid)
        if seq is None:
            return None
        members = self._redis.zrangebylex(
            self._k("hist", target), "[" + _key(int(seq)), "(" + _key(int(seq) + 1)
        )
        lines = [_line(target, member) for member in members]
        return next((line for line in lines if line.msgid == msgid), None)

    def rooms(self) -> list[RoomState]:
        return _load(self._redis.hgetall(self._k("rooms")), room_from_json, "room")

    def accounts(self) -> list[AccountState]:
        return _load(self._redis.hgetall(self._k("accounts")), account_from_json, "account")

    def private_targets(self, account: str) -> list[tuple[str, int]]:
        out = []
        for target in sorted(self._redis.smembers(self._k("private", account))):
            newest = self._redis.zrange(self._k("hist", target), -1, -1)
            if newest:
                out.append((target, _line(target, newest[0]).time))
        return out

    def close(self) -> None:
        self._redis.close()


def _load(saved: dict[str, str], read: Any, kind: str) -> list[Any]:
    """Every kept state that can be read; one that cannot is logged and left out (one
    unreadable room must not keep the server from starting), as in SQLite."""
    states = []
    for name in sorted(saved):
        try:
            states.append(read(json.loads(saved[name])))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("store: %s %s cannot be read (%s); left out", kind, name, exc)
    return states
