"""WorkshopDockerSpawner for real (Docker engine + wod-notebook image, host network): each
student's container fetches its own rendered workshop from the hub at start (or gets it
bind-mounted), runs under the workshop's limits, sees nothing of another student, and is
removed when the server stops."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path

import pytest

from tests.test_spawner import make_workshop, sign_up, spawn, wait_ready, wait_state, wait_stopped

pytestmark = pytest.mark.docker
MEMORY = 512 * 1024 * 1024


def docker_spawner_config(engine, prefix: str, **options) -> str:
    lines = [
        'c.JupyterHub.spawner_class = "wod-docker"',
        f"c.WorkshopDockerSpawner.image = {engine.image!r}",
        'c.WorkshopDockerSpawner.network_name = "host"',
        'c.WorkshopDockerSpawner.ip = "127.0.0.1"',
        'c.WorkshopDockerSpawner.pull_policy = "never"',
        f'c.WorkshopDockerSpawner.name_template = "{prefix}-{{username}}"',
        f'c.WorkshopDockerSpawner.client_kwargs = {{"base_url": {engine.host!r}}}',
        "c.Spawner.start_timeout = 120",
        "c.Spawner.http_timeout = 120",
    ]
    lines += [f"c.WorkshopDockerSpawner.{k} = {v!r}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def containers(engine, prefix: str) -> list[str]:
    out = engine.docker(
        "ps", "--all", "--format", "{{.Names}}", "--filter", f"name={prefix}"
    ).stdout
    return sorted(out.split())


@pytest.fixture
def prefix(docker_engine):
    name = f"wod-test-{secrets.token_hex(4)}"
    yield name
    for container in containers(docker_engine, name):  # only if a test failed half-way
        docker_engine.docker("rm", "--force", container, check=False)


def test_fetch_delivery_limits_and_isolation(
    docker_engine, prefix, hub_factory, smtp_server, tmp_path
):
    workshops = tmp_path / "workshops"
    make_workshop(workshops, "WKSHP-Docker", "201-210", limits={"memory": "512M", "processes": 300})
    hub = hub_factory(
        smtp_port=smtp_server.port,
        workshop_dirs=[workshops],
        spawner=docker_spawner_config(docker_engine, prefix),
    )
    (a_browser, a), (b_browser, b) = (
        sign_up(hub, smtp_server, 200 + i, "WKSHP-Docker") for i in range(2)
    )
    t0 = time.monotonic()
    for browser, name in ((a_browser, a), (b_browser, b)):
        assert spawn(browser, hub, name).status_code == 302
    for name in (a, b):
        wait_ready(hub, name, timeout=150)
        wait_state(hub, name, "active")
    print(f"two container spawns to ready: {time.monotonic() - t0:.1f}s")
    ca, cb = f"{prefix}-{a}", f"{prefix}-{b}"
    assert containers(docker_engine, prefix) == sorted([ca, cb])

    # the personalized notebook, read back through the student's server in the container
    assert a_browser.get(f"{hub.url}/user/{a}/", timeout=30).status_code == 200
    model = a_browser.get(
        f"{hub.url}/user/{a}/api/contents/WKSHP-Docker/0-ReadMeFirst.ipynb", timeout=30
    )
    assert model.status_code == 200, model.text
    assert model.json()["content"]["cells"][0]["source"] == f"Welcome Grace Hopper200, you are {a}."
    out = docker_engine.docker("logs", ca)
    logs = out.stdout + out.stderr
    assert "wod-hub fetch-content: 4 files into /home/jovyan/WKSHP-Docker" in logs, logs

    # limits of the workshop
    host_config = json.loads(docker_engine.docker("inspect", ca).stdout)[0]["HostConfig"]
    assert host_config["Memory"] == MEMORY and host_config["PidsLimit"] == 300
    assert host_config["NetworkMode"] == "host" and host_config["Binds"] in (None, [])

    # nothing of student B inside A's container, and B's content is refused to A's token
    home = docker_engine.docker("exec", ca, "ls", "-A", "/home/jovyan").stdout.split()
    assert "WKSHP-Docker" in home
    grep = docker_engine.docker(
        "exec", ca, "grep", "-rl", "Hopper201", "/home", "/tmp", check=False
    )
    assert grep.returncode == 1 and grep.stdout == ""
    steal = (
        "import os, urllib.request, urllib.error\n"
        f"req = urllib.request.Request(os.environ['JUPYTERHUB_API_URL'] + '/wod/content/{b}',"
        " headers={'Authorization': 'token ' + os.environ['JUPYTERHUB_API_TOKEN']})\n"
        "try:\n    urllib.request.urlopen(req)\n    print('got it')\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
    )
    assert docker_engine.docker("exec", ca, "python3", "-c", steal).stdout.strip() == "403"
    user = docker_engine.docker("exec", ca, "id", "-un").stdout.strip()
    assert user == "jovyan"  # not root in the container

    for name in (a, b):
        assert hub.api("DELETE", f"/users/{name}/server").status_code in (202, 204)
        wait_stopped(hub, name)
    deadline = time.monotonic() + 30
    while containers(docker_engine, prefix):
        assert time.monotonic() < deadline, containers(docker_engine, prefix)
        time.sleep(0.5)


def test_bind_delivery(docker_engine, prefix, hub_factory, smtp_server, tmp_path):
    workshops = tmp_path / "workshops"
    make_workshop(workshops, "WKSHP-Bind", "301-310")
    bind_root = Path("/var/tmp") / f"{prefix}-homes"
    try:
        hub = hub_factory(
            smtp_port=smtp_server.port,
            workshop_dirs=[workshops],
            spawner=docker_spawner_config(
                docker_engine,
                prefix,
                content_delivery="bind",
                bind_root=str(bind_root),
                mem_limit="256M",
            ),
        )
        browser, name = sign_up(hub, smtp_server, 300, "WKSHP-Bind")
        assert spawn(browser, hub, name).status_code == 302
        wait_ready(hub, name, timeout=150)
        home = bind_root / name
        notebook = home / "WKSHP-Bind" / "0-ReadMeFirst.ipynb"
        assert notebook.stat().st_uid == 1000 and home.stat().st_mode & 0o777 == 0o700
        assert browser.get(f"{hub.url}/user/{name}/", timeout=30).status_code == 200
        model = browser.get(
            f"{hub.url}/user/{name}/api/contents/WKSHP-Bind/0-ReadMeFirst.ipynb", timeout=30
        )
        assert (
            model.json()["content"]["cells"][0]["source"]
            == f"Welcome Grace Hopper300, you are {name}."
        )
        inspect = json.loads(docker_engine.docker("inspect", f"{prefix}-{name}").stdout)[0]
        assert inspect["HostConfig"]["Binds"] == [
            f"{home}:/home/jovyan:rw"
        ]  # its own home, nothing else
        assert (
            inspect["HostConfig"]["Memory"] == 256 * 1024 * 1024
        )  # DockerSpawner.mem_limit: no workshop limit
        # what the server writes lands in the student's folder on the host
        put = browser.put(
            f"{hub.url}/user/{name}/api/contents/WKSHP-Bind/notes.txt",
            json={"type": "file", "format": "text", "content": "my notes"},
            headers={"X-XSRFToken": browser.cookies.get("_xsrf", path=f"/user/{name}/") or ""},
            timeout=30,
        )
        assert put.status_code == 201, put.text
        assert (home / "WKSHP-Bind" / "notes.txt").read_text() == "my notes"
        assert hub.api("DELETE", f"/users/{name}/server").status_code in (202, 204)
        wait_stopped(hub, name)
        assert containers(docker_engine, prefix) == []
    finally:
        shutil.rmtree(bind_root, ignore_errors=True)
