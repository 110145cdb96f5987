"""``wod-hub fetch-content``: a container (or pod) fetches its student's workshop at start.

    wod-hub fetch-content [--dest DIR] [--force] [-- COMMAND ARGS...]

Asks the hub for the rendered workshop (``GET $JUPYTERHUB_API_URL/wod/content/$JUPYTERHUB_USER``
with ``JUPYTERHUB_API_TOKEN``, the server's own token), extracts it safely (no absolute
paths, no ``..``, no links) into ``DIR/<workshop folder>``, then runs COMMAND in its place
(``exec``), e.g. ``jupyterhub-singleuser``. Content already delivered for the same
registration is kept (the student's work survives a restart) unless ``--force``.

Standard library only, so it also runs as ``python -m wod_hub.cli.content``.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

MARKER = ".wod-content"  # same as wod_hub.provision.MARKER (not imported: stdlib only)


class FetchError(Exception):
    pass


class UnsafeArchive(FetchError):
    """An archive member would land outside the destination or is not a plain file."""


def _member_target(dest: Path, name: str) -> Path:
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or ".." in path.parts or "\\" in name:
        raise UnsafeArchive(f"refusing archive member {name!r}: it leaves the destination")
    return dest.joinpath(*path.parts)


def safe_extract(data: bytes, dest: Path) -> list[Path]:
    """Extract a tar(.gz) of regular files and directories under ``dest``: no absolute paths,
    no ``..``, no links, devices or set-id bits, nothing written through a symlink. Every
    member is checked before anything is written."""
    dest = Path(dest)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        members = tar.getmembers()
        for m in members:
            _member_target(dest, m.name)
            if not (m.isfile() or m.isdir()):
                raise UnsafeArchive(f"refusing archive member {m.name!r}: not a regular file")
        written = []
        real_dest = dest.resolve()
        for m in members:
            target = _member_target(dest, m.name)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.parent.resolve().is_relative_to(real_dest):
                raise UnsafeArchive(f"refusing archive member {m.name!r}: a symlink leads outside")
            src = tar.extractfile(m)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
                shutil.copyfileobj(src, out)
            os.chmod(target, (m.mode & 0o755) | 0o600)
            written.append(target)
    return written


def _request(url: str, token: str, timeout: float) -> tuple[bytes, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read(), {k.lower(): v for k, v in resp.headers.items()}


def fetch(
    api_url: str, token: str, username: str, *, retries: int = 5, timeout: float = 30
) -> tuple[bytes, dict]:
    url = f"{api_url.rstrip('/')}/wod/content/{username}"
    delay = 0.5
    for attempt in range(1, retries + 1):
        try:
            return _request(url, token, timeout)
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:500]
            if e.code < 500 or attempt == retries:
                raise FetchError(
                    f"the hub refused the content ({e.code}) at {url}: {detail}"
                ) from None
        except (urllib.error.URLError, OSError) as e:
            if attempt == retries:
                raise FetchError(
                    f"cannot reach the hub at {url}: {getattr(e, 'reason', e)}"
                ) from None
        time.sleep(delay)
        delay = min(delay * 2, 5)
    raise FetchError(f"no answer from {url}")


def deliver(
    data: bytes, headers: dict, dest: Path, *, force: bool = False
) -> tuple[Path, int | None]:
    """Install the bundle under ``dest``; returns (workshop folder, files written or None when
    the content of this registration was already there)."""
    top = headers.get("x-wod-content-dir", "")
    registration = headers.get("x-wod-registration", "")
    if not top or "/" in top or top in (".", ".."):
        raise FetchError(f"the hub sent no valid content folder name ({top!r})")
    target = dest / top
    marker = target / MARKER
    if not force and marker.is_file() and marker.read_text().strip() == registration:
        return target, None
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wod-fetch-", dir=dest))
    try:
        written = safe_extract(data, tmp)
        extracted = tmp / top
        if not extracted.is_dir():
            raise FetchError(f"the bundle has no {top}/ folder")
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        os.rename(extracted, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, len(written)


def run(args) -> int:
    api_url = args.api_url or os.environ.get("JUPYTERHUB_API_URL", "")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    username = args.user or os.environ.get("JUPYTERHUB_USER", "")
    missing = [
        name
        for name, value in (
            ("JUPYTERHUB_API_URL", api_url),
            ("JUPYTERHUB_API_TOKEN", token),
            ("JUPYTERHUB_USER", username),
        )  # fmt: skip
        if not value
    ]
    command = list(args.command or [])
    if command[:1] == ["--"]:
        command = command[1:]
    if missing:
        print(f"wod-hub fetch-content: {', '.join(missing)} not set: run it inside a server the hub spawned",
              file=sys.stderr)  # fmt: skip
        return 1
    dest = Path(args.dest or os.environ.get("HOME") or ".").expanduser()
    try:
        data, headers = fetch(api_url, token, username, retries=args.retries)
        target, count = deliver(data, headers, dest, force=args.force)
    except (
        Exception
    ) as e:  # every failure is reported as one line; the server must not start half-done
        print(f"wod-hub fetch-content: {e}", file=sys.stderr)
        return 1
    if count is None:
        print(f"wod-hub fetch-content: {target} already holds this workshop; kept", flush=True)
    else:
        print(f"wod-hub fetch-content: {count} files into {target}", flush=True)
    if command:
        sys.stdout.flush()
        os.execvp(command[0], command)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "fetch-content",
        help="fetch this server's workshop from the hub (run inside a container at start)",
        description=__doc__.split("\n\n")[0],
    )
    _arguments(p)
    p.set_defaults(func=run)


def _arguments(p) -> None:
    p.add_argument("--dest", help="directory receiving the workshop folder (default: $HOME)")
    p.add_argument("--force", action="store_true", help="replace content already delivered")
    p.add_argument("--api-url", help="hub API URL (default: $JUPYTERHUB_API_URL)")
    p.add_argument("--user", help="user name (default: $JUPYTERHUB_USER)")
    p.add_argument("--retries", type=int, default=5, help="attempts while the hub is unreachable")
    p.add_argument("command", nargs="*", help="after --: the command to exec once fetched")


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m wod_hub.cli.content")
    _arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
