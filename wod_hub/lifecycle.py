"""Time-bombed sessions: the registration state machine and the end-path steps.

The pure core (no hub, no clock it is not given) decides what is due
(:func:`due_action`), which end-path step comes next (:func:`next_step`), how
complete a workshop was (:func:`completion_from_home`), which special badges a
count of completed workshops earns (:func:`badges_reached`), and builds the
e-mail contexts. The step functions below take a session: the hub calls them
from ``/hub/api/wod/lifecycle/...`` (see :mod:`wod_hub.handlers.api_lifecycle`)
on behalf of the ``wod-hub-lifecycle`` service (:mod:`wod_hub.service`).

End path (each step writes its timestamp, so a restart resumes at the first
step not done)::

    begin   state -> expired (or stays unregistered); the seat's password is
            rotated and login links revoked at once (no window to log in again)
    stop    the service stops the server through the hub API   -> stopped_at
    cleanup cleanup hook, completion % from the notebooks      -> cleaned_at
    reset   reset hook, only for workshops with ``reset: true`` -> reset_at
    purge   kill leftover processes, wipe the home, seat back   -> purged_at
    final   the service deletes the hub user (sessions, tokens), then the final
            (or ended_early) e-mail and special badges are queued -> final_mail_at
    end     state -> ended                                      -> ended_at

Every write is a conditional UPDATE guarded by the worker's claim and by the
step's timestamp still being NULL: two workers, a retry or a replay never do a
step twice, and e-mails carry dedupe keys in the same transaction.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from traitlets import Bool, Dict, Float, Integer, Unicode, validate
from traitlets.config import LoggingConfigurable

from . import tokens
from .orm import Badge, Event, Participant, Registration, Seat, State

log = logging.getLogger("wod_hub.lifecycle")

# ---- states and steps ------------------------------------------------------------

#: states in which the session runs (the clock is ticking)
RUNNING_STATES = (State.registered.value, State.provisioning.value, State.active.value)
#: states in which the end path runs
ENDING_STATES = (State.expired.value, State.unregistered.value)

END_STEPS = ("stop", "cleanup", "reset", "purge", "final_mail", "end")
STEP_COLUMNS = {
    "stop": "stopped_at",
    "cleanup": "cleaned_at",
    "reset": "reset_at",
    "purge": "purged_at",
    "final_mail": "final_mail_at",
    "end": "ended_at",
}

DEFAULT_SPECIAL_BADGES = {3: "Apprentice", 5: "Expert", 7: "Hero", 10: "Super Hero", 15: "Legend"}


class LifecycleError(Exception):
    """A lifecycle request that cannot be honoured; ``str(e)`` says what to do."""


class NotClaimed(LifecycleError):
    """The registration is claimed by another worker (or the claim expired)."""


class TooLate(LifecycleError):
    """The session has already ended (or its end path started)."""


class NotAllowed(LifecycleError):
    """The workshop does not allow it, or it was already used."""


def next_step(registration: Registration, *, needs_reset: bool) -> str | None:
    """The first end-path step not done yet, or None when the path is complete."""
    if registration.ended_at is not None:
        return None
    for step in END_STEPS:
        if step == "reset" and not needs_reset:
            continue
        if getattr(registration, STEP_COLUMNS[step]) is None:
            return step
    return None


def due_action(registration: Registration, now: datetime, reminder_before: timedelta) -> str | None:
    """``"end"`` (end path due or running), ``"reminder"``, or None."""
    state = registration.state
    if state in ENDING_STATES:
        if registration.ended_at is not None:
            return None
        if registration.next_attempt_at is not None and registration.next_attempt_at > now:
            return None
        return "end"
    if state not in RUNNING_STATES:
        return None
    if registration.expires_at <= now:
        if registration.next_attempt_at is not None and registration.next_attempt_at > now:
            return None
        return "end"
    if registration.reminded_at is None and registration.expires_at - reminder_before <= now:
        return "reminder"
    return None


def due_clause(now: datetime, reminder_before: timedelta):
    """The SQL twin of :func:`due_action` (for the index on state + expires_at)."""
    R = Registration
    retry_ok = or_(R.next_attempt_at.is_(None), R.next_attempt_at <= now)
    return or_(
        and_(R.state.in_(ENDING_STATES), R.ended_at.is_(None), retry_ok),
        and_(R.state.in_(RUNNING_STATES), R.expires_at <= now, retry_ok),
        and_(
            R.state.in_(RUNNING_STATES),
            R.reminded_at.is_(None),
            R.expires_at > now,
            R.expires_at <= now + reminder_before,
        ),
    )


def backoff(attempts: int, base: float = 30.0, cap: float = 1800.0) -> timedelta:
    """Retry delay after ``attempts`` failures: base * 2^(n-1), capped."""
    return timedelta(seconds=min(cap, base * 2 ** max(0, attempts - 1)))


_USER_PATH = re.compile(r"/(?:user|spawn|spawn-pending)/(student\d+)(?:[/?#]|$)")


def username_in_path(path: str) -> str | None:
    """The student whose server a URL path points at (``/user/student3/lab``), if any."""
    m = _USER_PATH.search(path or "")
    return m[1] if m else None


# ---- completion --------------------------------------------------------------------------


def notebook_cells(notebook: dict) -> tuple[int, int]:
    """(executed, total) code cells of a notebook's JSON. Empty cells do not count."""
    executed = total = 0
    for cell in notebook.get("cells") or ():
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source") or ""
        if isinstance(source, list):
            source = "".join(source)
        if not source.strip():
            continue
        total += 1
        if cell.get("execution_count") is not None:
            executed += 1
    return executed, total


