"""Rooms over real sockets: JOIN PART TOPIC NAMES LIST, room lifetime and name folding."""

from __future__ import annotations

import time

import pytest
from helpers import SERVER, Client, prefix, settle

from ircish import protocol as p
from ircish.config import RoomConfig
from ircish.protocol import Message, parse


def listed(client: Client, arg: str = "") -> list[tuple[str, ...]]:
    """(room, count, topic) for each 322 of a LIST, checking the 321/323 frame."""
    client.sync()  # drop what came before
    client.send(f"LIST {arg}".rstrip())
    msgs = [parse(line) for line in client.collect_until(rf" {p.RPL_LISTEND} ")]
    assert msgs[0].command == p.RPL_LISTSTART
    assert msgs[-1].command == p.RPL_LISTEND
    assert all(m.command == p.RPL_LIST for m in msgs[1:-1])
    return [m.params[1:] for m in msgs[1:-1]]


# -- JOIN -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rooms", "expected", "listed_as"),
    [
        # A room from the config has no founder; a room the JOIN creates is run by its joiner.
        ((RoomConfig("#lobby", "Hi"),), ["JOIN", p.RPL_TOPIC, p.RPL_TOPICWHOTIME], "alice"),
        ((), ["JOIN"], "@alice"),
    ],
    ids=["with-topic", "no-topic"],
)
def test_join_replies_in_order(start_server, connect, rooms, expected, listed_as):
    srv = start_server(rooms=rooms)
    alice = connect("alice", target=srv)
    alice.send("JOIN #lobby")
    msgs = [parse(line) for line in alice.collect_until(rf" {p.RPL_ENDOFNAMES} ")]

    assert [m.command for m in msgs] == [*expected, p.RPL_NAMREPLY, p.RPL_ENDOFNAMES]
    assert msgs[0] == Message("JOIN", ["#lobby"], prefix("alice"))
    if rooms:
        assert msgs[1] == Message(p.RPL_TOPIC, ["alice", "#lobby", "Hi"], SERVER)
        assert msgs[2].params[:2] == ("alice", "#lobby")
        assert msgs[2].params[3].isdigit()
    assert msgs[-2] == Message(p.RPL_NAMREPLY, ["alice", "=", "#lobby", listed_as], SERVER)
    assert msgs[-1].params[:2] == ("alice", "#lobby")
    assert msgs[-1].prefix == SERVER


def test_others_see_join_and_joining_twice_says_nothing(connect):
    alice = connect("alice")
    bob = connect("bob")
    alice.join("#room")
    bob.join("#room")
    assert alice.messages() == [Message("JOIN", ["#room"], prefix("bob"))]

    bob.send("JOIN #room")
    assert bob.messages() == []
    assert alice.messages() == []


@pytest.mark.parametrize(
    "bad",
    ["nohash", "#a:b", "#" + "x" * 50, "#bell\x07"],
    ids=["no-hash", "colon", "too-long", "control-char"],
)
def test_join_list_rejects_bad_names_and_joins_the_rest(server, connect, bad):
    assert server.config.limits.room_length == 50
    alice = connect("alice")
    alice.send(f"JOIN #a,{bad},#b")
    msgs = alice.messages()

    errors = [m for m in msgs if m.command == p.ERR_BADCHANMASK]
    assert [m.params[:2] for m in errors] == [("alice", bad)]
    assert [m.params for m in msgs if m.command == "JOIN"] == [("#a",), ("#b",)]
    assert server.world.find_room(bad) is None
    assert set(server.world.find_user("alice").rooms) == {"#a", "#b"}
    # Each room's burst stays whole: #a's replies, then the error, then #b's.
    assert [(m.command, m.params[-1] if m.command == "JOIN" else "") for m in msgs] == [
        ("JOIN", "#a"),
        (p.RPL_NAMREPLY, ""),
        (p.RPL_ENDOFNAMES, ""),
        (p.ERR_BADCHANMASK, ""),
        ("JOIN", "#b"),
        (p.RPL_NAMREPLY, ""),
        (p.RPL_ENDOFNAMES, ""),
    ]


def test_join_accepts_a_name_of_exactly_room_length(start_server, connect):
    srv = start_server(room_length=10)
    alice = connect("alice", target=srv)
    alice.send("JOIN #123456789,#1234567890")
    msgs = alice.messages()
    assert [m.params for m in msgs if m.command == "JOIN"] == [("#123456789",)]
    assert [m.params[1] for m in msgs if m.command == p.ERR_BADCHANMASK] == ["#1234567890"]


