"""The workshop spawner through a real hub + proxy: register like a browser, follow the
e-mailed link, spawn, and read the personalized notebook back through the student's own
server (a real JupyterLab); hooks, failures, retries, restarts and content delivery."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from tests.hubprocess import register
from tests.test_register_http import start_with_link, wait_for_link
from wod_hub.db import Database
from wod_hub.orm import Event, Registration, Seat, WorkshopRow

READY_TIMEOUT = 90
NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "Welcome {{ participant.name }}, you are student{{ STDID }}."},
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
         "source": "password = '{{ PASSSTU }}'\nhub = '{{ WODBEEXTFQDN }}'"},
    ],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 4,
}  # fmt: skip


def make_workshop(
    root: Path, wid: str, students: str, *, hooks: dict | None = None, **meta
) -> Path:
    d = root / wid
    (d / "hooks").mkdir(parents=True)
    data = {"name": f"{wid} workshop", "duration": "2h", "students": students, **meta}
    (d / "workshop.yaml").write_text(json.dumps(data))
    (d / "0-ReadMeFirst.ipynb").write_text(json.dumps(NOTEBOOK))
    (d / "1-Lab.ipynb").write_text(json.dumps({**NOTEBOOK, "cells": NOTEBOOK["cells"][:1]}))
    (d / "run.sh").write_text("#!/bin/sh\necho student{{ STDID }}\n")
    (d / "run.sh").chmod(0o755)
    for name, body in (hooks or {}).items():
        path = d / "hooks" / name
        path.write_text(textwrap.dedent(body).lstrip())
        path.chmod(0o755)
    return d


def jupyterlab_spawner(homes: Path, **options) -> str:
    """WorkshopSimpleSpawner running a real JupyterLab (jupyterhub-singleuser)."""
    lines = [
        'c.JupyterHub.spawner_class = "wod-simple"',
        f'c.WorkshopSimpleSpawner.home_dir_template = "{homes}/{{username}}"',
        f"c.Spawner.cmd = [{str(Path(sys.executable).parent / 'jupyterhub-singleuser')!r}]",
        'c.Spawner.args = ["--ServerApp.allow_root=True"]' if os.getuid() == 0 else "",
        "c.Spawner.start_timeout = 90",
        "c.Spawner.http_timeout = 90",
    ]
    lines += [f"c.WorkshopSimpleSpawner.{k} = {v!r}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def mock_spawner(homes: Path, **options) -> str:
    """WorkshopSimpleSpawner running JupyterHub's tiny mock server (fast; echoes its env)."""
    lines = [
        'c.JupyterHub.spawner_class = "wod-simple"',
        f'c.WorkshopSimpleSpawner.home_dir_template = "{homes}/{{username}}"',
        f'c.Spawner.cmd = [{sys.executable!r}, "-m", "jupyterhub.tests.mocksu"]',
        "c.Spawner.start_timeout = 60",
        "c.Spawner.http_timeout = 30",
    ]
    lines += [f"c.WorkshopSimpleSpawner.{k} = {v!r}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def person(i: int, workshop: str) -> dict:
    return {
        "email": f"grace{i}@example.org",
        "first_name": "Grace",
        "last_name": f"Hopper{i}",
        "company": "Navy",
        "workshop": workshop,
    }


def sign_up(hub, smtp_server, i: int, workshop: str) -> tuple[requests.Session, str]:
    """Register, follow the e-mailed link: a logged-in browser and the student's name."""
    r = register(requests.Session(), hub, **person(i, workshop))
    assert r.status_code == 200, r.text
    username = re.search(r'id="wod-username">(student\d+)<', r.text).group(1)
    browser = requests.Session()
    r = start_with_link(browser, wait_for_link(smtp_server, f"grace{i}@example.org"))
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/hub/spawn/{username}")
    return browser, username


class Progress:
    """Reads the spawn's progress events (server-sent events) in a thread."""

    def __init__(self, hub, username: str):
        self.events: list[dict] = []
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(hub, username), daemon=True)
        self._thread.start()

    def _read(self, hub, username):
        try:
            with hub.api("GET", f"/users/{username}/server/progress", stream=True) as r:
                for line in r.iter_lines(decode_unicode=True):
                    if line and line.startswith("data:"):
                        event = json.loads(line[5:])
                        self.events.append(event)
                        if event.get("ready") or event.get("failed"):
                            break
        finally:
            self.done.set()

    def messages(self, timeout: float = READY_TIMEOUT) -> list[str]:
        self.done.wait(timeout)
        return [e.get("message", "") for e in self.events]


