"""The process-wide wod-hub state inside the hub: catalog, database, mail.

Built by :class:`~wod_hub.authenticator.WorkshopAuthenticator` (the config home);
handlers and spawners reach it as ``authenticator.wod``. ``start()`` runs once
(migrations, seat sync, mail sender) and every request awaits ``ready()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from sqlalchemy import select

from . import tokens
from .catalog import Catalog, load_catalog
from .catalog_view import build_cards, load_registrants, load_seat_rows
from .db import Database
from .hubusers import HubUserCreator
from .lifecycle.settings import LifecycleSettings
from .mail import Mailer, MailSender
from .orm import LIVE_STATE_VALUES, OutboxMessage, Participant, Registration, Seat, utcnow
from .outbox import CancelMessage
from .personalize import StudentContext
from .ratelimit import RateLimiter
from .seats import sync_workshops

log = logging.getLogger("wod_hub")

# e-mail templates whose context gets a fresh login link + credentials at send time
CREDENTIAL_TEMPLATES = frozenset({"welcome", "recover"})


class WodState:
    def __init__(self, authenticator):
        self.auth = authenticator
        self.log = authenticator.log
        self.catalog: Catalog | None = None
        self.db = Database(authenticator.db_url)
        self.mailer: Mailer = authenticator.mailer
        self.secret_key: bytes = authenticator.secret_key_bytes
        self.sender: MailSender | None = None
        window = authenticator.rate_limit_window
        self.ip_limiter = RateLimiter(authenticator.registration_limit_per_ip, window)
        self.email_limiter = RateLimiter(authenticator.registration_limit_per_email, window)
        self.recover_limiter = RateLimiter(authenticator.recover_limit_per_email, window)
        self._start_task: asyncio.Task | None = None
        self._seat_rows: tuple[float, dict[str, dict]] | None = None  # see catalog_cards
        self._registrants: tuple[float, dict[str, int]] | None = None
        self.hub_users = HubUserCreator(self.live_registrations)
        # c.LifecycleSettings.*: validated here, when the hub starts (get_handlers), so a
        # bad value stops the hub with its message instead of failing the first session end
        self.lifecycle = LifecycleSettings(parent=authenticator)

    # ---- startup ---------------------------------------------------------
    def start(self) -> asyncio.Task:
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._start())
        return self._start_task

    async def ready(self) -> WodState:
        await self.start()
        return self

    async def _start(self) -> None:
        self.load_catalog()
        await self.db.migrate()
        async with self.db.begin_write() as session:
            await sync_workshops(session, list(self.catalog.workshops.values()))
        self.sender = MailSender(
            self.db.sessionmaker, self.mailer, secrets_provider=self.mail_secrets
        )
        if self.auth.send_mail:
            self.sender.start()
        from . import metrics  # wod_* figures on the hub's /hub/metrics

        self.metrics = metrics.start(self.db, parent=self.auth)
        self.log.info(
            "wod-hub ready: %d workshops from %s, database %s",
            len(self.catalog.workshops),
            ", ".join(self.auth.workshop_dirs),
            self.db.safe_url,
        )

    def load_catalog(self) -> Catalog:
        catalog = load_catalog([Path(d) for d in self.auth.workshop_dirs])
        for problem in catalog.problems:
            self.log.warning("workshop catalog: %s", problem)
        catalog.raise_for_errors()
        self.catalog = catalog
        return catalog

    async def stop(self) -> None:
        await self.hub_users.stop()
        if self.sender is not None:
            await self.sender.stop()
        await self.db.dispose()

    # ---- helpers used by handlers, spawner, mail ----------------------------
    # Seats left on the login page: a view of at most SEATS_TTL seconds old (a registration
    # here refreshes it with figures read in its own transaction; the registration POST
    # decides anyway). "Popular" ranks workshops by distinct registrants ever, a scan of
    # every registration: reused for POPULAR_TTL seconds.
    SEATS_TTL = 1.0
    POPULAR_TTL = 60.0

    async def catalog_cards(self, popular_count: int) -> list:
        """The login page's catalog cards (a rush views the page once per registrant)."""
        now = time.monotonic()
        fresh_rows = self._seat_rows is not None and now - self._seat_rows[0] < self.SEATS_TTL
        fresh_popular = (
            self._registrants is not None and now - self._registrants[0] < self.POPULAR_TTL
        )
        if not (fresh_rows and fresh_popular):
            async with self.db.session() as session:
                if not fresh_rows:
                    self._seat_rows = (now, await load_seat_rows(session))
                if not fresh_popular:
                    self._registrants = (now, await load_registrants(session))
        return build_cards(
            self.catalog.workshops.values(), self._seat_rows[1], self._registrants[1], popular_count
        )

    def seats_changed(self, rows: dict[str, dict] | None = None) -> None:
        """Seats moved in this process: ``rows`` as :func:`~wod_hub.catalog_view.seat_rows`
        read them in the same transaction, or None to read them again at the next view."""
        self._seat_rows = None if rows is None else (time.monotonic(), rows)

    async def live_registrations(self, registration_ids: list[int]) -> set[int]:
        """Those of ``registration_ids`` still live and not being ended."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(Registration.id).where(
                    Registration.id.in_(registration_ids),
                    Registration.state.in_(LIVE_STATE_VALUES),
                    Registration.ended_reason.is_(None),  # e.g. its hub user was deleted
                )
            )
            return set(rows)

    def seat_password(self, workshop_id: str, student_number: int, generation: int) -> str:
        return tokens.derive_secret(
            self.secret_key, "seat", workshop_id, student_number, generation
        )

    def seat_password_hash(self, workshop_id: str, student_number: int, generation: int) -> str:
        return tokens.hash_generated_secret(
            self.seat_password(workshop_id, student_number, generation)
        )

    @property
    def hub_url(self) -> str:
        return self.auth.public_hub_url

    def link(self, path: str) -> str:
        return self.hub_url.rstrip("/") + "/" + path.lstrip("/")

    async def mail_secrets(self, session, message: OutboxMessage) -> dict:
        """Produce what must never be stored: a fresh login link and the password."""
        if message.template not in CREDENTIAL_TEMPLATES or message.registration_id is None:
            return {}
        registration = await session.get(Registration, message.registration_id)
        if registration is None or registration.state not in LIVE_STATE_VALUES:
            raise CancelMessage("the registration has ended: no login link to send")
        seat = (
            await session.execute(select(Seat).where(Seat.registration_id == registration.id))
        ).scalar_one_or_none()
        if seat is None:
            raise CancelMessage("the registration holds no seat any more")
        ttl = min(
            timedelta(seconds=self.auth.login_link_ttl),
            max(registration.expires_at - utcnow(), timedelta(minutes=5)),
        )
        token = await tokens.issue_login_token(session, self.secret_key, registration.id, ttl)
        return {
            "login_url": self.link(f"wod/start?token={token}"),
            "password": self.seat_password(seat.workshop_id, seat.student_number, seat.generation),
        }

    async def student_context(self, session, registration: Registration) -> StudentContext:
        participant = await session.get(Participant, registration.participant_id)
        seat = (
            await session.execute(select(Seat).where(Seat.registration_id == registration.id))
        ).scalar_one_or_none()
        password = None
        if seat is not None:
            password = self.seat_password(seat.workshop_id, seat.student_number, seat.generation)
        return StudentContext(
            student_number=registration.student_number,
            username=registration.username,
            password=password,
            participant_first_name=participant.first_name,
            participant_last_name=participant.last_name,
            participant_email=participant.email,
            hub_url=self.hub_url,
            expires_at=registration.expires_at,
            branding_name=self.auth.brand_name,
            branding_url=self.auth.brand_url,
            branding_logo=self.auth.brand_logo_url,
            survey_url=self.auth.survey_url,
        )

    @property
    def hub_host(self) -> str:
        return urlparse(self.hub_url).hostname or "localhost"
