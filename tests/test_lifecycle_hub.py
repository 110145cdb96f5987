"""Time-bombed sessions through a real hub + proxy, real servers (JupyterHub's mock
single-user server), real SMTP, and the lifecycle service with its least-privilege
token. Time is moved by editing ``expires_at`` in the database: the hub and the
service run on their honest clocks."""

from __future__ import annotations

import asyncio
import re
import secrets
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import nbformat
import psutil
import pytest
import requests
from nbformat.v4 import new_code_cell, new_notebook
from sqlalchemy import func, select, update

from tests.hubprocess import HubProcess, register, xsrf_from
from tests.smtp import SMTPServer
from wod_hub.db import Database
from wod_hub.orm import Badge, Event, OutboxMessage, Registration, WorkshopRow, utcnow
from wod_hub.service import SCOPES, LifecycleService

pytestmark = pytest.mark.slow

LINK = re.compile(r"(http://127\.0\.0\.1:\d+/hub/wod/start\?token=[A-Za-z0-9_\-.%]+)")
LIFECYCLE_TOKEN = secrets.token_hex(16)


def make_workshop(
    root: Path, wid: str, lo: int, hi: int, extra: str = "", hooks: dict | None = None
) -> None:
    d = root / wid
    d.mkdir(parents=True)
    (d / "workshop.yaml").write_text(
        textwrap.dedent(
            f"""
            name: {wid} workshop
            description: A workshop for lifecycle tests.
            duration: 2h
            capacity: 10
            students: {lo}-{hi}
            """
        )
        + textwrap.dedent(extra)
    )
    nb = new_notebook(cells=[new_code_cell("print('hello')"), new_code_cell("x = 1")])
    (d / "1-Work.ipynb").write_text(nbformat.writes(nb))
    (d / "0-ReadMeFirst.ipynb").write_text(nbformat.writes(new_notebook(cells=[])))
    for name, script in (hooks or {}).items():
        (d / "hooks").mkdir(exist_ok=True)
        path = d / "hooks" / f"{name}.sh"
        path.write_text("#!/bin/bash\nset -e\n" + textwrap.dedent(script))
        path.chmod(0o755)


def lifecycle_config(workdir: Path, service: list[str] | None = None, badges: bool = True) -> str:
    managed = f', "command": {service!r}' if service else ""
    # a badge at the first workshop, so that tests see one (the default starts at 3)
    first_badge = (
        '{1: "First Steps", 3: "Apprentice"}' if badges else "{3: 'Apprentice', 5: 'Expert'}"
    )
    return textwrap.dedent(
        f"""
        c.JupyterHub.custom_scopes = {{
            "custom:wod:lifecycle": {{"description": "Run the end path of workshop sessions."}},
            "custom:wod:admin": {{"description": "Manage workshop registrations."}},
        }}
        c.JupyterHub.services.append({{"name": "wod-lifecycle", "api_token": {LIFECYCLE_TOKEN!r}{managed}}})
        # a random 128-bit token, like the one the hub generates for a managed service
        # (hashed once, not 16384 times per request)
        c.JupyterHub.trust_user_provided_tokens = True
        c.JupyterHub.load_roles.append(
            {{"name": "wod-lifecycle", "scopes": {list(SCOPES)!r}, "services": ["wod-lifecycle"]}}
        )
        c.SimpleLocalProcessSpawner.home_dir_template = {str(workdir / "homes" / "{username}")!r}
        c.LifecycleSettings.special_badges = {first_badge}
        c.LifecycleSettings.badge_min_completion = 40
        c.Mailer.poll_interval = 0.3
        """
    )


@pytest.fixture(scope="module")
def smtp():
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, smtp):
    root = tmp_path_factory.mktemp("lifecycle")
    workshops = root / "workshops"
    make_workshop(workshops, "WKSHP-Life", 1, 20, "extension: 30m\n")
    make_workshop(workshops, "WKSHP-Par", 21, 40)
    make_workshop(
        workshops,
        "WKSHP-Flaky",
        41,
        50,
        "reset: true\n",
        hooks={
            # fails the first time, then works: the step is retried with backoff
            "cleanup": 'mkdir -p "$WOD_WORKSHOP_DIR/../marks"\n'
            'if [ ! -e "$WOD_WORKSHOP_DIR/../marks/failed-$WOD_USERNAME" ]; then\n'
            '  touch "$WOD_WORKSHOP_DIR/../marks/failed-$WOD_USERNAME"; echo "disk on fire" >&2; exit 3\nfi\n',
            "reset": 'echo reset >> "$WOD_WORKSHOP_DIR/../marks/reset-$WOD_USERNAME"\n',
        },
    )
    process = HubProcess(
        root / "hub",
        smtp_port=smtp.port,
        workshop_dirs=[workshops],
        extra_config=lifecycle_config(root / "hub"),
    )
    process.start()
    process.workshops = workshops
    yield process
    process.stop()


