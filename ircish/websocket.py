"""IRC over WebSocket (https://ircv3.net/specs/extensions/websocket): a transport beneath
`Connection`, like TLS, so the reader thread, the sender pool, limits, flood control and
both session kinds work unchanged.

The HTTP upgrade and the frames a client sends are read with wsproto (sans-I/O, on h11), in
the connection's reader thread: `receive` feeds it what the socket gave and hands up one
IRC line per WebSocket message. What the server sends is framed by `frame_text` or
`frame_binary`, two plain functions (a server's frames are not masked): an event's frame is
then made once per wire format and shared by every receiver (ircish/events.py), where a
wsproto connection object would frame it once per receiver, under a lock of its own. The
replies wsproto makes itself (the 101, a pong, the close handshake) go through the
connection's outbox (`bind`), in order with everything else; the transport never writes
from the reader thread.

The subprotocols are `binary.ircv3.net` and `text.ircv3.net`, in the client's order of
preference; a client that names neither gets text frames. An `Origin` must be on the
allow-list (same-origin pages and clients that send no Origin are always let in), and
`X-Forwarded-For` is believed only from the configured proxies. A message longer than the
read buffer is InputOverflow, as a line without a newline is on TCP.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from ircish.transport import RECV_BYTES, InputOverflow

if TYPE_CHECKING:
    from ircish.events import Framer
    from ircish.tls import TlsTransport

log = logging.getLogger(__name__)

TEXT_PROTOCOL = "text.ircv3.net"
BINARY_PROTOCOL = "binary.ircv3.net"
SUBPROTOCOLS = (BINARY_PROTOCOL, TEXT_PROTOCOL)
#: A close frame, status 1000 (normal closure), unmasked (RFC 6455 5.5.1).
CLOSE_FRAME = b"\x88\x02\x03\xe8"


def _frame(opcode: int, data: bytes) -> bytes:
    """One final, unmasked frame holding `data` without its line ending (RFC 6455 5.2)."""
    payload = data[:-2] if data.endswith(b"\r\n") else data.rstrip(b"\r\n")
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return header + payload


def frame_text(data: bytes) -> bytes:
    """A line as a text frame (text.ircv3.net, and clients that named no subprotocol)."""
    return _frame(0x1, data)


def frame_binary(data: bytes) -> bytes:
    """A line as a binary frame (binary.ircv3.net)."""
    return _frame(0x2, data)


class Proxies:
    """The addresses (or networks) whose `X-Forwarded-For` is believed."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    def client_of(self, peer: str, forwarded: str | None) -> str:
        """The client's address: `peer` itself, unless `peer` is a proxy that forwarded
        for someone; then the rightmost address in X-Forwarded-For that is not one of our
        proxies (the ones to its left could be anything the client wrote)."""
        if forwarded is None or peer not in self:
            return peer
        for hop in reversed([part.strip() for part in forwarded.split(",")]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # garbage in the chain: believe only what we saw
            if hop not in self:
                return hop
        return peer


class Origins:
    """Which pages may open a WebSocket here: `*` any; else the listed origins
    (`https://chat.example`), plus the page's own origin (the server's host and port) and
    clients that send no Origin at all (not a browser, so no page to speak for)."""

    def __init__(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        self.any = "*" in allowed
        self._allowed = {origin.rstrip("/").lower() for origin in allowed}

    def allow(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self.any:
            return True
        origin = origin.rstrip("/").lower()
        if origin in self._allowed:
            return True
        # The same origin: its host and port are the ones the request was sent to.
        return host is not None and urlsplit(origin).netloc == host.lower()


class WebSocketTransport:
    """IRC lines over WebSocket messages, on a TCP socket or a `TlsTransport` (wss)."""

    def __init__(
        self,
        stream: socket.socket | TlsTransport,
        max_buffer: int,
        *,
        origins: Origins,
        proxies: Proxies,
        peer: str,
        kind: str = "ws",
    ) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        self._max_buffer = max_buffer
        self._origins = origins
        self._proxies = proxies
        self._peer = peer
        self.kind = kind
        self.received = 0
        #: Until the upgrade is done: text frames (what a client that names no
        #: subprotocol gets); the handshake may choose binary.
        self.frame: Framer | None = frame_text
        self._ws = WSConnection(ConnectionType.SERVER)
        self._open = False
        self._ended = False
        self._message: list[bytes] = []
        self._message_size = 0
        self._lines: list[bytes] = []
        self._send_raw: Callable[[bytes], None] = _nowhere
        self._opened: Callable[[Framer | None, str], None] = _ignore_open

    def __repr__(self) -> str:
        return f"<WebSocketTransport {self.kind} fd={self._fd}>"

    @property
    def certfp(self) -> str | None:
        return getattr(self._stream, "certfp", None)

    def fileno(self) -> int:
        return self._fd

    def bind(
        self, send_raw: Callable[[bytes], None], opened: Callable[[Framer | None, str], None]
    ) -> None:
        """How the transport answers (`send_raw`: bytes into the connection's outbox, in
        order) and whom it tells when the upgrade is done (`opened(frame, client_host)`)."""
        self._send_raw = send_raw
        self._opened = opened

    def receive(self) -> list[bytes]:
        while not self._lines:
            if self._ended:
                return []
            data = self._stream.recv(RECV_BYTES)
            if not data:
                return []
            self.received += len(data)
            try:
                self._ws.receive_data(data)
                self._take_events()
            except RemoteProtocolError as exc:
                self._refuse_http(exc)
        lines, self._lines = self._lines, []
        return lines

    def _take_events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, Request):
                self._upgrade(event)
            elif isinstance(event, (TextMessage, BytesMessage)):
                data = event.data.encode("utf-8") if isinstance(event, TextMessage) else event.data
                self._message_size += len(data)
                if self._message_size > self._max_buffer:
                    raise InputOverflow
                self._message.append(data)
                if event.message_finished:
                    whole = b"".join(self._message)
                    self._message, self._message_size = [], 0
                    self._lines += [
                        line[:-1] if line.endswith(b"\r") else line
                        for line in whole.split(b"\n")
                        if line not in (b"", b"\r")
                    ] or [b""]
            elif isinstance(event, Ping):
                self._send_raw(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._send_raw(self._ws.send(event.response()))
                self._ended = True

    def _upgrade(self, request: Request) -> None:
        headers = {name.lower(): value.decode("latin-1") for name, value in request.extra_headers}
        origin = headers.get(b"origin")
        if not self._origins.allow(origin, request.host):
            log.info("websocket from %s refused: origin %r not allowed", self._peer, origin)
            self._reject(403, "This origin may not open a WebSocket to this server\n")
            return
        chosen = next((p for p in request.subprotocols if p in SUBPROTOCOLS), None)
        self.frame = frame_binary if chosen == BINARY_PROTOCOL else frame_text
        host = self._proxies.client_of(self._peer, headers.get(b"x-forwarded-for"))
        self._send_raw(self._ws.send(AcceptConnection(subprotocol=chosen)))
        self._open = True
        self._opened(self.frame, host)

    def _reject(self, status: int, text: str) -> None:
        body = text.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        headers.append((b"content-length", str(len(body)).encode()))
        self._send_raw(self._ws.send(RejectConnection(status, headers, has_body=True)))
        self._send_raw(self._ws.send(RejectData(body)))
        self._ended = True

    def _refuse_http(self, exc: RemoteProtocolError) -> None:
        """A request that is not a WebSocket upgrade (or a broken frame after it)."""
        if self._open:
            log.info("websocket from %s: protocol error: %s", self._peer, exc)
            self._ended = True
            return
        body = (
            b"This port speaks IRC over WebSocket (ws://, subprotocol text.ircv3.net or "
            b"binary.ircv3.net).\n"
        )
        head = (
            "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: close\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self._send_raw(head + body)
        self._ended = True

    def farewell(self) -> bytes:
        """The close frame (1000, normal) to send after the last line: made here, not by
        wsproto, since any thread may close a connection and wsproto's state belongs to
        the reader thread. Nothing before the upgrade, or once the close handshake ran."""
        return CLOSE_FRAME if self._open and not self._ended else b""

    def wait_readable(self, timeout: float) -> bool:
        if not self._open:
            return True  # the upgrade first: nothing may be sent before its 101
        if self._lines:
            return True
        wait = getattr(self._stream, "wait_readable", None)
        if wait is not None:
            return bool(wait(timeout))
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))

    def send(self, data: bytes | memoryview) -> int:
        return self._stream.send(data, socket.MSG_DONTWAIT)

    def shutdown_read(self) -> None:
        try:
            self._stream.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def close(self) -> None:
        self._stream.close()


def _nowhere(data: bytes) -> None:
    raise RuntimeError("WebSocketTransport.bind was not called")


def _ignore_open(frame: Framer | None, host: str) -> None:
    pass
