"""The participant's journey in a real browser: login page → register → link
from the captured e-mail → start → their workshop server."""

import re

import pytest

from tests.test_register_http import LINK, make_workshops

pytestmark = pytest.mark.browser


def test_register_in_chromium(page, hub_factory, smtp_server, tmp_path):
    workshops = make_workshops(
        tmp_path / "workshops", ("WKSHP-Alpha", 5, 1, 10), ("WKSHP-Beta", 5, 11, 20)
    )
    hub = hub_factory(smtp_port=smtp_server.port, workshop_dirs=[workshops])

    page.goto(hub.url + "/hub/login")
    assert page.locator(".wod-item").count() == 2
    # the category/popular filter and the "Register" button pick the workshop in the form
    page.locator('.wod-pick[data-id="WKSHP-Beta"]').click()
    assert page.locator("#wod-workshop").input_value() == "WKSHP-Beta"
    page.fill("#wod-email", "grace@example.org")
    page.fill("#wod-first_name", "Grace")
    page.fill("#wod-last_name", "Hopper")
    page.fill("#wod-company", "Navy")
    # forgetting the terms gives a clear message and keeps what was typed
    page.click("#wod-register-submit")
    assert "Accept the terms" in page.locator("#wod-terms-error").inner_text()
    assert page.locator("#wod-email").input_value() == "grace@example.org"
    page.check("#wod-terms")
    page.click("#wod-register-submit")
    page.wait_for_selector("#wod-registered")
    assert page.locator("#wod-email-used").inner_text() == "grace@example.org"
    username = page.locator("#wod-username").inner_text()
    assert username == "student11"
    page.screenshot(path=str(tmp_path / "registered.png"))

    # Playwright's sync API runs an event loop in this thread: poll through it
    for _ in range(200):
        found = smtp_server.matching(lambda m: "grace@example.org" in m["To"])
        if found:
            break
        page.wait_for_timeout(100)
    assert found, "the welcome e-mail did not arrive"
    msg = found[0]
    link = LINK.search(smtp_server.text_of(msg)).group(1)
    page.goto(link)
    page.click("#wod-start-button")
    # JupyterHub spawns the server and lands the participant in it
    page.wait_for_url(re.compile(rf".*/user/{username}/.*"), timeout=60_000)
    assert f"/user/{username}/" in page.url
