"""What happened to each message of ``gilmsg-logger``: the statuses and their rendering.

A :class:`Result` is one message's outcome; :meth:`Result.describe` is its line on stderr and
:meth:`Result.to_json` its ``--json-report`` object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Result statuses, as written in ``--json-report`` and counted in the summary.
DELIVERED = "delivered"  #: every required recipient acknowledged
SENT = "sent"  #: published without recipients: nothing confirms it arrived
NOT_ACKNOWLEDGED = "not_acknowledged"  #: published, some recipients did not acknowledge
REJECTED = "rejected"  #: a recipient answered that it could not process it
INVALID = "invalid"  #: bad input (not JSON ...): not sent
FAILED = "failed"  #: an error stopped this message; it may or may not have left
NOT_SENT = "not_sent"  #: read but not published (stopped first, or nobody was subscribed)
STORED = "stored"  #: --outbox: committed, not every ACK yet: delivery continues from the outbox

_SUMMARY_WORDS = {
    DELIVERED: "delivered",
    SENT: "sent (not confirmed)",
    NOT_ACKNOWLEDGED: "not acknowledged",
    REJECTED: "rejected",
    INVALID: "invalid",
    FAILED: "failed",
    NOT_SENT: "not sent",
    STORED: "stored (delivery continues in the outbox)",
}



@dataclass
class Result:
    """What happened to one message (one input line, or ``--message``)."""

    line: int | None
    status: str
    msg_id: str | None = None
    topic: str | None = None
    acked: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    sends: int | None = None
    error: str | None = None
    #: recipient -> {"status", "at", "reason"}: what each one answered (see gilmsg.Answer)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: missing recipient -> why (gilmsg.core.causes), when the publishing link could tell
    causes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True for a message that needs no attention: delivered, or sent without recipients."""
        return self.status in (DELIVERED, SENT)

    def to_json(self) -> dict[str, Any]:
        """The ``--json-report`` object for this message."""
        return {
            "line": self.line,
            "status": self.status,
            "msg_id": self.msg_id,
            "topic": self.topic,
            "acked": {cn: round(t, 6) for cn, t in self.acked.items()},
            "missing": list(self.missing),
            "sends": self.sends,
            "error": self.error,
            "answers": self.answers,
            "causes": dict(self.causes),
        }

    def why_missing(self) -> dict[str, str]:
        """Missing recipient -> what it did answer: received only, rejected (why), or why its
        ACKs were refused (revoked, expired, other CA, other content); once per recipient."""
        out = {}
        for cn in self.missing:
            if cn in self.causes:  # the Timeout's own words
                out[cn] = self.causes[cn]
                continue
            answer = self.answers.get(cn, {})
            status, reason = answer.get("status"), answer.get("reason")
            if status == "rejected":
                out[cn] = f"rejected: {reason or 'no reason given'}"
            elif status == "received":
                out[cn] = "received, not processed"
            elif reason:
                out[cn] = f"ACKs refused: {reason}"
        return out

    def describe(self) -> str:
        """The one-line human report (without the program name)."""
        where = "message" if self.line is None else f"line {self.line}"
        ident = f" [{self.msg_id}]" if self.msg_id else ""
        if self.status == DELIVERED:
            who = ", ".join(f"{cn} ({t:.3f}s)" for cn, t in self.acked.items())
            return f"{where}: delivered, acknowledged by {who}{ident}"
        if self.status == SENT:
            return f"{where}: sent, delivery not confirmed (no --recipients){ident}"
        if self.status in (NOT_ACKNOWLEDGED, REJECTED):
            got = ", ".join(self.acked) or "nobody"
            verb = "REJECTED" if self.status == REJECTED else "NOT acknowledged"
            whys = "".join(f"; {cn}: {why}" for cn, why in self.why_missing().items())
            return (f"{where}: {verb} by {', '.join(self.missing)}: {self.error}{whys} "
                    f"(acknowledged by: {got}){ident}")
        if self.status == STORED:
            got = ", ".join(self.acked) or "nobody"
            whys = "".join(f"; {cn}: {why}" for cn, why in self.why_missing().items())
            return (f"{where}: stored, delivery continues in the outbox: still owed to "
                    f"{', '.join(self.missing)} ({self.error}{whys}; acknowledged by: {got})"
                    f"{ident}")
        if self.status == INVALID:
            return f"{where}: not sent: {self.error}"
        if self.status == NOT_SENT:
            return f"{where}: not sent: {self.error}"
        return f"{where}: failed: {self.error}{ident}"


def answers_json(answers: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {cn: {"status": a.status, "at": None if a.at is None else round(a.at, 6),
                 "reason": a.reason} for cn, a in answers.items()}
