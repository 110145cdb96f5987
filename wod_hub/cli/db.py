"""`wod-hub db ...`: wod-hub's database schema.

    wod-hub db upgrade [--db-url URL]   apply the migrations (idempotent)
    wod-hub db current [--db-url URL]   show the applied revision and the newest one

URL: ``--db-url``, else env ``WOD_HUB_DB_URL``, else ``sqlite:///wod_hub.sqlite`` in the
working directory. The hub migrates on start too; this is for operators and deploy
scripts (e.g. migrate once before rolling several hubs).
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from ..db import ENV_DB_URL, Database, DatabaseURLError, head_revision, resolve_db_url


def _database(args) -> Database:
    try:
        return Database(resolve_db_url(args.db_url))
    except DatabaseURLError as e:
        raise SystemExit(str(e)) from None


def _unreachable(db: Database, error: OperationalError) -> SystemExit:
    return SystemExit(f"Cannot use the database {db.safe_url}: {error.orig or error}")


async def upgrade_cmd(args) -> int:
    db = _database(args)
    try:
        before = await db.current()
        await db.migrate()
        after = await db.current()
    except OperationalError as e:
        raise _unreachable(db, e) from None
    finally:
        await db.dispose()
    if before == after:
        print(f"{db.safe_url}: already at {after} (nothing to do)")
    else:
        print(f"{db.safe_url}: upgraded {before or '(empty)'} -> {after}")
    return 0


async def current_cmd(args) -> int:
    db = _database(args)
    try:
        current = await db.current()
    except OperationalError as e:
        raise _unreachable(db, e) from None
    finally:
        await db.dispose()
    head = head_revision()
    state = "up to date" if current == head else "run `wod-hub db upgrade`"
    print(f"{db.safe_url}: {current or '(not migrated)'} (newest: {head}; {state})")
    return 0 if current == head else 1


def add_parser(subparsers) -> None:
    db = subparsers.add_parser("db", help="wod-hub's database schema (migrations)")
    sub = db.add_subparsers(dest="db_command", required=True)
    url_help = (
        f"wod-hub database URL (default: env {ENV_DB_URL}, else sqlite:///wod_hub.sqlite here)"
    )
    p = sub.add_parser("upgrade", help="apply the migrations up to the newest (idempotent)")
    p.add_argument("--db-url", default=None, help=url_help)
    p.set_defaults(func=upgrade_cmd)
    p = sub.add_parser("current", help="show the applied revision; exit 1 if not the newest")
    p.add_argument("--db-url", default=None, help=url_help)
    p.set_defaults(func=current_cmd)
