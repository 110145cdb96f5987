"""Shared bits of wod-hub's handlers."""

from __future__ import annotations

from jupyterhub.handlers import BaseHandler


class WodMixin:
    """Access to the wod-hub state from any JupyterHub handler."""

    async def wod_ready(self):
        return await self.authenticator.wod.ready()

    @property
    def client_ip(self) -> str:
        return self.request.remote_ip or "unknown"

    def form_data(self, *names: str) -> dict[str, str]:
        return {name: self.get_body_argument(name, default="") for name in names}

    def too_many(self, retry_after: int, what: str):
        self.set_status(429)
        self.set_header("Retry-After", str(retry_after))
        minutes = max(1, round(retry_after / 60))
        return f"Too many {what} from here. Try again in about {minutes} minute{'s' if minutes > 1 else ''}."


class WodHandler(WodMixin, BaseHandler):
    pass


# Custom scopes (declared in jupyterhub_config.py, see docs/DESIGN.md):
#   custom:wod:admin      registrations, seats, outbox, actions, exports
#   custom:wod:lifecycle  the lifecycle service's end-path steps
# Hub admins hold the unfiltered `admin:users` scope; managing registrations is
# managing users, so it grants the wod admin scope too. JupyterHub 6's
# needs_scope() refuses custom scopes at import time: check expanded_scopes.
ADMIN_SCOPES = ("custom:wod:admin", "admin:users")
LIFECYCLE_SCOPES = ("custom:wod:lifecycle", "custom:wod:admin", "admin:users")


def has_any_scope(handler, scopes) -> bool:
    held = handler.expanded_scopes or set()
    return any(scope in held for scope in scopes)


def require_any_scope(handler, scopes, what: str = "this page") -> None:
    """403 (401 when anonymous) unless the requester holds one of ``scopes``."""
    from tornado import web

    if handler.current_user is None:
        raise web.HTTPError(
            401 if handler.request.path.startswith(handler.hub.base_url + "api/") else 403,
            f"Sign in as an admin to use {what}.",
        )
    if not has_any_scope(handler, scopes):
        raise web.HTTPError(403, f"You do not have permission to use {what}.")
