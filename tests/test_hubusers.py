"""The background creator of hub users: quiet moments, bounded delay, never for ended
registrations, never twice, a failure does not stop the others."""

from __future__ import annotations

import asyncio

from wod_hub.hubusers import HubUserCreator


class FakeHub:
    """What HubUserCreator uses of a JupyterHub handler."""

    def __init__(self, existing=(), fail=()):
        self.users = set(existing)
        self.fail = set(fail)
        self.created: list[dict] = []
        self.refreshed: list[str] = []

    async def auth_to_user(self, model):  # JupyterHub's: creates, or refreshes an existing user
        if model["name"] in self.fail:
            raise RuntimeError("hub database busy")
        if model["name"] in self.users:
            self.refreshed.append(model["name"])
            return
        self.users.add(model["name"])
        self.created.append(model)


def model(i):
    return {"name": f"student{i}", "admin": False, "groups": ["WKSHP-A"]}


def creator(live=None, **kw):
    async def live_ids(ids):
        return set(ids) if live is None else set(ids) & set(live)

    return HubUserCreator(live_ids, **kw)


async def wait_for(cond, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if cond():
            return True
        await asyncio.sleep(0.01)
    return cond()


async def test_waits_for_a_quiet_moment_then_creates_in_order():
    hub, c = FakeHub(), creator(quiet=0.2, max_delay=5)
    for i in range(5):
        c.add(hub, model(i), i)
        await asyncio.sleep(0.05)  # a rush: never 0.2 s quiet
    assert hub.created == []
    assert await wait_for(lambda: len(hub.created) == 5)
    assert [m["name"] for m in hub.created] == [f"student{i}" for i in range(5)]
    assert hub.created[0]["groups"] == ["WKSHP-A"] and c.created == 5 and len(c) == 0
    await c.stop()


async def test_a_long_rush_waits_at_most_max_delay():
    hub, c = FakeHub(), creator(quiet=0.2, max_delay=0.3)
    for i in range(30):  # 0.9 s of registrations, never quiet
        c.add(hub, model(i), i)
        await asyncio.sleep(0.03)
    assert len(hub.created) >= 10  # batches went out during the rush
    assert await wait_for(lambda: len(hub.created) == 30)
    await c.stop()


async def test_ended_existing_and_failing_ones_are_skipped():
    hub = FakeHub(existing={"student1"}, fail={"student2"})
    c = creator(live={0, 1, 2, 4}, quiet=0.01, max_delay=1)
    for i in range(5):
        c.add(hub, model(i), i)
    # 1 logged in meanwhile (only refreshed), 2 fails (logged), 3 ended: 0 and 4 are created
    assert await wait_for(lambda: len(c) == 0 and len(hub.created) == 2)
    await asyncio.sleep(0.05)
    assert [m["name"] for m in hub.created] == ["student0", "student4"]
    assert hub.refreshed == ["student1"] and "student3" not in hub.users
    await c.stop()


async def test_a_name_added_twice_is_created_once():
    hub, c = FakeHub(), creator(quiet=0.01, max_delay=1)
    c.add(hub, model(7), 1)
    c.add(hub, model(7), 1)
    assert await wait_for(lambda: len(hub.created) == 1)
    await asyncio.sleep(0.05)
    assert len(hub.created) == 1
    await c.stop()
