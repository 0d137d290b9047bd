"""Property tests (hypothesis) of the line parser, the formatter, the renderer and the whole
input path of one connection (issue 5): any bytes either decode-fail, parse or raise the
parser's own error; a message survives format -> parse; what the server writes never carries
CR, LF or NUL inside a line and never exceeds 512 bytes.

Examples are derandomized and no example database is kept, so every run checks the same cases.
"""

from __future__ import annotations

import logging
import re
import string
from contextlib import contextmanager

import pytest
from helpers import COMMANDS, Harness, Peer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ircish.protocol import (
    FORBIDDEN_CHARS,
    Message,
    ProtocolError,
    clip,
    parse,
    truncate_utf8,
)
from ircish.render import render
from ircish.slash import SLASH_COMMANDS

#: Same examples on every run, and no example database: a failure is the same each time.
PROPS = settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FEWER = settings(PROPS, max_examples=150)

LINE_LIMIT = 512
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# -- strategies -------------------------------------------------------------------------------

#: Any text a line may carry: no CR, LF or NUL.
safe_text = st.text(st.characters(codec="utf-8", exclude_characters=FORBIDDEN_CHARS))
#: Text biased towards what breaks IRC lines: spaces, colons, whitespace of every kind.
tricky_text = st.text(
    st.one_of(
        st.characters(codec="utf-8", exclude_characters=FORBIDDEN_CHARS),
        # ASCII space's look-alikes, and letters whose upper case is ASCII (dotless i, long s).
        st.sampled_from(" ::\t\x0b\x0c\x1c\x85\xa0\u2028\u3000,#@!é😀\u0131\u017f\ufb01"),
    )
)
#: Lines assembled from pieces that matter to the parser: words, separators, prefixes, tags,
#: and ASCII space's look-alikes where a separator could be.
line_pieces = st.one_of(
    st.text(string.ascii_letters + string.digits + "#!@.,", min_size=1, max_size=6),
    st.sampled_from([" ", "  ", " :", ":", "@", "@a=b;c ", "=", ";", "\t", "\t:", "\xa0:"]),
    st.sampled_from(["\u3000", "\u0131", "\u017f", "\ufb01", "é", "\x01", "\x1f"]),
    tricky_text,
)
lines = st.one_of(tricky_text, st.lists(line_pieces, max_size=12).map("".join))
commands = st.one_of(
    st.text(string.ascii_uppercase, min_size=1, max_size=12),
    st.text(string.digits, min_size=3, max_size=3),
)


def _is_middle(text: str) -> bool:
    return bool(text) and " " not in text and not text.startswith(":")


middle_params = tricky_text.filter(_is_middle)
prefixes = st.text(
    st.characters(codec="utf-8", exclude_characters=FORBIDDEN_CHARS + " "), min_size=1, max_size=60
)


maybe_prefix = st.none() | prefixes


@st.composite
def messages(draw, prefix=maybe_prefix, last=tricky_text) -> Message:
    """A well-formed message: every middle parameter is a single non-empty word."""
    params = draw(st.lists(middle_params, max_size=6))
    if draw(st.booleans()):
        params.append(draw(last))
    return Message(draw(commands), params, draw(prefix))


def _line_ok_for_wire(line: bytes) -> None:
    """One wire line (CRLF included): UTF-8, within the limit, no CR/LF/NUL before CRLF."""
    assert line.endswith(b"\r\n"), line
    body = line[:-2]
    assert len(line) <= LINE_LIMIT, len(line)
    assert not any(c in body for c in b"\r\n\0"), body
    body.decode("utf-8")


# -- parser -----------------------------------------------------------------------------------


@PROPS
@given(st.binary(max_size=600))
def test_any_bytes_decode_fail_parse_or_raise_protocol_error(data):
    """The reader's two steps, on any input: only UnicodeDecodeError or ProtocolError."""
    try:
        line = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # the reader answers FAIL INVALID_UTF8 (test_hostile checks it live)
    try:
        msg = parse(line)
    except ProtocolError:
        return
    assert msg.command
    assert all(not any(c in p for c in FORBIDDEN_CHARS) for p in msg.params)


@PROPS
@given(lines)
def test_any_text_parses_or_raises_protocol_error(line):
    try:
        parse(line)
    except ProtocolError:
        pass


