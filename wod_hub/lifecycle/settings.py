"""Hub-side lifecycle options: ``c.LifecycleSettings.*`` in jupyterhub_config.py."""

from __future__ import annotations

from traitlets import Bool, Dict, Float, Integer, Unicode, validate
from traitlets.config import LoggingConfigurable

from .core import DEFAULT_SPECIAL_BADGES, BadgeLevel, badge_levels

# ---- hub-side settings --------------------------------------------------------------------


class LifecycleSettings(LoggingConfigurable):
    """Hub-side lifecycle options (set them in jupyterhub_config.py as
    ``c.LifecycleSettings.<name>``); the schedule itself is the service's
    (``c.LifecycleService``)."""

    special_badges = Dict(
        key_trait=Integer(),
        value_trait=Unicode(),
        default_value=dict(DEFAULT_SPECIAL_BADGES),
        help="""Special badges: number of completed workshops -> badge name. Each is awarded
        once per participant, with an e-mail and a public badge page. Empty: none.""",
    ).tag(config=True)

    badge_min_completion = Float(
        50.0,
        help="""A workshop counts as completed for special badges when at least this percentage
        of its code cells was run (sessions whose completion is unknown count when they ran to
        the end). 0 counts every session that ended.""",
    ).tag(config=True)

    hook_timeout = Float(
        300.0,
        help="Seconds a cleanup or reset hook may run before it is killed and the step retried.",
    ).tag(config=True)

    wipe_home = Bool(
        True,
        help="""PURGE wipes the student's home (local spawners) so the next participant of the seat
        starts clean. Disable only if the spawner re-creates homes itself.""",
    ).tag(config=True)

    kill_processes = Bool(
        True,
        help="""PURGE kills the processes the student's system account still runs (local spawners
        with one system user per student; never root or the hub's own user).""",
    ).tag(config=True)

    @validate("special_badges")
    def _validate_badges(self, proposal):
        for count, name in proposal["value"].items():
            if count < 1 or not name.strip():
                raise ValueError(
                    f"LifecycleSettings.special_badges: {count!r}: {name!r} needs a count >= 1 and a name"
                )
        return proposal["value"]

    @validate("badge_min_completion")
    def _validate_min(self, proposal):
        if not 0 <= proposal["value"] <= 100:
            raise ValueError("LifecycleSettings.badge_min_completion must be between 0 and 100")
        return proposal["value"]

    @property
    def levels(self) -> list[BadgeLevel]:
        return badge_levels(self.special_badges)
