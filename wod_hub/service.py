"""``wod-hub-lifecycle``: the managed hub service that times workshop sessions out.

Modelled on ``jupyterhub-idle-culler``: one traitlets Application, run by the hub as a
managed service (``c.JupyterHub.services``), talking only to the hub's REST API: JupyterHub's
own (stop servers, watch them stop) and wod-hub's ``/hub/api/wod/lifecycle`` (see
:mod:`wod_hub.handlers.api_lifecycle`). The hub owns the database and the clock (what is
due); this service owns the schedule. Every ``interval`` seconds it

- sends the reminder of sessions ending within ``reminder_before``;
- runs the end path of each expired (or unregistered) session, one claimed
  registration at a time per worker: begin (lock-out) -> stop the server -> cleanup ->
  reset -> purge (hub user deleted, seat back) -> final e-mail -> ended;
- and, every ``ProcessGuard.interval``, the process guard (:mod:`wod_hub.guard`).

Scopes (least privilege; declare them in the service's role):

=======================  ==========================================================
``custom:wod:lifecycle``  the ``/hub/api/wod/lifecycle`` endpoints (due list, claims, steps, events)
``delete:servers``        stop the student's server (``DELETE /users/{name}/server``)
``read:servers``          watch it stop (``GET /users/{name}``: the ``servers`` field)
=======================  ==========================================================

Not ``delete:users`` nor ``admin:users``: the hub deletes the student's hub user itself in
the PURGE step (before the seat is released, so the seat's next participant never inherits
a cookie or token), and the service can neither create users, make admins nor read auth state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote

from tornado.log import LogFormatter
from traitlets import Bool, Float, Integer, Unicode, default, validate
from traitlets.config import Application

from .guard import ProcessGuard
from .hubclient import ENV_TOKEN, ENV_URL, HubAPIError, HubClient
from .lifecycle import RUNNING_STATES, backoff

SCOPES = ("custom:wod:lifecycle", "delete:servers", "read:servers")


def utcnow() -> datetime:
    """Timezone-aware now; module level so tests can move the service's clock."""
    return datetime.now(timezone.utc)


@dataclass
class SweepReport:
    reminders: int = 0
    ended: int = 0
    busy: int = 0  # claimed by another worker
    failed: list[tuple[int, str]] = field(default_factory=list)
    seen: int = 0

    def merge(self, other: SweepReport) -> None:
        self.reminders += other.reminders
        self.ended += other.ended
        self.busy += other.busy
        self.failed += other.failed
        self.seen += other.seen


class StepError(Exception):
    """A service-side part of a step failed (stop timeout, hub refusal)."""


