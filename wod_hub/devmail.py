"""A development mail catcher: an SMTP server that keeps what it receives and a
web inbox to read it. For trying wod-hub locally (``make run``): register, open
the inbox, click the login link. NEVER expose it on a real deployment: anyone
who reaches it reads every message.

Run as a JupyterHub managed service (it then serves under
``JUPYTERHUB_SERVICE_PREFIX``, e.g. ``/services/mail/``) or alone.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import html
import os
from datetime import datetime, timezone

from aiosmtpd.controller import Controller
from tornado import web

MAX_MESSAGES = 500


class Inbox:
    def __init__(self):
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler API
        msg = email.message_from_bytes(
            envelope.original_content or envelope.content, policy=email.policy.default
        )
        text = msg.get_body(("plain",))
        body_html = msg.get_body(("html",))
        self.messages.insert(
            0,
            {
                "id": len(self.messages) + 1 if not self.messages else self.messages[0]["id"] + 1,
                "received": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                "from": str(msg.get("From", "")),
                "to": ", ".join(envelope.rcpt_tos),
                "subject": str(msg.get("Subject", "")),
                "text": text.get_content() if text else "",
                "html": body_html.get_content() if body_html else "",
            },
        )
        del self.messages[MAX_MESSAGES:]
        return "250 Message accepted for delivery"


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>wod-hub mail catcher</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}td,th{{padding:.3rem .6rem;text-align:left}}
tr:nth-child(even){{background:#f4f4f4}}.warn{{color:#a40}}</style></head><body>{body}</body></html>"""


class ListHandler(web.RequestHandler):
    def get(self):
        inbox: Inbox = self.settings["inbox"]
        rows = "".join(
            f"<tr><td>{m['received']}</td><td>{html.escape(m['to'])}</td>"
            f"<td><a href='{self.settings['prefix']}message/{m['id']}'>{html.escape(m['subject'])}</a></td></tr>"
            for m in inbox.messages
        )
        body = (
            "<h1>Mail catcher</h1><p class=warn>Development only: every e-mail the hub sends lands here.</p>"
            f"<table><tr><th>Received</th><th>To</th><th>Subject</th></tr>{rows or '<tr><td colspan=3>No mail yet.</td></tr>'}</table>"
        )
        self.finish(PAGE.format(body=body))


class MessageHandler(web.RequestHandler):
    def get(self, message_id):
        inbox: Inbox = self.settings["inbox"]
        for m in inbox.messages:
            if str(m["id"]) == message_id:
                break
        else:
            raise web.HTTPError(404, "No such message (the catcher keeps the last 500, in memory).")
        if self.get_argument("part", "") == "html" and m["html"]:
            # the hub's own HTML e-mail, shown as the participant would see it
            self.set_header("Content-Security-Policy", "script-src 'none'")
            return self.finish(m["html"])
        html_link = "<p><a href='?part=html'>View the HTML version</a></p>" if m["html"] else ""
        body = (
            f"<p><a href='{self.settings['prefix']}'>&larr; inbox</a></p><h1>{html.escape(m['subject'])}</h1>"
            f"<p>From {html.escape(m['from'])} to {html.escape(m['to'])} at {m['received']}</p>{html_link}"
            f"<pre style='white-space:pre-wrap'>{html.escape(m['text'])}</pre>"
        )
        self.finish(PAGE.format(body=body))


class JsonHandler(web.RequestHandler):
    def get(self):
        self.finish({"messages": self.settings["inbox"].messages})


def make_app(inbox: Inbox, prefix: str) -> web.Application:
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    return web.Application(
        [
            (prefix, ListHandler),
            (prefix + r"message/(\d+)", MessageHandler),
            (prefix + "api/messages", JsonHandler),
        ],
        inbox=inbox,
        prefix=prefix,
    )


async def serve(smtp_host: str, smtp_port: int, http_host: str, http_port: int, prefix: str):
    inbox = Inbox()
    controller = Controller(inbox, hostname=smtp_host, port=smtp_port)
    controller.start()
    app = make_app(inbox, prefix)
    app.listen(http_port, http_host)
    print(
        f"mail catcher: SMTP on {smtp_host}:{smtp_port}, inbox on http://{http_host}:{http_port}{prefix}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        controller.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m wod_hub.devmail", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--smtp-host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--http-host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8025)
    parser.add_argument("--prefix", default=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"))
    args = parser.parse_args(argv)
    asyncio.run(serve(args.smtp_host, args.smtp_port, args.http_host, args.http_port, args.prefix))


if __name__ == "__main__":
    main()
