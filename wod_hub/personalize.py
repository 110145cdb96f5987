"""Personalize a workshop for one student: notebooks and text files through sandboxed Jinja.

Pure: no hub. ``render_workshop`` writes what student N receives; ``render_workshop_files``
returns the same files in memory. Notebook cells are rendered one by one in a
``SandboxedEnvironment`` with ``StrictUndefined``; templates are compiled once per file
version (path + mtime) and cached. Participant text is only ever a *value*: it is never
parsed as a template.

Variables (low to high precedence): catalog ``variables.yaml`` < workshop variables <
values the hub sets (branding, survey, hub host) < ``StudentContext.extra`` < the
student's identity (``STDID``, ``PASSSTU``, ``MODEWS``, ``student``, ``participant``,
``workshop``, ``hub_url``, ``expires_at``), which no file can override.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import nbformat
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from nbformat.v4.rwbase import split_lines, strip_transient

from .catalog import ContentFile, Problem, content_files
from .wodyml import ERROR

if TYPE_CHECKING:
    from .catalog import Workshop

IDENTITY_NAMES = frozenset(
    {"STDID", "PASSSTU", "MODEWS", "student", "participant", "workshop", "hub_url", "expires_at"}
)
DEPLOYMENT_NAMES = frozenset(
    {
        "WODBEEXTFQDN",
        "HTTPPORT",
        "BRANDING",
        "BRANDINGURL",
        "BRANDINGLOGO",
        "SURVEYURL",
        "SURVEYCHALURL",
    }
)
# every name build_variables provides whatever the files say
CONTEXT_NAMES = IDENTITY_NAMES | DEPLOYMENT_NAMES
_JINJA_MARKERS = ("{{", "{%", "{#")


class RenderError(Exception):
    """A template could not be rendered; names the file, the cell (notebooks) and the line."""

    def __init__(self, message: str, file: str, cell: int | None = None, line: int | None = None):
        self.message, self.file, self.cell, self.line = message, file, cell, line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [
            w
            for w in (
                f"cell {self.cell}" if self.cell else "",
                f"line {self.line}" if self.line else "",
            )
            if w
        ]
        return f"{self.file}: {', '.join(where) + ': ' if where else ''}{self.message}"


@dataclass(frozen=True)
class StudentContext:
    student_number: int
    username: str
    password: str | None = None  # the seat secret (PASSSTU)
    participant_first_name: str = ""
    participant_last_name: str = ""
    participant_email: str = ""
    hub_url: str = "http://localhost:8000/"
    expires_at: datetime | None = None
    branding_name: str = ""
    branding_url: str = ""
    branding_logo: str = ""
    survey_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.student_number, self.username))


def sample_context(
    workshop: Workshop, student_number: int | None = None, **overrides
) -> StudentContext:
    """A plausible context for previews and checks: the first student of the range."""
    number = workshop.student_range[0] if student_number is None else student_number
    values: dict[str, Any] = {
        "student_number": number,
        "username": f"student{number}",
        "password": "Sample-Passw0rd",
        "participant_first_name": "Ada",
        "participant_last_name": "Lovelace",
        "participant_email": "ada@example.org",
        "hub_url": "https://hub.example.org/",
        "expires_at": datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
        + workshop.duration,
    }
    values.update(overrides)
    return StudentContext(**values)


# ---- variables -------------------------------------------------------------------
def build_variables(
    workshop: Workshop, ctx: StudentContext, catalog_variables: dict | None = None
) -> dict:
    """The Jinja context of one student's files: original upper-case names and modern ones."""
    files = {**(catalog_variables or {}), **workshop.variables}
    hub = urlparse(ctx.hub_url or "")
    hub_port = hub.port or (443 if hub.scheme == "https" else 80)
    if "HTTPPORTBASE" in files:  # one port per student, as the original appliances do
        http_port = int(files["HTTPPORTBASE"]) + ctx.student_number
    else:
        http_port = files.get("HTTPPORT", hub_port)
    branding = ctx.branding_name or files.get("BRANDING", "")
    logo = ctx.branding_logo or files.get("BRANDINGLOGO_URL", "")
    survey = ctx.survey_url or files.get("SURVEYURL", "")
    deployment = {
        "WODBEEXTFQDN": hub.hostname or files.get("WODBEEXTFQDN", "localhost"),
        "HTTPPORT": http_port,
        "BRANDING": branding,
        "BRANDINGURL": ctx.branding_url or files.get("BRANDINGURL", ""),
        "BRANDINGLOGO": f"![{branding or 'logo'}]({logo})"
        if logo
        else files.get("BRANDINGLOGO", ""),
        "SURVEYURL": survey,
        "SURVEYCHALURL": files.get("SURVEYCHALURL") or survey,
    }
    name = f"{ctx.participant_first_name} {ctx.participant_last_name}".strip()
    minutes = int(workshop.duration.total_seconds() // 60)
    identity = {
        "STDID": ctx.student_number,
        "PASSSTU": ctx.password or "",
        "MODEWS": workshop.mode,
        "student": {
            "number": ctx.student_number,
            "username": ctx.username,
            "password": ctx.password or "",
        },
        "participant": {
            "first_name": ctx.participant_first_name,
            "last_name": ctx.participant_last_name,
            "name": name,
            "email": ctx.participant_email,
        },
        "hub_url": ctx.hub_url,
        "expires_at": ctx.expires_at,
        "workshop": {
            "id": workshop.id,
            "name": workshop.name,
            "duration_hours": minutes // 60 if minutes % 60 == 0 else round(minutes / 60, 2),
            "duration_minutes": minutes,
            "session_type": workshop.session_type,
            "mode": workshop.mode,
            "first_notebook": workshop.first_notebook,
        },
    }
    return {**files, **deployment, **ctx.extra, **identity}


# ---- templates ---------------------------------------------------------------------
def _json_string_body(value: Any) -> str:
    """Finalize for notebooks that are Jinja text first: values land inside JSON strings,
    so they are escaped and can never break (or inject) JSON structure."""
    return json.dumps(value if isinstance(value, str) else str(value), ensure_ascii=False)[1:-1]


ENV = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
JSON_TEXT_ENV = SandboxedEnvironment(
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
    finalize=_json_string_body,
)
GLOBAL_NAMES = frozenset(ENV.globals)


@dataclass
class _Compiled:
    """A file's templates: one per notebook cell (None = plain), or one for the whole text."""

    kind: str  # "cells" | "text" | "text-notebook" | "plain"
    # "cells": the notebook as JSON text around its cells, and each cell's JSON text (cells
    # with templates: the text before and after their source), so a render only encodes sources
    head: str = ""
    tail: str = ""
    pieces: list = field(default_factory=list)
    templates: list = field(default_factory=list)
    undeclared: set[str] = field(default_factory=set)
    errors: list[RenderError] = field(default_factory=list)
    raw: bytes = b""


def _compile(
    env: SandboxedEnvironment, source: str, filename: str, cell: int | None, out: _Compiled
):
    try:
        tree = env.parse(source, filename=filename)
        out.undeclared |= meta.find_undeclared_variables(tree) - GLOBAL_NAMES
        code = env.compile(tree, filename=filename)
        return env.template_class.from_code(env, code, env.make_globals(None))
    except TemplateSyntaxError as e:
        out.errors.append(
            RenderError(f"Jinja syntax error: {e.message}", filename.split("#")[0], cell, e.lineno)
        )
        return None


def _has_jinja(text: str) -> bool:
    return any(m in text for m in _JINJA_MARKERS)


def _compile_file(item: ContentFile) -> _Compiled:
    raw = item.source.read_bytes()
    name = item.relpath
    if item.kind == "copy":
        return _Compiled("plain", raw=raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        if item.kind == "notebook":
            return _Compiled(
                "plain", errors=[RenderError("not UTF-8 text: not a notebook", name)], raw=raw
            )
        return _Compiled("plain", raw=raw)
    if item.kind == "template":
        if not _has_jinja(text):
            return _Compiled("plain", raw=raw)
        out = _Compiled("text", raw=raw)
        # in JSON files values are escaped as JSON string content, like in text-first notebooks
        env = JSON_TEXT_ENV if name.lower().endswith(".json") else ENV
        out.templates.append(_compile(env, text, name, None, out))
        return out
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as e:  # nbformat raises NotJSONError, ValueError, KeyError...
        if not _has_jinja(text):
            return _Compiled(
                "plain", errors=[RenderError(f"invalid notebook JSON: {e}", name)], raw=raw
            )
        out = _Compiled("text-notebook", raw=raw)  # an original notebook that is Jinja text first
        out.templates.append(_compile(JSON_TEXT_ENV, text, name, None, out))
        return out
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        return _Compiled(
            "plain", errors=[RenderError(f"invalid notebook: {e.message}", name)], raw=raw
        )
    out = _Compiled("cells", raw=raw)
    for number, cell in enumerate(nb.cells, start=1):
        source = cell.get("source", "")
        out.templates.append(
            _compile(ENV, source, f"{name}#cell{number}", number, out)
            if _has_jinja(source)
            else None
        )
    _serialize(out, strip_transient(split_lines(nb)))
    return out


class _Cache:
    """Compiled files keyed by (path, mtime, size); bounded, shared by threads."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._items: OrderedDict[tuple, _Compiled] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, item: ContentFile) -> _Compiled:
        st = item.source.stat()
        key = (str(item.source), item.relpath, item.kind, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        compiled = _compile_file(item)
        with self._lock:
            self._items[key] = compiled
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return compiled

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


CACHE = _Cache()


def _run(template, variables: dict, file: str, cell: int | None) -> str:
    try:
        return template.render(variables)
    except TemplateError as e:
        raise RenderError(
            f"{type(e).__name__}: {e.message or e}", file, cell, _template_line(e, template)
        ) from e
    except Exception as e:  # a filter or test failing on a value (e.g. int('x'))
        raise RenderError(
            f"{type(e).__name__}: {e}", file, cell, _template_line(e, template)
        ) from e


def _template_line(exc: BaseException, template) -> int | None:
    """The template line of the failure, from the frames Jinja rewrites into the traceback."""
    line, tb = None, exc.__traceback__
    filename = template.filename
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_JSON = {"indent": 1, "sort_keys": True, "separators": (",", ": "), "ensure_ascii": False}
_SOURCE_MARKER = "@@wod-hub-cell-source@@"
_CELL_INDENT = "  "  # cells sit two levels deep in nbformat's indent=1 layout


def _serialize(out: _Compiled, nb: dict) -> None:
    """Pre-encode everything a render does not change, exactly as nbformat would write it.

    json.dumps with indent runs in pure Python; encoding the untouched cells once per file
    version instead of once per student is most of the rendering time saved."""
    text = json.dumps({**nb, "cells": []}, **_JSON)
    if not nb["cells"]:
        out.head = text + "\n"
        return
    key = '"cells": []'
    at = text.index(key)  # "cells" sorts first among the top-level keys
    out.head, out.tail = text[:at] + '"cells": [\n', "\n ]" + text[at + len(key) :] + "\n"
    for cell, template in zip(nb["cells"], out.templates, strict=True):
        if template is None:
            out.pieces.append(_indent(json.dumps(cell, **_JSON)))
        else:
            encoded = _indent(json.dumps({**cell, "source": _SOURCE_MARKER}, **_JSON))
            before, _, after = encoded.rpartition(json.dumps(_SOURCE_MARKER))
            out.pieces.append((before, after))


def _indent(text: str) -> str:
    return "\n".join(_CELL_INDENT + line for line in text.split("\n"))


def _encode_source(source: str) -> str:
    lines = source.splitlines(True)
    if not lines:
        return "[]"
    items = ",\n".join("    " + json.dumps(line, ensure_ascii=False) for line in lines)
    return f"[\n{items}\n   ]"


def _dump_notebook(nb: dict) -> bytes:
    text = json.dumps(nb, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def _render_one(item: ContentFile, compiled: _Compiled, variables: dict) -> bytes:
    if compiled.errors:
        raise compiled.errors[0]
    if compiled.kind == "plain":
        return compiled.raw
    if compiled.kind == "text":
        return _run(compiled.templates[0], variables, item.relpath, None).encode("utf-8")
    if compiled.kind == "text-notebook":
        text = _run(compiled.templates[0], variables, item.relpath, None)
        try:
            nb = nbformat.reads(text, as_version=4)
            nbformat.validate(nb)
        except Exception as e:
            raise RenderError(
                f"not a valid notebook even after rendering its Jinja text: {e}", item.relpath
            ) from e
        return _dump_notebook(strip_transient(split_lines(nb)))
    if not compiled.pieces:
        return compiled.head.encode("utf-8")
    parts = []
    for number, (piece, template) in enumerate(
        zip(compiled.pieces, compiled.templates, strict=True), start=1
    ):
        if template is None:
            parts.append(piece)
        else:
            rendered = _run(template, variables, item.relpath, number)
            parts.append(piece[0] + _encode_source(rendered) + piece[1])
    return (compiled.head + ",\n".join(parts) + compiled.tail).encode("utf-8")


def _render_items(workshop: Workshop, ctx: StudentContext, catalog_variables: dict | None):
    variables = build_variables(workshop, ctx, catalog_variables)
    for item in content_files(workshop):
        yield item, _render_one(item, CACHE.get(item), variables)


def render_workshop_files(
    workshop: Workshop,
    ctx: StudentContext,
    catalog_variables: dict | None = None,
    *,
    variables: dict | None = None,
) -> dict[str, bytes]:
    """What student ``ctx`` receives, in memory: relative posix path -> content."""
    return {
        item.relpath: data
        for item, data in _render_items(workshop, ctx, catalog_variables or variables)
    }


def render_workshop(
    workshop: Workshop,
    ctx: StudentContext,
    dest: Path | str,
    catalog_variables: dict | None = None,
    *,
    variables: dict | None = None,
) -> list[Path]:
    """Write what student ``ctx`` receives under ``dest`` (file modes kept); returns the paths.

    Everything is rendered before anything is written, so a template error leaves ``dest``
    untouched."""
    dest = Path(dest)
    rendered = list(_render_items(workshop, ctx, catalog_variables or variables))
    written = []
    for item, data in rendered:
        target = dest / item.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.wod-tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, stat.S_IMODE(item.source.stat().st_mode))
        os.replace(tmp, target)
        written.append(target)
    return written


# ---- checks used by the catalog ---------------------------------------------------------
def check_workshop_templates(
    workshop: Workshop, catalog_variables: dict | None = None
) -> list[Problem]:
    """Notebook JSON, Jinja syntax (file, cell, line), and variables no context provides."""
    problems: list[Problem] = []
    provided = (
        CONTEXT_NAMES | set(catalog_variables or {}) | set(workshop.variables) | {"HTTPPORTBASE"}
    )
    for name in sorted(IDENTITY_NAMES & (set(catalog_variables or {}) | set(workshop.variables))):
        problems.append(
            Problem(
                workshop.metadata_path,
                f"variables.{name}",
                "is set by wod-hub for each student; ignored",
                "warning",
            )
        )
    for item in content_files(workshop):
        if item.kind == "copy":
            continue
        compiled = CACHE.get(item)
        for error in compiled.errors:
            problems.append(Problem(item.source, _where(error), error.message, ERROR))
        missing = sorted(compiled.undeclared - provided)
        if missing:
            problems.append(
                Problem(
                    item.source,
                    "variables",
                    f"uses variables no context provides: {', '.join(missing)}",
                    ERROR,
                )
            )
        if compiled.kind == "text-notebook" and not compiled.errors and not missing:
            try:
                variables = build_variables(workshop, sample_context(workshop), catalog_variables)
                _render_one(item, compiled, variables)
            except RenderError as e:
                problems.append(Problem(item.source, _where(e), e.message, ERROR))
    return problems


def _where(error: RenderError) -> str:
    parts = [f"cell {error.cell}" if error.cell else "", f"line {error.line}" if error.line else ""]
    return ", ".join(p for p in parts if p)
