"""wod-hub's own database: engine, short session scopes, safe write transactions, migrations.

Users give plain URLs (``sqlite:///path/wod_hub.sqlite``, ``postgresql://user@host/db``);
:class:`Database` maps them to the async drivers for the app (``sqlite+aiosqlite``,
``postgresql+psycopg``) and to sync ones for alembic.

Write transactions (:meth:`Database.begin_write`) are safe under concurrency:

- SQLite: WAL journal, a busy timeout and ``BEGIN IMMEDIATE``, so concurrent writers
  queue for the write lock at the start of their transaction instead of failing half
  way with "database is locked" (a deferred transaction that reads first and writes
  later cannot wait for the lock: SQLite refuses it at once).
- PostgreSQL: READ COMMITTED; code that must not race takes row locks or uses
  conditional updates (see :mod:`wod_hub.seats`, :mod:`wod_hub.tokens`).

Never JupyterHub's ORM nor ``Authenticator.db``: this database may be a file of its
own or share one with the hub, whose tables it never touches (own alembic version
table ``wod_alembic_version``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

log = logging.getLogger("wod_hub.db")

PACKAGE_DIR = Path(__file__).resolve().parent
ALEMBIC_INI = PACKAGE_DIR / "alembic.ini"
ALEMBIC_DIR = PACKAGE_DIR / "alembic"
VERSION_TABLE = "wod_alembic_version"

ENV_DB_URL = "WOD_HUB_DB_URL"
DEFAULT_SQLITE_NAME = "wod_hub.sqlite"

# How long a SQLite writer waits for the write lock before giving up.
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0

_POSTGRES_NAMES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"}
_SQLITE_NAMES = {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}


class DatabaseURLError(ValueError):
    """A database URL wod-hub cannot use; the message says what to write instead."""


def _parse(db_url: str) -> URL:
    try:
        url = make_url(db_url)
    except ArgumentError:
        raise DatabaseURLError(
            f"Cannot parse the database URL {db_url!r}: use sqlite:///path/to/wod_hub.sqlite "
            "or postgresql://user@host:5432/dbname"
        ) from None
    name = url.drivername
    if name in _SQLITE_NAMES:
        if url.database in (None, "", ":memory:"):
            raise DatabaseURLError(
                f"The in-memory SQLite URL {db_url!r} cannot be shared by several connections: "
                "give a file, e.g. sqlite:///wod_hub.sqlite"
            )
        return url
    if name in _POSTGRES_NAMES:
        return url
    raise DatabaseURLError(
        f"Unsupported database URL {url.render_as_string(hide_password=True)!r}: wod-hub runs on "
        "SQLite (sqlite:///path) and PostgreSQL (postgresql://user@host/db)"
    )


def dialect_of(db_url: str) -> str:
    """``"sqlite"`` or ``"postgresql"``."""
    return "sqlite" if _parse(db_url).drivername in _SQLITE_NAMES else "postgresql"


def async_url(db_url: str) -> URL:
    """The URL with the async driver the app uses."""
    url = _parse(db_url)
    if url.drivername in _SQLITE_NAMES:
        return url.set(drivername="sqlite+aiosqlite")
    return url.set(drivername="postgresql+psycopg")


def sync_url(db_url: str) -> URL:
    """The URL with the sync driver alembic uses."""
    url = _parse(db_url)
    if url.drivername in _SQLITE_NAMES:
        return url.set(drivername="sqlite")
    return url.set(drivername="postgresql+psycopg")


def resolve_db_url(db_url: str | None = None) -> str:
    """The URL given, else env ``WOD_HUB_DB_URL``, else ``wod_hub.sqlite`` in the working dir."""
    if db_url:
        return db_url
    from_env = os.environ.get(ENV_DB_URL, "").strip()
    if from_env:
        return from_env
    return f"sqlite:///{Path.cwd() / DEFAULT_SQLITE_NAME}"


def default_db_url(hub_db_url: str) -> str:
    """wod-hub's default database next to the hub's SQLite file.

    ``sqlite:///srv/jupyterhub/jupyterhub.sqlite`` -> ``sqlite:////srv/jupyterhub/wod_hub.sqlite``.
    For any other hub database (PostgreSQL, in-memory) the default is ``wod_hub.sqlite`` in the
    working directory: sharing a PostgreSQL database is allowed but must be asked for explicitly.
    """
    try:
        url = make_url(hub_db_url)
    except ArgumentError:
        url = None
    if (
        url is not None
        and url.drivername in _SQLITE_NAMES
        and url.database not in (None, "", ":memory:")
    ):
        directory = Path(url.database).expanduser().resolve().parent
    else:
        directory = Path.cwd()
    return f"sqlite:///{directory / DEFAULT_SQLITE_NAME}"


def _sqlite_on_connect(dbapi_connection, foreign_keys: bool) -> None:
    # take transaction control away from the driver: our "begin" listener emits BEGIN
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.execute("PRAGMA journal_mode")
        if cursor.fetchone()[0].lower() != "wal":
            try:  # persistent; switching needs a moment alone with the file
                cursor.execute("PRAGMA journal_mode = WAL")
            except Exception as e:  # another connection is busy: a later one switches
                log.debug("SQLite WAL switch postponed: %s", e)
        cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL, much faster commits
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    finally:
        cursor.close()


def _install_sqlite_transactions(engine: Engine, foreign_keys: bool) -> None:
    """SQLAlchemy's pysqlite/aiosqlite recipe: the driver emits no BEGIN, we do.

    A connection whose execution options carry ``wod_begin="IMMEDIATE"`` starts its
    transaction with ``BEGIN IMMEDIATE`` (takes the write lock now, waiting up to the busy
    timeout); others with a plain deferred ``BEGIN``.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        _sqlite_on_connect(dbapi_connection, foreign_keys)

    @event.listens_for(engine, "begin")
    def _begin(conn):
        mode = conn.get_execution_options().get("wod_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


def create_sync_engine(db_url: str, **kwargs) -> Engine:
    """A sync engine (for alembic and tools) with the same transaction rules as the app.

    Foreign keys stay off on SQLite here: alembic's batch mode copies tables, which
    must not fire ON DELETE actions.
    """
    url = sync_url(db_url)
    if url.drivername == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}, **kwargs)
        _install_sqlite_transactions(engine, foreign_keys=False)
        return engine
    return create_engine(url, isolation_level="READ COMMITTED", **kwargs)


