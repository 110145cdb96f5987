"""``wod-hub`` operator commands against a real hub, in a subprocess, with a token:
exactly how an operator runs them from another machine."""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys

import pytest

from tests.smtp import SMTPServer
from tests.test_admin_http import registration_of, sign_up, start_hub
from wod_hub.cli.ops import parse_students
from wod_hub.hubclient import HubAPIError, api_url


def wod_hub(hub, *args, token=None, url=None, timeout=180) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "JUPYTERHUB_API_URL": url or hub.url,  # the public address is enough
        "JUPYTERHUB_API_TOKEN": token if token is not None else hub.api_token,
    }
    return subprocess.run(
        [sys.executable, "-m", "wod_hub.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def smtp():
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, smtp):
    hub = start_hub(tmp_path_factory.mktemp("cli"), smtp.port)
    yield hub
    hub.stop()


# ---- arguments and addresses (no hub) ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("121", [121], id="one"),
        pytest.param("121-123", [121, 122, 123], id="dash-range"),
        pytest.param("121,123", [121, 122, 123], id="original-min-max"),
        pytest.param(" 7 ", [7], id="spaces"),
    ],
)
def test_parse_students(text, expected):
    assert parse_students(text) == expected


@pytest.mark.parametrize("text", ["x", "5-2", "1-100000", "1,", "-3"])
def test_parse_students_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_students(text)


@pytest.mark.parametrize(
    "given, expected",
    [
        ("https://hub.example.org", "https://hub.example.org/hub/api"),
        ("https://hub.example.org/", "https://hub.example.org/hub/api"),
        ("https://example.org/jh/hub/", "https://example.org/jh/hub/api"),
        ("http://127.0.0.1:8081/hub/api", "http://127.0.0.1:8081/hub/api"),
        ("http://127.0.0.1:8081/hub/api/", "http://127.0.0.1:8081/hub/api"),
    ],
)
def test_api_url(given, expected):
    assert api_url(given) == expected


def test_api_url_refuses_nonsense():
    with pytest.raises(HubAPIError, match="not a hub address"):
        api_url("hub.example.org")


# ---- against the hub ------------------------------------------------------------------------------


def test_stats_and_seats(hub):
    sign_up(hub, "cli-stats", "WKSHP-Beta")
    r = wod_hub(hub, "stats")
    assert r.returncode == 0, r.stderr
    assert "registrations: 1 total, 1 today, 1 live" in r.stdout
    line = next(li for li in r.stdout.splitlines() if li.startswith("WKSHP-Beta"))
    assert line.split()[1:4] == ["20", "1", "19"]  # capacity, in use, free
    r = wod_hub(hub, "seats")
    assert r.returncode == 0, r.stderr
    line = next(li for li in r.stdout.splitlines() if li.startswith("WKSHP-Alpha"))
    assert line.split()[:3] == ["WKSHP-Alpha", "1-10", "5"]


def test_registrations_list_and_csv(hub, tmp_path):
    a = sign_up(hub, "cli-list-a", "WKSHP-Gamma")
    sign_up(hub, "cli-list-b", "WKSHP-Gamma")
    r = wod_hub(hub, "registrations", "list", "--workshop", "WKSHP-Gamma", "--email", "cli-list-a")
    assert r.returncode == 0, r.stderr
    assert a["username"] in r.stdout and "cli-list-b" not in r.stdout
    assert "1 of 1 registration(s)" in r.stdout

    out = tmp_path / "regs.csv"
    r = wod_hub(
        hub, "registrations", "export", "--csv", "--workshop", "WKSHP-Gamma", "-o", str(out)
    )
    assert r.returncode == 0, r.stderr
    records = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {x["email"] for x in records} == {"cli-list-a@example.org", "cli-list-b@example.org"}
    assert a["password"] not in out.read_text()
    assert "2 registration(s) written" in r.stderr


def test_action_create_cleanup_purge(hub):
    r = wod_hub(hub, "action", "CREATE", "WKSHP-Alpha", "7,8")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CREATE: 2 of 2 done" in r.stdout and "test registration" in r.stdout
    assert hub.api("GET", "/users/student8").json()["server"]
    r = wod_hub(hub, "action", "CLEANUP", "WKSHP-Alpha", "7-8")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CLEANUP: 2 of 2 done" in r.stdout
    assert registration_of(hub, "student7").cleaned_at is not None
    r = wod_hub(hub, "action", "purge", "WKSHP-Alpha", "7")
    assert r.returncode == 0, r.stdout + r.stderr
    assert registration_of(hub, "student7").purged_at is not None
    # a student outside the range: exit 1 and a message naming the range
    r = wod_hub(hub, "action", "CLEANUP", "WKSHP-Alpha", "42")
    assert r.returncode == 1 and "not in WKSHP-Alpha's range 1-10" in r.stdout


def test_export_html(hub, tmp_path):
    out = tmp_path / "html"
    r = wod_hub(hub, "export", "WKSHP-Alpha", "--to", "html", "-o", str(out))
    assert r.returncode == 0, r.stderr
    html = (out / "0-ReadMeFirst.html").read_text()
    assert "Hello student1" in html  # rendered for the range's first student


@pytest.mark.browser
def test_export_pdf(hub, tmp_path):
    out = tmp_path / "pdf"
    r = wod_hub(hub, "export", "WKSHP-Alpha", "--to", "pdf", "-o", str(out), "--student", "3")
    assert r.returncode == 0, r.stderr
    assert (out / "0-ReadMeFirst.pdf").read_bytes().startswith(b"%PDF-")


def test_export_docx_without_pandoc(hub, tmp_path):
    env_path = f"{tmp_path}"  # a PATH without pandoc (the interpreter is called by full path)
    env = {
        **os.environ,
        "PATH": env_path,
        "JUPYTERHUB_API_URL": hub.url,
        "JUPYTERHUB_API_TOKEN": hub.api_token,
    }
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "wod_hub.cli",
            "export",
            "WKSHP-Alpha",
            "--to",
            "docx",
            "-o",
            str(tmp_path / "d"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "apt-get install pandoc" in r.stderr


@pytest.mark.parametrize(
    "token, url, code, message",
    [
        pytest.param(
            "not-a-token",
            None,
            2,
            "does not accept this token for GET /wod/admin/stats (HTTP 401)",
            id="bad-token",
        ),
        pytest.param("", None, 2, "No API token", id="no-token"),
        pytest.param(
            None,
            "http://127.0.0.1:9/",
            2,
            "Cannot reach the hub at http://127.0.0.1:9/hub/api",
            id="unreachable",
        ),
    ],
)
def test_errors_a_person_can_act_on(hub, token, url, code, message):
    r = wod_hub(hub, "stats", token=token, url=url)
    assert r.returncode == code
    assert message in r.stderr and "Traceback" not in r.stderr


def test_participant_token_is_refused(hub):
    s = sign_up(hub, "cli-participant", "WKSHP-Beta")
    token = hub.api("POST", f"/users/{s['username']}/tokens", json={"note": "cli"}).json()["token"]
    r = wod_hub(hub, "seats", token=token)
    assert r.returncode == 2 and "HTTP 403" in r.stderr and "custom:wod:admin" in r.stderr
