"""Time-bombed sessions: the registration state machine and the end-path steps.

The pure core (no hub, no clock it is not given) decides what is due
(:func:`due_action`), which end-path step comes next (:func:`next_step`), how
complete a workshop was (:func:`completion_from_home`), which special badges a
count of completed workshops earns (:func:`badges_reached`), and builds the
e-mail contexts (:mod:`.core`). The step functions take a session (:mod:`.steps`): the hub calls them
from ``/hub/api/wod/lifecycle/...`` (see :mod:`wod_hub.handlers.api_lifecycle`)
on behalf of the ``wod-hub-lifecycle`` service (:mod:`wod_hub.service`).

End path (each step writes its timestamp, so a restart resumes at the first
step not done)::

    begin   state -> expired (or stays unregistered); the seat's password is
            rotated and login links revoked at once (no window to log in again)
    stop    the service stops the server through the hub API   -> stopped_at
    cleanup cleanup hook, completion % from the notebooks      -> cleaned_at
    reset   reset hook, only for workshops with ``reset: true`` -> reset_at
    purge   kill leftover processes, wipe the home, delete the hub user
            (cookies, tokens), seat back                        -> purged_at
    final   the final (or ended_early) e-mail and special badges -> final_mail_at
    end     state -> ended                                      -> ended_at

Every write is a conditional UPDATE guarded by the worker's claim and by the
step's timestamp still being NULL: two workers, a retry or a replay never do a
step twice, and e-mails carry dedupe keys in the same transaction.
"""

from ..orm import State
from .core import (
    DEFAULT_SPECIAL_BADGES,
    END_STEPS,
    ENDING_STATES,
    RUNNING_STATES,
    STEP_COLUMNS,
    BadgeLevel,
    LifecycleError,
    NotAllowed,
    NotClaimed,
    TooLate,
    backoff,
    badge_levels,
    badges_reached,
    completion_from_home,
    completion_percent,
    counts_as_completed,
    due_action,
    due_clause,
    final_context,
    find_notebooks,
    iso_z,
    next_step,
    notebook_cells,
    reminder_allowed,
    reminder_context,
    special_badge_context,
    username_in_path,
    workshop_context,
)
from .settings import LifecycleSettings
from .steps import (
    award_badges,
    begin_end,
    claim,
    completed_workshops,
    end_soon,
    event,
    extend,
    finish,
    live_registration_of,
    lock_out,
    mark_reminded,
    mark_step,
    participant_of,
    queue_end_mail,
    record_failure,
    release,
    require_claim,
    unregister,
)

__all__ = [
    "DEFAULT_SPECIAL_BADGES",
    "END_STEPS",
    "ENDING_STATES",
    "RUNNING_STATES",
    "STEP_COLUMNS",
    "BadgeLevel",
    "LifecycleError",
    "LifecycleSettings",
    "NotAllowed",
    "NotClaimed",
    "State",
    "TooLate",
    "award_badges",
    "backoff",
    "badge_levels",
    "badges_reached",
    "begin_end",
    "claim",
    "completed_workshops",
    "completion_from_home",
    "completion_percent",
    "counts_as_completed",
    "due_action",
    "due_clause",
    "reminder_allowed",
    "end_soon",
    "event",
    "extend",
    "final_context",
    "find_notebooks",
    "finish",
    "iso_z",
    "live_registration_of",
    "lock_out",
    "mark_reminded",
    "mark_step",
    "next_step",
    "notebook_cells",
    "participant_of",
    "queue_end_mail",
    "record_failure",
    "release",
    "reminder_context",
    "require_claim",
    "special_badge_context",
    "unregister",
    "username_in_path",
    "workshop_context",
]
