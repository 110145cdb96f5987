"""Author commands: check workshops, preview a student's copy, scaffold a new workshop.

wod-hub check [DIR...]                         validate + render everything; exit 1 on errors
wod-hub render WKSHP --student N --out DIR     exactly what student N would receive
wod-hub new WKSHP-Name [--dir workshops]       a new workshop that passes check
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from ..catalog import Catalog, Problem, load_catalog
from ..wodyml import ERROR

# personalize (nbformat, jsonschema) is imported by the commands that render, so the other
# `wod-hub` commands start fast.

DEFAULT_DIR = "workshops"
SCAFFOLD = Path(__file__).resolve().parent.parent / "scaffold"
NEW_NAME_RE = re.compile(r"^(WKSHP|CHLG)-[A-Za-z0-9][A-Za-z0-9_-]{0,60}$")
NEW_RANGE_SIZE = 100


def _print_problems(problems: list[Problem]) -> None:
    for p in sorted(problems, key=lambda p: (p.severity != ERROR, str(p.path), p.field)):
        print(f"{p.severity}: {p}")


def _render_check(catalog: Catalog) -> list[Problem]:
    """Render every workshop for its first student: finds what only running the templates shows
    (sandbox refusals, filters failing on values), skipping files already reported."""
    from ..personalize import RenderError, render_workshop, sample_context

    reported = {str(p.path) for p in catalog.errors}
    found = []
    for workshop in catalog.workshops.values():
        if workshop.range_size == 0:
            continue
        with tempfile.TemporaryDirectory(prefix="wod-check-") as tmp:
            try:
                render_workshop(workshop, sample_context(workshop), tmp, catalog.variables)
            except RenderError as e:
                path = workshop.path / e.file
                if str(path) not in reported and str(path.resolve()) not in reported:
                    where = ", ".join(
                        x
                        for x in (
                            f"cell {e.cell}" if e.cell else "",
                            f"line {e.line}" if e.line else "",
                        )
                        if x
                    )
                    found.append(Problem(path, where, e.message, ERROR))
    return found


def check_cmd(args) -> int:
    dirs = args.dirs or [DEFAULT_DIR]
    catalog = load_catalog(dirs)
    problems = catalog.problems + _render_check(catalog)
    _print_problems(problems)
    errors = sum(p.severity == ERROR for p in problems)
    warnings = len(problems) - errors
    verdict = "FAILED" if errors else "OK"
    print(
        f"{verdict}: {len(catalog.workshops)} workshop(s) in {', '.join(map(str, dirs))}: "
        f"{errors} error(s), {warnings} warning(s)"
    )
    return 1 if errors else 0


def render_cmd(args) -> int:
    from ..personalize import RenderError, render_workshop, sample_context

    dirs = args.dirs or [DEFAULT_DIR]
    catalog = load_catalog(dirs)
    workshop = catalog.workshops.get(args.workshop) or next(
        (w for w in catalog.workshops.values() if w.path.name == args.workshop), None
    )
    if workshop is None:
        known = ", ".join(catalog.workshops) or "none"
        print(
            f"error: no workshop {args.workshop!r} in {', '.join(map(str, dirs))} (known: {known})",
            file=sys.stderr,
        )
        return 1
    own = [p for p in catalog.errors if Path(p.path).absolute().is_relative_to(workshop.path)]
    if own:
        for p in own:
            print(f"error: {p}", file=sys.stderr)
        print(
            f"error: fix {workshop.id} first (wod-hub check {' '.join(map(str, dirs))})",
            file=sys.stderr,
        )
        return 1
    low, high = workshop.student_range
    if not workshop.owns(args.student):
        print(
            f"error: student {args.student} is not in the range of {workshop.id} ({low}-{high}); "
            f"pick a student number from {low} to {high}",
            file=sys.stderr,
        )
        return 1
    first, _, last = (args.name or "Ada Lovelace").partition(" ")
    overrides = {"participant_first_name": first, "participant_last_name": last}
    for key, value in (
        ("participant_email", args.email),
        ("hub_url", args.hub_url),
        ("password", args.password),
    ):
        if value is not None:
            overrides[key] = value
    ctx = sample_context(workshop, args.student, **overrides)
    try:
        written = render_workshop(workshop, ctx, args.out, catalog.variables)
    except RenderError as e:
        print(f"error: {workshop.path / e.file}: {str(e).split(': ', 1)[-1]}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    print(f"rendered {len(written)} file(s) of {workshop.id} for {ctx.username} into {args.out}")
    return 0


def _free_range(taken: list[tuple[int, int]], size: int = NEW_RANGE_SIZE) -> tuple[int, int]:
    start = 1
    while True:
        end = start + size - 1
        if all(end < low or start > high for low, high in taken):
            return start, end
        start += size


def _taken_ranges(root: Path) -> list[tuple[int, int]]:
    """Ranges used in ``root``, read leniently: a broken workshop still owns its range."""
    catalog = load_catalog([root]) if root.is_dir() else Catalog()
    return [w.student_range for w in catalog.workshops.values() if w.range_size]


def new_cmd(args) -> int:
    name = args.name
    if not NEW_NAME_RE.match(name):
        print(
            f"error: {name!r} is not a workshop folder name: use WKSHP-<Name> (or CHLG-<Name> for a coding "
            "challenge) with letters, digits, '-' and '_', e.g. WKSHP-Kubernetes101",
            file=sys.stderr,
        )
        return 1
    root = Path(args.dir)
    target = root / name
    if target.exists():
        print(f"error: {target} already exists; pick another name or edit it", file=sys.stderr)
        return 1
    low, high = _free_range(_taken_ranges(root))
    title = args.title or re.sub(r"(?<=[a-z])(?=[A-Z0-9])", " ", name.split("-", 1)[1]).replace(
        "_", " "
    )
    values = {
        "@@ID@@": name,
        "@@TITLE@@": title.replace("'", "''"),
        "@@RANGE@@": f"{low}-{high}",
        "@@CAPACITY@@": str(min(20, high - low + 1)),
        "@@SESSION_TYPE@@": "challenge" if name.startswith("CHLG-") else "workshop",
    }
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(SCAFFOLD, target, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    for path in target.rglob("*"):
        if path.suffix not in (".yaml", ".ipynb", ".example") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        for token, value in values.items():
            if token == "@@TITLE@@":
                value = title if path.suffix != ".yaml" else value
            if path.suffix == ".ipynb":
                value = json.dumps(value)[1:-1]
            text = text.replace(token, value)
        path.write_text(text, encoding="utf-8")
    print(f"created {target} (students {low}-{high}, capacity {values['@@CAPACITY@@']})")
    print(
        f"next: edit {target / 'workshop.yaml'} and the notebooks, then run: wod-hub check {root}"
    )
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "check",
        help="validate workshops and render each for a sample student; exit 1 on errors",
        description="Load the workshop directories in order (public first, private overlays after), "
        "validate every field, notebook and template, and render each workshop for its first "
        "student. Prints every problem (file: field: message), then a summary.",
    )
    p.add_argument(
        "dirs",
        nargs="*",
        metavar="DIR",
        help=f"workshop directories, in order (default: ./{DEFAULT_DIR})",
    )
    p.set_defaults(func=check_cmd)

    p = subparsers.add_parser(
        "render", help="write exactly what one student would receive (author's preview)"
    )
    p.add_argument(
        "workshop", metavar="WKSHP", help="workshop id or folder name, e.g. WKSHP-Python101"
    )
    p.add_argument(
        "--student",
        type=int,
        required=True,
        metavar="N",
        help="student number in the workshop's range",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where to write the files")
    p.add_argument(
        "--dirs",
        nargs="+",
        metavar="DIR",
        help=f"workshop directories, in order (default: ./{DEFAULT_DIR})",
    )
    p.add_argument("--name", help="participant's full name (default: Ada Lovelace)")
    p.add_argument("--email", help="participant's e-mail")
    p.add_argument("--hub-url", help="public hub URL (default: https://hub.example.org/)")
    p.add_argument("--password", help="the student's password as PASSSTU (default: a sample)")
    p.set_defaults(func=render_cmd)

    p = subparsers.add_parser("new", help="scaffold a new workshop folder that passes check")
    p.add_argument("name", metavar="WKSHP-Name", help="folder name: WKSHP-<Name> or CHLG-<Name>")
    p.add_argument(
        "--dir",
        default=DEFAULT_DIR,
        help=f"directory holding the workshops (default: {DEFAULT_DIR})",
    )
    p.add_argument("--title", help="workshop title (default: from the folder name)")
    p.set_defaults(func=new_cmd)
