"""E-mail: configuration and SMTP (:class:`Mailer`), rendering (:func:`render_email`).

The durable outbox and its sender live in :mod:`wod_hub.outbox`; their public names
(``enqueue``, ``MailSender``, ``retry_message``, ``outbox_stats``) are re-exported here.

Templates are ``templates/email/<name>.subject.txt``, ``<name>.txt`` and ``<name>.html``
(HTML is autoescaped, text is not). They render in a sandbox with ``StrictUndefined``:
participant-supplied text is only ever a value, and a missing key is an error, never a
blank. :data:`TEMPLATE_CONTEXT` lists the keys each packaged template needs.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from pathlib import Path

import aiosmtplib
import jinja2
from email_validator import EmailNotValidError, validate_email
from jinja2.sandbox import SandboxedEnvironment
from traitlets import Bool, Enum, Float, Integer, List, Unicode, default, observe, validate
from traitlets.config import LoggingConfigurable

EMAIL_TEMPLATE_DIR = Path(__file__).resolve().parent / "templates" / "email"
ENV_SMTP_PASSWORD = "WOD_HUB_SMTP_PASSWORD"


class MailError(ValueError):
    """Base class of wod-hub's e-mail errors."""


class EmailTemplateError(MailError):
    """A template is missing, or its context lacks a key the template needs."""


class UnsafeContext(MailError):
    """An outbox context that cannot be stored: a secret-looking key, or not JSON."""


# ---- templates and their context ----------------------------------------------------


@dataclass(frozen=True)
class TemplateContext:
    """The context keys of one template.

    ``required``: given to :func:`~wod_hub.outbox.enqueue`; ``send_time``: secrets the
    sender's secrets provider adds just before rendering (never stored); ``optional``:
    keys with their default (templates test them with ``{% if %}``).
    """

    required: tuple[str, ...]
    send_time: tuple[str, ...] = ()
    optional: dict = field(default_factory=dict)


_WORKSHOP_OPTIONAL = {"workshop_id": None, "workshop_image": None, "last_name": None}

TEMPLATE_CONTEXT: dict[str, TemplateContext] = {
    "welcome": TemplateContext(
        required=(
            "first_name",
            "workshop_name",
            "duration_minutes",
            "expires_at",
            "username",
            "hub_url",
            "recover_url",
        ),
        send_time=("login_url", "password"),
        optional=dict(_WORKSHOP_OPTIONAL),
    ),
    "recover": TemplateContext(
        required=(
            "first_name",
            "workshop_name",
            "expires_at",
            "username",
            "hub_url",
            "recover_url",
        ),
        send_time=("login_url", "password"),
        optional=dict(_WORKSHOP_OPTIONAL),
    ),
    "reminder": TemplateContext(
        required=("first_name", "workshop_name", "expires_at", "minutes_left", "hub_url"),
        optional={**_WORKSHOP_OPTIONAL, "extend_url": None, "extend_minutes": None},
    ),
    "final": TemplateContext(
        required=("first_name", "workshop_name", "register_url"),
        optional={
            **_WORKSHOP_OPTIONAL,
            "completion": None,
            "survey_url": None,
            "badge_image_url": None,
            "replay_url": None,
        },
    ),
    "special_badge": TemplateContext(
        required=("first_name", "badge_name", "badge_url"),
        optional={"badge_image_url": None, "workshops_completed": None, "last_name": None},
    ),
    "deployment_failed": TemplateContext(
        required=("first_name", "workshop_name", "register_url"),
        optional=dict(_WORKSHOP_OPTIONAL),
    ),
    "ended_early": TemplateContext(
        required=("first_name", "workshop_name", "register_url"),
        optional={**_WORKSHOP_OPTIONAL, "survey_url": None},
    ),
}

# Keys that must never be stored in the outbox: secrets are produced at send time.
SECRET_KEY_PATTERN = re.compile(r"pass|pwd|secret|token|link|credential|api_?key|login_url", re.I)


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None


def _as_datetime(value) -> datetime:
    if isinstance(value, datetime):
        dt = value
    else:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if dt.tzinfo is None:  # wod-hub's naive datetimes are UTC
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def format_when(value) -> str:
    """``2025-11-25T14:30:00Z`` -> ``Tuesday 25 November 2025, 14:30 UTC``."""
    dt = _as_datetime(value)
    return f"{dt:%A} {dt.day} {dt:%B %Y, %H:%M} UTC"


def format_duration(minutes) -> str:
    """``150`` -> ``2 hours 30 minutes``."""
    minutes = int(minutes)
    hours, rest = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    if rest or not parts:
        parts.append(f"{rest} minute{'s' if rest != 1 else ''}")
    return " ".join(parts)


