"""Expiry sweep: 1,000 expired sessions ended by the lifecycle service, real hub + proxy.

What is measured (wall clock of one ``LifecycleService.sweep()``, in-process, least-privilege
token, ``--concurrency`` end paths in parallel): for every registration the whole end path
through the hub's REST API: claim, begin (password rotated, links revoked), stop the server
when one runs (``DELETE /users/{name}/server`` and watch it stop), CLEANUP (completion from the
home), PURGE (home wiped, hub user deleted, seat released), final e-mail queued (outbox,
dedupe key), ended. ``--servers`` of the students have a running server (JupyterHub's mock
single-user server); the others never started one (or it was culled). The hub's mail sender
is off: e-mails are counted queued, delivery is measured by the mail benchmark.

Baseline in the same run: stock JupyterHub (DummyAuthenticator, same spawner, same client and
concurrency) doing the hub side of it with its own REST API: stop the same servers (and wait),
delete the same users.

    python -m benchmarks.bench_sweep [--registrations 1000] [--servers 100] [--concurrency 20]
Target on this 2-core machine: 1,000 sessions ended in <= 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import bindparam, func, select, update  # noqa: E402

from tests.hubprocess import HubProcess  # noqa: E402
from tests.test_lifecycle_hub import LIFECYCLE_TOKEN, lifecycle_config, make_workshop  # noqa: E402
from wod_hub import seats, tokens  # noqa: E402
from wod_hub.db import Database  # noqa: E402
from wod_hub.hubclient import HubAPIError, HubClient  # noqa: E402
from wod_hub.orm import OutboxMessage, Participant, Registration, WorkshopRow, utcnow  # noqa: E402
from wod_hub.service import LifecycleService  # noqa: E402

TARGET_SECONDS = 60.0


async def gather_limited(n: int, coros):
    semaphore = asyncio.Semaphore(n)

    async def one(c):
        async with semaphore:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def start_servers(client: HubClient, names: list[str], concurrency: int) -> None:
    await gather_limited(concurrency, (client.post(f"/users/{n}/server") for n in names))
    deadline = time.monotonic() + 300
    pending = set(names)
    while pending and time.monotonic() < deadline:
        users = await gather_limited(
            concurrency, (client.get(f"/users/{n}") for n in sorted(pending))
        )
        pending -= {u["name"] for u in users if u["servers"].get("", {}).get("ready")}
        await asyncio.sleep(0.5)
    if pending:
        raise RuntimeError(f"{len(pending)} servers did not start")


async def stop_and_wait(client: HubClient, name: str) -> None:
    await client.delete(f"/users/{name}/server")
    while "" in ((await client.get(f"/users/{name}")).get("servers") or {}):
        await asyncio.sleep(0.2)


async def delete_user(client: HubClient, name: str) -> None:
    try:
        await client.delete(f"/users/{name}")
    except HubAPIError as e:
        if e.status != 404:
            raise


async def baseline(workdir: Path, n: int, servers: int, concurrency: int) -> float:
    hub = HubProcess(
        workdir / "stock", stock=True, extra_config="c.JupyterHub.concurrent_spawn_limit = 0\n"
    )
    hub.start()
    try:
        names = [f"student{i}" for i in range(1, n + 1)]
        async with HubClient(hub.url, hub.api_token, timeout=300) as client:
            await client.post("/users", {"usernames": names})
            await start_servers(client, names[:servers], concurrency)
            started = time.perf_counter()
            await gather_limited(concurrency, (stop_and_wait(client, m) for m in names[:servers]))
            await gather_limited(concurrency, (delete_user(client, m) for m in names))
            return time.perf_counter() - started
    finally:
        hub.stop()


async def seed(hub: HubProcess, n: int) -> None:
    """n participants with an expired registration each, a seat, and their hub user."""
    key = os.urandom(32)
    db = Database(hub.db_url)
    try:
        async with db.begin_write() as s:
            now = utcnow()
            for i in range(n):
                p = Participant(
                    email=f"p{i}@example.org", first_name="Ada", last_name=f"L{i}", company="ACME"
                )
                s.add(p)
                await s.flush()
                r = Registration(
                    participant_id=p.id,
                    workshop_id="WKSHP-Bench",
                    state="active",
                    expires_at=now + timedelta(hours=2),
                )
                s.add(r)
                await s.flush()
                seat = await seats.allocate_seat(s, "WKSHP-Bench", r.id)
                seat.password_hash = tokens.hash_generated_secret(
                    tokens.derive_secret(key, "seat", seat.student_number)
                )
                r.student_number, r.username = seat.student_number, seat.username
    finally:
        await db.dispose()


async def expire_all(hub: HubProcess) -> None:
    """Every session ended at some point of the last hour (servers or not, in any order)."""
    db = Database(hub.db_url)
    rng = random.Random(42)
    try:
        async with db.begin_write() as s:
            ids = (await s.execute(select(Registration.id))).scalars().all()
            now = utcnow()
            await s.execute(
                update(Registration.__table__).where(
                    Registration.__table__.c.id == bindparam("rid")
                ),
                [
                    {"rid": i, "expires_at": now - timedelta(seconds=rng.randint(60, 3600))}
                    for i in ids
                ],
            )
    finally:
        await db.dispose()


async def outcome(hub: HubProcess) -> dict:
    db = Database(hub.db_url)
    try:
        async with db.session() as s:
            return {
                "ended": (
                    await s.execute(select(func.count()).where(Registration.state == "ended"))
                ).scalar_one(),
                "seats_in_use": (await s.get(WorkshopRow, "WKSHP-Bench")).seats_in_use,
                "finals": (
                    await s.execute(select(func.count()).where(OutboxMessage.template == "final"))
                ).scalar_one(),
            }
    finally:
        await db.dispose()


async def wod(workdir: Path, n: int, servers: int, concurrency: int) -> tuple[float, dict]:
    workshops = workdir / "workshops"
    make_workshop(workshops, "WKSHP-Bench", 1, n, "")
    (workshops / "WKSHP-Bench" / "workshop.yaml").write_text(
        (workshops / "WKSHP-Bench" / "workshop.yaml")
        .read_text()
        .replace("capacity: 10", f"capacity: {n}")
    )
    extra = lifecycle_config(workdir / "wod", badges=False) + (
        "c.WorkshopAuthenticator.send_mail = False\nc.JupyterHub.concurrent_spawn_limit = 0\n"
    )
    hub = HubProcess(workdir / "wod", workshop_dirs=[workshops], extra_config=extra)
    hub.start()
    try:
        await seed(hub, n)
        names = [f"student{i}" for i in range(1, n + 1)]
        async with HubClient(hub.url, hub.api_token, timeout=300) as client:
            await client.post("/users", {"usernames": names})
            await start_servers(client, names[:servers], concurrency)
        await expire_all(hub)
        svc = LifecycleService(
            url=hub.api_url,
            api_token=LIFECYCLE_TOKEN,
            worker_id=f"bench-{secrets.token_hex(2)}",
            concurrency=concurrency,
            guard_enabled=False,
        )
        svc.connect()
        try:
            started = time.perf_counter()
            report = await svc.sweep()
            elapsed = time.perf_counter() - started
        finally:
            svc.close()
        result = await outcome(hub)
        async with HubClient(hub.url, hub.api_token) as client:
            result["hub_users_left"] = len(
                [u for u in await client.get("/users") if u["name"].startswith("student")]
            )
        result["failed"] = len(report.failed)
        return elapsed, result
    finally:
        hub.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registrations", type=int, default=1000)
    ap.add_argument(
        "--servers", type=int, default=100, help="how many of them have a running server"
    )
    ap.add_argument("--concurrency", type=int, default=20)
    args = ap.parse_args(argv)
    n, servers, c = args.registrations, min(args.servers, args.registrations), args.concurrency
    with tempfile.TemporaryDirectory(prefix="wod-bench-sweep-") as tmp:
        workdir = Path(tmp)
        stock = asyncio.run(baseline(workdir, n, servers, c))
        elapsed, result = asyncio.run(wod(workdir, n, servers, c))
    print(
        f"wod-hub lifecycle sweep: {n} expired sessions ({servers} with a running server), concurrency {c}"
    )
    print(
        f"  ended {result['ended']}/{n} in {elapsed:.1f} s = {n / elapsed:.1f} sessions/s, failed {result['failed']}"
    )
    print(
        f"  seats in use after: {result['seats_in_use']}, final e-mails queued: {result['finals']}, "
        f"hub users left: {result['hub_users_left']}"
    )
    print(
        f"stock JupyterHub, same hub-side work over its REST API (stop {servers} servers, delete {n} users):"
    )
    print(f"  {stock:.1f} s = {n / stock:.1f} users/s")
    print(
        f"ratio wod-hub / stock: {elapsed / stock:.2f}x the time (wod-hub also runs CLEANUP/PURGE, seats, e-mails)"
    )
    ok = (
        elapsed <= TARGET_SECONDS
        and result["ended"] == n
        and result["seats_in_use"] == 0
        and result["finals"] == n
        and result["hub_users_left"] == 0
    )
    print(
        f"target <= {TARGET_SECONDS:.0f} s for {n}, every seat back, one final e-mail each: {'PASS' if ok else 'MISS'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
