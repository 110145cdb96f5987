"""Cold spawn: registration to a ready JupyterLab, against stock JupyterHub's login to ready.

Two real hubs + proxies run side by side on the same machine, with the same base spawner
(SimpleLocalProcessSpawner) and the same server (jupyterhub-singleuser / JupyterLab):

- wod-hub: GET the login page, then time: POST the registration form (a sample workshop
  from workshops/), sign in with the student's name and password shown on the page, GET
  /hub/spawn/<student> (render the notebooks, start the server), until the hub reports
  the server ready;
- stock:   GET the login page, then time: POST /hub/login (DummyAuthenticator), GET
  /hub/spawn/<user>, until ready.

Each round uses a new participant / user (cold: new home, nothing rendered yet); rounds
alternate between the hubs and each server is stopped before the next round.

    python -m benchmarks.bench_spawn [--rounds 11] [--workshop WKSHP-Python101]
Target: median(wod-hub) / median(stock) <= 1.10.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hubprocess import WORKSHOPS, HubProcess, xsrf_from  # noqa: E402

TARGET = 1.10
READY_TIMEOUT = 180


def server_config(homes: Path, spawner_class: str, section: str) -> str:
    singleuser = Path(sys.executable).parent / "jupyterhub-singleuser"
    args = '["--ServerApp.allow_root=True"]' if os.geteuid() == 0 else "[]"
    return (
        f"c.JupyterHub.spawner_class = {spawner_class!r}\n"
        f'c.{section}.home_dir_template = "{homes}/{{username}}"\n'
        f"c.Spawner.cmd = [{str(singleuser)!r}]\n"
        f"c.Spawner.args = {args}\n"
        "c.Spawner.start_timeout = 180\n"
        "c.Spawner.http_timeout = 180\n"
    )


def wait_ready(hub: HubProcess, name: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        server = hub.api("GET", f"/users/{name}").json().get("servers", {}).get("")
        if server and server.get("ready"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} not ready after {READY_TIMEOUT}s:\n{hub.log_tail()}")


def stop(hub: HubProcess, name: str) -> None:
    hub.api("DELETE", f"/users/{name}/server")
    deadline = time.monotonic() + 60
    while hub.api("GET", f"/users/{name}").json().get("servers") and time.monotonic() < deadline:
        time.sleep(0.1)


def spawn_and_wait(browser: requests.Session, hub: HubProcess, name: str) -> None:
    r = browser.get(f"{hub.url}/hub/spawn/{name}", allow_redirects=False, timeout=60)
    if r.status_code not in (200, 302):
        raise RuntimeError(f"spawn of {name}: {r.status_code} {r.text[:300]}")
    wait_ready(hub, name)


def stock_round(hub: HubProcess, i: int) -> float:
    browser = requests.Session()
    name = f"bench{i}"
    xsrf = xsrf_from(browser.get(hub.url + "/hub/login", timeout=30).text)
    t0 = time.perf_counter()
    r = browser.post(
        hub.url + "/hub/login",
        data={"_xsrf": xsrf, "username": name, "password": "x"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 302, r.text
    spawn_and_wait(browser, hub, name)
    elapsed = time.perf_counter() - t0
    stop(hub, name)
    return elapsed


def wod_round(hub: HubProcess, i: int, workshop: str) -> float:
    browser = requests.Session()
    xsrf = xsrf_from(browser.get(hub.url + "/hub/login", timeout=30).text)
    t0 = time.perf_counter()
    r = browser.post(
        hub.url + "/hub/wod/register",
        data={
            "_xsrf": xsrf,
            "email": f"bench{i}@example.org",
            "first_name": "Bench",
            "last_name": f"Mark{i}",
            "company": "ACME",
            "workshop": workshop,
            "terms": "on",
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text[:500]
    name = re.search(r'id="wod-username">(student\d+)<', r.text).group(1)
    password = re.search(r'id="wod-password">([^<]+)<', r.text).group(1)
    r = browser.post(
        hub.url + "/hub/login",
        data={"_xsrf": xsrf, "username": name, "password": password},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 302, r.text[:500]
    spawn_and_wait(browser, hub, name)
    elapsed = time.perf_counter() - t0
    stop(hub, name)
    return elapsed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--workshop", default="WKSHP-Python101")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stock = HubProcess(
            tmp / "stock",
            stock=True,
            spawner=server_config(tmp / "stock-homes", "simple", "SimpleLocalProcessSpawner"),
        )
        wod = HubProcess(
            tmp / "wod",
            workshop_dirs=[WORKSHOPS],
            spawner=server_config(tmp / "wod-homes", "wod-simple", "WorkshopSimpleSpawner"),
            extra_config="""
            c.WorkshopAuthenticator.registration_limit_per_ip = 0
            c.WorkshopAuthenticator.send_mail = False
            """,
        )
        stock.start()
        wod.start()
        try:
            # one warm-up each: first imports, page caches (not counted)
            stock_round(stock, 0)
            wod_round(wod, 0, args.workshop)
            stock_times, wod_times = [], []
            for i in range(1, args.rounds + 1):
                # alternate the order so neither hub always runs right after the other
                if i % 2:
                    stock_times.append(stock_round(stock, i))
                    wod_times.append(wod_round(wod, i, args.workshop))
                else:
                    wod_times.append(wod_round(wod, i, args.workshop))
                    stock_times.append(stock_round(stock, i))
                print(
                    f"round {i}: stock {stock_times[-1]:.2f}s  wod-hub {wod_times[-1]:.2f}s",
                    flush=True,
                )
        finally:
            stock.stop()
            wod.stop()
    s, w = statistics.median(stock_times), statistics.median(wod_times)
    ratio = w / s
    paired = statistics.median(wt / st for wt, st in zip(wod_times, stock_times, strict=True))
    print(f"cold spawn to ready, {args.rounds} rounds (JupyterLab, SimpleLocalProcessSpawner):")
    print(
        f"  stock JupyterHub login -> ready       median {s:.2f}s  (min {min(stock_times):.2f}, max {max(stock_times):.2f})"
    )
    print(
        f"  wod-hub register -> ready ({args.workshop})  median {w:.2f}s  (min {min(wod_times):.2f}, max {max(wod_times):.2f})"
    )
    print(f"  median of per-round ratios {paired:.3f} (load moves both hubs alike within a round)")
    print(
        f"  ratio of medians {ratio:.3f}  target <= {TARGET:.2f}: {'PASS' if ratio <= TARGET else 'MISS'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
