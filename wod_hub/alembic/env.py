"""Alembic environment for wod-hub's own tables.

- own version table ``wod_alembic_version``: shares a database with JupyterHub safely;
- only ``wod_*`` tables are compared or touched (autogenerate ignores the hub's);
- ``render_as_batch`` so ALTERs work on SQLite (table copy);
- one transaction, serialized: ``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
  PostgreSQL, so two processes starting at once migrate once.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from wod_hub.db import VERSION_TABLE, create_sync_engine
from wod_hub.orm import Base

config = context.config
target_metadata = Base.metadata

# any 64-bit number unique to wod-hub's migrations
PG_MIGRATION_LOCK = 0x574F442D485542  # "WOD-HUB"


def _db_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("db_url")
    url = url or config.attributes.get("wod_db_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit(
            "No database URL: use `wod-hub db upgrade --db-url URL` or `-x db_url=URL`."
        )
    return url


def include_name(name, type_, parent_names) -> bool:
    if type_ == "table":
        return name is not None and name.startswith("wod_") and name != VERSION_TABLE
    return True


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=True,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_db_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_sync_engine(_db_url(), execution_options={"wod_begin": "IMMEDIATE"})
    try:
        with engine.connect() as connection:
            # SQLite DDL is transactional once the driver stops managing transactions (db.py)
            _configure(
                connection=connection, transactional_ddl=True, transaction_per_migration=False
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK}
                    )
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
