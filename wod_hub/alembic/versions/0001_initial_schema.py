"""initial schema: every wod-hub table, as in wod_hub/orm.py (kept equal by
tests/test_db.py::test_migration_matches_orm)

Revision ID: 0001
Revises:
Create Date: 2026-11-22 07:58:32.756294
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "wod_admin_accounts",
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_wod_admin_accounts")),
    )
    op.create_table(
        "wod_participants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=False),
        sa.Column("last_name", sa.String(length=100), nullable=False),
        sa.Column("company", sa.String(length=200), nullable=False),
        sa.Column("consent_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wod_participants")),
        sa.UniqueConstraint("email", name=op.f("uq_wod_participants_email")),
    )
    op.create_table(
        "wod_workshops",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("configured_capacity", sa.Integer(), nullable=False),
        sa.Column("seats_in_use", sa.Integer(), nullable=False),
        sa.Column("range_min", sa.Integer(), nullable=False),
        sa.Column("range_max", sa.Integer(), nullable=False),
        sa.Column("registration_open", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("seats_in_use <= capacity", name="ck_wod_workshops_in_use_le_capacity"),
        sa.CheckConstraint("seats_in_use >= 0", name="ck_wod_workshops_in_use_nonneg"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wod_workshops")),
    )
    op.create_table(
        "wod_badges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("badge", sa.String(length=50), nullable=False),
        sa.Column("public_id", sa.String(length=64), nullable=False),
        sa.Column("awarded_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["wod_participants.id"],
            name=op.f("fk_wod_badges_participant_id_wod_participants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wod_badges")),
        sa.UniqueConstraint("participant_id", "badge", name="uq_wod_badges_participant_badge"),
        sa.UniqueConstraint("public_id", name=op.f("uq_wod_badges_public_id")),
    )
    op.create_table(
        "wod_registrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("workshop_id", sa.String(length=100), nullable=False),
        sa.Column("student_number", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(length=100), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("extended_by_participant", sa.Boolean(), nullable=False),
        sa.Column("completion", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column("ready_at", sa.DateTime(), nullable=True),
        sa.Column("reminded_at", sa.DateTime(), nullable=True),
        sa.Column("ended_reason", sa.String(length=40), nullable=True),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.Column("cleaned_at", sa.DateTime(), nullable=True),
        sa.Column("reset_at", sa.DateTime(), nullable=True),
        sa.Column("purged_at", sa.DateTime(), nullable=True),
        sa.Column("final_mail_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("step_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["wod_participants.id"],
            name=op.f("fk_wod_registrations_participant_id_wod_participants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wod_registrations")),
    )
    with op.batch_alter_table("wod_registrations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_wod_registrations_state_expires", ["state", "expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_wod_registrations_username"), ["username"], unique=False
        )
        batch_op.create_index(
            "ix_wod_registrations_workshop_created", ["workshop_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "uq_wod_registrations_live_per_workshop",
            ["participant_id", "workshop_id"],
            unique=True,
            sqlite_where=sa.text("state IN ('registered','provisioning','active','expired')"),
            postgresql_where=sa.text("state IN ('registered','provisioning','active','expired')"),
        )

    op.create_table(
        "wod_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("registration_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["wod_registrations.id"],
            name=op.f("fk_wod_events_registration_id_wod_registrations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wod_events")),
    )
    with op.batch_alter_table("wod_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_wod_events_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_wod_events_registration_id"), ["registration_id"], unique=False
        )

    op.create_table(
        "wod_login_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("registration_id", sa.Integer(), nullable=False),
        sa.Column("secret_hash", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["wod_registrations.id"],
            name=op.f("fk_wod_login_tokens_registration_id_wod_registrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wod_login_tokens")),
    )
    with op.batch_alter_table("wod_login_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_wod_login_tokens_registration_id"), ["registration_id"], unique=False
        )

    op.create_table(
        "wod_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("to_addr", sa.String(length=254), nullable=False),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("registration_id", sa.Integer(), nullable=True),
        sa.Column("dedupe_key", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("subject", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["wod_registrations.id"],
            name=op.f("fk_wod_outbox_registration_id_wod_registrations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wod_outbox")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_wod_outbox_dedupe_key")),
    )
    with op.batch_alter_table("wod_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_wod_outbox_registration_id"), ["registration_id"], unique=False
        )
        batch_op.create_index(
            "ix_wod_outbox_state_next", ["state", "next_attempt_at"], unique=False
        )

    op.create_table(
        "wod_seats",
        sa.Column("student_number", sa.Integer(), nullable=False),
        sa.Column("workshop_id", sa.String(length=100), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("registration_id", sa.Integer(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("allocated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["wod_registrations.id"],
            name=op.f("fk_wod_seats_registration_id_wod_registrations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["workshop_id"],
            ["wod_workshops.id"],
            name=op.f("fk_wod_seats_workshop_id_wod_workshops"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("student_number", name=op.f("pk_wod_seats")),
        sa.UniqueConstraint("registration_id", name=op.f("uq_wod_seats_registration_id")),
        sa.UniqueConstraint("username", name=op.f("uq_wod_seats_username")),
    )
    with op.batch_alter_table("wod_seats", schema=None) as batch_op:
        batch_op.create_index(
            "ix_wod_seats_free", ["workshop_id", "registration_id", "student_number"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("wod_seats", schema=None) as batch_op:
        batch_op.drop_index("ix_wod_seats_free")

    op.drop_table("wod_seats")
    with op.batch_alter_table("wod_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_wod_outbox_state_next")
        batch_op.drop_index(batch_op.f("ix_wod_outbox_registration_id"))

    op.drop_table("wod_outbox")
    with op.batch_alter_table("wod_login_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wod_login_tokens_registration_id"))

    op.drop_table("wod_login_tokens")
    with op.batch_alter_table("wod_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wod_events_registration_id"))
        batch_op.drop_index(batch_op.f("ix_wod_events_at"))

    op.drop_table("wod_events")
    with op.batch_alter_table("wod_registrations", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_wod_registrations_live_per_workshop",
            sqlite_where=sa.text("state IN ('registered','provisioning','active','expired')"),
            postgresql_where=sa.text("state IN ('registered','provisioning','active','expired')"),
        )
        batch_op.drop_index("ix_wod_registrations_workshop_created")
        batch_op.drop_index(batch_op.f("ix_wod_registrations_username"))
        batch_op.drop_index("ix_wod_registrations_state_expires")

    op.drop_table("wod_registrations")
    op.drop_table("wod_badges")
    op.drop_table("wod_workshops")
    op.drop_table("wod_participants")
    op.drop_table("wod_admin_accounts")
