"""Tests for ircish.passwords: the hash format, verification, the reasons a hash is refused,
and the bound on scrypt computations running at once."""

from __future__ import annotations

import base64
import hashlib
import threading

import pytest

from ircish import passwords
from ircish.passwords import hash_password, hash_problem, verify_password

SALT = base64.b64encode(b"s" * 16).decode()
KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture(scope="module")
def hashed() -> str:
    return hash_password("correct horse")


def make_hash(password: str, n: int, r: int, p: int, salt: bytes = b"pepper" * 3) -> str:
    """A hash built independently of the module, straight from the format's definition."""
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 2**20, dklen=32)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def test_hash_has_the_documented_format(hashed: str) -> None:
    scheme, n, r, p, salt, key = hashed.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt, validate=True)) == 16
    assert len(base64.b64decode(key, validate=True)) == 32
    assert "\n" not in hashed
    assert hash_problem(hashed) is None


def test_round_trip(hashed: str) -> None:
    assert verify_password("correct horse", hashed)


@pytest.mark.parametrize("attempt", ["wrong", "", "correct horse ", "Correct horse", "correct"])
def test_wrong_password_is_false(hashed: str, attempt: str) -> None:
    assert verify_password(attempt, hashed) is False


def test_same_password_gets_a_new_salt_each_time() -> None:
    first, second = hash_password("same"), hash_password("same")
    assert first != second
    assert verify_password("same", first)
    assert verify_password("same", second)


def test_non_ascii_password_is_hashed_as_utf8() -> None:
    encoded = hash_password("pässwörd ✓")
    assert verify_password("pässwörd ✓", encoded)
    assert not verify_password("passwort ✓", encoded)
    # The same bytes as anyone hashing the UTF-8 encoding by hand would get.
    _scheme, _n, _r, _p, salt, key = encoded.split("$")
    expected = hashlib.scrypt(
        "pässwörd ✓".encode(), salt=base64.b64decode(salt), n=2**14, r=8, p=1, dklen=32
    )
    assert base64.b64decode(key) == expected


def test_hash_made_elsewhere_with_a_higher_cost_verifies() -> None:
    # n=2**15, r=8 needs more than OpenSSL's default 32 MiB: this fails unless verify_password
    # passes its own maxmem.
    encoded = make_hash("raised cost", n=2**15, r=8, p=1)
    assert hash_problem(encoded) is None
    assert verify_password("raised cost", encoded)
    assert not verify_password("raised cost!", encoded)


@pytest.mark.parametrize(("n", "r", "p"), [(2**10, 1, 1), (2**14, 2, 3), (2**15, 1, 1)])
def test_other_sane_parameters_verify(n: int, r: int, p: int) -> None:
    encoded = make_hash("x", n=n, r=r, p=p)
    assert hash_problem(encoded) is None
    assert verify_password("x", encoded)


def tampered(encoded: str, field: int, change) -> str:
    parts = encoded.split("$")
    parts[field] = change(parts[field])
    return "$".join(parts)


