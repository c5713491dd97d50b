"""What :class:`~gilmsg.core.receiving.Receiver` takes and gives: the events the adapter feeds
it (:data:`Event`), the actions it returns for the adapter to carry out (:data:`Action`), and
:class:`Handed`, the message an application was handed, which outcome events name. See
:mod:`gilmsg.core.receiving` for what each one means.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, NamedTuple

from gilmsg.core import wire

__all__ = [
    "Action", "Arrived", "Deliver", "Drop", "Ended", "Event", "Failed", "Finished", "Handed",
    "LookUp", "Looked", "Record", "Rejected", "SendAck", "Tick", "Why",
]


# -- events -------------------------------------------------------------------------------

class Handed(NamedTuple):
    """A message handed to the application: what its outcome events name.

    ``key``: its deduplication key (its digest), None for what is delivered every time and
    needs no outcome (plain fedmsg messages, ACKs). ``settle``: its ``processed`` /
    ``rejected`` ACK is owed once the application is over with it.
    """

    key: str | None
    msg_id: Any
    settle: bool = False


class Arrived(NamedTuple):
    """An envelope arrived on ``topic``. ``refusal``: why its signature (or its signer's
    right to the topic) does not hold; None when it held or was not checked. ``batch``: this
    receiver batches ACKs: the receipt ACK, if its publisher takes batches, waits for
    :class:`Tick`. ``inadmissible``: why an authentic gilmsg message is still refused (stale,
    from the future, SHA-1: :func:`gilmsg.core.admission.refusal`); None when admitted. Such a
    message addressed to this receiver is answered with a signed ``rejected`` ACK carrying
    the reason, and is not delivered. ``digest``: its :func:`gilmsg.core.wire.digest`, if the
    adapter computed it already."""

    topic: str
    envelope: Mapping[str, Any]
    refusal: str | None = None
    batch: bool = False
    inadmissible: str | None = None
    digest: str | None = None


class Looked(NamedTuple):
    """The durable record's answer to :class:`LookUp`: ``consumed`` before, or not.

    ``status`` and ``reason``: the settlement the record keeps for a consumed message
    (``processed``, or ``rejected`` with its reason); ``status`` None when it keeps none (a
    message recorded in ``received`` mode, or ended without a verdict, a record written before
    settlements were kept, or a record that keeps no settlements).
    """

    handed: Handed
    consumed: bool
    status: str | None = None
    reason: str | None = None


class Finished(NamedTuple):
    """The application returned from the message (``processed``)."""

    key: str | None


class Rejected(NamedTuple):
    """The application refused the message, for ``reason``: it handled it, and will not be
    handed it again (``rejected``)."""

    key: str | None
    reason: str


class Failed(NamedTuple):
    """The application did not finish with the message (it raised ``reason``).

    ``redelivered``: the transport hands the message over again (an AMQP nack), so it is
    forgotten and its next copy is delivered; else it is settled ``rejected`` and its copies,
    in this process, are not delivered again. Never recorded as consumed.
    """

    key: str | None
    reason: str
    redelivered: bool = False


class Ended(NamedTuple):
    """The application is over with the message, without a verdict (a ``tail_messages`` loop
    that stopped or was closed after getting it; an AMQP ``Drop``): recorded, not settled."""

    key: str | None


class Tick(NamedTuple):
    """The receive loop came round: what arrived together has been fed; batches go out."""


Event = Arrived | Looked | Finished | Rejected | Failed | Ended | Tick


# -- actions ------------------------------------------------------------------------------

class Why(enum.Enum):
    """Why a message is handed to nobody."""

    REFUSED = "refused"  #: its signature, chain, CRL or routing policy does not hold
    #: authentic, but stale, from the future or SHA-1-signed (answered ``rejected``)
    INADMISSIBLE = "inadmissible"
    NO_MSG_ID = "no msg_id"  #: a gilmsg message without a msg_id (possible only unvalidated)
    REPEAT = "repeat"  #: delivered before in this process (acknowledged again)
    CONSUMED = "consumed before"  #: in the durable record (acknowledged again)


class SendAck(NamedTuple):
    """Sign and send one ACK with this ``body`` (:func:`~gilmsg.core.wire.ack_body`, or a
    :func:`~gilmsg.core.wire.batch_body`), fire-and-forget: its signature uses ``hash``
    (:func:`~gilmsg.core.wire.ack_hash` of the message: ``sha256`` for protocol 4) and it goes
    on ``topic`` (None: the ACK topic; a batch for protocol 4 messages: the batch topic)."""

    body: dict[str, Any]
    hash: str = "sha1"
    topic: str | None = None

    @property
    def statuses(self) -> tuple[str, ...]:
        """The status of each entry (one for a single ACK)."""
        entries = self.body.get(wire.BATCH_FIELD, [self.body])
        return tuple(e["status"] for e in entries)


class Deliver(NamedTuple):
    """Hand the message to the application; report on ``handed`` once it is over (unless its
    ``key`` is None)."""

    handed: Handed


class Drop(NamedTuple):
    """Hand the message to nobody: ``why``, and ``reason`` (the refusal) for REFUSED and
    INADMISSIBLE."""

    why: Why
    msg_id: Any
    reason: str | None = None


class LookUp(NamedTuple):
    """Ask the durable record whether ``handed.key`` was consumed; feed :class:`Looked`."""

    handed: Handed


class Record(NamedTuple):
    """Commit ``key`` (of ``msg_id``) as consumed in the durable record, with its settlement:
    ``status`` ``processed``, or ``rejected`` with ``reason``, the ACK about to be sent after
    it; ``status`` None when the message is not settled here (``received`` mode, a message
    naming others, one ended without a verdict)."""

    key: str
    msg_id: Any
    status: str | None = None
    reason: str | None = None


Action = SendAck | Deliver | Drop | LookUp | Record
