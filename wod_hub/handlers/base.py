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
