"""Exports: registrations as CSV, a workshop's notebooks as HTML / PDF / Word.

CSV holds what an organizer needs (who, which workshop, when, how far) and no
secret: no password, hash, token or client address. Cells a spreadsheet would
run as a formula are defused.

Notebook exports run nbconvert on a *rendered sample* of the workshop (what a
student sees, with a placeholder password). PDF prints nbconvert's ``webpdf``
HTML with Debian's Chromium through Playwright (never a downloaded browser);
Word goes through pandoc. Both say what to install when the tool is missing.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
from collections.abc import AsyncIterable, Iterable
from datetime import datetime
from pathlib import Path

from .reports import RegistrationRow

CSV_COLUMNS = (
    "id",
    "workshop_id",
    "username",
    "email",
    "first_name",
    "last_name",
    "company",
    "state",
    "created_at",
    "expires_at",
    "ready_at",
    "ended_at",
    "ended_reason",
    "completion",
    "error",
)

FORMATS = ("html", "pdf", "docx")
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# placeholder shown where a student's password would be (exports are shared with people)
SAMPLE_PASSWORD = "<your-password>"


class ExportError(RuntimeError):
    """An export that cannot run here; the message says what to install or change."""


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.replace(microsecond=0).isoformat() + "Z"
    if isinstance(value, float):
        return f"{value:.1f}"
    text = str(value)
    # a leading = + - @ (or tab/CR) makes spreadsheets evaluate the cell
    if text and text[0] in "=+-@\t\r":
        text = "'" + text
    return text


def csv_line(values: Iterable) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(list(values))
    return buf.getvalue()


def csv_header() -> str:
    return csv_line(CSV_COLUMNS)


def csv_row(row: RegistrationRow) -> str:
    return csv_line(_cell(getattr(row, column)) for column in CSV_COLUMNS)


async def registrations_csv_chunks(rows: AsyncIterable[RegistrationRow], chunk_rows: int = 200):
    """The CSV document as chunks of text: the header first, then batches of rows."""
    yield csv_header()
    batch: list[str] = []
    async for row in rows:
        batch.append(csv_row(row))
        if len(batch) >= chunk_rows:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def registrations_csv(rows: Iterable[RegistrationRow]) -> str:
    return csv_header() + "".join(csv_row(r) for r in rows)


# ---- notebooks -----------------------------------------------------------------


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium executable to print PDFs with: ``explicit``, env ``WOD_CHROMIUM``,
    else Debian's ``/usr/bin/chromium``. Raises :class:`ExportError` if missing."""
    candidate = explicit or os.environ.get("WOD_CHROMIUM") or DEFAULT_CHROMIUM
    path = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
    if not path:
        raise ExportError(
            f"PDF export needs Chromium, and {candidate} is not there: install it "
            "(`apt-get install chromium`) or point --chromium / WOD_CHROMIUM at a Chromium executable."
        )
    return path


def find_pandoc() -> str:
    path = shutil.which("pandoc")
    if not path:
        raise ExportError(
            "Word export needs pandoc, which is not installed here: `apt-get install pandoc` "
            "(scripts/setup.sh does it), then run the export again."
        )
    return path


def _html_of(notebook: Path, template: str = "lab") -> str:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    exporter = HTMLExporter(template_name=template, embed_images=True)
    html, _ = exporter.from_notebook_node(
        nb, resources={"metadata": {"path": str(notebook.parent)}}
    )
    return html


async def to_html(notebook: Path, dest: Path) -> Path:
    html = await asyncio.to_thread(_html_of, notebook)
    out = dest / (notebook.stem + ".html")
    await asyncio.to_thread(out.write_text, html, "utf-8")
    return out


async def to_pdf(notebook: Path, dest: Path, *, chromium: str | None = None) -> Path:
    executable = find_chromium(chromium)
    try:
        from playwright.async_api import async_playwright
    except ModuleNotFoundError:
        raise ExportError(
            "PDF export needs the playwright package: pip install 'wod-hub[export]' playwright"
        ) from None
    html = await asyncio.to_thread(_html_of, notebook, "webpdf")
    page_file = dest / f".{notebook.stem}.print.html"
    await asyncio.to_thread(page_file.write_text, html, "utf-8")
    out = dest / (notebook.stem + ".pdf")
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=executable,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            try:
                page = await browser.new_page()
                # the page is local; nothing may leave the machine (CDN scripts just fail)
                await page.route(
                    "**/*",
                    lambda route: (
                        route.continue_()
                        if route.request.url.startswith("file:")
                        else route.abort()
                    ),
                )
                await page.emulate_media(media="print")
                await page.goto(page_file.as_uri(), wait_until="load")
                await page.pdf(path=str(out), print_background=True)
            finally:
                await browser.close()
    except ExportError:
        raise
    except Exception as e:  # playwright raises its own Error types for launch problems
        raise ExportError(f"Chromium ({executable}) could not print {notebook.name}: {e}") from e
    finally:
        page_file.unlink(missing_ok=True)
    return out


async def to_docx(notebook: Path, dest: Path) -> Path:
    pandoc = find_pandoc()
    out = dest / (notebook.stem + ".docx")
    proc = await asyncio.create_subprocess_exec(
        pandoc,
        "--from",
        "ipynb",
        "--to",
        "docx",
        "--resource-path",
        str(notebook.parent),
        "--output",
        str(out),
        str(notebook),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise ExportError(
            f"pandoc could not convert {notebook.name}: {err.decode(errors='replace').strip()}"
        )
    return out


async def convert_notebooks(
    notebooks: Iterable[Path], to: str, dest: Path, *, chromium: str | None = None
) -> list[Path]:
    """Convert each notebook to ``to`` (html, pdf, docx) into ``dest``; returns the files made."""
    if to not in FORMATS:
        raise ExportError(f"Unknown export format {to!r}: use one of {', '.join(FORMATS)}")
    if to == "pdf":
        find_chromium(chromium)  # fail before any work
    if to == "docx":
        find_pandoc()
    dest.mkdir(parents=True, exist_ok=True)
    made = []
    for nb in notebooks:
        if to == "html":
            made.append(await to_html(nb, dest))
        elif to == "pdf":
            made.append(await to_pdf(nb, dest, chromium=chromium))
        else:
            made.append(await to_docx(nb, dest))
    return made
