#!/usr/bin/env bash
# Build the images wod-hub's DockerSpawner runs, with no registry:
#   wod-base:bookworm     Debian bookworm minbase (debootstrap) + python3, python3-venv,
#                         ca-certificates, passwd (useradd); imported with `docker import`
#   wod-notebook:deps     + /opt/wod-venv: jupyterhub (the version of the hub's venv),
#                         jupyterlab and wod-hub's dependencies, built on this host
#   wod-notebook:latest   + wod-hub itself (non-editable); CMD jupyterhub-singleuser
# Each image carries the label org.wod-hub.inputs=<sha256 of its inputs>; a step whose
# image already has the current hash is skipped, so a warm run takes a second or two.
#   bash scripts/docker/build-image.sh [--force]
# Environment (see also common.sh: WOD_DOCKER_ROOT, WOD_DOCKER_HOST):
#   WOD_DEBIAN_MIRROR       mirror for debootstrap (default: the one apt uses here)
#   WOD_JUPYTERHUB_VERSION  default: the version in the repo's .venv
#   WOD_JUPYTERLAB_VERSION  default: the version in the repo's .venv, else the latest
#   WOD_HOST_PYTHON         Python building /opt/wod-venv (default /usr/bin/python3; must
#                           have the image's python3 minor version)
#   WOD_BUILD_TIMEOUT       seconds for each long step (default 1200)
# When no engine answers and WOD_DOCKER_HOST is unset, the private engine is started for
# the build and stopped afterwards.
set -euo pipefail
WOD_LOG_TAG=build-image
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/common.sh"

FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1
SUITE=bookworm
BASE_IMAGE=wod-base:$SUITE
DEPS_IMAGE=wod-notebook:deps
IMAGE=wod-notebook:latest
VENV=/opt/wod-venv
INCLUDE=python3,python3-venv,ca-certificates,passwd
LABEL=org.wod-hub.inputs
STEP_TIMEOUT=${WOD_BUILD_TIMEOUT:-1200}
HOST_PYTHON=${WOD_HOST_PYTHON:-/usr/bin/python3}
CACHE="$WOD_DOCKER_ROOT/cache"
BUILD="$WOD_DOCKER_ROOT/build"
T0=$SECONDS

sha() { sha256sum | cut -c1-64; }
image_inputs() { docker_cli image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true; }
up_to_date() { [ "$FORCE" = 0 ] && [ "$(image_inputs "$1")" = "$2" ]; }

