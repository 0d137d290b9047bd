"""Connection registration and liveness: CAP PASS NICK USER PING PONG QUIT."""

from __future__ import annotations

import hmac
import logging
import re

from ircish import __version__, caps, modes
from ircish import protocol as p
from ircish.accounts import SERVICES
from ircish.commands import Context, IRCError, command
from ircish.protocol import Message, casefold, safe_param
from ircish.world import valid_nick

from .accounts import guard_nick, pass_login
from .history import missed_private_lines
from .presence import REALNAME_LENGTH
from .queries import USERLEN, isupport_replies, lusers_replies, motd_replies

log = logging.getLogger(__name__)

_USERNAME_JUNK = re.compile(r"[^A-Za-z0-9._-]")


def clean_username(text: str) -> str:
    """The user part of nick!user@host: safe characters only, at most USERLEN."""
    return _USERNAME_JUNK.sub("", text)[:USERLEN] or "user"


def welcome(ctx: Context) -> None:
    """The burst after registration: 001-005, LUSERS, MOTD."""
    server = ctx.server
    nick = ctx.user.nick
    ctx.reply(
        p.RPL_WELCOME, f"Welcome to the {ctx.config.server.network} Network, {ctx.user.prefix}"
    )
    ctx.reply(p.RPL_YOURHOST, f"Your host is {server.name}, running version ircish-{__version__}")
    ctx.reply(p.RPL_CREATED, f"This server was created {server.created_text}")
    ctx.reply(p.RPL_MYINFO, server.name, f"ircish-{__version__}", *modes.MYINFO_LETTERS)
    isupport_replies(ctx)
    lusers_replies(ctx)
    motd_replies(ctx)
    if ctx.session.is_text:
        ctx.send(
            Message(
                "NOTICE",
                [nick, "Type /help for commands, /list for rooms, /join #room to join."],
                server.name,
            )
        )


def try_register(ctx: Context) -> None:
    """Finish registration once NICK and USER (text sessions: NICK) are in and CAP is done."""
    user, session = ctx.user, ctx.session
    if user.registered or user.nick is None or session.cap_negotiating:
        return
    if not user.username:
        if not session.is_text:
            return
        user.username = clean_username(user.nick)
        user.realname = user.nick
    expected = ctx.config.server.password
    if expected is None and session.password is not None and ":" in session.password:
        # No server password: PASS account:password logs in (clients with neither SASL
        # nor NickServ habits). Checked once, here.
        if user.account is None:
            pass_login(ctx, session.password)
        session.password = None
    if expected is not None:
        if session.password is None and session.is_text:
            # A person who has not given it yet is told how, and may still (PASS registers).
            ctx.reply(
                p.ERR_PASSWDMISMATCH,
                "This server needs a password: type /pass <password> (your nick is kept)",
            )
            return
        given = (session.password or "").encode()
        if not hmac.compare_digest(given, expected.encode()):
            ctx.reply(p.ERR_PASSWDMISMATCH, "Password incorrect")
            log.info("%s: wrong server password", ctx.conn)
            ctx.disconnect("Bad password", "Bad password")
            return
    missed = missed_private_lines(ctx)  # logged in while connecting (SASL, PASS)

    def greet() -> None:
        welcome(ctx)
        guard_nick(ctx)
        for line in missed:
            ctx.send(line)
        ctx.flush()

    try:
        ctx.world.mark_registered(user, greet)
    except IRCError as exc:  # (a cluster whose Redis cannot be reached: not registered)
        ctx.disconnect("Could not register", f"Could not register: {exc.params[-1]}")
        raise
    log.info(
        "%s registered: %s (%s%s)",
        ctx.conn,
        user.prefix,
        "text" if session.is_text else "IRC",
        f", account {user.account}" if user.account else "",
    )


@command("CAP", min_params=1, pre_registration=True, syntax="<LS|LIST|REQ|END> [:<caps>]")
def cap(ctx: Context, msg: Message) -> None:
    """Capability negotiation: CAP LS [302], CAP REQ :<caps>, CAP LIST, CAP END."""
    # CAP LS/LIST/REQ/END: https://ircv3.net/specs/extensions/capability-negotiation
    sub = msg.params[0].upper()
    session = ctx.session
    if sub in ("LS", "REQ") and not ctx.user.registered:
        session.cap_negotiating = True  # registration waits for CAP END
    if sub == "LS":
        version = msg.param(1)
        if version.isdigit() and int(version) > session.cap_version:
            # Never downgraded: a 302 client that sends a bare CAP LS stays 302.
            session.cap_version = min(int(version), caps.CAP_302)
            session.set_caps(session.caps | caps.implied(session.cap_version))
        config = ctx.config
        words = caps.ls_words(session.cap_version, caps.hidden(config), caps.values(config))
        cap_list(ctx, "LS", words)
    elif sub == "LIST":
        cap_list(ctx, "LIST", sorted(session.caps))
    elif sub == "REQ":
        wanted = msg.param(1)
        request = caps.read_request(wanted, session.cap_version, caps.hidden(ctx.config))
        answer = "NAK" if request.refused else "ACK"
        if not request.refused:
            session.set_caps((session.caps | request.add) - request.remove)
        # The request's own words, as given (the spec's ACK and NAK echo them).
        ctx.send(Message("CAP", [ctx.user.nick or "*", answer, wanted], ctx.server.name))
    elif sub == "END":
        session.cap_negotiating = False
        if session.sasl is not None:  # sasl-3.1: registration ends an open exchange
            session.sasl = None
            ctx.reply(p.ERR_SASLABORTED, "SASL authentication aborted")
        try_register(ctx)
    else:
        raise IRCError(p.ERR_INVALIDCAPCMD, safe_param(msg.params[0]), "Invalid CAP subcommand")


