"""The wod-hub-lifecycle service as operators run it: a managed hub service the hub
starts (and restarts), with its least-privilege role. Killed with SIGKILL in the middle
of an end path, it resumes at the first step not done: no step twice, one e-mail."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta

import psutil
import pytest

from tests.hubprocess import HubProcess
from tests.smtp import SMTPServer
from tests.test_lifecycle_hub import (
    events,
    lifecycle_config,
    mails,
    make_workshop,
    registration,
    set_expiry,
    settle,
    signup,
)
from wod_hub.service import LifecycleService

pytestmark = pytest.mark.slow

SLOW_RESET = 3  # seconds the reset hook takes: the window in which the service is killed


@pytest.fixture
def smtp():
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def managed_hub(tmp_path, smtp):
    workshops = tmp_path / "workshops"
    make_workshop(
        workshops,
        "WKSHP-Slow",
        1,
        10,
        "reset: true\n",
        hooks={
            "reset": f'mkdir -p "$WOD_WORKSHOP_DIR/../marks"\n'
            f'echo start >> "$WOD_WORKSHOP_DIR/../marks/reset-$WOD_USERNAME"\nsleep {SLOW_RESET}\n',
        },
    )
    command = [
        sys.executable,
        "-m",
        "wod_hub.service",
        "--interval=0.5",
        "--claim-ttl=8",
        "--no-guard",
    ]
    hub = HubProcess(
        tmp_path / "hub",
        smtp_port=smtp.port,
        workshop_dirs=[workshops],
        # poll_interval: how soon the hub notices (and restarts) a dead managed service
        extra_config=lifecycle_config(tmp_path / "hub", service=command)
        + "c.Spawner.poll_interval = 1\n",
    )
    hub.start()
    hub.workshops = workshops
    yield hub
    hub.stop()


def service_process(hub) -> psutil.Process | None:
    for proc in psutil.Process(hub.proc.pid).children(recursive=True):
        try:
            if "wod_hub.service" in " ".join(proc.cmdline()):
                return proc
        except psutil.NoSuchProcess:
            continue
    return None


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_kill_9_mid_end_path_resumes_without_a_second_email(managed_hub, smtp):
    hub = managed_hub
    first = wait_for(lambda: service_process(hub), 30, "the hub to start the managed service")
    _, username, rid = signup(hub, smtp, "kill@example.org", workshop="WKSHP-Slow")
    set_expiry(hub, rid, timedelta(seconds=-1))

    marks = hub.workshops / "marks" / f"reset-{username}"
    wait_for(marks.exists, 30, "the reset hook to start (CLEANUP done)")
    assert registration(hub, rid).cleaned_at is not None
    os.kill(first.pid, signal.SIGKILL)  # mid-path: the service dies while the hub runs RESET

    # the hub restarts its managed service; the new process resumes once the dead one's
    # claim lapses (claim_ttl), at the first step not done
    second = wait_for(
        lambda: (p := service_process(hub)) and p.pid != first.pid and p,
        60,
        "a new service process",
    )
    wait_for(lambda: registration(hub, rid).state == "ended", 60, "the end path to complete")

    r = registration(hub, rid)
    assert r.claimed_by is None and r.error is None
    kinds = events(hub, rid)
    for step in ("expired", "stop", "cleanup", "reset", "purge", "final_mail", "end"):
        assert kinds.count(step) == 1, kinds
    assert marks.read_text().count("start") == 1  # RESET ran once: the hub finished it
    smtp.wait_for(
        lambda m: "kill@example.org" in m["To"] and "Thank you" in str(m["Subject"]), timeout=20
    )
    settle()
    assert len(mails(smtp, "kill@example.org", "Thank you")) == 1
    assert second.is_running()


def test_service_configuration_errors_name_the_option():
    with pytest.raises(Exception, match="LifecycleService.interval"):
        LifecycleService(interval=0)
    with pytest.raises(Exception, match="LifecycleService.concurrency"):
        LifecycleService(concurrency=0)
    with pytest.raises(SystemExit, match="no API token"):
        LifecycleService(api_token="").connect()


def test_service_help_lists_the_scopes_and_options():
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "wod_hub.service", "--help-all"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for option in (
        "--interval",
        "--reminder-before",
        "--claim-ttl",
        "--once",
        "ProcessGuard.cpu_threshold",
    ):
        assert option in out
