"""Every error gilmsg raises, under one base class.

Catch :class:`GilmsgError` to handle them all. Each class says what a caller should do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class GilmsgError(Exception):
    """Base class of every error gilmsg raises on purpose.

    What to do: read the message; it names the configuration key, the file or the recipients
    concerned. Subclasses narrow it down.
    """


class ConfigError(GilmsgError):
    """The fedmsg configuration lacks something this process needs.

    Raised before anything is sent: a missing ``name``, an ``endpoints`` entry for it, a
    ``certnames`` entry, ``ssldir``, or an endpoint that cannot be bound.

    What to do: fix the named key in ``fedmsg.d/`` (or the keyword argument); retrying without a
    change fails the same way.
    """


class CertificateError(ConfigError):
    """A key, certificate, CA or CRL cannot be used.

    The file (or URL) is missing, unreadable, not PEM, a key does not match its certificate, a CRL
    is past its next-update date, or a download failed.

    What to do: the message names the file or URL; repair or re-issue it (``gilmsg-certs``).
    Files are re-read when they change on disk, so a fixed file is picked up without a restart.
    """


class InvalidInput(GilmsgError, ValueError):
    """An argument is not acceptable: recipients, ``ack_timeout``, a message that is not JSON.

    Raised before anything is sent. What to do: fix the call; it is a programming error.
    """


class NotDelivered(GilmsgError):
    """A publish with recipients did not get what it required from every one of them.

    The base of :class:`Timeout` and :class:`Rejected`; catch it to handle both.

    Attributes:
        msg_id: the id of the message that was published (and re-sent).
        topic: its full topic.
        acked: recipient Common Name -> seconds after the call when its ACK (at the required
            level) arrived.
        missing: recipients that did not give that ACK, in the order they were named.
        rejected: recipient -> reason, for those of :attr:`missing` that answered with a
            ``rejected`` ACK (they got the message and refused it).
        answers: recipient -> :class:`gilmsg.core.delivery.Answer` (status, time, reason) for
            every named recipient: ``processed``, ``received``, ``rejected`` or ``missing``; a
            ``missing`` one whose ACKs were refused says why in its reason.
        refused: recipient -> why its ACKs did not count (revoked or expired certificate, wrong
            CA, other content), for recipients of :attr:`missing` that did answer.
        causes: recipient -> why it is missing, for every one of :attr:`missing`, when the
            publishing link could tell (see :mod:`gilmsg.core.causes`): "no subscriber
            connected", "subscribers connected, none subscribed to this topic", "subscribed,
            no ACK", "ACKs refused: <why>", "rejected: <why>", "received, not processed".
            Empty when not known.
    """

    def __init__(
        self,
        msg_id: str,
        topic: str,
        acked: Mapping[str, float],
        missing: Sequence[str],
        rejected: Mapping[str, str] | None = None,
        answers: Mapping[str, Any] | None = None,
        refused: Mapping[str, str] | None = None,
        causes: Mapping[str, str] | None = None,
    ) -> None:
        self.msg_id = msg_id
        self.topic = topic
        self.acked = dict(acked)
        self.missing = tuple(missing)
        self.rejected = dict(rejected or {})
        self.answers = dict(answers or {})
        self.refused = {k: v for k, v in (refused or {}).items() if k not in self.rejected}
        self.causes = {k: v for k, v in (causes or {}).items() if k in self.missing}
        super().__init__(self._describe())

    def _who(self) -> str:
        """The missing recipients, each with its cause when known."""
        return ", ".join(f"{who} ({self.causes[who]})" if who in self.causes else who
                         for who in self.missing)

    def _describe(self) -> str:  # pragma: no cover - each subclass says it its way
        return f"{self.msg_id} on {self.topic} not delivered"

    def _details(self, rejections: bool = True) -> str:
        got = ", ".join(sorted(self.acked)) or "none"
        refused = "".join(
            f"; rejected by {who}: {why or 'no reason given'}"
            for who, why in sorted(self.rejected.items()) if rejections
        )
        refused += "".join(
            f"; ACKs from {who} refused: {why}" for who, why in sorted(self.refused.items())
            if who not in self.causes  # said already, as the cause
        )
        return f"(acknowledged by: {got}{refused})"


class Timeout(NotDelivered):
    """Not every required recipient acknowledged within ``ack_timeout`` seconds.

    The message may still have reached the recipients in :attr:`missing` (their ACK may be what
    was lost), but gilmsg cannot prove it. What to do: alert an operator or retry the publish;
    a retry is a new message (new ``msg_id``), so a recipient that did get the first one will
    deliver both to its application.

    Attributes: those of :class:`NotDelivered`, and ``ack_timeout``: the timeout that elapsed,
    in seconds.
    """

    def __init__(
        self,
        msg_id: str,
        topic: str,
        acked: Mapping[str, float],
        missing: Sequence[str],
        ack_timeout: float,
        rejected: Mapping[str, str] | None = None,
        answers: Mapping[str, Any] | None = None,
        refused: Mapping[str, str] | None = None,
        causes: Mapping[str, str] | None = None,
    ) -> None:
        self.ack_timeout = ack_timeout
        super().__init__(msg_id, topic, acked, missing, rejected, answers, refused, causes)

    def _describe(self) -> str:
        return (f"no ACK within {self.ack_timeout:g}s from {self._who()} "
                f"for {self.msg_id} on {self.topic} {self._details()}")

    def with_causes(self, causes: Mapping[str, str]) -> Timeout:
        """The same Timeout, saying why each recipient is missing."""
        return Timeout(self.msg_id, self.topic, self.acked, self.missing, self.ack_timeout,
                       self.rejected, self.answers, self.refused, causes)

    def __reduce__(self):  # keep it picklable despite the custom __init__
        return (
            type(self),
            (self.msg_id, self.topic, self.acked, self.missing, self.ack_timeout, self.rejected,
             self.answers, self.refused, self.causes),
        )


class Rejected(NotDelivered):
    """A required recipient answered with a signed ``rejected`` ACK: it got the message and
    could not process it. Raised as soon as that ACK arrives, without waiting for the others.

    What to do: read :attr:`rejected` (recipient -> the reason it gave, for example the
    exception its consumer raised); retrying the same message is likely to fail the same way.

    Attributes: those of :class:`NotDelivered`.
    """

    def _describe(self) -> str:
        who = "; ".join(f"{who}: {why or 'no reason given'}"
                        for who, why in sorted(self.rejected.items()))
        return (f"{self.msg_id} on {self.topic} rejected by {who} "
                f"{self._details(rejections=False)}")

    def __reduce__(self):
        return (
            type(self),
            (self.msg_id, self.topic, self.acked, self.missing, self.rejected, self.answers,
             self.refused, self.causes),
        )


class OutboxError(GilmsgError):
    """A durable store (an outbox, or a recipient's record of consumed messages) is unusable.

    The file is corrupt or not SQLite, read-only, on a full disk, or written by a newer schema
    version. Raised before the message is reported stored: nothing was sent, and nothing is
    claimed to be kept.

    What to do: the message names the file and the cause; free space, fix permissions, restore
    the file or upgrade gilmsg. A corrupt file is never overwritten: move it aside.
    """
