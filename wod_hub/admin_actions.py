"""What the admin page, the admin API and ``wod-hub action`` do to registrations.

Nothing here is a second implementation of the lifecycle: extending calls
:func:`wod_hub.lifecycle.extend`; CLEANUP / RESET / PURGE / END run the *same* end-path
step functions the ``wod-hub-lifecycle`` service reaches through
``/hub/api/wod/lifecycle/registrations/{id}/steps/{step}`` (the methods of
:class:`~wod_hub.handlers.api_lifecycle.StepAPIHandler`), under a claim, in the same
order, recording failures the same way. The admin's worker id is ``admin:<name>``, so a
running service and an admin never process one registration at the same time.

- CLEANUP, RESET and PURGE end the session (lock-out first, like expiry) and run the end
  path up to that step now; the lifecycle service finishes the rest (final e-mail).
- END runs the whole end path now (PURGE deletes the hub user), up to the final e-mail.
- CREATE on a student without a registration makes an admin *test registration* (like the
  original ``wod-test-action.sh CREATE WKSHP 121``), creates the hub user and starts the
  server, so a workshop can be checked end to end.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select

from . import lifecycle, seats
from .metrics import time_action
from .orm import Event, OutboxMessage, Participant, Registration, Seat, State, WorkshopRow, utcnow

log = logging.getLogger("wod_hub.admin")

CLAIM_TTL = timedelta(minutes=15)
RETRY_IN = timedelta(minutes=1)
DEFAULT_EXTENSION = timedelta(hours=1)
TEST_EMAIL_DOMAIN = "test.wod-hub.invalid"  # never delivered: test registrations get no e-mail


@dataclass(frozen=True)
class ActionSpec:
    label: str
    short: str
    help: str
    style: str  # bootstrap colour of its buttons


ACTIONS: dict[str, ActionSpec] = {
    "extend": ActionSpec(
        "Extend",
        "+time",
        "Give the session more time (the workshop's extension, or the minutes you enter).",
        "primary",
    ),
    "resend": ActionSpec(
        "Resend welcome e-mail",
        "mail",
        "Queue the welcome e-mail again, with a fresh login link and the current password.",
        "secondary",
    ),
    "cleanup": ActionSpec(
        "CLEANUP",
        "CLEANUP",
        "End the session now: lock the student out (new password, links revoked), stop the server, run the "
        "workshop's cleanup script and record the completion. The lifecycle service then finishes the end path.",
        "warning",
    ),
    "reset": ActionSpec(
        "RESET",
        "RESET",
        "CLEANUP, then the workshop's reset script (shared resources back to their initial state).",
        "warning",
    ),
    "purge": ActionSpec(
        "PURGE",
        "PURGE",
        "CLEANUP and RESET if not done, then kill leftover processes, wipe the home and give the seat back.",
        "danger",
    ),
    "end": ActionSpec(
        "End",
        "end",
        "Run the whole end path now: CLEANUP, RESET, PURGE, delete the hub user, final e-mail; the seat goes back.",
        "danger",
    ),
}

# how far along the end path each action goes (the order is the lifecycle's)
TARGET_STEP = {"cleanup": "cleanup", "reset": "reset", "purge": "purge", "end": "end"}


def parse_options(action: str, get_argument) -> tuple[dict, str | None]:
    """Options of an action from form fields: ``minutes`` for extend."""
    if action != "extend":
        return {}, None
    raw = (get_argument("minutes", default="") or "").strip()
    if not raw:
        return {"minutes": None}, None
    if not raw.isdigit() or not 1 <= int(raw) <= 24 * 60:
        return {
            "minutes": raw
        }, "Enter the extension in minutes, between 1 and 1440 (or leave it empty)."
    return {"minutes": int(raw)}, None


def summary(action: str, results: list[dict]) -> dict:
    failed = [r for r in results if not r["ok"]]
    spec = ACTIONS.get(action)
    label = spec.label if spec else action.upper()
    done = len(results) - len(failed)
    title = f"{label}: {done} of {len(results)} done" + (
        f", {len(failed)} failed" if failed else ""
    )
    return {
        "action": action,
        "title": title,
        "message": "",
        "failed": len(failed),
        "errors": [f"#{r.get('id') or r.get('student')}: {r['message']}" for r in failed],
        "results": results,
    }


def _result(registration_id: int | None, ok: bool, message: str, **extra) -> dict:
    return {"id": registration_id, "ok": ok, "message": message, **extra}


# ---- workshop switches, outbox ---------------------------------------------------------------


async def set_registration_open(wod, workshop_id: str, is_open: bool, *, actor: str) -> dict:
    async with wod.db.begin_write() as session:
        row = await session.get(WorkshopRow, workshop_id)
        if row is None:
            return {
                "title": f"No workshop {workshop_id}",
                "message": "Reload the page.",
                "failed": 1,
                "errors": [],
            }
        changed = row.registration_open != is_open
        row.registration_open = is_open
        row.updated_at = utcnow()
        if changed:
            session.add(
                Event(
                    actor=actor,
                    kind="registration_opened" if is_open else "registration_closed",
                    detail={"workshop": workshop_id},
                )
            )
    wod.seats_changed()
    state = "open" if is_open else "closed"
    return {
        "title": f"{workshop_id} is {state} for registration",
        "message": "" if changed else "(it already was)",
        "failed": 0,
        "errors": [],
        "workshop": workshop_id,
        "registration_open": is_open,
    }


async def retry_emails(wod, ids: list[int], *, actor: str) -> dict:
    from .outbox import retry_message

    results = []
    async with wod.db.begin_write() as session:
        for message_id in ids:
            ok = await retry_message(session, message_id)
            results.append(
                _result(
                    None,
                    ok,
                    "queued again" if ok else "not waiting or failed (already sent?)",
                    message_id=message_id,
                )
            )
            if ok:
                message = await session.get(OutboxMessage, message_id)
                session.add(
                    Event(
                        actor=actor,
                        kind="mail_retry",
                        registration_id=message.registration_id,
                        detail={"message": message_id},
                    )
                )
    if wod.sender is not None:
        wod.sender.wake()
    failed = [r for r in results if not r["ok"]]
    return {
        "title": f"Retry: {len(results) - len(failed)} of {len(results)} e-mail(s) queued again",
        "message": "",
        "failed": len(failed),
        "errors": [f"e-mail #{r['message_id']}: {r['message']}" for r in failed],
        "results": results,
    }


# ---- actions on registrations ------------------------------------------------------------------


async def run(wod, handler, action: str, ids: list[int], *, actor: str, **options) -> list[dict]:
    """Run ``action`` on each registration; one failure never stops the others."""
    results = []
    for rid in ids:
        try:
            with time_action(action):
                results.append(await _run_one(wod, handler, action, rid, actor=actor, **options))
        except Exception as e:  # reported per row; the details are in the hub log
            log.exception("Admin action %s on registration %s failed", action, rid)
            results.append(_result(rid, False, f"{e.__class__.__name__}: {e}"))
    return results


async def run_for_students(
    wod, handler, action: str, workshop_id: str, students: list[int], *, actor: str, **options
) -> list[dict]:
    """The CLI's ``action ACTION WKSHP STUDENT[-MAX]``: by student number."""
    workshop = wod.catalog.workshops.get(workshop_id)
    results = []
    for number in students:
        username = seats.username_for(number)
        if workshop is None:
            results.append(
                _result(
                    None, False, f"no workshop {workshop_id!r} in the catalog", student=username
                )
            )
            continue
        if not workshop.owns(number):
            lo, hi = workshop.student_range
            results.append(
                _result(
                    None,
                    False,
                    f"{username} is not in {workshop_id}'s range {lo}-{hi}",
                    student=username,
                )
            )
            continue
        async with wod.db.session() as session:
            registration = await lifecycle.live_registration_of(session, username)
        if action == "create":
            try:
                with time_action("create"):
                    result = await create(wod, handler, workshop, number, registration, actor=actor)
            except Exception as e:
                log.exception("Admin CREATE of %s failed", username)
                result = _result(
                    registration.id if registration else None, False, f"{e.__class__.__name__}: {e}"
                )
        elif registration is None:
            result = _result(None, False, f"{username} holds no registration: nothing to {action}")
        else:
            [result] = await run(wod, handler, action, [registration.id], actor=actor, **options)
        results.append({**result, "student": username})
    return results


