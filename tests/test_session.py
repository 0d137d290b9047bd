"""The session layer and the handlers, driven with no socket and no thread (issue 10): a
`Harness` (tests/helpers.py) holds a World and the Dispatcher with the real command table;
each `Peer` is a `Session` fed lines directly, its output kept as bytes."""

from __future__ import annotations

import re

import pytest
from helpers import COMMANDS, SERVER, Harness, make_config, prefix

from ircish import protocol as p
from ircish.commands import DEFAULT_COST
from ircish.protocol import Message
from ircish.session import IRC, TEXT, Session
from ircish.world import User

# -- lines in: the session's decisions ------------------------------------------------------


class FakeClock:
    """Time that moves only when a test says so (ergo's fakelag tests inject one too)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def session(clock: FakeClock | None = None, **settings: object) -> Session:
    config = make_config(**settings)
    user = User(None, "127.0.0.1")  # type: ignore[arg-type]
    return Session(user, COMMANDS, config.limits, SERVER, clock=clock or FakeClock())


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        ("NICK carol", IRC),
        ("CAP LS 302", IRC),
        ("PASS secret", IRC),
        ("USER carol 0 * :Carol", IRC),
        ("/nick carol", TEXT),
        ("hello there", TEXT),
        ("frobnicate the thing", TEXT),
        (":::", TEXT),
        # Words a person types that happen to name IRC commands (issue 11).
        ("help", TEXT),
        ("nick ivan", TEXT),
        ("list", TEXT),
        ("join #general", TEXT),
        ("Nick ivan", TEXT),
    ],
)
def test_the_first_line_decides_the_kind(first, kind):
    s = session()
    s.take(first.encode())
    assert s.kind == kind
    s.take(b"NICK x")
    assert s.kind == kind  # an IRC line never changes it


def test_a_person_taken_for_irc_becomes_text_with_a_slash_command():
    s = session()
    s.take(b"HELP")
    assert s.kind == IRC
    inbound = s.take(b"/nick ivan")
    assert s.kind == TEXT
    assert inbound.message == Message("NICK", ["ivan"])


@pytest.mark.parametrize("opening", ["CAP LS 302", "PASS secret"])
def test_a_client_that_negotiated_stays_irc_whatever_it_sends(opening):
    peer = Harness().connect()
    peer.line(opening)
    peer.line("/nick x")
    assert peer.session.kind == IRC
    assert any(" 421 * /NICK " in line for line in peer.lines())


@pytest.mark.parametrize("line", ["help", "nick ivan", "join #general"])
def test_a_command_without_its_slash_before_registration_is_explained(line):
    inbound = session().take(line.encode())
    assert inbound.message is None
    assert inbound.refusal == Message(
        "FAIL", ["*", "USAGE", f"Commands start with a slash: type /{line}"], SERVER
    )


def test_an_irc_line_becomes_its_message():
    inbound = session().take(b"PRIVMSG #r :hello there")
    assert inbound.message == Message("PRIVMSG", ["#r", "hello there"])
    assert inbound.refusal is None and inbound.alive and inbound.wait == 0


def test_a_text_line_goes_to_the_current_room():
    harness = Harness()
    carol = harness.connect()
    carol.line("/nick carol")
    carol.line("/join #r")
    carol.lines()
    inbound = carol.session.take(b"hello")
    assert inbound.message == Message("PRIVMSG", ["#r", "hello"])
    assert carol.session.take(b"//etc/passwd is a path").message == Message(
        "PRIVMSG", ["#r", "/etc/passwd is a path"]
    )


@pytest.mark.parametrize(
    ("line", "refusal"),
    [
        (
            b"PRIVMSG #a :" + b"x" * 600,
            f":{SERVER} {p.ERR_INPUTTOOLONG} * :Input line was too long",
        ),
        (b"NICK \xff\xfe", f":{SERVER} FAIL * INVALID_UTF8 :Message rejected: not valid UTF-8"),
        (
            b"NICK a\rb",
            f":{SERVER} {p.ERR_UNKNOWNERROR} * NICK :Line refused: it contains NUL or CR",
        ),
        (b"JOIN :", None),  # parses: the handler answers 461
        (b"J0IN #r", f":{SERVER} {p.ERR_UNKNOWNCOMMAND} * J0IN :Unknown command"),
    ],
)
def test_refusals_are_decided_in_the_session(line, refusal):
    s = session()
    s.take(b"NICK first")  # an IRC session
    inbound = s.take(line)
    if refusal is None:
        assert inbound.message is not None and inbound.refusal is None
    else:
        assert inbound.message is None
        assert inbound.refusal is not None and inbound.refusal.to_line() == refusal
        assert inbound.note  # said in the log


def test_flood_costs_are_decided_in_the_session():
    s = session(flood_burst=10, flood_rate=2.0, flood_disconnect_seconds=60.0)
    assert s.take(b"NICK a").wait == 0  # 2 tokens
    assert s.take(b"JOIN #a,#b,#c").wait == 0  # 3: one per room
    assert s.take(b"PRIVMSG #a,#b :hi").wait == 0  # 2
    inbound = s.take(b"JOIN #d,#e,#f,#g,#h")  # 5: now 2 in debt
    assert inbound.wait == 1.0
    assert s.take(b"PONG :x").wait == 0  # free, so never held back


def test_blank_lines_cost_a_token_and_show_no_life():
    s = session(flood_burst=2, flood_rate=1.0, flood_disconnect_seconds=60.0)
    first = s.take(b"   ")
    assert not first.alive and first.message is None and first.refusal is None
    s.take(b"")
    assert s.take(b"").wait == DEFAULT_COST / 1.0


def test_tokens_come_back_with_time():
    clock = FakeClock()
    s = session(clock, flood_burst=2, flood_rate=4.0, flood_disconnect_seconds=60.0)
    s.take(b"JOIN #a,#b")
    assert s.take(b"JOIN #c").wait == 0.25
    clock.now += 1.0  # 4 tokens back, but the bucket holds 2
    assert s.take(b"JOIN #d,#e").wait == 0
    assert s.take(b"JOIN #f").wait == 0.25


def test_flooding_past_the_limit_is_excess_flood():
    s = session(flood_burst=2, flood_rate=1.0, flood_disconnect_seconds=3.0)
    assert not s.take(b"JOIN #a,#b,#c").excess_flood
    assert s.take(b"JOIN #d,#e,#f,#g").excess_flood


# -- messages out: encoding by kind ----------------------------------------------------------


def test_a_text_session_gets_human_lines_and_no_wire_format():
    harness = Harness()
    carol = harness.connect()
    carol.line("/nick carol")
    assert carol.session.kind == TEXT and carol.session.wire_format is None
    line = carol.session.encode(Message("PRIVMSG", ["carol", "hi"], prefix("bob")))
    assert re.fullmatch(rb"\d\d:\d\d \[private\] <bob> hi\r\n", line), line
    assert carol.session.encode(Message("PING", ["x"])) == b""


def text_session(clock: FakeClock | None = None, **settings: object) -> Session:
    config = make_config(**settings)
    user = User(None, "127.0.0.1")  # type: ignore[arg-type]
    made = Session(
        user, COMMANDS, config.limits, SERVER, clock=clock or FakeClock(), stamp=lambda: "12:34 "
    )
    made.take(b"/nick carol")
    user.nick = "carol"
    return made


def test_a_person_is_told_once_per_slowed_spell():
    clock = FakeClock()
    carol = text_session(clock, flood_burst=3, flood_rate=2.0, flood_disconnect_seconds=60.0)
    clock.now += 10  # a full bucket (the /nick line cost one)
    told = [carol.take(f"/msg bob line {n}".encode()).notice for n in range(6)]
    assert [notice is not None for notice in told] == [False] * 3 + [True] + [False] * 2
    assert told[3] is not None and told[3].params[1] == "SLOWED"
    clock.now += 10  # caught up: the next spell is told again
    assert carol.take(b"/msg bob calm").notice is None
    told = [carol.take(f"/msg bob again {n}".encode()).notice for n in range(4)]
    assert [notice is not None for notice in told] == [False, False, True, False]


def test_an_irc_client_is_never_told_it_is_slowed():
    clock = FakeClock()
    s = session(clock, flood_burst=1, flood_rate=1.0, flood_disconnect_seconds=60.0)
    assert [s.take(b"PRIVMSG bob :hi").notice for _ in range(4)] == [None] * 4


def test_a_text_sessions_lines_start_with_the_time():
    carol = text_session()
    assert carol.encode(Message("NOTICE", ["carol", "hi"], prefix("bob"))) == (
        b"12:34 -bob- hi\r\n"
    )


def test_who_rows_come_as_one_aligned_table_with_a_heading():
    carol = text_session()
    rows = [
        Message(p.RPL_WHOREPLY, ["carol", "#r", "u", "h", SERVER, nick, "H", "0 Real"], SERVER)
        for nick in ("al", "bartholomew")
    ]
    assert [carol.encode(row) for row in rows] == [b"", b""]  # held for the table
    end = carol.encode(Message(p.RPL_ENDOFWHO, ["carol", "#r", "End of WHO list"], SERVER))
    assert end.decode().split("\r\n")[:-1] == [
        "12:34 Users in #r:",
        "12:34   #r  al           u@h  Real",
        "12:34   #r  bartholomew  u@h  Real",
    ]


# -- handlers through the session layer ------------------------------------------------------


def test_join_and_names_through_sessions():
    harness = Harness()
    alice, bob = harness.connect("alice"), harness.connect("bob")
    alice.line("JOIN #r")
    assert alice.lines() == [
        f":{prefix('alice')} JOIN #r",
        f":{SERVER} 353 alice = #r :@alice",
        f":{SERVER} 366 alice #r :End of /NAMES list",
    ]
    bob.line("JOIN #r")
    assert alice.lines() == [f":{prefix('bob')} JOIN #r"]
    assert bob.lines()[1] == f":{SERVER} 353 bob = #r :@alice bob"


def test_privmsg_reaches_the_room_but_not_its_sender():
    harness = Harness()
    alice, bob, carol = (harness.connect(n) for n in ("alice", "bob", "carol"))
    for peer in (alice, bob, carol):
        peer.line("JOIN #r")
    for peer in (alice, bob, carol):
        peer.lines()
    alice.line("PRIVMSG #r :hello")
    assert alice.lines() == []
    assert bob.lines() == carol.lines() == [f":{prefix('alice')} PRIVMSG #r :hello"]


def test_dispatch_checks_the_table_before_the_handler():
    harness = Harness()
    newcomer = harness.connect()
    newcomer.line("JOIN #r")
    assert newcomer.lines() == [f":{SERVER} 451 * :You have not registered"]
    alice = harness.connect("alice")
    alice.line("KICK #r")
    assert alice.lines() == [
        f":{SERVER} 461 alice KICK :Not enough parameters "
        "(usage: KICK <#room>{,<#room>} <nick>{,<nick>} [:<reason>])"
    ]
    alice.line("FROB")
    assert alice.lines() == [f":{SERVER} 421 alice FROB :Unknown command"]


def test_a_text_session_registers_and_talks():
    harness = Harness()
    alice = harness.connect("alice")
    alice.line("JOIN #r")
    alice.lines()
    carol = harness.connect()
    carol.line("/nick carol")
    assert carol.user.registered
    carol.line("/join #r")
    assert "* You joined #r" in carol.lines()
    carol.line("hi all")
    assert alice.lines()[-1] == f":{prefix('carol', 'carol')} PRIVMSG #r :hi all"


def test_the_dispatcher_refuses_an_empty_table():
    from ircish.dispatch import Dispatcher
    from ircish.world import World

    with pytest.raises(ValueError, match="command table is empty"):
        Dispatcher({}, World(), make_config())
