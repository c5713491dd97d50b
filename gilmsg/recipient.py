"""What a receiving process does with each incoming envelope: check, acknowledge, deduplicate.

Shared by :func:`gilmsg.tail_messages`, :class:`gilmsg.GilmsgConsumer` and
:class:`gilmsg.consumers.amqp.GilmsgCallback`, so all behave the same way: a gilmsg message that
names this process (or names nobody) is acknowledged every time it arrives, and handed to the
application the first time only. The decisions are :class:`gilmsg.core.receiving.Receiver`'s;
:class:`Recipient` verifies signatures (the core's input) and carries out the core's actions:
signs and sends ACKs, asks and writes the durable de-duplication record, in the order given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from gilmsg import config as gconfig
from gilmsg import monitoring
from gilmsg.core import wire as message
from gilmsg.core.admission import Admission, reason_kind
from gilmsg.core.admission import refusal as admission_refusal
from gilmsg.core.receiving import (
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
    Receiver,
    Record,
    Rejected,
    SendAck,
    Tick,
    Why,
    check_ack_mode,
    describe_failure,
)
from gilmsg.errors import GilmsgError
from gilmsg.logsummary import RefusalLog

if TYPE_CHECKING:
    from gilmsg.crypto import signing
    from gilmsg.link import Link

log = logging.getLogger(__name__)

#: How many digests a Recipient remembers as validly signed, and how many ACKs it keeps signed
#: (a copy re-sent within the publisher's timeout is answered from these, with no RSA).
REPEAT_CACHE = 10_000


class _Bounded(OrderedDict[Any, Any]):
    """An insertion-ordered dict that forgets its oldest entries beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


#: Every refused message of this process, summarised (see :mod:`gilmsg.logsummary`).
refused_messages = RefusalLog(log, "messages")


class DedupRecord(Protocol):
    """What a recipient needs of a durable de-duplication record
    (:class:`gilmsg.outbox.dedup.Consumed`, an SQLite file, or
    :class:`gilmsg.outbox.postgres.PgConsumed`; :func:`gilmsg.outbox.dedup.open_consumed`
    picks one by location)."""

    def done(self, key: str) -> bool:
        """True if the message with this key was consumed before."""

    def record(self, key: str, msg_id: Any = None) -> None:
        """Commit the message with this key as consumed (raises OutboxError if it cannot)."""


class SettlementRecord(DedupRecord, Protocol):
    """A :class:`DedupRecord` that also keeps settlements (:class:`gilmsg.outbox.dedup.
    Consumed`), so that a restarted recipient in ``processed`` mode answers a re-sent copy with
    it. Optional: the :class:`Recipient` looks for ``settlement`` with ``getattr``, and a record
    without it (a backend written before settlements were kept) is used as a plain
    :class:`DedupRecord`: its consumed copies are answered ``received`` only."""

    def settlement(self, key: str) -> tuple[str, str | None] | None:
        """``(status, reason)`` recorded for this key, None if none (or not consumed)."""

    def record(self, key: str, msg_id: Any = None, status: str | None = None,
               reason: str | None = None) -> None:
        """Commit the message as consumed, settled ``status`` (None: not settled here)."""


