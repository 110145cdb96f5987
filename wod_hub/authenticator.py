"""WorkshopAuthenticator: the login page is the workshop catalog.

Participants register (no password to choose) and log in with a signed,
single-use link from their e-mail, or with their student name and generated
password. Admins sign in on the same page with a password whose hash is in the
config (``admin_password_hashes``) or created with ``wod-hub admin create``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from jupyterhub.auth import Authenticator
from sqlalchemy import select
from tornado import web
from traitlets import Bool, Dict, Enum, Float, Instance, Integer, List, Unicode, default, validate

from . import tokens
from .mail import Mailer
from .orm import RUNNING_STATE_VALUES, AdminAccount, Registration, Seat, utcnow

TEMPLATE_DIR = Path(__file__).parent / "templates"


class WorkshopAuthenticator(Authenticator):
    # ---- catalog and storage ------------------------------------------------
    workshop_dirs = List(
        Unicode(),
        default_value=["workshops"],
        help="""Directories holding workshop folders (WKSHP-*/), loaded in order:
        put the public content first and a private overlay last (later directories
        add workshops and override variables).""",
    ).tag(config=True)

    db_url = Unicode(
        help="""Database URL for wod-hub's own tables, e.g. ``sqlite:////srv/jupyterhub/wod_hub.sqlite``
        or ``postgresql://wod@db/wod``. Default: ``wod_hub.sqlite`` next to the hub's SQLite database
        (or in the working directory).""",
    ).tag(config=True)

    @default("db_url")
    def _db_url_default(self):
        hub_url = getattr(self.parent, "db_url", "") or ""
        if hub_url.startswith("sqlite:///") and len(hub_url) > len("sqlite:///"):
            hub_path = Path(hub_url[len("sqlite:///") :])
            return f"sqlite:///{hub_path.parent.resolve() / 'wod_hub.sqlite'}"
        return f"sqlite:///{Path.cwd() / 'wod_hub.sqlite'}"

    secret_key = Unicode(
        help="""Hex-encoded key signing login links and deriving student passwords (at least 32 bytes).
        Default: env ``WOD_HUB_SECRET_KEY``, else the file ``secret_key_file`` (created on first start).
        Changing it invalidates every login link and student password.""",
    ).tag(config=True)

    secret_key_file = Unicode(
        "wod_hub_secret",
        help="File holding the secret key when neither `secret_key` nor env WOD_HUB_SECRET_KEY is set (mode 0600).",
    ).tag(config=True)

    @default("secret_key")
    def _secret_key_default(self):
        return os.environ.get("WOD_HUB_SECRET_KEY", "")

    @validate("secret_key")
    def _validate_secret_key(self, proposal):
        value = proposal["value"].strip()
        if value:
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raise ValueError("WorkshopAuthenticator.secret_key must be hex-encoded") from None
            if len(raw) < 32:
                raise ValueError(
                    "WorkshopAuthenticator.secret_key must be at least 32 bytes (64 hex digits)"
                )
        return value

    @property
    def secret_key_bytes(self) -> bytes:
        if self.secret_key:
            return bytes.fromhex(self.secret_key)
        return tokens.load_or_create_secret_key(self.secret_key_file)

    public_url = Unicode(
        help="""Public URL of the hub as participants reach it, used in e-mails and notebooks
        (e.g. ``https://workshops.example.org/``). Default: JupyterHub.public_url, else its bind_url.""",
    ).tag(config=True)

    @property
    def public_hub_url(self) -> str:
        """The hub's public URL ending in ``/hub/``."""
        base = (
            self.public_url
            or getattr(self.parent, "public_url", "")
            or getattr(self.parent, "bind_url", "")
        )
        base = base or "http://localhost:8000/"
        base = base if base.endswith("/") else base + "/"
        return base + "hub/"

    # ---- registration policy -----------------------------------------------
    denied_email_domains = List(
        Unicode(),
        help="E-mail domains that may not register, in addition to the built-in list of disposable domains.",
    ).tag(config=True)

    one_registration_per = Enum(
        ["workshop", "email"],
        default_value="workshop",
        help="""'workshop': an e-mail may hold one live registration per workshop;
        'email': one live registration in total.""",
    ).tag(config=True)

    require_company = Bool(True, help="Require the company field on the registration form.").tag(
        config=True
    )

    terms_url = Unicode(
        "",
        help="Link to the terms and conditions / privacy notice shown next to the terms checkbox.",
    ).tag(config=True)

    terms_text = Unicode(
        "I accept the terms and conditions and the privacy notice.",
        help="Label of the terms checkbox on the registration form.",
    ).tag(config=True)

    registration_limit_per_ip = Integer(
        20,
        help="Registrations accepted per client IP per `rate_limit_window` (0 disables). Excess gets HTTP 429.",
    ).tag(config=True)

    registration_limit_per_email = Integer(
        5,
        help="Registration attempts per e-mail address per `rate_limit_window` (0 disables).",
    ).tag(config=True)

    recover_limit_per_email = Integer(
        3,
        help="'Lost my link' requests per e-mail address per `rate_limit_window` (0 disables).",
    ).tag(config=True)

    rate_limit_window = Float(3600.0, help="Window of the rate limits, in seconds.").tag(
        config=True
    )

    @validate(
        "registration_limit_per_ip", "registration_limit_per_email", "recover_limit_per_email"
    )
    def _validate_limits(self, proposal):
        if proposal["value"] < 0:
            raise ValueError(
                f"WorkshopAuthenticator.{proposal['trait'].name} must be >= 0 (0 disables it)"
            )
        return proposal["value"]

    login_link_ttl = Float(
        24 * 3600.0,
        help="Longest validity of a login link, in seconds (never beyond the registration's expiry).",
    ).tag(config=True)

    popular_count = Integer(
        10, help="How many workshops get the 'Popular' ribbon (most distinct registrants)."
    ).tag(config=True)

    # ---- admins ------------------------------------------------------------------
    admin_password_hashes = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="""Admin accounts: username -> password hash made with ``wod-hub admin hash-password``.
        These users are hub admins. More admins can be created with ``wod-hub admin create``.""",
    ).tag(config=True)

    # ---- branding and mail ----------------------------------------------------
    brand_name = Unicode(
        "wod-hub", help="Brand shown in pages, e-mails and notebooks (BRANDING)."
    ).tag(config=True)
    brand_url = Unicode("", help="Brand link (BRANDINGURL).").tag(config=True)
    brand_logo_url = Unicode("", help="Brand logo image URL (BRANDINGLOGO).").tag(config=True)
    survey_url = Unicode("", help="Survey link in the final e-mail and notebooks (SURVEYURL).").tag(
        config=True
    )

    send_mail = Bool(
        True,
        help="Run the outbox sender inside the hub. Disable only when another process sends the outbox.",
    ).tag(config=True)

    mailer = Instance(Mailer)

    @default("mailer")
    def _mailer_default(self):
        return Mailer(parent=self)

    inject_templates = Bool(
        True,
        help="""Add wod-hub's templates to JupyterHub.template_paths (login page with the catalog,
        home page with the countdown). Disable to ship your own.""",
    ).tag(config=True)

    extra_template_paths = List(
        Unicode(),
        help="Directories searched before wod-hub's own templates, to override any wod-hub page.",
    ).tag(config=True)

    # ---- JupyterHub integration defaults ----------------------------------------
    @default("allow_all")
    def _allow_all_default(self):
        # only registered students and configured admins can ever authenticate
        return True

    @default("manage_groups")
    def _manage_groups_default(self):
        return True  # students are in a hub group named after their workshop

    @default("auth_refresh_age")
    def _auth_refresh_age_default(self):
        # how long a signed-in participant can outlive their session's end, at most
        return 60

    @default("auto_login")
    def _auto_login_default(self):
        return False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._wod = None
        if self.inject_templates and hasattr(self.parent, "template_paths"):
            paths = [*self.extra_template_paths, str(TEMPLATE_DIR / "hub")]
            self.parent.template_paths = paths + [
                p for p in self.parent.template_paths if p not in paths
            ]

    @property
    def wod(self):
        if self._wod is None:
            from .state import WodState

            self._wod = WodState(self)
        return self._wod

    def get_handlers(self, app):
        from .handlers import get_handlers

        self.wod.start()  # migrations + seat sync + mail sender, once, in the background
        return get_handlers()

    # ---- authentication -----------------------------------------------------
    async def authenticate(self, handler, data):
        wod = await self.wod.ready()
        if data.get("token"):
            return await self._authenticate_link(wod, data["token"])
        username = (data.get("username") or "").strip().lower()
        password = data.get("password") or ""
        if not username or not password:
            return None
        admin = await self._authenticate_admin(wod, username, password)
        if admin is not None:
            return admin
        return await self._authenticate_student(wod, username, password)

    async def _authenticate_link(self, wod, token: str):
        async with wod.db.begin_write() as session:
            try:
                registration_id = await tokens.redeem_login_token(session, wod.secret_key, token)
            except tokens.TokenError as e:
                raise web.HTTPError(403, str(e)) from None
            registration = await session.get(Registration, registration_id)
            if not _usable(registration):
                raise web.HTTPError(
                    403, "This workshop session has ended. Register again from the login page."
                )
            return self._auth_model(registration)

    async def _authenticate_admin(self, wod, username: str, password: str):
        stored = self.admin_password_hashes.get(username)
        if stored is None:
            async with wod.db.session() as session:
                account = await session.get(AdminAccount, username)
                stored = account.password_hash if account else None
        if stored is None:
            return None
        if await tokens.averify_password(password, stored):
            return {"name": username, "admin": True, "groups": []}
        return None

    async def _authenticate_student(self, wod, username: str, password: str):
        async with wod.db.session() as session:
            row = (
                await session.execute(
                    select(Registration, Seat)
                    .join(Seat, Seat.registration_id == Registration.id)
                    .where(
                        Registration.username == username,
                        Registration.state.in_(RUNNING_STATE_VALUES),
                        Registration.expires_at > utcnow(),
                    )
                )
            ).first()
        if row is None:
            # same work and answer whether or not the student exists
            secrets.compare_digest(password, "x" * 16)
            return None
        registration, seat = row
        if not seat.password_hash or not tokens.verify_generated_secret(
            password, seat.password_hash
        ):
            return None
        return self._auth_model(registration)

    @staticmethod
    def _auth_model(registration: Registration) -> dict:
        return {
            "name": registration.username,
            "admin": False,
            "groups": [registration.workshop_id],
        }

    async def delete_user(self, user):
        """A student deleted in the hub's admin panel ends its session like an expiry
        (locked out now; the lifecycle service cleans up and gives the seat back)."""
        from jupyterhub.utils import maybe_future

        await maybe_future(super().delete_user(user))
        if user.name.startswith("student"):
            from .admin_actions import hub_user_deleted

            await hub_user_deleted(await self.wod.ready(), user.name)

    async def refresh_user(self, user, handler=None):
        """A student whose registration is no longer live must log in again (and is told why)."""
        if not user.name.startswith("student") or user.admin:
            return True
        wod = await self.wod.ready()
        async with wod.db.session() as session:
            live = (
                await session.execute(
                    select(Registration.id).where(
                        Registration.username == user.name,
                        Registration.state.in_(RUNNING_STATE_VALUES),
                        Registration.expires_at > utcnow(),
                    )
                )
            ).first()
        return live is not None


def _usable(registration) -> bool:
    """May this registration sign in now? Not once expired, even while its end path
    still holds the seat."""
    return (
        registration is not None
        and registration.state in RUNNING_STATE_VALUES
        and registration.expires_at > utcnow()
    )
