"""wod-hub's own tables (never JupyterHub's private ORM).

One declarative base, one metadata, its own alembic version table
(``wod_alembic_version``) so it can share a database with the hub.

Times are stored as naive UTC datetimes (SQLite keeps no zone); use
:func:`utcnow` everywhere so tests can move the clock.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Naive UTC now. Module level so tests can monkeypatch it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


# Named constraints: alembic's SQLite batch mode can only drop/alter what has a name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class State(str, enum.Enum):
    """Registration states; every transition is recorded in ``events``."""

    registered = "registered"  # seat taken, nothing provisioned yet
    provisioning = "provisioning"  # spawner is rendering / starting
    active = "active"  # server ready at least once
    expired = "expired"  # time is up (or ended early): end path running
    ended = "ended"  # end path complete, seat released
    failed = "failed"  # provisioning failed: seat released, apology sent
    unregistered = "unregistered"  # participant ended early (then end path)


# States that hold a seat and count as "the" live registration of an e-mail.
LIVE_STATES = (State.registered, State.provisioning, State.active, State.expired)
LIVE_STATE_VALUES = tuple(s.value for s in LIVE_STATES)
# States in which the participant may sign in and use their server (before expiry).
RUNNING_STATE_VALUES = (State.registered.value, State.provisioning.value, State.active.value)


class Participant(Base):
    __tablename__ = "wod_participants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # normalized (lower-cased) address; unique
    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    first_name: Mapped[str] = mapped_column(String(100), nullable=False)
    last_name: Mapped[str] = mapped_column(String(100), nullable=False)
    company: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    consent_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)

    registrations: Mapped[list[Registration]] = relationship(back_populates="participant")

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class WorkshopRow(Base):
    """Per-workshop counters and switches. The catalog (files) is the source of
    truth for content; this row holds what must be atomic or admin-controlled."""

    __tablename__ = "wod_workshops"
    __table_args__ = (
        CheckConstraint("seats_in_use >= 0", name="ck_wod_workshops_in_use_nonneg"),
        CheckConstraint("seats_in_use <= capacity", name="ck_wod_workshops_in_use_le_capacity"),
    )

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # "WKSHP-Python101"
    # the capacity the seat counter is checked against; never below seats_in_use (CHECK):
    # while a lowered catalog capacity is still exceeded it equals seats_in_use, and each
    # release lowers it toward configured_capacity (see seats.py)
    capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    # the capacity as the catalog says
    configured_capacity: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    seats_in_use: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    range_min: Mapped[int] = mapped_column(Integer, nullable=False)
    range_max: Mapped[int] = mapped_column(Integer, nullable=False)
    # admin toggle: closed workshops are listed but refuse registrations
    registration_open: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


class Seat(Base):
    """One row per student account of a workshop's range. A seat is free when
    ``registration_id`` is NULL; the unique constraint on ``registration_id``
    makes one registration holding two seats impossible, the primary key makes
    one student number belonging to two workshops impossible."""

    __tablename__ = "wod_seats"
    __table_args__ = (
        Index("ix_wod_seats_free", "workshop_id", "registration_id", "student_number"),
    )

    student_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    workshop_id: Mapped[str] = mapped_column(
        String(100), ForeignKey("wod_workshops.id", ondelete="CASCADE"), nullable=False
    )
    username: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    registration_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("wod_registrations.id", ondelete="SET NULL"), unique=True, nullable=True
    )
    # bumped on every CLEANUP: derived secrets (password, PASSSTU) change with it
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # scrypt hash of the current student password; never the password itself
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # seats can be taken out of service by admins (broken account, maintenance)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    allocated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Registration(Base):
    __tablename__ = "wod_registrations"
    __table_args__ = (
        Index("ix_wod_registrations_state_expires", "state", "expires_at"),
        Index("ix_wod_registrations_workshop_created", "workshop_id", "created_at"),
        # one live registration per e-mail per workshop, enforced by the database
        Index(
            "uq_wod_registrations_live_per_workshop",
            "participant_id",
            "workshop_id",
            unique=True,
            sqlite_where=text("state IN ('registered','provisioning','active','expired')"),
            postgresql_where=text("state IN ('registered','provisioning','active','expired')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("wod_participants.id", ondelete="CASCADE"), nullable=False
    )
    workshop_id: Mapped[str] = mapped_column(String(100), nullable=False)
    student_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    username: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(20), nullable=False, default=State.registered.value)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    extended_by_participant: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    completion: Mapped[float | None] = mapped_column(Float, nullable=True)  # 0..100
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # end-path bookkeeping: each step writes its completion time, so a restart
    # resumes at the first step not done (see lifecycle.py)
    ready_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    cleaned_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    reset_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    final_mail_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # a step failure: retried with backoff, shown to admins
    step_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # claim for the lifecycle sweeper: one worker at a time
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    participant: Mapped[Participant] = relationship(back_populates="registrations")


class LoginToken(Base):
    """Single-use login links. Only a hash of the token's secret part is kept."""

    __tablename__ = "wod_login_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    registration_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("wod_registrations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    secret_hash: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class OutboxState(str, enum.Enum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"  # gave up after max attempts; admins can retry


class OutboxMessage(Base):
    """E-mails to send. The context holds no secret: login links and passwords
    are produced at send time by the secrets provider (see mail.py)."""

    __tablename__ = "wod_outbox"
    __table_args__ = (Index("ix_wod_outbox_state_next", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    to_addr: Mapped[str] = mapped_column(String(254), nullable=False)
    template: Mapped[str] = mapped_column(String(100), nullable=False)
    context: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    registration_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("wod_registrations.id", ondelete="SET NULL"), nullable=True, index=True
    )
    # e.g. "reg:42:reminder": the same logical e-mail is never queued twice
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    state: Mapped[str] = mapped_column(
        String(20), nullable=False, default=OutboxState.pending.value
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # rendered subject kept for the admin outbox view (never secrets)
    subject: Mapped[str | None] = mapped_column(String(300), nullable=True)


class Badge(Base):
    __tablename__ = "wod_badges"
    __table_args__ = (
        UniqueConstraint("participant_id", "badge", name="uq_wod_badges_participant_badge"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("wod_participants.id", ondelete="CASCADE"), nullable=False
    )
    badge: Mapped[str] = mapped_column(String(50), nullable=False)
    # public, unguessable id for the shareable badge page
    public_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    awarded_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


class Event(Base):
    """Audit log: who did what to which registration, when."""

    __tablename__ = "wod_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(
        String(100), nullable=False
    )  # "participant", "admin:alice", "lifecycle"
    kind: Mapped[str] = mapped_column(String(50), nullable=False)
    registration_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("wod_registrations.id", ondelete="SET NULL"), nullable=True, index=True
    )
    detail: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)


class AdminAccount(Base):
    """Admins created with ``wod-hub admin create``; password stored as a hash."""

    __tablename__ = "wod_admin_accounts"

    username: Mapped[str] = mapped_column(String(100), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
