"""The pure core of the lifecycle: no hub, no database, no clock it is not given."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, or_

from ..orm import Participant, Registration, State

log = logging.getLogger("wod_hub.lifecycle")

# ---- states and steps ------------------------------------------------------------

#: states in which the session runs (the clock is ticking)
RUNNING_STATES = (State.registered.value, State.provisioning.value, State.active.value)
#: states in which the end path runs
ENDING_STATES = (State.expired.value, State.unregistered.value)

END_STEPS = ("stop", "cleanup", "reset", "purge", "final_mail", "end")
STEP_COLUMNS = {
    "stop": "stopped_at",
    "cleanup": "cleaned_at",
    "reset": "reset_at",
    "purge": "purged_at",
    "final_mail": "final_mail_at",
    "end": "ended_at",
}

DEFAULT_SPECIAL_BADGES = {3: "Apprentice", 5: "Expert", 7: "Hero", 10: "Super Hero", 15: "Legend"}


class LifecycleError(Exception):
    """A lifecycle request that cannot be honoured; ``str(e)`` says what to do."""


class NotClaimed(LifecycleError):
    """The registration is claimed by another worker (or the claim expired)."""


class TooLate(LifecycleError):
    """The session has already ended (or its end path started)."""


class NotAllowed(LifecycleError):
    """The workshop does not allow it, or it was already used."""


def next_step(registration: Registration, *, needs_reset: bool) -> str | None:
    """The first end-path step not done yet, or None when the path is complete."""
    if registration.ended_at is not None:
        return None
    for step in END_STEPS:
        if step == "reset" and not needs_reset:
            continue
        if getattr(registration, STEP_COLUMNS[step]) is None:
            return step
    return None


def due_action(registration: Registration, now: datetime, reminder_before: timedelta) -> str | None:
    """``"end"`` (end path due or running), ``"reminder"``, or None."""
    state = registration.state
    if state in ENDING_STATES:
        if registration.ended_at is not None:
            return None
        if registration.next_attempt_at is not None and registration.next_attempt_at > now:
            return None
        return "end"
    if state not in RUNNING_STATES:
        return None
    if registration.expires_at <= now:
        if registration.next_attempt_at is not None and registration.next_attempt_at > now:
            return None
        return "end"
    if registration.expires_at - reminder_before <= now and reminder_allowed(
        registration.reminded_at, now, reminder_before
    ):
        return "reminder"
    return None


def reminder_allowed(reminded_at: datetime | None, now: datetime, reminder_before: timedelta):
    """A reminder goes out in the last ``reminder_before`` of a session, unless one went out
    within the last ``reminder_before``: once per session, and once more before a new end
    after an extension (never right after the participant extended)."""
    return reminded_at is None or reminded_at <= now - reminder_before


def reminder_allowed_clause(now: datetime, reminder_before: timedelta):
    """The SQL twin of :func:`reminder_allowed`."""
    R = Registration
    return or_(R.reminded_at.is_(None), R.reminded_at <= now - reminder_before)


def due_clause(now: datetime, reminder_before: timedelta):
    """The SQL twin of :func:`due_action` (for the index on state + expires_at)."""
    R = Registration
    retry_ok = or_(R.next_attempt_at.is_(None), R.next_attempt_at <= now)
    return or_(
        and_(R.state.in_(ENDING_STATES), R.ended_at.is_(None), retry_ok),
        and_(R.state.in_(RUNNING_STATES), R.expires_at <= now, retry_ok),
        and_(
            R.state.in_(RUNNING_STATES),
            reminder_allowed_clause(now, reminder_before),
            R.expires_at > now,
            R.expires_at <= now + reminder_before,
        ),
    )


def backoff(attempts: int, base: float = 30.0, cap: float = 1800.0) -> timedelta:
    """Retry delay after ``attempts`` failures: base * 2^(n-1), capped."""
    return timedelta(seconds=min(cap, base * 2 ** max(0, attempts - 1)))


_USER_PATH = re.compile(r"/(?:user|spawn|spawn-pending)/(student\d+)(?:[/?#]|$)")


def username_in_path(path: str) -> str | None:
    """The student whose server a URL path points at (``/user/student3/lab``), if any."""
    m = _USER_PATH.search(path or "")
    return m[1] if m else None


# ---- completion --------------------------------------------------------------------------


def notebook_cells(notebook: dict) -> tuple[int, int]:
    """(executed, total) code cells of a notebook's JSON. Empty cells do not count."""
    executed = total = 0
    for cell in notebook.get("cells") or ():
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source") or ""
        if isinstance(source, list):
            source = "".join(source)
        if not source.strip():
            continue
        total += 1
        if cell.get("execution_count") is not None:
            executed += 1
    return executed, total


