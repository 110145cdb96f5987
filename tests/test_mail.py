"""E-mail: templates, the outbox and the sender, over a real SMTP server (aiosmtpd) and
real databases (a SQLite file; PostgreSQL where marked)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import timedelta

import pytest
import pytest_asyncio
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from traitlets import TraitError

from wod_hub import orm
from wod_hub.mail import (
    TEMPLATE_CONTEXT,
    EmailTemplateError,
    Mailer,
    MailError,
    UnsafeContext,
    make_email_env,
    render_email,
)
from wod_hub.orm import Base, OutboxMessage
from wod_hub.outbox import CancelMessage, MailSender, enqueue, outbox_stats, retry_message

T0 = orm.utcnow().replace(microsecond=0)

SAMPLE = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "workshop_id": "WKSHP-Python101",
    "workshop_name": "Python 101",
    "workshop_image": "https://cdn.example.org/python101.png",
    "duration_minutes": 150,
    "expires_at": "2030-11-25T14:30:00Z",
    "minutes_left": 45,
    "username": "student397",
    "hub_url": "https://hub.example.org/",
    "recover_url": "https://hub.example.org/hub/wod/recover",
    "register_url": "https://hub.example.org/hub/login",
    "extend_url": "https://hub.example.org/hub/wod/extend",
    "extend_minutes": 60,
    "completion": 87.4,
    "survey_url": "https://survey.example.org/s/42",
    "badge_image_url": "https://cdn.example.org/badges/python101.png",
    "replay_url": "https://replays.example.org/python101",
    "badge_name": "Expert",
    "badge_url": "https://hub.example.org/hub/wod/badges/abc123",
    "workshops_completed": 5,
    # send-time secrets
    "login_url": "https://hub.example.org/hub/wod/start?token=LOGIN-TOKEN-1",
    "password": "PASSWORD-1",
}
# how formatted values show up in the text
SHOWN = {
    "duration_minutes": "2 hours 30 minutes",
    "expires_at": "Monday 25 November 2030, 14:30 UTC",
}
SHOWN_IN_SUBJECT_ONLY = {"minutes_left"}


def welcome_context(i: int = 0) -> dict:
    keys = TEMPLATE_CONTEXT["welcome"].required
    return {**{k: SAMPLE[k] for k in keys}, "first_name": f"Ada{i}"}


def async_url(url: str) -> str:
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    return "postgresql+psycopg://" + url.split("://", 1)[1]


async def make_db(url: str, create: bool = True):
    engine = create_async_engine(
        async_url(url), connect_args={"timeout": 30} if url.startswith("sqlite") else {}
    )
    if create:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
    return engine, async_sessionmaker(engine, expire_on_commit=False)


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """The outbox's clock stands at T0 (enqueue stamps rows with it); tests move time
    by passing ``now=`` to ``send_due``."""
    monkeypatch.setattr(orm, "utcnow", lambda: T0)
    return T0


@pytest_asyncio.fixture(loop_scope="function")
async def db(tmp_path):
    engine, sessionmaker = await make_db(f"sqlite:///{tmp_path / 'mail.sqlite'}")
    yield sessionmaker
    await engine.dispose()


@pytest_asyncio.fixture(loop_scope="function")
async def any_db(any_db_url):
    """(url, sessionmaker) on a SQLite file, then on PostgreSQL."""
    engine, sessionmaker = await make_db(any_db_url)
    yield any_db_url, sessionmaker
    await engine.dispose()


@pytest.fixture
def mailer(smtp_server):
    return Mailer(
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        from_address="workshops@example.org",
        brand_name="HPE Developer",
        timeout=5,
    )


async def queue(sessionmaker, n: int = 1, **kw) -> list[int]:
    ids = []
    async with sessionmaker() as session, session.begin():
        for i in range(n):
            msg = await enqueue(
                session,
                to=f"ada{i}@example.org",
                template="welcome",
                context=welcome_context(i),
                **kw,
            )
            ids.append(msg.id)
    return ids


async def rows(sessionmaker) -> list[OutboxMessage]:
    async with sessionmaker() as session:
        return list(
            (await session.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars()
        )


async def fake_secrets(session, message):
    return {
        "login_url": f"https://hub.example.org/hub/wod/start?token=SECRET-{message.id}",
        "password": f"pw-{message.id}",
    }


# ---- rendering ----------------------------------------------------------------------


@pytest.mark.parametrize("template", sorted(TEMPLATE_CONTEXT), ids=sorted(TEMPLATE_CONTEXT))
def test_every_template_renders_text_and_html(template):
    env = make_email_env(
        brand={"brand_name": "HPE Developer", "brand_url": "https://developer.example.org"}
    )
    spec = TEMPLATE_CONTEXT[template]
    context = {k: SAMPLE[k] for k in (*spec.required, *spec.send_time, *spec.optional)}
    rendered = render_email(template, context, env=env)
    assert rendered.subject and "\n" not in rendered.subject
    assert rendered.html.startswith("<!DOCTYPE html>") and "HPE Developer" in rendered.html
    assert (
        "HPE Developer" in rendered.text and "{{" not in rendered.text and "{%" not in rendered.text
    )
    # every key a template requires is actually shown in both parts
    for key in (*spec.required, *spec.send_time):
        if key in SHOWN_IN_SUBJECT_ONLY:
            assert "45 minutes" in rendered.subject
            continue
        shown = SHOWN.get(key, str(SAMPLE[key]))
        assert shown in rendered.text, f"{template}.txt does not show {key}"
        assert shown in rendered.html, f"{template}.html does not show {key}"


def test_optional_keys_may_be_left_out():
    env = make_email_env()
    spec = TEMPLATE_CONTEXT["final"]
    rendered = render_email("final", {k: SAMPLE[k] for k in spec.required}, env=env)
    assert (
        "survey" not in rendered.text and "badge" not in rendered.text and "%" not in rendered.text
    )
    with_extras = render_email(
        "final", {k: SAMPLE[k] for k in (*spec.required, "completion", "survey_url")}, env=env
    )
    assert (
        "You completed 87% of the workshop" in with_extras.text
        and SAMPLE["survey_url"] in with_extras.text
    )


def test_reminder_explains_extension_only_when_allowed():
    env = make_email_env()
    base = {k: SAMPLE[k] for k in TEMPLATE_CONTEXT["reminder"].required}
    assert "cannot be extended" in render_email("reminder", base, env=env).text
    extendable = render_email(
        "reminder", {**base, "extend_url": SAMPLE["extend_url"], "extend_minutes": 60}, env=env
    )
    assert (
        "extend your workshop by 1 hour" in extendable.text
        and SAMPLE["extend_url"] in extendable.html
    )


def test_missing_key_is_a_clear_error():
    context = {k: SAMPLE[k] for k in TEMPLATE_CONTEXT["welcome"].required}
    with pytest.raises(
        EmailTemplateError, match=r"'welcome' needs context keys login_url, password"
    ):
        render_email("welcome", context, env=make_email_env())


def test_participant_text_is_only_a_value():
    evil = "{{ 7*7 }}<script>alert(1)</script>"
    context = {
        **{k: SAMPLE[k] for k in TEMPLATE_CONTEXT["welcome"].required},
        "login_url": "u",
        "password": "p",
    }
    rendered = render_email("welcome", {**context, "first_name": evil}, env=make_email_env())
    assert f"Hello {evil}," in rendered.text  # text is not HTML: kept as typed
    assert "Hello {{ 7*7 }}&lt;script&gt;alert(1)&lt;/script&gt;," in rendered.html
    assert "<script>" not in rendered.html and "49" not in rendered.text


def test_operator_templates_override_and_are_sandboxed(tmp_path):
    (tmp_path / "welcome.subject.txt").write_text(
        "Welcome to {{ workshop_name }}, {{ first_name }}"
    )
    (tmp_path / "custom.subject.txt").write_text("Hi")
    (tmp_path / "custom.txt").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    (tmp_path / "typo.subject.txt").write_text("Hi {{ frist_name }}")
    (tmp_path / "typo.txt").write_text("x")
    mailer = Mailer(templates_path=[str(tmp_path)])
    context = {
        **{k: SAMPLE[k] for k in TEMPLATE_CONTEXT["welcome"].required},
        "login_url": "u",
        "password": "p",
    }
    rendered = mailer.render("welcome", context)
    assert rendered.subject == "Welcome to Python 101, Ada"
    assert "Start my workshop" in rendered.html  # the packaged parts still apply
    with pytest.raises(EmailTemplateError, match="custom.txt"):
        mailer.render("custom", {})
    with pytest.raises(EmailTemplateError, match=r"typo.subject.txt.*'frist_name' is undefined"):
        mailer.render("typo", {"first_name": "Ada"})
    with pytest.raises(EmailTemplateError, match="No e-mail template 'nope.subject.txt'"):
        mailer.render("nope", {})


# ---- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, message",
    [
        pytest.param("smtp_port", 0, "Mailer.smtp_port must be between 1 and 65535", id="port-0"),
        pytest.param(
            "smtp_port", 70000, "Mailer.smtp_port must be between 1 and 65535", id="port-big"
        ),
        pytest.param(
            "from_address", "Workshops <w@example.org>", "Mailer.from_address", id="display-name"
        ),
        pytest.param("from_address", "nobody", "Mailer.from_address", id="not-an-address"),
        pytest.param("reply_to", "help@", "Mailer.reply_to", id="bad-reply-to"),
        pytest.param("smtp_security", "ssl", "smtp_security", id="unknown-security"),
        pytest.param(
            "backoff_base", 0, "Mailer.backoff_base must be a positive", id="zero-backoff"
        ),
        pytest.param(
            "max_attempts", 0, "Mailer.max_attempts must be at least 1", id="zero-attempts"
        ),
        pytest.param("templates_path", ["/no/such/dir"], "Mailer.templates_path", id="missing-dir"),
    ],
)
def test_invalid_config_names_the_option(option, value, message):
    with pytest.raises((ValueError, TraitError), match=message):
        Mailer(**{option: value})


def test_password_from_environment(monkeypatch):
    monkeypatch.setenv("WOD_HUB_SMTP_PASSWORD", "from-env")
    assert Mailer().smtp_password == "from-env"
    assert Mailer(smtp_password="explicit").smtp_password == "explicit"


def test_backoff_grows_with_jitter_and_is_capped():
    mailer = Mailer(backoff_base=30, backoff_max=3600)
    rng = random.Random(1)
    for attempts in range(1, 12):
        expected = min(3600, 30 * 2 ** (attempts - 1))
        delays = [mailer.backoff(attempts, rng).total_seconds() for _ in range(50)]
        assert all(0.75 * expected <= d <= expected for d in delays)
        assert len(set(delays)) > 1  # jitter


def test_brand_defaults_from_the_authenticator():
    from traitlets.config import Configurable

    class Parent(Configurable):
        brand_name = "ACME Academy"
        brand_url = "https://acme.example"
        brand_logo_url = ""

    assert Mailer(parent=Parent()).brand_name == "ACME Academy"
    assert Mailer(parent=Parent(), brand_name="Other").brand_name == "Other"


# ---- enqueue ------------------------------------------------------------------------


async def test_enqueue_commits_with_the_caller_or_not_at_all(any_db):
    _, sessionmaker = any_db
    with pytest.raises(RuntimeError):
        async with sessionmaker() as session, session.begin():
            await enqueue(
                session, to="ada@example.org", template="welcome", context=welcome_context()
            )
            raise RuntimeError("registration failed after the e-mail was queued")
    assert await rows(sessionmaker) == []
    await queue(sessionmaker)
    assert [m.state for m in await rows(sessionmaker)] == ["pending"]


async def test_dedupe_key_queues_once_and_keeps_the_transaction(any_db):
    _, sessionmaker = any_db
    async with sessionmaker() as session, session.begin():
        first = await enqueue(
            session,
            to="ada@example.org",
            template="welcome",
            context=welcome_context(),
            dedupe_key="reg:1:welcome",
        )
        again = await enqueue(
            session,
            to="ada@example.org",
            template="welcome",
            context=welcome_context(),
            dedupe_key="reg:1:welcome",
        )
        other = await enqueue(
            session, to="bob@example.org", template="welcome", context=welcome_context(2)
        )
    assert first is not None and again is None and other is not None
    # in a later transaction too, and that transaction still commits its other work
    async with sessionmaker() as session, session.begin():
        assert (
            await enqueue(
                session,
                to="ada@example.org",
                template="welcome",
                context=welcome_context(),
                dedupe_key="reg:1:welcome",
            )
            is None
        )
        await enqueue(
            session, to="carol@example.org", template="welcome", context=welcome_context(3)
        )
    assert [m.to_addr for m in await rows(sessionmaker)] == [
        "ada@example.org",
        "bob@example.org",
        "carol@example.org",
    ]


@pytest.mark.parametrize(
    "kw, error, message",
    [
        pytest.param(
            {"template": "nope"},
            EmailTemplateError,
            "No e-mail template 'nope'",
            id="unknown-template",
        ),
        pytest.param(
            {"to": "not an address"},
            MailError,
            "recipient 'not an address' is not valid",
            id="bad-to",
        ),
        pytest.param(
            {"context": {**welcome_context(), "password": "x"}},
            UnsafeContext,
            "secret-looking keys \\(password\\)",
            id="password",
        ),
        pytest.param(
            {"context": {**welcome_context(), "extra": {"api_token": "x"}}},
            UnsafeContext,
            "extra.api_token",
            id="nested-token",
        ),
        pytest.param(
            {"context": {**welcome_context(), "login_link": "x"}},
            UnsafeContext,
            "login_link",
            id="link",
        ),
        pytest.param(
            {"context": {**welcome_context(), "at": T0}},
            UnsafeContext,
            "not JSON-serializable",
            id="datetime",
        ),
        pytest.param(
            {"context": {"first_name": "Ada"}},
            EmailTemplateError,
            "needs context keys workshop_name",
            id="missing",
        ),
    ],
)
async def test_enqueue_refuses(db, kw, error, message):
    args = {"to": "ada@example.org", "template": "welcome", "context": welcome_context(), **kw}
    async with db() as session, session.begin():
        with pytest.raises(error, match=message):
            await enqueue(session, **args)
    assert await rows(db) == []


# ---- sending ------------------------------------------------------------------------


async def test_delivers_a_multipart_message(db, mailer, smtp_server):
    [message_id] = await queue(db)
    sender = MailSender(db, mailer, secrets_provider=fake_secrets)
    assert await sender.send_due() == 1
    [msg] = await smtp_server.async_wait_for_count(None, 1)
    assert msg["From"] == "HPE Developer <workshops@example.org>"
    assert msg["To"] == "ada0@example.org"
    assert msg["Subject"] == 'You\'re in: start your workshop "Python 101"'
    assert msg["Message-ID"].startswith(f"<wod-{message_id}.") and msg["Message-ID"].endswith(
        "@example.org>"
    )
    assert msg["Date"] and msg["Auto-Submitted"] == "auto-generated"
    assert smtp_server.envelopes[0] == ("workshops@example.org", ["ada0@example.org"])
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    link = smtp_server.first_link(msg, r"(https://hub\.example\.org/hub/wod/start\?token=\S+)")
    assert link == f"https://hub.example.org/hub/wod/start?token=SECRET-{message_id}"
    assert "Password:     pw-" in smtp_server.text_of(msg) and "Ada0" in smtp_server.html_of(msg)
    [row] = await rows(db)
    assert (row.state, row.attempts, row.claimed_by, row.last_error) == ("sent", 1, None, None)
    assert row.sent_at is not None and row.subject == msg["Subject"]
    assert await sender.send_due() == 0 and len(smtp_server.messages) == 1


async def test_secrets_reach_the_mail_but_never_the_database(db, mailer, smtp_server, caplog):
    caplog.set_level(logging.DEBUG)
    await queue(db, 2)
    smtp_server.stop()  # first a failed attempt: its error must not leak the secrets either
    sender = MailSender(db, mailer, secrets_provider=fake_secrets)
    assert await sender.send_due(now=T0) == 0
    smtp_server.start()
    assert await sender.send_due(now=T0 + timedelta(hours=2)) == 2
    msgs = await smtp_server.async_wait_for_count(None, 2)
    assert all(
        "SECRET-" in smtp_server.text_of(m) and "pw-" in smtp_server.text_of(m) for m in msgs
    )
    async with db() as session:
        dump = repr((await session.execute(text("SELECT * FROM wod_outbox"))).all())
    assert "ada0@example.org" in dump and "SECRET-" not in dump and "pw-" not in dump
    ours = "\n".join(
        r.getMessage() for r in caplog.records if r.name != "mail.log"
    )  # not aiosmtpd's
    assert "E-mail 1 sent" in ours and "SECRET-" not in ours and "pw-" not in ours


async def test_smtp_outage_retries_with_backoff_then_delivers_once(db, mailer, smtp_server):
    smtp_server.stop()
    await queue(db)
    sender = MailSender(db, mailer, secrets_provider=fake_secrets)
    assert await sender.send_due(now=T0) == 0
    [row] = await rows(db)
    assert (row.state, row.attempts) == ("pending", 1)
    assert T0 + timedelta(seconds=22.5) <= row.next_attempt_at <= T0 + timedelta(seconds=30)
    assert "Connect" in row.last_error or "onnection" in row.last_error
    smtp_server.start()
    assert await sender.send_due(now=T0 + timedelta(seconds=10)) == 0  # not due yet
    assert (await rows(db))[0].attempts == 1 and smtp_server.messages == []
    assert await sender.send_due(now=T0 + timedelta(seconds=31)) == 1
    assert await sender.send_due(now=T0 + timedelta(hours=5)) == 0
    await asyncio.sleep(0.2)
    assert len(smtp_server.messages) == 1
    [row] = await rows(db)
    assert (row.state, row.attempts, row.last_error) == ("sent", 2, None)


async def test_gives_up_after_max_attempts_and_admin_retry_delivers(db, mailer, smtp_server):
    mailer.max_attempts = 3
    smtp_server.stop()
    [message_id] = await queue(db)
    sender = MailSender(db, mailer, secrets_provider=fake_secrets)
    now = T0
    for _ in range(5):
        assert await sender.send_due(now=now) == 0
        now += timedelta(seconds=mailer.backoff_max + 1)
    [row] = await rows(db)
    assert (row.state, row.attempts) == ("failed", 3)
    async with db() as session:
        assert await outbox_stats(session) == {"pending": 0, "sending": 0, "sent": 0, "failed": 1}
    smtp_server.start()
    assert await sender.send_due(now=now) == 0  # failed stays failed
    async with db() as session, session.begin():
        assert await retry_message(session, message_id, now=now) is True
        assert await retry_message(session, 9999, now=now) is False
    assert await sender.send_due(now=now) == 1
    await smtp_server.async_wait_for_count(None, 1)
    async with db() as session, session.begin():
        assert await outbox_stats(session) == {"pending": 0, "sending": 0, "sent": 1, "failed": 0}
        assert await retry_message(session, message_id) is False  # sent: nothing to retry


async def test_secrets_provider_errors_retry_and_cancel_gives_up(db, mailer, smtp_server, caplog):
    await queue(db, 2)

    async def provider(session, message):
        if message.to_addr == "ada0@example.org":
            raise RuntimeError("token service down: SECRET-LEAK")
        raise CancelMessage("the registration ended before the e-mail was sent")

    assert await MailSender(db, mailer, secrets_provider=provider).send_due(now=T0) == 0
    first, second = await rows(db)
    assert (first.state, first.attempts, first.last_error) == (
        "pending",
        1,
        "secrets provider failed: RuntimeError",
    )
    assert (
        "SECRET-LEAK" not in caplog.text and "secrets provider failed (RuntimeError)" in caplog.text
    )
    assert (second.state, second.last_error) == (
        "failed",
        "cancelled: the registration ended before the e-mail was sent",
    )
    assert (
        await MailSender(db, mailer, secrets_provider=fake_secrets).send_due(
            now=T0 + timedelta(hours=1)
        )
        == 1
    )
    assert len(await smtp_server.async_wait_for_count(None, 1)) == 1


async def test_a_message_that_cannot_render_fails_at_once_and_others_go_out(
    db, mailer, smtp_server
):
    async with db() as session, session.begin():
        await enqueue(
            session,
            to="bad@example.org",
            template="welcome",
            context={**welcome_context(), "expires_at": "next tuesday"},
        )
    await queue(db)
    assert await MailSender(db, mailer, secrets_provider=fake_secrets).send_due(now=T0) == 1
    bad, good = await rows(db)
    assert (bad.state, bad.attempts) == ("failed", 1)
    assert "welcome.subject.txt" not in bad.last_error and "welcome.txt" in bad.last_error
    assert "Invalid isoformat string: 'next tuesday'" in bad.last_error
    assert "SECRET-" not in bad.last_error
    assert good.state == "sent" and [m["To"] for m in smtp_server.messages] == ["ada0@example.org"]


async def test_a_crashed_claim_is_taken_over_and_a_live_one_is_not(db, mailer, smtp_server):
    crashed, live = await queue(db, 2)
    async with db() as session, session.begin():
        for message_id, until in (
            (crashed, T0 - timedelta(seconds=1)),
            (live, T0 + timedelta(minutes=5)),
        ):
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id)
                .values(state="sending", claimed_by="dead-host:123", claimed_until=until)
            )
    assert await MailSender(db, mailer, secrets_provider=fake_secrets).send_due(now=T0) == 1
    [msg] = await smtp_server.async_wait_for_count(None, 1)
    assert msg["To"] == "ada0@example.org"
    by_id = {m.id: m for m in await rows(db)}
    assert by_id[crashed].state == "sent" and by_id[live].state == "sending"


async def test_refused_recipient_fails_without_retry_others_go_out(db, mailer, smtp_server):
    await queue(db, 3)
    # a real 5xx answer from the server for one recipient
    handler = smtp_server._controller.handler

    async def handle_RCPT(server, session, envelope, address, rcpt_options):
        if address == "ada1@example.org":
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    handler.handle_RCPT = handle_RCPT
    assert await MailSender(db, mailer, secrets_provider=fake_secrets).send_due(now=T0) == 2
    states = {m.to_addr: (m.state, m.last_error) for m in await rows(db)}
    assert (
        states["ada1@example.org"][0] == "failed"
        and "No such user" in states["ada1@example.org"][1]
    )
    assert states["ada0@example.org"] == ("sent", None) and states["ada2@example.org"] == (
        "sent",
        None,
    )


async def test_batches_share_a_connection_and_respect_batch_size(db, mailer, smtp_server):
    await queue(db, 12)
    mailer.batch_size = 5
    assert await MailSender(db, mailer, secrets_provider=fake_secrets).send_due() == 12
    await smtp_server.async_wait_for_count(None, 12)
    # 5 + 5 + 2: three connections, each carrying one batch
    per_connection = sorted(smtp_server.peers.count(p) for p in set(smtp_server.peers))
    assert per_connection == [2, 5, 5]


async def test_two_senders_deliver_each_message_exactly_once(any_db, mailer, smtp_server):
    url, sessionmaker = any_db
    await queue(sessionmaker, 50)
    mailer.batch_size = 5
    # a second engine: what another process would have
    engine_b, sessionmaker_b = await make_db(url, create=False)
    try:
        a = MailSender(sessionmaker, mailer, secrets_provider=fake_secrets, instance_id="a")
        b = MailSender(sessionmaker_b, mailer, secrets_provider=fake_secrets, instance_id="b")
        started = time.perf_counter()
        counts = await asyncio.gather(a.send_due(), b.send_due(), a.send_due(), b.send_due())
        elapsed = time.perf_counter() - started
    finally:
        await engine_b.dispose()
    msgs = await smtp_server.async_wait_for_count(None, 50)
    await asyncio.sleep(0.2)
    recipients = sorted(m["To"] for m in smtp_server.messages)
    assert recipients == sorted(f"ada{i}@example.org" for i in range(50))  # each once
    assert sum(counts) == 50 and counts[0] + counts[2] > 0 and counts[1] + counts[3] > 0, counts
    assert {m.state for m in await rows(sessionmaker)} == {"sent"}
    logging.getLogger(__name__).info("two senders, 50 messages: %s in %.2fs", counts, elapsed)
    assert len(msgs) == 50


async def test_background_loop_wakes_at_once_and_survives_errors(
    tmp_path, mailer, smtp_server, caplog
):
    url = f"sqlite:///{tmp_path / 'late.sqlite'}"
    engine, sessionmaker = await make_db(url, create=False)  # no tables yet: every pass fails
    mailer.poll_interval = 0.05
    sender = MailSender(sessionmaker, mailer, secrets_provider=fake_secrets)
    sender.start()
    try:
        await asyncio.sleep(0.3)
        assert "the outbox pass failed" in caplog.text and not sender._task.done()
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        mailer.poll_interval = 60  # from now on only wake() can make it send quickly
        await asyncio.sleep(0.2)
        await queue(sessionmaker)
        started = time.perf_counter()
        sender.wake()
        await smtp_server.async_wait_for(timeout=5)
        latency = time.perf_counter() - started
        assert latency < 2, latency
    finally:
        started = time.perf_counter()
        await sender.stop()
        stop_time = time.perf_counter() - started
        await engine.dispose()
    assert stop_time < 2 and sender._task is None
    logging.getLogger(__name__).info("wake-to-delivered %.3fs, stop %.3fs", latency, stop_time)


# ---- transport security and authentication --------------------------------------------


async def test_starttls_with_auth_verified_against_the_ca(db, smtp_server_factory):
    server = smtp_server_factory(starttls=True, users={"wod": "relay-password"})
    mailer = Mailer(
        smtp_host="127.0.0.1",
        smtp_port=server.port,
        smtp_security="starttls",
        smtp_ca_file=str(server.cert_file),
        smtp_username="wod",
        smtp_password="relay-password",
        from_address="workshops@example.org",
        timeout=5,
    )
    await queue(db)
    assert await MailSender(db, mailer, secrets_provider=fake_secrets).send_due(now=T0) == 1
    await server.async_wait_for()
    assert server.logins == ["wod"]


async def test_implicit_tls(db, smtp_server_factory):
    server = smtp_server_factory(implicit_tls=True)
    mailer = Mailer(
        smtp_host="127.0.0.1",
        smtp_port=server.port,
        smtp_security="tls",
        smtp_ca_file=str(server.cert_file),
        from_address="workshops@example.org",
        timeout=5,
    )
    await mailer.send(
        mailer.build_message(
            "ada@example.org",
            render_email("final", {k: SAMPLE[k] for k in TEMPLATE_CONTEXT["final"].required}),
        )
    )
    assert (await server.async_wait_for())["Subject"] == 'Thank you for taking "Python 101"'


@pytest.mark.parametrize(
    "config, error",
    [
        pytest.param(
            {"smtp_security": "starttls"}, "CERTIFICATE_VERIFY_FAILED", id="untrusted-cert"
        ),
        pytest.param(
            {
                "smtp_security": "starttls",
                "smtp_validate_certs": False,
                "smtp_username": "wod",
                "smtp_password": "wrong",
            },
            "535",
            id="wrong-password",
        ),
        pytest.param(
            {"smtp_security": "starttls", "smtp_validate_certs": False}, "530", id="no-auth"
        ),
        pytest.param({"smtp_security": "none"}, "530", id="no-starttls"),
        pytest.param(
            {"smtp_username": "wod"},
            "Mailer.smtp_username is set but there is no password",
            id="no-password",
        ),
    ],
)
async def test_configuration_errors_keep_the_message_for_later(
    db, smtp_server_factory, monkeypatch, config, error
):
    monkeypatch.delenv("WOD_HUB_SMTP_PASSWORD", raising=False)
    server = smtp_server_factory(starttls=True, users={"wod": "relay-password"})
    mailer = Mailer(
        smtp_host="127.0.0.1",
        smtp_port=server.port,
        from_address="workshops@example.org",
        timeout=5,
        **config,
    )
    await queue(db)
    sender = MailSender(db, mailer, secrets_provider=fake_secrets)
    assert await sender.send_due(now=T0) == 0
    [row] = await rows(db)
    assert (row.state, row.attempts) == ("pending", 1) and error in row.last_error, row.last_error
    # the operator fixes the configuration: the message goes out at its next attempt
    mailer.smtp_security, mailer.smtp_validate_certs = "starttls", False
    mailer.smtp_username, mailer.smtp_password = "wod", "relay-password"
    assert await sender.send_due(now=T0 + timedelta(minutes=5)) == 1
    assert len(await server.async_wait_for_count(None, 1)) == 1
