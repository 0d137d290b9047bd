"""TYPED: a line as a person typed it, sent by an IRC client without a slash table of its own
(the web client) and read by the server as a text session's line is."""

from __future__ import annotations

import re

import pytest
from helpers import SERVER, capped, prefix

from ircish.protocol import Message
from ircish.slash import SlashError, split_long_message, translate


@pytest.mark.parametrize(
    ("typed", "target", "expected"),
    [
        ("/me waves  twice", "#r", "PRIVMSG #r :\x01ACTION waves  twice\x01"),
        ("/topic a new  topic", "#r", "TOPIC #r :a new  topic"),
        ("/msg #r hello  there", "*", "PRIVMSG #r :hello  there"),
        ("hello  there ", "#r", "PRIVMSG #r :hello  there "),
        ("//etc is a path", "#r", "PRIVMSG #r :/etc is a path"),
        ("/mode +m", "#r", "MODE #r +m"),
        ("/leave see you", "#r", "PART #r :see you"),
    ],
)
def test_a_typed_line_does_what_the_slash_table_says(connect, typed, target, expected) -> None:
    web = capped(connect, "web", "echo-message")
    web.send("JOIN #r")
    web.expect(r" 366 web #r ")
    other = capped(connect, "other")
    other.send("JOIN #r")
    other.expect(r" 366 other #r ")
    web.send(f"TYPED {target} :{typed}")
    # What the table makes of it (ircish/slash.py), as the room sees it.
    meant = translate(typed, None if target == "*" else target) if typed[:1] == "/" else None
    assert meant is None or meant.to_line() == expected
    web.expect(rf"^:{prefix('web')} {re.escape(expected)}$")


@pytest.mark.parametrize(
    ("typed", "target"),
    [("/nick", "#r"), ("/kick", "#r"), ("/history x", "#r"), ("/switch #r", "#r"), ("/:x", "#r")],
)
def test_a_usage_error_is_the_tables_own_hint(connect, typed, target) -> None:
    web = capped(connect, "web", "labeled-response")
    with pytest.raises(SlashError) as refusal:
        translate(typed, target)
    web.send(f"@label=q1 TYPED {target} :{typed}")
    web.expect(rf"^@label=q1 :{SERVER} FAIL TYPED USAGE :{re.escape(str(refusal.value))}$")


def test_text_without_a_conversation_or_without_text_is_refused(connect) -> None:
    web = capped(connect, "web")
    web.send("TYPED * :hello")
    web.expect(rf"^:{SERVER} FAIL TYPED USAGE :no conversation to send to; /join a room first$")
    web.send("TYPED #r")
    web.expect(rf"^:{SERVER} FAIL TYPED USAGE :usage: TYPED <#room\|nick\|\*> :")
    web.send("TYPED #r :   ")
    web.expect(rf"^:{SERVER} FAIL TYPED USAGE :usage: TYPED ")


def test_long_text_is_cut_between_words_as_the_text_mode_cuts_it(connect) -> None:
    web = capped(connect, "web")
    web.send("JOIN #r")
    web.expect(r" 366 web #r ")
    other = capped(connect, "other")
    other.send("JOIN #r")
    other.expect(r" 366 other #r ")
    text = " ".join(f"word{n}" for n in range(300))  # ~2 kB: over one IRC line
    web.send(f"typed #r :{text}")  # a command's name in any case, as IRC has it
    pieces = split_long_message(Message("PRIVMSG", ["#r", text]), len(f":{prefix('web')}"))
    assert len(pieces) > 2
    for piece in pieces:
        other.expect(rf"^:{prefix('web')} PRIVMSG #r :{piece.params[1]}$")


def test_a_typed_line_is_charged_as_the_messages_it_becomes(start_server, connect) -> None:
    # Fifteen pieces cost fifteen lines: past a burst of 8 at 0.1 a second that is a minute's
    # wait, over the 5 s a client may be slowed for. As one line it would cost one.
    server = start_server(flood_burst=8, flood_rate=0.1, flood_disconnect_seconds=5.0)
    web = capped(connect, "web", target=server)
    web.send("JOIN #r")
    web.expect(r" 366 web #r ")
    web.send("TYPED #r :" + " ".join(f"word{n}" for n in range(900)))
    lines = web.expect_closed()
    assert lines[-1] == "ERROR :Excess Flood", lines
