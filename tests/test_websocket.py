"""IRC over WebSocket (issue 16): the listener, the upgrade, both subprotocols, origins,
X-Forwarded-For from proxies only, size limits, ping and close frames, wss, and a reader
that stops reading. The browser side is a WebSocket client made with wsproto (client side)
over a real socket to a real server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
from collections.abc import Callable, Iterator

import pytest
import trustme
from helpers import COMMANDS, HOST, SERVER, TIMEOUT, Client, make_config, wait_for
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from ircish import webfiles
from ircish.config import Config, TlsConfig, WebSocketConfig
from ircish.server import Server
from ircish.slash import SLASH_COMMANDS


class WsClient(Client):
    """An IRC client over WebSocket: `send` puts a line in one message; `receive` hands
    `Client` the messages that came as lines (CRLF added), so `expect` works as for TCP."""

    def __init__(
        self,
        address: tuple[str, int],
        subprotocols: tuple[str, ...] = ("text.ircv3.net",),
        headers: tuple[tuple[str, str], ...] = (),
        context: ssl.SSLContext | None = None,
        receive_buffer: int | None = None,
        host: str | None = None,
    ) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(TIMEOUT)
        sock.connect(address)
        self.sock = context.wrap_socket(sock, server_hostname=HOST) if context else sock
        self.nick = None
        self.buffer = b""
        self.lines = []
        self.ws = WSConnection(ConnectionType.CLIENT)
        #: Events other than messages (pongs, the close), in order.
        self.others: list[object] = []
        self.opcodes: set[type] = set()
        #: What came, in order: "message", or the event's type name.
        self.sequence: list[str] = []
        request = Request(
            host=host or f"{address[0]}:{address[1]}",
            target="/",
            subprotocols=list(subprotocols),
            extra_headers=[(name.encode(), value.encode()) for name, value in headers],
        )
        self.sock.sendall(self.ws.send(request))
        self.handshake: AcceptConnection | RejectConnection | None = None
        self.rejection_body = b""
        while self.handshake is None or (
            isinstance(self.handshake, RejectConnection) and not self._rejection_done
        ):
            data = self.sock.recv(65536)
            if not data:
                break
            self.ws.receive_data(data)
            # Lines may come in the same read as the 101 (a refusal right after it).
            early = self._take()
            self.lines += [line.decode() for line in early.split(b"\r\n") if line]

    _rejection_done = False

    def _take(self) -> bytes:
        out = b""
        for event in self.ws.events():
            if isinstance(event, (AcceptConnection, RejectConnection)):
                self.handshake = event
                self._rejection_done = isinstance(event, RejectConnection) and not event.has_body
            elif isinstance(event, RejectData):
                self.rejection_body += event.data
                self._rejection_done = event.body_finished
            elif isinstance(event, (TextMessage, BytesMessage)):
                self.sequence.append("message")
                self.opcodes.add(type(event))
                data = event.data.encode() if isinstance(event, TextMessage) else event.data
                out += data + (b"\r\n" if event.message_finished else b"")
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            else:
                self.sequence.append(type(event).__name__)
                self.others.append(event)
        return out

    @property
    def accepted(self) -> bool:
        return isinstance(self.handshake, AcceptConnection)

    def send(self, line: str | bytes) -> None:
        text = line.decode() if isinstance(line, bytes) else line
        self.sock.sendall(self.ws.send(TextMessage(data=text.removesuffix("\r\n"))))

    def send_frame(self, event: object) -> None:
        self.sock.sendall(self.ws.send(event))

    def receive(self) -> bytes:
        while True:
            data = self.sock.recv(65536)
            if not data:
                return b""
            self.ws.receive_data(data)
            out = self._take()
            if out or any(isinstance(e, CloseConnection) for e in self.others):
                return out


@pytest.fixture
def ws_server(start_server) -> Callable[..., Server]:
    def start(config: Config | None = None, **websocket: object) -> Server:
        base = config or make_config()
        return start_server(
            dataclasses.replace(base, websocket=WebSocketConfig(port=0, **websocket))  # type: ignore[arg-type]
        )

    return start


@pytest.fixture
def ws_clients() -> Iterator[list[WsClient]]:
    opened: list[WsClient] = []
    yield opened
    for client in opened:
        client.close()


def dial(server: Server, clients: list, **options: object) -> WsClient:
    assert server.websocket_address is not None
    client = WsClient(server.websocket_address, **options)  # type: ignore[arg-type]
    clients.append(client)
    return client


def test_browser_and_irc_users_share_a_room(ws_server, ws_clients, connect):
    server = ws_server()
    web = dial(server, ws_clients)
    assert web.accepted and web.handshake.subprotocol == "text.ircv3.net"  # type: ignore[union-attr]
    web.register("webby")
    web.join("#mixed")
    irc = connect("classic", target=server)
    irc.join("#mixed")
    web.expect(rf"^:classic!u@{HOST} JOIN #mixed$")
    irc.send("PRIVMSG #mixed :hello from a terminal")
    web.expect(rf"^:classic!u@{HOST} PRIVMSG #mixed :hello from a terminal$")
    web.send("PRIVMSG #mixed :hello from a browser")
    irc.expect(rf"^:webby!u@{HOST} PRIVMSG #mixed :hello from a browser$")
    web.send("PRIVMSG classic :psst")
    irc.expect(rf"^:webby!u@{HOST} PRIVMSG classic :psst$")
    assert web.opcodes == {TextMessage}  # text.ircv3.net: text frames only


def test_binary_when_the_client_prefers_it_and_text_when_it_names_none(ws_server, ws_clients):
    server = ws_server()
    binary = dial(server, ws_clients, subprotocols=("binary.ircv3.net", "text.ircv3.net"))
    assert binary.handshake.subprotocol == "binary.ircv3.net"  # type: ignore[union-attr]
    binary.register("bin")
    assert binary.opcodes == {BytesMessage}
    plain = dial(server, ws_clients, subprotocols=())
    assert plain.accepted and plain.handshake.subprotocol is None  # type: ignore[union-attr]
    plain.register("plain")
    assert plain.opcodes == {TextMessage}


def test_origins(ws_server, ws_clients):
    server = ws_server(origins=("https://chat.example",))
    assert server.websocket_address is not None
    _, port = server.websocket_address
    refused = dial(server, ws_clients, headers=(("Origin", "https://evil.example"),))
    assert isinstance(refused.handshake, RejectConnection)
    assert refused.handshake.status_code == 403
    assert b"origin" in refused.rejection_body.lower()
    for origin in ("https://chat.example", f"http://{HOST}:{port}"):  # listed; same origin
        allowed = dial(server, ws_clients, headers=(("Origin", origin),))
        assert allowed.accepted, origin
    assert dial(server, ws_clients).accepted  # no Origin: not a page


def test_x_forwarded_for_only_from_proxies(ws_server, ws_clients, connect):
    server = ws_server(proxies=("127.0.0.0/8",))
    proxied = dial(server, ws_clients, headers=(("X-Forwarded-For", "198.51.100.7, 10.1.2.3"),))
    proxied.register("behind")
    watcher = connect("watcher", target=server)
    watcher.send("WHOIS behind")
    watcher.expect(r" 311 watcher behind u 10\.1\.2\.3 ")
    stranger = ws_server()  # no proxies configured: the header is anyone's to write
    direct = dial(stranger, ws_clients, headers=(("X-Forwarded-For", "10.9.9.9"),))
    direct.register("direct")
    direct.send("WHOIS direct")
    direct.expect(rf" 311 direct direct u {HOST} ")


def test_a_message_past_the_read_buffer_is_cut_off(ws_server, ws_clients, connect):
    server = ws_server(config=make_config(read_buffer_bytes=4096))
    web = dial(server, ws_clients)
    web.register("big")
    web.join("#r")
    other = connect("other", target=server)
    other.join("#r")
    web.send("PRIVMSG #r :" + "x" * 10000)
    lines = web.expect_closed()
    assert lines[-1] == "ERROR :Input buffer exceeded: message over 4096 bytes", lines
    other.expect(rf"^:big!u@{HOST} QUIT :Input buffer exceeded$")


def http(server: Server, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """One plain HTTP request to the WebSocket port: (status line, headers, body)."""
    assert server.websocket_address is not None
    with socket.create_connection(server.websocket_address, timeout=TIMEOUT) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(4096):  # the server closes after one answer
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def test_plain_gets_are_the_web_clients_files(ws_server):
    server = ws_server()
    status, headers, body = http(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK"
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body == webfiles.files()["index.html"].body
    assert int(headers["content-length"]) == len(body)
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    # A reload with the ETag costs a 304 and no body.
    etag = headers["etag"].encode()
    status, _, body = http(
        server, b"GET /index.html HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + b"\r\n\r\n"
    )
    assert (status, body) == (b"HTTP/1.1 304 Not Modified", b"")
    status, headers, body = http(server, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK" and body == b"" and int(headers["content-length"]) > 0


def test_a_file_bigger_than_the_sendq_comes_whole(ws_server):
    server = ws_server(config=make_config(sendq_bytes=4096))
    name, biggest = max(webfiles.files().items(), key=lambda item: len(item[1].body))
    assert len(biggest.body) > 4096
    status, _, body = http(server, f"GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == b"HTTP/1.1 200 OK"
    assert body == biggest.body


def test_the_slash_table_is_served_from_the_one_table(ws_server):
    server = ws_server()
    status, headers, body = http(server, b"GET /slash.json?v=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK"
    assert headers["content-type"] == "application/json"
    rows = json.loads(body)
    assert [row["name"] for row in rows] == list(SLASH_COMMANDS)
    join = next(row for row in rows if row["name"] == "join")
    assert join["syntax"] == SLASH_COMMANDS["join"].syntax
    assert next(row for row in rows if row["name"] == "part")["alias_of"] == "leave"
    assert next(row for row in rows if row["name"] == "switch")["local"] is True


@pytest.mark.parametrize(
    "target",
    [
        b"/nope.js",
        b"/../setup.cfg",
        b"/%2e%2e/websocket.py",
        b"/webfiles.py",
        b"//etc/passwd",
        b"*",
    ],
)
def test_anything_else_is_not_found(ws_server, target):
    server = ws_server()
    status, headers, body = http(server, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == b"HTTP/1.1 404 Not Found", body
    assert "content-security-policy" in headers


def test_other_methods_are_refused(ws_server):
    server = ws_server()
    status, headers, _ = http(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert status == b"HTTP/1.1 405 Method Not Allowed"
    assert headers["allow"] == "GET, HEAD"
    status, _, body = http(server, b"GARBAGE\r\n\r\n")
    assert (status, body) == (b"HTTP/1.1 400 Bad Request", b"Malformed HTTP request\n")


def test_ping_and_close_frames(ws_server, ws_clients, connect):
    server = ws_server()
    web = dial(server, ws_clients)
    web.register("pinger")
    web.join("#r")
    other = connect("other", target=server)
    other.join("#r")
    web.send_frame(Ping(payload=b"are you there"))
    web.sync()
    assert Pong(payload=b"are you there") in web.others
    web.send_frame(CloseConnection(code=1000, reason="tab closed"))
    web.expect_closed()
    assert any(isinstance(e, CloseConnection) for e in web.others)
    other.expect(rf"^:pinger!u@{HOST} QUIT :")


def test_the_server_closes_with_error_then_a_close_frame(ws_server, ws_clients):
    server = ws_server()
    web = dial(server, ws_clients)
    web.register("leaver")
    web.send("QUIT :bye")
    lines = web.expect_closed()
    assert lines[-1].startswith("ERROR :"), lines
    (close,) = [e for e in web.others if isinstance(e, CloseConnection)]
    assert close.code == 1000


def test_a_page_that_stops_reading_is_cut_off_at_sendq(ws_server, ws_clients, connect):
    server = ws_server(config=make_config(sendq_bytes=4096))
    stalled = dial(server, ws_clients, receive_buffer=2048)
    stalled.register("stalled")
    stalled.join("#big")
    talker = connect("talker", target=server)
    talker.join("#big")
    talker.send(b"".join(b"PRIVMSG #big :" + b"x" * 400 + b"\r\n" for _ in range(400)))
    talker.expect(rf"^:stalled!u@{HOST} QUIT :SendQ exceeded$", timeout=TIMEOUT * 2)
    talker.sync()  # the talker was never held up


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsConfig, ssl.SSLContext]:
    directory = tmp_path_factory.mktemp("wss")
    ca = trustme.CA()
    issued = ca.issue_cert(HOST)
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return TlsConfig(cert=str(cert), key=str(key), port=0), context


def test_wss_with_the_tls_certificate(ws_server, ws_clients, certificate, connect):
    tls, context = certificate
    server = ws_server(config=dataclasses.replace(make_config(), tls=tls), tls=True)
    web = dial(server, ws_clients, context=context)
    assert web.accepted
    web.register("secure")
    irc = connect("classic", target=server)
    irc.send("PRIVMSG secure :over wss")
    web.expect(rf"^:classic!u@{HOST} PRIVMSG secure :over wss$")
    wait_for(lambda: "secure" in server.world.users)
    assert server.world.users["secure"].conn.transport.kind == "wss"  # type: ignore[attr-defined]


def test_names_the_server(ws_server, ws_clients):
    web = dial(ws_server(), ws_clients)
    web.register("named")
    web.send("PING x")
    web.expect(rf"PONG {SERVER} :?x$")


def test_origins_reload_for_new_connections(ws_clients):
    config = dataclasses.replace(make_config(), websocket=WebSocketConfig(port=0))
    later = dataclasses.replace(
        config, websocket=WebSocketConfig(port=0, origins=("https://chat.example",))
    )
    server = Server(config, COMMANDS, reread=lambda: later)
    server.start()
    try:
        page = (("Origin", "https://chat.example"),)
        assert isinstance(dial(server, ws_clients, headers=page).handshake, RejectConnection)
        assert server.reload().applied == ("websocket.origins",)
        assert dial(server, ws_clients, headers=page).accepted
    finally:
        server.shutdown(timeout=2.0)


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client's frame (masked, as RFC 6455 requires), made by hand."""
    mask = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload))) + mask + body


