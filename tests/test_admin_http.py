"""The workshop admin pages and API through a real hub + proxy, like a browser and a
script use them: scopes on every route, confirmations, actions through the lifecycle
steps, CSV, the outbox, and the hub's own admin panel (its REST API) staying consistent."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from tests.hubprocess import HubProcess, register, xsrf_from
from tests.smtp import SMTPServer, text_of
from wod_hub.db import Database
from wod_hub.orm import Event, OutboxMessage, Registration, Seat, WorkshopRow, utcnow

LINK = re.compile(r"(http://127\.0\.0\.1:\d+/hub/wod/start\?token=[A-Za-z0-9_\-.%]+)")
SPECS = (("WKSHP-Alpha", 5, 1, 10), ("WKSHP-Beta", 20, 101, 200), ("WKSHP-Gamma", 50, 201, 300))


# ---- helpers shared by the admin test modules ------------------------------------------------


def make_workshops(root: Path, *specs) -> Path:
    """specs: (id, capacity, range_min, range_max); each workshop has one notebook."""
    for wid, capacity, lo, hi in specs:
        d = root / wid
        d.mkdir(parents=True)
        (d / "workshop.yaml").write_text(
            textwrap.dedent(
                f"""
                name: {wid} test workshop
                description: A workshop for tests.
                duration: 2h
                capacity: {capacity}
                students: {lo}-{hi}
                """
            )
        )
        (d / "0-ReadMeFirst.ipynb").write_text(
            '{"cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": "Hello student{{ STDID }}"},'
            ' {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": null, "outputs": [],'
            ' "source": "print(1)"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
        )
    return root


def admin_extra_config() -> str:
    return """
    c.WorkshopAuthenticator.registration_limit_per_ip = 0
    c.WorkshopAuthenticator.registration_limit_per_email = 0
    c.WorkshopAuthenticator.recover_limit_per_email = 0
    c.JupyterHub.load_roles = [{"name": "tests", "scopes": ["admin:users", "admin:servers", "admin:groups", "list:users", "read:users", "read:metrics", "tokens"], "services": ["tests"]}]
    c.MetricsRefresher.interval = 5
    c.MetricsRefresher.debounce = 0.1
    """


def start_hub(root: Path, smtp_port: int, **kw) -> HubProcess:
    return HubProcess(
        root / "hub",
        smtp_port=smtp_port,
        workshop_dirs=[make_workshops(root / "workshops", *SPECS)],
        extra_config=admin_extra_config() + kw.pop("extra_config", ""),
        **kw,
    ).start()


def person(tag: str, workshop: str = "WKSHP-Alpha", **kw) -> dict:
    return {
        "email": f"{tag}@example.org",
        "first_name": "Grace",
        "last_name": f"Hopper-{tag}",
        "company": "Navy",
        "workshop": workshop,
        **kw,
    }


def sign_up(hub: HubProcess, tag: str, workshop: str = "WKSHP-Alpha") -> dict:
    r = register(requests.Session(), hub, **person(tag, workshop))
    assert r.status_code == 200, r.text[-2000:]
    username = re.search(r'id="wod-username">(student\d+)<', r.text).group(1)
    hub.wait_for_user(username)  # the hub's admin panel / REST API see the student
    return {
        "username": username,
        "password": re.search(r'id="wod-password">([^<]+)<', r.text).group(1),
        "email": f"{tag}@example.org",
    }


def login(hub: HubProcess, username: str, password: str) -> requests.Session:
    s = requests.Session()
    page = s.get(hub.url + "/hub/login", timeout=30)
    r = s.post(
        hub.url + "/hub/login",
        data={"_xsrf": xsrf_from(page.text), "username": username, "password": password},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 302, f"login of {username} failed: {r.status_code}"
    return s


def try_login(hub: HubProcess, username: str, password: str) -> int:
    s = requests.Session()
    page = s.get(hub.url + "/hub/login", timeout=30)
    return s.post(
        hub.url + "/hub/login",
        data={"_xsrf": xsrf_from(page.text), "username": username, "password": password},
        allow_redirects=False,
        timeout=30,
    ).status_code


def admin_session(hub: HubProcess) -> requests.Session:
    return login(hub, "admin", hub.admin_password)


def xsrf_of(session: requests.Session, hub: HubProcess, path: str = "/hub/wod/admin") -> str:
    return xsrf_from(session.get(hub.url + path, timeout=30).text)


def db_run(hub: HubProcess, fn):
    """Run ``await fn(session)`` against the hub's wod-hub database."""

    async def go():
        db = Database(hub.db_url)
        try:
            async with db.begin_write() as s:
                return await fn(s)
        finally:
            await db.dispose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(go())
    # a loop runs in this thread (Playwright's sync API): use a thread of our own
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def registration_of(hub: HubProcess, username: str) -> Registration:
    async def q(s):
        return (
            (
                await s.execute(
                    select(Registration)
                    .where(Registration.username == username)
                    .order_by(Registration.id.desc())
                )
            )
            .scalars()
            .first()
        )

    return db_run(hub, q)


