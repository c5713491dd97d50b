"""What a receiving process does with each incoming envelope: check, acknowledge, deduplicate.

Shared by :func:`gilmsg.tail_messages` and :class:`gilmsg.GilmsgConsumer`, so both behave the
same way: a gilmsg message that names this process (or names nobody) is acknowledged every time
it arrives, and handed to the application the first time only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gilmsg import config as gconfig
from gilmsg import monitoring
from gilmsg.core import wire as message
from gilmsg.core.delivery import Seen
from gilmsg.core.receiving import Settled, describe_failure, receive
from gilmsg.errors import GilmsgError

if TYPE_CHECKING:
    from gilmsg.crypto import signing
    from gilmsg.link import Link

log = logging.getLogger(__name__)


class Recipient:
    """The receiving side of one identity. Thread-safe: hub workers may share one.

    Args:
        config: a fedmsg config (not modified). With ``ack`` true it must name this process
            (``name``, its ``endpoints`` entry and ``certnames``) so ACKs can be signed and sent.
        ack: send ACKs. False watches the bus without answering.
        seen_capacity: how many msg_ids are remembered for deduplication.

    Raises:
        ConfigError: with ``ack``, the identity, endpoint or certificate is missing.
        CertificateError: a key, certificate, CA or CRL is unusable.
    """

    def __init__(self, config: Mapping[str, Any], ack: bool = True,
                 seen_capacity: int = 100_000) -> None:
        self.config = dict(config)
        self.ack = ack
        self.validate_signatures = bool(config.get("validate_signatures", False))
        self.ack_topic = gconfig.ack_topic(config)
        self._seen = Seen(seen_capacity)
        self._seen_lock = threading.Lock()
        self._settled = Settled()
        self._settled_lock = threading.Lock()
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

    @property
    def address(self) -> str | None:
        """The endpoint this recipient's ACKs leave from (None with ``ack=False``)."""
        return self._link.address if self._link is not None else None

    def is_ack(self, topic: str) -> bool:
        """True for the topic ACKs travel on (never acknowledged, never deduplicated)."""
        return topic == self.ack_topic

    def check(self, envelope: Mapping[str, Any]) -> bool:
        """False when signatures are validated and this envelope's does not hold.

        As fedmsg's validators do, a valid signature must also be allowed on its topic by
        ``routing_policy`` / ``routing_nitpicky``.
        """
        if self._validator is None:
            return True
        verdict = self._validator.validate(envelope)
        if not verdict.ok:
            reason = verdict.reason
            monitoring.refused("bad signature")
        elif gconfig.routing_allows(str(envelope.get("topic")), verdict.signer or "", self.config):
            return True
        else:
            reason = f"routing_policy does not allow {verdict.signer} on this topic"
            monitoring.refused("routing policy")
        log.warning(
            "dropped message %s on %s: %s", envelope.get("msg_id"), envelope.get("topic"), reason
        )
        return False

    def handle(self, topic: str, envelope: Mapping[str, Any],
               batch: list[dict[str, Any]] | None = None) -> bool:
        """Process one received envelope; True if the application should get it.

        Invalid signatures (when validated) are neither acknowledged nor delivered. A gilmsg
        message addressed to this identity is acknowledged before this returns (a copy of a
        message already settled, with its settlement), or, with ``batch``, its ACK is added to
        it for :meth:`flush` (when its publisher takes batched ACKs).
        """
        if not self.check(envelope):
            return False
        receipt = receive(topic, envelope, self.ack_topic,
                          self.common_name or "" if self.ack else None)
        if receipt.drop:
            monitoring.refused("no msg_id")
            log.warning("dropped gilmsg message on %s: no msg_id", envelope.get("topic"))
            return False
        if receipt.key is None:
            return True
        if receipt.acknowledge:
            with self._settled_lock:
                status, reason = self._settled.answer(receipt.digest)
            self.acknowledge(envelope, status, reason, digest=receipt.digest, batch=batch)
        with self._seen_lock:
            first = self._seen.first_time(receipt.key)
        monitoring.received(duplicate=not first)
        return first

    def forget(self, envelope: Mapping[str, Any]) -> None:
        """Forget that ``envelope`` was handed over: its next copy is delivered again.

        For receivers whose processing failed and whose transport redelivers the message (an
        AMQP consumer that nacks it); ACKs already sent stand.
        """
        if not message.is_gilmsg(envelope):
            return
        key = message.digest(envelope)
        with self._seen_lock:
            self._seen.forget(key)

    def acknowledge(self, envelope: Mapping[str, Any], status: str = "received",
                    reason: str | None = None, digest: str | None = None,
                    batch: list[dict[str, Any]] | None = None) -> None:
        """Send a signed ACK for ``envelope`` (fire-and-forget; the publisher re-sends if lost).

        ``digest`` may pass :func:`gilmsg.core.wire.digest` of ``envelope`` if already computed.
        With ``batch``, an ACK for a message whose publisher takes batched ACKs is appended to
        it instead, to be sent by :meth:`flush`.

        Raises:
            GilmsgError: this Recipient was created with ``ack=False``.
        """
        if self._link is None or self._signer is None:
            raise GilmsgError("this Recipient was created with ack=False: it sends no ACKs")
        body = message.ack_body(envelope, status, reason, content_digest=digest)
        if batch is not None and message.speaks_batches(envelope):
            batch.append(body)
        else:
            self._send_ack(body)

    def flush(self, batch: list[dict[str, Any]]) -> None:
        """Send the ACKs gathered in ``batch`` (see :meth:`handle`), as few signed ACKs as
        possible: up to :data:`~gilmsg.core.wire.MAX_BATCH` entries in each; empties it."""
        entries, batch[:] = list(batch), []
        unique: dict[str, dict[str, Any]] = {}
        for entry in entries:  # a msg_id twice would void the batch: the last word stands
            unique[entry["ack_msg_id"]] = entry
        bodies = list(unique.values())
        for start in range(0, len(bodies), message.MAX_BATCH):
            chunk = bodies[start:start + message.MAX_BATCH]
            self._send_ack(chunk[0] if len(chunk) == 1 else message.batch_body(chunk))

    def _send_ack(self, body: dict[str, Any]) -> None:
        assert self._link is not None and self._signer is not None
        ack = message.new_envelope(self.ack_topic, body, self._link.next_i())
        signed = self._signer.sign(ack)
        self._link.send(message.encode(self.ack_topic, signed))
        for entry in body.get(message.BATCH_FIELD) or [body]:  # counted once it is sent
            monitoring.ack_sent(str(entry.get("status", "received")))

    def settlement(self, topic: str, envelope: Mapping[str, Any]) -> Settlement | None:
        """The :class:`Settlement` of a message :meth:`handle` delivered, if it acknowledged
        it (None for what this recipient does not acknowledge: plain messages, others')."""
        if self._link is None:
            return None
        receipt = receive(topic, envelope, self.ack_topic, self.common_name or "")
        if not receipt.acknowledge or receipt.digest is None:
            return None
        return Settlement(self, envelope, receipt.digest)

    def _settle(self, settlement: Settlement, status: str, reason: str | None) -> None:
        with self._settled_lock:
            self._settled.remember(settlement.digest, status, reason)
        self.acknowledge(settlement.envelope, status, reason, digest=settlement.digest)


