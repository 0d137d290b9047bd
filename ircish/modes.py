"""Modes: the one table of room and user mode letters, what parameter each takes, how a
MODE line's letters pair with their parameters (`parse_changes`) and back (`format_changes`),
the mask lists (+b +e +I) and their masks. The server enforces these letters, 005 advertises
them from here (CHANMODES, PREFIX, MODES, MAXLIST, EXCEPTS, INVEX, KEYLEN), and render.py
pairs a relayed MODE line's parameters with the same parser, so no other module knows which
letter takes what.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ircish import protocol as p
from ircish.protocol import casefold

# How a room mode letter takes its parameter (the CHANMODES classes, modern.ircdocs.horse
# "CHANMODES"), plus the member status letters of PREFIX.
STATUS = "status"  # o v: a member's status; parameter: a nick, both ways
LIST = "list"  # b e I: a mask list; with a parameter adds/removes a mask, without one lists it
ALWAYS = "always"  # k: a setting with a parameter both ways (any value removes it)
WHEN_SET = "when-set"  # l: a parameter when set, none when removed
FLAG = "flag"  # i m n s t P: on or off

#: Room mode letter -> kind. The one table; every other list of letters derives from it.
ROOM_MODES: dict[str, str] = {
    "o": STATUS,
    "v": STATUS,
    "b": LIST,
    "e": LIST,
    "I": LIST,
    "k": ALWAYS,
    "l": WHEN_SET,
    "i": FLAG,
    "m": FLAG,
    "n": FLAG,
    "s": FLAG,
    "t": FLAG,
    "P": FLAG,
}

#: +P: a permanent room. It stays when empty and survives restarts (ngIRCd, InspIRCd);
#: only server operators set or remove it (`OPER_ONLY`). Rooms from the config have it.
PERMANENT = "P"
#: Room modes only a server operator may change.
OPER_ONLY = frozenset(PERMANENT)

#: User modes: +i invisible (anyone), +o server operator (only OPER grants it), +w sent
#: WALLOPS (anyone), +B a bot (IRCv3 bot mode: anyone may say so of themselves; ISUPPORT
#: BOT=B). 221 shows them in this order.
BOT_MODE = "B"
WALLOPS_MODE = "w"
USER_MODES: dict[str, str] = {"i": FLAG, "o": FLAG, WALLOPS_MODE: FLAG, BOT_MODE: FLAG}

#: Status letter -> the prefix shown in NAMES/WHO/WHOIS, highest first.
STATUS_PREFIXES: dict[str, str] = {"o": "@", "v": "+"}

#: A new room: no messages from outside (+n), only operators set the topic (+t).
DEFAULT_ROOM_FLAGS = frozenset("nt")

#: Changes with a parameter per MODE command (ISUPPORT MODES); the rest are refused.
MAX_PARAM_CHANGES = 4
#: Entries per mask list per room: bans, and each exception list too (ISUPPORT MAXLIST).
MAX_LIST_ENTRIES = 50
#: Longest key (ISUPPORT KEYLEN) and ban mask we keep, so the relayed MODE line fits.
KEY_LENGTH = 23
MASK_LENGTH = 100
#: Largest +l: far above any real room, small enough to read at a glance.
MAX_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class MaskList:
    """What tells one mask list from another: its name in words, and the numerics that list
    it (an entry each, then the end)."""

    noun: str
    entry: str
    end: str


#: The LIST letters: +b bans, +e ban exceptions (a matching user is not banned), +I invite
#: exceptions (a matching user passes +i without an invite); modern.ircdocs.horse.
BAN = "b"
BAN_EXCEPTION = "e"
INVITE_EXCEPTION = "I"
MASK_LISTS: dict[str, MaskList] = {
    BAN: MaskList("ban", p.RPL_BANLIST, p.RPL_ENDOFBANLIST),
    BAN_EXCEPTION: MaskList("ban exception", p.RPL_EXCEPTLIST, p.RPL_ENDOFEXCEPTLIST),
    INVITE_EXCEPTION: MaskList("invite exception", p.RPL_INVEXLIST, p.RPL_ENDOFINVEXLIST),
}
assert set(MASK_LISTS) == {letter for letter, kind in ROOM_MODES.items() if kind == LIST}


@dataclass(frozen=True, slots=True)
class Change:
    """One mode change: `+o bob`, `-t`, `+b` (a list query when `arg` is None)."""

    adding: bool
    letter: str
    arg: str | None = None

    @property
    def signed(self) -> str:
        return ("+" if self.adding else "-") + self.letter

    @property
    def is_list_query(self) -> bool:
        """`MODE #room b`: show the list rather than change it."""
        return self.arg is None and ROOM_MODES.get(self.letter) == LIST


@dataclass(frozen=True, slots=True)
class ParsedModes:
    """A mode string read against a table: what to do, and what could not be read."""

    changes: list[Change]
    #: Letters the table does not have, each once, in order (472 / 501).
    unknown: list[str]
    #: Changes that needed a parameter and had none, e.g. "+o", each once (461).
    missing: list[str]


def takes_param(kind: str, adding: bool) -> bool:
    return kind in (STATUS, LIST, ALWAYS) or (kind == WHEN_SET and adding)


def _letters(kinds: tuple[str, ...]) -> str:
    return "".join(sorted(letter for letter, kind in ROOM_MODES.items() if kind in kinds))


# What the welcome burst advertises, worked out once from the tables above.
#: 004: user modes, room modes, room modes that take a parameter.
MYINFO_LETTERS = (
    "".join(sorted(USER_MODES)),
    "".join(sorted(ROOM_MODES)),
    _letters((STATUS, LIST, ALWAYS, WHEN_SET)),
)
#: ISUPPORT CHANMODES=A,B,C,D: list modes, always a parameter, a parameter when set, flags.
CHANMODES = ",".join(_letters((kind,)) for kind in (LIST, ALWAYS, WHEN_SET, FLAG))
#: ISUPPORT MAXLIST=b:50,e:50,I:50: each list has its own room.
MAXLIST = ",".join(f"{letter}:{MAX_LIST_ENTRIES}" for letter in MASK_LISTS)
#: ISUPPORT PREFIX=(ov)@+.
PREFIX = f"({''.join(STATUS_PREFIXES)}){''.join(STATUS_PREFIXES.values())}"


def parse_changes(
    modestring: str, args: Sequence[str], table: dict[str, str] = ROOM_MODES
) -> ParsedModes:
    """Pair `+ov-b` with `alice bob x!*@*`: each letter takes the next argument it needs.

    A leading letter with no sign means '+'. A list letter without an argument is a
    query; `-k` without one still removes the key. Surplus arguments are ignored.
    """
    changes: list[Change] = []
    unknown: list[str] = []
    missing: list[str] = []
    queue = list(args)
    adding = True
    for letter in modestring:
        if letter in "+-":
            adding = letter == "+"
            continue
        kind = table.get(letter)
        if kind is None:
            if letter not in unknown:
                unknown.append(letter)
            continue
        if not takes_param(kind, adding):
            changes.append(Change(adding, letter))
        elif queue:
            changes.append(Change(adding, letter, queue.pop(0)))
        elif kind == LIST or (kind == ALWAYS and not adding):
            changes.append(Change(adding, letter))
        elif (signed := ("+" if adding else "-") + letter) not in missing:
            # Once each, like unknown letters: `+oooo...` must not earn a reply per letter.
            missing.append(signed)
    return ParsedModes(changes, unknown, missing)


def format_changes(changes: Sequence[Change]) -> list[str]:
    """The MODE parameters for `changes`: one mode string (signs only where they flip),
    then the arguments in order: [+ov-b, alice, bob, x!*@*]."""
    letters: list[str] = []
    args: list[str] = []
    sign = ""
    for change in changes:
        want = "+" if change.adding else "-"
        if want != sign:
            letters.append(want)
            sign = want
        letters.append(change.letter)
        if change.arg is not None:
            args.append(change.arg)
    return ["".join(letters), *args] if letters else []


def split_changes(changes: Sequence[Change], budget: int) -> list[list[Change]]:
    """`changes` in as few groups as possible whose MODE parameters fit in `budget` bytes
    (one group unless lengths are configured far past the defaults)."""
    groups: list[list[Change]] = []
    used = budget + 1
    for change in changes:
        # Worst case per change: a sign, the letter, a space and the argument.
        size = 3 + (len(change.arg.encode()) + 1 if change.arg is not None else 0)
        if used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(change)
        used += size
    return groups


def valid_key(key: str) -> bool:
    """A +k key: it travels in JOIN's comma-separated key list, so no commas or spaces."""
    return 0 < len(key) <= KEY_LENGTH and key.isprintable() and not any(c in ", :" for c in key)


