"""The workshop admin page in Debian's Chromium: sign in as admin on the login page,
open the admin page, filter registrations, extend one, CLEANUP another, see the results."""

from __future__ import annotations

import os
import re

import pytest

from tests.smtp import SMTPServer
from tests.test_admin_http import registration_of, sign_up, start_hub

pytestmark = pytest.mark.browser


@pytest.fixture
def smtp():
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


def test_admin_page_in_chromium(page, smtp, tmp_path):
    hub = start_hub(tmp_path, smtp.port)
    try:
        ada = sign_up(hub, "ada", "WKSHP-Gamma")
        bob = sign_up(hub, "bob", "WKSHP-Gamma")
        sign_up(hub, "cyd", "WKSHP-Beta")
        ada_reg, bob_reg = (
            registration_of(hub, ada["username"]),
            registration_of(hub, bob["username"]),
        )

        page.goto(hub.url + "/hub/login")
        page.fill("#username_input", "admin")
        page.fill("#password_input", hub.admin_password)
        page.click("#login_submit")
        page.wait_for_url(lambda url: "/hub/login" not in url)

        page.goto(hub.url + "/hub/wod/admin")
        assert page.locator("#wod-workshops tbody tr").count() == 3
        gamma = page.locator("#wod-workshop-WKSHP-Gamma")
        assert gamma.locator(".wod-in-use").inner_text() == "2"
        assert page.locator("#wod-chart-per-day").is_visible()
        assert page.locator("#wod-hub-admin-link").get_attribute("href") == "/hub/admin"
        page.screenshot(path=str(tmp_path / "admin-overview.png"), full_page=True)
        if os.environ.get("WOD_SHOTS"):
            page.screenshot(path=os.environ["WOD_SHOTS"] + "/admin-overview.png", full_page=True)

        # filter: the workshop and part of an e-mail
        page.click("#wod-tab-registrations")
        page.wait_for_selector("#wod-registrations")
        assert page.locator("#wod-registrations tbody tr[data-id]").count() == 3
        page.select_option("#wod-filter-workshop", "WKSHP-Gamma")
        page.fill("#wod-filter-email", "ada@")
        page.click("#wod-filter-apply")
        page.wait_for_url(re.compile(r".*email=ada.*"))
        rows = page.locator("#wod-registrations tbody tr[data-id]")
        assert rows.count() == 1 and rows.first.get_attribute("data-username") == ada["username"]

        # extend Ada by 30 minutes: a confirmation step, then the result on her row
        page.click(f"#wod-reg-{ada_reg.id} .wod-row-extend")
        page.wait_for_selector("#wod-confirm")
        assert ada["username"] in page.locator("#wod-confirm-rows").inner_text()
        page.fill("#wod-extend-minutes", "30")
        page.click("#wod-confirm-button")
        page.wait_for_selector("#wod-flash")
        assert "Extend: 1 of 1 done" in page.locator("#wod-flash").inner_text()
        assert "+30 min" in page.locator(f"#wod-reg-{ada_reg.id} .wod-result").inner_text()
        assert "email=ada" in page.url  # back to the same filtered list

        # CLEANUP Bob: tick his box, choose the action, confirm
        page.goto(hub.url + "/hub/wod/admin/registrations?workshop=WKSHP-Gamma")
        page.wait_for_selector("#wod-registrations")
        page.check(f"#wod-reg-{bob_reg.id} .wod-select")
        page.select_option("#wod-bulk-action", "cleanup")
        page.click("#wod-bulk-submit")
        page.wait_for_selector("#wod-confirm")
        assert "CLEANUP: 1 registration?" in page.locator("#wod-confirm h2").inner_text()
        page.click("#wod-confirm-button")
        page.wait_for_selector("#wod-flash")
        assert "CLEANUP: 1 of 1 done" in page.locator("#wod-flash").inner_text()
        bob_row = page.locator(f"#wod-reg-{bob_reg.id}")
        assert bob_row.get_attribute("data-state") == "expired"
        assert "CLEANUP" in bob_row.locator(".wod-result").inner_text()
        page.screenshot(path=str(tmp_path / "admin-after-cleanup.png"), full_page=True)
        if os.environ.get("WOD_SHOTS"):
            page.screenshot(
                path=os.environ["WOD_SHOTS"] + "/admin-after-cleanup.png", full_page=True
            )

        after = registration_of(hub, bob["username"])
        assert after.cleaned_at is not None and after.state == "expired"
        assert registration_of(hub, ada["username"]).expires_at > ada_reg.expires_at
    finally:
        hub.stop()
