"""Run a workshop's hooks (setup, create, post_copy, cleanup, reset) in a subprocess.

A hook is either a program (``hooks/create.sh``, any executable) or a Python file defining
a function named like the hook (``def create(context: dict)``, sync or async). Both run in
their own process group, never in the hub's process: a hook can neither block the event
loop nor crash the hub, and on timeout the whole group is killed (SIGTERM, then SIGKILL).

The context travels in environment variables (``WOD_ACTION``, ``WOD_WORKSHOP``,
``WOD_STUDENT_ID`` / ``STDID``, ``WOD_USERNAME``, ``WOD_HOME``, ``WOD_HUB_URL``, plus the
workshop's variables); Python hooks also get it as a dict. Output (stdout + stderr) is
logged line by line, with known secrets masked, and the tail is kept for error messages.

Used by the spawner (setup, create, post_copy) and by the lifecycle (cleanup, reset)::

    result = await run_hook(workshop, "create", hook_env(workshop, "create", student_number=7, ...))

This module imports only the standard library at import time: ``python -m wod_hub.hooks``
is how Python hooks are run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import Workshop

log = logging.getLogger("wod_hub.hooks")

DEFAULT_TIMEOUT = 300.0
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL of a hook's process group
TAIL_LINES = 20  # lines of output quoted in a HookError
MAX_OUTPUT = 256 * 1024  # characters of output kept in a HookResult
# the hub's environment holds secrets (cookie secret, proxy token, DB URLs): hooks only
# inherit these names, plus what the caller passes
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "USER", "LOGNAME", "VIRTUAL_ENV",
            "PYTHONPATH", "DOCKER_HOST", "KUBECONFIG", "TMPDIR")  # fmt: skip
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class HookResult:
    returncode: int
    output: str  # stdout + stderr, secrets masked, at most MAX_OUTPUT characters (the end)
    duration: float  # seconds

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])


class HookError(Exception):
    """A hook failed (non-zero exit, timeout, or it could not be started)."""

    def __init__(
        self,
        workshop_id: str,
        hook: str,
        problem: str,
        result: HookResult | None = None,
        *,
        timed_out: bool = False,
    ):
        self.workshop_id = workshop_id
        self.hook = hook
        self.problem = problem
        self.result = result
        self.timed_out = timed_out
        message = f"The {hook} hook of workshop {workshop_id} {problem}"
        if result is not None and result.output.strip():
            message += f". Last lines of its output:\n{result.tail()}"
        super().__init__(message)


# ---- the context ----------------------------------------------------------------------
def env_value(value: Any) -> str:
    """A variable as an environment string: scalars as text, structures as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if value is None:
        return ""
    return json.dumps(value, default=str)


def variables_env(variables: Mapping[str, Any], reserved: Iterable[str] = ()) -> dict[str, str]:
    """Workshop variables usable as environment variables (valid names, not ``reserved``)."""
    reserved = set(reserved)
    return {
        str(name): env_value(value)
        for name, value in variables.items()
        if _ENV_NAME.match(str(name)) and str(name) not in reserved
    }


