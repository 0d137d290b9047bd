"""One client connection: its reader thread, its outbound queue and its limits.

Layers (ircish/transport.py, session.py, dispatch.py): the `Transport` beneath hands up
whole lines and writes bytes without waiting; the `Session` above turns a line into a
message (or a refusal) and decides flood control; the `Dispatcher` runs the handler. This
module is the threaded driver between them: a reader thread per connection, and an outbox
drained by the sender pool.

Reading: the reader thread takes lines from the transport, gives each to the session,
waits as long as flood control says (fakelag), then sends the refusal or dispatches the
message. A transport that overflows its buffer, or a client flooding for too long, is cut
off with an ERROR line.

Sending: `Connection.send` and `deliver` never block and never reorder. They append the
bytes to this connection's outbox under the outbox lock (in the order of ircish/world.py)
and, if no sender owns the connection yet, hand it to the `SenderPool`. A pool thread
writes everything that has queued in one `send`; if the kernel buffer is full, the
connection is parked with the pool's poller thread until it is writable, so a receiver
that stops reading holds up no thread and nobody else. Past `sendq_bytes` queued, the
connection is dropped ("SendQ exceeded").

Closing: the sender that flushed the last bytes (or aborted) shuts down the read side,
which wakes the reader; the reader removes the user from the world, and the descriptor is
closed (the peer sees FIN) once neither side uses it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from ircish.events import PLAIN, Event, acting_thread, gathering
from ircish.locks import held, new_lock
from ircish.metrics import Tally
from ircish.protocol import Message, ProtocolError
from ircish.session import IRC, Session
from ircish.transport import InputOverflow, Transport
from ircish.world import User, irc_host

if TYPE_CHECKING:
    from ircish.config import Limits
    from ircish.dispatch import Dispatcher
    from ircish.events import Framer

log = logging.getLogger(__name__)

#: How long a closing connection may take to flush before it is cut off.
CLOSE_GRACE_SECONDS = 5.0
#: How long a new connection may stay silent before it is greeted. IRC clients speak at
#: once (CAP, NICK), so only a person who connected with nc and waits sees the greeting.
GREETING_DELAY = 1.0


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


#: The most attributes a Connection may have. From 30 on, CPython 3.11 gives each instance a
#: dict of its own instead of values beside a shared key table: 1.3 kB more per client,
#: and slower attribute stores on the fan-out path (bench: fanout200 about 10% slower
#: when two more attributes pushed it to 30). tests/test_layers.py holds it to this.
MAX_ATTRIBUTES = 29


class Hooks(NamedTuple):
    """What a Connection tells its server: it ended (`finish`, from the reader), its
    descriptor closed (`closed`), the transport learned the client's address (`address`:
    returns a refusal, or None)."""

    finish: Callable[[Connection, str], None]
    closed: Callable[[Connection], None] | None
    address: Callable[[Connection, str], str | None] | None


class Connection:
    """A client's transport, with its reader thread, session and outbound queue."""

    def __init__(
        self,
        transport: Transport,
        address: tuple,
        *,
        dispatcher: Dispatcher,
        senders: SenderPool,
        limits: Limits,
        on_finish: Callable[[Connection, str], None],
        greeting: Message | None = None,
        on_closed: Callable[[Connection], None] | None = None,
        on_address: Callable[[Connection, str], str | None] | None = None,
    ) -> None:
        self.transport = transport
        self._greeting = greeting
        self.fileno = transport.fileno()
        self.address = address
        self._dispatcher = dispatcher
        self._senders = senders
        #: Whom this connection tells of its life (one attribute for the three: see
        #: MAX_ATTRIBUTES).
        self._hooks = Hooks(on_finish, on_closed, on_address)
        #: The address this connection counts against (max_clients_per_ip), under the
        #: server's connections_lock; None: not counted.
        self.counted_ip: str | None = None
        self._sendq_bytes = limits.sendq_bytes
        self.user = User(self, address[0])
        #: What this connection did, for metrics (ircish/metrics.py: who writes what).
        self.tally = Tally()
        #: The session's wire format is PLAIN (no tags, no framing): what `deliver` asks
        #: first, once per delivery. Kept up to date by the session.
        self._plain = False
        #: The answer being gathered for a labeled command (IRCv3 labeled-response): set
        #: by the reader thread around its dispatch; what that thread sends this client
        #: meanwhile goes through it. Other threads' deliveries are not part of it.
        self._labeled: LabeledResponse | None = None
        self.session = Session(
            self.user,
            dispatcher.commands,
            limits,
            dispatcher.name,
            frame=transport.frame,
            on_wire_format=self._wire_format_changed,
        )
        transport.bind(self.send_bytes, self._transport_opened, self._send_answer)
        self.connected_at = time.monotonic()
        self.last_recv = self.connected_at
        self.ping_sent_at: float | None = None
        self.quit_reason: str | None = None
        # Outbox state, guarded by _lock.
        self._lock = new_lock("Connection outbox lock")
        self._chunks: list[bytes] = []
        self._queued = 0  # bytes in _chunks plus the unsent remainder
        self._pending = b""  # unsent remainder, owned by the active sender
        self._writer_busy = False
        self._closing = False
        self._abort = False
        self._reader_done = False
        self._fd_closed = False
        self.close_deadline: float | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.address[0]}:{self.address[1]} {self.user.nick or '*'}>"

    @property
    def certfp(self) -> str | None:
        """The SHA-256 fingerprint of the TLS client certificate, if one was shown."""
        return getattr(self.transport, "certfp", None)

    @property
    def aborting(self) -> bool:
        return self._abort

    @property
    def closing(self) -> bool:
        return self._closing

    # -- sending --------------------------------------------------------------

    def deliver(self, event: Event, reply: bool = True) -> None:
        """Queue a relayed event: its bytes are made once per wire format, not per client.
        This runs once per delivery, under the sender's room lock: the fan-out hot path,
        where most receivers take the event's plain bytes after one identity test."""
        if self._plain:
            data = event.data  # b"" for an event only some caps get (TAGMSG)
            if data:
                self.send_bytes(data)
            return
        fmt = self.session.wire_format
        labeled = self._labeled
        if labeled is not None:
            if reply and labeled.thread == acting_thread():
                # Part of the answer to this client's own labeled command.
                if fmt is not None and event.reaches(fmt.caps):
                    labeled.add(event.message_for(fmt.caps))
                return
            labeled.before_other()
        if fmt is not None:
            data = event.wire(fmt)
        elif event.needs is None:  # a text session: a line rendered for this person
            data = self.session.encode(event.message)
        else:
            return
        if data:
            self.send_bytes(data)

    def _transport_opened(self, frame: Framer | None, host: str) -> None:
        """The transport's handshake chose the framing and named the client's address (a
        WebSocket behind a proxy: X-Forwarded-For). Reader thread, before any line."""
        self.session.set_frame(frame)
        if host != self.address[0]:
            log.info("%s: upgraded; the client is %s (X-Forwarded-For)", self, host)
        self.user.host = irc_host(host)
        on_address = self._hooks.address
        refusal = None if on_address is None else on_address(self, host)
        if refusal is not None:
            log.info("refusing %s behind %s: %s", host, self.address[0], refusal)
            self.close(refusal, refusal)

    def has_cap(self, name: str) -> bool:
        return name in self.session.caps

    def _wire_format_changed(self, session: Session) -> None:
        # A labeled-response client's own answers are routed through `_labeled`, so it
        # never takes the fast path.
        self._plain = session.wire_format is PLAIN and "labeled-response" not in session.caps

    def send(self, msg: Message) -> None:
        """Queue `msg` for this client (rendered as text for text sessions)."""
        labeled = self._labeled
        if labeled is not None:
            if labeled.thread == acting_thread():
                labeled.add(msg)
                return
            labeled.before_other()
        data = self.session.encode(msg)
        if data:
            self.send_bytes(data)

    def _send_answer(self, data: bytes) -> None:
        """Queue a transport's plain HTTP answer (a web client file) whatever the sendq:
        it is the one answer the connection ends with, and the transport bounds its size."""
        with self._lock:
            if self._closing:
                return
            self._queued += len(data)
            self._chunks.append(data)
            if self._writer_busy:
                return
            self._writer_busy = True
        self._senders.schedule(self)

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
            self._senders.schedule(self)

    def close(self, reason: str, error: str | None = None, flush: bool = True) -> None:
        """Finish this connection: optionally send `ERROR :error`, flush, shut down.

        Safe from any thread and under any world/room lock: it only queues.
        """
        speaking = self.transport.speaking  # not before a WebSocket's upgrade: HTTP still
        line = (
            b"" if error is None or not speaking else self.session.encode(Message("ERROR", [error]))
        )
        line += self.transport.farewell() if flush else b""
        with self._lock:
            if self.quit_reason is None:
                self.quit_reason = reason
            if self._abort or (self._closing and flush):
                return
            if not flush:
                self._abort = True
                self._chunks.clear()
            elif line:
                self._chunks.append(line)
                self._queued += len(line)
            self._closing = True
            self.close_deadline = time.monotonic() + CLOSE_GRACE_SECONDS
            if self._writer_busy:
                return  # the active sender will see _closing/_abort
            self._writer_busy = True
        self._senders.schedule(self)

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
                self._senders.park(self)
                return
            if more and not self._closing:
                # Let other connections have the thread; come back for the rest.
                self._senders.schedule(self)
                return
        if close_fd:
            self._close_transport()

    def _close_transport(self) -> None:
        """Close the descriptor (once: whoever is last, reader or sender, calls this)."""
        self.transport.close()
        if self._hooks.closed is not None:
            self._hooks.closed(self)

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
                sent += self.transport.send(view[sent:])
        except BlockingIOError:
            pass
        except OSError as exc:
            log.debug("%s: send failed: %s", self, exc)
            self.close(f"Write error: {exc.strerror or exc}", flush=False)
            self.tally.bytes_out += sent
            return len(data)  # dropped; the caller accounts for it as gone
        self.tally.bytes_out += sent
        return sent

    def _take_fd_locked(self) -> bool:
        """True if the caller must close the socket now (both sides are done)."""
        assert held(self._lock)
        if self._reader_done and not self._writer_busy and not self._fd_closed:
            self._fd_closed = True
            return True
        return False

    def _shutdown_socket(self) -> None:
        """Wake the reader. Only the read side: the peer sees the connection close
        when the reader has removed the user and closes the descriptor, so a client
        that reconnects at once finds its nick free."""
        self.transport.shutdown_read()

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
            self.finish(reason)

    def _read_lines(self) -> str:
        if self._greeting is not None and not self.transport.wait_readable(GREETING_DELAY):
            self.send(self._greeting)
        while True:
            try:
                lines = self.transport.receive()
            except InputOverflow as overflow:
                log.info("%s: input buffer exceeded (%s), disconnecting", self, overflow)
                self.close("Input buffer exceeded", f"Input buffer exceeded: {overflow}")
                return "Input buffer exceeded"
            if not lines:
                return "Connection closed"
            for raw in lines:
                self.handle_line(raw)
                if self._closing:
                    return self.quit_reason or "Connection closed"

    def handle_line(self, raw: bytes) -> None:
        """One received line through the session, flood control, then the refusal or the
        handler. The reader thread calls it for each line (a test may call it directly)."""
        inbound = self.session.take(raw)
        if inbound.alive:
            self.last_recv = time.monotonic()
        if inbound.excess_flood:
            log.info("%s: Excess Flood", self)
            self.close("Excess Flood", "Excess Flood")
            return
        if inbound.notice is not None:
            self.send(inbound.notice)
        if inbound.wait > 0:
            self.tally.slowdowns += 1
            if not self._fakelag(inbound.wait):
                return
        if inbound.note is not None:
            log.info("%s: %s", self, inbound.note)
        if inbound.refusal is not None:
            refusal = inbound.refusal
            if inbound.label is not None:  # a labeled line refused before any dispatch
                refusal = _tagged(refusal, "label", inbound.label)
            self.send(refusal)
        if inbound.message is not None and not self._closing:
            label = inbound.message.tags.get("label") if inbound.message.tags else None
            if label is None:
                self._dispatcher.dispatch(self.session, inbound.message)
            else:
                self._dispatch_labeled(inbound.message, label)
            for piece in inbound.then:  # a long line's further pieces (text sessions only)
                if self._closing:
                    break
                self._dispatcher.dispatch(self.session, piece)

    def _dispatch_labeled(self, msg: Message, label: str) -> None:
        """Dispatch `msg`, and send its answer labeled: one line, a batch, or ACK."""
        self._labeled = labeled = LabeledResponse(label, self.session, self._send_encoded)
        gathering(True)
        try:
            self._dispatcher.dispatch(self.session, msg)
        finally:
            gathering(False)
            self._labeled = None
            labeled.finish()

    def _send_encoded(self, msg: Message) -> None:
        """A labeled answer's line, sent. One that cannot be formatted is a server bug:
        logged (rarely, and maybe under a room's lock), never a crash of the reader."""
        try:
            data = self.session.encode(msg)
        except ProtocolError as exc:
            log.error("%s: labeled reply could not be formatted (%s): %r", self, exc, msg)
            return
        if data:
            self.send_bytes(data)

    def _fakelag(self, wait: float) -> bool:
        """Wait `wait` seconds in this reader thread (the client slows only itself). False if
        the connection was closed meanwhile (shutdown, KILL): short naps notice it."""
        log.debug("%s: flooding, slowed down %.2f s", self, wait)
        deadline = time.monotonic() + wait
        while not self._closing and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))
        return not self._closing

    @property
    def is_irc(self) -> bool:
        return self.session.kind == IRC

    def finish(self, reason: str) -> None:
        """The reader is done (the peer left, or the connection was closed): leave the
        world, then let the descriptor close."""
        reason = self.quit_reason or reason
        try:
            self._hooks.finish(self, reason)
        except Exception:
            log.exception("%s: error while removing", self)
        self.close(reason, flush=True)
        with self._lock:
            self._reader_done = True
            close_fd = self._take_fd_locked()
        if close_fd:
            self._close_transport()


