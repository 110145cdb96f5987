"""Per-workshop spawners: the student's server starts in their personalized workshop.

:class:`WorkshopSpawnerMixin` wraps any JupyterHub spawner's ``start``:

1. find the user's live registration (registered / provisioning / active), else refuse
   with a sentence the participant can act on;
2. first deployment (CREATE, registration ``provisioning``): run the workshop's ``setup``
   hook once per hub process, render the notebooks for this student into a fresh workshop
   folder in their home, run the ``create`` (and ``post_copy``) hooks;
3. configure the server: ``default_url`` on the first notebook, the workshop's variables
   and ``WOD_*`` context as environment, resource limits;
4. start the base spawner's server; once the hub sees it ready the registration becomes
   ``active`` with ``ready_at``.

A failure (hook, rendering, server) is retried ``retry_on_failure`` times, then the
deployment fails cleanly: content removed, ``cleanup`` hook, seat released, registration
``failed`` with the reason, ``deployment_failed`` e-mail queued, and the participant sees
what happened and what to do.

Spawners: :class:`WorkshopLocalProcessSpawner` (real system users ``studentN``, created on
demand; production on one machine), :class:`WorkshopSimpleSpawner` (development, tests),
``WorkshopDockerSpawner`` (:mod:`wod_hub.docker_spawner`), ``WorkshopKubeSpawner``
(:mod:`wod_hub.kube_spawner`). Only public Spawner APIs are used (JupyterHub 5.3 and 6).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import resource
import shutil
import stat
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from jupyterhub import spawner as _jh_spawner
from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner, Spawner
from tornado import web
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default, validate
from traitlets.config import Configurable

from . import hooks, provision
from .provision import Deployment
from .wodyml import FieldError, parse_duration, parse_size, positive_int, positive_number

LIMIT_PARSERS = {
    "memory": parse_size,
    "cpu": positive_number,
    "processes": positive_int,
    "cpu_time": lambda v: int(parse_duration(v).total_seconds()),
}
STUDENT_VENV = "/opt/wod-student-venv"
# hub-wide: a workshop's setup hook runs once per hub process (per workshop folder)
_SETUP_DONE: dict[tuple[str, str], asyncio.Future] = {}

_SpawnBase = getattr(_jh_spawner, "SpawnException", web.HTTPError)  # JupyterHub >= 6


class WorkshopSpawnError(_SpawnBase):
    """A spawn refused or failed; ``message`` is shown to the participant as is."""

    def __init__(
        self, message: str, *, reason: str, status_code: int = 500, message_html: str = ""
    ):
        if _SpawnBase is web.HTTPError:
            web.HTTPError.__init__(self, status_code, message.replace("%", "%%"))
            self.message, self.reason = message, reason
        else:
            super().__init__(
                message, reason=reason, status_code=status_code, message_html=message_html
            )
        # what JupyterHub's pages and progress events show (5.x and 6.x)
        self.jupyterhub_message = message
        if message_html:
            self.jupyterhub_html_message = message_html

    def __str__(self) -> str:
        return self.jupyterhub_message


def normalize_limits(limits: dict, where: str) -> dict:
    """``{"memory": "1G", "cpu_time": "4h"}`` -> bytes / seconds; errors name ``where``."""
    out = {}
    for key, value in (limits or {}).items():
        if key not in LIMIT_PARSERS:
            raise ValueError(f"{where}: unknown limit {key!r}, use {', '.join(LIMIT_PARSERS)}")
        if value is None:
            continue
        try:
            out[key] = LIMIT_PARSERS[key](value)
        except FieldError as e:
            raise ValueError(f"{where}.{key}: {e}") from None
    return out


def effective_limits(workshop, defaults: dict) -> dict:
    """The workshop's own limits over the configured defaults."""
    return {**defaults, **(workshop.limits if workshop is not None else {})}