def hook_env(
    workshop: Workshop,
    action: str,
    *,
    student_number: int | None = None,
    username: str | None = None,
    home: str | os.PathLike | None = None,
    hub_url: str = "",
    variables: Mapping[str, Any] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one hook run. ``variables`` defaults to the workshop's own;
    the ``WOD_*`` names always win over a variable of the same name."""
    env = variables_env(workshop.variables if variables is None else variables)
    env.update(
        {
            "WOD_ACTION": action,
            "WOD_WORKSHOP": workshop.id,
            "WOD_WORKSHOP_NAME": workshop.name,
            "WOD_WORKSHOP_DIR": str(workshop.path),
            "WOD_HUB_URL": hub_url,
        }
    )
    if student_number is not None:
        env["WOD_STUDENT_ID"] = env["STDID"] = str(student_number)
    if username:
        env["WOD_USERNAME"] = username
    if home is not None:
        env["WOD_HOME"] = str(home)
    env.update(extra or {})
    return env


# ---- running ---------------------------------------------------------------------------
def _command(workshop: Workshop, name: str, spec) -> list[str]:
    path = Path(spec.path)
    if not path.is_file():
        raise HookError(workshop.id, name, f"cannot run: its file {path} is missing")
    if spec.kind == "python":
        return [sys.executable, "-m", "wod_hub.hooks", str(path), name]
    if os.access(path, os.X_OK):
        return [str(path)]
    if path.suffix in (".sh", ".bash"):
        return ["/bin/bash", str(path)]
    raise HookError(workshop.id, name, f"cannot run {path}: it is not executable (chmod +x it)")


def _mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def run_hook(
    workshop: Workshop,
    name: str,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    secrets: Iterable[str] = (),
    cwd: str | os.PathLike | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> HookResult | None:
    """Run hook ``name`` of ``workshop``; None when the workshop has no such hook.

    ``env`` is added to a minimal copy of the hub's environment (see ``ENV_KEEP``);
    ``secrets`` (e.g. the seat password) are masked in the logged and returned output.
    Raises :class:`HookError` on a non-zero exit, a timeout (the process group is killed)
    or a hook that cannot be started.
    """
    spec = workshop.hooks.get(name)
    if spec is None:
        return None
    logger = logger or log
    secrets = [s for s in secrets if s]
    cmd = _command(workshop, name, spec)
    full_env = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    full_env.update(env or {})
    full_env.setdefault("WOD_ACTION", name)
    full_env.setdefault("PYTHONUNBUFFERED", "1")  # output logged as it comes
    context = {
        "action": full_env.get("WOD_ACTION", name),
        "workshop": workshop.id,
        "workshop_dir": str(workshop.path),
        "student_number": int(full_env["WOD_STUDENT_ID"]) if "WOD_STUDENT_ID" in full_env else None,
        "username": full_env.get("WOD_USERNAME"),
        "home": full_env.get("WOD_HOME"),
        "hub_url": full_env.get("WOD_HUB_URL", ""),
        "variables": {k: v for k, v in workshop.variables.items()},
        "env": dict(env or {}),
    }
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE if spec.kind == "python" else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd or workshop.path),
            start_new_session=True,  # its own process group: killed as a whole on timeout
        )
    except OSError as e:
        raise HookError(
            workshop.id, name, f"could not be started ({cmd[0]}: {e.strerror or e})"
        ) from e

    tail: deque[str] = deque()
    size = 0

    async def pump() -> None:
        nonlocal size
        if spec.kind == "python":
            proc.stdin.write(json.dumps(context, default=str).encode())
            try:
                await proc.stdin.drain()
            except ConnectionError:
                pass
            proc.stdin.close()
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                break
            line = _mask(raw.decode("utf-8", "replace").rstrip("\n"), secrets)
            logger.info("[%s %s] %s", workshop.id, name, line)
            tail.append(line)
            size += len(line) + 1
            while size > MAX_OUTPUT and len(tail) > 1:
                size -= len(tail.popleft()) + 1
        await proc.wait()

    timed_out = False
    task = asyncio.ensure_future(pump())
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        timed_out = True
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(task), KILL_GRACE)
        except TimeoutError:
            _kill_group(proc.pid, signal.SIGKILL)
            # a grandchild may keep the pipe open after its group leader died
            try:
                await asyncio.wait_for(asyncio.shield(task), KILL_GRACE)
            except TimeoutError:
                task.cancel()
                await proc.wait()
    except asyncio.CancelledError:
        _kill_group(proc.pid, signal.SIGKILL)
        task.cancel()
        raise
    finally:
        # nothing a hook started outlives it
        _kill_group(proc.pid, signal.SIGKILL)

    result = HookResult(proc.returncode, "\n".join(tail), time.monotonic() - started)
    if timed_out:
        logger.warning("[%s %s] killed after %.0fs (timeout)", workshop.id, name, timeout)
        raise HookError(
            workshop.id, name, f"did not finish within {timeout:g}s and was stopped", result,
            timed_out=True,
        )  # fmt: skip
    if result.returncode != 0:
        raise HookError(workshop.id, name, f"failed with exit code {result.returncode}", result)
    logger.info("[%s %s] done in %.2fs", workshop.id, name, result.duration)
    return result


# ---- python -m wod_hub.hooks FILE FUNCTION: the child process of a Python hook -------------
def _run_python_hook(path: str, function: str) -> int:
    import importlib.util
    import inspect
    import traceback

    raw = sys.stdin.read()
    context = json.loads(raw) if raw.strip() else {}
    spec = importlib.util.spec_from_file_location(f"wod_hook_{function}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(path).parent))
    try:
        spec.loader.exec_module(module)
        func = getattr(module, function, None)
        if not callable(func):
            print(f"{path} defines no function {function}(context)", file=sys.stderr)
            return 2
        outcome = func(context)
        if inspect.isawaitable(outcome):
            import asyncio as _asyncio

            outcome = _asyncio.run(_await(outcome))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1
    if outcome is False:
        return 1
    return outcome if isinstance(outcome, int) and not isinstance(outcome, bool) else 0


async def _await(awaitable):
    return await awaitable


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m wod_hub.hooks HOOK_FILE.py FUNCTION  (context JSON on stdin)",
              file=sys.stderr)  # fmt: skip
        return 2
    code = _run_python_hook(*args)
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
