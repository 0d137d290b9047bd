"""History (issue 13) over real sockets: CHATHISTORY (IRCv3 draft/chathistory) with its
subcommands, references, batches, refusals and ISUPPORT; draft/event-playback; the replay a
joiner whose client cannot ask is shown; retention, the store behind a room's window, and
a room that ends taking its history with it; one order, live and from history.

Times in `timestamp=` references are copied from the `time` tags of the live echoes (as a
client does): `say` lets the clock pass the millisecond of each line before the next one,
so every line has a time of its own and such references are unambiguous. The store is
written behind the room (store.flush_ms); a test that reads through it polls until the
answer is complete."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    OPER_PASSWORD,
    SERVER,
    TIMEOUT,
    Client,
    Harness,
    capped,
    make_config,
    oper_config,
    prefix,
    settle,
    wait_for,
)

from ircish import protocol as p
from ircish.config import HistoryConfig, RoomConfig, StoreConfig
from ircish.events import millis, parse_time_tag
from ircish.protocol import Message, parse
from ircish.server import Server
from ircish.store import StoredLine
from ircish.store.sqlite import SqliteStore
from ircish.store.writer import DEFAULT_BATCH

Connect = Callable[..., Client]
StartServer = Callable[..., Server]

#: What a client that reads history takes (irctest's chathistory tests ask for the same).
READER_CAPS = ("message-tags", "server-time", "echo-message", "batch", "draft/chathistory")
#: A room's messages: what history gives without draft/event-playback.
MESSAGE_COMMANDS = {"PRIVMSG", "NOTICE"}
ROOM = "#r"


# -- helpers -------------------------------------------------------------------------------


def reader(
    connect: Connect, nick: str, *extra_caps: str, room: str = ROOM, target: Server | None = None
) -> Client:
    """A client with READER_CAPS (and `extra_caps`) in `room`, all it was sent dropped."""
    client = capped(connect, nick, *READER_CAPS, *extra_caps, target=target)
    client.join(room)
    settle(client)
    return client


def now_ms() -> int:
    return millis(time.time())


def said_ms(msg: Message) -> int:
    when = parse_time_tag(msg.tags["time"])
    assert when is not None, msg
    return when


def say(client: Client, room: str, text: str, tags: str = "") -> Message:
    """`client` (with echo-message) says `text` in `room` (`tags`: `@...` before it): its
    echo, once the clock has passed the echo's millisecond (the next line's time is later)."""
    client.send(f"{tags}PRIVMSG {room} :{text}")
    echo = parse(client.expect(rf" PRIVMSG {re.escape(room)} :{re.escape(text)}$").string)
    clock_past(said_ms(echo))
    return echo


def clock_past(ms: int) -> None:
    """Poll the clock (the server's: same process) until it is past millisecond `ms`;
    finer than wait_for's 10 ms steps, as it is done once per line said."""
    deadline = time.monotonic() + 1.0
    while now_ms() <= ms:
        assert time.monotonic() < deadline, "the clock did not move"
        time.sleep(0.0002)


def say_lines(client: Client, count: int, room: str = ROOM, word: str = "line") -> list[Message]:
    return [say(client, room, f"{word} {n}") for n in range(count)]


def iso(ms: int) -> str:
    """A time in whole milliseconds as a `time` tag writes it."""
    seconds, rest = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest:03d}Z"


def ref(kind: str, msg: Message) -> str:
    """A CHATHISTORY reference to `msg`: `msgid=` or `timestamp=`."""
    if kind == "msgid":
        return f"msgid={msg.tags['msgid']}"
    return f"timestamp={msg.tags['time']}"


def answer(client: Client, line: str) -> list[Message]:
    """Everything the server sends `client` in answer to `line`."""
    client.send(line)
    return client.messages()


def unbatch(replies: list[Message]) -> tuple[tuple[str, ...], list[Message]]:
    """`replies`, which must be one batch and nothing else: its type and parameters, and
    the lines in it (each checked to carry the batch's tag)."""
    assert len(replies) >= 2, replies
    start, *inner, end = replies
    assert start.command == "BATCH" and start.params[0].startswith("+"), replies
    name = start.params[0][1:]
    assert (end.command, tuple(end.params)) == ("BATCH", (f"-{name}",)), replies
    assert all(msg.tags.get("batch") == name for msg in inner), inner
    return tuple(start.params[1:]), inner


def history(client: Client, request: str) -> list[Message]:
    """The lines of the `chathistory` batch that answers `CHATHISTORY <request>`, whose
    batch names the target as the request wrote it."""
    header, lines = unbatch(answer(client, f"CHATHISTORY {request}"))
    assert header == ("chathistory", request.split()[1]), header
    return lines


def texts(lines: list[Message]) -> list[str]:
    return [msg.params[-1] for msg in lines]


def seen(msg: Message) -> tuple[object, ...]:
    """What history must keep of a line: command, source, parameters, msgid, time and the
    client tags (not the batch tag)."""
    tags = {key: value for key, value in msg.tags.items() if key != "batch"}
    return (msg.command, msg.prefix, tuple(msg.params), tags)


