"""ircish-client and IRCv3 capabilities (issue 12): what it asks for during registration, and
what each capability changes on screen. Against a pretend server on a real loopback socket
(`FakeServer`: the test writes the server's lines, so it can offer, refuse or tag anything)
and against a real ircish server in the test process."""

from __future__ import annotations

import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pytest
from helpers import TIMEOUT, wait_for
from test_client import STAMP, ClientProcess, client_env

from ircish import caps
from ircish.client.session import WANTED_CAPS
from ircish.protocol import Message

ALL_WANTED = " ".join(WANTED_CAPS)


class FakeServer:
    """One client's link to a pretend IRC server on 127.0.0.1. A reader thread queues the
    client's lines; it answers the PINGs of the scripted client's `sync` itself (each typed
    line waits for one), and leaves every other line, the PINGs that confirm a message
    included, to the test."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.port: int = self.listener.getsockname()[1]
        self.peer: socket.socket | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def accept(self) -> None:
        self.peer, _ = self.listener.accept()
        self.peer.settimeout(TIMEOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.peer is not None
        buffer = b""
        try:
            while data := self.peer.recv(65536):
                *lines, buffer = (buffer + data).split(b"\n")
                for raw in lines:
                    line = raw.rstrip(b"\r").decode()
                    token = line.removeprefix("PING ").lstrip(":")
                    if line.startswith("PING ") and token.startswith("ircish-sync-"):
                        self.send(f":fake PONG fake :{token}")
                    else:
                        self._lines.put(line)
        except OSError:
            pass
        self._lines.put(None)

    def send(self, *lines: str) -> None:
        assert self.peer is not None
        with self._send_lock:
            self.peer.sendall("".join(line + "\r\n" for line in lines).encode())

    def collect_until(self, pattern: str) -> list[str]:
        """The client's lines up to and including the first matching `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + TIMEOUT
        got: list[str] = []
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the client never sent {pattern!r}; got {got}")
            if line is None:
                pytest.fail(f"the client closed the link before {pattern!r}; got {got}")
            got.append(line)
            if regex.search(line):
                return got

    def expect(self, pattern: str) -> re.Match[str]:
        line = self.collect_until(pattern)[-1]
        match = re.search(pattern, line)
        assert match is not None
        return match

    def confirm(self, *lines: str) -> None:
        """Answer the PING that follows a message the client sent, after `lines`."""
        token = self.expect(r"^PING :?(ircish-echo-\d+)$").group(1)
        self.send(*lines, f":fake PONG fake :{token}")

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()
        self.listener.close()
        if self._reader is not None:
            self._reader.join(TIMEOUT)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def client_of(fake) -> Iterator[Callable[..., ClientProcess]]:
    """Start the scripted client (carol) against `fake` and accept its connection."""
    started: list[ClientProcess] = []

    def start(**env: str) -> ClientProcess:
        client = ClientProcess("--nick", "carol", "--port", str(fake.port), env=client_env(**env))
        started.append(client)
        fake.accept()
        fake.expect(r"^USER ")
        return client

    yield start
    for client in started:
        client.close_stdin()
        fake.close()  # the client's QUIT gets no answer: it must not wait for one
        client.stop()


def welcome(fake: FakeServer, client: ClientProcess) -> None:
    """Registration done: 001, and carol is in #r."""
    fake.send(":fake 001 carol :Welcome to the fake network", ":carol!c@h JOIN #r")
    client.expect(rf"{STAMP}\* You joined #r$")


def registered_with(fake: FakeServer, client: ClientProcess, acked: str) -> None:
    """Offer every capability, acknowledge `acked`, then welcome."""
    fake.send(f":fake CAP * LS :{ALL_WANTED} labeled-response")
    fake.expect(r"^CAP REQ ")
    fake.send(f":fake CAP * ACK :{acked}")
    fake.expect(r"^CAP END$")
    welcome(fake, client)


# -- negotiation ------------------------------------------------------------------------------


