"""The web client (issue 16) in a real browser: headless Chromium driven by Playwright, the
page served by a real server's WebSocket port, beside raw IRC clients over TCP. Chatting
in rooms and in private, history on join and on scroll, reconnecting after a restart,
accounts, /commands through TYPED, completion, typing, origins, size and sendq limits,
the phone layout and the keys, and a page that logs no errors and breaks no CSP rule.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HOW_TO_GET_IT = (
    "the web client's browser tests need Chromium and Playwright: "
    "apt-get install chromium && pip install playwright"
)
#: Debian's Chromium (`playwright install` would download its own).
CHROMIUM = Path(os.environ.get("IRCISH_CHROMIUM", "/usr/bin/chromium"))
sync_api = pytest.importorskip("playwright.sync_api", reason=HOW_TO_GET_IT)
if not CHROMIUM.exists():
    pytest.skip(HOW_TO_GET_IT, allow_module_level=True)

from browser import PAGE_TIMEOUT_MS, WebUser  # noqa: E402 (needs playwright, checked above)
from helpers import (  # noqa: E402
    ACCOUNT_PASSWORD,
    HOST,
    OPER_PASSWORD,
    ROOT,
    Client,
    ServerProcess,
    add_account,
    make_config,
    oper_config,
)

from ircish import webfiles  # noqa: E402
from ircish.config import Config, WebSocketConfig  # noqa: E402
from ircish.server import Server  # noqa: E402

expect = sync_api.expect
expect.set_options(timeout=PAGE_TIMEOUT_MS)

#: Where IRCISH_SCREENSHOT=1 writes the README's picture of the web client.
SCREENSHOT = ROOT / "docs" / "web-client.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser) -> Iterator[Callable[..., WebUser]]:
    """Pages, each in a context of its own (its own storage: another person)."""
    contexts = []

    def open_one(url: str, **options: object) -> WebUser:
        context = browser.new_context(**options)
        contexts.append(context)
        return WebUser(context, url)

    yield open_one
    for context in contexts:
        context.close()


@pytest.fixture
def web_server(start_server) -> Callable[..., Server]:
    """A server in this process with a WebSocket port (which serves the page)."""

    def start(config: Config | None = None, **settings: object) -> Server:
        base = config or make_config(**settings)
        return start_server(dataclasses.replace(base, websocket=WebSocketConfig(port=0)))

    return start


def page_url(server: Server) -> str:
    assert server.websocket_address is not None
    host, port = server.websocket_address
    return f"http://{host}:{port}/"


@pytest.fixture
def irc() -> Iterator[Callable[..., Client]]:
    """Raw IRC clients over TCP, registered as the nick given."""
    clients: list[Client] = []

    def open_client(address: tuple[str, int], nick: str) -> Client:
        client = Client(address)
        clients.append(client)
        client.register(nick)
        return client

    yield open_client
    for client in clients:
        client.close()


def test_two_pages_and_an_irc_client_share_a_room_and_talk_in_private(web_server, open_page, irc):
    server = web_server()
    url = page_url(server)
    alice, bob = open_page(url), open_page(url)
    alice.login("alice")
    bob.login("bob")
    alice.join("#general")
    bob.join("#general")
    carol = irc(server.address, "carol")
    carol.join("#general")
    for page in (alice, bob):
        expect(page.said("carol", "joined #general", "join")).to_have_count(1)
        expect(page.members()).to_have_count(3)
    expect(alice.said("bob", "joined #general", "join")).to_have_count(1)
    expect(alice.page.locator('#members li[data-nick="alice"] .prefix')).to_have_text("@")

    alice.type("hello from alice")
    bob.expect_said("alice", "hello from alice")
    alice.expect_said("alice", "hello from alice")  # her own line, from the echo
    carol.expect(r"^:alice!\S+ PRIVMSG #general :hello from alice$")
    bob.type("and bob")
    alice.expect_said("bob", "and bob")
    carol.expect(r"^:bob!\S+ PRIVMSG #general :and bob$")
    carol.send("PRIVMSG #general :carol over plain IRC")
    for page in (alice, bob):
        page.expect_said("carol", "carol over plain IRC")
        expect(page.lines("privmsg").last.locator("time")).to_have_text(re.compile(r"^\d\d:\d\d$"))

    # Text from the network is text: markup shows as typed, IRC formatting as styles.
    carol.send("PRIVMSG #general :<b>not bold</b> \x02bold\x02 \x0304red\x03 \x1ditalic\x0f.")
    for page in (alice, bob):
        page.expect_said("carol", "<b>not bold</b> bold red italic.")
    line = alice.said("carol", "<b>not bold</b> bold red italic.")
    expect(line.locator(".text .b")).to_have_text("bold")
    expect(line.locator(".text .fg4")).to_have_text("red")
    expect(line.locator(".text .i")).to_have_text("italic")
    expect(line.locator(".text b")).to_have_count(0)
    # A direction override turns only its own text around, never the nick or time.
    carol.send("PRIVMSG #general :\u202eflipped")
    flipped = alice.said("carol", "\u202eflipped")
    expect(flipped).to_have_count(1)
    for part in (".text", ".nick"):
        isolation = flipped.locator(part).evaluate("e => getComputedStyle(e).unicodeBidi")
        assert isolation == "isolate", (part, isolation)

    carol.send("PRIVMSG alice :psst, alice")
    chat = alice.conversation("carol")
    expect(chat.locator(".unread")).to_have_text("1")
    expect(alice.page).to_have_title(re.compile(r"^\(1\) #general "))
    expect(chat).to_have_class(re.compile(r"\bmention\b"))  # a private message is for you
    alice.expect_current("#general")  # it did not take her away from the room
    expect(bob.conversation("carol")).to_have_count(0)
    alice.switch("carol")
    alice.expect_said("carol", "psst, alice")
    expect(chat.locator(".unread")).to_have_count(0)
    alice.type("hi carol")
    carol.expect(r"^:alice!\S+ PRIVMSG carol :hi carol$")

    alice.switch("#general")
    carol.send("PART #general :off for lunch")
    for page in (alice, bob):
        expect(page.members()).to_have_count(2)
    bob.expect_said("carol", "left #general (off for lunch)", "part")
    assert alice.errors == [] and bob.errors == []


def test_history_on_join_and_on_scrolling_to_the_top(web_server, open_page, irc):
    server = web_server()
    carol = irc(server.address, "carol")
    carol.join("#history")
    said = [f"line {i:03}" for i in range(130)]
    carol.send("".join(f"PRIVMSG #history :{text}\r\n" for text in said).encode())
    carol.sync()
    alice = open_page(page_url(server))
    alice.login("alice")
    alice.join("#history")
    # The latest page of history is there on joining (lines and events: joins too).
    expect(alice.said("carol", "line 129")).to_have_count(1)
    first_page = alice.texts()
    assert len(first_page) >= 40 and first_page == said[-len(first_page) :]
    # /clear empties the view; /history then goes on back from where the lines began.
    alice.type("/clear")
    expect(alice.lines()).to_have_count(0)
    alice.type("/history 5")
    cleared_from = said.index(first_page[0])
    # Those five, and more as the page fills a screen too short to scroll: all older.
    expect(alice.said("carol", said[cleared_from - 1])).to_have_count(1)
    shown = alice.texts()
    assert len(shown) >= 5 and shown == said[cleared_from - len(shown) : cleared_from]
    alice.page.reload()  # (the rest of the test scrolls from a fresh page)
    alice.login("alice_")
    alice.join("#history")
    expect(alice.said("carol", "line 129")).to_have_count(1)
    first_page = alice.texts()
    log = alice.page.locator("#log")
    for _ in range(4):
        shown = alice.texts()
        if len(shown) == len(said):
            break
        top = alice.said("carol", shown[0])
        log.evaluate("log => { log.scrollTop = 0; }")
        expect(alice.lines("privmsg")).not_to_have_count(len(shown))
        # What was at the top stays in view: the older lines came in above it.
        assert log.evaluate("log => log.scrollTop") > 0
        expect(top).to_be_in_viewport()
    assert alice.texts() == said  # in order, none twice
    log.evaluate("log => { log.scrollTop = 0; }")
    expect(alice.said("carol", "joined #history", "join")).to_have_count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def test_the_page_comes_back_after_a_restart_rejoins_and_fetches_what_it_missed(
    tmp_path, open_page, irc
):
    port = free_port()
    config = (
        f"server: {{name: test.server}}\nwebsocket: {{port: {port}}}\n"
        "store: {path: ircish.db, flush_ms: 1}\n"
        "limits: {max_clients_per_ip: 0, flood_rate: 0}\n"
        # A permanent room: the history of other rooms ends with the server.
        'rooms: [{name: "#back"}]\n'
    )
    first = ServerProcess(tmp_path, config, log_level="WARNING")
    alice = open_page(f"http://{HOST}:{port}/")
    alice.login("alice")
    alice.join("#back")
    bob = irc(first.address, "bob")
    bob.join("#back")
    bob.send("PRIVMSG #back :before the restart")
    alice.expect_said("bob", "before the restart")
    bob.close()
    first.stop()
    status = alice.page.locator("#status")
    expect(status).to_have_attribute("data-state", "reconnecting")
    expect(alice.conversation("#back")).to_have_class(re.compile(r"\bparted\b"))
    # A first try has failed: the next is 2 s away, time enough to start again and talk.
    expect(status).to_have_text(re.compile(r"in [24] s"))
    second = ServerProcess(tmp_path, config, log_level="WARNING")
    try:
        bob = irc(second.address, "bob")
        bob.join("#back")
        bob.send("PRIVMSG #back :while you were away")
        bob.sync()
        expect(status).to_have_attribute("data-state", "connected", timeout=40_000)
        expect(alice.conversation("#back")).not_to_have_class(re.compile(r"\bparted\b"))
        alice.expect_said("bob", "while you were away")
        alice.expect_said("bob", "before the restart")  # not twice
        expect(alice.page.locator('#members li[data-nick="bob"]')).to_have_count(1)
        bob.expect(r"^:alice!\S+ JOIN #back")
        alice.type("glad to be back")
        bob.expect(r"^:alice!\S+ PRIVMSG #back :glad to be back$")
    finally:
        second.stop()


def test_registering_logging_in_again_after_a_drop_and_refused_logins(web_server, open_page, irc):
    server = web_server(oper_config())
    add_account(server, "erin")
    url = page_url(server)
    dave = open_page(url)
    dave.login("dave", "a good password", register=True, email="dave@example.org")
    me = dave.page.locator("#me")
    expect(me).to_have_attribute("data-account", "dave")
    oper = irc(server.address, "oper")
    oper.send(f"OPER root :{OPER_PASSWORD}")
    oper.expect(" 381 ")
    oper.send("KILL dave :testing the drop")
    status = dave.page.locator("#status")
    expect(status).to_have_attribute("data-state", "reconnecting")
    expect(me).to_have_attribute("data-account", "")
    expect(status).to_have_attribute("data-state", "connected", timeout=20_000)
    expect(me).to_have_attribute("data-account", "dave")  # logged in again, by SASL
    oper.send("WHOIS dave")
    oper.expect(r" 330 oper dave dave :")

    error = lambda page: page.page.locator("#login-error")  # noqa: E731
    wrong = open_page(url)
    wrong.login("erin", "not the password", wait=False)
    expect(error(wrong)).to_contain_text("wrong password")
    expect(wrong.page.locator("#login")).to_be_visible()
    wrong.login("erin", ACCOUNT_PASSWORD)
    expect(wrong.page.locator("#me")).to_have_attribute("data-account", "erin")

    weak = open_page(url)
    weak.login("frank", "short", register=True, wait=False)
    expect(error(weak)).to_contain_text("Registration failed: Passwords need at least")

    taken = open_page(url)
    taken.login("dave", wait=False)
    expect(error(taken)).to_contain_text("The nick dave is taken")
    taken.page.click("#use-nick")
    expect(taken.page.locator("#me")).to_have_text("dave_")


def test_commands_go_through_the_servers_slash_table(web_server, open_page, irc):
    server = web_server()
    alice = open_page(page_url(server))
    alice.login("alice")
    alice.join("#cmds")
    bob = irc(server.address, "bob")
    bob.join("#cmds")
    alice.type("/me waves")
    alice.expect_said("alice", "waves", "action")
    bob.expect(r"^:alice!\S+ PRIVMSG #cmds :\x01ACTION waves\x01$")
    alice.type("/topic Plans for the week")
    expect(alice.page.locator("#topic")).to_have_text("Plans for the week")
    alice.expect_said("alice", "set the topic: Plans for the week", "topic")
    bob.expect(r"^:alice!\S+ TOPIC #cmds :Plans for the week$")

    alice.type("/op bob")
    alice.expect_said("alice", "set mode +o bob", "mode")
    expect(alice.page.locator('#members li[data-nick="bob"] .prefix')).to_have_text("@")
    bob.send("NICK robert")
    alice.expect_said("bob", "is now known as robert", "nick")
    expect(alice.page.locator('#members li[data-nick="robert"] .prefix')).to_have_text("@")
    alice.type("/kick robert enough")
    alice.expect_said("robert", "was kicked by alice (enough)", "kick")
    expect(alice.members()).to_have_count(1)
    bob.nick = "robert"
    bob.join("#cmds")

    hint = alice.page.locator("#hint")
    alice.type("/kick")
    expect(hint).to_have_text("usage: /kick [#room] <nick> [reason]")  # the server's words
    expect(hint).to_have_class(re.compile(r"\berror\b"))
    expect(alice.page.locator("#input")).to_have_value("/kick")  # given back to fix

    # A paste past what one WebSocket message may hold is refused in the page, whole,
    # instead of costing the connection ("Input buffer exceeded").
    alice.type("word " * 2000)
    expect(hint).to_have_text(re.compile(r"^Too long to send at once: 10000 bytes"))
    expect(alice.page.locator("#status")).to_have_attribute("data-state", "connected")
    alice.type("/frobnicate now")
    expect(alice.lines("error").last).to_contain_text(
        "Unknown command /frobnicate; /help lists the commands"
    )
    # Another room's join replies go to that room, never into the one typed in.
    bob.join("#other")
    bob.send("TOPIC #other :Other things")
    bob.expect(r" TOPIC #other :Other things$")
    alice.type("/join #other")
    expect(alice.page.locator("#topic")).to_have_text("Other things")
    alice.expect_current("#other")
    alice.switch("#cmds")
    expect(alice.lines().filter(has_text="#other")).to_have_count(0)

    topic = next(row for row in webfiles.slash_table() if row["name"] == "topic")
    alice.page.fill("#input", "/to")
    alice.page.press("#input", "Tab")
    expect(alice.page.locator("#input")).to_have_value("/topic ")
    expect(hint).to_have_text(f"/topic {topic['syntax']} — {topic['summary']}")
    alice.page.fill("#input", "/o")
    expect(hint).to_have_text("/op  /oper")  # what it could become
    alice.page.press("#input", "Tab")
    expect(alice.page.locator("#input")).to_have_value("/op ")
    alice.page.press("#input", "Tab")
    expect(alice.page.locator("#input")).to_have_value("/oper ")

    alice.type("/quit see you")
    bob.expect(r"^:alice!\S+ QUIT :.*see you")
    expect(alice.page.locator("#login")).to_be_visible()  # and no reconnecting
    expect(alice.page.locator("#status")).to_have_attribute("data-state", "closed")
    assert not [line for line in bob.quiet(1.5) if "alice" in line]  # a retry is 1 s away


def test_nick_completion_and_typing_seen_by_the_other_page(web_server, open_page):
    server = web_server()
    url = page_url(server)
    alice, bob, bobby = open_page(url), open_page(url), open_page(url)
    for page, nick in ((alice, "alice"), (bob, "bob"), (bobby, "bobby")):
        page.login(nick)
        page.join("#tabs")
    expect(alice.members()).to_have_count(3)
    field = alice.page.locator("#input")
    field.fill("bo")
    field.press("Tab")
    expect(field).to_have_value("bob: ")
    field.press("Tab")
    expect(field).to_have_value("bobby: ")
    field.press("Tab")
    expect(field).to_have_value("bob: ")
    field.fill("thanks bobb")
    field.press("Tab")
    expect(field).to_have_value("thanks bobby ")

    typing = bob.page.locator("#typing")
    expect(typing).to_have_text("alice is typing…")  # the completing was typing too
    field.fill("")
    expect(typing).to_have_text("")  # an emptied line is done typing
    field.fill("thanks bobby ")
    field.press_sequentially(" and bob")
    expect(typing).to_have_text("alice is typing…")
    alice.page.press("#input", "Enter")
    bob.expect_said("alice", "thanks bobby  and bob")
    field.press("ArrowUp")  # what was sent, back for another go
    expect(field).to_have_value("thanks bobby  and bob")
    field.press("ArrowDown")
    expect(field).to_have_value("")
    expect(typing).to_have_text("")  # sent: done typing
    expect(alice.page.locator("#typing")).to_have_text("")  # never told of herself


# A page of another origin that tries the server's WebSocket and says what happened.
TRY_THE_SOCKET = """url => new Promise(resolve => {
  const socket = new WebSocket(url, ["text.ircv3.net"]);
  socket.onopen = () => { resolve("open"); socket.close(); };
  socket.onclose = (event) => resolve(`closed ${event.code}`);
})"""


def test_a_page_of_another_origin_cannot_open_the_socket(web_server, open_page):
    server = web_server()
    url = page_url(server)
    ws_url = url.replace("http:", "ws:")
    own = open_page(url)
    assert own.page.evaluate(TRY_THE_SOCKET, ws_url) == "open"
    other = open_page(url)
    other.page.route(
        "http://elsewhere.example/**",
        lambda route: route.fulfill(content_type="text/html", body="<p>another site</p>"),
    )
    other.page.goto("http://elsewhere.example/")
    assert other.page.evaluate("location.origin") == "http://elsewhere.example"
    assert other.page.evaluate(TRY_THE_SOCKET, ws_url) == "closed 1006"  # refused: 403


# A second socket from the page, registered, that sends one message of 100 kB.
SEND_100_KB = """url => new Promise(resolve => {
  const socket = new WebSocket(url, ["text.ircv3.net"]);
  const got = [];
  socket.onopen = () => { socket.send("NICK big"); socket.send("USER big 0 * :big"); };
  socket.onmessage = (event) => {
    got.push(event.data);
    if (/ 001 /.test(event.data)) {
      socket.send("JOIN #limits");
      socket.send("PRIVMSG #limits :" + "x".repeat(100000));
    }
  };
  socket.onclose = (event) => resolve({code: event.code, last: got[got.length - 1]});
})"""


def test_an_oversize_frame_from_a_page_is_cut_off_and_nobody_else_notices(
    web_server, open_page, irc
):
    server = web_server()
    alice = open_page(page_url(server))
    alice.login("alice")
    alice.join("#limits")
    bob = irc(server.address, "bob")
    bob.join("#limits")
    closed = alice.page.evaluate(SEND_100_KB, page_url(server).replace("http:", "ws:"))
    assert closed["last"].startswith("ERROR :"), closed
    bob.expect(r"^:big!\S+ QUIT :")
    alice.type("still here")
    bob.expect(r"^:alice!\S+ PRIVMSG #limits :still here$")
    bob.send("PRIVMSG #limits :me too")
    alice.expect_said("bob", "me too")
    expect(alice.page.locator("#status")).to_have_attribute("data-state", "connected")


def test_a_page_that_stops_reading_is_cut_off_at_sendq(web_server, open_page, irc):
    # Over the size of the page's biggest file: a file is answered through the sendq too.
    server = web_server(sendq_bytes=65536)
    alice = open_page(page_url(server))
    alice.login("alice")
    alice.join("#flood")
    talker = irc(server.address, "talker")
    talker.join("#flood")
    stop = threading.Event()
    chunk = b"PRIVMSG #flood :" + b"x" * 400 + b"\r\n"

    def flood() -> None:  # about 400 kB/s: a page that reads keeps up
        while not stop.wait(0.05):
            talker.sock.sendall(chunk * 50)

    flooding = threading.Thread(target=flood, daemon=True)
    flooding.start()
    try:
        assert talker.quiet(2.0) == []  # a page that reads is not cut off
        expect(alice.lines("privmsg")).not_to_have_count(0)
        # Its main thread busy for 20 s: the page takes no WebSocket message meanwhile, and
        # Chromium stops reading the socket once its own buffers are full.
        alice.page.evaluate(
            "setTimeout(() => { const end = Date.now() + 20000; while (Date.now() < end); })"
        )
        talker.expect(r"^:alice!\S+ QUIT :SendQ exceeded$", timeout=30)
    finally:
        stop.set()
        flooding.join(5)
    talker.sync()  # the talker was never held up


def test_the_phone_layout_and_keys_alone(web_server, open_page, irc):
    server = web_server()
    alice = open_page(page_url(server), viewport={"width": 390, "height": 844})
    alice.login("alice")
    alice.join("#one")
    alice.join("#two")
    page = alice.page
    sidebar, members = page.locator("#sidebar"), page.locator("#memberlist")
    field = page.locator("#input")
    expect(sidebar).to_be_hidden()
    expect(members).to_be_hidden()
    toggle = page.locator("#toggle-conversations")
    expect(toggle).not_to_have_class(re.compile(r"\bunread\b"))
    irc(server.address, "bob").send("PRIVMSG alice :you have a message")
    expect(toggle).to_have_class(re.compile(r"\bunread\b"))  # the closed drawer says so
    page.click("#toggle-conversations")
    expect(alice.conversation("bob").locator(".unread")).to_have_text("1")
    expect(sidebar).to_be_visible()
    alice.conversation("#one").locator("button").click()  # choosing one closes the drawer
    alice.expect_current("#one")
    expect(sidebar).to_be_hidden()
    expect(field).to_be_focused()
    page.click("#toggle-members")
    expect(members).to_be_visible()
    expect(page.locator('#members li[data-nick="alice"]')).to_be_visible()
    page.keyboard.press("Escape")
    expect(members).to_be_hidden()
    expect(field).to_be_focused()

    page.keyboard.press("Alt+ArrowDown")
    alice.expect_current("#two")
    page.keyboard.press("Alt+ArrowUp")
    alice.expect_current("#one")
    page.keyboard.press("Control+PageDown")
    alice.expect_current("#two")
    page.keyboard.press("Alt+1")
    alice.expect_current("*")  # the server view
    page.keyboard.press("Alt+2")
    alice.expect_current("#one")
    expect(field).to_be_focused()
    field.fill("typed without a mouse")
    field.press("Enter")
    alice.expect_said("alice", "typed without a mouse")
    # Focus can be seen: the focused input has an outline.
    assert field.evaluate("el => getComputedStyle(el).outlineStyle") != "none"


def test_a_chat_logs_no_errors_and_breaks_no_csp_rule(web_server, open_page):
    server = web_server()
    url = page_url(server)
    viewport = {"width": 1200, "height": 750}
    alice, bob = open_page(url, viewport=viewport), open_page(url, viewport=viewport)
    alice.login("alice")
    alice.join("#ircish")
    alice.type("/topic Release 0.2: the web client | notes in README")
    bob.login("bob")
    bob.join("#ircish")
    chat = [
        (alice, "morning bob! the web client is on the WebSocket port now"),
        (bob, "nice, no build step at all?"),
        (alice, "none: plain ES modules, and the server's own slash table for /commands"),
        (bob, "/me tries Tab on alice"),
        (bob, "alice: history loads when I scroll up, too"),
        (alice, "\x02yes\x02, CHATHISTORY BEFORE, deduplicated by msgid"),
    ]
    for page, line in chat:
        page.type(line)
        expect(alice.lines()).not_to_have_count(0)
    alice.expect_said("alice", "yes, CHATHISTORY BEFORE, deduplicated by msgid")
    bob.expect_said("alice", "yes, CHATHISTORY BEFORE, deduplicated by msgid")
    expect(alice.said("bob", "alice: history loads when I scroll up, too")).to_have_class(
        re.compile(r"\bmention\b")
    )
    bob.page.fill("#input", "sounds good")
    expect(alice.page.locator("#typing")).to_have_text("bob is typing…")
    if os.environ.get("IRCISH_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        alice.page.screenshot(path=str(SCREENSHOT))
    assert alice.errors == [], alice.errors
    assert bob.errors == [], bob.errors


# Stands in for the browser's notifications (headless Chromium shows none): granted, and
# each one made is kept in window.notified.
RECORD_NOTIFICATIONS = """
window.notified = [];
window.Notification = class {
  static permission = "default";
  static requestPermission() {
    window.Notification.permission = "granted";
    return Promise.resolve("granted");
  }
  constructor(title, options) { window.notified.push({title, body: options.body}); }
  close() {}
};
"""


def test_desktop_notifications_for_mentions_and_private_messages_once_allowed(
    web_server, open_page, irc
):
    server = web_server()
    url = page_url(server)
    alice = open_page(url)
    alice.page.context.add_init_script(RECORD_NOTIFICATIONS)
    alice.page.reload()
    alice.login("alice")
    alice.join("#room")
    carol = irc(server.address, "carol")
    carol.join("#room")
    notified = lambda: alice.page.evaluate("window.notified")  # noqa: E731
    carol.send("PRIVMSG #room :alice: before you asked")
    alice.expect_said("carol", "alice: before you asked")
    assert notified() == []  # opt-in
    alice.page.click("#notify")
    expect(alice.page.locator("#notify")).to_have_attribute("aria-pressed", "true")
    carol.send("PRIVMSG #room :alice: the room you are looking at")
    alice.expect_said("carol", "alice: the room you are looking at")
    alice.switch("*")
    carol.send("PRIVMSG #room :just talking")
    carol.send("PRIVMSG #room :alice: now you are elsewhere")
    carol.send("PRIVMSG alice :and in private")
    expect(alice.conversation("carol")).to_have_count(1)
    alice.page.wait_for_function("window.notified.length >= 2")
    assert notified() == [
        {"title": "carol in #room", "body": "alice: now you are elsewhere"},
        {"title": "carol", "body": "and in private"},
    ]
