#!/usr/bin/env bash
# Build the Python environment students' single-user servers run from, for
# WorkshopLocalProcessSpawner (real system users). Run as root:
#   bash scripts/student-venv.sh [--force]
# then point the spawner at it (the default of WorkshopLocalProcessSpawner.cmd):
#   c.Spawner.cmd = ["/opt/wod-student-venv/bin/jupyterhub-singleuser"]
#
# Why a venv of its own: the hub's venv may live where students cannot read or execute
# it (e.g. under /root, or a pyenv Python), and students must not run the hub's code.
# This one is made from the system's Python (/usr/bin/python3), owned by root and
# world-readable, with the same JupyterHub version as the hub (the single-user server
# and the hub must agree) and JupyterLab.
#
# Environment:
#   WOD_STUDENT_VENV        target (default /opt/wod-student-venv)
#   WOD_STUDENT_PYTHON      Python to build it from (default /usr/bin/python3)
#   WOD_JUPYTERHUB_VERSION  default: the hub's (from $WOD_HUB_PYTHON or the repo's .venv)
#   WOD_JUPYTERLAB_VERSION  default: the hub's, else the latest
#   WOD_STUDENT_PACKAGES    extra packages for the workshops (e.g. "pandas matplotlib")
#   WOD_HUB_PYTHON          the hub's Python, to read versions (default: repo .venv, else python3)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
VENV=${WOD_STUDENT_VENV:-/opt/wod-student-venv}
PY=${WOD_STUDENT_PYTHON:-/usr/bin/python3}
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

log() { printf '\033[1m[student-venv]\033[0m %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: the venv must be owned by root and readable by every student"
[ -x "$PY" ] || die "$PY not found: apt-get install -y python3 python3-venv (or set WOD_STUDENT_PYTHON)"
"$PY" -c 'import ensurepip, venv' 2>/dev/null \
  || die "$PY cannot create venvs: apt-get install -y python3-venv"

HUB_PY=${WOD_HUB_PYTHON:-}
if [ -z "$HUB_PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then HUB_PY=$REPO/.venv/bin/python; else HUB_PY=python3; fi
fi
version_of() {
  "$HUB_PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1" 2>/dev/null || true
}
JH=${WOD_JUPYTERHUB_VERSION:-$(version_of jupyterhub)}
JL=${WOD_JUPYTERLAB_VERSION:-$(version_of jupyterlab)}
[ -n "$JH" ] || die "no JupyterHub version: set WOD_JUPYTERHUB_VERSION or WOD_HUB_PYTHON"
REQS=("jupyterhub==$JH" "jupyterlab${JL:+==$JL}")
# shellcheck disable=SC2206
REQS+=(${WOD_STUDENT_PACKAGES:-})
KEY=$(printf '%s\n' "recipe=1" "python=$("$PY" -VV)" "${REQS[@]}" | sha256sum | cut -c1-16)

if [ "$FORCE" = 0 ] && [ "$(cat "$VENV/.wod-inputs" 2>/dev/null)" = "$KEY" ]; then
  log "$VENV is up to date (${REQS[*]})"
  exit 0
fi
log "building $VENV from $PY: ${REQS[*]}"
t=$SECONDS
umask 022
# a venv records its own path: build it in place, keeping the old one until it works
rm -rf "$VENV.old"
[ -e "$VENV" ] && mv "$VENV" "$VENV.old"
restore() { rm -rf "$VENV"; [ -e "$VENV.old" ] && mv "$VENV.old" "$VENV"; }
"$PY" -m venv "$VENV" || { restore; die "$PY -m venv $VENV failed"; }
timeout "${WOD_BUILD_TIMEOUT:-1200}" "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  "${REQS[@]}" || { restore; die "pip install into $VENV failed"; }
echo "$KEY" >"$VENV/.wod-inputs"
rm -rf "$VENV.old"
chown -R root:root "$VENV"
chmod -R go-w,a+rX "$VENV"
"$VENV/bin/jupyterhub-singleuser" --version >/dev/null || die "$VENV/bin/jupyterhub-singleuser does not run"
log "ready in $((SECONDS - t))s: $VENV/bin/jupyterhub-singleuser (JupyterHub $JH, JupyterLab ${JL:-latest})"
