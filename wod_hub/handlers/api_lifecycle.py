"""The hub side of time-bombed sessions, for the ``wod-hub-lifecycle`` service.

All under ``/hub/api/wod/lifecycle/`` and protected by ``custom:wod:lifecycle``
(admins' ``custom:wod:admin`` / ``admin:users`` pass too)::

    GET  due?reminder_before=S&limit=N&worker=W   registrations with a reminder or end path due
    GET  registrations/{id}                       one registration's lifecycle model
    POST registrations/{id}/claim     {worker, ttl}     take/renew the claim (409: someone else's)
    POST registrations/{id}/release   {worker}
    POST registrations/{id}/reminder  {reminder_before}  queue the reminder (once per end time)
    POST registrations/{id}/steps/{step} {worker, ttl}  begin|stop|cleanup|reset|purge|final_mail|end
    POST registrations/{id}/failure   {worker, step, error, retry_in}
    POST users/{name}/end             {reason}          make a running session due now (process guard)
    POST events                       {username, kind, detail}  audit (process guard)

and, for admins (``custom:wod:admin``): ``POST /hub/api/wod/registrations/{id}/extend {minutes}``.

A step answers 200 ``{"ok": true, "done": bool, "registration": {...}}`` (``done`` false:
it had been done before), or 200 ``{"ok": false, "error": ...}`` after recording the failure
on the registration (retry with backoff, error shown to admins), or 409 when the worker
does not hold the claim or the server still runs.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from jupyterhub.apihandlers import APIHandler
from jupyterhub.utils import maybe_future
from sqlalchemy import or_, select
from tornado import web

from .. import guard, lifecycle
from ..lifecycle import LifecycleSettings, NotAllowed, NotClaimed, TooLate
from ..orm import Badge, Participant, Registration, utcnow
from ..seats import release_seat
from .base import ADMIN_SCOPES, LIFECYCLE_SCOPES, WodMixin, require_any_scope

MAX_TTL = 3600.0
MAX_REMINDER = 7 * 24 * 3600.0


async def home_of(handler, username: str | None, user=False) -> Path | None:
    """The student's home directory on this machine: the wod spawners' ``wod_home()``,
    a local spawner's ``home_dir``, else the system account's home; None if none.
    ``user``: the hub user if the caller looked it up already."""
    if not username:
        return None
    if user is False:
        user = handler.find_user(username)
    spawner = None
    if user is not None and "" in user.orm_spawners:  # never create a spawner just to ask
        spawner = user.spawners[""]
    if spawner is not None and hasattr(spawner, "wod_home"):
        home = await maybe_future(spawner.wod_home())
        return Path(home) if home else None
    home = getattr(spawner, "home_dir", None)
    if isinstance(home, str) and home:
        return Path(home)
    try:
        import pwd

        return Path(pwd.getpwnam(username).pw_dir)
    except KeyError:
        return None


async def delete_hub_user(handler, username: str | None, user=False) -> bool:
    """Delete the student's hub user: what JupyterHub's ``DELETE /hub/api/users/{name}``
    does (stop the server, ``Authenticator.delete_user``, spawners, the user), so its
    cookies, API tokens and OAuth tokens stop working. False if there was none."""
    if user is False:
        user = handler.find_user(username) if username else None
    if user is None:
        return False
    spawner = user.spawners.get("")
    if spawner is not None and spawner.active:
        if spawner.pending:
            raise RuntimeError(
                f"{username}'s server is {spawner.pending}: retrying when it settles"
            )
        await handler.stop_single_user(user, "")
        if spawner.pending:
            raise RuntimeError(f"{username}'s server is still stopping: retrying later")
    await maybe_future(handler.authenticator.delete_user(user))
    await user.delete_spawners()
    handler.users.delete(user)
    handler.log.info("Deleted hub user %s (sessions and tokens revoked)", username)
    return True


async def run_workshop_hook(
    wod, workshop, name: str, registration: Registration, home: Path | None, timeout: float
):
    """Run a workshop's cleanup/reset hook, if it has one (raises HookError on failure)."""
    if workshop is None or name not in getattr(workshop, "hooks", {}):
        return None
    from ..hooks import hook_env, run_hook

    env = hook_env(
        workshop,
        name,
        student_number=registration.student_number,
        username=registration.username,
        home=home,
        hub_url=wod.hub_url,
        variables={**wod.catalog.variables, **workshop.variables},
        extra={"WOD_REGISTRATION": str(registration.id)},
    )
    return await run_hook(workshop, name, env, timeout)


