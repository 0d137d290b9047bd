"""Connection registration and liveness: CAP PASS NICK USER PING PONG QUIT."""

from __future__ import annotations

import hmac
import re

from ircish import __version__, modes
from ircish import protocol as p
from ircish.commands import Context, IRCError, command
from ircish.protocol import Message, safe_param
from ircish.world import valid_nick

from .queries import USERLEN, isupport_replies, lusers_replies, motd_replies

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
            ctx.disconnect("Bad password", "Bad password")
            return
    # Queue the welcome burst before anyone can find the user, so nothing
    # another client sends can arrive before 001.
    welcome(ctx)
    ctx.flush()
    ctx.world.mark_registered(user)


@command("CAP", min_params=1, pre_registration=True, syntax="<LS|LIST|REQ|END> [:<caps>]")
def cap(ctx: Context, msg: Message) -> None:
    """Capability negotiation (no capabilities are offered yet)."""
    sub = msg.params[0].upper()
    nick = ctx.user.nick or "*"
    if sub == "LS":
        if not ctx.user.registered:
            ctx.session.cap_negotiating = True
        ctx.send(Message("CAP", [nick, "LS", ""], ctx.server.name))
    elif sub == "LIST":
        ctx.send(Message("CAP", [nick, "LIST", ""], ctx.server.name))
    elif sub == "REQ":
        if not ctx.user.registered:
            ctx.session.cap_negotiating = True
        ctx.send(Message("CAP", [nick, "NAK", msg.param(1)], ctx.server.name))
    elif sub == "END":
        ctx.session.cap_negotiating = False
        try_register(ctx)
    else:
        raise IRCError(p.ERR_INVALIDCAPCMD, safe_param(msg.params[0]), "Invalid CAP subcommand")


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
    if user.registered:
        if new == user.nick:
            return
        if not ctx.world.rename_user(user, new):
            raise IRCError(p.ERR_NICKNAMEINUSE, new, "Nickname is already in use")
        return
    if not ctx.world.claim_nick(user, new):
        raise IRCError(p.ERR_NICKNAMEINUSE, new, "Nickname is already in use")
    try_register(ctx)


@command("USER", min_params=4, pre_registration=True, syntax="<username> 0 * :<realname>")
def user_(ctx: Context, msg: Message) -> None:
    """Give your username and real name (once, at registration)."""
    user = ctx.user
    if user.registered or user.username:
        raise IRCError(p.ERR_ALREADYREGISTERED, "You may not reregister")
    user.username = clean_username(msg.params[0])
    user.realname = msg.params[3][:100]
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
