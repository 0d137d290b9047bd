"""ircish-client and a room's earlier lines (issue 13): what it shows on joining a room and
for /history, between markers, each line at the time it was said. Against a real ircish
server in the test process (its history on, a memory store), and, where only a scripted
server can set up the case (a line said while the answer is on its way, a lost link, a
refusal), a session fed the server's lines one by one."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import date

import pytest
from helpers import TIMEOUT, Client, Recorder, wait_for
from helpers import unstamped as without_stamp
from test_client_units import FedSession

from ircish import caps
from ircish.client.input_line import CommandLine
from ircish.client.session import HISTORY_ON_JOIN, Incoming, Note, Session, SessionConfig
from ircish.client.ui import Formatter, message_time
from ircish.render import render
from ircish.server import Server

#: The stamp of a line shown with its own `time` tag (the date too, if not today). The
#: client's own lines, and any line without a time tag, are stamped `now` here.
SAID = r"(\d{4}-\d\d-\d\d )?\d\d:\d\d"


class Screen(Recorder):
    """What a person reads: each event as the client prints it, with no colour; lines
    without a time of their own are stamped `now`."""

    def lines(self) -> list[str]:
        with self.lock:
            events = list(self.events)
        formatter = Formatter(colour=False, clock=lambda: "now")
        return [line for event in events for line in formatter.lines(event)]

    def block(self, first: str) -> list[str]:
        """The lines from the last one that is `first` (its stamp left out) to the marker
        that closes it, both included."""
        lines = self.lines()
        starts = [i for i, line in enumerate(lines) if line == f"now {first}"]
        assert starts, f"{first!r} never shown: {lines}"
        ends = [
            i for i in range(starts[-1], len(lines)) if re.match(r"now -- (now|end of)", lines[i])
        ]
        assert ends, f"{first!r} is never closed: {lines}"
        return lines[starts[-1] : ends[0] + 1]

    def stamped_as_said(self, block: list[str]) -> bool:
        """Each history line of `block` is stamped with the local time of its `time` tag."""
        with self.lock:
            said = {
                render(e.msg, e.me): e.msg.tags.get("time")
                for e in self.events
                if isinstance(e, Incoming)
            }
        for line in block[1:-1]:
            stamp, text = re.fullmatch(rf"({SAID}) (.*)", line).group(1, 3)
            if said.get(text) is None or stamp != message_time(said[text], date.today()):
                return False
        return True

    def markers(self) -> list[str]:
        with self.lock:
            return [e.text for e in self.events if isinstance(e, Note) and e.kind == "marker"]


class Person:
    """One ircish-client session (no terminal) and what it showed; `type` is a typed line."""

    def __init__(self, session: Session, screen: Screen) -> None:
        self.session = session
        self.screen = screen
        self.commands = CommandLine(session, screen)

    def type(self, line: str) -> None:
        """Handle a typed line and wait for the server's answer to it (a PING round trip)."""
        self.commands.handle(line)
        assert self.session.sync(TIMEOUT)


@pytest.fixture
def person(server: Server) -> Iterator[Callable[..., Person]]:
    """Start ircish-client sessions on `server`, registered, in `rooms`, each room's earlier
    lines (if any) shown."""
    sessions: list[Session] = []

    def start(nick: str, *rooms: str, history: int = HISTORY_ON_JOIN) -> Person:
        screen = Screen()
        config = SessionConfig(
            nick=nick, port=server.address[1], rooms=rooms, reconnect=False, history=history
        )
        session = Session(config, screen)
        session.start()
        sessions.append(session)
        assert session.wait_registered(TIMEOUT)
        # Our JOINs went out before the PING; the history asked for when they come back may
        # go after it, and `sync` waits for that answer too.
        assert session.sync(TIMEOUT)
        return Person(session, screen)

    yield start
    for session in sessions:
        session.quit()


def said_in(connect: Callable[..., Client], room: str, count: int, nick: str = "alice") -> Client:
    """`nick` joins `room` and says `line 0` ... `line <count - 1>` there."""
    speaker = connect(nick)
    speaker.join(room)
    for n in range(count):
        speaker.send(f"PRIVMSG {room} :line {n}")
    speaker.sync()
    return speaker


def lines_said(*numbers: int, room: str = "#r", nick: str = "alice") -> list[str]:
    return [f"[{room}] <{nick}> line {n}" for n in numbers]


