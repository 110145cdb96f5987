"""The login link from the e-mail.

GET shows a one-button page: mail scanners that prefetch links must not burn
the single-use token. POST (with _xsrf) redeems it, logs in, and starts the
workshop server.
"""

from __future__ import annotations

from tornado import web

from .base import WodHandler


class StartHandler(WodHandler):
    async def get(self):
        token = self.get_argument("token", default="")
        if not token:
            raise web.HTTPError(
                400,
                "This link is incomplete. Copy the whole link from your e-mail, or ask for a new one.",
            )
        await self.wod_ready()
        html = await self.render_template(
            "wod/start.html",
            token=token,
            recover_url=self.hub.base_url + "wod/recover",
        )
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(html)

    async def post(self):
        token = self.get_body_argument("token", default="")
        if not token:
            raise web.HTTPError(
                400,
                "This link is incomplete. Copy the whole link from your e-mail, or ask for a new one.",
            )
        user = await self.login_user({"token": token})
        if user is None:
            raise web.HTTPError(
                403, "This link is not valid. Ask for a new one with 'Lost my link?'."
            )
        self.redirect(self.hub.base_url + f"spawn/{user.name}")