def flip_first_byte(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("field", "change"),
    [
        (5, flip_first_byte),  # the stored hash
        (4, flip_first_byte),  # the salt
        (3, lambda _p: "2"),  # p: same password, other parameters
        (1, lambda _n: "32768"),
    ],
)
def test_tampered_hash_does_not_verify(hashed: str, field: int, change) -> None:
    changed = tampered(hashed, field, change)
    assert hash_problem(changed) is None  # still well formed: only the check can tell
    assert verify_password("correct horse", changed) is False


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("hunter2", "not in the form scrypt$n$r$p$salt$hash"),
        ("", "not in the form scrypt$n$r$p$salt$hash"),
        (f"scrypt$16384$8$1${SALT}", "not in the form scrypt$n$r$p$salt$hash"),
        (f"scrypt$16384$8$1${SALT}${KEY}$", "not in the form scrypt$n$r$p$salt$hash"),
        (f"bcrypt$16384$8$1${SALT}${KEY}", "not in the form scrypt$n$r$p$salt$hash"),
        (f"SCRYPT$16384$8$1${SALT}${KEY}", "not in the form scrypt$n$r$p$salt$hash"),
        (f"scrypt$$8$1${SALT}${KEY}", "n is not a positive decimal number"),
        (f"scrypt$+16384$8$1${SALT}${KEY}", "n is not a positive decimal number"),
        (f"scrypt$ 16384$8$1${SALT}${KEY}", "n is not a positive decimal number"),
        (f"scrypt$16_384$8$1${SALT}${KEY}", "n is not a positive decimal number"),
        (f"scrypt$016384$8$1${SALT}${KEY}", "n is not a positive decimal number"),
        (
            f"scrypt$16384$\uff18$1${SALT}${KEY}",
            "r is not a positive decimal number",
        ),  # fullwidth 8
        (f"scrypt$16384$8$0${SALT}${KEY}", "p is not a positive decimal number"),
        (f"scrypt$16384$8$1e0${SALT}${KEY}", "p is not a positive decimal number"),
        (f"scrypt$99999999999$8$1${SALT}${KEY}", "n is far too large"),
        (f"scrypt$16384$8${'9' * 5000}${SALT}${KEY}", "p is far too large"),
        (
            f"scrypt$16383$8$1${SALT}${KEY}",
            "n must be a power of two between 1024 and 1048576, got 16383",
        ),
        (
            f"scrypt$512$8$1${SALT}${KEY}",
            "n must be a power of two between 1024 and 1048576, got 512",
        ),
        (
            f"scrypt$2097152$8$1${SALT}${KEY}",
            "n must be a power of two between 1024 and 1048576, got 2097152",
        ),
        (f"scrypt$16384$17$1${SALT}${KEY}", "r must be between 1 and 16, got 17"),
        (f"scrypt$16384$8$17${SALT}${KEY}", "p must be between 1 and 16, got 17"),
        (
            f"scrypt$131072$1$1${SALT}${KEY}",
            "n must be less than 2**(16*r) = 65536 for r=1, got 131072",
        ),
        (
            f"scrypt$1048576$8$1${SALT}${KEY}",
            "n=1048576, r=8 need 1024 MiB per check; at most 128 MiB is allowed",
        ),
        (f"scrypt$16384$8$1$not*base64${KEY}", "the salt is not valid base64"),
        (f"scrypt$16384$8$1${SALT[:-2]}${KEY}", "the salt is not valid base64"),  # no padding
        (f"scrypt$16384$8$1$c3Nz\nc3Nz${KEY}", "the salt is not valid base64"),
        (f"scrypt$16384$8$1$${KEY}", "the salt is not valid base64"),
        (f"scrypt$16384$8$1$c2FsdA==${KEY}", "the salt must be 16 to 64 bytes, got 4"),
        # Non-canonical base64: 'AB==' decodes like 'AA==' but is not what we write.
        (f"scrypt$16384$8$1${SALT[:-3]}x==${KEY}", "the salt is not valid base64"),
        (f"scrypt$16384$8$1${SALT}$-_-_", "the hash is not valid base64"),
        (f"scrypt$16384$8$1${SALT}${KEY[:-4]}", "the hash must be 32 bytes, got 30"),
        (f"scrypt$16384$8$1${SALT}${SALT}", "the hash must be 32 bytes, got 16"),
    ],
)
def test_malformed_hashes_have_a_reason_and_never_verify(encoded: str, reason: str) -> None:
    assert hash_problem(encoded) == reason
    assert verify_password("anything", encoded) is False


def test_reason_never_quotes_the_value() -> None:
    # A plain-text password pasted into the config must not end up in an error message.
    for pasted in ("hunter2", "scrypt$hunter2", "scrypt$1$2$3$hunter2$x"):
        reason = hash_problem(pasted)
        assert reason is not None
        assert "hunter2" not in reason


@pytest.mark.parametrize("encoded", [None, 42, b"scrypt$16384$8$1$x$y"])
def test_non_strings_are_refused_without_raising(encoded) -> None:
    assert hash_problem(encoded) == "not a string"
    assert verify_password("x", encoded) is False


def test_unencodable_password_is_false_not_an_exception(hashed: str) -> None:
    assert verify_password("\ud800", hashed) is False


def test_at_most_two_scrypt_computations_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Six threads verify at once; a stand-in scrypt records how many run together and
    lets one finish only after another has started, so any third slot would show up."""
    lock = threading.Lock()
    running = peak = 0
    entered = threading.Semaphore(0)
    release = threading.Semaphore(0)

    def fake_scrypt(secret: bytes, **kwargs: object) -> bytes:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        entered.release()
        assert release.acquire(timeout=5)
        with lock:
            running -= 1
        return b"\0" * kwargs["dklen"]  # type: ignore[operator]

    monkeypatch.setattr(hashlib, "scrypt", fake_scrypt)
    encoded = f"scrypt$16384$8$1${SALT}${KEY}"
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(verify_password("x", encoded)))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    # Two get in; every later one gets in only when one of those leaves.
    assert entered.acquire(timeout=5)
    assert entered.acquire(timeout=5)
    for _ in range(4):
        with lock:
            assert running == 2
        release.release()
        assert entered.acquire(timeout=5)
    release.release(2)
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert peak == 2
    assert results == [False] * 6
    # Every slot was given back.
    for _ in range(2):
        assert passwords._scrypt_slots.acquire(blocking=False)
    for _ in range(2):
        passwords._scrypt_slots.release()
