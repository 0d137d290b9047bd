"""TLS: the `tls:` config section, the second listener, `TlsTransport` shared by a reader and
a sending thread, and `ircish-client --tls`. Certificates come from a throwaway CA made at
test time (trustme); servers listen on 127.0.0.1 with ephemeral ports, every read has a
timeout."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from helpers import COMMANDS, HOST, TIMEOUT, Client, make_config, prefix, wait_for

from ircish.client.session import Note, Session, SessionConfig
from ircish.config import ConfigError, TlsConfig, parse_config
from ircish.server import Server
from ircish.tls import TlsError, TlsTransport, server_context

ROOT = Path(__file__).resolve().parent.parent
CLIENT = [sys.executable, "-m", "ircish.client.cli"]
SERVER = [sys.executable, "-m", "ircish.cli"]


@dataclasses.dataclass(frozen=True)
class Pki:
    """A CA and a server certificate for 127.0.0.1 and localhost, as PEM files."""

    ca: trustme.CA
    ca_file: Path
    cert: Path
    key: Path
    directory: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def tls_config(self, port: int = 0) -> TlsConfig:
        return TlsConfig(cert=str(self.cert), key=str(self.key), port=port)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    issued = ca.issue_cert(HOST, "localhost")
    cert, key, ca_file = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    for blob in issued.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(ca, ca_file, cert, key, directory)


class TlsClient(Client):
    """`conftest.Client` over TLS (the test side is one thread, so an SSLSocket is fine).
    `receive_buffer` shrinks the socket's receive buffer (set before connecting, so the
    TCP window stays small): the server's writes then meet a full socket."""

    def __init__(
        self,
        address: tuple[str, int],
        context: ssl.SSLContext,
        receive_buffer: int | None = None,
    ) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(address)
            self.sock = context.wrap_socket(sock, server_hostname=HOST)
        except BaseException:
            sock.close()
            raise
        self.nick = None
        self.buffer = b""
        self.lines = []