def unstamped(block: list[str]) -> list[str]:
    """The block's history lines without their stamps, each checked to be a time said."""
    inner = block[1:-1]
    assert all(re.match(rf"{SAID} ", line) for line in inner), inner
    return [line.split(" ", 1)[1] for line in inner]


# -- on joining a room -----------------------------------------------------------------------


def test_joining_shows_the_rooms_last_lines_between_markers_each_at_its_own_time(person, connect):
    said_in(connect, "#r", 8)
    carol = person("carol", "#r", history=5)
    assert "draft/chathistory" in carol.session.caps
    lines = carol.screen.lines()
    block = carol.screen.block("-- 5 earlier messages in #r --")
    assert block[-1] == "now -- now --"
    assert unstamped(block) == lines_said(3, 4, 5, 6, 7)
    assert carol.screen.stamped_as_said(block)
    # After the names, as the server's own replay comes; nothing of it twice.
    assert lines.index("now Users in #r: @alice carol") < lines.index(block[0])
    assert sum("line 7" in line for line in lines) == 1


def test_the_default_is_twenty_lines_and_one_line_is_a_message(person, connect):
    said_in(connect, "#r", 25)
    said_in(connect, "#one", 1, nick="bob")
    carol = person("carol", "#r", "#one")
    block = carol.screen.block("-- 20 earlier messages in #r --")
    assert unstamped(block) == lines_said(*range(5, 25))
    assert unstamped(carol.screen.block("-- 1 earlier message in #one --")) == [
        "[#one] <bob> line 0"
    ]


def test_an_empty_room_shows_no_history(person, connect):
    carol = person("carol", "#new")
    alice = connect("alice")
    alice.join("#new")
    alice.send("PRIVMSG #new :hello carol")
    wait_for(lambda: "[#new] <alice> hello carol" in carol.screen.rendered())
    assert carol.screen.markers() == []


def test_history_zero_shows_nothing_on_joining_and_the_server_replays_nothing(person, connect):
    said_in(connect, "#r", 3)
    carol = person("carol", "#r", history=0)
    assert "draft/chathistory" in carol.session.caps  # so the server keeps its replay
    assert carol.screen.markers() == []
    assert not any("<alice> line" in line for line in carol.screen.lines())
    carol.type("/history 2")  # nothing shown yet: the room's last lines
    block = carol.screen.block("-- 2 earlier messages in #r --")
    assert block[-1] == "now -- end of earlier messages in #r --"
    assert unstamped(block) == lines_said(1, 2)


# -- /history --------------------------------------------------------------------------------


def test_history_twice_goes_further_back_without_repeats(person, connect):
    said_in(connect, "#r", 12)
    carol = person("carol", "#r", history=4)
    assert unstamped(carol.screen.block("-- 4 earlier messages in #r --")) == lines_said(
        8, 9, 10, 11
    )
    carol.type("/history 3")
    first = carol.screen.block("-- 3 earlier messages in #r --")
    assert first[-1] == "now -- end of earlier messages in #r --"
    assert unstamped(first) == lines_said(5, 6, 7)
    carol.type("/history 3")
    assert unstamped(carol.screen.block("-- 3 earlier messages in #r --")) == lines_said(2, 3, 4)
    carol.type("/history")  # 20 asked, 2 left
    assert unstamped(carol.screen.block("-- 2 earlier messages in #r --")) == lines_said(0, 1)
    shown = [line for line in carol.screen.lines() if "<alice> line" in line]
    assert len(shown) == len(set(shown)) == 12


def test_history_with_nothing_earlier_says_so(person, connect):
    said_in(connect, "#r", 2)
    carol = person("carol", "#r")
    assert unstamped(carol.screen.block("-- 2 earlier messages in #r --")) == lines_said(0, 1)
    for _ in range(2):
        carol.type("/history 5")
    assert carol.screen.markers()[-2:] == ["-- no earlier messages in #r --"] * 2
    carol.type("/join #empty")
    carol.type("/history")
    assert carol.screen.markers()[-1] == "-- no earlier messages in #empty --"


def test_history_goes_back_from_the_oldest_line_shown_live(person, connect):
    carol = person("carol", "#r")
    alice = said_in(connect, "#r", 3)
    wait_for(lambda: "[#r] <alice> line 2" in carol.screen.rendered())
    alice.send("PRIVMSG #r :said live")
    wait_for(lambda: "[#r] <alice> said live" in carol.screen.rendered())
    carol.type("/history")  # everything was shown: nothing before "line 0"
    assert carol.screen.markers() == ["-- no earlier messages in #r --"]


