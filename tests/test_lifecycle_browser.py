"""The session panel on the hub home page in real Chromium: live countdown, the one-time
extension, "end my session now", and the countdown reaching zero."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from tests.test_lifecycle_hub import (
    LINK,
    lifecycle_config,
    make_workshop,
    registration,
    set_expiry,
    signup,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def in_thread(fn, *args):
    # Playwright's sync API runs an event loop in this thread: blocking helpers go elsewhere
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def seconds(text: str) -> int:
    h, m, s = (int(x) for x in re.fullmatch(r"(\d+):(\d\d):(\d\d)", text.strip()).groups())
    return 3600 * h + 60 * m + s


def sign_in(page, hub, smtp, email):
    """Register over HTTP, then open the login link from the e-mail in the browser."""
    _, username, rid = in_thread(signup, hub, smtp, email)
    # signup used the welcome link; ask for a fresh one in the browser
    page.goto(hub.hub_url + "wod/recover")
    page.fill("#wod-recover-email", email)
    page.click("button[type=submit]")
    msg = in_thread(
        lambda: smtp.wait_for(
            lambda m: email in m["To"] and "new link" in str(m["Subject"]), timeout=20
        )
    )
    page.goto(LINK.search(smtp.text_of(msg)).group(1))
    page.click("#wod-start-button")
    page.goto(hub.hub_url + "home")
    page.wait_for_selector("#wod-session:not([hidden])")
    return username, rid


def test_countdown_extend_unregister_and_zero(page, hub_factory, smtp_server, tmp_path):
    workshops = tmp_path / "workshops"
    make_workshop(workshops, "WKSHP-Life", 1, 20, "extension: 30m\n")
    hub = hub_factory(
        smtp_port=smtp_server.port,
        workshop_dirs=[workshops],
        extra_config=lifecycle_config(tmp_path / "hub0"),
    )

    username, rid = sign_in(page, hub, smtp_server, "ada@example.org")
    assert page.locator("#wod-workshop-name").inner_text() == "WKSHP-Life workshop"
    first = seconds(page.locator("#wod-countdown").inner_text())
    assert 2 * 3600 - 120 < first <= 2 * 3600
    page.wait_for_timeout(1500)
    assert seconds(page.locator("#wod-countdown").inner_text()) < first  # it ticks

    extend = page.locator("#wod-extend")
    assert extend.is_visible() and "30 minutes" in extend.inner_text()
    extend.click()
    page.wait_for_selector("#wod-message.alert-success")
    assert seconds(page.locator("#wod-countdown").inner_text()) > first + 25 * 60
    assert not extend.is_visible()  # once
    assert in_thread(registration, hub, rid).extended_by_participant

    # the time is up: the page goes to "your workshop has ended" by itself
    in_thread(set_expiry, hub, rid, timedelta(seconds=3))
    page.reload()
    page.wait_for_url("**/hub/wod/ended", timeout=20_000)
    assert "Your workshop has ended" in page.locator("#wod-ended").inner_text()

    # another participant ends early from the same panel
    page.context.clear_cookies()
    _, rid2 = sign_in(page, hub, smtp_server, "grace@example.org")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#wod-unregister")
    page.wait_for_url("**/hub/wod/ended")
    assert in_thread(registration, hub, rid2).state == "unregistered"
    page.goto(hub.hub_url + "home")  # signed out, and told why
    assert "/hub/login" in page.url and "has ended" in page.locator("#wod-notice").inner_text()
