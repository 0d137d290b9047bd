"""Events and capability-aware delivery (issue 10): tags on the wire, escaped per the spec and
outside the 512-byte budget; one event formatted once per distinct wire format among its
receivers, with one time and one msgid for all; and the record hook, called once per relayed
event, after the relay, with no lock held."""

from __future__ import annotations

import re

import pytest
from helpers import COMMANDS, SERVER, Harness, make_config, prefix
from hypothesis import given, settings
from hypothesis import strategies as st

from ircish import locks
from ircish.events import PLAIN, Event, WireFormat, server_time
from ircish.protocol import (
    DEFAULT_LINE_BYTES,
    Message,
    ProtocolError,
    escape_tag_value,
    format_tags,
    parse,
    unescape_tag_value,
)
from ircish.session import Session
from ircish.world import User

# -- tags on the wire ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("plain", "plain"),
        ("a;b", "a\\:b"),
        ("two words", "two\\swords"),
        ("back\\slash", "back\\\\slash"),
        ("cr\rlf\n", "cr\\rlf\\n"),
        ("", ""),
    ],
)
def test_tag_values_are_escaped_and_read_back(value, wire):
    assert escape_tag_value(value) == wire
    assert unescape_tag_value(wire) == value


@pytest.mark.parametrize(
    ("wire", "value"), [("\\b", "b"), ("end\\", "end"), ("\\\\s", "\\s"), ("\\:\\s", "; ")]
)
def test_unknown_escapes_and_a_trailing_backslash(wire, value):
    assert unescape_tag_value(wire) == value


def test_a_message_with_tags():
    msg = Message("PRIVMSG", ["#r", "hi there"], prefix("al"), {"time": "T", "+x": "a b", "k": ""})
    assert msg.to_line() == f"@time=T;+x=a\\sb;k :{prefix('al')} PRIVMSG #r :hi there"
    assert parse(msg.to_line()) == msg and parse(msg.to_line()).tags == msg.tags


def test_a_bad_tag_key_is_not_sent():
    with pytest.raises(ProtocolError):
        format_tags({"bad key": "v"})
    with pytest.raises(ProtocolError):
        Message("PING", ["x"], tags={"a;b": ""}).to_bytes()


def test_the_512_byte_limit_is_for_the_part_after_the_tags():
    tags = {"+draft/long": "v" * 1000, "time": "2026-12-01T10:00:00.000Z"}
    msg = Message("PRIVMSG", ["#r", "x" * 600], prefix("al"), tags)
    wire = msg.to_bytes()
    head, _, body = wire.partition(b" ")
    assert head == format_tags(tags).encode()
    assert len(body) == DEFAULT_LINE_BYTES  # cut to 510 bytes, then CRLF
    assert body.endswith(b"\r\n") and body.startswith(b":al!")


tag_values = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=30)


@settings(max_examples=200, derandomize=True, database=None)
@given(st.dictionaries(st.sampled_from(["time", "msgid", "+a", "+b/c", "x.y/z"]), tag_values))
def test_tags_round_trip(tags):
    msg = Message("TAGMSG", ["#r"], prefix("al"), tags)
    assert parse(msg.to_line()).tags == tags


# -- one event, formatted once per wire format ------------------------------------------------


def room_of_five(harness: Harness):
    """alice speaks to #r; bob and carol ask for no tags, dave and erin for the same two."""
    peers = {n: harness.connect(n) for n in ("alice", "bob", "carol", "dave", "erin")}
    for peer in peers.values():
        peer.line("JOIN #r")
    for name in ("dave", "erin"):
        peers[name].session.set_caps({"server-time", "message-tags", "not-a-tag-cap"})
    for peer in peers.values():
        peer.lines()
    harness.events.clear()
    return peers


def test_an_event_is_formatted_once_per_distinct_wire_format():
    harness = Harness()
    peers = room_of_five(harness)
    peers["alice"].line("PRIVMSG #r :hello")
    (event,) = harness.events
    assert event.formats_made() == 2  # plain, and tagged: not once per receiver
    plain = f":{prefix('alice')} PRIVMSG #r :hello"
    assert peers["bob"].lines() == peers["carol"].lines() == [plain]
    dave, erin = peers["dave"].lines(), peers["erin"].lines()
    assert dave == erin
    assert dave == [f"@msgid={event.msgid};time={server_time(event.time)} {plain}"]


