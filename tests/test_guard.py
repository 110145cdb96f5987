"""The process guard against real processes of a real system account (created for the
test as root and removed after): a CPU hog and deny-listed miners are killed; root's
and the hub's own processes never are. Then through a real hub: the kill is recorded
as an event and the participant's session ends."""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.hubprocess import HubProcess
from tests.test_lifecycle_hub import (
    LIFECYCLE_TOKEN,
    db_run,
    lifecycle_config,
    make_workshop,
    registration,
    signup,
)
from wod_hub.guard import ProcessGuard, UnsafeHome, kill_user_processes, wipe_home
from wod_hub.orm import Event
from wod_hub.service import LifecycleService

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd"), reason="creates system users"
)
BUSY = ["/bin/sh", "-c", "while :; do :; done"]


def add_user(name: str) -> pwd.struct_passwd:
    subprocess.run(["userdel", "-r", name], capture_output=True)  # a leftover of a crashed run
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True
    )
    return pwd.getpwnam(name)


@pytest.fixture
def student():
    name = f"wodg{secrets.token_hex(3)}"
    user = add_user(name)
    procs: list[subprocess.Popen] = []

    def run(cmd, **kw):
        p = subprocess.Popen(
            cmd, user=user.pw_uid, group=user.pw_gid, stdout=subprocess.DEVNULL, **kw
        )
        procs.append(p)
        return p

    yield user, run
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
    subprocess.run(["userdel", name], check=True)


def guard_for(user, **kw) -> ProcessGuard:
    kw.setdefault(
        "cpu_threshold", 50.0
    )  # a shared 2-core test machine: a busy loop may not get 98 %
    kw.setdefault("cpu_sustain", 1.5)
    return ProcessGuard(username_pattern=f"^{user.pw_name}$", **kw)


def scan_until(guard: ProcessGuard, done, timeout: float = 20.0, every: float = 0.3) -> list:
    kills = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kills += guard.scan().kills
        if done():
            return kills
        time.sleep(every)
    raise AssertionError(f"the guard did not act within {timeout}s (kills so far: {kills})")


def test_guard_never_touches_root_or_its_own_user():
    guard = ProcessGuard(username_pattern=".*", min_uid=0, max_uid=10**9)
    assert not guard.is_student(0, "root")
    assert not guard.is_student(os.getuid(), "anyone")
    assert guard.is_student(12345, "student3")
    assert not ProcessGuard().is_student(12345, "alice")  # default: seat usernames only
    assert not ProcessGuard().is_student(500, "student3")  # below min_uid: a system account


@pytest.mark.parametrize(
    "name, exe, cmdline, hit",
    [
        ("xmrig", "/tmp/x/xmrig", ["./xmrig", "-o", "pool"], "deny-listed program xmrig"),
        (
            "python3",
            "/usr/bin/python3",
            ["/home/s/.cache/XMRig-6.21/xmrig"],
            "deny-listed program xmrig",
        ),
        ("t-rex", "", [], "deny-listed program t-rex"),
        ("sh", "/bin/sh", ["sh", "-c", "x", "stratum+tcp://pool:3333"], "command line matches"),
        ("python3", "/usr/bin/python3", ["python3", "mine_data.py"], None),
        ("jupyter-lab", "/usr/bin/python3", ["jupyter-lab", "--ip", "0.0.0.0"], None),
    ],
)
def test_deny_reason(name, exe, cmdline, hit):
    reason = ProcessGuard().deny_reason(name, exe, cmdline)
    assert (reason is None) if hit is None else reason.startswith(hit)


def test_invalid_options_name_the_option():
    with pytest.raises(Exception, match="ProcessGuard.username_pattern"):
        ProcessGuard(username_pattern="(")
    with pytest.raises(Exception, match="ProcessGuard.cpu_threshold"):
        ProcessGuard(cpu_threshold=0)


@needs_root
def test_kills_a_sustained_cpu_hog_only(student):
    user, run = student
    hog = run(BUSY)
    idle = run(["/bin/sleep", "120"])
    root_hog = subprocess.Popen(BUSY, preexec_fn=lambda: os.nice(19))  # root's: never touched
    try:
        guard = guard_for(user)
        started = time.monotonic()
        kills = scan_until(guard, lambda: hog.poll() is not None)
        assert time.monotonic() - started >= guard.cpu_sustain  # not before the sustain period
        assert hog.wait(5) == -9
        assert [k.pid for k in kills] == [hog.pid] and "CPU" in kills[0].reason
        assert kills[0].username == user.pw_name and kills[0].cpu_percent >= 50
        assert idle.poll() is None and root_hog.poll() is None
    finally:
        root_hog.kill()
        root_hog.wait()


