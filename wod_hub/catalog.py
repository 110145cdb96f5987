"""The workshop catalog: workshop folders on disk -> validated :class:`Workshop` models.

Pure: no hub, no network. ``load_catalog(dirs)`` reads directories in order (public
content first, then private overlays) and reports every problem it finds as a
:class:`Problem` naming the file and field, instead of stopping at the first one.

A workshop is a folder ``WKSHP-<Name>/`` (or ``CHLG-<Name>/`` for a coding challenge)
holding ``workshop.yaml`` (or the original ``wod.yml``), numbered notebooks starting
with ``0-ReadMeFirst.ipynb``, assets (``Pictures/``...) and optional hooks.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from . import wodyml
from .wodyml import ERROR, HOOK_NAMES, WARNING

WORKSHOP_PREFIXES = ("WKSHP-", "CHLG-")
METADATA_FILES = ("workshop.yaml", "wod.yml")
VARIABLES_FILE = "variables.yaml"
FIRST_NOTEBOOK_NAMES = ("0-readmefirst.ipynb",)  # matched case-insensitively: ReadMe / Readme
# rendered through Jinja as text; ``name.ext.j2`` is rendered and written as ``name.ext``
TEMPLATE_SUFFIXES = frozenset(
    {
        ".py",
        ".sh",
        ".bash",
        ".yaml",
        ".yml",
        ".md",
        ".txt",
        ".env",
        ".json",
        ".cfg",
        ".ini",
        ".conf",
        ".toml",
        ".j2",
    }
)
EXCLUDED_DIRS = frozenset({".ipynb_checkpoints", "__pycache__", "hooks"})
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_USERNAME_RE = re.compile(r"^student(\d+)$")
_NUMBER_PREFIX = re.compile(r"^(\d+)")


class CatalogError(Exception):
    """The catalog has errors; ``problems`` lists them all."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the workshop catalog:\n{lines}")


@dataclass(frozen=True)
class Problem:
    path: Path
    field: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        path = _display(self.path)
        where = f"{path}: {self.field}: " if self.field else f"{path}: "
        return where + self.message


def _display(path: Path) -> str:
    """Paths under the working directory are shown relative to it, as authors typed them."""
    path = Path(path)
    if path.is_absolute():
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            pass
    return str(path)


@dataclass(frozen=True)
class HookSpec:
    path: Path  # absolute path inside the workshop folder
    kind: str  # "exec" (run as a program) or "python" (call ``def <hook>(context: dict)``)


@dataclass(frozen=True)
class ContentFile:
    """One file a student receives: ``source`` on disk, ``relpath`` in the student's home."""

    source: Path
    relpath: str  # posix, relative to the student's destination
    kind: str  # "notebook" | "template" | "copy"


@dataclass(frozen=True)
class Workshop:
    id: str
    name: str
    path: Path
    description: str = ""
    duration: timedelta = timedelta(hours=2)
    capacity: int = 0
    student_range: tuple[int, int] = (0, -1)
    category: tuple[str, ...] = ()
    location: str | None = None
    alternate_location: str | None = None
    replay_link: str | None = None
    replay_id: int | None = None
    workshop_image: str | None = None
    badge_image: str | None = None
    presenter: str = ""
    presenter_role: str = ""
    avatar: str | None = None
    prerequisites: str = ""
    priority: int = 0
    reset: bool = False
    varpass: bool = False
    beta: bool = False
    active: bool = True
    ldap: bool = False
    compile: bool = False
    monoappliance: bool = False
    multiappliance: bool = False
    session_type: str = "workshop"
    hooks: dict[str, HookSpec] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    extension: timedelta = timedelta(0)
    image: str | None = None
    # memory (bytes), cpu (cores), processes, cpu_time (seconds); only the keys given
    limits: dict[str, Any] = field(default_factory=dict)
    notebooks: tuple[str, ...] = ()
    first_notebook: str | None = None
    source: str = "workshop.yaml"
    legacy_id: int | None = None  # the original database id from wod.yml

    def __hash__(self) -> int:
        return hash((self.id, self.path))

    @property
    def mode(self) -> str:
        """``MODEWS`` of the original notebooks: ``CHLG`` for challenges, else ``WS``."""
        return "CHLG" if self.session_type == "challenge" else "WS"

    @property
    def range_size(self) -> int:
        return max(0, self.student_range[1] - self.student_range[0] + 1)

    def owns(self, student_number: int) -> bool:
        return self.student_range[0] <= student_number <= self.student_range[1]

    @property
    def usernames(self) -> Iterable[str]:
        return (f"student{n}" for n in range(self.student_range[0], self.student_range[1] + 1))

    @property
    def metadata_path(self) -> Path:
        return self.path / self.source


