"""A small async client for the hub's REST API (JupyterHub's and wod-hub's ``/hub/api/wod``).

Used by the operator CLI, so it works from any machine that reaches the hub:

    async with HubClient.from_env(hub_url, token) as hub:
        await hub.get("/wod/admin/stats")

The URL comes from ``--hub-url`` or ``JUPYTERHUB_API_URL`` (``http://host:8000``,
``.../hub/`` and ``.../hub/api`` all work); the token from ``--token`` or
``JUPYTERHUB_API_TOKEN``. Every failure is a :class:`HubAPIError` whose message
says what to do.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlencode, urlparse

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

ENV_URL = "JUPYTERHUB_API_URL"
ENV_TOKEN = "JUPYTERHUB_API_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8081/hub/api"
TOKEN_HINT = (
    "Create a token for a hub admin (or a service with the custom:wod:admin scope) on the hub's "
    "Token page, and pass it with --token or JUPYTERHUB_API_TOKEN."
)


class HubAPIError(Exception):
    """A request the hub refused or could not answer. ``status`` is 0 when unreachable."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def api_url(url: str) -> str:
    """Normalize a hub address to its API root, ending in ``/hub/api``."""
    url = url.strip()
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise HubAPIError(
            0,
            f"{url!r} is not a hub address: write it like https://hub.example.org or http://127.0.0.1:8081/hub/api",
        )
    path = parsed.path.rstrip("/")
    if path.endswith("/hub/api"):
        pass
    elif path.endswith("/hub"):
        path += "/api"
    else:
        path += "/hub/api"
    return parsed._replace(path=path, query="", fragment="").geturl()


class HubClient:
    def __init__(self, url: str, token: str, *, timeout: float = 120.0):
        if not token:
            raise HubAPIError(0, "No API token. " + TOKEN_HINT)
        self.url = api_url(url)
        self.token = token
        self.timeout = timeout
        self._http = AsyncHTTPClient(force_instance=True)

    @classmethod
    def from_env(cls, url: str | None = None, token: str | None = None, **kw) -> HubClient:
        return cls(
            url or os.environ.get(ENV_URL) or DEFAULT_URL,
            token or os.environ.get(ENV_TOKEN, ""),
            **kw,
        )

    async def __aenter__(self) -> HubClient:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        body: Any = None,
        raw: bool = False,
    ) -> Any:
        """``path`` is relative to the API root (``/users``, ``/wod/admin/stats``).
        Returns the decoded JSON (or the text when ``raw``)."""
        url = self.url + "/" + path.lstrip("/")
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        if clean:
            url += "?" + urlencode(clean)
        headers = {"Authorization": f"token {self.token}", "Accept": "application/json"}
        data = None
        if body is not None or method in ("POST", "PUT", "PATCH"):
            data = json.dumps(body if body is not None else {})
            headers["Content-Type"] = "application/json"
        req = HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=data,
            request_timeout=self.timeout,
            follow_redirects=False,
            allow_nonstandard_methods=True,
        )
        try:
            resp = await self._http.fetch(req, raise_error=False)
        except HTTPClientError as e:  # pragma: no cover (raise_error=False)
            resp = e.response
        except OSError as e:
            raise HubAPIError(
                0,
                f"Cannot reach the hub at {self.url} ({e.strerror or e}). Is it running? "
                f"Set the address with --hub-url or {ENV_URL}.",
            ) from None
        if resp.code == 599:
            reason = str(resp.error) if resp.error else "no answer"
            raise HubAPIError(
                0,
                f"Cannot reach the hub at {self.url} ({reason}). Is it running? "
                f"Set the address with --hub-url or {ENV_URL}.",
            )
        text = resp.body.decode("utf-8", errors="replace") if resp.body else ""
        if resp.code >= 400:
            raise HubAPIError(resp.code, self._explain(resp.code, method, path, text))
        if raw:
            return text
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise HubAPIError(
                resp.code,
                f"The hub answered {method} {path} with something that is not JSON; is {self.url} a JupyterHub?",
            ) from None

    def _explain(self, code: int, method: str, path: str, text: str) -> str:
        try:
            message = json.loads(text).get("message") or ""
        except (ValueError, AttributeError):
            message = ""
        where = f"{method} {path}"
        if code == 401:
            return (
                f"The hub does not accept this token for {where} (HTTP 401): it is unknown, expired or revoked. "
                + TOKEN_HINT
            )
        if code == 403:
            return (
                f"The hub refused {where} (HTTP {code}{': ' + message if message else ''}). "
                + TOKEN_HINT
            )
        if code == 404 and not message:
            return (
                f"{where} is not on the hub at {self.url} (HTTP 404). "
                "Check --hub-url, and that the hub runs wod-hub (c.JupyterHub.authenticator_class = 'wod')."
            )
        return f"{where} failed (HTTP {code}): {message or text[:300] or 'no details'}"

    async def get(self, path: str, **params) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any = None, **params) -> Any:
        return await self.request("POST", path, params=params, body=body)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)