@needs_root
def test_kills_deny_listed_programs_at_once(student):
    user, run = student
    bindir = Path(tempfile.mkdtemp(prefix="wod-guard-"))
    try:
        bindir.chmod(0o755)
        miner = bindir / "xmrig"
        shutil.copy("/bin/sleep", miner)
        miner.chmod(0o755)
        named = run([str(miner), "120"])
        pooled = run(["/bin/sh", "-c", "sleep 120", "stratum+tcp://pool.example.org:3333"])
        harmless = run(["/bin/sleep", "120"])
        time.sleep(0.3)
        kills = (
            ProcessGuard(username_pattern=f"^{user.pw_name}$").scan().kills
        )  # one scan, no sustain
        assert named.wait(5) == -9 and pooled.wait(5) == -9
        assert harmless.poll() is None
        reasons = {k.pid: k.reason for k in kills}
        assert reasons[named.pid] == "deny-listed program xmrig"
        assert reasons[pooled.pid].startswith("command line matches")
    finally:
        shutil.rmtree(bindir)


@needs_root
def test_purge_helpers(student, tmp_path):
    user, run = student
    leftover = run(["/bin/sleep", "120"])
    assert kill_user_processes(user.pw_name) == [leftover.pid]
    assert leftover.wait(5) == -9
    assert kill_user_processes("root") == [] and kill_user_processes("no-such-user-x") == []

    home = tmp_path / "homes" / user.pw_name
    (home / "WKSHP-X" / "deep").mkdir(parents=True)
    (home / "WKSHP-X" / "deep" / "a.txt").write_text("x")
    (home / ".bashrc").write_text("x")
    assert wipe_home(home, user.pw_name) == 2
    assert home.is_dir() and list(home.iterdir()) == []
    with pytest.raises(UnsafeHome):
        wipe_home(tmp_path / "homes", user.pw_name)  # not named after the student
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "links" / user.pw_name
    link.parent.mkdir()
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeHome):
        wipe_home(link, user.pw_name)


# ---- through a real hub ----------------------------------------------------------------------

GUARD_RANGE = (9990, 9999)  # far from other tests' seats: the student's system user is created here


@needs_root
@pytest.mark.slow
def test_guard_reports_and_ends_the_session(tmp_path, smtp_server):
    workshops = tmp_path / "workshops"
    make_workshop(workshops, "WKSHP-Guard", *GUARD_RANGE)
    hub = HubProcess(
        tmp_path / "hub",
        smtp_port=smtp_server.port,
        workshop_dirs=[workshops],
        extra_config=lifecycle_config(tmp_path / "hub"),
    )
    hub.start()
    name = None
    try:
        _, name, rid = signup(hub, smtp_server, "miner@example.org", workshop="WKSHP-Guard")
        user = add_user(name)
        bindir = Path(tempfile.mkdtemp(prefix="wod-guard-"))
        bindir.chmod(0o755)
        shutil.copy("/bin/sleep", bindir / "cpuminer")
        miner = subprocess.Popen(
            [str(bindir / "cpuminer"), "120"], user=user.pw_uid, group=user.pw_gid
        )

        svc = LifecycleService(
            url=hub.api_url, api_token=LIFECYCLE_TOKEN, worker_id="guard", claim_ttl=30
        )
        svc.guard.end_registration = True

        async def go():
            svc.connect()
            try:
                result = await svc.guard_pass()
                return result, await svc.sweep()
            finally:
                svc.close()

        result, report = asyncio.run(go())
        assert miner.wait(5) == -9 and [k.pid for k in result.kills] == [miner.pid]
        assert report.ended == 1
        r = registration(hub, rid)
        assert (r.state, r.ended_reason) == ("ended", "guard")

        async def kills(s):
            return (
                (await s.execute(select(Event).where(Event.kind == "guard_kill"))).scalars().all()
            )

        [event] = db_run(hub, kills)
        assert event.registration_id == rid and event.actor == "wod-lifecycle"
        assert (
            event.detail["process"] == "cpuminer"
            and event.detail["reason"] == "deny-listed program cpuminer"
        )
        assert r.expires_at <= r.ended_at + timedelta(seconds=1)
        shutil.rmtree(bindir)
    finally:
        hub.stop()
        if name is not None:
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
            subprocess.run(["userdel", name], capture_output=True)
