"""Accounts: SASL (AUTHENTICATE), REGISTER (draft/account-registration), the NickServ
pseudo-user for clients that know that dialect, and nick protection.

Every way in ends in `log_in`, and every way to make an account in `register`, so PLAIN,
SCRAM, EXTERNAL, IDENTIFY, PASS and REGISTER log in the same: 900, the account set, the
people near the user told (account-notify), a registered nick kept.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from ircish import caps, sasl
from ircish import protocol as p
from ircish.accounts import (
    MAX_CERTFPS,
    SERVICES,
    Throttled,
    new_credentials,
    nickserv_notice,
    normalize_fingerprint,
    password_problem,
    throttled,
    valid_email,
)
from ircish.commands import Context, IRCError, command
from ircish.events import millis
from ircish.protocol import Message, casefold, safe_param, valid_nick
from ircish.slash import register_args
from ircish.store import AccountState
from ircish.world import User

from .history import missed_private_lines

log = logging.getLogger(__name__)


class Refused(Exception):
    """A registration or login that cannot go on: `code` (the spec's FAIL code) and why."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


# -- logging in -------------------------------------------------------------------------


def log_in(ctx: Context, state: AccountState) -> None:
    """`ctx.user` is now logged in to `state`: 900, and everyone who asked is told.
    Refused if the account was dropped while its password was checked: a DROP logs out
    whoever it finds logged in, so the check after setting the account closes the gap
    (a session must never keep a dropped account, which someone else may register)."""
    user = ctx.user
    ctx.world.set_account(user, state.name)
    current = ctx.world.accounts.get(state.name)
    if current is None or current.registered != state.registered:
        ctx.world.set_account(user, None)
        raise Refused("INVALID_CREDENTIALS", "Invalid account name or password")
    ctx.reply(
        p.RPL_LOGGEDIN,
        login_mask(user),
        state.name,
        f"You are now logged in as {state.name}",
    )
    if user.registered:
        for line in missed_private_lines(ctx):
            ctx.send(line)


def log_out(ctx: Context) -> None:
    user = ctx.user
    if user.account is not None:
        ctx.world.accounts.seen(user.account)  # what comes after is missed, as at a quit
    ctx.world.set_account(user, None)
    ctx.reply(p.RPL_LOGGEDOUT, login_mask(user), "You are now logged out")
    if user.registered:
        guard_nick(ctx)


def login_mask(user: User) -> str:
    """900 and 901's `nick!user@host`, with `*` for what registration has not given yet."""
    return f"{user.nick or '*'}!{user.username or '*'}@{user.host}"


def check_password(ctx: Context, name: str, password: str) -> AccountState:
    """The account, if `password` is its password; Refused if not, or if this address or
    account has failed too often in the last minute (then nothing is checked)."""
    accounts = ctx.world.accounts
    try:
        with accounts.limiter.attempt(ctx.user.host, name) as attempt:
            state = accounts.check_password(name, password)
            if state is None:
                raise refused_login(ctx, name)
            attempt.succeeded(state.name)
            return state
    except Throttled as too_many:
        raise refused_login(ctx, name, too_many.wait) from None


def refused_login(
    ctx: Context, name: str, wait: float = 0.0, text: str = "Invalid account name or password"
) -> Refused:
    """A login refused: wrong credentials, or (`wait` > 0) too many failures lately. It is
    counted (metrics) and logged in one line, without the password; the caller raises the
    Refused returned."""
    reason = "throttled" if wait > 0 else "invalid"
    ctx.world.accounts.limiter.refused(reason)
    log.info("%s: login as %s refused (%s)", ctx.conn, safe_param(name[:64]) or "*", reason)
    if wait > 0:
        return Refused("RATE_LIMITED", throttled(wait))
    return Refused("INVALID_CREDENTIALS", text)


# -- nick protection ----------------------------------------------------------------------


def guard_nick(ctx: Context) -> None:
    """After the user's nick changed, or they logged out: if it is an account's name and
    they are not logged in to it, they are told, and renamed after the grace period."""
    user = ctx.user
    if ctx.world.owner_of(user, user.nick):
        user.nick_deadline = None
        return
    grace = ctx.config.accounts.nick_grace_seconds
    user.nick_deadline = time.monotonic() + grace
    nickserv_says(ctx, reserved_text(user.nick or "*", grace))


def reserved_text(nick: str, grace: int) -> str:
    return (
        f"The nick {nick} belongs to a registered account. Log in within {grace} s "
        f"(/msg NickServ IDENTIFY <password>) or you will be renamed."
    )


def nickserv_says(ctx: Context, text: str) -> None:
    ctx.send(nickserv_notice(ctx.user.nick, text))


# -- registering ---------------------------------------------------------------------------


def register(ctx: Context, name: str, email: str | None, password: str) -> AccountState:
    """Make the account `name` (`*`: the user's nick) and log the user in to it; a server
    operator under `registration: operators` makes it for someone else, and stays as they
    are. Raises Refused with the spec's FAIL code."""
    settings = ctx.config.accounts
    user = ctx.user
    for_someone = settings.registration == "operators" and user.oper
    if settings.registration == "closed" or (
        settings.registration == "operators" and not user.oper
    ):
        raise Refused(
            "TEMPORARILY_UNAVAILABLE",
            "Registration is closed here"
            + ("; a server operator can make an account for you" if not for_someone else ""),
        )
    if user.account is not None and not for_someone:
        raise Refused("ALREADY_AUTHENTICATED", f"You are already logged in as {user.account}")
    nick = user.nick or ctx.session.wanted_nick
    if name == "*":
        if nick is None:
            raise Refused("NEED_NICK", "Choose a nick first: the account takes its name")
        name = nick
    if not valid_nick(name, ctx.config.limits.nick_length) or casefold(name) in SERVICES:
        raise Refused("BAD_ACCOUNT_NAME", "Account names follow the rules for nicks")
    if not for_someone and (nick is None or casefold(name) != casefold(nick)):
        raise Refused(
            "ACCOUNT_NAME_MUST_BE_NICK", "An account's name is your nick: change nick first"
        )
    holder = None if for_someone else ctx.world.find_user(name)
    if ctx.world.accounts.get(name) is not None or (holder is not None and holder is not user):
        raise Refused("ACCOUNT_EXISTS", f"{name} is already taken")
    if email is not None and not valid_email(email):
        raise Refused("INVALID_EMAIL", "That is not an email address")
    if email is None and settings.email_required:
        raise Refused("INVALID_EMAIL", "An email address is needed here")
    weak = password_problem(password, settings.min_password_length)
    if weak is not None:
        raise Refused("WEAK_PASSWORD", weak)
    charge_change(ctx)
    encoded, scram = new_credentials(password)
    state = AccountState(name, encoded, scram, email, registered=millis(time.time()), last_seen=0)
    if not ctx.world.accounts.create(state):
        raise Refused("ACCOUNT_EXISTS", f"{name} is already taken")
    log.info("account %s registered by %s from %s", name, user.nick or "*", user.host)
    if not for_someone:
        log_in(ctx, state)
    elif holder_of := ctx.world.find_user(name):
        # Made for someone while another holds the nick: the holder's grace starts now.
        grace = settings.nick_grace_seconds
        notice = nickserv_notice(holder_of.nick, reserved_text(name, grace))
        ctx.world.notify(holder_of, notice, grace=grace)
    return state


def charge_change(ctx: Context) -> None:
    """A registration or password change from this address counts now (each costs a
    password hash); Refused past CHANGES_PER_MINUTE."""
    wait = ctx.world.accounts.changes.charge(ctx.user.host, None)
    if wait > 0:
        raise Refused(
            "TEMPORARILY_UNAVAILABLE",
            f"Too many registrations and password changes from your address; "
            f"try again in {wait:.0f} s",
        )


@command(
    "REGISTER",
    min_params=3,
    pre_registration=True,
    syntax="<account|*> <email|*> <password>",
    cost=5,
)
def register_(ctx: Context, msg: Message) -> None:
    """Register an account named after your nick, and log in to it."""
    name, email, password = msg.params[:3]
    if not ctx.user.registered and not ctx.config.accounts.register_before_connect:
        ctx.fail(
            "REGISTER",
            "COMPLETE_CONNECTION_REQUIRED",
            safe_param(name),
            "Finish connecting (NICK, USER, CAP END) before registering",
        )
        return
    try:
        state = register(ctx, name, None if email == "*" else email, password)
    except Refused as refusal:
        named = name if name != "*" else ctx.user.nick or ctx.session.wanted_nick or name
        ctx.fail("REGISTER", refusal.code, safe_param(named), refusal.text)
        return
    ctx.send(
        Message(
            "REGISTER",
            ["SUCCESS", state.name, f"Account {state.name} registered"],
            ctx.server.name,
        )
    )


@command("VERIFY", min_params=2, pre_registration=True, syntax="<account> <code>")
def verify(ctx: Context, msg: Message) -> None:
    """Confirm a registration: never needed here (no account waits for a code)."""
    ctx.fail("VERIFY", "INVALID_CODE", safe_param(msg.params[0]), "No account waits for a code")


# -- SASL -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Exchange:
    """One SASL exchange in progress on a connection (the reader thread's alone)."""

    mechanism: str
    chunks: sasl.Assembler = dataclasses.field(default_factory=sasl.Assembler)
    scram: sasl.ScramExchange | None = None
    #: SCRAM: the account whose proof held, waiting for the client's last empty message.
    proven: AccountState | None = None


@command("AUTHENTICATE", min_params=1, pre_registration=True, syntax="<mechanism|data|*>", cost=2)
def authenticate(ctx: Context, msg: Message) -> None:
    """Log in with SASL (PLAIN, SCRAM-SHA-256, EXTERNAL): after CAP REQ sasl."""
    session = ctx.session
    param = msg.params[0]
    if "sasl" not in session.caps:
        raise IRCError(p.ERR_SASLFAIL, "Request the sasl capability first")
    exchange: Exchange | None = session.sasl
    if param == "*":
        session.sasl = None
        raise IRCError(p.ERR_SASLABORTED, "SASL authentication aborted")
    if exchange is None:
        start(ctx, param)
        return
    try:
        payload = exchange.chunks.add(param)
        if payload is None:
            return
        step(ctx, exchange, payload)
    except sasl.SaslError as exc:
        session.sasl = None
        numeric = p.ERR_SASLTOOLONG if exc.code == sasl.TOO_LONG else p.ERR_SASLFAIL
        ctx.reply(numeric, exc.text)
    except Refused as refusal:
        session.sasl = None
        ctx.reply(p.ERR_SASLFAIL, f"SASL authentication failed: {refusal.text}")


def start(ctx: Context, name: str) -> None:
    if ctx.user.account is not None:
        raise IRCError(p.ERR_SASLALREADY, "You have already authenticated using SASL")
    mechanism = name.upper()
    offered = caps.mechanisms(ctx.config)
    if mechanism not in offered:
        ctx.reply(p.RPL_SASLMECHS, ",".join(offered), "are available SASL mechanisms")
        raise IRCError(p.ERR_SASLFAIL, "SASL authentication failed: unknown mechanism")
    wait = ctx.world.accounts.limiter.wait(ctx.user.host, None)
    if wait > 0:
        raise IRCError(p.ERR_SASLFAIL, f"SASL authentication failed: {throttled(wait)}")
    ctx.session.sasl = Exchange(mechanism)
    ctx.send(Message("AUTHENTICATE", ["+"], ctx.server.name))


def step(ctx: Context, exchange: Exchange, payload: bytes) -> None:
    """One complete client message of the exchange."""
    accounts = ctx.world.accounts
    if exchange.mechanism == sasl.PLAIN:
        _, account, password = sasl.parse_plain(payload)
        succeed(ctx, check_password(ctx, account, password))
    elif exchange.mechanism == sasl.EXTERNAL:
        fingerprint = ctx.conn.certfp
        if fingerprint is None:
            raise Refused("NO_CERTIFICATE", "no client certificate was given")
        state = accounts.by_fingerprint(fingerprint)
        wanted = payload.decode("utf-8", "replace")
        if state is None or (wanted and casefold(wanted) != casefold(state.name)):
            accounts.limiter.failed(ctx.user.host, wanted or None)
            raise refused_login(
                ctx, wanted or "*", text="the certificate belongs to no such account"
            )
        succeed(ctx, state)
    elif exchange.scram is None:
        exchange.scram = sasl.ScramExchange(accounts.scram_keys)
        challenge = exchange.scram.first(payload)
        name = exchange.scram.username or ""
        wait = accounts.limiter.wait(ctx.user.host, name)
        if wait > 0:
            raise refused_login(ctx, name, wait)
        send_payload(ctx, challenge)
    elif exchange.proven is None:
        name = exchange.scram.username or ""
        try:
            with accounts.limiter.attempt(ctx.user.host, name) as attempt:
                try:
                    verifier = exchange.scram.final(payload)
                except sasl.SaslError:
                    # The same words as PLAIN's: a wrong password and an unknown account.
                    raise refused_login(ctx, name) from None
                state = accounts.get(name)
                if state is None:  # dropped during the exchange
                    raise refused_login(ctx, name)
                attempt.succeeded(state.name)
        except Throttled as too_many:
            raise refused_login(ctx, name, too_many.wait) from None
        exchange.proven = state
        send_payload(ctx, verifier)
    else:
        succeed(ctx, exchange.proven)


def send_payload(ctx: Context, payload: bytes) -> None:
    for chunk in sasl.encode_response(payload):
        ctx.send(Message("AUTHENTICATE", [chunk], ctx.server.name))


def succeed(ctx: Context, state: AccountState) -> None:
    ctx.session.sasl = None
    log_in(ctx, state)
    ctx.reply(p.RPL_SASLSUCCESS, "SASL authentication successful")


def pass_login(ctx: Context, text: str) -> None:
    """PASS account:password, for clients with neither SASL nor NickServ habits: checked
    at registration; a wrong one is told, and the connection goes on logged out."""
    name, _, password = text.partition(":")
    try:
        log_in(ctx, check_password(ctx, name, password))
    except Refused as refusal:
        nickserv_says(ctx, f"PASS login failed: {refusal.text}")


# -- NickServ -----------------------------------------------------------------------------

NICKSERV_HELP = (
    ("REGISTER <password> [email]", "register your current nick as an account"),
    ("IDENTIFY [account] <password>", "log in"),
    ("REGAIN", "take your account's nick from whoever holds it without logging in"),
    ("LOGOUT", "log out"),
    ("INFO [account]", "show an account"),
    ("SET PASSWORD <new password>", "change your password"),
    ("CERT ADD [fingerprint] | DEL <fingerprint> | LIST", "TLS certificates for SASL EXTERNAL"),
    ("DROP <account>", "delete your account (type its name to confirm)"),
)


def nickserv(ctx: Context, text: str) -> None:
    """A line sent to NickServ (PRIVMSG NickServ, NS, /register, /login)."""
    word, _, rest = text.strip().partition(" ")
    word = word.upper()
    args = rest.split()
    try:
        if word == "REGISTER" and args:
            password, email = register_args(rest)  # as /register reads it
            state = register(ctx, "*", email, password)
            nickserv_says(ctx, f"Account {state.name} registered; you are logged in")
        elif word == "IDENTIFY" and args:
            if ctx.user.account is not None:
                raise Refused("ALREADY", f"You are already logged in as {ctx.user.account}")
            # IDENTIFY [account] <password>: a first word that names an account is the
            # account, when more follows; else the whole line is the password (it may
            # hold spaces) for the account named like the nick.
            name, password = ctx.user.nick or "", rest.strip()
            if len(args) > 1 and ctx.world.accounts.get(args[0]) is not None:
                name, password = args[0], password.partition(" ")[2].strip()
            log_in(ctx, check_password(ctx, name, password))
            nickserv_says(ctx, f"You are now logged in as {ctx.user.account}")
        elif word in ("REGAIN", "GHOST", "RECOVER"):
            regain(ctx)
        elif word == "LOGOUT":
            if ctx.user.account is None:
                raise Refused("NOT_LOGGED_IN", "You are not logged in")
            log_out(ctx)
        elif word == "INFO":
            nickserv_info(ctx, args[0] if args else ctx.user.account or ctx.user.nick or "")
        elif word == "SET" and len(args) >= 2 and args[0].upper() == "PASSWORD":
            set_password(ctx, rest.strip().partition(" ")[2].strip())
        elif word == "CERT" and args:
            cert(ctx, args[0].upper(), args[1:])
        elif word == "DROP" and args:
            drop(ctx, args[0])
        else:
            nickserv_says(ctx, "NickServ commands:")
            for syntax, summary in NICKSERV_HELP:
                nickserv_says(ctx, f"  {syntax} - {summary}")
    except Refused as refusal:
        nickserv_says(ctx, refusal.text)


def require_login(ctx: Context) -> AccountState:
    name = ctx.user.account
    state = None if name is None else ctx.world.accounts.get(name)
    if state is None:
        raise Refused("NOT_LOGGED_IN", "Log in first: /msg NickServ IDENTIFY <password>")
    return state


def regain(ctx: Context) -> None:
    """NickServ REGAIN: your account's nick, held by someone not logged in to it, is
    yours at once: they are renamed to a guest nick, and you take it."""
    state = require_login(ctx)
    user = ctx.user
    holder = ctx.world.find_user(state.name)
    if holder is user:
        raise Refused("ALREADY", f"You are {user.nick} already")
    if holder is not None:
        if ctx.world.owner_of(holder, state.name):
            raise Refused("IN_USE", f"{holder.nick} is another session of your account")
        ctx.world.rename_to_guest(holder, ctx.config.limits.nick_length)
    if not ctx.world.rename_user(user, state.name):
        raise Refused("IN_USE", f"{state.name} was taken again; try once more")
    user.nick_deadline = None


def nickserv_info(ctx: Context, name: str) -> None:
    state = ctx.world.accounts.get(name) if name else None
    if state is None:
        raise Refused("NO_SUCH_ACCOUNT", f"{name or 'That'} is not a registered account")
    own = ctx.user.logged_in_to(state.name)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(state.registered / 1000))
    online = [user.nick for user in ctx.world.users_of(state.name) if user.nick]
    nickserv_says(ctx, f"Account {state.name}: registered {when}")
    nickserv_says(ctx, f"  logged in now as: {', '.join(online) if online else 'nobody'}")
    if own or ctx.user.oper:
        nickserv_says(ctx, f"  email: {state.email or 'none'}")
        nickserv_says(ctx, f"  certificates: {len(state.certfps)}")


