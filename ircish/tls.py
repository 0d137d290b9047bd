"""TLS for ircish: the server's and the client's `ssl.SSLContext`, and `TlsTransport`, which
runs TLS over a plain TCP socket behind the same calls a socket offers (`recv`, `send`,
`sendall`, `shutdown`, `close`, `fileno`), so that one reader thread and one sending thread
can use a connection at the same time, as `Connection` and the client's `_Link` do.

Why not `ssl.SSLSocket`: OpenSSL does not allow one SSL object to be used by two threads at
once (SSL_read in a reader while SSL_write runs in a sender corrupts its state; see
openssl/openssl#20446 and python/cpython#151508), `SSLSocket.send` refuses the MSG_DONTWAIT
flag, and a blocking `SSLSocket` would make a sender wait for a slow peer. So the TCP socket
stays a plain blocking socket and TLS runs in memory (`ssl.SSLObject` over two `MemoryBIO`s,
as asyncio and trio do). Every call into the SSL object happens under `_lock`, which is never
held while waiting: the reader waits for ciphertext with the lock released, then decrypts
under it; the sender encrypts under it and hands the ciphertext to the kernel with a
non-blocking send. Ciphertext leaves in the order it was made, through `_wire`.

The handshake runs in the thread that first calls `recv` (the connection's reader), bounded by
`handshake_timeout`, never in an accept thread. Until it is over, `send` only buffers: the SSL
object belongs to the handshaking thread, and a write would start a handshake of its own.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import select
import socket
import ssl
import time

from ircish.config import ConfigError, TlsConfig
from ircish.locks import held, new_lock

log = logging.getLogger(__name__)

#: Ciphertext read from the socket at a time (a per-reader buffer, as RECV_BYTES in
#: connection.py); a 16 KiB TLS record simply takes several reads.
RAW_RECV_BYTES = 4096
#: Most plaintext one `send` encrypts: it bounds the ciphertext held back when the kernel
#: buffer is full.
MAX_PLAINTEXT_PER_SEND = 65536
#: The first byte of every TLS stream: a handshake record (RFC 8446 5.1), or an alert from a
#: server that refuses us.
_TLS_HANDSHAKE, _TLS_ALERT = 0x16, 0x15


class TlsError(ConnectionError):
    """A TLS failure, worded for a person ("TLS handshake failed: ...")."""

    def __init__(self, message: str, *, not_tls: bool = False, verify_failed: bool = False):
        super().__init__(message)
        self.not_tls = not_tls
        self.verify_failed = verify_failed


# --- contexts --------------------------------------------------------------------------------


class _EncryptedKey(Exception):
    pass


def _refuse_password() -> bytes:
    # Called by OpenSSL only for an encrypted key; without this it would prompt on the terminal.
    raise _EncryptedKey


def files_digest(tls: TlsConfig) -> str:
    """A digest of what the certificate, key and client CA files hold now: a reload tells a
    renewed certificate (certbot rewrites the same paths) from an unchanged one. OSError
    if one cannot be read."""
    digest = hashlib.sha256()
    for path in (tls.cert, tls.key, tls.client_ca):
        if path is not None:
            with open(path, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """The listener's context, built once at start: TLS 1.2 or newer, the configured chain.

    Raises `ConfigError` naming `tls.cert` or `tls.key` if the files cannot be used.
    """
    for key, path, marker, what in (
        ("tls.cert", tls.cert, b"-----BEGIN CERTIFICATE-----", "PEM certificate"),
        ("tls.key", tls.key, b"PRIVATE KEY-----", "PEM private key"),
    ):
        try:
            with open(path, "rb") as handle:
                text = handle.read()
        except OSError as exc:
            raise ConfigError("", key, f"cannot read {path!r} ({exc.strerror or exc})") from None
        if marker not in text:
            raise ConfigError("", key, f"{path!r} holds no {what}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # TLS 1.2 renegotiation would make a write wait for a read; nobody needs it.
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(tls.cert, tls.key, password=_refuse_password)
    except _EncryptedKey:
        raise ConfigError(
            "", "tls.key", "the key is protected by a password; give an unencrypted key"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError("", "tls.key", "does not match the certificate in tls.cert") from None
        raise ConfigError(
            "", "tls", f"cannot use tls.cert and tls.key: {describe_ssl_error(exc)}"
        ) from None
    except OSError as exc:
        raise ConfigError("", "tls", f"cannot read tls.cert or tls.key ({exc.strerror})") from None
    if tls.client_ca is not None:
        # SASL EXTERNAL: a client may show a certificate signed by one of these CAs (and
        # its fingerprint, added to an account, logs it in); a client that shows none
        # connects as always. One that shows a certificate the CAs did not sign is
        # refused at the handshake: Python's ssl has no way to take it unchecked.
        try:
            context.load_verify_locations(cafile=tls.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                "", "tls.client_ca", f"holds no usable CA certificate ({exc})"
            ) from None
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(*, verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """A client context: the system's trusted CAs (or those in `ca_file`; SSL_CERT_FILE is
    honoured too), the host name checked, TLS 1.2 or newer. `verify=False` checks nothing.
    Raises ssl.SSLError or OSError if `ca_file` holds no usable certificate."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe_ssl_error(exc: ssl.SSLError) -> str:
    """An OpenSSL error as a few words ("wrong version number"), without the source line."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if exc.reason:
        return exc.reason.lower().replace("_", " ")
    return exc.strerror or str(exc) or type(exc).__name__


# --- the transport ---------------------------------------------------------------------------


class TlsTransport:
    """TLS over a connected TCP socket, usable by one reading and one sending thread at once.

    `recv` blocks (up to `settimeout`'s timeout); `send` never waits, whatever `flags` say, and
    raises BlockingIOError when the kernel takes nothing; `sendall` waits for the socket.
    """

    def __init__(
        self,
        raw: socket.socket,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        handshake_timeout: float | None = None,
        not_tls_reply: bytes = b"",
    ) -> None:
        # Blocking, with no timeout: a socket timeout would make every send(MSG_DONTWAIT)
        # wait for the socket (CPython polls first); the transport waits with poll itself.
        raw.settimeout(None)
        self._raw = raw
        self._fd = raw.fileno()
        self._server_side = server_side
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._handshake_timeout = handshake_timeout
        self._not_tls_reply = not_tls_reply
        self._timeout: float | None = None
        # Guards the SSL object, the BIOs and the fields below. Held only for in-memory work
        # and non-blocking sends, never while waiting.
        self._lock = new_lock("TlsTransport._lock")
        self._established = False
        self.certfp: str | None = None
        self._early: list[bytes] = []  # plaintext sent before the handshake was over
        self._wire = b""  # ciphertext made but not yet taken by the kernel, in order
        # Plaintext already encrypted into `_wire` but not yet reported as sent: the caller
        # passes it again (as for any partial send) and is told once `_wire` is out.
        self._unacked = 0
        self._close_notified = False

    def __repr__(self) -> str:
        return f"<TlsTransport fd={self._fd} {'server' if self._server_side else 'client'}>"

    # -- socket-like ------------------------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def settimeout(self, timeout: float | None) -> None:
        """Seconds `recv` and `sendall` may wait (None: forever), as for a socket."""
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def version(self) -> str | None:
        """The TLS version agreed ("TLSv1.3"), or None before the handshake."""
        return self._ssl.version()

    def recv(self, bufsize: int) -> bytes:
        """Up to `bufsize` decrypted bytes; b"" at the end of the stream. The first call runs
        the handshake (server side). Raises TimeoutError, TlsError or another OSError."""
        if not self._established:
            self.handshake(self._handshake_timeout)
        deadline = self._deadline(self._timeout)
        while True:
            with self._lock:
                try:
                    data: bytes | None = self._ssl.read(bufsize)
                except ssl.SSLWantReadError:
                    data = None
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    data = b""  # with or without close_notify, the peer is gone
                except ssl.SSLError as exc:
                    raise TlsError(f"TLS error: {describe_ssl_error(exc)}") from None
                finally:
                    self._pass_on_output_locked()
            if data is not None:
                return data
            chunk = self._recv_raw(deadline)
            with self._lock:
                if chunk:
                    self._incoming.write(chunk)
                else:
                    self._incoming.write_eof()

    def wait_readable(self, timeout: float) -> bool:
        """Run the handshake if it is not done, then wait up to `timeout` seconds for the
        peer to send something: True if it did (or hung up)."""
        if not self._established:
            self.handshake(self._handshake_timeout)
        with self._lock:
            if self._ssl.pending() or self._incoming.pending:
                return True
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))

    def send(self, data: bytes | memoryview, flags: int = 0) -> int:
        """Encrypt and hand to the kernel what it takes now; never waits (`flags` is accepted
        for socket compatibility and ignored). The count of plaintext bytes sent, or
        BlockingIOError when none could be; like a socket, the caller passes the rest again."""
        with self._lock:
            if not self._established:
                self._early.append(bytes(data))
                return len(data)
            if self._wire:
                self._push_locked()
                if self._wire:
                    raise BlockingIOError(errno.EAGAIN, "TLS output waits for the socket")
            if self._unacked:
                sent, self._unacked = self._unacked, 0
                return sent
            try:
                taken = self._ssl.write(data[:MAX_PLAINTEXT_PER_SEND])
            except ssl.SSLError as exc:
                raise TlsError(f"TLS error: {describe_ssl_error(exc)}") from None
            self._wire += self._outgoing.read()  # empty before: checked above, under the lock
            self._push_locked()
            if self._wire:
                self._unacked = taken
                raise BlockingIOError(errno.EAGAIN, "TLS output waits for the socket")
            return taken

    def sendall(self, data: bytes | memoryview) -> None:
        """Send all of `data`, waiting for the socket (up to the timeout) when it is full."""
        view = memoryview(data)
        deadline = self._deadline(self._timeout)
        while view:
            try:
                view = view[self.send(view) :]
            except BlockingIOError:
                self._wait(select.POLLOUT, deadline)

    def shutdown(self, how: int) -> None:
        """Say close_notify (best effort, never waiting), then shut the TCP socket down; a
        thread blocked in `recv` returns."""
        with self._lock:
            if self._established and not self._close_notified:
                self._close_notified = True
                with contextlib.suppress(ssl.SSLError):
                    self._ssl.unwrap()  # SSLWantReadError: the peer's close_notify is not awaited
                self._wire += self._outgoing.read()
                with contextlib.suppress(OSError):
                    self._push_locked()
        self._raw.shutdown(how)

    def close(self) -> None:
        self._raw.close()

    # -- the handshake ------------------------------------------------------------------------

    def handshake(self, timeout: float | None) -> None:
        """Run the handshake in this thread, in at most `timeout` seconds; then send what was
        queued meanwhile and let `send` encrypt. Raises TlsError (timeouts too) or OSError."""
        deadline = self._deadline(timeout)
        first_byte: int | None = None
        while True:
            try:
                self._ssl.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError as exc:
                raise TlsError(
                    f"TLS handshake failed: {describe_ssl_error(exc)}",
                    verify_failed=isinstance(exc, ssl.SSLCertVerificationError),
                ) from None
            flight = self._outgoing.read()
            if flight:
                self._send_raw(flight, deadline)
            if done:
                der = self._ssl.getpeercert(binary_form=True)
                #: The SHA-256 fingerprint of the client's certificate (hex), if it gave one
                #: (SASL EXTERNAL); set once, before the reader thread reads a line.
                self.certfp = None if der is None else hashlib.sha256(der).hexdigest()
                break
            chunk = self._recv_raw(deadline, during_handshake=True)
            if not chunk:
                raise TlsError("TLS handshake failed: the connection was closed")
            if first_byte is None:
                first_byte = chunk[0]
                if not self._looks_like_tls(first_byte):
                    self._refuse_plain_text()
            self._incoming.write(chunk)
        # Hand the SSL object over to the lock. What a sender queued during the handshake
        # goes first, from this thread; the flag flips only once nothing is left.
        while True:
            with self._lock:
                early, self._early = self._early, []
                if not early:
                    self._established = True
                    return
            try:
                self._ssl.write(b"".join(early))
            except ssl.SSLError as exc:
                raise TlsError(f"TLS error: {describe_ssl_error(exc)}") from None
            self._send_raw(self._outgoing.read(), deadline)

    def _looks_like_tls(self, first_byte: int) -> bool:
        # A client starts with a handshake record; a server answers with one, or an alert.
        return first_byte == _TLS_HANDSHAKE or (not self._server_side and first_byte == _TLS_ALERT)

    def _refuse_plain_text(self) -> None:
        if self._server_side:
            # Someone typing on the TLS port (nc, or a client without TLS): say so in plain
            # text, the one thing such a peer can read.
            if self._not_tls_reply:
                with contextlib.suppress(OSError):
                    self._raw.send(self._not_tls_reply, socket.MSG_DONTWAIT)
            raise TlsError("TLS handshake failed: the client sent plain text", not_tls=True)
        raise TlsError(
            "TLS handshake failed: the server answered in plain text (not its TLS port?)",
            not_tls=True,
        )

    # -- moving ciphertext --------------------------------------------------------------------

    def _pass_on_output_locked(self) -> None:
        """After a read: records it produced (an alert, say) join `_wire`, in order."""
        assert held(self._lock)
        if self._outgoing.pending:
            self._wire += self._outgoing.read()
            # A failed send shows up as a failed recv soon enough; the reader goes on reading.
            with contextlib.suppress(OSError):
                self._push_locked()

    def _push_locked(self) -> None:
        """Give `_wire` to the kernel without waiting; what it refuses stays in `_wire`."""
        assert held(self._lock)
        while self._wire:
            try:
                sent = self._raw.send(self._wire, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            self._wire = self._wire[sent:]

    def _send_raw(self, data: bytes, deadline: float | None) -> None:
        """Send all of `data`, waiting for the socket until `deadline` (handshake only: nobody
        else sends yet)."""
        view = memoryview(data)
        while view:
            try:
                view = view[self._raw.send(view, socket.MSG_DONTWAIT) :]
            except BlockingIOError:
                self._wait(select.POLLOUT, deadline, during_handshake=True)

    def _recv_raw(self, deadline: float | None, during_handshake: bool = False) -> bytes:
        if deadline is not None:
            self._wait(select.POLLIN, deadline, during_handshake)
        return self._raw.recv(RAW_RECV_BYTES)

    def _wait(self, event: int, deadline: float | None, during_handshake: bool = False) -> None:
        poller = select.poll()
        poller.register(self._fd, event)
        if deadline is None:
            poller.poll()
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            if during_handshake:
                raise TlsError("TLS handshake timed out")
            raise TimeoutError("timed out")

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout
