"""SASL over IRC (https://ircv3.net/specs/extensions/sasl-3.1, 3.2), without I/O: the
AUTHENTICATE framing both ways, and the server's side of each mechanism. The handler
(commands/accounts.py) feeds a client's AUTHENTICATE lines in and sends what comes out;
ircish-client uses `encode_response` to send its own.

Framing: a payload is base64, sent in lines of at most 400 bytes; a line of exactly 400
means more follows, so a payload whose last line is 400 bytes long is followed by
`AUTHENTICATE +`; `+` alone is the empty payload, and `*` aborts.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

import scramp

#: The mechanisms offered, in the order `sasl=` and 908 list them. EXTERNAL only where TLS
#: client certificates are asked for (see `mechanisms`).
PLAIN = "PLAIN"
SCRAM_SHA_256 = "SCRAM-SHA-256"
EXTERNAL = "EXTERNAL"
ALL_MECHANISMS = (PLAIN, SCRAM_SHA_256, EXTERNAL)
#: One AUTHENTICATE line's payload at most.
CHUNK = 400
#: A whole payload at most, before base64 is undone: far past any PLAIN or SCRAM message.
MAX_PAYLOAD = 8192


def mechanisms(external: bool) -> tuple[str, ...]:
    """The mechanisms a server offers: EXTERNAL only with client certificates."""
    return ALL_MECHANISMS if external else (PLAIN, SCRAM_SHA_256)


class SaslError(Exception):
    """The exchange failed: `code` says how (FAILED, TOO_LONG), the text why."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


FAILED = "FAILED"
TOO_LONG = "TOO_LONG"


def encode_response(payload: bytes) -> list[str]:
    """The AUTHENTICATE parameters that carry `payload` (sender side)."""
    if not payload:
        return ["+"]
    text = base64.b64encode(payload).decode("ascii")
    lines = [text[start : start + CHUNK] for start in range(0, len(text), CHUNK)]
    if len(lines[-1]) == CHUNK:
        lines.append("+")
    return lines


class Assembler:
    """A client's AUTHENTICATE lines put back together into payloads."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0

    def add(self, param: str) -> bytes | None:
        """The payload once `param` completes one; None while more is to come. Raises
        SaslError: TOO_LONG for a line over 400 bytes; FAILED for a payload past
        MAX_PAYLOAD, or bad base64."""
        if len(param) > CHUNK:
            raise SaslError(TOO_LONG, "SASL message too long")
        if param != "+":
            self._parts.append(param)
            self._size += len(param)
            if self._size > MAX_PAYLOAD * 4 // 3 + 4:
                # A failure (904), not TOO_LONG: 905 is for one line past 400 bytes, and
                # every line here was within it (irctest's testPlainInfiniteMessages).
                raise SaslError(FAILED, "SASL message too long")
            if len(param) == CHUNK:
                return None
        text, self._parts, self._size = "".join(self._parts), [], 0
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise SaslError(FAILED, "SASL message is not valid base64") from None


def parse_plain(payload: bytes) -> tuple[str, str, str]:
    """PLAIN's message (RFC 4616): authzid NUL authcid NUL password. The authorization
    identity must be empty or the account itself (no logging in as someone else)."""
    try:
        authzid, authcid, password = payload.decode("utf-8").split("\0")
    except (UnicodeDecodeError, ValueError):
        raise SaslError(FAILED, "SASL PLAIN message is malformed") from None
    if not authcid or (authzid and authzid != authcid):
        raise SaslError(FAILED, "SASL PLAIN message names no account, or two")
    return authzid, authcid, password


#: `scramp`'s auth_fn: a username's (salt, stored key, server key, iterations).
KeysFor = Callable[[str], "tuple[bytes, bytes, bytes, int]"]


class ScramExchange:
    """The server's side of SCRAM-SHA-256 (RFC 7677), with `scramp`. `first` takes the
    client-first message and gives the server-first; `final` takes the client-final and
    gives the server-final once the proof holds (SaslError if it does not)."""

    def __init__(self, keys_for: KeysFor) -> None:
        #: The account the client named (its `n=`), once the first message is in.
        self.username: str | None = None

        def keys(username: str) -> tuple[bytes, bytes, bytes, int]:
            self.username = username
            return keys_for(username)

        self._server = scramp.ScramMechanism("SCRAM-SHA-256").make_server(keys)

    def first(self, payload: bytes) -> bytes:
        try:
            self._server.set_client_first(payload.decode("utf-8"))
            return self._server.get_server_first().encode("utf-8")
        except (scramp.ScramException, UnicodeDecodeError) as exc:
            raise SaslError(FAILED, f"SCRAM: {_reason(exc)}") from None

    def final(self, payload: bytes) -> bytes:
        try:
            self._server.set_client_final(payload.decode("utf-8"))
            return self._server.get_server_final().encode("utf-8")
        except (scramp.ScramException, UnicodeDecodeError) as exc:
            raise SaslError(FAILED, f"SCRAM: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.splitlines()[0][:100] if text else "failed"
