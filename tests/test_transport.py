"""The transport seam (issue 10): `StreamTransport` hands up whole lines from a TCP stream
(or TLS over one), keeps a half line until it is finished, drops one the stream ends in,
and says when a peer sends too much without a newline, after the whole lines before it."""

from __future__ import annotations

import socket
import threading

import pytest

from ircish.transport import InputOverflow, StreamTransport


@pytest.fixture
def pair():
    """A StreamTransport over one end of a socket pair, and the other end. Reads time out
    after 5 s, so a test that waits for nothing fails instead of hanging."""
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    transport = StreamTransport(ours, max_buffer=64)
    yield transport, theirs
    ours.close()
    theirs.close()


def test_lines_with_lf_or_crlf(pair):
    transport, peer = pair
    peer.sendall(b"NICK a\r\nUSER u 0 * :x\nPING 1\r\n")
    assert transport.receive() == [b"NICK a", b"USER u 0 * :x", b"PING 1"]


def test_a_line_in_pieces_comes_up_whole(pair):
    transport, peer = pair
    peer.sendall(b"PRIV")
    done = []
    reader = threading.Thread(target=lambda: done.append(transport.receive()))
    reader.start()
    peer.sendall(b"MSG #r :hi\r")
    peer.sendall(b"\nJOIN")
    reader.join(5)
    assert done == [[b"PRIVMSG #r :hi"]]
    peer.sendall(b" #r\r\n")
    assert transport.receive() == [b"JOIN #r"]


def test_the_end_of_the_stream_drops_a_half_line(pair):
    transport, peer = pair
    peer.sendall(b"PING 1\r\nPRIVMSG #r :half a li")
    peer.shutdown(socket.SHUT_WR)
    assert transport.receive() == [b"PING 1"]
    assert transport.receive() == []


def test_too_much_without_a_newline_overflows_after_the_whole_lines(pair):
    transport, peer = pair
    peer.sendall(b"PING 1\r\n" + b"x" * 100)
    assert transport.receive() == [b"PING 1"]
    with pytest.raises(InputOverflow):
        transport.receive()


def test_shutdown_read_wakes_a_blocked_reader(pair):
    transport, _ = pair
    got = []
    reader = threading.Thread(target=lambda: got.append(transport.receive()))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive() and got == []  # blocked in recv: nothing has arrived
    transport.shutdown_read()
    reader.join(5)
    assert got == [[]]


def test_send_never_waits():
    # A socket without a timeout, as the server's are (with one, CPython would poll
    # before a MSG_DONTWAIT send and wait).
    ours, theirs = socket.socketpair()
    with ours, theirs:
        transport = StreamTransport(ours, max_buffer=64)
        sent = 0
        with pytest.raises(BlockingIOError):
            for _ in range(10_000):  # the peer never reads: the kernel buffer fills
                sent += transport.send(b"x" * 65536)
        assert sent > 0
