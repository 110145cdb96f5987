"""``GET /hub/api/wod/content/<username>``: the student's rendered workshop as a tar.gz.

What a container (or pod) fetches at start with ``wod-hub fetch-content`` when it cannot
see the hub's filesystem. Authenticated like every hub API call: the single-user server's
own token (``JUPYTERHUB_API_TOKEN``) identifies its user; only that user (or a workshop
admin) gets the bundle. It is rendered on request, so nothing is stored for it.
"""

from __future__ import annotations

import asyncio

from jupyterhub.apihandlers import APIHandler
from tornado import web

from .. import provision
from .base import ADMIN_SCOPES, WodMixin, has_any_scope


class ContentHandler(WodMixin, APIHandler):
    async def get(self, username: str):
        requester = self.current_user
        if requester is None:
            raise web.HTTPError(401, "Send the server's API token (Authorization: token ...).")
        if getattr(requester, "name", None) != username and not has_any_scope(self, ADMIN_SCOPES):
            raise web.HTTPError(
                403, f"Only {username} (or a workshop admin) can fetch this content."
            )
        wod = await self.wod_ready()
        try:
            dep = await provision.find_deployment(wod, username)
        except LookupError as e:
            raise web.HTTPError(404, f"No content for {username}: {e}.") from None
        if dep is None:
            raise web.HTTPError(404, f"{username} has no running workshop: nothing to deliver.")
        from ..personalize import render_workshop_files

        def build() -> bytes:
            files = render_workshop_files(dep.workshop, dep.context, dep.catalog_variables)
            return provision.content_bundle(
                dep.workshop, files, dep.content_dir, dep.registration_id
            )

        data = await asyncio.to_thread(build)
        self.set_header("Content-Type", "application/gzip")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Wod-Registration", str(dep.registration_id))
        self.set_header("X-Wod-Content-Dir", dep.content_dir)
        self.set_header("X-Wod-First-Notebook", dep.first_notebook_path or "")
        self.finish(data)
