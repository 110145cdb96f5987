"""Read-only queries behind the admin page, the admin API, the CLI and the exports.

No hub, no HTTP: each function takes an ``AsyncSession`` (and a clock when the
answer depends on it) and returns plain dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from .orm import (
    LIVE_STATE_VALUES,
    OutboxMessage,
    OutboxState,
    Participant,
    Registration,
    State,
    utcnow,
)
from .seats import seat_stats

STATUS_CHOICES = ("live", *(s.value for s in State))
MAX_PER_PAGE = 500


class FilterError(ValueError):
    """Bad filter values; ``errors`` maps the parameter name to what to write instead."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def _parse_date(value: str, name: str, errors: dict) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors[name] = f"{value!r} is not a date: write YYYY-MM-DD"
        return None


def _parse_int(value: str, name: str, errors: dict, default: int, lo: int, hi: int) -> int:
    if value in ("", None):
        return default
    try:
        number = int(value)
    except ValueError:
        errors[name] = f"{value!r} is not a whole number"
        return default
    if not lo <= number <= hi:
        errors[name] = f"must be between {lo} and {hi}"
        return default
    return number


@dataclass(frozen=True)
class RegistrationFilter:
    """What the admin asked for. Every field is optional; empty means "any"."""

    workshop: str = ""
    status: str = ""  # a State value, or "live" for every state that holds a seat
    email: str = ""  # substring, case-insensitive
    q: str = ""  # substring of e-mail, name, company or student name
    since: date | None = None  # registered on or after this day (UTC)
    until: date | None = None  # registered on or before this day (UTC)
    ids: tuple[int, ...] = ()
    page: int = 1
    per_page: int = 50

    @classmethod
    def parse(cls, args: dict[str, str]) -> RegistrationFilter:
        """From query arguments (strings). Raises :class:`FilterError` naming the parameter."""
        errors: dict[str, str] = {}
        status = (args.get("status") or "").strip().lower()
        if status and status not in STATUS_CHOICES:
            errors["status"] = f"unknown status {status!r}: use one of {', '.join(STATUS_CHOICES)}"
        since = _parse_date((args.get("since") or "").strip(), "since", errors)
        until = _parse_date((args.get("until") or "").strip(), "until", errors)
        if since and until and until < since:
            errors["until"] = "must not be before 'since'"
        page = _parse_int(args.get("page") or "", "page", errors, 1, 1, 10**6)
        per_page = _parse_int(args.get("per_page") or "", "per_page", errors, 50, 1, MAX_PER_PAGE)
        ids: list[int] = []
        for raw in (args.get("ids") or "").replace(" ", "").split(","):
            if raw:
                if not raw.isdigit():
                    errors["ids"] = f"{raw!r} is not a registration id"
                    break
                ids.append(int(raw))
        if errors:
            raise FilterError(errors)
        return cls(
            workshop=(args.get("workshop") or "").strip(),
            status=status,
            email=(args.get("email") or "").strip().lower(),
            q=(args.get("q") or "").strip(),
            since=since,
            until=until,
            ids=tuple(ids),
            page=page,
            per_page=per_page,
        )

    def query_args(self, **override) -> dict[str, str]:
        """Back to query arguments (for links: pagination, export), without the defaults."""
        values = {
            "workshop": self.workshop,
            "status": self.status,
            "email": self.email,
            "q": self.q,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "page": str(self.page) if self.page != 1 else "",
            "per_page": str(self.per_page) if self.per_page != 50 else "",
        }
        values.update({k: str(v) for k, v in override.items()})
        return {k: v for k, v in values.items() if v}

    def conditions(self) -> list:
        where = []
        if self.workshop:
            where.append(Registration.workshop_id == self.workshop)
        if self.status == "live":
            where.append(Registration.state.in_(LIVE_STATE_VALUES))
        elif self.status:
            where.append(Registration.state == self.status)
        if self.email:
            where.append(func.lower(Participant.email).contains(self.email, autoescape=True))
        if self.q:
            needle = self.q.lower()
            where.append(
                or_(
                    func.lower(Participant.email).contains(needle, autoescape=True),
                    func.lower(Participant.first_name).contains(needle, autoescape=True),
                    func.lower(Participant.last_name).contains(needle, autoescape=True),
                    func.lower(Participant.company).contains(needle, autoescape=True),
                    func.lower(Registration.username) == needle,
                )
            )
        if self.since:
            where.append(Registration.created_at >= datetime.combine(self.since, time.min))
        if self.until:
            where.append(
                Registration.created_at < datetime.combine(self.until + timedelta(days=1), time.min)
            )
        if self.ids:
            where.append(Registration.id.in_(self.ids))
        return where


