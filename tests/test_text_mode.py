"""Text mode over real sockets: a connection that starts with a slash command or plain text
is a person on `nc`; what it types goes through ircish/slash.py, what it receives comes out
of ircish/render.py, and it shares rooms with IRC clients."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from helpers import HOST, Client, prefix

from ircish import protocol as p

ROOM = "#general"


def text_prefix(nick: str) -> str:
    """A text session's username is its nick."""
    return prefix(nick, nick)


#: carol's prefix, as a pattern: every test's text session is carol.
CAROL = re.escape(text_prefix("carol"))


def sync_text(client: Client) -> list[str]:
    """Every line a registered text session got before a fresh marker reply.

    PONG is hidden in text mode, so the marker is the rendered 401 of a WHOIS
    for a nick nobody has; the server handles one connection's lines in order.
    """
    token = f"sync{time.monotonic_ns()}"
    client.send(f"/whois {token}")
    return client.collect_until(rf"^! No such nick: {token}$")[:-1]


def text_session(connect: Callable[..., Client], nick: str, **kw: object) -> Client:
    """A text session registered with `/nick` alone, its welcome burst consumed."""
    client = connect(**kw)
    client.nick = nick
    client.send(f"/nick {nick}")
    client.expect(rf"^Welcome to the \S+ Network, {re.escape(text_prefix(nick))}$")
    sync_text(client)
    return client


def text_join(client: Client, room: str) -> None:
    client.send(f"/join {room}")
    client.expect(rf"^Users in {re.escape(room)}: ")


def irc_then_text(connect: Callable[..., Client], *rooms: str) -> tuple[Client, Client]:
    """bob (IRC) joins `rooms`, then carol (text) joins them in order: the last is current."""
    bob = connect("bob")
    bob.join(*rooms)
    carol = text_session(connect, "carol")
    for room in rooms:
        text_join(carol, room)
    return bob, carol


def text_then_irc(connect: Callable[..., Client]) -> tuple[Client, Client]:
    """carol (text) joins ROOM, then bob (IRC) does; carol has seen him arrive."""
    carol = text_session(connect, "carol")
    text_join(carol, ROOM)
    bob = connect("bob")
    bob.join(ROOM)
    carol.expect(rf"^\* bob joined {ROOM}$")
    return bob, carol


def test_nick_alone_registers_a_text_session_that_sees_human_lines(connect):
    carol = connect()
    carol.send("/nick carol")
    lines = carol.collect_until(r"^Welcome to the ")
    # Anything before the welcome is the greeting sent before the session kind was known.
    burst = lines[-1:] + sync_text(carol)

    assert burst[0] == f"Welcome to the ircish Network, {text_prefix('carol')}"
    assert "MOTD File is missing" in burst
    assert "-test.server- Type /help for commands, /list for rooms, /join #room to join." in burst
    raw = [line for line in burst if line.startswith(":") or re.match(r"\d{3} ", line)]
    assert raw == []


def test_plain_text_before_nick_asks_for_a_nick(connect):
    dave = connect()
    dave.send("hello is anyone there")
    dave.expect(r"^! .*/nick")
    dave.send("/nick dave")
    dave.expect(rf"^Welcome to the ircish Network, {re.escape(text_prefix('dave'))}$")


@pytest.mark.parametrize(
    ("action", "shown"),
    [
        (f"PRIVMSG {ROOM} :hi there", f"[{ROOM}] <bob> hi there"),
        (f"PRIVMSG {ROOM} :\x01ACTION waves\x01", f"[{ROOM}] * bob waves"),
        (f"PART {ROOM} :gotta go", f"* bob left {ROOM} (gotta go)"),
        ("QUIT :bye", "* bob quit (Quit: bye)"),
        ("NICK robert", "* bob is now known as robert"),
        (f"TOPIC {ROOM} :fresh paint", f"* bob changed the topic of {ROOM} to: fresh paint"),
    ],
    ids=["privmsg", "action", "part", "quit", "nick", "topic"],
)
def test_text_user_sees_irc_users_events_rendered(connect, action, shown):
    # bob founds ROOM, so he may set its topic (+t).
    bob, carol = irc_then_text(connect, ROOM)

    bob.send(action)
    carol.expect(rf"^{re.escape(shown)}$")


def test_irc_user_sees_text_users_join_message_and_leave(connect):
    dave = connect("dave")
    dave.join(ROOM)
    carol = text_session(connect, "carol")

    carol.send(f"/join {ROOM}")
    carol.expect(rf"^\* You joined {ROOM}$")
    carol.expect(rf"^Users in {ROOM}: @dave carol$")
    dave.expect(rf"^:{CAROL} JOIN {ROOM}$")

    carol.send("hello everyone")
    dave.expect(rf"^:{CAROL} PRIVMSG {ROOM} :hello everyone$")

    carol.send("/leave")
    carol.expect(rf"^\* You left {ROOM}$")
    dave.expect(rf"^:{CAROL} PART {ROOM}$")