def fail(replies: list[Message]) -> tuple[str, ...]:
    """The parameters of the one FAIL that is the whole answer (its text left out)."""
    assert [msg.command for msg in replies] == ["FAIL"], replies
    return tuple(replies[0].params[:-1])


def isupport(client: Client) -> list[str]:
    """The ISUPPORT tokens of a fresh registration of `client`."""
    client.send_registration("isup")
    lines = client.collect_until(r" (376|422) ")
    return [
        token
        for msg in map(parse, lines)
        if msg.command == p.RPL_ISUPPORT
        for token in msg.params[1:-1]
    ]


def poll_history(client: Client, request: str, want: list[str]) -> list[Message]:
    """The answer to `request`, which must be `want` at once: the store lags behind the
    window by design, but a room's window keeps every line the store has not written
    (see test_an_answer_has_no_hole_while_the_store_lags), so no answer misses one."""
    got = history(client, request)
    assert texts(got) == want
    return got


@pytest.fixture
def disk(tmp_path: Path) -> StoreConfig:
    """A store in a file (as examples/config.yaml keeps one), written every 10 ms."""
    return StoreConfig(path=str(tmp_path / "ircish.db"), flush_ms=10)


@pytest.fixture
def talk(connect: Connect) -> tuple[Client, list[Message]]:
    """alice, a history reader in #r, has said `line 0` ... `line 9` (the echoes)."""
    alice = reader(connect, "alice")
    return alice, say_lines(alice, 10)


def line_range(start: int, stop: int) -> list[str]:
    return [f"line {n}" for n in range(start, stop)]


# -- LATEST, BEFORE, AFTER, BETWEEN, AROUND --------------------------------------------------


def test_latest_star_gives_the_newest_lines_oldest_first(talk) -> None:
    alice, _ = talk
    assert texts(history(alice, f"LATEST {ROOM} * 3")) == line_range(7, 10)
    assert texts(history(alice, f"LATEST {ROOM} * 100")) == line_range(0, 10)


@pytest.mark.parametrize("kind", ["msgid", "timestamp"])
def test_latest_after_a_reference_gives_the_newest_lines_after_it(talk, kind: str) -> None:
    alice, said = talk
    assert texts(history(alice, f"LATEST {ROOM} {ref(kind, said[5])} 2")) == line_range(8, 10)
    assert texts(history(alice, f"LATEST {ROOM} {ref(kind, said[5])} 100")) == line_range(6, 10)


@pytest.mark.parametrize("kind", ["msgid", "timestamp"])
def test_before_gives_the_lines_closest_to_the_reference(talk, kind: str) -> None:
    alice, said = talk
    assert texts(history(alice, f"BEFORE {ROOM} {ref(kind, said[5])} 3")) == line_range(2, 5)
    assert texts(history(alice, f"BEFORE {ROOM} {ref(kind, said[5])} 100")) == line_range(0, 5)


@pytest.mark.parametrize("kind", ["msgid", "timestamp"])
def test_after_gives_the_lines_right_after_the_reference(talk, kind: str) -> None:
    alice, said = talk
    assert texts(history(alice, f"AFTER {ROOM} {ref(kind, said[5])} 3")) == line_range(6, 9)
    assert texts(history(alice, f"AFTER {ROOM} {ref(kind, said[5])} 100")) == line_range(6, 10)


@pytest.mark.parametrize(
    ("first", "second"), [("msgid", "msgid"), ("timestamp", "timestamp"), ("msgid", "timestamp")]
)
def test_between_forwards_and_backwards(talk, first: str, second: str) -> None:
    alice, said = talk
    early, late = ref(first, said[2]), ref(second, said[8])
    # Forwards (the earlier reference first): the first `limit` after it.
    assert texts(history(alice, f"BETWEEN {ROOM} {early} {late} 3")) == line_range(3, 6)
    # Backwards: the last `limit` before the later one; still oldest first.
    late, early = ref(first, said[8]), ref(second, said[2])
    assert texts(history(alice, f"BETWEEN {ROOM} {late} {early} 3")) == line_range(5, 8)
    # Both bounds are exclusive.
    for request in (f"BETWEEN {ROOM} {early} {late} 100", f"BETWEEN {ROOM} {late} {early} 100"):
        assert texts(history(alice, request)) == line_range(3, 8)


@pytest.mark.parametrize("kind", ["msgid", "timestamp"])
def test_around_puts_half_the_limit_before_the_reference_and_includes_it(talk, kind: str) -> None:
    alice, said = talk
    assert texts(history(alice, f"AROUND {ROOM} {ref(kind, said[7])} 1")) == ["line 7"]
    assert texts(history(alice, f"AROUND {ROOM} {ref(kind, said[7])} 3")) == line_range(6, 9)
    assert texts(history(alice, f"AROUND {ROOM} {ref(kind, said[7])} 5")) == line_range(5, 10)


# -- TARGETS ---------------------------------------------------------------------------------


