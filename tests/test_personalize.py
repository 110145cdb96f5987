"""Personalization: variables, per-cell sandboxed rendering, files kept, copied or excluded."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

from tests.fixtures.builders import ORIGINAL, SAMPLES, executable, make_workshop, notebook, tiny_png
from wod_hub.catalog import load_catalog
from wod_hub.personalize import (
    CACHE,
    RenderError,
    StudentContext,
    build_variables,
    render_workshop,
    render_workshop_files,
    sample_context,
)

EXPIRES = datetime(2030, 1, 2, 15, 30)


def ctx_for(number: int = 3, **changes) -> StudentContext:
    values = dict(
        student_number=number,
        username=f"student{number}",
        password="pw-" + str(number),
        participant_first_name="Ada",
        participant_last_name="Lovelace",
        participant_email="ada@example.org",
        hub_url="https://hub.example.org/",
        expires_at=EXPIRES,
        branding_name="Brand",
        branding_url="https://brand.example.org",
        branding_logo="https://brand.example.org/logo.png",
        survey_url="https://survey.example.org",
    )
    values.update(changes)
    return StudentContext(**values)


def load_one(root, workshop_id="WKSHP-Test"):
    catalog = load_catalog([root])
    assert catalog.errors == [], catalog.errors
    return catalog.workshops[workshop_id], catalog.variables


def cell_sources(data: bytes) -> list[str]:
    nb = nbformat.reads(data.decode(), as_version=4)
    nbformat.validate(nb)
    return [c.source for c in nb.cells]


# ---- variables -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [
        ("STDID", 3),
        ("PASSSTU", "pw-3"),
        ("WODBEEXTFQDN", "hub.example.org"),
        ("HTTPPORT", 443),
        ("BRANDING", "Brand"),
        ("BRANDINGURL", "https://brand.example.org"),
        ("BRANDINGLOGO", "![Brand](https://brand.example.org/logo.png)"),
        ("SURVEYURL", "https://survey.example.org"),
        ("SURVEYCHALURL", "https://survey.example.org"),
        ("MODEWS", "WS"),
        ("hub_url", "https://hub.example.org/"),
        ("expires_at", EXPIRES),
        ("student", {"number": 3, "username": "student3", "password": "pw-3"}),
        (
            "participant",
            {
                "first_name": "Ada",
                "last_name": "Lovelace",
                "name": "Ada Lovelace",
                "email": "ada@example.org",
            },
        ),
    ],
)
def test_build_variables(tmp_path, name, expected):
    workshop, _ = load_one(make_workshop(tmp_path).parent)
    assert build_variables(workshop, ctx_for(), {})[name] == expected


def test_workshop_variables_and_modes(tmp_path):
    make_workshop(tmp_path, "CHLG-Quiz", {"name": "Quiz", "students": "1-9", "duration": "90m"})
    workshop, _ = load_one(tmp_path, "CHLG-Quiz")
    variables = build_variables(workshop, ctx_for(hub_url="http://localhost:8000/"), {})
    assert variables["MODEWS"] == "CHLG"
    assert variables["HTTPPORT"] == 8000
    assert variables["WODBEEXTFQDN"] == "localhost"
    assert variables["workshop"]["id"] == "CHLG-Quiz"
    assert variables["workshop"]["duration_hours"] == 1.5
    assert variables["workshop"]["duration_minutes"] == 90


def test_variable_precedence(tmp_path):
    make_workshop(
        tmp_path,
        meta={
            "name": "T",
            "students": "1-9",
            "variables": {"A": "workshop", "STDID": 999, "HTTPPORTBASE": 9000},
        },
    )
    workshop, _ = load_one_lenient(tmp_path)
    catalog_vars = {
        "A": "catalog",
        "B": "catalog",
        "BRANDING": "file-brand",
        "SURVEYURL": "file-survey",
    }
    ctx = ctx_for(survey_url="", extra={"B": "extra", "PASSSTU": "forged"})
    variables = build_variables(workshop, ctx, catalog_vars)
    assert variables["A"] == "workshop"  # workshop beats catalog
    assert variables["B"] == "extra"  # per-student extra beats files
    assert variables["BRANDING"] == "Brand"  # the hub's setting beats the file default
    assert (
        variables["SURVEYURL"] == "file-survey"
    )  # ...and the file fills in when the hub sets none
    assert (
        variables["STDID"] == 3 and variables["PASSSTU"] == "pw-3"
    )  # identity cannot be overridden
    assert variables["HTTPPORT"] == 9003  # one port per student from HTTPPORTBASE


def load_one_lenient(root):
    catalog = load_catalog([root])
    return next(iter(catalog.workshops.values())), catalog.variables


# ---- rendering notebooks -----------------------------------------------------------------------
def test_notebook_cells_rendered_and_valid(tmp_path):
    nb = notebook(
        "#md Hello {{ participant.name }}, you are student{{ STDID }}",
        "user = 'student{{ STDID }}'\npassword = '{{ PASSSTU }}'\nurl = 'https://{{ WODBEEXTFQDN }}:{{ HTTPPORT }}'",
        "print('no template here')",
        outputs=True,
    )
    root = make_workshop(tmp_path, notebooks={"0-ReadMeFirst.ipynb": nb}).parent
    workshop, variables = load_one(root)
    files = render_workshop_files(
        workshop, ctx_for(7, hub_url="https://hub.example.org/"), variables
    )
    sources = cell_sources(files["0-ReadMeFirst.ipynb"])
    assert sources[0] == "Hello Ada Lovelace, you are student7"
    assert sources[1] == "user = 'student7'\npassword = 'pw-7'\nurl = 'https://hub.example.org:443'"
    out = nbformat.reads(files["0-ReadMeFirst.ipynb"].decode(), as_version=4)
    assert out.cells[1].outputs[0].text == "42\n" and out.cells[1].execution_count == 1


@pytest.mark.parametrize(
    "workshop_id", ["WKSHP-JupyterNotebooks101", "WKSHP-Python101", "WKSHP-HubAPI101"]
)
def test_samples_render_valid_notebooks(tmp_path, workshop_id):
    catalog = load_catalog([SAMPLES])
    workshop = catalog.workshops[workshop_id]
    number = workshop.student_range[0] + 5
    written = render_workshop(workshop, ctx_for(number), tmp_path, catalog.variables)
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert set(workshop.notebooks) <= names and "Pictures/banner.png" in names
    for path in written:
        if path.suffix == ".ipynb":
            text = path.read_text()
            nbformat.validate(nbformat.reads(text, as_version=4))
            assert (
                "{{" not in text.replace("{{ name }}", "")
                or workshop_id == "WKSHP-JupyterNotebooks101"
            )
    readme = (tmp_path / "0-ReadMeFirst.ipynb").read_text()
    assert f"student{number}" in readme and "hub.example.org" in readme


def test_hub_api_sample_checks_the_right_student(tmp_path):
    catalog = load_catalog([SAMPLES])
    files = render_workshop_files(
        catalog.workshops["WKSHP-HubAPI101"], ctx_for(250), catalog.variables
    )
    lab = "".join(cell_sources(files["1-Your-Token.ipynb"]))
    assert (
        "assert me['name'] == 'student250'" in lab
        and "/user'" in lab
        and "JUPYTERHUB_API_TOKEN" in lab
    )
    assert "/users/student251" in "".join(cell_sources(files["2-Status-Codes-and-Scopes.ipynb"]))


@pytest.mark.parametrize(
    "folder, mode, present, absent",
    [
        pytest.param(
            "WKSHP-Test",
            "WS",
            "[survey](https://survey.example.org)",
            "coding challenge",
            id="workshop",
        ),
        pytest.param("CHLG-Test", "CHLG", "coding challenge", "[survey](", id="challenge"),
    ],
)
def test_conclusion_switches_on_modews(tmp_path, folder, mode, present, absent):
    source = (SAMPLES / "WKSHP-Python101" / "4-Conclusion.ipynb").read_text()
    make_workshop(tmp_path, folder, notebooks={"0-ReadMeFirst.ipynb": source})
    workshop, _ = load_one(tmp_path, folder)
    assert workshop.mode == mode
    text = "".join(
        cell_sources(render_workshop_files(workshop, ctx_for(), {})["0-ReadMeFirst.ipynb"])
    )
    assert present in text and absent not in text


def test_raw_blocks_stay_literal(tmp_path):
    nb = notebook("{% raw %}f = 'Hello {{ name }} {% if x %}'{% endraw %} # {{ STDID }}")
    root = make_workshop(tmp_path, notebooks={"0-ReadMeFirst.ipynb": nb}).parent
    workshop, _ = load_one(root)
    [source] = cell_sources(render_workshop_files(workshop, ctx_for(), {})["0-ReadMeFirst.ipynb"])
    assert source == "f = 'Hello {{ name }} {% if x %}' # 3"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "{{ STDID.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ student.__class__.__init__ }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "{{ expires_at.__class__.__subclasses__() }}",
        "{{ lipsum.__globals__['os'] }}",
    ],
)
def test_sandbox_escapes_refused(tmp_path, template):
    nb = notebook("#md fine", f"x = 1\ny = 2\nz = {template}")
    root = make_workshop(
        tmp_path, notebooks={"0-ReadMeFirst.ipynb": notebook("#md ok"), "1-Evil.ipynb": nb}
    ).parent
    workshop, _ = load_one_lenient(root)
    with pytest.raises(RenderError) as excinfo:
        render_workshop(workshop, ctx_for(), tmp_path / "out")
    error = excinfo.value
    assert (error.file, error.cell, error.line) == ("1-Evil.ipynb", 2, 3), str(error)
    assert str(error).startswith("1-Evil.ipynb: cell 2, line 3: ")
    assert not (tmp_path / "out").exists()  # nothing written when anything fails


@pytest.mark.parametrize(
    "first, last",
    [
        ("{{ 7*7 }}", "{% raw %}"),
        ("{% for x in range(3) %}x{% endfor %}", "Lovelace"),
        ('Ada", "cell_type": "raw', 'O\'Brien \\ "q"'),
    ],
    ids=["expression", "statement", "json-breaker"],
)
def test_participant_text_stays_literal(tmp_path, first, last):
    root = make_workshop(
        tmp_path,
        notebooks={
            "0-ReadMeFirst.ipynb": notebook(
                "#md Hi {{ participant.first_name }} {{ participant.last_name }}"
            ),
            # an original notebook that is Jinja text first: the value lands inside a JSON string
            "1-Text.ipynb": (ORIGINAL / "WKSHP-API101" / "2-Conclusion.ipynb")
            .read_text()
            .replace("student{{ STDID }}", "{{ participant.name }}"),
        },
        files={
            "notes.md": "Name: {{ participant.name }}\n",
            "settings.json.j2": '{"user": "{{ participant.name }}", "id": {{ STDID }}}\n',
        },
    ).parent
    workshop, _ = load_one(root)
    files = render_workshop_files(
        workshop, ctx_for(participant_first_name=first, participant_last_name=last), {}
    )
    assert cell_sources(files["0-ReadMeFirst.ipynb"]) == [f"Hi {first} {last}"]
    assert cell_sources(files["1-Text.ipynb"])[0].startswith(f"# Conclusion, {first} {last}\n")
    assert files["notes.md"].decode() == f"Name: {first} {last}\n"
    assert json.loads(files["settings.json"]) == {"user": f"{first} {last}", "id": 3}


def test_undefined_variable_at_render_time(tmp_path):
    nb = notebook("#md ok", "a = 1\nb = {{ student.nickname }}")
    root = make_workshop(tmp_path, notebooks={"0-ReadMeFirst.ipynb": nb}).parent
    workshop, _ = load_one(root)
    with pytest.raises(RenderError) as excinfo:
        render_workshop_files(workshop, ctx_for(), {})
    assert (excinfo.value.cell, excinfo.value.line) == (2, 2)
    assert "nickname" in excinfo.value.message


def test_text_first_original_notebook(tmp_path):
    catalog = load_catalog([ORIGINAL])
    workshop = catalog.workshops["WKSHP-API101"]
    files = render_workshop_files(workshop, ctx_for(4, survey_url=""), {"SURVEYURL": "https://s"})
    sources = cell_sources(files["2-Conclusion.ipynb"])
    assert sources == ["# Conclusion, student4\nPlease fill in the survey: https://s"]
    basics = cell_sources(files["1-API-Basics.ipynb"])
    assert "password = 'pw-4'" in basics[1] and "hub.example.org:443" in basics[1]
    assert basics[2].startswith("template = 'Hello {{ name }}, {% if x %}yes{% endif %}'")
    assert basics[3] == "Workshop mode"


# ---- files ----------------------------------------------------------------------------------------
def test_files_copied_rendered_or_excluded(tmp_path):
    png = tiny_png()
    blob = bytes(range(256)) + b"{{ STDID }}"  # binary: never a template, even with braces
    root = tmp_path / "ws"
    folder = make_workshop(
        root,
        meta={"name": "T", "students": "1-9", "hooks": {"post_copy": "scripts/post.sh"}},
        files={
            "Pictures/logo.png": png,
            "data/blob.bin": blob,
            "latin1.txt": "caf\xe9 {{ STDID }}".encode("latin-1"),
            "run.sh": "#!/bin/sh\necho student{{ STDID }}\n",
            "plain.sh": "#!/bin/sh\necho hi\n",
            "config.ini.j2": "[user]\nname = student{{ STDID }}\n",
            "variables.yaml": "X: 1\n",
            "hooks/create.py": "def create(context):\n    pass\n",
            "scripts/post.sh": "#!/bin/sh\n",
            "cleanup-WKSHP-Test.sh": "#!/bin/sh\n",
            ".ipynb_checkpoints/0-ReadMeFirst-checkpoint.ipynb": "{}",
            ".secret": "x",
            "Pictures/.DS_Store": "x",
            "__pycache__/x.pyc": b"\x00",
        },
    )
    executable(folder / "run.sh")
    executable(folder / "plain.sh")
    executable(folder / "scripts/post.sh")
    executable(folder / "cleanup-WKSHP-Test.sh")
    os.chmod(folder / "Pictures/logo.png", 0o600)
    workshop, variables = load_one(root)
    dest = tmp_path / "home"
    written = render_workshop(workshop, ctx_for(5), dest, variables)
    names = sorted(p.relative_to(dest).as_posix() for p in written)
    assert names == [
        "0-ReadMeFirst.ipynb",
        "Pictures/logo.png",
        "config.ini",
        "data/blob.bin",
        "latin1.txt",
        "plain.sh",
        "run.sh",
    ]
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == names
    assert (dest / "Pictures/logo.png").read_bytes() == png
    assert (dest / "data/blob.bin").read_bytes() == blob
    assert (dest / "latin1.txt").read_bytes() == "caf\xe9 {{ STDID }}".encode("latin-1")
    assert (dest / "run.sh").read_text() == "#!/bin/sh\necho student5\n"
    assert (dest / "config.ini").read_text() == "[user]\nname = student5\n"
    for name, mode in [("run.sh", 0o755), ("plain.sh", 0o755), ("Pictures/logo.png", 0o600)]:
        assert stat.S_IMODE((dest / name).stat().st_mode) == mode, name
    files = render_workshop_files(workshop, ctx_for(5), variables)
    assert sorted(files) == names
    assert all(files[n] == (dest / n).read_bytes() for n in names)


def test_symlink_outside_never_delivered(tmp_path):
    (tmp_path / "secret.txt").write_text("s3cret")
    folder = make_workshop(tmp_path / "ws")
    (folder / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "notes.txt").write_text("mine")
    (folder / "alias.txt").symlink_to(folder / "notes.txt")
    (folder / "hooks").mkdir()
    (folder / "hooks" / "create.sh").write_text("#!/bin/sh\n# secret setup\n")
    (folder / "hook-alias.sh").symlink_to(folder / "hooks" / "create.sh")
    workshop, _ = load_one_lenient(tmp_path / "ws")
    assert "create" in workshop.hooks
    files = render_workshop_files(workshop, ctx_for(), {})
    assert sorted(files) == ["0-ReadMeFirst.ipynb", "alias.txt", "notes.txt"]
    assert files["alias.txt"] == b"mine"


def test_template_cache_follows_file_changes(tmp_path):
    folder = make_workshop(tmp_path, files={"note.txt": "v1 {{ STDID }}\n"})
    workshop, _ = load_one(tmp_path)
    assert render_workshop_files(workshop, ctx_for(), {})["note.txt"] == b"v1 3\n"
    (folder / "note.txt").write_text("version two {{ STDID }}\n")
    os.utime(folder / "note.txt", ns=(1, 1))  # a different mtime even on coarse clocks
    assert render_workshop_files(workshop, ctx_for(), {})["note.txt"] == b"version two 3\n"


def test_cache_compiles_once(tmp_path, monkeypatch):
    make_workshop(tmp_path)
    workshop, _ = load_one(tmp_path)
    CACHE.clear()
    calls = []
    import wod_hub.personalize as personalize

    real = personalize._compile_file
    monkeypatch.setattr(
        personalize, "_compile_file", lambda item: calls.append(item.relpath) or real(item)
    )
    for n in range(1, 6):
        render_workshop_files(workshop, ctx_for(n), {})
    assert calls == ["0-ReadMeFirst.ipynb"]


def test_rerender_overwrites(tmp_path):
    make_workshop(tmp_path / "ws")
    workshop, _ = load_one(tmp_path / "ws")
    render_workshop(workshop, ctx_for(1), tmp_path / "home")
    render_workshop(workshop, ctx_for(2), tmp_path / "home")
    [source] = cell_sources((tmp_path / "home/0-ReadMeFirst.ipynb").read_bytes())
    assert source == "Hello student2"
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["0-ReadMeFirst.ipynb"]


def test_sample_context_is_in_range():
    workshop = load_catalog([SAMPLES]).workshops["WKSHP-Python101"]
    ctx = sample_context(workshop)
    assert (ctx.student_number, ctx.username) == (101, "student101")
    assert json.loads(render_workshop_files(workshop, ctx)["0-ReadMeFirst.ipynb"])["nbformat"] == 4


@pytest.mark.parametrize(
    "sources",
    [
        pytest.param((), id="no-cells"),
        pytest.param(
            ("#md café ☕ {{ STDID }}", "print('ünï')\n\n", "", "#md "), id="unicode-blank"
        ),
        pytest.param(("x = {{ STDID }}\r\ny = 2", "#md plain\n"), id="crlf"),
    ],
)
def test_output_is_what_nbformat_writes(tmp_path, sources):
    """Pre-encoded cells and spliced sources give byte for byte what nbformat.write gives."""
    nbs = {"0-ReadMeFirst.ipynb": notebook(*sources, outputs=True)}
    root = make_workshop(tmp_path, notebooks=nbs).parent
    workshop, _ = load_one(root)
    data = render_workshop_files(workshop, ctx_for(), {})["0-ReadMeFirst.ipynb"]
    nb = nbformat.reads(data.decode(), as_version=4)
    nbformat.validate(nb)
    assert data == (nbformat.writes(nb) + "\n").encode()
    assert len(nb.cells) == len(sources)


# ---- the sample workshops run --------------------------------------------------------------------
def execute(path, cwd):
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(
        nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def outputs_text(nb) -> str:
    return "\n".join(
        o.get("text", "") + json.dumps(o.get("data", {}))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


@pytest.mark.slow
@pytest.mark.parametrize("workshop_id", ["WKSHP-JupyterNotebooks101", "WKSHP-Python101"])
def test_sample_notebooks_execute(tmp_path, workshop_id):
    catalog = load_catalog([SAMPLES])
    workshop = catalog.workshops[workshop_id]
    number = workshop.student_range[0] + 1
    render_workshop(workshop, ctx_for(number), tmp_path, catalog.variables)
    for name in workshop.notebooks:
        if name == "3-Exercise.ipynb":
            continue
        nb = execute(tmp_path / name, tmp_path)
        assert nb.cells, name
    if workshop_id == "WKSHP-Python101":
        assert "student102" in outputs_text(
            execute(tmp_path / "1-Types-and-Control-Flow.ipynb", tmp_path)
        )


@pytest.mark.slow
def test_python101_exercise_is_checked(tmp_path):
    from nbclient.exceptions import CellExecutionError

    catalog = load_catalog([SAMPLES])
    render_workshop(catalog.workshops["WKSHP-Python101"], ctx_for(150), tmp_path, catalog.variables)
    path = tmp_path / "3-Exercise.ipynb"
    with pytest.raises(CellExecutionError, match="NotImplementedError"):
        execute(path, tmp_path)  # the stub as delivered fails the check
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[1].source = (
        "from collections import Counter\n\n"
        "def word_count(text):\n"
        "    return dict(Counter(w.strip('.,;:!?') for w in text.lower().split()))\n"
    )
    nbformat.write(nb, str(path))
    assert "All good, student150!" in outputs_text(execute(path, tmp_path))


@pytest.mark.slow
def test_hub_api_sample_against_a_real_hub(tmp_path, hub_factory):
    """HubAPI101 executed by a single-user process a real JupyterHub spawned, with the token and
    API URL the hub gave it: the notebook finds out it is the student it was rendered for."""
    import sys
    import time

    catalog = load_catalog([SAMPLES])
    workshop = catalog.workshops["WKSHP-HubAPI101"]
    rendered, results = tmp_path / "rendered", tmp_path / "results"
    results.mkdir()
    render_workshop(workshop, ctx_for(205), rendered, catalog.variables)
    runner = Path(__file__).parent / "fixtures" / "run_notebooks_then_serve.py"
    hub = hub_factory(
        stock=True,
        spawner=f"""
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [{sys.executable!r}, {str(runner)!r}]
c.Spawner.default_url = ""
c.Spawner.http_timeout = 60
c.Spawner.environment = {{"WOD_TEST_NOTEBOOKS": {str(rendered)!r}, "WOD_TEST_RESULTS": {str(results)!r}}}
""",
    )
    assert hub.api("POST", "/users/student205").status_code == 201
    assert hub.api("POST", "/users/student206").status_code == 201
    assert hub.api("POST", "/users/student205/server").status_code in (201, 202)
    deadline = time.monotonic() + 180
    while not (results / "results.json").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (results / "results.json").exists(), hub.log_tail()
    outcome = json.loads((results / "results.json").read_text())
    assert outcome == {name: "ok" for name in workshop.notebooks}, outcome
    token_lab = outputs_text(nbformat.read(str(results / "1-Your-Token.ipynb"), as_version=4))
    assert "The hub says you are student205" in token_lab
    scopes_lab = outputs_text(
        nbformat.read(str(results / "2-Status-Codes-and-Scopes.ipynb"), as_version=4)
    )
    assert "GET /users -> 403" in scopes_lab and "GET /users/student205 -> 200" in scopes_lab
    assert "404" in scopes_lab  # the neighbour, student206, exists but is not yours


def test_variables_keyword_as_in_design(tmp_path):
    """DESIGN.md spells the catalog variables argument ``variables=``; both spellings work."""
    make_workshop(tmp_path / "ws", notebooks={"0-ReadMeFirst.ipynb": notebook("#md {{ SITE }}")})
    workshop, _ = load_one_lenient(tmp_path / "ws")
    render_workshop(workshop, ctx_for(), tmp_path / "home", variables={"SITE": "grenoble"})
    assert cell_sources((tmp_path / "home/0-ReadMeFirst.ipynb").read_bytes()) == ["grenoble"]
    files = render_workshop_files(workshop, ctx_for(), {"SITE": "mougins"})
    assert cell_sources(files["0-ReadMeFirst.ipynb"]) == ["mougins"]
