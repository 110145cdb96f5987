"""Process guard: crypto-miners and runaway processes of student accounts (local spawners).

The original platform ran a process killer every 60 s: known miners, and student
processes above ~98 % of a core for more than 5 minutes. :class:`ProcessGuard` does
the same from the ``wod-hub-lifecycle`` service, on the machine where the students'
processes run (``LocalProcessSpawner``-style spawners; containers are limited by
their runtime instead).

A process is a *student process* only if its real uid is in ``[min_uid, max_uid]``,
its user name matches ``username_pattern`` (``student<N>``), and the uid is neither 0
nor the uid this process runs as (the hub and the service share it): the guard never
touches root's or the hub's own processes, whatever the configuration says.

:func:`kill_user_processes` and :func:`wipe_home` are PURGE's helpers (same rules).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from traitlets import Bool, Float, Integer, List, Unicode, validate
from traitlets.config import LoggingConfigurable

# Miners seen in the wild on notebook platforms; matched against the process name, the
# executable's and argv[0]'s base names (case-insensitive, as a prefix: "xmrig-6.21").
DEFAULT_DENY_LIST = [
    "xmrig",
    "xmr-stak",
    "minerd",
    "cpuminer",
    "ethminer",
    "nbminer",
    "t-rex",
    "lolminer",
    "phoenixminer",
    "nanominer",
    "srbminer",
    "teamredminer",
    "gminer",
    "ccminer",
    "cgminer",
    "bfgminer",
    "kawpowminer",
    "nheqminer",
    "xmrminer",
]
# command lines that only miners have: a stratum pool URL
DEFAULT_DENY_PATTERNS = [r"stratum\+(tcp|ssl|tls)://"]


def monotonic() -> float:
    """Module level so tests can move the guard's clock."""
    return time.monotonic()


@dataclass
class Kill:
    pid: int
    username: str
    name: str
    reason: str
    cmdline: str = ""
    cpu_percent: float | None = None

    def to_json(self) -> dict:
        return {
            "pid": self.pid,
            "process": self.name,
            "reason": self.reason,
            "cmdline": self.cmdline[:300],
            "cpu_percent": self.cpu_percent,
        }


@dataclass
class ScanResult:
    kills: list[Kill] = field(default_factory=list)
    watched: int = 0  # student processes seen


def protected_uids() -> frozenset[int]:
    """Root and the user this process (the hub's service) runs as."""
    return frozenset({0, os.getuid(), os.geteuid()})