def in_use(hub: HubProcess, workshop: str) -> int:
    async def q(s):
        return (await s.get(WorkshopRow, workshop)).seats_in_use

    return db_run(hub, q)


def events_of(hub: HubProcess, registration_id: int) -> list[str]:
    async def q(s):
        return list(
            (
                await s.execute(
                    select(Event.kind)
                    .where(Event.registration_id == registration_id)
                    .order_by(Event.id)
                )
            )
            .scalars()
            .all()
        )

    return db_run(hub, q)


def act(
    admin: requests.Session, hub: HubProcess, action: str, ids: list[int], **extra
) -> requests.Response:
    """The two-step form: the confirmation page, then confirm=yes; returns the list page."""
    xsrf = xsrf_of(admin, hub, "/hub/wod/admin/registrations")
    data = {"_xsrf": xsrf, "action": action, "ids": [str(i) for i in ids], **extra}
    confirm = admin.post(hub.url + "/hub/wod/admin/registrations/action", data=data, timeout=60)
    assert confirm.status_code == 200 and 'id="wod-confirm"' in confirm.text, confirm.text[-1500:]
    data["confirm"] = "yes"
    data["_xsrf"] = xsrf_from(confirm.text)
    done = admin.post(hub.url + "/hub/wod/admin/registrations/action", data=data, timeout=120)
    assert done.status_code == 200, done.text[-1500:]
    assert "result=" in done.url
    return done


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smtp():
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, smtp):
    hub = start_hub(tmp_path_factory.mktemp("admin"), smtp.port)
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def student(hub):
    """A registered participant, signed in (the 'participant' of the access matrix)."""
    info = sign_up(hub, "matrix-student", "WKSHP-Gamma")
    info["session"] = login(hub, info["username"], info["password"])
    token = hub.api("POST", f"/users/{info['username']}/tokens", json={"note": "matrix"})
    assert token.status_code == 201, token.text
    info["token"] = token.json()["token"]
    return info


@pytest.fixture(scope="module")
def admin(hub):
    return admin_session(hub)


# ---- the access matrix: every route, every caller ------------------------------------------------

HTML_GET = [
    "/hub/wod/admin",
    "/hub/wod/admin/registrations",
    "/hub/wod/admin/registrations?workshop=WKSHP-Alpha&status=live",
    "/hub/wod/admin/registrations.csv",
    "/hub/wod/admin/outbox",
]
# (path, form data, what the admin gets)
HTML_POST = [
    ("/hub/wod/admin/workshops/WKSHP-Beta/registration", {"open": "1"}, 302),
    (
        "/hub/wod/admin/registrations/action",
        {"action": "extend", "ids": "999999"},
        200,
    ),  # the confirm page
    ("/hub/wod/admin/outbox/retry", {"id": "999999"}, 302),
]
API_GET = [
    "/wod/admin/stats",
    "/wod/admin/workshops",
    "/wod/admin/workshops/WKSHP-Alpha/sample",
    "/wod/admin/seats",
    "/wod/admin/registrations",
    "/wod/admin/registrations?format=csv",
    "/wod/admin/outbox",
]
API_POST = [
    ("/wod/admin/workshops/WKSHP-Beta", {"registration_open": True}, 200),
    ("/wod/admin/actions", {"action": "extend", "registrations": [999999]}, 200),
    ("/wod/admin/outbox/999999/retry", {}, 409),
]