def test_every_receiver_of_one_event_gets_one_msgid_and_time():
    harness = Harness()
    peers = room_of_five(harness)
    peers["carol"].session.set_caps({"message-tags", "server-time"})
    peers["alice"].line("PRIVMSG #r :one")
    peers["alice"].line("PRIVMSG #r :two")
    one, two = harness.events
    assert one.msgid != two.msgid
    tagged = [parse(line) for name in ("carol", "dave", "erin") for line in peers[name].lines()]
    assert [m.tags["msgid"] for m in tagged] == [one.msgid, two.msgid] * 3
    assert len({m.tags["time"] for m in tagged if m.params[1] == "one"}) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", tagged[0].tags["time"])


def test_wire_formats_are_shared_objects():
    assert WireFormat.of([]) is PLAIN
    assert WireFormat.of(["server-time", "cap-notify"]) is WireFormat.of(["server-time"])
    assert WireFormat.of(["server-time"]) is not PLAIN


def test_client_only_tags_go_only_to_those_with_message_tags():
    event = Event(Message("PRIVMSG", ["#r", "hi"], prefix("al"), {"+typing": "active"}), ("#r",))
    assert b"+typing" not in event.wire(PLAIN)
    assert b"+typing" not in event.wire(WireFormat.of(["server-time"]))
    assert event.wire(WireFormat.of(["message-tags"])).startswith(b"@msgid=")
    assert b";+typing=active " in event.wire(WireFormat.of(["message-tags"]))


def test_the_transport_frames_each_format_once():
    def framed(line: bytes) -> bytes:
        return b"<" + line.rstrip(b"\r\n") + b">"

    event = Event(Message("PRIVMSG", ["#r", "hi"], prefix("al")), ("#r",))
    assert event.wire(WireFormat.of([], framed)) == f"<:{prefix('al')} PRIVMSG #r :hi>".encode()
    assert event.wire(PLAIN).endswith(b"\r\n")
    assert event.formats_made() == 2


# -- the record hook ---------------------------------------------------------------------------


def recording_harness():
    """A harness whose record hook notes, for each event, the locks this thread held and
    what each peer had been sent by then."""
    harness = Harness()
    calls: list[tuple[Event, list[str], dict[str, bytes]]] = []

    def record(event: Event) -> None:
        sent = {peer.user.nick: bytes(peer.data) for peer in harness.peers}
        calls.append((event, locks.held_by_this_thread(), sent))

    harness.world.record = record
    return harness, calls


@pytest.mark.parametrize(
    ("line", "command", "targets"),
    [
        ("PRIVMSG #r :hi", "PRIVMSG", ("#r",)),
        ("NOTICE #r :hi", "NOTICE", ("#r",)),
        ("PRIVMSG bob :psst", "PRIVMSG", ("bob",)),
        ("TOPIC #r :new topic", "TOPIC", ("#r",)),
        ("MODE #r +v bob", "MODE", ("#r",)),
        ("KICK #r bob :out", "KICK", ("#r",)),
        ("PART #r :bye", "PART", ("#r",)),
        ("NICK alicia", "NICK", ("#r",)),
        ("JOIN #other", "JOIN", ("#other",)),
        ("INVITE bob #other", "INVITE", ("bob",)),
    ],
)
def test_each_relayed_event_is_recorded_once_after_the_relay_with_no_lock(line, command, targets):
    harness, calls = recording_harness()
    alice, bob = harness.connect("alice"), harness.connect("bob")
    alice.line("JOIN #r")
    bob.line("JOIN #r")
    if command == "INVITE":
        alice.line("JOIN #other")
    alice.lines()
    bob.lines()
    calls.clear()
    alice.line(line)
    assert len(calls) == 1, [c[0] for c in calls]
    event, held, sent = calls[0]
    assert event.message.command == command and event.targets == targets
    assert held == []  # outside every lock
    receiver = "alice" if command == "JOIN" else "bob"
    # After the relay: the receiver already had it.
    assert event.message.params[-1].encode() in sent[receiver]