def cap_list(ctx: Context, sub: str, words: list[str]) -> None:
    """`CAP nick LS :words`; to a 302 client, lines that would pass 512 bytes are split
    as `CAP nick LS * :words` followed by the last line without the `*`."""
    nick = ctx.user.nick or "*"
    head = len(f":{ctx.server.name} CAP {nick} {sub} * :".encode())
    lines = caps.reply_lines(words, p.DEFAULT_LINE_BYTES - 2 - head)
    if ctx.session.cap_version < caps.CAP_302:
        lines = [" ".join(words)]  # one line, whatever its length: 301 knows no other
    for index, line in enumerate(lines):
        more = ["*"] if index < len(lines) - 1 else []
        ctx.send(Message("CAP", [nick, sub, *more, line], ctx.server.name))


@command("PASS", min_params=1, pre_registration=True, syntax="<password>")
def pass_(ctx: Context, msg: Message) -> None:
    """Give the server password (before NICK/USER)."""
    if ctx.user.registered:
        raise IRCError(p.ERR_ALREADYREGISTERED, "You may not reregister")
    ctx.session.password = msg.params[0]
    if ctx.session.is_text:
        try_register(ctx)  # a person told to give it after /nick


@command("NICK", pre_registration=True, syntax="<nick>", cost=2)
def nick(ctx: Context, msg: Message) -> None:
    """Choose or change your nick."""
    new = msg.param(0)
    if not new:
        raise IRCError(p.ERR_NONICKNAMEGIVEN, "No nickname given")
    if not valid_nick(new, ctx.config.limits.nick_length):
        raise IRCError(
            p.ERR_ERRONEUSNICKNAME,
            safe_param(new),
            f"Erroneous nickname (letters, digits, -[]\\`_^{{|}}, at most "
            f"{ctx.config.limits.nick_length} characters, not starting with a digit or -)",
        )
    user = ctx.user
    if casefold(new) in SERVICES:
        raise IRCError(p.ERR_NICKNAMEINUSE, new, "Nickname is reserved for services")
    if user.registered:
        if new == user.nick:
            return
        if casefold(new) in user.barred_nicks and not ctx.world.owner_of(user, new):
            # Renamed off it once: a squatter may not take it back over and over, each
            # time with a new grace period.
            raise IRCError(
                p.ERR_NICKNAMEINUSE,
                new,
                "Nickname is reserved for its account: log in first (/msg NickServ IDENTIFY)",
            )
        if not ctx.world.rename_user(user, new):
            raise IRCError(p.ERR_NICKNAMEINUSE, new, "Nickname is already in use")
        guard_nick(ctx)
        return
    ctx.session.wanted_nick = new  # REGISTER * names it, even if someone else holds it
    if not ctx.world.claim_nick(user, new):
        raise IRCError(p.ERR_NICKNAMEINUSE, new, "Nickname is already in use")
    try_register(ctx)


@command("USER", min_params=4, pre_registration=True, syntax="<username> 0 * :<realname>")
def user_(ctx: Context, msg: Message) -> None:
    """Give your username and real name (once, at registration)."""
    user = ctx.user
    if user.registered or user.username:
        raise IRCError(p.ERR_ALREADYREGISTERED, "You may not reregister")
    if not msg.params[0] or not msg.params[3]:
        # modern.ircdocs.horse USER: an empty parameter is a missing one; the client
        # stays unregistered and may send USER again.
        raise IRCError(
            p.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters: username and realname are needed"
        )
    user.username = clean_username(msg.params[0])
    user.realname = msg.params[3][:REALNAME_LENGTH]
    try_register(ctx)


@command("PING", min_params=1, pre_registration=True, syntax="<token>")
def ping(ctx: Context, msg: Message) -> None:
    """Check that the server is alive; it answers PONG."""
    ctx.send(Message("PONG", [ctx.server.name, msg.params[0]], ctx.server.name))


@command("PONG", pre_registration=True, syntax="<token>", cost=0)
def pong(ctx: Context, msg: Message) -> None:
    """Answer the server's PING.

    Nothing to do here: any line from the client counts as alive, and the
    housekeeping thread clears the outstanding PING when it sees one.
    """


@command("QUIT", pre_registration=True, syntax="[:<reason>]", cost=0)
def quit_(ctx: Context, msg: Message) -> None:
    """Leave the server; your rooms are told."""
    text = msg.param(0)
    reason = f"Quit: {text}" if text else "Client Quit"
    ctx.disconnect(reason, f"Closing Link: {ctx.user.host} ({reason})")