# ---- helpers -------------------------------------------------------------------------------


def db_run(hub: HubProcess, fn):
    async def go():
        db = Database(hub.db_url)
        try:
            async with db.begin_write() as session:
                return await fn(session)
        finally:
            await db.dispose()

    return asyncio.run(go())


def registration(hub, rid) -> Registration:
    return db_run(hub, lambda s: s.get(Registration, rid))


def set_expiry(hub, rid, delta: timedelta) -> None:
    async def go(s):
        await s.execute(
            update(Registration).where(Registration.id == rid).values(expires_at=utcnow() + delta)
        )

    db_run(hub, go)


def seats_in_use(hub, workshop) -> int:
    return db_run(hub, lambda s: s.get(WorkshopRow, workshop)).seats_in_use


def events(hub, rid) -> list[str]:
    async def go(s):
        return list(
            (await s.execute(select(Event.kind).where(Event.registration_id == rid))).scalars()
        )

    return db_run(hub, go)


def service(hub, worker="w1", **kw) -> LifecycleService:
    kw.setdefault("claim_ttl", 30)
    kw.setdefault("retry_base", 1)
    return LifecycleService(
        url=hub.api_url, api_token=LIFECYCLE_TOKEN, worker_id=worker, guard_enabled=False, **kw
    )


def sweep(*services: LifecycleService):
    """One sweep of each service, all at the same time."""

    async def go():
        for svc in services:
            svc.connect()
        try:
            return await asyncio.gather(*(svc.sweep() for svc in services))
        finally:
            for svc in services:
                svc.close()

    return asyncio.run(go())


def signup(
    hub, smtp, email, workshop="WKSHP-Life", first="Ada"
) -> tuple[requests.Session, str, int]:
    """Register like a browser and sign in with the link from the welcome e-mail."""
    browser = requests.Session()
    r = register(
        browser, hub, email=email, first_name=first, last_name="Lovelace", workshop=workshop
    )
    assert r.status_code == 200, r.text
    username = re.search(r'id="wod-username">(student\d+)<', r.text).group(1)
    msg = smtp.wait_for(lambda m: email in m["To"] and "You're in" in str(m["Subject"]), timeout=20)
    link = LINK.search(smtp.text_of(msg)).group(1)
    assert start_with_link(browser, link).status_code == 302
    rid = db_run(hub, lambda s: _rid(s, username))
    return browser, username, rid


async def _rid(s, username):
    return (
        (
            await s.execute(
                select(Registration.id)
                .where(Registration.username == username)
                .order_by(Registration.id.desc())
            )
        )
        .scalars()
        .first()
    )


def start_with_link(browser: requests.Session, link: str) -> requests.Response:
    page = browser.get(link, timeout=30)
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token, page.text
    return browser.post(
        link.split("?")[0],
        data={"_xsrf": xsrf_from(page.text), "token": token.group(1)},
        allow_redirects=False,
        timeout=30,
    )


def start_server(hub, username) -> int:
    r = hub.api("POST", f"/users/{username}/server")
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        server = hub.api("GET", f"/users/{username}").json()["servers"].get("", {})
        if server.get("ready"):
            return server["state"]["pid"]
        time.sleep(0.2)
    raise AssertionError(f"{username}'s server did not start:\n{hub.log_tail()}")


def mails(smtp, to, subject_part) -> list:
    return smtp.matching(lambda m: to in m["To"] and subject_part in str(m["Subject"]))


def settle():
    time.sleep(2.0)  # the outbox polls every 0.3 s: a duplicate would have arrived by now


# ---- tests ----------------------------------------------------------------------------------