debian_mirror() {
  [ -n "${WOD_DEBIAN_MIRROR:-}" ] && { echo "$WOD_DEBIAN_MIRROR"; return; }
  local uri
  # deb822 sources (Debian 12 default), then the one-line format
  uri=$(awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm( |$|\n)/ && !/security/ {
           if (match($0, /URIs: *[^ \n]+/)) { s=substr($0,RSTART,RLENGTH); sub(/URIs: */,"",s); print s; exit } }' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

docker_build() { # $1: log file, then `docker build` arguments; RUN steps get no network
  local log=$1; shift
  timeout "$STEP_TIMEOUT" "$WOD_DOCKER_CLI" build --network none "$@" >"$log" 2>&1 \
    || { tail -n 25 "$log" >&2; wod_die "docker build failed (log: $log)"; }
}

cleanup_rootfs_dir() { # unmount what a failed debootstrap left mounted, then delete
  local dir=$1 mnt
  [ -e "$dir" ] || return 0
  while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done \
    < <(findmnt -rn -o TARGET | grep -F "$dir/" | sort -r || true)
  rm -rf --one-file-system "$dir"
}

# --- engine ----------------------------------------------------------------------
STARTED_ENGINE=0
finish() {
  local rc=$?
  [ -n "${BUILD_ROOTFS:-}" ] && cleanup_rootfs_dir "$BUILD_ROOTFS"
  if [ "$STARTED_ENGINE" = 1 ]; then bash "$HERE/dockerd.sh" stop || true; fi
  exit $rc
}
trap finish EXIT
if ! wod_engine_up; then
  [ -n "${WOD_DOCKER_HOST:-}" ] && wod_die "WOD_DOCKER_HOST=$WOD_DOCKER_HOST does not answer"
  bash "$HERE/dockerd.sh" start
  STARTED_ENGINE=1
fi
mkdir -p "$CACHE" "$BUILD"
exec 9>"$WOD_DOCKER_ROOT/build.lock"
flock -w "$STEP_TIMEOUT" 9 || wod_die "another build holds $WOD_DOCKER_ROOT/build.lock"

# --- 1. wod-base:bookworm --------------------------------------------------------
ARCH=$(dpkg --print-architecture)
BASE_KEY=$(printf 'base-recipe=2\nsuite=%s\narch=%s\ninclude=%s\n' "$SUITE" "$ARCH" "$INCLUDE" | sha)
BASE_TAR="$CACHE/$SUITE-minbase-$ARCH-${BASE_KEY:0:16}.tar"
if up_to_date "$BASE_IMAGE" "$BASE_KEY"; then
  wod_log "$BASE_IMAGE is up to date"
else
  if [ ! -s "$BASE_TAR" ] || [ ! -s "$BASE_TAR.python" ]; then
    wod_apt_ensure debootstrap
    MIRROR=$(debian_mirror)
    BUILD_ROOTFS="$BUILD/rootfs"
    cleanup_rootfs_dir "$BUILD_ROOTFS"
    wod_log "debootstrap --variant=minbase $SUITE from $MIRROR (about a minute)"
    t=$SECONDS
    timeout "$STEP_TIMEOUT" debootstrap --variant=minbase --include="$INCLUDE" \
      "$SUITE" "$BUILD_ROOTFS" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1 \
      || { tail -n 20 "$BUILD/debootstrap.log" >&2; wod_die "debootstrap failed (log: $BUILD/debootstrap.log)"; }
    # what apt downloaded is not part of the image
    rm -rf "$BUILD_ROOTFS"/var/cache/apt/archives/*.deb "$BUILD_ROOTFS"/var/lib/apt/lists/* \
      "$BUILD_ROOTFS"/var/log/* "$BUILD_ROOTFS"/etc/hostname
    : >"$BUILD_ROOTFS/etc/resolv.conf"
    basename "$(readlink -f "$BUILD_ROOTFS/usr/bin/python3")" >"$BASE_TAR.python.tmp"
    tar --numeric-owner --xattrs -C "$BUILD_ROOTFS" -cf "$BASE_TAR.tmp" .
    mv "$BASE_TAR.python.tmp" "$BASE_TAR.python"
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    cleanup_rootfs_dir "$BUILD_ROOTFS"
    BUILD_ROOTFS=
    wod_log "debootstrap done in $((SECONDS - t))s, cached as $BASE_TAR"
  fi
  wod_log "docker import $BASE_IMAGE"
  timeout "$STEP_TIMEOUT" "$WOD_DOCKER_CLI" import \
    --change "LABEL $LABEL=$BASE_KEY" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$BASE_TAR" "$BASE_IMAGE" >/dev/null
fi
IMAGE_PYTHON=$(cat "$BASE_TAR.python" 2>/dev/null || true)

# --- 2. /opt/wod-venv and wod-notebook:deps --------------------------------------
repo_version() { # version of a distribution in the repo's venv, if there is one
  [ -x "$REPO/.venv/bin/python" ] || return 0
  "$REPO/.venv/bin/python" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1"
}
JH_VERSION=${WOD_JUPYTERHUB_VERSION:-$(repo_version jupyterhub)}
JL_VERSION=${WOD_JUPYTERLAB_VERSION:-$(repo_version jupyterlab)}
[ -n "$JH_VERSION" ] || wod_die "no JupyterHub version: create $REPO/.venv (make setup) or set WOD_JUPYTERHUB_VERSION"
JH_REQ="jupyterhub==$JH_VERSION"
JL_REQ="jupyterlab${JL_VERSION:+==$JL_VERSION}"

[ -x "$HOST_PYTHON" ] || wod_apt_ensure python3
"$HOST_PYTHON" -c 'import ensurepip, venv' 2>/dev/null || wod_apt_ensure python3-venv
HOST_PY=python$("$HOST_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ -n "$IMAGE_PYTHON" ] && [ "$IMAGE_PYTHON" != "$HOST_PY" ]; then
  wod_die "WOD_HOST_PYTHON=$HOST_PYTHON is $HOST_PY but the image has $IMAGE_PYTHON: the venv would not run there"
fi
# wod-hub's runtime dependencies (not wod-hub itself: it changes more often, step 3)
mapfile -t REQS < <(printf '%s\n' "setuptools>=68" wheel "$JH_REQ" "$JL_REQ"
  "$HOST_PYTHON" -c 'import sys, tomllib
print("\n".join(sorted(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"])))' "$REPO/pyproject.toml")
[ ${#REQS[@]} -gt 4 ] || wod_die "could not read [project].dependencies from $REPO/pyproject.toml"
DEPS_KEY=$({ printf 'deps-recipe=1\nbase=%s\npython=%s\n' "$BASE_KEY" "$HOST_PY"; printf '%s\n' "${REQS[@]}"; cat "$HERE/Dockerfile.deps"; } | sha)
if up_to_date "$DEPS_IMAGE" "$DEPS_KEY"; then
  wod_log "$DEPS_IMAGE is up to date ($JH_REQ, $JL_REQ)"
else
  if [ "$FORCE" = 1 ] || [ "$(cat "$VENV/.wod-inputs" 2>/dev/null)" != "$DEPS_KEY" ]; then
    wod_log "building $VENV with $HOST_PYTHON: $JH_REQ $JL_REQ + wod-hub's dependencies"
    t=$SECONDS
    rm -rf "$VENV"
    "$HOST_PYTHON" -m venv "$VENV"
    timeout "$STEP_TIMEOUT" "$VENV/bin/python" -m pip install --disable-pip-version-check "${REQS[@]}" \
      >"$BUILD/pip.log" 2>&1 \
      || { tail -n 25 "$BUILD/pip.log" >&2; rm -rf "$VENV"; wod_die "pip install into $VENV failed (log: $BUILD/pip.log)"; }
    echo "$DEPS_KEY" >"$VENV/.wod-inputs"
    wod_log "venv built in $((SECONDS - t))s ($(du -sh "$VENV" | cut -f1))"
  fi
  wod_log "docker build $DEPS_IMAGE"
  t=$SECONDS
  # context on stdin: the Dockerfile and the venv, no copy on disk
  tar -cf - -C "$HERE" Dockerfile.deps -C "$(dirname "$VENV")" "$(basename "$VENV")" \
    | docker_build "$BUILD/build-deps.log" --label "$LABEL=$DEPS_KEY" -f Dockerfile.deps -t "$DEPS_IMAGE" -
  wod_log "$DEPS_IMAGE built in $((SECONDS - t))s"
fi

# --- 3. wod-notebook:latest: + wod-hub -------------------------------------------
SRC="$BUILD/wod-hub-src"
rm -rf "$SRC"
mkdir -p "$SRC"
# the files a wheel of wod-hub is made of, without caches or build leftovers
tar -cf - -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md wod_hub \
  | tar -xf - -C "$SRC"
SRC_HASH=$(cd "$SRC" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha)
KEY=$({ printf 'image-recipe=1\ndeps=%s\nsrc=%s\n' "$DEPS_KEY" "$SRC_HASH"; cat "$HERE/Dockerfile"; } | sha)
if up_to_date "$IMAGE" "$KEY"; then
  wod_log "$IMAGE is up to date"
else
  wod_log "docker build $IMAGE"
  t=$SECONDS
  cp "$HERE/Dockerfile" "$BUILD/Dockerfile"
  tar -cf - -C "$BUILD" Dockerfile wod-hub-src \
    | docker_build "$BUILD/build-image.log" --label "$LABEL=$KEY" \
      --build-arg "DEPS_IMAGE=$DEPS_IMAGE" -f Dockerfile -t "$IMAGE" -
  wod_log "$IMAGE built in $((SECONDS - t))s"
fi
rm -rf "$SRC" "$BUILD/Dockerfile"
# images of ours that a rebuild left untagged
docker_cli image prune -f --filter "label=$LABEL" >/dev/null || true
wod_log "ready in $((SECONDS - T0))s: $IMAGE ($(docker_cli image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec)), DOCKER_HOST=$DOCKER_HOST"