def make_email_env(templates_path=(), brand: dict | None = None) -> SandboxedEnvironment:
    """The sandboxed Jinja environment for e-mails: ``templates_path`` first, then
    the packaged templates. ``brand`` (``brand_name``, ``brand_url``, ``brand_logo_url``)
    becomes template globals."""
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader([*map(str, templates_path), str(EMAIL_TEMPLATE_DIR)]),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["when"] = format_when
    env.filters["duration"] = format_duration
    env.globals.update({"brand_name": "wod-hub", "brand_url": "", "brand_logo_url": ""})
    env.globals.update(brand or {})
    return env


_default_env: SandboxedEnvironment | None = None


def default_env() -> SandboxedEnvironment:
    """The packaged templates with default branding (shared, built once)."""
    global _default_env
    if _default_env is None:
        _default_env = make_email_env()
    return _default_env


def template_exists(env: jinja2.Environment, template: str) -> bool:
    try:
        env.get_template(f"{template}.subject.txt")
        env.get_template(f"{template}.txt")
    except jinja2.TemplateNotFound:
        return False
    return True


def missing_keys(template: str, context: dict, *, include_send_time: bool = True) -> list[str]:
    spec = TEMPLATE_CONTEXT.get(template)
    if spec is None:
        return []
    keys = spec.required + (spec.send_time if include_send_time else ())
    return [k for k in keys if k not in context]


def _render_one(env: jinja2.Environment, name: str, context: dict, *, optional: bool = False):
    try:
        tpl = env.get_template(name)
    except jinja2.TemplateNotFound:
        if optional:
            return None
        raise EmailTemplateError(
            f"No e-mail template {name!r} in {env.loader.searchpath} (Mailer.templates_path, "
            "then the packaged templates)."
        ) from None
    try:
        return tpl.render(context)
    except jinja2.UndefinedError as e:
        raise EmailTemplateError(f"E-mail template {name!r} ({tpl.filename}): {e}") from None
    except jinja2.TemplateError as e:
        raise EmailTemplateError(f"E-mail template {name!r} ({tpl.filename}) failed: {e}") from None
    except Exception as e:  # a filter given a bad value, e.g. expires_at that is no date
        raise EmailTemplateError(
            f"E-mail template {name!r} ({tpl.filename}) failed: {type(e).__name__}: {e}"
        ) from None


def render_email(
    template: str, context: dict, *, env: jinja2.Environment | None = None
) -> RenderedEmail:
    """Render ``<template>.subject.txt``, ``.txt`` and (if present) ``.html`` with ``env``
    (default: the packaged templates, default branding; :attr:`Mailer.env` for the
    configured ones).

    Raises :class:`EmailTemplateError` naming the template and the missing keys.
    """
    env = env or default_env()
    missing = missing_keys(template, context)
    if missing:
        raise EmailTemplateError(
            f"E-mail template {template!r} needs context keys {', '.join(missing)} "
            f"(see wod_hub.mail.TEMPLATE_CONTEXT[{template!r}])."
        )
    spec = TEMPLATE_CONTEXT.get(template)
    values = {**(spec.optional if spec else {}), **context}
    subject = _render_one(env, f"{template}.subject.txt", values)
    text = _render_one(env, f"{template}.txt", values)
    html = _render_one(env, f"{template}.html", values, optional=True)
    # a subject is one header line: no newline may reach the message headers
    subject = " ".join(subject.split())
    return RenderedEmail(subject=subject, text=text, html=html)


# ---- configuration and SMTP ----------------------------------------------------------


