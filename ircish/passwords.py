"""Server-operator password hashes: making them (`ircish-server hash-password`), checking a
password against one (OPER), and telling the config loader what is wrong with a hash. The
format is self-describing, `scrypt$<n>$<r>$<p>$<salt-b64>$<hash-b64>`, so the cost can be
raised later without breaking stored hashes. One scrypt check needs 128*r*n bytes (16 MiB
with our parameters), so at most two run at once, across all threads: `_scrypt_slots`, a
semaphore that is taken alone, with no other lock held (a burst of OPER attempts waits here,
and must not stall anything else while it does). Stdlib only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from typing import NamedTuple

from ircish.locks import new_semaphore

__all__ = ["hash_password", "hash_problem", "verify_password"]

SCHEME = "scrypt"
#: The cost of new hashes: n=2**14, r=8, p=1 is the usual interactive-login choice
#: (RFC 7914 section 2; about 50 ms and 16 MiB here).
N, R, P = 2**14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32

# Bounds for hashes read from a config: wide enough for a raised cost, narrow enough that
# one OPER cannot take seconds of CPU or hundreds of MiB.
_N_RANGE = (2**10, 2**20)
_RP_RANGE = (1, 16)
_MAX_MEMORY = 128 * 2**20  # bytes for one check: 128*r*n, 8 times our default
_SALT_RANGE = (16, 64)

# At most two scrypt computations at once: each holds 16 MiB (more for a raised cost), and
# a flood of OPER lines must not multiply that. Taken alone, never with another lock held.
_scrypt_slots = new_semaphore("scrypt semaphore", 2)

_NUMBER = re.compile(r"[1-9][0-9]*", re.ASCII)
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}", re.ASCII)


class _Parsed(NamedTuple):
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def hash_password(password: str) -> str:
    """A new `scrypt$n$r$p$salt$hash` string for `password` (UTF-8), with a random salt.

    Raises UnicodeEncodeError for a str that is not valid Unicode text (lone surrogates).
    """
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password.encode("utf-8"), salt, N, R, P, KEY_BYTES)
    return "$".join((SCHEME, str(N), str(R), str(P), _b64(salt), _b64(key)))


def verify_password(password: str, encoded: str) -> bool:
    """True if `password` matches `encoded`; False for a wrong password or a malformed hash.

    Never raises for bad input. The comparison is constant-time.
    """
    parsed = _parse(encoded)
    if isinstance(parsed, str):
        return False
    try:
        secret = password.encode("utf-8")
    except (AttributeError, UnicodeEncodeError):
        return False
    key = _scrypt(secret, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.key))
    return hmac.compare_digest(key, parsed.key)


def hash_problem(encoded: str) -> str | None:
    """None if `encoded` is a well-formed hash with sane parameters, else a short reason.

    The reason never quotes `encoded`: it may be a plain-text password pasted by mistake.
    """
    parsed = _parse(encoded)
    return parsed if isinstance(parsed, str) else None


def _parse(encoded: object) -> _Parsed | str:
    """The parts of a hash, or the reason it is unusable."""
    if not isinstance(encoded, str):
        return "not a string"
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return f"not in the form {SCHEME}$n$r$p$salt$hash"
    numbers = []
    for name, text in zip("nrp", parts[1:4], strict=True):
        # A strict pattern, not int(): int() also takes '+8', ' 8', '0_8' and other digits.
        if not _NUMBER.fullmatch(text):
            return f"{name} is not a positive decimal number"
        if len(text) > 10:  # no need to turn a thousand digits into an int to refuse them
            return f"{name} is far too large"
        numbers.append(int(text))
    n, r, p = numbers
    low, high = _N_RANGE
    if not low <= n <= high or n & (n - 1):
        return f"n must be a power of two between {low} and {high}, got {n}"
    low, high = _RP_RANGE
    for name, value in (("r", r), ("p", p)):
        if not low <= value <= high:
            return f"{name} must be between {low} and {high}, got {value}"
    # RFC 7914 section 2: n must be below 2**(128*r/8); OpenSSL refuses otherwise.
    if n >= 2 ** (16 * r):
        return f"n must be less than 2**(16*r) = {2 ** (16 * r)} for r={r}, got {n}"
    if 128 * r * n > _MAX_MEMORY:
        return (
            f"n={n}, r={r} need {128 * r * n // 2**20} MiB per check; "
            f"at most {_MAX_MEMORY // 2**20} MiB is allowed"
        )
    salt = _unb64(parts[4])
    if salt is None:
        return "the salt is not valid base64"
    low, high = _SALT_RANGE
    if not low <= len(salt) <= high:
        return f"the salt must be {low} to {high} bytes, got {len(salt)}"
    key = _unb64(parts[5])
    if key is None:
        return "the hash is not valid base64"
    if len(key) != KEY_BYTES:
        return f"the hash must be {KEY_BYTES} bytes, got {len(key)}"
    return _Parsed(n, r, p, salt, key)


def _scrypt(secret: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # OpenSSL refuses to use more than `maxmem` (32 MiB when it is not given, too little for
    # n=2**15, r=8): it needs 128*r*(n+2) bytes for V plus 128*r*p for B.
    maxmem = 128 * r * (n + p + 2)
    with _scrypt_slots:
        return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Standard, padded base64 in its one canonical spelling, or None."""
    if not _BASE64.fullmatch(text):
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    # Unused low bits set ('AB==' for 'AA==') decode fine but would let two strings stand
    # for one hash; only the spelling we write is accepted.
    return data if _b64(data) == text else None