@dataclass
class Catalog:
    workshops: dict[str, Workshop] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    dirs: tuple[Path, ...] = ()

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    def raise_for_errors(self) -> None:
        if self.errors:
            raise CatalogError(self.errors)

    def by_student_number(self, number: int) -> Workshop | None:
        return next((w for w in self.workshops.values() if w.owns(number)), None)

    def by_username(self, username: str) -> Workshop | None:
        m = _USERNAME_RE.match(username or "")
        return self.by_student_number(int(m[1])) if m else None


# ---- paths -----------------------------------------------------------------
def _inside(root: Path, rel: str) -> str | None:
    """Why ``rel`` could leave ``root`` (``..``, absolute, symlink outside), or None if safe."""
    candidate = Path(rel)
    if candidate.is_absolute() or rel.startswith(("/", "\\")):
        return f"must be a path relative to the workshop folder, got absolute path {rel!r}"
    if ".." in candidate.parts:
        return f"must stay inside the workshop folder, got {rel!r}"
    real_root = root.resolve()
    if not (root / candidate).resolve().is_relative_to(real_root):
        return f"{rel!r} is a symlink pointing outside the workshop folder"
    return None


def _notebook_key(relpath: str) -> tuple:
    parts = relpath.split("/")
    m = _NUMBER_PREFIX.match(parts[-1])
    return (len(parts), int(m[1]) if m else float("inf"), relpath.lower())