def test_it_requests_what_it_uses_of_what_is_offered_in_one_req_then_ends(fake, client_of):
    client = client_of()
    fake.send(
        ":fake CAP * LS * :sasl=PLAIN,EXTERNAL server-time multi-prefix labeled-response",
        ":fake CAP * LS :echo-message away-notify draft/chathistory batch message-tags",
    )
    lines = fake.collect_until(r"^CAP ")
    assert lines[-1] == f"CAP REQ :{ALL_WANTED}"  # not sasl, not labeled-response
    fake.send(f":fake CAP * ACK :{ALL_WANTED}")
    assert fake.collect_until(r"^CAP ") == ["CAP END"]  # after the ACK, not before
    welcome(fake, client)


def test_only_what_is_offered_is_requested_and_a_302_ls_is_read_to_its_last_line(fake, client_of):
    client = client_of()
    fake.send(":fake CAP * LS * :account-notify", ":fake CAP * LS :server-time=x cap-notify")
    assert fake.collect_until(r"^CAP ") == ["CAP REQ server-time"]  # one word: no ':' needed
    fake.send(":fake CAP * ACK :server-time")
    fake.expect(r"^CAP END$")
    welcome(fake, client)


@pytest.mark.parametrize(
    ("answer", "then"),
    [
        # A server from before CAP: it registers us without CAP END.
        ([":fake 421 * CAP :Unknown command"], None),
        # A server that offers nothing, or nothing we use: END at once.
        ([":fake CAP * LS :"], "CAP END"),
        ([":fake CAP * LS :sasl account-tag"], "CAP END"),
        # A refused request (all or nothing): END, and on without any.
        ([":fake CAP * LS :echo-message server-time"], "CAP REQ :server-time echo-message"),
    ],
)
def test_a_server_that_offers_none_still_works_and_own_lines_show_when_confirmed(
    fake, client_of, answer, then
):
    client = client_of()
    fake.send(*answer)
    if then is not None:
        assert fake.collect_until(r"^CAP ") == [then]
    if then and then.startswith("CAP REQ"):
        fake.send(":fake CAP * NAK :server-time echo-message")
        assert fake.collect_until(r"^CAP ") == ["CAP END"]
    welcome(fake, client)
    client.send("hello")
    fake.expect(r"^PRIVMSG #r :hello$")
    fake.confirm(":bob!b@h PRIVMSG #r :before the pong")
    lines = client.collect_until(rf"{STAMP}\[#r\] <carol> hello$")  # shown at the PONG
    assert any("<bob> before the pong" in line for line in lines)
    assert not any("Unknown command" in line or "CAP" in line for line in client.seen)


# -- server-time ------------------------------------------------------------------------------


@pytest.mark.parametrize(("tz", "shown"), [("UTC", "10:00"), ("EET-2", "12:00")])
def test_the_time_shown_is_the_lines_own_time_tag_in_local_time(fake, client_of, tz, shown):
    client = client_of(TZ=tz)
    registered_with(fake, client, "server-time")
    fake.send("@time=2020-01-01T10:00:00.000Z :bob!b@h PRIVMSG #r :said long ago")
    # From an earlier day: the date is shown too.
    client.expect(rf"^2020-01-01 {shown} \[#r\] <bob> said long ago$")
    today = datetime.now(timezone.utc).strftime("%Y-%m-%dT00:01:00.000Z")
    fake.send(f"@time={today};msgid=x1;+typing=done :bob!b@h PRIVMSG #r :early today")
    if tz == "UTC":  # today: the time alone
        client.expect(r"^00:01 \[#r\] <bob> early today$")
    fake.send("@time=garbage :bob!b@h PRIVMSG #r :no time", ":bob!b@h PRIVMSG #r :untagged")
    client.expect(rf"{STAMP}\[#r\] <bob> no time$")  # arrival time instead
    client.expect(rf"{STAMP}\[#r\] <bob> untagged$")


# -- echo-message -----------------------------------------------------------------------------


