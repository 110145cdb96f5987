"""The participant's side of a time-bombed session.

    GET  /hub/api/wod/me             time left, extension available, ...
    POST /hub/api/wod/me/extend      once, by the workshop's ``extension`` (``_xsrf`` header)
    POST /hub/api/wod/me/unregister  end now: state unregistered, then the usual end path
    GET  /hub/wod/ended              "your workshop has ended" (never an error page)
    GET  /hub/wod/badge/<public_id>  public, shareable badge page (first name only)
    GET  /hub/wod/badge/<public_id>.svg  the badge image

POSTs need the participant's own ``delete:servers!user=<name>`` scope (their browser
session has it; the notebook server's token does not, so code in a notebook cannot
end or extend the session).
"""

from __future__ import annotations

import json

from jupyterhub.apihandlers import APIHandler
from sqlalchemy import select
from tornado import web

from .. import lifecycle
from ..lifecycle import NotAllowed, TooLate
from ..orm import Badge, Participant, Registration, State, utcnow
from .base import WodHandler, WodMixin

# signed (hub cookie secret), HttpOnly: which registration this browser last had, so a
# returning participant is told their workshop ended instead of just seeing the login page
SESSION_COOKIE = "wod-registration"
COOKIE_DAYS = 30
ENDED = (
    "Your workshop session has ended. Thank you for taking part! Your results and badge are on "
    "their way by e-mail. You can register for another workshop below."
)


def _holds(handler, scope: str, username: str) -> bool:
    held = handler.expanded_scopes or set()
    return scope in held or f"{scope}!user={username}" in held


def remember_registration(handler, registration_id: int) -> None:
    handler.set_signed_cookie(
        SESSION_COOKIE,
        str(registration_id),
        expires_days=COOKIE_DAYS,
        path=handler.hub.base_url,
        httponly=True,
        samesite="Lax",
    )


async def remembered_registration(handler, wod) -> Registration | None:
    raw = handler.get_signed_cookie(SESSION_COOKIE, max_age_days=COOKIE_DAYS)
    if not raw:
        return None
    try:
        registration_id = int(raw)
    except ValueError:
        return None
    async with wod.db.session() as session:
        return await session.get(Registration, registration_id)


async def ended_notice(handler) -> str | None:
    """The login page's notice for a participant whose session is over: known from the
    signed cookie, or from ``next`` pointing at a student's server whose seat is no
    longer held by a running session."""
    wod = await handler.wod_ready()
    registration = await remembered_registration(handler, wod)
    if registration is not None and registration.state not in lifecycle.RUNNING_STATES:
        return ENDED
    target = handler.get_argument("next", "")
    username = lifecycle.username_in_path(target)
    if username is None:
        return None
    async with wod.db.session() as session:
        running = await lifecycle.live_registration_of(session, username)
        ever = (
            await session.execute(
                select(Registration.id).where(Registration.username == username).limit(1)
            )
        ).first()
    if ever is not None and (running is None or running.state not in lifecycle.RUNNING_STATES):
        return ENDED
    return None


