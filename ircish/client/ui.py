"""What the person sees and types. `Formatter` turns session events into finished lines (an
`HH:MM` timestamp, the line's own time when the server sent one, the text from
`ircish/render.py`, nick colours, WHO/LIST replies gathered into aligned tables);
`InteractiveUI` reads a prompt_toolkit input line that incoming text never overwrites, and
sends a paste of several lines as one message per line (asking first above
`PASTE_ASK_ABOVE` lines); `ScriptedUI` reads stdin and writes one flushed line per event, for
pipes and tests.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import re
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, BinaryIO, TextIO

from ircish.client.input_line import (
    CommandLine,
    completions,
    holds_secret,
    paste_as_one_line,
    paste_lines,
)
from ircish.client.session import (
    QUIT_WAIT,
    Changed,
    Closed,
    Event,
    Incoming,
    Note,
    Session,
    is_room,
)
from ircish.protocol import Message, casefold
from ircish.render import Tables, render, strip_formatting

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

#: SGR colours for nicks; plain blue (34) is left out, it is hard to read on a dark background.
NICK_COLOURS = ("31", "32", "33", "35", "36", "91", "92", "93", "94", "95", "96")
_NOTE_COLOURS = {"error": "31", "info": "90", "plain": "", "marker": "90"}
#: A marker (`-- now --`) is its own text: it frames a room's earlier lines.
_NOTE_MARKS = {"error": "! ", "info": "-- ", "plain": "", "marker": ""}
_NICK_CHARS = r"A-Za-z0-9\[\]\\`^{|}_-"
#: How long, at end of input, a script waits for a registration under way.
EOF_GRACE = 10.0
#: A paste of more lines than this asks before sending (as irssi and WeeChat do): a paste
#: into the wrong window, or of a whole file, is easy to make and cannot be taken back.
PASTE_ASK_ABOVE = 5


def colour_wanted(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    return bool(stream.isatty()) and not environ.get("NO_COLOR")


def nick_colour(nick: str) -> str:
    """The SGR colour of `nick`: the same for a nick in any case, in every run."""
    return NICK_COLOURS[zlib.crc32(casefold(nick).encode("utf-8")) % len(NICK_COLOURS)]


def message_time(tag: str, today: date) -> str | None:
    """The local time an IRCv3 server-time tag (`2026-12-02T03:50:49.127Z`, UTC) stands for:
    `HH:MM`, with the date in front (`2026-12-01 23:50`) when that is not `today`, so a line
    replayed or held up since an earlier day does not pass for today's. None if the tag
    cannot be read (the arrival time is shown instead)."""
    if tag.endswith(("Z", "z")):  # Python 3.10's fromisoformat does not read the Z
        tag = tag[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(tag)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)  # the spec's times are UTC
        local = when.astimezone()
    except (ValueError, OverflowError, OSError):
        return None
    return local.strftime("%H:%M" if local.date() == today else "%Y-%m-%d %H:%M")


def paint(text: str, sgr: str) -> str:
    return f"\x1b[{sgr}m{text}\x1b[0m" if sgr else text


class Formatter:
    """Session events -> the lines a person reads. Not thread-safe: callers hold a lock."""

    def __init__(
        self,
        colour: bool,
        clock: Callable[[], str] | None = None,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.colour = colour
        self.clock = clock or (lambda: time.strftime("%H:%M"))
        self.today = today
        self._tables = Tables()

    def lines(self, event: Event) -> list[str]:
        if isinstance(event, Incoming):
            return self._incoming(event.msg, event.me)
        if isinstance(event, Note):
            mark, sgr = _NOTE_MARKS.get(event.kind, ""), _NOTE_COLOURS.get(event.kind, "")
            return [self._stamp(paint(mark + event.text, sgr if self.colour else ""))]
        if isinstance(event, Closed):
            return self._unfinished_tables()
        return []

    def _stamp(self, text: str, when: str | None = None) -> str:
        return f"{when or self.clock()} {text}"

    def _incoming(self, msg: Message, me: str | None) -> list[str]:
        table = self._tables.take(msg, me)
        if table is not None:
            return [self._stamp(line) for line in table]
        text = render(msg, me)
        if text is None:
            return []
        if self.colour:
            text = self._paint(msg, me, text)
        # server-time: when it was said, not when it arrived (a replayed or delayed line).
        tag = msg.tags.get("time")
        return [self._stamp(text, message_time(tag, self.today()) if tag else None)]

    def _unfinished_tables(self) -> list[str]:
        return [self._stamp(row) for row in self._tables.unfinished()]

    def _paint(self, msg: Message, me: str | None, text: str) -> str:
        if text.startswith("! "):
            return paint(text, "31")
        source = msg.source_nick
        if not source or (msg.prefix and "!" not in msg.prefix and "." in source):
            return text  # a server, not a person
        nicks = [source]
        target = msg.param(0)
        if (
            msg.command in ("PRIVMSG", "NOTICE")
            and me is not None
            and casefold(source) == casefold(me)
            and not is_room(target)
        ):
            nicks = [target]  # "-> *bob* hi": the one it went to
        elif msg.command == "NICK":
            nicks.append(target)
        elif msg.command == "KICK":
            nicks.append(msg.param(1))
        # Skip a leading "[#room] " so a nick that is also a room's name is not coloured there.
        start = text.find("] ") + 2 if text.startswith("[") else 0
        head, tail = text[:start], text[start:]
        for nick in nicks:
            clean = strip_formatting(nick)
            if clean:
                pattern = rf"(?<![{_NICK_CHARS}]){re.escape(clean)}(?![{_NICK_CHARS}])"
                found = re.search(pattern, tail)
                if found:
                    coloured = paint(clean, nick_colour(clean))
                    tail = tail[: found.start()] + coloured + tail[found.end() :]
        return head + tail


class ScriptedUI:
    """stdin lines in, one flushed stdout line per event out; no prompt, no colour.

    Each input line waits until the server has answered the previous ones (a PING round trip),
    so `/join #ops` then `hello` sends hello to #ops. At end of input it quits and exits 0.
    """

    _EOF = object()
    _CLOSED = object()

    def __init__(self, stdin: BinaryIO, stdout: TextIO) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.formatter = Formatter(colour=False)
        self._lock = threading.Lock()
        self._inbox: queue.Queue[object] = queue.Queue()
        self._broken = False

    def on_event(self, event: Event) -> None:
        with self._lock:
            lines = self.formatter.lines(event)
            if not self._broken:
                try:
                    for line in lines:
                        self.stdout.write(line + "\n")
                    self.stdout.flush()
                except (BrokenPipeError, ValueError):
                    # Our reader went away (`| head`): stop writing and leave.
                    self._broken = True
                    self._silence_stdout()
                    self._inbox.put(self._CLOSED)
        if isinstance(event, Closed):
            self._inbox.put(self._CLOSED)

    def run(self, session: Session) -> int:
        commands = CommandLine(session, self.on_event)
        threading.Thread(target=self._read_stdin, name="ircish-client-stdin", daemon=True).start()
        try:
            while True:
                item = self._inbox.get()
                if item is self._CLOSED or self._broken:
                    break
                if item is self._EOF:
                    # Let a registration under way finish (its replies are output to flush);
                    # while waiting to reconnect there is nothing to flush.
                    if session.connected and session.wait_registered(EOF_GRACE):
                        session.sync()
                    session.quit()
                    break
                if not session.wait_registered():
                    break  # closed while waiting
                session.sync()
                if commands.handle(str(item)):
                    break
        except KeyboardInterrupt:
            session.quit("Interrupted")
        if self._broken:
            session.quit()
        code = session.wait_closed(2 * QUIT_WAIT)
        return 1 if code is None else code

    def _read_stdin(self) -> None:
        # os.read on the descriptor, not the buffered file: a daemon thread blocked inside a
        # buffered read holds its lock, and interpreter shutdown then aborts the process.
        pending = b""
        try:
            while chunk := os.read(self.stdin.fileno(), 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._inbox.put(line.decode("utf-8", "replace").rstrip("\r"))
        except OSError as exc:
            logging.getLogger(__name__).warning("cannot read stdin: %s", exc)
        if pending:
            self._inbox.put(pending.decode("utf-8", "replace").rstrip("\r"))
        self._inbox.put(self._EOF)

    def _silence_stdout(self) -> None:
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stdout.fileno())
            os.close(devnull)


class Pasted:
    """What the input line gives back for a paste of several lines: the lines to send."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines


