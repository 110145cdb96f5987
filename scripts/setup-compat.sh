#!/usr/bin/env bash
# A second venv, .venv-jh<VERSION>, with wod-hub[test] on another JupyterHub release (the
# oldest one supported), for `make test-oldest-hub`. Re-runs are fast (stamped on
# pyproject.toml and the version). Needs `scripts/setup.sh` first (proxy, Debian packages).
#   bash scripts/setup-compat.sh 5.3.0
set -euo pipefail
cd "$(dirname "$0")/.."
JH=${1:?usage: setup-compat.sh JUPYTERHUB_VERSION}
PY=${PYTHON:-python3}
VENV=.venv-jh$JH
stamp=$VENV/.wod-setup-$(cat pyproject.toml <(echo "$JH") | sha256sum | cut -c1-16)

log() { printf '\033[1m[setup-compat]\033[0m %s\n' "$*"; }

if [ ! -f "$stamp" ]; then
  log "creating $VENV (JupyterHub $JH)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -U pip
  "$VENV/bin/python" -m pip install -q -e '.[test,docker,kubernetes]' "jupyterhub==$JH"
  rm -f "$VENV"/.wod-setup-*; touch "$stamp"
fi
got=$("$VENV/bin/python" -c 'import jupyterhub; print(jupyterhub.__version__)')
[ "$got" = "$JH" ] || { echo "expected JupyterHub $JH in $VENV, found $got" >&2; exit 1; }
log "ready: $VENV (JupyterHub $got)"
