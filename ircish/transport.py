"""The seam beneath `Connection`: how a client's lines arrive and its bytes leave.

A transport is message-oriented, as ergo's IRCConn is: `receive` hands up whole lines, so a
TCP stream cut at newlines and a WebSocket (one IRC line per message) look the same above
it. On the way out, bytes made for a client are already framed for its transport (a
transport's `frame`, applied once per broadcast through the client's `WireFormat`, see
ircish/events.py); `send` writes them without ever waiting.

One reader thread calls `receive`; one sender at a time calls `send`; `shutdown_read` may
come from any thread and wakes the reader. `StreamTransport` serves plain TCP and TLS
(ircish/tls.py `TlsTransport` offers a socket's calls over TLS), so a WebSocket transport
is a third implementation of `Transport` and nothing above it changes.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ircish.events import Framer
    from ircish.tls import TlsTransport

#: recv() size. CPython allocates the whole buffer before each blocking recv, so with a
#: reader thread per client this is paid per idle connection: 16 KiB cost ~10 kB RSS more
#: per connection than 4 KiB (bench/, idle).
RECV_BYTES = 4096


class InputOverflow(Exception):
    """The peer sent more than the transport's buffer limit without ending a line."""


class Transport(Protocol):
    """What `Connection` needs from the layer beneath it."""

    #: "tcp", "tls", ... for logs.
    kind: str
    #: How a line (bytes ending in CRLF) is framed for this transport; None: as it is.
    frame: Framer | None
    #: Bytes received so far (for metrics; written by the reader thread only).
    received: int

    def fileno(self) -> int: ...

    def bind(
        self,
        send_raw: Callable[[bytes], None],
        opened: Callable[[Framer | None, str], None],
        answer: Callable[[bytes], None],
    ) -> None:
        """Called once by `Connection`: `send_raw` queues bytes the transport must answer
        with itself (a WebSocket's handshake and pongs), in order with everything else;
        `opened(frame, host)` when a handshake chose the framing and the client's address;
        `answer` queues a plain HTTP answer whatever the sendq (one per connection, its
        size the transport's to bound: the web client's largest file)."""
        ...

    def farewell(self) -> bytes:
        """Bytes to send after the last line before closing (a WebSocket close frame)."""
        ...

    @property
    def speaking(self) -> bool:
        """Whether IRC lines may be sent now (not before a WebSocket's upgrade)."""
        ...

    def receive(self) -> list[bytes]:
        """Block until whole lines arrive (without their line endings); [] at the end of the
        stream. Raises InputOverflow, or OSError for the connection."""
        ...

    def wait_readable(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the client to send something (or hang up): True
        if it did. Called by the reader thread only, before its first `receive`."""
        ...

    def send(self, data: bytes | memoryview) -> int:
        """Hand the kernel what it takes now, never waiting: bytes taken, or
        BlockingIOError when none could be. Raises OSError for the connection."""
        ...

    def shutdown_read(self) -> None:
        """Wake the reader (its `receive` returns []); the peer is not told yet."""
        ...

    def close(self) -> None: ...


class OverStream:
    """What a transport over a byte stream (a TCP socket, or a `TlsTransport` over one) does
    the same whatever it carries: StreamTransport (lines) and WebSocketTransport share it."""

    def __init__(self, stream: socket.socket | TlsTransport) -> None:
        self._stream = stream
        self._fd = stream.fileno()

    @property
    def certfp(self) -> str | None:
        """The TLS client certificate's fingerprint, when the stream is TLS and one was
        shown (SASL EXTERNAL); None otherwise."""
        return getattr(self._stream, "certfp", None)

    def fileno(self) -> int:
        return self._fd

    def _stream_readable(self, timeout: float) -> bool:
        wait = getattr(self._stream, "wait_readable", None)
        if wait is not None:  # TLS: after the handshake, and bytes already decrypted count
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
            pass  # already gone

    def close(self) -> None:
        self._stream.close()


class StreamTransport(OverStream):
    """IRC lines over a byte stream: a TCP socket, or a `TlsTransport` over one. Lines end in
    LF (a CR before it is dropped); more than `max_buffer` bytes without one is InputOverflow.
    A half line left when the stream ends is dropped: it was never sent."""

    frame = None

    def __init__(
        self, stream: socket.socket | TlsTransport, max_buffer: int, kind: str = "tcp"
    ) -> None:
        super().__init__(stream)
        self._max_buffer = max_buffer
        self._buffer = b""
        self.kind = kind
        self.received = 0

    def __repr__(self) -> str:
        return f"<StreamTransport {self.kind} fd={self._fd}>"

    def bind(
        self,
        send_raw: Callable[[bytes], None],
        opened: Callable[[Framer | None, str], None],
        answer: Callable[[bytes], None],
    ) -> None:
        pass  # a byte stream answers nothing by itself and has no handshake of its own

    def farewell(self) -> bytes:
        return b""

    speaking = True

    def receive(self) -> list[bytes]:
        while True:
            # Checked before reading on, so the whole lines before an overlong tail still
            # go up first, as they arrived.
            if len(self._buffer) > self._max_buffer:
                raise InputOverflow("line without newline")
            data = self._stream.recv(RECV_BYTES)
            if not data:
                return []
            self.received += len(data)
            if b"\n" not in data:
                self._buffer += data
                continue
            *lines, self._buffer = (self._buffer + data).split(b"\n")
            return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    def wait_readable(self, timeout: float) -> bool:
        return bool(self._buffer) or self._stream_readable(timeout)
