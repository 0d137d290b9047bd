"""The server's log: where it goes (stderr or a file), in which form (text or JSON lines),
and how much (the level); all three change on a reload, and a file is reopened then too, so
logrotate can move it away and send SIGHUP.

`LogSetup` owns the one handler on the root logger. `prepare` opens what a config asks for
without touching the live handler (a file that cannot be opened is an OSError and changes
nothing); `apply` swaps it in. Lines are never lost at a reopen: logging's handler lock is
held while the stream changes, so a line goes to the old file or to the new one.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from dataclasses import dataclass

from ircish.config import LogConfig

#: The text form: time, level, where, what.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _escaped(text: str) -> str:
    """Control characters as escapes (`\\x1b`): a log line is read in terminals, and what a
    user typed (a quit reason, an account name) must not set a title or clear a screen."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with the message's control characters escaped (a traceback keeps its
    line breaks: it is the server's own text)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _escaped(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601 with milliseconds), level, logger,
    message, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        entry = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class ReopeningFileHandler(logging.FileHandler):
    """A file handler whose file can be reopened (after logrotate moved it)."""

    def reopen(self) -> None:
        """Close the file and open it again by its name; the lock keeps every line whole
        and in one of the two files."""
        stream = self._open()  # outside the lock: a slow disk holds up no log line
        self.acquire()
        try:
            old, self.stream = self.stream, stream
        finally:
            self.release()
        if old is not None:
            old.close()


@dataclass(frozen=True)
class Prepared:
    """What `LogSetup.prepare` made: the handler for a config, not yet in use."""

    config: LogConfig
    handler: logging.Handler


class LogSetup:
    """The root logger's handler, as the config says."""

    def __init__(self) -> None:
        self.config: LogConfig | None = None
        self.handler: logging.Handler | None = None

    def reopen(self) -> None:
        """Reopen the log file, if the log goes to one (SIGHUP, after logrotate)."""
        if isinstance(self.handler, ReopeningFileHandler):
            self.handler.reopen()

    def prepare(self, config: LogConfig) -> Prepared:
        """A handler for `config`: the live one when it already writes there, else a new
        one. OSError if the file cannot be opened; nothing changes then."""
        current = self.handler
        same = self.config is not None and self.config.file == config.file
        if current is not None and same:
            return Prepared(config, current)
        if config.file is not None:
            return Prepared(config, ReopeningFileHandler(config.file, encoding="utf-8"))
        return Prepared(config, logging.StreamHandler(sys.stderr))

    def apply(self, prepared: Prepared) -> None:
        """Use `prepared` from now on: its format and level too."""
        handler = prepared.handler
        config = prepared.config
        handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
        root = logging.getLogger()
        old = self.handler
        if handler is not old:
            root.addHandler(handler)
            if old is not None:
                root.removeHandler(old)
                old.close()
        root.setLevel(config.level)
        self.config = config
        self.handler = handler

    def use(self, config: LogConfig) -> None:
        """prepare + apply: at start (an OSError stops the start)."""
        self.apply(self.prepare(config))
