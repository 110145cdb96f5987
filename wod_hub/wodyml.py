"""Workshop metadata files: the modern ``workshop.yaml`` and the original ``wod.yml``.

Both are parsed into one flat dict of normalized :class:`~wod_hub.catalog.Workshop`
field values plus a list of ``(field, message, severity)`` findings. Parsing never
raises for bad content: every problem is reported with the field it is about, so an
author sees all of them at once.

``workshop.yaml`` schema (every key optional except ``name``)::

    id: WKSHP-Name            # defaults to the folder name
    name: Python 101
    description: ...
    duration: 2h              # 2h, 90m, 1h30m, or a number of hours
    capacity: 20              # concurrent participants, <= size of the range
    students: 1-40            # or [1, 40]: student numbers owned by the workshop
    category: [Open Source]   # str or list
    location: mougins
    alternate_location: grenoble
    replay: {link: https://..., id: 9}
    images: {workshop: https://.../card.png, badge: https://.../badge.png}
    presenter: {name: Ada Lovelace, role: Engineer, avatar: /img/ada.png}  # or a str
    prerequisites: ...
    priority: 1               # lower comes first in the catalog
    reset: false              # run the reset hook at the end of a session
    varpass: false            # PASSSTU is used by the notebooks
    beta: false
    active: true
    ldap: false
    compile: false
    monoappliance: false
    multiappliance: false
    session_type: workshop    # or challenge
    hooks: {setup: hooks/setup.sh, create: hooks/create.py, cleanup: ..., reset: ..., post_copy: ...}
    variables: {API_URL: https://...}
    extension: 30m            # one extension a participant may take; 0 = none
    image: quay.io/jupyter/minimal-notebook:latest
    limits: {memory: 1G, cpu: 1, processes: 256, cpu_time: 4h}
    notebooks: [0-ReadMeFirst.ipynb, 1-Lab.ipynb]   # explicit order (default: discovered)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

HOOK_NAMES = ("setup", "create", "cleanup", "reset", "post_copy")

ERROR = "error"
WARNING = "warning"


class FieldError(ValueError):
    """A value that cannot be used for a field; the message says what is expected."""


# ---- value parsers ----------------------------------------------------------
_DURATION_RE = re.compile(
    r"^\s*(?:(?P<h>\d+(?:\.\d+)?)\s*h(?:ours?|rs?)?)?\s*(?:(?P<m>\d+)\s*m(?:in(?:utes?)?)?)?\s*$",
    re.IGNORECASE,
)
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(value: Any, *, allow_zero: bool = False) -> timedelta:
    """``2h``, ``90m``, ``1h30m``, ``2`` / ``1.5`` (hours) -> timedelta."""
    if isinstance(value, bool) or value is None:
        raise FieldError(
            f"must be a duration like 2h, 90m, 1h30m or a number of hours, got {value!r}"
        )
    if isinstance(value, int | float):
        delta = timedelta(hours=value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            delta = timedelta(hours=float(text))
        except ValueError:
            m = _DURATION_RE.match(text)
            if not text or m is None or not (m["h"] or m["m"]):
                raise FieldError(
                    f"must be a duration like 2h, 90m, 1h30m or a number of hours, got {value!r}"
                ) from None
            delta = timedelta(hours=float(m["h"] or 0), minutes=int(m["m"] or 0))
    else:
        raise FieldError(
            f"must be a duration like 2h, 90m, 1h30m or a number of hours, got {value!r}"
        )
    if delta < timedelta(0) or (delta == timedelta(0) and not allow_zero):
        raise FieldError(f"must be a positive duration, got {value!r}")
    return delta


def parse_range(value: Any) -> tuple[int, int]:
    """``1-40``, ``[1, 40]``, ``['52-91']`` (the original ``range: [52-91]``), ``{min, max}``."""
    bounds: list[Any]
    if isinstance(value, str):
        bounds = value.split("-")
    elif isinstance(value, list | tuple) and len(value) == 1 and isinstance(value[0], str):
        bounds = value[0].split("-")
    elif isinstance(value, list | tuple):
        bounds = list(value)
    elif isinstance(value, dict) and set(value) == {"min", "max"}:
        bounds = [value["min"], value["max"]]
    else:
        bounds = []
    try:
        if len(bounds) != 2 or any(isinstance(b, bool | float) for b in bounds):
            raise ValueError
        low, high = (int(str(b).strip()) for b in bounds)
    except (TypeError, ValueError):
        raise FieldError(f"must be a student range like 1-40 or [1, 40], got {value!r}") from None
    if low < 1 or high < low:
        raise FieldError(f"must be a range of student numbers with 1 <= min <= max, got {value!r}")
    return low, high


def parse_size(value: Any) -> int:
    """Memory sizes: ``512M``, ``2G``, ``1.5GiB`` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (m := _SIZE_RE.match(value)) and float(m[1]) > 0:
        return int(float(m[1]) * _SIZE_UNITS[m[2].lower()])
    raise FieldError(f"must be a memory size like 512M or 2G, got {value!r}")


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FieldError(f"must be a positive integer, got {value!r}")
    return value


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"must be an integer, got {value!r}")
    return value


def positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise FieldError(f"must be a positive number, got {value!r}")
    return float(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise FieldError(f"must be true or false, got {value!r}")
    return value


def text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError(f"must be a string, got {value!r}")
    return str(value)


def optional_text(value: Any) -> str | None:
    return None if value is None else text(value)


def text_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise FieldError(f"must be a string or a list of strings, got {value!r}")


def mapping(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise FieldError(f"must be a mapping of names to values, got {value!r}")
    return dict(value)


def session_type(value: Any) -> str:
    normalized = str(value).strip().lower()
    if normalized in ("workshop", "workshops-on-demand", "ws"):
        return "workshop"
    if normalized in ("challenge", "coding challenge", "chlg"):
        return "challenge"
    raise FieldError(f"must be 'workshop' or 'challenge', got {value!r}")


def suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---- the two formats ------------------------------------------------------------
Findings = list[tuple[str, str, str]]  # (field, message, severity)


def _apply(
    fields: dict, findings: Findings, key: str, target: str, parser: Callable, value: Any
) -> None:
    try:
        fields[target] = parser(value)
    except FieldError as e:
        findings.append((key, str(e), ERROR))


def _nested(
    fields: dict, findings: Findings, key: str, value: Any, spec: dict[str, tuple[str, Callable]]
) -> None:
    if isinstance(value, str) and "name" in spec:  # presenter: 'Ada Lovelace'
        value = {"name": value}
    if not isinstance(value, dict):
        findings.append(
            (key, f"must be a mapping with keys {', '.join(spec)}, got {value!r}", ERROR)
        )
        return
    for sub, subvalue in value.items():
        if sub not in spec:
            findings.append((f"{key}.{sub}", f"unknown field{suggest(str(sub), spec)}", ERROR))
            continue
        target, parser = spec[sub]
        _apply(fields, findings, f"{key}.{sub}", target, parser, subvalue)


def _limits(fields: dict, findings: Findings, value: Any) -> None:
    spec = {
        "memory": parse_size,
        "cpu": positive_number,
        "processes": positive_int,
        "cpu_time": lambda v: int(parse_duration(v).total_seconds()),
    }
    if not isinstance(value, dict):
        findings.append(
            ("limits", f"must be a mapping with keys {', '.join(spec)}, got {value!r}", ERROR)
        )
        return
    limits = {}
    for sub, subvalue in value.items():
        if sub not in spec:
            findings.append((f"limits.{sub}", f"unknown field{suggest(str(sub), spec)}", ERROR))
            continue
        try:
            limits[sub] = spec[sub](subvalue)
        except FieldError as e:
            findings.append((f"limits.{sub}", str(e), ERROR))
    fields["limits"] = limits


def _hooks(fields: dict, findings: Findings, value: Any) -> None:
    if not isinstance(value, dict):
        findings.append(("hooks", f"must be a mapping of hook name to path, got {value!r}", ERROR))
        return
    hooks = {}
    for name, path in value.items():
        key = str(name).replace("-", "_")
        if key not in HOOK_NAMES:
            findings.append((f"hooks.{name}", f"unknown hook{suggest(key, HOOK_NAMES)}", ERROR))
        elif not isinstance(path, str) or not path.strip():
            findings.append(
                (
                    f"hooks.{name}",
                    f"must be a path relative to the workshop folder, got {path!r}",
                    ERROR,
                )
            )
        else:
            hooks[key] = path.strip()
    fields["hooks"] = hooks


def _notebooks(value: Any) -> tuple[str, ...]:
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, str) and v.endswith(".ipynb") for v in value)
    ):
        return tuple(value)
    raise FieldError(
        f"must be a list of .ipynb paths relative to the workshop folder, got {value!r}"
    )