def test_targets_lists_my_rooms_by_the_time_of_their_latest_message(connect: Connect) -> None:
    alice = reader(connect, "alice", room="#a")
    for room in ("#b", "#c"):
        alice.join(room)
    bob = capped(connect, "bob", "echo-message", "server-time")
    bob.join("#d")
    settle(alice, bob)
    start = now_ms() - 1
    say(alice, "#c", "c 1")
    say(alice, "#a", "a 1")
    last_c = say(alice, "#c", "c 2")
    say(bob, "#d", "d 1")  # not alice's room: never listed for her
    last_b = say(alice, "#b", "b 1")
    last_a = say(alice, "#a", "a 2")
    end = now_ms() + 1000

    def targets(low: int | str, high: int | str, limit: int) -> list[tuple[str, ...]]:
        low = iso(low) if isinstance(low, int) else low
        high = iso(high) if isinstance(high, int) else high
        header, lines = unbatch(
            answer(alice, f"CHATHISTORY TARGETS timestamp={low} timestamp={high} {limit}")
        )
        assert header == ("draft/chathistory-targets",)
        assert {(msg.command, msg.prefix) for msg in lines} <= {("CHATHISTORY", SERVER)}
        return [tuple(msg.params) for msg in lines]

    every = [
        ("TARGETS", "#c", last_c.tags["time"]),
        ("TARGETS", "#b", last_b.tags["time"]),
        ("TARGETS", "#a", last_a.tags["time"]),
    ]
    assert targets(start, end, 10) == every
    assert targets(start, end, 2) == every[:2]
    # Exclusive bounds: a room whose latest message is at a bound is left out.
    assert targets(last_c.tags["time"], last_a.tags["time"], 10) == every[1:2]
    assert targets(end, end + 1000, 10) == []


# -- the reply: a batch of the lines as they were relayed --------------------------------------


def test_history_lines_are_the_live_lines_in_a_batch_naming_the_target_as_written(
    connect: Connect,
) -> None:
    alice = reader(connect, "alice")
    bob = reader(connect, "bob")
    first = say(alice, ROOM, "hello")
    reply = say(alice, ROOM, "a reply", tags=f"@+draft/reply={first.tags['msgid']} ")
    said = [first, reply, say(alice, ROOM, "bye")]
    live = [msg for msg in bob.messages() if msg.command == "PRIVMSG"]
    assert [seen(msg) for msg in live] == [seen(msg) for msg in said]
    assert said[1].tags["+draft/reply"] == first.tags["msgid"]
    # The room is #r; the batch names it #R, as the request did.
    lines = history(bob, "LATEST #R * 10")
    assert [seen(msg) for msg in lines] == [seen(msg) for msg in said]
    assert lines[0].prefix == prefix("alice")


def test_nothing_to_give_is_an_empty_batch(talk) -> None:
    alice, said = talk
    assert history(alice, f"AFTER {ROOM} {ref('msgid', said[-1])} 10") == []
    assert history(alice, f"BEFORE {ROOM} {ref('msgid', said[0])} 10") == []
    # A msgid nobody knows: nothing around it.
    for sub in ("BEFORE", "AFTER", "AROUND", "LATEST"):
        assert history(alice, f"{sub} {ROOM} msgid=nosuchid 10") == []
    alice.join("#quiet")
    settle(alice)
    assert history(alice, "LATEST #quiet * 10") == []


# -- draft/event-playback -------------------------------------------------------------------


def test_event_playback_gives_every_kind_of_room_line_and_without_it_only_messages(
    connect: Connect,
) -> None:
    alice = reader(connect, "alice", "draft/event-playback")
    erin = reader(connect, "erin")  # no draft/event-playback
    bob = capped(connect, "bob", "message-tags")
    carol = connect("carol")
    dave = connect("dave")
    for client in (bob, carol, dave):
        client.join(ROOM)
    joins = alice.messages()  # erin's, bob's, carol's and dave's
    hello = say(alice, ROOM, "hello")
    actions = [
        (alice, f"TOPIC {ROOM} :a topic"),
        (alice, f"MODE {ROOM} +v bob"),
        (bob, f"@+typing=active TAGMSG {ROOM}"),  # over in seconds: not kept
        (bob, f"@+draft/reply={hello.tags['msgid']};+draft/react=yes TAGMSG {ROOM}"),
        (bob, f"NOTICE {ROOM} :a notice"),
        (bob, "NICK bobby"),
        (alice, f"KICK {ROOM} bobby :out"),
        (dave, f"PART {ROOM} :bye"),
        (carol, "QUIT :gone"),
    ]
    live = []
    for client, line in actions:
        client.send(line)
        if client is carol:
            carol.expect_closed()
        elif client is not alice:
            client.sync()  # handled: what alice is sent of it is queued before her PONG
        live += [msg for msg in alice.messages() if msg.command.isalpha()]
    live = [msg for msg in live if msg.tags.get("+typing") is None]
    lines = history(alice, f"LATEST {ROOM} * 100")
    assert [msg.command for msg in lines] == [
        *["JOIN"] * 5,  # alice, erin, bob, carol, dave
        "PRIVMSG",
        "TOPIC",
        "MODE",
        "TAGMSG",
        "NOTICE",
        "NICK",
        "KICK",
        "PART",
        "QUIT",
    ]
    # Each as it was relayed: the same msgid, time, source, parameters and client tags
    # (alice's own JOIN came before she could see tags on it).
    assert seen(lines[0])[:3] == ("JOIN", prefix("alice"), (ROOM,))
    assert [seen(msg) for msg in lines[1:]] == [seen(msg) for msg in [*joins, hello, *live]]
    assert lines[8].tags["+draft/reply"] == hello.tags["msgid"]
    # Without draft/event-playback: the messages alone.
    settle(erin)
    assert [seen(msg) for msg in history(erin, f"LATEST {ROOM} * 100")] == [
        seen(msg) for msg in lines if msg.command in MESSAGE_COMMANDS
    ]


