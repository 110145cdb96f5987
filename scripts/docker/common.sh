# Shared by dockerd.sh and build-image.sh (sourced, not run).
#   WOD_DOCKER_ROOT   all state of the private engine: data, exec root, socket, logs,
#                     build cache (default /var/tmp/wod-docker)
#   WOD_DOCKER_HOST   use this engine instead of starting a private one
#                     (e.g. unix:///var/run/docker.sock on a real Docker host)
#   WOD_DOCKER_CLI    docker client binary (default: Debian's /usr/bin/docker when present)
WOD_DOCKER_ROOT=${WOD_DOCKER_ROOT:-/var/tmp/wod-docker}
WOD_DOCKER_SOCK="$WOD_DOCKER_ROOT/docker.sock"
export DOCKER_HOST=${WOD_DOCKER_HOST:-unix://$WOD_DOCKER_SOCK}
# the client that ships with the daemon (docker.io); another one on PATH may be newer
# than the daemon and default to BuildKit, which this daemon's builder does not need
if [ -z "${WOD_DOCKER_CLI:-}" ]; then
  if [ -x /usr/bin/docker ]; then WOD_DOCKER_CLI=/usr/bin/docker; else WOD_DOCKER_CLI=docker; fi
fi
export DOCKER_BUILDKIT=0

wod_log() { printf '\033[1m[%s]\033[0m %s\n' "${WOD_LOG_TAG:-docker}" "$*" >&2; }
wod_die() { wod_log "ERROR: $*"; exit 1; }

docker_cli() { "$WOD_DOCKER_CLI" "$@"; }

# install Debian packages that are missing (CI starts from a machine that may lack them)
wod_apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || wod_die "missing Debian packages ${missing[*]}: run as root or apt-get install -y ${missing[*]}"
  wod_log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout 900 apt-get install -y -qq "${missing[@]}" >/dev/null; then
    timeout 300 apt-get update -qq || wod_die "apt-get update failed"
    timeout 900 apt-get install -y -qq "${missing[@]}" >/dev/null || wod_die "apt-get install ${missing[*]} failed"
  fi
}

# true when the engine answers within a few seconds
wod_engine_up() { timeout 10 "$WOD_DOCKER_CLI" version >/dev/null 2>&1; }
