"""WorkshopLocalProcessSpawner for real: students are system users created at their first
spawn (as root), their servers run JupyterLab from the student venv under their own uid
and resource limits, and neither another student nor the hub's secrets are readable.

Needs root (useradd) and /opt/wod-student-venv (scripts/student-venv.sh, built by the
fixture when missing). The users are removed afterwards."""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.hubprocess import ROOT, HubProcess
from tests.test_spawner import (
    make_workshop,
    proc_limits,
    server_pid,
    sign_up,
    spawn,
    wait_ready,
    wait_state,
    wait_stopped,
)

STUDENT_VENV = Path("/opt/wod-student-venv")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates system users: needs root")


@pytest.fixture(scope="module")
def student_venv() -> Path:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "student-venv.sh")],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/student-venv.sh failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    return STUDENT_VENV


def _pids_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def remove_user(name: str) -> None:
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    for pid in _pids_of(uid):  # what this test's servers left, by id
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=60)
    subprocess.run(["groupdel", name], capture_output=True, timeout=60)


@pytest.fixture
def sandbox():
    """A world-traversable directory (like /srv): only our permissions protect the hub's files."""
    root = Path("/var/tmp") / f"wod-local-test-{secrets.token_hex(4)}"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run_as(user: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", user, "--", *cmd], capture_output=True, text=True, timeout=30
    )


def test_students_are_isolated_system_users(student_venv, sandbox, smtp_server):
    numbers = (9101, 9102)
    users = [f"student{n}" for n in numbers]
    for name in users:
        remove_user(name)
    workshops = sandbox / "workshops"
    make_workshop(workshops, "WKSHP-Local", f"{numbers[0]}-{numbers[1]}", varpass=True)
    homes = sandbox / "home"
    homes.mkdir(mode=0o755)
    config = f"""
c.JupyterHub.spawner_class = "wod"
c.WorkshopLocalProcessSpawner.home_dir_template = "{homes}/{{username}}"
c.WorkshopLocalProcessSpawner.default_limits = {{"memory": "4G", "processes": 300, "cpu_time": "3h"}}
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
"""
    hub = HubProcess(
        sandbox / "hub", smtp_port=smtp_server.port, workshop_dirs=[workshops], spawner=config
    )
    hub.workdir.chmod(0o755)
    try:
        hub.start()
        sessions = {}
        for i, name in enumerate(users):
            browser, username = sign_up(hub, smtp_server, 100 + i, "WKSHP-Local")
            assert username == name
            sessions[name] = browser
            assert spawn(browser, hub, name).status_code == 302
        for name in users:
            wait_ready(hub, name)
            wait_state(hub, name, "active")
        a, b = users

        # system users with private homes and their own group
        for name in users:
            entry = pwd.getpwnam(name)
            home = Path(entry.pw_dir)
            assert home == homes / name
            st = home.stat()
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
                entry.pw_uid,
                entry.pw_gid,
                0o700,
            )
            assert subprocess.run(["getent", "group", name], capture_output=True).returncode == 0
            for path in (home / "WKSHP-Local").rglob("*"):
                assert path.stat().st_uid == entry.pw_uid, path

        # the server runs as the student, from the student venv, under limits
        pid = server_pid(hub, a)
        status = Path(f"/proc/{pid}/status").read_text()
        uid = pwd.getpwnam(a).pw_uid
        assert re.search(rf"^Uid:\s+{uid}\s+{uid}", status, re.M), status
        exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert any(part.startswith(str(STUDENT_VENV).encode()) for part in exe), exe
        limits = proc_limits(pid)
        assert limits["Max address space"] == str(4 * 1024**3)
        assert limits["Max processes"] == "300"
        assert limits["Max cpu time"] == str(3 * 3600)

        # the personalized notebook, through the student's own server (OAuth first, like a browser)
        assert sessions[a].get(f"{hub.url}/user/{a}/", timeout=30).status_code == 200
        model = sessions[a].get(
            f"{hub.url}/user/{a}/api/contents/WKSHP-Local/0-ReadMeFirst.ipynb", timeout=30
        )
        assert model.status_code == 200, model.text
        assert (
            model.json()["content"]["cells"][0]["source"]
            == f"Welcome Grace Hopper100, you are {a}."
        )

        # student A cannot read student B's files, nor list B's home
        b_notebook = homes / b / "WKSHP-Local" / "0-ReadMeFirst.ipynb"
        assert b_notebook.is_file()
        denied = run_as(a, "cat", str(b_notebook))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        assert run_as(a, "ls", str(homes / b)).returncode != 0
        assert (
            run_as(a, "cat", str(homes / a / "WKSHP-Local" / "0-ReadMeFirst.ipynb")).returncode == 0
        )

        # nor the hub's database, secret key, cookie secret or config
        private = [
            hub.workdir / "wod_hub.sqlite",
            hub.workdir / "wod_secret",
            hub.workdir / "jupyterhub.sqlite",
            hub.workdir / "cookie_secret",
            hub.workdir / "jupyterhub_config.py",
        ]
        for path in private:
            assert path.exists(), path
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (
                f"{path} is {oct(path.stat().st_mode)}"
            )
            out = run_as(a, "cat", str(path))
            assert out.returncode != 0 and "Permission denied" in out.stderr, (path, out)
        # the hub's directory itself is traversable here: the files' own modes protect them
        assert run_as(a, "ls", str(hub.workdir)).returncode == 0

        for name in users:
            assert hub.api("DELETE", f"/users/{name}/server").status_code in (202, 204)
            wait_stopped(hub, name)
        time.sleep(0.5)
        assert _pids_of(uid) == []
    finally:
        hub.stop()
        for name in users:
            remove_user(name)
    for name in users:
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