def _walk(root: Path) -> Iterable[tuple[Path, str]]:
    """Every regular, non-hidden file under ``root`` as (path, posix relpath), symlinks included
    (not followed into directories)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d not in EXCLUDED_DIRS
        )
        base = Path(dirpath)
        for name in sorted(filenames):
            if not name.startswith("."):
                path = base / name
                yield path, path.relative_to(root).as_posix()


def content_files(workshop: Workshop) -> list[ContentFile]:
    """What a student receives: everything but metadata, variables, hooks, hidden files,
    checkpoints and symlinks leading outside the folder."""
    root = workshop.path
    hook_files = {h.path for h in workshop.hooks.values()}
    real_root = real_hooks = None
    out = []
    for path, rel in _walk(root):
        if rel in (*METADATA_FILES, VARIABLES_FILE) or path in hook_files:
            continue
        if path.is_symlink():  # _walk never descends into directory links: only files can be
            if real_root is None:
                real_root, real_hooks = root.resolve(), {h.resolve() for h in hook_files}
            target = path.resolve()
            if not target.is_relative_to(real_root) or target in real_hooks or not target.is_file():
                continue
        suffix = path.suffix.lower()
        if suffix == ".ipynb":
            out.append(ContentFile(path, rel, "notebook"))
        elif suffix == ".j2":
            out.append(ContentFile(path, rel[: -len(".j2")], "template"))
        elif suffix in TEMPLATE_SUFFIXES:
            out.append(ContentFile(path, rel, "template"))
        else:
            out.append(ContentFile(path, rel, "copy"))
    return out


# ---- reading one folder -----------------------------------------------------
class _Reader:
    def __init__(self, problems: list[Problem]):
        self.problems = problems

    def add(self, path: Path, fld: str, message: str, severity: str = ERROR) -> None:
        self.problems.append(Problem(path, fld, message, severity))

    def yaml(self, path: Path) -> dict | None:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark else ""
            self.add(path, "", f"invalid YAML: {where}{getattr(e, 'problem', None) or e}")
            return None
        except (OSError, UnicodeDecodeError) as e:
            self.add(path, "", f"cannot read: {e}")
            return None
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.add(path, "", f"must be a YAML mapping of fields, got {type(data).__name__}")
            return None
        return data

    def variables(self, path: Path) -> dict:
        data = self.yaml(path) if path.is_file() else {}
        return data or {}

    def hooks(self, folder: Path, meta: Path, declared: dict[str, str]) -> dict[str, HookSpec]:
        specs: dict[str, HookSpec] = {}
        for name in HOOK_NAMES:
            if name in declared:
                rel = declared[name]
                fld = f"hooks.{name}"
                if why := _inside(folder, rel):
                    self.add(meta, fld, why)
                    continue
                if not (folder / rel).is_file():
                    self.add(meta, fld, f"file {rel!r} not found in {folder}")
                    continue
            else:
                rel = self._detect_hook(folder, name)
                if rel is None:
                    continue
                fld = f"hooks.{name}"
                if why := _inside(folder, rel):
                    self.add(folder / rel, fld, why)
                    continue
            path = (folder / rel).absolute()
            kind = "python" if path.suffix == ".py" else "exec"
            if kind == "python":
                self._check_python_hook(path, name)
            elif not os.access(path, os.X_OK) and path.suffix != ".sh":
                self.add(path, fld, "is not executable: chmod +x it or use a .sh/.py hook", WARNING)
            specs[name] = HookSpec(path, kind)
        return specs

    @staticmethod
    def _detect_hook(folder: Path, name: str) -> str | None:
        dashed = name.replace("_", "-")
        candidates = [
            f"hooks/{name}.py",
            f"hooks/{name}.sh",
            f"hooks/{dashed}.sh",
            f"hooks/{dashed}.py",
        ]
        for sub in ("", "scripts/"):
            candidates.append(f"{sub}{dashed}-{folder.name}.sh")
        return next(
            (c for c in candidates if (folder / c).is_file() or (folder / c).is_symlink()), None
        )

    def _check_python_hook(self, path: Path, name: str) -> None:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError) as e:
            self.add(path, f"hooks.{name}", f"is not valid Python: {e}")
            return
        if not any(
            isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name
            for n in tree.body
        ):
            self.add(path, f"hooks.{name}", f"must define a function `def {name}(context: dict)`")

    def workshop(self, folder: Path, extra_variables: dict) -> Workshop | None:
        meta = next((folder / m for m in METADATA_FILES if (folder / m).is_file()), None)
        if meta is None:
            self.add(folder, "", "no workshop.yaml (or original wod.yml): not a workshop folder")
            return None
        if meta.name == "workshop.yaml" and (folder / "wod.yml").is_file():
            self.add(
                folder / "wod.yml", "", "ignored: workshop.yaml is used when both exist", WARNING
            )
        data = self.yaml(meta)
        if data is None:
            return None
        parse = wodyml.parse_workshop_yaml if meta.name == "workshop.yaml" else wodyml.parse_wod_yml
        fields, findings = parse(data)
        for fld, message, severity in findings:
            self.add(meta, fld, message, severity)

        wid = fields.pop("id", folder.name)
        if not _ID_RE.match(wid):
            self.add(meta, "id", f"must be letters, digits, '.', '_' or '-', got {wid!r}")
            wid = folder.name
        if not folder.name.startswith(WORKSHOP_PREFIXES):
            self.add(folder, "", "workshop folders are named WKSHP-<Name> or CHLG-<Name>", WARNING)
        legacy_notebook = fields.pop("legacy_notebook", None)
        if legacy_notebook and legacy_notebook != folder.name:
            self.add(
                meta,
                "notebook",
                f"{legacy_notebook!r} differs from the folder name {folder.name!r}",
                WARNING,
            )
        fields.setdefault(
            "session_type", "challenge" if folder.name.startswith("CHLG-") else "workshop"
        )
        fields.setdefault("name", wid)

        if "student_range" not in fields:
            if not any(f in ("students", "range") for f, _, _ in findings):
                self.add(
                    meta,
                    "range" if meta.name == "wod.yml" else "students",
                    "is required: e.g. 1-40",
                )
        elif "capacity" not in fields:
            fields["capacity"] = fields["student_range"][1] - fields["student_range"][0] + 1
        elif fields["capacity"] > fields["student_range"][1] - fields["student_range"][0] + 1:
            low, high = fields["student_range"]
            message = f"{fields['capacity']} is larger than the student range {low}-{high} ({high - low + 1} students)"
            if meta.name == "wod.yml":  # real original content does this: load it, capped
                fields["capacity"] = high - low + 1
                self.add(meta, "capacity", f"{message}; capped to {high - low + 1}", WARNING)
            else:
                self.add(meta, "capacity", message)

        hooks = self.hooks(folder, meta, fields.pop("hooks", {}))
        notebooks, first = self.notebooks(folder, meta, fields.pop("notebook_order", None))
        variables = {
            **fields.pop("variables", {}),
            **extra_variables,
            **self.variables(folder / VARIABLES_FILE),
        }
        return Workshop(
            id=wid,
            path=folder.absolute(),
            hooks=hooks,
            variables=variables,
            notebooks=notebooks,
            first_notebook=first,
            source=meta.name,
            **fields,
        )

    def notebooks(
        self, folder: Path, meta: Path, order: tuple[str, ...] | None
    ) -> tuple[tuple[str, ...], str | None]:
        found = [rel for path, rel in _walk(folder) if rel.endswith(".ipynb")]
        if order is not None:
            listed = []
            for rel in order:
                if why := _inside(folder, rel):
                    self.add(meta, "notebooks", why)
                elif not (folder / rel).is_file():
                    self.add(meta, "notebooks", f"notebook {rel!r} not found in {folder}")
                else:
                    listed.append(rel)
            notebooks = tuple(listed)
        else:
            notebooks = tuple(sorted(found, key=_notebook_key))
        if not found:
            self.add(folder, "notebooks", "no notebook (.ipynb) in the workshop folder")
            return notebooks, None
        first = next((rel for rel in found if rel.lower() in FIRST_NOTEBOOK_NAMES), None)
        if first is None:
            self.add(folder, "notebooks", "the first notebook 0-ReadMeFirst.ipynb is missing")
        return notebooks, first

    def symlinks(self, folder: Path) -> None:
        real_root = folder.resolve()
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in (*dirnames, *filenames):
                path = Path(dirpath) / name
                if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                    rel = path.relative_to(folder).as_posix()
                    self.add(path, "", f"{rel!r} is a symlink pointing outside the workshop folder")


# ---- the catalog ---------------------------------------------------------------
def _is_workshop_name(name: str) -> bool:
    return name.startswith(WORKSHOP_PREFIXES)


def _overlay_only(folder: Path, reader: _Reader) -> dict | None:
    """Variables of a folder that only adds variables to a workshop loaded earlier, else None."""
    if any(rel.endswith(".ipynb") for _, rel in _walk(folder)):
        return None
    variables: dict = {}
    meta = next((folder / m for m in METADATA_FILES if (folder / m).is_file()), None)
    if meta is not None:
        data = reader.yaml(meta)
        if data is None or set(data) - {"variables"}:
            return None
        try:
            variables.update(wodyml.mapping(data.get("variables")))
        except wodyml.FieldError as e:
            reader.add(meta, "variables", str(e))
    elif not (folder / VARIABLES_FILE).is_file():
        return None
    variables.update(reader.variables(folder / VARIABLES_FILE))
    return variables


def load_catalog(dirs: Sequence[Path | str]) -> Catalog:
    """Load workshop directories in order; later ones override variables, add workshops,
    replace workshops with the same id, or merge variables into an existing workshop."""
    problems: list[Problem] = []
    reader = _Reader(problems)
    workshops: dict[str, Workshop] = {}
    variables: dict[str, Any] = {}
    per_workshop: dict[str, dict] = {}
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            reader.add(d, "", "workshop directory not found")
            continue
        for key, value in reader.variables(d / VARIABLES_FILE).items():
            if _is_workshop_name(str(key)) and isinstance(value, dict):
                per_workshop.setdefault(str(key), {}).update(value)
            else:
                variables[str(key)] = value
        seen_here: dict[str, Path] = {}
        overlays: list[tuple[Path, dict]] = []
        for folder in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not _is_workshop_name(folder.name) and not any(
                (folder / m).is_file() for m in METADATA_FILES
            ):
                continue
            overlay = _overlay_only(folder, reader)
            if overlay is not None:
                overlays.append((folder, overlay))
                continue
            reader.symlinks(folder)
            workshop = reader.workshop(folder, {})
            if workshop is None:
                continue
            if workshop.id in seen_here:
                reader.add(
                    workshop.metadata_path,
                    "id",
                    f"duplicate workshop id {workshop.id!r}: also used by {_display(seen_here[workshop.id])}",
                )
                continue
            seen_here[workshop.id] = folder
            workshops[workshop.id] = workshop
        for folder, overlay in overlays:
            target = workshops.get(folder.name)
            if target is None:
                reader.add(
                    folder, "", f"variables for unknown workshop {folder.name!r} ignored", WARNING
                )
            else:
                workshops[target.id] = replace(target, variables={**target.variables, **overlay})
    for wid, extra in per_workshop.items():
        if wid in workshops:
            workshops[wid] = replace(
                workshops[wid], variables={**workshops[wid].variables, **extra}
            )
        else:
            problems.append(
                Problem(Path(VARIABLES_FILE), wid, "variables for an unknown workshop", WARNING)
            )

    _check_ranges(workshops.values(), problems)
    from .personalize import check_workshop_templates  # personalize imports this module

    for workshop in workshops.values():
        problems.extend(check_workshop_templates(workshop, variables))
    ordered = dict(
        sorted(workshops.items(), key=lambda kv: (kv[1].priority, kv[1].name.lower(), kv[0]))
    )
    return Catalog(
        workshops=ordered, variables=variables, problems=problems, dirs=tuple(Path(d) for d in dirs)
    )


def _check_ranges(workshops: Iterable[Workshop], problems: list[Problem]) -> None:
    ranged = sorted((w for w in workshops if w.range_size > 0), key=lambda w: w.student_range)
    for i, a in enumerate(ranged):
        for b in ranged[i + 1 :]:
            if b.student_range[0] > a.student_range[1]:
                break
            fld = "range" if a.source == "wod.yml" else "students"
            problems.append(
                Problem(
                    a.metadata_path,
                    fld,
                    f"student range {a.student_range[0]}-{a.student_range[1]} of {a.id} overlaps "
                    f"{b.student_range[0]}-{b.student_range[1]} of {b.id} ({_display(b.metadata_path)})",
                )
            )


def read_notebook_json(path: Path) -> dict:
    """Parse a notebook file as JSON; raises ValueError with a readable message."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"line {e.lineno}, column {e.colno}: {e.msg}") from None
