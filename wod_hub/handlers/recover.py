"""'Lost my link': a fresh login link by e-mail. The answer is the same whether
or not the address is registered, so the page reveals no registration."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select

from ..mail import enqueue
from ..orm import LIVE_STATE_VALUES, Participant, Registration
from .base import WodHandler

SENT = (
    "If this address holds a live workshop registration, a new login link is on its way. "
    "Check your inbox (and spam folder) in a minute."
)


class RecoverHandler(WodHandler):
    async def get(self):
        await self.wod_ready()
        self.finish(
            await self.render_template("wod/recover.html", message=None, error=None, email="")
        )

    async def post(self):
        wod = await self.wod_ready()
        raw = self.get_body_argument("email", default="").strip()
        try:
            email = validate_email(raw, check_deliverability=False).normalized.lower()
        except EmailNotValidError:
            self.set_status(400)
            return self.finish(
                await self.render_template(
                    "wod/recover.html",
                    message=None,
                    error="Enter the e-mail address you registered with.",
                    email=raw,
                )
            )
        retry = wod.ip_limiter.check(self.client_ip) or wod.recover_limiter.hit(email)
        if retry is not None:
            return self.finish(
                await self.render_template(
                    "wod/recover.html",
                    message=None,
                    error=self.too_many(retry, "requests"),
                    email=raw,
                )
            )
        async with wod.db.begin_write() as session:
            rows = (
                await session.execute(
                    select(Registration, Participant)
                    .join(Participant, Participant.id == Registration.participant_id)
                    .where(Participant.email == email, Registration.state.in_(LIVE_STATE_VALUES))
                )
            ).all()
            for registration, participant in rows:
                workshop = wod.catalog.workshops.get(registration.workshop_id)
                await enqueue(
                    session,
                    to=participant.email,
                    template="recover",
                    context={
                        "first_name": participant.first_name,
                        "workshop_id": registration.workshop_id,
                        "workshop_name": workshop.name if workshop else registration.workshop_id,
                        "username": registration.username,
                        "expires_at": registration.expires_at.isoformat() + "Z",
                        "hub_url": wod.hub_url,
                        "recover_url": wod.link("wod/recover"),
                    },
                    registration_id=registration.id,
                )
        if rows and wod.sender is not None:
            wod.sender.wake()
        self.finish(
            await self.render_template("wod/recover.html", message=SENT, error=None, email="")
        )