@pytest.mark.parametrize("path", HTML_GET)
def test_html_get_matrix(hub, student, admin, path):
    anon = requests.get(hub.url + path, allow_redirects=False, timeout=30)
    assert anon.status_code == 302 and "/hub/login" in anon.headers["Location"]
    assert (
        student["session"].get(hub.url + path, allow_redirects=False, timeout=30).status_code == 403
    )
    r = admin.get(hub.url + path, allow_redirects=False, timeout=30)
    assert r.status_code == 200, r.text[-500:]


@pytest.mark.parametrize("path, data, admin_status", HTML_POST, ids=[p for p, _, _ in HTML_POST])
def test_html_post_matrix(hub, student, admin, path, data, admin_status):
    anon_session = requests.Session()
    anon_xsrf = xsrf_from(anon_session.get(hub.url + "/hub/login", timeout=30).text)
    anon = anon_session.post(
        hub.url + path, data={**data, "_xsrf": anon_xsrf}, allow_redirects=False, timeout=30
    )
    assert anon.status_code == 403
    s = student["session"]
    student_xsrf = re.search(
        r'xsrf_token: "([^"]+)"', s.get(hub.url + "/hub/home", timeout=30).text
    ).group(1)
    r = s.post(
        hub.url + path, data={**data, "_xsrf": student_xsrf}, allow_redirects=False, timeout=30
    )
    assert r.status_code == 403
    # the admin without _xsrf: refused, nothing done
    assert (
        admin.post(hub.url + path, data=data, allow_redirects=False, timeout=30).status_code == 403
    )
    ok = admin.post(
        hub.url + path,
        data={**data, "_xsrf": xsrf_of(admin, hub)},
        allow_redirects=False,
        timeout=30,
    )
    assert ok.status_code == admin_status, ok.text[-500:]


@pytest.mark.parametrize("path", API_GET)
def test_api_get_matrix(hub, student, admin, path):
    url = hub.api_url + path
    assert requests.get(url, timeout=30).status_code in (401, 403)
    assert (
        requests.get(
            url, headers={"Authorization": f"token {student['token']}"}, timeout=30
        ).status_code
        == 403
    )
    assert student["session"].get(url, timeout=30).status_code == 403
    assert hub.api("GET", path).status_code == 200  # a service token with admin:users
    # an admin's browser session works with the xsrf header
    xsrf = admin.cookies.get("_xsrf", path="/hub/")
    assert admin.get(url, headers={"X-XSRFToken": xsrf}, timeout=30).status_code == 200


@pytest.mark.parametrize("path, body, admin_status", API_POST, ids=[p for p, _, _ in API_POST])
def test_api_post_matrix(hub, student, admin, path, body, admin_status):
    url = hub.api_url + path
    assert requests.post(url, json=body, timeout=30).status_code in (401, 403)
    r = requests.post(
        url, json=body, headers={"Authorization": f"token {student['token']}"}, timeout=30
    )
    assert r.status_code == 403
    # cookie auth without the xsrf token: refused
    assert admin.post(url, json=body, timeout=30).status_code == 403
    xsrf = admin.cookies.get("_xsrf", path="/hub/")
    assert (
        admin.post(url, json=body, headers={"X-XSRFToken": xsrf}, timeout=30).status_code
        == admin_status
    )
    assert hub.api("POST", path, json=body).status_code == admin_status


