"""Catalog: workshop.yaml and original wod.yml mapping, overlays, and every validation case."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from tests.fixtures.builders import ORIGINAL, SAMPLES, executable, make_workshop, notebook
from wod_hub.catalog import CatalogError, Problem, load_catalog
from wod_hub.wodyml import FieldError, parse_duration, parse_range


def problems_of(catalog, severity=None):
    return [p for p in catalog.problems if severity is None or p.severity == severity]


def find(catalog, field: str, text: str, severity: str = "error") -> Problem:
    matches = [
        p
        for p in catalog.problems
        if p.field == field and text in p.message and p.severity == severity
    ]
    assert matches, f"no {severity} on {field!r} containing {text!r} in:\n" + "\n".join(
        map(str, catalog.problems)
    )
    return matches[0]


# ---- the samples and the original fixtures -------------------------------------------------
def test_samples_load_without_problems():
    catalog = load_catalog([SAMPLES])
    assert catalog.problems == []
    assert list(catalog.workshops) == [
        "WKSHP-JupyterNotebooks101",
        "WKSHP-Python101",
        "WKSHP-HubAPI101",
    ]
    ranges = sorted(w.student_range for w in catalog.workshops.values())
    assert ranges == [(1, 100), (101, 200), (201, 300)]
    for w in catalog.workshops.values():
        assert w.duration == timedelta(hours=2)
        assert w.capacity <= w.range_size
        assert w.first_notebook == "0-ReadMeFirst.ipynb"
        assert w.notebooks[0] == "0-ReadMeFirst.ipynb" and w.notebooks[-1].endswith(
            "Conclusion.ipynb"
        )
        assert (w.path / "Pictures").is_dir()
    assert catalog.variables["BRANDING"] == "wod-hub"


API101 = {
    "id": "WKSHP-API101",
    "name": "API 101 - API basics and the value they provide",
    "description": "You may know that application programming interfaces ...",
    "active": True,
    "capacity": 6,  # 20 in wod.yml, capped to the range with a warning
    "priority": 1,
    "student_range": (1, 6),
    "reset": False,
    "ldap": False,
    "replay_id": 9,
    "varpass": False,
    "compile": False,
    "workshop_image": "https://example.org/images/WOD_API_101.jpg",
    "badge_image": "WOD-Badge-API101",
    "beta": False,
    "category": ("Open Source",),
    "duration": timedelta(hours=2),
    "presenter": "Didier Lalli",
    "presenter_role": "Distinguished Technologist",
    "avatar": "/img/wod/SpeakerImages/Didier.png",
    "replay_link": "https://youtu.be/T57L-6LfUgw",
    "session_type": "workshop",
    "mode": "WS",
    "source": "wod.yml",
    "first_notebook": "0-ReadMeFirst.ipynb",
    "notebooks": ("0-ReadMeFirst.ipynb", "1-API-Basics.ipynb", "2-Conclusion.ipynb"),
    "location": None,
}
DOCKER101 = {
    "id": "WKSHP-Docker101",
    "legacy_id": 12,
    "capacity": 40,
    "student_range": (52, 91),
    "location": "mougins",
    "alternate_location": "grenoble",
    "category": ("Open Source",),
    "duration": timedelta(hours=4),
    "reset": True,
    "varpass": True,
    "multiappliance": True,
    "monoappliance": False,
    "prerequisites": "API 101",
    "session_type": "workshop",
    "badge_image": "https://example.org/badges/WOD-Badge-Docker101.png",
    "first_notebook": "0-ReadmeFirst.ipynb",
    "priority": 3,
}


@pytest.mark.parametrize(
    "expected",
    [
        pytest.param(API101, id="API101-range-list"),
        pytest.param(DOCKER101, id="Docker101-dash-range"),
    ],
)
def test_original_wod_yml_mapped_unchanged(expected):
    catalog = load_catalog([ORIGINAL])
    assert catalog.errors == []
    workshop = catalog.workshops[expected["id"]]
    for name, value in expected.items():
        assert getattr(workshop, name) == value, name


def test_original_capacity_above_range_is_a_capped_warning():
    catalog = load_catalog([ORIGINAL])
    problem = find(catalog, "capacity", "capped to 6", "warning")
    assert problem.path.name == "wod.yml"


@pytest.mark.parametrize(
    "workshop_id, hooks",
    [
        pytest.param(
            "WKSHP-API101",
            {"create": "create-WKSHP-API101.sh", "cleanup": "cleanup-WKSHP-API101.sh"},
            id="in-folder",
        ),
        pytest.param(
            "WKSHP-Docker101",
            {
                "setup": "scripts/setup-WKSHP-Docker101.sh",
                "reset": "scripts/reset-WKSHP-Docker101.sh",
            },
            id="scripts-subfolder",
        ),
    ],
)
def test_original_hook_scripts_detected(workshop_id, hooks):
    workshop = load_catalog([ORIGINAL]).workshops[workshop_id]
    assert {
        name: spec.path.relative_to(workshop.path).as_posix()
        for name, spec in workshop.hooks.items()
    } == hooks
    assert all(spec.kind == "exec" and spec.path.is_absolute() for spec in workshop.hooks.values())


def test_workshop_yaml_full_schema(tmp_path):
    meta = """
