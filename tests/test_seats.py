"""The seat pool: sync with the catalog, atomic allocation under a rush, release.
Every test runs on a SQLite file and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from types import SimpleNamespace as W

import pytest
import pytest_asyncio
from sqlalchemy import delete, func, select, update

from wod_hub import seats
from wod_hub.db import Database
from wod_hub.orm import Participant, Registration, Seat, WorkshopRow, utcnow
from wod_hub.seats import WorkshopSpec


@pytest_asyncio.fixture(loop_scope="function")
async def db(any_db_url):
    database = Database(any_db_url)
    await database.migrate()
    yield database
    await database.dispose()


async def sync(db, *specs: WorkshopSpec) -> seats.SyncReport:
    async with db.begin_write() as s:
        return await seats.sync_workshops(s, specs)


async def registrations(db, workshop_id: str, n: int, start: int = 0) -> list[int]:
    """``n`` registrations (one participant each) waiting for a seat."""
    ids = []
    async with db.begin_write() as s:
        for i in range(start, start + n):
            p = Participant(
                email=f"p{i}@example.org", first_name="P", last_name=str(i), company="C"
            )
            s.add(p)
            await s.flush()
            r = Registration(
                participant_id=p.id,
                workshop_id=workshop_id,
                expires_at=utcnow() + timedelta(hours=2),
            )
            s.add(r)
            await s.flush()
            ids.append(r.id)
    return ids


async def allocate(db, workshop_id: str, registration_id: int) -> int:
    async with db.begin_write() as s:
        return (await seats.allocate_seat(s, workshop_id, registration_id)).student_number


async def release(db, registration_id: int) -> Seat | None:
    async with db.begin_write() as s:
        return await seats.release_seat(s, registration_id)


async def stats(db) -> dict:
    async with db.session() as s:
        return await seats.seat_stats(s)


async def seat_rows(db, workshop_id: str | None = None) -> dict[int, Seat]:
    async with db.session() as s:
        q = select(Seat)
        if workshop_id:
            q = q.where(Seat.workshop_id == workshop_id)
        return {seat.student_number: seat for seat in (await s.execute(q)).scalars()}


# ---- sync ------------------------------------------------------------------------------------


async def test_sync_creates_rows_and_seats_and_is_idempotent(db):
    specs = (WorkshopSpec("A", 3, 1, 10), WorkshopSpec("B", 5, 101, 120))
    first = await sync(db, *specs)
    assert first.created == 30
    rows = await seat_rows(db)
    assert sorted(rows) == [*range(1, 11), *range(101, 121)]
    assert rows[7].username == "student7" and rows[7].workshop_id == "A" and rows[7].generation == 0

    second = await sync(db, *specs)
    assert (second.created, second.moved, second.retired, second.recounted) == (0, 0, [], {})
    assert (await seat_rows(db)).keys() == rows.keys()
    st = await stats(db)
    assert st["A"] == {
        "capacity": 3,
        "effective_capacity": 3,
        "in_use": 0,
        "free": 3,
        "free_seats": 10,
        "disabled": 0,
        "range": (1, 10),
        "open": True,
    }
    assert st["B"]["free"] == 5 and st["B"]["range"] == (101, 120)


async def test_sync_accepts_catalog_like_objects(db):
    class CatalogWorkshop:  # the catalog's Workshop exposes a (min, max) range
        def __init__(self, id, capacity, range):
            self.id, self.capacity, self.range = id, capacity, range

    await sync(db, CatalogWorkshop("A", 2, (5, 8)))
    assert sorted(await seat_rows(db)) == [5, 6, 7, 8]


@pytest.mark.parametrize(
    "specs, words",
    [
        ((W(id="A", capacity=1, range=(1, 10)), W(id="B", capacity=1, range=(10, 20))), "overlap"),
        ((W(id="A", capacity=1, range=(10, 5)),), "A: student range 10-5 is reversed"),
        ((W(id="A", capacity=-1, range=(1, 5)),), "A: capacity -1 is negative"),
    ],
    ids=["overlapping-ranges", "empty-range", "negative-capacity"],
)
async def test_sync_refuses_bad_specs(db, specs, words):
    with pytest.raises(ValueError, match=words):
        await sync(db, *specs)


async def test_workshop_without_range_has_no_seats(db):
    await sync(
        db, W(id="A", capacity=0, student_range=(0, -1)), W(id="B", capacity=1, range=(1, 2))
    )
    assert (await stats(db))["A"]["free"] == 0 and sorted(await seat_rows(db)) == [1, 2]
    (r,) = await registrations(db, "A", 1)
    with pytest.raises(seats.WorkshopFull):
        await allocate(db, "A", r)


async def test_sync_fast_for_10_workshops_of_1000_seats(db):
    specs = [WorkshopSpec(f"W{i}", 100, i * 1000 + 1, i * 1000 + 1000) for i in range(10)]
    t0 = time.perf_counter()
    assert (await sync(db, *specs)).created == 10_000
    t1 = time.perf_counter()
    assert (await sync(db, *specs)).created == 0
    t2 = time.perf_counter()
    print(f"sync 10x1000: first {t1 - t0:.2f}s, again {t2 - t1:.2f}s")
    assert t1 - t0 < 10 and t2 - t1 < 5


async def test_range_shrinks_grows_and_moves(db):
    await sync(db, WorkshopSpec("A", 10, 1, 10))
    (r1, r2) = await registrations(db, "A", 2)
    for r in (r1, r2):
        await allocate(db, "A", r)  # students 1 and 2
    async with db.begin_write() as s:  # make student 9 held too
        await s.execute(
            update(Seat).where(Seat.student_number.in_([1, 2])).values(registration_id=None)
        )
        await s.execute(update(Seat).where(Seat.student_number == 9).values(registration_id=r1))
        await s.execute(update(Seat).where(Seat.student_number == 1).values(registration_id=r2))

    # A shrinks to 1-5; B takes 6-12: free 6, 7, 8, 10 move to B, held 9 stays with A
    report = await sync(db, WorkshopSpec("A", 10, 1, 5), WorkshopSpec("B", 10, 6, 12))
    assert report.moved == 4 and report.held_out_of_range == [9] and report.blocked == [9]
    assert report.created == 2  # 11, 12
    rows = await seat_rows(db)
    assert {n: rows[n].workshop_id for n in range(1, 13)} == {
        **{n: "A" for n in range(1, 6)},
        **{n: "B" for n in (6, 7, 8, 10, 11, 12)},
        9: "A",
    }
    assert rows[6].generation == 1  # moved seats rotate their derived password
    (rb,) = await registrations(db, "B", 1, start=10)
    assert await allocate(db, "B", rb) == 6

    # released, 9 goes to the workshop whose range holds it now
    released = await release(db, r1)
    assert released.student_number == 9 and released.workshop_id == "B"
    assert (await stats(db))["A"]["in_use"] == 1

    # A shrinks again to 1-3: free 4 and 5 are out of every range: retired, not deleted
    report = await sync(db, WorkshopSpec("A", 10, 1, 3), WorkshopSpec("B", 10, 6, 12))
    assert sorted(report.retired) == [4, 5]
    rows = await seat_rows(db)
    assert {4, 5} <= rows.keys()
    more = await registrations(db, "A", 3, start=20)
    got = []
    for r in more:
        try:
            got.append(await allocate(db, "A", r))
        except seats.WorkshopFull:
            got.append(None)
    assert got == [2, 3, None]  # 1 is held; retired 4 and 5 are never handed out
    assert (await stats(db))["A"]["free_seats"] == 0

    # the range grows back: 4 and 5 come back with their generation, no new rows
    report = await sync(db, WorkshopSpec("A", 10, 1, 5), WorkshopSpec("B", 10, 6, 12))
    assert report.created == 0 and (await stats(db))["A"]["free_seats"] == 2


async def test_capacity_lowered_below_seats_in_use(db):
    """Documented behaviour: sync succeeds (the CHECK holds: capacity is kept at the
    seats in use), no registration passes until releases bring the count below the new
    capacity, and each release lowers the effective capacity one step."""
    await sync(db, WorkshopSpec("A", 5, 1, 10))
    regs = await registrations(db, "A", 7)
    for r in regs[:5]:
        await allocate(db, "A", r)

    report = await sync(db, WorkshopSpec("A", 2, 1, 10))
    assert report.over_capacity == {"A": (5, 2)}
    st = (await stats(db))["A"]
    assert (st["capacity"], st["effective_capacity"], st["in_use"], st["free"]) == (2, 5, 5, 0)
    with pytest.raises(seats.WorkshopFull):
        await allocate(db, "A", regs[5])

    for r in regs[:3]:  # 5 -> 2 in use
        await release(db, r)
        st = (await stats(db))["A"]
        assert st["effective_capacity"] == max(2, st["in_use"])
        with pytest.raises(seats.WorkshopFull):
            await allocate(db, "A", regs[5])
    await release(db, regs[3])  # 1 in use: one seat free again
    assert await allocate(db, "A", regs[5]) == 1
    with pytest.raises(seats.WorkshopFull):
        await allocate(db, "A", regs[6])

    # raised again: the new capacity applies at once
    await sync(db, WorkshopSpec("A", 6, 1, 10))
    assert await allocate(db, "A", regs[6]) == 2


async def test_sync_repairs_a_drifted_counter(db):
    """A registration deleted by cascade (participant erased) frees its seat through ON
    DELETE SET NULL without the counter; the next sync counts again."""
    await sync(db, WorkshopSpec("A", 5, 1, 10))
    regs = await registrations(db, "A", 3)
    for r in regs:
        await allocate(db, "A", r)
    async with db.begin_write() as s:
        await s.execute(delete(Registration).where(Registration.id == regs[0]))
    assert (await stats(db))["A"]["in_use"] == 3
    report = await sync(db, WorkshopSpec("A", 5, 1, 10))
    assert report.recounted == {"A": (3, 2)}
    assert (await stats(db))["A"]["in_use"] == 2


async def test_workshop_gone_from_catalog(db):
    await sync(db, WorkshopSpec("A", 5, 1, 10), WorkshopSpec("B", 5, 11, 20))
    (r,) = await registrations(db, "A", 1)
    await allocate(db, "A", r)
    await sync(db, WorkshopSpec("B", 5, 11, 20))
    st = (await stats(db))["A"]
    assert st["in_use"] == 1 and st["free"] == 0 and st["capacity"] == 0
    assert (await seat_rows(db))[1].registration_id == r  # the participant keeps the seat
    (r2,) = await registrations(db, "A", 1, start=5)
    with pytest.raises(seats.WorkshopFull):
        await allocate(db, "A", r2)


# ---- allocate / release -----------------------------------------------------------------------


async def test_rush_100_for_20_seats(db):
    """100 registrations at once, each in its own transaction, for 20 seats."""
    await sync(db, WorkshopSpec("A", 20, 1, 50), WorkshopSpec("B", 20, 51, 100))
    regs = await registrations(db, "A", 100)

    async def one(r):
        try:
            return await allocate(db, "A", r)
        except seats.WorkshopFull:
            return "full"

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(r) for r in regs))
    elapsed = time.perf_counter() - t0
    print(f"100 concurrent allocations on {db.dialect}: {elapsed:.2f}s")
    won = [x for x in results if x != "full"]
    assert len(won) == 20 and results.count("full") == 80
    assert sorted(won) == list(range(1, 21))  # the lowest numbers, none twice
    st = await stats(db)
    assert st["A"]["in_use"] == 20 and st["B"]["in_use"] == 0
    async with db.session() as s:
        held = (
            await s.execute(select(Seat.registration_id).where(Seat.registration_id.is_not(None)))
        ).scalars()
        assert len(set(held)) == 20


async def test_syncs_during_a_rush(db):
    """Hub restarts (syncs) while registrations pour in: capacity holds, no deadlock, the
    counter needs no repair afterwards."""
    spec = WorkshopSpec("A", 20, 1, 40)
    await sync(db, spec)
    regs = await registrations(db, "A", 40)

    async def one(r):
        try:
            return await allocate(db, "A", r)
        except seats.WorkshopFull:
            return "full"

    results = await asyncio.gather(*(one(r) for r in regs), *(sync(db, spec) for _ in range(4)))
    won = [x for x in results[:40] if x != "full"]
    assert sorted(won) == list(range(1, 21))
    assert (await sync(db, spec)).recounted == {}
    assert (await stats(db))["A"]["in_use"] == 20


async def test_release_then_allocate_gives_the_lowest_free_back(db):
    await sync(db, WorkshopSpec("A", 5, 1, 10))
    regs = await registrations(db, "A", 6)
    assert [await allocate(db, "A", r) for r in regs[:5]] == [1, 2, 3, 4, 5]
    async with db.begin_write() as s:
        await s.execute(
            update(Seat).where(Seat.student_number == 3).values(password_hash="sha256$x$y")
        )

    seat = await release(db, regs[2])
    assert seat.student_number == 3 and seat.registration_id is None
    assert seat.password_hash is None and seat.allocated_at is None and seat.generation == 1
    assert await allocate(db, "A", regs[5]) == 3


async def test_release_is_idempotent(db):
    await sync(db, WorkshopSpec("A", 5, 1, 10))
    (r,) = await registrations(db, "A", 1)
    await allocate(db, "A", r)
    assert (await release(db, r)).generation == 1
    assert await release(db, r) is None
    assert await release(db, 999_999) is None
    st = (await stats(db))["A"]
    assert st["in_use"] == 0 and (await seat_rows(db))[1].generation == 1


async def test_concurrent_releases_of_one_seat(db):
    await sync(db, WorkshopSpec("A", 5, 1, 10))
    regs = await registrations(db, "A", 2)
    for r in regs:
        await allocate(db, "A", r)
    results = await asyncio.gather(*(release(db, regs[0]) for _ in range(10)))
    assert sum(x is not None for x in results) == 1
    assert (await stats(db))["A"]["in_use"] == 1
    assert (await seat_rows(db))[1].generation == 1


async def test_closed_unknown_and_disabled(db):
    await sync(db, WorkshopSpec("A", 5, 1, 3))
    regs = await registrations(db, "A", 4)
    with pytest.raises(seats.UnknownWorkshop) as e:
        await allocate(db, "NOPE", regs[0])
    assert "NOPE" in str(e.value)

    async with db.begin_write() as s:
        await s.execute(update(WorkshopRow).values(registration_open=False))
    with pytest.raises(seats.RegistrationClosed):
        await allocate(db, "A", regs[0])
    async with db.begin_write() as s:
        await s.execute(update(WorkshopRow).values(registration_open=True))
        await s.execute(update(Seat).where(Seat.student_number == 1).values(disabled=True))

    # capacity 5 but only seats 2 and 3 usable: the third is refused, counter unchanged
    assert [await allocate(db, "A", r) for r in regs[:2]] == [2, 3]
    with pytest.raises(seats.WorkshopFull):
        await allocate(db, "A", regs[2])
    st = (await stats(db))["A"]
    assert st["in_use"] == 2 and st["disabled"] == 1 and st["free"] == 0


async def test_admin_allocation_of_a_given_seat_in_a_closed_workshop(db):
    await sync(db, WorkshopSpec("A", 2, 1, 10))
    regs = await registrations(db, "A", 4)
    async with db.begin_write() as s:
        await s.execute(update(WorkshopRow).values(registration_open=False))
    with pytest.raises(seats.RegistrationClosed):
        await allocate(db, "A", regs[0])
    async with db.begin_write() as s:
        seat = await seats.allocate_seat(s, "A", regs[0], student_number=7, even_if_closed=True)
        assert seat.student_number == 7
    with pytest.raises(seats.WorkshopFull):  # 7 is taken: nothing changes
        async with db.begin_write() as s:
            await seats.allocate_seat(s, "A", regs[1], student_number=7, even_if_closed=True)
    assert (await stats(db))["A"]["in_use"] == 1
    async with db.begin_write() as s:
        await seats.allocate_seat(s, "A", regs[1], even_if_closed=True)
    with pytest.raises(seats.WorkshopFull):  # the capacity gate holds for admins too
        async with db.begin_write() as s:
            await seats.allocate_seat(s, "A", regs[2], even_if_closed=True)


async def test_rolled_back_transaction_gives_the_seat_back(db):
    await sync(db, WorkshopSpec("A", 5, 1, 10))
    (r,) = await registrations(db, "A", 1)
    with pytest.raises(RuntimeError):
        async with db.begin_write() as s:
            await seats.allocate_seat(s, "A", r)
            raise RuntimeError("hub user creation failed")
    st = (await stats(db))["A"]
    assert st["in_use"] == 0
    async with db.session() as s:
        assert (
            await s.execute(select(func.count()).where(Seat.registration_id.is_not(None)))
        ).scalar_one() == 0
    assert await allocate(db, "A", r) == 1