def test_join_zero_parts_every_room(server, connect):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    alice.join("#a", "#b")
    bob.join("#a")
    carol.join("#b")
    settle(alice, bob, carol)

    alice.send("JOIN 0")
    own = alice.messages()
    assert [(m.command, m.prefix, m.params[0]) for m in own] == [
        ("PART", prefix("alice"), "#a"),
        ("PART", prefix("alice"), "#b"),
    ]
    assert [(m.command, m.prefix, m.params[0]) for m in bob.messages()] == [
        ("PART", prefix("alice"), "#a")
    ]
    assert [(m.command, m.prefix, m.params[0]) for m in carol.messages()] == [
        ("PART", prefix("alice"), "#b")
    ]
    assert server.world.find_user("alice").rooms == {}
    assert bob.names("#a") == ["bob"]


# -- room lifetime and names --------------------------------------------------------------


def test_room_is_created_on_join_and_deleted_when_empty(server, connect):
    alice, bob = connect("alice"), connect("bob")
    assert server.world.find_room("#temp") is None
    alice.join("#temp")
    bob.join("#temp")
    assert [row[0] for row in listed(alice)] == ["#temp"]

    alice.send("PART #temp")
    alice.sync()
    assert server.world.find_room("#temp") is not None  # bob is still there
    bob.send("PART #temp")
    bob.sync()
    assert server.world.find_room("#temp") is None
    assert listed(alice) == []


def test_config_room_outlives_its_last_member(start_server, connect):
    srv = start_server(rooms=(RoomConfig("#lobby", "Hi"),))
    alice = connect("alice", target=srv)
    assert listed(alice) == [("#lobby", "0", "Hi")]
    alice.join("#lobby")
    alice.send("PART #lobby")
    alice.sync()
    room = srv.world.find_room("#lobby")
    assert room is not None and room.members == {}
    assert listed(alice) == [("#lobby", "0", "Hi")]


