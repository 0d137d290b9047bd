"""IRC wire protocol: the `Message` value, parsing and formatting of lines, numerics.

Every input the server takes and every output it sends is one `Message`;
this module is the only place that knows how a message looks on the wire
(modern.ircdocs.horse "Message format"). Numerics are named here once and
nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Bytes a message may never carry inside a parameter: they would end the line
# early or smuggle a second command into another client's stream.
FORBIDDEN_CHARS = "\r\n\0"


def has_forbidden(text: str) -> bool:
    """True if `text` has CR, LF or NUL. (Three `in` tests: this runs for every
    parameter of every formatted message, and a generator costs several times more.)"""
    return "\r" in text or "\n" in text or "\0" in text


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
        """Format without the line ending. Raises ProtocolError on unsafe text."""
        parts = []
        if self.prefix:
            if " " in self.prefix or has_forbidden(self.prefix):
                raise ProtocolError(f"prefix of {self.command} has a space, CR, LF or NUL")
            parts.append(":" + self.prefix)
        parts.append(self.command)
        last = len(self.params) - 1
        for i, p in enumerate(self.params):
            if has_forbidden(p):
                raise ProtocolError(f"parameter {i} of {self.command} contains CR, LF or NUL")
            if i == last and (not p or " " in p or p[0] == ":"):
                parts.append(":" + p)
            elif not p or " " in p or p[0] == ":":
                raise ProtocolError(
                    f"middle parameter {i} of {self.command} is empty or has a space"
                )
            else:
                parts.append(p)
        return " ".join(parts)

    def to_bytes(self, limit: int = DEFAULT_LINE_BYTES) -> bytes:
        """The wire form with CRLF, cut at a UTF-8 boundary to fit `limit` bytes."""
        data = self.to_line().encode("utf-8")
        if len(data) > limit - 2:
            data = truncate_utf8(data, limit - 2)
        return data + b"\r\n"


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


def parse(line: str) -> Message:
    """Parse one line (without CR/LF). Raises ProtocolError if it is not IRC."""
    if has_forbidden(line):
        raise ProtocolError("line contains CR, LF or NUL")
    rest = line.lstrip(" ")
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw_tags, _, rest = rest[1:].partition(" ")
        for item in raw_tags.split(";"):
            if item:
                key, _, value = item.partition("=")
                tags[key] = value
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
RPL_INVITING = "341"
RPL_VERSION = "351"
RPL_WHOREPLY = "352"
RPL_NAMREPLY = "353"
RPL_ENDOFNAMES = "366"
RPL_BANLIST = "367"
RPL_ENDOFWHOWAS = "369"
RPL_ENDOFBANLIST = "368"
RPL_MOTD = "372"
RPL_MOTDSTART = "375"
RPL_ENDOFMOTD = "376"
RPL_YOUREOPER = "381"
RPL_TIME = "391"
RPL_HELPSTART = "704"
RPL_HELPTXT = "705"
RPL_ENDOFHELP = "706"

ERR_NOSUCHNICK = "401"
ERR_NOSUCHCHANNEL = "403"
ERR_CANNOTSENDTOCHAN = "404"
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
ERR_BANLISTFULL = "478"
ERR_NOPRIVILEGES = "481"
ERR_CHANOPRIVSNEEDED = "482"
ERR_NOOPERHOST = "491"
ERR_UMODEUNKNOWNFLAG = "501"
ERR_USERSDONTMATCH = "502"
ERR_HELPNOTFOUND = "524"
ERR_INVALIDKEY = "525"
ERR_INVALIDMODEPARAM = "696"
ERR_INVALIDCAPCMD = "410"
ERR_UNKNOWNERROR = "400"


def is_error_numeric(command: str) -> bool:
    return len(command) == 3 and command.isdigit() and command[0] in "45"
