"""The workshop admin pages inside the hub (``/hub/wod/admin/...``).

Every route checks the admin scopes in ``prepare`` (so no method can forget it):
anonymous visitors are sent to the login page (GET) or refused (POST), signed-in
users without ``custom:wod:admin`` / ``admin:users`` get 403. Mutations are POST
with ``_xsrf`` (JupyterHub checks it before ``prepare`` returns); actions on
registrations go through a confirmation page, then redirect to the list with the
result of each row (post/redirect/get).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from urllib.parse import urlencode, urlparse

from tornado import web

from .. import admin_actions, charts, reports
from ..exports import registrations_csv_chunks
from ..orm import State
from .base import ADMIN_SCOPES, WodHandler, require_any_scope

WHAT = "the workshop admin pages"
RESULT_TTL = 600  # seconds a result stays viewable after the redirect


class _ResultStore:
    """Results of recent actions, shown once after the redirect; bounded, per admin."""

    def __init__(self, size: int = 200):
        self.size = size
        self._items: OrderedDict[str, tuple[str, float, dict]] = OrderedDict()

    def put(self, owner: str, result: dict) -> str:
        key = secrets.token_urlsafe(12)
        self._items[key] = (owner, time.monotonic(), result)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return key

    def get(self, owner: str, key: str) -> dict | None:
        item = self._items.get(key)
        if item is None or item[0] != owner or time.monotonic() - item[1] > RESULT_TTL:
            return None
        return item[2]


RESULTS = _ResultStore()


def actor_of(handler) -> str:
    user = handler.current_user
    kind = "service" if getattr(user, "kind", "user") == "service" else "admin"
    return f"{kind}:{user.name}"


class LifecycleHost:
    """What the lifecycle's step functions need of a handler besides JupyterHub's
    (``find_user``, ``stop_single_user``, ``log``...): see :func:`admin_actions.end_path`."""

    def settings_(self):
        return self.authenticator.wod.lifecycle


class AdminPageHandler(LifecycleHost, WodHandler):
    async def prepare(self):
        await super().prepare()
        if self._finished:
            return
        if self.current_user is None and self.request.method in ("GET", "HEAD"):
            self.redirect(self.get_login_url() + "?" + urlencode({"next": self.request.uri}))
            return
        require_any_scope(self, ADMIN_SCOPES, WHAT)

    @property
    def admin_url(self) -> str:
        return self.hub.base_url + "wod/admin"

    def safe_next(self, value: str, default: str) -> str:
        """Only our own admin pages are valid targets of a redirect."""
        parsed = urlparse(value or "")
        if parsed.scheme or parsed.netloc or not parsed.path.startswith(self.admin_url):
            return default
        return value

    def flash_result(self) -> dict | None:
        key = self.get_argument("result", default="")
        return RESULTS.get(self.current_user.name, key) if key else None

    def redirect_with_result(self, target: str, result: dict) -> None:
        key = RESULTS.put(self.current_user.name, result)
        sep = "&" if "?" in target else "?"
        self.redirect(f"{target}{sep}result={key}")

    async def render_admin(self, template: str, **ns) -> None:
        wod = await self.wod_ready()
        html = await self.render_template(
            template,
            wod_admin_url=self.admin_url,
            wod_hub_admin_url=self.hub.base_url + "admin",
            wod_brand=self.authenticator.brand_name,
            wod_flash=ns.pop("flash", None) or self.flash_result(),
            wod_catalog=wod.catalog,
            **ns,
        )
        self.set_header("Cache-Control", "no-store")
        self.finish(html)


class AdminHomeHandler(AdminPageHandler):
    """Per workshop: seats, range, registrations today/total, completion, open/closed; charts."""

    async def get(self):
        wod = await self.wod_ready()
        async with wod.db.session() as session:
            workshops = await reports.workshop_stats(session, wod.catalog)
            totals = await reports.totals(session)
            days, per_day = await reports.registrations_per_day(session, days=30)
        per_day_svg = charts.stacked_bars_svg(
            [d.strftime("%m-%d") for d in days],
            per_day or {"registrations": [0] * len(days)},
            title="Registrations per day (last 30 days, UTC)",
            element_id="wod-chart-per-day",
        )
        per_workshop_svg = charts.horizontal_bars_svg(
            sorted(((w.id, w.registrations_total) for w in workshops), key=lambda x: -x[1]),
            title="Registrations per workshop (all time)",
            element_id="wod-chart-per-workshop",
        )
        await self.render_admin(
            "wod/admin.html",
            workshops=workshops,
            totals=totals,
            per_day_svg=per_day_svg,
            per_workshop_svg=per_workshop_svg,
        )


class WorkshopToggleHandler(AdminPageHandler):
    """POST open=1|0: open or close a workshop for registration."""

    async def post(self, workshop_id: str):
        wod = await self.wod_ready()
        wanted = self.get_body_argument("open", default="")
        if wanted not in ("0", "1"):
            raise web.HTTPError(
                400, "Send open=1 to open the workshop for registration or open=0 to close it."
            )
        result = await admin_actions.set_registration_open(
            wod, workshop_id, wanted == "1", actor=actor_of(self)
        )
        self.redirect_with_result(self.admin_url, result)


def _filters(handler) -> tuple[reports.RegistrationFilter, dict]:
    args = {
        name: handler.get_argument(name, default="")
        for name in reports.RegistrationFilter.__dataclass_fields__
    }
    try:
        return reports.RegistrationFilter.parse(args), {}
    except reports.FilterError as e:
        clean = {k: v for k, v in args.items() if k not in e.errors}
        return reports.RegistrationFilter.parse(clean), e.errors


class RegistrationsHandler(AdminPageHandler):
    """Search, filter and page through registrations; act on one or many."""

    async def get(self):
        wod = await self.wod_ready()
        flt, errors = _filters(self)
        async with wod.db.session() as session:
            page = await reports.list_registrations(session, flt)
        flash = self.flash_result()
        by_id = {r["id"]: r for r in (flash or {}).get("results", []) if r.get("id") is not None}
        await self.render_admin(
            "wod/admin_registrations.html",
            flt=flt,
            filter_errors=errors,
            page=page,
            statuses=reports.STATUS_CHOICES,
            actions=admin_actions.ACTIONS,
            row_results=by_id,
            flash=flash,
            self_url=self.request.uri.split("?")[0] + "?" + urlencode(flt.query_args()),
            page_url=lambda n: "?" + urlencode(flt.query_args(page=n)),
            csv_url=self.admin_url
            + "/registrations.csv?"
            + urlencode(flt.query_args(page="", per_page="")),
            states=State,
        )


class RegistrationActionHandler(AdminPageHandler):
    """POST action + ids: show a confirmation; POST again with confirm=yes: run it."""

    async def post(self):
        wod = await self.wod_ready()
        back = self.safe_next(
            self.get_body_argument("next", default=""), self.admin_url + "/registrations"
        )
        row_action = self.get_body_argument("row_action", default="")
        if row_action:
            action, _, raw_id = row_action.partition(":")
            raw_ids = [raw_id]
        else:
            action = self.get_body_argument("action", default="")
            raw_ids = self.get_body_arguments("ids")
        spec = admin_actions.ACTIONS.get(action)
        if spec is None:
            raise web.HTTPError(
                400, f"Unknown action {action!r}: choose one of {', '.join(admin_actions.ACTIONS)}."
            )
        try:
            ids = sorted({int(x) for x in raw_ids if x.strip()})
        except ValueError:
            raise web.HTTPError(
                400, "Registration ids are numbers; reload the list and select again."
            ) from None
        if not ids:
            raise web.HTTPError(
                400,
                "Select at least one registration (tick the boxes in the list), then choose the action.",
            )
        if len(ids) > reports.MAX_PER_PAGE:
            raise web.HTTPError(
                400, f"Act on at most {reports.MAX_PER_PAGE} registrations at once."
            )
        options, option_error = admin_actions.parse_options(action, self.get_body_argument)
        if self.get_body_argument("confirm", default="") != "yes" or option_error:
            async with wod.db.session() as session:
                page = await reports.list_registrations(
                    session,
                    reports.RegistrationFilter(ids=tuple(ids), per_page=reports.MAX_PER_PAGE),
                )
            return await self.render_admin(
                "wod/admin_confirm.html",
                action=action,
                spec=spec,
                rows=page.rows,
                ids=ids,
                options=options,
                option_error=option_error,
                next_url=back,
            )
        results = await admin_actions.run(wod, self, action, ids, actor=actor_of(self), **options)
        self.redirect_with_result(back, admin_actions.summary(action, results))


class RegistrationsCSVHandler(AdminPageHandler):
    async def get(self):
        wod = await self.wod_ready()
        flt, errors = _filters(self)
        if errors:
            raise web.HTTPError(400, "; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", 'attachment; filename="wod-registrations.csv"')
        self.set_header("Cache-Control", "no-store")
        async with wod.db.session() as session:
            async for chunk in registrations_csv_chunks(reports.iter_registrations(session, flt)):
                self.write(chunk)
                await self.flush()
        self.finish()


class OutboxHandler(AdminPageHandler):
    async def get(self):
        wod = await self.wod_ready()
        async with wod.db.session() as session:
            messages = await reports.outbox_messages(session)
            totals = await reports.totals(session)
        await self.render_admin("wod/admin_outbox.html", messages=messages, totals=totals)


class OutboxRetryHandler(AdminPageHandler):
    async def post(self):
        wod = await self.wod_ready()
        single = self.get_body_argument("id", default="")
        raw = [single] if single else self.get_body_arguments("ids")
        try:
            ids = sorted({int(x) for x in raw if x.strip()})
        except ValueError:
            raise web.HTTPError(
                400, "Message ids are numbers; reload the outbox and select again."
            ) from None
        if not ids:
            raise web.HTTPError(400, "Select at least one e-mail to retry.")
        result = await admin_actions.retry_emails(wod, ids, actor=actor_of(self))
        self.redirect_with_result(self.admin_url + "/outbox", result)


def admin_handlers() -> list[tuple]:
    return [
        (r"/wod/admin/?", AdminHomeHandler),
        (r"/wod/admin/workshops/([^/]+)/registration", WorkshopToggleHandler),
        (r"/wod/admin/registrations/?", RegistrationsHandler),
        (r"/wod/admin/registrations/action", RegistrationActionHandler),
        (r"/wod/admin/registrations\.csv", RegistrationsCSVHandler),
        (r"/wod/admin/outbox/?", OutboxHandler),
        (r"/wod/admin/outbox/retry", OutboxRetryHandler),
    ]
