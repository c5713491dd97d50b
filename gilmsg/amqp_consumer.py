"""``gilmsg.amqp_consumer.GilmsgCallback``: a fedora-messaging callback that acknowledges.

The AMQP counterpart of :class:`gilmsg.GilmsgConsumer`. Subclass it, implement
``consume(self, message)`` (``message`` is fedora-messaging's ``Message``; ``message.body`` is
the fedmsg envelope, ``message.body["msg"]`` what the publisher sent) and run it as any
fedora-messaging callback::

    fedora-messaging --conf consumer.toml consume --callback mypkg.consumers:MyCallback

or ``fedora_messaging.api.consume(MyCallback())`` / ``twisted_consume``. Needs
``pip install 'gilmsg[amqp]'``. Then:

* a gilmsg message naming this identity (or naming no recipients) is answered with a signed
  ACK (status ``"received"``) as soon as its signature is checked, before ``consume()`` runs,
  and again for every copy that arrives later (the publisher re-sends until it has every ACK);
  the ACK goes through the AMQP transport to the publisher's ACK queue (the message's
  ``reply_to``);
* ``consume()`` gets each gilmsg message once per msg_id and content, however many copies
  arrive: gilmsg's re-sends and AMQP's redeliveries alike (remembered for this process's
  lifetime, last 100 000; with the config key ``gilmsg_dedup_path``, in that SQLite record
  across restarts too, see :mod:`gilmsg.outbox.dedup`: a consumer that died after
  ``consume()`` returned but before fedora-messaging acked the message to the broker does not
  consume the copy AMQP redelivers). A message whose ``consume()`` did not finish (it raised
  ``Nack``, or anything but ``Drop``) is forgotten again, so the copy AMQP redelivers is
  consumed;
* copies and messages that must not be consumed return normally: fedora-messaging then acks
  them on the broker (removes them from the queue);
* ACKs themselves never reach ``consume()``; with ``validate_signatures``, gilmsg messages
  whose signature, certificate chain, CRL status, topic or ``routing_policy`` do not hold are
  logged and dropped: never acknowledged, never consumed;
* everything else (fedora-messaging's own messages, plain fedmsg-style ones) reaches
  ``consume()`` unchanged, every time, trusted as fedora-messaging trusts it (the broker's
  login and TLS): they ask for no ACK, and stripping a message's gilmsg fields can only make
  its publisher time out, never count an ACK.

Configuration is gilmsg's usual fedmsg configuration (``/etc/fedmsg.d`` ...) with, over it, the
table ``[consumer_config.gilmsg]`` of fedora-messaging's config file (``name``,
``config_filename`` or any fedmsg key), then the class attribute ``gilmsg_config`` and the
constructor's ``config``; ``gilmsg_name`` / ``name`` says which identity acknowledges. Its
``gilmsg_transport`` must name the broker in ``endpoints[name]`` (``"amqp"``); the ACKs of a
``"zmq"`` identity would go to the fedmsg bus instead, which is the bridge's business.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gilmsg import config as gconfig
from gilmsg.core import wire
from gilmsg.errors import ConfigError, GilmsgError
from gilmsg.recipient import Recipient

if TYPE_CHECKING:
    from gilmsg.outbox.dedup import ConsumedRecord

log = logging.getLogger(__name__)

#: Config key: the record of consumed messages, an SQLite file or a ``postgresql://`` URL
#: (:func:`gilmsg.outbox.dedup.open_consumed`, as ``GilmsgConsumer``'s
#: ``<config_key>.gilmsg_dedup_path``), kept across restarts.
DEDUP_KEY = "gilmsg_dedup_path"

#: The table of fedora-messaging's ``consumer_config`` read by :class:`GilmsgCallback`.
CONSUMER_CONFIG_KEY = "gilmsg"


def frame_topic(message: Any) -> str:
    """The fedmsg topic of a fedora-messaging ``Message``: gilmsg's header, else its topic
    (an ACK's routing key carries its publisher's route after the ACK topic)."""
    headers = getattr(getattr(message, "_properties", None), "headers", None) or {}
    topic = headers.get("gilmsg_topic")
    return topic if isinstance(topic, str) else str(getattr(message, "topic", "") or "")


class GilmsgCallback:
    """A fedora-messaging consumer callback doing gilmsg's check, ACK and de-duplication.

    Class attributes a subclass may set: ``gilmsg_name`` (the fedmsg ``name`` acknowledging),
    ``gilmsg_config`` (fedmsg config keys), ``validate_signatures`` (default: the config key,
    true when unset, as :class:`gilmsg.GilmsgConsumer`).

    Args:
        config: fedmsg config keys over everything else (see the module docstring); None reads
            fedora-messaging's ``consumer_config`` (importing fedora_messaging).

    Raises:
        ConfigError: no identity, ``endpoints``/``certnames`` entry, ``ssldir`` or CA.
        CertificateError: the key, certificate, CA or CRL is unusable.
    """

    gilmsg_name: str | None = None
    gilmsg_config: Mapping[str, Any] | None = None
    validate_signatures: bool | None = None

    recipient: Recipient

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        overrides: dict[str, Any] = {}
        if config is None:
            overrides.update(_fedora_messaging_table())
        overrides.update(self.gilmsg_config or {})
        overrides.update(config or {})
        if self.gilmsg_name and "name" not in overrides:
            overrides["name"] = self.gilmsg_name
        cfg = gconfig.load(overrides)
        validate = self.validate_signatures
        if validate is None:
            validate = cfg.get("validate_signatures", True)
        cfg["validate_signatures"] = self.validate_signatures = bool(validate)
        self.recipient = Recipient(cfg, ack=True)
        path = cfg.get(DEDUP_KEY)
        if path is not None and (not isinstance(path, str) or not path):
            raise ConfigError(f"config key {DEDUP_KEY!r} must be a file path or postgresql:// "
                              f"URL, not {path!r}")
        self.consumed: ConsumedRecord | None = None
        if path:
            from gilmsg.outbox.dedup import open_consumed

            self.consumed = open_consumed(path)
        log.info("%s acknowledges as %s (name %r); signatures %s", type(self).__name__,
                 self.recipient.common_name, cfg.get("name"),
                 "validated" if self.validate_signatures else "NOT validated")

    def __call__(self, message: Any) -> None:
        """fedora-messaging's entry point: check, acknowledge, de-duplicate, ``consume()``.

        Raises what ``consume()`` raises (``Nack``, ``Drop``, ``HaltConsumer`` ...), after
        forgetting the message unless it was dropped, so that a redelivery is consumed.
        """
        envelope = getattr(message, "body", None)
        if not isinstance(envelope, dict):
            self.consume(message)
            return
        topic = frame_topic(message)
        if self.recipient.is_ack(topic):
            return
        if not wire.is_gilmsg(envelope):
            self.consume(message)
            return
        if self.validate_signatures and envelope.get("topic") != topic:
            log.warning("dropped message %s: topic %r does not match its envelope's %r",
                        envelope.get("msg_id"), topic, envelope.get("topic"))
            return
        self._remember_route(message)
        try:
            first = self.recipient.handle(topic, envelope)
        except GilmsgError as exc:  # CA/CRL unusable: neither ACK nor consume; AMQP retries
            log.error("gilmsg cannot handle %s: %s", envelope.get("msg_id"), exc)
            raise
        if not first:
            return
        digest = wire.digest(envelope) if self.consumed is not None else None
        if digest is not None and self.consumed.done(digest):  # consumed before a restart
            return
        try:
            self.consume(message)
        except BaseException as exc:
            if type(exc).__name__ != "Drop":  # fedora_messaging.exceptions.Drop: gone for good
                self.recipient.forget(envelope)  # its redelivery must be consumed
                raise
            if digest is not None:
                self.consumed.record(digest, envelope.get("msg_id"))
            raise
        if digest is not None:
            self.consumed.record(digest, envelope.get("msg_id"))

    def consume(self, message: Any) -> None:
        """Handle one message (fedora-messaging ``Message``); subclasses implement this."""
        raise NotImplementedError(f"{type(self).__name__} must implement consume(message)")

    @staticmethod
    def _remember_route(message: Any) -> None:
        props = getattr(message, "_properties", None)
        if props is None:
            return
        from gilmsg.transport import amqp

        amqp.remember_route(getattr(props, "message_id", None), getattr(props, "reply_to", None))


def _fedora_messaging_table() -> dict[str, Any]:
    try:
        from fedora_messaging import config as fm_config
    except ImportError:
        raise ConfigError("fedora-messaging is not installed: pip install 'gilmsg[amqp]'") from None
    table = (fm_config.conf.get("consumer_config") or {}).get(CONSUMER_CONFIG_KEY) or {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"fedora-messaging consumer_config.{CONSUMER_CONFIG_KEY} must be a "
                          f"table of fedmsg config keys")
    return dict(table)


__all__ = ["DEDUP_KEY", "GilmsgCallback", "frame_topic"]
