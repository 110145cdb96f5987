"""Secrets: password hashes, derived student passwords, signed single-use login links.

- :func:`hash_password` / :func:`verify_password`: scrypt with a random salt, in a
  self-describing format ``scrypt$n$r$p$salt$hash``; slow on purpose, so async code
  uses :func:`ahash_password` / :func:`averify_password` (a worker thread).
- :func:`derive_secret`: HMAC-SHA256 of the secret key and some parts, as a readable
  password. Student passwords and ``PASSSTU`` are derived, never stored, so notebooks
  can be rendered again at spawn time; bumping ``Seat.generation`` rotates them.
- :func:`hash_generated_secret` / :func:`verify_generated_secret`: salted SHA-256 for
  *derived* secrets only: they carry ~92 random bits, so a slow hash adds nothing and
  the check stays cheap enough for the event loop.
- Login links ``base64url(payload).base64url(hmac)``, payload = token id + expiry +
  nonce: the signature is checked before any database lookup, the database keeps only
  SHA-256 of the nonce, and redeeming marks the row used with a conditional UPDATE, so
  of two concurrent redeems exactly one wins.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import struct
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from . import orm
from .orm import LoginToken

log = logging.getLogger("wod_hub.tokens")

# ---- password hashing (scrypt) ---------------------------------------------------------

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32
SALT_BYTES = 16
# refuse stored parameters that would make one check eat the machine
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64d(text: str) -> bytes:
    if not text or not _B64_CHARS.issuperset(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=dklen,
        maxmem=256 * n * r * p + 2**20,
    )


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (salt and hash base64url). Blocks ~0.1 s: use
    :func:`ahash_password` from async code."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64e(salt)}${_b64e(digest)}"


def parse_password_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """``(n, r, p, salt, digest)``; ValueError saying what is wrong otherwise."""
    fields = (stored or "").split("$")
    if len(fields) != 6 or fields[0] != "scrypt":
        raise ValueError(
            "not a wod-hub password hash (expected scrypt$n$r$p$salt$hash, "
            "as printed by `wod-hub admin hash-password`)"
        )
    try:
        n, r, p = (int(x) for x in fields[1:4])
        salt, digest = _b64d(fields[4]), _b64d(fields[5])
    except ValueError:
        raise ValueError(
            "damaged password hash: its numbers or base64 parts do not parse"
        ) from None
    if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 0 < r <= _MAX_R and 0 < p <= _MAX_P):
        raise ValueError(f"password hash parameters out of bounds: n={n} r={r} p={p}")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("password hash has a too short salt or digest")
    return n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored``; False for a wrong password or an
    unreadable hash (logged, never the hash itself). Constant-time comparison."""
    try:
        n, r, p, salt, digest = parse_password_hash(stored)
    except ValueError as e:
        log.warning("Cannot check a password: %s", e)
        return False
    candidate = _scrypt(password, salt, n, r, p, len(digest))
    return hmac.compare_digest(candidate, digest)