id: WKSHP-Full
name: Full
description: Everything set
duration: 1h30m
capacity: 10
students: [100, 119]
category: Cloud
location: mougins
alternate_location: grenoble
replay: {link: 'https://youtu.be/x', id: 7}
images: {workshop: 'https://e.org/w.png', badge: 'https://e.org/b.png'}
presenter: {name: Ada, role: Engineer, avatar: /img/ada.png}
prerequisites: Python 101
priority: 5
reset: true
varpass: true
beta: true
active: false
ldap: true
compile: true
session_type: challenge
hooks: {create: hooks/make.py, post_copy: hooks/post.sh}
variables: {API_URL: 'https://api.example.org'}
extension: 45m
image: quay.io/jupyter/minimal-notebook:latest
limits: {memory: 1G, cpu: 1.5, processes: 128, cpu_time: 2h}
"""
    folder = make_workshop(
        tmp_path,
        "WKSHP-Full",
        meta,
        files={"hooks/make.py": "def create(context):\n    pass\n", "hooks/post.sh": "#!/bin/sh\n"},
    )
    catalog = load_catalog([tmp_path])
    assert catalog.problems == []
    w = catalog.workshops["WKSHP-Full"]
    assert (w.duration, w.capacity, w.student_range, w.category) == (
        timedelta(minutes=90),
        10,
        (100, 119),
        ("Cloud",),
    )
    assert (w.replay_link, w.replay_id, w.workshop_image, w.badge_image) == (
        "https://youtu.be/x",
        7,
        "https://e.org/w.png",
        "https://e.org/b.png",
    )
    assert (w.presenter, w.presenter_role, w.avatar) == ("Ada", "Engineer", "/img/ada.png")
    assert (w.reset, w.varpass, w.beta, w.active, w.ldap, w.compile) == (
        True,
        True,
        True,
        False,
        True,
        True,
    )
    assert (w.session_type, w.mode, w.priority, w.prerequisites) == (
        "challenge",
        "CHLG",
        5,
        "Python 101",
    )
    assert (
        w.hooks["create"].kind == "python"
        and w.hooks["create"].path == folder.absolute() / "hooks/make.py"
    )
    assert w.hooks["post_copy"].kind == "exec"
    assert w.variables == {"API_URL": "https://api.example.org"}
    assert w.extension == timedelta(minutes=45)
    assert w.image == "quay.io/jupyter/minimal-notebook:latest"
    assert w.limits == {"memory": 1024**3, "cpu": 1.5, "processes": 128, "cpu_time": 7200}
    assert (w.location, w.alternate_location, w.source) == ("mougins", "grenoble", "workshop.yaml")


def test_defaults_and_challenge_folder(tmp_path):
    make_workshop(tmp_path, "CHLG-Puzzle", {"name": "Puzzle", "students": "5-9"})
    w = load_catalog([tmp_path]).workshops["CHLG-Puzzle"]
    assert (w.session_type, w.mode, w.capacity, w.duration, w.extension) == (
        "challenge",
        "CHLG",
        5,
        timedelta(hours=2),
        timedelta(0),
    )


@pytest.mark.parametrize(
    "hook, files",
    [
        pytest.param(
            "create", {"hooks/create.py": "def create(context):\n    pass\n"}, id="hooks-dir-py"
        ),
        pytest.param("cleanup", {"hooks/cleanup.sh": "#!/bin/sh\n"}, id="hooks-dir-sh"),
        pytest.param("post_copy", {"hooks/post-copy.sh": "#!/bin/sh\n"}, id="hooks-dir-dashed"),
        pytest.param("reset", {"reset-WKSHP-Test.sh": "#!/bin/sh\n"}, id="original-name"),
    ],
)
def test_hooks_auto_detected(tmp_path, hook, files):
    make_workshop(tmp_path, files=files)
    w = load_catalog([tmp_path]).workshops["WKSHP-Test"]
    assert list(w.hooks) == [hook]


# ---- value parsers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, expected",
    [
        ("2h", timedelta(hours=2)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
        ("1h 30min", timedelta(minutes=90)),
        (2, timedelta(hours=2)),
        (1.5, timedelta(minutes=90)),
        ("4", timedelta(hours=4)),
    ],
    ids=str,
)
def test_parse_duration(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", [0, -1, "0h", "abc", "", True, None, [2], "2 days"], ids=repr)
def test_parse_duration_refuses(value):
    with pytest.raises(FieldError):
        parse_duration(value)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1-40", (1, 40)),
        ([1, 40], (1, 40)),
        (["52-91"], (52, 91)),
        ({"min": 3, "max": 3}, (3, 3)),
        (" 7 - 9 ", (7, 9)),
    ],
    ids=repr,
)
def test_parse_range(value, expected):
    assert parse_range(value) == expected


@pytest.mark.parametrize("value", ["40-1", [0, 5], "a-b", [1, 2, 3], 5, [1.5, 3], None], ids=repr)
def test_parse_range_refuses(value):
    with pytest.raises(FieldError):
        parse_range(value)


# ---- validation: every case ------------------------------------------------------------------
def _meta(**changes):
    meta = {"name": "T", "duration": "2h", "students": "1-10", "capacity": 5}
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


NB = notebook("#md hi")
VALIDATION = [
    # (id, make_workshop kwargs, field, message part, severity)
    ("unknown-field", {"meta": _meta(capcity=3)}, "capcity", "did you mean 'capacity'", "error"),
    (
        "unknown-nested",
        {"meta": _meta(presenter={"nmae": "x"})},
        "presenter.nmae",
        "did you mean 'name'",
        "error",
    ),
    (
        "capacity-type",
        {"meta": _meta(capacity="many")},
        "capacity",
        "must be a positive integer, got 'many'",
        "error",
    ),
    (
        "capacity-negative",
        {"meta": _meta(capacity=-3)},
        "capacity",
        "must be a positive integer, got -3",
        "error",
    ),
    ("bool-type", {"meta": _meta(active="yes please")}, "active", "must be true or false", "error"),
    (
        "category-type",
        {"meta": _meta(category=5)},
        "category",
        "string or a list of strings",
        "error",
    ),
    ("duration-zero", {"meta": _meta(duration=0)}, "duration", "positive duration", "error"),
    ("duration-bad", {"meta": _meta(duration="soon")}, "duration", "like 2h, 90m", "error"),
    ("extension-bad", {"meta": _meta(extension="-5m")}, "extension", "like 2h, 90m", "error"),
    ("range-bad", {"meta": _meta(students="10-1")}, "students", "1 <= min <= max", "error"),
    (
        "capacity-over-range",
        {"meta": _meta(capacity=11)},
        "capacity",
        "11 is larger than the student range 1-10",
        "error",
    ),
    ("name-missing", {"meta": _meta(name=None)}, "name", "is required", "error"),
    ("range-missing", {"meta": {"name": "T"}}, "students", "is required", "error"),
    (
        "session-type",
        {"meta": _meta(session_type="lecture")},
        "session_type",
        "'workshop' or 'challenge'",
        "error",
    ),
    ("variables-type", {"meta": _meta(variables=[1, 2])}, "variables", "mapping of names", "error"),
    (
        "limits-memory",
        {"meta": _meta(limits={"memory": "lots"})},
        "limits.memory",
        "memory size",
        "error",
    ),
    (
        "limits-unknown",
        {"meta": _meta(limits={"cpus": 2})},
        "limits.cpus",
        "did you mean 'cpu'",
        "error",
    ),
    ("bad-id", {"meta": _meta(id="has space")}, "id", "letters, digits", "error"),
    ("yaml-syntax", {"meta": "name: [unclosed\n"}, "", "invalid YAML: line", "error"),
    ("yaml-not-mapping", {"meta": "- a\n- b\n"}, "", "must be a YAML mapping", "error"),
    ("no-metadata", {"meta": False}, "", "no workshop.yaml", "error"),
    (
        "hook-unknown",
        {"meta": _meta(hooks={"creat": "x.sh"})},
        "hooks.creat",
        "did you mean 'create'",
        "error",
    ),
    (
        "hook-dotdot",
        {"meta": _meta(hooks={"create": "../evil.sh"})},
        "hooks.create",
        "must stay inside",
        "error",
    ),
    (
        "hook-absolute",
        {"meta": _meta(hooks={"create": "/bin/sh"})},
        "hooks.create",
        "absolute path",
        "error",
    ),
    (
        "hook-missing",
        {"meta": _meta(hooks={"create": "nope.sh"})},
        "hooks.create",
        "'nope.sh' not found",
        "error",
    ),
    (
        "hook-python-no-func",
        {
            "meta": _meta(hooks={"create": "h.py"}),
            "files": {"h.py": "def other(context):\n    pass\n"},
        },
        "hooks.create",
        "def create(context: dict)",
        "error",
    ),
    (
        "hook-python-syntax",
        {"meta": _meta(hooks={"reset": "h.py"}), "files": {"h.py": "def reset(:\n"}},
        "hooks.reset",
        "not valid Python",
        "error",
    ),
    (
        "notebooks-dotdot",
        {"meta": _meta(notebooks=["../x.ipynb"])},
        "notebooks",
        "must stay inside",
        "error",
    ),
    (
        "notebooks-absolute",
        {"meta": _meta(notebooks=["/tmp/x.ipynb"])},
        "notebooks",
        "absolute path",
        "error",
    ),
    (
        "notebooks-listed-missing",
        {"meta": _meta(notebooks=["9-Gone.ipynb"])},
        "notebooks",
        "'9-Gone.ipynb' not found",
        "error",
    ),
    ("no-notebooks", {"notebooks": {}}, "notebooks", "no notebook", "error"),
    (
        "no-first-notebook",
        {"notebooks": {"1-Lab.ipynb": NB}},
        "notebooks",
        "0-ReadMeFirst.ipynb is missing",
        "error",
    ),
    (
        "notebook-json",
        {"notebooks": {"0-ReadMeFirst.ipynb": '{"cells": [}'}},
        "",
        "invalid notebook JSON",
        "error",
    ),
    (
        "notebook-schema",
        {
            "notebooks": {
                "0-ReadMeFirst.ipynb": json.dumps(
                    {
                        "cells": [{"cell_type": "bogus"}],
                        "metadata": {},
                        "nbformat": 4,
                        "nbformat_minor": 4,
                    }
                )
            }
        },
        "",
        "invalid notebook",
        "error",
    ),
    (
        "jinja-syntax",
        {"notebooks": {"0-ReadMeFirst.ipynb": notebook("#md ok", "x = 1\ny = {{ STDID ]}")}},
        "cell 2, line 2",
        "Jinja syntax error",
        "error",
    ),
    (
        "jinja-syntax-text-file",
        {"files": {"setup.py": "a = 1\n{% if %}\n"}},
        "line 2",
        "Jinja syntax error",
        "error",
    ),
    (
        "undeclared-variables",
        {
            "notebooks": {
                "0-ReadMeFirst.ipynb": notebook("#md {{ API_KEY }} {{ STDID }} {{ MODEL }}")
            }
        },
        "variables",
        "uses variables no context provides: API_KEY, MODEL",
        "error",
    ),
    (
        "undeclared-in-text-file",
        {"files": {"conf/app.yaml": "url: {{ BASE_URL }}\n"}},
        "variables",
        "BASE_URL",
        "error",
    ),
    (
        "identity-variable",
        {"meta": _meta(variables={"STDID": 3})},
        "variables.STDID",
        "set by wod-hub",
        "warning",
    ),
    (
        "wod-yml-unknown-key",
        {
            "meta": {"name": "T", "range": [1, 5], "capacity": 2, "futureField": 1},
            "metafile": "wod.yml",
        },
        "futureField",
        "unknown wod.yml field",
        "warning",
    ),
    (
        "both-metadata-files",
        {"files": {"wod.yml": "name: x\n"}},
        "",
        "workshop.yaml is used when both exist",
        "warning",
    ),
]


@pytest.mark.parametrize(
    "kwargs, field, text, severity", [pytest.param(*c[1:], id=c[0]) for c in VALIDATION]
)
def test_validation(tmp_path, kwargs, field, text, severity):
    make_workshop(tmp_path, **kwargs)
    catalog = load_catalog([tmp_path])
    problem = find(catalog, field, text, severity)
    assert "WKSHP-Test" in str(problem.path)
    if severity == "warning":
        assert catalog.errors == [], catalog.errors


def test_problem_str_names_file_and_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_workshop(Path("workshops"), "WKSHP-X", _meta(capacity=-3))
    catalog = load_catalog(["workshops"])
    assert "workshops/WKSHP-X/workshop.yaml: capacity: must be a positive integer, got -3" in map(
        str, catalog.errors
    )


def test_jinja_syntax_problem_names_notebook(tmp_path):
    make_workshop(
        tmp_path, notebooks={"0-ReadMeFirst.ipynb": NB, "1-Lab.ipynb": notebook("#md {% if %}")}
    )
    problem = find(load_catalog([tmp_path]), "cell 1, line 1", "Jinja syntax error")
    assert problem.path.name == "1-Lab.ipynb"


@pytest.mark.parametrize("target_kind", ["file", "dir"])
def test_symlink_outside_the_folder(tmp_path, target_kind):
    outside = tmp_path / "secret"
    if target_kind == "dir":
        outside.mkdir()
        (outside / "key.txt").write_text("s3cret")
    else:
        outside.write_text("s3cret")
    root = tmp_path / "ws"
    folder = make_workshop(root)
    (folder / "leak").symlink_to(outside)
    problem = find(load_catalog([root]), "", "symlink pointing outside")
    assert "'leak'" in problem.message


def test_symlink_inside_the_folder_is_fine(tmp_path):
    folder = make_workshop(tmp_path, files={"Pictures/a.txt": "a"})
    (folder / "alias.txt").symlink_to(folder / "Pictures/a.txt")
    assert load_catalog([tmp_path]).problems == []


def test_hook_symlink_outside(tmp_path):
    (tmp_path / "evil.sh").write_text("#!/bin/sh\n")
    root = tmp_path / "ws"
    folder = make_workshop(root, meta=_meta(hooks={"create": "hooks/create.sh"}))
    (folder / "hooks").mkdir()
    (folder / "hooks/create.sh").symlink_to(tmp_path / "evil.sh")
    find(load_catalog([root]), "hooks.create", "symlink pointing outside")


def test_unexecutable_hook_warns(tmp_path):
    make_workshop(
        tmp_path,
        meta=_meta(hooks={"create": "hooks/create"}),
        files={"hooks/create": "#!/bin/sh\n"},
    )
    find(load_catalog([tmp_path]), "hooks.create", "not executable", "warning")


def test_executable_hook_is_fine(tmp_path):
    folder = make_workshop(
        tmp_path,
        meta=_meta(hooks={"create": "hooks/create"}),
        files={"hooks/create": "#!/bin/sh\n"},
    )
    executable(folder / "hooks/create")
    assert load_catalog([tmp_path]).problems == []


def test_overlapping_ranges_name_both(tmp_path):
    make_workshop(tmp_path, "WKSHP-A", _meta(students="1-50"))
    make_workshop(tmp_path, "WKSHP-B", _meta(students="40-60"))
    make_workshop(tmp_path, "WKSHP-C", _meta(students="61-70"))
    catalog = load_catalog([tmp_path])
    [problem] = catalog.errors
    assert problem.field == "students"
    assert (
        "WKSHP-A" in problem.message and "WKSHP-B" in problem.message and "1-50" in problem.message
    )
    assert "40-60" in problem.message


def test_duplicate_ids_in_one_directory(tmp_path):
    make_workshop(tmp_path, "WKSHP-A", _meta(id="WKSHP-Same", students="1-10"))
    make_workshop(tmp_path, "WKSHP-B", _meta(id="WKSHP-Same", students="11-20"))
    catalog = load_catalog([tmp_path])
    problem = find(catalog, "id", "duplicate workshop id 'WKSHP-Same'")
    assert "WKSHP-A" in problem.message and "WKSHP-B" in str(problem.path)
    assert list(catalog.workshops) == ["WKSHP-Same"]


def test_missing_directory(tmp_path):
    find(load_catalog([tmp_path / "nope"]), "", "workshop directory not found")


def test_text_first_notebook_invalid_after_rendering(tmp_path):
    broken = '{"cells": [{% if MODEWS == "WS" %}oops{% endif %}], "metadata": {}, "nbformat": 4, "nbformat_minor": 4}'
    make_workshop(tmp_path, notebooks={"0-ReadMeFirst.ipynb": broken})
    find(load_catalog([tmp_path]), "", "not a valid notebook even after rendering its Jinja text")


# ---- catalog API -------------------------------------------------------------------------------
def test_order_by_priority_then_name(tmp_path):
    make_workshop(tmp_path, "WKSHP-B", _meta(name="Beta", priority=2, students="1-10"))
    make_workshop(tmp_path, "WKSHP-A", _meta(name="Zeta", priority=1, students="11-20"))
    make_workshop(tmp_path, "WKSHP-C", _meta(name="Alpha", priority=2, students="21-30"))
    assert list(load_catalog([tmp_path]).workshops) == ["WKSHP-A", "WKSHP-C", "WKSHP-B"]


@pytest.mark.parametrize(
    "username, expected",
    [
        ("student1", "WKSHP-JupyterNotebooks101"),
        ("student150", "WKSHP-Python101"),
        ("student300", "WKSHP-HubAPI101"),
        ("student301", None),
        ("student0", None),
        ("admin", None),
        ("student12x", None),
        ("", None),
    ],
)
def test_by_username(username, expected):
    workshop = load_catalog([SAMPLES]).by_username(username)
    assert (workshop.id if workshop else None) == expected


def test_raise_for_errors(tmp_path):
    make_workshop(tmp_path, meta=_meta(capacity=0))
    catalog = load_catalog([tmp_path])
    with pytest.raises(CatalogError) as excinfo:
        catalog.raise_for_errors()
    assert excinfo.value.problems == catalog.errors
    assert "capacity: must be a positive integer, got 0" in str(excinfo.value)
    load_catalog([SAMPLES]).raise_for_errors()  # no error: no exception


# ---- overlays ------------------------------------------------------------------------------------
def test_private_overlay(tmp_path):
    public, private = tmp_path / "public", tmp_path / "private"
    (public).mkdir()
    (public / "variables.yaml").write_text(
        "BRANDING: public\nSURVEYURL: https://survey\nWKSHP-B: {TOKEN: none}\n"
    )
    make_workshop(
        public, "WKSHP-A", _meta(students="1-10", variables={"API_KEY": "changeme", "KEEP": 1})
    )
    make_workshop(public, "WKSHP-B", _meta(name="Public B", students="11-20"))
    make_workshop(public, "WKSHP-C", _meta(students="21-30"))
    private.mkdir()
    (private / "variables.yaml").write_text("BRANDING: private\nWKSHP-C: {TOKEN: c-secret}\n")
    # only variables: merged into the public workshop
    (private / "WKSHP-A").mkdir()
    (private / "WKSHP-A" / "variables.yaml").write_text("API_KEY: s3cret\n")
    # metadata holding only variables: merged too
    make_workshop(private, "WKSHP-C", {"variables": {"EXTRA": "x"}}, notebooks={})
    # a full workshop with the same id replaces the public one
    make_workshop(private, "WKSHP-B", _meta(name="Private B", students="11-20"))
    # a new private workshop
    make_workshop(private, "WKSHP-D", _meta(students="31-40"))
    # variables for a workshop nobody defines
    (private / "WKSHP-Ghost").mkdir()
    (private / "WKSHP-Ghost" / "variables.yaml").write_text("X: 1\n")

    catalog = load_catalog([public, private])
    assert catalog.errors == []
    assert catalog.variables == {"BRANDING": "private", "SURVEYURL": "https://survey"}
    assert catalog.workshops["WKSHP-A"].variables == {"API_KEY": "s3cret", "KEEP": 1}
    assert catalog.workshops["WKSHP-A"].path == (public / "WKSHP-A").absolute()
    assert catalog.workshops["WKSHP-B"].name == "Private B"
    assert catalog.workshops["WKSHP-B"].path == (private / "WKSHP-B").absolute()
    assert catalog.workshops["WKSHP-B"].variables == {"TOKEN": "none"}
    assert catalog.workshops["WKSHP-C"].variables == {"EXTRA": "x", "TOKEN": "c-secret"}
    assert set(catalog.workshops) == {"WKSHP-A", "WKSHP-B", "WKSHP-C", "WKSHP-D"}
    find(catalog, "", "variables for unknown workshop 'WKSHP-Ghost'", "warning")


def test_overlay_variables_satisfy_notebooks(tmp_path):
    """A public notebook may use a secret only the private overlay provides."""
    public, private = tmp_path / "public", tmp_path / "private"
    make_workshop(public, notebooks={"0-ReadMeFirst.ipynb": notebook("key = '{{ API_KEY }}'")})
    assert "API_KEY" in str(load_catalog([public]).errors)
    (private / "WKSHP-Test").mkdir(parents=True)
    (private / "WKSHP-Test" / "variables.yaml").write_text("API_KEY: k\n")
    assert load_catalog([public, private]).errors == []


def test_checkpoints_and_hidden_files_ignored(tmp_path):
    make_workshop(
        tmp_path,
        files={
            ".ipynb_checkpoints/0-ReadMeFirst-checkpoint.ipynb": "not json",
            ".hidden.ipynb": "not json",
        },
    )
    catalog = load_catalog([tmp_path])
    assert catalog.problems == []
    assert catalog.workshops["WKSHP-Test"].notebooks == ("0-ReadMeFirst.ipynb",)


def test_notebook_order_natural(tmp_path):
    nbs = {
        n: NB
        for n in (
            "10-Last.ipynb",
            "2-Second.ipynb",
            "0-ReadmeFirst.ipynb",
            "1-First.ipynb",
            "sub/3-Deep.ipynb",
        )
    }
    make_workshop(tmp_path, notebooks=nbs)
    w = load_catalog([tmp_path]).workshops["WKSHP-Test"]
    assert w.notebooks == (
        "0-ReadmeFirst.ipynb",
        "1-First.ipynb",
        "2-Second.ipynb",
        "10-Last.ipynb",
        "sub/3-Deep.ipynb",
    )
    assert w.first_notebook == "0-ReadmeFirst.ipynb"


def test_workshop_is_frozen_and_hashable():
    w = load_catalog([SAMPLES]).workshops["WKSHP-Python101"]
    with pytest.raises(AttributeError):
        w.name = "x"
    assert {w: 1}[w] == 1
    assert os.fspath(w.metadata_path).endswith("WKSHP-Python101/workshop.yaml")
