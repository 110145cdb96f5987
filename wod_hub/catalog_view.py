"""What the login page shows of the catalog: cards with seats left and ribbons.

``build_cards`` is pure; ``seat_rows`` / ``load_seat_rows`` and ``load_registrants`` read the
counters it needs (:meth:`wod_hub.state.WodState.catalog_cards` caches them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import distinct, func, select

from .orm import Registration, WorkshopRow


@dataclass(frozen=True)
class WorkshopCard:
    id: str
    name: str
    description: str
    duration_minutes: int
    categories: tuple[str, ...]
    presenter: str
    presenter_role: str
    replay_link: str
    image: str
    session_type: str
    beta: bool
    capacity: int
    seats_left: int
    registration_open: bool
    popular: bool = False
    registrants: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return self.seats_left <= 0

    @property
    def can_register(self) -> bool:
        return self.registration_open and not self.full

    @property
    def duration_label(self) -> str:
        hours, minutes = divmod(self.duration_minutes, 60)
        if hours and minutes:
            return f"{hours} h {minutes} min"
        return f"{hours} h" if hours else f"{minutes} min"


def build_cards(
    workshops, rows: dict[str, dict], registrants: dict[str, int], popular_count: int = 10
):
    """Cards for the active workshops, in catalog order.

    ``rows``: workshop id -> {"capacity", "in_use", "open"}; ``registrants``:
    workshop id -> distinct participants ever registered (for "Popular").
    """
    ranked = sorted((n, wid) for wid, n in registrants.items() if n > 0)
    popular = {wid for _, wid in sorted(ranked, key=lambda t: (-t[0], t[1]))[:popular_count]}
    cards = []
    for w in workshops:
        if not w.active:
            continue
        row = rows.get(w.id, {"capacity": w.capacity, "in_use": 0, "open": True})
        cards.append(
            WorkshopCard(
                id=w.id,
                name=w.name,
                description=w.description or "",
                duration_minutes=int(w.duration.total_seconds() // 60),
                categories=tuple(w.category),
                presenter=w.presenter or "",
                presenter_role=w.presenter_role or "",
                replay_link=w.replay_link or "",
                image=w.workshop_image or "",
                session_type=w.session_type,
                beta=bool(w.beta),
                capacity=row["capacity"],
                seats_left=max(0, row["capacity"] - row["in_use"]),
                registration_open=bool(row["open"]),
                popular=w.id in popular,
                registrants=registrants.get(w.id, 0),
            )
        )
    return cards


def seat_rows(session) -> dict[str, dict]:
    """Workshop id -> {"capacity", "in_use", "open"}: one row per workshop, cheap. Sync
    code (a :class:`~sqlalchemy.orm.Session`, e.g. inside a registration transaction)."""
    rows = session.execute(
        select(
            WorkshopRow.id,
            WorkshopRow.capacity,
            WorkshopRow.seats_in_use,
            WorkshopRow.registration_open,
        )
    )
    return {
        r.id: {"capacity": r.capacity, "in_use": r.seats_in_use, "open": r.registration_open}
        for r in rows
    }


async def load_seat_rows(session) -> dict[str, dict]:
    """:func:`seat_rows` in an async session."""
    return await session.run_sync(seat_rows)


async def load_registrants(session) -> dict[str, int]:
    """Workshop id -> distinct participants ever registered: a scan of all registrations,
    worth caching (see :meth:`wod_hub.state.WodState.catalog_cards`)."""
    return dict(
        (
            await session.execute(
                select(
                    Registration.workshop_id, func.count(distinct(Registration.participant_id))
                ).group_by(Registration.workshop_id)
            )
        ).all()
    )