# -- who may read ------------------------------------------------------------------------------


@pytest.mark.parametrize("modes", ["", "+s", "+k sesame"])
def test_a_non_member_is_told_the_room_is_an_invalid_target(connect: Connect, modes: str) -> None:
    alice = reader(connect, "alice")
    if modes:
        alice.send(f"MODE {ROOM} {modes}")
    said = say(alice, ROOM, "members only")
    bob = capped(connect, "bob", *READER_CAPS)
    for request in (f"LATEST {ROOM} * 10", f"AROUND {ROOM} {ref('msgid', said)} 10"):
        sub = request.split()[0]
        replies = answer(bob, f"CHATHISTORY {request}")
        assert fail(replies) == ("CHATHISTORY", "INVALID_TARGET", sub, ROOM)
        assert "members only" not in str(replies)


def test_a_room_that_does_not_exist_is_an_invalid_target(connect: Connect) -> None:
    bob = capped(connect, "bob", *READER_CAPS)
    replies = answer(bob, "CHATHISTORY LATEST #nowhere * 10")
    assert fail(replies) == ("CHATHISTORY", "INVALID_TARGET", "LATEST", "#nowhere")


def test_a_server_operator_outside_the_room_is_refused_too(
    start_server: StartServer, connect: Connect
) -> None:
    server = start_server(oper_config())
    alice = reader(connect, "alice", target=server)
    say(alice, ROOM, "members only")
    root = capped(connect, "root", *READER_CAPS, target=server)
    root.send(f"OPER root :{OPER_PASSWORD}")
    root.expect(rf" {p.RPL_YOUREOPER} root ")
    replies = answer(root, f"CHATHISTORY LATEST {ROOM} * 10")
    assert fail(replies) == ("CHATHISTORY", "INVALID_TARGET", "LATEST", ROOM)


def test_a_line_for_the_room_operators_only_is_not_history(connect: Connect) -> None:
    alice = reader(connect, "alice")
    bob = reader(connect, "bob")
    alice.send(f"PRIVMSG @{ROOM} :ops only")
    alice.sync()
    say(alice, ROOM, "for everyone")
    settle(bob)
    for client in (alice, bob):
        assert texts(history(client, f"LATEST {ROOM} * 10")) == ["for everyone"]


# -- refusals, limits and what the server announces --------------------------------------------


@pytest.mark.parametrize(
    ("request_", "code", "params"),
    [
        (f"FOO {ROOM} * 10", "INVALID_PARAMS", ("FOO",)),
        (f"LATEST {ROOM} *", "INVALID_PARAMS", ("LATEST",)),
        (f"LATEST {ROOM} * 10 11", "INVALID_PARAMS", ("LATEST",)),
        (f"BETWEEN {ROOM} * 10", "INVALID_PARAMS", ("BETWEEN",)),
        (f"LATEST {ROOM} * 0", "INVALID_PARAMS", ("LATEST", "0")),
        (f"LATEST {ROOM} * -1", "INVALID_PARAMS", ("LATEST", "-1")),
        (f"LATEST {ROOM} * abc", "INVALID_PARAMS", ("LATEST", "abc")),
        (f"BEFORE {ROOM} timestamp=yesterday 10", "INVALID_PARAMS", ("BEFORE",)),
        (f"LATEST {ROOM} foo=bar 10", "INVALID_MSGREFTYPE", ("LATEST",)),
        (f"AFTER {ROOM} foo=bar 10", "INVALID_MSGREFTYPE", ("AFTER",)),
        # str.isdigit() takes a superscript two for a digit, int() does not.
        (f"LATEST {ROOM} * \N{SUPERSCRIPT TWO}", "INVALID_PARAMS", ("LATEST",)),
    ],
)
def test_a_malformed_request_fails(
    connect: Connect, request_: str, code: str, params: tuple[str, ...]
) -> None:
    alice = reader(connect, "alice")
    got = fail(answer(alice, f"CHATHISTORY {request_}"))
    assert got[:2] == ("CHATHISTORY", code)
    assert got[2 : 2 + len(params)] == params