def completion_percent(counts: Iterable[tuple[int, int]]) -> float | None:
    """Executed / total code cells over several notebooks, in percent (None: no code)."""
    executed = total = 0
    for e, t in counts:
        executed += e
        total += t
    if total == 0:
        return None
    return round(100.0 * executed / total, 1)


def find_notebooks(
    home: Path, workshop_notebooks: Iterable[str] = (), limit: int = 500
) -> list[Path]:
    """The student's notebooks under ``home``: those matching the workshop's notebook
    paths (wherever the spawner put the workshop folder), else every notebook."""
    found: list[Path] = []
    if not home.is_dir():
        return found
    for path in sorted(home.rglob("*.ipynb")):
        rel = path.relative_to(home)
        if any(part.startswith(".") for part in rel.parts):  # .ipynb_checkpoints, dot dirs
            continue
        found.append(path)
        if len(found) >= limit:
            break
    wanted = tuple(n.lstrip("/") for n in workshop_notebooks)
    if wanted:
        matching = [p for p in found if p.relative_to(home).as_posix().endswith(wanted)]
        if matching:
            return matching
    return found


def completion_from_home(home: Path, workshop_notebooks: Iterable[str] = ()) -> float | None:
    """Completion % of a student's home (blocking: call it in a thread)."""
    counts = []
    for path in find_notebooks(home, workshop_notebooks):
        try:
            counts.append(notebook_cells(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, AttributeError) as e:
            log.warning("Completion: cannot read %s: %s", path, e)
    return completion_percent(counts)


# ---- badges ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadgeLevel:
    threshold: int
    name: str

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def badge_levels(config: dict[int, str] | None = None) -> list[BadgeLevel]:
    """Configured thresholds (completed workshops -> badge name), sorted."""
    levels = config if config is not None else DEFAULT_SPECIAL_BADGES
    return [
        BadgeLevel(int(n), str(name))
        for n, name in sorted(levels.items(), key=lambda kv: int(kv[0]))
    ]


def badges_reached(completed: int, levels: Iterable[BadgeLevel]) -> list[BadgeLevel]:
    return [level for level in levels if completed >= level.threshold]


def counts_as_completed(registration: Registration, min_completion: float) -> bool:
    """A workshop counts toward special badges once its session ended with at least
    ``min_completion`` % of the code run (unknown completion counts for a full session)."""
    if registration.state != State.ended.value and registration.final_mail_at is None:
        return False
    if registration.completion is None:
        return registration.ended_reason in (None, "expired")
    return registration.completion >= min_completion


# ---- e-mail contexts (no secret ever: see mail.TEMPLATE_CONTEXT) --------------------------


def iso_z(when: datetime) -> str:
    return when.replace(microsecond=0).isoformat() + "Z"


def workshop_context(participant: Participant, registration: Registration, workshop) -> dict:
    return {
        "first_name": participant.first_name,
        "last_name": participant.last_name,
        "workshop_id": registration.workshop_id,
        "workshop_name": getattr(workshop, "name", None) or registration.workshop_id,
        "workshop_image": getattr(workshop, "workshop_image", None),
    }


def reminder_context(
    participant, registration, workshop, *, now: datetime, hub_url: str, home_url: str
) -> dict:
    minutes_left = max(0, int((registration.expires_at - now).total_seconds() // 60))
    extension = getattr(workshop, "extension", timedelta(0)) or timedelta(0)
    can_extend = extension > timedelta(0) and not registration.extended_by_participant
    return {
        **workshop_context(participant, registration, workshop),
        "expires_at": iso_z(registration.expires_at),
        "minutes_left": minutes_left,
        "hub_url": hub_url,
        "extend_url": home_url if can_extend else None,
        "extend_minutes": int(extension.total_seconds() // 60) if can_extend else None,
    }


def final_context(
    participant, registration, workshop, *, register_url: str, survey_url: str | None
) -> dict:
    completion = registration.completion
    return {
        **workshop_context(participant, registration, workshop),
        "register_url": register_url,
        "completion": None if completion is None else int(round(completion)),
        "survey_url": survey_url or None,
        "badge_image_url": getattr(workshop, "badge_image", None),
        "replay_url": getattr(workshop, "replay_link", None),
    }


def special_badge_context(
    participant, level: BadgeLevel, *, badge_url: str, image_url: str, completed: int
) -> dict:
    return {
        "first_name": participant.first_name,
        "last_name": participant.last_name,
        "badge_name": level.name,
        "badge_url": badge_url,
        "badge_image_url": image_url,
        "workshops_completed": completed,
    }


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


async def mark_reminded(session: AsyncSession, registration_id: int, now: datetime) -> bool:
    """Record the reminder once (conditional UPDATE); the caller queues the e-mail in
    the same transaction when this returns True."""
    R = Registration
    result = await session.execute(
        update(R)
        .where(
            R.id == registration_id,
            R.reminded_at.is_(None),
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
    from .mail import enqueue

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


# ---- hub-side settings --------------------------------------------------------------------


class LifecycleSettings(LoggingConfigurable):
    """Hub-side lifecycle options (set them in jupyterhub_config.py as
    ``c.LifecycleSettings.<name>``); the schedule itself is the service's
    (``c.LifecycleService``)."""

    special_badges = Dict(
        key_trait=Integer(),
        value_trait=Unicode(),
        default_value=dict(DEFAULT_SPECIAL_BADGES),
        help="""Special badges: number of completed workshops -> badge name. Each is awarded
        once per participant, with an e-mail and a public badge page. Empty: none.""",
    ).tag(config=True)

    badge_min_completion = Float(
        50.0,
        help="""A workshop counts as completed for special badges when at least this percentage
        of its code cells was run (sessions whose completion is unknown count when they ran to
        the end). 0 counts every session that ended.""",
    ).tag(config=True)

    hook_timeout = Float(
        300.0,
        help="Seconds a cleanup or reset hook may run before it is killed and the step retried.",
    ).tag(config=True)

    wipe_home = Bool(
        True,
        help="""PURGE wipes the student's home (local spawners) so the next participant of the seat
        starts clean. Disable only if the spawner re-creates homes itself.""",
    ).tag(config=True)

    kill_processes = Bool(
        True,
        help="""PURGE kills the processes the student's system account still runs (local spawners
        with one system user per student; never root or the hub's own user).""",
    ).tag(config=True)

    @validate("special_badges")
    def _validate_badges(self, proposal):
        for count, name in proposal["value"].items():
            if count < 1 or not name.strip():
                raise ValueError(
                    f"LifecycleSettings.special_badges: {count!r}: {name!r} needs a count >= 1 and a name"
                )
        return proposal["value"]

    @validate("badge_min_completion")
    def _validate_min(self, proposal):
        if not 0 <= proposal["value"] <= 100:
            raise ValueError("LifecycleSettings.badge_min_completion must be between 0 and 100")
        return proposal["value"]

    @property
    def levels(self) -> list[BadgeLevel]:
        return badge_levels(self.special_badges)
