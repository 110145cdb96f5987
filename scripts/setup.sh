#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine (run as root, or with sudo for apt).
# Installs: Debian packages the tests need, a venv with wod-hub[test], the
# configurable-http-proxy npm package. Re-runs are fast: each step is skipped
# when already done.
#   WOD_SETUP_APT=0   skip Debian packages (e.g. `make run` needs none)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
APT_PACKAGES=${WOD_APT_PACKAGES:-"chromium docker.io debootstrap postgresql pandoc"}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Debian packages (only the missing ones)
if [ "${WOD_SETUP_APT:-1}" = 1 ]; then
  missing=()
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # PostgreSQL binaries may come from another package on this image: accept them
  if printf '%s\n' "${missing[@]:-}" | grep -qx postgresql && command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    missing=("${missing[@]/postgresql}")
  fi
  missing=($(printf '%s\n' "${missing[@]:-}" | grep -v '^$' || true))
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# 2. venv + package (re-installed only when pyproject.toml changed)
stamp=.venv/.wod-setup-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  log "creating the virtualenv in .venv"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q -U pip
  .venv/bin/python -m pip install -q -e '.[test,docker,kubernetes]'
  rm -f .venv/.wod-setup-*; touch "$stamp"
fi

# 3. the proxy JupyterHub needs (npm package, kept out of the system)
if [ ! -x .tools/node_modules/.bin/configurable-http-proxy ]; then
  command -v npm >/dev/null || { log "npm is missing: apt-get install -y nodejs npm"; exit 1; }
  log "installing configurable-http-proxy (npm)"
  mkdir -p .tools
  npm install --silent --no-audit --no-fund --prefix .tools configurable-http-proxy >/dev/null 2>&1 \
    || npm install --no-audit --no-fund --prefix .tools configurable-http-proxy
fi
log "ready: $ROOT/.venv, proxy in $ROOT/.tools/node_modules/.bin"
