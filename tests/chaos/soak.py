"""The soak's resource sampler and its slopes (``./run tests -m soak``, :mod:`test_soak`).

:class:`Sampler` reads, every few seconds, each live process of a chaos :class:`System`: its
open file descriptors (entries of ``/proc/<pid>/fd``), threads and resident memory (``Threads``
and ``VmRSS`` of ``/proc/<pid>/status``). :func:`slopes` fits, per process, one least-squares
line per resource through the samples inside a window (after a warm-up, while the publishers
publish), with one intercept per incarnation (a process killed and restarted starts again from
its own baseline; its restarts are not growth) and a common slope, given per hour.

Nothing here fails a run: the slopes are reported (printed, and written as JSON), with a flag
``rising`` where even the lowest value of the last quarter of an incarnation's window is above
the highest of its first quarter. Why no bound: see ``docs/outbox.rst`` (the soak).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: What is sampled, in the order of :class:`Sample`'s values.
RESOURCES = ("fds", "threads", "rss_mib")


@dataclass(frozen=True)
class Sample:
    """One reading of one process: wall-clock time, name, pid (its incarnation) and values."""

    t: float
    name: str
    pid: int
    fds: int
    threads: int
    rss_mib: float

    def value(self, resource: str) -> float:
        return float(getattr(self, resource))


def read(pid: int) -> tuple[int, int, float] | None:
    """(open descriptors, threads, RSS in MiB) of a live process; None if it is gone, a zombie
    or not yet the program (still ``ip netns exec``)."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("Name", "").strip() == "ip" or "VmRSS" not in fields:
        return None
    return fds, int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


class Sampler:
    """A thread sampling every process of ``system`` (a :class:`tests.chaos.harness.System`)
    every ``every`` seconds, from :meth:`start` until :meth:`stop`."""

    def __init__(self, system: Any, every: float = 5.0) -> None:
        self.system = system
        self.every = every
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling; returns once the thread has ended (at most one reading later)."""
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            with self.system.lock:
                live = [(name, proc.proc.pid) for name, proc in self.system.procs.items()
                        if proc.proc.poll() is None]
            now = time.time()
            for name, pid in live:
                values = read(pid)
                if values is not None:
                    self.samples.append(Sample(now, name, pid, *values))


def _fit(series: list[list[Sample]], resource: str) -> float | None:
    """The common least-squares slope (per second) of several series, one intercept each."""
    num = den = 0.0
    for points in series:
        ts = [s.t for s in points]
        ys = [s.value(resource) for s in points]
        t_mean, y_mean = sum(ts) / len(ts), sum(ys) / len(ys)
        num += sum((t - t_mean) * (y - y_mean) for t, y in zip(ts, ys, strict=True))
        den += sum((t - t_mean) ** 2 for t in ts)
    return num / den if den > 0 else None


def _rising(points: list[Sample], resource: str) -> bool:
    """Is the least value of the last quarter above the greatest of the first quarter?"""
    quarter = max(1, len(points) // 4)
    first, last = points[:quarter], points[-quarter:]
    return min(s.value(resource) for s in last) > max(s.value(resource) for s in first)


def slopes(samples: list[Sample], start: float, end: float, warmup: float,
           min_points: int = 4) -> dict[str, dict[str, Any]]:
    """Per process name: the slope per hour of each resource over the window.

    A sample counts when it lies in ``[start, end]`` and at least ``warmup`` seconds after the
    first sample of its incarnation (pid); an incarnation with fewer than ``min_points`` such
    samples is left out. ``rising`` lists the resources flagged in the longest incarnation.
    """
    first_seen: dict[int, float] = {}
    for s in samples:
        first_seen.setdefault(s.pid, s.t)
    by_name: dict[str, dict[int, list[Sample]]] = {}
    for s in samples:
        if start <= s.t <= end and s.t >= first_seen[s.pid] + warmup:
            by_name.setdefault(s.name, {}).setdefault(s.pid, []).append(s)
    table: dict[str, dict[str, Any]] = {}
    for name in sorted({s.name for s in samples}):
        series = [p for p in by_name.get(name, {}).values() if len(p) >= min_points]
        row: dict[str, Any] = {"incarnations": len({s.pid for s in samples if s.name == name}),
                               "fitted": len(series), "samples": sum(map(len, series))}
        longest = max(series, key=len, default=[])
        for resource in RESOURCES:
            slope = _fit(series, resource) if series else None
            row[f"{resource}_per_hour"] = None if slope is None else round(slope * 3600, 3)
            row[f"{resource}_range"] = ([min(s.value(resource) for s in longest),
                                         max(s.value(resource) for s in longest)]
                                        if longest else None)
        row["rising"] = [r for r in RESOURCES if longest and _rising(longest, r)]
        table[name] = row
    return table


def format_table(table: dict[str, dict[str, Any]], window: float) -> str:
    """The slopes as a text table, one process a line."""
    def cell(row: dict[str, Any], resource: str) -> str:
        slope, span = row[f"{resource}_per_hour"], row[f"{resource}_range"]
        if slope is None:
            return "-"
        low, high = (f"{v:.1f}" if resource == "rss_mib" else f"{v:g}" for v in span)
        return f"{slope:+.2f} [{low}..{high}]"

    lines = [f"soak slopes per hour over a {window:.0f} s window (value range of the longest "
             "incarnation in brackets):",
             f"{'process':10} {'inc':>3} {'fit':>3} {'n':>5}  {'fds/h':26} {'threads/h':26} "
             f"{'RSS MiB/h':28} rising"]
    for name, row in table.items():
        lines.append(f"{name:10} {row['incarnations']:3} {row['fitted']:3} {row['samples']:5}  "
                     f"{cell(row, 'fds'):26} {cell(row, 'threads'):26} "
                     f"{cell(row, 'rss_mib'):28} {','.join(row['rising']) or '-'}")
    return "\n".join(lines)


def write_json(path: Path, table: dict[str, dict[str, Any]], samples: list[Sample],
               meta: dict[str, Any]) -> None:
    """The table, the run's parameters and every raw sample, as JSON in ``path``."""
    raw = [[round(s.t, 3), s.name, s.pid, s.fds, s.threads, round(s.rss_mib, 2)]
           for s in samples]
    path.write_text(json.dumps({"meta": meta, "slopes": table,
                                "samples_columns": ["t", "name", "pid", *RESOURCES],
                                "samples": raw}, indent=1) + "\n")