def test_history_asks_in_the_current_room_and_says_why_it_cannot(person, connect):
    said_in(connect, "#a", 3)
    said_in(connect, "#b", 3, nick="bob")
    carol = person("carol", "#a", "#b", history=1)
    carol.type("/switch #a")
    carol.type("/history 1")
    assert unstamped(carol.screen.block("-- 1 earlier message in #a --")) == ["[#a] <alice> line 1"]
    hints = []
    for line in ("/history many", "/history 0", "/history 1 2"):
        carol.type(line)
        hints.append(carol.screen.lines()[-1])
    assert hints == [
        "now ! n is a number of lines, 1 or more; usage: /history [n]",
        "now ! n is a number of lines, 1 or more; usage: /history [n]",
        "now ! usage: /history [n]",
    ]
    carol.type("/leave #a")
    carol.type("/leave #b")
    carol.type("/history")
    assert carol.screen.lines()[-1] == "now ! no current room; usage: /history [n]"


def test_a_refusal_from_the_server_is_one_clear_line(person):
    carol = person("carol", "#r")
    carol.type("/raw CHATHISTORY LATEST #elsewhere * 5")
    assert carol.screen.lines()[-1] == (
        "now ! Cannot show the earlier lines of #elsewhere: No such room, or you are not in it"
    )


# -- a server that replays history itself --------------------------------------------------


@pytest.mark.parametrize(
    "missing",
    [
        # The server's replay on join comes as a `chathistory` batch.
        ("draft/chathistory",),
        # No batch either: between two notices of the server's.
        ("draft/chathistory", "batch"),
    ],
)
def test_without_chathistory_the_servers_replay_on_join_reads_the_same(
    person, connect, monkeypatch, missing
):
    for cap in missing:
        monkeypatch.delitem(caps.CAPABILITIES, cap)
    said_in(connect, "#r", 3)
    carol = person("carol", "#r")
    assert not set(missing) & carol.session.caps
    block = carol.screen.block("-- 3 earlier messages in #r --")
    assert block[-1] == "now -- now --"
    assert unstamped(block) == lines_said(0, 1, 2)
    carol.type("/history")
    assert carol.screen.lines()[-1] == (
        "now ! the server offers no history to ask for (no draft/chathistory)"
    )


def test_the_text_mode_shows_the_rooms_last_lines_each_at_its_own_time(connect):
    alice = connect("alice")
    alice.join("#r")
    for n in range(3):
        alice.send(f"PRIVMSG #r :line {n}")
    tim = connect()
    tim.send("/nick tim")
    tim.expect(r"MOTD")
    tim.send("/join #r")
    tim.expect(r"-- now --$")  # the replay on join
    alice.send("PRIVMSG #r :line 3")
    tim.expect(r"<alice> line 3$")
    tim.send("/history 2")
    assert [without_stamp(line) for line in tim.collect_until(r"-- now --$")] == [
        "-- 2 earlier messages in #r --",
        "[#r] <alice> line 2",
        "[#r] <alice> line 3",
        "-- now --",
    ]
    tim.send("/history five")
    tim.expect(r"n is a number of lines, 1 or more; usage: /history \[n\]$")


# -- cases a scripted server sets up -----------------------------------------------------------


@pytest.fixture
def fed() -> FedSession:
    """A session fed the server's lines, with the capabilities that history needs."""
    fed = FedSession()
    fed.feed(":srv CAP carol ACK :server-time message-tags batch draft/chathistory")
    return fed


def history_asked(fed: FedSession) -> list[list[str]]:
    return [list(msg.params) for msg in fed.link.sent if msg.command == "CHATHISTORY"]


def screen_of(fed: FedSession) -> list[str]:
    formatter = Formatter(colour=False, clock=lambda: "now")
    return [line for event in fed.recorder.events for line in formatter.lines(event)]


def tagged(msgid: str, line: str, batch: str | None = None) -> str:
    tags = f"msgid={msgid};time=2020-01-01T10:00:00.000Z"
    return f"@{tags};batch={batch} {line}" if batch else f"@{tags} {line}"