async def _run_one(wod, handler, action: str, rid: int, *, actor: str, **options) -> dict:
    async with wod.db.session() as session:
        registration = await session.get(Registration, rid)
    if registration is None:
        return _result(rid, False, "no such registration")
    if action == "extend":
        return await extend(wod, registration, options.get("minutes"), actor=actor)
    if action == "resend":
        return await resend_welcome(wod, registration, actor=actor)
    if action in TARGET_STEP:
        return await end_path(wod, handler, registration, TARGET_STEP[action], actor=actor)
    return _result(rid, False, f"unknown action {action!r}")


async def extend(wod, registration: Registration, minutes: int | None, *, actor: str) -> dict:
    workshop = wod.catalog.workshops.get(registration.workshop_id)
    by = (
        timedelta(minutes=minutes)
        if minutes
        else (getattr(workshop, "extension", None) or DEFAULT_EXTENSION)
    )
    async with wod.db.begin_write() as session:
        try:
            updated = await lifecycle.extend(
                session, registration.id, by, utcnow(), by_participant=False, actor=actor
            )
        except (lifecycle.TooLate, lifecycle.NotAllowed) as e:
            return _result(registration.id, False, str(e))
    return _result(
        registration.id,
        True,
        f"+{int(by.total_seconds() // 60)} min, now until {updated.expires_at:%Y-%m-%d %H:%M} UTC",
        expires_at=lifecycle.iso_z(updated.expires_at),
    )


