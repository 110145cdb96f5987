"""Hub users of new registrations, created in the background at quiet moments.

Registering hands the participant a seat (``studentN``); the matching JupyterHub user (in
the group named after the workshop) exists for the admin panel before the participant
first logs in. Creating it is JupyterHub's own work (``BaseHandler.auth_to_user``: user,
roles, groups, a commit on the hub's database), about as much CPU as everything else of a
registration together. During a rush it waits until registrations pause for ``quiet``
seconds, but never longer than ``max_delay`` after the registration: participants get
their answer first, the admin panel catches up a moment later. The first login creates
the user at once anyway (``login_user`` -> ``auth_to_user``), and a registration that
ended meanwhile gets no user (so a purged student never comes back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .aio import cancel_and_wait

log = logging.getLogger("wod_hub.hubusers")


@dataclass
class _Pending:
    handler: object  # a JupyterHub BaseHandler (its auth_to_user)
    auth_model: dict
    registration_id: int
    since: float


class HubUserCreator:
    """FIFO of hub users to create; ``add`` is cheap, the work runs in one task."""

    def __init__(
        self,
        live_ids: Callable[[list[int]], Awaitable[set[int]]],
        *,
        quiet: float = 0.3,
        max_delay: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.live_ids = live_ids
        self.quiet = quiet
        self.max_delay = max_delay
        self.clock = clock
        self._pending: dict[str, _Pending] = {}
        self._last_add = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.created = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, handler, auth_model: dict, registration_id: int) -> None:
        now = self.clock()
        self._pending[auth_model["name"]] = _Pending(handler, auth_model, registration_id, now)
        self._last_add = now
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def delay(self) -> float:
        """Seconds to wait before the next creation (0: now)."""
        if not self._pending:
            return 0.0
        now = self.clock()
        oldest = min(p.since for p in self._pending.values())
        return max(0.0, min(self.quiet - (now - self._last_add), self.max_delay - (now - oldest)))

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self.delay()
            if wait > 0:
                self._wake.clear()
                try:  # a new registration restarts the quiet period
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                continue
            await self.create_pending()

    async def create_pending(self) -> None:
        """Create the users pending now (one liveness query for all of them)."""
        batch, self._pending = self._pending, {}
        try:
            live = await self.live_ids([p.registration_id for p in batch.values()])
        except Exception:
            log.exception("Could not read registrations; hub users are created at first login")
            return
        for name, item in batch.items():
            if item.registration_id not in live:
                continue  # ended meanwhile: no user for a purged student
            try:  # (a user who logged in meanwhile is only refreshed)
                await item.handler.auth_to_user(item.auth_model)
                self.created += 1
            except Exception:
                log.exception("Could not create hub user %s; it is created at first login", name)
            await asyncio.sleep(0)  # requests first

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
