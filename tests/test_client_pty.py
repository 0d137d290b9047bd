"""ircish-client on a terminal: the client runs in a pseudo-terminal (pexpect) and a terminal
emulator (pyte) keeps the screen, so the tests read what a person would see: an incoming
message lands above a half-typed line and leaves it whole; Tab, Ctrl-C and Ctrl-D work."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import ACCOUNT_PASSWORD, TIMEOUT, Client, add_account

from ircish.protocol import parse

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

ROOT = Path(__file__).resolve().parent.parent
COLUMNS, ROWS = 100, 30


class Terminal:
    """ircish-client in a pty, its output fed to an emulated screen."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRCISH_")}
        # No colour, and no cursor-position request nobody here would answer.
        env.update(TERM="xterm", NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1")
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "ircish.client.cli", *args],
            cwd=str(ROOT),
            env=env,
            dimensions=(ROWS, COLUMNS),
            encoding="utf-8",
            codec_errors="replace",
        )
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.Stream(self.screen)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def wait_for(self, condition: Callable[[list[str]], bool], what: str) -> list[str]:
        """Read output until the screen satisfies `condition`; fail after TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        while not condition(self.lines()):
            if time.monotonic() > deadline:
                screen = "\n".join(self.lines())
                pytest.fail(f"the screen never showed {what}:\n{screen}")
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.05))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                pytest.fail(f"the client exited before showing {what}")
        return self.lines()

    def wait_for_line(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return self.wait_for(lambda lines: any(regex.search(line) for line in lines), pattern)

    def prompt_line(self) -> str:
        return next((line for line in reversed(self.lines()) if line), "")

    def wait_for_prompt(self, text: str) -> None:
        self.wait_for(lambda lines: self.prompt_line() == text, f"the prompt {text!r}")

    def close(self) -> None:
        self.child.close(force=True)


@pytest.fixture
def terminal(server) -> Iterator[Callable[..., Terminal]]:
    terminals: list[Terminal] = []

    def start(*args: str) -> Terminal:
        term = Terminal("--port", str(server.address[1]), *args)
        terminals.append(term)
        return term

    yield start
    for term in terminals:
        term.close()


@pytest.fixture
def bob(connect) -> Client:
    client = connect("bob")
    client.send("JOIN #general")
    client.expect("JOIN #general")
    return client


def carol_in_general(terminal, bob):
    """carol's client, at its prompt in #general, where bob has seen her join."""
    term = terminal("--nick", "carol", "--join", "#general")
    term.wait_for_prompt("carol@#general>")
    bob.expect(r"carol!\S+ JOIN #general")
    return term


def test_incoming_message_does_not_disturb_a_half_typed_line(terminal, bob):
    term = carol_in_general(terminal, bob)

    term.child.send("half typed")
    term.wait_for_prompt("carol@#general> half typed")
    bob.send("PRIVMSG #general :incoming while you type")
    term.wait_for_line(r"^\d\d:\d\d \[#general\] <bob> incoming while you type$")
    # The message has a line of its own above the prompt, and the prompt still holds the
    # half-typed text, untouched.
    term.wait_for_prompt("carol@#general> half typed")
    lines = term.lines()
    message_row = next(i for i, line in enumerate(lines) if "incoming while you type" in line)
    prompt_row = max(i for i, line in enumerate(lines) if line)
    assert message_row < prompt_row
    term.child.send(" and finished\r")
    bob.expect(r"^:carol!\S+ PRIVMSG #general :half typed and finished$")
    term.wait_for_line(r"^\d\d:\d\d \[#general\] <carol> half typed and finished$")


def test_tab_completes_commands_and_nicks_and_ctrl_c_clears_the_line(terminal, bob):
    term = terminal("--nick", "carol", "--join", "#general")
    term.wait_for_prompt("carol@#general>")
    # The names list on screen means the client knows the members: Tab completes them now
    # (it once pressed Tab between the list and its end, 366, and found nobody: issue 11).
    term.wait_for_line(r"Users in #general: .*bob")

    term.child.send("bo\t")
    term.wait_for_prompt("carol@#general> bob")
    term.child.send(": hi\r")
    bob.expect(r"PRIVMSG #general :bob: hi$")

    term.child.send("this is a mistake")
    term.wait_for_prompt("carol@#general> this is a mistake")
    term.child.sendcontrol("c")
    term.wait_for_prompt("carol@#general>")

    term.child.send("/que\t")
    term.wait_for_prompt("carol@#general> /query")
    term.child.send("bob\r")
    term.wait_for_prompt("carol@bob>")
    term.child.send("just us\r")
    lines = bob.collect_until(r"PRIVMSG bob :just us$")
    assert not any("mistake" in line for line in lines)


