#!/usr/bin/env bash
# Run the hub on http://127.0.0.1:8000 with the sample workshops, SQLite and the
# local mail catcher (http://127.0.0.1:8000/services/mail/). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/node_modules/.bin:$PWD/.venv/bin:$PATH"
RUN=${WOD_RUN_DIR:-$PWD/run}
mkdir -p "$RUN"
if [ ! -f "$RUN/admin.hash" ]; then
  pw=${WOD_ADMIN_PASSWORD:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')}
  printf '%s' "$pw" | .venv/bin/wod-hub admin hash-password --stdin > "$RUN/admin.hash"
  chmod 600 "$RUN/admin.hash"
  echo "=================================================================="
  echo " admin account: admin / $pw"
  echo " (shown once; delete $RUN/admin.hash and restart to get a new one)"
  echo "=================================================================="
fi
.venv/bin/wod-hub check workshops
echo "wod-hub: open http://127.0.0.1:8000/  -  mail catcher: http://127.0.0.1:8000/services/mail/"
exec .venv/bin/jupyterhub -f jupyterhub_config.py
