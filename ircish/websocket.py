"""IRC over WebSocket (https://ircv3.net/specs/extensions/websocket): a transport beneath
`Connection`, like TLS, so the reader thread, the sender pool, limits, flood control and
both session kinds work unchanged.

The HTTP upgrade is read with h11 and the frames a client sends with wsproto (both sans-I/O),
in the connection's reader thread: `receive` feeds them what the socket gave and hands up
one IRC line per WebSocket message. (wsproto's own server handshake would drop frames sent
right behind the request; h11 keeps them for wsproto.) What the server sends is framed by
`frame_text` or `frame_binary`, two plain functions (a server's frames are not masked): an
event's frame is then made once per wire format and shared by every receiver
(ircish/events.py), where a wsproto connection object would frame it once per receiver,
under a lock of its own. The replies the transport makes itself (the 101, a pong, the close
handshake) go through the connection's outbox (`bind`), in order with everything else; the
transport never writes from the reader thread. The subprotocols are `binary.ircv3.net` and
`text.ircv3.net`, in the client's order of preference; a client that names neither gets text
frames. An `Origin` must be on the allow-list (clients that send none, and pages served from
the very address or localhost port they connect to, are let in), and `X-Forwarded-For` is
believed only from the configured proxies. A message longer than the read buffer is
InputOverflow, as a line without a newline is on TCP. A GET or HEAD that asks for no
upgrade is answered with one of the web client's files (ircish/webfiles.py), one request
per connection.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import RemoteProtocolError, generate_accept_token

from ircish import webfiles
from ircish.transport import RECV_BYTES, InputOverflow, OverStream

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
            if "%" in hop or not _is_address(hop):  # a scope id may carry any text
                return peer  # garbage in the chain: believe only what we saw
            ip = ipaddress.ip_address(hop)
            if hop not in self:
                mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
                return str(mapped or ip)
        return peer


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
        # The same origin (the page came from the host and port the request was sent to),
        # taken on trust only where that host is an address or localhost: a DNS name in
        # both headers proves nothing, since a rebinding attacker's page has that too.
        netloc = urlsplit(origin).netloc
        if host is None or netloc != host.lower():
            return False
        name = urlsplit(f"//{netloc}").hostname or ""
        return name == "localhost" or _is_address(name)


class WebSocketTransport(OverStream):
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
        super().__init__(stream)
        self._max_buffer = max_buffer
        self._origins = origins
        self._proxies = proxies
        self._peer = peer
        self.kind = kind
        self.received = 0
        #: Until the upgrade is done: text frames (what a client that names no
        #: subprotocol gets); the handshake may choose binary.
        self.frame: Framer | None = frame_text
        #: The HTTP request, read with h11 until the upgrade; then the frames, with
        #: wsproto (given whatever came after the request in the same read).
        self._http: h11.Connection | None = h11.Connection(h11.SERVER)
        self._ws: WsConnection | None = None
        self._ended = False
        #: The client's close frame, answered once the lines before it are handled.
        self._close: CloseConnection | None = None
        self._message: list[bytes] = []
        self._message_size = 0
        self._lines: list[bytes] = []
        self._send_raw: Callable[[bytes], None] = _nowhere
        self._answer: Callable[[bytes], None] = _nowhere
        self._opened: Callable[[Framer | None, str], None] = _ignore_open

    def __repr__(self) -> str:
        return f"<WebSocketTransport {self.kind} fd={self._fd}>"

    @property
    def speaking(self) -> bool:
        """Whether IRC lines may be sent: only once the upgrade is done (before it, the
        client reads HTTP), and not after the close handshake."""
        return self._ws is not None and not self._ended

    def bind(
        self,
        send_raw: Callable[[bytes], None],
        opened: Callable[[Framer | None, str], None],
        answer: Callable[[bytes], None],
    ) -> None:
        """How the transport answers (`send_raw`: bytes into the connection's outbox, in
        order; `answer`: a plain HTTP answer, whatever the sendq) and whom it tells when
        the upgrade is done (`opened(frame, client_host)`)."""
        self._send_raw = send_raw
        self._opened = opened
        self._answer = answer

    def receive(self) -> list[bytes]:
        while not self._lines:
            if self._close is not None and not self._ended:
                # Every line before the close was handled (their replies are queued):
                # now the close handshake's answer, and the end.
                assert self._ws is not None
                self._send_raw(self._ws.send(self._close.response()))
                self._ended = True
            if self._ended:
                return []
            data = self._stream.recv(RECV_BYTES)
            if not data:
                return []
            self.received += len(data)
            if self._ws is None:
                self._handshake(data)
            else:
                self._frames(data)
        lines, self._lines = self._lines, []
        return lines

    # -- the upgrade -----------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        http = self._http
        assert http is not None
        try:
            http.receive_data(data)
            event = http.next_event()
        except h11.RemoteProtocolError as exc:
            # h11's words name its internals (a bytearray's repr): they go to the log only.
            log.info("websocket port: bad request from %s: %s", self._peer, exc)
            status = exc.error_status_hint
            text = "Request headers too large" if status == 431 else "Malformed HTTP request"
            self._end_with(http_answer(status, text + "\n"))
            return
        if event is h11.NEED_DATA:
            return
        if not isinstance(event, h11.Request):
            self._end_with(http_answer(400, "Bad request\n"))
            return
        headers: dict[bytes, bytes] = {}
        for name, value in event.headers:
            # A header given twice (X-Forwarded-For by two proxies) is one list (RFC 9110).
            headers[name] = headers[name] + b", " + value if name in headers else value
        if event.method in (b"GET", b"HEAD") and b"upgrade" not in headers:
            self._serve_file(event.method, event.target, headers)
            return
        problem = _upgrade_problem(event.method, headers)
        if problem is not None:
            status, text, extra = problem
            self._end_with(http_answer(status, text, extra))
            return
        origin = _text(headers.get(b"origin"))
        if not self._origins.allow(origin, _text(headers.get(b"host"))):
            log.info("websocket from %s refused: origin %r not allowed", self._peer, origin)
            self._end_with(
                http_answer(403, "This origin may not open a WebSocket to this server\n")
            )
            return
        offered = [
            name.strip()
            for name in (_text(headers.get(b"sec-websocket-protocol")) or "").split(",")
        ]
        chosen = next((name for name in offered if name in SUBPROTOCOLS), None)
        response = [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", generate_accept_token(headers[b"sec-websocket-key"])),
        ]
        if chosen is not None:
            response.append((b"Sec-WebSocket-Protocol", chosen.encode()))
        self._send_raw(
            http.send(
                h11.InformationalResponse(
                    status_code=101, headers=response, reason=b"Switching Protocols"
                )
            )
        )
        self.frame = frame_binary if chosen == BINARY_PROTOCOL else frame_text
        host = self._proxies.client_of(self._peer, _text(headers.get(b"x-forwarded-for")))
        # Frames the client sent right behind its request are not lost (wsproto's own
        # server handshake would drop them).
        trailing = http.trailing_data[0]
        self._http = None
        self._ws = WsConnection(ConnectionType.SERVER)
        self._opened(self.frame, host)
        if trailing:
            self._frames(trailing)

    def _serve_file(self, method: bytes, target: bytes, headers: dict[bytes, bytes]) -> None:
        """A plain GET or HEAD: one of the web client's files (ircish/webfiles.py)."""
        found = webfiles.lookup(target)
        log.debug("websocket port: %s %r from %s", method.decode(), target[:200], self._peer)
        if found is None:
            self._end_with(http_answer(404, "Not found\n"))
            return
        fresh = found.etag in [
            tag.strip() for tag in headers.get(b"if-none-match", b"").split(b",")
        ]
        self._end_with(
            http_answer(
                304 if fresh else 200,
                b"" if fresh or method == b"HEAD" else found.body,
                (
                    (b"ETag", found.etag),
                    (b"Cache-Control", b"no-cache"),
                ),
                content_type=found.content_type.encode(),
                length=0 if fresh else len(found.body),
            )
        )

    def _end_with(self, answer: bytes) -> None:
        """A plain HTTP answer (`http_answer`: a file or a refusal), then the end of the
        connection: one request per connection, so none lingers."""
        self._answer(answer)
        self._ended = True

    # -- frames ----------------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        try:
            ws.receive_data(data)
            for event in ws.events():
                if self._close is not None:
                    break  # nothing after a close frame counts
                self._take(event)
        except (RemoteProtocolError, UnicodeError) as exc:
            log.info("websocket from %s: protocol error: %s", self._peer, exc)
            self._ended = True

    def _take(self, event: object) -> None:
        if isinstance(event, (TextMessage, BytesMessage)):
            data = event.data.encode("utf-8") if isinstance(event, TextMessage) else event.data
            # Each piece counts at least FRAGMENT_COST: empty continuation frames must not
            # grow the list for free.
            self._message_size += max(len(data), FRAGMENT_COST)
            if self._message_size > self._max_buffer:
                raise InputOverflow(f"message over {self._max_buffer} bytes")
            self._message.append(data)
            if event.message_finished:
                whole = b"".join(self._message)
                self._message, self._message_size = [], 0
                # One line per message (the spec); a client that puts several in one is
                # read as if it had sent them one by one, as on TCP.
                self._lines += [
                    line[:-1] if line.endswith(b"\r") else line
                    for line in whole.split(b"\n")
                    if line not in (b"", b"\r")
                ] or [b""]
        elif isinstance(event, Ping):
            assert self._ws is not None
            self._send_raw(self._ws.send(event.response()))
            # Answered, and charged like an empty line: a ping flood is flooding.
            self._lines.append(b"")
        elif isinstance(event, CloseConnection):
            self._close = event

    def farewell(self) -> bytes:
        """The close frame (1000, normal) to send after the last line: made here, not by
        wsproto, since any thread may close a connection and wsproto's state belongs to
        the reader thread. Nothing before the upgrade, or once the close handshake ran."""
        return CLOSE_FRAME if self.speaking and self._close is None else b""

    def wait_readable(self, timeout: float) -> bool:
        if self._ws is None:
            return True  # the upgrade first: nothing may be sent before its 101
        return bool(self._lines) or self._stream_readable(timeout)