def test_api_needs_the_lifecycle_scope(hub):
    anonymous = requests.get(hub.api_url + "/wod/lifecycle/due", timeout=10)
    assert anonymous.status_code in (401, 403)
    ok = requests.get(
        hub.api_url + "/wod/lifecycle/due",
        headers={"Authorization": f"token {LIFECYCLE_TOKEN}"},
        timeout=10,
    )
    assert ok.status_code == 200 and ok.json()["registrations"] == []
    # least privilege: the service cannot extend (admin) nor delete users
    refused = requests.post(
        hub.api_url + "/wod/registrations/1/extend",
        json={"minutes": 5},
        headers={"Authorization": f"token {LIFECYCLE_TOKEN}"},
        timeout=10,
    )
    assert refused.status_code == 403


def test_reminder_sent_once(hub, smtp):
    _, username, rid = signup(hub, smtp, "remind@example.org")
    set_expiry(hub, rid, timedelta(minutes=30))
    svc = service(hub)
    first, second = sweep(svc)[0], sweep(svc)[0]
    assert (first.reminders, second.reminders) == (1, 0)
    msg = smtp.wait_for(
        lambda m: "remind@example.org" in m["To"] and " left in " in str(m["Subject"]), timeout=15
    )
    settle()
    assert len(mails(smtp, "remind@example.org", " left in ")) == 1
    text = smtp.text_of(msg)
    assert "30 minutes" in text or "29 minutes" in str(msg["Subject"]) + text
    assert registration(hub, rid).reminded_at is not None


def test_one_more_reminder_before_the_new_end_after_an_extension(hub, smtp):
    _, username, rid = signup(hub, smtp, "again@example.org")
    set_expiry(hub, rid, timedelta(minutes=30))
    svc = service(hub)
    assert sweep(svc)[0].reminders == 1

    # the participant extended; 90 minutes later the new end is 30 minutes away
    async def reminded_long_ago(s):
        await s.execute(
            update(Registration)
            .where(Registration.id == rid)
            .values(reminded_at=utcnow() - timedelta(minutes=90))
        )

    db_run(hub, reminded_long_ago)
    set_expiry(hub, rid, timedelta(minutes=31))
    assert [sweep(svc)[0].reminders, sweep(svc)[0].reminders] == [1, 0]
    reminder = lambda m: "again@example.org" in m["To"] and " left in " in str(m["Subject"])  # noqa: E731
    smtp.wait_for_count(reminder, 2, timeout=15)
    settle()
    assert len(mails(smtp, "again@example.org", " left in ")) == 2


def test_expiry_end_to_end(hub, smtp):
    browser, username, rid = signup(hub, smtp, "ada@example.org")
    me = browser.get(hub.hub_url + "api/wod/me", timeout=10)
    assert me.status_code == 200 and me.json()["can_extend"] and me.json()["seconds_left"] > 3600
    # an unused login link, to see it withdrawn
    page = browser.get(hub.hub_url + "wod/recover", timeout=10)
    browser.post(
        hub.hub_url + "wod/recover",
        data={"_xsrf": xsrf_from(page.text), "email": "ada@example.org"},
        timeout=10,
    )
    recover = smtp.wait_for(
        lambda m: "ada@example.org" in m["To"] and "new link" in str(m["Subject"]), timeout=15
    )
    spare_link = LINK.search(smtp.text_of(recover)).group(1)

    pid = start_server(hub, username)
    home = hub.workdir / "homes" / username
    work = new_notebook(cells=[new_code_cell("a = 1"), new_code_cell("b = 2")])
    work.cells[0].execution_count = 1  # half of the code was run
    (home / "WKSHP-Life").mkdir(parents=True, exist_ok=True)
    (home / "WKSHP-Life" / "1-Work.ipynb").write_text(nbformat.writes(work))
    assert seats_in_use(hub, "WKSHP-Life") >= 1
    in_use = seats_in_use(hub, "WKSHP-Life")

    set_expiry(hub, rid, timedelta(seconds=-1))
    report = sweep(service(hub))[0]
    assert report.ended == 1 and not report.failed

    r = registration(hub, rid)
    assert r.state == "ended" and r.ended_reason == "expired" and r.completion == 50.0
    assert all(
        getattr(r, c)
        for c in ("stopped_at", "cleaned_at", "purged_at", "final_mail_at", "ended_at")
    )
    assert r.reset_at is None  # WKSHP-Life does not need RESET
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert (
        hub.api("GET", f"/users/{username}").status_code == 404
    )  # hub user deleted: sessions and tokens gone
    assert home.is_dir() and not any(home.iterdir())  # wiped
    assert seats_in_use(hub, "WKSHP-Life") == in_use - 1

    final = smtp.wait_for(
        lambda m: "ada@example.org" in m["To"] and "Thank you for taking" in str(m["Subject"]),
        timeout=15,
    )
    assert "50%" in smtp.text_of(final)
    badge_mail = smtp.wait_for(
        lambda m: "ada@example.org" in m["To"] and "First Steps" in str(m["Subject"]), timeout=15
    )
    settle()
    assert len(mails(smtp, "ada@example.org", "Thank you for taking")) == 1

    # the login link mailed before the end no longer works
    withdrawn = start_with_link(requests.Session(), spare_link)
    assert withdrawn.status_code == 403 and "ended" in withdrawn.text

    # the returning participant is told the workshop ended (never an error page)
    back = browser.get(hub.hub_url + "home", timeout=10)
    assert back.status_code == 200 and "/hub/login" in back.url and "has ended" in back.text
    bookmark = requests.get(hub.url + f"/user/{username}/lab", timeout=10)
    assert bookmark.status_code == 200 and "has ended" in bookmark.text
    ended = browser.get(hub.hub_url + "wod/ended", timeout=10)
    assert ended.status_code == 200 and "WKSHP-Life workshop" in ended.text

    # the badge page is public and shows nothing personal beyond the first name
    url = re.search(r"http://\S+/hub/wod/badge/[A-Za-z0-9_\-]+", smtp.text_of(badge_mail)).group(0)
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and "Ada" in page.text and "First Steps" in page.text
    assert "Lovelace" not in page.text and "ada@example.org" not in page.text
    svg = requests.get(url + ".svg", timeout=10)
    assert svg.status_code == 200 and svg.headers["Content-Type"].startswith("image/svg+xml")
    assert requests.get(hub.hub_url + "wod/badge/nope", timeout=10).status_code == 404


