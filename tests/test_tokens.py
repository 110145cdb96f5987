"""Password hashes, derived secrets, the secret key file and single-use login links."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import struct
import threading
import time
from datetime import timedelta

import pytest
import pytest_asyncio
from sqlalchemy import select

from wod_hub import orm, tokens
from wod_hub.db import Database
from wod_hub.orm import LoginToken, Participant, Registration, utcnow

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


# ---- password hashing ------------------------------------------------------------------------


def test_password_hash_round_trip():
    h = tokens.hash_password("correct horse battery staple")
    assert tokens.verify_password("correct horse battery staple", h)
    assert not tokens.verify_password("correct horse battery stapler", h)
    assert not tokens.verify_password("", h)


def test_password_hash_format_has_no_plaintext_and_a_fresh_salt():
    pw = "S3cret-pässword"
    h1, h2 = tokens.hash_password(pw), tokens.hash_password(pw)
    assert h1 != h2  # random salt
    name, n, r, p, salt, digest = h1.split("$")
    assert (name, n, r, p) == ("scrypt", str(tokens.SCRYPT_N), "8", "1")
    assert pw not in h1 and pw.encode().hex() not in h1
    assert base64.urlsafe_b64encode(pw.encode()).decode().rstrip("=") not in h1
    assert len(base64.urlsafe_b64decode(digest + "==")) == 32


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plaintext",
        "bcrypt$2b$12$abc",
        "scrypt$32768$8$1$salt",  # a field missing
        "scrypt$1048577$8$1$c2FsdHNhbHQ$ZGlnZXN0ZGlnZXN0ZGlnZXN0",  # n not a power of 2
        "scrypt$4194304$8$1$c2FsdHNhbHQ$ZGlnZXN0ZGlnZXN0ZGlnZXN0",  # n too large (DoS)
        "scrypt$32768$8$1$!!$ZGlnZXN0ZGlnZXN0ZGlnZXN0",
    ],
    ids=["empty", "plaintext", "other-scheme", "short", "n-not-pow2", "n-huge", "bad-base64"],
)
def test_unreadable_hashes_never_match(stored):
    assert tokens.verify_password("plaintext", stored) is False
    with pytest.raises(ValueError):
        tokens.parse_password_hash(stored)


async def test_async_hashing_does_not_block_the_loop():
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        t0 = time.perf_counter()
        h = await tokens.ahash_password("pw")
        ok = await tokens.averify_password("pw", h)
        elapsed = time.perf_counter() - t0
    finally:
        task.cancel()
    assert ok
    # the loop kept ticking while scrypt ran in a thread
    assert ticks >= elapsed / 0.005 / 4, (ticks, elapsed)


# ---- derived secrets ----------------------------------------------------------------------------


def test_derive_secret_is_stable_readable_and_depends_on_everything():
    s = tokens.derive_secret(KEY, "seat", "WKSHP-A", 7, 0)
    assert s == tokens.derive_secret(KEY, "seat", "WKSHP-A", 7, 0)
    assert len(s) == 16 and set(s) <= set(tokens.SECRET_ALPHABET)
    assert not set(s) & set("0O1lI")
    others = {
        tokens.derive_secret(OTHER_KEY, "seat", "WKSHP-A", 7, 0),
        tokens.derive_secret(KEY, "seat", "WKSHP-A", 7, 1),  # generation bumped
        tokens.derive_secret(KEY, "seat", "WKSHP-A", 8, 0),
        tokens.derive_secret(KEY, "seat", "WKSHP-B", 7, 0),
        tokens.derive_secret(KEY, "passstu", "WKSHP-A", 7, 0),
    }
    assert s not in others and len(others) == 5
    # parts are length-prefixed: moving a separator changes the result
    assert tokens.derive_secret(KEY, "a:b", "c") != tokens.derive_secret(KEY, "a", "b:c")
    assert len(tokens.derive_secret(KEY, "x", length=24)) == 24
    with pytest.raises(ValueError):
        tokens.derive_secret(b"", "x")


def test_generated_secret_hash():
    secret = tokens.derive_secret(KEY, "seat", "W", 1, 0)
    h = tokens.hash_generated_secret(secret)
    assert secret not in h and h.startswith("sha256$")
    assert tokens.verify_generated_secret(secret, h)
    assert not tokens.verify_generated_secret(secret[:-1] + "x", h)
    assert not tokens.verify_generated_secret(secret, "garbage")
    assert tokens.verify_generated_secret(secret, tokens.hash_password(secret))


# ---- the secret key file ---------------------------------------------------------------------------


def test_secret_key_file_created_0600_and_reused(tmp_path):
    path = tmp_path / "state" / "wod_hub_secret"
    key = tokens.load_or_create_secret_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tokens.load_or_create_secret_key(path) == key
    assert tokens.generate_secret_key() != tokens.generate_secret_key()
    assert [p.name for p in path.parent.iterdir()] == ["wod_hub_secret"]  # no temp left


def test_secret_key_file_race_gives_one_key(tmp_path):
    path = tmp_path / "wod_hub_secret"
    keys, barrier = [], threading.Barrier(8)

    def load():
        barrier.wait()
        keys.append(tokens.load_or_create_secret_key(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1


def test_damaged_secret_key_file_names_the_file(tmp_path):
    path = tmp_path / "wod_hub_secret"
    path.write_text("not hex")
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match=f"{path}.*Delete it"):
        tokens.load_or_create_secret_key(path)


# ---- login links ------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="function")
async def db(any_db_url):
    database = Database(any_db_url)
    await database.migrate()
    yield database
    await database.dispose()


@pytest_asyncio.fixture(loop_scope="function")
async def registration_id(db):
    async with db.begin_write() as s:
        p = Participant(email="ada@example.org", first_name="Ada", last_name="L", company="AE")
        s.add(p)
        await s.flush()
        r = Registration(
            participant_id=p.id, workshop_id="W", expires_at=utcnow() + timedelta(hours=4)
        )
        s.add(r)
        await s.flush()
        return r.id


async def issue(db, registration_id, ttl=timedelta(hours=1), key=KEY, **kw) -> str:
    async with db.begin_write() as s:
        return await tokens.issue_login_token(s, key, registration_id, ttl, **kw)


async def redeem(db, token, key=KEY, **kw) -> int:
    async with db.begin_write() as s:
        return await tokens.redeem_login_token(s, key, token, **kw)


async def test_login_link_round_trip_and_single_use(db, registration_id):
    token = await issue(db, registration_id)
    assert len(token) < 120 and token.count(".") == 1
    assert await redeem(db, token) == registration_id
    with pytest.raises(tokens.UsedToken) as e:
        await redeem(db, token)
    assert str(e.value) == "This link has already been used. Ask for a new one on the login page."
    async with db.session() as s:
        row = (await s.execute(select(LoginToken))).scalar_one()
    assert row.used_at is not None
    # only a hash of the nonce is stored, never the token or its parts
    assert row.secret_hash not in token and len(row.secret_hash) == 64


async def test_forged_signature(db, registration_id):
    token = await issue(db, registration_id, key=OTHER_KEY)
    with pytest.raises(tokens.InvalidToken):
        await redeem(db, token)
    payload, sig = (await issue(db, registration_id)).split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    with pytest.raises(tokens.InvalidToken):
        await redeem(db, f"{payload}.{flipped}")


async def test_tampered_payload(db, registration_id):
    """Pointing a link at another token id (or moving its expiry) breaks the signature."""
    payload_b64, sig = (await issue(db, registration_id)).split(".")
    payload = base64.urlsafe_b64decode(payload_b64 + "==")
    token_id, expiry = struct.unpack(">QQ", payload[:16])
    for forged in (
        struct.pack(">QQ", token_id + 1, expiry) + payload[16:],
        struct.pack(">QQ", token_id, expiry + 86400) + payload[16:],
    ):
        bad = base64.urlsafe_b64encode(forged).decode().rstrip("=")
        with pytest.raises(tokens.InvalidToken):
            await redeem(db, f"{bad}.{sig}")


@pytest.mark.parametrize(
    "garbled",
    ["", "abc", "a.b.c", "é.é", "x" * 500, "AAAA.AAAA", "....", "%%%.%%%"],
    ids=["empty", "no-dot", "two-dots", "non-ascii", "huge", "short", "dots", "percent"],
)
async def test_garbled_links_are_invalid(db, registration_id, garbled):
    with pytest.raises(tokens.InvalidToken) as e:
        await redeem(db, garbled)
    assert "login page" in str(e.value)


async def test_signature_checked_before_the_database(registration_id):
    """A forged link is refused without a database: the session is never used."""

    class NoSession:
        def __getattr__(self, name):
            raise AssertionError(f"database touched: {name}")

    with pytest.raises(tokens.InvalidToken):
        await tokens.redeem_login_token(NoSession(), KEY, "AAAA.AAAA")


async def test_expired(db, registration_id, monkeypatch):
    now = utcnow()
    token = await issue(db, registration_id, ttl=timedelta(minutes=30), now=now)
    with pytest.raises(tokens.ExpiredToken, match="expired"):
        await redeem(db, token, now=now + timedelta(minutes=31))
    # the clock moved through orm.utcnow, as the rest of wod-hub does it
    monkeypatch.setattr(orm, "utcnow", lambda: now + timedelta(hours=2))
    with pytest.raises(tokens.ExpiredToken):
        await redeem(db, token)
    monkeypatch.setattr(orm, "utcnow", lambda: now + timedelta(minutes=29))
    assert await redeem(db, token) == registration_id


async def test_revoked(db, registration_id):
    used = await issue(db, registration_id)
    assert await redeem(db, used) == registration_id
    pending = [await issue(db, registration_id) for _ in range(2)]
    async with db.begin_write() as s:
        assert await tokens.revoke_tokens(s, registration_id) == 2  # the used one stays used
    for token in pending:
        with pytest.raises(tokens.RevokedToken) as e:
            await redeem(db, token)
        assert isinstance(e.value, tokens.TokenError) and "Register again" in str(e.value)
    with pytest.raises(tokens.UsedToken):
        await redeem(db, used)


async def test_deleted_row_is_invalid(db, registration_id):
    token = await issue(db, registration_id)
    async with db.begin_write() as s:
        await s.delete((await s.execute(select(LoginToken))).scalar_one())
    with pytest.raises(tokens.InvalidToken):
        await redeem(db, token)


async def test_rolled_back_redeem_keeps_the_link(db, registration_id):
    token = await issue(db, registration_id)
    with pytest.raises(RuntimeError):
        async with db.begin_write() as s:
            await tokens.redeem_login_token(s, KEY, token)
            raise RuntimeError("login failed later")
    assert await redeem(db, token) == registration_id


async def test_concurrent_double_redeem_exactly_one_wins(db, registration_id):
    for _ in range(3):
        token = await issue(db, registration_id)

        async def attempt(token=token):
            try:
                return await redeem(db, token)
            except tokens.UsedToken:
                return "used"

        results = await asyncio.gather(*(attempt() for _ in range(8)))
        assert results.count(registration_id) == 1 and results.count("used") == 7


async def test_issue_refuses_nonpositive_ttl(db, registration_id):
    with pytest.raises(ValueError):
        await issue(db, registration_id, ttl=timedelta(0))
