"""Exports: the registrations CSV, and notebooks to HTML (nbconvert), PDF (Debian's
Chromium through Playwright) and Word (pandoc)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import datetime

import pytest

from wod_hub import exports
from wod_hub.reports import RegistrationRow

T = datetime(2025, 3, 10, 12, 0, 0)


def row(i: int, **kw) -> RegistrationRow:
    values = dict(
        id=i,
        workshop_id="WKSHP-Alpha",
        username=f"student{i}",
        email=f"p{i}@example.org",
        first_name="Ada",
        last_name="Lovelace",
        company="ACME, Inc.",
        state="ended",
        created_at=T,
        expires_at=T,
        seconds_left=None,
        completion=66.66,
        error=None,
        ended_reason="expired",
        ready_at=T,
        stopped_at=None,
        cleaned_at=None,
        reset_at=None,
        purged_at=None,
        ended_at=T,
        step_attempts=0,
    )
    values.update(kw)
    return RegistrationRow(**values)


def test_csv_header_and_rows():
    text = exports.registrations_csv(
        [row(1), row(2, first_name='=HYPERLINK("http://x")', error="line1\nline2")]
    )
    records = list(csv.reader(io.StringIO(text)))
    assert records[0] == list(exports.CSV_COLUMNS)
    assert len(records) == 3
    first = dict(zip(records[0], records[1], strict=True))
    assert first["email"] == "p1@example.org" and first["company"] == "ACME, Inc."
    assert first["created_at"] == "2025-03-10T12:00:00Z" and first["completion"] == "66.7"
    second = dict(zip(records[0], records[2], strict=True))
    assert second["first_name"].startswith("'=")  # a spreadsheet shows it, never runs it
    assert second["error"] == "line1\nline2"
    # nothing secret or personal beyond what organizers need
    for banned in ("password", "hash", "token", "ip", "secret"):
        assert not any(banned in column for column in records[0])


async def test_csv_chunks_stream_every_row():
    async def rows():
        for i in range(450):
            yield row(i)

    chunks = [c async for c in exports.registrations_csv_chunks(rows(), chunk_rows=200)]
    assert len(chunks) == 4  # header + 200 + 200 + 50
    assert len(list(csv.reader(io.StringIO("".join(chunks))))) == 451


def notebook(path):
    path.write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "cell_type": "markdown",
                        "id": "c1",
                        "metadata": {},
                        "source": "# Welcome student42\n\nSome *text*.",
                    },
                    {
                        "cell_type": "code",
                        "id": "c2",
                        "execution_count": 1,
                        "metadata": {},
                        "source": "print('hello')",
                        "outputs": [{"output_type": "stream", "name": "stdout", "text": "hello\n"}],
                    },
                ],
                "metadata": {
                    "kernelspec": {
                        "name": "python3",
                        "display_name": "Python 3",
                        "language": "python",
                    }
                },
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    return path


async def test_html(tmp_path):
    nb = notebook(tmp_path / "0-ReadMeFirst.ipynb")
    [out] = await exports.convert_notebooks([nb], "html", tmp_path / "out")
    assert out.name == "0-ReadMeFirst.html"
    html = out.read_text()
    assert "Welcome student42" in html and "hello" in html


@pytest.mark.browser
async def test_pdf_with_debian_chromium(tmp_path):
    nb = notebook(tmp_path / "1-Intro.ipynb")
    [out] = await exports.convert_notebooks([nb], "pdf", tmp_path / "out")
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 1000
    assert not list((tmp_path / "out").glob(".*.print.html"))  # the temporary page is gone


async def test_pdf_without_chromium_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("WOD_CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(exports.ExportError, match="apt-get install chromium"):
        await exports.convert_notebooks([notebook(tmp_path / "a.ipynb")], "pdf", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # failed before doing any work


@pytest.mark.skipif(
    not shutil.which("pandoc"), reason="pandoc is not installed (scripts/setup.sh installs it)"
)
async def test_docx_with_pandoc(tmp_path):
    [out] = await exports.convert_notebooks(
        [notebook(tmp_path / "2-End.ipynb")], "docx", tmp_path / "out"
    )
    data = out.read_bytes()
    assert data[:2] == b"PK"  # a docx is a zip
    import zipfile

    with zipfile.ZipFile(out) as z:
        assert "Welcome student42" in z.read("word/document.xml").decode()


async def test_docx_without_pandoc_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no pandoc on this PATH
    with pytest.raises(exports.ExportError, match="apt-get install pandoc"):
        await exports.convert_notebooks([notebook(tmp_path / "a.ipynb")], "docx", tmp_path / "out")


async def test_unknown_format(tmp_path):
    with pytest.raises(exports.ExportError, match="html, pdf, docx"):
        await exports.convert_notebooks([], "rtf", tmp_path)
