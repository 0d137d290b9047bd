"""Registered accounts: the table of them, their credentials, and how a login is checked.

An account is a name (the nick it reserves), a scrypt hash of its password for PLAIN and
IDENTIFY, SCRAM-SHA-256 keys (RFC 5802, made with `scramp` when the password is set, so
the server never needs the password again), an email and the TLS certificate
fingerprints that SASL EXTERNAL accepts. `Accounts` holds them all in memory (a server has
thousands, not millions) and hands every change to its keeper, the store's writer thread,
after releasing its lock: a login reads a dict, never the disk.

Logins are rate limited (`LoginLimiter`): a minute's budget of failures per address and per
account, refused past it without checking the password. A check costs the same whether
the account exists or not: an unknown name is checked against a decoy hash, and SCRAM for
an unknown name goes through the whole exchange with keys made from a server secret, so
neither the time nor the answers tell which names are taken.

Locks: `Accounts.lock` and `LoginLimiter._lock` are each taken alone (ircish/locks.py);
password hashing (the scrypt semaphore) happens with neither held.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import scramp
from scramp.core import saslprep

from ircish import passwords
from ircish.events import millis, now
from ircish.locks import held, new_lock
from ircish.protocol import CHANSERV, NICKSERV, Message, casefold
from ircish.shared import Network, shared
from ircish.store import AccountState, ScramKeys

log = logging.getLogger(__name__)

#: SCRAM's iteration count for new passwords (RFC 7677 asks at least 4096).
SCRAM_ITERATIONS = 4096
SCRAM = scramp.ScramMechanism("SCRAM-SHA-256")

#: Accounts registered and passwords changed per address in a minute, at most.
CHANGES_PER_MINUTE = 10
#: A TLS client certificate's fingerprint as NickServ CERT takes it: SHA-256, hex.
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
#: What an email address must look like (nothing is ever mailed to it).
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
#: Fingerprints one account may add at most.
MAX_CERTFPS = 16
#: The pseudo-users: their nicks, and the prefix of what they say.
NICKSERV_PREFIX = f"{NICKSERV}!{NICKSERV}@services"
CHANSERV_PREFIX = f"{CHANSERV}!{CHANSERV}@services"
#: Their nicks, casefolded: nobody may take them, nor register them.
SERVICES = frozenset({NICKSERV.lower(), CHANSERV.lower()})


class AccountKeeper(Protocol):
    """Where accounts go (the store's writer thread); never blocks."""

    def save_account(self, state: AccountState) -> None: ...

    def drop_account(self, name: str) -> None: ...


def nickserv_notice(nick: str | None, text: str) -> Message:
    """What NickServ tells the user `nick`: a NOTICE from it."""
    return Message("NOTICE", [nick or "*", text], NICKSERV_PREFIX)


def throttled(wait: float) -> str:
    """Why a login is refused before its password is checked."""
    return f"Too many failed logins; try again in {wait:.0f} s"


def password_problem(password: str, min_length: int) -> str | None:
    """Why `password` will not do as an account's password, or None. Its length counts
    after SASLprep (RFC 4013), which SCRAM applies: soft hyphens and zero-width spaces are
    nothing there, and a password of them alone would be the empty one."""
    try:
        prepared = saslprep(password)
    except scramp.ScramException:
        prepared = password  # control characters: PLAIN takes it as it is, SCRAM never
    if len(password) < min_length or len(prepared) < min_length:
        return f"Passwords need at least {min_length} characters"
    return None


def new_credentials(password: str) -> tuple[str, ScramKeys | None]:
    """The scrypt hash and SCRAM keys of a new password (slow: call with no lock held).
    No SCRAM keys for a password SASLprep refuses (control characters): such an account
    logs in with PLAIN only."""
    encoded = passwords.hash_password(password)
    try:
        salt, stored, server, iterations = SCRAM.make_auth_info(
            password, iteration_count=SCRAM_ITERATIONS
        )
    except scramp.ScramException:
        return encoded, None
    return encoded, ScramKeys(salt, iterations, stored, server)


def normalize_fingerprint(text: str) -> str | None:
    """`AB:CD:...` or `abcd...` as lowercase hex without colons; None if it is not a
    SHA-256 fingerprint."""
    fingerprint = text.replace(":", "").lower()
    return fingerprint if _FINGERPRINT.fullmatch(fingerprint) else None


def valid_email(text: str) -> bool:
    return len(text) <= 254 and _EMAIL.fullmatch(text) is not None


class Accounts:
    """Every registered account, by casefolded name (see the module docstring)."""

    #: The cluster these accounts are shared in (ircish/cluster; see ircish.shared);
    #: None: a single process.
    cluster: Network | None = None

    def __init__(self, keeper: AccountKeeper | None = None, failed_per_minute: int = 5) -> None:
        self.lock = new_lock("Accounts.lock")
        self.keeper = keeper
        self.limiter = LoginLimiter(failed_per_minute)
        #: Registrations and password changes per address (each costs a password hash,
        #: and an account made is kept): counted like failures, never refunded.
        self.changes = LoginLimiter(CHANGES_PER_MINUTE)
        self._by_name: dict[str, AccountState] = {}
        # A decoy for names with no account: checked like a real hash, so a wrong name
        # takes as long as a wrong password. Made on first use (it costs one scrypt).
        self._decoy: str | None = None
        # Keys SCRAM uses for a name with no account: fixed per name for the server's life,
        # so two tries with one name see one salt, as for a real account.
        self._secret = secrets.token_bytes(32)

    def load(self, states: Iterable[AccountState]) -> None:
        """The accounts kept by the last run (at start)."""
        with self.lock:
            for state in states:
                self._by_name[casefold(state.name)] = state

    def replace_all(self, states: Iterable[AccountState]) -> None:
        """The accounts are `states`, and no others (a cluster node loading the network's)."""
        with self.lock:
            self._by_name = {casefold(state.name): state for state in states}

    def get(self, name: str) -> AccountState | None:
        """The account called `name` (any case); one dict read, no lock."""
        return self._by_name.get(casefold(name))

    def all_states(self) -> list[AccountState]:
        """Every account (a copy of the table, made in one step)."""
        return list(self._by_name.values())

    def count(self) -> int:
        return len(self._by_name)

    @shared
    def create(self, state: AccountState) -> bool:
        """Register `state`; False if the name is taken."""
        key = casefold(state.name)
        with self.lock:
            if key in self._by_name:
                return False
            self._by_name[key] = state
            self._keep(state)
        return True

    def update(
        self, name: str, change: Callable[[AccountState], AccountState]
    ) -> AccountState | None:
        """Apply `change` (quick: a dataclasses.replace) to the account `name` and keep the
        result; None if there is no such account (dropped meanwhile). In a cluster the new
        state is worked out here and given to every node (`replace`): of two changes to
        one account at once on two nodes, the later in the log wins."""
        if self.cluster is not None:
            state = self.get(name)
            return None if state is None else self.replace(name, change(state))
        key = casefold(name)
        with self.lock:
            state = self._by_name.get(key)
            if state is None:
                return None
            state = self._by_name[key] = change(state)
            self._keep(state)
        return state

    @shared
    def replace(self, name: str, state: AccountState) -> AccountState | None:
        """The account `name` is `state` from now on (a cluster's `update`); None if there
        is no such account."""
        key = casefold(name)
        with self.lock:
            if key not in self._by_name:
                return None
            self._by_name[key] = state
            self._keep(state)
        return state

    def seen(self, name: str) -> None:
        """A session of `name` ended now: what is said to it after is missed."""
        when = millis(now())  # (a cluster's QUIT: the entry's time, the same on every node)
        self.update(name, lambda state: dataclasses.replace(state, last_seen=when))

    @shared
    def drop(self, name: str) -> bool:
        key = casefold(name)
        with self.lock:
            dropped = self._by_name.pop(key, None) is not None
            if dropped and self.keeper is not None:
                self.keeper.drop_account(key)
        return dropped

    def by_fingerprint(self, fingerprint: str) -> AccountState | None:
        """The account that added this certificate fingerprint, if any."""
        for state in list(self._by_name.values()):
            if fingerprint in state.certfps:
                return state
        return None

    def _keep(self, state: AccountState) -> None:
        # Under the lock, so the writer gets an account's changes in the order they were
        # made (the keeper only appends to its queue and never blocks).
        if self.keeper is not None:
            self.keeper.save_account(state)

    # -- checking a login (no lock held: scrypt is slow) ----------------------------------

    def check_password(self, name: str, password: str) -> AccountState | None:
        """The account if `password` is its password. As slow for a name with no account
        as for a wrong password."""
        state = self.get(name)
        if state is None:
            if self._decoy is None:
                self._decoy = passwords.hash_password(secrets.token_hex(16))
            passwords.verify_password(password, self._decoy)
            return None
        return state if passwords.verify_password(password, state.password) else None

    def scram_keys(self, name: str) -> tuple[bytes, bytes, bytes, int]:
        """`scramp`'s auth_fn: (salt, stored key, server key, iterations) of `name`; for a
        name with no account (or no SCRAM keys), keys nobody can answer, made from the
        server's secret so they look the same every time."""
        state = self.get(name)
        if state is not None and state.scram is not None:
            keys = state.scram
            return keys.salt, keys.stored_key, keys.server_key, keys.iterations
        seed = hmac.new(self._secret, casefold(name).encode(), hashlib.sha256).digest()
        unknowable = secrets.token_bytes(32)
        return seed[:16], unknowable, unknowable, SCRAM_ITERATIONS


#: How long a failed login counts against its address and account.
FAILURE_WINDOW = 60.0
#: An account's budget is this many addresses' worth: a flood from one address runs out
#: of its own budget long before the account's, so it can never lock the owner out.
ACCOUNT_BUDGET_FACTOR = 4
#: Addresses remembered per account as ones it logged in from: the account's budget does
#: not apply to them, so failures from elsewhere never keep its owner out.
KNOWN_ADDRESSES = 8
#: Addresses and accounts remembered at most (the oldest is forgotten first), so that a
#: flood of names cannot grow the limiter without end.
MAX_REMEMBERED = 10_000
#: The longest account name a key holds (longer names are no account anyway).
_KEY_CHARS = 64
#: How long a login waits for the logins under way from its address to end, when they
#: alone fill the budget (each is a password check: tens of milliseconds).
QUEUE_WAIT = 10.0


class Throttled(Exception):
    """Too many failed logins lately: `wait` seconds until one more may be tried."""

    def __init__(self, wait: float) -> None:
        super().__init__(throttled(wait))
        self.wait = wait


@dataclasses.dataclass
class Attempt:
    """A login under way (`LoginLimiter.attempt`); `succeeded` when its check held."""

    account: str | None = None

    def succeeded(self, account: str) -> None:
        self.account = account


class LoginLimiter:
    """Failed logins per address and per account in the last minute: past the budget (an
    account's is ACCOUNT_BUDGET_FACTOR addresses'), a login is refused before any password
    is checked, for as long as it takes the oldest failure to age out. A login whose
    password is being checked counts against the budget too (`attempt`), so parallel
    connections cannot each get a guess past it; one that finds the budget taken by such
    logins waits (up to QUEUE_WAIT) for them to end instead of being refused, so right
    passwords in parallel from one address (a bouncer, a NAT, a bench) all get in. An
    address an account logged in from before is not held to the account's budget. Each
    call is a few dict operations under `LoginLimiter._lock`, taken alone; waiting is on a
    Condition of that lock."""

    def __init__(self, per_minute: int, clock: object = time.monotonic) -> None:
        self.per_minute = per_minute
        self._budget = {"address": per_minute, "account": per_minute * ACCOUNT_BUDGET_FACTOR}
        self._clock = clock
        self._lock = new_lock("LoginLimiter._lock")
        self._settled = threading.Condition(self._lock)
        self._failures: dict[str, deque[float]] = {}
        #: Keys -> logins under way (their password being checked).
        self._checking: dict[str, int] = {}
        #: Casefolded account -> addresses it logged in from lately, newest last.
        self._known: dict[str, deque[str]] = {}
        #: Refused logins since the start, by reason ("invalid", "throttled"): metrics.
        self._refusals: dict[str, int] = {}

    def set_budget(self, per_minute: int) -> None:
        """A new failed_logins_per_minute (a config reload); the failures so far count."""
        with self._lock:
            self.per_minute = per_minute
            self._budget = {"address": per_minute, "account": per_minute * ACCOUNT_BUDGET_FACTOR}
            self._failures = {
                key: deque(times, maxlen=self._budget[key.partition(" ")[0]])
                for key, times in self._failures.items()
            }

    def refused(self, reason: str) -> None:
        """Count a refused login ("invalid": wrong credentials; "throttled": too many)."""
        with self._lock:
            self._refusals[reason] = self._refusals.get(reason, 0) + 1

    def refusals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._refusals)

    def wait(self, address: str, account: str | None) -> float:
        """Seconds until `address` may try `account` again (0: now); nothing is counted."""
        now = self._clock()  # type: ignore[operator]
        with self._lock:
            keys = self._keys_locked(address, account)
            return max((self._wait_locked(key, now) for key in keys), default=0.0)

    @contextlib.contextmanager
    def attempt(self, address: str, account: str | None) -> Iterator[Attempt]:
        """Around a password check: raises Throttled if `address` (or `account`) has
        failed too often, after waiting for the logins under way if only they fill the
        budget. The attempt counts as a failure when the block ends, unless
        `Attempt.succeeded` was called (the address is then known to the account)."""
        attempt = Attempt()
        deadline = self._clock() + QUEUE_WAIT  # type: ignore[operator]
        with self._lock:
            while True:
                keys = self._keys_locked(address, account)  # (a login may make it known)
                now = self._clock()  # type: ignore[operator]
                wait = max((self._wait_locked(key, now) for key in keys), default=0.0)
                if wait > 0:
                    raise Throttled(wait)
                if all(self._room_locked(key, now) for key in keys):
                    break
                if now >= deadline:
                    raise Throttled(QUEUE_WAIT)
                self._settled.wait(deadline - now)
            for key in keys:
                self._checking[key] = self._checking.get(key, 0) + 1
        try:
            yield attempt
        finally:
            with self._lock:
                for key in keys:
                    left = self._checking.pop(key) - 1
                    if left:
                        self._checking[key] = left
                if attempt.account is None:
                    self._count_locked(keys, self._clock())  # type: ignore[operator]
                else:
                    self._know_locked(attempt.account, address)
                self._settled.notify_all()

    def charge(self, address: str, account: str | None) -> float:
        """Counts one event now (a registration, a password change) if the budget has
        room: 0, else the seconds to wait (nothing is counted then)."""
        now = self._clock()  # type: ignore[operator]
        with self._lock:
            keys = self._keys_locked(address, account)
            wait = max((self._wait_locked(key, now) for key in keys), default=0.0)
            if wait <= 0:
                self._count_locked(keys, now)
            return wait

    def _know_locked(self, account: str, address: str) -> None:
        assert held(self._lock)
        known = self._known.pop(self._account(account), None)
        known = known or deque(maxlen=KNOWN_ADDRESSES)
        if address in known:
            known.remove(address)
        known.append(address)
        self._known[self._account(account)] = known
        self._forget_oldest_locked()

    def failed(self, address: str, account: str | None) -> None:
        """A failure with no password to check (a certificate no account has)."""
        now = self._clock()  # type: ignore[operator]
        with self._lock:
            self._count_locked(self._keys_locked(address, account), now)

    def _count_locked(self, keys: list[str], now: float) -> None:
        assert held(self._lock)
        for key in keys:
            budget = self._budget[key.partition(" ")[0]]
            times = self._failures.pop(key, None) or deque(maxlen=budget)
            times.append(now)
            self._failures[key] = times  # last: the most recently failed
        self._forget_oldest_locked()

    def _forget_oldest_locked(self) -> None:
        assert held(self._lock)
        for table in (self._failures, self._known):
            while len(table) > MAX_REMEMBERED:
                del table[next(iter(table))]  # type: ignore[attr-defined]

    def _wait_locked(self, key: str, now: float) -> float:
        """Seconds until the failures under `key` leave room for one more (0: now)."""
        assert held(self._lock)
        times = self._failures.get(key)
        if times is None or len(times) < times.maxlen:  # type: ignore[operator]
            return 0.0
        return max(0.0, times[0] + FAILURE_WINDOW - now)

    def _room_locked(self, key: str, now: float) -> bool:
        """Whether one more login may be checked under `key`: its recent failures and
        the logins under way stay within the budget."""
        assert held(self._lock)
        recent = sum(1 for t in self._failures.get(key, ()) if t + FAILURE_WINDOW > now)
        return recent + self._checking.get(key, 0) < self._budget[key.partition(" ")[0]]

    def _keys_locked(self, address: str, account: str | None) -> list[str]:
        assert held(self._lock)
        keys = [f"address {address}"]
        if account:
            name = self._account(account)
            if address not in self._known.get(name, ()):
                keys.append(f"account {name}")
        return keys

    @staticmethod
    def _account(account: str) -> str:
        return casefold(account)[:_KEY_CHARS]