class LifecycleService(Application):
    name = "wod-hub-lifecycle"
    description = (
        "Time-bombed workshop sessions for wod-hub: reminders, expiry end path, process guard."
    )
    examples = """
    As a managed service (jupyterhub_config.py):
        c.JupyterHub.services = [{"name": "wod-lifecycle", "command": ["wod-hub-lifecycle"]}]
    One sweep by hand (e.g. from cron):
        JUPYTERHUB_API_TOKEN=... wod-hub-lifecycle --url=http://127.0.0.1:8081/hub/api --once
    """

    url = Unicode(
        help="The hub's API URL (default: env JUPYTERHUB_API_URL, set by the hub for managed services)."
    ).tag(config=True)

    @default("url")
    def _url_default(self):
        return os.environ.get(ENV_URL, "http://127.0.0.1:8081/hub/api")

    api_token = Unicode(
        help="""API token of the service (default: env JUPYTERHUB_API_TOKEN, which the hub sets for
        managed services; prefer the environment over a config file).""",
    ).tag(config=True)

    @default("api_token")
    def _token_default(self):
        return os.environ.get(ENV_TOKEN, "")

    interval = Float(30.0, help="Seconds between two sweeps.").tag(config=True)

    reminder_before = Float(
        3600.0,
        help="Seconds before the end of a session at which the reminder e-mail goes out (once; once more before the new end after an extension).",
    ).tag(config=True)

    claim_ttl = Float(
        600.0,
        help="""Seconds a worker's claim on a registration lasts (renewed at every step). Must exceed
        the longest step (hook timeouts, a slow server stop); after a crash, another worker resumes
        the end path once it lapses.""",
    ).tag(config=True)

    concurrency = Integer(10, help="End paths run in parallel by this worker.").tag(config=True)

    batch_size = Integer(500, help="Registrations fetched per due-list request.").tag(config=True)

    stop_timeout = Float(
        300.0, help="Seconds to wait for a server to stop before the step is retried."
    ).tag(config=True)

    retry_base = Float(
        30.0, help="First retry delay (seconds) of a failed step; doubles per attempt."
    ).tag(config=True)
    retry_max = Float(1800.0, help="Longest retry delay (seconds) of a failed step.").tag(
        config=True
    )

    worker_id = Unicode(
        help="This worker's name in claims. Default: host:pid:random (unique per process)."
    ).tag(config=True)

    @default("worker_id")
    def _worker_default(self):
        return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"

    once = Bool(False, help="Run one sweep (reminders and end paths, no guard) and exit.").tag(
        config=True
    )

    guard_enabled = Bool(
        True,
        help="Run the process guard in this service (see ProcessGuard.*; it needs to run as root).",
    ).tag(config=True)

    config_file = Unicode(
        "", help="A Python config file (c.LifecycleService..., c.ProcessGuard...)."
    ).tag(config=True)

    @validate("interval", "reminder_before", "claim_ttl", "stop_timeout", "retry_base", "retry_max")
    def _validate_positive(self, proposal):
        if proposal["value"] <= 0:
            raise ValueError(
                f"LifecycleService.{proposal['trait'].name} must be a positive number of seconds"
            )
        return proposal["value"]

    @validate("concurrency", "batch_size")
    def _validate_count(self, proposal):
        if proposal["value"] < 1:
            raise ValueError(f"LifecycleService.{proposal['trait'].name} must be at least 1")
        return proposal["value"]

    aliases = {
        "url": "LifecycleService.url",
        "interval": "LifecycleService.interval",
        "reminder-before": "LifecycleService.reminder_before",
        "claim-ttl": "LifecycleService.claim_ttl",
        "concurrency": "LifecycleService.concurrency",
        "batch-size": "LifecycleService.batch_size",
        "stop-timeout": "LifecycleService.stop_timeout",
        "retry-base": "LifecycleService.retry_base",
        "retry-max": "LifecycleService.retry_max",
        "worker-id": "LifecycleService.worker_id",
        "config": "LifecycleService.config_file",
        "guard-interval": "ProcessGuard.interval",
        "log-level": "Application.log_level",
    }
    flags = {
        "once": ({"LifecycleService": {"once": True}}, "Run one sweep and exit."),
        "no-guard": (
            {"LifecycleService": {"guard_enabled": False}},
            "Do not run the process guard.",
        ),
    }
    classes = [ProcessGuard]

    _log_formatter_cls = LogFormatter

    @default("log_level")
    def _log_level_default(self):
        return logging.INFO

    @default("log_format")
    def _log_format_default(self):
        return (
            "%(color)s[%(levelname)1.1s %(asctime)s.%(msecs).03d %(name)s]%(end_color)s %(message)s"
        )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.guard = ProcessGuard(parent=self)
        self._wake = asyncio.Event()
        self._stopping = False
        self.hub: HubClient | None = None

    def initialize(self, argv=None):
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
        self.guard = ProcessGuard(parent=self)

    # ---- the loop -----------------------------------------------------------------------
    def start(self):
        try:
            asyncio.run(self.run())
        except KeyboardInterrupt:
            pass

    def connect(self) -> HubClient:
        """The hub API client (also what tests use to sweep in-process)."""
        if self.hub is None:
            if not self.api_token:
                raise SystemExit(
                    f"{self.name}: no API token. Run me as a hub service, or set {ENV_TOKEN}."
                )
            self.hub = HubClient(self.url, self.api_token, timeout=max(60.0, self.stop_timeout))
        return self.hub

    def close(self) -> None:
        if self.hub is not None:
            self.hub.close()
            self.hub = None

    async def run(self) -> SweepReport | None:
        self.connect()
        self.log.info(
            "%s %s: sweeping %s every %ss (reminder %ss before the end)",
            self.name,
            self.worker_id,
            self.hub.url,
            self.interval,
            self.reminder_before,
        )
        try:
            if self.once:
                return await self.sweep()
            guard_task = (
                asyncio.ensure_future(self.guard_loop())
                if self.guard_enabled and self.guard.enabled
                else None
            )
            while not self._stopping:
                try:
                    await self.sweep()
                except HubAPIError as e:
                    self.log.error("Sweep failed: %s", e)
                except Exception:
                    self.log.exception("Sweep failed")
                self._wake.clear()
                try:
                    await asyncio.wait_for(
                        self._wake.wait(), self.interval * random.uniform(0.9, 1.1)
                    )
                except asyncio.TimeoutError:
                    pass
            if guard_task is not None:
                guard_task.cancel()
        finally:
            self.close()
        return None

    def wake(self) -> None:
        self._wake.set()

    async def sweep(self) -> SweepReport:
        """Everything due now: a batch at a time until the due list is drained."""
        total = SweepReport()
        while True:
            due = await self.hub.get(
                "/wod/lifecycle/due",
                reminder_before=self.reminder_before,
                limit=self.batch_size,
                worker=self.worker_id,
            )
            items = due["registrations"]
            if not items:
                break
            report = await self.process_batch(items)
            total.merge(report)
            # stop when nothing moved (all busy/failed: they come back after claims/backoff lapse)
            if len(items) < self.batch_size or report.reminders + report.ended == 0:
                break
        if total.seen:
            self.log.info(
                "Sweep: %d reminders, %d sessions ended, %d busy elsewhere, %d failed",
                total.reminders,
                total.ended,
                total.busy,
                len(total.failed),
            )
        return total

    async def process_batch(self, items: list[dict]) -> SweepReport:
        report = SweepReport(seen=len(items))
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(item):
            async with semaphore:
                try:
                    if item["action"] == "reminder":
                        if await self.remind(item):
                            report.reminders += 1
                    else:
                        outcome = await self.end_path(item)
                        if outcome == "ended":
                            report.ended += 1
                        elif outcome == "busy":
                            report.busy += 1
                        elif outcome != "ok":
                            report.failed.append((item["id"], outcome))
                except Exception as e:  # one registration never stops the sweep
                    self.log.exception("Registration %s: %s", item["id"], e)
                    report.failed.append((item["id"], str(e)))

        await asyncio.gather(*(one(item) for item in items))
        return report

    # ---- reminder --------------------------------------------------------------------------
    async def remind(self, item: dict) -> bool:
        result = await self.hub.post(
            f"/wod/lifecycle/registrations/{item['id']}/reminder",
            {"reminder_before": self.reminder_before},
        )
        if result["sent"]:
            self.log.info("Reminder queued for %s (registration %s)", item["username"], item["id"])
        return bool(result["sent"])

    # ---- end path ------------------------------------------------------------------------------
    def _body(self, **extra) -> dict:
        return {"worker": self.worker_id, "ttl": self.claim_ttl, **extra}

    async def end_path(self, item: dict) -> str:
        """Run the end path of one registration from its first step not done.
        Returns "ended", "busy" (claimed elsewhere) or an error message.

        Two requests when no server runs (begin, then every hub-side step), plus the stop:
        each step endpoint takes or renews the claim itself (409: another worker has it)."""
        rid = item["id"]
        base = f"/wod/lifecycle/registrations/{rid}"
        model = item
        step = "begin" if model["state"] in RUNNING_STATES else model["next_step"]
        restarts = 0
        try:
            while step is not None:
                # unknown (due list): assume none; the hub's stop step answers 409 if one runs
                server = model.get("server_active", False)
                if step == "stop" and server:
                    await self.stop_server(model["username"])
                    server = False
                retry_in = backoff(
                    model["step_attempts"] + 1, self.retry_base, self.retry_max
                ).total_seconds()
                # the service's only part is stopping the server: the hub runs everything else
                # in one request (each step still recorded on its own)
                through = "begin" if step == "begin" and server else "end"
                try:
                    result = await self.hub.post(
                        f"{base}/steps/{step}", self._body(retry_in=retry_in, through=through)
                    )
                except HubAPIError as e:
                    if e.status == 409 and "still running" in str(e) and restarts < 3:
                        restarts += 1  # a server came up meanwhile: stop it, go on
                        model = {**model, "server_active": True}
                        step = "stop"
                        continue
                    raise
                model = result["registration"]
                if not result["ok"]:
                    step = result.get("step", step)
                    self.log.warning(
                        "Registration %s: step %s failed (retry later): %s",
                        rid,
                        step,
                        result["error"],
                    )
                    return result["error"]
                step = model["next_step"]
        except HubAPIError as e:
            if e.status == 409 and step == "begin" and "not due" in str(e):
                # extended meanwhile: not due any more
                await self.hub.post(f"{base}/release", self._body())
                return "ok"
            if e.status in (404, 409) and (
                "being processed by" in str(e) or "ended already" in str(e)
            ):
                return "busy"
            return await self.fail(rid, step, str(e), model)
        except StepError as e:
            return await self.fail(rid, step, str(e), model)
        self.log.info(
            "Session of %s ended (registration %s, %s)",
            model["username"],
            rid,
            model["ended_reason"],
        )
        return "ended"

    async def fail(self, rid: int, step: str, error: str, model: dict) -> str:
        self.log.warning("Registration %s: %s failed: %s", rid, step, error)
        retry_in = backoff(
            model["step_attempts"] + 1, self.retry_base, self.retry_max
        ).total_seconds()
        try:
            await self.hub.post(
                f"/wod/lifecycle/registrations/{rid}/failure",
                self._body(step=step, error=error, retry_in=retry_in),
            )
        except HubAPIError as e:  # the claim lapses; the next sweep retries
            self.log.error("Registration %s: could not record the failure: %s", rid, e)
        return error

    async def stop_server(self, username: str) -> None:
        """Stop ``username``'s default server and wait until the hub says it is gone."""
        path = f"/users/{quote(username, safe='')}"
        try:
            await self.hub.delete(path + "/server")
        except HubAPIError as e:
            if e.status == 404:
                return  # no such user: nothing runs
            if e.status != 400:  # 400: pending rename/stop; watched below
                raise
        delay = 0.2
        deadline = asyncio.get_running_loop().time() + self.stop_timeout
        while True:
            try:
                user = await self.hub.get(path)
            except HubAPIError as e:
                if e.status == 404:
                    return
                raise
            if "" not in (user.get("servers") or {}):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise StepError(f"{username}'s server did not stop within {self.stop_timeout:g}s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    # ---- process guard ----------------------------------------------------------------------------
    async def guard_loop(self) -> None:
        self.log.info(
            "Process guard: every %ss, CPU > %g%% for %gs, %d deny-listed names",
            self.guard.interval,
            self.guard.cpu_threshold,
            self.guard.cpu_sustain,
            len(self.guard.deny_list),
        )
        while not self._stopping:
            try:
                await self.guard_pass()
            except Exception:
                self.log.exception("Process guard pass failed")
            await asyncio.sleep(self.guard.interval)

    async def guard_pass(self):
        result = await asyncio.to_thread(self.guard.scan)
        for kill in result.kills:
            try:
                await self.hub.post(
                    "/wod/lifecycle/events",
                    {"username": kill.username, "kind": "guard_kill", "detail": kill.to_json()},
                )
                if self.guard.end_registration and kill.reason.startswith(
                    ("deny-listed", "command line")
                ):
                    await self.hub.post(
                        f"/wod/lifecycle/users/{quote(kill.username, safe='')}/end",
                        {"reason": "guard"},
                    )
                    self.wake()
            except HubAPIError as e:
                if e.status != 404:  # 404: no running session for that user
                    self.log.error(
                        "Process guard: could not report %s's process %d: %s",
                        kill.username,
                        kill.pid,
                        e,
                    )
        return result


def main(argv=None):
    LifecycleService.launch_instance(argv)


if __name__ == "__main__":
    main()
