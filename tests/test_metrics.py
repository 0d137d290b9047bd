"""The metrics endpoint (issue 15): /metrics in Prometheus text and /healthz, over a real
HTTP connection to a real server, with the figures checked against what the test did."""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import urllib.error
import urllib.request

import pytest
from helpers import (
    ACCOUNT_PASSWORD,
    HOST,
    TIMEOUT,
    Client,
    add_account,
    make_config,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from ircish import sasl
from ircish.config import MetricsConfig
from ircish.server import ListenError, Server


class CountingClient(Client):
    """A client that counts every byte it sends (the server must have received them) and
    every byte it receives (the server must have sent them)."""

    sent = 0
    received = 0

    def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode() + b"\r\n"
        CountingClient.sent += len(data)
        self.sock.sendall(data)

    def receive(self) -> bytes:
        data = super().receive()
        CountingClient.received += len(data)
        return data


@pytest.fixture
def dial(clients):
    """Open a client (counting what it sends) to a server; closed after the test."""

    def open_client(server: Server) -> CountingClient:
        client = CountingClient(server.address)
        clients.append(client)
        return client

    return open_client


@pytest.fixture
def metered(start_server):
    """A server with metrics on an ephemeral loopback port."""

    def start(**settings: object) -> Server:
        config = make_config(**settings)
        config = dataclasses.replace(config, metrics=MetricsConfig(listen="127.0.0.1:0"))
        return start_server(config)

    CountingClient.sent = 0
    return start


def fetch(server: Server, path: str) -> tuple[int, str]:
    assert server.metrics is not None
    host, port = server.metrics.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=TIMEOUT) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    status, body = fetch(server, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_figures_match_what_the_clients_did(metered, dial):
    server = metered()
    alice, bob, carol = (dial(server) for _ in range(3))
    for client, nick in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        client.register(nick)
        client.join("#room")
    for i in range(40):
        alice.send(f"PRIVMSG #room :line {i}")
    for i in range(7):
        bob.send(f"PRIVMSG carol :psst {i}")
    for i in range(3):
        carol.send(f"NOTICE #room :note {i}")
    bob.send("PRIVMSG #nowhere :lost")  # refused (403): not relayed, not counted
    for client in (alice, bob, carol):
        client.sync()
    samples = scrape(server)

    assert value(samples, "ircish_messages_total", command="PRIVMSG", target="room") == 40
    assert value(samples, "ircish_messages_total", command="PRIVMSG", target="private") == 7
    assert value(samples, "ircish_messages_total", command="NOTICE", target="room") == 3
    # Each room line reached the two other members; each private one its one receiver.
    assert value(samples, "ircish_deliveries_total") == 40 * 2 + 7 + 3 * 2
    assert value(samples, "ircish_users") == 3
    assert value(samples, "ircish_rooms") == 1
    assert value(samples, "ircish_connections", transport="tcp", state="registered") == 3
    assert value(samples, "ircish_connections_accepted_total", transport="tcp") == 3
    # Every byte the clients sent was read, and counted once.
    assert value(samples, "ircish_received_bytes_total", transport="tcp") == CountingClient.sent
    assert value(samples, "ircish_sent_bytes_total", transport="tcp") > 40 * 2 * 30
    # The histogram's count is the commands handled, by name.
    assert value(samples, "ircish_command_duration_seconds_count", command="PRIVMSG") == 48
    assert value(samples, "ircish_command_duration_seconds_count", command="JOIN") == 3
    assert value(samples, "ircish_command_duration_seconds_bucket", command="JOIN", le="+Inf") == 3
    assert value(samples, "ircish_command_duration_seconds_sum", command="JOIN") > 0
    assert value(samples, "process_resident_memory_bytes") > 0

    # A connection that ends keeps what it counted, and says why it ended.
    carol.send("QUIT :bye")
    carol.expect_closed()
    wait_for(lambda: value(scrape(server), "ircish_users") == 2)
    samples = scrape(server)
    assert value(samples, "ircish_disconnects_total", reason="quit") == 1
    # A state with nobody in it reads 0; it does not vanish.
    assert samples[("ircish_connections", (("state", "closing"), ("transport", "tcp")))] == 0
    assert value(samples, "ircish_received_bytes_total", transport="tcp") == CountingClient.sent
    assert value(samples, "ircish_messages_total", command="NOTICE", target="room") == 3
    assert value(samples, "ircish_connections", transport="tcp", state="registered") == 2


def test_no_nick_or_room_name_is_ever_a_label(metered, dial):
    server = metered()
    client = dial(server)
    client.register("zanzibar")
    client.join("#quokkas")
    client.send("PRIVMSG #quokkas :hello")
    client.send("FROBNICATE now")  # an unknown command is counted as "unknown"
    client.sync()
    status, body = fetch(server, "/metrics")
    assert status == 200
    assert "zanzibar" not in body and "quokkas" not in body and "FROBNICATE" not in body
    samples = scrape(server)
    assert value(samples, "ircish_command_duration_seconds_count", command="unknown") == 1


def test_a_scrape_during_load_counts_up_to_what_was_sent(metered, dial):
    server = metered()
    talker, listener = dial(server), dial(server)
    talker.register("talker")
    listener.register("listener")
    talker.join("#load")
    listener.join("#load")
    total = 2000
    seen: list[float] = []

    def talk() -> None:
        for start in range(0, total, 100):
            talker.send(b"".join(b"PRIVMSG #load :m%d\r\n" % i for i in range(start, start + 100)))

    thread = threading.Thread(target=talk)
    thread.start()
    while thread.is_alive() or not seen or seen[-1] < total:
        samples = scrape(server)
        seen.append(value(samples, "ircish_messages_total", command="PRIVMSG", target="room"))
        if len(seen) > 500:
            break
    thread.join(TIMEOUT)
    listener.expect(rf"PRIVMSG #load :m{total - 1}$", timeout=30)
    assert seen == sorted(seen), "a counter went down between scrapes"
    assert seen[-1] == total
    assert value(scrape(server), "ircish_deliveries_total") == total


def test_a_scrape_takes_no_room_lock_and_no_world_lock(metered, dial):
    server = metered()
    client = dial(server)
    client.register("alice")
    client.join("#held")
    room = server.world.find_room("#held")
    assert room is not None
    with server.world.lock, room.lock:
        samples = scrape(server)  # would time out if the scrape waited for either lock
    assert value(samples, "ircish_rooms") == 1


def test_refused_logins_are_counted(metered, dial):
    server = metered()
    add_account(server, "alice")
    guesser = dial(server)
    guesser.send("CAP LS 302")
    guesser.send("CAP REQ sasl")
    guesser.send("AUTHENTICATE PLAIN")
    guesser.expect("AUTHENTICATE +")
    for payload in sasl.encode_response(b"\0alice\0wrong password"):
        guesser.send(f"AUTHENTICATE {payload}")
    guesser.expect(" 904 ")
    guesser.send("AUTHENTICATE PLAIN")
    guesser.expect("AUTHENTICATE +")
    for payload in sasl.encode_response(f"\0alice\0{ACCOUNT_PASSWORD}".encode()):
        guesser.send(f"AUTHENTICATE {payload}")
    guesser.expect(" 903 ")
    samples = scrape(server)
    assert value(samples, "ircish_failed_logins_total", reason="invalid") == 1
    assert value(samples, "ircish_accounts") == 1


def test_flood_slowdowns_and_excess_flood_are_counted(metered, dial):
    server = metered(flood_burst=2, flood_rate=2.0, flood_disconnect_seconds=1.0)
    flooder = dial(server)
    flooder.register("flooder")
    flooder.send(b"".join(b"PRIVMSG nobody :x%d\r\n" % i for i in range(50)))
    assert flooder.expect_closed(timeout=10)[-1] == "ERROR :Excess Flood"
    wait_for(lambda: value(scrape(server), "ircish_disconnects_total", reason="excess_flood") == 1)
    assert value(scrape(server), "ircish_flood_slowdowns_total") >= 1


def test_sendq_drops_are_counted(metered, dial):
    server = metered(sendq_bytes=4096)
    # A reader that never reads, with a tiny window: its queue passes sendq_bytes.
    stalled = socket.socket()
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        stalled.settimeout(TIMEOUT)
        stalled.connect(server.address)
        stalled.sendall(b"NICK stalled\r\nUSER u 0 * :u\r\nJOIN #big\r\n")
        talker = dial(server)
        talker.register("talker")
        talker.join("#big")
        wait_for(lambda: len(talker.names("#big")) == 2)
        line = "x" * 400
        talker.send("".join(f"PRIVMSG #big :{line}\r\n" for _ in range(400)).encode())
        wait_for(lambda: value(scrape(server), "ircish_disconnects_total", reason="sendq") == 1)
    finally:
        stalled.close()


def test_healthz_and_unknown_paths(metered):
    server = metered()
    assert fetch(server, "/healthz") == (200, "ok\n")
    status, body = fetch(server, "/nope")
    assert status == 404 and "/metrics" in body


def test_the_store_writer_figures_are_there_with_a_store(metered, dial, tmp_path):
    from ircish.config import StoreConfig

    server = metered(store=StoreConfig(path=str(tmp_path / "ircish.db")))
    client = dial(server)
    client.register("alice")
    client.join("#kept")
    for i in range(5):
        client.send(f"PRIVMSG #kept :line {i}")
    client.sync()
    assert server.writer is not None
    server.writer.flush(TIMEOUT)
    samples = scrape(server)
    # The JOIN and the five lines are history lines (draft/event-playback keeps joins).
    assert value(samples, "ircish_history_written_total") >= 5
    assert samples[("ircish_history_queue", ())] == 0
    assert samples[("ircish_history_lag_seconds", ())] == 0


def test_metrics_off_binds_nothing(start_server):
    server = start_server()
    assert server.metrics is None
    assert not server.dispatcher.timed


def test_a_taken_metrics_port_stops_the_start(start_server):
    taken = socket.socket()
    taken.bind((HOST, 0))
    taken.listen()
    try:
        config = make_config()
        listen = f"{HOST}:{taken.getsockname()[1]}"
        config = dataclasses.replace(config, metrics=MetricsConfig(listen=listen))
        with pytest.raises(ListenError) as info:
            start_server(config)
        assert "(metrics)" in info.value.where
    finally:
        taken.close()


def test_healthz_says_what_stopped(metered):
    server = metered()
    server.shutdown(timeout=2.0)  # the endpoint closes too: nothing answers any more
    with pytest.raises(urllib.error.URLError):
        fetch(server, "/healthz")
    assert server.health() == "shutting down"


def test_every_byte_sent_is_counted_the_last_lines_too(metered, dial):
    """A connection that registers and quits in one packet: its welcome and its ERROR line
    are written after its reader has left; they count all the same."""
    server = metered()
    CountingClient.received = 0
    for i in range(30):
        client = dial(server)
        client.send(f"NICK q{i}\r\nUSER u 0 * :u\r\nQUIT :bye\r\n")
        client.expect_closed()
    wait_for(
        lambda: (
            value(scrape(server), "ircish_sent_bytes_total", transport="tcp")
            == CountingClient.received
        )
    )
    assert value(scrape(server), "ircish_disconnects_total", reason="quit") == 30


def test_labeled_counters_start_at_zero(metered):
    samples = scrape(metered())
    assert ("ircish_config_reloads_total", (("result", "failed"),)) in samples
    assert ("ircish_disconnects_total", (("reason", "sendq"),)) in samples
    assert ("ircish_failed_logins_total", (("reason", "invalid"),)) in samples
    key = ("ircish_messages_total", (("command", "TAGMSG"), ("target", "private")))
    assert samples[key] == 0


def test_head_post_and_hangups_on_the_endpoint(metered, capfd):
    server = metered()
    assert server.metrics is not None
    host, port = server.metrics.address
    request = urllib.request.Request(f"http://{host}:{port}/healthz", method="HEAD")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        assert answer.status == 200 and answer.read() == b""
        assert "Python" not in answer.headers["Server"]
    request = urllib.request.Request(f"http://{host}:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=TIMEOUT)
    info.value.close()
    assert info.value.code == 405 and info.value.headers["Allow"] == "GET, HEAD"
    # Scrapers that hang up before the answer: no traceback on stderr, the endpoint goes on.
    for _ in range(10):
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert fetch(server, "/healthz") == (200, "ok\n")
    assert "Traceback" not in capfd.readouterr().err
