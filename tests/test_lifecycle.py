"""lifecycle.py: the pure core (what is due, which step, completion, badges) and the
claim-guarded step functions on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from types import SimpleNamespace

import nbformat
import pytest
import pytest_asyncio
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from sqlalchemy import func, select

from wod_hub import lifecycle, seats, tokens
from wod_hub.db import Database
from wod_hub.lifecycle import BadgeLevel, NotAllowed, NotClaimed, TooLate
from wod_hub.orm import (
    Badge,
    Event,
    OutboxMessage,
    Participant,
    Registration,
    Seat,
    State,
    WorkshopRow,
)

NOW = datetime(2026, 11, 22, 12, 0, 0)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
KEY = b"k" * 32


def reg(**kw) -> Registration:
    values = dict(
        state="active",
        expires_at=NOW + 2 * HOUR,
        ended_at=None,
        reminded_at=None,
        next_attempt_at=None,
    )
    values.update(kw)
    r = Registration(**values)
    for column in lifecycle.STEP_COLUMNS.values():
        setattr(r, column, kw.get(column))
    return r


# ---- pure core ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, needs_reset, expected",
    [
        ({}, False, "stop"),
        ({"stopped_at": NOW}, False, "cleanup"),
        ({"stopped_at": NOW, "cleaned_at": NOW}, False, "purge"),
        ({"stopped_at": NOW, "cleaned_at": NOW}, True, "reset"),
        ({"stopped_at": NOW, "cleaned_at": NOW, "reset_at": NOW}, True, "purge"),
        ({"stopped_at": NOW, "cleaned_at": NOW, "purged_at": NOW}, False, "final_mail"),
        (
            {"stopped_at": NOW, "cleaned_at": NOW, "purged_at": NOW, "final_mail_at": NOW},
            False,
            "end",
        ),
        ({"ended_at": NOW}, False, None),
    ],
    ids=[
        "fresh",
        "stopped",
        "cleaned",
        "cleaned-needs-reset",
        "reset",
        "purged",
        "mailed",
        "ended",
    ],
)
def test_next_step(kw, needs_reset, expected):
    assert lifecycle.next_step(reg(state="expired", **kw), needs_reset=needs_reset) == expected


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({"expires_at": NOW + 2 * HOUR}, None),
        ({"expires_at": NOW + timedelta(minutes=30)}, "reminder"),
        ({"expires_at": NOW + timedelta(minutes=30), "reminded_at": NOW}, None),
        # extended after the reminder: one more before the new end, not right away
        ({"expires_at": NOW + timedelta(minutes=50), "reminded_at": NOW - 50 * MINUTE}, None),
        ({"expires_at": NOW + timedelta(minutes=50), "reminded_at": NOW - 70 * MINUTE}, "reminder"),
        ({"expires_at": NOW}, "end"),
        ({"expires_at": NOW - HOUR, "next_attempt_at": NOW + HOUR}, None),
        ({"state": "expired", "expires_at": NOW - HOUR}, "end"),
        ({"state": "expired", "next_attempt_at": NOW + HOUR}, None),
        ({"state": "unregistered", "expires_at": NOW + HOUR}, "end"),
        ({"state": "ended", "expires_at": NOW - HOUR, "ended_at": NOW}, None),
        ({"state": "failed", "expires_at": NOW - HOUR}, None),
        ({"state": "registered", "expires_at": NOW - HOUR}, "end"),
    ],
    ids=[
        "running",
        "reminder-due",
        "reminded",
        "extended-just-reminded",
        "extended-new-reminder",
        "expired-now",
        "backing-off",
        "ending",
        "ending-backing-off",
        "unregistered",
        "ended",
        "failed",
        "never-started",
    ],
)
def test_due_action(kw, expected):
    assert lifecycle.due_action(reg(**kw), NOW, HOUR) == expected


def test_backoff_doubles_and_caps():
    assert [lifecycle.backoff(n, 30, 200).total_seconds() for n in (1, 2, 3, 4, 5)] == [
        30,
        60,
        120,
        200,
        200,
    ]


def write_nb(path, cells):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nbformat.writes(new_notebook(cells=cells)))


def code(source, executed):
    cell = new_code_cell(source)
    cell.execution_count = 1 if executed else None
    return cell


def test_completion_from_home(tmp_path):
    home = tmp_path / "student3"
    write_nb(
        home / "WKSHP-X" / "0-ReadMeFirst.ipynb", [new_markdown_cell("hi"), code("print(1)", True)]
    )
    write_nb(
        home / "WKSHP-X" / "1-Work.ipynb",
        [code("a = 1", True), code("b = 2", False), code("   ", False), code("c = 3", False)],
    )
    write_nb(
        home / "WKSHP-X" / ".ipynb_checkpoints" / "1-Work-checkpoint.ipynb",
        [code(f"x{i}", True) for i in range(9)],
    )
    write_nb(home / "scratch.ipynb", [code(f"y{i}", False) for i in range(10)])
    # the workshop's notebooks only (the student's scratch notebook does not count)
    assert lifecycle.completion_from_home(home, ["0-ReadMeFirst.ipynb", "1-Work.ipynb"]) == 50.0
    # no list: every notebook in the home
    assert lifecycle.completion_from_home(home) == pytest.approx(100 * 2 / 14, abs=0.1)
    assert lifecycle.completion_from_home(tmp_path / "nobody") is None
    (home / "WKSHP-X" / "broken.ipynb").write_text("{not json")
    assert lifecycle.completion_from_home(home, ["1-Work.ipynb"]) == pytest.approx(33.3, abs=0.1)


def test_badge_levels():
    levels = lifecycle.badge_levels()
    assert [(lv.threshold, lv.name) for lv in levels] == [
        (3, "Apprentice"),
        (5, "Expert"),
        (7, "Hero"),
        (10, "Super Hero"),
        (15, "Legend"),
    ]
    assert levels[3].slug == "super-hero"
    assert [lv.name for lv in lifecycle.badges_reached(7, levels)] == [
        "Apprentice",
        "Expert",
        "Hero",
    ]
    assert lifecycle.badges_reached(2, levels) == []
    assert lifecycle.badge_levels({"2": "Two"}) == [BadgeLevel(2, "Two")]


def test_settings_validation():
    with pytest.raises(ValueError, match="LifecycleSettings.badge_min_completion"):
        lifecycle.LifecycleSettings(badge_min_completion=120)
    with pytest.raises(ValueError, match="LifecycleSettings.special_badges"):
        lifecycle.LifecycleSettings(special_badges={0: "Zero"})


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/user/student3/lab", "student3"),
        ("/hub/user/student12/lab/tree/x.ipynb", "student12"),
        ("/hub/spawn/student7", "student7"),
        ("/hub/spawn-pending/student7?x=1", "student7"),
        ("/hub/home", None),
        ("/user/admin/lab", None),
        ("/user/student3x/lab", None),
    ],
)
def test_username_in_path(path, expected):
    assert lifecycle.username_in_path(path) == expected


def test_mail_contexts_hold_no_secret_and_fit_the_templates():
    from wod_hub.mail import SECRET_KEY_PATTERN, missing_keys

    participant = Participant(first_name="Ada", last_name="Lovelace", email="ada@example.org")
    registration = reg(
        workshop_id="WKSHP-X", completion=66.6, expires_at=NOW + timedelta(minutes=45)
    )
    workshop = SimpleNamespace(
        name="X 101",
        extension=timedelta(minutes=30),
        badge_image="https://b/x.png",
        replay_link="https://r",
        workshop_image=None,
    )
    reminder = lifecycle.reminder_context(
        participant, registration, workshop, now=NOW, hub_url="h", home_url="h/home"
    )
    assert reminder["minutes_left"] == 45 and reminder["extend_minutes"] == 30
    final = lifecycle.final_context(
        participant, registration, workshop, register_url="r", survey_url="s"
    )
    assert final["completion"] == 67 and final["replay_url"] == "https://r"
    badge = lifecycle.special_badge_context(
        participant, BadgeLevel(3, "Apprentice"), badge_url="u", image_url="i", completed=3
    )
    for template, context in [
        ("reminder", reminder),
        ("final", final),
        ("ended_early", final),
        ("special_badge", badge),
    ]:
        assert missing_keys(template, context, include_send_time=False) == []
        assert not [k for k in context if SECRET_KEY_PATTERN.search(k)]
    registration.extended_by_participant = True
    again = lifecycle.reminder_context(
        participant, registration, workshop, now=NOW, hub_url="h", home_url="h/home"
    )
    assert again["extend_url"] is None


# ---- steps on a real database ----------------------------------------------------------------


def password_hash_for(workshop_id, number, generation):
    return tokens.hash_generated_secret(
        tokens.derive_secret(KEY, "seat", workshop_id, number, generation)
    )


@pytest_asyncio.fixture(loop_scope="function")
async def db(any_db_url):
    database = Database(any_db_url)
    await database.migrate()
    async with database.begin_write() as s:
        await seats.sync_workshops(
            s,
            [
                seats.WorkshopSpec(f"WKSHP-{c}", 5, base, base + 9)
                for c, base in (("A", 1), ("B", 11), ("C", 21), ("D", 31))
            ],
        )
    yield database
    await database.dispose()


async def new_registration(
    db,
    workshop="WKSHP-A",
    email="ada@example.org",
    expires_at=NOW,
    state="active",
    reminded_at=None,
) -> int:
    async with db.begin_write() as s:
        participant = (
            await s.execute(select(Participant).where(Participant.email == email))
        ).scalar_one_or_none()
        if participant is None:
            participant = Participant(
                email=email, first_name="Ada", last_name="Lovelace", company="ACME"
            )
            s.add(participant)
            await s.flush()
        r = Registration(
            participant_id=participant.id,
            workshop_id=workshop,
            state=state,
            created_at=NOW - HOUR,
            expires_at=expires_at,
            reminded_at=reminded_at,
        )
        s.add(r)
        await s.flush()
        seat = await seats.allocate_seat(s, workshop, r.id)
        seat.password_hash = password_hash_for(workshop, seat.student_number, seat.generation)
        r.student_number, r.username = seat.student_number, seat.username
        return r.id


async def test_claim_is_exclusive_until_it_lapses(db):
    rid = await new_registration(db)
    async with db.begin_write() as s:
        assert await lifecycle.claim(s, rid, "w1", timedelta(seconds=60), NOW)
    async with db.begin_write() as s:
        assert not await lifecycle.claim(
            s, rid, "w2", timedelta(seconds=60), NOW + timedelta(seconds=59)
        )
        assert await lifecycle.claim(
            s, rid, "w1", timedelta(seconds=60), NOW + timedelta(seconds=59)
        )  # renew
    async with db.begin_write() as s:
        assert await lifecycle.claim(
            s, rid, "w2", timedelta(seconds=60), NOW + timedelta(seconds=200)
        )
    async with db.begin_write() as s:
        with pytest.raises(NotClaimed):
            await lifecycle.mark_step(s, rid, "w1", "stop", NOW + timedelta(seconds=201))


async def test_concurrent_claims_one_winner(db):
    rid = await new_registration(db)

    async def try_claim(worker):
        async with db.begin_write() as s:
            return await lifecycle.claim(s, rid, worker, timedelta(seconds=60), NOW)

    results = await asyncio.gather(*(try_claim(f"w{i}") for i in range(8)))
    assert sum(results) == 1


async def test_begin_locks_out_once(db):
    rid = await new_registration(db)
    async with db.begin_write() as s:
        token = await tokens.issue_login_token(s, KEY, rid, timedelta(hours=1))
        before = (await s.execute(select(Seat).where(Seat.registration_id == rid))).scalar_one()
        generation, old_hash = before.generation, before.password_hash
        assert await lifecycle.claim(s, rid, "w1", timedelta(seconds=60), NOW)
    for _ in range(2):  # the second call changes nothing
        async with db.begin_write() as s:
            await lifecycle.begin_end(s, rid, "w1", NOW, password_hash_for)
    async with db.session() as s:
        seat = (await s.execute(select(Seat).where(Seat.registration_id == rid))).scalar_one()
        registration = await s.get(Registration, rid)
    assert registration.state == "expired" and registration.ended_reason == "expired"
    assert seat.generation == generation + 1 and seat.password_hash not in (None, old_hash)
    old_password = tokens.derive_secret(KEY, "seat", "WKSHP-A", seat.student_number, generation)
    assert not tokens.verify_generated_secret(old_password, seat.password_hash)
    async with db.begin_write() as s:
        with pytest.raises(tokens.RevokedToken):
            await tokens.redeem_login_token(s, KEY, token)


async def test_begin_refuses_a_session_not_due(db):
    rid = await new_registration(db, expires_at=NOW + HOUR)
    async with db.begin_write() as s:
        await lifecycle.claim(s, rid, "w1", timedelta(seconds=60), NOW)
        assert not await lifecycle.begin_end(s, rid, "w1", NOW, password_hash_for)


async def run_path(db, rid, worker="w1", now=NOW, needs_reset=False):
    """The hub side of one end path (the handler adds hooks, files, the hub user)."""
    levels = lifecycle.badge_levels({2: "Two", 3: "Apprentice"})
    async with db.begin_write() as s:
        assert await lifecycle.claim(s, rid, worker, timedelta(seconds=60), now)
        await lifecycle.begin_end(s, rid, worker, now, password_hash_for)
    steps = []
    while True:
        async with db.session() as s:
            step = lifecycle.next_step(await s.get(Registration, rid), needs_reset=needs_reset)
        if step is None:
            return steps
        steps.append(step)
        async with db.begin_write() as s:
            if step == "purge":
                await seats.release_seat(s, rid)
            if step == "final_mail":
                await lifecycle.queue_end_mail(
                    s,
                    rid,
                    worker,
                    now,
                    workshop=None,
                    register_url="http://hub/login",
                    survey_url=None,
                    levels=levels,
                    min_completion=50,
                    badge_url_for=lambda b: (f"http://hub/badge/{b.public_id}", "img"),
                )
            elif step == "end":
                await lifecycle.finish(s, rid, worker, now)
            else:
                values = {"completion": 80.0} if step == "cleanup" else {}
                await lifecycle.mark_step(s, rid, worker, step, now, **values)


async def test_end_path_steps_and_badges(db):
    ids = [await new_registration(db, workshop=w) for w in ("WKSHP-A", "WKSHP-B", "WKSHP-C")]
    assert await run_path(db, ids[0]) == ["stop", "cleanup", "purge", "final_mail", "end"]
    assert await run_path(db, ids[1], needs_reset=True) == [
        "stop",
        "cleanup",
        "reset",
        "purge",
        "final_mail",
        "end",
    ]
    assert await run_path(db, ids[2]) == ["stop", "cleanup", "purge", "final_mail", "end"]
    async with db.session() as s:
        rows = (
            (await s.execute(select(Registration).where(Registration.id.in_(ids)))).scalars().all()
        )
        assert {r.state for r in rows} == {"ended"} and all(r.claimed_by is None for r in rows)
        assert (await s.execute(select(func.sum(WorkshopRow.seats_in_use)))).scalar_one() == 0
        mails = (await s.execute(select(OutboxMessage.template, OutboxMessage.dedupe_key))).all()
        badges = (await s.execute(select(Badge.badge))).scalars().all()
    finals = sorted(k for t, k in mails if t == "final")
    assert finals == sorted(f"reg:{i}:final" for i in ids)
    assert sorted(badges) == ["Apprentice", "Two"]  # 2 and 3 completed workshops, once each
    assert sorted(k for t, k in mails if t == "special_badge") == [
        "badge:1:apprentice",
        "badge:1:two",
    ]


async def test_end_mail_is_queued_once_even_if_replayed(db):
    rid = await new_registration(db)
    async with db.begin_write() as s:
        assert await lifecycle.claim(s, rid, "w1", timedelta(seconds=60), NOW)
        await lifecycle.begin_end(s, rid, "w1", NOW, password_hash_for)
        for step in ("stop", "cleanup", "purge"):
            await lifecycle.mark_step(s, rid, "w1", step, NOW)

    async def final():
        async with db.begin_write() as s:
            await lifecycle.claim(s, rid, "w1", timedelta(seconds=60), NOW)
            return await lifecycle.queue_end_mail(
                s, rid, "w1", NOW, workshop=None, register_url="r", survey_url=None,
                levels=lifecycle.badge_levels({1: "One"}), min_completion=0,
                badge_url_for=lambda b: ("u", "i"),
            )  # fmt: skip

    assert [b.badge for b in await final()] == ["One"]
    assert await final() == []  # a replay (e.g. after a crash before the answer) queues nothing
    async with db.session() as s:
        assert (
            await s.execute(select(func.count(OutboxMessage.id)))
        ).scalar_one() == 2  # final + badge
    async with db.begin_write() as s:
        await lifecycle.finish(s, rid, "w1", NOW)
    async with db.begin_write() as s:  # an ended registration cannot be claimed any more
        assert not await lifecycle.claim(s, rid, "w2", timedelta(seconds=60), NOW + HOUR)


async def test_record_failure_backs_off_and_releases(db):
    rid = await new_registration(db)
    async with db.begin_write() as s:
        await lifecycle.claim(s, rid, "w1", timedelta(seconds=60), NOW)
        await lifecycle.begin_end(s, rid, "w1", NOW, password_hash_for)
        await lifecycle.record_failure(
            s, rid, "w1", "cleanup", "hook exploded", NOW, timedelta(seconds=120)
        )
    async with db.session() as s:
        r = await s.get(Registration, rid)
        assert (r.step_attempts, r.error, r.claimed_by) == (1, "cleanup: hook exploded", None)
        assert r.next_attempt_at == NOW + timedelta(seconds=120)
        assert lifecycle.due_action(r, NOW + timedelta(seconds=60), HOUR) is None
        assert lifecycle.due_action(r, NOW + timedelta(seconds=121), HOUR) == "end"
        kinds = (
            (await s.execute(select(Event.kind).where(Event.registration_id == rid)))
            .scalars()
            .all()
        )
    assert "step_failed" in kinds
    # a success clears the error
    async with db.begin_write() as s:
        await lifecycle.claim(s, rid, "w2", timedelta(seconds=60), NOW + timedelta(seconds=121))
        assert await lifecycle.mark_step(s, rid, "w2", "stop", NOW + timedelta(seconds=121))
    async with db.session() as s:
        r = await s.get(Registration, rid)
        assert (r.step_attempts, r.error) == (0, None)


async def test_participant_extends_once(db):
    rid = await new_registration(db, expires_at=NOW + HOUR)
    async with db.begin_write() as s:
        r = await lifecycle.extend(
            s, rid, timedelta(minutes=30), NOW, by_participant=True, actor="participant"
        )
        assert r.expires_at == NOW + HOUR + timedelta(minutes=30) and r.extended_by_participant
    async with db.begin_write() as s:
        with pytest.raises(NotAllowed):
            await lifecycle.extend(
                s, rid, timedelta(minutes=30), NOW, by_participant=True, actor="participant"
            )
    async with db.begin_write() as s:  # admins are not limited
        r = await lifecycle.extend(
            s, rid, timedelta(minutes=60), NOW, by_participant=False, actor="admin:x"
        )
        assert r.expires_at == NOW + 2 * HOUR + timedelta(minutes=30)
    async with db.begin_write() as s:
        with pytest.raises(TooLate):
            await lifecycle.extend(
                s, rid, timedelta(minutes=5), NOW + 3 * HOUR, by_participant=False, actor="admin:x"
            )


async def test_unregister_locks_out_and_is_due(db):
    rid = await new_registration(db, expires_at=NOW + HOUR)
    async with db.begin_write() as s:
        assert await lifecycle.unregister(s, rid, NOW, password_hash_for)
        assert not await lifecycle.unregister(s, rid, NOW, password_hash_for)
    async with db.session() as s:
        r = await s.get(Registration, rid)
    assert (r.state, r.ended_reason, r.expires_at) == ("unregistered", "unregistered", NOW)
    assert lifecycle.due_action(r, NOW, HOUR) == "end"
    await run_path(db, rid)
    async with db.session() as s:
        template = (await s.execute(select(OutboxMessage.template))).scalar_one()
        assert template == "ended_early"
        assert (await s.get(Registration, rid)).state == State.ended.value


async def test_due_clause_matches_due_action(db):
    cases = {
        "running": dict(expires_at=NOW + 3 * HOUR),
        "reminder": dict(expires_at=NOW + timedelta(minutes=30)),
        "reminded": dict(expires_at=NOW + timedelta(minutes=30), reminded_at=NOW - 10 * MINUTE),
        "re-reminder": dict(expires_at=NOW + timedelta(minutes=30), reminded_at=NOW - 2 * HOUR),
        "expired": dict(expires_at=NOW - timedelta(minutes=1)),
    }
    ids = {}
    for i, (name, kw) in enumerate(cases.items()):
        ids[name] = await new_registration(db, workshop="WKSHP-D", email=f"p{i}@example.org", **kw)
    async with db.session() as s:
        due = (
            (await s.execute(select(Registration).where(lifecycle.due_clause(NOW, HOUR))))
            .scalars()
            .all()
        )
        every = (await s.execute(select(Registration))).scalars().all()
    assert {r.id for r in due} == {ids["reminder"], ids["re-reminder"], ids["expired"]}
    assert {r.id for r in every if lifecycle.due_action(r, NOW, HOUR)} == {r.id for r in due}
    assert json.dumps([r.id for r in due])  # plain ints


async def test_reminder_once_then_once_more_after_an_extension(db):
    rid = await new_registration(db, workshop="WKSHP-D", expires_at=NOW + 50 * MINUTE)
    async with db.begin_write() as s:
        assert await lifecycle.mark_reminded(s, rid, NOW, HOUR)
        assert not await lifecycle.mark_reminded(s, rid, NOW + MINUTE, HOUR)  # once
        await lifecycle.extend(s, rid, HOUR, NOW + 10 * MINUTE, by_participant=True, actor="p")
    async with db.begin_write() as s:  # ends at NOW + 110 min now
        r = await s.get(Registration, rid)
        assert lifecycle.due_action(r, NOW + 20 * MINUTE, HOUR) is None  # not right after
        assert not await lifecycle.mark_reminded(s, rid, NOW + 20 * MINUTE, HOUR)
        assert lifecycle.due_action(r, NOW + 60 * MINUTE, HOUR) == "reminder"
        assert await lifecycle.mark_reminded(s, rid, NOW + 60 * MINUTE, HOUR)
        assert not await lifecycle.mark_reminded(s, rid, NOW + 61 * MINUTE, HOUR)
