"""`wod-hub admin ...`: admin accounts for the hub login page.

wod-hub admin hash-password [--stdin]     print a hash for WorkshopAuthenticator.admin_password_hashes
wod-hub admin create NAME [--db-url URL]  store an admin account in wod-hub's database
"""

from __future__ import annotations

import getpass
import sys

from .. import tokens


def _read_password(args) -> str:
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise SystemExit("The two passwords differ; nothing was changed.")
    if len(password) < 12:
        raise SystemExit("Use at least 12 characters for an admin password; nothing was changed.")
    return password


def hash_password_cmd(args) -> int:
    print(tokens.hash_password(_read_password(args)))
    return 0


async def create_cmd(args) -> int:
    from sqlalchemy import select

    from ..db import Database, resolve_db_url
    from ..orm import AdminAccount

    name = args.name.strip().lower()
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise SystemExit(f"Admin names use letters, digits, - and _ only; got {args.name!r}.")
    if name.startswith("student"):
        raise SystemExit("Names starting with 'student' are reserved for workshop seats.")
    password_hash = await tokens.ahash_password(_read_password(args))
    db = Database(resolve_db_url(args.db_url))
    try:
        await db.migrate()
        async with db.begin_write() as session:
            account = (
                await session.execute(select(AdminAccount).where(AdminAccount.username == name))
            ).scalar_one_or_none()
            if account is None:
                session.add(AdminAccount(username=name, password_hash=password_hash))
                print(f"admin {name} created")
            else:
                account.password_hash = password_hash
                print(f"admin {name}: password changed")
    finally:
        await db.dispose()
    return 0


def add_parser(subparsers) -> None:
    admin = subparsers.add_parser("admin", help="admin accounts for the hub login page")
    sub = admin.add_subparsers(dest="admin_command", required=True)
    p = sub.add_parser(
        "hash-password",
        help="print a password hash for WorkshopAuthenticator.admin_password_hashes",
    )
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=hash_password_cmd)
    p = sub.add_parser(
        "create", help="create (or change the password of) an admin account in the database"
    )
    p.add_argument("name")
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")
    p.add_argument(
        "--db-url", default=None, help="wod-hub database URL (default: env WOD_HUB_DB_URL)"
    )
    p.set_defaults(func=create_cmd)