#: The reason phrases of the statuses this port answers with.
HTTP_REASONS = {
    200: b"OK",
    304: b"Not Modified",
    400: b"Bad Request",
    404: b"Not Found",
    403: b"Forbidden",
    405: b"Method Not Allowed",
    426: b"Upgrade Required",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
#: What an empty piece of a fragmented message costs against the read buffer.
FRAGMENT_COST = 16


def http_answer(
    status: int,
    body: str | bytes,
    extra: tuple[tuple[bytes, bytes], ...] = (),
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    length: int | None = None,
) -> bytes:
    """One whole HTTP/1.1 answer on this port, with the security headers, closing the
    connection; `length` is the Content-Length when it is not the body's (HEAD, 304)."""
    body = body.encode() if isinstance(body, str) else body
    head = [
        (b"Content-Type", content_type),
        (b"Content-Length", str(len(body) if length is None else length).encode()),
        (b"Connection", b"close"),
        *webfiles.SECURITY_HEADERS,
        *extra,
    ]
    reason = HTTP_REASONS.get(status, b"Error")
    return (
        f"HTTP/1.1 {status} ".encode()
        + reason
        + b"\r\n"
        + b"".join(name + b": " + value + b"\r\n" for name, value in head)
        + b"\r\n"
        + body
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _upgrade_problem(
    method: bytes, headers: dict[bytes, bytes]
) -> tuple[int, str, tuple[tuple[bytes, bytes], ...]] | None:
    """Why a request is not a WebSocket upgrade we take: (status, text, extra headers)."""
    what = (
        "This port speaks IRC over WebSocket (ws://, subprotocol text.ircv3.net or "
        "binary.ircv3.net) and serves the web client to plain GETs.\n"
    )
    if method != b"GET":
        return 405, what, ((b"Allow", b"GET, HEAD"),)
    upgrade = headers.get(b"upgrade", b"").lower()
    connection = [token.strip() for token in headers.get(b"connection", b"").lower().split(b",")]
    if upgrade != b"websocket" or b"upgrade" not in connection:
        return 426, what, ((b"Upgrade", b"websocket"),)
    if headers.get(b"sec-websocket-version") != b"13":
        return 426, "Only WebSocket version 13\n", ((b"Sec-WebSocket-Version", b"13"),)
    if not headers.get(b"sec-websocket-key"):
        return 400, "No Sec-WebSocket-Key\n", ()
    return None


def _nowhere(data: bytes) -> None:
    raise RuntimeError("WebSocketTransport.bind was not called")


def _ignore_open(frame: Framer | None, host: str) -> None:
    pass
