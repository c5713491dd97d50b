"""Every error gilmsg raises, under one base class.

Catch :class:`GilmsgError` to handle them all. Each class says what a caller should do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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


class Timeout(GilmsgError):
    """Not every required recipient acknowledged within ``ack_timeout`` seconds.

    The message may still have reached the recipients in :attr:`missing` (their ACK may be what
    was lost), but gilmsg cannot prove it. What to do: alert an operator or retry the publish;
    a retry is a new message (new ``msg_id``), so a recipient that did get the first one will
    deliver both to its application.

    Attributes:
        msg_id: the id of the message that was published (and re-sent).
        topic: its full topic.
        acked: recipient Common Name -> seconds after the call when its ACK arrived.
        missing: recipients that did not acknowledge, in the order they were named.
        ack_timeout: the timeout that elapsed, in seconds.
        rejected: recipient -> reason, for those of :attr:`missing` that answered with a
            ``rejected`` ACK (they got the message and refused it).
    """

    def __init__(
        self,
        msg_id: str,
        topic: str,
        acked: Mapping[str, float],
        missing: Sequence[str],
        ack_timeout: float,
        rejected: Mapping[str, str] | None = None,
    ) -> None:
        self.msg_id = msg_id
        self.topic = topic
        self.acked = dict(acked)
        self.missing = tuple(missing)
        self.ack_timeout = ack_timeout
        self.rejected = dict(rejected or {})
        got = ", ".join(sorted(self.acked)) or "none"
        refused = "".join(
            f"; rejected by {who}: {why or 'no reason given'}"
            for who, why in sorted(self.rejected.items())
        )
        super().__init__(
            f"no ACK within {ack_timeout:g}s from {', '.join(self.missing)} "
            f"for {msg_id} on {topic} (acknowledged by: {got}{refused})"
        )

    def __reduce__(self):  # keep it picklable despite the custom __init__
        return (
            type(self),
            (self.msg_id, self.topic, self.acked, self.missing, self.ack_timeout, self.rejected),
        )


class OutboxError(GilmsgError):
    """A durable store (an outbox, or a recipient's record of consumed messages) is unusable.

    The file is corrupt or not SQLite, read-only, on a full disk, or written by a newer schema
    version. Raised before the message is reported stored: nothing was sent, and nothing is
    claimed to be kept.

    What to do: the message names the file and the cause; free space, fix permissions, restore
    the file or upgrade gilmsg. A corrupt file is never overwritten: move it aside.
    """
