"""Why a recipient is missing from a delivery: the words a Timeout, gilmsg-logger's line and
its ``--json-report`` share.

Pure: the caller says what its transport knows of the subscribers of the message's topic
(:data:`REACH`); each missing recipient's :class:`~gilmsg.core.delivery.Answer` says what it
answered. ZeroMQ publishers cannot tell which subscriber is which recipient, so the subscriber
part is the same for every recipient that sent nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: Nobody is connected to (subscribed on) the publishing socket at all, other publishers
#: listening for their ACKs apart.
NO_SUBSCRIBER = "no subscriber connected"
#: Someone is subscribed, but to no prefix of this message's topic: it reached nobody.
NOT_SUBSCRIBED = "subscribers connected, none subscribed to this topic"
#: Some subscriber's prefix covers the topic, and no ACK from this recipient came.
NO_ACK = "subscribed, no ACK"
#: The transport cannot tell who subscribes (AMQP, memory): no ACK came.
NO_ACK_UNKNOWN = "no ACK"
#: ``require="processed"``: it said ``received`` and never settled.
RECEIVED_ONLY = "received, not processed"

#: What a transport can say of a topic's subscribers: ``none`` (no subscription at all),
#: ``elsewhere`` (subscriptions, none a prefix of the topic), ``covered``, or None (unknown).
REACH = ("none", "elsewhere", "covered")


def refused(reason: str) -> str:
    """The cause for a recipient whose ACKs arrived and did not count."""
    return f"ACKs refused: {reason}"


def rejected(reason: str | None) -> str:
    """The cause for a recipient that answered ``rejected``."""
    return f"rejected: {reason or 'no reason given'}"


def causes(missing: Iterable[str], answers: Mapping[str, Any],
           reach: str | None) -> dict[str, str]:
    """Missing recipient -> why, in the order given.

    ``answers``: recipient -> :class:`~gilmsg.core.delivery.Answer` (or anything with
    ``status`` and ``reason``); ``reach``: one of :data:`REACH`, or None when unknown.
    """
    silent = {"none": NO_SUBSCRIBER, "elsewhere": NOT_SUBSCRIBED,
              "covered": NO_ACK}.get(reach or "", NO_ACK_UNKNOWN)
    out: dict[str, str] = {}
    for who in missing:
        answer = answers.get(who)
        status = getattr(answer, "status", "missing")
        reason = getattr(answer, "reason", None)
        if status == "rejected":
            out[who] = rejected(reason)
        elif status == "received":
            out[who] = RECEIVED_ONLY
        elif reason:
            out[who] = refused(reason)
        else:
            out[who] = silent
    return out
