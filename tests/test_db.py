"""wod_hub.db and the alembic migrations, on a SQLite file and a real PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys

import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, update
from sqlalchemy.exc import IntegrityError

from wod_hub.cli import db as db_cli
from wod_hub.db import (
    VERSION_TABLE,
    Database,
    DatabaseURLError,
    async_url,
    create_sync_engine,
    default_db_url,
    head_revision,
    resolve_db_url,
    sync_url,
)
from wod_hub.orm import Base, Participant, Registration, State, WorkshopRow, utcnow

WOD_TABLES = set(Base.metadata.tables)


@pytest_asyncio.fixture(loop_scope="function")
async def db(any_db_url):
    database = Database(any_db_url)
    await database.migrate()
    yield database
    await database.dispose()


# ---- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expect_async, expect_sync",
    [
        (
            "sqlite:///data/wod.sqlite",
            "sqlite+aiosqlite:///data/wod.sqlite",
            "sqlite:///data/wod.sqlite",
        ),
        (
            "sqlite+aiosqlite:////abs/w.sqlite",
            "sqlite+aiosqlite:////abs/w.sqlite",
            "sqlite:////abs/w.sqlite",
        ),
        (
            "postgresql://wod@db:5432/wod",
            "postgresql+psycopg://wod@db:5432/wod",
            "postgresql+psycopg://wod@db:5432/wod",
        ),
        (
            "postgres://wod@db/wod",
            "postgresql+psycopg://wod@db/wod",
            "postgresql+psycopg://wod@db/wod",
        ),
        (
            "postgresql+psycopg2://wod@db/wod",
            "postgresql+psycopg://wod@db/wod",
            "postgresql+psycopg://wod@db/wod",
        ),
    ],
    ids=["sqlite", "sqlite-async-given", "postgresql", "postgres-alias", "psycopg2-mapped"],
)
def test_url_mapping(url, expect_async, expect_sync):
    assert async_url(url).render_as_string(hide_password=False) == expect_async
    assert sync_url(url).render_as_string(hide_password=False) == expect_sync


@pytest.mark.parametrize(
    "url, words",
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("mysql://u@h/db", "Unsupported"),
        ("not a url", "Cannot parse"),
    ],
    ids=["memory", "memory-explicit", "mysql", "garbage"],
)
def test_unusable_urls_say_what_to_do(url, words):
    with pytest.raises(DatabaseURLError, match=words) as e:
        Database(url)
    assert "sqlite:///" in str(e.value)  # the message shows a URL that works


def test_safe_url_hides_the_password():
    db = Database("postgresql://wod:s3cret@db/wod")
    assert "s3cret" not in db.safe_url and "***" in db.safe_url
    assert "s3cret" not in repr(db)


def test_default_db_url_next_to_the_hub(tmp_path, monkeypatch):
    hub = tmp_path / "srv" / "jupyterhub.sqlite"
    assert default_db_url(f"sqlite:///{hub}") == f"sqlite:///{tmp_path / 'srv' / 'wod_hub.sqlite'}"
    monkeypatch.chdir(tmp_path)
    assert (
        default_db_url("sqlite:///jupyterhub.sqlite") == f"sqlite:///{tmp_path / 'wod_hub.sqlite'}"
    )
    # never the hub's PostgreSQL by surprise
    assert default_db_url("postgresql://hub@db/hub") == f"sqlite:///{tmp_path / 'wod_hub.sqlite'}"


def test_resolve_db_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WOD_HUB_DB_URL", raising=False)
    assert resolve_db_url(None) == f"sqlite:///{tmp_path / 'wod_hub.sqlite'}"
    monkeypatch.setenv("WOD_HUB_DB_URL", "postgresql://x@h/d")
    assert resolve_db_url(None) == "postgresql://x@h/d"
    assert resolve_db_url("sqlite:///given.sqlite") == "sqlite:///given.sqlite"


# ---- migrations ------------------------------------------------------------------------


def _tables(url: str) -> set[str]:
    engine = create_sync_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


async def test_migrate_creates_every_table(db):
    assert _tables(db.url) == WOD_TABLES | {VERSION_TABLE}
    assert await db.current() == head_revision()


async def test_migration_matches_orm(db):
    """The hand-checked migration and orm.py describe the same schema (both dialects)."""
    engine = create_sync_engine(db.url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, type_, _: type_ != "table" or name in WOD_TABLES,
                },
            )
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


async def test_migrate_twice_is_a_noop(db):
    before = _schema_dump(db.url)
    await db.migrate()
    assert _schema_dump(db.url) == before
    assert await db.current() == head_revision()


def _schema_dump(url: str) -> dict:
    engine = create_sync_engine(url)
    try:
        insp = inspect(engine)
        return {
            t: (
                [(c["name"], str(c["type"])) for c in insp.get_columns(t)],
                sorted(i["name"] for i in insp.get_indexes(t)),
            )
            for t in insp.get_table_names()
        }
    finally:
        engine.dispose()


async def test_concurrent_migrations_migrate_once(any_db_url):
    """Two processes starting at once (here: two threads) both end at head."""
    a, b = Database(any_db_url), Database(any_db_url)
    try:
        await asyncio.gather(a.migrate(), b.migrate())
        assert await a.current() == head_revision()
    finally:
        await a.dispose()
        await b.dispose()


@pytest.mark.slow
async def test_migrations_from_several_processes_at_once(any_db_url):
    """Three `wod-hub db upgrade` processes on one fresh database (hub + services starting
    together): all succeed, the schema is made once (BEGIN IMMEDIATE / advisory lock)."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wod_hub.cli", "db", "upgrade", "--db-url", any_db_url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(3)
    ]  # fmt: skip
    outputs = [(await p.communicate())[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert sum("upgraded (empty)" in out for out in outputs) >= 1
    assert _tables(any_db_url) == WOD_TABLES | {VERSION_TABLE}
    db = Database(any_db_url)
    try:
        assert await db.current() == head_revision()
    finally:
        await db.dispose()


async def test_cli_unreachable_database_says_so(capsys):
    parser = argparse.ArgumentParser(prog="wod-hub")
    db_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["db", "upgrade", "--db-url", "postgresql://nobody@127.0.0.1:1/nowhere"]
    )
    with pytest.raises(
        SystemExit, match="Cannot use the database postgresql://nobody@127.0.0.1:1/nowhere"
    ):
        await args.func(args)


async def test_cli_upgrade_twice_and_current(any_db_url, capsys):
    parser = argparse.ArgumentParser(prog="wod-hub")
    db_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["db", "current", "--db-url", any_db_url])
    assert await args.func(args) == 1  # not migrated yet: tells the operator what to run
    assert "wod-hub db upgrade" in capsys.readouterr().out

    args = parser.parse_args(["db", "upgrade", "--db-url", any_db_url])
    assert await args.func(args) == 0
    assert "upgraded (empty) -> " + head_revision() in capsys.readouterr().out
    assert await args.func(args) == 0
    assert "nothing to do" in capsys.readouterr().out

    args = parser.parse_args(["db", "current", "--db-url", any_db_url])
    assert await args.func(args) == 0
    assert "up to date" in capsys.readouterr().out