def registration_model(
    registration: Registration, workshop=None, action: str | None = None
) -> dict:
    def when(value):
        return lifecycle.iso_z(value) if value is not None else None

    needs_reset = bool(getattr(workshop, "reset", False))
    model = {
        "id": registration.id,
        "username": registration.username,
        "workshop_id": registration.workshop_id,
        "state": registration.state,
        "ended_reason": registration.ended_reason,
        "expires_at": when(registration.expires_at),
        "reminded_at": when(registration.reminded_at),
        "extended_by_participant": registration.extended_by_participant,
        "completion": registration.completion,
        "needs_reset": needs_reset,
        "next_step": lifecycle.next_step(registration, needs_reset=needs_reset)
        if registration.state in lifecycle.ENDING_STATES
        else None,
        "step_attempts": registration.step_attempts,
        "next_attempt_at": when(registration.next_attempt_at),
        "error": registration.error,
        "claimed_by": registration.claimed_by,
        "claimed_until": when(registration.claimed_until),
    }
    for column in lifecycle.STEP_COLUMNS.values():
        model[column] = when(getattr(registration, column))
    if action is not None:
        model["action"] = action
    return model


class WodAPIHandler(WodMixin, APIHandler):
    required_scopes = LIFECYCLE_SCOPES
    what = "the lifecycle API"

    async def prepare(self):
        await super().prepare()
        if self._finished:
            return
        require_any_scope(self, self.required_scopes, self.what)

    def json(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data, default=str))

    def body(self) -> dict:
        data = self.get_json_body()
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise web.HTTPError(400, "Send a JSON object as the request body.")
        return data

    def worker_of(self, data: dict) -> str:
        worker = data.get("worker")
        if not isinstance(worker, str) or not worker.strip() or len(worker) > 100:
            raise web.HTTPError(400, 'Send {"worker": "<this sweeper\'s id, 1-100 characters>"}.')
        return worker

    @staticmethod
    def seconds(data: dict, key: str, default: float, maximum: float = MAX_TTL) -> timedelta:
        value = data.get(key, default)
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not 0 < value <= maximum
        ):
            raise web.HTTPError(
                400, f"{key} must be a number of seconds between 0 and {maximum:g}."
            )
        return timedelta(seconds=value)

    def settings_(self) -> LifecycleSettings:
        """``c.LifecycleSettings``, built (and validated) with WodState at hub start."""
        return self.authenticator.wod.lifecycle

    def hub_user(self, username: str | None):
        """``find_user``, once per request (a hub database query)."""
        if not username:
            return None
        cache = self.__dict__.setdefault("_wod_users", {})
        if username not in cache:
            cache[username] = self.find_user(username)
        return cache[username]

    def server_active(self, username: str | None) -> bool:
        """Whether the student's default server runs (or starts/stops) right now."""
        user = self.hub_user(username)
        spawner = user.spawners.get("") if user is not None else None
        return bool(spawner is not None and spawner.active)

    async def model(self, wod, registration_id: int, **extra) -> dict:
        async with wod.db.session() as session:
            registration = await session.get(Registration, registration_id)
        if registration is None:
            raise web.HTTPError(404, f"No registration {registration_id}.")
        model = registration_model(
            registration, wod.catalog.workshops.get(registration.workshop_id), **extra
        )
        # only where the service will act on it (a hub user lookup is a query)
        if model["state"] in lifecycle.RUNNING_STATES or model["next_step"] == "stop":
            model["server_active"] = self.server_active(registration.username)
        return model


