"""IRC wire protocol: the `Message` value, parsing and formatting of lines, numerics.

Every input the server takes and every output it sends is one `Message`;
this module is the only place that knows how a message looks on the wire
(modern.ircdocs.horse "Message format"). Numerics are named here once and
nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ircish.sasl import ALL_MECHANISMS

# Bytes a message may never carry inside a parameter: they would end the line
# early or smuggle a second command into another client's stream.
FORBIDDEN_CHARS = "\r\n\0"


def has_forbidden(text: str) -> bool:
    """True if `text` has CR, LF or NUL. (Three `in` tests: this runs for every
    parameter of every formatted message, and a generator costs several times more.)"""
    return "\r" in text or "\n" in text or "\0" in text


#: Commands whose last parameter is free text, by the first index that text can have: there
#: it is always sent in trailing form (`PRIVMSG #r :hi`, `PART #r :bye`, but `PART #r`).
#: Numerics do the same from index 1, after their target.
TRAILING_FROM = {
    "PRIVMSG": 1,
    "NOTICE": 1,
    "TOPIC": 1,
    "PART": 1,
    "QUIT": 0,
    "KICK": 2,
    "AWAY": 0,
    "ERROR": 0,
    "WALLOPS": 0,
    "KILL": 1,
    "SETNAME": 0,
    "FAIL": 2,
    "WARN": 2,
    "NOTE": 2,
    "CAP": 2,
}

#: Lines are capped at 512 bytes including CRLF (RFC 2812 2.3).
DEFAULT_LINE_BYTES = 512


class ProtocolError(ValueError):
    """A line that is not a valid IRC message."""


class IRCError(Exception):
    """A refusal: the sender gets the numeric reply `numeric` with `params` (after its nick).

    Raised by handlers and by the `World`/`Room` methods that check and act under one
    lock; the dispatcher turns it into the reply line.
    """

    def __init__(self, numeric: str, *params: str) -> None:
        super().__init__(numeric, *params)
        self.numeric = numeric
        self.params = params


@dataclass(frozen=True, slots=True)
class Message:
    """One IRC message: ``[@tags] [:prefix] COMMAND param param :trailing``."""

    command: str
    params: tuple[str, ...] = ()
    prefix: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __init__(
        self,
        command: str,
        params: list[str] | tuple[str, ...] = (),
        prefix: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        object.__setattr__(self, "command", command)
        object.__setattr__(self, "params", tuple(params))
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "tags", tags or {})

    @property
    def source_nick(self) -> str | None:
        """The nick part of ``nick!user@host``, or the server name."""
        if self.prefix is None:
            return None
        return self.prefix.split("!", 1)[0]

    def param(self, index: int, default: str = "") -> str:
        return self.params[index] if index < len(self.params) else default

    def to_line(self) -> str:
        """Format without the line ending, tags included. Raises ProtocolError on unsafe text."""
        if self.tags:
            return format_tags(self.tags) + " " + self.body()
        return self.body()

    def body(self) -> str:
        """The line after the tags: ``[:prefix] COMMAND params``. Raises ProtocolError."""
        parts = []
        if self.prefix:
            if " " in self.prefix or has_forbidden(self.prefix):
                raise ProtocolError(f"prefix of {self.command} has a space, CR, LF or NUL")
            parts.append(":" + self.prefix)
        parts.append(self.command)
        last = len(self.params) - 1
        # Text-bearing commands and numerics always send their last parameter in trailing
        # form (`PRIVMSG #r :hi`), as ngIRCd, InspIRCd and ergo do: some clients (ii) read
        # only a trailing parameter as the text.
        text_from = 1 if self.command.isdigit() else TRAILING_FROM.get(self.command, last + 1)
        always = last >= text_from
        for i, p in enumerate(self.params):
            if has_forbidden(p):
                raise ProtocolError(f"parameter {i} of {self.command} contains CR, LF or NUL")
            if i == last and (always or not p or " " in p or p[0] == ":"):
                parts.append(":" + p)
            elif not p or " " in p or p[0] == ":":
                raise ProtocolError(
                    f"middle parameter {i} of {self.command} is empty or has a space"
                )
            else:
                parts.append(p)
        return " ".join(parts)

    def to_bytes(self, limit: int = DEFAULT_LINE_BYTES) -> bytes:
        """The wire form with CRLF. The part after the tags is cut at a UTF-8 boundary to fit
        `limit` bytes with its CRLF; the tags do not count against it (IRCv3 message-tags:
        they have their own budget, `MAX_TAG_BYTES`)."""
        data = self.body().encode("utf-8")
        if len(data) > limit - 2:
            data = truncate_utf8(data, limit - 2)
        if self.tags:
            return format_tags(self.tags).encode("utf-8") + b" " + data + b"\r\n"
        return data + b"\r\n"


# -- message tags (https://ircv3.net/specs/extensions/message-tags) ---------------------------

#: Bytes of tag data (without the leading '@' and the space after) a client may send, and
#: a server may add: the spec's 4094 each, 8191 in all with '@' and the spaces.
MAX_CLIENT_TAG_BYTES = 4094
MAX_TAG_BYTES = 8191

_TAG_ESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_TAG_ESCAPE_TABLE = str.maketrans(_TAG_ESCAPES)
_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def escape_tag_value(value: str) -> str:
    """A tag value as it goes on the wire: ';', space, backslash, CR and LF escaped."""
    return value.translate(_TAG_ESCAPE_TABLE)


def unescape_tag_value(raw: str) -> str:
    """The value a wire tag stands for. An unknown escape stands for its character ('\\b'
    is 'b'), and a lone backslash at the end is dropped, as the spec says."""
    if "\\" not in raw:
        return raw
    out = []
    chars = iter(raw)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        out.append(_TAG_UNESCAPES.get(following, following))
    return "".join(out)


_TAG_KEY = re.compile(r"\+?[A-Za-z0-9./-]+")


def valid_tag_key(key: str) -> bool:
    """``[+][vendor/]name``: letters, digits, '-', and '.' or '/' for the vendor part."""
    return _TAG_KEY.fullmatch(key) is not None


def format_tags(tags: dict[str, str]) -> str:
    """``@key=value;key2`` (a key with an empty value is sent without '='). Raises
    ProtocolError for a key that cannot be sent."""
    items = []
    for key, value in tags.items():
        if not valid_tag_key(key):
            raise ProtocolError(f"tag key {key!r} cannot be sent")
        items.append(f"{key}={escape_tag_value(value)}" if value else key)
    return "@" + ";".join(items)


def numeric_lines(
    source: str,
    numeric: str,
    target: str,
    params: list[str],
    words: list[str],
    sep: str = " ",
) -> list[Message]:
    """A numeric whose last parameter is a list of words (353 NAMES, 319 WHOIS rooms, 303
    ISON; MONITOR's comma lists with `sep=","`), as several lines that each fit
    `DEFAULT_LINE_BYTES`, cut between words, never inside one. At least one line, even for
    no words (ISON answers an empty 303)."""
    head = f":{source} {numeric} {target} {' '.join(params)} :".replace("  ", " ")
    budget = DEFAULT_LINE_BYTES - 2 - len(head.encode("utf-8"))
    lines: list[Message] = []
    batch: list[str] = []
    used = 0
    for word in words:
        size = len(word.encode("utf-8")) + (1 if batch else 0)
        if batch and used + size > budget:
            lines.append(Message(numeric, [target, *params, sep.join(batch)], source))
            batch, used = [], 0
            size -= 1
        batch.append(word)
        used += size
    if batch or not lines:
        lines.append(Message(numeric, [target, *params, sep.join(batch)], source))
    return lines


def truncate_utf8(data: bytes, limit: int) -> bytes:
    """Cut `data` to at most `limit` bytes without splitting a UTF-8 sequence."""
    if len(data) <= limit:
        return data
    cut = limit
    # Step back over continuation bytes (10xxxxxx) to the start of a character.
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return data[:cut]


def clip(text: str, limit: int) -> str:
    """Cut user text to `limit` UTF-8 bytes at a character boundary (TOPICLEN, AWAYLEN)."""
    return truncate_utf8(text.encode("utf-8"), limit).decode("utf-8")


def parse_tags(raw: str) -> dict[str, str]:
    """`key=value;key2` (without the '@') as a dict, values unescaped; a repeated key: the
    last one wins."""
    tags: dict[str, str] = {}
    for item in raw.split(";"):
        if item:
            key, _, value = item.partition("=")
            tags[key] = unescape_tag_value(value)
    return tags


def parse(line: str) -> Message:
    """Parse one line (without CR/LF). Raises ProtocolError if it is not IRC."""
    if has_forbidden(line):
        raise ProtocolError("line contains CR, LF or NUL")
    rest = line.lstrip(" ")
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw_tags, _, rest = rest[1:].partition(" ")
        tags = parse_tags(raw_tags)
        rest = rest.lstrip(" ")
    prefix = None
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        if not prefix:
            raise ProtocolError("empty prefix")
        rest = rest.lstrip(" ")
    trailing = None
    if " :" in rest:
        rest, trailing = rest.split(" :", 1)
    elif rest.startswith(":"):
        rest, trailing = "", rest[1:]
    # Only the ASCII space separates parameters (RFC 2812 2.3.1); str.split()
    # would also split on tabs and Unicode spaces that to_line() keeps.
    words = [word for word in rest.split(" ") if word]
    if not words:
        raise ProtocolError("no command")
    word = words[0]
    # ASCII first: "jo\u0131n".upper() (dotless i) would otherwise become JOIN.
    if not (word.isascii() and (word.isalpha() or (len(word) == 3 and word.isdigit()))):
        raise ProtocolError(f"invalid command {word!r}")
    command = word.upper()
    params = words[1:]
    if trailing is not None:
        params.append(trailing)
    return Message(command, params, prefix, tags)


_ASCII_UPPER_TO_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def casefold(name: str) -> str:
    """CASEMAPPING=ascii (advertised in 005): only A-Z fold to a-z."""
    return name.translate(_ASCII_UPPER_TO_LOWER)


def safe_param(text: str) -> str:
    """User text echoed back as a middle parameter: '*' if it can't be one."""
    if not text or " " in text or text.startswith(":") or has_forbidden(text):
        return "*"
    return text


NICK_SPECIALS = "[]\\`_^{|}"


def valid_nick(nick: str, max_length: int | None = None) -> bool:
    """RFC 2812 2.3.1 nick: a letter or special first, then letters, digits, specials, '-'.
    `max_length` is the server's NICKLEN; None checks the characters alone (a client before
    it has heard the server's limit)."""
    too_long = max_length is not None and len(nick) > max_length
    if not nick or too_long or not nick.isascii():
        return False
    if not (nick[0].isalpha() or nick[0] in NICK_SPECIALS):
        return False
    return all(c.isalnum() or c in NICK_SPECIALS or c == "-" for c in nick)


#: The services' nicks (the server's pseudo-users, ircish/accounts.py and commands/), which
#: clients and the slash table address too.
NICKSERV = "NickServ"
CHANSERV = "ChanServ"

#: Commands whose last parameter is a password (REGISTER: <account> <email> <password>).
_SECRET_LAST_PARAM = frozenset({"PASS", "OPER", "REGISTER"})


def to_nickserv(msg: Message) -> bool:
    """`msg` is said to NickServ: a command for it, which may hold a password."""
    return msg.command in ("PRIVMSG", "NOTICE") and casefold(msg.param(0)) == casefold(NICKSERV)


def redacted(msg: Message) -> str | None:
    """`msg` as a log may show it when it holds a password (`PASS ****`); None when it
    holds none (log it as it is). A log must never hold a password: logs get pasted into
    bug reports. Used by the server's log of a failed handler and ircish-client's --debug."""
    command = msg.command
    if command in _SECRET_LAST_PARAM and msg.params:
        return " ".join([command, *msg.params[:-1], "****"])
    if command == "AUTHENTICATE" and msg.param(0) not in ("+", "*", *ALL_MECHANISMS):
        return "AUTHENTICATE ****"  # PLAIN's payload is the password, barely hidden in base64
    if to_nickserv(msg) and " " in msg.param(1).strip():
        return f"{command} {msg.param(0)} :{msg.param(1).split()[0]} ****"
    if command == "NS" and len(msg.params) > 1:
        return f"NS {msg.params[0]} ****"
    return None


# Numerics (modern.ircdocs.horse "Numerics"). One name per number, used everywhere.
RPL_WELCOME = "001"
RPL_YOURHOST = "002"
RPL_CREATED = "003"
RPL_MYINFO = "004"
RPL_ISUPPORT = "005"
RPL_UMODEIS = "221"
RPL_LUSERCLIENT = "251"
RPL_LUSEROP = "252"
RPL_LUSERUNKNOWN = "253"
RPL_LUSERCHANNELS = "254"
RPL_LUSERME = "255"
RPL_LOCALUSERS = "265"
RPL_GLOBALUSERS = "266"
RPL_AWAY = "301"
RPL_USERHOST = "302"
RPL_ISON = "303"
RPL_UNAWAY = "305"
RPL_NOWAWAY = "306"
RPL_WHOISUSER = "311"
RPL_WHOISSERVER = "312"
RPL_WHOISOPERATOR = "313"
RPL_WHOWASUSER = "314"
RPL_ENDOFWHO = "315"
RPL_WHOISIDLE = "317"
RPL_ENDOFWHOIS = "318"
RPL_WHOISCHANNELS = "319"
RPL_LISTSTART = "321"
RPL_LIST = "322"
RPL_LISTEND = "323"
RPL_CHANNELMODEIS = "324"
RPL_CREATIONTIME = "329"
RPL_NOTOPIC = "331"
RPL_TOPIC = "332"
RPL_TOPICWHOTIME = "333"
RPL_WHOISACCOUNT = "330"
RPL_WHOISBOT = "335"
RPL_INVITELIST = "336"
RPL_ENDOFINVITELIST = "337"
RPL_INVITING = "341"
RPL_INVEXLIST = "346"
RPL_ENDOFINVEXLIST = "347"
RPL_EXCEPTLIST = "348"
RPL_ENDOFEXCEPTLIST = "349"
RPL_VERSION = "351"
RPL_WHOREPLY = "352"
RPL_NAMREPLY = "353"
RPL_WHOSPCRPL = "354"
RPL_LINKS = "364"
RPL_ENDOFLINKS = "365"
RPL_ENDOFNAMES = "366"
RPL_BANLIST = "367"
RPL_ENDOFBANLIST = "368"
RPL_ENDOFWHOWAS = "369"
RPL_INFO = "371"
RPL_MOTD = "372"
RPL_ENDOFINFO = "374"
RPL_MOTDSTART = "375"
RPL_ENDOFMOTD = "376"
RPL_YOUREOPER = "381"
RPL_REHASHING = "382"
RPL_TIME = "391"
RPL_MONONLINE = "730"
RPL_MONOFFLINE = "731"
RPL_MONLIST = "732"
RPL_ENDOFMONLIST = "733"
ERR_MONLISTFULL = "734"
RPL_HELPSTART = "704"
# SASL (IRCv3 sasl-3.1).
RPL_LOGGEDIN = "900"
RPL_LOGGEDOUT = "901"
ERR_NICKLOCKED = "902"
RPL_SASLSUCCESS = "903"
ERR_SASLFAIL = "904"
ERR_SASLTOOLONG = "905"
ERR_SASLABORTED = "906"
ERR_SASLALREADY = "907"
RPL_SASLMECHS = "908"
RPL_HELPTXT = "705"
RPL_ENDOFHELP = "706"

ERR_NOSUCHNICK = "401"
ERR_NOSUCHSERVER = "402"
ERR_NOSUCHCHANNEL = "403"
ERR_CANNOTSENDTOCHAN = "404"
ERR_TOOMANYCHANNELS = "405"
ERR_WASNOSUCHNICK = "406"
ERR_TOOMANYTARGETS = "407"
ERR_NORECIPIENT = "411"
ERR_NOTEXTTOSEND = "412"
ERR_INPUTTOOLONG = "417"
ERR_UNKNOWNCOMMAND = "421"
ERR_NOMOTD = "422"
ERR_NONICKNAMEGIVEN = "431"
ERR_ERRONEUSNICKNAME = "432"
ERR_NICKNAMEINUSE = "433"
ERR_BANNICKCHANGE = "435"
ERR_USERNOTINCHANNEL = "441"
ERR_NOTONCHANNEL = "442"
ERR_USERONCHANNEL = "443"
ERR_NOTREGISTERED = "451"
ERR_NEEDMOREPARAMS = "461"
ERR_ALREADYREGISTERED = "462"
ERR_PASSWDMISMATCH = "464"
ERR_CHANNELISFULL = "471"
ERR_UNKNOWNMODE = "472"
ERR_INVITEONLYCHAN = "473"
ERR_BANNEDFROMCHAN = "474"
ERR_BADCHANNELKEY = "475"
ERR_BADCHANMASK = "476"
#: Other servers': "you must be identified" to talk there (477 NEEDREGGEDNICK on a room,
#: 486 on a user), and 531 "cannot send to user"; ircish-client reads them as refusals.
ERR_NEEDREGGEDNICK = "477"
ERR_BANLISTFULL = "478"
ERR_NOPRIVILEGES = "481"
ERR_CHANOPRIVSNEEDED = "482"
ERR_NONONREG = "486"
ERR_NOOPERHOST = "491"
ERR_UMODEUNKNOWNFLAG = "501"
ERR_USERSDONTMATCH = "502"
ERR_HELPNOTFOUND = "524"
ERR_INVALIDKEY = "525"
ERR_CANTSENDTOUSER = "531"
ERR_INVALIDMODEPARAM = "696"
ERR_INVALIDCAPCMD = "410"
ERR_UNKNOWNERROR = "400"


def is_error_numeric(command: str) -> bool:
    return len(command) == 3 and command.isdigit() and command[0] in "45"