async def test_cli_default_url_from_env(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'from_env.sqlite'}"
    monkeypatch.setenv("WOD_HUB_DB_URL", url)
    parser = argparse.ArgumentParser(prog="wod-hub")
    db_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["db", "upgrade"])
    assert await args.func(args) == 0
    assert (tmp_path / "from_env.sqlite").exists()


async def test_hub_tables_untouched_when_sharing_a_file(tmp_path):
    """wod-hub's migrations in JupyterHub's own SQLite file leave the hub's tables and its
    alembic_version alone."""
    from jupyterhub import orm as hub_orm

    hub_file = tmp_path / "jupyterhub.sqlite"
    hub_orm.new_session_factory(f"sqlite:///{hub_file}")  # creates the hub's tables
    con = sqlite3.connect(hub_file)
    hub_version = con.execute("SELECT version_num FROM alembic_version").fetchall()
    hub_schema = dict(
        con.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name NOT LIKE 'wod_%'")
    )
    con.close()
    assert "users" in hub_schema and len(hub_version) == 1

    db = Database(f"sqlite:///{hub_file}")
    try:
        await db.migrate()
        await db.migrate()
    finally:
        await db.dispose()

    con = sqlite3.connect(hub_file)
    try:
        after = dict(
            con.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name NOT LIKE 'wod_%'")
        )
        assert after == hub_schema
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == hub_version
        assert con.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [
            (head_revision(),)
        ]
    finally:
        con.close()


# ---- constraints the database enforces ------------------------------------------------------