class LabeledResponse:
    """The answer to one labeled command (https://ircv3.net/specs/extensions/labeled-response):
    no line becomes `ACK`, one line carries the label, several go in a `labeled-response`
    batch whose BATCH line carries it. The first line is held until a second shows whether
    a batch is needed; from the second on, lines go out as they come, so a reply built under
    a room's lock still goes out under it. A line for the client that is no part of the
    answer (another's message, delivered meanwhile; one's own message to oneself as
    received) sends the held one first, labeled (`before_other`): the answer keeps its
    place among what the client gets, its echo before a later line of the room, and any
    more of it goes as it is. A client without batch gets its first line labeled and the
    rest as they are."""

    __slots__ = ("_batch", "_count", "_held", "_lock", "_send", "_session", "label", "thread")

    def __init__(self, label: str, session: Session, send: Callable[[Message], None]) -> None:
        self.label = label
        self._session = session
        self._send = send
        #: The reader thread running the command: only what it sends is part of the answer.
        self.thread = threading.get_ident()
        self._held: Message | None = None
        self._count = 0
        self._batch: str | None = None
        #: The answering thread adds; another may deliver to the client meanwhile (a
        #: cluster's bus, another reader) and so send the held line (`before_other`).
        self._lock = new_lock("labeled lock")

    def add(self, msg: Message) -> None:
        with self._lock:
            self._count += 1
            if self._count == 1:
                self._held = msg
                return
            self._send_held_locked(batch="batch" in self._session.caps)
            self._send(msg if self._batch is None else _tagged(msg, "batch", self._batch))

    def before_other(self) -> None:
        """A line that is no part of the answer is about to be sent: the held line goes
        first (nothing to do when none is held)."""
        if self._held is None:  # (one read: most of the time there is none)
            return
        with self._lock:
            self._send_held_locked(batch=False)

    def _send_held_locked(self, batch: bool) -> None:
        """The held first line goes: in a labeled-response batch opened now, or labeled."""
        assert held(self._lock)
        first, self._held = self._held, None
        if first is None:
            return
        if batch:
            self._batch = self._session.new_batch_id()
            self._send(self._server_line("BATCH", f"+{self._batch}", "labeled-response"))
            first = _tagged(first, "batch", self._batch)
        else:
            first = _tagged(first, "label", self.label)
        self._send(first)

    def finish(self) -> None:
        with self._lock:
            if self._count == 0:
                self._send(self._server_line("ACK"))
            elif self._held is not None:
                self._send(_tagged(self._held, "label", self.label))
                self._held = None
            elif self._batch is not None:
                self._send(Message("BATCH", [f"-{self._batch}"], self._session.server_name))

    def _server_line(self, command: str, *params: str) -> Message:
        return Message(command, list(params), self._session.server_name, {"label": self.label})


def _tagged(msg: Message, key: str, value: str) -> Message:
    return Message(msg.command, msg.params, msg.prefix, {key: value, **msg.tags})
