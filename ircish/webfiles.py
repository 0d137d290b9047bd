"""The web client's files: what a plain HTTP GET on the WebSocket port is answered with.

The files are package data (ircish/webclient/: HTML, CSS and ES modules served as they
are, no build step), read once and kept in memory: a few tens of kB. `slash.json` is made
here from the one slash table (ircish/slash.py), so the page's command list, completion
and usage hints are the table's, never a copy. Anything not in the set is 404: a request
path is looked up, never joined to a directory, so no path reaches the disk.

Every answer carries a strict Content-Security-Policy (scripts, styles and the WebSocket
from this origin only, nothing inline, no frames, no forms posting elsewhere) and an ETag,
so a reload costs a 304.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from urllib.parse import unquote

from ircish import slash

#: The folder in the package that holds the page's files.
FOLDER = "webclient"
#: The page a bare `/` means.
INDEX = "index.html"
#: What a file's type is, by the end of its name; other files are not served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}
#: 'self' in connect-src covers ws:// and wss:// to this very host and port (CSP 3).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
#: Sent with every answer on this port, files and refusals alike.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Security-Policy", CSP.encode()),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
)


@dataclass(frozen=True)
class File:
    body: bytes
    content_type: str
    etag: bytes


def _file(name: str, body: bytes) -> File:
    suffix = name[name.rfind(".") :]
    etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
    return File(body, CONTENT_TYPES[suffix], etag)


def slash_table() -> list[dict[str, object]]:
    """The slash table as the page reads it: each row's name, syntax and summary, the row
    it is an alias of, and whether the client answers it itself (`local`)."""
    return [
        {
            "name": row.name,
            "syntax": row.syntax,
            "summary": row.summary,
            "alias_of": row.alias_of,
            "local": row.local,
        }
        for row in slash.SLASH_COMMANDS.values()
    ]


@functools.cache
def files() -> dict[str, File]:
    """Every file served, by its path without the leading '/'."""
    found: dict[str, File] = {}
    root = resources.files("ircish").joinpath(FOLDER)
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = prefix + entry.name
            if entry.is_dir():
                pending.append((name + "/", entry))
            elif name[name.rfind(".") :] in CONTENT_TYPES and not entry.name.startswith("."):
                found[name] = _file(name, entry.read_bytes())
    found["slash.json"] = _file("slash.json", json.dumps(slash_table(), indent=1).encode())
    return found


def lookup(target: bytes) -> File | None:
    """The file a request target (`/app.js?v=2`) names, or None."""
    path = unquote(target.decode("latin-1").partition("?")[0].partition("#")[0])
    if not path.startswith("/"):
        return None
    path = path[1:] or INDEX
    if path.endswith("/"):
        path += INDEX
    return files().get(path)