def test_failing_step_is_retried_and_shown(hub, smtp):
    _, username, rid = signup(hub, smtp, "flaky@example.org", workshop="WKSHP-Flaky")
    set_expiry(hub, rid, timedelta(seconds=-1))
    svc = service(hub)
    report = sweep(svc)[0]
    assert report.failed and "disk on fire" in report.failed[0][1]
    r = registration(hub, rid)
    assert r.state == "expired" and r.cleaned_at is None and r.step_attempts == 1
    assert "cleanup" in r.error and "disk on fire" in r.error and r.next_attempt_at is not None
    # admins see it through the lifecycle model
    model = hub.api("GET", f"/wod/lifecycle/registrations/{rid}").json()
    assert model["error"] == r.error and model["next_step"] == "cleanup"
    assert sweep(svc)[0].seen == 0  # backing off
    time.sleep(1.2)
    assert sweep(svc)[0].ended == 1
    r = registration(hub, rid)
    assert r.state == "ended" and r.error is None and r.reset_at is not None
    marks = hub.workshops / "marks"
    assert (marks / f"reset-{username}").read_text().count("reset") == 1
    smtp.wait_for(
        lambda m: "flaky@example.org" in m["To"] and "Thank you" in str(m["Subject"]), timeout=15
    )
    settle()
    assert len(mails(smtp, "flaky@example.org", "Thank you")) == 1


def test_smtp_down_during_expiry(hub, smtp):
    _, username, rid = signup(hub, smtp, "offline@example.org")
    smtp.stop()
    try:
        set_expiry(hub, rid, timedelta(seconds=-1))
        assert sweep(service(hub))[0].ended == 1  # the end path does not wait for the mail
        time.sleep(1.5)

        async def outbox(s):
            return (
                await s.execute(
                    select(OutboxMessage).where(OutboxMessage.dedupe_key == f"reg:{rid}:final")
                )
            ).scalar_one()

        queued = db_run(hub, outbox)
        assert queued.state in ("pending", "sending") and queued.attempts >= 1 and queued.last_error
    finally:
        smtp.start()
    smtp.wait_for(
        lambda m: "offline@example.org" in m["To"] and "Thank you" in str(m["Subject"]), timeout=30
    )
    settle()
    assert len(mails(smtp, "offline@example.org", "Thank you")) == 1
    deadline = time.monotonic() + 10  # delivered; the sender records "sent" right after
    while db_run(hub, outbox).state != "sent" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert db_run(hub, outbox).state == "sent"