def test_matrix_covers_every_route():
    from wod_hub.handlers.admin import admin_handlers
    from wod_hub.handlers.api_admin import api_admin_handlers

    html = {p for p, _ in admin_handlers()}
    api = {p for p, _ in api_admin_handlers()}
    tested = [p.split("?")[0] for p in HTML_GET] + [p for p, _, _ in HTML_POST]
    tested_api = ["/api" + p.split("?")[0] for p in API_GET] + ["/api" + p for p, _, _ in API_POST]
    for pattern in html:
        assert any(re.fullmatch(pattern, t[len("/hub") :]) for t in tested), pattern
    for pattern in api:
        assert any(re.fullmatch(pattern, t) for t in tested_api), pattern


# ---- the pages ----------------------------------------------------------------------------------


def test_overview_figures_and_toggle(hub, admin):
    for i in range(2):
        sign_up(hub, f"overview{i}", "WKSHP-Alpha")
    page = admin.get(hub.url + "/hub/wod/admin", timeout=30).text
    row = re.search(r'<tr id="wod-workshop-WKSHP-Alpha".*?</tr>', page, re.S).group(0)
    used = int(re.search(r'class="text-end wod-in-use">(\d+)<', row).group(1))
    assert used == in_use(hub, "WKSHP-Alpha") >= 2
    assert re.search(r'class="text-end wod-free">(\d+)<', row).group(1) == str(5 - used)
    assert re.search(r"student1\S{1,3}10<", row) and "open" in row
    assert 'id="wod-chart-per-day"' in page and 'id="wod-chart-per-workshop"' in page
    assert 'href="/hub/admin"' in page and 'id="wod-nav-admin"' in page

    # close: the registration form refuses, the page says so; open again
    r = admin.post(
        hub.url + "/hub/wod/admin/workshops/WKSHP-Alpha/registration",
        data={"_xsrf": xsrf_of(admin, hub), "open": "0"},
        timeout=30,
    )
    assert r.status_code == 200 and "WKSHP-Alpha is closed for registration" in r.text
    refused = register(requests.Session(), hub, **person("closed", "WKSHP-Alpha"))
    assert refused.status_code == 409 and "closed" in refused.text
    r = admin.post(
        hub.url + "/hub/wod/admin/workshops/WKSHP-Alpha/registration",
        data={"_xsrf": xsrf_of(admin, hub), "open": "1"},
        timeout=30,
    )
    assert "WKSHP-Alpha is open for registration" in r.text
    assert register(requests.Session(), hub, **person("reopened", "WKSHP-Alpha")).status_code == 200


def test_registrations_filter_and_csv(hub, admin):
    a = sign_up(hub, "filter-a", "WKSHP-Beta")
    sign_up(hub, "filter-b", "WKSHP-Beta")
    page = admin.get(
        hub.url + "/hub/wod/admin/registrations", params={"email": "filter-a@"}, timeout=30
    ).text
    rows = re.findall(r'<tr id="wod-reg-(\d+)"', page)
    assert len(rows) == 1 and a["username"] in page and "filter-b@" not in page
    page = admin.get(
        hub.url + "/hub/wod/admin/registrations",
        params={"workshop": "WKSHP-Beta", "per_page": "1"},
        timeout=30,
    ).text
    assert len(re.findall(r'<tr id="wod-reg-', page)) == 1 and 'id="wod-next-page"' in page
    bad = admin.get(
        hub.url + "/hub/wod/admin/registrations", params={"since": "yesterday"}, timeout=30
    )
    assert bad.status_code == 200 and "since:" in bad.text and "YYYY-MM-DD" in bad.text

    # CSV: header + one row per registration of the filter, nothing secret
    for text in (
        admin.get(
            hub.url + "/hub/wod/admin/registrations.csv",
            params={"workshop": "WKSHP-Beta"},
            timeout=30,
        ).text,
        hub.api(
            "GET", "/wod/admin/registrations", params={"format": "csv", "workshop": "WKSHP-Beta"}
        ).text,
    ):
        records = list(csv.DictReader(io.StringIO(text)))
        api_total = hub.api(
            "GET", "/wod/admin/registrations", params={"workshop": "WKSHP-Beta"}
        ).json()["total"]
        assert len(records) == api_total >= 2
        assert {r["workshop_id"] for r in records} == {"WKSHP-Beta"}
        assert a["email"] in {r["email"] for r in records}
        assert a["password"] not in text
        assert not any(k for k in records[0] if "pass" in k or "token" in k or "ip" in k)


