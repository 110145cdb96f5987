"""The Docker engine and the wod-notebook image, for real: a container on the host
network serves Jupyter as a student user created inside it, under a memory limit, and
is gone afterwards."""

from __future__ import annotations

import importlib.metadata
import json
import os
import secrets
import socket
import subprocess
import sys
import time

import jupyterhub
import pytest
import requests

from tests.docker_engine import ROOT, SCRIPTS, DockerEngine

MEMORY = 256 * 1024 * 1024
READY_TIMEOUT = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def container_gone(engine: DockerEngine, name: str) -> bool:
    out = engine.docker("ps", "--all", "--quiet", "--filter", f"name=^{name}$").stdout
    return out.strip() == ""


def wait_http(engine: DockerEngine, name: str, url: str, token: str) -> requests.Response:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            r = requests.get(url, headers={"Authorization": f"token {token}"}, timeout=2)
            if r.status_code == 200:
                return r
        except requests.ConnectionError:
            pass
        state = engine.docker("inspect", "-f", "{{.State.Status}}", name, check=False).stdout
        if state.strip() != "running":
            logs = engine.docker("logs", "--tail", "40", name, check=False)
            pytest.fail(f"container {name} is {state.strip()!r}:\n{logs.stdout}{logs.stderr}")
        time.sleep(0.25)
    logs = engine.docker("logs", "--tail", "40", name, check=False)
    pytest.fail(f"{url} not ready after {READY_TIMEOUT}s:\n{logs.stdout}{logs.stderr}")


@pytest.mark.docker
def test_image_has_what_a_spawner_needs(docker_engine: DockerEngine):
    name = f"wod-test-{secrets.token_hex(4)}"
    probe = (
        "id -un; command -v useradd; command -v setpriv; jupyterhub-singleuser --version; "
        "python -c 'import importlib.metadata as m; print(m.version(\"wod-hub\"))'; "
        "test -x /opt/wod-venv/bin/wod-hub && echo wod-hub-script"
    )
    out = docker_engine.docker(
        "run", "--rm", "--name", name, "--network", "host", docker_engine.image, "sh", "-c", probe
    ).stdout.split()
    assert out[0] == "jovyan"  # the image's default user is not root
    assert out[1:3] == ["/usr/sbin/useradd", "/usr/bin/setpriv"]
    assert out[3] == jupyterhub.__version__  # same JupyterHub as the hub's venv
    assert out[4:] == [importlib.metadata.version("wod-hub"), "wod-hub-script"]
    assert container_gone(docker_engine, name)