def test_two_sweepers_do_not_double_process(hub, smtp):
    people = [signup(hub, smtp, f"par{i}@example.org", workshop="WKSHP-Par") for i in range(6)]
    for _, username, _ in people[:2]:
        start_server(hub, username)
    before = seats_in_use(hub, "WKSHP-Par")
    for _, _, rid in people:
        set_expiry(hub, rid, timedelta(seconds=-1))
    a, b = sweep(service(hub, "sweeper-a", concurrency=3), service(hub, "sweeper-b", concurrency=3))
    assert a.ended + b.ended == 6 and not a.failed and not b.failed
    for _, username, rid in people:
        kinds = events(hub, rid)
        for step in ("expired", "stop", "cleanup", "purge", "final_mail", "end"):
            assert kinds.count(step) == 1, (username, kinds)
        assert registration(hub, rid).state == "ended"
    assert seats_in_use(hub, "WKSHP-Par") == before - 6
    for i in range(6):
        smtp.wait_for(
            lambda m, i=i: f"par{i}@example.org" in m["To"] and "Thank you" in str(m["Subject"]),
            timeout=20,
        )
    settle()
    assert all(len(mails(smtp, f"par{i}@example.org", "Thank you")) == 1 for i in range(6))


def test_extend_and_unregister(hub, smtp):
    browser, username, rid = signup(hub, smtp, "grace@example.org", first="Grace")
    home = browser.get(hub.hub_url + "home", timeout=10)
    assert home.status_code == 200 and 'id="wod-countdown"' in home.text
    xsrf = re.search(r'xsrf_token: "([^"]+)"', home.text).group(1)
    api = hub.hub_url + "api/wod/me"
    assert browser.post(api + "/extend", timeout=10).status_code == 403  # no _xsrf
    expires = registration(hub, rid).expires_at
    r = browser.post(api + "/extend", headers={"X-XSRFToken": xsrf}, timeout=10)
    assert r.status_code == 200 and not r.json()["can_extend"]
    assert registration(hub, rid).expires_at == expires + timedelta(minutes=30)
    again = browser.post(api + "/extend", headers={"X-XSRFToken": xsrf}, timeout=10)
    assert again.status_code == 409 and "once" in again.json()["message"]
    # admins may extend any registration
    admin = hub.api("POST", f"/wod/registrations/{rid}/extend", json={"minutes": 15})
    assert admin.status_code == 200
    assert registration(hub, rid).expires_at == expires + timedelta(minutes=45)

    bye = browser.post(api + "/unregister", headers={"X-XSRFToken": xsrf}, timeout=10)
    assert bye.status_code == 200 and bye.json()["ended_url"].endswith("/hub/wod/ended")
    assert registration(hub, rid).state == "unregistered"
    after = browser.get(hub.hub_url + "home", timeout=10)
    assert "/hub/login" in after.url and "has ended" in after.text  # signed out at once
    assert sweep(service(hub))[0].ended == 1
    r = registration(hub, rid)
    assert (r.state, r.ended_reason) == ("ended", "unregistered")
    smtp.wait_for(
        lambda m: "grace@example.org" in m["To"] and "You have left" in str(m["Subject"]),
        timeout=15,
    )
    settle()
    assert mails(smtp, "grace@example.org", "Thank you") == []
    assert len(mails(smtp, "grace@example.org", "You have left")) == 1


def test_badge_awarded_once(hub):
    async def count(s):
        return (await s.execute(select(func.count(Badge.id)))).scalar_one()

    badges = db_run(hub, count)
    assert badges >= 1  # ada's and others' "First Steps", each participant once

    async def per_participant(s):
        return (
            await s.execute(
                select(Badge.participant_id, Badge.badge)
                .group_by(Badge.participant_id, Badge.badge)
                .having(func.count() > 1)
            )
        ).all()

    assert db_run(hub, per_participant) == []


def test_bad_lifecycle_settings_stop_the_hub_at_start(tmp_path):
    """A wrong c.LifecycleSettings value is reported when the hub starts, not at the first
    session end hours later."""
    make_workshop(tmp_path / "workshops", "WKSHP-Alpha", 1, 10)
    hub = HubProcess(
        tmp_path / "hub",
        workshop_dirs=[tmp_path / "workshops"],
        spawner="none",
        extra_config="c.LifecycleSettings.badge_min_completion = 120\n",
    )
    try:
        with pytest.raises(RuntimeError) as e:
            hub.start(timeout=60)
    finally:
        hub.stop()
    assert "the hub exited" in str(e.value)
    assert "badge_min_completion must be between 0 and 100" in str(e.value)
