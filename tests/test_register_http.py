"""Self-registration through a real JupyterHub + proxy, like a browser does:
form → seat → e-mail over real SMTP → link → logged in."""

from __future__ import annotations

import asyncio
import re
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from tests.hubprocess import HubProcess, register, xsrf_from
from tests.smtp import SMTPServer
from wod_hub.db import Database
from wod_hub.orm import LoginToken, OutboxMessage, Participant, Registration, WorkshopRow

LINK = re.compile(r"(http://127\.0\.0\.1:\d+/hub/wod/start\?token=[A-Za-z0-9_\-.%]+)")


def make_workshops(root: Path, *specs) -> Path:
    """specs: (id, capacity, range_min, range_max)"""
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
            '{"cells": [{"cell_type": "markdown", "metadata": {}, "source": "Hello student{{ STDID }}"}],'
            ' "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
        )
    return root


def counts(db_url: str) -> dict:
    async def go():
        db = Database(db_url)
        try:
            async with db.session() as s:
                return {
                    "participants": (
                        await s.execute(select(func.count(Participant.id)))
                    ).scalar_one(),
                    "registrations": (
                        await s.execute(select(func.count(Registration.id)))
                    ).scalar_one(),
                    "outbox": (await s.execute(select(func.count(OutboxMessage.id)))).scalar_one(),
                    "in_use": dict(
                        (await s.execute(select(WorkshopRow.id, WorkshopRow.seats_in_use))).all()
                    ),
                }
        finally:
            await db.dispose()

    return asyncio.run(go())


def person(i=0, **kw):
    return {
        "email": f"ada{i}@example.org",
        "first_name": "Ada",
        "last_name": f"Lovelace{i}",
        "company": "Analytical Engines",
        "workshop": "WKSHP-Gamma",
        **kw,
    }


SPECS = (("WKSHP-Alpha", 3, 1, 10), ("WKSHP-Beta", 20, 101, 200), ("WKSHP-Gamma", 200, 201, 400))


@pytest.fixture
def workshops(tmp_path):
    return make_workshops(tmp_path / "workshops", *SPECS)


@pytest.fixture(scope="module")
def smtp_module():
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, smtp_module):
    """One hub for the module (tests use distinct e-mails and workshops);
    rate limits off here: they have their own test and hub."""
    root = tmp_path_factory.mktemp("reg")
    hub = HubProcess(
        root / "hub",
        smtp_port=smtp_module.port,
        workshop_dirs=[make_workshops(root / "workshops", *SPECS)],
        extra_config="""
        c.WorkshopAuthenticator.registration_limit_per_ip = 0
        c.WorkshopAuthenticator.registration_limit_per_email = 0
        c.WorkshopAuthenticator.recover_limit_per_email = 0
        """,
    ).start()
    yield hub
    hub.stop()


@pytest.fixture
def smtp(smtp_module):
    return smtp_module


def wait_for_link(smtp_server, to: str, timeout=20) -> str:
    msg = smtp_server.wait_for(lambda m: to in m["To"], timeout=timeout)
    text = smtp_server.text_of(msg)
    m = LINK.search(text)
    assert m, f"no login link in the e-mail:\n{text}"
    return m.group(1)


def start_with_link(session: requests.Session, link: str) -> requests.Response:
    page = session.get(link, timeout=30)
    assert page.status_code == 200, page.text
    assert "Start my workshop" in page.text
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
    return session.post(
        link.split("?")[0],
        data={"_xsrf": xsrf_from(page.text), "token": token},
        allow_redirects=False,
        timeout=30,
    )


def test_login_page_shows_catalog(hub):
    page = requests.get(hub.url + "/hub/login", timeout=30).text
    assert "WKSHP-Alpha test workshop" in page and "WKSHP-Beta test workshop" in page
    assert "WKSHP-Gamma test workshop" in page and "seats left" in page
    assert 'name="terms"' in page and 'id="username_input"' in page  # register form + hub sign-in


def test_register_mail_link_login(hub, smtp):
    s = requests.Session()
    r = register(s, hub, **person())
    assert r.status_code == 200, r.text
    assert "ada0@example.org" in r.text
    username = re.search(r'id="wod-username">(student\d+)<', r.text).group(1)
    assert username.startswith("student2") and 201 <= int(username[7:]) <= 400

    link = wait_for_link(smtp, "ada0@example.org")
    # the GET page does not burn the token (mail scanners prefetch links)
    browser = requests.Session()
    browser.get(link, timeout=30)
    r = start_with_link(browser, link)
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/hub/spawn/{username}")
    home = browser.get(hub.url + "/hub/home", timeout=30)
    assert home.status_code == 200 and username in home.text

    user = hub.api("GET", f"/users/{username}").json()
    assert "WKSHP-Gamma" in user["groups"]
    assert not user["admin"]

    # reused link is refused with a message a person can act on
    again = start_with_link(requests.Session(), link)
    assert again.status_code == 403 and "already been used" in again.text


