"""Operator commands: they talk to the hub's REST API with a token, so they work remotely.

    wod-hub action CREATE|CLEANUP|RESET|PURGE WKSHP STUDENT[-MAX|,MAX]
    wod-hub export WKSHP --to html|pdf|docx [--output DIR] [--student N]
    wod-hub registrations list [--workshop W] [--status S] [--email E] [--json]
    wod-hub registrations export --csv [--output FILE] [filters]
    wod-hub seats
    wod-hub stats

Hub address: ``--hub-url`` or ``JUPYTERHUB_API_URL``; token: ``--token`` or
``JUPYTERHUB_API_TOKEN`` (a hub admin's token, or a service's with ``custom:wod:admin``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
from pathlib import Path

from ..exports import FORMATS, ExportError, convert_notebooks
from ..hubclient import ENV_TOKEN, ENV_URL, HubAPIError, HubClient

ACTIONS = ("CREATE", "CLEANUP", "RESET", "PURGE", "EXTEND", "RESEND", "END")
MAX_STUDENTS = 500


def parse_students(text: str) -> list[int]:
    """``121``, ``121-125`` or ``121,125`` (the original's MIN,MAX) -> [121, ..., 125]."""
    raw = text.strip()
    for sep in ("-", ","):
        if sep in raw:
            lo_text, _, hi_text = raw.partition(sep)
            break
    else:
        lo_text, hi_text = raw, raw
    if not lo_text.strip().isdigit() or not hi_text.strip().isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r}: write a student number (121), or a range 121-125 / 121,125"
        )
    lo, hi = int(lo_text), int(hi_text)
    if hi < lo:
        raise argparse.ArgumentTypeError(f"{text!r}: the range ends before it starts")
    if hi - lo + 1 > MAX_STUDENTS:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_STUDENTS} students at once")
    return list(range(lo, hi + 1))


def _client(args) -> HubClient:
    return HubClient.from_env(args.hub_url, args.token)


def _table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def _guarded(args, coro_fn) -> int:
    try:
        async with _client(args) as hub:
            return await coro_fn(hub)
    except HubAPIError as e:
        print(f"wod-hub: {e}", file=sys.stderr)
        return 2 if e.status in (0, 401, 403) else 1
    except ExportError as e:
        print(f"wod-hub: {e}", file=sys.stderr)
        return 1


# ---- action ----------------------------------------------------------------------------
async def action_cmd(args) -> int:
    async def go(hub: HubClient) -> int:
        body = {"action": args.action.lower(), "workshop": args.workshop, "students": args.students}
        if args.minutes is not None:
            body["minutes"] = args.minutes
        result = await hub.post("/wod/admin/actions", body)
        rows = [
            [
                r.get("student", ""),
                r.get("id") or "",
                "ok" if r["ok"] else "FAILED",
                r.get("message", ""),
            ]
            for r in result["results"]
        ]
        print(_table(rows, ["student", "registration", "result", "details"]))
        print(result["title"])
        return 1 if result["failed"] else 0

    return await _guarded(args, go)


