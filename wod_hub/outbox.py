"""The durable e-mail outbox and its sender.

Requests never wait on SMTP: :func:`enqueue` adds a row in the *caller's* transaction
(a registration and its e-mail commit together, or neither does), and a
:class:`MailSender` delivers rows in the background, retrying with backoff through SMTP
outages and hub restarts.

Several senders (processes) may share one database: each claims due rows with one
conditional ``UPDATE ... RETURNING`` (``pending`` and due, or ``sending`` with an
expired claim), so a row is only ever claimed by one sender at a time. Delivery is
at-least-once: a sender that dies after the SMTP server accepted a message but before
it recorded ``sent`` lets the claim expire and the message goes again (with the same
Message-ID).

The stored context holds no secret. Login links and passwords come from the
``secrets_provider`` just before rendering and live only in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import aiosmtplib
import jinja2
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from . import orm
from .mail import (
    SECRET_KEY_PATTERN,
    EmailTemplateError,
    Mailer,
    MailError,
    UnsafeContext,
    default_env,
    missing_keys,
    outbox_message_id,
    template_exists,
)
from .orm import OutboxMessage, OutboxState

log = logging.getLogger("wod_hub.mail")

PENDING = OutboxState.pending.value
SENDING = OutboxState.sending.value
SENT = OutboxState.sent.value
FAILED = OutboxState.failed.value

SecretsProvider = Callable[[AsyncSession, OutboxMessage], Awaitable[dict]]


class CancelMessage(Exception):
    """Raised by a secrets provider when an e-mail must not go out any more (e.g. its
    registration ended before it was sent). The message is marked failed with the
    reason, without further attempts."""


def _secret_keys(value, path: str = "") -> list[str]:
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if SECRET_KEY_PATTERN.search(str(key)):
                found.append(where)
            found += _secret_keys(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _secret_keys(item, f"{path}[{i}]")
    return found


def check_context(template: str, context: dict, *, env: jinja2.Environment | None = None) -> dict:
    """Validate what :func:`enqueue` would store; returns the JSON round-tripped context."""
    env = env or default_env()
    if not template_exists(env, template):
        raise EmailTemplateError(
            f"No e-mail template {template!r}: expected {template}.subject.txt and {template}.txt "
            "in Mailer.templates_path or wod_hub/templates/email (pass env=mailer.env for "
            "templates of your own)."
        )
    if not isinstance(context, dict):
        raise UnsafeContext(
            f"The context of e-mail {template!r} must be a dict, not {type(context).__name__}."
        )
    secret = _secret_keys(context)
    if secret:
        raise UnsafeContext(
            f"The context of e-mail {template!r} has secret-looking keys ({', '.join(secret)}): "
            "the outbox stores no secret. Produce login links and passwords in the sender's "
            "secrets_provider at send time."
        )
    try:
        stored = json.loads(json.dumps(context))
    except (TypeError, ValueError) as e:
        raise UnsafeContext(
            f"The context of e-mail {template!r} is not JSON-serializable ({e}): pass strings, "
            "numbers, lists and dicts (datetimes as ISO strings)."
        ) from None
    missing = missing_keys(template, stored, include_send_time=False)
    if missing:
        raise EmailTemplateError(
            f"E-mail {template!r} needs context keys {', '.join(missing)} "
            f"(see wod_hub.mail.TEMPLATE_CONTEXT[{template!r}])."
        )
    return stored


def enqueue_sync(
    session: Session,
    *,
    to: str,
    template: str,
    context: dict,
    registration_id: int | None = None,
    dedupe_key: str | None = None,
    env: jinja2.Environment | None = None,
) -> OutboxMessage | None:
    """Queue an e-mail in the caller's transaction (nothing is committed here). Sync code
    (a :class:`~sqlalchemy.orm.Session`); :func:`enqueue` is the same for an async one.

    With a ``dedupe_key`` already queued, does nothing and returns None; the caller's
    transaction stays usable. Raises :class:`~wod_hub.mail.MailError` subclasses for an
    invalid address, an unknown template, a missing key or a secret-looking key.
    """
    try:
        validate_email(to, check_deliverability=False)
    except EmailNotValidError as e:
        raise MailError(
            f"Cannot queue e-mail {template!r}: recipient {to!r} is not valid ({e})."
        ) from None
    stored = check_context(template, context, env=env)
    now = orm.utcnow()
    values = dict(
        to_addr=to,
        template=template,
        context=stored,
        registration_id=registration_id,
        dedupe_key=dedupe_key,
        state=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    if dedupe_key is None:
        message = OutboxMessage(**values)
        session.add(message)
        session.flush()
        return message

    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert if dialect == "sqlite" else pg_insert
        stmt = (
            insert(OutboxMessage)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[OutboxMessage.dedupe_key])
            .returning(OutboxMessage)
        )
        return session.scalars(stmt).one_or_none()
    try:  # other dialects: a savepoint keeps the caller's transaction alive
        with session.begin_nested():
            message = OutboxMessage(**values)
            session.add(message)
        return message
    except IntegrityError:
        return None


async def enqueue(session: AsyncSession, **kwargs) -> OutboxMessage | None:
    """:func:`enqueue_sync` in an async session (the caller's transaction)."""
    return await session.run_sync(lambda sync_session: enqueue_sync(sync_session, **kwargs))


async def retry_message(
    session: AsyncSession, message_id: int, *, now: datetime | None = None
) -> bool:
    """Admin action: a failed (or pending) message goes out at the next sender pass, with
    a fresh set of attempts. False when there is no such failed/pending message."""
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.state.in_((FAILED, PENDING)))
        .values(
            state=PENDING,
            attempts=0,
            next_attempt_at=now or orm.utcnow(),
            claimed_by=None,
            claimed_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def outbox_stats(session: AsyncSession) -> dict[str, int]:
    """Messages per state: ``{"pending": n, "sending": n, "sent": n, "failed": n}``."""
    stats = {s.value: 0 for s in OutboxState}
    rows = await session.execute(
        select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
    )
    for state, count in rows:
        stats[state] = count
    return stats


# ---- sending ----------------------------------------------------------------------------


@dataclass
class _Prepared:
    id: int
    attempts: int
    subject: str
    message: EmailMessage
    secrets: list[str]


@dataclass
class _Outcome:
    id: int
    attempts: int | None  # before this attempt; None: the row could not even be read
    sent: bool = False
    subject: str | None = None
    error: str | None = None
    permanent: bool = False


def _redact(text: str, secret_values: list[str]) -> str:
    for value in secret_values:
        if value:
            text = text.replace(value, "[redacted]")
    return text[:1000]


def _smtp_code(exc: Exception) -> int | None:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        return exc.recipients[0].code
    return getattr(exc, "code", None)


def _describe(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"


class MailSender:
    """Delivers the outbox. ``start()``/``stop()`` run :meth:`run` as a background task;
    :meth:`wake` makes it look at the outbox now (call it after committing an e-mail)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker,
        mailer: Mailer,
        *,
        secrets_provider: SecretsProvider | None = None,
        instance_id: str | None = None,
    ):
        self.sessionmaker = sessionmaker
        self.mailer = mailer
        self.secrets_provider = secrets_provider
        self.instance_id = (
            instance_id or f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"
        )
        self.log = mailer.log if mailer.log is not None else log
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None

    # ---- background loop ------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def start(self) -> asyncio.Task:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.ensure_future(self.run())
        return self._task

    async def stop(self, timeout: float | None = None) -> None:
        """Finish the current batch (at most ``timeout`` seconds), then end the loop."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout or self.mailer.timeout + 5)
        if not done:
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def run(self) -> None:
        """Send what is due every ``Mailer.poll_interval`` seconds and on :meth:`wake`,
        until :meth:`stop`. An error is logged and the loop goes on."""
        self.log.info(
            "E-mail sender %s started (SMTP %s:%s)",
            self.instance_id,
            self.mailer.smtp_host,
            self.mailer.smtp_port,
        )
        while not self._stopping:
            self._wake.clear()
            try:
                await self.send_due()
            except Exception:
                self.log.exception(
                    "E-mail sender: the outbox pass failed; next try in %ss",
                    self.mailer.poll_interval,
                )
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), self.mailer.poll_interval)
            except asyncio.TimeoutError:
                pass
        self.log.info("E-mail sender %s stopped", self.instance_id)

    # ---- one pass -------------------------------------------------------------------
    async def send_due(self, now: datetime | None = None) -> int:
        """Claim and send every due message, in batches of ``Mailer.batch_size`` over one
        SMTP connection each. Returns how many were delivered."""
        delivered = 0
        while True:
            at = now or orm.utcnow()
            ids = await self._claim(at)
            if not ids:
                return delivered
            delivered += await self._send_batch(ids, at, fixed_now=now is not None)
            if len(ids) < self.mailer.batch_size:
                return delivered

    async def _claim(self, at: datetime) -> list[int]:
        due = or_(
            and_(OutboxMessage.state == PENDING, OutboxMessage.next_attempt_at <= at),
            and_(OutboxMessage.state == SENDING, OutboxMessage.claimed_until < at),
        )
        candidates = (
            select(OutboxMessage.id)
            .where(due)
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(self.mailer.batch_size)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite serializes writers anyway
        )
        async with self.sessionmaker() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                # a CTE runs once; PostgreSQL may re-run an IN (subquery ... LIMIT) per row
                # and then claim more than batch_size rows
                picked = candidates.cte("due_outbox_ids")
                which = OutboxMessage.id == picked.c.id
            else:
                which = OutboxMessage.id.in_(candidates.scalar_subquery())
            # `due` again on the row itself: a row another sender claimed meanwhile is not ours
            stmt = (
                update(OutboxMessage)
                .where(which, due)
                .values(
                    state=SENDING,
                    claimed_by=self.instance_id,
                    claimed_until=at + timedelta(seconds=self.mailer.claim_timeout),
                )
                .returning(OutboxMessage.id)
                .execution_options(synchronize_session=False)
            )
            return sorted((await session.execute(stmt)).scalars().all())

    def _mine(self, message_id: int):
        return (
            OutboxMessage.id == message_id,
            OutboxMessage.state == SENDING,
            OutboxMessage.claimed_by == self.instance_id,
        )

    async def _prepare(self, message_id: int, at: datetime) -> _Prepared | _Outcome | None:
        """Secrets and rendering for one claimed message; None if the claim was lost."""
        attempts: int | None = None  # unknown until the row is read
        stage = "database"
        try:
            async with self.sessionmaker() as session, session.begin():
                # a write first: on SQLite the transaction holds the write lock from here,
                # so the secrets provider may write (login tokens) without a lock upgrade
                refreshed = await session.execute(
                    update(OutboxMessage)
                    .where(*self._mine(message_id))
                    .values(claimed_until=at + timedelta(seconds=self.mailer.claim_timeout))
                    .execution_options(synchronize_session=False)
                )
                if refreshed.rowcount != 1:
                    return None
                message = await session.get(OutboxMessage, message_id)
                attempts = message.attempts
                to, template, created_at = message.to_addr, message.template, message.created_at
                context = dict(message.context or {})
                extra = {}
                if self.secrets_provider is not None:
                    stage = "secrets provider"
                    extra = await self.secrets_provider(session, message) or {}
        except CancelMessage as e:
            return _Outcome(message_id, attempts, error=f"cancelled: {e}", permanent=True)
        except Exception as e:
            # the provider's message may hold what it was producing: the type only, the
            # traceback at debug level
            self.log.warning(
                "E-mail %s: the %s failed (%s); will retry", message_id, stage, type(e).__name__
            )
            self.log.debug("E-mail %s: %s failure", message_id, stage, exc_info=True)
            return _Outcome(message_id, attempts, error=f"{stage} failed: {type(e).__name__}")
        secret_values = [str(v) for v in extra.values() if v]
        # a rendering error is the same on every attempt: fail at once, admins see why
        try:
            rendered = self.mailer.render(template, {**context, **extra})
            email = self.mailer.build_message(
                to,
                rendered,
                message_id=outbox_message_id(self.mailer.from_address, message_id, created_at),
            )
        except Exception as e:
            error = _redact(str(e) if isinstance(e, MailError) else _describe(e), secret_values)
            self.log.error("E-mail %s (%s) cannot be built: %s", message_id, template, error)
            return _Outcome(message_id, attempts, error=error, permanent=True)
        return _Prepared(message_id, attempts, rendered.subject, email, secret_values)

    async def _send_batch(self, ids: list[int], at: datetime, fixed_now: bool) -> int:
        outcomes: list[_Outcome] = []
        prepared: list[_Prepared] = []
        for message_id in ids:
            item = await self._prepare(message_id, at)
            if isinstance(item, _Prepared):
                prepared.append(item)
            elif item is not None:
                outcomes.append(item)
        if prepared:
            outcomes += await self._deliver(prepared)
        return await self._record(outcomes, orm.utcnow() if not fixed_now else at)

    async def _deliver(self, prepared: list[_Prepared]) -> list[_Outcome]:
        """Send over one connection. A refusal of one message (4xx: retry, 5xx: give up)
        does not stop the others; a connection error makes the rest retry later."""
        outcomes: list[_Outcome] = []
        try:
            async with self.mailer.connect() as smtp:
                for item in prepared:
                    try:
                        await smtp.send_message(item.message)
                    except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPDataError) as e:
                        # about this message (unknown recipient, content refused): a 5xx
                        # answer will not change, a 4xx may
                        code = _smtp_code(e)
                        outcomes.append(
                            _Outcome(
                                item.id,
                                item.attempts,
                                error=_redact(_describe(e), item.secrets),
                                permanent=code is not None and code >= 500,
                            )
                        )
                    except aiosmtplib.SMTPSenderRefused as e:
                        # about our configuration (sender address, STARTTLS or AUTH
                        # required): retried, since an operator can fix it
                        outcomes.append(
                            _Outcome(
                                item.id, item.attempts, error=_redact(_describe(e), item.secrets)
                            )
                        )
                    else:
                        outcomes.append(
                            _Outcome(item.id, item.attempts, sent=True, subject=item.subject)
                        )
        except Exception as e:  # connect, TLS, login, or the connection dropped mid-batch
            done = {o.id for o in outcomes}
            if not isinstance(
                e, (aiosmtplib.SMTPException, OSError, MailError, asyncio.TimeoutError)
            ):
                self.log.exception("E-mail: unexpected error while sending")
            self.log.warning(
                "E-mail: SMTP %s:%s failed (%s); %d message(s) will be retried",
                self.mailer.smtp_host,
                self.mailer.smtp_port,
                _describe(e),
                len(prepared) - len(done),
            )
            for item in prepared:
                if item.id not in done:
                    outcomes.append(
                        _Outcome(item.id, item.attempts, error=_redact(_describe(e), item.secrets))
                    )
        return outcomes

    async def _record(self, outcomes: list[_Outcome], at: datetime) -> int:
        delivered = 0
        if not outcomes:
            return 0
        async with self.sessionmaker() as session, session.begin():
            for o in outcomes:
                if o.attempts is None:
                    continue  # left claimed: taken over when the claim expires
                attempts = o.attempts + 1
                values = dict(attempts=attempts, claimed_by=None, claimed_until=None)
                if o.sent:
                    values.update(state=SENT, sent_at=at, subject=o.subject[:300], last_error=None)
                elif o.permanent or attempts >= self.mailer.max_attempts:
                    values.update(state=FAILED, last_error=o.error)
                else:
                    values.update(
                        state=PENDING,
                        last_error=o.error,
                        next_attempt_at=at + self.mailer.backoff(attempts),
                    )
                result = await session.execute(
                    update(OutboxMessage)
                    .where(*self._mine(o.id))
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount != 1:
                    self.log.warning(
                        "E-mail %s: claim lost before its result was saved (sent: %s)", o.id, o.sent
                    )
                    continue
                if o.sent:
                    delivered += 1
                    self.log.info("E-mail %s sent: %s", o.id, o.subject)
                elif values["state"] == FAILED:
                    self.log.error(
                        "E-mail %s failed for good after %d attempt(s): %s", o.id, attempts, o.error
                    )
                else:
                    self.log.warning("E-mail %s not sent (attempt %d): %s", o.id, attempts, o.error)
        return delivered