def test_hub_user_exists_in_its_group_before_first_login(hub):
    """The admin panel shows the student as soon as registrations pause, no login needed."""
    r = register(requests.Session(), hub, **person(95))
    username = re.search(r'id="wod-username">(student\d+)<', r.text).group(1)
    user = hub.wait_for_user(username)
    assert user["groups"] == ["WKSHP-Gamma"] and not user["admin"] and not user["server"]


def test_password_fallback(hub):
    s = requests.Session()
    r = register(s, hub, **person(1))
    username = re.search(r'id="wod-username">(student\d+)<', r.text).group(1)
    password = re.search(r'id="wod-password">([^<]+)<', r.text).group(1)
    browser = requests.Session()
    page = browser.get(hub.url + "/hub/login", timeout=30)
    bad = browser.post(
        hub.url + "/hub/login",
        data={"_xsrf": xsrf_from(page.text), "username": username, "password": password + "x"},
        allow_redirects=False,
        timeout=30,
    )
    assert bad.status_code == 403
    ok = browser.post(
        hub.url + "/hub/login",
        data={"_xsrf": xsrf_from(page.text), "username": username, "password": password},
        allow_redirects=False,
        timeout=30,
    )
    assert ok.status_code == 302, ok.text


def test_admin_signs_in_with_password(hub):
    browser = requests.Session()
    page = browser.get(hub.url + "/hub/login", timeout=30)
    r = browser.post(
        hub.url + "/hub/login",
        data={"_xsrf": xsrf_from(page.text), "username": "admin", "password": hub.admin_password},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 302
    assert hub.api("GET", "/users/admin").json()["admin"] is True


BAD_INPUTS = [
    pytest.param({"email": ""}, "email", "Enter your e-mail", id="missing-email"),
    pytest.param({"email": "not-an-address"}, "email", "not valid", id="invalid-email"),
    pytest.param({"email": "x@mailinator.com"}, "email", "disposable", id="disposable-domain"),
    pytest.param(
        {"first_name": ""}, "first_name", "Enter your first name", id="missing-first-name"
    ),
    pytest.param({"last_name": "x" * 101}, "last_name", "too long", id="long-last-name"),
    pytest.param({"company": ""}, "company", "Enter your company", id="missing-company"),
    pytest.param(
        {"first_name": "   "}, "first_name", "Enter your first name", id="blank-first-name"
    ),
    pytest.param({"workshop": "WKSHP-Nope"}, "workshop", "does not exist", id="unknown-workshop"),
    pytest.param({"workshop": ""}, "workshop", "Choose a workshop", id="no-workshop"),
    pytest.param({"terms": None}, "terms", "Accept the terms", id="terms-not-accepted"),
]


@pytest.mark.parametrize("override, field, message", BAD_INPUTS)
def test_bad_input_is_refused_and_nothing_stored(hub, override, field, message):
    before = counts(hub.db_url)
    r = register(requests.Session(), hub, **person(**override))
    assert r.status_code == 400
    assert f'id="wod-{field}-error"' in r.text and message in r.text
    assert counts(hub.db_url) == before


def test_missing_xsrf_is_refused(hub):
    before = counts(hub.db_url)
    r = requests.post(hub.url + "/hub/wod/register", data={**person(), "terms": "on"}, timeout=30)
    assert r.status_code == 403
    assert counts(hub.db_url) == before


def test_duplicate_registration_is_refused(hub):
    assert register(requests.Session(), hub, **person(7)).status_code == 200
    before = counts(hub.db_url)
    r = register(requests.Session(), hub, **person(7, email="ADA7@Example.org"))
    assert r.status_code == 409 and "already registered" in r.text
    assert counts(hub.db_url) == before
    # another workshop is fine (one live registration per workshop by default)
    assert register(requests.Session(), hub, **person(7, workshop="WKSHP-Alpha")).status_code == 200


def test_full_workshop(hub):
    for i in range(2):  # test_duplicate_registration_is_refused may hold one of the 3 seats
        register(requests.Session(), hub, **person(20 + i, workshop="WKSHP-Alpha"))
    register(requests.Session(), hub, **person(22, workshop="WKSHP-Alpha"))
    r = register(requests.Session(), hub, **person(30, workshop="WKSHP-Alpha"))
    assert r.status_code == 409 and "is full" in r.text
    page = requests.get(hub.url + "/hub/login", timeout=30).text
    assert "Currently full" in page


def concurrent_registrations(hub, n: int, workshop: str) -> list[requests.Response]:
    def one(i):
        return register(requests.Session(), hub, **person(1000 + i, workshop=workshop))

    with ThreadPoolExecutor(max_workers=50) as pool:
        return list(pool.map(one, range(n)))


def assert_rush_outcome(hub, responses, capacity: int):
    ok = [r for r in responses if r.status_code == 200]
    full = [r for r in responses if r.status_code == 409]
    assert len(ok) == capacity, [r.status_code for r in responses]
    assert len(full) == len(responses) - capacity
    assert all("is full" in r.text for r in full)
    students = [re.search(r'id="wod-username">(student\d+)<', r.text).group(1) for r in ok]
    assert len(set(students)) == capacity  # never one student to two people
    assert counts(hub.db_url)["in_use"]["WKSHP-Beta"] == capacity


def test_rush_sqlite(hub):
    assert_rush_outcome(hub, concurrent_registrations(hub, 100, "WKSHP-Beta"), 20)


@pytest.mark.postgres
def test_rush_postgresql(hub_factory, smtp_server, workshops, pg_db_url):
    hub = hub_factory(
        smtp_port=smtp_server.port,
        workshop_dirs=[workshops],
        db_url=pg_db_url,
        extra_config="c.WorkshopAuthenticator.registration_limit_per_ip = 0\n",
    )
    assert_rush_outcome(hub, concurrent_registrations(hub, 100, "WKSHP-Beta"), 20)


def test_forged_and_expired_links(hub, smtp):
    register(requests.Session(), hub, **person(40))
    link = wait_for_link(smtp, "ada40@example.org")
    base, token = link.split("?token=")
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    r = start_with_link(requests.Session(), f"{base}?token={forged}")
    assert r.status_code == 403 and "not valid" in r.text
    garbage = start_with_link(requests.Session(), f"{base}?token=garbage")
    assert garbage.status_code == 403

    # expire it in the database: the signature is fine, the time is not
    async def expire():
        db = Database(hub.db_url)
        async with db.begin_write() as s:
            for t in (await s.execute(select(LoginToken))).scalars():
                t.expires_at = t.created_at
        await db.dispose()

    asyncio.run(expire())
    r = start_with_link(requests.Session(), link)
    assert r.status_code == 403 and "expired" in r.text


def test_recover_does_not_reveal_registrations(hub, smtp):
    register(requests.Session(), hub, **person(50))
    wait_for_link(smtp, "ada50@example.org")

    def recover(email):
        s = requests.Session()
        page = s.get(hub.url + "/hub/wod/recover", timeout=30)
        return s.post(
            hub.url + "/hub/wod/recover",
            data={"_xsrf": xsrf_from(page.text), "email": email},
            timeout=30,
        )

    known, unknown = recover("ada50@example.org"), recover("nobody@example.org")
    assert known.status_code == unknown.status_code == 200
    strip = lambda t: re.sub(r'value="[^"]*"', "", t)  # noqa: E731 (xsrf differs)
    assert strip(known.text) == strip(unknown.text)
    # a fresh, working link arrived for the registered address only
    msgs = smtp.wait_for_count(lambda m: "ada50@example.org" in m["To"], 2, timeout=20)
    fresh = LINK.search(smtp.text_of(msgs[-1])).group(1)
    assert start_with_link(requests.Session(), fresh).status_code == 302
    assert not [m for m in smtp.messages if "nobody@example.org" in m["To"]]
    bad = recover("not an address")
    assert bad.status_code == 400


def test_smtp_down_at_registration(hub, smtp):
    smtp.stop()
    r = register(requests.Session(), hub, **person(60))
    assert r.status_code == 200  # the request never waits on SMTP
    smtp.start()
    link = wait_for_link(smtp, "ada60@example.org", timeout=30)
    assert start_with_link(requests.Session(), link).status_code == 302
    assert len([m for m in smtp.messages if "ada60@example.org" in m["To"]]) == 1


def test_control_characters_never_reach_the_database(hub):
    # Tornado replaces control characters in form arguments; the parser refuses any left
    r = register(requests.Session(), hub, **person(90, first_name="Ada\x00\x07"))
    assert r.status_code == 200

    async def stored():
        db = Database(hub.db_url)
        async with db.session() as s:
            p = (
                await s.execute(select(Participant).where(Participant.email == "ada90@example.org"))
            ).scalar_one()
        await db.dispose()
        return p.first_name

    assert asyncio.run(stored()) == "Ada"


def test_rate_limit_per_ip(hub_factory, smtp_server, workshops):
    hub = hub_factory(
        smtp_port=smtp_server.port,
        workshop_dirs=[workshops],
        extra_config="c.WorkshopAuthenticator.registration_limit_per_ip = 2\n",
    )
    codes = [
        register(requests.Session(), hub, **person(70 + i, workshop="WKSHP-Beta")).status_code
        for i in range(3)
    ]
    assert codes[:2] == [200, 200]
    r = register(requests.Session(), hub, **person(80, workshop="WKSHP-Beta"))
    assert (
        r.status_code == 429 and "Too many registrations" in r.text and "Retry-After" in r.headers
    )
