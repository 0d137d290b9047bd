"""SASL's AUTHENTICATE framing over real sockets, where irctest's sasl.py checks the
numerics: one line past 400 bytes is 905 (ERR_SASLTOOLONG); a payload that grows past what
any mechanism needs, each line within 400 bytes, is a plain failure, 904 (ERR_SASLFAIL)."""

from __future__ import annotations

import base64
from collections.abc import Callable

from helpers import SERVER, Client

from ircish import protocol as p
from ircish.sasl import CHUNK, MAX_PAYLOAD

Connect = Callable[..., Client]


def plain_started(connect: Connect) -> Client:
    """A client that has registered the account `alice` and then, on a new connection,
    asked for sasl and started PLAIN (the server waits for its payload)."""
    owner = connect("alice")
    owner.send("REGISTER * * :sesame-sesame")
    owner.expect(rf"^:{SERVER} REGISTER SUCCESS alice ")
    owner.send("QUIT")
    owner.expect_closed()
    client = connect()
    client.send("CAP REQ :sasl")
    client.expect(rf"^:{SERVER} CAP \* ACK :sasl$")
    client.send("AUTHENTICATE PLAIN")
    client.expect(rf"^:{SERVER} AUTHENTICATE \+$")
    return client


def test_one_line_past_400_bytes_is_905(connect: Connect) -> None:
    client = plain_started(connect)
    client.send("AUTHENTICATE " + "A" * (CHUNK + 50))  # the line itself within 512 bytes
    client.expect(rf"^:{SERVER} {p.ERR_SASLTOOLONG} \* :")


def test_a_payload_too_big_in_400_byte_lines_is_904_and_ends_the_exchange(
    connect: Connect,
) -> None:
    client = plain_started(connect)
    chunk = base64.b64encode(b"x" * 300).decode()
    assert len(chunk) == CHUNK
    for _ in range(MAX_PAYLOAD // 300 + 2):
        client.send(f"AUTHENTICATE {chunk}")
    lines = client.collect_until(rf"^:{SERVER} {p.ERR_SASLFAIL} \* :SASL message too long")
    assert not [line for line in lines if f" {p.ERR_SASLTOOLONG} " in line]
    # The exchange is over: a new one starts, and logs in.
    client.sync()
    client.send("AUTHENTICATE PLAIN")
    client.expect(rf"^:{SERVER} AUTHENTICATE \+$")
    client.send("AUTHENTICATE " + base64.b64encode(b"\0alice\0sesame-sesame").decode())
    client.expect(rf"^:{SERVER} {p.RPL_SASLSUCCESS} ")
