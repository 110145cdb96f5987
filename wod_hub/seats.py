"""The seat pool: one row per student account, allocated atomically.

Capacity is respected even under a rush because the counter is moved by one
conditional UPDATE (``seats_in_use < capacity``) inside the caller's write
transaction; the seat itself is the lowest free number of the range, taken under a
row lock (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite writers are serialized by
``BEGIN IMMEDIATE``, see :mod:`wod_hub.db`). The unique constraints on
``wod_seats.registration_id`` and the primary key on the student number are the
safety net: nothing here reads and then writes without a lock.

Capacity lowered below the seats in use: ``WorkshopRow.capacity`` may never be below
``seats_in_use`` (CHECK), so sync stores ``capacity = max(configured, in use)``; no new
registration passes until enough seats are released, and every release lowers
``capacity`` one step back toward ``configured_capacity``.

Range changes: a free seat whose number left its workshop's range is *retired* (never
allocated, kept with its ``generation``) or moved to the workshop whose range now
holds it (generation bumped); a held one stays with its participant until released.
Seat rows are never deleted: derived passwords depend on ``(workshop, number,
generation)``, and a re-created seat starting again at generation 0 would hand a new
participant a password an earlier one knew.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, bindparam, case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from .orm import Seat, WorkshopRow, utcnow

log = logging.getLogger("wod_hub.seats")


class SeatError(Exception):
    """Base of the allocation errors; ``str(e)`` is a message a participant can act on."""

    def __init__(self, workshop_id: str, message: str):
        self.workshop_id = workshop_id
        super().__init__(message)


class UnknownWorkshop(SeatError):
    def __init__(self, workshop_id: str):
        super().__init__(
            workshop_id, f"There is no workshop {workshop_id!r}. Pick one from the list."
        )


class RegistrationClosed(SeatError):
    def __init__(self, workshop_id: str):
        super().__init__(
            workshop_id, f"Registration for {workshop_id} is closed at the moment. Try again later."
        )


class WorkshopFull(SeatError):
    def __init__(self, workshop_id: str):
        super().__init__(
            workshop_id,
            f"{workshop_id} is full right now. Try again later or pick another workshop.",
        )


def username_for(student_number: int) -> str:
    return f"student{student_number}"


@dataclass(frozen=True)
class WorkshopSpec:
    """What the seat pool needs of a catalog workshop."""

    id: str
    capacity: int
    range_min: int
    range_max: int

    @classmethod
    def of(cls, workshop) -> WorkshopSpec:
        """From a catalog ``Workshop`` (or anything with ``id``, ``capacity`` and a range
        given as ``range_min``/``range_max``, or ``range``/``students`` as a ``range`` or a
        ``(min, max)`` pair)."""
        if isinstance(workshop, WorkshopSpec):
            return workshop
        wid = workshop.id
        if getattr(workshop, "range_min", None) is not None:
            lo, hi = workshop.range_min, workshop.range_max
        else:
            r = (
                getattr(workshop, "student_range", None)
                or getattr(workshop, "range", None)
                or getattr(workshop, "students", None)
            )
            if isinstance(r, range):
                lo, hi = r.start, r.stop - 1
            elif isinstance(r, (tuple, list)) and len(r) == 2:
                lo, hi = r
            else:
                raise TypeError(
                    f"workshop {wid}: no student range (expected range_min/range_max or range=(min, max))"
                )
        return cls(id=wid, capacity=int(workshop.capacity), range_min=int(lo), range_max=int(hi))

    def __post_init__(self):
        # an empty range (max = min - 1, the catalog's "no range") is a workshop without seats
        if self.range_min < 0 or self.range_max < self.range_min - 1:
            raise ValueError(
                f"workshop {self.id}: student range {self.range_min}-{self.range_max} is reversed or negative"
            )
        if self.capacity < 0:
            raise ValueError(f"workshop {self.id}: capacity {self.capacity} is negative")

    @property
    def size(self) -> int:
        return self.range_max - self.range_min + 1

    def __contains__(self, student_number: int) -> bool:
        return self.range_min <= student_number <= self.range_max


@dataclass
class SyncReport:
    created: int = 0  # new seat rows
    moved: int = 0  # free seats handed to the workshop whose range now holds them
    retired: list[int] = field(default_factory=list)  # free seats out of every range
    held_out_of_range: list[int] = field(default_factory=list)  # go when released
    blocked: list[int] = field(default_factory=list)  # in range, still held by another workshop
    over_capacity: dict[str, tuple[int, int]] = field(
        default_factory=dict
    )  # id -> (in use, configured)
    recounted: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (counter, actual)


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _insert_ignore(session: AsyncSession):
    return (postgresql if _dialect(session) == "postgresql" else sqlite).insert


def _check_overlaps(specs: list[WorkshopSpec]) -> None:
    ordered = sorted((s for s in specs if s.size > 0), key=lambda s: s.range_min)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.range_min <= a.range_max:
            raise ValueError(
                f"student ranges overlap: {a.id} {a.range_min}-{a.range_max} and "
                f"{b.id} {b.range_min}-{b.range_max}; give each workshop its own range"
            )


async def sync_workshops(
    session: AsyncSession, catalog_workshops: Iterable, *, now: datetime | None = None
) -> SyncReport:
    """Make the seat pool match the catalog. Idempotent; run in a write transaction.

    Upserts a ``WorkshopRow`` per workshop (configured capacity, range), creates the
    missing seats of every range, moves/retires free seats whose number left their
    range, and repairs ``seats_in_use`` if it drifted from the seats actually held.
    Workshops no longer in the catalog keep their row and held seats, with an empty
    range and capacity 0 (so they take no new registration).
    """
    now = now or utcnow()
    specs = [WorkshopSpec.of(w) for w in catalog_workshops]
    _check_overlaps(specs)
    by_id = {s.id: s for s in specs}
    report = SyncReport()

    # 1. workshop rows; lock them all first so counters cannot move under the recount
    # (READ COMMITTED: each later statement sees every transaction that held the lock)
    existing = {
        row.id: row
        for row in (
            await session.execute(
                select(WorkshopRow)
                .order_by(WorkshopRow.id)  # one lock order: concurrent syncs never deadlock
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalars()
    }
    ins = _insert_ignore(session)
    for spec in specs:
        if spec.id not in existing:
            await session.execute(
                ins(WorkshopRow)
                .values(
                    id=spec.id,
                    capacity=spec.capacity,
                    configured_capacity=spec.capacity,
                    seats_in_use=0,
                    range_min=spec.range_min,
                    range_max=spec.range_max,
                    registration_open=True,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["id"])
            )
    for wid in existing.keys() - by_id.keys():
        # gone from the catalog: empty range (so released seats go elsewhere), capacity 0
        by_id_gone = WorkshopSpec(id=wid, capacity=0, range_min=0, range_max=0)
        await _update_workshop(session, by_id_gone, now, empty_range=True)
    for spec in specs:
        await _update_workshop(session, spec, now)

    # 2. counters: seats_in_use == seats actually held (a registration deleted by cascade
    # frees its seat through ON DELETE SET NULL without touching the counter)
    held = dict(
        (
            await session.execute(
                select(Seat.workshop_id, func.count())
                .where(Seat.registration_id.is_not(None))
                .group_by(Seat.workshop_id)
            )
        ).all()
    )
    rows = (
        await session.execute(select(WorkshopRow).execution_options(populate_existing=True))
    ).scalars()
    for row in rows:
        actual = held.get(row.id, 0)
        if row.seats_in_use != actual:
            report.recounted[row.id] = (row.seats_in_use, actual)
            await session.execute(
                update(WorkshopRow)
                .where(WorkshopRow.id == row.id)
                .values(
                    seats_in_use=actual,
                    capacity=case(
                        (WorkshopRow.configured_capacity > actual, WorkshopRow.configured_capacity),
                        else_=actual,
                    ),
                )
            )
        if row.id in by_id and actual > row.configured_capacity:
            report.over_capacity[row.id] = (actual, row.configured_capacity)

    # 3. seats
    seats = (
        await session.execute(select(Seat.student_number, Seat.workshop_id, Seat.registration_id))
    ).all()
    known = {n: (wid, rid) for n, wid, rid in seats}
    ranges = sorted((s for s in specs if s.size > 0), key=lambda s: s.range_min)

    def owner_of(number: int) -> WorkshopSpec | None:
        for spec in ranges:
            if number in spec:
                return spec
            if spec.range_min > number:
                return None
        return None

    moves: list[dict] = []
    for number, (wid, rid) in known.items():
        own = by_id.get(wid)
        if own is not None and number in own:
            continue
        target = owner_of(number)
        if rid is not None:
            report.held_out_of_range.append(number)
        elif target is not None:
            moves.append({"n": number, "w": target.id})
        else:
            report.retired.append(number)
    if moves:
        seats_table = Seat.__table__
        await session.execute(
            update(seats_table)
            .where(
                seats_table.c.student_number == bindparam("n"),
                seats_table.c.registration_id.is_(None),
            )
            .values(
                workshop_id=bindparam("w"),
                generation=seats_table.c.generation + 1,
                password_hash=None,
            ),
            moves,
        )
        report.moved = len(moves)

    new_rows = []
    for spec in specs:
        for number in range(spec.range_min, spec.range_max + 1):
            if number not in known:
                new_rows.append(
                    {
                        "student_number": number,
                        "workshop_id": spec.id,
                        "username": username_for(number),
                        "generation": 0,
                        "disabled": False,
                    }
                )
            elif known[number][1] is not None and known[number][0] != spec.id:
                report.blocked.append(number)
    if new_rows:
        await session.execute(insert(Seat), new_rows)
        report.created = len(new_rows)
    await session.flush()

    _log_report(report)
    return report


async def _update_workshop(
    session: AsyncSession, spec: WorkshopSpec, now: datetime, empty_range: bool = False
) -> None:
    values = {
        "configured_capacity": spec.capacity,
        # never below the seats in use (CHECK); see the module docstring
        "capacity": case(
            (WorkshopRow.seats_in_use > spec.capacity, WorkshopRow.seats_in_use),
            else_=spec.capacity,
        ),
        "updated_at": now,
    }
    if empty_range:
        values.update(range_min=0, range_max=-1)
    else:
        values.update(range_min=spec.range_min, range_max=spec.range_max)
    await session.execute(
        update(WorkshopRow)
        .where(WorkshopRow.id == spec.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def _log_report(report: SyncReport) -> None:
    if report.created or report.moved:
        log.info(
            "Seat pool: %d seats created, %d moved to a new workshop", report.created, report.moved
        )
    if report.retired:
        log.info("Seat pool: %d free seats are out of every range (retired)", len(report.retired))
    if report.held_out_of_range:
        log.warning(
            "Seat pool: %d held seats are out of their workshop's range; they leave it when released",
            len(report.held_out_of_range),
        )
    if report.blocked:
        log.warning(
            "Seat pool: %d student numbers of a new range are still held by another workshop: %s",
            len(report.blocked),
            report.blocked[:20],
        )
    for wid, (in_use, configured) in report.over_capacity.items():
        log.warning(
            "Workshop %s: %d seats in use, capacity lowered to %d: no new registration until it drops",
            wid,
            in_use,
            configured,
        )
    for wid, (counter, actual) in report.recounted.items():
        log.warning(
            "Workshop %s: seats_in_use was %d, %d seats are held; repaired", wid, counter, actual
        )


def allocate_seat_sync(
    session: Session,
    workshop_id: str,
    registration_id: int,
    *,
    now: datetime | None = None,
    student_number: int | None = None,
    even_if_closed: bool = False,
) -> Seat:
    """Take the lowest free seat of ``workshop_id`` for ``registration_id`` (sync code: a
    :class:`~sqlalchemy.orm.Session`; :func:`allocate_seat` is the same for an async one).

    ``student_number`` takes that seat instead (admin test registrations: ``wod-hub action
    CREATE``); ``even_if_closed`` lets an admin test a workshop before opening it. Both go
    through the same capacity gate.

    Runs in the caller's write transaction (``db.begin_write()``); if the caller rolls
    back, the seat and the counter go back with it. Raises :class:`UnknownWorkshop`,
    :class:`RegistrationClosed` or :class:`WorkshopFull` without changing anything.
    """
    now = now or utcnow()
    # (1) the counter, conditionally: this row update is the capacity gate (on PostgreSQL
    # it also row-locks the workshop until commit, so concurrent gates queue here)
    taken = session.execute(
        update(WorkshopRow)
        .where(
            WorkshopRow.id == workshop_id,
            WorkshopRow.seats_in_use < WorkshopRow.capacity,
            *(() if even_if_closed else (WorkshopRow.registration_open.is_(True),)),
        )
        .values(seats_in_use=WorkshopRow.seats_in_use + 1)
        .returning(WorkshopRow.range_min, WorkshopRow.range_max)
        .execution_options(synchronize_session=False)
    )
    gate = taken.first()
    if gate is None:
        row = session.execute(
            select(WorkshopRow.registration_open).where(WorkshopRow.id == workshop_id)
        ).first()
        if row is None:
            raise UnknownWorkshop(workshop_id)
        if not row.registration_open and not even_if_closed:
            raise RegistrationClosed(workshop_id)
        raise WorkshopFull(workshop_id)
    range_min, range_max = gate

    # (2) the lowest free seat in range, locked (SKIP LOCKED: a concurrent transaction's
    # pick is skipped, not waited for; SQLite renders no lock and needs none)
    seat = session.execute(
        select(Seat)
        .where(
            Seat.workshop_id == workshop_id,
            Seat.registration_id.is_(None),
            Seat.disabled.is_(False),
            Seat.student_number.between(range_min, range_max),
            *(() if student_number is None else (Seat.student_number == student_number,)),
        )
        .order_by(Seat.student_number)
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if seat is None:
        # capacity above the usable seats (disabled ones, or held by another workshop),
        # or the asked-for student number is taken
        session.execute(_decrement(workshop_id))
        raise WorkshopFull(workshop_id)

    # (3) hand it over; the unique constraint on registration_id is the safety net
    seat.registration_id = registration_id
    seat.allocated_at = now
    session.flush()
    return seat


async def allocate_seat(
    session: AsyncSession, workshop_id: str, registration_id: int, **kwargs
) -> Seat:
    """:func:`allocate_seat_sync` in an async session (the caller's write transaction)."""
    return await session.run_sync(allocate_seat_sync, workshop_id, registration_id, **kwargs)


def _decrement(workshop_id: str):
    """The UPDATE giving one seat back; a capacity held up above the catalog's follows it down."""
    return (
        update(WorkshopRow)
        .where(WorkshopRow.id == workshop_id, WorkshopRow.seats_in_use > 0)
        .values(
            seats_in_use=WorkshopRow.seats_in_use - 1,
            # the right-hand sides see the row before the update (SQL semantics)
            capacity=case(
                (
                    WorkshopRow.configured_capacity > WorkshopRow.seats_in_use - 1,
                    WorkshopRow.configured_capacity,
                ),
                else_=WorkshopRow.seats_in_use - 1,
            ),
        )
        .execution_options(synchronize_session=False)
    )


async def release_seat(session: AsyncSession, registration_id: int) -> Seat | None:
    """Give the seat of ``registration_id`` back to the pool. Idempotent.

    Clears the password hash and bumps ``generation`` (so every derived secret of the
    seat changes). Returns the released seat, or None if the registration held none.
    A seat whose number left its workshop's range goes to the workshop whose range now
    holds it, if any (else it is retired).
    """
    seat = (
        await session.execute(
            select(Seat)
            .where(Seat.registration_id == registration_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if seat is None:
        return None
    workshop_id = seat.workshop_id
    seat.registration_id = None
    seat.allocated_at = None
    seat.password_hash = None
    seat.generation = seat.generation + 1
    await session.flush()
    await session.execute(_decrement(workshop_id))

    own = await session.get(WorkshopRow, workshop_id, populate_existing=True)
    if own is None or not own.range_min <= seat.student_number <= own.range_max:
        target = (
            await session.execute(
                select(WorkshopRow.id).where(
                    and_(
                        WorkshopRow.range_min <= seat.student_number,
                        WorkshopRow.range_max >= seat.student_number,
                    )
                )
            )
        ).scalar_one_or_none()
        if target is not None:
            seat.workshop_id = target
            await session.flush()
            log.info("Seat %s left %s's range: now in %s", seat.username, workshop_id, target)
    return seat


async def seat_stats(session: AsyncSession) -> dict[str, dict]:
    """Per workshop: ``capacity`` (configured), ``effective_capacity``, ``in_use``, ``free``
    (how many more registrations would succeed now), ``free_seats`` (free, enabled seats in
    range), ``disabled``, ``range`` (min, max), ``open``."""
    in_range = and_(
        Seat.workshop_id == WorkshopRow.id,
        Seat.student_number.between(WorkshopRow.range_min, WorkshopRow.range_max),
    )
    free_seats = dict(
        (
            await session.execute(
                select(WorkshopRow.id, func.count(Seat.student_number))
                .join(Seat, in_range)
                .where(Seat.registration_id.is_(None), Seat.disabled.is_(False))
                .group_by(WorkshopRow.id)
            )
        ).all()
    )
    disabled = dict(
        (
            await session.execute(
                select(Seat.workshop_id, func.count())
                .where(Seat.disabled.is_(True))
                .group_by(Seat.workshop_id)
            )
        ).all()
    )
    stats = {}
    for row in (await session.execute(select(WorkshopRow).order_by(WorkshopRow.id))).scalars():
        pool = free_seats.get(row.id, 0)
        stats[row.id] = {
            "capacity": row.configured_capacity,
            "effective_capacity": row.capacity,
            "in_use": row.seats_in_use,
            "free": min(max(row.capacity - row.seats_in_use, 0), pool),
            "free_seats": pool,
            "disabled": disabled.get(row.id, 0),
            "range": (row.range_min, row.range_max),
            "open": row.registration_open,
        }
    return stats