def welcome_context(wod, workshop, participant: Participant, registration: Registration) -> dict:
    """The welcome e-mail's stored context (the link and password are added at send time)."""
    duration = getattr(workshop, "duration", None) or (
        registration.expires_at - registration.created_at
    )
    return {
        "first_name": participant.first_name,
        "last_name": participant.last_name,
        "workshop_id": registration.workshop_id,
        "workshop_name": getattr(workshop, "name", None) or registration.workshop_id,
        "workshop_image": getattr(workshop, "workshop_image", None) or "",
        "duration_minutes": int(duration.total_seconds() // 60),
        "expires_at": lifecycle.iso_z(registration.expires_at),
        "username": registration.username,
        "hub_url": wod.hub_url,
        "recover_url": wod.link("wod/recover"),
    }


async def resend_welcome(wod, registration: Registration, *, actor: str) -> dict:
    from .outbox import enqueue

    if registration.state not in lifecycle.RUNNING_STATES:
        return _result(
            registration.id, False, f"the session is {registration.state}: no login link to send"
        )
    async with wod.db.begin_write() as session:
        participant = await session.get(Participant, registration.participant_id)
        if participant.email.endswith("@" + TEST_EMAIL_DOMAIN):
            return _result(registration.id, False, "a test registration has no e-mail address")
        workshop = wod.catalog.workshops.get(registration.workshop_id)
        sent_before = (
            await session.execute(
                select(func.count(Event.id)).where(
                    Event.registration_id == registration.id, Event.kind == "mail_resent"
                )
            )
        ).scalar_one()
        await enqueue(
            session,
            to=participant.email,
            template="welcome",
            context=welcome_context(wod, workshop, participant, registration),
            registration_id=registration.id,
            dedupe_key=f"reg:{registration.id}:welcome:resend:{sent_before + 1}",
        )
        session.add(
            Event(
                actor=actor,
                kind="mail_resent",
                registration_id=registration.id,
                detail={"template": "welcome", "to": participant.email},
            )
        )
    if wod.sender is not None:
        wod.sender.wake()
    return _result(registration.id, True, f"welcome e-mail queued to {participant.email}")


# ---- the end path, through the lifecycle's own step functions ------------------------------------


def _steps_to(target: str, needs_reset: bool) -> list[str]:
    order = [s for s in lifecycle.END_STEPS if s != "reset" or needs_reset or target == "reset"]
    return order[: order.index(target) + 1]


class _StepHandler:
    """The admin's request handler seen as a :class:`StepAPIHandler`: the step
    functions (and the helpers they call on ``self``) run bound to this proxy, and
    everything else (hub users, spawners, settings, log) is the admin's handler."""

    def __init__(self, handler, step_class):
        self._handler = handler
        self._step_class = step_class

    def __getattr__(self, name):
        attr = getattr(self._step_class, name, None)
        if callable(attr) and not isinstance(attr, type):
            return attr.__get__(self)
        return getattr(self._handler, name)


async def end_path(wod, handler, registration: Registration, target: str, *, actor: str) -> dict:
    """Claim, begin the end if the session still runs, stop the server, then every step up
    to ``target`` with :class:`StepAPIHandler`'s step functions; a failure is recorded on
    the registration exactly as when the service hits it."""
    from .handlers.api_lifecycle import StepAPIHandler

    handler = _StepHandler(handler, StepAPIHandler)
    rid = registration.id
    worker = f"{actor}:{secrets.token_hex(3)}"[:100]
    workshop = wod.catalog.workshops.get(registration.workshop_id)
    needs_reset = bool(getattr(workshop, "reset", False))
    if registration.state not in (*lifecycle.RUNNING_STATES, *lifecycle.ENDING_STATES):
        return _result(
            rid, False, f"the registration is {registration.state}: its end path is complete"
        )
    async with wod.db.begin_write() as session:
        if not await lifecycle.claim(session, rid, worker, CLAIM_TTL, utcnow()):
            current = await session.get(Registration, rid)
            return _result(
                rid,
                False,
                f"{current.claimed_by} is processing it right now; try again in a minute",
            )
    done: list[str] = []
    step = "begin"
    try:
        if registration.state in lifecycle.RUNNING_STATES:
            if registration.expires_at > utcnow():  # else already due: keep its reason
                async with wod.db.begin_write() as session:
                    await lifecycle.end_soon(session, rid, utcnow(), f"admin {target}", actor)
            await StepAPIHandler.step_begin(handler, wod, await _fresh(wod, rid), workshop, worker)
            done.append("locked out")
        for step in _steps_to(target, needs_reset):
            current = await _fresh(wod, rid)
            if getattr(current, lifecycle.STEP_COLUMNS[step]) is not None:
                continue
            if step == "stop":
                await _stop_server(handler, current.username)
            async with wod.db.begin_write() as session:  # renew the claim between steps
                await lifecycle.claim(session, rid, worker, CLAIM_TTL, utcnow())
            if await getattr(StepAPIHandler, f"step_{step}")(
                handler, wod, current, workshop, worker
            ):
                done.append(
                    step.upper()
                    if step in ("cleanup", "reset", "purge")
                    else step.replace("_", " ")
                )
    except Exception as e:
        message = getattr(e, "log_message", None) or str(e) or e.__class__.__name__
        async with wod.db.begin_write() as session:
            await lifecycle.record_failure(session, rid, worker, step, message, utcnow(), RETRY_IN)
        return _result(rid, False, f"{step} failed: {message}", done=done)
    if target != "end":
        async with wod.db.begin_write() as session:
            await lifecycle.release(session, rid, worker)
    final = await _fresh(wod, rid)
    if final.completion is not None and "CLEANUP" in done:
        done.append(f"completion {final.completion:.0f} %")
    return _result(rid, True, ", ".join(done) if done else "already done", state=final.state)


async def _fresh(wod, rid: int) -> Registration:
    async with wod.db.session() as session:
        return await session.get(Registration, rid)


async def _stop_server(handler, username: str | None) -> None:
    """What ``DELETE /hub/api/users/{name}/server`` does (the service's stop step)."""
    user = handler.find_user(username) if username else None
    if user is None:
        return
    spawner = user.spawners.get("")
    if spawner is not None and (spawner.active or spawner.pending):
        if spawner.pending:
            raise RuntimeError(
                f"{username}'s server is {spawner.pending}; try again when it settles"
            )
        await handler.stop_single_user(user, "")


# ---- CREATE --------------------------------------------------------------------------------------


async def create(
    wod, handler, workshop, number: int, registration: Registration | None, *, actor: str
) -> dict:
    """Start ``studentN``'s workshop; without a live registration, make an admin test registration."""
    username = seats.username_for(number)
    note = ""
    if registration is None:
        registration, note = await _test_registration(wod, workshop, number, actor=actor)
    elif registration.state not in lifecycle.RUNNING_STATES:
        return _result(
            registration.id,
            False,
            f"{username}'s session is ending ({registration.state}); PURGE or END it first",
        )
    user = await handler.auth_to_user({"name": username, "admin": False, "groups": [workshop.id]})
    spawner = user.spawners.get("") if "" in user.spawners else user.spawner
    if spawner.active and not spawner.pending:
        return _result(registration.id, True, f"{note}server already running".lstrip())
    if spawner.pending:
        return _result(registration.id, True, f"{note}server is {spawner.pending}".lstrip())
    await handler.spawn_single_user(user)
    status = "server starting" if spawner.pending else "server running"
    return _result(registration.id, True, f"{note}{status} at {user.url}")


async def _test_registration(wod, workshop, number: int, *, actor: str) -> tuple[Registration, str]:
    username = seats.username_for(number)
    now = utcnow()
    async with wod.db.begin_write() as session:
        seat = await session.get(Seat, number)
        if seat is None or seat.workshop_id != workshop.id:
            raise RuntimeError(
                f"{username} is not a seat of {workshop.id}; restart the hub after changing ranges"
            )
        if seat.disabled:
            raise RuntimeError(f"{username}'s seat is disabled")
        if seat.registration_id is not None:
            raise RuntimeError(f"{username} is held by registration #{seat.registration_id}")
        email = f"{username}@{TEST_EMAIL_DOMAIN}"
        participant = (
            await session.execute(select(Participant).where(Participant.email == email))
        ).scalar_one_or_none()
        if participant is None:
            participant = Participant(
                email=email, first_name="Test", last_name=username, company="wod-hub admin test"
            )
            session.add(participant)
            await session.flush()
        registration = Registration(
            participant_id=participant.id,
            workshop_id=workshop.id,
            state=State.registered.value,
            created_at=now,
            expires_at=now + workshop.duration,
            ended_reason=None,
        )
        session.add(registration)
        await session.flush()
        seat = await seats.allocate_seat(
            session,
            workshop.id,
            registration.id,
            now=now,
            student_number=number,
            even_if_closed=True,
        )
        registration.student_number, registration.username = seat.student_number, seat.username
        seat.password_hash = wod.seat_password_hash(
            workshop.id, seat.student_number, seat.generation
        )
        session.add(
            Event(
                at=now,
                actor=actor,
                kind="test_registration",
                registration_id=registration.id,
                detail={"workshop": workshop.id, "student": username},
            )
        )
    return registration, f"test registration #{registration.id}, "


# ---- the hub's own admin panel deleted a student ---------------------------------------------------


async def hub_user_deleted(wod, username: str, *, actor: str = "hub-admin") -> int | None:
    """``studentN`` was deleted in JupyterHub's admin panel (or ``DELETE /hub/api/users/N``):
    its running session ends now, exactly like an expiry. The student is locked out at once
    (password rotated, links revoked), the registration is marked with the reason and an
    event, and the lifecycle service runs the end path (CLEANUP, RESET, PURGE: the seat goes
    back). A session already ending (the service deletes the user itself) is left alone.
    Returns the registration id it ended, if any."""
    now = utcnow()
    async with wod.db.begin_write() as session:
        registration = await lifecycle.live_registration_of(session, username)
        if registration is None or registration.state not in lifecycle.RUNNING_STATES:
            return None
        await lifecycle.end_soon(session, registration.id, now, "hub_user_deleted", actor)
        await lifecycle.lock_out(session, registration.id, wod.seat_password_hash, now)
    log.info("Hub user %s deleted: registration %s ends now", username, registration.id)
    return registration.id