def test_with_echo_message_own_lines_show_as_the_server_relays_them(fake, client_of):
    client = client_of(TZ="UTC")
    registered_with(fake, client, ALL_WANTED)
    client.send("hi there")
    fake.expect(r"^PRIVMSG #r :hi there$")
    # The echo comes before the PONG; its time (the server's) is the time shown.
    fake.confirm("@time=2020-01-01T10:00:00.000Z :carol!c@h PRIVMSG #r :hi there")
    client.send("/msg bob psst")
    fake.expect(r"^PRIVMSG bob :psst$")
    fake.confirm(":carol!c@h PRIVMSG bob :psst", ":bob!b@h PRIVMSG #r :marker")
    client.expect(r"<bob> marker$")
    own = [line for line in client.seen if "hi there" in line or "psst" in line]
    assert own == ["2020-01-01 10:00 [#r] <carol> hi there", own[1]], own
    assert re.match(rf"{STAMP}-> \*bob\* psst$", own[1])


def test_with_echo_message_a_refused_line_is_never_shown_as_said(fake, client_of):
    client = client_of()
    registered_with(fake, client, ALL_WANTED)
    client.send("anyone there?")
    fake.expect(r"^PRIVMSG #r :anyone there\?$")
    fake.confirm(":fake 404 carol #r :Cannot send to room (+m)")
    client.expect(rf"{STAMP}! Not sent to #r: anyone there\? \(Cannot send to room \(\+m\)\)$")
    client.send("/msg bob,nobody psst")
    fake.expect(r"^PRIVMSG bob,nobody :psst$")
    fake.confirm(":fake 401 carol nobody :No such nick", ":carol!c@h PRIVMSG bob :psst")
    client.expect(rf"{STAMP}-> \*bob\* psst$")
    client.send("/msg bob marker")
    fake.expect(r"^PRIVMSG bob :marker$")
    fake.confirm(":carol!c@h PRIVMSG bob :marker")
    client.expect(r"-> \*bob\* marker$")
    assert not any("<carol> anyone" in line for line in client.seen), client.seen
    assert not any("nobody" in line and "Not sent" not in line for line in client.seen)
    assert sum("psst" in line for line in client.seen) == 2  # sent to bob; not to nobody


def test_a_message_to_oneself_comes_twice_with_echo_message_and_is_shown_once(fake, client_of):
    client = client_of()
    registered_with(fake, client, "echo-message")
    for n in (1, 2):
        client.send("/msg carol note to self")
        fake.expect(r"^PRIVMSG carol :note to self$")
        echo = ":carol!c@h PRIVMSG carol :note to self"
        fake.send(echo, echo, f":bob!b@h PRIVMSG #r :marker {n}")
        client.expect(rf"<bob> marker {n}$")
    assert sum("note to self" in line for line in client.seen) == 2, client.seen


def test_echo_message_can_come_and_go_after_registration(fake, client_of):
    # cap-notify (implied by CAP LS 302): CAP DEL takes echo-message away, CAP NEW offers it
    # again and the client asks for it, with no second CAP END.
    client = client_of()
    registered_with(fake, client, ALL_WANTED)
    fake.send(":fake CAP carol DEL :echo-message")
    client.send("without echo")
    fake.expect(r"^PRIVMSG #r :without echo$")
    fake.confirm()
    client.expect(rf"{STAMP}\[#r\] <carol> without echo$")  # shown at the PONG
    fake.send(":fake CAP carol NEW :echo-message sasl")
    assert fake.collect_until(r"^CAP ") == ["CAP REQ echo-message"]
    fake.send(":fake CAP carol ACK :echo-message")
    client.send("with echo")
    lines = fake.collect_until(r"^PRIVMSG #r :with echo$")
    assert "CAP END" not in lines
    fake.confirm()  # taken, but never echoed: shown at the PONG, as without echo-message
    client.expect(rf"{STAMP}\[#r\] <carol> with echo$")


# -- batch, message-tags ----------------------------------------------------------------------