_SIMPLE_YAML: dict[str, tuple[str, Callable]] = {
    "id": ("id", text),
    "name": ("name", text),
    "description": ("description", text),
    "duration": ("duration", parse_duration),
    "capacity": ("capacity", positive_int),
    "students": ("student_range", parse_range),
    "category": ("category", text_tuple),
    "location": ("location", optional_text),
    "alternate_location": ("alternate_location", optional_text),
    "prerequisites": ("prerequisites", text),
    "priority": ("priority", integer),
    "reset": ("reset", boolean),
    "varpass": ("varpass", boolean),
    "beta": ("beta", boolean),
    "active": ("active", boolean),
    "ldap": ("ldap", boolean),
    "compile": ("compile", boolean),
    "monoappliance": ("monoappliance", boolean),
    "multiappliance": ("multiappliance", boolean),
    "session_type": ("session_type", session_type),
    "variables": ("variables", mapping),
    "extension": ("extension", lambda v: parse_duration(v, allow_zero=True)),
    "image": ("image", optional_text),
    "notebooks": ("notebook_order", _notebooks),
}
_NESTED_YAML: dict[str, dict[str, tuple[str, Callable]]] = {
    "replay": {"link": ("replay_link", optional_text), "id": ("replay_id", integer)},
    "images": {
        "workshop": ("workshop_image", optional_text),
        "badge": ("badge_image", optional_text),
    },
    "presenter": {
        "name": ("presenter", text),
        "role": ("presenter_role", text),
        "avatar": ("avatar", optional_text),
    },
}
WORKSHOP_YAML_KEYS = (*_SIMPLE_YAML, *_NESTED_YAML, "hooks", "limits")


def parse_workshop_yaml(data: dict) -> tuple[dict, Findings]:
    """Map a ``workshop.yaml`` document; unknown keys are errors with a suggestion."""
    fields: dict = {}
    findings: Findings = []
    for key, value in data.items():
        key = str(key)
        if key in _SIMPLE_YAML:
            target, parser = _SIMPLE_YAML[key]
            _apply(fields, findings, key, target, parser, value)
        elif key in _NESTED_YAML:
            _nested(fields, findings, key, value, _NESTED_YAML[key])
        elif key == "hooks":
            _hooks(fields, findings, value)
        elif key == "limits":
            _limits(fields, findings, value)
        else:
            findings.append((key, f"unknown field{suggest(key, WORKSHOP_YAML_KEYS)}", ERROR))
    if "name" not in data:
        findings.append(("name", "is required: the title shown in the catalog", ERROR))
    return fields, findings


_WOD_YML: dict[str, tuple[str, Callable]] = {
    "id": ("legacy_id", integer),  # the original database row id
    "notebook": ("legacy_notebook", text),
    "name": ("name", text),
    "description": ("description", text),
    "active": ("active", boolean),
    "capacity": ("capacity", positive_int),
    "priority": ("priority", integer),
    "range": ("student_range", parse_range),
    "reset": ("reset", boolean),
    "ldap": ("ldap", boolean),
    "varpass": ("varpass", boolean),
    "compile": ("compile", boolean),
    "beta": ("beta", boolean),
    "monoappliance": ("monoappliance", boolean),
    "multiappliance": ("multiappliance", boolean),
    "replayId": ("replay_id", integer),
    "replayLink": ("replay_link", optional_text),
    "workshopImg": ("workshop_image", optional_text),
    "badgeImg": ("badge_image", optional_text),
    "category": ("category", text_tuple),
    "duration": ("duration", parse_duration),
    "presenter": ("presenter", text),
    "role": ("presenter_role", text),
    "avatar": ("avatar", optional_text),
    "location": ("location", optional_text),
    "alternateLocation": ("alternate_location", optional_text),
    "sessionType": ("session_type", session_type),
    "preRequisite": ("prerequisites", optional_text),
}


def parse_wod_yml(data: dict) -> tuple[dict, Findings]:
    """Map an original ``wod.yml`` unchanged; unknown keys are warnings, never errors."""
    fields: dict = {}
    findings: Findings = []
    for key, value in data.items():
        key = str(key)
        if key in _WOD_YML:
            target, parser = _WOD_YML[key]
            if value is None and target not in ("name", "capacity", "duration", "student_range"):
                continue  # the original leaves optional columns empty
            _apply(fields, findings, key, target, parser, value)
        else:
            findings.append(
                (key, f"unknown wod.yml field, ignored{suggest(key, _WOD_YML)}", WARNING)
            )
    if fields.get("prerequisites") is None:
        fields.pop("prerequisites", None)
    if "name" not in data:
        findings.append(("name", "is required: the title shown in the catalog", ERROR))
    return fields, findings