class Mailer(LoggingConfigurable):
    """How wod-hub sends e-mail: SMTP server, sender address, retries, branding, templates."""

    smtp_host = Unicode(
        "localhost", help="SMTP server (relay) host name or IP address that accepts wod-hub's mail."
    ).tag(config=True)

    smtp_port = Integer(
        25,
        help="""SMTP server port: usually 25 (relay, no TLS), 587 (submission with
        smtp_security='starttls') or 465 (smtp_security='tls').""",
    ).tag(config=True)

    smtp_security = Enum(
        ["none", "starttls", "tls"],
        "none",
        help="""Transport security: 'none' (plain SMTP, for a relay on localhost or a
        trusted network), 'starttls' (upgrade the connection, port 587), 'tls' (TLS from the
        first byte, port 465).""",
    ).tag(config=True)

    smtp_validate_certs = Bool(
        True,
        help="Check the SMTP server's TLS certificate. Disable only for a relay with a self-signed certificate.",
    ).tag(config=True)

    smtp_ca_file = Unicode(
        "",
        help="""PEM file of the certificate authorities to trust for the SMTP server's TLS
        certificate (a private CA); empty: the system's trust store.""",
    ).tag(config=True)

    smtp_username = Unicode(
        "", help="User name for SMTP authentication; empty: no authentication."
    ).tag(config=True)

    smtp_password = Unicode(
        help=f"""Password for SMTP authentication. Defaults to the environment variable
        {ENV_SMTP_PASSWORD}: prefer it to writing the password in a config file. Never logged.""",
    ).tag(config=True)

    @default("smtp_password")
    def _smtp_password_default(self):
        return os.environ.get(ENV_SMTP_PASSWORD, "")

    from_address = Unicode(
        "workshops@localhost.localdomain",
        help="""Sender address of every e-mail (From). Use an address your SMTP relay may send
        for (SPF/DKIM), e.g. workshops@example.org. The brand name is its display name.""",
    ).tag(config=True)

    reply_to = Unicode(
        "", help="Reply-To address for participants' answers (e.g. your support desk); empty: none."
    ).tag(config=True)

    timeout = Float(
        30,
        help="Seconds to wait for the SMTP server (connect and each command) before retrying later.",
    ).tag(config=True)

    max_attempts = Integer(
        8,
        help="""Attempts per e-mail before it is marked failed (admins can retry it). With the
        default backoff, 8 attempts span about an hour of SMTP outage.""",
    ).tag(config=True)

    backoff_base = Float(
        30,
        help="""Seconds before the first retry; each further retry waits twice as long (with
        random jitter), up to backoff_max.""",
    ).tag(config=True)

    backoff_max = Float(3600, help="Longest wait between two attempts, in seconds.").tag(
        config=True
    )

    poll_interval = Float(
        5,
        help="""Seconds between two looks at the outbox. New registrations wake the sender at once;
        this bounds the delay of retries and of mail queued by other processes.""",
    ).tag(config=True)

    claim_timeout = Float(
        300,
        help="""Seconds a sender owns the messages it is sending. If it dies, another sender takes
        them over after this delay. Keep it well above `timeout` times `batch_size`.""",
    ).tag(config=True)

    batch_size = Integer(
        20, help="At most this many e-mails are sent over one SMTP connection."
    ).tag(config=True)

    brand_name = Unicode(
        help="Brand shown in e-mails and as the sender's display name. Default: WorkshopAuthenticator.brand_name."
    ).tag(config=True)

    brand_url = Unicode(
        help="Link behind the brand in e-mails. Default: WorkshopAuthenticator.brand_url."
    ).tag(config=True)

    brand_logo_url = Unicode(
        help="Absolute URL of a logo image shown atop HTML e-mails. Default: WorkshopAuthenticator.brand_logo_url."
    ).tag(config=True)

    templates_path = List(
        Unicode(),
        help="""Directories searched before the packaged e-mail templates. To change an e-mail,
        copy wod_hub/templates/email/<name>.subject.txt, <name>.txt and <name>.html there and edit
        them; keep the context keys documented at their top.""",
    ).tag(config=True)

    @default("brand_name")
    def _brand_name_default(self):
        return getattr(self.parent, "brand_name", "") or "Workshops-on-Demand"

    @default("brand_url")
    def _brand_url_default(self):
        return getattr(self.parent, "brand_url", "") or ""

    @default("brand_logo_url")
    def _brand_logo_url_default(self):
        return getattr(self.parent, "brand_logo_url", "") or ""

    @validate("smtp_port")
    def _validate_port(self, proposal):
        port = proposal.value
        if not 1 <= port <= 65535:
            raise ValueError(f"Mailer.smtp_port must be between 1 and 65535, not {port}.")
        return port

    @validate("from_address", "reply_to")
    def _validate_address(self, proposal):
        value = proposal.value.strip()
        name = proposal.trait.name
        if not value and name == "reply_to":
            return value
        try:
            validate_email(value, check_deliverability=False)
        except EmailNotValidError as e:
            raise ValueError(
                f"Mailer.{name} = {value!r} is not a valid e-mail address ({e}). "
                "Give a bare address like workshops@example.org (the brand name is the display name)."
            ) from None
        return value

    @validate("timeout", "backoff_base", "backoff_max", "poll_interval", "claim_timeout")
    def _validate_positive(self, proposal):
        if proposal.value <= 0:
            raise ValueError(f"Mailer.{proposal.trait.name} must be a positive number of seconds.")
        return proposal.value

    @validate("max_attempts", "batch_size")
    def _validate_count(self, proposal):
        if proposal.value < 1:
            raise ValueError(f"Mailer.{proposal.trait.name} must be at least 1.")
        return proposal.value

    @validate("smtp_ca_file")
    def _validate_ca_file(self, proposal):
        if proposal.value and not Path(proposal.value).is_file():
            raise ValueError(f"Mailer.smtp_ca_file: {proposal.value!r} is not a file.")
        return proposal.value

    @validate("templates_path")
    def _validate_templates_path(self, proposal):
        for path in proposal.value:
            if not Path(path).is_dir():
                raise ValueError(f"Mailer.templates_path: {path!r} is not a directory.")
        return proposal.value

    # ---- rendering -------------------------------------------------------------
    _env = None

    @observe("templates_path", "brand_name", "brand_url", "brand_logo_url")
    def _reset_env(self, change):
        self._env = None

    @property
    def env(self) -> SandboxedEnvironment:
        if self._env is None:
            self._env = make_email_env(
                self.templates_path,
                {
                    "brand_name": self.brand_name,
                    "brand_url": self.brand_url,
                    "brand_logo_url": self.brand_logo_url,
                },
            )
        return self._env

    def render(self, template: str, context: dict) -> RenderedEmail:
        return render_email(template, context, env=self.env)

    def build_message(
        self, to: str, rendered: RenderedEmail, *, message_id: str | None = None
    ) -> EmailMessage:
        """A multipart/alternative message (text, then HTML when the template has one)."""
        msg = EmailMessage()
        msg["From"] = formataddr((self.brand_name, self.from_address))
        msg["To"] = to
        if self.reply_to:
            msg["Reply-To"] = self.reply_to
        msg["Subject"] = rendered.subject
        msg["Date"] = format_datetime(datetime.now(timezone.utc))
        msg["Message-ID"] = message_id or _make_msgid(self.from_address)
        # RFC 3834: out-of-office robots must not answer
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(rendered.text)
        if rendered.html is not None:
            msg.add_alternative(rendered.html, subtype="html")
        return msg

    # ---- retries ---------------------------------------------------------------
    def backoff(self, attempts: int, rng: random.Random | None = None) -> timedelta:
        """Wait before the attempt following ``attempts`` failures: exponential, capped at
        ``backoff_max``, with jitter in [75%, 100%] so that a crowd of messages failing together
        does not hit the server together again."""
        delay = min(self.backoff_max, self.backoff_base * 2 ** max(attempts - 1, 0))
        return timedelta(seconds=delay * (rng or random).uniform(0.75, 1.0))

    # ---- SMTP ------------------------------------------------------------------
    def _client(self) -> aiosmtplib.SMTP:
        if self.smtp_username and not self.smtp_password:
            raise MailError(
                "Mailer.smtp_username is set but there is no password: set Mailer.smtp_password "
                f"or the environment variable {ENV_SMTP_PASSWORD}."
            )
        return aiosmtplib.SMTP(
            hostname=self.smtp_host,
            port=self.smtp_port,
            username=self.smtp_username or None,
            password=self.smtp_password or None,
            use_tls=self.smtp_security == "tls",
            start_tls=self.smtp_security == "starttls",
            validate_certs=self.smtp_validate_certs,
            cert_bundle=self.smtp_ca_file or None,
            timeout=self.timeout,
        )

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[aiosmtplib.SMTP]:
        """One SMTP connection (TLS and login as configured) for several ``send_message``."""
        client = self._client()
        await client.connect()
        try:
            yield client
        finally:
            try:
                await client.quit()
            except Exception:  # the connection may already be gone; keep the first error
                client.close()

    async def send(self, message: EmailMessage) -> None:
        """Send one message now (own connection). Raises aiosmtplib's errors."""
        async with self.connect() as client:
            await client.send_message(message)


def _make_msgid(from_address: str, unique: str | None = None) -> str:
    domain = from_address.rpartition("@")[2] or "localhost"
    if unique is None:
        unique = f"{datetime.now(timezone.utc):%Y%m%d%H%M%S%f}.{random.getrandbits(64):016x}"
    return f"<wod-{unique}@{domain}>"


def outbox_message_id(from_address: str, outbox_id: int, created_at: datetime) -> str:
    """A Message-ID stable across retries of one outbox row: a duplicate after a crash
    threads with (and is deduplicated against) the first copy."""
    return _make_msgid(from_address, f"{outbox_id}.{created_at:%Y%m%d%H%M%S%f}")


# ---- the outbox, re-exported (imported lazily: outbox imports this module) -----------
_OUTBOX_NAMES = ("enqueue", "MailSender", "retry_message", "outbox_stats", "CancelMessage")


def __getattr__(name):
    if name in _OUTBOX_NAMES:
        from . import outbox

        return getattr(outbox, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