class Recipient:
    """The receiving side of one identity: carries out what :class:`~gilmsg.core.receiving.
    Receiver` decides (signs and sends ACKs, asks and writes the durable record). Thread-safe:
    hub workers may share one.

    Args:
        config: a fedmsg config (not modified). With ``ack`` true it must name this process
            (``name``, its ``endpoints`` entry and ``certnames``) so ACKs can be signed and sent.
        ack: send ACKs. False watches the bus without answering.
        seen_capacity: how many msg_ids are remembered for deduplication.
        ack_mode: ``"processed"``: what it acknowledges is also settled (``processed`` or
            ``rejected``) when the caller reports the application's outcome.
        consumed: the durable record of consumed messages (owned, and closed, by the caller).

    Raises:
        ConfigError: with ``ack``, the identity, endpoint or certificate is missing.
        CertificateError: a key, certificate, CA or CRL is unusable.
        InvalidInput: ``ack_mode`` is neither ``received`` nor ``processed``.
    """

    def __init__(self, config: Mapping[str, Any], ack: bool = True,
                 seen_capacity: int = 100_000, ack_mode: str = "received",
                 consumed: DedupRecord | None = None) -> None:
        self.config = dict(config)
        self.ack = ack
        self.validate_signatures = bool(config.get("validate_signatures", False))
        self.ack_topic = gconfig.ack_topic(config)
        #: Where batched ACKs for protocol 4 messages go (version 3 batches: :attr:`ack_topic`).
        self.batch_topic = gconfig.batch_ack_topic(config)
        #: Freshness and hash policy for gilmsg messages (see :mod:`gilmsg.core.admission`).
        self.admission = Admission(gconfig.max_message_age(config),
                                   gconfig.max_clock_skew(config), gconfig.accept_sha1(config))
        #: Wall clock the freshness check reads; tests may replace it.
        self.clock = time.time
        self.ack_mode = check_ack_mode(ack_mode)
        self.consumed = consumed
        # Repeat copies: digests whose signature held, and the ACK frames signed for each
        # (digest, status, hash), as (reason, frames).
        self._verified = _Bounded(REPEAT_CACHE)
        self._signed = _Bounded(REPEAT_CACHE)
        self._cache_lock = threading.Lock()
        self.common_name: str | None = None
        self._signer: signing.Signer | None = None
        self._validator: signing.Validator | None = None
        self._link: Link | None = None
        from gilmsg.crypto import signing
        from gilmsg.link import link_for

        if self.validate_signatures:
            self._validator = signing.validator_for(config)
            self._validator.check()
        if ack:
            self._signer = signing.signer_for(config)
            self.common_name = self._signer.common_name
            self._link = link_for(config)
        self._core = Receiver(self.ack_topic, self.common_name if ack else None,
                              settle=self.ack_mode == "processed", durable=consumed is not None,
                              seen_capacity=seen_capacity, batch_topic=self.batch_topic)
        self._lock = threading.Lock()  # the core

    @property
    def address(self) -> str | None:
        """The endpoint this recipient's ACKs leave from (None with ``ack=False``)."""
        return self._link.address if self._link is not None else None

    def is_ack(self, topic: str) -> bool:
        """True for the topic ACKs travel on (never acknowledged, never deduplicated)."""
        return topic in (self.ack_topic, self.batch_topic)

    def refusal(self, envelope: Mapping[str, Any]) -> str | None:
        """Why this envelope must be dropped when signatures are validated (its signature does
        not hold, or ``routing_policy`` / ``routing_nitpicky`` do not allow its signer on its
        topic, as fedmsg's validators check); None when it holds or is not checked.

        A copy of a gilmsg message (same digest: the same signed content) that held before is
        not checked again (the last :data:`REPEAT_CACHE` digests are kept): a re-send costs no
        RSA operation here. (``_refusal`` also returns the digest it computed, or None.)"""
        return self._refusal(envelope)[0]

    def _refusal(self, envelope: Mapping[str, Any]) -> tuple[str | None, str | None]:
        if self._validator is None:
            return None, None
        digest = None
        if message.is_gilmsg(envelope) and isinstance(envelope.get("msg_id"), str):
            digest = message.digest(envelope)
            with self._cache_lock:
                if digest in self._verified:
                    return None, digest
        verdict = self._validator.validate(envelope)
        if not verdict.ok:
            return str(verdict.reason), digest
        if gconfig.routing_allows(str(envelope.get("topic")), verdict.signer or "", self.config):
            if digest is not None:
                with self._cache_lock:
                    self._verified.put(digest, None)
            return None, digest
        return f"{_ROUTING_REFUSAL} {verdict.signer} on this topic", digest

    def inadmissible(self, envelope: Mapping[str, Any]) -> str | None:
        """Why this (authentic) gilmsg message is still refused at this recipient's clock:
        stale, from the future, or SHA-1-signed while ``gilmsg.accept_sha1`` is False (see
        :func:`gilmsg.core.admission.refusal`); None when admitted or not a gilmsg message."""
        if not message.is_gilmsg(envelope):
            return None
        return admission_refusal(envelope, self.clock(), self.admission)

    def check(self, envelope: Mapping[str, Any]) -> bool:
        """False (and logged) when signatures are validated and this envelope's does not hold
        (see :meth:`refusal`)."""
        reason = self.refusal(envelope)
        if reason is None:
            return True
        monitoring.refused(_refusal_label(reason))
        _log_refused(envelope, reason)
        return False

    def receive(self, topic: str, envelope: Mapping[str, Any],
                batch: bool = False) -> Deliver | Drop:
        """Check, acknowledge and de-duplicate one received envelope; what to do with it.

        :class:`~gilmsg.core.receiving.Deliver`: hand it to the application, then report on
        its ``handed`` (:meth:`finished`, :meth:`rejected`, :meth:`failed`, :meth:`ended`).
        :class:`~gilmsg.core.receiving.Drop`: hand it to nobody (a refusal and a missing
        msg_id are logged here). A gilmsg message addressed to this identity has been
        acknowledged when this returns, or, with ``batch``, its ACK waits for :meth:`tick`
        (when its publisher takes batched ACKs). An authentic gilmsg message that is stale,
        from the future or SHA-1-signed against policy (:meth:`inadmissible`) is answered
        with a signed ``rejected`` ACK carrying the reason, and dropped.

        Raises:
            CertificateError: the CA or CRL is unusable.
            OutboxError: the durable record cannot be read.
            GilmsgError: the link is closed.
        """
        refused, digest = self._refusal(envelope)
        inadmissible = self.inadmissible(envelope) if refused is None else None
        event = Arrived(topic, envelope, refused, batch and self.ack, inadmissible, digest)
        result = self._carry_out(self._feed(event))
        assert result is not None
        if isinstance(result, Drop):
            if result.why is Why.REFUSED:
                monitoring.refused(_refusal_label(result.reason))
                _log_refused(envelope, result.reason)
            elif result.why is Why.INADMISSIBLE:
                reason = result.reason or ""
                refused_messages.refused(reason_kind(reason),
                                         f"message {envelope.get('msg_id')} on "
                                         f"{envelope.get('topic')}: {reason}")
            elif result.why is Why.NO_MSG_ID:
                refused_messages.refused("no msg_id", f"dropped gilmsg message on "
                                                      f"{envelope.get('topic')}: no msg_id")
                monitoring.refused("no msg_id")
            else:  # a repeat, in this process or in the durable record: acknowledged again
                monitoring.received(duplicate=True)
        elif result.handed.key is not None:  # a gilmsg message, handed over
            monitoring.received()
        return result

    def handle(self, topic: str, envelope: Mapping[str, Any]) -> bool:
        """:meth:`receive`; True if the application should get the envelope."""
        return isinstance(self.receive(topic, envelope), Deliver)

    @property
    def batched(self) -> int:
        """How many ACK entries :meth:`receive` holds for the next :meth:`tick`."""
        with self._lock:
            return self._core.batched

    def tick(self) -> None:
        """Send the ACKs :meth:`receive` held for a batch: as few signed ACKs as possible, up
        to :data:`~gilmsg.core.wire.MAX_BATCH` entries in each. They are sent before another
        thread's event is decided (the core's lock is held until then): a settlement decided
        meanwhile would overtake the receipt ACK it must follow."""
        with self._lock:
            self._carry_out(self._core.handle(Tick()))  # SendAcks only: nothing is fed back

    def finished(self, handed: Handed) -> bool:
        """The application returned from ``handed``: record it (durable record), then, in
        ``processed`` mode, send ``processed``. True if a settlement ACK was sent (False: not
        settled here, or settled already).

        Raises:
            OutboxError: the record could not be written (the ACK was sent all the same).
        """
        return self._outcome(Finished(handed.key))

    def rejected(self, handed: Handed, reason: BaseException | str) -> bool:
        """The application refused ``handed``: record it, then, in ``processed`` mode, send
        ``rejected`` carrying ``reason`` (an exception gives its type and message, bounded,
        never a traceback). True if a settlement ACK was sent."""
        return self._outcome(Rejected(handed.key, _reason(reason)))

    def failed(self, handed: Handed, reason: BaseException | str,
               redelivered: bool = False) -> bool:
        """The application did not finish with ``handed``: not recorded; in ``processed``
        mode, settled ``rejected`` with ``reason``; with ``redelivered`` (the transport hands
        it over again), forgotten instead, so that its next copy is delivered."""
        return self._outcome(Failed(handed.key, _reason(reason), redelivered))

    def ended(self, handed: Handed) -> None:
        """The application is over with ``handed`` without a verdict: recorded, not settled
        (a message left so stays answered ``received``)."""
        self._outcome(Ended(handed.key))

    def forget(self, envelope: Mapping[str, Any]) -> None:
        """Forget that ``envelope`` was handed over: its next copy is delivered again.

        For receivers whose processing failed and whose transport redelivers the message (an
        AMQP consumer that nacks it); ACKs already sent stand.
        """
        if message.is_gilmsg(envelope):
            self._outcome(Failed(message.digest(envelope), "", redelivered=True))

    def remember_route(self, msg_id: str, route: str) -> None:
        """ACKs for ``msg_id`` go to ``route`` (learnt from the received message's transport
        metadata: AMQP's ``reply_to``); see :meth:`gilmsg.transport.base.Transport.
        remember_route`. Nothing to do with ``ack=False``."""
        if self._link is not None:
            self._link.remember_route(msg_id, route)

    def acknowledge(self, envelope: Mapping[str, Any], status: str = "received",
                    reason: str | None = None, digest: str | None = None) -> None:
        """Send a signed ACK for ``envelope`` now (fire-and-forget; the publisher re-sends if
        lost), outside the core's bookkeeping (for stand-ins that answer as they are told).

        ``digest`` may pass :func:`gilmsg.core.wire.digest` of ``envelope`` if already computed.

        Raises:
            GilmsgError: this Recipient was created with ``ack=False``.
        """
        self._send_ack(message.ack_body(envelope, status, reason, content_digest=digest),
                       message.ack_hash(envelope))  # SHA-256 for protocol 4 messages

    # -- carrying out the core's actions -----------------------------------------------------

    def _feed(self, event: Event) -> list[Action]:
        with self._lock:
            return self._core.handle(event)

    def _outcome(self, event: Event) -> bool:
        actions = self._feed(event)
        self._carry_out(actions)
        return any(isinstance(a, SendAck) for a in actions)

    def _carry_out(self, actions: list[Action]) -> Deliver | Drop | None:
        """Do ``actions`` in order; the final Deliver or Drop, if any. An OutboxError from a
        Record is raised once the rest (the ACK after it) is done."""
        result: Deliver | Drop | None = None
        error: GilmsgError | None = None
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, SendAck):
                self._send_ack(action.body, action.hash, action.topic)
            elif isinstance(action, (Deliver, Drop)):
                result = action
            elif isinstance(action, LookUp):
                assert self.consumed is not None and action.handed.key is not None
                key = action.handed.key
                done = self.consumed.done(key)
                status = reason = None
                settlement = getattr(self.consumed, "settlement", None)
                if done and settlement is not None:  # a record that keeps settlements
                    status, reason = settlement(key) or (None, None)
                pending[:0] = self._feed(Looked(action.handed, done, status, reason))
            elif isinstance(action, Record):
                assert self.consumed is not None
                try:
                    if getattr(self.consumed, "settlement", None) is not None:
                        self.consumed.record(action.key, action.msg_id,  # type: ignore[call-arg]
                                             status=action.status, reason=action.reason)
                    else:  # a record that keeps no settlements (see SettlementRecord)
                        self.consumed.record(action.key, action.msg_id)
                except GilmsgError as exc:
                    error = error or exc
        if error is not None:
            raise error
        return result

    def _send_ack(self, body: dict[str, Any], hash_name: str = "sha1",
                  topic: str | None = None) -> None:
        if self._link is None or self._signer is None:
            raise GilmsgError("this Recipient was created with ack=False: it sends no ACKs")
        entries = body.get(message.BATCH_FIELD) or [body]
        single = body if message.BATCH_FIELD not in body else None
        cached = None
        if single is not None and single.get("ack_digest") is not None:
            with self._cache_lock:
                cached = self._signed.get((single["ack_digest"], single.get("status"), hash_name))
            if cached is not None and cached[0] != single.get("reason"):
                cached = None
        if cached is not None:
            self._link.send(cached[1], ack=True)  # a repeat: the bytes signed the first time
        else:
            topic = topic or self.ack_topic
            ack = message.new_envelope(topic, body, self._link.next_i())
            signed = self._signer.sign(ack, hash_name)
            frames = message.encode(topic, signed)
            self._link.send(frames, ack=True)
            with self._cache_lock:
                for entry in entries:
                    if entry.get("ack_digest") is not None:
                        self._signed.put((entry["ack_digest"], entry.get("status"), hash_name),
                                         (entry.get("reason"), frames))
        for entry in entries:  # counted once it is sent
            monitoring.ack_sent(str(entry.get("status", "received")))


def _reason(reason: BaseException | str) -> str:
    if isinstance(reason, BaseException):
        return describe_failure(reason)
    return message.bound_reason(reason)


#: how :meth:`Recipient.refusal` words a routing_policy refusal (told apart in the metrics)
_ROUTING_REFUSAL = "routing_policy does not allow"


def _refusal_label(reason: str | None) -> str:
    """The ``gilmsg_messages_refused_total`` reason of a :meth:`Recipient.refusal`."""
    if reason is not None and reason.startswith(_ROUTING_REFUSAL):
        return "routing policy"
    return "bad signature"


def _log_refused(envelope: Mapping[str, Any], reason: str | None) -> None:
    reason = reason or ""
    refused_messages.refused(reason_kind(reason), f"dropped message {envelope.get('msg_id')} "
                                                  f"on {envelope.get('topic')}: {reason}")