def rlimits_for(limits: dict, *, processes: bool) -> list[tuple[int, int, int]]:
    """``(resource, soft, hard)`` for a local server: memory -> RLIMIT_AS, cpu_time ->
    RLIMIT_CPU (SIGXCPU at the limit, SIGKILL 30 s later), processes -> RLIMIT_NPROC
    (only meaningful when the server runs as a user of its own)."""
    out = []
    if limits.get("memory"):
        out.append((resource.RLIMIT_AS, int(limits["memory"]), int(limits["memory"])))
    if limits.get("cpu_time"):
        out.append((resource.RLIMIT_CPU, int(limits["cpu_time"]), int(limits["cpu_time"]) + 30))
    if processes and limits.get("processes"):
        out.append((resource.RLIMIT_NPROC, int(limits["processes"]), int(limits["processes"])))
    return out


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def install_content(dep: Deployment, home: Path, owner: tuple[int, int] | None) -> list[Path]:
    """CREATE's content step (blocking: run it in a thread): render the workshop for the
    student into a private temporary folder in ``home``, hand it to ``owner``, then swap it
    in place of the old workshop folder. A rendering error leaves the home untouched."""
    from .personalize import render_workshop

    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wod-render-", dir=home))
    try:
        written = render_workshop(dep.workshop, dep.context, tmp, dep.catalog_variables)
        (tmp / provision.MARKER).write_text(f"{dep.registration_id}\n")
        os.chmod(tmp, 0o755 if owner is None else 0o700)
        if owner is not None:
            _chown_tree(tmp, *owner)
        target = home / dep.content_dir
        _remove(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [target / p.relative_to(tmp) for p in written]


class WorkshopSpawnerMixin(Configurable):
    """Workshop deployment around a base spawner's ``start``. Mix in first:
    ``class MySpawner(WorkshopSpawnerMixin, SomeSpawner)``."""

    hook_timeout = Float(
        300.0,
        help="""Seconds a workshop's setup, create or post_copy hook may run at spawn before its
        process group is killed and the deployment fails.""",
    ).tag(config=True)

    retry_on_failure = Integer(
        0,
        help="""How many more times a failed first deployment (rendering, hook, server start) is
        tried before it is given up: seat released, registration failed, apology e-mail.""",
    ).tag(config=True)

    @validate("retry_on_failure")
    def _validate_retry(self, proposal):
        if proposal["value"] < 0:
            raise ValueError(f"{type(self).__name__}.retry_on_failure must be >= 0")
        return proposal["value"]

    default_limits = Dict(
        help="""Resource limits for workshops that set none in workshop.yaml (``limits:``), e.g.
        ``{"memory": "2G", "cpu": 1, "processes": 256, "cpu_time": "4h"}``. Local spawners apply
        memory (RLIMIT_AS), cpu_time (RLIMIT_CPU) and processes (RLIMIT_NPROC, system users only);
        container spawners apply memory, cpu and processes.""",
    ).tag(config=True)

    @validate("default_limits")
    def _validate_default_limits(self, proposal):
        return normalize_limits(proposal["value"], f"{type(self).__name__}.default_limits")

    default_url_template = Unicode(
        "/lab/tree/{notebook}",
        help="""Where the participant lands: ``{notebook}`` is the workshop's first notebook
        relative to the home (e.g. ``WKSHP-Python101/0-ReadMeFirst.ipynb``). Classic notebook:
        ``/notebooks/{notebook}``.""",
    ).tag(config=True)

    variables_as_env = Bool(
        True,
        help="""Export the workshop's variables to the server's environment (names that are valid
        environment variable names and do not shadow the server's own, e.g. PATH).""",
    ).tag(config=True)

    admin_plain_server = Bool(
        True,
        help="""Hub admins without a workshop registration get a plain server (no workshop content).
        When False they are refused like students whose workshop ended.""",
    ).tag(config=True)

    ready_poll_interval = Float(
        0.25,
        help="Seconds between checks that a new server is ready (to mark the registration active).",
    ).tag(config=True)

    _wod_watch: asyncio.Future | None = None
    _wod_seen_up = False
    _wod_env: dict = {}
    _wod_home_path: Path | None = None
    wod_deployment: Deployment | None = None  # the deployment being (or last) started

    # ---- per-spawner hooks subclasses implement -------------------------------------
    async def wod_home(self) -> Path | None:
        """Host directory the workshop folder is rendered into, or None when the content is
        delivered another way (``wod-hub fetch-content`` inside a container)."""
        return None

    def wod_server_home(self) -> str:
        """The home directory as the server sees it (``WOD_HOME``)."""
        return ""

    async def wod_owner(self) -> tuple[int, int] | None:
        """uid, gid the rendered files belong to (None: the hub's user)."""
        return None

    def wod_apply_limits(self, limits: dict) -> None:
        """Apply ``effective_limits`` to the server about to start."""

    async def wod_prepare_server(self, dep: Deployment | None) -> None:
        """Last step before the base spawner's ``start`` (e.g. choose the image)."""

    # ---- state and progress ---------------------------------------------------------
    def _wod_reset(self) -> None:
        self._wod_events: list[dict] = []
        self._wod_phase_done = False
        self._wod_cond = asyncio.Condition()
        self._wod_env: dict[str, str] = {}
        self._wod_home_path: Path | None = None
        self._wod_watch: asyncio.Future | None = None
        self._wod_seen_up = False
        self._wod_wake = asyncio.Event()
        self.wod_deployment: Deployment | None = None

    async def _wod_progress(self, percent: int, message: str) -> None:
        if not hasattr(self, "_wod_cond"):
            self._wod_reset()
        self._wod_events.append({"progress": percent, "message": message})
        async with self._wod_cond:
            self._wod_cond.notify_all()

    async def _wod_end_phase(self) -> None:
        self._wod_phase_done = True
        async with self._wod_cond:
            self._wod_cond.notify_all()

    async def progress(self):
        """Our steps as they happen, then the base spawner's own progress (if it has one)."""
        if not hasattr(self, "_wod_cond"):
            self._wod_reset()
        sent = 0
        while True:
            while sent < len(self._wod_events):
                yield self._wod_events[sent]
                sent += 1
            if self._wod_phase_done:
                break
            async with self._wod_cond:
                await self._wod_cond.wait_for(
                    lambda sent=sent: self._wod_phase_done or sent < len(self._wod_events)
                )
        base = super().progress
        if getattr(base, "__func__", None) is not Spawner.progress:
            async for event in base():
                yield event

    # ---- environment ------------------------------------------------------------------
    def get_env(self):
        env = super().get_env()
        wod_env = getattr(self, "_wod_env", {})
        for name, value in wod_env.items():
            if name.startswith("WOD_") or name in ("STDID", "PASSSTU") or name not in env:
                env[name] = value
        return env

    def _wod_build_env(self, dep: Deployment) -> dict[str, str]:
        ctx, workshop = dep.context, dep.workshop
        env = {}
        if self.variables_as_env:
            env.update(hooks.variables_env(workshop.variables))
        env.update(
            {
                "WOD_WORKSHOP": workshop.id,
                "WOD_WORKSHOP_NAME": workshop.name,
                "WOD_STUDENT_ID": str(ctx.student_number),
                "STDID": str(ctx.student_number),
                "WOD_USERNAME": ctx.username,
                "WOD_HUB_URL": ctx.hub_url,
                "WOD_CONTENT_DIR": dep.content_dir,
                "WOD_FIRST_NOTEBOOK": dep.first_notebook_path or "",
                "WOD_MODE": workshop.mode,
            }
        )
        if ctx.expires_at is not None:
            env["WOD_EXPIRES_AT"] = ctx.expires_at.isoformat(timespec="seconds") + "Z"
        if self.wod_server_home():
            env["WOD_HOME"] = self.wod_server_home()
        if workshop.varpass and ctx.password:
            env["PASSSTU"] = ctx.password
        return env

    # ---- start ------------------------------------------------------------------------
    async def _wod_state(self):
        wod = getattr(self.authenticator, "wod", None)
        if wod is None:
            raise WorkshopSpawnError(
                "This hub is misconfigured: workshop servers need c.JupyterHub.authenticator_class = 'wod'.",
                reason="config",
            )
        return await wod.ready()

    async def start(self):
        self._wod_reset()
        wod = await self._wod_state()
        try:
            dep = await provision.find_deployment(wod, self.user.name)
        except LookupError as e:
            raise WorkshopSpawnError(
                f"Your workshop is not available any more ({e}). Register for another workshop "
                "from the login page.",
                reason="workshop",
                status_code=404,
            ) from None
        if dep is None:
            if self.user.admin and self.admin_plain_server:
                self._wod_home_path = await self.wod_home()
                await self.wod_prepare_server(None)
                await self._wod_end_phase()
                return await super().start()
            login = wod.link("login")
            raise WorkshopSpawnError(
                "Your workshop has ended, so your notebook server cannot start. "
                "Register again from the login page to take a workshop.",
                message_html=(
                    "Your workshop has ended, so your notebook server cannot start. "
                    f'<a href="{login}">Register again</a> to take a workshop.'
                ),
                reason="registration",
                status_code=403,
            )
        self.wod_deployment = dep
        attempts = 1 + (self.retry_on_failure if dep.fresh else 0)
        for attempt in range(1, attempts + 1):
            try:
                result = await self._wod_start_once(wod, dep)
            except asyncio.CancelledError:
                # the hub's start_timeout: the deployment failed all the same
                if dep.fresh:
                    error = f"the server did not start within {self.start_timeout}s"
                    asyncio.ensure_future(self._wod_give_up(wod, dep, error))
                raise
            except Exception as e:
                await self._wod_undo(dep)
                if attempt < attempts:
                    self.log.warning(
                        "Deployment of %s for %s failed (attempt %d of %d), retrying: %s",
                        dep.workshop.id, self.user.name, attempt, attempts, e,
                    )  # fmt: skip
                    await self._wod_progress(5, "Something went wrong, trying again")
                    continue
                failure = await self._wod_failure(wod, dep, e)
                await self._wod_end_phase()  # no progress reader waits for steps that will not come
                raise failure from e
            if dep.fresh:
                self._wod_watch = asyncio.ensure_future(self._wod_watch_ready(wod, dep))
            return result

    async def _wod_start_once(self, wod, dep: Deployment):
        workshop = dep.workshop
        # every start: a local spawner's system user must exist even when nothing is rendered
        self._wod_home_path = await self.wod_home()
        self._wod_env = self._wod_build_env(dep)
        if dep.fresh:
            await provision.mark_provisioning(wod.db, dep.registration_id)
            await self._wod_progress(10, "Preparing your notebooks")
            await self._wod_render(dep)
            await self._wod_progress(40, "Running the workshop's setup")
            await self._wod_run_setup(wod, dep)
            for name in ("create", "post_copy"):
                await hooks.run_hook(
                    workshop, name, self._wod_hook_env(dep, name), self.hook_timeout,
                    secrets=[dep.context.password or ""], logger=self.log,
                )  # fmt: skip
        await self.wod_configure(dep)
        await self._wod_progress(70, "Starting your server")
        await self._wod_end_phase()
        return await super().start()

    async def wod_configure(self, dep: Deployment) -> None:
        """Set up the server about to start for ``dep``: environment, landing notebook,
        limits, then the subclass's last step (image, volumes...)."""
        self.wod_deployment = dep
        self._wod_env = self._wod_build_env(dep)
        if dep.first_notebook_path:
            self.default_url = self.default_url_template.format(
                notebook=quote(dep.first_notebook_path)
            )
        self.wod_apply_limits(effective_limits(dep.workshop, self.default_limits))
        await self.wod_prepare_server(dep)

    async def _wod_render(self, dep: Deployment) -> None:
        home = self._wod_home_path
        if home is None:
            # content is fetched by the server itself: render now so an error fails the spawn
            from .personalize import render_workshop_files

            await asyncio.to_thread(
                render_workshop_files, dep.workshop, dep.context, dep.catalog_variables
            )
            return
        owner = await self.wod_owner()
        t0 = time.monotonic()
        written = await asyncio.to_thread(install_content, dep, Path(home), owner)
        self.log.info(
            "Rendered %s for %s: %d files in %s/%s (%.2fs)",
            dep.workshop.id, self.user.name, len(written), home, dep.content_dir,
            time.monotonic() - t0,
        )  # fmt: skip

    def _wod_hook_env(self, dep: Deployment, action: str) -> dict[str, str]:
        ctx = dep.context
        extra = {"WOD_CONTENT_DIR": dep.content_dir}
        if dep.workshop.varpass and ctx.password:
            extra["PASSSTU"] = ctx.password
        return hooks.hook_env(
            dep.workshop, action, student_number=ctx.student_number, username=ctx.username,
            home=self._wod_host_home or self.wod_server_home(), hub_url=ctx.hub_url, extra=extra,
        )  # fmt: skip

    @property
    def _wod_host_home(self) -> str:
        return str(getattr(self, "_wod_home_path", "") or "")

    async def _wod_run_setup(self, wod, dep: Deployment) -> None:
        workshop = dep.workshop
        if "setup" not in workshop.hooks:
            return
        key = (workshop.id, str(workshop.path))
        future = _SETUP_DONE.get(key)
        if future is None or (future.done() and future.exception() is not None):
            env = hooks.hook_env(workshop, "setup", hub_url=dep.context.hub_url)
            future = _SETUP_DONE[key] = asyncio.ensure_future(
                hooks.run_hook(workshop, "setup", env, self.hook_timeout, logger=self.log)
            )
        await asyncio.shield(future)

    async def _wod_undo(self, dep: Deployment) -> None:
        """Leave nothing half-done behind a failed attempt: the server (if it started), the
        rendered folder (first deployments only)."""
        try:
            if await self.poll() is None:
                await self.stop(now=True)
        except Exception as e:
            self.log.warning(
                "Could not stop %s's server after a failed start: %s", self.user.name, e
            )
        if dep.fresh:
            home = getattr(self, "_wod_home_path", None)
            if home is not None:
                await asyncio.to_thread(_remove, Path(home) / dep.content_dir)

    async def _wod_failure(self, wod, dep: Deployment, error: BaseException) -> WorkshopSpawnError:
        if isinstance(error, WorkshopSpawnError):
            return error
        if not dep.fresh:
            return WorkshopSpawnError(
                "Your notebook server could not start. Try again in a minute; if it keeps "
                "failing, tell the workshop's organizers.",
                reason="start",
            )
        if isinstance(error, hooks.HookError):
            reason = str(error)
        else:
            reason = f"{type(error).__name__}: {error}"
        await self._wod_give_up(wod, dep, reason)
        return WorkshopSpawnError(
            f"We could not prepare your workshop “{dep.workshop.name}”. Your seat has been released "
            "and we sent you an e-mail: please register again from the login page in a few minutes.",
            reason="deployment",
        )

    async def _wod_give_up(self, wod, dep: Deployment, error: str) -> None:
        """The first deployment failed for good: cleanup hook, seat back, registration failed,
        apology e-mail."""
        self.log.error("Deployment of %s for %s failed: %s", dep.workshop.id, self.user.name, error)
        home = getattr(self, "_wod_home_path", None)
        if home is not None:
            await asyncio.to_thread(_remove, Path(home) / dep.content_dir)
        try:
            await hooks.run_hook(
                dep.workshop, "cleanup", self._wod_hook_env(dep, "cleanup"), self.hook_timeout,
                secrets=[dep.context.password or ""], logger=self.log,
            )  # fmt: skip
        except hooks.HookError as e:
            self.log.warning("%s", e)
        try:
            await provision.mark_failed(
                wod, dep.registration_id, error, register_url=wod.link("login")
            )
        except Exception:
            self.log.exception("Could not record the failed deployment of %s", self.user.name)

    async def _wod_watch_ready(self, wod, dep: Deployment) -> None:
        """Mark the registration active once the hub sees the server ready. Only a server the
        hub gave up on (no answer within ``http_timeout``) fails the deployment: a server
        stopped right after it came up (seen by :meth:`stop`) is not a failure."""
        started = time.monotonic()
        deadline = started + self.http_timeout + 30
        while time.monotonic() < deadline:
            if self.ready or self._wod_seen_up:
                await provision.mark_active(wod.db, dep.registration_id)
                return
            if not self.pending and self.server is None:  # the spawn is over, not ready
                if time.monotonic() - started < self.http_timeout - 1:
                    self.log.info(
                        "%s's server stopped before it was seen ready: %s stays provisioning",
                        self.user.name, dep.workshop.id,
                    )  # fmt: skip
                    return
                break
            try:
                await asyncio.wait_for(self._wod_wake.wait(), self.ready_poll_interval)
            except TimeoutError:
                pass
            self._wod_wake.clear()
        await self._wod_give_up(
            wod, dep, f"the server did not answer within {self.http_timeout:g}s of starting"
        )

    async def _wod_server_answers(self) -> bool:
        """Does the server answer HTTP right now (any status)?"""
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError

        server = self.server
        if server is None or not server.port:
            return False
        try:
            await AsyncHTTPClient().fetch(server.url.rstrip("/") + "/api", request_timeout=2)
        except HTTPClientError as e:
            return e.code != 599
        except Exception:
            return False
        return True

    async def stop(self, now=False):
        watch = self._wod_watch
        if watch is not None and not watch.done():
            # stopped while we wait for it to be ready: was it up (a stop, not a failure)?
            self._wod_seen_up = await self._wod_server_answers()
            self._wod_wake.set()
        return await super().stop(now=now)


# ---- local processes -----------------------------------------------------------------------
class _LocalLimits:
    """RLIMITs applied in the child between fork and exec."""

    _wod_rlimits: list = []
    _wod_rlimit_processes = False

    def wod_apply_limits(self, limits: dict) -> None:
        self._wod_rlimits = rlimits_for(limits, processes=self._wod_rlimit_processes)

    def make_preexec_fn(self, name):
        base = super().make_preexec_fn(name)
        limits = list(self._wod_rlimits)

        def preexec():
            for res, soft, hard in limits:
                resource.setrlimit(res, (soft, hard))
            base()

        return preexec


class WorkshopSimpleSpawner(_LocalLimits, WorkshopSpawnerMixin, SimpleLocalProcessSpawner):
    """Development and tests: servers run as the hub's user in ``home_dir_template``.
    No isolation between students: never in production."""

    async def wod_home(self) -> Path:
        return Path(self.home_dir)

    def wod_server_home(self) -> str:
        return self.home_dir


_SYSTEM_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class WorkshopLocalProcessSpawner(_LocalLimits, WorkshopSpawnerMixin, LocalProcessSpawner):
    """Each student is a system user ``studentN`` (created on demand, home mode 0700, own
    group); the rendered workshop belongs to them; the server runs from a venv every student
    can execute (``scripts/student-venv.sh``) under resource limits."""

    _wod_rlimit_processes = True

    create_system_users = Bool(
        True,
        help="""Create the system user of a student (useradd --create-home --user-group) at their
        first spawn when it does not exist. When False, missing users fail the spawn.""",
    ).tag(config=True)

    home_dir_template = Unicode(
        "/home/{username}", help="Home directory of system users created by the spawner."
    ).tag(config=True)

    user_shell = Unicode(
        "/bin/bash", help="Login shell of system users created by the spawner."
    ).tag(config=True)

    home_mode = Integer(0o700, help="Mode of students' home directories (set at every spawn).").tag(
        config=True
    )

    student_venv = Unicode(
        STUDENT_VENV,
        help="""The venv students' servers run from (built by scripts/student-venv.sh from the
        system Python, readable by every user). Its bin/ leads PATH; the default ``cmd`` is its
        jupyterhub-singleuser when it exists.""",
    ).tag(config=True)

    protect_hub_files = Bool(
        True,
        help="""Before the first spawn, remove group/other permissions from the hub's private files:
        wod-hub's and JupyterHub's SQLite databases, the secret key, the cookie secret, the config
        file, and `protected_paths`.""",
    ).tag(config=True)

    protected_paths = List(
        Unicode(),
        help="More files or directories students must not read (made go-rwx at the first spawn).",
    ).tag(config=True)

    @default("cmd")
    def _cmd_default(self):
        script = Path(self.student_venv) / "bin" / "jupyterhub-singleuser"
        return [str(script)] if script.exists() else ["jupyterhub-singleuser"]

    _protected_once = False

    async def _ensure_system_user(self) -> pwd.struct_passwd:
        name = self.user.name
        if not _SYSTEM_NAME.match(name):
            raise WorkshopSpawnError(
                f"The user name {name!r} cannot be a system account.",
                reason="username",
                status_code=400,
            )
        try:
            return pwd.getpwnam(name)
        except KeyError:
            if not self.create_system_users:
                raise RuntimeError(
                    f"system user {name} does not exist (WorkshopLocalProcessSpawner.create_system_users is off)"
                ) from None
        home = self.home_dir_template.format(username=name)
        proc = await asyncio.create_subprocess_exec(
            "useradd", "--create-home", "--home-dir", home, "--user-group", "--shell", self.user_shell,
            "--comment", "wod-hub student", name,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode not in (0, 9):  # 9: created meanwhile
            raise RuntimeError(f"useradd {name} failed ({proc.returncode}): {out.decode().strip()}")
        self.log.info("Created system user %s (home %s)", name, home)
        return pwd.getpwnam(name)

    async def wod_home(self) -> Path:
        entry = await self._ensure_system_user()
        home = Path(entry.pw_dir)

        def prepare():
            home.mkdir(parents=True, exist_ok=True)
            st = home.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise RuntimeError(f"the home of {entry.pw_name} ({home}) is a symlink")
            if (st.st_uid, st.st_gid) != (entry.pw_uid, entry.pw_gid):
                os.chown(home, entry.pw_uid, entry.pw_gid)
            os.chmod(home, self.home_mode)

        await asyncio.to_thread(prepare)
        if self.protect_hub_files and not WorkshopLocalProcessSpawner._protected_once:
            await asyncio.to_thread(self._protect_hub_files)
            WorkshopLocalProcessSpawner._protected_once = True
        return home

    def wod_server_home(self) -> str:
        home = getattr(self, "_wod_home_path", None)
        return str(home) if home else ""

    async def wod_owner(self) -> tuple[int, int]:
        entry = pwd.getpwnam(self.user.name)
        return entry.pw_uid, entry.pw_gid

    def get_env(self):
        env = super().get_env()
        venv = Path(self.student_venv)
        if venv.is_dir():
            env["PATH"] = os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
            env["VIRTUAL_ENV"] = str(venv)
            env.pop("PYTHONPATH", None)
        return env

    def hub_private_paths(self) -> list[Path]:
        """The hub's files no student may read."""
        paths: list[Path] = []
        auth = self.authenticator
        hub = getattr(auth, "parent", None)

        def sqlite_files(url: str) -> list[Path]:
            if not url or not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
                return []
            db = Path(url[len("sqlite:///") :].split("?")[0])
            return [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))]

        paths += sqlite_files(getattr(auth, "db_url", "") or "")
        paths += sqlite_files(getattr(hub, "db_url", "") or "")
        for value in (
            getattr(auth, "secret_key_file", ""),
            getattr(hub, "cookie_secret_file", ""),
            getattr(hub, "config_file", ""),
        ):
            if value:
                paths.append(Path(value))
        paths += [Path(p) for p in self.protected_paths]
        return [p.absolute() for p in paths]

    def _protect_hub_files(self) -> None:
        for path in self.hub_private_paths():
            try:
                mode = path.stat().st_mode
            except OSError:
                continue
            if mode & 0o077:
                os.chmod(path, stat.S_IMODE(mode) & ~0o077)
                self.log.info("Made %s private to the hub (was %o)", path, stat.S_IMODE(mode))


def __getattr__(name):
    # container spawners need optional packages: import them only when asked for
    if name == "WorkshopDockerSpawner":
        from .docker_spawner import WorkshopDockerSpawner

        return WorkshopDockerSpawner
    if name == "WorkshopKubeSpawner":
        from .kube_spawner import WorkshopKubeSpawner

        return WorkshopKubeSpawner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