def spawn(browser: requests.Session, hub, username: str) -> requests.Response:
    """What the browser does after the login link: GET /hub/spawn/<user>."""
    return browser.get(f"{hub.url}/hub/spawn/{username}", allow_redirects=False, timeout=60)


def wait_ready(hub, username: str, timeout: float = READY_TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = hub.api("GET", f"/users/{username}").json()
        server = model["servers"].get("")
        if server and server.get("ready"):
            return server
        time.sleep(0.2)
    raise AssertionError(f"{username}'s server not ready after {timeout}s:\n{hub.log_tail()}")


def wait_stopped(hub, username: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while hub.api("GET", f"/users/{username}").json()["servers"]:
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.2)


def db_query(db_url: str, fn):
    async def go():
        db = Database(db_url)
        try:
            async with db.session() as s:
                return await fn(s)
        finally:
            await db.dispose()

    return asyncio.run(go())


def registration_of(hub, username: str) -> Registration:
    async def q(s):
        return (
            (
                await s.execute(
                    select(Registration)
                    .where(Registration.username == username)
                    .order_by(Registration.id.desc())
                )
            )
            .scalars()
            .first()
        )

    return db_query(hub.db_url, q)


def wait_state(hub, username: str, state: str, timeout: float = 30) -> Registration:
    deadline = time.monotonic() + timeout
    while True:
        reg = registration_of(hub, username)
        if reg.state == state:
            return reg
        assert time.monotonic() < deadline, (
            f"{username} stays {reg.state!r}, not {state!r}:\n{hub.log_tail()}"
        )
        time.sleep(0.2)


def server_pid(hub, username: str) -> int:
    return hub.api("GET", f"/users/{username}", params={"include_stopped_servers": "0"}).json()[
        "servers"
    ][""]["state"]["pid"]


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def proc_limits(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name = re.split(r"\s{2,}", line.strip())
        out[name[0]] = name[1]
    return out


@pytest.fixture
def homes(tmp_path) -> Path:
    d = tmp_path / "homes"
    d.mkdir()
    return d


# ---- end to end with JupyterLab ---------------------------------------------------------------
def test_register_spawn_and_read_the_personalized_notebook(
    hub_factory, smtp_server, tmp_path, homes
):
    workshops = tmp_path / "workshops"
    make_workshop(
        workshops, "WKSHP-Alpha", "1-10", varpass=True, variables={"API_URL": "https://api.example.org"},
        limits={"memory": "3G", "cpu_time": "2h"},
        hooks={"create.sh": """
            #!/bin/sh
            sleep 1
            echo "student $WOD_STUDENT_ID of $WOD_WORKSHOP" > "$WOD_HOME/$WOD_CONTENT_DIR/created-by-hook.txt"
            """},
    )  # fmt: skip
    hub = hub_factory(
        smtp_port=smtp_server.port, workshop_dirs=[workshops], spawner=jupyterlab_spawner(homes)
    )
    browser, username = sign_up(hub, smtp_server, 1, "WKSHP-Alpha")
    assert username == "student1"

    t0 = time.monotonic()
    r = spawn(browser, hub, username)
    progress = Progress(hub, username)
    assert r.status_code == 302 and "/hub/spawn-pending/student1" in r.headers["Location"], r.text
    assert registration_of(hub, username).state in ("provisioning", "active")
    wait_ready(hub, username)
    print(f"spawn request to ready (JupyterLab): {time.monotonic() - t0:.1f}s")
    messages = progress.messages()
    for expected in (
        "Preparing your notebooks",
        "Running the workshop's setup",
        "Starting your server",
    ):
        assert expected in messages, messages
    assert messages.index("Preparing your notebooks") < messages.index("Starting your server")

    reg = wait_state(hub, username, "active")
    assert reg.ready_at is not None and reg.error is None

    # like a browser: the hub's OAuth hands the student's server a cookie, then its contents API
    lab = browser.get(f"{hub.url}/user/{username}/", timeout=30)
    assert lab.status_code == 200, (lab.url, [r.url for r in lab.history], hub.log_tail(30))
    assert lab.url.endswith("/user/student1/lab/tree/WKSHP-Alpha/0-ReadMeFirst.ipynb"), lab.url
    model = browser.get(
        f"{hub.url}/user/{username}/api/contents/WKSHP-Alpha/0-ReadMeFirst.ipynb", timeout=30
    )
    assert model.status_code == 200, model.text
    cells = model.json()["content"]["cells"]
    assert cells[0]["source"] == "Welcome Grace Hopper1, you are student1."
    password = re.search(r"password = '([^']+)'", cells[1]["source"]).group(1)
    assert len(password) >= 12 and "{{" not in cells[1]["source"]
    assert "hub = '127.0.0.1'" in cells[1]["source"]
    hook_file = browser.get(
        f"{hub.url}/user/{username}/api/contents/WKSHP-Alpha/created-by-hook.txt", timeout=30
    )
    assert hook_file.json()["content"].strip() == "student 1 of WKSHP-Alpha"
    script = browser.get(
        f"{hub.url}/user/{username}/api/contents/WKSHP-Alpha/run.sh", timeout=30
    ).json()
    assert script["content"] == "#!/bin/sh\necho student1\n"
    assert os.access(homes / username / "WKSHP-Alpha" / "run.sh", os.X_OK)  # modes kept
    # another user's browser gets nothing from this server
    assert requests.get(f"{hub.url}/user/{username}/api/contents", timeout=30).status_code in (
        302,
        403,
    )

    # the server's environment: context, variables, the seat secret (varpass), limits
    pid = server_pid(hub, username)
    env = proc_environ(pid)
    assert env["WOD_WORKSHOP"] == "WKSHP-Alpha" and env["STDID"] == "1" == env["WOD_STUDENT_ID"]
    assert env["WOD_USERNAME"] == "student1" and env["API_URL"] == "https://api.example.org"
    assert env["PASSSTU"] == password
    assert env["WOD_FIRST_NOTEBOOK"] == "WKSHP-Alpha/0-ReadMeFirst.ipynb"
    limits = proc_limits(pid)
    assert limits["Max address space"] == str(3 * 1024**3)
    assert limits["Max cpu time"] == str(2 * 3600)

    events = db_query(hub.db_url, lambda s: _events(s, reg.id))
    assert events[-2:] == ["provisioning", "active"]


async def _events(s, registration_id):
    rows = await s.execute(
        select(Event.kind).where(Event.registration_id == registration_id).order_by(Event.id)
    )
    return [k for (k,) in rows]


# ---- failures (mock server: fast) ---------------------------------------------------------------
def seat_state(hub, username: str) -> tuple[int | None, int]:
    async def q(s):
        seat = (await s.execute(select(Seat).where(Seat.username == username))).scalar_one()
        in_use = (
            await s.execute(
                select(WorkshopRow.seats_in_use).where(WorkshopRow.id == seat.workshop_id)
            )
        ).scalar_one()
        return seat.registration_id, in_use

    return db_query(hub.db_url, q)


FAILING_CREATE = """
    #!/bin/sh
    echo "connecting to the appliance of student $WOD_STUDENT_ID"
    echo "appliance unreachable" >&2
    exit 3
    """


def test_failing_create_hook_fails_cleanly(hub_factory, smtp_server, tmp_path, homes):
    workshops = tmp_path / "workshops"
    make_workshop(workshops, "WKSHP-Broken", "1-10", hooks={
        "create.sh": FAILING_CREATE,
        "cleanup.sh": '#!/bin/sh\necho "cleaned $WOD_USERNAME" > "$WOD_HOME/cleanup-ran.txt"\n',
    })  # fmt: skip
    hub = hub_factory(
        smtp_port=smtp_server.port, workshop_dirs=[workshops], spawner=mock_spawner(homes)
    )
    browser, username = sign_up(hub, smtp_server, 2, "WKSHP-Broken")
    assert seat_state(hub, username)[1] == 1

    r = spawn(browser, hub, username)
    progress = Progress(hub, username)
    if r.status_code == 302:  # failed after the first second: the spawn-pending page reports it
        messages = progress.messages(30)
        failure = messages[-1]
    else:  # failed within a second: the spawn page itself shows the error
        failure = r.text
    assert "We could not prepare your workshop" in failure, failure
    assert "register again" in failure
    assert (
        "appliance unreachable" not in failure
    )  # the hook's output is for admins, not participants

    reg = wait_state(hub, username, "failed")
    assert "The create hook of workshop WKSHP-Broken failed with exit code 3" in reg.error
    assert "appliance unreachable" in reg.error and reg.ended_reason == "deployment_failed"
    assert seat_state(hub, username) == (None, 0)  # the seat is back
    assert not (homes / username / "WKSHP-Broken").exists()  # nothing half-provisioned
    assert (homes / username / "cleanup-ran.txt").read_text().strip() == f"cleaned {username}"
    assert hub.api("GET", f"/users/{username}").json()["servers"] == {}

    apology = smtp_server.wait_for(lambda m: "grace2@example.org" in m["To"] and "ready" not in m["Subject"].lower()
                                   and m is not smtp_server.messages[0], timeout=30)  # fmt: skip
    text = smtp_server.text_of(apology)
    assert "something went wrong" in text and "WKSHP-Broken workshop" in text
    assert f"{hub.url}/hub/login" in text
    # once only, whatever retries or reloads happen
    time.sleep(1.5)
    assert len([m for m in smtp_server.messages if "grace2@example.org" in m["To"]]) == 2

    # the participant is signed out: their registration is not live any more
    again = browser.get(f"{hub.url}/hub/spawn/{username}", allow_redirects=False, timeout=30)
    assert again.status_code in (302, 403) and "/hub/spawn-pending" not in again.headers.get(
        "Location", ""
    )


def test_hook_timeout_fails_the_deployment(hub_factory, smtp_server, tmp_path, homes):
    workshops = tmp_path / "workshops"
    nap = f"{100 + secrets.randbelow(10**6) / 10**6:.6f}"  # a command line no other process has
    make_workshop(
        workshops,
        "WKSHP-Slow",
        "1-10",
        hooks={"create.sh": f"#!/bin/sh\necho waiting\nsleep {nap}\n"},
    )
    hub = hub_factory(
        smtp_port=smtp_server.port,
        workshop_dirs=[workshops],
        spawner=mock_spawner(homes, hook_timeout=1.5),
    )
    browser, username = sign_up(hub, smtp_server, 3, "WKSHP-Slow")
    t0 = time.monotonic()
    spawn(browser, hub, username)
    reg = wait_state(hub, username, "failed")
    assert time.monotonic() - t0 < 15
    assert "did not finish within 1.5s and was stopped" in reg.error and "waiting" in reg.error
    assert seat_state(hub, username) == (None, 0)
    for _ in range(20):  # SIGKILL is sent before the failure is recorded; give the kernel a moment
        out = subprocess.run(["pgrep", "-f", f"sleep {nap}"], capture_output=True, text=True)
        if not out.stdout.strip():
            break
        time.sleep(0.1)
    assert out.stdout.strip() == "", "the hook's sleep survived the timeout"


def test_retry_on_failure(hub_factory, smtp_server, tmp_path, homes):
    workshops = tmp_path / "workshops"
    flag = tmp_path / "failed-once"
    make_workshop(workshops, "WKSHP-Flaky", "1-10", hooks={"create.sh": f"""
        #!/bin/sh
        if [ ! -e {flag} ]; then touch {flag}; echo "first try fails"; exit 1; fi
        echo "second try works"
        """})  # fmt: skip
    hub = hub_factory(
        smtp_port=smtp_server.port,
        workshop_dirs=[workshops],
        spawner=mock_spawner(homes, retry_on_failure=1),
    )
    browser, username = sign_up(hub, smtp_server, 4, "WKSHP-Flaky")
    spawn(browser, hub, username)
    wait_ready(hub, username)
    reg = wait_state(hub, username, "active")
    assert reg.error is None and flag.exists()
    assert (homes / username / "WKSHP-Flaky" / "0-ReadMeFirst.ipynb").is_file()
    assert "first try fails" in hub.log_tail(400) and "retrying" in hub.log_tail(400)


def test_ended_workshop_is_refused_with_a_message(hub_factory, smtp_server, tmp_path, homes):
    workshops = tmp_path / "workshops"
    make_workshop(workshops, "WKSHP-Alpha", "1-10")
    hub = hub_factory(
        smtp_port=smtp_server.port, workshop_dirs=[workshops], spawner=mock_spawner(homes)
    )
    browser, username = sign_up(hub, smtp_server, 5, "WKSHP-Alpha")

    async def expire(s):
        reg = (
            await s.execute(select(Registration).where(Registration.username == username))
        ).scalar_one()
        reg.state = "expired"
        await s.commit()

    db_query(hub.db_url, expire)
    # the admin API spawn (no browser session involved) gets the participant's sentence
    r = hub.api("POST", f"/users/{username}/server")
    assert r.status_code in (400, 403), r.text
    assert "Your workshop has ended" in r.json()["message"], r.text
    assert not (homes / username / "WKSHP-Alpha").exists()


def test_restart_keeps_the_students_work_and_content_endpoint(
    hub_factory, smtp_server, tmp_path, homes
):
    workshops = tmp_path / "workshops"
    make_workshop(workshops, "WKSHP-Alpha", "1-10", variables={"GREETING": "hi there"})
    hub = hub_factory(
        smtp_port=smtp_server.port, workshop_dirs=[workshops], spawner=mock_spawner(homes)
    )
    browser, username = sign_up(hub, smtp_server, 6, "WKSHP-Alpha")
    _, other = sign_up(hub, smtp_server, 7, "WKSHP-Alpha")
    spawn(browser, hub, username)
    wait_ready(hub, username)
    wait_state(hub, username, "active")
    env = proc_environ(server_pid(hub, username))
    assert env["GREETING"] == "hi there" and "PASSSTU" not in env  # not a varpass workshop
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/lab/tree/WKSHP-Alpha/0-ReadMeFirst.ipynb"
    token = env["JUPYTERHUB_API_TOKEN"]

    # the content bundle, with the server's own token
    url = f"{hub.url}/hub/api/wod/content/{username}"
    r = requests.get(url, headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert (
        r.headers["Content-Type"] == "application/gzip"
        and r.headers["X-Wod-Content-Dir"] == "WKSHP-Alpha"
    )
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        names = sorted(tar.getnames())
        nb = json.loads(tar.extractfile("WKSHP-Alpha/0-ReadMeFirst.ipynb").read())
    assert names == ["WKSHP-Alpha/.wod-content", "WKSHP-Alpha/0-ReadMeFirst.ipynb", "WKSHP-Alpha/1-Lab.ipynb",
                     "WKSHP-Alpha/run.sh"]  # fmt: skip
    assert "".join(nb["cells"][0]["source"]) == "Welcome Grace Hopper6, you are student1."
    assert requests.get(url, timeout=30).status_code in (401, 403)
    assert requests.get(f"{hub.url}/hub/api/wod/content/{other}", headers={"Authorization": f"token {token}"},
                        timeout=30).status_code == 403  # fmt: skip

    # wod-hub fetch-content, as a container runs it
    dest = tmp_path / "container-home"
    fetch_env = {**os.environ, "JUPYTERHUB_API_URL": f"{hub.url}/hub/api", "JUPYTERHUB_API_TOKEN": token,
                 "JUPYTERHUB_USER": username}  # fmt: skip
    cmd = [
        sys.executable,
        "-m",
        "wod_hub.cli.content",
        "--dest",
        str(dest),
        "--",
        "cat",
        "WKSHP-Alpha/run.sh",
    ]
    out = subprocess.run(
        cmd, env=fetch_env, cwd=dest.parent, capture_output=True, text=True, timeout=60
    )
    assert (
        out.returncode == 1 and "No such file" in out.stderr
    )  # cwd is not dest: exec'd cat says so
    first = subprocess.run(cmd[:5], env=fetch_env, capture_output=True, text=True, timeout=60)
    assert (
        first.returncode == 0 and "files into" in first.stdout or "already holds" in first.stdout
    ), first
    assert (dest / "WKSHP-Alpha" / "run.sh").read_text() == "#!/bin/sh\necho student1\n"
    (dest / "WKSHP-Alpha" / "mine.txt").write_text("student work")
    again = subprocess.run(cmd[:5], env=fetch_env, capture_output=True, text=True, timeout=60)
    assert (
        "already holds this workshop; kept" in again.stdout
        and (dest / "WKSHP-Alpha" / "mine.txt").exists()
    )
    bad = subprocess.run(cmd[:5], env={**fetch_env, "JUPYTERHUB_API_TOKEN": "nope"}, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 1 and "the hub refused the content (401)" in bad.stderr

    # the student works, the server restarts: nothing is re-rendered over their work
    notebook = homes / username / "WKSHP-Alpha" / "1-Lab.ipynb"
    notebook.write_text("edited by the student")
    assert hub.api("DELETE", f"/users/{username}/server").status_code in (202, 204)
    wait_stopped(hub, username)
    assert hub.api("POST", f"/users/{username}/server").status_code in (201, 202)
    wait_ready(hub, username)
    assert notebook.read_text() == "edited by the student"
    assert registration_of(hub, username).state == "active"


def test_server_stopped_right_after_ready_is_not_a_failed_deployment(
    hub_factory, smtp_server, tmp_path, homes
):
    workshops = tmp_path / "workshops"
    make_workshop(workshops, "WKSHP-Alpha", "1-10")
    # the watcher looks every 30 s: it cannot see the short ready window, stop() must
    spawner = mock_spawner(homes, ready_poll_interval=30.0)
    hub = hub_factory(smtp_port=smtp_server.port, workshop_dirs=[workshops], spawner=spawner)
    browser, username = sign_up(hub, smtp_server, 8, "WKSHP-Alpha")
    spawn(browser, hub, username)
    wait_ready(hub, username)
    assert hub.api("DELETE", f"/users/{username}/server").status_code in (202, 204)
    wait_stopped(hub, username)
    reg = wait_state(hub, username, "active", timeout=40)
    assert reg.error is None and reg.ready_at is not None
    assert seat_state(hub, username) == (reg.id, 1)