@pytest.fixture
def tls_server(start_server: Callable[..., Server], pki: Pki) -> Callable[..., Server]:
    """Start a server with a TLS listener; keyword settings as for `make_config`."""

    def start(**settings: object) -> Server:
        config = dataclasses.replace(make_config(**settings), tls=pki.tls_config())
        return start_server(config)

    return start


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ircish's or OpenSSL's trust settings."""
    drop = ("IRCISH_", "SSL_CERT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


# -- the config section -------------------------------------------------------------------------


def test_tls_is_off_by_default_and_with_null():
    assert parse_config({}).tls is None
    assert parse_config({"tls": None}).tls is None


def test_a_tls_section_is_read_with_port_6697_by_default(pki):
    config = parse_config({"tls": {"cert": str(pki.cert), "key": str(pki.key)}})
    assert config.tls == TlsConfig(cert=str(pki.cert), key=str(pki.key), port=6697)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("yes", r"^f\.yaml: tls: expected a mapping, got 'yes'$"),
        ({"key": "KEY"}, r"^f\.yaml: tls\.cert: required key is missing$"),
        ({"cert": "CERT", "key": "KEY", "colour": 1}, r"^f\.yaml: tls\.colour: unknown key$"),
        ({"cert": "CERT", "key": "KEY", "port": 70000}, r"^f\.yaml: tls\.port: must be between"),
        ({"cert": "CERT", "key": "KEY", "port": "x"}, r"tls\.port: expected an integer, got 'x'"),
        ({"cert": "CERT", "key": "KEY", "port": 6667}, r"tls\.port: must differ from server\.port"),
        ({"cert": "nope.pem", "key": "KEY"}, r"^f\.yaml: tls\.cert: no such file: '.*nope\.pem'$"),
        ({"cert": "CERT", "key": "DIR"}, r"^f\.yaml: tls\.key: is a directory, not a file"),
        ({"cert": "", "key": "KEY"}, r"^f\.yaml: tls\.cert: must not be empty$"),
    ],
)
def test_bad_tls_settings_name_the_key(pki, section, expected):
    paths = {"CERT": str(pki.cert), "KEY": str(pki.key), "DIR": str(pki.directory)}
    if isinstance(section, dict):
        section = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in section.items()}
        section = {k: str(pki.directory / v) if v == "nope.pem" else v for k, v in section.items()}
    with pytest.raises(ConfigError) as caught:
        parse_config({"tls": section}, "f.yaml")
    assert re.search(expected, str(caught.value)), str(caught.value)


def test_the_example_tls_section_works_once_uncommented(pki):
    text = (ROOT / "examples" / "config.yaml").read_text(encoding="utf-8")
    commented = re.search(r"^# tls:\n((?:#   .*\n)+)", text, re.MULTILINE)
    assert commented, "examples/config.yaml lost its commented-out tls: section"
    section = "tls:\n" + re.sub(r"^# ", "", commented.group(1), flags=re.MULTILINE)
    section = re.sub(r"cert: .*", f"cert: '{pki.cert}'", section)
    section = re.sub(r"key: .*", f"key: '{pki.key}'", section)
    text = text.replace("\ntls: null\n", "\n" + section)
    config = parse_config(yaml.safe_load(text), "examples/config.yaml")
    assert config.tls == TlsConfig(cert=str(pki.cert), key=str(pki.key), port=6697)


def test_the_same_port_for_both_listeners_is_refused_but_0_is_fine(pki):
    config = parse_config({"server": {"port": 0}, "tls": {**_files(pki), "port": 0}})
    assert config.tls is not None and config.tls.port == 0
    config = parse_config({"tls": {**_files(pki), "port": 7000}})
    with pytest.raises(ConfigError, match=r"^command line: --port: 7000 is already tls\.port$"):
        config.with_overrides(port=7000)


def _files(pki: Pki) -> dict[str, str]:
    return {"cert": str(pki.cert), "key": str(pki.key)}


# -- chatting over TLS ---------------------------------------------------------------------------


def test_a_tls_client_and_a_plain_client_chat_in_one_room(tls_server, pki, clients):
    server = tls_server()
    assert server.tls_address is not None and server.tls_address != server.address
    alice = Client(server.address)
    bob = TlsClient(server.tls_address, pki.client_context())
    clients += [alice, bob]
    assert bob.sock.version() in ("TLSv1.2", "TLSv1.3")
    # A silent connection is greeted (GREETING_DELAY), over TLS too.
    bob.expect(r"^:test\.server NOTICE \* :\*\*\* Welcome to ircish")
    alice.register("alice")
    bob.register("bob")
    alice.join("#tls")
    bob.join("#tls")
    alice.sync()
    bob.send("PRIVMSG #tls :hello from TLS")
    alice.expect(rf"^:{re.escape(prefix('bob'))} PRIVMSG #tls :hello from TLS$")
    alice.send("PRIVMSG #tls :hello from plain TCP")
    bob.expect(rf"^:{re.escape(prefix('alice'))} PRIVMSG #tls :hello from plain TCP$")
    bob.send("QUIT :bye")
    assert any("ERROR" in line for line in bob.expect_closed())
    alice.expect(rf"^:{re.escape(prefix('bob'))} QUIT :Quit: bye$")


def test_a_big_burst_to_a_slow_tls_reader_arrives_whole_and_in_order(
    tls_server, pki, clients, monkeypatch
):
    # More than the kernel buffers hold: the sender meets a full socket, keeps the
    # ciphertext it made, is parked, and goes on when the reader catches up.
    full = []
    send = TlsTransport.send

    def counting_send(self: TlsTransport, data: bytes, flags: int = 0) -> int:
        try:
            return send(self, data, flags)
        except BlockingIOError:
            full.append(1)
            raise

    monkeypatch.setattr(TlsTransport, "send", counting_send)
    server = tls_server(sendq_bytes=16 * 1024 * 1024)
    alice = Client(server.address)
    bob = TlsClient(server.tls_address, pki.client_context(), receive_buffer=8192)
    clients += [alice, bob]
    alice.register("alice")
    bob.register("bob")
    alice.join("#big")
    bob.join("#big")
    filler = "x" * 400
    count = 14000  # ~6 MB of PRIVMSG lines: more than the kernel buffers hold (4 MB)
    for start in range(0, count, 500):
        alice.send(
            b"".join(
                f"PRIVMSG #big :{n:05d} {filler}\r\n".encode() for n in range(start, start + 500)
            )
        )
    # Bob reads nothing until the server's sender has met his full socket: 6 MB is more
    # than the kernel holds for him (4 MB send buffer, a small receive window).
    wait_for(lambda: bool(full), timeout=30)
    got = [int(m.group(1)) for m in _matches(bob, r"PRIVMSG #big :(\d{5}) x+$", count)]
    assert got == list(range(count))


def _matches(client: Client, pattern: str, count: int) -> list[re.Match[str]]:
    return [client.expect(pattern, timeout=30) for _ in range(count)]


def test_a_silent_tls_peer_blocks_nobody_and_is_dropped_at_the_registration_timeout(
    tls_server, pki, clients
):
    timeout = 2.0
    server = tls_server(registration_timeout=timeout)
    silent = Client(server.tls_address)  # TCP connected, never says a word
    opened_at = time.monotonic()
    clients.append(silent)
    bob = TlsClient(server.tls_address, pki.client_context())
    clients.append(bob)
    bob.register("bob")
    # bob got through while the silent one was still connected.
    assert time.monotonic() - opened_at < timeout
    assert server.connection_count() == 2
    assert silent.expect_closed(timeout=timeout + TIMEOUT) == []
    assert time.monotonic() - opened_at >= timeout * 0.9
    wait_for(lambda: server.connection_count() == 1)
    bob.sync()  # still served


def test_plain_text_on_the_tls_port_gets_one_plain_line_and_is_logged(tls_server, clients, caplog):
    caplog.set_level(logging.INFO, logger="ircish")
    server = tls_server()
    nc = Client(server.tls_address)
    clients.append(nc)
    nc.send("NICK carol")
    lines = nc.expect_closed()
    assert lines == [
        f"ERROR :This port speaks TLS only; plain connections go to port {server.address[1]}"
    ]
    wait_for(lambda: any("the client sent plain text" in r.getMessage() for r in caplog.records))
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert server.connection_count() == 0


# -- TlsTransport: one reader thread and one sending thread ----------------------------------


def _numbered(count: int, tag: bytes) -> bytes:
    return b"".join(b"%s%07d\n" % (tag, n) for n in range(count))


def _recv_exactly(transport: TlsTransport, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = transport.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def test_transport_reads_and_writes_from_two_threads_at_once(pki):
    """Both ends write ~1 MB through small socket buffers while their reader threads read:
    the writes meet full buffers (BlockingIOError, then a retry with the same bytes) while
    the SSL object is in use by the reader; every byte arrives once, in order."""
    a, b = socket.socketpair()
    for sock in (a, b):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    server = TlsTransport(
        a, server_context(pki.tls_config()), server_side=True, handshake_timeout=TIMEOUT
    )
    client = TlsTransport(b, pki.client_context(), server_side=False, server_hostname=HOST)
    for transport in (server, client):
        transport.settimeout(TIMEOUT * 4)
    to_client, to_server = _numbered(80_000, b"s"), _numbered(80_000, b"c")
    results: dict[str, bytes] = {}
    waits = []

    def server_reader() -> None:  # the handshake runs here, as in a Connection
        first = server.recv(65536)
        # The handshake is over: from now on the writer's sends go through the SSL object
        # while this thread reads.
        threads.append(threading.Thread(target=server_writer))
        threads[-1].start()
        results["server got"] = first + _recv_exactly(server, len(to_server) - len(first))

    def server_writer() -> None:  # as Connection._write + the poller: never blocks in send
        view = memoryview(to_client)
        poller = select.poll()
        poller.register(server.fileno(), select.POLLOUT)
        while view:
            try:
                view = view[server.send(view, socket.MSG_DONTWAIT) :]
            except BlockingIOError:
                waits.append(1)
                assert poller.poll(TIMEOUT * 1000), "socket never became writable"

    def client_writer() -> None:
        client.sendall(to_server)

    server.send(b"early\n")  # before the handshake: held, then sent first
    threads = [threading.Thread(target=server_reader)]
    threads[0].start()
    try:
        client.handshake(TIMEOUT)
        writer = threading.Thread(target=client_writer)
        writer.start()
        threads.append(writer)
        results["client got"] = _recv_exactly(client, len(to_client) + len(b"early\n"))
    finally:
        for thread in list(threads):
            thread.join(TIMEOUT * 4)
    try:
        assert not any(thread.is_alive() for thread in threads)
        assert results["client got"] == b"early\n" + to_client
        assert results["server got"] == to_server
        assert waits, "the kernel buffer never filled: the test proved nothing"
        server.shutdown(socket.SHUT_RDWR)  # close_notify, then the TCP shutdown
        assert client.recv(100) == b""
    finally:
        server.close()
        client.close()


def test_transport_handshake_gives_up_at_its_timeout(pki):
    a, b = socket.socketpair()
    server = TlsTransport(a, server_context(pki.tls_config()), server_side=True)
    try:
        started = time.monotonic()
        with pytest.raises(TlsError, match=r"^TLS handshake timed out$"):
            server.handshake(0.3)
        assert 0.25 < time.monotonic() - started < TIMEOUT
    finally:
        server.close()
        b.close()


def test_the_client_session_over_tls_notices_a_silent_server(pki):
    """The client's idle timeout works through TlsTransport.recv: PING, then lost."""
    listener = socket.create_server((HOST, 0))
    events: list[object] = []
    config = SessionConfig(
        nick="carol",
        port=listener.getsockname()[1],
        reconnect=False,
        idle_timeout=0.2,
        tls_context=pki.client_context(),
    )
    session = Session(config, events.append)
    accepted: list[ssl.SSLSocket] = []

    def accept() -> None:  # the server's half of the handshake, while start() does the other
        peer, _ = listener.accept()
        peer.settimeout(TIMEOUT)
        accepted.append(server_context(pki.tls_config()).wrap_socket(peer, server_side=True))

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        session.start()
        thread.join(TIMEOUT)
        with accepted[0] as peer:
            peer.sendall(b":fake 001 carol :Welcome\r\n")
            assert session.wait_registered(TIMEOUT)
            assert session.wait_closed(TIMEOUT) == 1
            received = b""
            while chunk := peer.recv(4096):
                received += chunk
        assert b"\r\nPING " in received
    finally:
        session.quit()
        thread.join(TIMEOUT)
        listener.close()
    notes = [event.text for event in events if isinstance(event, Note)]
    assert notes[0].startswith(f"Connected to {HOST}:{config.port} (TLSv1.")
    assert "Connection lost: no answer from the server for 0.4 s" in notes


