"""Logging in to an account from the client, without I/O: the credentials (whose password
no repr, log or line on screen ever shows), which SASL mechanism to use of those a server
offers, and one SASL conversation (https://ircv3.net/specs/extensions/sasl-3.1) as the
AUTHENTICATE parameters that go out for each that comes in. The session (session.py) sends
them and says how the login ended; the framing both ways is ircish/sasl.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import scramp

from ircish import sasl

#: The mechanisms we speak, best first: SCRAM never sends the password, and proves the
#: server knows it (RFC 7677); PLAIN sends it (over TLS, at least encrypted).
MECHANISMS = (sasl.SCRAM_SHA_256, sasl.PLAIN)


@dataclass(frozen=True)
class Credentials:
    """An account and its password."""

    account: str
    password: str = field(repr=False)


class LoginFailed(Exception):
    """The server's side of the exchange went wrong; the text says how, for a person."""


def choose_mechanism(offered: str, tried: frozenset[str] = frozenset()) -> str | None:
    """The mechanism to try next: the best of MECHANISMS in `offered` (the `sasl=` value
    of CAP LS 302, or a 908 list: `PLAIN,SCRAM-SHA-256`) not `tried` yet. An empty `offered`
    (a server that lists none) gets the best of all; it answers 908 if it lacks it. None:
    nothing left to try."""
    listed = {word.strip().upper() for word in offered.split(",") if word.strip()}
    return next(
        (
            mechanism
            for mechanism in MECHANISMS
            if mechanism not in tried and (not listed or mechanism in listed)
        ),
        None,
    )


class SaslLogin:
    """One SASL exchange: `start` is what opens it (`AUTHENTICATE <mechanism>`), `answer`
    takes each parameter of the server's AUTHENTICATE lines and gives the parameters of
    ours (none while the server's message is not complete)."""

    def __init__(self, credentials: Credentials, mechanism: str) -> None:
        self.credentials = credentials
        self.mechanism = mechanism
        self._chunks = sasl.Assembler()
        self._scram: scramp.ScramClient | None = None
        self._step = 0

    def start(self) -> list[str]:
        return [self.mechanism]

    def answer(self, param: str) -> list[str]:
        """Raises LoginFailed if the server's message cannot be read or (SCRAM) its proof
        does not hold: then the exchange is to be aborted (`AUTHENTICATE *`)."""
        try:
            payload = self._chunks.add(param)
        except sasl.SaslError as exc:
            raise LoginFailed(f"the server's SASL message is unreadable ({exc.text})") from None
        if payload is None:
            return []
        self._step += 1
        if self.mechanism == sasl.PLAIN:
            return sasl.encode_response(self._plain())
        return sasl.encode_response(self._scram_step(payload))

    def _plain(self) -> bytes:
        # RFC 4616: authzid NUL authcid NUL password; the authzid is the account itself.
        account, password = self.credentials.account, self.credentials.password
        return f"{account}\0{account}\0{password}".encode()

    def _scram_step(self, payload: bytes) -> bytes:
        try:
            if self._step == 1:  # the server's `+`: we speak first
                self._scram = scramp.ScramClient(
                    [self.mechanism], self.credentials.account, self.credentials.password
                )
                return self._scram.get_client_first().encode()
            assert self._scram is not None
            text = payload.decode("utf-8")
            if self._step == 2:
                self._scram.set_server_first(text)
                return self._scram.get_client_final().encode()
            if self._step == 3:
                # The server's signature: it knows the password, so it is the server we
                # registered with, not someone in between who took our first messages.
                self._scram.set_server_final(text)
                return b""
        except (scramp.ScramException, UnicodeDecodeError) as exc:
            reason = str(exc.args[0]).splitlines()[0] if exc.args else type(exc).__name__
            raise LoginFailed(f"the server's SCRAM answer does not hold ({reason})") from None
        raise LoginFailed("the server went on after SCRAM was done")