@dataclass
class RegistrationRow:
    id: int
    workshop_id: str
    username: str | None
    email: str
    first_name: str
    last_name: str
    company: str
    state: str
    created_at: datetime
    expires_at: datetime
    seconds_left: int | None  # None once the registration no longer holds a seat
    completion: float | None
    error: str | None
    ended_reason: str | None
    ready_at: datetime | None
    stopped_at: datetime | None
    cleaned_at: datetime | None
    reset_at: datetime | None
    purged_at: datetime | None
    ended_at: datetime | None
    step_attempts: int

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATE_VALUES

    @property
    def time_left(self) -> str:
        """``1h 05m`` / ``12m`` / ``expired`` / ``—``."""
        if self.seconds_left is None:
            return "—"
        if self.seconds_left <= 0:
            return "expired"
        hours, rest = divmod(self.seconds_left, 3600)
        minutes = rest // 60
        return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"

    def to_json(self) -> dict:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat() + "Z"
        data["live"] = self.live
        return data


@dataclass
class RegistrationPage:
    rows: list[RegistrationRow]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _row(reg: Registration, person: Participant, now: datetime) -> RegistrationRow:
    live = reg.state in LIVE_STATE_VALUES
    return RegistrationRow(
        id=reg.id,
        workshop_id=reg.workshop_id,
        username=reg.username,
        email=person.email,
        first_name=person.first_name,
        last_name=person.last_name,
        company=person.company,
        state=reg.state,
        created_at=reg.created_at,
        expires_at=reg.expires_at,
        seconds_left=int((reg.expires_at - now).total_seconds()) if live else None,
        completion=reg.completion,
        error=reg.error,
        ended_reason=reg.ended_reason,
        ready_at=reg.ready_at,
        stopped_at=reg.stopped_at,
        cleaned_at=reg.cleaned_at,
        reset_at=reg.reset_at,
        purged_at=reg.purged_at,
        ended_at=reg.ended_at,
        step_attempts=reg.step_attempts,
    )


async def list_registrations(
    session: AsyncSession,
    flt: RegistrationFilter,
    *,
    now: datetime | None = None,
    paginate: bool = True,
) -> RegistrationPage:
    """Registrations matching ``flt``, newest first."""
    now = now or utcnow()
    where = flt.conditions()
    base = select(Registration, Participant).join(
        Participant, Participant.id == Registration.participant_id
    )
    if where:
        base = base.where(and_(*where))
    total = (
        await session.execute(
            select(func.count()).select_from(base.with_only_columns(Registration.id).subquery())
        )
    ).scalar_one()
    query = base.order_by(Registration.created_at.desc(), Registration.id.desc())
    if paginate:
        query = query.offset((flt.page - 1) * flt.per_page).limit(flt.per_page)
    rows = [_row(reg, person, now) for reg, person in (await session.execute(query)).all()]
    return RegistrationPage(
        rows=rows, total=total, page=flt.page if paginate else 1, per_page=flt.per_page
    )


async def iter_registrations(
    session: AsyncSession, flt: RegistrationFilter, *, batch: int = 500, now=None
):
    """Every matching registration (no pagination), fetched in batches (for exports)."""
    now = now or utcnow()
    where = flt.conditions()
    query = select(Registration, Participant).join(
        Participant, Participant.id == Registration.participant_id
    )
    if where:
        query = query.where(and_(*where))
    query = query.order_by(Registration.id).execution_options(yield_per=batch)
    result = await session.stream(query)
    async for reg, person in result:
        yield _row(reg, person, now)


@dataclass
class WorkshopStats:
    id: str
    name: str
    capacity: int  # as the catalog says
    effective_capacity: int  # what the seat counter is checked against right now
    in_use: int
    free: int
    range_min: int
    range_max: int
    registration_open: bool
    in_catalog: bool
    registrations_today: int = 0
    registrations_total: int = 0
    active: int = 0
    ended: int = 0
    failed: int = 0
    completion_rate: float | None = None  # mean completion (%) of ended registrations

    def to_json(self) -> dict:
        return asdict(self)


def day_start(now: datetime) -> datetime:
    return datetime.combine(now.date(), time.min)


