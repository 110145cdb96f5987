"""A working wod-hub configuration: the sample workshops on localhost, SQLite,
and a local mail catcher. `make run` uses it as is; copy it as the starting
point of a real deployment (see docs/deploy.md).

Everything can be set from the environment for quick experiments:
  WOD_RUN_DIR      state directory (databases, secrets, homes)   default ./run
  WOD_BIND_URL     where the hub listens                         default http://127.0.0.1:8000
  WOD_PUBLIC_URL   the URL participants use (e-mails, notebooks) default WOD_BIND_URL
  WOD_SMTP_HOST/PORT  outgoing mail                              default the mail catcher, 127.0.0.1:1025
"""

import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821

here = Path(__file__).resolve().parent
run = Path(os.environ.get("WOD_RUN_DIR", here / "run")).resolve()
run.mkdir(parents=True, exist_ok=True)
bind_url = os.environ.get("WOD_BIND_URL", "http://127.0.0.1:8000")

# ---- the hub -------------------------------------------------------------------
c.JupyterHub.bind_url = bind_url
c.JupyterHub.db_url = f"sqlite:///{run / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(run / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(run / "jupyterhub-proxy.pid")

# ---- wod-hub: catalog, registration, login ----------------------------------------
c.JupyterHub.authenticator_class = "wod"
c.WorkshopAuthenticator.workshop_dirs = [str(here / "workshops")]  # add a private overlay dir after it
c.WorkshopAuthenticator.db_url = f"sqlite:///{run / 'wod_hub.sqlite'}"  # or postgresql://user@host/db
c.WorkshopAuthenticator.secret_key_file = str(run / "wod_hub_secret")
c.WorkshopAuthenticator.public_url = os.environ.get("WOD_PUBLIC_URL", bind_url)
c.WorkshopAuthenticator.brand_name = "wod-hub"
c.WorkshopAuthenticator.terms_url = "https://example.org/terms"
admin_hash_file = run / "admin.hash"  # written by scripts/run-local.sh (`wod-hub admin hash-password`)
if admin_hash_file.exists():
    c.WorkshopAuthenticator.admin_password_hashes = {"admin": admin_hash_file.read_text().strip()}

# ---- mail ------------------------------------------------------------------------------
c.Mailer.smtp_host = os.environ.get("WOD_SMTP_HOST", "127.0.0.1")
c.Mailer.smtp_port = int(os.environ.get("WOD_SMTP_PORT", "1025"))
c.Mailer.from_address = "workshops@localhost.localdomain"

# ---- servers ------------------------------------------------------------------------
# Development: one process per student under this machine's user, homes in ./run/homes.
# Production on one machine: "wod" (system users, isolation, limits); containers: "wod-docker".
c.JupyterHub.spawner_class = "wod-simple"
c.Spawner.home_dir_template = str(run / "homes" / "{username}")
if os.getuid() == 0:
    c.Spawner.args = ["--ServerApp.allow_root=True"]

# ---- services ------------------------------------------------------------------------
services = []
if os.environ.get("WOD_MAIL_CATCHER", "1") == "1":
    # development only: every e-mail lands at http://127.0.0.1:8000/services/mail/
    services.append(
        {
            "name": "mail",
            "url": "http://127.0.0.1:8025",
            "command": [sys.executable, "-m", "wod_hub.devmail", "--smtp-port", "1025", "--http-port", "8025"],
            "display": False,
        }
    )

# Time-bombed sessions: reminders, expiry end path (stop, CLEANUP, RESET, PURGE, final
# e-mail), badges, process guard. See docs/lifecycle.md.
services.append(
    {
        "name": "wod-lifecycle",
        "command": [sys.executable, "-m", "wod_hub.service"],  # = the wod-hub-lifecycle script
        "display": False,
    }
)
c.JupyterHub.services = services

# wod-hub's own permissions, granted through roles
c.JupyterHub.custom_scopes = {
    "custom:wod:lifecycle": {
        "description": "Run the end path of workshop sessions (due list, claims, steps, events).",
    },
    "custom:wod:admin": {
        "description": "Manage workshop registrations, seats, e-mails and exports.",
    },
}
c.JupyterHub.load_roles = [
    {
        # least privilege (docs/lifecycle.md): its own API, stop servers and watch them stop.
        # Not delete:users nor admin:users: the hub deletes a student's hub user itself at PURGE.
        "name": "wod-lifecycle",
        "scopes": ["custom:wod:lifecycle", "delete:servers", "read:servers"],
        "services": ["wod-lifecycle"],
    },
]
# c.LifecycleService.interval = 30           # seconds between sweeps (config: wod-hub-lifecycle --config FILE)
# c.LifecycleSettings.special_badges = {3: "Apprentice", 5: "Expert", 7: "Hero", 10: "Super Hero", 15: "Legend"}
