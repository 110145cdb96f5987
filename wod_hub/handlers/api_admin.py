"""The admin REST API under ``/hub/api/wod/admin/...`` (what ``wod-hub`` ops commands call).

Token or cookie auth like every JupyterHub API; every route requires
``custom:wod:admin`` or ``admin:users`` (checked in ``prepare``). POSTs carry JSON;
with cookie auth JupyterHub also wants the ``_xsrf`` token (header ``X-XSRFToken``).

    GET  stats                      totals + per-workshop figures
    GET  workshops                  per-workshop figures
    POST workshops/{id}             {"registration_open": true|false}
    GET  workshops/{id}/sample      the workshop rendered for a sample student (for exports)
    GET  seats                      the seat pool per workshop
    GET  registrations              filters: workshop, status, email, q, since, until, page, per_page;
                                    format=csv for the CSV export (every matching row)
    POST actions                    {"action": ..., "registrations": [ids]} or
                                    {"action": ..., "workshop": id, "students": [numbers]}
    GET  outbox                     e-mails not sent yet (pending, sending, failed)
    POST outbox/{id}/retry
"""

from __future__ import annotations

import asyncio
import base64
import json

from jupyterhub.apihandlers import APIHandler
from tornado import web

from .. import admin_actions, reports
from ..exports import SAMPLE_PASSWORD, registrations_csv_chunks
from ..seats import seat_stats
from .admin import LifecycleHost, actor_of
from .base import ADMIN_SCOPES, WodMixin, require_any_scope

WHAT = "the workshop admin API"


class AdminAPIHandler(LifecycleHost, WodMixin, APIHandler):
    async def prepare(self):
        await super().prepare()
        if self._finished:
            return
        require_any_scope(self, ADMIN_SCOPES, WHAT)

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


class StatsAPIHandler(AdminAPIHandler):
    async def get(self):
        wod = await self.wod_ready()
        async with wod.db.session() as session:
            totals = await reports.totals(session)
            workshops = await reports.workshop_stats(session, wod.catalog)
        self.json({"totals": totals.to_json(), "workshops": [w.to_json() for w in workshops]})


class WorkshopsAPIHandler(AdminAPIHandler):
    async def get(self):
        wod = await self.wod_ready()
        async with wod.db.session() as session:
            workshops = await reports.workshop_stats(session, wod.catalog)
        self.json([w.to_json() for w in workshops])


class WorkshopAPIHandler(AdminAPIHandler):
    async def post(self, workshop_id: str):
        wod = await self.wod_ready()
        value = self.body().get("registration_open")
        if not isinstance(value, bool):
            raise web.HTTPError(
                400, 'Send {"registration_open": true} or {"registration_open": false}.'
            )
        result = await admin_actions.set_registration_open(
            wod, workshop_id, value, actor=actor_of(self)
        )
        if result["failed"]:
            raise web.HTTPError(404, result["message"])
        self.json(result)


class WorkshopSampleAPIHandler(AdminAPIHandler):
    """The files a sample student receives (base64), with a placeholder password."""

    async def get(self, workshop_id: str):
        from ..personalize import RenderError, render_workshop_files, sample_context

        wod = await self.wod_ready()
        workshop = wod.catalog.workshops.get(workshop_id)
        if workshop is None:
            raise web.HTTPError(
                404,
                f"No workshop {workshop_id!r} in the catalog; see GET /hub/api/wod/admin/workshops.",
            )
        raw = self.get_argument("student", default="")
        number = workshop.student_range[0]
        if raw:
            if not raw.isdigit() or not workshop.owns(int(raw)):
                lo, hi = workshop.student_range
                raise web.HTTPError(
                    400, f"student must be a number in {workshop_id}'s range {lo}-{hi}."
                )
            number = int(raw)
        ctx = sample_context(workshop, number, password=SAMPLE_PASSWORD, hub_url=wod.hub_url)
        try:
            files = await asyncio.to_thread(
                render_workshop_files, workshop, ctx, wod.catalog.variables
            )
        except RenderError as e:
            raise web.HTTPError(
                422, f"{workshop_id} does not render: {e}. Run `wod-hub check` on its folder."
            ) from None
        self.json(
            {
                "workshop": workshop_id,
                "name": workshop.name,
                "student": number,
                "notebooks": list(workshop.notebooks),
                "files": {
                    path: base64.b64encode(data).decode("ascii") for path, data in files.items()
                },
            }
        )