def test_private_messages_both_ways(connect):
    carol = text_session(connect, "carol")
    bob = connect("bob")

    carol.send("/msg bob hi there")
    bob.expect(rf"^:{CAROL} PRIVMSG bob :hi there$")
    carol.expect(r"^-> \*bob\* hi there$")

    bob.send("PRIVMSG carol :yo carol")
    carol.expect(r"^\[private\] <bob> yo carol$")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/msg dave hi", r"! No such nick: dave"),
        ("/frobnicate", r"! Unknown command: FROBNICATE"),
        ("/frobnicate now please", r"! Unknown command: FROBNICATE"),
        ("/msg bob", r"! usage: /msg <nick\|#room> <text>"),
        ("/msg bob    ", r"! usage: /msg <nick\|#room> <text>"),
        ("/join", r"! usage: /join .*"),
        ("/whois", r"! usage: /whois <nick>"),
        ("/me", r"! .*/join.*"),
        ("plain text in no room", r"! .*\broom\b.*"),
    ],
    ids=[
        "no-such-nick",
        "unknown-slash",
        "unknown-slash-with-args",
        "msg-without-text",
        "msg-blank-text",
        "join-without-room",
        "whois-without-nick",
        "me-without-room",
        "plain-text-without-room",
    ],
)
def test_errors_render_as_bang_lines_and_send_nothing(connect, line, error):
    bob = connect("bob")
    carol = text_session(connect, "carol")

    carol.send(line)
    got = sync_text(carol)

    assert len(got) == 1, got
    assert re.fullmatch(error, got[0]), got
    assert [x for x in bob.sync() if "PRIVMSG" in x or "NOTICE" in x] == []


def test_plain_text_goes_to_last_joined_room_and_leave_returns_to_previous(connect):
    bob, carol = irc_then_text(connect, "#a", "#b")

    carol.send("first words")
    bob.expect(rf"^:{CAROL} PRIVMSG #b :first words$")

    carol.send("/leave")
    carol.expect(r"^\* You left #b$")
    bob.expect(rf"^:{CAROL} PART #b$")

    carol.send("second words")
    bob.expect(rf"^:{CAROL} PRIVMSG #a :second words$")


def test_leave_names_a_room_and_a_reason(connect):
    bob, carol = irc_then_text(connect, "#a", "#b")

    carol.send("/leave #a see you all")
    carol.expect(r"^\* You left #a \(see you all\)$")
    bob.expect(rf"^:{CAROL} PART #a :see you all$")

    carol.send("still in b")  # the current room is untouched
    bob.expect(rf"^:{CAROL} PRIVMSG #b :still in b$")


def test_me_sends_a_ctcp_action_to_the_current_room(connect):
    bob, carol = irc_then_text(connect, ROOM)

    carol.send("/me waves")
    bob.expect(rf"^:{CAROL} PRIVMSG {ROOM} :\x01ACTION waves\x01$")


def test_topic_sets_and_shows_the_current_rooms_topic(connect):
    # carol founds ROOM, so she may set its topic (+t).
    bob, carol = text_then_irc(connect)

    carol.send("/topic new topic")
    bob.expect(rf"^:{CAROL} TOPIC {ROOM} :new topic$")
    carol.expect(rf"^\* carol changed the topic of {ROOM} to: new topic$")

    carol.send("/topic")
    got = sync_text(carol)
    assert got[0] == f"Topic for {ROOM}: new topic"
    assert re.fullmatch(r"Topic set by carol on \d{4}-\d\d-\d\d \d\d:\d\d", got[1]), got
    assert len(got) == 2


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "/who",
            [  # one table, its columns aligned, as ircish-client shows it
                rf"Users in {ROOM}:",
                rf"  {ROOM}  @carol  carol@{HOST}  carol",
                rf"  {ROOM}  bob     u@{HOST}      Real Name",
            ],
        ),
        (f"/who {ROOM}", [rf"Users in {ROOM}:", rf"  {ROOM}  @carol  .*", rf"  {ROOM}  bob  .*"]),
        ("/names", [rf"Users in {ROOM}: @carol bob"]),
        ("/list", [r"Rooms:", rf"  {ROOM}  2 users"]),
        (
            "/whois bob",
            [
                rf"bob is bob!u@{HOST} \(Real Name\)",
                rf"bob is in: {ROOM}",
                r"bob is on test\.server \(ircish\)",
                r"bob has been idle \d+s, signed on \d{4}-\d\d-\d\d \d\d:\d\d",
            ],
        ),
        ("/away brb", [r"You have been marked as being away"]),
    ],
    ids=["who", "who-room", "names", "list", "whois", "away"],
)
def test_queries_give_readable_lines(connect, line, expected):
    _, carol = text_then_irc(connect)  # carol founds ROOM: she is listed as @carol

    carol.send(line)
    got = sync_text(carol)

    assert len(got) == len(expected), got
    for pattern, text in zip(expected, got, strict=True):
        assert re.fullmatch(pattern, text), (pattern, text)


def test_away_is_seen_by_others(connect):
    carol = text_session(connect, "carol")
    bob = connect("bob")

    carol.send("/away back soon")
    carol.expect(r"^You have been marked as being away$")
    bob.send("WHOIS carol")
    bob.expect(rf"^:test\.server {p.RPL_AWAY} bob carol :back soon$")


