"""Shared fixtures. Each real component has its own plugin module:
tests.pg (throwaway PostgreSQL), tests.smtp (aiosmtpd), tests.hubprocess (a real
JupyterHub + proxy in a subprocess), tests.docker_engine (dockerd), tests.browser (Chromium)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the proxy JupyterHub needs (installed by scripts/setup.sh)
os.environ["PATH"] = os.pathsep.join(
    [
        str(ROOT / ".tools" / "node_modules" / ".bin"),
        str(ROOT / ".venv" / "bin"),
        os.environ.get("PATH", ""),
    ]
)

pytest_plugins = [
    "tests.hubprocess",
]
for _plugin in ("tests.pg", "tests.smtp", "tests.docker_engine", "tests.browser"):
    if _plugin not in pytest_plugins and (ROOT / (_plugin.replace(".", "/") + ".py")).exists():
        pytest_plugins.append(_plugin)
