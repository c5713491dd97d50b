"""Which authentic gilmsg messages a recipient still refuses: too old, from the future, SHA-1.

Pure (no clock of its own, standard library only). A recipient calls :func:`refusal` after the
signature held (or was not checked) and before it delivers a gilmsg message; a refused message
is answered with a signed ``rejected`` ACK carrying the reason, and is not delivered. See
"Freshness" in ``docs/protocol.rst``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Admission", "refusal", "reason_kind", "HASH_FIELD"]

#: The envelope field naming the signature scheme (absent: SHA-1; see gilmsg.crypto.signing).
HASH_FIELD = "gilmsg_hash"

#: Reason prefixes (what summaries count by; the rest of a reason is detail).
STALE = "stale"
FUTURE = "from the future"
NO_TIMESTAMP = "no timestamp"
SHA1 = "SHA-1 refused"


@dataclass(frozen=True)
class Admission:
    """A recipient's policy: the oldest and most future timestamps it accepts (seconds) and
    whether a SHA-1-signed message is accepted."""

    max_age: float
    max_skew: float
    accept_sha1: bool = True


def refusal(envelope: Mapping[str, Any], now: float, policy: Admission) -> str | None:
    """Why a recipient with ``policy`` refuses ``envelope`` at wall time ``now``; None: accept.

    Refused: a ``timestamp`` that is not a number; one older than ``max_age`` seconds (a
    replay, or a message kept too long); one more than ``max_skew`` seconds ahead of ``now``;
    with ``accept_sha1`` False, an envelope that declares no stronger scheme than SHA-1.
    The text starts with the kind (``stale``, ``from the future``, ``no timestamp``,
    ``SHA-1 refused``) and is safe to sign into an ACK.
    """
    stamp = envelope.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or stamp != stamp:
        return f"{NO_TIMESTAMP}: the message has no numeric timestamp"
    age = now - float(stamp)
    if age > policy.max_age:
        return (f"{STALE}: timestamp {stamp:.0f} is {age:.0f} s old, more than "
                f"gilmsg.max_message_age ({policy.max_age:g} s)")
    if -age > policy.max_skew:
        return (f"{FUTURE}: timestamp {stamp:.0f} is {-age:.0f} s ahead of the recipient's "
                f"clock, more than gilmsg.max_clock_skew ({policy.max_skew:g} s)")
    if not policy.accept_sha1 and envelope.get(HASH_FIELD, "sha1") == "sha1":
        return f"{SHA1}: the message is signed with SHA-1 and gilmsg.accept_sha1 is False"
    return None


def reason_kind(reason: str) -> str:
    """The part of a refusal reason a summary counts by: up to its first colon (bounded)."""
    head = reason.split(":", 1)[0].strip()
    return head[:60] or "unknown"
