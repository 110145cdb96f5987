"""Registration burst against a real hub + proxy (SQLite), servers not started.

300 registrations from 50 concurrent clients, each client behaving like a
browser (GET the login page for the _xsrf token, POST the form). Baseline in
the same run: stock JupyterHub (DummyAuthenticator) answering the same number
of login POSTs from the same number of clients.

    python -m benchmarks.bench_register [--registrations 300] [--clients 50]
Target on this 2-core machine: >= 50 registrations/s, p99 <= 1 s, 0 duplicates.

Also printed: how long after the last answer every student's hub user exists (they are
created in the background when registrations pause, see :mod:`wod_hub.hubusers`) and
the sustained rate with that work included.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hubprocess import HubProcess  # noqa: E402

XSRF = re.compile(r'name="_xsrf" value="([^"]+)"')


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def write_workshop(root: Path, capacity: int) -> Path:
    d = root / "WKSHP-Bench"
    d.mkdir(parents=True)
    (d / "workshop.yaml").write_text(
        textwrap.dedent(
            f"""
            name: Benchmark workshop
            description: Registration burst target.
            duration: 2h
            capacity: {capacity}
            students: 1-{capacity}
            """
        )
    )
    nb = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    (d / "0-ReadMeFirst.ipynb").write_text(nb)
    return root


async def hub_users_ready(hub, group: str, n: int, timeout: float = 120) -> float | None:
    """Seconds until the hub group holds ``n`` users (the background creation), or None."""
    t0 = time.perf_counter()
    headers = {"Authorization": f"token {hub.api_token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        while time.perf_counter() - t0 < timeout:
            async with s.get(f"{hub.url}/hub/api/groups/{group}") as r:
                if r.status == 200 and len((await r.json())["users"]) >= n:
                    return time.perf_counter() - t0
            await asyncio.sleep(0.5)  # light polling: the hub is busy creating them
    return None


async def burst_then_hub_users(hub, n, clients, path, fields) -> dict:
    res = await burst(hub.url, n, clients, path, fields)
    res["hub_users_after"] = await hub_users_ready(hub, "WKSHP-Bench", n)
    return res


async def burst(url: str, n: int, clients: int, post_path: str, fields) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bodies: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def client():
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                s.cookie_jar.clear()  # each registrant is a new browser
                async with s.get(url + "/hub/login") as r:
                    xsrf = XSRF.search(await r.text()).group(1)
                t0 = time.perf_counter()
                async with s.post(
                    url + post_path, data={"_xsrf": xsrf, **fields(i)}, allow_redirects=False
                ) as r:
                    body = await r.text()
                latencies.append(time.perf_counter() - t0)
                statuses[r.status] = statuses.get(r.status, 0) + 1
                bodies.append(body)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {"wall": wall, "latencies": latencies, "statuses": statuses, "bodies": bodies}


def report(name: str, res: dict, n: int) -> float:
    lat = res["latencies"]
    rate = n / res["wall"]
    print(
        f"{name:<28} {rate:7.1f}/s  p50 {statistics.median(lat) * 1000:6.0f} ms  "
        f"p95 {percentile(lat, 95) * 1000:6.0f} ms  p99 {percentile(lat, 99) * 1000:6.0f} ms  statuses {res['statuses']}"
    )
    return rate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registrations", type=int, default=300)
    ap.add_argument("--clients", type=int, default=50)
    args = ap.parse_args(argv)
    n, clients = args.registrations, args.clients
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # stock JupyterHub baseline: DummyAuthenticator login POSTs
        stock = HubProcess(tmp / "stock", spawner="none", stock=True).start()
        try:
            base = asyncio.run(
                burst(
                    stock.url,
                    n,
                    clients,
                    "/hub/login",
                    lambda i: {"username": f"user{i}", "password": "x"},
                )
            )
        finally:
            stock.stop()

        wdir = write_workshop(tmp / "workshops", capacity=n)
        hub = HubProcess(
            tmp / "wod",
            workshop_dirs=[wdir],
            spawner="none",
            extra_config="""
            c.WorkshopAuthenticator.registration_limit_per_ip = 0
            c.WorkshopAuthenticator.registration_limit_per_email = 0
            c.WorkshopAuthenticator.send_mail = False
            """,
        ).start()
        try:
            res = asyncio.run(
                burst_then_hub_users(
                    hub,
                    n,
                    clients,
                    "/hub/wod/register",
                    lambda i: {
                        "email": f"bench{i}@example.org",
                        "first_name": "Bench",
                        "last_name": f"Mark{i}",
                        "company": "ACME",
                        "workshop": "WKSHP-Bench",
                        "terms": "on",
                    },
                )
            )
        finally:
            hub.stop()

    students = [
        m.group(1)
        for b in res["bodies"]
        for m in [re.search(r'id="wod-username">(student\d+)<', b)]
        if m
    ]
    duplicates = len(students) - len(set(students))
    print(
        f"registration burst: {n} registrations from {clients} concurrent clients (SQLite, servers not started)"
    )
    base_rate = report("stock JupyterHub login", base, n)
    rate = report("wod-hub registration", res, n)
    p99 = percentile(res["latencies"], 99)
    print(
        f"registered: {len(students)}  duplicates: {duplicates}  ratio vs stock login throughput: {rate / base_rate:.2f}"
    )
    ok = rate >= 50 and p99 <= 1.0 and duplicates == 0 and len(students) == n
    print(f"target >= 50/s, p99 <= 1 s, 0 duplicates: {'PASS' if ok else 'MISS'}")
    after = res["hub_users_after"]
    if after is None:
        print("hub users: not all created within 120 s of the last answer")
    else:
        sustained = n / (res["wall"] + after)
        print(
            f"hub users (JupyterHub's own user creation, at quiet moments): all {n} in their "
            f"group {after:.1f} s after the last answer, {n / after:.0f} users/s; sustained rate "
            f"with them included: {sustained:.1f}/s ({'>=' if sustained >= 50 else 'below'} 50/s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