def test_a_limit_above_chathistory_max_is_cut_to_it(
    start_server: StartServer, connect: Connect
) -> None:
    server = start_server(make_config(history=HistoryConfig(chathistory_max=4)))
    alice = reader(connect, "alice", target=server)
    say_lines(alice, 6)
    assert texts(history(alice, f"LATEST {ROOM} * 100")) == line_range(2, 6)


def test_isupport_and_cap_ls_announce_history(start_server: StartServer, connect: Connect) -> None:
    server = start_server(make_config(history=HistoryConfig(chathistory_max=77)))
    client = connect(target=server)
    client.send("CAP LS 302")
    offered = parse(client.expect(rf"^:{SERVER} CAP \* LS :").string).params[-1].split()
    client.send("CAP END")
    assert {"draft/chathistory", "draft/event-playback"} <= set(offered)
    tokens = isupport(client)
    assert "CHATHISTORY=77" in tokens
    assert "MSGREFTYPES=timestamp,msgid" in tokens


def test_with_history_off_nothing_announces_it(start_server: StartServer, connect: Connect) -> None:
    server = start_server(make_config(history=HistoryConfig(max_lines=0)))
    client = connect(target=server)
    client.send("CAP LS 302")
    offered = parse(client.expect(rf"^:{SERVER} CAP \* LS :").string).params[-1].split()
    assert "echo-message" in offered  # the list was read
    assert not {"draft/chathistory", "draft/event-playback"} & set(offered)
    client.send("CAP END")
    tokens = isupport(client)
    assert not [token for token in tokens if token.startswith(("CHATHISTORY", "MSGREFTYPES"))]
    assert "WHOX" in tokens  # the ISUPPORT lines were read


# -- replay on join ----------------------------------------------------------------------------


#: A replayed line's stamp for a client without server-time: `[HH:MM UTC] `, with the date
#: before the time when it was not said today.
STAMP = r"\[(?:\d{4}-\d\d-\d\d )?{hhmm} UTC\] "


