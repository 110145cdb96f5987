"""The registration use case: validate the form, then in ONE write transaction
create/refresh the participant, the registration, take a seat and queue the
welcome e-mail. Either everything is stored or nothing is (no seat or e-mail
lost, no half-done state).

Pure of the hub: the handler wires it to JupyterHub and creates the hub user.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from . import seats as seats_mod
from .orm import LIVE_STATE_VALUES, Event, Participant, Registration, State, utcnow

# Well-known disposable / throw-away e-mail domains. Operators extend this with
# WorkshopAuthenticator.denied_email_domains.
DISPOSABLE_DOMAINS = frozenset(
    """
    10minutemail.com 20minutemail.com 33mail.com anonaddy.me burnermail.io discard.email
    dispostable.com emailondeck.com fakeinbox.com getairmail.com getnada.com guerrillamail.biz
    guerrillamail.com guerrillamail.de guerrillamail.net guerrillamail.org guerrillamailblock.com
    harakirimail.com incognitomail.org jetable.org mailcatch.com maildrop.cc mailinator.com
    mailinator.net mailnesia.com mailnull.com mintemail.com moakt.com mohmal.com mytemp.email
    nada.email sharklasers.com spam4.me spambog.com spamgourmet.com temp-mail.io temp-mail.org
    tempail.com tempmail.com tempmail.dev tempmailo.com tempr.email throwawaymail.com trashmail.com
    trashmail.de trashmail.net yopmail.com yopmail.fr yopmail.net
    """.split()
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FormError(ValueError):
    """Invalid form input: ``errors`` maps a field to a message a person can act on."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class AlreadyRegistered(Exception):
    """The e-mail already holds a live registration (per workshop, or overall)."""

    def __init__(self, workshop_id: str):
        self.workshop_id = workshop_id
        super().__init__(workshop_id)


@dataclass(frozen=True)
class FormLimits:
    max_name: int = 100
    max_company: int = 200
    max_email: int = 254


def _clean_text(value: str | None) -> str:
    value = unicodedata.normalize("NFC", (value or "")).strip()
    return re.sub(r"\s+", " ", value)


@dataclass(frozen=True)
class RegistrationForm:
    email: str  # normalized: lower-cased
    first_name: str
    last_name: str
    company: str
    workshop_id: str

    @classmethod
    def parse(
        cls,
        data: dict[str, str],
        *,
        workshop_ids: Iterable[str],
        denied_domains: Iterable[str] = (),
        require_company: bool = True,
        limits: FormLimits = FormLimits(),
    ) -> RegistrationForm:
        """Validate raw form fields; raise :class:`FormError` listing every problem."""
        errors: dict[str, str] = {}
        raw_email = (data.get("email") or "").strip()
        email = ""
        if not raw_email:
            errors["email"] = "Enter your e-mail address."
        elif len(raw_email) > limits.max_email:
            errors["email"] = f"An e-mail address has at most {limits.max_email} characters."
        else:
            try:
                info = validate_email(raw_email, check_deliverability=False)
            except EmailNotValidError as e:
                errors["email"] = f"This e-mail address is not valid: {e}"
            else:
                email = info.normalized.lower()
                domain = info.ascii_domain.lower()
                denied = {d.lower().lstrip("@") for d in denied_domains} | DISPOSABLE_DOMAINS
                if any(domain == d or domain.endswith("." + d) for d in denied):
                    errors["email"] = (
                        f"Addresses at {domain} cannot register (disposable or blocked domain). "
                        "Use your work or personal address."
                    )

        fields = {}
        for name, label, required, maxlen in (
            ("first_name", "first name", True, limits.max_name),
            ("last_name", "last name", True, limits.max_name),
            ("company", "company", require_company, limits.max_company),
        ):
            value = _clean_text(data.get(name))
            if _CONTROL.search(data.get(name) or ""):
                errors[name] = f"Your {label} contains characters that are not allowed."
            elif required and not value:
                errors[name] = f"Enter your {label}."
            elif len(value) > maxlen:
                errors[name] = f"Your {label} is too long (at most {maxlen} characters)."
            fields[name] = value

        workshop_id = (data.get("workshop") or "").strip()
        if not workshop_id:
            errors["workshop"] = "Choose a workshop."
        elif workshop_id not in set(workshop_ids):
            errors["workshop"] = "This workshop does not exist or is not open for registration."

        if (data.get("terms") or "").lower() not in ("on", "true", "1", "yes"):
            errors["terms"] = "Accept the terms and conditions to register."

        if errors:
            raise FormError(errors)
        return cls(email=email, workshop_id=workshop_id, **fields)


