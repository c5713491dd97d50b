"""The recipient's side of the protocol as a state machine, with no I/O and no clock.

In the manner of h11, and of :mod:`gilmsg.core.delivery` for the publisher: the caller feeds a
:class:`Receiver` events and carries out the actions it returns, in the order returned.

Events in:

* :class:`Arrived`: an envelope, with its signature verdict (checked by the caller, who owns
  the cryptography; ``refusal`` None when it held or was not checked) and its admission
  verdict (freshness and hash policy, :mod:`gilmsg.core.admission`, judged by the caller, who
  owns the clock; ``inadmissible`` None when admitted);
* :class:`Looked`: the answer to a :class:`LookUp` in the durable de-duplication record;
* the application's outcome for a message it was handed: :class:`Finished` (it returned),
  :class:`Rejected` (it refused the message: handled, never to be handed over again),
  :class:`Failed` (it did not finish; ``redelivered`` when the transport hands the message
  over again, as AMQP does after a nack), :class:`Ended` (over, without a verdict);
* :class:`Tick`: the caller's receive loop came round (what arrived together has been fed):
  the ACKs held for a batch go out.

Actions out:

* :class:`SendAck`: sign and send an ACK with this body now (a single ACK, or a batch), with
  the signature hash and on the topic it names;
* :class:`Deliver`: hand the message to the application (its :class:`Handed` is what the
  outcome events name);
* :class:`Drop`: hand it to nobody, and :class:`Why`;
* :class:`LookUp`: ask the durable record whether the message was consumed before a restart,
  then feed :class:`Looked`;
* :class:`Record`: commit the message as consumed in the durable record.

Events and actions are :class:`~typing.NamedTuple` s, as :mod:`gilmsg.core.delivery`'s (a
frozen dataclass costs ten times more to define, and this module loads with ``import gilmsg``):
dispatch on their type, never on their equality alone. They are defined in
:mod:`gilmsg.core.receiving.events` and importable from here.

The orderings that matter are encoded in the order of the actions: the receipt ACK goes out
before the message is delivered (or found consumed before); a batched receipt ACK waits for the
next :class:`Tick`, unless the message is settled first: then it is taken out of the batch and
comes before the settlement, so **a message's receipt ACK never leaves after its
settlement**; and once the application is over with a message, :class:`Record` comes
**before** the ``processed`` / ``rejected`` :class:`SendAck`, so that a crash between the two
loses an ACK (the publisher re-sends and is answered again, or times out: a false negative)
and never consumes a message twice. See "Recipient" in ``docs/protocol.rst`` and the crash
windows in ``docs/outbox.rst``. An adapter that feeds events from several threads keeps that
order on the wire by sending a :class:`Tick`'s ACKs before it feeds the next event (a
settlement decided meanwhile would overtake a receipt the Tick took out of the batch).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

from gilmsg.core import wire
from gilmsg.core.receiving.events import (
    Action,
    Arrived,
    Deliver,
    Drop,
    Ended,
    Event,
    Failed,
    Finished,
    Handed,
    Looked,
    LookUp,
    Record,
    Rejected,
    SendAck,
    Tick,
    Why,
)

__all__ = [
    "ACK_MODES", "Action", "Arrived", "Deliver", "Drop", "Ended", "Event", "Failed",
    "Finished", "Handed", "LookUp", "Looked", "Receipt", "Receiver", "Record", "Rejected",
    "SETTLEMENTS", "Seen", "SendAck", "Settled", "Tick", "Why", "check_ack_mode",
    "describe_failure", "receive",
]


class Receipt(NamedTuple):
    """The decision for one envelope whose signature held (or was not checked).

    ``drop``: hand it to nobody (a gilmsg message without a msg_id). ``key``: None for what is
    delivered every time (ACKs, plain fedmsg messages), else the deduplication key of a gilmsg
    message: its digest, which covers the msg_id and the content, so that a different message
    reusing a msg_id neither hides the genuine one (which its ACK vouches for) nor is hidden by
    it; and a key is 64 characters whatever the sender put in msg_id. ``acknowledge``: send a
    signed ACK for ``digest`` before delivering, every time the message arrives.
    """

    drop: bool
    key: str | None
    acknowledge: bool
    digest: str | None


def receive(topic: str, envelope: Mapping[str, Any], ack_topic: str,
            common_name: str | None, batch_topic: str | None = None,
            digest: str | None = None) -> Receipt:
    """Decide for ``envelope`` received on ``topic`` by the holder of ``common_name``.

    ``common_name`` None: this receiver sends no ACKs (it only watches). ``batch_topic``: the
    topic batched ACKs for protocol 4 messages travel on (an ACK topic too). ``digest``: the
    envelope's :func:`gilmsg.core.wire.digest` if the caller has it (computed here if None).
    """
    if topic == ack_topic or topic == batch_topic or not wire.is_gilmsg(envelope):
        return Receipt(False, None, False, None)
    msg_id = envelope.get("msg_id")
    if not isinstance(msg_id, str) or not msg_id:  # possible only unvalidated: fedmsg signs it
        return Receipt(True, None, False, None)
    digest = digest or wire.digest(envelope)
    acknowledge = common_name is not None and wire.wants_ack_from(envelope, common_name)
    return Receipt(False, digest, acknowledge, digest)


#: The statuses that settle a message (``processed`` mode), as the durable record keeps them.
SETTLEMENTS = ("processed", "rejected")

#: When a recipient acknowledges: on receipt (the default), or once the application settled
#: the message (``processed`` or ``rejected``; a ``received`` ACK still goes out on receipt).
ACK_MODES = ("received", "processed")


def check_ack_mode(mode: Any, where: str = "ack_mode") -> str:
    """``mode`` as one of :data:`ACK_MODES`, or :class:`~gilmsg.errors.InvalidInput` naming
    ``where`` (the argument or config key it came from)."""
    from gilmsg.errors import InvalidInput

    if not isinstance(mode, str) or mode not in ACK_MODES:
        raise InvalidInput(f"{where} must be one of {', '.join(ACK_MODES)}, got {mode!r}")
    return mode


def describe_failure(exc: BaseException) -> str:
    """The reason a ``rejected`` ACK carries for ``exc``: its type and message, no traceback,
    bounded printable text (see :func:`gilmsg.core.wire.bound_reason`)."""
    text = wire.bound_reason(exc)
    name = type(exc).__name__
    return wire.bound_reason(f"{name}: {text}" if text else name)


class Seen:
    """A bounded memory of msg_ids already delivered to the application.

    Remembers the ``capacity`` most recently seen ids; an id older than that would be delivered
    again (redelivery stops after the publisher's timeout, so a capacity far above the message
    rate times the timeout is enough).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._ids

    def first_time(self, msg_id: str) -> bool:
        """Record ``msg_id``; True if it was not remembered already."""
        if msg_id in self._ids:
            self._ids.move_to_end(msg_id)
            return False
        self._ids[msg_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def forget(self, msg_id: str) -> None:
        """Forget ``msg_id``: its next :meth:`first_time` is True again."""
        self._ids.pop(msg_id, None)


class Settled:
    """A bounded memory of the settled messages (digest -> status, reason), so that a copy
    arriving after settlement is answered with the settlement rather than ``received``."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._answers: OrderedDict[str, tuple[str, str | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def remember(self, digest: str, status: str, reason: str | None) -> None:
        """Record how the message with ``digest`` was settled (the first settlement stands)."""
        if digest in self._answers:
            return
        self._answers[digest] = (status, reason)
        if len(self._answers) > self.capacity:
            self._answers.popitem(last=False)

    def answer(self, digest: str | None) -> tuple[str, str | None]:
        """The ACK status and reason for a copy of ``digest``: its settlement, else received."""
        if digest is None:
            return "received", None
        return self._answers.get(digest, ("received", None))


class Receiver:
    """What one receiving identity decides for every envelope, and when.

    Args:
        ack_topic: the ACK topic (never acknowledged, never deduplicated).
        batch_topic: the topic of batched ACKs for protocol 4 messages (an ACK topic too;
            None: the same as ``ack_topic``).
        common_name: the Common Name this receiver acknowledges as; None sends no ACKs.
        settle: ``ack_mode="processed"``: a message it acknowledges is also settled once the
            application is over with it.
        durable: a durable de-duplication record is kept (:class:`LookUp` and :class:`Record`
            actions are asked for).
        seen_capacity, settled_capacity: how many messages the in-memory de-duplication and
            the memory of settlements remember.

    Not thread-safe: the caller serialises :meth:`handle`.
    """

    def __init__(self, ack_topic: str, common_name: str | None, settle: bool = False,
                 durable: bool = False, seen_capacity: int = 100_000,
                 settled_capacity: int = 10_000, batch_topic: str | None = None) -> None:
        self.ack_topic = ack_topic
        self.batch_topic = batch_topic or ack_topic
        self.common_name = common_name
        self.settle = settle and common_name is not None
        self.durable = durable
        self.seen = Seen(seen_capacity)
        self.settled = Settled(settled_capacity)
        self._open: dict[str, Handed] = {}  # handed over, outcome not yet fed
        # ack_msg_id -> (entry, hash its signature must use), for the next Tick
        self._batch: dict[str, tuple[dict[str, Any], str]] = {}
        self._hashes: dict[str, str] = {}  # key -> ACK hash, for the settlement still owed

    def __len__(self) -> int:
        """How many messages are with the application (delivered, outcome not yet fed)."""
        return len(self._open)

    @property
    def batched(self) -> int:
        """How many ACK entries wait for the next :class:`Tick`."""
        return len(self._batch)

    def handle(self, event: Event) -> list[Action]:
        """The actions ``event`` calls for, to be carried out in this order."""
        if isinstance(event, Arrived):
            return self._arrived(event)
        if isinstance(event, Looked):
            if event.consumed:
                return self._consumed(event)
            return self._deliver(event.handed)
        if isinstance(event, Tick):
            return self._flush()
        if isinstance(event, Failed) and event.redelivered and event.key is not None:
            self.seen.forget(event.key)  # whether or not it is still open: its copy is new
        handed = self._open.pop(event.key, None) if event.key is not None else None
        if handed is None:  # not ours, reported twice, or nothing owed for it
            return []
        assert handed.key is not None
        if isinstance(event, Failed) and event.redelivered:
            self._hashes.pop(handed.key, None)
        status: str | None = None
        reason: str | None = None
        if handed.settle:
            if isinstance(event, Finished):
                status = "processed"
            elif isinstance(event, Rejected) or (isinstance(event, Failed)
                                                 and not event.redelivered):
                status, reason = "rejected", wire.bound_reason(event.reason)
        # a receipt ACK still held for a Tick leaves first: never a settlement before it
        actions: list[Action] = self._held_receipt(handed) if status is not None else []
        if self.durable and not isinstance(event, Failed):
            # committed before the ACK, with the settlement it is about to send
            actions.append(Record(handed.key, handed.msg_id, status, reason))
        if status is not None:
            actions.append(self._settle(handed, status, reason))
        return actions

    def _consumed(self, event: Looked) -> list[Action]:
        """A copy of a message the durable record holds: dropped; in ``processed`` mode, if the
        record kept its settlement, answered with it too (after its receipt ACK)."""
        handed = event.handed
        drop = Drop(Why.CONSUMED, handed.msg_id)
        if not handed.settle or event.status not in SETTLEMENTS or handed.key is None:
            if handed.key is not None:
                self._hashes.pop(handed.key, None)
            return [drop]  # no settlement kept: answered ``received``, as before
        reason = wire.bound_reason(event.reason) if event.status == "rejected" else None
        actions = self._held_receipt(handed)  # it goes out first
        actions.append(self._settle(handed, event.status, reason))
        actions.append(drop)
        return actions

    def _arrived(self, event: Arrived) -> list[Action]:
        envelope = event.envelope
        if event.refusal is not None:
            return [Drop(Why.REFUSED, envelope.get("msg_id"), event.refusal)]
        receipt = receive(event.topic, envelope, self.ack_topic, self.common_name,
                          self.batch_topic, event.digest)
        if receipt.drop:
            return [Drop(Why.NO_MSG_ID, envelope.get("msg_id"))]
        if receipt.key is None:
            return [Deliver(Handed(None, envelope.get("msg_id")))]
        actions: list[Action] = []
        ack_hash = wire.ack_hash(envelope)
        if event.inadmissible is not None:  # authentic, but not admitted: rejected, kept back
            if receipt.acknowledge:
                body = wire.ack_body(envelope, "rejected", wire.bound_reason(event.inadmissible),
                                     content_digest=receipt.digest)
                actions.extend(self._ack(body, ack_hash, event.batch, envelope))
            actions.append(Drop(Why.INADMISSIBLE, envelope.get("msg_id"), event.inadmissible))
            return actions
        if receipt.acknowledge:
            status, reason = self.settled.answer(receipt.digest)
            body = wire.ack_body(envelope, status, reason, content_digest=receipt.digest)
            actions.extend(self._ack(body, ack_hash, event.batch, envelope))
        msg_id = envelope.get("msg_id")
        if not self.seen.first_time(receipt.key):
            actions.append(Drop(Why.REPEAT, msg_id))
            return actions
        handed = Handed(receipt.key, msg_id, self.settle and receipt.acknowledge)
        if handed.settle and ack_hash != "sha1":
            self._hashes[receipt.key] = ack_hash
        if self.durable:
            actions.append(LookUp(handed))
        else:
            actions.extend(self._deliver(handed))
        return actions

    def _ack(self, body: dict[str, Any], ack_hash: str, batch: bool,
             envelope: Mapping[str, Any]) -> list[Action]:
        """Send ``body`` now, or hold it for the next :class:`Tick` (``batch``, and the
        message's publisher takes batches)."""
        if batch and wire.speaks_batches(envelope):
            # a msg_id twice: the last word stands
            self._batch[body["ack_msg_id"]] = (body, ack_hash)
            return []
        return [SendAck(body, ack_hash)]

    def _deliver(self, handed: Handed) -> list[Action]:
        if handed.key is not None and (self.durable or handed.settle):
            self._open[handed.key] = handed
        return [Deliver(handed)]

    def _held_receipt(self, handed: Handed) -> list[Action]:
        """The receipt ACK of ``handed`` still held for a :class:`Tick`, taken out of the
        batch to be sent now, before its settlement (empty if none is held)."""
        held = self._batch.pop(handed.msg_id, None)  # keyed by ack_msg_id, the msg_id
        return [SendAck(*held)] if held is not None else []

    def _settle(self, handed: Handed, status: str, reason: str | None) -> SendAck:
        assert handed.key is not None
        self.settled.remember(handed.key, status, reason)
        return SendAck(wire.ack_body({"msg_id": handed.msg_id}, status, reason,
                                     content_digest=handed.key),
                       self._hashes.pop(handed.key, "sha1"))

    def _flush(self) -> list[Action]:
        """The held ACKs: one signature covers entries of one hash only; a batch for protocol
        4 messages goes on the batch topic, where single-ACK (0.1.2) listeners never look (a
        version 3 publisher listens on the single-ACK topic only, and gets its batches there)."""
        held, self._batch = list(self._batch.values()), {}
        by_hash: dict[str, list[dict[str, Any]]] = {}
        for body, ack_hash in held:
            by_hash.setdefault(ack_hash, []).append(body)
        actions: list[Action] = []
        for ack_hash, bodies in by_hash.items():
            for start in range(0, len(bodies), wire.MAX_BATCH):
                chunk = bodies[start:start + wire.MAX_BATCH]
                if len(chunk) == 1:
                    actions.append(SendAck(chunk[0], ack_hash))
                else:
                    topic = self.batch_topic if ack_hash != "sha1" else None
                    actions.append(SendAck(wire.batch_body(chunk), ack_hash, topic))
        return actions