# -- pasting several lines (issue 11) ----------------------------------------------------------

#: What a terminal sends around a paste once the program turned bracketed paste on.
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
STAMPED = re.compile(r"^\d\d:\d\d ")


def paste(term: Terminal, lines: list[str], line_end: str) -> None:
    term.child.send(PASTE_START + line_end.join(lines) + PASTE_END)


def said(lines: list[str]) -> list[str]:
    """The texts of the PRIVMSGs among raw lines."""
    return [msg.params[1] for msg in map(parse, lines) if msg.command == "PRIVMSG"]


def assert_screen_clean(term: Terminal) -> None:
    """Every line on screen is a whole event line or the prompt: nothing glued to leftovers."""
    lines = [line for line in term.lines() if line]
    prompt = lines.pop()
    assert prompt.startswith(("carol@#general>", "Paste ")), prompt
    assert all(STAMPED.match(line) for line in lines), "\n".join(term.lines())


def test_a_paste_of_a_few_lines_sends_one_message_per_line(terminal, bob):
    term = carol_in_general(terminal, bob)

    term.child.send("look: ")
    term.wait_for_prompt("carol@#general> look:")
    # xterm ends pasted lines with CR; a line starting with '/' is pasted text, not a command.
    paste(term, ["first line", "second line", "/usr/bin/env is a path", ""], "\r")
    lines = bob.collect_until(r"PRIVMSG #general :/usr/bin/env is a path$")
    assert said(lines) == ["look: first line", "second line", "/usr/bin/env is a path"]
    term.wait_for_line(r"^\d\d:\d\d \[#general\] <carol> /usr/bin/env is a path$")
    term.wait_for_prompt("carol@#general>")
    assert not any("cannot send" in line for line in term.lines())
    assert_screen_clean(term)


def test_a_long_paste_asks_first_and_esc_cancels_it(terminal, bob):
    term = carol_in_general(terminal, bob)
    twelve = [f"line {n} of the paste" for n in range(1, 13)]
    question = "Paste 12 lines to #general? Enter sends them, Esc cancels"

    paste(term, twelve, "\n")
    term.wait_for_prompt(question)
    # What arrives meanwhile has a line of its own, and the question stays.
    bob.send("PRIVMSG #general :while you decide")
    term.wait_for_line(r"^\d\d:\d\d \[#general\] <bob> while you decide$")
    term.wait_for_prompt(question)
    assert_screen_clean(term)
    term.child.send("\x1b")  # Esc
    term.wait_for_line(r"-- Paste of 12 lines cancelled; nothing was sent$")
    term.wait_for_prompt("carol@#general>")
    term.child.send("marker\r")
    lines = bob.collect_until(r"PRIVMSG #general :?marker$")
    assert not any("of the paste" in line for line in lines), lines

    paste(term, twelve, "\r\n")  # iTerm2's line ends
    term.wait_for_prompt(question)
    term.child.send("\r")
    lines = bob.collect_until(r"PRIVMSG #general :line 12 of the paste$")
    assert said(lines) == twelve
    term.wait_for_line(r"^\d\d:\d\d \[#general\] <carol> line 12 of the paste$")
    term.wait_for_prompt("carol@#general>")
    assert_screen_clean(term)


def test_ctrl_d_sends_quit_and_exits_0(terminal, bob):
    term = carol_in_general(terminal, bob)
    term.child.sendcontrol("d")
    bob.expect(r"^:carol!\S+ QUIT :Client Quit$")
    term.child.expect(pexpect.EOF, timeout=TIMEOUT)
    term.child.close()
    assert term.child.exitstatus == 0


def test_the_account_password_is_asked_unseen_and_the_prompt_shows_the_account(terminal, server):
    add_account(server, "alice")
    term = terminal("--nick", "carol", "--account", "alice", "--join", "#general")
    term.wait_for_line(r"^Password for account alice:$")
    term.child.send(ACCOUNT_PASSWORD + "\r")
    term.wait_for_line(r"^\d\d:\d\d -- Logged in as alice$")
    term.wait_for_prompt("[alice] carol@#general>")
    assert ACCOUNT_PASSWORD not in "\n".join(term.lines())
    term.child.send("/msg NickServ LOGOUT\r")
    term.wait_for_line(r"^\d\d:\d\d -- Logged out$")
    term.wait_for_prompt("carol@#general>")
