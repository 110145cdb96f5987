"""A real JupyterHub (with configurable-http-proxy) in a subprocess, for tests
and benchmarks: exactly what an operator runs, on free localhost ports.

``HubProcess(tmp_dir, extra_config=...)`` writes a config, starts the hub,
waits for ``/hub/health``, and stops it (SIGTERM, then SIGKILL) on ``stop()``.
"""

from __future__ import annotations

import html
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
WORKSHOPS = ROOT / "workshops"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HubProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        extra_config: str = "",
        smtp_port: int | None = None,
        workshop_dirs=(WORKSHOPS,),
        db_url: str | None = None,
        spawner: str = "mock",
        admin_password: str = "admin-password-for-tests",
        stock: bool = False,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hub_url = self.url + "/hub/"
        self.api_url = self.url + "/hub/api"
        self.api_token = secrets.token_hex(16)
        self.db_url = db_url or f"sqlite:///{self.workdir / 'wod_hub.sqlite'}"
        self.admin_password = admin_password
        self.smtp_port = smtp_port
        self.workshop_dirs = [str(d) for d in workshop_dirs]
        self.spawner = spawner
        self.extra_config = textwrap.dedent(extra_config)
        # stock=True: plain JupyterHub (DummyAuthenticator), the baseline benchmarks compare against
        self.stock = stock
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "hub.log"

    # ------------------------------------------------------------------
    def base_config(self) -> str:
        return textwrap.dedent(
            f"""
            c = get_config()  # noqa
            c.JupyterHub.bind_url = {self.url + "/"!r}
            c.JupyterHub.hub_port = {free_port()}
            c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
            c.ConfigurableHTTPProxy.pid_file = {str(self.workdir / "proxy.pid")!r}
            c.JupyterHub.db_url = "sqlite:///{self.workdir / "jupyterhub.sqlite"}"
            c.JupyterHub.cookie_secret_file = {str(self.workdir / "cookie_secret")!r}
            c.JupyterHub.cleanup_servers = True
            c.JupyterHub.services = [{{"name": "tests", "api_token": {self.api_token!r}}}]
            c.JupyterHub.load_roles = [{{"name": "tests", "scopes": ["admin:users", "admin:servers", "admin:groups", "list:users", "read:users"], "services": ["tests"]}}]
            """
        )

    def config(self) -> str:
        if self.stock:
            auth = 'c.JupyterHub.authenticator_class = "dummy"\nc.Authenticator.allow_all = True\n'
            return self.base_config() + auth + self.spawner_config() + self.extra_config
        from wod_hub import tokens

        admin_hash = tokens.hash_password(self.admin_password)
        return (
            self.base_config()
            + textwrap.dedent(
                f"""
            c.JupyterHub.authenticator_class = "wod"
            c.WorkshopAuthenticator.workshop_dirs = {self.workshop_dirs!r}
            c.WorkshopAuthenticator.db_url = {self.db_url!r}
            c.WorkshopAuthenticator.secret_key_file = {str(self.workdir / "wod_secret")!r}
            c.WorkshopAuthenticator.admin_password_hashes = {{"admin": {admin_hash!r}}}
            c.Mailer.smtp_host = "127.0.0.1"
            c.Mailer.smtp_port = {self.smtp_port or free_port()}
            c.Mailer.from_address = "workshops@example.org"
            c.Mailer.poll_interval = 0.5
            c.Mailer.backoff_base = 1
            c.Mailer.backoff_max = 2
            """
            )
            + self.spawner_config()
            + self.extra_config
        )

    def spawner_config(self) -> str:
        return {
            # a tiny real server that ships with JupyterHub: fast and honest
            "mock": textwrap.dedent(
                f"""
                c.JupyterHub.spawner_class = "simple"
                c.Spawner.cmd = [{sys.executable!r}, "-m", "jupyterhub.tests.mocksu"]
                c.Spawner.default_url = ""
                """
            ),
            "none": "",
        }.get(self.spawner, self.spawner)

    def start(self, timeout: float = 60) -> HubProcess:
        cfg = self.workdir / "jupyterhub_config.py"
        cfg.write_text(self.config())
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join(
            [
                str(ROOT / ".tools/node_modules/.bin"),
                str(Path(sys.executable).parent),
                env.get("PATH", ""),
            ]
        )
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(cfg)],
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the hub exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                r = requests.get(self.url + "/hub/login", timeout=2)
                if r.status_code == 200 and (self.stock or "wod-register" in r.text):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the hub did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        self._log.close()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # ---- HTTP helpers -------------------------------------------------------
    def api(self, method: str, path: str, **kw) -> requests.Response:
        headers = {"Authorization": f"token {self.api_token}", **kw.pop("headers", {})}
        return requests.request(method, self.api_url + path, headers=headers, timeout=30, **kw)

    def wait_for_user(self, name: str, timeout: float = 20) -> dict:
        """The hub user ``name`` once it exists (wod-hub creates a registration's hub user
        in the background, when registrations pause: see wod_hub.hubusers)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.api("GET", f"/users/{name}")
            if r.status_code == 200:
                return r.json()
            if time.monotonic() > deadline:
                raise AssertionError(f"hub user {name} not created within {timeout} s")
            time.sleep(0.1)

    def browser_session(self) -> requests.Session:
        return requests.Session()


def xsrf_from(page: str) -> str:
    m = re.search(r'name="_xsrf" value="([^"]+)"', page)
    assert m, "no _xsrf field on the page"
    return html.unescape(m.group(1))


def register(session: requests.Session, hub: HubProcess, **fields) -> requests.Response:
    """Fill the registration form like a browser: GET the login page, POST the form."""
    page = session.get(hub.url + "/hub/login", timeout=30)
    page.raise_for_status()
    data = {"_xsrf": xsrf_from(page.text), "terms": "on", "company": "ACME", **fields}
    data = {k: v for k, v in data.items() if v is not None}
    return session.post(hub.url + "/hub/wod/register", data=data, timeout=60)


@pytest.fixture
def hub_factory(tmp_path):
    hubs: list[HubProcess] = []

    def make(**kw) -> HubProcess:
        hub = HubProcess(tmp_path / f"hub{len(hubs)}", **kw)
        hubs.append(hub)
        return hub.start()

    yield make
    for hub in hubs:
        hub.stop()
