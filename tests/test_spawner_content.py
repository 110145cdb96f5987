"""The content bundle and its safe extraction by ``wod-hub fetch-content`` (no hub needed)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.test_spawner import make_workshop
from wod_hub.catalog import load_catalog
from wod_hub.cli.content import FetchError, UnsafeArchive, deliver, safe_extract
from wod_hub.personalize import render_workshop_files, sample_context
from wod_hub.provision import MARKER, content_bundle


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(
    name: str, kind=tarfile.REGTYPE, data: bytes | None = b"x", **kw
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in kw.items():
        setattr(info, k, v)
    return info, data if kind == tarfile.REGTYPE else None


UNSAFE = [
    pytest.param([member("../outside.txt")], id="dot-dot"),
    pytest.param([member("/etc/evil")], id="absolute"),
    pytest.param([member("WKSHP/../../x")], id="dot-dot-inside"),
    pytest.param([member("WKSHP/link", tarfile.SYMTYPE, linkname="/etc/passwd")], id="symlink"),
    pytest.param([member("WKSHP/hard", tarfile.LNKTYPE, linkname="/etc/passwd")], id="hardlink"),
    pytest.param([member("WKSHP/dev", tarfile.CHRTYPE)], id="device"),
    pytest.param([member("WKSHP/ok.txt"), member("../late.txt")], id="bad-member-after-good-one"),
]


@pytest.mark.parametrize("members", UNSAFE)
def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path, members):
    dest = tmp_path / "home"
    dest.mkdir()
    with pytest.raises(UnsafeArchive):
        safe_extract(tar_of(*members), dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "late.txt").exists()


def test_set_id_bits_are_dropped_and_symlinked_parents_refused(tmp_path):
    dest = tmp_path / "home"
    dest.mkdir()
    [path] = safe_extract(tar_of(member("W/tool", data=b"#!/bin/sh\n", mode=0o6777)), dest)
    assert path.stat().st_mode & 0o7777 == 0o755
    (dest / "escape").symlink_to(tmp_path)
    with pytest.raises(UnsafeArchive):
        safe_extract(tar_of(member("escape/planted.txt")), dest)
    assert not (tmp_path / "planted.txt").exists()


def test_bundle_round_trip_and_redelivery(tmp_path):
    make_workshop(tmp_path / "ws", "WKSHP-Bundle", "1-5")
    workshop = load_catalog([tmp_path / "ws"]).workshops["WKSHP-Bundle"]
    ctx = sample_context(workshop, 2)
    files = render_workshop_files(workshop, ctx)
    data = content_bundle(workshop, files, "WKSHP-Bundle", registration_id=7)
    headers = {"x-wod-content-dir": "WKSHP-Bundle", "x-wod-registration": "7"}
    dest = tmp_path / "home"
    target, count = deliver(data, headers, dest)
    assert count == len(files) + 1 and (target / MARKER).read_text() == "7\n"
    assert (target / "run.sh").read_text() == "#!/bin/sh\necho student2\n"
    assert (target / "run.sh").stat().st_mode & 0o111  # executable bits kept
    (target / "work.txt").write_text("mine")
    assert deliver(data, headers, dest) == (target, None)  # same registration: kept
    assert (target / "work.txt").exists()
    _, count = deliver(data, {**headers, "x-wod-registration": "8"}, dest)  # a new participant
    assert count and not (target / "work.txt").exists()
    with pytest.raises(FetchError):
        deliver(data, {**headers, "x-wod-content-dir": "../x"}, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["WKSHP-Bundle"]  # no temporary left
    assert isinstance(target, Path)