def parse_limit(text: str) -> int | None:
    """A +l argument as a number from 1 to MAX_LIMIT, or None."""
    if not (text.isascii() and text.isdigit()):
        return None
    limit = int(text)
    return limit if 0 < limit <= MAX_LIMIT else None


def describe_flags(flags: set[str] | frozenset[str], key: str | None, limit: int | None) -> str:
    """'+klnt' style mode string of a room's settings (parameters not included)."""
    letters = sorted(flags | ({"k"} if key else set()) | ({"l"} if limit else set()))
    return "+" + "".join(letters)


# Ban masks ------------------------------------------------------------------------------


def normalize_mask(mask: str) -> str:
    """Complete a ban mask to nick!user@host, an empty part meaning any:
    `bob` -> `bob!*@*`, `*@host` and `@host` -> `*!*@host`."""
    if "!" not in mask and "@" not in mask:
        return f"{mask}!*@*"
    nick, _, rest = mask.partition("!") if "!" in mask else ("*", "!", mask)
    user, _, host = rest.partition("@")
    return f"{nick or '*'}!{user or '*'}@{host or '*'}"


def mask_pattern(mask: str) -> re.Pattern[str]:
    """A compiled matcher for a casefolded `nick!user@host` glob, `*` and `?` only (`[` is
    a nick character, so it is escaped as a one-letter class). fnmatch.translate, because
    its patterns match in linear time: a naive `.*` per star lets a mask like `*a*a*...*z`
    backtrack exponentially, holding the GIL and so stopping every thread."""
    return re.compile(fnmatch.translate(casefold(mask).replace("[", "[[]")))