class DueAPIHandler(WodAPIHandler):
    async def get(self):
        wod = await self.wod_ready()
        try:
            before = timedelta(seconds=float(self.get_argument("reminder_before", "3600")))
            limit = min(max(int(self.get_argument("limit", "200")), 1), 5000)
        except ValueError:
            raise web.HTTPError(
                400, "reminder_before (seconds) and limit must be numbers."
            ) from None
        worker = self.get_argument("worker", "")
        now = utcnow()
        R = Registration
        free = or_(
            R.claimed_by.is_(None),
            R.claimed_until.is_(None),
            R.claimed_until < now,
            R.claimed_by == worker,
        )
        async with wod.db.session() as session:
            rows = (
                (
                    await session.execute(
                        select(R)
                        .where(lifecycle.due_clause(now, before), free)
                        .order_by(R.expires_at)
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
        items = []
        for r in rows:
            action = lifecycle.due_action(r, now, before)
            if action is not None:
                # no server_active here (a hub user lookup per row): the stop step tells
                items.append(
                    registration_model(r, wod.catalog.workshops.get(r.workshop_id), action=action)
                )
        self.json({"now": lifecycle.iso_z(now), "registrations": items})


class RegistrationAPIHandler(WodAPIHandler):
    async def get(self, registration_id):
        wod = await self.wod_ready()
        self.json(await self.model(wod, int(registration_id)))


class ClaimAPIHandler(WodAPIHandler):
    async def post(self, registration_id):
        wod = await self.wod_ready()
        data = self.body()
        worker = self.worker_of(data)
        ttl = self.seconds(data, "ttl", 300)
        rid = int(registration_id)
        async with wod.db.begin_write() as session:
            taken = await lifecycle.claim(session, rid, worker, ttl, utcnow())
            registration = await session.get(Registration, rid)
        if registration is None:
            raise web.HTTPError(404, f"No registration {rid}.")
        if not taken and registration.ended_at is not None:
            raise web.HTTPError(409, f"Registration {rid} has ended already.")
        if not taken:
            raise web.HTTPError(
                409, f"Registration {rid} is being processed by {registration.claimed_by}."
            )
        self.json(await self.model(wod, rid))


class ReleaseAPIHandler(WodAPIHandler):
    async def post(self, registration_id):
        wod = await self.wod_ready()
        worker = self.worker_of(self.body())
        async with wod.db.begin_write() as session:
            await lifecycle.release(session, int(registration_id), worker)
        self.json(await self.model(wod, int(registration_id)))


class ReminderAPIHandler(WodAPIHandler):
    async def post(self, registration_id):
        from ..mail import enqueue

        wod = await self.wod_ready()
        rid = int(registration_id)
        # the service's reminder_before: a second reminder only before a new end (extension)
        before = self.seconds(self.body(), "reminder_before", 3600.0, maximum=MAX_REMINDER)
        now = utcnow()
        async with wod.db.begin_write() as session:
            registration = await session.get(Registration, rid)
            if registration is None:
                raise web.HTTPError(404, f"No registration {rid}.")
            sent = await lifecycle.mark_reminded(session, rid, now, before)
            if sent:
                participant = await session.get(Participant, registration.participant_id)
                workshop = wod.catalog.workshops.get(registration.workshop_id)
                context = lifecycle.reminder_context(
                    participant,
                    registration,
                    workshop,
                    now=now,
                    hub_url=wod.hub_url,
                    home_url=wod.link("home"),
                )
                await enqueue(
                    session,
                    to=participant.email,
                    template="reminder",
                    context=context,
                    registration_id=rid,
                    # one per end time: an extension's new end gets its own
                    dedupe_key=f"reg:{rid}:reminder:{registration.expires_at.isoformat()}",
                )
                lifecycle.event(session, "reminder", rid, "lifecycle", now)
        if sent and wod.sender is not None:
            wod.sender.wake()
        self.json({"sent": sent})


class StepAPIHandler(WodAPIHandler):
    STEPS = ("begin", *lifecycle.END_STEPS)

    async def post(self, registration_id, step):
        if step not in self.STEPS:
            raise web.HTTPError(404, f"Unknown step {step!r}: one of {', '.join(self.STEPS)}.")
        wod = await self.wod_ready()
        data = self.body()
        worker = self.worker_of(data)
        ttl = self.seconds(data, "ttl", 300)
        retry_in = self.seconds(data, "retry_in", 60, maximum=24 * 3600)
        # "through": go on with the following hub-side steps up to this one, in this request
        # (each still records its own completion in its own transaction)
        through = data.get("through") or step
        if through not in self.STEPS or self.STEPS.index(through) < self.STEPS.index(step):
            raise web.HTTPError(400, f"through must be a step at or after {step!r}.")
        rid = int(registration_id)
        self.claim_ttl = ttl
        # fewer write transactions (SQLite has one writer): the claim and BEGIN share one,
        # the final e-mail and END another, when the chain covers both
        self.end_with_mail = through == "end"
        self.defer_stop = self.STEPS.index(through) >= self.STEPS.index("cleanup")
        registration, began = await self.renew_claim(wod, rid, worker, ttl, begin=step == "begin")
        workshop = wod.catalog.workshops.get(registration.workshop_id)
        needs_reset = bool(getattr(workshop, "reset", False))
        done_any = False
        if step == "begin":
            if registration.state in lifecycle.RUNNING_STATES:
                raise web.HTTPError(
                    409, f"Registration {rid} is not due to end ({registration.state})."
                )
            done_any = began
            step = lifecycle.next_step(registration, needs_reset=needs_reset)
            if through == "begin" or step is None:
                return self.json(
                    {"ok": True, "done": done_any, "registration": await self.model(wod, rid)}
                )
        while True:
            try:
                done = await getattr(self, f"step_{step}")(wod, registration, workshop, worker)
            except NotClaimed as e:
                raise web.HTTPError(409, str(e)) from None
            except web.HTTPError:
                raise
            except Exception as e:  # a hook, the file system, the mail context: recorded, retried
                self.log.warning("Lifecycle step %s of registration %s failed: %s", step, rid, e)
                async with wod.db.begin_write() as session:
                    await self.record_pending_stop(session, registration, worker)
                    await lifecycle.record_failure(
                        session,
                        rid,
                        worker,
                        step,
                        str(e) or e.__class__.__name__,
                        utcnow(),
                        retry_in,
                    )
                model = await self.model(wod, rid)
                return self.json(
                    {"ok": False, "step": step, "error": str(e), "registration": model}
                )
            done_any = done_any or done
            # the next step follows from the one just done: no need to read the row again
            setattr(registration, lifecycle.STEP_COLUMNS[step], registration.expires_at)
            if step == "final_mail" and getattr(self, "ended_with_mail", False):
                registration.ended_at = registration.expires_at
            following = lifecycle.next_step(registration, needs_reset=needs_reset)
            if (
                step == through
                or following is None
                or self.STEPS.index(following) > self.STEPS.index(through)
            ):
                return self.json(
                    {"ok": True, "done": done_any, "registration": await self.model(wod, rid)}
                )
            step = following

    def renewal(self) -> timedelta:
        """How long each recorded step extends the claim (the worker's ttl)."""
        return getattr(self, "claim_ttl", None) or timedelta(minutes=5)

    async def renew_claim(
        self, wod, rid: int, worker: str, ttl: timedelta, begin: bool = False
    ) -> tuple[Registration, bool]:
        """Take or renew the claim (409: another worker's); with ``begin``, also start the
        end path of a session that is due, in the same transaction."""
        began = False
        async with wod.db.begin_write() as session:
            now = utcnow()
            if not await lifecycle.claim(session, rid, worker, ttl, now):
                registration = await session.get(Registration, rid)
                if registration is None:
                    raise web.HTTPError(404, f"No registration {rid}.")
                if registration.ended_at is not None:
                    raise web.HTTPError(409, f"Registration {rid} has ended already.")
                raise web.HTTPError(
                    409, f"Registration {rid} is being processed by {registration.claimed_by}."
                )
            if begin:
                began = await lifecycle.begin_end(session, rid, worker, now, wod.seat_password_hash)
            registration = await session.get(Registration, rid, populate_existing=True)
        if registration is None:
            raise web.HTTPError(404, f"No registration {rid}.")
        return registration, began

    # ---- the steps (each idempotent) --------------------------------------------------
    async def step_begin(self, wod, registration, workshop, worker) -> bool:
        if registration.state in lifecycle.ENDING_STATES:
            return False
        async with wod.db.begin_write() as session:
            began = await lifecycle.begin_end(
                session, registration.id, worker, utcnow(), wod.seat_password_hash
            )
        if not began:
            raise web.HTTPError(
                409, f"Registration {registration.id} is not due to end ({registration.state})."
            )
        return True

    async def step_stop(self, wod, registration, workshop, worker) -> bool:
        user = _hub_user(self, registration.username)
        spawner = user.spawners.get("") if user is not None else None
        if spawner is not None and spawner.active:
            raise web.HTTPError(
                409, f"{registration.username}'s server is still running: stop it first."
            )
        if registration.stopped_at is not None:
            return False
        if getattr(self, "defer_stop", False):
            # nothing to undo: recorded in the next step's transaction (one write fewer)
            self.stop_pending = True
            return True
        async with wod.db.begin_write() as session:
            return await lifecycle.mark_step(
                session, registration.id, worker, "stop", utcnow(), renew=self.renewal()
            )

    async def record_pending_stop(self, session, registration, worker) -> None:
        if getattr(self, "stop_pending", False):
            await lifecycle.mark_step(session, registration.id, worker, "stop", utcnow())
            self.stop_pending = False

    async def step_cleanup(self, wod, registration, workshop, worker) -> bool:
        if registration.cleaned_at is not None:
            return False
        settings = self.settings_()
        home = await home_of(self, registration.username, _hub_user(self, registration.username))
        await run_workshop_hook(wod, workshop, "cleanup", registration, home, settings.hook_timeout)
        completion = None
        if home is not None:
            notebooks = getattr(workshop, "notebooks", ()) if workshop else ()
            completion = await asyncio.to_thread(lifecycle.completion_from_home, home, notebooks)
        async with wod.db.begin_write() as session:
            await self.record_pending_stop(session, registration, worker)
            return await lifecycle.mark_step(
                session,
                registration.id,
                worker,
                "cleanup",
                utcnow(),
                renew=self.renewal(),
                completion=completion,
            )

    async def step_reset(self, wod, registration, workshop, worker) -> bool:
        if registration.reset_at is not None:
            return False
        home = await home_of(self, registration.username, _hub_user(self, registration.username))
        await run_workshop_hook(
            wod, workshop, "reset", registration, home, self.settings_().hook_timeout
        )
        async with wod.db.begin_write() as session:
            return await lifecycle.mark_step(
                session, registration.id, worker, "reset", utcnow(), renew=self.renewal()
            )

    async def step_purge(self, wod, registration, workshop, worker) -> bool:
        if registration.purged_at is not None:
            return False
        settings = self.settings_()
        user = _hub_user(self, registration.username)
        home = await home_of(self, registration.username, user)
        if settings.kill_processes and registration.username:
            killed = await asyncio.to_thread(guard.kill_user_processes, registration.username)
            if killed:
                self.log.info(
                    "PURGE %s: killed %d leftover processes", registration.username, len(killed)
                )
        if settings.wipe_home and home is not None:
            await asyncio.to_thread(guard.wipe_home, home, registration.username)
        # the hub user goes before the seat: the next participant of this seat must not
        # inherit a cookie, an API token or an OAuth token of this one
        await delete_hub_user(self, registration.username, user)
        async with wod.db.begin_write() as session:
            # not claimed any more: mark_step raises and the release rolls back with it
            await release_seat(session, registration.id)
            return await lifecycle.mark_step(
                session, registration.id, worker, "purge", utcnow(), renew=self.renewal()
            )

    async def step_final_mail(self, wod, registration, workshop, worker) -> bool:
        settings = self.settings_()

        def badge_urls(badge: Badge) -> tuple[str, str]:
            return wod.link(f"wod/badge/{badge.public_id}"), wod.link(
                f"wod/badge/{badge.public_id}.svg"
            )

        mailed = registration.final_mail_at is None
        async with wod.db.begin_write() as session:
            await lifecycle.queue_end_mail(
                session,
                registration.id,
                worker,
                utcnow(),
                workshop=workshop,
                register_url=wod.link("login"),
                survey_url=self.authenticator.survey_url,
                levels=settings.levels,
                min_completion=settings.badge_min_completion,
                badge_url_for=badge_urls,
                renew=self.renewal(),
            )
            if getattr(self, "end_with_mail", False):
                self.ended_with_mail = await lifecycle.finish(
                    session, registration.id, worker, utcnow()
                )
        if mailed and wod.sender is not None:
            wod.sender.wake()
        return mailed

    async def step_end(self, wod, registration, workshop, worker) -> bool:
        needs_reset = bool(getattr(workshop, "reset", False))
        missing = lifecycle.next_step(registration, needs_reset=needs_reset)
        if missing not in (None, "end"):
            raise web.HTTPError(
                409, f"Registration {registration.id} cannot end before its {missing} step."
            )
        async with wod.db.begin_write() as session:
            return await lifecycle.finish(session, registration.id, worker, utcnow())


class FailureAPIHandler(WodAPIHandler):
    """A service-side part of a step failed (e.g. the server would not stop): record it
    like a hub-side failure (the worker takes the claim first if it is free)."""

    async def post(self, registration_id):
        wod = await self.wod_ready()
        data = self.body()
        worker = self.worker_of(data)
        step = str(data.get("step") or "unknown")[:40]
        error = str(data.get("error") or "failed")
        retry_in = self.seconds(data, "retry_in", 60, maximum=24 * 3600)
        rid = int(registration_id)
        async with wod.db.begin_write() as session:
            now = utcnow()
            if not await lifecycle.claim(session, rid, worker, timedelta(seconds=60), now):
                raise web.HTTPError(
                    409, f"Registration {rid} is being processed by another worker."
                )
            await lifecycle.record_failure(session, rid, worker, step, error, now, retry_in)
        self.json(await self.model(wod, rid))


class UserEndAPIHandler(WodAPIHandler):
    async def post(self, username):
        wod = await self.wod_ready()
        reason = str(self.body().get("reason") or "ended by the lifecycle service")
        now = utcnow()
        async with wod.db.begin_write() as session:
            registration = await lifecycle.live_registration_of(session, username)
            if registration is None:
                raise web.HTTPError(404, f"{username} holds no running workshop session.")
            ended = await lifecycle.end_soon(
                session, registration.id, now, reason, actor=self.current_user.name
            )
        self.json({"ended": ended, "registration_id": registration.id})


class EventAPIHandler(WodAPIHandler):
    async def post(self):
        wod = await self.wod_ready()
        data = self.body()
        kind = data.get("kind")
        if not isinstance(kind, str) or not kind or len(kind) > 50:
            raise web.HTTPError(
                400,
                'Send {"kind": "<event kind, 1-50 characters>", "username": ..., "detail": {...}}.',
            )
        detail = data.get("detail") or {}
        if not isinstance(detail, dict):
            raise web.HTTPError(400, "detail must be a JSON object.")
        username = data.get("username")
        async with wod.db.begin_write() as session:
            registration = (
                await lifecycle.live_registration_of(session, username) if username else None
            )
            rid = registration.id if registration is not None else None
            lifecycle.event(
                session, kind, rid, self.current_user.name, utcnow(), username=username, **detail
            )
        self.json({"registration_id": rid}, status=201)


class AdminExtendAPIHandler(WodAPIHandler):
    required_scopes = ADMIN_SCOPES
    what = "the workshop admin API"

    async def post(self, registration_id):
        wod = await self.wod_ready()
        minutes = self.body().get("minutes")
        if (
            not isinstance(minutes, int)
            or isinstance(minutes, bool)
            or not 0 < minutes <= 7 * 24 * 60
        ):
            raise web.HTTPError(400, 'Send {"minutes": N} with N between 1 and 10080 (a week).')
        rid = int(registration_id)
        async with wod.db.begin_write() as session:
            if await session.get(Registration, rid) is None:
                raise web.HTTPError(404, f"No registration {rid}.")
            try:
                await lifecycle.extend(
                    session,
                    rid,
                    timedelta(minutes=minutes),
                    utcnow(),
                    by_participant=False,
                    actor=f"admin:{self.current_user.name}",
                )
            except (TooLate, NotAllowed) as e:
                raise web.HTTPError(409, str(e)) from None
        self.json(await self.model(wod, rid))


def get_handlers():
    base = r"/api/wod/lifecycle"
    reg = base + r"/registrations/(\d+)"
    return [
        (base + r"/due", DueAPIHandler),
        (reg, RegistrationAPIHandler),
        (reg + r"/claim", ClaimAPIHandler),
        (reg + r"/release", ReleaseAPIHandler),
        (reg + r"/reminder", ReminderAPIHandler),
        (reg + r"/steps/([a-z_]+)", StepAPIHandler),
        (reg + r"/failure", FailureAPIHandler),
        (base + r"/users/([^/]+)/end", UserEndAPIHandler),
        (base + r"/events", EventAPIHandler),
        (r"/api/wod/registrations/(\d+)/extend", AdminExtendAPIHandler),
    ]


def _hub_user(handler, username: str | None):
    """The hub user, through the handler's per-request cache when it has one.
    A function, not a method: admin actions call the step functions with their own
    handler (see admin_actions.run_steps)."""
    lookup = getattr(handler, "hub_user", None)
    if lookup is not None:
        return lookup(username)
    return handler.find_user(username) if username else None