async def ahash_password(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def averify_password(password: str, stored: str) -> bool:
    return await asyncio.to_thread(verify_password, password, stored)


# ---- derived secrets -----------------------------------------------------------------------

# no 0/O, 1/l/I: read aloud, copied from a screen or typed from paper without mistakes
SECRET_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"


def _encode_parts(parts) -> bytes:
    # length-prefixed, so ("a:b", "c") and ("a", "b:c") never collide
    out = []
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode("utf-8")
        out.append(f"{len(raw)}:".encode() + raw)
    return b"".join(out)


def derive_secret(key: bytes, *parts, length: int = 16) -> str:
    """A readable password that only the holder of ``key`` can compute from ``parts``,
    e.g. ``derive_secret(key, "seat", workshop_id, student_number, generation)``."""
    if not key:
        raise ValueError("derive_secret needs a non-empty secret key")
    if not 8 <= length <= 40:
        raise ValueError("derived secrets have 8 to 40 characters")
    digest = hmac.new(key, b"wod-hub derive v1\x00" + _encode_parts(parts), hashlib.sha256).digest()
    number = int.from_bytes(digest, "big")  # 256 bits: modulo bias is negligible
    chars = []
    for _ in range(length):
        number, index = divmod(number, len(SECRET_ALPHABET))
        chars.append(SECRET_ALPHABET[index])
    return "".join(chars)


def hash_generated_secret(secret: str) -> str:
    """``sha256$salt$hash`` of a derived (high-entropy) secret. Never for human passwords."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.sha256(salt + secret.encode("utf-8")).digest()
    return f"sha256${_b64e(salt)}${_b64e(digest)}"


def verify_generated_secret(secret: str, stored: str) -> bool:
    """Check a derived secret against :func:`hash_generated_secret` (or a scrypt hash)."""
    if (stored or "").startswith("scrypt$"):
        return verify_password(secret, stored)
    fields = (stored or "").split("$")
    if len(fields) != 3 or fields[0] != "sha256":
        return False
    try:
        salt, digest = _b64d(fields[1]), _b64d(fields[2])
    except ValueError:
        return False
    return hmac.compare_digest(hashlib.sha256(salt + secret.encode("utf-8")).digest(), digest)


# ---- the secret key --------------------------------------------------------------------------

SECRET_KEY_BYTES = 32


def generate_secret_key() -> bytes:
    return secrets.token_bytes(SECRET_KEY_BYTES)


def _read_key(path: Path) -> bytes:
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < SECRET_KEY_BYTES:
        raise ValueError(
            f"{path} does not hold a hex-encoded key of at least {SECRET_KEY_BYTES} bytes. "
            "Delete it to create a new key (every login link and student password changes), "
            "or set WorkshopAuthenticator.secret_key."
        )
    return key


def load_or_create_secret_key(path: str | os.PathLike) -> bytes:
    """The key in ``path`` (hex), created with mode 0600 on first use.

    Creation is atomic (written aside, then hard-linked into place), so two processes
    starting at once end up with the same key.
    """
    path = Path(path)
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "Secret key file %s is readable by others (mode %o); use chmod 600", path, mode
            )
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(generate_secret_key().hex() + "\n")
        try:
            os.link(tmp, path)
            log.info("Created a new secret key in %s", path)
        except FileExistsError:
            pass  # another process won the race: use its key
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


# ---- login links ---------------------------------------------------------------------------------


class TokenError(Exception):
    """A login link that cannot be used; ``str(e)`` tells the person what to do."""

    message = "This login link cannot be used. Ask for a new one on the login page."

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)


class InvalidToken(TokenError):
    message = (
        "This login link is not valid. Copy the whole link from the e-mail, "
        "or ask for a new one on the login page."
    )


class ExpiredToken(TokenError):
    message = "This login link has expired. Ask for a new one on the login page."


class UsedToken(TokenError):
    message = "This link has already been used. Ask for a new one on the login page."


class RevokedToken(TokenError):
    message = (
        "This login link was withdrawn because the workshop session ended. "
        "Register again on the login page."
    )


_PAYLOAD = struct.Struct(">QQ")  # token id, expiry (unix seconds)
_NONCE_BYTES = 16
_EPOCH = datetime(1970, 1, 1)


def _token_key(key: bytes) -> bytes:
    # a sub-key: login-link signatures can never be confused with derived passwords
    return hmac.new(key, b"wod-hub login link v1", hashlib.sha256).digest()


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(_token_key(key), payload, hashlib.sha256).digest()


def _nonce_hash(nonce: bytes) -> str:
    return hashlib.sha256(nonce).hexdigest()


def _unix(dt: datetime) -> int:
    return int((dt - _EPOCH).total_seconds())


async def issue_login_token(
    session: AsyncSession,
    key: bytes,
    registration_id: int,
    ttl: timedelta,
    *,
    now: datetime | None = None,
) -> str:
    """A new single-use login link token for ``registration_id``, valid for ``ttl``.

    Stores only SHA-256 of its nonce. Runs in the caller's transaction: the token is
    valid once that commits.
    """
    if ttl <= timedelta(0):
        raise ValueError("a login link needs a positive time to live")
    now = now or orm.utcnow()
    expires_at = (now + ttl).replace(microsecond=0)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    row = LoginToken(
        registration_id=registration_id,
        secret_hash=_nonce_hash(nonce),
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    payload = _PAYLOAD.pack(row.id, _unix(expires_at)) + nonce
    return f"{_b64e(payload)}.{_b64e(_sign(key, payload))}"


def _parse_token(key: bytes, token: str) -> tuple[int, int, bytes]:
    """``(token id, expiry, nonce)`` of a token whose signature is right."""
    token = (token or "").strip()
    if len(token) > 200 or token.count(".") != 1:
        raise InvalidToken()
    payload_b64, signature_b64 = token.split(".")
    try:
        payload, signature = _b64d(payload_b64), _b64d(signature_b64)
    except ValueError:
        raise InvalidToken() from None
    if not hmac.compare_digest(_sign(key, payload), signature):
        raise InvalidToken()
    if len(payload) != _PAYLOAD.size + _NONCE_BYTES:
        raise InvalidToken()
    token_id, expiry = _PAYLOAD.unpack(payload[: _PAYLOAD.size])
    return token_id, expiry, payload[_PAYLOAD.size :]


async def redeem_login_token(
    session: AsyncSession, key: bytes, token: str, *, now: datetime | None = None
) -> int:
    """Use a login link: the registration id it logs in, or a :class:`TokenError`.

    Order: signature (``hmac.compare_digest``, before touching the database), expiry,
    database row (nonce hash, revoked), then ``UPDATE ... WHERE used_at IS NULL``:
    only the redeem whose update hits the row wins. Run it in a write transaction;
    if that rolls back, the link stays usable.
    """
    now = now or orm.utcnow()
    token_id, expiry, nonce = _parse_token(key, token)
    if _unix(now) >= expiry:
        raise ExpiredToken()
    row = await session.get(LoginToken, token_id, populate_existing=True)
    if row is None or not hmac.compare_digest(row.secret_hash, _nonce_hash(nonce)):
        raise InvalidToken()
    if row.revoked_at is not None:
        raise RevokedToken()
    if row.used_at is not None:
        raise UsedToken()
    if now >= row.expires_at:
        raise ExpiredToken()
    table = LoginToken.__table__
    result = await session.execute(
        update(table)
        .where(table.c.id == token_id, table.c.used_at.is_(None), table.c.revoked_at.is_(None))
        .values(used_at=now)
    )
    if result.rowcount != 1:
        # a concurrent redeem (or revoke) won the row
        await session.refresh(row)
        raise RevokedToken() if row.revoked_at is not None else UsedToken()
    await session.refresh(row)
    return row.registration_id


async def revoke_tokens(
    session: AsyncSession, registration_id: int, *, now: datetime | None = None
) -> int:
    """Withdraw every unused link of ``registration_id`` (CLEANUP). Returns how many."""
    now = now or orm.utcnow()
    table = LoginToken.__table__
    result = await session.execute(
        update(table)
        .where(
            table.c.registration_id == registration_id,
            table.c.used_at.is_(None),
            table.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return result.rowcount