async def _participant(session, email="ada@example.org") -> Participant:
    p = Participant(email=email, first_name="Ada", last_name="Lovelace", company="AE")
    session.add(p)
    await session.flush()
    return p


async def test_one_live_registration_per_workshop(db):
    async with db.begin_write() as s:
        p = await _participant(s)
        s.add(Registration(participant_id=p.id, workshop_id="W", expires_at=utcnow()))
        s.add(
            Registration(
                participant_id=p.id, workshop_id="W", state=State.ended.value, expires_at=utcnow()
            )
        )
        s.add(
            Registration(
                participant_id=p.id, workshop_id="W", state=State.failed.value, expires_at=utcnow()
            )
        )
    with pytest.raises(IntegrityError):
        async with db.begin_write() as s:
            s.add(
                Registration(
                    participant_id=p.id,
                    workshop_id="W",
                    state=State.active.value,
                    expires_at=utcnow(),
                )
            )
    async with db.session() as s:
        assert (await s.execute(select(func.count(Registration.id)))).scalar_one() == 3


@pytest.mark.parametrize("in_use", [-1, 6], ids=["negative", "above-capacity"])
async def test_seat_counter_checks(db, in_use):
    async with db.begin_write() as s:
        s.add(WorkshopRow(id="W", capacity=5, configured_capacity=5, range_min=1, range_max=10))
    with pytest.raises(IntegrityError):
        async with db.begin_write() as s:
            await s.execute(update(WorkshopRow).values(seats_in_use=in_use))


# ---- transactions --------------------------------------------------------------------------------


async def test_begin_write_serializes_read_then_write(db):
    """40 read-modify-write transactions at once: none fails with "database is locked",
    none loses an update (BEGIN IMMEDIATE on SQLite, row lock on PostgreSQL)."""
    async with db.begin_write() as s:
        s.add(
            WorkshopRow(id="W", capacity=100, configured_capacity=100, range_min=1, range_max=100)
        )

    async def bump():
        async with db.begin_write() as s:
            row = (
                await s.execute(select(WorkshopRow).where(WorkshopRow.id == "W").with_for_update())
            ).scalar_one()
            await asyncio.sleep(0)  # let the others run in between read and write
            row.seats_in_use = row.seats_in_use + 1

    await asyncio.gather(*(bump() for _ in range(40)))
    async with db.session() as s:
        assert (await s.get(WorkshopRow, "W")).seats_in_use == 40


async def test_begin_write_rolls_back_on_error(db):
    with pytest.raises(RuntimeError):
        async with db.begin_write() as s:
            await _participant(s)
            raise RuntimeError("boom")
    async with db.session() as s:
        assert (await s.execute(select(func.count(Participant.id)))).scalar_one() == 0


async def test_run_write_serializes_with_begin_write(db):
    """Sync transactions (run_write: a worker thread on SQLite) and async ones
    (begin_write) interleaved: no lost update, no "database is locked"."""
    async with db.begin_write() as s:
        s.add(
            WorkshopRow(id="W", capacity=100, configured_capacity=100, range_min=1, range_max=100)
        )

    def bump_sync(session, by):
        row = session.execute(
            select(WorkshopRow).where(WorkshopRow.id == "W").with_for_update()
        ).scalar_one()
        row.seats_in_use = row.seats_in_use + by
        return row.seats_in_use

    async def bump_async():
        async with db.begin_write() as s:
            row = (
                await s.execute(select(WorkshopRow).where(WorkshopRow.id == "W").with_for_update())
            ).scalar_one()
            await asyncio.sleep(0)
            row.seats_in_use = row.seats_in_use + 1

    seen = await asyncio.gather(
        *(db.run_write(bump_sync, 1) for _ in range(20)), *(bump_async() for _ in range(20))
    )
    counts = [v for v in seen if v is not None]  # what each sync transaction committed
    assert len(counts) == len(set(counts)) == 20
    async with db.session() as s:
        assert (await s.get(WorkshopRow, "W")).seats_in_use == 40


async def test_run_write_rolls_back_on_error(db):
    def add_then_fail(session):
        session.add(Participant(email="x@example.org", first_name="A", last_name="L", company="AE"))
        session.flush()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await db.run_write(add_then_fail)
    async with db.session() as s:
        assert (await s.execute(select(func.count(Participant.id)))).scalar_one() == 0


async def test_sqlite_pragmas(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'w.sqlite'}")
    try:
        async with db.session() as s:
            conn = await s.connection()
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 10000
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await db.dispose()