class InteractiveUI:
    """A prompt_toolkit input line (`carol@#general> `) with history and Tab completion;
    events are printed above it through `patch_stdout`, so a half-typed line is never
    disturbed. Ctrl-C clears the line, Ctrl-D or /quit leaves.

    A bracketed paste (what terminals send for a paste) of one line goes into the input line
    to edit; of several lines, each becomes a message (a line never holds a line end, which
    IRC cannot send and which would break the one-line prompt). Above PASTE_ASK_ABOVE lines
    the prompt asks first: Enter sends them, Esc or Ctrl-C cancels."""

    def __init__(self, colour: bool) -> None:
        self.formatter = Formatter(colour)
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._prompt: PromptSession[str] | None = None
        self._prompt_done = threading.Event()
        #: A long paste waiting for Enter or Esc (touched only in the prompt's event loop).
        self._paste: list[str] | None = None

    def on_event(self, event: Event) -> None:
        with self._lock:
            lines = self.formatter.lines(event)
        for line in lines:
            print(line, flush=True)  # sys.stdout is patch_stdout's proxy while prompting
        if isinstance(event, Changed) and self._prompt is not None:
            self._prompt.app.invalidate()  # thread-safe: redraws the prompt's nick and target
        if isinstance(event, Closed):
            self._stop_prompt()

    def run(self, session: Session) -> int:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory
        from prompt_toolkit.patch_stdout import patch_stdout

        class NoSecretsHistory(InMemoryHistory):
            """In memory only (private messages stay off the disk), and without the lines
            that hold a password (/login, /pass...), which Up would show again."""

            def append_string(self, string: str) -> None:
                if not holds_secret(string):
                    super().append_string(string)

        self._session = session
        commands = CommandLine(session, self.on_event)
        self._prompt = PromptSession(
            history=NoSecretsHistory(),
            completer=_completer(session),
            complete_while_typing=False,
            # The sent line is shown as the echo of what went out ("[#room] <me> text"), so
            # the typed copy is erased rather than left above it.
            erase_when_done=True,
            key_bindings=self._paste_bindings(),
        )
        try:
            with patch_stdout(raw=True), _logging_to(sys.stderr):
                while not session.closed:
                    try:
                        line = self._prompt.prompt(self._prompt_text, pre_run=self._exit_if_closed)
                    except KeyboardInterrupt:
                        continue  # Ctrl-C: the line is cleared, nothing is sent
                    except EOFError:
                        session.quit()
                        break
                    if isinstance(line, Pasted):
                        commands.paste(line.lines)
                    elif line is None or commands.handle(line):
                        break
        finally:
            self._prompt_done.set()
        code = session.wait_closed(2 * QUIT_WAIT)
        return 1 if code is None else code

    def _paste_bindings(self) -> object:
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.key_binding import KeyBindings
        from prompt_toolkit.keys import Keys

        bindings = KeyBindings()
        asking = Condition(lambda: self._paste is not None)

        @bindings.add(Keys.BracketedPaste)
        def _pasted(event):  # type: ignore[no-untyped-def]
            if self._paste is not None:
                return  # asking about a paste already: one at a time
            buffer = event.current_buffer
            document = buffer.document
            whole = document.text_before_cursor + event.data + document.text_after_cursor
            lines = paste_lines(whole)
            if len(lines) < 2:
                buffer.insert_text(paste_as_one_line(event.data))
                return
            buffer.reset()
            if len(lines) <= PASTE_ASK_ABOVE:
                event.app.exit(result=Pasted(lines))
            else:
                self._paste = lines  # the prompt now asks (see _prompt_text)

        @bindings.add("enter", filter=asking)
        def _send_paste(event):  # type: ignore[no-untyped-def]
            lines, self._paste = self._paste, None
            event.app.exit(result=Pasted(lines or []))

        @bindings.add("escape", filter=asking, eager=True)
        @bindings.add("c-c", filter=asking)
        def _cancel_paste(event):  # type: ignore[no-untyped-def]
            count, self._paste = len(self._paste or ()), None
            self.on_event(Note(f"Paste of {count} lines cancelled; nothing was sent"))

        @bindings.add(Keys.Any, filter=asking)
        def _ignore_typing(event):  # type: ignore[no-untyped-def]
            pass  # while asking, only Enter, Esc and Ctrl-C mean something

        return bindings

    def _prompt_text(self) -> object:
        from prompt_toolkit.formatted_text import ANSI

        assert self._session is not None
        view = self._session.view()
        if self._paste is not None:
            where = f" to {strip_formatting(view.target)}" if view.target else ""
            question = f"Paste {len(self._paste)} lines{where}? Enter sends them, Esc cancels "
            return ANSI(paint(question, "1" if self.formatter.colour else ""))
        nick = strip_formatting(view.nick)
        if self.formatter.colour:
            nick = paint(nick, nick_colour(nick))
        where = f"@{strip_formatting(view.target)}" if view.target else ""
        away = " (away)" if view.query_away else ""  # the one we talk to privately
        offline = "" if view.online else " (offline)"
        # Logged in: the account first, as a tag on who we are (`[alice] carol@#general> `).
        account = f"[{strip_formatting(view.account)}] " if view.account else ""
        return ANSI(f"{account}{nick}{where}{away}{offline}> ")

    def _exit_if_closed(self) -> None:
        app = self._prompt.app if self._prompt is not None else None
        if (
            app is not None
            and self._session is not None
            and self._session.closed
            and app.future is not None
            and not app.future.done()
        ):
            app.exit(result=None)

    def _stop_prompt(self) -> None:
        # The session ended from the network side: end the prompt from its own event loop.
        # The prompt may be between two lines right now, so keep asking until it is gone.
        def keep_asking() -> None:
            while not self._prompt_done.wait(0.05):
                app = self._prompt.app if self._prompt is not None else None
                loop = app.loop if app is not None else None
                if app is not None and app.is_running and loop is not None:
                    loop.call_soon_threadsafe(self._exit_if_closed)

        threading.Thread(target=keep_asking, name="ircish-client-stop", daemon=True).start()


@contextlib.contextmanager
def _logging_to(stream: TextIO) -> Iterator[None]:
    """Point the root logger's stream handlers at `stream` (patch_stdout's stderr proxy, so a
    --debug line is printed above the prompt instead of through it), then back."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler)
    ]
    previous = [handler.setStream(stream) for handler in handlers]
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            if old is not None:
                handler.setStream(old)


def _completer(session: Session) -> object:
    from prompt_toolkit.completion import Completer, Completion

    class RoomNickCompleter(Completer):
        """Tab: command names, rooms you are in, nicks of the current room."""

        def get_completions(self, document, complete_event):  # type: ignore[no-untyped-def]
            word, candidates = completions(document.text_before_cursor, session.view())
            for candidate in candidates:
                yield Completion(candidate, start_position=-len(word), display=candidate.strip())

    return RoomNickCompleter()


def default_streams() -> tuple[BinaryIO, TextIO]:
    """stdin (read as UTF-8, bad bytes replaced) and stdout (unencodable text replaced)."""
    sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    return sys.stdin.buffer, sys.stdout