def test_a_line_said_while_the_answer_is_on_its_way_is_shown_once(fed):
    fed.feed(":carol!c@h JOIN #r")
    assert history_asked(fed) == [["LATEST", "#r", "*", "20"]]
    fed.feed(
        tagged("m3", ":bob!b@h PRIVMSG #r :said just now"),
        ":srv BATCH +h1 chathistory #r",
        tagged("m1", ":bob!b@h PRIVMSG #r :first", "h1"),
        tagged("m2", ":bob!b@h PRIVMSG #r :second", "h1"),
        tagged("m3", ":bob!b@h PRIVMSG #r :said just now", "h1"),
        ":srv BATCH -h1",
    )
    shown = [line for line in screen_of(fed) if "#r" in line or "--" in line]
    assert [re.sub(rf"^({SAID}|now) ", "", line) for line in shown] == [
        "* You joined #r",
        "[#r] <bob> said just now",
        "-- 2 earlier messages in #r --",
        "[#r] <bob> first",
        "[#r] <bob> second",
        "-- now --",
    ]
    # Said on another day: the date, then the time, in local time.
    assert re.match(r"2020-01-0[12] \d\d:\d\d \[#r\] <bob> first$", shown[3]), shown
    assert fed.session.ask_history("#r", 5) is None  # before the oldest shown: m1
    assert history_asked(fed)[-1] == ["BEFORE", "#r", "msgid=m1", "5"]


def test_history_lines_are_shown_and_never_acted_on(fed):
    fed.feed(
        ":carol!c@h JOIN #r",
        ":srv BATCH +h1 chathistory #r",
        tagged("m1", ":bob!b@h PRIVMSG #r :\x01VERSION\x01", "h1"),
        tagged("m2", ":dave!d@h JOIN #r", "h1"),  # another server's event-playback
        tagged("m3", ":carol!c@h PRIVMSG #r :my own old line", "h1"),
        ":srv BATCH -h1",
    )
    assert not any(msg.command == "NOTICE" for msg in fed.link.sent)  # no CTCP answered
    assert fed.session.view().members == ("carol",)
    assert "[#r] <carol> my own old line" in fed.recorder.rendered()


def test_a_rejoin_after_a_lost_link_asks_for_what_was_missed(fed):
    fed.feed(
        ":carol!c@h JOIN #r",
        ":srv BATCH +h1 chathistory #r",
        tagged("m1", ":bob!b@h PRIVMSG #r :before", "h1"),
        ":srv BATCH -h1",
        tagged("m2", ":bob!b@h PRIVMSG #r :live"),
    )
    link = fed.reconnect()
    fed.feed(":carol!c@h JOIN #r")
    assert [list(m.params) for m in link.sent if m.command == "CHATHISTORY"] == [
        ["LATEST", "#r", "msgid=m2", "20"]
    ]
    fed.feed(":srv BATCH +h2 chathistory #r", ":srv BATCH -h2")  # nothing missed
    assert screen_of(fed)[-1].endswith("* You joined #r")
    fed.feed(":carol!c@h PART #r", ":carol!c@h JOIN #r")  # a new visit: the last lines
    assert [list(m.params) for m in link.sent if m.command == "CHATHISTORY"][-1] == [
        "LATEST",
        "#r",
        "*",
        "20",
    ]


def test_a_refused_request_is_one_line_and_the_next_may_go(fed):
    fed.feed(":carol!c@h JOIN #r", ":srv BATCH +h1 chathistory #r", ":srv BATCH -h1")
    assert fed.session.ask_history("#r", 5) is None
    assert history_asked(fed)[-1] == ["LATEST", "#r", "*", "5"]  # nothing shown yet
    assert fed.session.ask_history("#r", 5) == "still waiting for the earlier lines of #r"
    fed.feed(":srv FAIL CHATHISTORY MESSAGE_ERROR LATEST #r :History could not be read")
    assert screen_of(fed)[-1] == (
        "now ! Cannot show the earlier lines of #r: History could not be read"
    )
    assert fed.session.ask_history("#r", 5) is None


def test_without_a_msgid_the_reference_is_the_time(fed):
    fed.feed(
        ":carol!c@h JOIN #r",
        ":srv BATCH +h1 chathistory #r",
        "@time=2020-01-01T10:00:00.000Z;batch=h1 :bob!b@h PRIVMSG #r :old",
        ":srv BATCH -h1",
    )
    assert fed.session.ask_history("#r", 3) is None
    assert history_asked(fed)[-1] == ["BEFORE", "#r", "timestamp=2020-01-01T10:00:00.000Z", "3"]


def test_an_other_batch_is_shown_as_it_comes(fed):
    fed.feed(
        ":carol!c@h JOIN #r",
        ":srv BATCH +n1 netsplit a.example b.example",
        "@batch=n1 :bob!b@h QUIT :a.example b.example",
        ":srv BATCH -n1",
    )
    assert fed.recorder.rendered()[-1] == "* bob quit (a.example b.example)"
