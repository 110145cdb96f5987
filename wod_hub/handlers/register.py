"""POST /hub/wod/register: validate, take a seat, create the student, queue the e-mail."""

from __future__ import annotations

from .. import seats
from ..catalog_view import seat_rows
from ..outbox import enqueue_sync
from ..registration import AlreadyRegistered, FormError, RegistrationForm, register_sync
from .login import REGISTRATION_FIELDS, WodLoginHandler


class RegisterHandler(WodLoginHandler):
    async def get(self):
        self.redirect(self.settings["login_url"])

    async def _form_page(
        self, status: int, form: dict, errors: dict | None = None, notice: str | None = None
    ):
        self.set_status(status)
        html = await self._render(wod_form=form, wod_errors=errors or {}, wod_notice=notice)
        self.finish(html)

    async def post(self):
        wod = await self.wod_ready()
        auth = self.authenticator
        data = self.form_data(*REGISTRATION_FIELDS)
        shown = {k: v for k, v in data.items() if k != "terms"}

        retry = wod.ip_limiter.hit(self.client_ip)
        if retry is not None:
            return await self._form_page(429, shown, notice=self.too_many(retry, "registrations"))
        try:
            form = RegistrationForm.parse(
                data,
                workshop_ids=[w.id for w in wod.catalog.workshops.values() if w.active],
                denied_domains=auth.denied_email_domains,
                require_company=auth.require_company,
            )
        except FormError as e:
            return await self._form_page(400, shown, e.errors)
        retry = wod.email_limiter.hit(form.email)
        if retry is not None:
            return await self._form_page(
                429, shown, notice=self.too_many(retry, "registrations for this address")
            )

        workshop = wod.catalog.workshops[form.workshop_id]
        client_ip = self.client_ip
        # queue_welcome and transaction run in a worker thread on SQLite (db.run_write):
        # they touch only the session and plain values, never the request

        def queue_welcome(session, result):
            enqueue_sync(
                session,
                to=result.email,
                template="welcome",
                context=self.welcome_context(wod, workshop, form, result),
                registration_id=result.registration_id,
                dedupe_key=f"reg:{result.registration_id}:welcome",
            )

        def transaction(session):
            result = register_sync(
                session,
                form,
                duration=workshop.duration,
                one_per_email_overall=auth.one_registration_per == "email",
                client_ip=client_ip,
                password_hash_for=wod.seat_password_hash,
                on_registered=queue_welcome,
            )
            return result, seat_rows(session)  # the login page's figures, as committed

        try:
            result, rows = await wod.db.run_write(transaction)
        except seats.WorkshopFull:
            return await self._form_page(
                409,
                shown,
                {
                    "workshop": f"{workshop.name} is full right now. Try again later or pick another workshop."
                },
            )
        except seats.RegistrationClosed:
            return await self._form_page(
                409,
                shown,
                {"workshop": f"Registration for {workshop.name} is closed at the moment."},
            )
        except AlreadyRegistered as e:
            name = (
                wod.catalog.workshops[e.workshop_id].name
                if e.workshop_id in wod.catalog.workshops
                else e.workshop_id
            )
            return await self._form_page(
                409,
                shown,
                {
                    "email": f"This address is already registered for {name}. Use 'Lost my link?' to get a new login link."
                },
            )

        wod.seats_changed(rows)
        if wod.sender is not None:
            wod.sender.wake()
        password = wod.seat_password(workshop.id, result.student_number, result.seat_generation)
        html = await self.render_template(
            "wod/registered.html",
            workshop=workshop,
            result=result,
            password=password,
            login_url=self.settings["login_url"],
            recover_url=self.hub.base_url + "wod/recover",
        )
        self.set_header("Cache-Control", "no-store")
        self.finish(html)

        # the hub user (admin panel, group per workshop), at the next quiet moment
        wod.hub_users.add(
            self,
            {"name": result.username, "admin": False, "groups": [workshop.id]},
            result.registration_id,
        )

    def welcome_context(self, wod, workshop, form, result) -> dict:
        return {
            "first_name": form.first_name,
            "last_name": form.last_name,
            "workshop_id": workshop.id,
            "workshop_name": workshop.name,
            "workshop_image": workshop.workshop_image or "",
            "duration_minutes": int(workshop.duration.total_seconds() // 60),
            "expires_at": result.expires_at.isoformat() + "Z",
            "username": result.username,
            "hub_url": wod.hub_url,
            "recover_url": wod.link("wod/recover"),
        }
