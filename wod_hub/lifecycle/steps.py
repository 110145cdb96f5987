"""The end-path steps: conditional UPDATEs inside the caller's write transaction,
guarded by the worker's claim (see :mod:`wod_hub.lifecycle`)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from .. import tokens
from ..orm import Badge, Event, Participant, Registration, Seat, State
from .core import (
    ENDING_STATES,
    RUNNING_STATES,
    STEP_COLUMNS,
    BadgeLevel,
    LifecycleError,
    NotAllowed,
    NotClaimed,
    TooLate,
    badges_reached,
    counts_as_completed,
    final_context,
    reminder_allowed_clause,
    special_badge_context,
)

# ---- steps (run hub-side, inside the caller's write transaction) ---------------------------


def _held_by(worker: str, now: datetime):
    R = Registration
    return and_(R.claimed_by == worker, R.claimed_until >= now)


async def claim(
    session: AsyncSession, registration_id: int, worker: str, ttl: timedelta, now: datetime
) -> bool:
    """Take (or renew) the claim on a registration: one conditional UPDATE, so two
    workers can never both hold it. False when another worker holds a live claim, or
    the end path is complete."""
    R = Registration
    result = await session.execute(
        update(R)
        .where(
            R.id == registration_id,
            R.ended_at.is_(None),
            or_(
                R.claimed_by.is_(None),
                R.claimed_by == worker,
                R.claimed_until.is_(None),
                R.claimed_until < now,
            ),
        )
        .values(claimed_by=worker, claimed_until=now + ttl)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def release(session: AsyncSession, registration_id: int, worker: str) -> None:
    R = Registration
    await session.execute(
        update(R)
        .where(R.id == registration_id, R.claimed_by == worker)
        .values(claimed_by=None, claimed_until=None)
        .execution_options(synchronize_session=False)
    )


async def lock_out(
    session: AsyncSession, registration_id: int, password_hash_for, now: datetime
) -> None:
    """Rotate the seat's password (generation + 1, new hash nobody was told) and
    revoke the unused login links: the participant cannot sign in again."""
    seat = (
        await session.execute(
            select(Seat)
            .where(Seat.registration_id == registration_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if seat is not None:
        seat.generation = seat.generation + 1
        seat.password_hash = password_hash_for(
            seat.workshop_id, seat.student_number, seat.generation
        )
    await tokens.revoke_tokens(session, registration_id, now=now)
    await session.flush()


_PENDING_EVENTS = "wod_lifecycle_events"


def event(
    session: AsyncSession,
    kind: str,
    registration_id: int | None,
    actor: str,
    now: datetime,
    **detail,
):
    """Audit ``kind`` on the registration. Written when the transaction commits, all the
    events of a transaction in one INSERT (an end path writes several per transaction)."""
    session.sync_session.info.setdefault(_PENDING_EVENTS, []).append(
        {
            "at": now,
            "actor": actor,
            "kind": kind,
            "registration_id": registration_id,
            "detail": detail,
        }
    )


@sa_event.listens_for(Session, "before_commit")
def _write_events(session: Session) -> None:
    rows = session.info.pop(_PENDING_EVENTS, None)
    if rows:
        session.execute(insert(Event), rows)


@sa_event.listens_for(Session, "after_rollback")
def _drop_events(session: Session) -> None:
    session.info.pop(_PENDING_EVENTS, None)


async def begin_end(
    session: AsyncSession, registration_id: int, worker: str, now: datetime, password_hash_for
) -> bool:
    """Start the end path of an expired session: state -> expired and lock-out, once.
    True if this call made the transition (False: already ending, or not due)."""
    R = Registration
    result = await session.execute(
        update(R)
        .where(
            R.id == registration_id,
            R.state.in_(RUNNING_STATES),
            R.expires_at <= now,
            _held_by(worker, now),
        )
        .values(state=State.expired.value, ended_reason=func.coalesce(R.ended_reason, "expired"))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    await lock_out(session, registration_id, password_hash_for, now)
    event(session, "expired", registration_id, "lifecycle", now, worker=worker)
    return True


async def mark_step(
    session: AsyncSession,
    registration_id: int,
    worker: str,
    step: str,
    now: datetime,
    *,
    renew: timedelta | None = None,
    **values,
) -> bool:
    """Record ``step`` as done (its timestamp), with extra column ``values``; resets the
    retry bookkeeping and, with ``renew``, extends the claim for the next step. False if
    the step was already recorded. Raises NotClaimed."""
    R = Registration
    column = getattr(R, STEP_COLUMNS[step])
    claim = {"claimed_until": now + renew} if renew is not None else {}
    result = await session.execute(
        update(R)
        .where(
            R.id == registration_id,
            column.is_(None),
            R.state.in_(ENDING_STATES),
            _held_by(worker, now),
        )
        .values(
            {
                STEP_COLUMNS[step]: now,
                "step_attempts": 0,
                "next_attempt_at": None,
                "error": None,
                **claim,
                **values,
            }
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        event(session, step, registration_id, "lifecycle", now, worker=worker, **_jsonable(values))
        return True
    await require_claim(session, registration_id, worker, now)
    return False


def _jsonable(values: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()}


async def require_claim(
    session: AsyncSession, registration_id: int, worker: str, now: datetime
) -> Registration:
    registration = await session.get(Registration, registration_id, populate_existing=True)
    if registration is None:
        raise LifecycleError(f"registration {registration_id} does not exist")
    if (
        registration.claimed_by != worker
        or registration.claimed_until is None
        or registration.claimed_until < now
    ):
        raise NotClaimed(
            f"registration {registration_id} is claimed by {registration.claimed_by or 'nobody'}; claim it first"
        )
    return registration


async def record_failure(
    session: AsyncSession,
    registration_id: int,
    worker: str,
    step: str,
    error: str,
    now: datetime,
    retry_in: timedelta,
) -> None:
    """A step failed: count it, keep the error for admins, retry after ``retry_in``,
    and let go of the claim (another worker may take the retry)."""
    R = Registration
    message = f"{step}: {error}"[:2000]
    await session.execute(
        update(R)
        .where(R.id == registration_id, R.claimed_by == worker)
        .values(
            step_attempts=R.step_attempts + 1,
            next_attempt_at=now + retry_in,
            error=message,
            claimed_by=None,
            claimed_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    event(
        session,
        "step_failed",
        registration_id,
        "lifecycle",
        now,
        step=step,
        error=message,
        worker=worker,
    )


async def mark_reminded(
    session: AsyncSession,
    registration_id: int,
    now: datetime,
    reminder_before: timedelta = timedelta(hours=1),
) -> bool:
    """Record the reminder (conditional UPDATE: see :func:`reminder_allowed`); the caller
    queues the e-mail in the same transaction when this returns True."""
    R = Registration
    result = await session.execute(
        update(R)
        .where(
            R.id == registration_id,
            reminder_allowed_clause(now, reminder_before),
            R.state.in_(RUNNING_STATES),
            R.expires_at > now,
        )
        .values(reminded_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def extend(
    session: AsyncSession,
    registration_id: int,
    by: timedelta,
    now: datetime,
    *,
    by_participant: bool,
    actor: str,
) -> Registration:
    """Push ``expires_at`` back by ``by``. A participant may do it once; nobody can
    once the end path started. Raises TooLate / NotAllowed."""
    if by <= timedelta(0):
        raise NotAllowed("An extension must be longer than zero minutes.")
    R = Registration
    conditions = [R.id == registration_id, R.state.in_(RUNNING_STATES), R.expires_at > now]
    values: dict = {}
    if by_participant:
        conditions.append(R.extended_by_participant.is_(False))
        values["extended_by_participant"] = True
    # no portable interval arithmetic in SQL: read, then update only if unchanged
    current = (await session.execute(select(R.expires_at).where(*conditions))).scalar_one_or_none()
    if current is not None:
        result = await session.execute(
            update(R)
            .where(*conditions, R.expires_at == current)
            .values(expires_at=current + by, **values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            event(
                session,
                "extended",
                registration_id,
                actor,
                now,
                minutes=int(by.total_seconds() // 60),
            )
            return await session.get(Registration, registration_id, populate_existing=True)
    registration = await session.get(Registration, registration_id, populate_existing=True)
    if (
        registration is None
        or registration.state not in RUNNING_STATES
        or registration.expires_at <= now
    ):
        raise TooLate("This workshop session has already ended; it cannot be extended.")
    raise NotAllowed("This session has already been extended once.")


async def unregister(
    session: AsyncSession, registration_id: int, now: datetime, password_hash_for
) -> bool:
    """The participant ends early: state -> unregistered and lock-out, once; the
    service then runs the same end path. False if the session was not running."""
    R = Registration
    result = await session.execute(
        update(R)
        .where(R.id == registration_id, R.state.in_(RUNNING_STATES))
        .values(
            state=State.unregistered.value,
            ended_reason="unregistered",
            expires_at=case((R.expires_at > now, now), else_=R.expires_at),
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    await lock_out(session, registration_id, password_hash_for, now)
    event(session, "unregistered", registration_id, "participant", now)
    return True


async def end_soon(
    session: AsyncSession, registration_id: int, now: datetime, reason: str, actor: str
) -> bool:
    """Make a running session due now (e.g. the process guard caught a miner)."""
    R = Registration
    result = await session.execute(
        update(R)
        .where(R.id == registration_id, R.state.in_(RUNNING_STATES))
        .values(expires_at=now, ended_reason=reason[:40])
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        event(session, "ended_by", registration_id, actor, now, reason=reason)
        return True
    return False


async def completed_workshops(
    session: AsyncSession, participant_id: int, min_completion: float
) -> list[str]:
    """Distinct workshops the participant completed (see :func:`counts_as_completed`)."""
    rows = (
        (
            await session.execute(
                select(Registration)
                .where(
                    Registration.participant_id == participant_id,
                    Registration.final_mail_at.is_not(None),
                )
                .execution_options(populate_existing=True)
            )
        )
        .scalars()
        .all()
    )
    done: dict[str, None] = {}
    for r in sorted(rows, key=lambda r: r.final_mail_at):
        if counts_as_completed(r, min_completion):
            done.setdefault(r.workshop_id)
    return list(done)


async def award_badges(
    session: AsyncSession,
    participant_id: int,
    levels: list[BadgeLevel],
    min_completion: float,
    now: datetime,
) -> tuple[list[Badge], int]:
    """Insert the special badges newly reached (the unique constraint makes each one
    once). Returns (new badges, completed count). Runs inside the final-mail step."""
    completed = len(await completed_workshops(session, participant_id, min_completion))
    reached = badges_reached(completed, levels)
    if not reached:
        return [], completed
    have = set(
        (await session.execute(select(Badge.badge).where(Badge.participant_id == participant_id)))
        .scalars()
        .all()
    )
    new = []
    for level in reached:
        if level.name in have:
            continue
        badge = Badge(
            participant_id=participant_id,
            badge=level.name,
            public_id=secrets.token_urlsafe(16),
            awarded_at=now,
        )
        try:
            async with session.begin_nested():
                session.add(badge)
        except IntegrityError:  # a concurrent final step for another workshop won the race
            continue
        new.append(badge)
    return new, completed


async def queue_end_mail(
    session: AsyncSession,
    registration_id: int,
    worker: str,
    now: datetime,
    *,
    workshop,
    register_url: str,
    survey_url: str | None,
    levels: list[BadgeLevel],
    min_completion: float,
    badge_url_for,
    renew: timedelta | None = None,
) -> list[Badge]:
    """The final-mail step: the ``final`` e-mail (``ended_early`` after an early
    unregister), newly reached special badges and their e-mails, and ``final_mail_at``,
    all in the caller's transaction. Dedupe keys make a replay queue nothing twice.
    ``badge_url_for(badge) -> (page_url, image_url)``."""
    from ..mail import enqueue

    registration = await require_claim(session, registration_id, worker, now)
    if registration.final_mail_at is not None:
        return []
    participant = await session.get(Participant, registration.participant_id)
    early = registration.ended_reason == "unregistered"
    context = final_context(
        participant, registration, workshop, register_url=register_url, survey_url=survey_url
    )
    await enqueue(
        session,
        to=participant.email,
        template="ended_early" if early else "final",
        context=context,
        registration_id=registration.id,
        dedupe_key=f"reg:{registration.id}:final",
    )
    if not await mark_step(session, registration_id, worker, "final_mail", now, renew=renew):
        return []
    badges, completed = await award_badges(session, participant.id, levels, min_completion, now)
    by_name = {level.name: level for level in levels}
    for badge in badges:
        page_url, image_url = badge_url_for(badge)
        await enqueue(
            session,
            to=participant.email,
            template="special_badge",
            context=special_badge_context(
                participant,
                by_name[badge.badge],
                badge_url=page_url,
                image_url=image_url,
                completed=completed,
            ),
            registration_id=registration.id,
            dedupe_key=f"badge:{participant.id}:{by_name[badge.badge].slug}",
        )
        event(
            session,
            "badge",
            registration.id,
            "lifecycle",
            now,
            badge=badge.badge,
            completed=completed,
        )
    return badges


async def finish(session: AsyncSession, registration_id: int, worker: str, now: datetime) -> bool:
    """The last step: state -> ended, ``ended_at``, claim released."""
    return await mark_step(
        session,
        registration_id,
        worker,
        "end",
        now,
        state=State.ended.value,
        claimed_by=None,
        claimed_until=None,
    )


async def participant_of(session: AsyncSession, registration: Registration) -> Participant:
    return await session.get(Participant, registration.participant_id)


async def live_registration_of(session: AsyncSession, username: str) -> Registration | None:
    """The running (or ending) registration holding ``username``'s seat, if any."""
    return (
        (
            await session.execute(
                select(Registration)
                .where(
                    Registration.username == username,
                    Registration.state.in_(RUNNING_STATES + ENDING_STATES),
                )
                .where(Registration.ended_at.is_(None))
                .order_by(Registration.created_at.desc())
                .limit(1)
            )
        )
        .scalars()
        .first()
    )
