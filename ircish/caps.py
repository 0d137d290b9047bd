"""The capability table: the IRCv3 capabilities this server offers, what each one does, and
how CAP LS and CAP REQ are read and answered (https://ircv3.net/specs/extensions/
capability-negotiation). The one place that knows which capabilities exist: CAP LS lists
them from here, CAP REQ checks against it, the README's Capabilities section describes the
same rows, and the wire formats (ircish/events.py) read the caps that change a relay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ircish import sasl

if TYPE_CHECKING:
    from ircish.config import Config

#: The CAP LS version a client gets when it names none (or an older one): no values, one
#: line, no cap-notify messages.
CAP_301 = 301
#: CAP LS 302: values in LS, multi-line replies, and cap-notify implied.
CAP_302 = 302


@dataclass(frozen=True, slots=True)
class Capability:
    name: str
    #: What it does here, one line (the README's table says the same).
    summary: str
    #: The value shown to 302 clients in CAP LS (`sasl=PLAIN`), if any; one that depends
    #: on the config comes from `ls_words`' `values`.
    value: str = ""
    #: A client may not turn it off (cap-notify, for a 302 client, is implied).
    sticky: bool = False


#: Every capability offered, in the order CAP LS lists them: a capability is offered only
#: when the server does what it promises.
CAPABILITIES: dict[str, Capability] = {
    cap.name: cap
    for cap in (
        Capability("account-notify", "ACCOUNT lines when people who share a room log in or out"),
        Capability("account-tag", "an `account` tag on what logged-in people send"),
        Capability("away-notify", "AWAY lines when people who share a room go away or come back"),
        Capability("batch", "related lines grouped in a BATCH (labeled-response uses it)"),
        Capability(
            "cap-notify", "CAP NEW and CAP DEL when the server's capabilities change", sticky=True
        ),
        Capability(
            "draft/account-registration",
            "REGISTER makes an account named after your nick and logs you in to it",
        ),
        Capability(
            "draft/chathistory",
            "CHATHISTORY reads a room's earlier lines; no replay on join then",
        ),
        Capability(
            "draft/event-playback",
            "history holds joins, parts, quits, kicks, nick, topic and mode changes too",
        ),
        Capability("echo-message", "your own PRIVMSG, NOTICE and TAGMSG come back when relayed"),
        Capability("extended-join", "JOIN lines carry the account (`*`: none) and realname"),
        Capability("extended-monitor", "MONITOR also tells you away and realname changes"),
        Capability("invite-notify", "room operators see INVITEs sent to their room"),
        Capability("labeled-response", "the answer to a `label`-tagged command carries it"),
        Capability("message-tags", "tags on messages: msgid, client tags (+typing), TAGMSG"),
        Capability("multi-prefix", "NAMES and WHO show every status prefix (@+nick)"),
        Capability("sasl", "log in to an account while connecting (AUTHENTICATE)"),
        Capability("server-time", "a `time` tag on every relayed line: when it was said"),
        Capability("setname", "SETNAME changes your realname; people near you see it"),
        Capability("userhost-in-names", "NAMES lists nick!user@host"),
    )
}


#: Offered only while history is on (history.max_lines > 0): without it they would
#: promise answers that are always empty.
HISTORY_CAPS = frozenset({"draft/chathistory", "draft/event-playback"})


def not_offered(history: bool, registration: bool = True) -> frozenset[str]:
    """The table's caps this server leaves out, given whether its history is on and
    whether anyone may register an account."""
    hidden = frozenset() if history else HISTORY_CAPS
    return hidden if registration else hidden | {"draft/account-registration"}


def hidden(config: Config) -> frozenset[str]:
    """The table's caps `config` leaves out (history off, registration closed)."""
    return not_offered(config.history.enabled, config.accounts.registration != "closed")


def values(config: Config) -> dict[str, str]:
    """The values of the caps whose value is the config's: sasl's mechanisms, and what
    account registration asks (draft/account-registration)."""
    settings = config.accounts
    registration = [
        word
        for word, on in (
            ("before-connect", settings.register_before_connect),
            ("email-required", settings.email_required),
        )
        if on
    ]
    return {
        "sasl": ",".join(mechanisms(config)),
        "draft/account-registration": ",".join(registration),
    }


def mechanisms(config: Config) -> tuple[str, ...]:
    """The SASL mechanisms offered: EXTERNAL only where TLS asks for client certificates."""
    tls = config.tls
    return sasl.mechanisms(tls is not None and tls.client_ca is not None)


def announcements(old: Config, new: Config, version: int) -> tuple[list[str], list[str]]:
    """After a reload, what a cap-notify client of `version` is told: the CAP NEW words
    (caps now offered, and caps whose value changed, with it) and the CAP DEL names."""
    before = ls_words(version, hidden(old), values(old))
    after = ls_words(version, hidden(new), values(new))
    gone = {word.partition("=")[0] for word in before} - {word.partition("=")[0] for word in after}
    return [word for word in after if word not in before], sorted(gone)


@dataclass(frozen=True, slots=True)
class Request:
    """A CAP REQ read against the table: the caps to add and to remove, or why not."""

    add: frozenset[str]
    remove: frozenset[str]
    #: Unknown or not allowed: the whole request is refused (NAK), nothing changes.
    refused: bool


def read_request(text: str, version: int, hidden: frozenset[str] = frozenset()) -> Request:
    """`CAP REQ :multi-prefix -echo-message`: all or nothing. A name the table does not have
    (or that is `hidden`: not offered here), or removing a cap a client may not drop,
    refuses the whole request."""
    add: set[str] = set()
    remove: set[str] = set()
    for word in text.split():
        removing = word.startswith("-")
        name = word[1:] if removing else word
        cap = CAPABILITIES.get(name) if name not in hidden else None
        if cap is None or (removing and cap.sticky and version >= CAP_302):
            return Request(frozenset(), frozenset(), True)
        (remove if removing else add).add(name)
    if not add and not remove:
        return Request(frozenset(), frozenset(), True)
    return Request(frozenset(add), frozenset(remove - add), False)


def ls_words(
    version: int, hidden: frozenset[str] = frozenset(), values: Mapping[str, str] | None = None
) -> list[str]:
    """What CAP LS lists: names, with their values for 302 clients (`values` gives those
    that depend on the config: sasl's mechanisms); not the `hidden`."""
    words = []
    for cap in CAPABILITIES.values():
        if cap.name in hidden:
            continue
        value = (values or {}).get(cap.name, cap.value)
        words.append(f"{cap.name}={value}" if value and version >= CAP_302 else cap.name)
    return words


def implied(version: int) -> frozenset[str]:
    """Caps a client has without asking: cap-notify for a 302 client (the spec's rule)."""
    return frozenset({"cap-notify"}) if version >= CAP_302 else frozenset()


def reply_lines(words: Iterable[str], budget: int) -> list[str]:
    """`words` joined into lines of at most `budget` bytes (a 302 client's multi-line LS)."""
    lines: list[str] = []
    current = ""
    for word in words:
        joined = f"{current} {word}" if current else word
        if current and len(joined.encode()) > budget:
            lines.append(current)
            current = word
        else:
            current = joined
    lines.append(current)
    return lines