class ProcessGuard(LoggingConfigurable):
    """Kill miners and sustained CPU hogs among the students' processes."""

    enabled = Bool(
        True,
        help="""Run the process guard. It acts only on processes of student system accounts
        (see username_pattern, min_uid, max_uid): harmless where students do not run as system users.""",
    ).tag(config=True)

    interval = Float(60.0, help="Seconds between two scans of the process table.").tag(config=True)

    deny_list = List(
        Unicode(),
        default_value=list(DEFAULT_DENY_LIST),
        help="""Program names killed on sight (case-insensitive prefix of the process name,
        executable or argv[0] base name). Extend it with `c.ProcessGuard.deny_list += [...]`.""",
    ).tag(config=True)

    deny_patterns = List(
        Unicode(),
        default_value=list(DEFAULT_DENY_PATTERNS),
        help="Regular expressions: a student process whose command line matches one is killed on sight.",
    ).tag(config=True)

    cpu_threshold = Float(
        98.0, help="CPU use (percent of one core, averaged between scans) counted as 'hot'."
    ).tag(config=True)

    cpu_sustain = Float(
        300.0,
        help="""Seconds a student process may stay hot before it is killed. Measured between scans,
        so it is effective in steps of `interval`.""",
    ).tag(config=True)

    username_pattern = Unicode(
        r"^student\d+$",
        help="Regular expression the owner's user name must match (the seat usernames).",
    ).tag(config=True)

    min_uid = Integer(
        1000, help="Lowest uid the guard may act on (system accounts are below)."
    ).tag(config=True)
    max_uid = Integer(60000, help="Highest uid the guard may act on.").tag(config=True)

    end_registration = Bool(
        False,
        help="""Also end the participant's session (its end path runs at once) when one of their
        processes is killed for being deny-listed. CPU hogs only get their process killed.""",
    ).tag(config=True)

    @validate("username_pattern")
    def _validate_pattern(self, proposal):
        try:
            re.compile(proposal["value"])
        except re.error as e:
            raise ValueError(
                f"ProcessGuard.username_pattern is not a regular expression: {e}"
            ) from None
        return proposal["value"]

    @validate("deny_patterns")
    def _validate_deny_patterns(self, proposal):
        for pattern in proposal["value"]:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(
                    f"ProcessGuard.deny_patterns: {pattern!r} is not a regular expression: {e}"
                ) from None
        return proposal["value"]

    @validate("cpu_threshold")
    def _validate_threshold(self, proposal):
        if proposal["value"] <= 0:
            raise ValueError(
                "ProcessGuard.cpu_threshold must be a positive percentage (100 = one full core)"
            )
        return proposal["value"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._samples: dict[tuple[int, float], deque] = {}

    # ---- which processes ----------------------------------------------------------------
    def is_student(self, uid: int, username: str | None) -> bool:
        if uid in protected_uids() or not self.min_uid <= uid <= self.max_uid:
            return False
        return bool(username) and re.search(self.username_pattern, username) is not None

    def deny_reason(self, name: str, exe: str, cmdline: list[str]) -> str | None:
        names = {name or ""}
        if exe:
            names.add(os.path.basename(exe))
        if cmdline:
            names.add(os.path.basename(cmdline[0]))
        lowered = {n.lower() for n in names if n}
        for entry in self.deny_list:
            entry = entry.lower()
            if any(n.startswith(entry) for n in lowered):
                return f"deny-listed program {entry}"
        joined = " ".join(cmdline or ())
        for pattern in self.deny_patterns:
            if re.search(pattern, joined, re.IGNORECASE):
                return f"command line matches {pattern}"
        return None

    # ---- one scan (blocking: run it in a thread) -----------------------------------------------
    def scan(self) -> ScanResult:
        result = ScanResult()
        now = monotonic()
        seen: set[tuple[int, float]] = set()
        attrs = [
            "pid",
            "name",
            "username",
            "uids",
            "exe",
            "cmdline",
            "cpu_times",
            "create_time",
            "status",
        ]
        for proc in psutil.process_iter(attrs):
            info = proc.info
            if info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            uids = info.get("uids")
            if uids is None or not self.is_student(uids.real, info.get("username")):
                continue
            result.watched += 1
            cmdline = info.get("cmdline") or []
            reason = self.deny_reason(info.get("name") or "", info.get("exe") or "", cmdline)
            key = (info["pid"], info.get("create_time") or 0.0)
            seen.add(key)
            cpu = None
            if reason is None:
                cpu, reason = self._check_cpu(key, info.get("cpu_times"), now)
            if reason is not None:
                kill = Kill(
                    info["pid"],
                    info["username"],
                    info.get("name") or "?",
                    reason,
                    " ".join(cmdline),
                    cpu,
                )
                if self._kill_tree(proc):
                    result.kills.append(kill)
                    self.log.warning(
                        "Process guard: killed %s's process %d (%s): %s",
                        kill.username,
                        kill.pid,
                        kill.name,
                        reason,
                    )
                self._samples.pop(key, None)
        for key in set(self._samples) - seen:
            del self._samples[key]
        return result

    def _check_cpu(self, key, cpu_times, now: float) -> tuple[float | None, str | None]:
        """Average CPU over the last ``cpu_sustain`` seconds (from the samples of earlier
        scans): a short dip does not reset the clock, a short burst does not kill."""
        if cpu_times is None:
            return None, None
        used = cpu_times.user + cpu_times.system
        samples = self._samples.setdefault(key, deque())
        samples.append((now, used))
        # keep one sample at least cpu_sustain old (the window's start), drop older ones
        while len(samples) > 2 and now - samples[1][0] >= self.cpu_sustain:
            samples.popleft()
        start_at, start_used = samples[0]
        elapsed = now - start_at
        if elapsed <= 0:
            return None, None
        percent = round(100.0 * (used - start_used) / elapsed, 1)
        if elapsed >= self.cpu_sustain and percent >= self.cpu_threshold:
            return (
                percent,
                f"above {self.cpu_threshold:g}% CPU for {elapsed:.0f}s (average {percent:g}%)",
            )
        return percent, None

    def _kill_tree(self, proc: psutil.Process) -> bool:
        try:
            children = proc.children(recursive=True)
        except psutil.Error:
            children = []
        killed = False
        for p in [proc, *children]:
            try:
                if p.uids().real in protected_uids():
                    continue
                p.send_signal(signal.SIGKILL)
                killed = True
            except psutil.NoSuchProcess:
                continue
            except psutil.Error as e:
                self.log.error("Process guard: cannot kill process %d: %s", p.pid, e)
        return killed


# ---- PURGE helpers ---------------------------------------------------------------------


def system_uid(username: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(username).pw_uid
    except KeyError:
        return None


def kill_user_processes(username: str, min_uid: int = 1000) -> list[int]:
    """SIGKILL every process of the system account ``username`` (never root's, never the
    hub's own user, never an account below ``min_uid``). Returns the pids killed."""
    uid = system_uid(username)
    if uid is None or uid in protected_uids() or uid < min_uid:
        return []
    killed = []
    for proc in psutil.process_iter(["pid", "uids", "status"]):
        uids = proc.info.get("uids")
        if uids is None or uid not in (uids.real, uids.effective):
            continue
        if proc.info.get("status") == psutil.STATUS_ZOMBIE:  # dead already, waiting to be reaped
            continue
        try:
            proc.send_signal(signal.SIGKILL)
            killed.append(proc.info["pid"])
        except psutil.NoSuchProcess:
            pass
    return killed


class UnsafeHome(ValueError):
    pass


def wipe_home(home: Path, username: str) -> int:
    """Empty a student's home directory (kept, with its owner and mode). Refuses any
    directory not named after the student, a symlink, or a system path. Returns the
    number of entries removed."""
    home = Path(home)
    if home.name != username:
        raise UnsafeHome(f"refusing to wipe {home}: the directory is not named after {username}")
    if home.is_symlink():
        raise UnsafeHome(f"refusing to wipe {home}: it is a symlink")
    resolved = home.resolve()
    if (
        len(resolved.parts) < 3
        or resolved == Path.home().resolve()
        or resolved == Path.cwd().resolve()
    ):
        raise UnsafeHome(
            f"refusing to wipe {resolved}: too close to the file system root or the hub's own directory"
        )
    if not resolved.is_dir():
        return 0
    removed = 0
    for entry in resolved.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    return removed
