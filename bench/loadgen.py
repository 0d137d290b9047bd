"""The load generator: worker processes that each drive a share of the IRC clients.

A worker owns its clients' sockets and one epoll loop. The controller (scenarios.py)
talks to it over a pipe, one phase at a time: `setup` (paced connect, register, join),
`fanout`/`dm` (traffic; `dm` in private or in rooms of two), `status` (counters, during
the drain), `finish` (latency samples), `ping` (every client PINGs and waits for its
PONG), `churn` (connect/join/quit cycles), `close`. Clients always answer the server's PINGs.

Counting is kept cheap so the generator is not the bottleneck: a received chunk is cut
at its last newline and its relayed messages are counted with one
`bytes.count(b" PRIVMSG ")`. Only sampled messages (text starting with `!!`) are parsed,
for latency, and only one "monitor" member per worker parses every line, to tell its
senders how many of their messages have arrived (the in-flight window of max-rate runs).
Message text: `[!!]<sender>:<seq>:<monotonic ns> <padding>`; CLOCK_MONOTONIC is shared
by all processes of the machine, so send and receive stamps compare across workers.

Capabilities: a client set up with `capped` opens with `CAP LS 302` before NICK/USER,
requests the setup's caps (e.g. `server-time message-tags echo-message`) when the server
lists them all, and sends `CAP END` after the ACK, or at once when the server lists them
not, NAKs them or does not know CAP (then it registers without caps, as a plain client).
Its lines may start with `@tags `: the counting above does not care, the PING and
monitor parsing skip the tags. With echo-message a sender gets its own messages back:
those echoes are counted apart (`echo_rx`, found by the sender's own `:nick!` prefix),
never as deliveries, and their sampled latencies go to `echo_latencies`.

Accounts: with a setup `password`, every client sends `PASS <nick>:<password>` first (an
account login where the server has no server password, as ircish does: issue 14) and
counts as logged in once it gets 900 (RPL_LOGGEDIN) before its 366; the setup reply says
how many did, with one 900 line as a sample, and a "login failed" notice is an error.

WebSocket (issue 16): with a `subprotocol`, every client opens its TCP connection with
an HTTP/1.1 upgrade (RFC 6455 4.1) asking for that IRCv3 subprotocol, checks the 101,
its Sec-WebSocket-Accept and the subprotocol chosen, and only then sends NICK/USER.
`WsStream` is the framing, in this process's loop like everything else: what a client
sends goes out one masked frame per line (RFC 6455 5.3: a fresh key per frame), and
what it receives is turned back into CRLF-terminated lines before the code above sees
it, so counting and parsing are the same for both transports. A line from the server is
one final, unmasked data frame, under 126 bytes for every untagged line of the bench;
the deframer walks those in a tight loop (a frame split across reads waits in `tail`)
and hands anything else (longer frames such as tagged lines, fragments, control frames,
protocol errors) to a general path, one frame at a time.

Clusters (issue 17): a worker may be given several ports, one per node of a network of
ircish servers; client i connects to the (i mod n)-th, so the members of a room (and the
two sides of a dm pair, whose indices are consecutive) are on different nodes.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import re
import select
import socket
import struct
import time
import traceback
from multiprocessing.connection import Connection as Pipe
from typing import Any

PRIVMSG = b" PRIVMSG "
SAMPLE = b" :!!"
EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
RECV_BYTES = 262144
#: A line this long without a newline means the stream is garbage.
MAX_TAIL = 65536
RST_LINGER = struct.pack("ii", 1, 0)
PING_LINE = re.compile(rb"^(?:@\S+ )?(?::\S+ )?PING (.*?)\r?$", re.MULTILINE)
#: RPL_LOGGEDIN: the login (PASS account:password) worked.
LOGGED_IN = b" 900 "
#: Numerics that mean the server does not take CAP before registration (miniircd-like
#: servers answer an unknown command with 421, some with 451 or 410).
CAP_REFUSED = (b" 421 ", b" 451 ", b" 410 ")

# Client states (UPGRADING: WebSocket only, the upgrade request sent, waiting for 101).
CONNECTING, UPGRADING, REGISTERING, JOINING, READY, QUITTING, DEAD = range(7)

#: The IRCv3 WebSocket subprotocols (https://ircv3.net/specs/extensions/websocket) and
#: the opcode each one's messages travel in (RFC 6455 5.6).
WS_OPCODES = {"binary.ircv3.net": 0x2, "text.ircv3.net": 0x1}
#: RFC 6455 1.3: Sec-WebSocket-Accept is base64(SHA-1(key + this)).
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The most a server's upgrade answer (status line and headers) may take.
MAX_UPGRADE = 8192


def now_ns() -> int:
    return time.monotonic_ns()


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Client:
    __slots__ = (
        "acked",
        "capneg",
        "capped",
        "caps",
        "churn_started",
        "echo",
        "fd",
        "idx",
        "logged_in",
        "monitor",
        "nick",
        "offered",
        "out",
        "own",
        "peer",
        "phase",
        "ping_sent",
        "port",
        "room",
        "rx",
        "sent",
        "sock",
        "started",
        "state",
        "tail",
        "ws",
    )

    def __init__(self, idx: int, nick: str, room: str | None, capped: bool = False) -> None:
        self.idx = idx
        self.nick = nick
        self.room = room
        self.capped = capped  # ask for the setup's caps (CAP LS 302 / REQ)
        self.capneg = 0  # 0: no CAP talk open; 1: waiting for LS; 2: waiting for ACK/NAK
        self.offered: set[bytes] = set()  # what the server's CAP LS listed so far
        self.caps: frozenset[bytes] = frozenset()  # what the server ACKed
        self.echo = False  # has echo-message: its own messages come back
        self.own = b":" + nick.encode() + b"!"  # its own prefix, to tell echoes apart
        self.logged_in = False  # got 900 (RPL_LOGGEDIN) during its handshake
        self.sock: socket.socket | None = None
        self.fd = -1
        self.port = 0  # the server port it connects to
        self.ws: WsStream | None = None  # the WebSocket framing (None: IRC over TCP)
        self.state = CONNECTING
        self.tail = b""
        self.out = b""
        self.rx = 0  # PRIVMSG lines received
        self.sent = 0  # messages this client sent in the traffic phase
        self.acked = 0  # of those, how many the designated receiver has seen
        self.peer: Client | None = None  # dm: the other side of the pair
        self.monitor = False
        self.phase = 0.0  # fixed rate: where in the period this sender's slot falls
        self.started = 0
        self.ping_sent = 0
        self.churn_started = 0


class WsError(Exception):
    """The server broke the WebSocket protocol (or refused the upgrade)."""


def mask_frame(first: int, payload: bytes, key: bytes) -> bytes:
    """One client frame (RFC 6455 5.2): `first` is FIN and the opcode; the payload is
    masked with the 4-byte `key` (5.3: a client MUST mask every frame)."""
    size = len(payload)
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 65536:
        head = bytes((first, 0xFE)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, 0xFF)) + size.to_bytes(8, "big")
    if not size:
        return head + key
    # XOR as one big integer: a C loop over the bytes, not a Python one.
    stream = (key * (size // 4 + 1))[:size]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")
    return head + key + masked.to_bytes(size, "big")


class WsStream:
    """One client's end of IRC over WebSocket: the upgrade, then frames both ways.

    `receive` takes what the socket gave and returns the lines in it, CRLF-terminated
    (b"": no whole line yet); it raises WsError when the server breaks RFC 6455 or the
    IRCv3 spec. Frames the client must answer (a pong, the close handshake) wait in
    `replies`, already masked, for the caller to send.
    """

    __slots__ = (
        "answer",
        "closed",
        "first",
        "key",
        "message",
        "open",
        "replies",
        "subprotocol",
        "tail",
    )

    def __init__(self, subprotocol: str) -> None:
        self.subprotocol = subprotocol
        #: FIN set and the subprotocol's opcode: the first byte of every whole message.
        self.first = 0x80 | WS_OPCODES[subprotocol]
        self.key = base64.b64encode(os.urandom(16))
        self.open = False  # the 101 came and checked out
        self.answer = b""  # the server's answer to the upgrade, until it is whole
        self.tail = b""  # the start of a frame not all received yet
        self.message: list[bytes] | None = None  # the parts of a fragmented message
        self.replies: list[bytes] = []
        self.closed = False  # the server sent its close frame

    def request(self, host: str) -> bytes:
        """The opening handshake (RFC 6455 4.1). No Origin: this is not a browser."""
        return (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {self.subprotocol}\r\n"
            f"Sec-WebSocket-Key: {self.key.decode()}\r\n\r\n"
        ).encode()

    def frame(self, data: bytes) -> bytes:
        """CRLF-terminated lines as one masked frame each (one IRC line per message, no
        CRLF: the IRCv3 spec), each with a fresh key from one urandom call."""
        lines = data.split(b"\r\n")
        lines.pop()  # after the last CRLF
        keys = os.urandom(4 * len(lines))
        first = self.first
        return b"".join(
            [mask_frame(first, line, keys[4 * n : 4 * n + 4]) for n, line in enumerate(lines)]
        )

    def receive(self, data: bytes) -> bytes:
        if not self.open:
            data = self._upgrade(data)
            if not data:
                return b""
        return self._unframe(data)

    def _upgrade(self, data: bytes) -> bytes:
        """Read the server's answer to the upgrade; once it is whole and right, what came
        after it (frames)."""
        answer = self.answer + data
        end = answer.find(b"\r\n\r\n")
        if end < 0:
            if len(answer) > MAX_UPGRADE:
                raise WsError(f"no end to the upgrade answer in {len(answer)} bytes")
            self.answer = answer
            return b""
        status, *fields = answer[:end].split(b"\r\n")
        if status.split(b" ", 2)[:2] != [b"HTTP/1.1", b"101"]:
            raise WsError(f"upgrade refused: {status[:80]!r}")
        headers = {}
        for field in fields:
            name, _, value = field.partition(b":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self.key + WS_GUID).digest())
        connection = headers.get(b"connection", b"").lower().split(b",")
        if headers.get(b"upgrade", b"").lower() != b"websocket" or b"upgrade" not in [
            token.strip() for token in connection
        ]:
            raise WsError(f"101 without Upgrade: websocket / Connection: upgrade: {fields!r}")
        if headers.get(b"sec-websocket-accept") != accept:
            raise WsError(f"Sec-WebSocket-Accept {headers.get(b'sec-websocket-accept')!r}")
        if headers.get(b"sec-websocket-protocol") != self.subprotocol.encode():
            raise WsError(f"subprotocol {headers.get(b'sec-websocket-protocol')!r}")
        self.open = True
        self.answer = b""
        return answer[end + 4 :]

    def _unframe(self, data: bytes) -> bytes:
        buf = self.tail + data if self.tail else data
        lines: list[bytes] = []
        append = lines.append
        first = self.first
        end = len(buf)
        pos = 0
        while True:
            if self.message is None and not self.closed:
                # The hot path: a whole message in one frame under 126 bytes, as every
                # untagged line of the bench is. Its second byte is the length, and any
                # value above 125 (a longer frame, or a mask bit) goes the other way.
                last = end - 2
                start = pos
                while pos <= last:
                    size = buf[pos + 1]
                    if size > 125 or buf[pos] != first:
                        break
                    start = pos + 2
                    pos = start + size
                    append(buf[start:pos])
                if pos > end:  # the last frame is not all here yet
                    pos = start - 2
                    lines.pop()
                    break
                if pos > last:
                    break
            after = self._other_frame(buf, pos, lines)
            if after < 0:
                break
            pos = after
        self.tail = buf[pos:]
        if len(self.tail) > MAX_TAIL:
            raise WsError(f"a frame of more than {MAX_TAIL} bytes")
        if not lines:
            return b""
        text = b"\r\n".join(lines) + b"\r\n"
        # One IRC line per message, without its line ending (the spec): a message that
        # holds a line feed would be counted as two lines.
        if text.count(b"\n") != len(lines):
            raise WsError("a message that holds a line feed")
        return text

    def _other_frame(self, buf: bytes, pos: int, lines: list[bytes]) -> int:
        """Any frame at `pos` (RFC 6455 5.2): its whole messages go to `lines`. Where the
        next frame starts, or -1 if this one is not all here yet."""
        end = len(buf)
        if end - pos < 2:
            return -1
        first, second = buf[pos], buf[pos + 1]
        if second & 0x80:
            raise WsError("a masked frame from the server (RFC 6455 5.1)")
        if first & 0x70:
            raise WsError("reserved bits set, and no extension was agreed")
        size, start = second, pos + 2
        if size == 126:
            size, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
        elif size == 127:
            size, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
        if start > end or start + size > end:
            if size > MAX_TAIL:
                raise WsError(f"a frame of {size} bytes")
            return -1
        payload = buf[start : start + size]
        final, opcode = first & 0x80, first & 0x0F
        if opcode >= 0x8:  # control frames: short and whole (5.5), between any others
            if not final or size > 125:
                raise WsError(f"control frame {opcode:#x} fragmented or {size} bytes long")
            if opcode == 0x9:  # ping: pong with the same data (5.5.3)
                self.replies.append(mask_frame(0x8A, payload, os.urandom(4)))
            elif opcode == 0x8:  # close: answer with its status code (5.5.1)
                if not self.closed:
                    self.replies.append(mask_frame(0x88, payload[:2], os.urandom(4)))
                self.closed = True
            elif opcode != 0xA:
                raise WsError(f"unknown control opcode {opcode:#x}")
        elif self.closed:
            raise WsError("a data frame after the close frame")
        elif opcode == 0x0:
            if self.message is None:
                raise WsError("a continuation frame with no message to continue")
            self.message.append(payload)
            if sum(map(len, self.message)) > MAX_TAIL:
                raise WsError(f"a message of more than {MAX_TAIL} bytes")
            if final:
                lines.append(b"".join(self.message))
                self.message = None
        elif opcode == self.first & 0x0F:
            if self.message is not None:
                raise WsError("a new message inside a fragmented one")
            if final:
                lines.append(payload)
            else:
                self.message = [payload]
        else:
            raise WsError(f"opcode {opcode:#x}, not the subprotocol's {self.first & 0x0F:#x}")
        return start + size


class Worker:
    """One process's clients and event loop."""

    def __init__(
        self,
        wid: int,
        pipe: Pipe,
        ports: list[int],
        source_ip: str,
        subprotocol: str | None = None,
    ) -> None:
        self.wid = wid
        self.pipe = pipe
        #: The server's ports on 127.0.0.1: client i connects to ports[i % len(ports)] (a
        #: cluster kind has one per node, so a room's members span the nodes).
        self.ports = ports
        self.source_ip = source_ip
        #: Every client speaks IRC over WebSocket with this subprotocol (None: over TCP).
        self.subprotocol = subprotocol
        self.ep = select.epoll()
        self.ep.register(pipe.fileno(), EPOLLIN)
        self.by_fd: dict[int, Client] = {}
        self.clients: list[Client] = []
        self.phase: str | None = None
        self.p: dict[str, Any] = {}  # the current phase's parameters and state
        self.rx_total = 0
        self.errors: list[str] = []
        self.error_count = 0
        self.lost_clients = 0
        self.latencies: list[int] = []
        self.lat_from = 0
        self.lat_to = 0
        self.pong_pending = 0
        self.pong_latencies: list[int] = []
        self.monitor_counts: dict[bytes, int] = {}
        #: The caps a `capped` client requests (bytes, space-separated; b"": none).
        self.want_caps = b""
        #: Every client logs in with `PASS <nick>:<password>` (b"": no login).
        self.password = b""
        #: One 900 line, for the record.
        self.login_sample = ""
        #: Echoes of its own messages a sender got back (echo-message), not deliveries.
        self.echo_total = 0
        self.echo_latencies: list[int] = []
        #: Clients connected but not yet welcomed (001): an upper bound on the
        #: connections waiting in the server's accept queue.
        self.pending = 0
        self.pending_max = 1 << 30
        #: Seconds: the shortest loop turn in traffic phases (0: none).
        self.min_period = 0.0
        self.running = True

    # -- plumbing ------------------------------------------------------------

    def error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < 20:
            self.errors.append(text)

    def open_client(self, client: Client) -> bool:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.source_ip, 0))
        except OSError as exc:
            sock.close()
            self.error(f"bind {self.source_ip}: {exc}")
            return False
        client.port = self.ports[client.idx % len(self.ports)]
        code = sock.connect_ex(("127.0.0.1", client.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.error(f"connect: {os.strerror(code)}")
            return False
        client.sock = sock
        client.fd = sock.fileno()
        client.state = CONNECTING
        client.tail = b""
        client.out = b""
        client.ws = WsStream(self.subprotocol) if self.subprotocol else None
        client.started = now_ns()
        self.pending += 1
        self.by_fd[client.fd] = client
        self.ep.register(client.fd, EPOLLOUT)
        return True

    def drop(self, client: Client, abortive: bool = True) -> None:
        """Close a client's socket (RST when `abortive`, so no TIME_WAIT is left)."""
        sock = client.sock
        if sock is None:
            return
        self.by_fd.pop(client.fd, None)
        with contextlib.suppress(OSError):
            self.ep.unregister(client.fd)
        if abortive:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST_LINGER)
        sock.close()
        client.sock = None
        client.fd = -1
        client.state = DEAD

    def send(self, client: Client, data: bytes) -> None:
        """Send IRC lines (each ending in CRLF): as they are, or one WebSocket frame each."""
        if client.sock is None:
            return  # dropped earlier in this same event
        if client.ws is not None:
            data = client.ws.frame(data)
        self.send_raw(client, data)

    def send_raw(self, client: Client, data: bytes) -> None:
        """Send bytes as they are, or keep what the socket does not take for EPOLLOUT."""
        if client.sock is None:
            return
        if client.out:
            client.out += data
            return
        try:
            sent = client.sock.send(data)  # type: ignore[union-attr]
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.on_lost(client, f"send: {exc.strerror or exc}")
            return
        if sent < len(data):
            client.out = data[sent:]
            self.ep.modify(client.fd, EPOLLIN | EPOLLOUT)

    def on_writable(self, client: Client) -> None:
        if client.state == CONNECTING:
            code = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # type: ignore[union-attr]
            if code:
                self.on_lost(client, f"connect: {os.strerror(code)}")
                return
            self.ep.modify(client.fd, EPOLLIN)
            if client.ws is not None:
                # Nothing else may be sent before the 101 (RFC 6455 4.1).
                client.state = UPGRADING
                self.send_raw(client, client.ws.request(f"127.0.0.1:{client.port}"))
            else:
                self.greet(client)
            return
        if not client.out:
            self.ep.modify(client.fd, EPOLLIN)
            return
        try:
            sent = client.sock.send(client.out)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError as exc:
            self.on_lost(client, f"send: {exc.strerror or exc}")
            return
        client.out = client.out[sent:]
        if not client.out:
            self.ep.modify(client.fd, EPOLLIN)

    def greet(self, client: Client) -> None:
        """The connection is up (WebSocket: upgraded): register."""
        client.state = REGISTERING
        nick = client.nick
        hello = f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode()
        if self.password:
            # An account login, checked when registration completes (900 before 001).
            hello = b"PASS " + nick.encode() + b":" + self.password + b"\r\n" + hello
        if client.capped and self.want_caps:
            # The server holds registration until CAP END (if it knows CAP at all).
            client.capneg = 1
            client.offered = set()
            hello = b"CAP LS 302\r\n" + hello
        self.send(client, hello)

    def on_lost(self, client: Client, why: str) -> None:
        if client.state in (CONNECTING, UPGRADING, REGISTERING):
            self.pending -= 1
        if self.phase == "churn" and client.state == QUITTING:
            self.churn_done(client, ok=True)
            return
        self.error(f"{client.nick}: {why}")
        if client.state not in (QUITTING, DEAD) and self.phase != "churn":
            self.lost_clients += 1
        if self.phase == "setup" and client.state != READY:
            self.p["failed"] += 1
            self.p["inflight"] -= 1
        if self.phase == "ping" and client.ping_sent:
            client.ping_sent = 0
            self.pong_pending -= 1
        if self.phase == "churn":
            self.churn_done(client, ok=False)
            return
        self.drop(client)

    def on_readable(self, client: Client) -> None:
        try:
            data = client.sock.recv(RECV_BYTES)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError as exc:
            self.on_lost(client, f"recv: {exc.strerror or exc}")
            return
        if not data:
            self.on_lost(client, "closed by server")
            return
        if client.ws is not None:
            data = self.from_websocket(client, data)
            if not data or client.sock is None:
                return
        if client.tail:
            data = client.tail + data
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            client.tail = data[cut:]
            if len(client.tail) > MAX_TAIL:
                self.on_lost(client, "line too long")
                return
            if not cut:
                return
            data = data[:cut]
        else:
            client.tail = b""
        if client.state == READY:
            # The hot path: count, and parse only what must be parsed.
            count = data.count(PRIVMSG)
            if count:
                # echo-message: a sender's own messages come back; not deliveries.
                own = data.count(client.own) if client.echo and client.sent else 0
                if own:
                    count -= own
                    self.echo_total += own
                    if SAMPLE in data:
                        self.take_echo_samples(data, client.own)
                elif SAMPLE in data:
                    self.take_samples(data)
                client.rx += count
                self.rx_total += count
                if client.monitor:
                    self.monitor_lines(data)
            if b"PING" in data:
                self.answer_pings(client, data)
            if client.ping_sent and b"PONG" in data:
                self.pong_pending -= 1
                self.pong_latencies.append(now_ns() - client.ping_sent)
                client.ping_sent = 0
            if b"ERROR" in data and (data.startswith(b"ERROR") or b"\nERROR" in data):
                self.error(f"{client.nick}: {data[data.find(b'ERROR') :][:120]!r}")
            return
        self.on_handshake(client, data)

    def from_websocket(self, client: Client, data: bytes) -> bytes:
        """The lines in what a WebSocket client received; the upgrade's end registers it,
        and the frames the server asked for (pong, close) are sent back."""
        ws = client.ws
        assert ws is not None
        try:
            lines = ws.receive(data)
        except WsError as exc:
            self.on_lost(client, f"websocket: {exc}")
            return b""
        if ws.replies:
            self.send_raw(client, b"".join(ws.replies))
            ws.replies.clear()
        if client.state == UPGRADING and ws.open:
            self.greet(client)
        return lines

    def on_handshake(self, client: Client, data: bytes) -> None:
        if b"PING" in data:
            self.answer_pings(client, data)
        if self.password and not client.logged_in:
            if LOGGED_IN in data:
                client.logged_in = True
                if not self.login_sample:
                    at = data.find(LOGGED_IN)
                    start = data.rfind(b"\n", 0, at) + 1
                    self.login_sample = (
                        data[start : data.find(b"\n", at)].strip().decode(errors="replace")
                    )
            elif b"login failed" in data:
                self.error(f"{client.nick}: {data[data.find(b'login failed') :][:120]!r}")
        if client.state == REGISTERING:
            if client.capneg:
                if b"CAP " in data:
                    self.on_cap(client, data)
                elif any(code in data for code in CAP_REFUSED):
                    client.capneg = 0  # no CAP here: NICK/USER register it as it is
            if b" 001 " in data:
                client.capneg = 0
                client.state = JOINING
                self.pending -= 1
                room = client.room or "#churn"
                self.send(client, f"JOIN {room}\r\n".encode())
            elif b" 433 " in data or b" 432 " in data or data.startswith(b"ERROR"):
                self.on_lost(client, f"registration refused: {data[:160]!r}")
        elif client.state == JOINING:
            if b" 366 " in data:
                client.state = READY
                if self.phase == "setup":
                    self.setup_ready(client)
                elif self.phase == "churn":
                    client.state = QUITTING
                    self.send(client, b"QUIT :cycle\r\n")
            elif b" 403 " in data or b" 405 " in data or b" 471 " in data:
                self.on_lost(client, f"join refused: {data[:160]!r}")
        # QUITTING: wait for the server to close (ERROR line, then EOF).

    def on_cap(self, client: Client, data: bytes) -> None:
        """CAP LS (maybe multi-line), then REQ if every wanted cap is offered, then END."""
        for line in data.split(b"\n"):
            if b"CAP " not in line:
                continue
            if line.startswith(b"@"):
                line = line[line.find(b" ") + 1 :]
            head, _, trail = line.rstrip(b"\r").partition(b" :")
            words = head.split()
            if b"CAP" not in words:
                continue
            at = words.index(b"CAP")
            sub = words[at + 2] if len(words) > at + 2 else b""
            if sub == b"LS" and client.capneg == 1:
                client.offered.update(word.split(b"=", 1)[0] for word in trail.split())
                if len(words) > at + 3 and words[at + 3] == b"*":
                    continue  # 302 multi-line LS: more to come
                wanted = self.want_caps.split()
                if all(cap in client.offered for cap in wanted):
                    client.capneg = 2
                    self.send(client, b"CAP REQ :" + self.want_caps + b"\r\n")
                else:
                    client.capneg = 0
                    self.send(client, b"CAP END\r\n")
            elif sub == b"ACK" and client.capneg == 2:
                client.caps = frozenset(trail.split())
                client.echo = b"echo-message" in client.caps
                client.capneg = 0
                self.send(client, b"CAP END\r\n")
            elif sub == b"NAK" and client.capneg == 2:
                client.capneg = 0
                self.send(client, b"CAP END\r\n")

    def answer_pings(self, client: Client, data: bytes) -> None:
        for match in PING_LINE.finditer(data):
            self.send(client, b"PONG " + match.group(1) + b"\r\n")

    def take_echo_samples(self, data: bytes, own: bytes) -> None:
        """Samples in a chunk that holds echoes: those go to `echo_latencies`."""
        echoes, others = [], []
        for line in data.split(b"\n"):
            if SAMPLE in line:
                (echoes if own in line else others).append(line)
        if echoes:
            self.take_samples(b"\n".join(echoes), self.echo_latencies)
        if others:
            self.take_samples(b"\n".join(others))

    def take_samples(self, data: bytes, latencies: list[int] | None = None) -> None:
        received = now_ns()
        pos = data.find(SAMPLE)
        lat_from, lat_to = self.lat_from, self.lat_to
        if latencies is None:
            latencies = self.latencies
        while pos >= 0:
            end = data.find(b" ", pos + 4)
            try:
                stamp = int(data[pos + 4 : end].split(b":")[2])
            except (ValueError, IndexError):
                self.error(f"bad sample {data[pos : pos + 80]!r}")
                stamp = 0
            if lat_from <= stamp < lat_to:
                latencies.append(received - stamp)
            pos = data.find(SAMPLE, end)

    def monitor_lines(self, data: bytes) -> None:
        counts = self.monitor_counts
        for line in data.split(b"\n"):
            if PRIVMSG in line:
                if line.startswith(b"@"):  # tags (server-time, message-tags)
                    line = line[line.find(b" ") + 1 :]
                if line.startswith(b":"):
                    nick = line[1 : line.find(b"!")]
                    counts[nick] = counts.get(nick, 0) + 1

    # -- the loop ------------------------------------------------------------

    def run(self) -> None:
        pipe_fd = self.pipe.fileno()
        poll = self.ep.poll
        by_fd = self.by_fd
        sleep = time.sleep
        clock = time.monotonic
        started = clock()
        while self.running:
            timeout = 0.001 if self.phase in ("fanout", "dm", "setup", "churn") else 0.05
            if self.min_period:
                # Let lines pile up for a moment, so one recv takes several and one
                # epoll call returns many sockets: per-line cost drops a lot, and
                # latency gains at most `min_period` (a floor shared by all servers).
                left = self.min_period - (clock() - started)
                if left > 0:
                    sleep(left)
                started = clock()
            for fd, mask in poll(timeout):
                if fd == pipe_fd:
                    self.on_command()
                    continue
                client = by_fd.get(fd)
                if client is None:
                    continue
                if mask & EPOLLOUT:
                    self.on_writable(client)
                    if client.sock is None:
                        continue
                if mask & ~EPOLLOUT:
                    self.on_readable(client)
            if self.phase is not None:
                getattr(self, f"tick_{self.phase}")()

    def reply(self, payload: dict[str, Any]) -> None:
        payload.setdefault("wid", self.wid)
        self.pipe.send(payload)

    def on_command(self) -> None:
        try:
            name, params = self.pipe.recv()
        except EOFError:
            self.running = False
            return
        try:
            getattr(self, f"cmd_{name}")(**params)
        except Exception:
            self.reply({"error": traceback.format_exc()})

    def base_stats(self) -> dict[str, Any]:
        return {
            "rx": self.rx_total,
            "echo_rx": self.echo_total,
            "cpu": cpu_seconds(),
            "errors": self.errors[:],
            "error_count": self.error_count,
            "lost_clients": self.lost_clients,
            "t": now_ns(),
        }

    def cmd_status(self) -> None:
        self.reply(self.base_stats())

    def cmd_exit(self) -> None:
        self.cmd_close(reply=False)
        self.running = False

    def cmd_close(self, reply: bool = True) -> None:
        for client in self.clients:
            self.drop(client)
        for client in list(self.by_fd.values()):
            self.drop(client)
        self.phase = None
        if reply:
            self.reply({"closed": True})

    # -- setup: paced connect, register, join ----------------------------------

    def cmd_setup(
        self,
        clients: list[tuple[int, str, str] | tuple[int, str, str, bool]],
        rate: float,
        window: int,
        pending_max: int,
        timeout: float,
        caps: str = "",
        password: str = "",
    ) -> None:
        """Connect, register and join `(index, nick, room[, capped])` clients; the capped
        ones ask for `caps` first; with `password` each logs in to the account named as
        its nick (`PASS <nick>:<password>`)."""
        self.pending_max = pending_max
        self.want_caps = caps.encode()
        self.password = password.encode()
        self.login_sample = ""
        self.clients = [Client(*spec) for spec in clients]
        self.phase = "setup"
        start = now_ns()
        self.p = {
            "next": 0,
            "inflight": 0,
            "ready": 0,
            "failed": 0,
            "rate": rate,
            "window": window,
            "t0": start,
            "deadline": start + int(timeout * 1e9),
            "first_connect": None,
            "last_ready": None,
            "setup_ns": [],
        }
        self.tick_setup()

    def setup_ready(self, client: Client) -> None:
        p = self.p
        p["ready"] += 1
        p["inflight"] -= 1
        stamp = now_ns()
        p["last_ready"] = stamp
        p["setup_ns"].append(stamp - client.started)

    def tick_setup(self) -> None:
        p = self.p
        stamp = now_ns()
        clients = self.clients
        allowed = int((stamp - p["t0"]) * p["rate"] / 1e9) + 1
        while (
            p["next"] < len(clients)
            and p["inflight"] < p["window"]
            and self.pending < self.pending_max
            and p["next"] < allowed
        ):
            client = clients[p["next"]]
            p["next"] += 1
            if p["first_connect"] is None:
                p["first_connect"] = now_ns()
            if self.open_client(client):
                p["inflight"] += 1
            else:
                p["failed"] += 1
        finished = p["ready"] + p["failed"] >= len(clients)
        if finished or stamp > p["deadline"]:
            waiting = len(clients) - p["ready"] - p["failed"]
            if waiting:
                self.error(f"setup timed out with {waiting} clients not joined")
            self.phase = None
            setup_ns = sorted(p["setup_ns"])
            self.reply(
                {
                    **self.base_stats(),
                    "ready": p["ready"],
                    "failed": p["failed"] + waiting,
                    "first_connect": p["first_connect"],
                    "last_ready": p["last_ready"],
                    "setup_ns": setup_ns,
                    "cap_asked": sum(1 for c in clients if c.capped and self.want_caps),
                    "capped": sum(1 for c in clients if c.caps and c.state == READY),
                    "echo_clients": sum(1 for c in clients if c.echo and c.state == READY),
                    "logged_in": sum(1 for c in clients if c.logged_in and c.state == READY),
                    "login_sample": self.login_sample,
                }
            )

    # -- traffic: room fan-out and private pairs --------------------------------

    def cmd_fanout(
        self,
        room: str,
        senders: list[int],
        phases: dict[int, float],
        monitor: int | None,
        mode: str,
        window: int,
        rate_per_sender: float,
        times: dict[str, int],
        sample_every: int,
        pad: int,
        tick_ms: float = 10.0,
        min_period_ms: float = 0.0,
    ) -> None:
        by_idx = {client.idx: client for client in self.clients}
        for client in self.clients:
            client.sent = client.acked = client.rx = 0
            client.monitor = False
        if monitor is not None:
            by_idx[monitor].monitor = True
        for idx, phase in phases.items():
            by_idx[idx].phase = phase
        self.start_traffic(times, min_period_ms)
        self.p.update(
            kind="fanout",
            target=f"PRIVMSG {room} :".encode(),
            senders=[by_idx[idx] for idx in senders],
            mode=mode,
            window=window,
            rate=rate_per_sender,
            sample_every=sample_every,
            pad=b" " + b"x" * pad,
            tick_ns=max(1, int(tick_ms * 1e6)),
        )
        self.phase = "fanout"

    def cmd_dm(
        self,
        pairs: list[tuple[int, int]],
        mode: str,
        window: int,
        rate_per_sender: float,
        times: dict[str, int],
        sample_every: int,
        pad: int,
        min_period_ms: float = 0.0,
        rooms: list[str] | None = None,
    ) -> None:
        """Both sides of each pair send to the other: a private message, or with `rooms`
        (one per pair, both sides in it) a line to the pair's room of two."""
        by_idx = {client.idx: client for client in self.clients}
        senders = []
        targets = {}
        for client in self.clients:
            client.sent = client.acked = client.rx = 0
            client.monitor = False
        for n, (a_idx, b_idx) in enumerate(pairs):
            a, b = by_idx[a_idx], by_idx[b_idx]
            a.peer, b.peer = b, a
            senders += [a, b]
            for side, other in ((a, b), (b, a)):
                target = rooms[n] if rooms else other.nick
                targets[side.idx] = f"PRIVMSG {target} :".encode()
        self.start_traffic(times, min_period_ms)
        self.p.update(
            kind="dm",
            senders=senders,
            targets=targets,
            mode=mode,
            window=window,
            rate=rate_per_sender,
            sample_every=sample_every,
            pad=b" " + b"x" * pad,
        )
        self.phase = "dm"

    def start_traffic(self, times: dict[str, int], min_period_ms: float) -> None:
        self.min_period = min_period_ms / 1000
        self.rx_total = 0
        self.echo_total = 0
        self.latencies = []
        self.echo_latencies = []
        self.lat_from = times["measure_from"]
        self.lat_to = times["measure_to"]
        self.monitor_counts = {}
        self.p = {
            "times": times,
            "snap_from": None,
            "snap_to": None,
            "stopped": False,
        }

    def tick_fanout(self) -> None:
        self.tick_traffic()

    def tick_dm(self) -> None:
        self.tick_traffic()

    def tick_traffic(self) -> None:
        p = self.p
        times = p["times"]
        stamp = now_ns()
        if p["snap_from"] is None and stamp >= times["measure_from"]:
            p["snap_from"] = (stamp, self.rx_total, cpu_seconds())
        if p["snap_to"] is None and stamp >= times["measure_to"]:
            p["snap_to"] = (stamp, self.rx_total, cpu_seconds())
        if p["stopped"]:
            return
        if stamp >= times["stop"]:
            p["stopped"] = True
            self.reply(
                {
                    **self.base_stats(),
                    "sent": {c.idx: c.sent for c in p["senders"]},
                    "echo_sent": sum(c.sent for c in p["senders"] if c.echo),
                    "snap_from": p["snap_from"],
                    "snap_to": p["snap_to"],
                }
            )
            return
        if stamp < times["start"]:
            return
        window = p["window"]
        max_rate = p["mode"] == "max"
        rate = p["rate"]
        elapsed = stamp - times["start"]
        sample_every = p["sample_every"]
        tick_ns = p.get("tick_ns", 1)
        pad = p["pad"]
        dm = p["kind"] == "dm"
        counts = self.monitor_counts
        for sender in p["senders"]:
            if max_rate:
                acked = sender.peer.rx if dm else counts.get(sender.nick.encode(), 0)  # type: ignore[union-attr]
                room = window - (sender.sent - acked)
            else:
                # Message j is due at (j + phase) / rate, sent on a clock of
                # `tick_ns` (phase 0 and a 1 ns tick: all senders in lockstep).
                slots = (elapsed - elapsed % tick_ns) * rate / 1e9 - sender.phase
                room = (int(slots) + 1 if slots >= 0 else 0) - sender.sent
            if room <= 0 or sender.sock is None:
                continue
            target = p["targets"][sender.idx] if dm else p["target"]
            parts = []
            for seq in range(sender.sent, sender.sent + room):
                mark = b"!!" if seq % sample_every == 0 else b""
                parts.append(b"%s%s%d:%d:%d%s\r\n" % (target, mark, sender.idx, seq, stamp, pad))
            sender.sent += room
            self.send(sender, b"".join(parts))

    def cmd_finish(self) -> None:
        """The traffic phase is over: hand back the latency samples and counters."""
        self.phase = None
        self.min_period = 0.0
        self.reply(
            {
                **self.base_stats(),
                "latencies": self.latencies,
                "echo_latencies": self.echo_latencies,
            }
        )
        self.latencies = []
        self.echo_latencies = []

    # -- ping check ------------------------------------------------------------

    def cmd_ping(self, timeout: float) -> None:
        self.pong_latencies = []
        self.pong_pending = 0
        stamp = now_ns()
        for client in self.clients:
            if client.state == READY and client.sock is not None:
                client.ping_sent = now_ns()
                self.pong_pending += 1
                self.send(client, b"PING :bench%d\r\n" % client.idx)
        self.p = {"t0": stamp, "deadline": stamp + int(timeout * 1e9), "asked": self.pong_pending}
        self.phase = "ping"

    def tick_ping(self) -> None:
        p = self.p
        stamp = now_ns()
        if self.pong_pending <= 0 or stamp > p["deadline"]:
            self.phase = None
            missing = self.pong_pending
            for client in self.clients:
                client.ping_sent = 0
            self.reply(
                {
                    **self.base_stats(),
                    "asked": p["asked"],
                    "answered": p["asked"] - missing,
                    "pong_ns": sorted(self.pong_latencies),
                    "elapsed_ns": stamp - p["t0"],
                }
            )

    # -- churn: connect, register, join, quit, over and over -------------------

    def cmd_churn(
        self,
        cycles: int,
        concurrency: int,
        pending_max: int,
        prefix: str,
        rooms: int,
        timeout: float,
    ) -> None:
        self.clients = []
        self.pending_max = pending_max
        stamp = now_ns()
        self.p = {
            "todo": cycles,
            "started": 0,
            "done": 0,
            "failed": 0,
            "active": {},
            "concurrency": concurrency,
            "prefix": prefix,
            "rooms": rooms,
            "cycle_timeout": int(timeout * 1e9),
            "deadline": stamp + int(max(30.0, timeout * 3) * 1e9),
            "t0": stamp,
            "cycle_ns": [],
        }
        self.phase = "churn"
        self.tick_churn()

    def churn_done(self, client: Client, ok: bool) -> None:
        p = self.p
        if p["active"].pop(client.idx, None) is None:
            return
        if ok:
            p["done"] += 1
            p["cycle_ns"].append(now_ns() - client.churn_started)
        else:
            p["failed"] += 1
        self.drop(client, abortive=not ok)

    def tick_churn(self) -> None:
        p = self.p
        stamp = now_ns()
        for client in list(p["active"].values()):
            if stamp - client.churn_started > p["cycle_timeout"]:
                self.error(f"{client.nick}: cycle timed out in state {client.state}")
                self.churn_done(client, ok=False)
        while (
            p["started"] < p["todo"]
            and len(p["active"]) < p["concurrency"]
            and self.pending < self.pending_max
        ):
            n = p["started"]
            p["started"] += 1
            client = Client(n, f"{p['prefix']}{n}", f"#churn{n % p['rooms']}")
            client.churn_started = now_ns()
            if self.open_client(client):
                p["active"][n] = client
            else:
                p["failed"] += 1
        finished = p["done"] + p["failed"] >= p["todo"]
        if finished or stamp > p["deadline"]:
            for client in list(p["active"].values()):
                self.error(f"{client.nick}: churn phase ended in state {client.state}")
                self.churn_done(client, ok=False)
            self.phase = None
            self.reply(
                {
                    **self.base_stats(),
                    "done": p["done"],
                    "failed": p["failed"] + (p["todo"] - p["started"]),
                    "elapsed_ns": now_ns() - p["t0"],
                    "cycle_ns": sorted(p["cycle_ns"]),
                }
            )


def worker_main(
    wid: int, pipe: Pipe, ports: list[int], source_ip: str, subprotocol: str | None = None
) -> None:
    """Entry point of a worker process (`ports`: the server's, taken in turn by the
    clients; `subprotocol`: its clients speak IRC over WebSocket with it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    worker = Worker(wid, pipe, ports, source_ip, subprotocol)
    try:
        worker.run()
    finally:
        worker.cmd_close(reply=False)