UPGRADE = (
    "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: text.ircv3.net\r\n\r\n"
)


def read_all(sock: socket.socket) -> bytes:
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def test_frames_sent_right_behind_the_request_are_read(ws_server):
    server = ws_server()
    assert server.websocket_address is not None
    host, port = server.websocket_address
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(
            UPGRADE.format(host=f"{host}:{port}").encode()
            + masked(0x1, b"NICK eager")
            + masked(0x1, b"USER u 0 * :u")
            + masked(0x1, b"QUIT :done")
        )
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b" 001 eager :" in answer and b"ERROR :Closing Link" in answer


def test_a_close_frame_comes_after_the_answers_to_the_lines_before_it(ws_server, ws_clients):
    server = ws_server()
    web = dial(server, ws_clients)
    web.sock.sendall(
        web.ws.send(TextMessage(data="NICK closer"))
        + web.ws.send(TextMessage(data="USER u 0 * :u"))
        + web.ws.send(CloseConnection(code=1000))
    )
    lines = web.expect_closed()
    assert any(" 001 closer " in line for line in lines), lines
    assert web.sequence[-1] == "CloseConnection"
    assert web.sequence.count("CloseConnection") == 1


def test_nothing_framed_goes_to_a_client_that_never_finished_its_request(ws_server):
    server = ws_server(config=make_config(registration_timeout=0.5))
    assert server.websocket_address is not None
    with socket.create_connection(server.websocket_address, timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        assert read_all(sock) == b""  # closed at the timeout, with no ERROR frame


def test_an_odd_host_header_is_no_crash(ws_server, caplog):
    server = ws_server()
    assert server.websocket_address is not None
    with socket.create_connection(server.websocket_address, timeout=TIMEOUT) as sock:
        sock.sendall(UPGRADE.format(host="xn--zz--").encode() + masked(0x8, b"\x03\xe8"))
        assert read_all(sock).startswith(b"HTTP/1.1 101 ")
    with socket.create_connection(server.websocket_address, timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\nUpgrade: websocket\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 4")
    with socket.create_connection(server.websocket_address, timeout=TIMEOUT) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_x_forwarded_for_is_an_address_or_nothing(ws_server, ws_clients):
    server = ws_server(proxies=("127.0.0.1",))
    odd = dial(server, ws_clients, headers=(("X-Forwarded-For", "fe80::1%x PRIVMSG #r :spoof"),))
    odd.register("odd")
    odd.send("WHOIS odd")
    odd.expect(rf" 311 odd odd u {HOST} ")
    mapped = dial(server, ws_clients, headers=(("X-Forwarded-For", "::ffff:10.1.2.3"),))
    mapped.register("mapped")
    mapped.send("WHOIS mapped")
    mapped.expect(r" 311 mapped mapped u 10\.1\.2\.3 ")


def test_same_origin_only_for_an_address_or_localhost(ws_server, ws_clients):
    """A DNS name in both Origin and Host proves nothing: a rebinding attacker's page has
    it too. An address or localhost cannot be rebound."""
    server = ws_server()
    assert server.websocket_address is not None
    host, port = server.websocket_address
    rebinding = (("Origin", f"http://attacker.example:{port}"),)
    refused = WsClient((host, port), headers=rebinding, host=f"attacker.example:{port}")
    ws_clients.append(refused)
    assert isinstance(refused.handshake, RejectConnection)
    local = (("Origin", f"http://localhost:{port}"),)
    allowed = WsClient((host, port), headers=local, host=f"localhost:{port}")
    ws_clients.append(allowed)
    assert allowed.accepted


def test_empty_fragments_cost_something(ws_server, ws_clients):
    server = ws_server(config=make_config(read_buffer_bytes=1024))
    web = dial(server, ws_clients)
    web.register("fragile")
    for _ in range(100):  # 100 empty pieces of one message: 1600 > 1024
        web.sock.sendall(web.ws.send(TextMessage(data="", message_finished=False)))
    lines = web.expect_closed()
    assert lines[-1].startswith("ERROR :Input buffer exceeded"), lines


def test_a_ping_flood_is_a_flood(ws_server, ws_clients):
    config = make_config(flood_burst=2, flood_rate=2.0, flood_disconnect_seconds=1.0)
    web = dial(ws_server(config=config), ws_clients)
    web.register("pinger")
    web.sock.sendall(b"".join(web.ws.send(Ping(payload=b"x")) for _ in range(60)))
    lines = web.expect_closed(timeout=10)
    assert lines[-1] == "ERROR :Excess Flood"


def test_clients_behind_a_proxy_count_by_their_own_address(ws_server, ws_clients):
    """The proxy itself is never held to max_clients_per_ip (everyone behind it shares its
    address), but each forwarded address is."""
    server = ws_server(config=make_config(max_clients_per_ip=2), proxies=("127.0.0.1",))
    first, second, third = (
        dial(server, ws_clients, headers=(("X-Forwarded-For", "10.0.0.5"),)) for _ in range(3)
    )
    first.register("first")
    second.register("second")
    lines = third.expect_closed()
    assert lines[-1] == "ERROR :Too many connections from your address (at most 2)"
    for n in range(3):  # others behind the same proxy are not held up by 10.0.0.5
        dial(server, ws_clients, headers=(("X-Forwarded-For", f"10.0.1.{n}"),)).register(f"o{n}")
    first.send("QUIT")
    first.expect_closed()
    wait_for(lambda: server.world.find_user("first") is None)
    again = dial(server, ws_clients, headers=(("X-Forwarded-For", "10.0.0.5"),))
    again.register("again")  # the count was given back


def test_loading_the_page_never_competes_with_chat_connections(ws_server, ws_clients, connect):
    """The WebSocket port's connections count in a budget of their own until they upgrade:
    someone with every chat slot of their address taken still loads the page (and is
    refused only at the upgrade); half-open requests are bounded by that budget, and the
    one past it gets a 503 a browser can show."""
    server = ws_server(config=make_config(max_clients_per_ip=2))
    chatting = [connect(f"c{n}", target=server) for n in range(2)]
    status, _, body = http(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK" and body
    refused = dial(server, ws_clients)
    assert refused.accepted  # the upgrade is done, then the chat budget is checked
    too_many = "Too many connections from your address (at most 2)"
    assert refused.expect_closed()[-1] == f"ERROR :{too_many}"
    chatting[0].send("QUIT")
    chatting[0].expect_closed()
    wait_for(lambda: server.world.find_user("c0") is None)
    dial(server, ws_clients).register("web")  # a chat slot is free again
    assert server.websocket_address is not None
    half_open = []
    for _ in range(2):
        sock = socket.create_connection(server.websocket_address, timeout=TIMEOUT)
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and no more
        half_open.append(sock)
    try:
        # Refused at accept, before any request is read: the 503 comes unasked.
        with socket.create_connection(server.websocket_address, timeout=TIMEOUT) as sock:
            answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"\r\nContent-Security-Policy: default-src 'none'" in answer
        assert answer.endswith(f"\r\n\r\n{too_many}\n".encode())
    finally:
        for sock in half_open:
            sock.close()
    wait_for(lambda: http(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0].endswith(b"200 OK"))