class Database:
    """wod-hub's engine and session factory.

    ``async with db.session() as s``: a short read (or ad-hoc) scope; commit yourself.
    ``async with db.begin_write() as s``: a write transaction, committed on success and
    rolled back on any exception.
    """

    def __init__(self, db_url: str, echo: bool = False):
        self.url = db_url
        self.dialect = dialect_of(db_url)
        self.async_url = async_url(db_url)
        self.sync_url = sync_url(db_url)
        if self.dialect == "sqlite":
            self.engine: AsyncEngine = create_async_engine(
                self.async_url,
                echo=echo,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            _install_sqlite_transactions(self.engine.sync_engine, foreign_keys=True)
            write_engine = self.engine.execution_options(wod_begin="IMMEDIATE")
        else:
            self.engine = create_async_engine(
                self.async_url,
                echo=echo,
                isolation_level="READ COMMITTED",
                pool_pre_ping=True,
            )
            write_engine = self.engine
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self.write_sessionmaker = async_sessionmaker(write_engine, expire_on_commit=False)
        # SQLite, hot write paths (run_write): a sync engine on the same file, used from a
        # worker thread, so a transaction never waits on a busy event loop between its
        # statements while it holds the (single) write lock
        self._sync_write_engine: Engine | None = None
        # SQLite has one writer at a time. Inside this process, writers queue on an
        # asyncio lock (FIFO, no polling); other processes still meet the busy timeout.
        # Without it, concurrent writers spin in SQLite's busy handler (sleeps up to
        # 100 ms, unfair) while holding pool connections: a burst collapses.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs and messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def __repr__(self) -> str:
        return f"<Database {self.safe_url}>"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def begin_write(self) -> AsyncIterator[AsyncSession]:
        if self._write_lock is None:
            async with self._begin_write() as session:
                yield session
        else:
            async with self._write_lock, self._begin_write() as session:
                yield session

    @asynccontextmanager
    async def _begin_write(self) -> AsyncIterator[AsyncSession]:
        async with self.write_sessionmaker() as session:
            async with session.begin():
                # take the SQLite write lock now, not at the first write
                await session.connection()
                yield session

    async def run_write(self, fn, *args, **kwargs):
        """``fn(session, *args, **kwargs)`` in one write transaction; returns what it returns.

        ``fn`` is sync code on a :class:`~sqlalchemy.orm.Session` (plain values out: its ORM
        objects are not for the caller). Committed on success, rolled back on any exception.
        SQLite: the whole transaction runs in a worker thread on a sync connection, under
        the same in-process write lock as :meth:`begin_write` (a transaction of ten
        statements is a few milliseconds there, not ten trips through a busy event loop).
        PostgreSQL: :meth:`~sqlalchemy.ext.asyncio.AsyncSession.run_sync` in
        :meth:`begin_write`.
        """
        if self._write_lock is None:
            async with self.begin_write() as session:
                return await session.run_sync(fn, *args, **kwargs)
        async with self._write_lock:
            return await asyncio.to_thread(self._run_write_sync, fn, args, kwargs)

    def _run_write_sync(self, fn, args, kwargs):
        if self._sync_write_engine is None:
            engine = create_engine(
                self.sync_url,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            _install_sqlite_transactions(engine, foreign_keys=True)
            self._sync_write_engine = engine.execution_options(wod_begin="IMMEDIATE")
        with Session(self._sync_write_engine, expire_on_commit=False) as session:
            with session.begin():
                return fn(session, *args, **kwargs)

    async def migrate(self) -> None:
        """``alembic upgrade head`` in a worker thread (the loop never blocks)."""
        await asyncio.to_thread(upgrade, self.url)

    async def current(self) -> str | None:
        """The applied revision, or None for a database wod-hub never migrated."""
        return await asyncio.to_thread(current_revision, self.url)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._sync_write_engine is not None:
            self._sync_write_engine.engine.dispose()


# ---- migrations (sync: run them in a thread from async code) ------------------------


def alembic_config(db_url: str):
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    # configparser interpolation: a literal % must be doubled
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    cfg.attributes["wod_db_url"] = db_url
    return cfg


def _ensure_sqlite_dir(db_url: str) -> None:
    url = _parse(db_url)
    if url.drivername in _SQLITE_NAMES:
        Path(url.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


# alembic's ``context`` is a module-level proxy: one command at a time per process
# (across processes, env.py serializes on the database)
_ALEMBIC_LOCK = threading.Lock()


def upgrade(db_url: str, revision: str = "head") -> None:
    from alembic import command

    _ensure_sqlite_dir(db_url)
    log.info(
        "Migrating wod-hub database %s to %s", make_url(db_url).render_as_string(True), revision
    )
    with _ALEMBIC_LOCK:
        command.upgrade(alembic_config(db_url), revision)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite:///unused.sqlite")).get_current_head()


def current_revision(db_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    url = _parse(db_url)
    if url.drivername in _SQLITE_NAMES and not Path(url.database).expanduser().exists():
        return None  # asking must not create the file
    engine = create_sync_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()
    finally:
        engine.dispose()