# -- ircish-server -------------------------------------------------------------------------------


def _server_config(tmp_path: Path, cert: Path, key: Path) -> Path:
    path = tmp_path / "tls.yaml"
    path.write_text(f"server:\n  port: 0\ntls:\n  port: 0\n  cert: '{cert}'\n  key: '{key}'\n")
    return path


def _encrypted_key(pki: Pki, path: Path) -> Path:
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ("junk cert", r"tls\.cert: '.*junk\.pem' holds no PEM certificate$"),
        ("junk key", r"tls\.key: '.*junk\.pem' holds no PEM private key$"),
        ("other key", r"tls\.key: does not match the certificate in tls\.cert$"),
        ("encrypted key", r"tls\.key: the key is protected by a password"),
        ("key as cert", r"tls\.cert: '.*key\.pem' holds no PEM certificate$"),
        ("missing cert", r"tls\.cert: no such file: '.*missing\.pem'$"),
    ],
)
def test_a_bad_certificate_or_key_is_one_line_and_exit_2(pki, tmp_path, files, expected):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    other = tmp_path / "other-key.pem"
    pki.ca.issue_cert("other.example").private_key_pem.write_to_path(str(other))
    cert, key = {
        "junk cert": (junk, pki.key),
        "junk key": (pki.cert, junk),
        "other key": (pki.cert, other),
        "encrypted key": (pki.cert, _encrypted_key(pki, tmp_path / "encrypted.pem")),
        "key as cert": (pki.key, pki.key),
        "missing cert": (tmp_path / "missing.pem", pki.key),
    }[files]
    path = _server_config(tmp_path, cert, key)
    result = subprocess.run(
        [*SERVER, "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ircish-server: {path}: tls")
    assert re.search(expected, lines[0]), lines[0]


def _read_line(stream, timeout: float = TIMEOUT) -> str:
    """One line from a subprocess pipe, waiting at most `timeout`."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        pytest.fail("no line from the server in time")
    return stream.readline()


def test_the_server_command_listens_on_both_ports_and_stops_on_sigterm(pki, tmp_path, clients):
    path = _server_config(tmp_path, pki.cert, pki.key)
    proc = subprocess.Popen(
        [*SERVER, "-c", str(path), "--log-level", "WARNING"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _read_line(proc.stderr)
        match = re.search(r"listening on 127\.0\.0\.1:(\d+), TLS on 127\.0\.0\.1:(\d+)$", line)
        assert match, line
        bob = TlsClient((HOST, int(match.group(2))), pki.client_context())
        clients.append(bob)
        bob.register("bob")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
        assert "Server shutting down" in "".join(bob.expect_closed())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        assert proc.stderr is not None
        proc.stderr.close()


# -- ircish-client --tls ---------------------------------------------------------------------


def run_client(*args: str, env: dict[str, str] | None = None, stdin: str = ""):
    return subprocess.run(
        [*CLIENT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
        env=env or clean_env(),
    )


@pytest.mark.parametrize("trust", ["--ca-file", "SSL_CERT_FILE", "--insecure"])
def test_ircish_client_chats_over_tls(tls_server, pki, clients, trust):
    server = tls_server()
    observer = Client(server.address)
    clients.append(observer)
    observer.register("obs")
    observer.join("#tls")
    args = ["--tls", "--port", str(server.tls_address[1]), "--nick", "carol", "--join", "#tls"]
    env = clean_env()
    if trust == "--ca-file":
        args += ["--ca-file", str(pki.ca_file)]
    elif trust == "SSL_CERT_FILE":
        env = clean_env(SSL_CERT_FILE=str(pki.ca_file))
    else:
        args.append("--insecure")
    result = run_client(*args, env=env, stdin="hello over TLS\n")
    assert result.returncode == 0, result.stderr
    checked = ", certificate not checked" if trust == "--insecure" else ""
    connected = (
        re.escape(f"-- Connected to {HOST}:{server.tls_address[1]} (TLSv1.") + rf"\d{checked}\)"
    )
    assert re.search(connected, result.stdout), result.stdout
    observer.expect(r"^:carol!carol@127\.0\.0\.1 PRIVMSG #tls :hello over TLS$")


def test_ircish_client_refuses_an_unknown_certificate_in_one_line(tls_server):
    server = tls_server()
    port = server.tls_address[1]
    result = run_client("--tls", "--port", str(port), "--nick", "carol")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ircish-client: cannot connect to {HOST}:{port}: TLS handshake failed: certificate "
        "verify failed: unable to get local issuer certificate (trust its CA with --ca-file "
        "FILE, or skip the check with --insecure)"
    ]
    assert result.stdout == ""


def test_ircish_client_with_tls_on_a_plain_port_says_so(tls_server, pki):
    server = tls_server()
    port = server.address[1]
    result = run_client("--tls", "--ca-file", str(pki.ca_file), "-p", str(port), "-n", "carol")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ircish-client: cannot connect to {HOST}:{port}: TLS handshake failed: the server "
        "answered in plain text (not its TLS port?)"
    ]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--insecure"], "--insecure only makes sense with --tls"),
        (["--ca-file", "CA"], "--ca-file only makes sense with --tls"),
        (["--tls", "--insecure", "--ca-file", "CA"], "contradict each other"),
        (["--tls", "--ca-file", "JUNK"], "Invalid value for --ca-file: no CA certificate in"),
    ],
)
def test_tls_option_mistakes_are_usage_errors(pki, tmp_path, args, complaint):
    junk = tmp_path / "junk.pem"
    junk.write_text("nothing here\n")
    paths = {"CA": str(pki.ca_file), "JUNK": str(junk)}
    result = run_client("--nick", "carol", *(paths.get(arg, arg) for arg in args))
    assert result.returncode == 2
    assert complaint in result.stderr


def issue(pki: Pki, cert: Path, key: Path) -> None:
    """A new certificate and key from the test CA, written over `cert` and `key`."""
    issued = pki.ca.issue_cert(HOST, "localhost")
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())


@pytest.mark.parametrize("same_paths", [True, False], ids=["renewed-in-place", "new-paths"])
def test_a_reload_takes_a_renewed_certificate_for_new_connections(
    pki, tmp_path, clients, same_paths
):
    """A renewed certificate reaches new connections, whether certbot rewrote the files the
    config names (then sent SIGHUP) or the config names new ones; connections already open
    keep theirs and stay."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issue(pki, cert, key)
    config = dataclasses.replace(make_config(), tls=TlsConfig(cert=str(cert), key=str(key), port=0))
    later = config
    if same_paths:
        renewing = lambda: issue(pki, cert, key)  # noqa: E731
    else:
        new_cert, new_key = tmp_path / "new.pem", tmp_path / "new.key"
        later = dataclasses.replace(
            config, tls=TlsConfig(cert=str(new_cert), key=str(new_key), port=0)
        )
        renewing = lambda: issue(pki, new_cert, new_key)  # noqa: E731
    server = Server(config, COMMANDS, reread=lambda: later)
    server.start()
    try:
        assert server.tls_address is not None

        def serial(client: TlsClient) -> int:
            der = client.sock.getpeercert(binary_form=True)
            return x509.load_der_x509_certificate(der).serial_number

        before = TlsClient(server.tls_address, pki.client_context())
        clients.append(before)
        before.register("before")
        renewing()
        outcome = server.reload()
        assert outcome.applied == (
            ("tls files (renewed)",) if same_paths else ("tls.cert", "tls.key")
        )
        after = TlsClient(server.tls_address, pki.client_context())
        clients.append(after)
        after.register("after")
        assert serial(after) != serial(before)
        before.sync()  # still connected
    finally:
        server.shutdown(timeout=2.0)


def test_a_reload_with_an_unusable_key_changes_nothing(pki, tmp_path):
    """A key written over the old one that is not the certificate's (a botched renewal):
    refused, and the server keeps serving with what it had."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issue(pki, cert, key)
    config = dataclasses.replace(make_config(), tls=TlsConfig(cert=str(cert), key=str(key), port=0))
    server = Server(config, COMMANDS, reread=lambda: config, source="ircish.yaml")
    server.start()
    try:
        key.write_bytes(pki.ca.issue_cert(HOST).private_key_pem.bytes())
        outcome = server.reload()
        assert outcome.error is not None and outcome.error.startswith("ircish.yaml: tls.")
        assert server.config is config
    finally:
        server.shutdown(timeout=2.0)
