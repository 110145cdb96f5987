"""pytest plugin: a real Docker engine and the ``wod-notebook`` image.

The session fixture ``docker_engine`` starts the private engine of
``scripts/docker/dockerd.sh`` when it is not running (state under ``WOD_DOCKER_ROOT``,
default ``/var/tmp/wod-docker``), builds the images with ``scripts/docker/build-image.sh``
(a second or two when they are up to date) and stops the engine at the end of the
session if it started it. With ``WOD_DOCKER_HOST`` set, that engine is used instead and
never stopped.

If the engine cannot start or the image cannot be built, the fixture *fails* with the
scripts' own message: a CI run must not pass by skipping its Docker tests.

Tests that use the fixture are marked ``docker`` automatically (``-m "not docker"``
leaves them out). The first of them gets ``WOD_DOCKER_BUILD_TIMEOUT`` more seconds of
pytest-timeout, since a cold build (debootstrap + venv) happens in its setup.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts" / "docker"
IMAGE = "wod-notebook:latest"
BUILD_TIMEOUT = int(os.environ.get("WOD_DOCKER_BUILD_TIMEOUT", "1500"))
START_TIMEOUT = 120
STOP_TIMEOUT = 90


def _docker_cli() -> str:
    # the client that ships with the daemon (see scripts/docker/common.sh)
    return os.environ.get("WOD_DOCKER_CLI") or (
        "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else "docker"
    )


@dataclass(frozen=True)
class DockerEngine:
    """A running engine: ``host`` is the ``DOCKER_HOST`` URL, ``image`` the notebook image."""

    host: str
    image: str
    root: Path
    cli: str
    started: bool

    @property
    def env(self) -> dict[str, str]:
        """The environment for a process that talks to this engine (CLI, docker SDK, DockerSpawner)."""
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI (blocking: for sync tests and fixtures)."""
        proc = subprocess.run(
            [self.cli, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    async def adocker(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI without blocking the event loop (for async tests)."""
        proc = await asyncio.create_subprocess_exec(
            self.cli,
            *args,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        result = subprocess.CompletedProcess(
            [self.cli, *args], proc.returncode, out.decode(), err.decode()
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def client(self):
        """A docker SDK client for this engine (the library DockerSpawner uses)."""
        import docker

        return docker.DockerClient(base_url=self.host, timeout=60)


def run_script(name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run one of scripts/docker/*.sh with a bound; a timeout is reported as exit 124."""
    cmd = ["bash", str(SCRIPTS / name), *args]
    try:
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr or ""
        return subprocess.CompletedProcess(cmd, 124, out, err + f"\n(timed out after {timeout}s)")


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 30) -> str:
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-lines:])


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    root = Path(os.environ.get("WOD_DOCKER_ROOT", "/var/tmp/wod-docker"))
    external = os.environ.get("WOD_DOCKER_HOST", "")
    started = False
    if not external and run_script("dockerd.sh", "status", timeout=30).returncode != 0:
        start = run_script("dockerd.sh", "start", timeout=START_TIMEOUT)
        if start.returncode != 0:
            pytest.fail(
                f"the Docker engine could not start (bash scripts/docker/dockerd.sh start, "
                f"exit {start.returncode}; log {root}/dockerd.log):\n{_tail(start)}",
                pytrace=False,
            )
        started = True
    try:
        build = run_script("build-image.sh", timeout=BUILD_TIMEOUT)
        if build.returncode != 0:
            pytest.fail(
                f"the {IMAGE} image could not be built (bash scripts/docker/build-image.sh, "
                f"exit {build.returncode}):\n{_tail(build)}",
                pytrace=False,
            )
        yield DockerEngine(
            host=external or f"unix://{root}/docker.sock",
            image=IMAGE,
            root=root,
            cli=_docker_cli(),
            started=started,
        )
    finally:
        if started:
            stop = run_script("dockerd.sh", "stop", timeout=STOP_TIMEOUT)
            if stop.returncode != 0:
                print(f"dockerd.sh stop failed:\n{_tail(stop)}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # before -m selection runs: a test using the engine is a docker test
    for item in items:
        if "docker_engine" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "docker"
        ):
            item.add_marker(pytest.mark.docker)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    # the first docker test pays for a cold image build in its setup
    if not session.config.pluginmanager.hasplugin("timeout"):
        return
    for item in session.items:
        if item.get_closest_marker("docker"):
            marker = item.get_closest_marker("timeout")
            base = marker.args[0] if marker and marker.args else session.config.getini("timeout")
            item.add_marker(pytest.mark.timeout(float(base or 300) + BUILD_TIMEOUT), append=False)
            return
