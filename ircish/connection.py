"""One client connection: its reader thread, its outbound queue and its limits.

Reading: a thread per connection receives bytes, splits lines, enforces the
line and buffer limits and the UTF-8 policy, picks the session kind from the
first line (IRC or human text) and hands each message to the dispatcher.

Sending: `Connection.send` never blocks and never reorders. It appends the
bytes to this connection's outbox under the outbox lock (the last lock in
the order of ircish/world.py) and, if no sender owns the connection yet,
hands it to the `SenderPool`. A pool thread writes everything that has
queued in one `send` with MSG_DONTWAIT; if the kernel buffer is full, the
connection is parked with the pool's poller thread until it is writable, so
a receiver that stops reading holds up no thread and nobody else. Past
`sendq_bytes` queued, the connection is dropped ("SendQ exceeded").

Closing: the sender that flushed the last bytes (or aborted) shuts down the
read side, which wakes the reader; the reader removes the user from the
world, and the descriptor is closed (the peer sees FIN) once neither side
uses it.

TLS: on the TLS listener `sock` is an `ircish.tls.TlsTransport`. It offers
the five calls used here (recv, send with MSG_DONTWAIT, shutdown, close,
fileno) with a socket's meaning, so nothing here depends on the kind of
socket: its first `recv` runs the handshake in this reader thread (bounded
by registration_timeout), and its `send` never blocks and raises
BlockingIOError when the kernel buffer is full, so a TLS connection is
parked with the poller like any other. (An `ssl.SSLSocket` could not be
used here: OpenSSL forbids SSL_read and SSL_write on one SSL object from
two threads at once, and SSLSocket.send refuses MSG_DONTWAIT.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import threading
import time
from typing import TYPE_CHECKING

from ircish import protocol
from ircish.dispatch import DEFAULT_COST, dispatch_line
from ircish.flood import ExcessFlood, FloodGate
from ircish.protocol import Message
from ircish.render import render
from ircish.world import User

if TYPE_CHECKING:
    from ircish.server import Server
    from ircish.tls import TlsTransport

log = logging.getLogger(__name__)

#: How long a closing connection may take to flush before it is cut off.
CLOSE_GRACE_SECONDS = 5.0
#: recv() size. CPython allocates the whole buffer before each blocking recv,
#: so with a reader thread per client this is paid per idle connection:
#: 16 KiB cost ~10 kB RSS more per connection than 4 KiB (bench/, idle).
RECV_BYTES = 4096


class SenderPool:
    """Threads that drain outboxes, plus one poller for sockets that are full."""

    def __init__(self, threads: int) -> None:
        self._ready: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self._new_parked: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        #: Parked connections by descriptor; only the poller thread touches it.
        self._parked: dict[int, Connection] = {}
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._threads = [
            threading.Thread(target=self._drain_loop, name=f"sender-{i}", daemon=True)
            for i in range(threads)
        ]
        self._threads.append(threading.Thread(target=self._poll_loop, name="poller", daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake_poller()
        for _ in self._threads:
            self._ready.put(None)
        for thread in self._threads:
            thread.join(timeout=2.0)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def schedule(self, conn: Connection) -> None:
        self._ready.put(conn)

    def park(self, conn: Connection) -> None:
        """Wait for `conn` to become writable; the poller reschedules it."""
        self._new_parked.put(conn)
        self._wake_poller()

    def _wake_poller(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # a wake-up is already pending

    def _drain_loop(self) -> None:
        while True:
            conn = self._ready.get()
            if conn is None:
                return
            try:
                conn._flush()
            except Exception:
                log.exception("sender thread: unexpected error flushing %s", conn)
                conn._writer_failed()

    def _poll_loop(self) -> None:
        while not self._stopping:
            try:
                self._poll_until_stopped()
            except Exception:
                # Parked connections would be stuck for good: log and poll again.
                log.exception("poller: unexpected error")

    def _poll_until_stopped(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        parked = self._parked  # kept across a restart of this loop
        for fd in parked:
            poller.register(fd, select.POLLOUT)
        while not self._stopping:
            while True:
                try:
                    conn = self._new_parked.get_nowait()
                except queue.Empty:
                    break
                fd = conn.fileno
                parked[fd] = conn
                poller.register(fd, select.POLLOUT)
            # The timeout lets aborted connections (sendq, shutdown) leave
            # promptly even if their peer never reads again.
            events = poller.poll(200)
            woken = {fd for fd, _ in events}
            if self._wake_r in woken:
                woken.discard(self._wake_r)
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            woken.update(fd for fd, conn in parked.items() if conn.aborting)
            # A closing connection whose peer never reads again: past its grace
            # period it is aborted here, since housekeeping no longer sees it.
            now = time.monotonic()
            for fd, conn in parked.items():
                if conn.closing and conn.close_deadline is not None and now > conn.close_deadline:
                    conn.close("Closing timed out", flush=False)
                    woken.add(fd)
            for fd in woken:
                conn = parked.pop(fd, None)
                if conn is not None:
                    poller.unregister(fd)
                    self._ready.put(conn)


class Connection:
    """A client socket with its reader thread and outbound queue."""

    def __init__(self, server: Server, sock: socket.socket | TlsTransport, address: tuple) -> None:
        self.server = server
        self.sock = sock
        self.fileno = sock.fileno()
        self.address = address
        self.limits = server.config.limits
        self._sendq_bytes = self.limits.sendq_bytes
        #: "irc" or "text" once the first line has been read.
        self.mode: str | None = None
        self.user = User(self, address[0])
        self.connected_at = time.monotonic()
        self.last_recv = self.connected_at
        self.ping_sent_at: float | None = None
        self.quit_reason: str | None = None
        # Registration state (commands/registration.py).
        self.cap_negotiating = False
        self.password: str | None = None
        # Outbox state, guarded by _lock.
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._queued = 0  # bytes in _chunks plus the unsent remainder
        self._pending = b""  # unsent remainder, owned by the active sender
        self._writer_busy = False
        self._closing = False
        self._abort = False
        self._reader_done = False
        self._fd_closed = False
        self.close_deadline: float | None = None
        limits = self.limits
        self.flood = (
            FloodGate(limits.flood_burst, limits.flood_rate, limits.flood_disconnect_seconds)
            if limits.flood_rate > 0
            else None
        )

    def __repr__(self) -> str:
        return f"<Connection {self.address[0]}:{self.address[1]} {self.user.nick}>"

    @property
    def aborting(self) -> bool:
        return self._abort

    @property
    def closing(self) -> bool:
        return self._closing

    # -- sending --------------------------------------------------------------

    def send(self, msg: Message, wire: bytes | None = None) -> None:
        """Queue `msg` for this client (rendered as text for text sessions)."""
        if self.mode != "text" and wire is not None:
            self.send_bytes(wire)  # the fan-out fast path: bytes formatted once
            return
        data = self._encode(msg, wire)
        if data:
            self.send_bytes(data)

    def _encode(self, msg: Message, wire: bytes | None = None) -> bytes:
        """The bytes this session gets for `msg`: IRC wire form, or one human line."""
        if self.mode == "text":
            line = render(msg, self.user.nick)
            return b"" if line is None else line.encode("utf-8") + b"\r\n"
        return wire if wire is not None else msg.to_bytes()

    def send_bytes(self, data: bytes) -> None:
        # This runs once per delivery, under the sender's room lock: plain
        # acquire/release (nothing in between can raise) is measurably cheaper
        # than `with` here (bench/RESULTS.md, fanout).
        lock = self._lock
        lock.acquire()
        if self._closing:
            lock.release()
            return
        self._queued += len(data)
        if self._queued > self._sendq_bytes:
            overflow = True
        else:
            overflow = False
            self._chunks.append(data)
            if self._writer_busy:
                lock.release()
                return
            self._writer_busy = True
        lock.release()
        if overflow:
            # No logging here (we may hold a room lock): the reader logs the
            # reason when it removes the user.
            self.close("SendQ exceeded", flush=False)
        else:
            self.server.senders.schedule(self)

    def close(self, reason: str, error: str | None = None, flush: bool = True) -> None:
        """Finish this connection: optionally send `ERROR :error`, flush, shut down.

        Safe from any thread and under any world/room lock: it only queues.
        """
        with self._lock:
            if self.quit_reason is None:
                self.quit_reason = reason
            if self._abort or (self._closing and flush):
                return
            if not flush:
                self._abort = True
                self._chunks.clear()
            elif error is not None:
                line = self._encode(Message("ERROR", [error]))
                self._chunks.append(line)
                self._queued += len(line)
            self._closing = True
            self.close_deadline = time.monotonic() + CLOSE_GRACE_SECONDS
            if self._writer_busy:
                return  # the active sender will see _closing/_abort
            self._writer_busy = True
        self.server.senders.schedule(self)

    def _flush(self) -> None:
        """Write what is queued. Runs in a sender thread that owns the writer role."""
        while True:
            with self._lock:
                if self._abort or self._fd_closed:
                    self._chunks.clear()
                    self._pending = b""
                    data = b""
                elif self._chunks:
                    data = self._pending + b"".join(self._chunks)
                    self._chunks.clear()
                else:
                    data = self._pending
                self._pending = b""
                # Counted out of the queue as it is taken: bytes the peer has
                # read must never count against its sendq.
                self._queued -= len(data)
                finished = not data
                if finished and not (self._closing or self._abort):
                    self._writer_busy = False
                    close_fd = self._take_fd_locked()
                    break
            if finished:
                # Everything is out (or dropped) and we are closing: wake the reader.
                self._shutdown_socket()
                with self._lock:
                    self._writer_busy = False
                    close_fd = self._take_fd_locked()
                break
            sent = self._write(data)
            with self._lock:
                if sent < len(data) and not self._abort:
                    self._pending = data[sent:]
                    self._queued += len(self._pending)
                    park = True
                else:
                    park = False
                    more = bool(self._chunks)
            if park:
                self.server.senders.park(self)
                return
            if more and not self._closing:
                # Let other connections have the thread; come back for the rest.
                self.server.senders.schedule(self)
                return
        if close_fd:
            self.sock.close()

    def _writer_failed(self) -> None:
        """A sender crashed on this connection: give up the writer role and abort,
        so it is still closed and its reader woken."""
        with self._lock:
            self._writer_busy = False
        self.close("Internal error", flush=False)

    def _write(self, data: bytes) -> int:
        """Send as much of `data` as the kernel takes now; never blocks."""
        view = memoryview(data)
        sent = 0
        try:
            while sent < len(data):
                sent += self.sock.send(view[sent:], socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        except OSError as exc:
            log.debug("%s: send failed: %s", self, exc)
            self.close(f"Write error: {exc.strerror or exc}", flush=False)
            return len(data)  # dropped; the caller accounts for it as gone
        return sent

    def _take_fd_locked(self) -> bool:
        """True if the caller must close the socket now (both sides are done)."""
        if self._reader_done and not self._writer_busy and not self._fd_closed:
            self._fd_closed = True
            return True
        return False

    def _shutdown_socket(self) -> None:
        """Wake the reader. Only the read side: the peer sees the connection close
        when the reader has removed the user and closes the descriptor, so a client
        that reconnects at once finds its nick free."""
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass  # already gone

    # -- reading --------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(
            target=self._read_loop, name=f"reader-{self.address[0]}:{self.address[1]}", daemon=True
        ).start()

    def _read_loop(self) -> None:
        reason = "Connection closed"
        try:
            reason = self._read_lines()
        except OSError as exc:
            reason = f"Read error: {exc.strerror or exc}"
        except Exception:
            log.exception("%s: reader crashed", self)
            reason = "Internal error"
        finally:
            self._finish(reason)

    def _read_lines(self) -> str:
        limits = self.limits
        buf = b""
        while True:
            data = self.sock.recv(RECV_BYTES)
            if not data:
                return "Connection closed"
            self.last_recv = time.monotonic()
            buf += data
            start = 0
            while (end := buf.find(b"\n", start)) >= 0:
                line = buf[start:end]
                start = end + 1
                self._take_line(line.rstrip(b"\r"))
                if self._closing:
                    return self.quit_reason or "Connection closed"
            buf = buf[start:]
            if len(buf) > limits.read_buffer_bytes:
                log.info(
                    "%s: over %d bytes without a newline, disconnecting",
                    self,
                    limits.read_buffer_bytes,
                )
                self.close("Input buffer exceeded", "Input buffer exceeded: line without newline")
                return "Input buffer exceeded"

    def _take_line(self, raw: bytes) -> None:
        """Check one received line against the limits and dispatch it."""
        if not raw.strip():
            return
        if len(raw) + 2 > self.limits.max_line_bytes:
            log.info(
                "%s: line of %d bytes refused (limit %d)",
                self,
                len(raw) + 2,
                self.limits.max_line_bytes,
            )
            self.reply_error(protocol.ERR_INPUTTOOLONG, "Input line was too long")
            self.throttle(DEFAULT_COST)
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            log.info("%s: line with invalid UTF-8 refused", self)
            # UTF8ONLY is advertised: refuse rather than guess (IRCv3 standard replies).
            self.send(
                Message(
                    "FAIL",
                    ["*", "INVALID_UTF8", "Message rejected: not valid UTF-8"],
                    self.server.name,
                )
            )
            self.throttle(DEFAULT_COST)
            return
        dispatch_line(self, line)

    def throttle(self, cost: int) -> bool:
        """Flood control for one command: wait while in debt (fakelag). Runs in the
        reader thread. False if the client was cut off for Excess Flood."""
        if self.flood is None or cost == 0:
            return True
        try:
            wait = self.flood.charge(cost)
        except ExcessFlood:
            log.info("%s: Excess Flood", self)
            self.close("Excess Flood", "Excess Flood")
            return False
        if wait > 0:
            log.debug("%s: flooding, slowed down %.2f s", self, wait)
            deadline = time.monotonic() + wait
            # Short naps, so a connection closed meanwhile (shutdown, kill) stops waiting.
            while not self._closing and (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, 0.25))
        return not self._closing

    def reply_error(self, numeric: str, *params: str) -> None:
        nick = self.user.nick or "*"
        self.send(Message(numeric, [nick, *params], self.server.name))

    def _finish(self, reason: str) -> None:
        """Reader is done: leave the world, then let the fd close."""
        reason = self.quit_reason or reason
        try:
            self.server.remove_connection(self, reason)
        except Exception:
            log.exception("%s: error while removing", self)
        self.close(reason, flush=True)
        with self._lock:
            self._reader_done = True
            close_fd = self._take_fd_locked()
        if close_fd:
            self.sock.close()
