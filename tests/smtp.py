"""pytest plugin: a real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives.

Fixture ``smtp_server`` (function scope): a :class:`SMTPServer` with

- ``.port``, ``.host``; ``.messages``: parsed :class:`email.message.EmailMessage` objects,
  ``.envelopes``: ``(mail_from, rcpt_tos)`` of each, ``.peers``: the client address of each
  (how many SMTP connections carried them);
- ``.stop()`` / ``.start()``: an outage, then the server back on the *same* port;
- ``wait_for(pred, timeout)`` / ``wait_for_count(pred, n, timeout)``: block the calling thread
  (sync tests only: they refuse to run inside an event loop);
- ``await async_wait_for(...)`` / ``await async_wait_for_count(...)``: the same without
  blocking the loop (async tests);
- ``text_of(msg)``, ``html_of(msg)``, ``first_link(msg, pattern)``.

Fixture ``smtp_server_factory(**options)``: more servers, e.g. ``starttls=True`` (STARTTLS
required), ``implicit_tls=True`` (TLS from the first byte), ``users={"name": "password"}``
(AUTH required, over TLS); ``.cert_file`` is the self-signed certificate (for 127.0.0.1 and
localhost) a client can trust; ``.logins`` lists the user names that authenticated.

The server runs in aiosmtpd's own thread and event loop, so it keeps answering while
the test's loop waits.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

Predicate = Callable[[EmailMessage], bool]


def free_port(host: str = "127.0.0.1") -> int:
    # aiosmtpd's Controller cannot listen on port 0: pick a free port first
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    return part.get_content() if part is not None else ""


def html_of(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    return part.get_content() if part is not None else ""


def first_link(msg: EmailMessage | str, pattern: str | re.Pattern = r"https?://\S+") -> str | None:
    """The first URL in the text part (or in a string) matching ``pattern``; a group 1
    in the pattern, if any, is what is returned."""
    text = msg if isinstance(msg, str) else text_of(msg)
    m = re.compile(pattern).search(text)
    if m is None:
        return None
    return m.group(1) if m.re.groups else m.group(0)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate + key for 127.0.0.1 and localhost (cryptography comes with
    JupyterHub, through certipy)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _Collector:
    def __init__(self, server: SMTPServer):
        self.server = server

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler API
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.server._received(msg, envelope.mail_from, list(envelope.rcpt_tos), session.peer)
        return "250 Message accepted for delivery"


class SMTPServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        starttls: bool = False,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
    ):
        self.host = host
        self.port = port or free_port(host)
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.users = dict(users or {})
        self.logins: list[str] = []
        self.cert_file: Path | None = None
        self._tls: ssl.SSLContext | None = None
        if starttls or implicit_tls or users:
            self._certdir = tempfile.TemporaryDirectory(prefix="wod-smtp-")
            self.cert_file, key_file = self_signed_cert(Path(self._certdir.name))
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(self.cert_file, key_file)
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.peers: list = []  # client (host, port) of each message: one per SMTP connection
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    def _received(self, msg: EmailMessage, mail_from: str, rcpt_tos: list[str], peer) -> None:
        with self._cond:
            self.messages.append(msg)
            self.envelopes.append((mail_from, rcpt_tos))
            self.peers.append(peer)
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.users.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    def start(self) -> None:
        if self._controller is None:
            options: dict = {"enable_SMTPUTF8": True}
            if self.starttls:
                options.update(tls_context=self._tls, require_starttls=True)
            if self.users:
                options.update(authenticator=self._authenticate, auth_required=True)
            controller = Controller(
                _Collector(self),
                hostname=self.host,
                port=self.port,
                ssl_context=self._tls if self.implicit_tls else None,
                **options,
            )
            controller.start()
            self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()
            self.envelopes.clear()
            self.peers.clear()

    def matching(self, pred: Predicate | None = None) -> list[EmailMessage]:
        with self._cond:
            return [m for m in self.messages if pred is None or pred(m)]

    # ---- sync waits (sync tests) ---------------------------------------------------
    def wait_for_count(
        self, pred: Predicate | None, count: int, timeout: float = 10
    ) -> list[EmailMessage]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "smtp_server.wait_for* blocks the event loop: use `await smtp_server.async_wait_for*`."
            )
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self.messages if pred is None or pred(m)]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    break
                self._cond.wait(left)
        if len(found) < count:
            raise TimeoutError(self._timeout_message(count, len(found), timeout))
        return found

    def wait_for(self, pred: Predicate | None = None, timeout: float = 10) -> EmailMessage:
        return self.wait_for_count(pred, 1, timeout)[0]

    # ---- async waits (async tests) -------------------------------------------------
    async def async_wait_for_count(
        self, pred: Predicate | None, count: int, timeout: float = 10
    ) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(pred)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_message(count, len(found), timeout))
            await asyncio.sleep(0.02)

    async def async_wait_for(
        self, pred: Predicate | None = None, timeout: float = 10
    ) -> EmailMessage:
        return (await self.async_wait_for_count(pred, 1, timeout))[0]

    def _timeout_message(self, count: int, found: int, timeout: float) -> str:
        subjects = [str(m["Subject"]) for m in self.matching()]
        return f"expected {count} matching e-mail(s) within {timeout}s, got {found}; all received: {subjects}"

    # helpers as methods too, for tests that only hold the fixture
    text_of = staticmethod(text_of)
    html_of = staticmethod(html_of)
    first_link = staticmethod(first_link)


@pytest.fixture
def smtp_server():
    server = SMTPServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_server_factory():
    servers: list[SMTPServer] = []

    def make(**options) -> SMTPServer:
        server = SMTPServer(**options)
        server.start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