def test_extend_and_cleanup_with_confirmation(hub, admin):
    s = sign_up(hub, "actions", "WKSHP-Gamma")
    reg = registration_of(hub, s["username"])
    before = reg.expires_at

    page = act(admin, hub, "extend", [reg.id], minutes="45")
    assert "Extend: 1 of 1 done" in page.text
    row = re.search(rf'<tr id="wod-reg-{reg.id}".*?</tr>', page.text, re.S).group(0)
    assert "+45 min" in row
    assert registration_of(hub, s["username"]).expires_at == before + timedelta(minutes=45)
    assert "extended" in events_of(hub, reg.id)

    # the participant starts the server; CLEANUP stops it, locks out, records completion
    login(hub, s["username"], s["password"])
    assert hub.api("POST", f"/users/{s['username']}/server").status_code in (201, 202)
    used = in_use(hub, "WKSHP-Gamma")
    page = act(admin, hub, "cleanup", [reg.id])
    assert "CLEANUP: 1 of 1 done" in page.text, page.text[-3000:]
    after = registration_of(hub, s["username"])
    assert (
        after.state == "expired" and after.cleaned_at is not None and after.stopped_at is not None
    )
    assert after.ended_reason == "admin cleanup"
    assert hub.api("GET", f"/users/{s['username']}").json()["server"] is None
    assert try_login(hub, s["username"], s["password"]) == 403  # locked out
    assert in_use(hub, "WKSHP-Gamma") == used  # the seat goes back at PURGE, not before

    # PURGE continues the path from where it is: the seat goes back
    page = act(admin, hub, "purge", [reg.id])
    assert "PURGE: 1 of 1 done" in page.text
    assert registration_of(hub, s["username"]).purged_at is not None
    assert in_use(hub, "WKSHP-Gamma") == used - 1
    # an ended path cannot be extended: a per-row error, not a crash
    page = act(admin, hub, "extend", [reg.id])
    assert "1 failed" in page.text and "already ended" in page.text


def test_end_runs_the_whole_path(hub, admin, smtp):
    s = sign_up(hub, "ender", "WKSHP-Gamma")
    reg = registration_of(hub, s["username"])
    page = act(admin, hub, "end", [reg.id])
    assert "End: 1 of 1 done" in page.text, page.text[-2000:]
    done = registration_of(hub, s["username"])
    assert done.state == "ended" and done.ended_at is not None and done.final_mail_at is not None
    assert hub.api("GET", f"/users/{s['username']}").status_code == 404  # hub user deleted
    msgs = smtp.wait_for_count(lambda m: s["email"] in m["To"], 2, timeout=30)  # welcome + final
    assert any("welcome" not in (m["Subject"] or "").lower() for m in msgs)


