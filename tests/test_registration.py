"""The registration form and use case, without a hub (the HTTP flow is in test_register_http)."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from wod_hub import seats
from wod_hub.db import Database
from wod_hub.orm import Event, Participant, Registration, Seat
from wod_hub.registration import AlreadyRegistered, FormError, RegistrationForm, register

GOOD = {
    "email": "Ada@Example.org",
    "first_name": "  Ada ",
    "last_name": "Lovelace",
    "company": "Analytical   Engines",
    "workshop": "WKSHP-A",
    "terms": "on",
}


def parse(**over):
    return RegistrationForm.parse(
        {**GOOD, **over}, workshop_ids=["WKSHP-A", "WKSHP-B"], denied_domains=["evil.test"]
    )


def test_parse_normalizes():
    form = parse()
    assert form.email == "ada@example.org"
    assert form.first_name == "Ada"
    assert form.company == "Analytical Engines"


@pytest.mark.parametrize(
    "over, field",
    [
        ({"email": "nope"}, "email"),
        ({"email": "x@sub.evil.test"}, "email"),
        ({"email": "x@yopmail.com"}, "email"),
        ({"email": "a" * 250 + "@example.org"}, "email"),
        ({"first_name": ""}, "first_name"),
        ({"last_name": "\x07bell"}, "last_name"),
        ({"company": "c" * 201}, "company"),
        ({"workshop": "WKSHP-Z"}, "workshop"),
        ({"terms": ""}, "terms"),
    ],
    ids=[
        "syntax",
        "denied-subdomain",
        "disposable",
        "too-long",
        "empty-name",
        "control",
        "long-company",
        "unknown-workshop",
        "terms",
    ],
)
def test_parse_errors_name_the_field(over, field):
    with pytest.raises(FormError) as e:
        parse(**over)
    assert set(e.value.errors) == {field}
    assert e.value.errors[field].endswith(".") or "not valid" in e.value.errors[field]


def test_parse_reports_every_problem_at_once():
    with pytest.raises(FormError) as e:
        parse(email="", first_name="", terms="")
    assert set(e.value.errors) == {"email", "first_name", "terms"}


def test_template_text_is_kept_as_a_value():
    form = parse(first_name="{{ 7*7 }}")
    assert form.first_name == "{{ 7*7 }}"


class W:
    def __init__(self, wid, capacity, lo, hi):
        self.id, self.capacity, self.student_range = wid, capacity, (lo, hi)
        self.active = True


@pytest.fixture
async def db(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'wod.sqlite'}")
    await db.migrate()
    async with db.begin_write() as s:
        await seats.sync_workshops(s, [W("WKSHP-A", 1, 1, 5), W("WKSHP-B", 5, 6, 10)])
    yield db
    await db.dispose()


async def count(db, model):
    async with db.session() as s:
        return (await s.execute(select(func.count()).select_from(model))).scalar_one()


async def test_register_takes_lowest_seat_and_records_event(db):
    async with db.begin_write() as s:
        result = await register(
            s, parse(), duration=timedelta(hours=2), password_hash_for=lambda *a: "sha256$x"
        )
    assert (result.student_number, result.username) == (1, "student1")
    async with db.session() as s:
        reg = await s.get(Registration, result.registration_id)
        assert reg.expires_at - reg.created_at == timedelta(hours=2)
        seat = (await s.execute(select(Seat).where(Seat.registration_id == reg.id))).scalar_one()
        assert seat.password_hash == "sha256$x"
    assert await count(db, Event) == 1


async def test_full_workshop_rolls_everything_back(db):
    async with db.begin_write() as s:
        await register(s, parse(), duration=timedelta(hours=2))
    with pytest.raises(seats.WorkshopFull):
        async with db.begin_write() as s:
            await register(s, parse(email="bob@example.org"), duration=timedelta(hours=2))
    assert await count(db, Participant) == 1
    assert await count(db, Registration) == 1


async def test_one_live_registration_per_workshop_or_overall(db):
    async with db.begin_write() as s:
        await register(s, parse(), duration=timedelta(hours=2))
    with pytest.raises(AlreadyRegistered):
        async with db.begin_write() as s:
            await register(s, parse(), duration=timedelta(hours=2))
    async with db.begin_write() as s:  # another workshop is fine by default
        await register(s, parse(workshop="WKSHP-B"), duration=timedelta(hours=2))
    with pytest.raises(AlreadyRegistered):
        async with db.begin_write() as s:
            await register(
                s,
                parse(email="ada@example.org", workshop="WKSHP-B"),
                duration=timedelta(hours=2),
                one_per_email_overall=True,
            )


async def test_on_registered_failure_leaves_nothing(db):
    def boom(session, result):
        raise RuntimeError("mail queue down")

    with pytest.raises(RuntimeError):
        async with db.begin_write() as s:
            await register(s, parse(), duration=timedelta(hours=2), on_registered=boom)
    assert await count(db, Registration) == 0
    async with db.session() as s:
        assert (
            await s.execute(
                select(func.count()).select_from(Seat).where(Seat.registration_id.is_not(None))
            )
        ).scalar_one() == 0


async def test_live_registrations_leave_out_ended_and_ending_ones(db):
    """What the background hub-user creator asks before creating a student's hub user."""
    from types import SimpleNamespace

    from wod_hub.orm import State
    from wod_hub.state import WodState

    ids = []
    for email in ("a@example.org", "b@example.org", "c@example.org"):
        async with db.begin_write() as s:
            ids.append(
                (
                    await register(
                        s, parse(email=email, workshop="WKSHP-B"), duration=timedelta(hours=2)
                    )
                ).registration_id
            )
    async with db.begin_write() as s:
        (await s.get(Registration, ids[1])).state = State.ended.value
        (await s.get(Registration, ids[2])).ended_reason = "hub_user_deleted"
    live = await WodState.live_registrations(SimpleNamespace(db=db), ids + [9999])
    assert live == {ids[0]}