def test_a_quit_is_recorded_once_with_the_rooms_it_left():
    harness, calls = recording_harness()
    alice, bob = harness.connect("alice"), harness.connect("bob")
    alice.line("JOIN #a,#b")
    bob.line("JOIN #a,#b")
    calls.clear()
    alice.hang_up("Connection reset")
    ((event, held, sent),) = calls
    assert event.message == Message("QUIT", ["Connection reset"], prefix("alice"))
    assert event.targets == ("#a", "#b") and held == []
    assert b"QUIT :Connection reset" in sent["bob"]


def test_a_refused_message_records_nothing():
    harness, calls = recording_harness()
    alice, bob = harness.connect("alice"), harness.connect("bob")
    alice.line("JOIN #r")
    alice.line("MODE #r +m")
    bob.line("JOIN #r")
    calls.clear()
    bob.line("PRIVMSG #r :let me speak")
    assert calls == []
    assert " 404 bob #r " in bob.lines()[-1]


# -- what cannot be formatted, and a hook that fails -------------------------------------------


def test_an_unformattable_relay_reaches_nobody():
    """The plain bytes are made before the first delivery, as the old broadcast did: a
    message that cannot be formatted reaches no member, text or IRC."""
    harness = Harness()
    carol = harness.connect()
    carol.line("/nick carol")
    carol.line("/join #r")  # a text member first in the room's join order
    bob, dave = harness.connect("bob"), harness.connect("dave")
    bob.line("JOIN #r")
    dave.line("JOIN #r")
    for peer in (carol, bob, dave):
        peer.lines()
    room = harness.world.find_room("#r")
    bad = Message("PRIVMSG", ["#r", "hi"], "alice!u@bad host")  # a prefix with a space
    with pytest.raises(ProtocolError):
        room.send_from(bob.user, bad)
    assert carol.lines() == [] and dave.lines() == []
    assert harness.events[-1].message.command == "JOIN"  # nothing recorded either


def test_a_failing_record_hook_is_logged_and_changes_nothing(caplog):
    harness = Harness()
    alice = harness.connect("alice")

    def record(event):
        raise OSError("disk full")

    harness.world.record = record
    alice.line("JOIN #a,#b")
    got = alice.lines()
    assert f":{prefix('alice')} JOIN #a" in got and f":{prefix('alice')} JOIN #b" in got
    failures = [r for r in caplog.records if r.getMessage().startswith("recording <Event")]
    assert len(failures) == 2  # logged, once per event


def test_a_framed_transport_frames_what_a_text_session_is_sent():
    def framed(line: bytes) -> bytes:
        return b"<" + line.rstrip(b"\r\n") + b">"

    s = Session(User(None, "127.0.0.1"), COMMANDS, make_config().limits, SERVER, frame=framed)  # type: ignore[arg-type]
    s.take(b"/nick carol")  # a person, as on a web page's text box
    assert re.fullmatch(
        rf"<\d\d:\d\d -{re.escape(SERVER)}- hi>".encode(),
        s.encode(Message("NOTICE", ["carol", "hi"], SERVER)),
    )


@pytest.mark.parametrize("target", ["#r", "bob"])
def test_a_persons_own_line_comes_before_an_answer_to_it(target):
    # bob answers the moment carol's line is relayed (the record hook runs right after the
    # relay, before carol's handler ends): carol must still see her line first (issue 11).
    harness = Harness()
    bob = harness.connect("bob")
    carol = harness.connect()
    carol.line("/nick carol")
    bob.line("JOIN #r")
    carol.line("/join #r")
    bob.lines(), carol.lines()

    def answer(event):
        if event.message.params[-1] == "hello":
            bob.line(f"PRIVMSG {'#r' if target == '#r' else 'carol'} :hi carol")

    harness.world.record = answer
    carol.line(f"/msg {target} hello")
    told = [line for line in carol.lines() if "hello" in line or "hi carol" in line]
    mine = "[#r] <carol> hello" if target == "#r" else "-> *bob* hello"
    theirs = "[#r] <bob> hi carol" if target == "#r" else "[private] <bob> hi carol"
    assert told == [mine, theirs]