def test_help_lists_every_command_with_its_syntax(connect):
    carol = text_session(connect, "carol")

    carol.send("/help")
    got = sync_text(carol)

    assert any(line.startswith("/join <#room>") for line in got), got
    assert any(line.startswith("/msg <nick|#room> <text>") for line in got), got
    # What a newcomer was missing (issue 11): the room switch and the server password.
    assert any(line.startswith("/switch <#room>") for line in got), got
    assert any(line.startswith("/pass <password>") for line in got), got
    listed = {line.split()[0] for line in got if line.startswith("/")}
    design = {"/nick", "/join", "/msg", "/who", "/leave", "/quit", "/me", "/topic"}
    design |= {"/list", "/names", "/whois", "/away", "/help"}
    assert design <= listed, design - listed


def test_quit_closes_the_connection_and_others_see_the_quit(connect):
    bob, carol = irc_then_text(connect, ROOM)

    carol.send("/quit bye")
    carol.expect_closed()
    bob.expect(rf"^:{CAROL} QUIT :Quit: bye$")


def test_closing_error_is_rendered_for_a_text_session(connect):
    carol = text_session(connect, "carol")

    carol.send("/quit bye")
    assert carol.expect_closed() == [f"! Closing Link: {HOST} (Quit: bye)"]


def test_text_session_gets_no_server_ping(start_server, connect):
    srv = start_server(ping_interval=0.3, ping_timeout=0.3)
    carol = text_session(connect, "carol", target=srv)
    bob = connect("bob", target=srv)  # an IRC client that never answers PING

    bob.expect(r"^PING ", timeout=2.0)
    # If the server pinged carol it would also drop her for never answering.
    assert carol.quiet(1.0) == []
    assert sync_text(carol) == []


@pytest.mark.parametrize("bad", ["ab\x00cd", "a\rb"])
def test_nul_or_cr_in_plain_text_is_refused_cleanly(connect, caplog, bad):
    bob, carol = irc_then_text(connect, ROOM)
    carol.send(bad.encode() + b"\n")
    lines = sync_text(carol)
    assert lines == ["! Line refused: it contains NUL or CR"]
    assert not any(record.exc_info for record in caplog.records)
    assert [m for m in bob.messages() if m.command == "PRIVMSG"] == []
    carol.send("still here")
    bob.expect(rf"^:{CAROL} PRIVMSG {ROOM} :still here$")


def test_own_nick_change_reads_as_you(connect):
    carol = text_session(connect, "carol")
    carol.send("/nick caroline")
    assert "* You are now known as caroline" in sync_text(carol)


def test_moderation_reads_as_sentences_and_works_from_a_text_session(connect):
    """carol (nc) creates the room, so she is its operator: her /op, /voice, /mode and
    /kick go out through the slash table; bob (IRC) gets the IRC lines, carol sentences."""
    bob, carol = text_then_irc(connect)
    dave = connect("dave")
    dave.join(ROOM)
    carol.expect(rf"^\* dave joined {ROOM}$")
    carol.send("/op bob")
    bob.expect(rf"^:{CAROL} MODE {ROOM} \+o bob$")
    carol.expect(rf"^\* You give operator to bob in {ROOM}$")
    bob.send(f"MODE {ROOM} +mv dave")
    carol.expect(rf"^\* bob moderates {ROOM} and gives voice to dave$")
    carol.send("/kick dave be nice")
    bob.expect(rf"^:{CAROL} KICK {ROOM} dave :be nice$")
    carol.expect(rf"^\* You kicked dave from {ROOM} \(be nice\)$")
    bob.send(f"KICK {ROOM} carol :your turn")
    carol.expect(rf"^\* You were kicked from {ROOM} by bob \(your turn\)$")
    carol.send("anyone?")  # no room left: the line is refused, not sent anywhere
    carol.expect(r"^! You are in no room: /join #room$")
    carol.send(f"/join {ROOM}")
    carol.expect(rf"^Users in {ROOM}: @bob carol$")


def test_a_text_user_who_is_not_an_operator_is_told_so(connect):
    bob, carol = irc_then_text(connect, ROOM)
    carol.send("/op carol")
    carol.expect(r"^! You're not a room operator: #general$")
    carol.send("/kick bob")
    carol.expect(r"^! You're not a room operator: #general$")
    assert not [x for x in bob.sync() if " MODE " in x or " KICK " in x]


def test_register_and_login_reach_nickserv_from_the_text_mode(connect):
    """The slash table's /register and /login rows: a person on nc has accounts too."""
    carol = text_session(connect, "carol")
    carol.send("/register hunter22x")
    carol.expect(r"^-NickServ- Account carol registered; you are logged in$")
    carol.send("/msg NickServ LOGOUT")
    carol.send("/login wrong-one")
    carol.expect(r"^-NickServ- Invalid account name or password$")
    carol.send("/login carol hunter22x")
    carol.expect(r"^-NickServ- You are now logged in as carol$")
    lines = sync_text(carol)
    assert not any("hunter22x" in line for line in carol.lines + lines)  # never said back