def test_batch_lines_are_not_shown_and_their_contents_are(fake, client_of):
    client = client_of()
    registered_with(fake, client, ALL_WANTED)
    fake.send(
        ":fake BATCH +n1 netsplit irc.a irc.b",
        "@batch=n1 :bob!b@h QUIT :irc.a irc.b",
        ":fake BATCH -n1",
        "@+typing=active :bob!b@h TAGMSG #r",
        "@label=l1 :fake ACK",
        "@label=l2 :fake BATCH +lr labeled-response",
        "@batch=lr :fake 401 carol nobody :No such nick",
        ":fake BATCH -lr",
        "@+draft/reply=x;unknown/vendor=\\s :bob!b@h PRIVMSG #r :marker",
    )
    lines = client.collect_until(r"\[#r\] <bob> marker$")
    shown = [re.sub(STAMP, "", line) for line in lines]
    assert shown == ["* bob quit (irc.a irc.b)", "! No such nick: nobody", "[#r] <bob> marker"]


# -- against a real ircish server -------------------------------------------------------------


def test_against_ircish_every_wanted_cap_is_negotiated(open_session):
    session, _ = open_session("alice")
    assert session.caps == frozenset(WANTED_CAPS)


def test_without_echo_message_on_offer_the_ping_confirmation_stays(
    open_session, connect, monkeypatch
):
    monkeypatch.delitem(caps.CAPABILITIES, "echo-message")
    op = connect("op")
    op.join("#quiet")
    op.send("MODE #quiet +m")
    op.sync()
    session, recorder = open_session("alice", "#quiet")
    assert "echo-message" not in session.caps and "server-time" in session.caps
    session.send(Message("PRIVMSG", ["#quiet", "anyone?"]), echo=True)
    session.send(Message("PRIVMSG", ["op", "psst"]), echo=True)
    op.expect(r"PRIVMSG op :psst$")
    wait_for(lambda: "-> *op* psst" in recorder.rendered())
    assert recorder.notes()[-1].startswith("Not sent to #quiet: anyone? (Cannot send to room")
    assert not any("anyone?" in line for line in recorder.rendered())


def test_with_ircish_a_message_to_oneself_is_shown_once(open_session):
    session, recorder = open_session("alice")
    assert "echo-message" in session.caps
    session.send(Message("PRIVMSG", ["alice", "note"]), echo=True)
    session.send(Message("PRIVMSG", ["alice", "note"]), echo=True)
    assert session.sync(TIMEOUT)
    assert recorder.rendered().count("[private] <alice> note") == 2  # each once, not 4


def test_multi_prefix_names_give_bare_nicks(open_session, connect):
    op = connect("op")
    op.join("#r")
    op.send("MODE #r +v op")
    op.sync()
    session, recorder = open_session("alice", "#r")
    assert "multi-prefix" in session.caps
    names = [line for line in recorder.rendered() if line.startswith("Users in #r:")]
    assert names and "@+op" in names[-1].split(), names
    assert session.view().members == ("alice", "op")


def test_away_notify_updates_the_private_chat_and_stays_quiet_in_rooms(open_session, connect):
    bob, dave = connect("bob"), connect("dave")
    for person in (bob, dave):
        person.join("#r")
    session, recorder = open_session("alice", "#r")
    assert "away-notify" in session.caps
    session.query("bob")
    dave.send("AWAY :gone fishing")  # not the private chat: nothing shown
    dave.sync()
    bob.send("AWAY :lunch")
    wait_for(lambda: "bob is away: lunch" in recorder.notes())
    assert session.view().query_away
    bob.send("AWAY")
    wait_for(lambda: "bob is back" in recorder.notes())
    assert not session.view().query_away
    assert session.sync(TIMEOUT)
    assert not any("fishing" in text or "AWAY" in text for text in recorder.notes())
    assert not any("AWAY" in line or "fishing" in line for line in recorder.rendered())
    # An away person who joins is told of with their JOIN (away-notify): known at once.
    carol = connect("carol")
    carol.send("AWAY :busy")
    carol.sync()
    session.query("carol")
    carol.join("#r")
    wait_for(lambda: "carol is away: busy" in recorder.notes())
    assert session.view().query_away