@PROPS
@given(lines)
def test_a_parsed_command_is_the_ascii_word_that_was_sent(line):
    """RFC 2812 2.3.1: command = 1*letter / 3digit. A command that parses was spelled in
    ASCII on the wire: no long s or dotless i that upper-cases into S or I."""
    try:
        msg = parse(line)
    except ProtocolError:
        return
    assert re.fullmatch(r"[A-Z]+|[0-9]{3}", msg.command), msg.command
    rest = line.lstrip(" ")
    if msg.prefix is not None or rest.startswith("@"):
        return  # the command is further in; the check above is the property
    word = rest.split()[0]  # the parser's own word split (see the round-trip tests)
    assert word.isascii(), (word, msg.command)


@PROPS
@given(lines)
def test_a_parsed_line_formats_back_to_the_same_message(line):
    """parse -> to_line -> parse is the identity: the server can relay what it read."""
    try:
        msg = parse(line)
    except ProtocolError:
        return
    assert parse(msg.to_line()) == msg


# -- formatter --------------------------------------------------------------------------------


@PROPS
@given(messages())
def test_message_round_trips_through_its_line(msg):
    assert parse(msg.to_line()) == msg


@PROPS
@given(commands, st.lists(st.text(), max_size=6), maybe_prefix)
def test_to_line_refuses_cr_lf_nul_in_params(command, params, prefix):
    msg = Message(command, params, prefix)
    try:
        line = msg.to_line()
    except ProtocolError:
        # Refused only for a reason: CR/LF/NUL anywhere, or a middle that is no word.
        assert any(c in p for p in params for c in FORBIDDEN_CHARS) or not all(
            map(_is_middle, params[:-1])
        ), params
        return
    assert not any(c in line for c in FORBIDDEN_CHARS), line


@PROPS
@given(commands, st.lists(middle_params, max_size=3), st.text(min_size=1))
def test_to_line_refuses_a_prefix_that_would_break_the_line(command, params, prefix):
    """The formatter's guarantee must not depend on every caller: a prefix with CR, LF,
    NUL or a space either is refused or never reaches the wire."""
    msg = Message(command, params, prefix)
    try:
        line = msg.to_line()
    except ProtocolError:
        return
    assert not any(c in line for c in FORBIDDEN_CHARS), line
    assert parse(line).prefix == prefix


@PROPS
@given(messages(last=safe_text), st.integers(min_value=16, max_value=1024))
def test_to_bytes_fits_the_limit_and_cuts_at_a_character(msg, limit):
    full = msg.to_line().encode("utf-8")
    data = msg.to_bytes(limit)
    assert data.endswith(b"\r\n")
    assert len(data) <= limit
    body = data[:-2]
    assert not any(c in body for c in b"\r\n\0")
    body.decode("utf-8")  # never cut inside a character
    assert full.startswith(body)
    if len(full) + 2 <= limit:
        assert body == full
    else:
        # Cut as late as possible: the next character would not have fitted.
        rest = full[len(body) :].decode("utf-8")
        assert len(body) + len(rest[0].encode()) > limit - 2


@PROPS
@given(messages(last=safe_text))
def test_default_to_bytes_is_a_512_byte_wire_line(msg):
    _line_ok_for_wire(msg.to_bytes())


@PROPS
@given(safe_text, st.integers(min_value=0, max_value=400))
def test_clip_and_truncate_keep_whole_characters(text, limit):
    clipped = clip(text, limit)
    assert text.startswith(clipped)
    assert len(clipped.encode()) <= limit
    if clipped != text:
        assert len(clipped.encode()) + len(text[len(clipped)].encode()) > limit
    cut = truncate_utf8(text.encode(), limit)
    assert cut == clipped.encode()


# -- renderer (what text sessions and ircish-client print) -------------------------------------


@PROPS
@given(messages(prefix=maybe_prefix))
def test_render_never_raises_nor_prints_control_characters(msg):
    for me in (None, "me", msg.source_nick):
        line = render(msg, me)
        assert line is None or not CONTROL.search(line), line


@PROPS
@given(st.binary(max_size=510))
def test_render_of_any_parsed_line_is_printable(data):
    try:
        msg = parse(data.decode("utf-8", "replace"))
    except ProtocolError:
        return
    line = render(msg, "me")
    assert line is None or not CONTROL.search(line), line


# -- one connection's whole input path, with no sockets ---------------------------------------