def stamp_for(msg_or_ms: Message | int) -> str:
    ms = msg_or_ms if isinstance(msg_or_ms, int) else said_ms(msg_or_ms)
    return STAMP.replace("{hhmm}", time.strftime("%H:%M", time.gmtime(ms // 1000)))


@pytest.fixture
def replaying(start_server: StartServer, connect: Connect) -> tuple[Server, list[Message]]:
    """A server that replays 3 lines on join; alice has said `line 0` ... `line 4` in #r,
    with a topic change among them (not a message: never replayed)."""
    server = start_server(make_config(history=HistoryConfig(replay_on_join=3)))
    alice = reader(connect, "alice", target=server)
    said = say_lines(alice, 3)
    alice.send(f"TOPIC {ROOM} :a topic")
    said += [say(alice, ROOM, f"line {n}") for n in (3, 4)]
    return server, said


def join_and_after_names(client: Client, room: str = ROOM) -> list[str]:
    """JOIN `room`: the lines that come after the end of its NAMES."""
    client.send(f"JOIN {room}")
    client.expect(rf" {p.RPL_ENDOFNAMES} {client.nick} {re.escape(room)} ")
    return client.sync()


def test_a_plain_client_is_shown_the_last_lines_between_two_notices(
    replaying, connect: Connect
) -> None:
    server, said = replaying
    bob = connect("bob", target=server)
    after = join_and_after_names(bob)
    assert len(after) == 5, after
    assert after[0] == f":{SERVER} NOTICE {ROOM} :-- 3 earlier messages in {ROOM} --"
    for line, msg in zip(after[1:4], said[2:], strict=True):
        text = re.escape(msg.params[-1])
        assert re.fullmatch(
            rf":{re.escape(prefix('alice'))} PRIVMSG {ROOM} :{stamp_for(msg)}{text}", line
        ), line
    assert after[4] == f":{SERVER} NOTICE {ROOM} :-- now --"


def test_a_client_with_server_time_gets_the_lines_own_times_as_tags(
    replaying, connect: Connect
) -> None:
    server, said = replaying
    bob = capped(connect, "bob", "server-time", target=server)
    after = [parse(line) for line in join_and_after_names(bob)]
    assert [msg.params[-1] for msg in after] == [
        f"-- 3 earlier messages in {ROOM} --",
        *line_range(2, 5),
        "-- now --",
    ]
    assert [msg.tags["time"] for msg in after[1:4]] == [msg.tags["time"] for msg in said[2:]]


def test_a_client_with_batch_gets_a_chathistory_batch(replaying, connect: Connect) -> None:
    server, said = replaying
    bob = capped(connect, "bob", "batch", "server-time", "message-tags", target=server)
    header, lines = unbatch([parse(line) for line in join_and_after_names(bob)])
    assert header == ("chathistory", ROOM)
    assert [seen(msg) for msg in lines] == [seen(msg) for msg in said[2:]]


def test_a_batch_without_server_time_puts_each_lines_time_in_its_text(
    replaying, connect: Connect
) -> None:
    server, said = replaying
    bob = capped(connect, "bob", "batch", target=server)
    header, lines = unbatch([parse(line) for line in join_and_after_names(bob)])
    assert header == ("chathistory", ROOM)
    for msg, live in zip(lines, said[2:], strict=True):
        assert "time" not in msg.tags
        assert re.fullmatch(r"\[\d\d:\d\d UTC\] " + re.escape(live.params[1]), msg.params[1])


def test_a_bots_lines_keep_the_bot_tag_in_history(
    start_server: StartServer, connect: Connect
) -> None:
    server = start_server(make_config())
    robo = reader(connect, "robo", target=server)
    robo.send("MODE robo +B")
    robo.expect(r"MODE robo :?\+B")
    live = say(robo, ROOM, "beep")
    assert "bot" in live.tags
    (kept,) = history(robo, f"LATEST {ROOM} * 1")
    assert kept.tags.get("bot") == "" and kept.tags["msgid"] == live.tags["msgid"]


def test_a_client_that_can_ask_gets_no_replay(replaying, connect: Connect) -> None:
    server, _ = replaying
    bob = capped(connect, "bob", "batch", "server-time", "draft/chathistory", target=server)
    assert join_and_after_names(bob) == []


def test_replay_on_join_0_replays_nothing(start_server: StartServer, connect: Connect) -> None:
    server = start_server(make_config(history=HistoryConfig(replay_on_join=0)))
    alice = reader(connect, "alice", target=server)
    say_lines(alice, 2)
    assert join_and_after_names(connect("bob", target=server)) == []
    # History is still kept: only the replay is off.
    settle(alice)
    assert texts(history(alice, f"LATEST {ROOM} * 10")) == line_range(0, 2)


def test_a_text_session_sees_the_last_lines_between_two_marker_lines(
    replaying, connect: Connect
) -> None:
    server, _ = replaying
    dave = connect(target=server)
    dave.send("/nick dave")
    dave.expect(r"^Welcome to the ")
    dave.send(f"/join {ROOM}")
    lines = dave.collect_until(r"^-- now --$")
    start = lines.index(f"-- 3 earlier messages in {ROOM} --")
    assert lines[start + 1 :] == [f"[{ROOM}] <alice> line {n}" for n in (2, 3, 4)] + ["-- now --"]


def test_max_age_hides_older_lines_and_the_writer_deletes_them(
    start_server: StartServer, connect: Connect, tmp_path: Path
) -> None:
    path = tmp_path / "ircish.db"
    hours_ago = now_ms() - 2 * 3600 * 1000
    store = SqliteStore(path)
    store.append(
        [
            StoredLine("#old", f"id{n}", when, "PRIVMSG", prefix("alice"), ("#old", text), seq=n)
            for n, (when, text) in enumerate(
                [(hours_ago, "two hours ago"), (now_ms(), "just now")], 1
            )
        ]
    )
    store.close()
    history_config = HistoryConfig(max_age="1h")
    server = start_server(
        make_config(
            rooms=(RoomConfig(name="#old"),),
            history=history_config,
            store=StoreConfig(path=str(path)),
        )
    )
    erin = reader(connect, "erin", room="#old", target=server)
    assert texts(history(erin, "LATEST #old * 10")) == ["just now"]
    bob = connect("bob", target=server)
    replay = join_and_after_names(bob, "#old")
    assert [line for line in replay if "two hours ago" in line] == []
    # Gone from the file too: the writer prunes at start, then once a minute.
    assert server.writer is not None and server.writer.flush(TIMEOUT)
    with sqlite3.connect(path) as db:
        kept = db.execute("SELECT msgid FROM history WHERE command = 'PRIVMSG'")
        assert [row[0] for row in kept] == ["id2"]


def test_a_replayed_line_shows_the_time_it_was_said(
    start_server: StartServer, connect: Connect, tmp_path: Path
) -> None:
    # A line said two hours ago, in a permanent room's store: it comes back with its own
    # time, not the time it is sent at.
    path = tmp_path / "ircish.db"
    long_ago = now_ms() - 2 * 3600 * 1000
    store = SqliteStore(path)
    store.append(
        [
            StoredLine(
                "#old",
                "oldid",
                long_ago,
                "PRIVMSG",
                prefix("alice"),
                ("#old", "said long ago"),
                seq=1,
                epoch=1,
            )
        ]
    )
    store.close()
    server = start_server(
        make_config(rooms=(RoomConfig(name="#old"),), store=StoreConfig(path=str(path)))
    )
    bob = connect("bob", target=server)
    line = join_and_after_names(bob, "#old")[1]
    assert re.fullmatch(
        rf":{re.escape(prefix('alice'))} PRIVMSG #old :{stamp_for(long_ago)}said long ago", line
    ), line
    carol = capped(connect, "carol", "server-time", target=server)
    replayed = parse(join_and_after_names(carol, "#old")[1])
    assert (replayed.tags["time"], replayed.params[-1]) == (iso(long_ago), "said long ago")
    dave = connect(target=server)
    dave.keep_stamps = True
    dave.send("/nick dave")
    dave.expect(r" Welcome to the ")
    dave.send("/join #old")
    shown = dave.expect(r"\[#old\] <alice> said long ago$").string
    local = time.strftime("%H:%M", time.localtime(long_ago // 1000))
    assert re.match(rf"(\d{{4}}-\d\d-\d\d )?{local} ", shown), shown
    erin = reader(connect, "erin", room="#old", target=server)
    (kept,) = history(erin, "LATEST #old * 10")
    assert (kept.tags["msgid"], kept.tags["time"]) == ("oldid", iso(long_ago))


# -- retention, the store behind the window, rooms that end -----------------------------------


@pytest.mark.parametrize("window", [200, 3])
def test_max_lines_keeps_only_the_last_lines(
    start_server: StartServer, connect: Connect, disk: StoreConfig, window: int
) -> None:
    # The window holds min(window, max_lines) lines; with a window of 3, the 2 older
    # lines come from the store.
    config = HistoryConfig(max_lines=5, window=window, replay_on_join=3)
    server = start_server(make_config(history=config, store=disk))
    alice = reader(connect, "alice", target=server)
    say_lines(alice, 8)
    poll_history(alice, f"LATEST {ROOM} * 100", line_range(3, 8))


def test_a_small_window_answers_from_the_store(
    start_server: StartServer, connect: Connect, disk: StoreConfig
) -> None:
    config = HistoryConfig(window=3, replay_on_join=3)
    server = start_server(make_config(history=config, store=disk))
    alice = reader(connect, "alice", target=server)
    said = say_lines(alice, 10)
    poll_history(alice, f"LATEST {ROOM} * 10", line_range(0, 10))
    # A msgid only the store has is found there.
    assert texts(history(alice, f"BEFORE {ROOM} {ref('msgid', said[2])} 10")) == line_range(0, 2)
    assert texts(history(alice, f"AROUND {ROOM} {ref('msgid', said[1])} 3")) == line_range(0, 3)


def test_the_store_answers_while_the_writer_writes(
    start_server: StartServer, connect: Connect, disk: StoreConfig
) -> None:
    config = HistoryConfig(window=1, replay_on_join=0)
    server = start_server(make_config(history=config, store=disk))
    alice = reader(connect, "alice", target=server)
    bob = connect("bob", target=server)
    bob.join(ROOM)
    settle(alice)
    said = []
    for turn in range(30):
        # bob keeps the writer busy; with a window of 1, alice's answers come from the store.
        burst = [f"{turn} {n}" for n in range(20)]
        said += burst
        bob.send("".join(f"PRIVMSG {ROOM} :{text}\r\n" for text in burst).encode())
        replies = answer(alice, f"CHATHISTORY LATEST {ROOM} * 5")
        lines = [msg for msg in replies if "batch" in msg.tags or msg.command != "PRIVMSG"]
        header, got = unbatch(lines)
        assert header == ("chathistory", ROOM)
        assert len(got) <= 5
    bob.sync()  # bob's lines are handled: alice has been sent every one of them
    settle(alice)
    # Nothing was lost on the way to the disk.
    poll_history(alice, f"LATEST {ROOM} * {len(said)}", said)


@pytest.mark.parametrize("in_memory", [False, True])
def test_a_read_never_waits_for_nor_fails_on_the_writers_transaction(
    start_server: StartServer, connect: Connect, disk: StoreConfig, in_memory: bool
) -> None:
    """ircish/store/__init__.py: reads "never wait for the writer's transaction". The writer
    thread holds one for every batch it writes; a read that comes then is a race a busy room
    runs all the time (seen as 400 replies under load with a memory store). Here the test
    holds such a transaction on the server's own database, so the moment is certain."""
    store = StoreConfig(flush_ms=10) if in_memory else disk
    config = HistoryConfig(window=1, replay_on_join=0)
    server = start_server(make_config(history=config, store=store))
    alice = reader(connect, "alice", target=server)
    said = say_lines(alice, 3)
    poll_history(alice, f"LATEST {ROOM} * 3", line_range(0, 3))
    assert server.writer is not None
    # The store's database by the URI it opened (the only way to a memory database).
    db = sqlite3.connect(server.writer.store._uri, uri=True, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO history (target, epoch, seq, msgid, time, command, prefix, params, tags)"
            " VALUES ('#elsewhere', 1, 1, 'held', 0, 'PRIVMSG', '', '[]', '{}')"
        )
        latest = history(alice, f"LATEST {ROOM} * 3")
        # A msgid the window no longer has is looked up in the store.
        before = history(alice, f"BEFORE {ROOM} {ref('msgid', said[1])} 3")
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert texts(latest) == line_range(0, 3)
    assert texts(before) == ["line 0"]


def test_an_answer_has_no_hole_while_the_store_lags(
    start_server: StartServer, connect: Connect, tmp_path: Path
) -> None:
    # The writer writes when DEFAULT_BATCH lines wait, or after flush_ms: with a flush of a
    # minute, the first batch is written and the lines after it wait, every time.
    store = StoreConfig(path=str(tmp_path / "ircish.db"), flush_ms=60_000)
    config = HistoryConfig(window=3, replay_on_join=0)
    server = start_server(make_config(history=config, store=store))
    alice = reader(connect, "alice", target=server)  # her JOIN is the first line queued
    total = DEFAULT_BATCH + 5
    alice.send("".join(f"PRIVMSG {ROOM} :{n}\r\n" for n in range(total)).encode())
    alice.expect(rf" PRIVMSG {ROOM} :{total - 1}$")
    assert server.writer is not None
    writer = server.writer
    wait_for(lambda: writer.written >= DEFAULT_BATCH)
    shown = [int(text) for text in texts(history(alice, f"LATEST {ROOM} * 10"))]
    # The lines past the window the writer has not taken are still in the window.
    assert shown == list(range(total - 10, total)), shown


@pytest.mark.parametrize("window", [200, 2])
def test_a_room_that_empties_forgets_its_history(
    start_server: StartServer, connect: Connect, disk: StoreConfig, window: int
) -> None:
    config = HistoryConfig(window=window, replay_on_join=2)
    server = start_server(make_config(history=config, store=disk))
    alice = reader(connect, "alice", target=server)
    old = say_lines(alice, 4, word="old")
    # Every old line is where a read finds it (with a window of 2, the store).
    poll_history(alice, f"LATEST {ROOM} * 10", [f"old {n}" for n in range(4)])
    alice.send(f"PART {ROOM}")
    alice.join(ROOM)  # a new room of the same name
    settle(alice)
    assert history(alice, f"LATEST {ROOM} * 100") == []
    say_lines(alice, 3, word="new")
    # With a window of 2 the new room's first lines are read from the store, where the
    # old room's lines must be gone.
    poll_history(alice, f"LATEST {ROOM} * 100", [f"new {n}" for n in range(3)])
    assert history(alice, f"BEFORE {ROOM} {ref('msgid', old[3])} 10") == []
    assert history(alice, f"AFTER {ROOM} {ref('msgid', old[0])} 10") == []


# -- one order -----------------------------------------------------------------------------


@pytest.mark.parametrize("window", [1000, 10])
def test_history_has_the_order_members_saw_live(
    start_server: StartServer, connect: Connect, disk: StoreConfig, window: int
) -> None:
    config = HistoryConfig(window=window, replay_on_join=0)
    server = start_server(make_config(history=config, store=disk))
    observer = reader(connect, "observer", target=server)
    senders = [connect(f"s{n}", target=server) for n in range(4)]
    for sender in senders:
        sender.join(ROOM)
    settle(observer, *senders)
    per_sender = 40
    # Each sender's lines in one write: the server's reader threads relay them at once.
    for sender in senders:
        sender.send(
            "".join(f"PRIVMSG {ROOM} :{sender.nick} {n}\r\n" for n in range(per_sender)).encode()
        )
    total = per_sender * len(senders)
    live = [parse(observer.expect(f" PRIVMSG {ROOM} :").string) for _ in range(total)]
    for sender in senders:  # each sender's own lines in the order it sent them
        mine = [msg.params[-1] for msg in live if msg.prefix == prefix(sender.nick)]
        assert mine == [f"{sender.nick} {n}" for n in range(per_sender)]
    got = poll_history(observer, f"LATEST {ROOM} * {total}", texts(live))
    assert [seen(msg) for msg in got] == [seen(msg) for msg in live]


def test_a_room_made_again_gets_a_later_epoch_even_if_the_clock_went_back(monkeypatch) -> None:
    """`forget` drops every life of a room up to the one that ended: a later `#x` with a
    smaller epoch (the clock set back meanwhile) would lose its own lines with it."""
    harness = Harness()
    alice = harness.connect("alice")
    alice.line("JOIN #x")
    first = harness.world.find_room("#x")
    assert first is not None
    alice.line("PART #x")
    assert harness.world.find_room("#x") is None
    monkeypatch.setattr(time, "time_ns", lambda: first.epoch - 3_600 * 10**9)  # an hour back
    alice.line("JOIN #x")
    again = harness.world.find_room("#x")
    assert again is not None and again is not first
    assert again.epoch > first.epoch
    assert again.oldest_epoch == again.epoch  # and it reads only its own life


def test_a_client_without_batch_gets_history_between_markers_each_at_its_time(
    connect: Connect,
) -> None:
    alice = reader(connect, "alice")
    say_lines(alice, 2)
    bob = capped(connect, "bob", "message-tags")  # no batch, no server-time
    bob.join(ROOM)
    bob.sync()
    bob.send(f"CHATHISTORY LATEST {ROOM} * 5")
    lines = [parse(text) for text in bob.collect_until(r"NOTICE \S+ :-- now --$")]
    assert lines[0].params[-1] == f"-- 2 earlier messages in {ROOM} --"
    for msg, n in zip(lines[1:-1], range(2), strict=True):
        assert re.fullmatch(rf"\[\d\d:\d\d UTC\] line {n}", msg.params[1]), msg