def test_room_names_are_case_insensitive_and_keep_the_creators_spelling(server, connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#Room")
    bob.send("JOIN #ROOM")
    bob_msgs = bob.messages()
    assert bob_msgs[0] == Message("JOIN", ["#Room"], prefix("bob"))
    assert alice.messages() == [Message("JOIN", ["#Room"], prefix("bob"))]

    room = server.world.find_room("#room")
    assert room is server.world.find_room("#ROOM")
    assert room.name == "#Room"
    assert len(room.members) == 2
    assert listed(alice) == [("#Room", "2", "")]


def test_names_is_split_to_fit_the_line_and_lists_everyone_once(start_server, connect):
    srv = start_server(nick_length=30)
    nicks = [f"n{i:02d}" + "x" * 27 for i in range(60)]
    assert all(len(nick) == 30 for nick in nicks)
    for nick in nicks:
        connect(nick, target=srv).join("#big")
    watcher = connect("watcher", target=srv)

    watcher.send("NAMES #big")
    lines = watcher.collect_until(rf" {p.RPL_ENDOFNAMES} ")
    msgs = [parse(line) for line in lines]

    assert [m.command for m in msgs[:-1]] == [p.RPL_NAMREPLY] * (len(msgs) - 1)
    assert len(msgs) - 1 >= 2
    assert msgs[-1].command == p.RPL_ENDOFNAMES
    assert msgs[-1].params[:2] == ("watcher", "#big")
    for line in lines:
        assert len(line.encode()) <= 510, line
    for msg in msgs[:-1]:
        assert msg.params[:3] == ("watcher", "=", "#big")
    listed_nicks = [nick for msg in msgs[:-1] for nick in msg.params[3].split()]
    assert sorted(listed_nicks) == sorted(["@" + nicks[0], *nicks[1:]])  # the founder


def test_names_without_arguments_lists_your_rooms(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#a", "#b")
    bob.join("#b")
    alice.sync()

    alice.send("NAMES")
    msgs = alice.messages()
    assert [(m.command, m.params[1:]) for m in msgs if m.command == p.RPL_NAMREPLY] == [
        (p.RPL_NAMREPLY, ("=", "#a", "@alice")),
        (p.RPL_NAMREPLY, ("=", "#b", "@alice bob")),
    ]
    assert [m.params[1] for m in msgs if m.command == p.RPL_ENDOFNAMES] == ["#a", "#b"]
    assert msgs[-1].command == p.RPL_ENDOFNAMES


def test_names_of_an_unknown_room_is_just_the_end(connect):
    alice = connect("alice")
    alice.send("NAMES #nowhere")
    msgs = alice.messages()
    assert [(m.command, m.params[:2]) for m in msgs] == [(p.RPL_ENDOFNAMES, ("alice", "#nowhere"))]


# -- PART ----------------------------------------------------------------------------------


def test_part_with_reason_is_seen_by_the_room_and_echoed(server, connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#room")
    bob.join("#room")
    alice.sync()

    bob.send("PART #room :see you later")
    expected = Message("PART", ["#room", "see you later"], prefix("bob"))
    assert bob.messages() == [expected]
    assert alice.messages() == [expected]
    assert alice.names("#room") == ["@alice"]


@pytest.mark.parametrize(
    ("line", "numeric", "room"),
    [
        ("PART #other", p.ERR_NOTONCHANNEL, "#other"),
        ("PART #nowhere :bye", p.ERR_NOSUCHCHANNEL, "#nowhere"),
    ],
    ids=["not-a-member", "unknown-room"],
)
def test_part_errors(connect, line, numeric, room):
    alice, bob = connect("alice"), connect("bob")
    bob.join("#other")
    bob.sync()
    alice.send(line)
    msgs = alice.messages()
    assert [(m.prefix, m.command, m.params[:2]) for m in msgs] == [
        (SERVER, numeric, ("alice", room))
    ]
    assert bob.messages() == []


# -- TOPIC ---------------------------------------------------------------------------------


def test_topic_query_set_and_clear(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#room")
    bob.join("#room")
    alice.sync()
    # alice founded #room, which is +t: let bob, who is no operator, set the topic too.
    alice.send("MODE #room -t")
    lifted = Message("MODE", ["#room", "-t"], prefix("alice"))
    assert alice.messages() == [lifted]
    assert bob.messages() == [lifted]

    alice.send("TOPIC #room")
    assert [(m.command, m.params[:2]) for m in alice.messages()] == [
        (p.RPL_NOTOPIC, ("alice", "#room"))
    ]

    before = int(time.time())
    alice.send("TOPIC #room :Welcome: be nice")
    changed = Message("TOPIC", ["#room", "Welcome: be nice"], prefix("alice"))
    assert alice.messages() == [changed]
    assert bob.messages() == [changed]
    after = int(time.time())

    bob.send("TOPIC #room")
    topic, whotime = bob.messages()
    assert topic == Message(p.RPL_TOPIC, ["bob", "#room", "Welcome: be nice"], SERVER)
    assert whotime.command == p.RPL_TOPICWHOTIME
    assert whotime.params[:3] == ("bob", "#room", prefix("alice"))
    assert before <= int(whotime.params[3]) <= after

    bob.send("TOPIC #room :")
    cleared = Message("TOPIC", ["#room", ""], prefix("bob"))
    assert bob.messages() == [cleared]
    assert alice.messages() == [cleared]
    alice.send("TOPIC #room")
    assert [m.command for m in alice.messages()] == [p.RPL_NOTOPIC]


@pytest.mark.parametrize(
    ("line", "numeric", "room"),
    [
        ("TOPIC #other :mine now", p.ERR_NOTONCHANNEL, "#other"),
        ("TOPIC #nowhere :hello", p.ERR_NOSUCHCHANNEL, "#nowhere"),
        ("TOPIC #nowhere", p.ERR_NOSUCHCHANNEL, "#nowhere"),
    ],
    ids=["set-not-a-member", "set-unknown-room", "query-unknown-room"],
)
def test_topic_errors(server, connect, line, numeric, room):
    alice, bob = connect("alice"), connect("bob")
    bob.join("#other")
    bob.send("TOPIC #other :original")
    bob.sync()
    alice.send(line)
    assert [(m.command, m.params[:2]) for m in alice.messages()] == [(numeric, ("alice", room))]
    assert bob.messages() == []
    assert server.world.find_room("#other").topic == "original"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x" * 25, "x" * 20),
        ("é" * 15, "é" * 10),  # 2-byte characters: 20 bytes is 10 of them
        ("☃" * 10, "☃" * 6),  # 3-byte characters: byte 20 is inside the 7th, cut before it
    ],
    ids=["ascii", "two-byte", "utf8-boundary"],
)
def test_topic_is_cut_to_topic_length_bytes(start_server, connect, text, expected):
    srv = start_server(topic_length=20)
    alice = connect("alice", target=srv)
    alice.join("#room")
    alice.send(f"TOPIC #room :{text}")
    assert alice.messages() == [Message("TOPIC", ["#room", expected], prefix("alice"))]
    assert len(expected.encode()) <= 20
    assert srv.world.find_room("#room").topic == expected


# -- LIST ----------------------------------------------------------------------------------


def test_list_shows_every_room_with_count_and_topic(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#a", "#b")
    bob.join("#a")
    alice.send("TOPIC #a :All about a")
    alice.sync()

    assert listed(bob) == [("#a", "2", "All about a"), ("#b", "1", "")]
    assert listed(bob, "#b") == [("#b", "1", "")]
    assert listed(bob, "#nowhere") == []
    # Rooms by name come in the order asked, each once however it is spelled.
    assert [row[0] for row in listed(bob, "#b,#A,#a,#B")] == ["#b", "#a"]


def test_list_filters_by_mask_and_by_mask_not_matched(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#chan1", "#chan2", "#other")
    assert listed(bob, "*an1") == [("#chan1", "1", "")]
    assert listed(bob, "#C*N?") == [("#chan1", "1", ""), ("#chan2", "1", "")]  # any case
    assert [row[0] for row in listed(bob, "!#ch*")] == ["#other"]
    # Names and masks add up, `!masks` take away.
    assert [row[0] for row in listed(bob, "#other,*1")] == ["#chan1", "#other"]
    assert [row[0] for row in listed(bob, "#ch*,!*2")] == ["#chan1"]


def test_list_filters_by_user_count(connect):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    alice.join("#one", "#two")
    bob.join("#two")
    assert [row[0] for row in listed(carol, ">1")] == ["#two"]
    assert [row[0] for row in listed(carol, "<2")] == ["#one"]
    assert listed(carol, "<1") == []
    assert [row[0] for row in listed(carol, ">0,<100")] == ["#one", "#two"]
    assert [row[0] for row in listed(carol, "#t*,>0")] == ["#two"]


def test_list_filters_by_creation_and_topic_time_in_minutes(server, connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#old", "#new", "#bare")
    alice.send("TOPIC #old :set long ago")
    alice.send("TOPIC #new :set just now")
    alice.sync()
    # Ten minutes pass for #old (the rooms' clocks are set back, not waited for).
    old = server.world.find_room("#old")
    with old.lock:
        old.created -= 600
        old.topic_time -= 600
    assert [row[0] for row in listed(bob, "C>5")] == ["#old"]
    assert [row[0] for row in listed(bob, "C<5")] == ["#bare", "#new"]
    assert [row[0] for row in listed(bob, "C<11")] == ["#bare", "#new", "#old"]
    assert [row[0] for row in listed(bob, "T>5")] == ["#old"]
    assert [row[0] for row in listed(bob, "T<5")] == ["#new"]  # #bare has no topic time
    assert listed(bob, "T<0") == []
    assert listed(bob, "C<x") == []  # no such filter: a room name, and no room has it


def test_list_filters_never_show_a_secret_room_to_outsiders(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#hidden")
    alice.send("MODE #hidden +s")
    alice.sync()
    for terms in ("*", "#hidden", "!#x*", ">0", "C<5"):
        assert listed(bob, terms) == [], terms
    assert [row[0] for row in listed(alice, ">0")] == ["#hidden"]


def test_names_of_several_rooms_ends_once_naming_the_list(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("#a", "#b")
    bob.join("#b")
    alice.sync()
    alice.send("NAMES #a,#nowhere,#b")
    got = [(m.command, m.params[1:]) for m in alice.messages()]
    assert got == [
        (p.RPL_NAMREPLY, ("=", "#a", "@alice")),
        (p.RPL_NAMREPLY, ("=", "#b", "@alice bob")),
        (p.RPL_ENDOFNAMES, ("#a,#nowhere,#b", "End of /NAMES list")),
    ]
