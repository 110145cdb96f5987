"""Prometheus metrics on the hub's own ``/hub/metrics`` (JupyterHub's default registry).

Figures that live in the database (seats, registrations, e-mails) come from a
snapshot refreshed periodically and shortly after any commit that touched
wod-hub's tables, so they are right whichever process changed them (hub,
lifecycle service, CLI) and survive restarts: counters are counts of rows that
only ever grow. Action durations are measured in this process.

    wod_registrations_total{workshop,outcome}   registered / failed / unregistered / ended
    wod_expirations_total{workshop}              registrations whose time ran out
    wod_seats_in_use{workshop}, wod_seats_capacity{workshop}, wod_registration_open{workshop}
    wod_active_sessions{workshop}                registrations whose server is up (state active)
    wod_emails_sent_total, wod_emails_pending, wod_emails_failed
    wod_action_duration_seconds{action,outcome}  (histogram) admin actions and end-path steps
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import case, event, func, select
from sqlalchemy.orm import Session
from traitlets import Float
from traitlets.config import LoggingConfigurable

from .aio import cancel_and_wait
from .orm import Base, OutboxMessage, OutboxState, Registration, State, WorkshopRow

log = logging.getLogger("wod_hub.metrics")

ACTION_DURATION = Histogram(
    "wod_action_duration_seconds",
    "Duration of wod-hub actions (admin actions and end-path steps) by action and outcome",
    ["action", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)

# outcome label -> how the registrations table counts it (each only ever grows)
REGISTRATION_OUTCOMES = ("registered", "failed", "unregistered", "ended")
EXPIRED_REASONS = ("expired", "expiry", "time_up")


@contextmanager
def time_action(action: str):
    """Observe the duration of ``action``; the outcome is ``error`` if the block raises."""
    start = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except BaseException:
        outcome = "error"
        raise
    finally:
        ACTION_DURATION.labels(action=action, outcome=outcome).observe(time.perf_counter() - start)


@dataclass
class Snapshot:
    workshops: dict[str, dict] = field(default_factory=dict)  # id -> capacity, in_use, open
    registrations: dict[tuple[str, str], int] = field(
        default_factory=dict
    )  # (workshop, outcome) -> n
    expirations: dict[str, int] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)


async def take_snapshot(session) -> Snapshot:
    snap = Snapshot()
    for row in (await session.execute(select(WorkshopRow))).scalars():
        snap.workshops[row.id] = {
            "capacity": row.capacity,
            "in_use": row.seats_in_use,
            "open": row.registration_open,
        }
    ended_reason = func.coalesce(Registration.ended_reason, "")
    rows = await session.execute(
        select(
            Registration.workshop_id,
            func.count(Registration.id),
            func.sum(case((Registration.state == State.failed.value, 1), else_=0)),
            func.sum(
                case(
                    (
                        (Registration.state == State.unregistered.value)
                        | (ended_reason == "unregistered"),
                        1,
                    ),
                    else_=0,
                )
            ),
            func.sum(case((Registration.state == State.ended.value, 1), else_=0)),
            func.sum(case((ended_reason.in_(EXPIRED_REASONS), 1), else_=0)),
            func.sum(case((Registration.state == State.active.value, 1), else_=0)),
        ).group_by(Registration.workshop_id)
    )
    for wid, total, failed, unregistered, ended, expired, active in rows.all():
        for outcome, n in zip(
            REGISTRATION_OUTCOMES, (total, failed, unregistered, ended), strict=True
        ):
            snap.registrations[(wid, outcome)] = int(n or 0)
        snap.expirations[wid] = int(expired or 0)
        snap.active[wid] = int(active or 0)
    for wid in snap.workshops:  # every series exists from the start (rate() needs a 0)
        for outcome in REGISTRATION_OUTCOMES:
            snap.registrations.setdefault((wid, outcome), 0)
    snap.outbox = dict(
        (
            await session.execute(
                select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
            )
        ).all()
    )
    return snap


class WodCollector:
    """Yields the last snapshot; registered once in JupyterHub's (the default) registry."""

    def __init__(self):
        self.snapshot: Snapshot | None = None

    def describe(self):
        return []  # no eager collect() at registration: there is no snapshot yet

    def collect(self):
        snap = self.snapshot or Snapshot()
        regs = CounterMetricFamily(
            "wod_registrations",
            "Registrations by workshop and outcome",
            labels=["workshop", "outcome"],
        )
        for (wid, outcome), n in sorted(snap.registrations.items()):
            regs.add_metric([wid, outcome], n)
        yield regs
        exp = CounterMetricFamily(
            "wod_expirations", "Registrations whose time ran out", labels=["workshop"]
        )
        in_use = GaugeMetricFamily(
            "wod_seats_in_use", "Seats held by a registration", labels=["workshop"]
        )
        capacity = GaugeMetricFamily(
            "wod_seats_capacity", "Seats a workshop may hand out at once", labels=["workshop"]
        )
        is_open = GaugeMetricFamily(
            "wod_registration_open", "1 when the workshop takes registrations", labels=["workshop"]
        )
        active = GaugeMetricFamily(
            "wod_active_sessions", "Registrations whose workshop server is up", labels=["workshop"]
        )
        for wid, w in sorted(snap.workshops.items()):
            in_use.add_metric([wid], w["in_use"])
            capacity.add_metric([wid], w["capacity"])
            is_open.add_metric([wid], 1 if w["open"] else 0)
            active.add_metric([wid], snap.active.get(wid, 0))
            exp.add_metric([wid], snap.expirations.get(wid, 0))
        yield from (exp, in_use, capacity, is_open, active)
        yield CounterMetricFamily(
            "wod_emails_sent",
            "E-mails handed to the SMTP server",
            value=snap.outbox.get(OutboxState.sent.value, 0),
        )
        yield GaugeMetricFamily(
            "wod_emails_pending",
            "E-mails waiting to be sent (or being sent)",
            value=snap.outbox.get(OutboxState.pending.value, 0)
            + snap.outbox.get(OutboxState.sending.value, 0),
        )
        yield GaugeMetricFamily(
            "wod_emails_failed",
            "E-mails given up after all retries (an admin can retry them)",
            value=snap.outbox.get(OutboxState.failed.value, 0),
        )