@dataclass
class RegistrationResult:
    registration_id: int
    workshop_id: str
    student_number: int
    username: str
    email: str
    expires_at: datetime
    seat_generation: int


def register_sync(
    session: Session,
    form: RegistrationForm,
    *,
    duration: timedelta,
    one_per_email_overall: bool = False,
    client_ip: str | None = None,
    password_hash_for=None,
    on_registered=None,
    now: datetime | None = None,
) -> RegistrationResult:
    """Run inside the caller's write transaction: sync code, for
    ``db.run_write(register_sync, form, ...)`` (on SQLite the whole transaction runs in a
    worker thread, never waiting on the event loop while it holds the write lock);
    :func:`register` is the same in an async session.

    ``password_hash_for(workshop_id, student_number, generation) -> str`` gives
    the stored hash of the seat's derived password; ``on_registered(session,
    result)`` (a plain function, given the sync session) queues e-mails in the same
    transaction. Raises
    ``seats.WorkshopFull`` / ``seats.RegistrationClosed`` / :class:`AlreadyRegistered`;
    the caller's transaction then rolls back and nothing is stored.
    """
    now = now or utcnow()
    participant = session.execute(
        select(Participant).where(Participant.email == form.email)
    ).scalar_one_or_none()
    if participant is None:
        participant = Participant(
            email=form.email,
            first_name=form.first_name,
            last_name=form.last_name,
            company=form.company,
            consent_at=now,
            created_at=now,
        )
        session.add(participant)
        session.flush()
    else:
        participant.first_name = form.first_name
        participant.last_name = form.last_name
        participant.company = form.company
        participant.consent_at = now

    live = select(func.count(Registration.id), func.min(Registration.workshop_id)).where(
        Registration.participant_id == participant.id,
        Registration.state.in_(LIVE_STATE_VALUES),
    )
    if not one_per_email_overall:
        live = live.where(Registration.workshop_id == form.workshop_id)
    count, existing_workshop = (session.execute(live)).one()
    if count:
        raise AlreadyRegistered(existing_workshop)

    registration = Registration(
        participant_id=participant.id,
        workshop_id=form.workshop_id,
        state=State.registered.value,
        created_at=now,
        expires_at=now + duration,
        client_ip=client_ip,
    )
    session.add(registration)
    session.flush()

    seat = seats_mod.allocate_seat_sync(session, form.workshop_id, registration.id)
    registration.student_number = seat.student_number
    registration.username = seat.username
    if password_hash_for is not None:
        seat.password_hash = password_hash_for(
            form.workshop_id, seat.student_number, seat.generation
        )
    session.add(
        Event(
            at=now,
            actor="participant",
            kind="registered",
            registration_id=registration.id,
            detail={"workshop": form.workshop_id, "student": seat.username},
        )
    )
    result = RegistrationResult(
        registration_id=registration.id,
        workshop_id=form.workshop_id,
        student_number=seat.student_number,
        username=seat.username,
        email=form.email,
        expires_at=registration.expires_at,
        seat_generation=seat.generation,
    )
    if on_registered is not None:
        on_registered(session, result)
    session.flush()
    return result


async def register(session: AsyncSession, form: RegistrationForm, **kwargs) -> RegistrationResult:
    """:func:`register_sync` in an async session (the caller's write transaction)."""
    return await session.run_sync(register_sync, form, **kwargs)
