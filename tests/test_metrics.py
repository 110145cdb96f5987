"""wod-hub's Prometheus metrics: the snapshot queries, the refresh on change, and the
figures on a real hub's /hub/metrics moving with registrations, actions and e-mails."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
import pytest_asyncio
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.smtp import SMTPServer
from tests.test_admin_http import admin_session, in_use, sign_up, start_hub
from wod_hub import metrics, seats
from wod_hub.db import Database
from wod_hub.orm import OutboxMessage, Participant, Registration, WorkshopRow, utcnow
from wod_hub.seats import WorkshopSpec


def samples(families) -> dict[tuple, float]:
    out = {}
    for family in families:
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


# ---- the snapshot and the collector, on SQLite and PostgreSQL -----------------------------------


@pytest_asyncio.fixture(loop_scope="function")
async def db(any_db_url):
    database = Database(any_db_url)
    await database.migrate()
    async with database.begin_write() as s:
        await seats.sync_workshops(
            s, [WorkshopSpec("WKSHP-A", 4, 1, 10), WorkshopSpec("WKSHP-B", 2, 11, 20)]
        )
    yield database
    await database.dispose()


async def add_registration(db, i: int, workshop: str, state: str = "active", reason=None) -> int:
    async with db.begin_write() as s:
        p = Participant(email=f"m{i}@example.org", first_name="M", last_name=str(i), company="C")
        s.add(p)
        await s.flush()
        r = Registration(
            participant_id=p.id,
            workshop_id=workshop,
            expires_at=utcnow() + timedelta(hours=1),
            ended_reason=reason,
        )
        s.add(r)
        await s.flush()
        await seats.allocate_seat(s, workshop, r.id)
        r.state = state
        if state in ("ended", "failed"):
            await seats.release_seat(s, r.id)
        return r.id


async def test_snapshot_and_collector(db):
    await add_registration(db, 1, "WKSHP-A", "active")
    await add_registration(db, 2, "WKSHP-A", "ended", reason="expired")
    await add_registration(db, 3, "WKSHP-A", "failed")
    await add_registration(db, 4, "WKSHP-B", "expired", reason="expired")
    async with db.begin_write() as s:
        s.add(OutboxMessage(to_addr="x@example.org", template="welcome", context={}, state="sent"))
        s.add(
            OutboxMessage(to_addr="y@example.org", template="welcome", context={}, state="pending")
        )
        s.add(
            OutboxMessage(to_addr="z@example.org", template="welcome", context={}, state="failed")
        )
    async with db.session() as s:
        snap = await metrics.take_snapshot(s)
    collector = metrics.WodCollector()
    collector.snapshot = snap
    found = samples(collector.collect())
    assert value(found, "wod_registrations_total", workshop="WKSHP-A", outcome="registered") == 3
    assert value(found, "wod_registrations_total", workshop="WKSHP-A", outcome="ended") == 1
    assert value(found, "wod_registrations_total", workshop="WKSHP-A", outcome="failed") == 1
    assert (
        value(found, "wod_registrations_total", workshop="WKSHP-B", outcome="failed") == 0
    )  # exists at 0
    assert value(found, "wod_expirations_total", workshop="WKSHP-A") == 1
    assert value(found, "wod_expirations_total", workshop="WKSHP-B") == 1
    assert value(found, "wod_seats_in_use", workshop="WKSHP-A") == 1
    assert value(found, "wod_seats_in_use", workshop="WKSHP-B") == 1
    assert value(found, "wod_seats_capacity", workshop="WKSHP-A") == 4
    assert value(found, "wod_active_sessions", workshop="WKSHP-A") == 1
    assert value(found, "wod_registration_open", workshop="WKSHP-B") == 1
    assert value(found, "wod_emails_sent_total") == 1
    assert value(found, "wod_emails_pending") == 1
    assert value(found, "wod_emails_failed") == 1


async def test_refresh_on_commit(db):
    metrics.COLLECTOR.snapshot = None
    refresher = metrics.MetricsRefresher(db, interval=0, debounce=0.05)  # no periodic refresh
    refresher.start()
    try:
        await wait_for(lambda: metrics.COLLECTOR.snapshot is not None)
        before = metrics.COLLECTOR.snapshot.workshops["WKSHP-A"]["in_use"]
        await add_registration(db, 10, "WKSHP-A")
        await wait_for(
            lambda: metrics.COLLECTOR.snapshot.workshops["WKSHP-A"]["in_use"] == before + 1
        )
        # a rolled-back write changes nothing and does not count
        with pytest.raises(RuntimeError):
            async with db.begin_write() as s:
                row = await s.get(WorkshopRow, "WKSHP-A")
                row.seats_in_use += 1
                await s.flush()
                raise RuntimeError("rolled back")
        await asyncio.sleep(0.3)
        assert metrics.COLLECTOR.snapshot.workshops["WKSHP-A"]["in_use"] == before + 1
    finally:
        await refresher.stop()


async def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    assert pred(), "condition not met in time"


def test_time_action_observes_outcome():
    def count(outcome):
        return metrics.ACTION_DURATION.labels(action="unit-test", outcome=outcome)._sum.get()

    with metrics.time_action("unit-test"):
        time.sleep(0.01)
    with pytest.raises(ValueError):
        with metrics.time_action("unit-test"):
            raise ValueError
    assert count("ok") >= 0.01 and count("error") >= 0


# ---- a real hub's /hub/metrics ---------------------------------------------------------------


@pytest.fixture(scope="module")
def smtp():
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, smtp):
    # no periodic refresh: only the refresh on change can move the figures
    hub = start_hub(
        tmp_path_factory.mktemp("metrics"),
        smtp.port,
        extra_config="c.MetricsRefresher.interval = 0\n",
    )
    yield hub
    hub.stop()


def scrape(hub) -> dict:
    r = requests.get(
        hub.url + "/hub/metrics", headers={"Authorization": f"token {hub.api_token}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    return samples(text_string_to_metric_families(r.text))


def wait_metric(hub, name, expected, timeout=10.0, **labels) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = scrape(hub)
        if value(found, name, **labels) == expected or time.monotonic() > deadline:
            assert value(found, name, **labels) == expected, (
                name,
                labels,
                value(found, name, **labels),
            )
            return found
        time.sleep(0.2)


def test_metrics_need_a_scope(hub):
    assert requests.get(hub.url + "/hub/metrics", timeout=30).status_code == 403


def test_register_moves_counter_and_gauge(hub, smtp):
    found = wait_metric(hub, "wod_seats_capacity", 5, workshop="WKSHP-Alpha")
    registered = value(
        found, "wod_registrations_total", workshop="WKSHP-Alpha", outcome="registered"
    )
    used = value(found, "wod_seats_in_use", workshop="WKSHP-Alpha")
    sent = value(found, "wod_emails_sent_total")

    s = sign_up(hub, "metrics1", "WKSHP-Alpha")
    found = wait_metric(
        hub, "wod_registrations_total", registered + 1, workshop="WKSHP-Alpha", outcome="registered"
    )
    assert (
        value(found, "wod_seats_in_use", workshop="WKSHP-Alpha")
        == used + 1
        == in_use(hub, "WKSHP-Alpha")
    )
    smtp.wait_for(lambda m: s["email"] in m["To"], timeout=30)
    wait_metric(hub, "wod_emails_sent_total", sent + 1)

    # an admin PURGE: the seat gauge goes back down, the action is timed
    admin = admin_session(hub)
    assert admin is not None
    reg_id = hub.api("GET", "/wod/admin/registrations", params={"email": "metrics1@"}).json()[
        "registrations"
    ][0]["id"]
    before = (
        value(scrape(hub), "wod_action_duration_seconds_count", action="purge", outcome="ok") or 0
    )
    out = hub.api(
        "POST", "/wod/admin/actions", json={"action": "purge", "registrations": [reg_id]}
    ).json()
    assert out["failed"] == 0, out["results"]
    found = wait_metric(hub, "wod_seats_in_use", used, workshop="WKSHP-Alpha")
    assert (
        value(found, "wod_action_duration_seconds_count", action="purge", outcome="ok")
        == before + 1
    )
    assert value(found, "wod_expirations_total", workshop="WKSHP-Alpha") is not None

    # closing a workshop shows at once
    hub.api("POST", "/wod/admin/workshops/WKSHP-Alpha", json={"registration_open": False})
    wait_metric(hub, "wod_registration_open", 0, workshop="WKSHP-Alpha")
    hub.api("POST", "/wod/admin/workshops/WKSHP-Alpha", json={"registration_open": True})
    wait_metric(hub, "wod_registration_open", 1, workshop="WKSHP-Alpha")