async def workshop_stats(
    session: AsyncSession, catalog=None, *, now: datetime | None = None
) -> list[WorkshopStats]:
    """One line per workshop row (catalog order of ids), with today's and all-time figures."""
    now = now or utcnow()
    today = day_start(now)
    seats = await seat_stats(session)
    counts = {
        row.workshop_id: row
        for row in (
            await session.execute(
                select(
                    Registration.workshop_id,
                    func.count(Registration.id).label("total"),
                    func.sum(case((Registration.created_at >= today, 1), else_=0)).label("today"),
                    func.sum(case((Registration.state == State.active.value, 1), else_=0)).label(
                        "active"
                    ),
                    func.sum(case((Registration.state == State.ended.value, 1), else_=0)).label(
                        "ended"
                    ),
                    func.sum(case((Registration.state == State.failed.value, 1), else_=0)).label(
                        "failed"
                    ),
                    func.avg(
                        case(
                            (Registration.state == State.ended.value, Registration.completion),
                            else_=None,
                        )
                    ).label("completion"),
                ).group_by(Registration.workshop_id)
            )
        ).all()
    }
    workshops = catalog.workshops if catalog is not None else {}
    out = []
    for wid, s in seats.items():
        c = counts.get(wid)
        w = workshops.get(wid)
        out.append(
            WorkshopStats(
                id=wid,
                name=w.name if w is not None else wid,
                capacity=s["capacity"],
                effective_capacity=s["effective_capacity"],
                in_use=s["in_use"],
                free=s["free"],
                range_min=s["range"][0],
                range_max=s["range"][1],
                registration_open=s["open"],
                in_catalog=w is not None,
                registrations_today=int(c.today or 0) if c else 0,
                registrations_total=int(c.total or 0) if c else 0,
                active=int(c.active or 0) if c else 0,
                ended=int(c.ended or 0) if c else 0,
                failed=int(c.failed or 0) if c else 0,
                completion_rate=round(float(c.completion), 1)
                if c and c.completion is not None
                else None,
            )
        )
    return out


@dataclass
class Totals:
    registrations_total: int
    registrations_today: int
    live: int
    by_state: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    participants: int = 0

    def to_json(self) -> dict:
        return asdict(self)


async def totals(session: AsyncSession, *, now: datetime | None = None) -> Totals:
    now = now or utcnow()
    by_state = dict(
        (
            await session.execute(
                select(Registration.state, func.count()).group_by(Registration.state)
            )
        ).all()
    )
    today = (
        await session.execute(
            select(func.count(Registration.id)).where(Registration.created_at >= day_start(now))
        )
    ).scalar_one()
    outbox = dict(
        (
            await session.execute(
                select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
            )
        ).all()
    )
    participants = (await session.execute(select(func.count(Participant.id)))).scalar_one()
    return Totals(
        registrations_total=sum(by_state.values()),
        registrations_today=today,
        live=sum(v for k, v in by_state.items() if k in LIVE_STATE_VALUES),
        by_state={s.value: by_state.get(s.value, 0) for s in State},
        outbox={s.value: outbox.get(s.value, 0) for s in OutboxState},
        participants=participants,
    )


async def registrations_per_day(
    session: AsyncSession, *, days: int = 30, now: datetime | None = None
) -> tuple[list[date], dict[str, list[int]]]:
    """The last ``days`` days (oldest first) and, per workshop, registrations per day."""
    now = now or utcnow()
    first = now.date() - timedelta(days=days - 1)
    day = func.date(Registration.created_at)
    rows = (
        await session.execute(
            select(day, Registration.workshop_id, func.count())
            .where(Registration.created_at >= datetime.combine(first, time.min))
            .group_by(day, Registration.workshop_id)
        )
    ).all()
    labels = [first + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(labels)}
    series: dict[str, list[int]] = {}
    for raw_day, wid, n in rows:
        d = raw_day if isinstance(raw_day, date) else date.fromisoformat(str(raw_day)[:10])
        if d in index:
            series.setdefault(wid, [0] * days)[index[d]] += n
    return labels, dict(sorted(series.items()))


@dataclass
class OutboxRow:
    id: int
    to_addr: str
    template: str
    subject: str | None
    state: str
    attempts: int
    last_error: str | None
    registration_id: int | None
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None

    def to_json(self) -> dict:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat() + "Z"
        return data


async def outbox_messages(
    session: AsyncSession,
    states=(OutboxState.pending.value, OutboxState.sending.value, OutboxState.failed.value),
    limit: int = 200,
) -> list[OutboxRow]:
    """Messages not yet sent (the ones an admin may need to look at), failed first."""
    failed_first = case((OutboxMessage.state == OutboxState.failed.value, 0), else_=1)
    rows = (
        await session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.state.in_(states))
            .order_by(failed_first, OutboxMessage.created_at.desc())
            .limit(limit)
        )
    ).scalars()
    return [
        OutboxRow(
            id=m.id,
            to_addr=m.to_addr,
            template=m.template,
            subject=m.subject,
            state=m.state,
            attempts=m.attempts,
            last_error=m.last_error,
            registration_id=m.registration_id,
            created_at=m.created_at,
            next_attempt_at=m.next_attempt_at,
            sent_at=m.sent_at,
        )
        for m in rows
    ]