# ---- export ----------------------------------------------------------------------------
async def export_cmd(args) -> int:
    async def go(hub: HubClient) -> int:
        params = {"student": args.student} if args.student is not None else {}
        sample = await hub.get(f"/wod/admin/workshops/{args.workshop}/sample", **params)
        out = Path(args.output or f"{args.workshop}-{args.to}")
        with tempfile.TemporaryDirectory(prefix="wod-export-") as tmp:
            root = Path(tmp)
            for rel, data in sample["files"].items():
                target = (root / rel).resolve()
                if root.resolve() not in target.parents:
                    raise ExportError(
                        f"The hub sent a file outside the workshop: {rel!r}; refusing it."
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(target.write_bytes, base64.b64decode(data))
            order = sample.get("notebooks") or sorted(
                p for p in sample["files"] if p.endswith(".ipynb")
            )
            notebooks = [root / rel for rel in order if (root / rel).exists()]
            if not notebooks:
                raise ExportError(f"{args.workshop} has no notebook to export.")
            made = await convert_notebooks(notebooks, args.to, out, chromium=args.chromium)
        for path in made:
            print(path)
        print(
            f"{len(made)} file(s) in {out}/ (rendered for student{sample['student']}, placeholder password)"
        )
        return 0

    return await _guarded(args, go)


# ---- registrations -----------------------------------------------------------------------
FILTERS = ("workshop", "status", "email", "q", "since", "until")


def _filters(args) -> dict:
    return {name: getattr(args, name) for name in FILTERS if getattr(args, name, None)}


async def registrations_list_cmd(args) -> int:
    async def go(hub: HubClient) -> int:
        data = await hub.get("/wod/admin/registrations", per_page=args.limit, **_filters(args))
        if args.json:
            print(json.dumps(data, indent=2))
            return 0
        rows = [
            [
                r["id"],
                r["username"] or "-",
                r["email"],
                r["workshop_id"],
                r["state"],
                r["created_at"][:16].replace("T", " "),
                "" if r["seconds_left"] is None else f"{max(r['seconds_left'], 0) // 60}m",
                r["error"] or "",
            ]
            for r in data["registrations"]
        ]
        print(
            _table(
                rows,
                [
                    "id",
                    "student",
                    "email",
                    "workshop",
                    "state",
                    "registered (UTC)",
                    "left",
                    "error",
                ],
            )
        )
        shown = len(rows)
        print(
            f"{shown} of {data['total']} registration(s)"
            + (" (raise --limit for more)" if shown < data["total"] else "")
        )
        return 0

    return await _guarded(args, go)


async def registrations_export_cmd(args) -> int:
    async def go(hub: HubClient) -> int:
        text = await hub.request(
            "GET", "/wod/admin/registrations", params={"format": "csv", **_filters(args)}, raw=True
        )
        if args.output and args.output != "-":
            await asyncio.to_thread(Path(args.output).write_text, text, "utf-8")
            print(
                f"{max(text.count(chr(10)) - 1, 0)} registration(s) written to {args.output}",
                file=sys.stderr,
            )
        else:
            sys.stdout.write(text)
        return 0

    return await _guarded(args, go)


# ---- seats / stats -------------------------------------------------------------------------
async def seats_cmd(args) -> int:
    async def go(hub: HubClient) -> int:
        data = await hub.get("/wod/admin/seats")
        rows = [
            [
                wid,
                f"{s['range'][0]}-{s['range'][1]}",
                s["capacity"],
                s["effective_capacity"],
                s["in_use"],
                s["free"],
                s["free_seats"],
                s["disabled"],
                "open" if s["open"] else "closed",
            ]
            for wid, s in data.items()
        ]
        print(
            _table(
                rows,
                [
                    "workshop",
                    "range",
                    "capacity",
                    "effective",
                    "in use",
                    "free",
                    "free seats",
                    "disabled",
                    "registration",
                ],
            )
        )
        return 0

    return await _guarded(args, go)


async def stats_cmd(args) -> int:
    async def go(hub: HubClient) -> int:
        data = await hub.get("/wod/admin/stats")
        if args.json:
            print(json.dumps(data, indent=2))
            return 0
        t = data["totals"]
        print(
            f"registrations: {t['registrations_total']} total, {t['registrations_today']} today, {t['live']} live; "
            f"participants: {t['participants']}; e-mails: {t['outbox']['pending']} pending, "
            f"{t['outbox']['failed']} failed, {t['outbox']['sent']} sent"
        )
        rows = [
            [
                w["id"],
                w["capacity"],
                w["in_use"],
                w["free"],
                w["registrations_today"],
                w["registrations_total"],
                "" if w["completion_rate"] is None else f"{w['completion_rate']:.0f}%",
                "open" if w["registration_open"] else "closed",
            ]
            for w in data["workshops"]
        ]
        print(
            _table(
                rows,
                [
                    "workshop",
                    "capacity",
                    "in use",
                    "free",
                    "today",
                    "total",
                    "completion",
                    "registration",
                ],
            )
        )
        return 0

    return await _guarded(args, go)


# ---- parser ----------------------------------------------------------------------------------
def _hub_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hub-url", default=None, help=f"the hub's address (default: env {ENV_URL})")
    p.add_argument(
        "--token", default=None, help=f"API token of a hub admin (default: env {ENV_TOKEN})"
    )


def _filter_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workshop", help="workshop id, e.g. WKSHP-API101")
    p.add_argument(
        "--status",
        help="registered, provisioning, active, expired, ended, failed, unregistered or live",
    )
    p.add_argument("--email", help="part of the participant's e-mail address")
    p.add_argument("--q", help="search name, e-mail, company or student name")
    p.add_argument("--since", help="registered on or after YYYY-MM-DD")
    p.add_argument("--until", help="registered on or before YYYY-MM-DD")


def _action_name(text: str) -> str:
    name = text.upper()
    if name not in ACTIONS:
        raise argparse.ArgumentTypeError(f"{text!r}: use one of {', '.join(ACTIONS)}")
    return name


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "action",
        help="run CREATE / CLEANUP / RESET / PURGE (or EXTEND, RESEND, END) for students of a workshop",
        description="CREATE without a participant makes an admin test registration, so the workshop "
        "can be checked end to end; the other actions act on the student's live registration.",
    )
    p.add_argument("action", type=_action_name, metavar="ACTION", help=", ".join(ACTIONS))
    p.add_argument("workshop", metavar="WKSHP")
    p.add_argument(
        "students", type=parse_students, metavar="STUDENT[-MAX]", help="121, 121-125 or 121,125"
    )
    p.add_argument(
        "--minutes",
        type=int,
        default=None,
        help="EXTEND by this many minutes (default: the workshop's extension)",
    )
    _hub_options(p)
    p.set_defaults(func=action_cmd)

    p = subparsers.add_parser(
        "export", help="export a workshop's notebooks (rendered for a sample student)"
    )
    p.add_argument("workshop", metavar="WKSHP")
    p.add_argument("--to", choices=FORMATS, required=True)
    p.add_argument(
        "--output", "-o", default=None, help="directory for the files (default: WKSHP-FORMAT)"
    )
    p.add_argument(
        "--student",
        type=int,
        default=None,
        help="render for this student number (default: the first of the range)",
    )
    p.add_argument(
        "--chromium",
        default=None,
        help="Chromium executable for PDF (default: env WOD_CHROMIUM or /usr/bin/chromium)",
    )
    _hub_options(p)
    p.set_defaults(func=export_cmd)

    regs = subparsers.add_parser("registrations", help="list or export registrations")
    sub = regs.add_subparsers(dest="registrations_command", required=True)
    p = sub.add_parser("list", help="list registrations, newest first")
    _filter_options(p)
    p.add_argument("--limit", type=int, default=50, help="at most this many rows (max 500)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    _hub_options(p)
    p.set_defaults(func=registrations_list_cmd)
    p = sub.add_parser("export", help="every matching registration as CSV")
    p.add_argument("--csv", action="store_true", required=True, help="CSV (the only format)")
    p.add_argument("--output", "-o", default=None, help="file to write (default: standard output)")
    _filter_options(p)
    _hub_options(p)
    p.set_defaults(func=registrations_export_cmd)

    p = subparsers.add_parser("seats", help="the seat pool per workshop")
    _hub_options(p)
    p.set_defaults(func=seats_cmd)

    p = subparsers.add_parser("stats", help="registrations, seats and e-mails at a glance")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    _hub_options(p)
    p.set_defaults(func=stats_cmd)