def set_password(ctx: Context, password: str) -> None:
    state = require_login(ctx)
    weak = password_problem(password, ctx.config.accounts.min_password_length)
    if weak is not None:
        raise Refused("WEAK_PASSWORD", weak)
    charge_change(ctx)
    encoded, scram = new_credentials(password)
    ctx.world.accounts.update(
        state.name, lambda old: dataclasses.replace(old, password=encoded, scram=scram)
    )
    nickserv_says(ctx, "Password changed")


def cert(ctx: Context, action: str, args: list[str]) -> None:
    state = require_login(ctx)
    if action == "LIST":
        nickserv_says(ctx, f"{len(state.certfps)} certificate(s) for {state.name}")
        for fingerprint in state.certfps:
            nickserv_says(ctx, f"  {fingerprint}")
        return
    given = args[0] if args else ctx.conn.certfp if action == "ADD" else None
    fingerprint = normalize_fingerprint(given) if given else None
    if fingerprint is None:
        raise Refused(
            "BAD_FINGERPRINT",
            "Give a SHA-256 fingerprint (64 hex digits), or connect with a client "
            "certificate and type CERT ADD alone",
        )
    if action == "ADD":
        owner = ctx.world.accounts.by_fingerprint(fingerprint)
        if owner is not None:
            raise Refused("TAKEN", f"That certificate is already on account {owner.name}")
        if len(state.certfps) >= MAX_CERTFPS:
            raise Refused("FULL", f"At most {MAX_CERTFPS} certificates per account")
        ctx.world.accounts.update(
            state.name,
            lambda old: dataclasses.replace(old, certfps=(*old.certfps, fingerprint)),
        )
        nickserv_says(ctx, f"Certificate {fingerprint} added to {state.name}")
    elif action == "DEL":
        ctx.world.accounts.update(
            state.name,
            lambda old: dataclasses.replace(
                old, certfps=tuple(fp for fp in old.certfps if fp != fingerprint)
            ),
        )
        nickserv_says(ctx, f"Certificate {fingerprint} removed from {state.name}")
    else:
        raise Refused("USAGE", "CERT ADD [fingerprint] | DEL <fingerprint> | LIST")


def drop(ctx: Context, name: str) -> None:
    state = ctx.world.accounts.get(name)
    if state is None or not (ctx.user.logged_in_to(state.name) or ctx.user.oper):
        raise Refused("NO_ACCESS", f"You may drop only your own account: DROP {ctx.user.account}")
    ctx.world.accounts.drop(state.name)
    ctx.world.forget_account(state.name)
    log.info("account %s dropped by %s", state.name, ctx.user.nick)
    nickserv_says(ctx, f"Account {state.name} dropped")
    ctx.flush()  # before the 901 a session of the dropped account gets (this one, too)
    for user in ctx.world.users_of(state.name):
        ctx.world.set_account(user, None)
        ctx.world.notify(
            user,
            Message(
                p.RPL_LOGGEDOUT,
                [
                    user.nick or "*",
                    login_mask(user),
                    f"You are now logged out: {state.name} was dropped",
                ],
                ctx.server.name,
            ),
        )


@command("NS", syntax="<command> [args]", cost=2)
def ns(ctx: Context, msg: Message) -> None:
    """Talk to NickServ: NS REGISTER, NS IDENTIFY, NS INFO ... (NS HELP lists them)."""
    nickserv(ctx, " ".join(msg.params))