class Settlement:
    """A delivered message whose ``processed`` or ``rejected`` ACK is still to be sent.

    The first of :meth:`processed` / :meth:`reject` sends its ACK; later calls do nothing.
    Thread-safe.
    """

    def __init__(self, recipient: Recipient, envelope: Mapping[str, Any], digest: str) -> None:
        self._recipient = recipient
        self.envelope = envelope
        self.digest = digest
        self.status: str | None = None  #: ``processed`` or ``rejected`` once settled
        self._lock = threading.Lock()

    def processed(self) -> bool:
        """Send the ``processed`` ACK. False if the message was settled already."""
        return self._send("processed", None)

    def reject(self, reason: BaseException | str) -> bool:
        """Send a ``rejected`` ACK carrying ``reason`` (an exception gives its type and message,
        bounded, never a traceback). False if the message was settled already."""
        text = describe_failure(reason) if isinstance(reason, BaseException) else \
            message.bound_reason(reason)
        return self._send("rejected", text)

    def _send(self, status: str, reason: str | None) -> bool:
        with self._lock:
            if self.status is not None:
                return False
            self.status = status
        self._recipient._settle(self, status, reason)
        return True


def own_certificate_problem(config: Mapping[str, Any]) -> str | None:
    """Why the bus would refuse what this identity signs (revoked, expired, another CA), or None.

    Signs a throw-away envelope with this identity's key and validates it as a peer would. None
    also when it cannot tell (no CA configured, or a key or CA error the caller reports itself).
    """
    if not config.get("ca_cert_location"):
        return None
    from gilmsg.crypto import signing

    try:
        signed = signing.signer_for(config).sign(
            message.new_envelope(gconfig.ack_topic(config), {}, 0))
        verdict = signing.validator_for(config).validate(signed)
    except GilmsgError:
        return None
    return None if verdict.ok else verdict.reason
