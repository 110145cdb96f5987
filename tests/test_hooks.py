"""Workshop hooks run for real: shell and Python hooks in their own process group, context
in the environment, timeouts that kill the whole group, failures that say what happened."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import textwrap
import time
from pathlib import Path

import pytest

from wod_hub.catalog import load_catalog
from wod_hub.hooks import HookError, hook_env, run_hook

NOTEBOOK = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


def make_workshop(root: Path, hooks: dict[str, str], variables: dict | None = None):
    d = root / "WKSHP-Hooks"
    (d / "hooks").mkdir(parents=True)
    meta = {"name": "Hooks", "students": "1-10", "variables": variables or {}}
    (d / "workshop.yaml").write_text(json.dumps(meta))
    (d / "0-ReadMeFirst.ipynb").write_text(NOTEBOOK)
    for filename, body in hooks.items():
        path = d / "hooks" / filename
        path.write_text(textwrap.dedent(body).lstrip())
        if filename.endswith(".sh"):
            path.chmod(0o755)
    catalog = load_catalog([root])
    assert not catalog.errors, catalog.errors
    return catalog.workshops["WKSHP-Hooks"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


async def test_shell_hook_gets_the_context_and_its_output_is_logged(tmp_path, caplog):
    workshop = make_workshop(
        tmp_path,
        {"create.sh": """
            #!/bin/sh
            echo "action=$WOD_ACTION workshop=$WOD_WORKSHOP student=$WOD_STUDENT_ID/$STDID"
            echo "user=$WOD_USERNAME home=$WOD_HOME api=$API_URL cwd=$(pwd)"
            echo "secret is $PASSSTU" >&2
            test -z "$CONFIGPROXY_AUTH_TOKEN" && echo "no hub secrets"
            """},
        variables={"API_URL": "https://api.example.org"},
    )  # fmt: skip
    os.environ["CONFIGPROXY_AUTH_TOKEN"] = "hub-only"
    try:
        env = hook_env(workshop, "create", student_number=7, username="student7",
                       home="/home/student7", extra={"PASSSTU": "s3cret-pass"})  # fmt: skip
        with caplog.at_level(logging.INFO, logger="wod_hub.hooks"):
            result = await run_hook(workshop, "create", env, timeout=30, secrets=["s3cret-pass"])
    finally:
        del os.environ["CONFIGPROXY_AUTH_TOKEN"]
    assert result.returncode == 0
    lines = result.output.splitlines()
    assert lines[0] == "action=create workshop=WKSHP-Hooks student=7/7"
    assert (
        lines[1]
        == f"user=student7 home=/home/student7 api=https://api.example.org cwd={workshop.path}"
    )
    assert "secret is ***" in lines and "no hub secrets" in lines
    assert "s3cret-pass" not in result.output and "s3cret-pass" not in caplog.text
    assert "[WKSHP-Hooks create] action=create" in caplog.text
    assert 0 < result.duration < 10


async def test_python_hook_is_called_with_a_context_dict_in_a_subprocess(tmp_path):
    workshop = make_workshop(
        tmp_path,
        {"setup.py": """
            import os
            def setup(context):
                print("pid", os.getpid(), "student", context["student_number"], context["variables"]["TOKEN"])
                print("env", os.environ["WOD_USERNAME"])
            """},
        variables={"TOKEN": "abc"},
    )  # fmt: skip
    env = hook_env(workshop, "setup", student_number=3, username="student3")
    result = await run_hook(workshop, "setup", env, timeout=30)
    first, second = result.output.splitlines()
    assert first.startswith("pid ") and int(first.split()[1]) != os.getpid()
    assert first.endswith("student 3 abc")
    assert second == "env student3"


async def test_async_python_hook_and_its_return_code(tmp_path):
    workshop = make_workshop(
        tmp_path,
        {"reset.py": """
            import asyncio
            async def reset(context):
                await asyncio.sleep(0.01)
                print("resetting", context["action"])
                return 3
            """},
    )  # fmt: skip
    with pytest.raises(HookError) as info:
        await run_hook(workshop, "reset", hook_env(workshop, "reset"), timeout=30)
    assert info.value.result.returncode == 3
    assert str(info.value).startswith(
        "The reset hook of workshop WKSHP-Hooks failed with exit code 3"
    )
    assert "resetting reset" in str(info.value)


async def test_python_hook_that_raises_reports_the_traceback(tmp_path):
    workshop = make_workshop(
        tmp_path,
        {"cleanup.py": """
            def cleanup(context):
                raise RuntimeError("the appliance is unreachable")
            """},
    )  # fmt: skip
    with pytest.raises(HookError) as info:
        await run_hook(workshop, "cleanup", {}, timeout=30)
    message = str(info.value)
    assert "cleanup hook of workshop WKSHP-Hooks failed with exit code 1" in message
    assert "RuntimeError: the appliance is unreachable" in message


async def test_failing_shell_hook_names_workshop_hook_code_and_last_lines(tmp_path):
    lines = "\n".join(f"echo line{i}" for i in range(40))
    workshop = make_workshop(tmp_path, {"create.sh": f"#!/bin/sh\n{lines}\nexit 4\n"})
    with pytest.raises(HookError) as info:
        await run_hook(workshop, "create", {}, timeout=30)
    message = str(info.value)
    assert message.startswith("The create hook of workshop WKSHP-Hooks failed with exit code 4")
    assert "line39" in message and "line19" not in message  # the tail only
    assert not info.value.timed_out


async def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    workshop = make_workshop(
        tmp_path,
        {"create.sh": f"""
            #!/bin/sh
            sleep 300 &
            echo $! > {pidfile}
            echo started
            sleep 300
            """},
    )  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(HookError) as info:
        await run_hook(workshop, "create", {}, timeout=1.0)
    elapsed = time.monotonic() - t0
    assert info.value.timed_out
    assert "did not finish within 1s and was stopped" in str(info.value)
    assert "started" in str(info.value)
    assert elapsed < 1.0 + 3.0 + 2.0  # timeout + SIGTERM grace, with slack
    child = int(pidfile.read_text())
    for _ in range(50):
        if not pid_alive(child):
            break
        await asyncio.sleep(0.05)
    assert not pid_alive(child), "the hook's background child survived the timeout"


async def test_hook_that_ignores_sigterm_is_killed(tmp_path):
    workshop = make_workshop(
        tmp_path,
        {"reset.sh": """
            #!/bin/bash
            trap '' TERM
            echo stubborn
            while true; do sleep 0.1; done
            """},
    )  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(HookError) as info:
        await run_hook(workshop, "reset", {}, timeout=0.5)
    assert info.value.timed_out
    assert time.monotonic() - t0 < 0.5 + 3.0 + 3.0


async def test_hooks_do_not_block_the_event_loop(tmp_path):
    workshop = make_workshop(tmp_path, {"create.sh": "#!/bin/sh\nsleep 1\n"})
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    await asyncio.gather(*(run_hook(workshop, "create", {}, timeout=30) for _ in range(3)))
    task.cancel()
    assert ticks >= 12  # ~20 expected in 1 s; a blocked loop gives 0


async def test_missing_hook_is_none_and_unrunnable_hook_is_an_error(tmp_path):
    workshop = make_workshop(tmp_path, {"cleanup.sh": "#!/bin/sh\nexit 0\n"})
    assert await run_hook(workshop, "reset", {}, timeout=5) is None
    (workshop.path / "hooks" / "cleanup.sh").unlink()
    with pytest.raises(HookError) as info:
        await run_hook(workshop, "cleanup", {}, timeout=5)
    assert "cannot run: its file" in str(info.value) and "cleanup.sh is missing" in str(info.value)
