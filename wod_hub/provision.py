"""What the spawners and the content endpoint share: the deployment of one registration.

- :func:`find_deployment`: the live registration behind a hub user, its workshop and the
  student context the notebooks are rendered with;
- :func:`mark_provisioning`, :func:`mark_active`, :func:`mark_failed`: the registration's
  state as its server is prepared, comes up, or cannot be deployed (seat released,
  ``deployment_failed`` e-mail queued, in one transaction);
- :func:`content_bundle`: the rendered workshop as a tar.gz (served to containers, which
  extract it with ``wod-hub fetch-content``, :mod:`wod_hub.cli.content`).

No JupyterHub import here: handlers and spawners wire these to the hub.
"""

from __future__ import annotations

import io
import logging
import stat
import tarfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from .orm import Event, Participant, Registration, State, utcnow

if TYPE_CHECKING:
    from .catalog import Workshop
    from .personalize import StudentContext

log = logging.getLogger("wod_hub.provision")

# a registration in one of these states may have a running server
SPAWNABLE_STATES = (State.registered.value, State.provisioning.value, State.active.value)
# the first deployment is not done yet: CREATE (render + hooks) runs at spawn
FRESH_STATES = (State.registered.value, State.provisioning.value)
MARKER = ".wod-content"  # in the workshop folder: which registration it was rendered for
MAX_ERROR = 2000


@dataclass(frozen=True)
class Deployment:
    registration_id: int
    state: str  # the registration's state when the spawn began
    workshop: Workshop
    context: StudentContext
    catalog_variables: dict
    email: str

    @property
    def fresh(self) -> bool:
        """True until the server has been up once: the content is (re)created."""
        return self.state in FRESH_STATES

    @property
    def content_dir(self) -> str:
        """The workshop folder's name in the student's home."""
        return self.workshop.path.name

    @property
    def first_notebook_path(self) -> str | None:
        if not self.workshop.first_notebook:
            return None
        return f"{self.content_dir}/{self.workshop.first_notebook}"


async def live_registration(session, username: str) -> Registration | None:
    """The newest registration of ``username`` whose server may run, if any."""
    return (
        (
            await session.execute(
                select(Registration)
                .where(Registration.username == username, Registration.state.in_(SPAWNABLE_STATES))
                .order_by(Registration.id.desc())
                .limit(1)
            )
        )
        .scalars()
        .first()
    )


async def find_deployment(wod, username: str) -> Deployment | None:
    """The deployment of ``username``, or None when no registration may run a server."""
    async with wod.db.session() as session:
        registration = await live_registration(session, username)
        if registration is None:
            return None
        workshop = wod.catalog.workshops.get(registration.workshop_id)
        if workshop is None:
            raise LookupError(
                f"workshop {registration.workshop_id!r} of {username} is no longer in the catalog"
            )
        context = await wod.student_context(session, registration)
        participant = await session.get(Participant, registration.participant_id)
        return Deployment(
            registration_id=registration.id,
            state=registration.state,
            workshop=workshop,
            context=context,
            catalog_variables=dict(wod.catalog.variables),
            email=participant.email,
        )


def _event(session, kind: str, registration_id: int, **detail) -> None:
    session.add(Event(actor="spawner", kind=kind, registration_id=registration_id, detail=detail))


async def mark_provisioning(db, registration_id: int) -> bool:
    """registered -> provisioning (a retry after a crash stays provisioning)."""
    async with db.begin_write() as session:
        result = await session.execute(
            update(Registration)
            .where(Registration.id == registration_id, Registration.state.in_(FRESH_STATES))
            .values(state=State.provisioning.value, error=None)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:
            _event(session, "provisioning", registration_id)
        return bool(result.rowcount)


async def mark_active(db, registration_id: int) -> bool:
    """provisioning -> active with ``ready_at``; False if it was no longer provisioning."""
    async with db.begin_write() as session:
        result = await session.execute(
            update(Registration)
            .where(Registration.id == registration_id, Registration.state.in_(FRESH_STATES))
            .values(state=State.active.value, ready_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:
            _event(session, "active", registration_id)
        return bool(result.rowcount)


async def mark_failed(wod, registration_id: int, error: str, *, register_url: str) -> bool:
    """The deployment failed: seat back, ``failed`` with the reason, an apology e-mail
    (deduplicated), all in one transaction. False if the registration was not being
    provisioned (e.g. a restart of an active workshop failed: nothing is released)."""
    from . import mail
    from .seats import release_seat

    async with wod.db.begin_write() as session:
        registration = await session.get(Registration, registration_id, populate_existing=True)
        if registration is None or registration.state not in FRESH_STATES:
            return False
        participant = await session.get(Participant, registration.participant_id)
        workshop = wod.catalog.workshops.get(registration.workshop_id)
        await release_seat(session, registration_id)
        registration.state = State.failed.value
        registration.error = error[:MAX_ERROR]
        registration.ended_reason = "deployment_failed"
        _event(session, "deployment_failed", registration_id, error=error[:MAX_ERROR])
        await mail.enqueue(
            session,
            to=participant.email,
            template="deployment_failed",
            context={
                "first_name": participant.first_name,
                "last_name": participant.last_name,
                "workshop_name": workshop.name if workshop else registration.workshop_id,
                "workshop_id": registration.workshop_id,
                "workshop_image": workshop.workshop_image if workshop else None,
                "register_url": register_url,
            },
            registration_id=registration_id,
            dedupe_key=f"reg:{registration_id}:deployment_failed",
        )
    sender = getattr(wod, "sender", None)
    if sender is not None and hasattr(sender, "wake"):
        sender.wake()
    return True


# ---- the bundle --------------------------------------------------------------------------
def content_bundle(
    workshop: Workshop,
    files: dict[str, bytes],
    top: str,
    registration_id: int,
) -> bytes:
    """``files`` (relpath -> bytes, from ``render_workshop_files``) as a tar.gz under ``top/``,
    with the source files' permission bits and a marker naming the registration."""
    from .catalog import content_files

    modes = {}
    for item in content_files(workshop):
        try:
            modes[item.relpath] = stat.S_IMODE(item.source.stat().st_mode) & 0o755
        except OSError:
            pass
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        entries = {**files, MARKER: f"{registration_id}\n".encode()}
        for relpath, data in sorted(entries.items()):
            info = tarfile.TarInfo(f"{top}/{relpath}")
            info.size = len(data)
            info.mode = modes.get(relpath, 0o644) | 0o600
            info.mtime = int(utcnow().timestamp())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
