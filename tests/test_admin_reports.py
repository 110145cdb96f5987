"""The admin page's queries (filters, pagination, per-workshop figures, per-day counts)
and SVG charts, on a SQLite file and a real PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import pytest_asyncio

from wod_hub import charts, reports, seats
from wod_hub.db import Database
from wod_hub.orm import OutboxMessage, Participant, Registration, State
from wod_hub.seats import WorkshopSpec

NOW = datetime(2025, 3, 10, 12, 0, 0)


@pytest_asyncio.fixture(loop_scope="function")
async def db(any_db_url):
    database = Database(any_db_url)
    await database.migrate()
    async with database.begin_write() as s:
        await seats.sync_workshops(
            s,
            [WorkshopSpec("WKSHP-Alpha", 5, 1, 10), WorkshopSpec("WKSHP-Beta", 3, 11, 20)],
            now=NOW,
        )
    yield database
    await database.dispose()


async def add(
    db,
    i: int,
    workshop: str,
    *,
    state="active",
    created=NOW,
    completion=None,
    error=None,
    seat=True,
):
    async with db.begin_write() as s:
        p = Participant(
            email=f"user{i}@Example.org".lower(),
            first_name=f"First{i}",
            last_name="Last",
            company=f"Co{i}",
        )
        s.add(p)
        await s.flush()
        r = Registration(
            participant_id=p.id,
            workshop_id=workshop,
            state=State.registered.value,
            created_at=created,
            expires_at=created + timedelta(hours=2),
            completion=completion,
            error=error,
        )
        s.add(r)
        await s.flush()
        if seat:
            got = await seats.allocate_seat(s, workshop, r.id, now=created)
            r.student_number, r.username = got.student_number, got.username
        r.state = state
        if state in (State.ended.value, State.failed.value) and seat:
            await seats.release_seat(s, r.id)
        return r.id


@pytest_asyncio.fixture(loop_scope="function")
async def populated(db):
    ids = {
        "a1": await add(db, 1, "WKSHP-Alpha", created=NOW - timedelta(minutes=30)),
        "a2": await add(
            db, 2, "WKSHP-Alpha", state="ended", created=NOW - timedelta(days=1), completion=50.0
        ),
        "a3": await add(
            db, 3, "WKSHP-Alpha", state="ended", created=NOW - timedelta(days=2), completion=100.0
        ),
        "a4": await add(
            db,
            4,
            "WKSHP-Alpha",
            state="failed",
            created=NOW - timedelta(days=2),
            error="hook create exited 3",
        ),
        "b1": await add(db, 5, "WKSHP-Beta", state="registered", created=NOW - timedelta(hours=1)),
        "b2": await add(db, 6, "WKSHP-Beta", state="expired", created=NOW - timedelta(hours=3)),
    }
    return ids


FILTER_CASES = [
    pytest.param({}, {"a1", "a2", "a3", "a4", "b1", "b2"}, id="all"),
    pytest.param({"workshop": "WKSHP-Beta"}, {"b1", "b2"}, id="workshop"),
    pytest.param({"status": "ended"}, {"a2", "a3"}, id="status"),
    pytest.param({"status": "live"}, {"a1", "b1", "b2"}, id="live"),
    pytest.param({"email": "USER4@"}, {"a4"}, id="email-case-insensitive"),
    pytest.param({"q": "co5"}, {"b1"}, id="search-company"),
    pytest.param({"q": "Student1"}, {"a1"}, id="search-student-exact"),  # not student11
    pytest.param({"since": "2025-03-10"}, {"a1", "b1", "b2"}, id="since"),
    pytest.param({"until": "2025-03-08"}, {"a3", "a4"}, id="until"),
    pytest.param({"since": "2025-03-09", "until": "2025-03-09"}, {"a2"}, id="one-day"),
    pytest.param({"email": "100%_"}, set(), id="like-wildcards-are-literal"),
]


@pytest.mark.parametrize("args, expected", FILTER_CASES)
async def test_filters(db, populated, args, expected):
    flt = reports.RegistrationFilter.parse(args)
    async with db.session() as s:
        page = await reports.list_registrations(s, flt, now=NOW)
    names = {k for k, v in populated.items() if v in {r.id for r in page.rows}}
    assert names == expected
    assert page.total == len(expected)


async def test_rows_time_left_and_error(db, populated):
    async with db.session() as s:
        page = await reports.list_registrations(s, reports.RegistrationFilter(), now=NOW)
    by_id = {r.id: r for r in page.rows}
    a1 = by_id[populated["a1"]]
    assert a1.seconds_left == 90 * 60 and a1.time_left == "1h 30m"
    assert by_id[populated["b2"]].time_left == "expired"
    assert by_id[populated["a2"]].time_left == "—" and by_id[populated["a2"]].seconds_left is None
    assert by_id[populated["a4"]].error == "hook create exited 3"
    # newest first
    assert [r.id for r in page.rows][0] == populated["a1"]
    data = a1.to_json()
    assert data["created_at"].endswith("Z") and data["live"] is True


async def test_pagination(db, populated):
    seen = []
    for n in (1, 2, 3):
        flt = reports.RegistrationFilter.parse({"per_page": "2", "page": str(n)})
        async with db.session() as s:
            page = await reports.list_registrations(s, flt, now=NOW)
        assert page.total == 6 and page.pages == 3
        seen += [r.id for r in page.rows]
    assert sorted(seen) == sorted(populated.values())


@pytest.mark.parametrize(
    "args, field",
    [
        pytest.param({"status": "zombie"}, "status", id="status"),
        pytest.param({"since": "10/03/2025"}, "since", id="date-format"),
        pytest.param({"since": "2025-03-10", "until": "2025-03-01"}, "until", id="reversed"),
        pytest.param({"per_page": "100000"}, "per_page", id="per-page"),
        pytest.param({"page": "x"}, "page", id="page"),
        pytest.param({"ids": "1,x"}, "ids", id="ids"),
    ],
)
def test_bad_filters_name_the_parameter(args, field):
    with pytest.raises(reports.FilterError) as e:
        reports.RegistrationFilter.parse(args)
    assert field in e.value.errors


async def test_workshop_stats(db, populated):
    async with db.session() as s:
        stats = {w.id: w for w in await reports.workshop_stats(s, None, now=NOW)}
    alpha, beta = stats["WKSHP-Alpha"], stats["WKSHP-Beta"]
    assert (alpha.capacity, alpha.in_use, alpha.free) == (5, 1, 4)
    assert (beta.capacity, beta.in_use, beta.free) == (3, 2, 1)
    assert (alpha.range_min, alpha.range_max) == (1, 10)
    assert alpha.registrations_total == 4 and alpha.registrations_today == 1
    assert beta.registrations_total == 2 and beta.registrations_today == 2
    assert alpha.completion_rate == 75.0  # mean of the ended ones only
    assert beta.completion_rate is None
    assert alpha.failed == 1 and alpha.ended == 2 and alpha.active == 1
    assert alpha.registration_open is True


async def test_totals_and_per_day(db, populated):
    async with db.begin_write() as s:
        s.add(
            OutboxMessage(
                to_addr="x@example.org",
                template="welcome",
                context={},
                state="failed",
                last_error="550",
            )
        )
    async with db.session() as s:
        t = await reports.totals(s, now=NOW)
        days, series = await reports.registrations_per_day(s, days=7, now=NOW)
        outbox = await reports.outbox_messages(s)
    assert t.registrations_total == 6 and t.registrations_today == 3 and t.live == 3
    assert t.by_state["ended"] == 2 and t.outbox["failed"] == 1
    assert len(days) == 7 and days[-1] == NOW.date()
    assert (
        series["WKSHP-Alpha"][-1] == 1
        and series["WKSHP-Alpha"][-2] == 1
        and series["WKSHP-Alpha"][-3] == 2
    )
    assert series["WKSHP-Beta"][-1] == 2
    assert [m.last_error for m in outbox] == ["550"]


def test_charts_escape_labels_and_scale():
    svg = charts.stacked_bars_svg(
        ["03-09", "03-10"], {"<script>": [1, 3], "B": [0, 2]}, title="T & <b>", element_id="c"
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "T &amp; &lt;b&gt;" in svg
    assert 'data-value="5"' in svg and 'data-value="1"' in svg
    with pytest.raises(ValueError):
        charts.stacked_bars_svg(["a"], {"x": [1, 2]}, title="t")
    bars = charts.horizontal_bars_svg([('W"1', 4), ("W2", 2)], title="per workshop")
    assert 'data-label="W&quot;1"' in bars and bars.count('class="wod-bar"') == 2
    assert "No data yet" in charts.horizontal_bars_svg([], title="empty")