class SeatsAPIHandler(AdminAPIHandler):
    async def get(self):
        wod = await self.wod_ready()
        async with wod.db.session() as session:
            stats = await seat_stats(session)
        self.json({wid: {**s, "range": list(s["range"])} for wid, s in stats.items()})


class RegistrationsAPIHandler(AdminAPIHandler):
    async def get(self):
        wod = await self.wod_ready()
        args = {
            name: self.get_argument(name, default="")
            for name in reports.RegistrationFilter.__dataclass_fields__
        }
        try:
            flt = reports.RegistrationFilter.parse(args)
        except reports.FilterError as e:
            raise web.HTTPError(400, str(e)) from None
        if self.get_argument("format", default="json") == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", 'attachment; filename="wod-registrations.csv"')
            async with wod.db.session() as session:
                async for chunk in registrations_csv_chunks(
                    reports.iter_registrations(session, flt)
                ):
                    self.write(chunk)
                    await self.flush()
            return self.finish()
        async with wod.db.session() as session:
            page = await reports.list_registrations(session, flt)
        self.json(
            {
                "total": page.total,
                "page": page.page,
                "per_page": page.per_page,
                "pages": page.pages,
                "registrations": [r.to_json() for r in page.rows],
            }
        )


class ActionsAPIHandler(AdminAPIHandler):
    async def post(self):
        wod = await self.wod_ready()
        data = self.body()
        action = str(data.get("action", "")).lower()
        known = (*admin_actions.ACTIONS, "create")
        if action not in known:
            raise web.HTTPError(400, f"Unknown action {action!r}: use one of {', '.join(known)}.")
        minutes = data.get("minutes")
        if minutes is not None and (not isinstance(minutes, int) or not 1 <= minutes <= 24 * 60):
            raise web.HTTPError(400, "minutes must be a whole number between 1 and 1440.")
        options = {"minutes": minutes} if action == "extend" else {}
        actor = actor_of(self)
        if "registrations" in data:
            ids = data["registrations"]
            if action == "create":
                raise web.HTTPError(
                    400, 'create takes {"workshop": id, "students": [numbers]}, not registrations.'
                )
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids) or not ids:
                raise web.HTTPError(
                    400, "registrations must be a non-empty list of registration ids."
                )
            results = await admin_actions.run(wod, self, action, ids, actor=actor, **options)
        else:
            workshop_id = data.get("workshop")
            students = data.get("students")
            if not isinstance(workshop_id, str) or not isinstance(students, list) or not students:
                raise web.HTTPError(
                    400,
                    'Send {"action": ..., "workshop": "WKSHP-...", "students": [121, 122]} or {"action": ..., "registrations": [ids]}.',
                )
            if (
                not all(isinstance(n, int) and n >= 0 for n in students)
                or len(students) > reports.MAX_PER_PAGE
            ):
                raise web.HTTPError(
                    400, f"students must be at most {reports.MAX_PER_PAGE} student numbers."
                )
            results = await admin_actions.run_for_students(
                wod, self, action, workshop_id, students, actor=actor, **options
            )
        summary = admin_actions.summary(action, results)
        self.json(summary, status=200)


class OutboxAPIHandler(AdminAPIHandler):
    async def get(self):
        wod = await self.wod_ready()
        async with wod.db.session() as session:
            messages = await reports.outbox_messages(session)
        self.json([m.to_json() for m in messages])


class OutboxRetryAPIHandler(AdminAPIHandler):
    async def post(self, message_id: str):
        wod = await self.wod_ready()
        result = await admin_actions.retry_emails(wod, [int(message_id)], actor=actor_of(self))
        if result["failed"]:
            raise web.HTTPError(409, result["errors"][0])
        self.json(result)


def api_admin_handlers() -> list[tuple]:
    return [
        (r"/api/wod/admin/stats", StatsAPIHandler),
        (r"/api/wod/admin/workshops", WorkshopsAPIHandler),
        (r"/api/wod/admin/workshops/([^/]+)", WorkshopAPIHandler),
        (r"/api/wod/admin/workshops/([^/]+)/sample", WorkshopSampleAPIHandler),
        (r"/api/wod/admin/seats", SeatsAPIHandler),
        (r"/api/wod/admin/registrations", RegistrationsAPIHandler),
        (r"/api/wod/admin/actions", ActionsAPIHandler),
        (r"/api/wod/admin/outbox", OutboxAPIHandler),
        (r"/api/wod/admin/outbox/(\d+)/retry", OutboxRetryAPIHandler),
    ]