class _Errors(logging.Handler):
    """Collects log records that mean a crash: level ERROR and above, or a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@contextmanager
def _crash_log():
    handler = _Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


def _rig() -> tuple[Harness, dict[str, Peer]]:
    """The layers above the transport, with no socket (tests/helpers.py `Harness`): an IRC
    member, a text member, and `fuzz` clients of both session kinds, everyone in #r."""
    harness = Harness()
    setup = {
        "peer": [b"NICK peer", b"USER u 0 * :p", b"JOIN #r"],
        "tpeer": [b"/nick tpeer", b"/join #r"],
        "fuzz": [b"NICK fuzz", b"USER u 0 * :f", b"JOIN #r,#s"],
        "tfuzz": [b"/nick tfuzz", b"/join #r"],
    }
    peers = {}
    for name, lines in setup.items():
        peer = peers[name] = harness.connect()
        for line in lines:
            peer.line(line)
        assert peer.user.registered and "#r" in peer.user.rooms
    return harness, peers


def _command_line(command: str, params: list[str], trailing: str | None) -> bytes:
    line = " ".join([command, *params])
    if trailing is not None:
        line += " :" + trailing
    return line.encode("utf-8", "surrogatepass")


words = st.one_of(
    st.sampled_from(
        ["#r", "#s", "#new", "#r,#s,#t", "peer", "tpeer", "fuzz", "0", "*", "+i", "-i", "LS"]
    ),
    st.text(min_size=1, max_size=40).filter(lambda w: " " not in w),
)
#: Text that makes a line close to 512 bytes: what relaying or echoing must cut to fit.
long_text = st.text(
    st.characters(codec="utf-8", exclude_characters=FORBIDDEN_CHARS, max_codepoint=0x7FF),
    min_size=200,
    max_size=500,
)
#: Commands whose text reaches other clients, aimed at someone who is there.
relayed_lines = st.builds(
    _command_line,
    st.sampled_from(["PRIVMSG", "NOTICE", "TOPIC", "PART", "AWAY", "QUIT", "WHOIS", "NICK"]),
    st.lists(st.sampled_from(["#r", "#s", "peer", "tpeer", "#r,peer", "fuzz"]), max_size=2),
    st.none() | st.text(max_size=40) | long_text,
)
irc_lines = st.one_of(
    relayed_lines,
    st.binary(max_size=700),
    st.builds(
        _command_line,
        st.sampled_from(sorted(COMMANDS)),
        st.lists(words, max_size=5),
        st.none() | st.text(max_size=600) | long_text,
    ),
)
slash_lines = st.one_of(
    irc_lines,
    st.builds(
        lambda name, args: f"/{name} {args}".encode("utf-8", "surrogatepass"),
        st.sampled_from(sorted(SLASH_COMMANDS)),
        st.builds(" ".join, st.lists(words, max_size=4)) | st.text(max_size=500),
    ),
    st.text(max_size=600).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def _wire_lines(peer: Peer) -> list[bytes]:
    data = bytes(peer.data)
    assert not data or data.endswith(b"\r\n"), data[-80:]
    return [line + b"\r\n" for line in data.split(b"\r\n")[:-1]]


@pytest.mark.parametrize("sender", ["fuzz", "tfuzz"])
@FEWER
@given(data=st.data())
def test_any_input_lines_give_safe_output_and_no_crash(sender, data):
    """Whatever lines one client sends (IRC or text session): no exception escapes, nothing
    is logged as a crash, and every line anyone gets is one clean line of at most 512 bytes
    (IRC sessions: one that parses)."""
    lines = data.draw(st.lists(irc_lines if sender == "fuzz" else slash_lines, max_size=12))
    harness, peers = _rig()
    peer = peers[sender]
    with _crash_log() as crashes:
        for raw in lines:
            if peer.closed:
                break  # the reader stops reading once the connection is closing
            # What the transport hands on: split at LF, one trailing CR removed.
            for piece in raw.split(b"\n"):
                peer.line(piece.removesuffix(b"\r"))
    assert crashes == [], [r.getMessage() for r in crashes]
    for name, member in peers.items():
        for line in _wire_lines(member):
            _line_ok_for_wire(line)
            if member.session.kind == "irc":
                parse(line[:-2].decode("utf-8"))
            assert not CONTROL.search(line[:-2].decode("utf-8")) or member.session.kind == "irc", (
                name
            )
    # The world stays consistent: every member of a room knows it is in that room.
    for room in harness.world.rooms.values():
        for user in room.members:
            assert user.rooms.get(room.folded) is room