COLLECTOR = WodCollector()
REGISTRY.register(COLLECTOR)

_refreshers: weakref.WeakSet[MetricsRefresher] = weakref.WeakSet()


class MetricsRefresher(LoggingConfigurable):
    """Keeps :data:`COLLECTOR`'s snapshot fresh for one wod-hub database."""

    interval = Float(
        30.0,
        help="Seconds between two refreshes of the wod_* metrics from the database (they are also "
        "refreshed shortly after any change made in the hub process). 0 disables the periodic refresh.",
    ).tag(config=True)

    debounce = Float(
        0.5,
        help="Seconds to wait after a change before refreshing the metrics, so a burst of changes costs one query.",
    ).tag(config=True)

    def __init__(self, db, **kw):
        super().__init__(**kw)
        self.db = db
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def refresh(self) -> Snapshot:
        async with self.db.session() as session:
            snap = await take_snapshot(session)
        COLLECTOR.snapshot = snap  # swapped at once: a scrape never sees half a snapshot
        return snap

    def start(self) -> asyncio.Task:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.ensure_future(self._run())
            _refreshers.add(self)
        return self._task

    async def stop(self) -> None:
        _refreshers.discard(self)
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def poke(self) -> None:
        """Something changed: refresh soon. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Could not refresh the wod-hub metrics; trying again later")
            timeout = self.interval if self.interval > 0 else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await asyncio.sleep(self.debounce)


def start(db, parent=None) -> MetricsRefresher:
    """Start refreshing the metrics of ``db`` in the running loop (the hub calls this once)."""
    refresher = MetricsRefresher(db, parent=parent)
    refresher.start()
    return refresher


# ---- "refresh on change": any commit that wrote a wod-hub table pokes the refreshers ----
_DIRTY = "wod_metrics_dirty"


def _is_wod(mapper) -> bool:
    return mapper is not None and issubclass(mapper.class_, Base)


@event.listens_for(Session, "after_flush")
def _after_flush(session, flush_context):
    if session.info.get(_DIRTY):
        return
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Base):
            session.info[_DIRTY] = True
            return


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state):
    if (state.is_update or state.is_delete or state.is_insert) and _is_wod(state.bind_mapper):
        state.session.info[_DIRTY] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session):
    if session.info.pop(_DIRTY, False):
        for refresher in list(_refreshers):
            refresher.poke()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session):
    session.info.pop(_DIRTY, None)
