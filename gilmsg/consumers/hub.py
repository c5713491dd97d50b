"""``gilmsg.GilmsgConsumer``: a fedmsg-hub consumer that acknowledges gilmsg messages by itself.

Write a subclass as for :class:`fedmsg.consumers.FedmsgConsumer` (``topic``, ``config_key``,
``consume(self, message)``), register it under the ``moksha.consumer`` entry point, enable it in
``fedmsg.d`` and run the stock ``fedmsg-hub``. Then:

* a gilmsg message that names this consumer's identity among its recipients (or names no
  recipients) is answered with a signed ACK on receipt, in the hub's receiving thread, once
  its signature is checked and before it is queued for ``consume()`` (status ``"received"``).
  A publisher's Report therefore means "the hub validated and queued it", not "consume()
  finished": a slow or busy ``consume()`` does not delay ACKs, and the hub consumes what it
  acknowledged unless the process dies first (a stop by signal drains the queue). The queue
  holds about ``gilmsg.receive_backlog_bytes``: a message naming this consumer that arrives
  while it is full is dropped unacknowledged, for its publisher to send again. The hub's
  receiving sockets get gilmsg's heartbeats, limits, reconnection (:mod:`.hub_sockets`);
* receipt ACKs that are ready together are batched (for publishers that take batched ACKs;
  others get one signed ACK per message): those of the messages the hub reads in one go, sent
  once they are all validated and queued. One signature then answers up to 64 messages. Set
  ``gilmsg_batch_acks = False`` (the class attribute, or the config key
  ``<config_key>.gilmsg_batch_acks``) for one signed ACK per message. Unlike a
  ``tail_messages`` loop, which may stop early and leave acknowledged messages unyielded, the
  hub queues each message it acknowledges before the batch goes out, so batching costs no
  guarantee here;
* every copy of a gilmsg message that arrives again (the publisher re-sends until it has every
  ACK) is acknowledged again, but is queued, hence passed to ``consume()``, once per
  ``msg_id``, content and consumer (remembered for the hub's lifetime, last 100 000);
* with ``gilmsg_ack_mode = "processed"`` (the class attribute, or the config key
  ``<config_key>.gilmsg_ack_mode``; default ``"received"``), each such message is also settled
  once ``consume()`` is over: a ``consume()`` that returns sends a signed ``processed`` ACK, one
  that raises sends a signed ``rejected`` ACK carrying the exception's type and message (at
  most 500 printable characters, never a traceback; moksha logs the exception as usual). The
  receipt ACK above still goes out at once, so a busy ``consume()`` never delays the ACKs of
  other messages; publishers that ``require="processed"`` wait for the settlement, and get
  :class:`gilmsg.Rejected` as soon as it is a rejection;
* everything else reaches ``consume()`` exactly as with ``FedmsgConsumer``: the moksha wrapper
  ``{"topic": ..., "body": <fedmsg envelope>}``;
* ACKs themselves (topic ``<topic_prefix>.<environment>.gilmsg.ack``) reach ``consume()`` only
  when one entry of ``topic`` is that ACK topic (a trailing ``*`` allowed); consumers on
  ``""`` or ``org.example.*`` never see them;
* with the config key ``<config_key>.gilmsg_dedup_path`` (an SQLite file, or a ``postgresql://``
  URL that several hosts share), what ``consume()``
  returned from is recorded there, so a restarted hub acknowledges such a message again but
  never consumes it again; nothing is recorded before ``consume()`` returned (one that raises
  keeps no record), and in ``processed`` mode the record is committed before the
  ``processed`` ACK is sent (``docs/outbox.rst`` gives the crash windows);
* with ``validate_signatures`` true (the class attribute, else the config key, as in fedmsg;
  true when neither is set), a
  message whose signature, certificate chain, CRL status or topic does not hold is logged and
  dropped: never acknowledged, never consumed. Validation uses gilmsg's own validator
  (fedmsg's is broken on current pyOpenSSL), and fedmsg's ``routing_policy`` /
  ``routing_nitpicky`` apply as in fedmsg.

Identity (which fedmsg ``name`` a consumer acknowledges as, hence which ``endpoints`` entry its
ACKs leave from and which ``certnames`` entry signs them), first match wins:

1. the config key ``<config_key>.gilmsg_name``;
2. the class attribute ``gilmsg_name``;
3. the hub's config key ``name``.

The recipient name publishers use is the Common Name of that certificate. Several gilmsg
consumers in one hub may share one identity (they share one publishing socket; a message to
that name is acknowledged by every consumer subscribed to its topic, and each consumes it once),
or each may have its own (its own ``endpoints`` and ``certnames`` entries; publishers then name
each consumer separately). The ACK socket is bound when the consumer is created, before the hub
receives anything. Any number of workers (``moksha.workers_per_consumer``) and
``moksha.blocking_mode`` work: checks and ACKs happen before the queue, and the
:class:`~gilmsg.recipient.Recipient` and publishing link are thread-safe anyway.

Stopping: once the hub runs, SIGINT, SIGTERM and SIGHUP stop it promptly (stock moksha waits for
the next message on SIGINT/SIGHUP, and dies without cleanup on SIGTERM). Any previous handler is
chained (moksha's own runs first); queued messages are still processed and in-flight
``consume()`` calls are waited for; a second signal exits at once (status 128 + signal number).
A signal still ignored (``SIG_IGN``) when the hub starts running stays ignored (moksha itself
replaces the disposition of SIGINT and SIGHUP, so in ``fedmsg-hub`` that concerns SIGTERM).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import fedmsg.consumers
from moksha.hub.reactor import reactor

from gilmsg import monitoring
from gilmsg.config import registry
from gilmsg.consumers import signals
from gilmsg.consumers.signals import READY_LOG, STOP_SIGNALS  # noqa: F401  (documented names)
from gilmsg.core.receiving import Drop, Handed, Why, check_ack_mode
from gilmsg.crypto.signing import own_certificate_problem
from gilmsg.errors import ConfigError, GilmsgError, InvalidInput
from gilmsg.recipient import Recipient

__all__ = [
    "ACK_MODE_KEY_SUFFIX", "ALLOW_FAILED_KEY", "BATCH_KEY_SUFFIX", "EXIT_CONSUMER_FAILED",
    "GilmsgConsumer",
    "NAME_KEY_SUFFIX", "READY_LOG", "resolve_identity",
]

log = logging.getLogger(__name__)

#: ``<config_key>`` + this is the config key naming a consumer's identity.
NAME_KEY_SUFFIX = ".gilmsg_name"
#: ``<config_key>`` + this is the config key choosing when it acknowledges.
ACK_MODE_KEY_SUFFIX = ".gilmsg_ack_mode"
#: ``<config_key>`` + this is the config key turning batched ACKs off (False) or on.
BATCH_KEY_SUFFIX = ".gilmsg_batch_acks"
Message = dict[str, Any]

#: Exit status of ``fedmsg-hub`` when a gilmsg consumer cannot start (the CLIs' "bad
#: configuration or certificates").
EXIT_CONSUMER_FAILED = 4
#: Config key: true keeps moksha's behaviour of running on without a consumer that failed.
ALLOW_FAILED_KEY = "gilmsg.allow_failed_consumers"

#: Key set on a moksha wrapper (never on the envelope) between receipt and the worker.
_RECEIVED = "_gilmsg_received"
#: Key set on a moksha wrapper: what the recipient handed over, reported once consume() is over.
_HANDED = "_gilmsg_handed"
#: Key set on a moksha wrapper: its bytes counted in the consumer's Backlog until a worker has it.
_QUEUED = "_gilmsg_queued"
#: ``<config_key>`` + this names the consumer's durable dedup file (see gilmsg.outbox.dedup).
DEDUP_KEY_SUFFIX = ".gilmsg_dedup_path"


def resolve_identity(
    config_key: str, class_name: str | None, config: Mapping[str, Any]
) -> str:
    """The fedmsg ``name`` a consumer acknowledges as (see the module docstring for the order).

    Args:
        config_key: the consumer's ``config_key``.
        class_name: the consumer class's ``gilmsg_name`` attribute (None if unset).
        config: the hub's configuration.

    Raises:
        ConfigError: none of the three is set to a non-empty string.
    """
    key = config_key + NAME_KEY_SUFFIX
    for source, value in (
        (f"config key {key!r}", config.get(key)),
        ("class attribute gilmsg_name", class_name),
        ("config key 'name'", config.get("name")),
    ):
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{source} must be a string naming an endpoints entry, not "
                              f"{value!r}")
        return value
    raise ConfigError(
        f"no gilmsg identity for consumer {config_key!r}: set config key {key!r} (or the hub's "
        f"'name', or the class attribute gilmsg_name) to the endpoints/certnames entry it "
        f"acknowledges as"
    )


def asks_for_acks(topics: str | Iterable[str], ack_topic: str) -> bool:
    """True when one of ``topics`` is ``ack_topic`` itself (a trailing ``*`` allowed)."""
    if isinstance(topics, str):
        topics = [topics]
    return any(t.rstrip("*") == ack_topic for t in topics)


class GilmsgConsumer(fedmsg.consumers.FedmsgConsumer):
    """A :class:`fedmsg.consumers.FedmsgConsumer` that acknowledges gilmsg messages.

    Subclasses set ``topic``, ``config_key`` and implement ``consume(self, message)``; they may
    set ``gilmsg_name`` (identity) and ``validate_signatures``. See the module docstring for the
    full contract.

    After construction (when enabled by config):

    Attributes:
        identity: the fedmsg ``name`` this consumer acknowledges as.
        common_name: the Common Name of its certificate: the recipient name publishers use.
        recipient: the :class:`~gilmsg.recipient.Recipient` doing check, ACK and dedup.

    A consumer that cannot start (no identity, no ``endpoints``/``certnames`` entry or
    ``ssldir`` for it, no ``ca_cert_location`` while validating, an endpoint that cannot be
    bound, an unusable key, certificate, CA or CRL) stops ``fedmsg-hub`` at once: one line on
    standard error, exit status 4 (:data:`EXIT_CONSUMER_FAILED`). Stock moksha would log a
    traceback and run on without the consumer, looking healthy; the config key
    ``gilmsg.allow_failed_consumers = True`` restores that behaviour (the constructor then
    raises :class:`~gilmsg.ConfigError` or :class:`~gilmsg.CertificateError` to moksha).

    A consumer whose own certificate its peers would refuse (revoked, expired, issued by
    another CA) starts, but logs one WARNING saying so: every ACK it sends would be ignored.
    """

    #: fedmsg ``name`` to acknowledge as, unless ``<config_key>.gilmsg_name`` is configured.
    gilmsg_name: str | None = None
    #: ``"received"`` (ACK on receipt only) or ``"processed"`` (also settle after consume());
    #: ``<config_key>.gilmsg_ack_mode`` overrides it.
    gilmsg_ack_mode: str = "received"
    #: Batch the receipt ACKs that are ready together (for publishers that take batches);
    #: ``<config_key>.gilmsg_batch_acks`` overrides it.
    gilmsg_batch_acks: bool = True

    identity: str
    common_name: str
    recipient: Recipient
    #: (FedmsgConsumer's) True, False or None: the config key ``validate_signatures`` decides
    validate_signatures: bool | None
    consume: Callable[[Message], Any]

    _backlog: Any = None  # hub_sockets.Backlog once set up
    _arriving = 0  # bytes of the message the reactor thread is handling

    def __init__(self, hub: Any) -> None:
        self._tls = threading.local()
        self._acks_wanted = False
        self._stopping = False
        self._tick_pending = False  # a Recipient.tick is scheduled in the reactor
        config = hub.config
        if self.config_key and config.get(self.config_key, False):
            # Everything that can fail, and the socket bind, happen before moksha subscribes
            # and starts workers: no message can arrive before the recipient exists.
            try:
                self._setup(config)
                from gilmsg.monitoring import reactor as monitoring_reactor

                monitoring_reactor.start(config)  # gilmsg.monitoring: bound now, or exit 4
                from gilmsg.consumers import hub_sockets

                self._backlog = hub_sockets.Backlog(config)
                hub_sockets.install(hub, config, {self.recipient.address or ""})
            except GilmsgError as exc:
                if config.get(ALLOW_FAILED_KEY):
                    raise  # moksha logs it and runs on without this consumer
                # moksha catches Exception from a consumer's constructor; SystemExit passes.
                sys.stderr.write(f"fedmsg-hub: gilmsg consumer cannot start: {exc}\n")
                sys.stderr.flush()
                raise SystemExit(EXIT_CONSUMER_FAILED) from None
        super().__init__(hub)
        if not getattr(self, "_initialized", False):
            return
        signals.register_hub(hub)
        reactor.callWhenRunning(signals.install_stop_handlers)
        reactor.callWhenRunning(monitoring.set_consuming, True)

    def _setup(self, config: Mapping[str, Any]) -> None:
        registry.check(config)  # the hub's config never went through gilmsg.config.load
        validate = self.validate_signatures
        if validate is None:
            validate = config.get("validate_signatures", True)
        self.validate_signatures = bool(validate)
        self.identity = resolve_identity(self.config_key, self.gilmsg_name, config)
        cfg = dict(config)
        cfg["name"] = self.identity
        cfg["validate_signatures"] = self.validate_signatures
        key = self.config_key + ACK_MODE_KEY_SUFFIX
        try:
            self.gilmsg_ack_mode = check_ack_mode(config.get(key, self.gilmsg_ack_mode), key)
        except InvalidInput as exc:
            raise ConfigError(f"{type(self).__name__}: {exc}") from None
        self.gilmsg_batch_acks = bool(config.get(self.config_key + BATCH_KEY_SUFFIX,
                                                 self.gilmsg_batch_acks))
        self._consumed = None
        dedup_path = config.get(self.config_key + DEDUP_KEY_SUFFIX)
        if dedup_path:
            from gilmsg.outbox.dedup import open_consumed

            self._consumed = open_consumed(dedup_path)
        try:
            self.recipient = Recipient(cfg, ack=True, ack_mode=self.gilmsg_ack_mode,
                                       consumed=self._consumed)
        except ConfigError as exc:  # say which consumer and identity (CertificateError too)
            raise type(exc)(
                f"{type(self).__name__} acknowledging as {self.identity!r}: {exc}"
            ) from None
        self.common_name = self.recipient.common_name or ""
        self._acks_wanted = asks_for_acks(self.topic, self.recipient.ack_topic)
        self.consume = self._reporting(self.consume)
        problem = own_certificate_problem(cfg)
        if problem:
            log.warning("%s: the certificate of %r will be refused by its peers (%s): every "
                        "ACK it sends will be ignored", type(self).__name__, self.identity,
                        problem)
        log.info(
            "%s acknowledges as %s (name %r, endpoint %s); signatures %s",
            type(self).__name__, self.common_name, self.identity, self.recipient.address,
            "validated" if self.validate_signatures else "NOT validated",
        )

    # -- message flow ------------------------------------------------------------------------
    #
    # moksha calls _consume() in the reactor thread as each message arrives (FedmsgConsumer's
    # version validates there), queues it, and a worker's _do_work() validates it again before
    # pre_consume/consume/post_consume. Here the reactor thread checks, acknowledges and
    # deduplicates on receipt (Recipient.receive), so ACKs never wait behind a slow consume()
    # and repeats never enter the queue; the two validate() calls moksha makes for that same
    # message object are skipped. A message that reaches _do_work() another way (fedmsg's
    # datagrepper backlog, replay) is handled there instead.

    def _consume_json(self, message: Any) -> Any:
        """Reactor thread: moksha's decoding, the message's size noted for the Backlog."""
        self._arriving = len(getattr(message, "body", None) or "")
        return super()._consume_json(message)

    def _consume(self, message: Message) -> Any:
        """Reactor thread, on receipt: check, ACK, dedup; queue first-time messages only."""
        if self._stopping or (self._backlog is not None and self._backlog.refuses(
                message, self.common_name)):
            return None
        if not self._receive(message, batched=self.gilmsg_batch_acks):
            return None
        message[_RECEIVED] = True  # on the moksha wrapper only; removed before consume()
        if self._backlog is not None:
            message[_QUEUED], self._arriving = self._backlog.add(self._arriving), 0
        return self._skipping_validate(message, super()._consume)

    def _do_work(self, message: Message) -> Any:
        """Worker thread (reactor thread in blocking mode): moksha's pre/consume/post."""
        if self._backlog is not None:
            self._backlog.take(message.pop(_QUEUED, 0))
        if not message.pop(_RECEIVED, False) and not self._receive(message):
            return True
        previous = getattr(self._tls, "handed", None)
        self._tls.handed = message.pop(_HANDED, None)  # for _reporting's consume()
        try:
            return self._skipping_validate(message, super()._do_work)
        finally:
            self._tls.handed = previous

    def _reporting(self, consume: Callable[[Message], Any]) -> Callable[[Message], Any]:
        """``consume`` followed by its outcome to the recipient: once it returned, the durable
        record (if any) is committed, then (``processed`` mode) the ``processed`` ACK sent; one
        that raised is not recorded and (``processed`` mode) is settled ``rejected``."""

        def reporting_consume(message: Message) -> Any:
            handed, self._tls.handed = getattr(self._tls, "handed", None), None
            try:
                result = consume(message)
            except Exception as exc:
                if handed is not None:
                    self._report(self.recipient.failed, handed, exc)
                raise  # moksha logs it and counts it, as for any consumer
            if handed is not None:
                self._report(self.recipient.finished, handed)
            return result

        return reporting_consume

    @staticmethod
    def _report(call: Callable[..., Any], handed: Handed, *args: Any) -> None:
        try:
            call(handed, *args)
        except GilmsgError as exc:  # record unwritable; link closed at shutdown
            log.error("gilmsg could not record or settle %s: %s", handed.msg_id, exc)

    def _tick(self) -> None:
        """Reactor thread: send the receipt ACKs held since the last tick (one batch)."""
        self._tick_pending = False
        try:
            self.recipient.tick()
        except GilmsgError as exc:  # link closed at shutdown: the publishers re-send
            log.error("gilmsg could not send batched ACKs: %s", exc)

    def _receive(self, message: Message, batched: bool = False) -> bool:
        """Check, acknowledge (if named) and deduplicate; True if consume() should get it."""
        try:
            topic, envelope = self._unwrap(message)
            if self.recipient.is_ack(topic) and not self._acks_wanted:
                return False
            if self.validate_signatures and envelope.get("topic") != topic:
                log.warning("dropped message %s: topic %r does not match its envelope's %r",
                            envelope.get("msg_id"), topic, envelope.get("topic"))
                return False
            # Drop: forged (logged by the recipient), a repeat or consumed before a restart
            # (acknowledged again).
            # batched (reactor thread): the receipt ACK waits for the tick that follows the
            # messages read in this go.
            result = self.recipient.receive(topic, envelope, batch=batched)
            if batched and not self._tick_pending and self.recipient.batched:
                self._tick_pending = True
                reactor.callLater(0, self._tick)
            if isinstance(result, Drop):
                if result.why is Why.CONSUMED:
                    log.info("%s: %s consumed before (durable record); acknowledged, not "
                             "consumed again", type(self).__name__, result.msg_id)
                return False
            if result.handed.key is not None:  # kept beside the wrapper until consume()
                message[_HANDED] = result.handed
            return True
        except GilmsgError as exc:  # CA/CRL unusable, link closed at shutdown
            log.error("gilmsg cannot handle %s: %s", _msg_id(message), exc)
        except Exception:  # must not break moksha's receive loop or kill a worker
            log.exception("gilmsg failed on %s", _msg_id(message))
        return False

    def stop(self) -> None:
        """Stop acknowledging (in the reactor thread), then moksha's stop: queued work drains.

        Messages arriving after this are neither acknowledged nor queued, so every ACK sent
        was for a message queued ahead of the workers' stop marker.
        """
        self._stopping = True
        if self._tick_pending and hasattr(self, "recipient"):
            self._tick()  # the held receipt ACKs go out before the hub stops
        super().stop()

    def validate(self, message: Message) -> None:
        """Raise ``RuntimeWarning`` if ``message`` must not be consumed (fedmsg's contract).

        Normalises the wrapper as FedmsgConsumer does; with ``validate_signatures``, checks the
        topic against the envelope's and the signature with gilmsg's validator. Does not
        acknowledge or deduplicate. Messages this consumer already checked on receipt are not
        checked again.
        """
        if getattr(self._tls, "checked", None) is message:
            return
        topic, envelope = self._unwrap(message)
        if not self.validate_signatures:
            return
        if topic != envelope.get("topic"):
            raise RuntimeWarning("Topic envelope mismatch.")
        if not self.recipient.check(envelope):
            raise RuntimeWarning("Failed to authn message.")

    # -- helpers -----------------------------------------------------------------------------

    def _skipping_validate(self, message: Message, call: Callable[[Message], Any]) -> Any:
        previous = getattr(self._tls, "checked", None)
        self._tls.checked = message
        try:
            return call(message)
        finally:
            self._tls.checked = previous

    @staticmethod
    def _unwrap(message: Message) -> tuple[str, dict[str, Any]]:
        """``(topic, envelope)``; wraps a non-envelope body in place as FedmsgConsumer does."""
        body = message.get("body")
        if not isinstance(body, dict) or "topic" not in body:
            body = message["body"] = {"topic": message.get("topic"), "msg": body}
        topic = message.get("topic")
        return (topic if isinstance(topic, str) else ""), body


def _msg_id(message: Any) -> Any:
    try:
        return message["body"].get("msg_id")
    except (AttributeError, KeyError, TypeError):
        return None