def completion_percent(counts: Iterable[tuple[int, int]]) -> float | None:
    """Executed / total code cells over several notebooks, in percent (None: no code)."""
    executed = total = 0
    for e, t in counts:
        executed += e
        total += t
    if total == 0:
        return None
    return round(100.0 * executed / total, 1)


def find_notebooks(
    home: Path, workshop_notebooks: Iterable[str] = (), limit: int = 500
) -> list[Path]:
    """The student's notebooks under ``home``: those matching the workshop's notebook
    paths (wherever the spawner put the workshop folder), else every notebook."""
    found: list[Path] = []
    if not home.is_dir():
        return found
    for path in sorted(home.rglob("*.ipynb")):
        rel = path.relative_to(home)
        if any(part.startswith(".") for part in rel.parts):  # .ipynb_checkpoints, dot dirs
            continue
        found.append(path)
        if len(found) >= limit:
            break
    wanted = tuple(n.lstrip("/") for n in workshop_notebooks)
    if wanted:
        matching = [p for p in found if p.relative_to(home).as_posix().endswith(wanted)]
        if matching:
            return matching
    return found


def completion_from_home(home: Path, workshop_notebooks: Iterable[str] = ()) -> float | None:
    """Completion % of a student's home (blocking: call it in a thread)."""
    counts = []
    for path in find_notebooks(home, workshop_notebooks):
        try:
            counts.append(notebook_cells(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, AttributeError) as e:
            log.warning("Completion: cannot read %s: %s", path, e)
    return completion_percent(counts)


# ---- badges ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadgeLevel:
    threshold: int
    name: str

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def badge_levels(config: dict[int, str] | None = None) -> list[BadgeLevel]:
    """Configured thresholds (completed workshops -> badge name), sorted."""
    levels = config if config is not None else DEFAULT_SPECIAL_BADGES
    return [
        BadgeLevel(int(n), str(name))
        for n, name in sorted(levels.items(), key=lambda kv: int(kv[0]))
    ]


def badges_reached(completed: int, levels: Iterable[BadgeLevel]) -> list[BadgeLevel]:
    return [level for level in levels if completed >= level.threshold]


def counts_as_completed(registration: Registration, min_completion: float) -> bool:
    """A workshop counts toward special badges once its session ended with at least
    ``min_completion`` % of the code run (unknown completion counts for a full session)."""
    if registration.state != State.ended.value and registration.final_mail_at is None:
        return False
    if registration.completion is None:
        return registration.ended_reason in (None, "expired")
    return registration.completion >= min_completion


# ---- e-mail contexts (no secret ever: see mail.TEMPLATE_CONTEXT) --------------------------


def iso_z(when: datetime) -> str:
    return when.replace(microsecond=0).isoformat() + "Z"


def workshop_context(participant: Participant, registration: Registration, workshop) -> dict:
    return {
        "first_name": participant.first_name,
        "last_name": participant.last_name,
        "workshop_id": registration.workshop_id,
        "workshop_name": getattr(workshop, "name", None) or registration.workshop_id,
        "workshop_image": getattr(workshop, "workshop_image", None),
    }


def reminder_context(
    participant, registration, workshop, *, now: datetime, hub_url: str, home_url: str
) -> dict:
    minutes_left = max(0, int((registration.expires_at - now).total_seconds() // 60))
    extension = getattr(workshop, "extension", timedelta(0)) or timedelta(0)
    can_extend = extension > timedelta(0) and not registration.extended_by_participant
    return {
        **workshop_context(participant, registration, workshop),
        "expires_at": iso_z(registration.expires_at),
        "minutes_left": minutes_left,
        "hub_url": hub_url,
        "extend_url": home_url if can_extend else None,
        "extend_minutes": int(extension.total_seconds() // 60) if can_extend else None,
    }


def final_context(
    participant, registration, workshop, *, register_url: str, survey_url: str | None
) -> dict:
    completion = registration.completion
    return {
        **workshop_context(participant, registration, workshop),
        "register_url": register_url,
        "completion": None if completion is None else int(round(completion)),
        "survey_url": survey_url or None,
        "badge_image_url": getattr(workshop, "badge_image", None),
        "replay_url": getattr(workshop, "replay_link", None),
    }


def special_badge_context(
    participant, level: BadgeLevel, *, badge_url: str, image_url: str, completed: int
) -> dict:
    return {
        "first_name": participant.first_name,
        "last_name": participant.last_name,
        "badge_name": level.name,
        "badge_url": badge_url,
        "badge_image_url": image_url,
        "workshops_completed": completed,
    }
