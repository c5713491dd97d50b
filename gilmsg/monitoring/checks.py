"""Checks with thresholds, in the Nagios manner: OK, WARNING, CRITICAL, UNKNOWN (exit 0/1/2/3).

Pure (standard library only): the commands measure, this module judges and words the result.
Used by ``gilmsg-outbox check`` (backlog size and age) and ``gilmsg-ping`` (certificate and CRL
expiry).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
#: Status -> its Nagios name; the status is also the exit code.
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


@dataclass(frozen=True)
class Threshold:
    """WARNING at ``warning`` or above, CRITICAL at ``critical`` or above (None: never)."""

    warning: float | None = None
    critical: float | None = None

    def judge(self, value: float | None) -> int:
        """The status ``value`` earns (None, nothing measured, is OK)."""
        if value is None:
            return OK
        if self.critical is not None and value >= self.critical:
            return CRITICAL
        if self.warning is not None and value >= self.warning:
            return WARNING
        return OK

    def perfdata(self) -> str:
        """``;warn;crit`` for a Nagios performance datum."""
        return ";".join("" if v is None else f"{v:g}" for v in (self.warning, self.critical))


@dataclass
class Measure:
    """One measured value, its unit (``""`` or ``"s"``), its thresholds and what it is."""

    name: str
    value: float | None
    threshold: Threshold = field(default_factory=Threshold)
    unit: str = ""
    label: str = ""

    @property
    def status(self) -> int:
        return self.threshold.judge(self.value)


@dataclass
class Result:
    """A check's verdict: the worst status of its measures, or UNKNOWN with a reason."""

    service: str
    measures: list[Measure]
    unknown: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> int:
        if self.unknown is not None:
            return UNKNOWN
        return max((m.status for m in self.measures), default=OK)

    def reasons(self) -> list[str]:
        """What is wrong, one phrase per measure over a threshold."""
        if self.unknown is not None:
            return [self.unknown]
        out = []
        for m in self.measures:
            if m.status == OK:
                continue
            limit = m.threshold.critical if m.status == CRITICAL else m.threshold.warning
            out.append(f"{m.label or m.name} {_fmt(m.value, m.unit)} >= {_fmt(limit, m.unit)}")
        return out

    def nagios(self) -> str:
        """``SERVICE STATUS - summary | perfdata`` (one line)."""
        name = NAMES[self.status]
        if self.unknown is not None:
            return f"{self.service} {name} - {self.unknown}"
        summary = ", ".join(f"{m.label or m.name} {_fmt(m.value, m.unit)}"
                            for m in self.measures)
        why = self.reasons()
        if why:
            summary = "; ".join(why) + f" ({summary})"
        perf = " ".join(f"{m.name}={_perf(m.value)}{m.unit};{m.threshold.perfdata()}"
                        for m in self.measures)
        return f"{self.service} {name} - {summary} | {perf}"

    def to_json(self) -> str:
        """One JSON object: status (name and code), reasons, each measure and its thresholds."""
        return json.dumps({
            "service": self.service, "status": NAMES[self.status], "code": self.status,
            "reasons": self.reasons(),
            "measures": {m.name: {"value": m.value, "unit": m.unit,
                                  "warning": m.threshold.warning,
                                  "critical": m.threshold.critical} for m in self.measures},
            **self.extra,
        }, sort_keys=True)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "none"
    return f"{value:.1f}{unit}" if unit else f"{value:g}"


def _perf(value: float | None) -> str:
    return "U" if value is None else f"{value:g}"


def check_order(pairs: Sequence[tuple[str, float | None, float | None]]) -> str | None:
    """A usage problem with thresholds (a warning above its critical, not finite), or None."""
    for name, warning, critical in pairs:
        for v in (warning, critical):
            if v is not None and (not math.isfinite(v) or v < 0):
                return f"--{name}-warning/--{name}-critical must be non-negative numbers"
        if warning is not None and critical is not None and warning > critical:
            return f"--{name}-warning ({warning:g}) is above --{name}-critical ({critical:g})"
    return None


def per_recipient(backlog: Mapping[str, int]) -> dict[str, int]:
    """The backlog per recipient, sorted, for outputs."""
    return dict(sorted(backlog.items()))