class ParticipantAPIHandler(WodMixin, APIHandler):
    """Acts on the current user's running registration."""

    def json(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data, default=str))

    async def running_registration(self, session) -> Registration:
        user = self.current_user
        if user is None:
            raise web.HTTPError(403, "Sign in to see your workshop session.")
        if getattr(user, "kind", "user") != "user":
            raise web.HTTPError(400, "Only participants have a workshop session.")
        registration = await lifecycle.live_registration_of(session, user.name)
        if registration is None or registration.state not in lifecycle.RUNNING_STATES:
            raise web.HTTPError(404, "You have no running workshop session.")
        return registration

    def require_own(self, scope: str) -> None:
        if not _holds(self, scope, self.current_user.name):
            raise web.HTTPError(403, "Use this from your own browser session (the hub home page).")

    def model(self, wod, registration: Registration) -> dict:
        now = utcnow()
        workshop = wod.catalog.workshops.get(registration.workshop_id)
        extension = getattr(workshop, "extension", None)
        extension_minutes = int(extension.total_seconds() // 60) if extension else 0
        return {
            "username": registration.username,
            "workshop_id": registration.workshop_id,
            "workshop_name": getattr(workshop, "name", registration.workshop_id),
            "state": registration.state,
            "expires_at": lifecycle.iso_z(registration.expires_at),
            "seconds_left": max(0, int((registration.expires_at - now).total_seconds())),
            "extension_minutes": extension_minutes,
            "can_extend": extension_minutes > 0 and not registration.extended_by_participant,
            "extended": registration.extended_by_participant,
            "ended_url": wod.link("wod/ended"),
        }


class MeAPIHandler(ParticipantAPIHandler):
    async def get(self):
        wod = await self.wod_ready()
        async with wod.db.session() as session:
            registration = await self.running_registration(session)
        if not self.get_auth_token():  # a browser (cookie) session
            remember_registration(self, registration.id)
        self.json(self.model(wod, registration))


class MeExtendAPIHandler(ParticipantAPIHandler):
    async def post(self):
        wod = await self.wod_ready()
        self.require_own("delete:servers")
        async with wod.db.begin_write() as session:
            registration = await self.running_registration(session)
            workshop = wod.catalog.workshops.get(registration.workshop_id)
            extension = getattr(workshop, "extension", None)
            if not extension:
                raise web.HTTPError(409, "This workshop cannot be extended.")
            try:
                registration = await lifecycle.extend(
                    session,
                    registration.id,
                    extension,
                    utcnow(),
                    by_participant=True,
                    actor="participant",
                )
            except (TooLate, NotAllowed) as e:
                raise web.HTTPError(409, str(e)) from None
        self.json(self.model(wod, registration))


class MeUnregisterAPIHandler(ParticipantAPIHandler):
    async def post(self):
        wod = await self.wod_ready()
        self.require_own("delete:servers")
        async with wod.db.begin_write() as session:
            registration = await self.running_registration(session)
            done = await lifecycle.unregister(
                session, registration.id, utcnow(), wod.seat_password_hash
            )
        if not done:
            raise web.HTTPError(409, "Your session is already ending.")
        remember_registration(self, registration.id)
        if not self.get_auth_token():  # a browser (cookie) session
            self.clear_login_cookie()  # signed out now, not at the next auth refresh
        self.json({"state": State.unregistered.value, "ended_url": wod.link("wod/ended")})


class EndedHandler(WodHandler):
    """Where a participant lands when the session is over (countdown at zero,
    unregister, a stale bookmark)."""

    async def get(self):
        wod = await self.wod_ready()
        registration = await remembered_registration(self, wod)
        workshop = None
        if registration is not None:
            if (
                registration.state in lifecycle.RUNNING_STATES
                and registration.expires_at > utcnow()
            ):
                registration = None  # still running: do not claim it ended
            else:
                workshop = wod.catalog.workshops.get(registration.workshop_id)
        html = await self.render_template(
            "wod/ended.html",
            registration=registration,
            workshop_name=getattr(workshop, "name", None)
            or (registration.workshop_id if registration else None),
            register_url=self.settings["login_url"],
            survey_url=self.authenticator.survey_url,
            brand=self.authenticator.brand_name,
        )
        self.set_header("Cache-Control", "no-store")
        self.finish(html)


class BadgeHandler(WodHandler):
    """Public badge pages: nothing personal beyond the first name."""

    async def load(self, public_id: str):
        wod = await self.wod_ready()
        async with wod.db.session() as session:
            row = (
                await session.execute(
                    select(Badge, Participant.first_name, Participant.id)
                    .join(Participant, Participant.id == Badge.participant_id)
                    .where(Badge.public_id == public_id)
                )
            ).first()
            if row is None:
                raise web.HTTPError(404, "There is no such badge. Check the link you were given.")
            badge, first_name, participant_id = row
            settings = wod.lifecycle
            completed = await lifecycle.completed_workshops(
                session, participant_id, settings.badge_min_completion
            )
        level = next((lvl for lvl in settings.levels if lvl.name == badge.badge), None)
        names = [getattr(wod.catalog.workshops.get(w), "name", w) for w in completed]
        return wod, badge, first_name, level, names

    async def get(self, public_id: str, ext: str | None = None):
        wod, badge, first_name, level, workshops = await self.load(public_id)
        ns = {
            "badge": badge,
            "first_name": first_name,
            "threshold": level.threshold if level else len(workshops),
            "workshops": workshops,
            "image_url": wod.link(f"wod/badge/{badge.public_id}.svg"),
            "page_url": wod.link(f"wod/badge/{badge.public_id}"),
            "register_url": self.settings["login_url"],
            "brand": self.authenticator.brand_name,
        }
        if ext == ".svg":
            self.set_header("Content-Type", "image/svg+xml")
            self.set_header("Cache-Control", "public, max-age=86400")
            return self.finish(await self.render_template("wod/badge.svg", **ns))
        self.finish(await self.render_template("wod/badge.html", **ns))


def get_handlers():
    return [
        (r"/api/wod/me", MeAPIHandler),
        (r"/api/wod/me/extend", MeExtendAPIHandler),
        (r"/api/wod/me/unregister", MeUnregisterAPIHandler),
        (r"/wod/ended", EndedHandler),
        (r"/wod/badge/([A-Za-z0-9_\-]+?)(\.svg)?", BadgeHandler),
    ]