@pytest.mark.docker
def test_server_as_student_on_host_network_with_memory_limit(docker_engine: DockerEngine):
    port = free_port()
    token = secrets.token_hex(16)
    name = f"wod-test-{secrets.token_hex(4)}"
    # what a per-student spawn does: a user created at start, the server run as that user
    start = (
        "useradd --create-home --uid 4242 student7 && "
        "exec setpriv --reuid=student7 --regid=student7 --init-groups "
        "env HOME=/home/student7 jupyter server --no-browser --ip=127.0.0.1 "
        '--port="$WOD_PORT" --ServerApp.token="$WOD_TOKEN" --ServerApp.root_dir=/home/student7'
    )
    t0 = time.monotonic()
    docker_engine.docker(
        "run", "--detach", "--name", name, "--network", "host", "--memory", str(MEMORY),
        "--user", "root", "--env", f"WOD_PORT={port}", "--env", f"WOD_TOKEN={token}",
        docker_engine.image, "sh", "-c", start,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        status = wait_http(docker_engine, name, f"{base}/api/status", token)
        print(f"container start to HTTP ready: {time.monotonic() - t0:.1f}s")
        assert "started" in status.json()
        assert requests.get(f"{base}/api/status", timeout=5).status_code == 403  # token needed

        # a file written through the server belongs to the student, not root
        put = requests.put(
            f"{base}/api/contents/hello.txt",
            headers={"Authorization": f"token {token}"},
            json={"type": "file", "format": "text", "content": "hello from the test"},
            timeout=10,
        )
        assert put.status_code == 201, put.text
        owner = docker_engine.docker("exec", name, "stat", "-c", "%U", "/home/student7/hello.txt")
        assert owner.stdout.strip() == "student7"
        pid1 = docker_engine.docker("exec", name, "grep", "^Uid:", "/proc/1/status").stdout
        assert pid1.split()[1:3] == ["4242", "4242"]

        host_config = json.loads(docker_engine.docker("inspect", name).stdout)[0]["HostConfig"]
        assert host_config["Memory"] == MEMORY
        assert host_config["NetworkMode"] == "host"
        # the kernel's limit, cgroup v2 or v1 (this machine's hosts have v1)
        limit = docker_engine.docker(
            "exec", name, "sh", "-c",
            "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
        )  # fmt: skip
        assert int(limit.stdout) == MEMORY
    finally:
        docker_engine.docker("rm", "--force", name, check=False)
    assert container_gone(docker_engine, name)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/api/status", timeout=2)


@pytest.mark.docker
def test_memory_limit_is_enforced(docker_engine: DockerEngine):
    name = f"wod-test-{secrets.token_hex(4)}"
    # 16 MiB fits in 64 MiB; touching 256 MiB gets the process OOM-killed (exit 137)
    hog = (
        "a = b'x' * (16 << 20); print('small ok', flush=True); "
        "b = b'x' * (256 << 20); print('big ok', flush=True)"
    )
    proc = docker_engine.docker(
        "run", "--rm", "--name", name, "--network", "host", "--memory", "64m",
        docker_engine.image, "python", "-c", hog,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 137, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["small", "ok"]
    assert container_gone(docker_engine, name)


def test_dockerd_start_failure_is_an_error_with_the_reason(tmp_path):
    env = {
        **os.environ,
        "WOD_DOCKER_ROOT": str(tmp_path / "engine"),
        "WOD_DOCKERD": "/bin/false",
        "WOD_DOCKER_STORAGE_DRIVER": "overlay2",
    }
    env.pop("WOD_DOCKER_HOST", None)
    start = subprocess.run(
        ["bash", str(SCRIPTS / "dockerd.sh"), "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert start.returncode == 1
    assert "could not start" in start.stderr or "needs root" in start.stderr
    status = subprocess.run(
        ["bash", str(SCRIPTS / "dockerd.sh"), "status"], env=env, capture_output=True, timeout=30
    )
    assert status.returncode == 3  # not running


def test_fixture_fails_not_skips_without_an_engine(tmp_path):
    env = {
        **os.environ,
        "WOD_DOCKER_ROOT": str(tmp_path / "engine"),
        "WOD_DOCKERD": "/bin/false",
        "WOD_DOCKER_STORAGE_DRIVER": "overlay2",
    }
    env.pop("WOD_DOCKER_HOST", None)
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rE",
         f"{__file__}::test_memory_limit_is_enforced"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert inner.returncode == 1, inner.stdout
    assert "1 error" in inner.stdout and "skipped" not in inner.stdout
    assert "the Docker engine could not start" in inner.stdout


HOST_NETWORK_SPAWNER = """
from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port

class HostNetworkDockerSpawner(DockerSpawner):
    # host networking: every server needs its own port on 127.0.0.1
    async def start(self):
        self.port = random_port()
        return await super().start()

    async def get_ip_and_port(self):
        return "127.0.0.1", self.port

c.JupyterHub.spawner_class = HostNetworkDockerSpawner
c.DockerSpawner.image = {image!r}
c.DockerSpawner.network_name = "host"
c.DockerSpawner.use_internal_ip = True  # no port bindings: host networking has none
c.DockerSpawner.ip = "127.0.0.1"
c.DockerSpawner.mem_limit = "256M"
c.DockerSpawner.remove = True
c.DockerSpawner.pull_policy = "never"
c.DockerSpawner.name_template = {name!r}
c.DockerSpawner.client_kwargs = {{"base_url": {host!r}}}
c.Spawner.start_timeout = 120
"""


@pytest.mark.docker
def test_dockerspawner_runs_jupyterhub_singleuser_from_the_image(docker_engine, hub_factory):
    name = f"wod-test-{secrets.token_hex(4)}"
    spawner = HOST_NETWORK_SPAWNER.format(
        image=docker_engine.image, name=name, host=docker_engine.host
    )
    hub = hub_factory(stock=True, spawner=spawner)
    assert hub.api("POST", "/users/alice").status_code == 201
    t0 = time.monotonic()
    spawn = hub.api("POST", "/users/alice/server")
    assert spawn.status_code in (201, 202), f"{spawn.text}\n{hub.log_tail()}"
    deadline = time.monotonic() + READY_TIMEOUT
    while not hub.api("GET", "/users/alice").json()["servers"].get("", {}).get("ready"):
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.25)
    print(f"DockerSpawner spawn to ready: {time.monotonic() - t0:.1f}s")
    host_config = json.loads(docker_engine.docker("inspect", name).stdout)[0]["HostConfig"]
    assert host_config["Memory"] == MEMORY
    # through the proxy into the container: jupyterhub-singleuser itself refuses a stranger
    r = requests.get(f"{hub.url}/user/alice/api/status", allow_redirects=False, timeout=10)
    assert r.status_code == 403 and r.json()["message"] == "Forbidden"
    assert hub.api("DELETE", "/users/alice/server").status_code in (202, 204)
    deadline = time.monotonic() + 60
    while hub.api("GET", "/users/alice").json()["servers"]:
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.25)
    assert container_gone(docker_engine, name)
