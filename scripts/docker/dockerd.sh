#!/usr/bin/env bash
# A private Docker engine for wod-hub's tests and local DockerSpawner runs.
#   bash scripts/docker/dockerd.sh start|stop|status|env
# All state lives under $WOD_DOCKER_ROOT (default /var/tmp/wod-docker): data-root, exec-root,
# pidfile, socket, dockerd.log. The engine has no bridge, no iptables rules and no IP
# forwarding: containers use the host network (`--network host`) and reach 127.0.0.1 only.
#   WOD_DOCKER_HOST            use an existing engine instead; start/stop then do nothing
#   WOD_DOCKER_STORAGE_DRIVER  force a storage driver (default: dockerd's choice, overlay2
#                              here; vfs is tried when the default one cannot start)
#   WOD_DOCKER_START_TIMEOUT   seconds to wait for the engine to answer (default 60)
#   WOD_DOCKERD                the daemon binary (default dockerd)
set -euo pipefail
WOD_LOG_TAG=dockerd
. "$(dirname "$0")/common.sh"

PIDFILE="$WOD_DOCKER_ROOT/dockerd.pid"
LOG="$WOD_DOCKER_ROOT/dockerd.log"
EXEC_ROOT="$WOD_DOCKER_ROOT/exec"
START_TIMEOUT=${WOD_DOCKER_START_TIMEOUT:-60}
STOP_TIMEOUT=${WOD_DOCKER_STOP_TIMEOUT:-30}

daemon_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

launch() { # $1: storage driver or empty; returns 0 once the engine answers
  local driver=$1 args pid deadline
  args=(--iptables=false --ip-forward=false --ip-masq=false --bridge=none
    --data-root "$WOD_DOCKER_ROOT/data" --exec-root "$EXEC_ROOT"
    --pidfile "$PIDFILE" -H "unix://$WOD_DOCKER_SOCK"
    --log-level=warn --shutdown-timeout=10)
  [ -n "$driver" ] && args+=(--storage-driver "$driver")
  rm -f "$PIDFILE"
  printf '\n=== %s dockerd %s\n' "$(date -u +%FT%TZ)" "${args[*]}" >>"$LOG"
  # own session: a test runner's process-group kill must not take the engine down mid-run
  setsid "${WOD_DOCKERD:-dockerd}" "${args[@]}" </dev/null >>"$LOG" 2>&1 8>&- 9>&- &
  pid=$!
  deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      return 1
    fi
    if [ -S "$WOD_DOCKER_SOCK" ] && wod_engine_up; then return 0; fi
    sleep 0.3
  done
  wod_log "dockerd did not answer within ${START_TIMEOUT}s; stopping it"
  kill -TERM "$pid" 2>/dev/null || true
  sleep 2
  kill -KILL "$pid" 2>/dev/null || true
  return 1
}

start() {
  if [ -n "${WOD_DOCKER_HOST:-}" ]; then
    wod_engine_up || wod_die "WOD_DOCKER_HOST=$WOD_DOCKER_HOST does not answer (docker version failed)"
    wod_log "using the engine at $WOD_DOCKER_HOST"
    return 0
  fi
  local pid deadline
  mkdir -p "$WOD_DOCKER_ROOT"
  # one starter at a time (two test sessions may start together)
  exec 8>"$WOD_DOCKER_ROOT/dockerd.lock"
  flock -w "$START_TIMEOUT" 8 || wod_die "another start holds $WOD_DOCKER_ROOT/dockerd.lock"
  if pid=$(daemon_pid); then
    # running, or still starting (another caller launched it a moment ago)
    deadline=$((SECONDS + START_TIMEOUT))
    until wod_engine_up; do
      kill -0 "$pid" 2>/dev/null || break
      [ $SECONDS -lt $deadline ] || wod_die "dockerd pid $pid does not answer on $WOD_DOCKER_SOCK: bash $0 stop, then start"
      sleep 0.5
    done
    if wod_engine_up; then
      wod_log "already running (pid $pid), DOCKER_HOST=$DOCKER_HOST"
      return 0
    fi
  fi
  [ "${WOD_DOCKERD:-}" ] || wod_apt_ensure docker.io
  [ "$(id -u)" = 0 ] || wod_die "dockerd needs root (it creates mounts and cgroups)"
  local driver=${WOD_DOCKER_STORAGE_DRIVER:-}
  if ! launch "$driver"; then
    if [ -z "$driver" ]; then
      wod_log "dockerd failed with its default storage driver; retrying with vfs. Log tail:"
      tail -n 15 "$LOG" >&2
      driver=vfs
      launch vfs || { tail -n 30 "$LOG" >&2; wod_die "dockerd could not start (see $LOG)"; }
    else
      tail -n 30 "$LOG" >&2
      wod_die "dockerd could not start with storage driver '$driver' (see $LOG)"
    fi
  fi
  wod_log "started (pid $(daemon_pid), storage driver $(docker_cli info -f '{{.Driver}}')), DOCKER_HOST=$DOCKER_HOST"
}

stop() {
  [ -n "${WOD_DOCKER_HOST:-}" ] && { wod_log "WOD_DOCKER_HOST is set: not stopping that engine"; return 0; }
  local pid deadline leftovers mnt
  mkdir -p "$WOD_DOCKER_ROOT"
  exec 8>"$WOD_DOCKER_ROOT/dockerd.lock"
  flock -w "$START_TIMEOUT" 8 || wod_die "another start/stop holds $WOD_DOCKER_ROOT/dockerd.lock"
  if pid=$(daemon_pid); then
    kill -TERM "$pid"
    deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.3; done
    if kill -0 "$pid" 2>/dev/null; then
      wod_log "dockerd (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
    fi
    wod_log "stopped (pid $pid)"
  else
    wod_log "not running"
  fi
  rm -f "$PIDFILE"
  # containerd and its shims are children of this engine only: they are found by the
  # exec-root path, which no other engine uses
  leftovers=$(pgrep -f -- "$EXEC_ROOT/containerd" || true)
  if [ -n "$leftovers" ]; then
    wod_log "ending leftover containerd processes of this engine: $(echo $leftovers)"
    kill -TERM $leftovers 2>/dev/null || true
    sleep 2
    kill -KILL $leftovers 2>/dev/null || true
  fi
  # mounts of containers that a killed engine left behind
  while read -r mnt; do
    [ -n "$mnt" ] && umount -l "$mnt" 2>/dev/null || true
  done < <(findmnt -rn -o TARGET | grep -F "$WOD_DOCKER_ROOT/" | sort -r || true)
}

status() {
  if [ -n "${WOD_DOCKER_HOST:-}" ]; then
    wod_engine_up && { echo "external engine at $WOD_DOCKER_HOST answers"; return 0; }
    echo "external engine at $WOD_DOCKER_HOST does not answer"; return 1
  fi
  local pid
  if pid=$(daemon_pid); then
    if wod_engine_up; then
      echo "running: pid $pid, DOCKER_HOST=$DOCKER_HOST, root $WOD_DOCKER_ROOT"; return 0
    fi
    echo "dockerd pid $pid is alive but does not answer on $WOD_DOCKER_SOCK"; return 1
  fi
  echo "not running (root $WOD_DOCKER_ROOT)"; return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
