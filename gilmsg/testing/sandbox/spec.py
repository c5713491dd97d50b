"""Stand-in specs: ``NAME[:OPTION[,OPTION...]]`` (see :mod:`gilmsg.testing.sandbox`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gilmsg.crypto import certs
from gilmsg.errors import InvalidInput

#: Names a service or stand-in may not take: they are fedmsg's relay endpoints.
RESERVED_NAMES = ("relay_inbound", "relay_outbound")


@dataclass(frozen=True)
class StandInSpec:
    """How one stand-in recipient behaves (see the module docstring for the syntax)."""

    name: str
    delay: float = 0.0
    fail: float = 0.0
    reject: float = 0.0
    absent: bool = False
    revoked: bool = False

    def describe(self) -> str:
        """A few words for humans: ``acknowledges``, ``slow (0.5s), fails 30%`` ..."""
        if self.absent:
            return "absent (never answers)"
        parts = []
        if self.delay:
            parts.append(f"slow ({self.delay:g}s)")
        if self.fail:
            parts.append(f"fails {self.fail:.0%}")
        if self.reject:
            parts.append(f"rejects {self.reject:.0%}")
        if self.revoked:
            parts.append("revoked certificate (its ACKs are refused)")
        return ", ".join(parts) or "acknowledges"

    def to_text(self) -> str:
        """The spec back in ``NAME:OPTIONS`` form."""
        opts = [f"{k}={getattr(self, k):g}" for k in ("delay", "fail", "reject")
                if getattr(self, k)]
        opts += [k for k in ("absent", "revoked") if getattr(self, k)]
        return self.name + (":" + ",".join(opts) if opts else "")


def check_service_name(name: str) -> str:
    """``name`` if it can name a service of the sandbox, else :class:`InvalidInput`."""
    if name in RESERVED_NAMES:
        raise InvalidInput(f"{name!r} is reserved for fedmsg-relay: pick another name")
    return certs.check_name(name)


def _fraction(name: str, key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise InvalidInput(f"stand-in {name}: {key} must be a fraction from 0 to 1, not {value!r}")
    return number


def parse_standin(text: str) -> StandInSpec:
    """One ``NAME[:OPTION,...]`` spec (module docstring); :class:`InvalidInput` if malformed."""
    name, _, rest = text.strip().partition(":")
    check_service_name(name)
    values: dict[str, Any] = {}
    for raw in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = raw.partition("=")
        key = key.strip()
        if key in ("absent", "revoked") and not eq:
            values[key] = True
        elif key == "delay" and eq:
            try:
                delay = float(value)
            except ValueError:
                delay = -1.0
            if not 0.0 <= delay <= 3600:
                raise InvalidInput(f"stand-in {name}: delay must be 0 to 3600 seconds, "
                                   f"not {value!r}")
            values["delay"] = delay
        elif key in ("fail", "reject") and eq:
            values[key] = _fraction(name, key, value)
        else:
            raise InvalidInput(
                f"stand-in {name}: unknown option {raw!r} (use delay=SECONDS, fail=FRACTION, "
                f"reject=FRACTION, absent, revoked)"
            )
    spec = StandInSpec(name, **values)
    if spec.fail + spec.reject > 1.0:
        raise InvalidInput(f"stand-in {name}: fail and reject add up to more than 1")
    return spec


def parse_standins(texts: Iterable[str]) -> list[StandInSpec]:
    """Several specs; each text may hold several, separated by spaces. Names must be unique."""
    specs: list[StandInSpec] = []
    for text in texts:
        specs.extend(parse_standin(part) for part in text.split())
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise InvalidInput(f"stand-in {spec.name} is named twice")
        seen.add(spec.name)
    return specs


def read_standins_file(path: str | os.PathLike[str]) -> list[str]:
    """The specs of a file: one per line (or several per line), ``#`` starts a comment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read stand-ins file {path}: {exc}") from None
    return [line.split("#", 1)[0] for line in text.splitlines() if line.split("#", 1)[0].strip()]