def test_resend_welcome_sends_a_fresh_link(hub, admin, smtp):
    s = sign_up(hub, "resend", "WKSHP-Gamma")
    smtp.wait_for(lambda m: s["email"] in m["To"], timeout=30)
    reg = registration_of(hub, s["username"])
    page = act(admin, hub, "resend", [reg.id])
    assert "1 of 1 done" in page.text and "queued to resend@example.org" in page.text
    msgs = smtp.wait_for_count(lambda m: s["email"] in m["To"], 2, timeout=30)
    links = [LINK.search(text_of(m)).group(1) for m in msgs]
    assert links[0] != links[1]
    # the fresh link logs in
    b = requests.Session()
    page = b.get(links[1], timeout=30)
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
    r = b.post(
        links[1].split("?")[0],
        data={"_xsrf": xsrf_from(page.text), "token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 302


def test_outbox_view_and_retry(hub, admin, smtp):
    s = sign_up(hub, "outbox", "WKSHP-Gamma")
    smtp.wait_for(lambda m: s["email"] in m["To"], timeout=30)
    reg = registration_of(hub, s["username"])

    async def fail_it(session):
        msg = (
            (
                await session.execute(
                    select(OutboxMessage).where(OutboxMessage.registration_id == reg.id)
                )
            )
            .scalars()
            .first()
        )
        msg.state, msg.last_error, msg.attempts = "failed", "550 mailbox unavailable (test)", 5
        return msg.id

    mid = db_run(hub, fail_it)
    page = admin.get(hub.url + "/hub/wod/admin/outbox", timeout=30).text
    row = re.search(rf'<tr id="wod-mail-{mid}".*?</tr>', page, re.S).group(0)
    assert "550 mailbox unavailable (test)" in row and "failed" in row
    r = admin.post(
        hub.url + "/hub/wod/admin/outbox/retry",
        data={"_xsrf": xsrf_of(admin, hub), "id": str(mid)},
        timeout=30,
    )
    assert r.status_code == 200 and "1 of 1 e-mail(s) queued again" in r.text
    smtp.wait_for_count(lambda m: s["email"] in m["To"], 2, timeout=30)

    async def state(session):
        return (await session.get(OutboxMessage, mid, populate_existing=True)).state

    # the SMTP server has it; the sender records "sent" right after
    assert wait_until(lambda: db_run(hub, state) == "sent"), db_run(hub, state)


# ---- the hub's own admin panel (its REST API) ---------------------------------------------------


def test_hub_admin_stop_server_keeps_registration(hub):
    s = sign_up(hub, "stopme", "WKSHP-Gamma")
    assert hub.api("POST", f"/users/{s['username']}/server").status_code in (201, 202)
    assert hub.api("DELETE", f"/users/{s['username']}/server").status_code in (202, 204)
    reg = registration_of(hub, s["username"])
    assert reg.state in ("registered", "provisioning", "active") and reg.ended_reason is None
    # it can be started again until expiry
    assert hub.api("POST", f"/users/{s['username']}/server").status_code in (201, 202)


def test_hub_admin_delete_user_ends_the_session(hub, admin):
    s = sign_up(hub, "deleteme", "WKSHP-Gamma")
    reg = registration_of(hub, s["username"])
    used = in_use(hub, "WKSHP-Gamma")
    assert hub.api("POST", f"/users/{s['username']}/server").status_code in (201, 202)
    assert hub.api("DELETE", f"/users/{s['username']}").status_code == 204

    after = registration_of(hub, s["username"])
    assert after.ended_reason == "hub_user_deleted" and after.expires_at <= utcnow()
    assert "ended_by" in events_of(hub, reg.id)
    assert try_login(hub, s["username"], s["password"]) == 403  # locked out, user not re-created
    assert hub.api("GET", f"/users/{s['username']}").status_code == 404

    # one sweep of the real lifecycle service runs the end path: the seat goes back
    sweep = lifecycle_sweep(hub)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    final = registration_of(hub, s["username"])
    assert final.state == "ended" and final.ended_reason == "hub_user_deleted"
    assert in_use(hub, "WKSHP-Gamma") == used - 1

    async def seat_free(session):
        return (await session.get(Seat, final.student_number)).registration_id is None

    assert db_run(hub, seat_free)


# ---- CREATE / CLEANUP / RESET / PURGE by student number (the CLI's API) ----------------------------------


def test_create_test_registration_then_end_path(hub):
    r = hub.api(
        "POST",
        "/wod/admin/actions",
        json={"action": "create", "workshop": "WKSHP-Alpha", "students": [9]},
    )
    assert r.status_code == 200, r.text
    [res] = r.json()["results"]
    assert res["ok"] and "test registration" in res["message"] and res["student"] == "student9"
    user = hub.api("GET", "/users/student9").json()
    assert "WKSHP-Alpha" in user["groups"] and user["server"]
    reg = registration_of(hub, "student9")
    assert "test_registration" in events_of(hub, reg.id)

    # CREATE again: the same registration, its server already runs
    again = hub.api(
        "POST",
        "/wod/admin/actions",
        json={"action": "create", "workshop": "WKSHP-Alpha", "students": [9]},
    ).json()
    assert (
        again["results"][0]["id"] == reg.id and "already running" in again["results"][0]["message"]
    )

    for action, column in (
        ("cleanup", "cleaned_at"),
        ("reset", "reset_at"),
        ("purge", "purged_at"),
    ):
        out = hub.api(
            "POST",
            "/wod/admin/actions",
            json={"action": action, "workshop": "WKSHP-Alpha", "students": [9]},
        ).json()
        assert out["failed"] == 0, out["results"]
        assert getattr(registration_of(hub, "student9"), column) is not None

    # out of range, and nothing to clean: per-student messages
    out = hub.api(
        "POST",
        "/wod/admin/actions",
        json={"action": "cleanup", "workshop": "WKSHP-Alpha", "students": [8, 150]},
    ).json()
    assert out["failed"] == 2
    assert "holds no registration" in out["results"][0]["message"]
    assert "not in WKSHP-Alpha's range 1-10" in out["results"][1]["message"]


def test_create_on_a_closed_workshop_and_a_taken_seat(hub):
    sign = hub.api("POST", "/wod/admin/workshops/WKSHP-Beta", json={"registration_open": False})
    assert sign.status_code == 200
    try:
        out = hub.api(
            "POST",
            "/wod/admin/actions",
            json={"action": "create", "workshop": "WKSHP-Beta", "students": [199]},
        ).json()
        assert out["failed"] == 0, out  # admins test a workshop before opening it
    finally:
        hub.api("POST", "/wod/admin/workshops/WKSHP-Beta", json={"registration_open": True})
    bad = hub.api("POST", "/wod/admin/actions", json={"action": "nuke", "registrations": [1]})
    assert bad.status_code == 400 and "Unknown action" in bad.json()["message"]


def test_api_filters_and_errors(hub):
    sign_up(hub, "apifilter", "WKSHP-Beta")
    data = hub.api(
        "GET", "/wod/admin/registrations", params={"email": "apifilter@", "status": "live"}
    ).json()
    assert data["total"] == 1 and data["registrations"][0]["email"] == "apifilter@example.org"
    assert data["registrations"][0]["seconds_left"] > 0
    bad = hub.api("GET", "/wod/admin/registrations", params={"status": "zombie"})
    assert bad.status_code == 400 and "status" in bad.json()["message"]
    missing = hub.api("GET", "/wod/admin/workshops/WKSHP-Nope/sample")
    assert missing.status_code == 404 and "No workshop" in missing.json()["message"]
    stats = hub.api("GET", "/wod/admin/stats").json()
    assert stats["totals"]["registrations_total"] >= 1
    assert {w["id"] for w in stats["workshops"]} == {"WKSHP-Alpha", "WKSHP-Beta", "WKSHP-Gamma"}


def lifecycle_sweep(hub: HubProcess) -> subprocess.CompletedProcess:
    """One sweep of ``wod-hub-lifecycle`` against the hub (the test service's token holds
    admin:users and admin:servers, which cover the service's scopes)."""
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": hub.api_token, "JUPYTERHUB_API_URL": hub.api_url}
    return subprocess.run(
        [sys.executable, "-m", "wod_hub.service", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_until(pred, timeout=10.0, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()
