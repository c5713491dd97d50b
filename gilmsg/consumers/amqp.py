"""``gilmsg.consumers.amqp.GilmsgCallback``: a fedora-messaging callback that acknowledges.

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
  lifetime, last 100 000; with the config key ``gilmsg.dedup_path``, in that SQLite record
  across restarts too, see :mod:`gilmsg.outbox.dedup`: a consumer that died after
  ``consume()`` returned but before fedora-messaging acked the message to the broker does not
  consume the copy AMQP redelivers). A message whose ``consume()`` did not finish (it raised
  ``Nack``, or anything but ``Drop``) is forgotten again, so the copy AMQP redelivers is
  consumed;
* with ``gilmsg_ack_mode = "processed"`` (the class attribute, or the config key
  ``gilmsg_ack_mode``), each such message is also settled once ``consume()`` is over: returned,
  a signed ``processed`` ACK; raised, a signed ``rejected`` ACK with the exception's type and
  message, and the message is dropped from the queue (``Nack`` and ``HaltConsumer(requeue=True)``
  settle nothing: the redelivery is consumed and settles it); ``docs/amqp.rst`` tabulates what
  fedora-messaging then tells the broker;
* ``GilmsgCallback`` itself, or a subclass without ``consume()``, exits 4 with one line as it
  is created, before fedora-messaging connects;
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
``gilmsg.transport`` must name the broker in ``endpoints[name]`` (``"amqp"``); the ACKs of a
``"zmq"`` identity would go to the fedmsg bus instead, which is the bridge's business.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gilmsg import config as gconfig
from gilmsg.config import registry
from gilmsg.core import wire
from gilmsg.core.receiving import Deliver, Handed, check_ack_mode
from gilmsg.errors import ConfigError, GilmsgError, InvalidInput
from gilmsg.recipient import Recipient

if TYPE_CHECKING:
    from gilmsg.outbox.dedup import ConsumedRecord

log = logging.getLogger(__name__)

#: Config key: the record of consumed messages, an SQLite file or a ``postgresql://`` URL
#: (:func:`gilmsg.outbox.dedup.open_consumed`, as ``GilmsgConsumer``'s
#: ``<config_key>.gilmsg_dedup_path``), kept across restarts.
DEDUP_KEY = "gilmsg.dedup_path"

#: The table of fedora-messaging's ``consumer_config`` read by :class:`GilmsgCallback`.
CONSUMER_CONFIG_KEY = "gilmsg"

#: Config key: ``"received"`` (the default: ACK on receipt only) or ``"processed"`` (also
#: settle each message once ``consume()`` is over), as ``GilmsgConsumer``'s.
ACK_MODE_KEY = "gilmsg.ack_mode"

#: Exit status of a process that used :class:`GilmsgCallback` itself (not a subclass) as its
#: callback: a configuration error, as the CLIs' (and ``fedmsg-hub``'s consumer) exit 4.
EXIT_NOT_SUBCLASSED = 4
#: The same status for a start failure when fedora-messaging makes the callback.
EXIT_START_FAILED = 4


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
            fedora-messaging's ``consumer_config`` (importing fedora_messaging), and then a
            failure below is one line on stderr and ``SystemExit(4)`` instead.

    A class that does not implement ``consume()`` (``GilmsgCallback`` itself) exits 4 with one
    line on stderr before anything else (:func:`refuse_base_class`).

    Raises:
        ConfigError: no identity, ``endpoints``/``certnames`` entry, ``ssldir`` or CA.
        CertificateError: the key, certificate, CA or CRL is unusable.
    """

    gilmsg_name: str | None = None
    gilmsg_config: Mapping[str, Any] | None = None
    validate_signatures: bool | None = None
    #: ``"received"`` (ACK on receipt only) or ``"processed"`` (also a ``processed`` or
    #: ``rejected`` ACK once ``consume()`` is over); the config key ``gilmsg_ack_mode`` wins.
    gilmsg_ack_mode: str = "received"

    recipient: Recipient

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        refuse_base_class(type(self))
        if config is not None:
            self._setup(config)
            return
        # Made by fedora-messaging (``consume --callback``, ``api.consume(MyCallback)``): a start
        # failure is one line and exit 4 before it connects, as for fedmsg-hub's consumers.
        try:
            self._setup(None)
        except GilmsgError as exc:
            sys.stderr.write(f"gilmsg: {type(self).__name__} cannot start: {exc}\n")
            sys.stderr.flush()
            raise SystemExit(EXIT_START_FAILED) from None

    def _setup(self, config: Mapping[str, Any] | None) -> None:
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
        try:
            mode_key, mode = registry.lookup(cfg, ACK_MODE_KEY)
            if mode_key not in cfg:  # unset: the class attribute decides
                mode = self.gilmsg_ack_mode
            self.gilmsg_ack_mode = check_ack_mode(mode, mode_key)
        except InvalidInput as exc:
            raise ConfigError(f"{type(self).__name__}: {exc}") from None
        key, path = registry.lookup(cfg, DEDUP_KEY)
        if path is not None and (not isinstance(path, str) or not path):
            raise ConfigError(f"config key {key!r} must be a file path or postgresql:// URL, "
                              f"not {path!r}")
        self.consumed: ConsumedRecord | None = None
        if path:
            from gilmsg.outbox.dedup import open_consumed

            self.consumed = open_consumed(path)
        self.recipient = Recipient(cfg, ack=True, consumed=self.consumed,
                                   ack_mode=self.gilmsg_ack_mode)
        log.info("%s acknowledges as %s (name %r, %s); signatures %s", type(self).__name__,
                 self.recipient.common_name, cfg.get("name"), self.gilmsg_ack_mode,
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
            result = self.recipient.receive(topic, envelope)
        except GilmsgError as exc:  # CA/CRL unusable: neither ACK nor consume; AMQP retries
            log.error("gilmsg cannot handle %s: %s", envelope.get("msg_id"), exc)
            raise
        if not isinstance(result, Deliver):  # refused, a repeat, or consumed before a restart
            return
        try:
            self.consume(message)
        except BaseException as exc:
            self._settle_failure(result.handed, exc)  # raises
        self.recipient.finished(result.handed)

    def _settle_failure(self, handed: Handed, exc: BaseException) -> None:
        """``consume()`` raised ``exc`` on ``handed``: record and settle it (or not) and tell
        fedora-messaging what to do with the message, as ``docs/amqp.rst`` tabulates.

        Always raises: ``exc`` itself, or, in ``processed`` mode, ``Drop`` for an unexpected
        exception (rejected for good: fedora-messaging's default, requeue and halt, would
        consume it again and again after the publisher was told ``rejected``).
        """
        from fedora_messaging.exceptions import Drop, HaltConsumer, Nack

        if isinstance(exc, Drop):  # gone for good: recorded; rejected in processed mode
            self.recipient.rejected(handed, exc)
            raise exc
        if isinstance(exc, HaltConsumer) and not exc.requeue:  # fedora-messaging acks it
            self.recipient.finished(handed)
            raise exc
        if self.gilmsg_ack_mode != "processed" or isinstance(exc, Nack | HaltConsumer) or \
                not isinstance(exc, Exception):
            # Back to the queue (or the process is going away): not settled, the copy AMQP
            # redelivers is consumed and settles it. The receipt ACK stands.
            self.recipient.failed(handed, exc, redelivered=True)
            raise exc
        self.recipient.rejected(handed, exc)
        log.error("%s: consume() raised on %s; rejected, and dropped from the queue",
                  type(self).__name__, handed.msg_id, exc_info=exc)
        raise Drop() from exc

    def consume(self, message: Any) -> None:
        """Handle one message (fedora-messaging ``Message``); subclasses implement this."""
        raise NotImplementedError(f"{type(self).__name__} must implement consume(message)")

    def _remember_route(self, message: Any) -> None:
        """Tell the transport where ACKs for this message go (its ``reply_to``)."""
        props = getattr(message, "_properties", None)
        if props is None:
            return
        msg_id, reply_to = getattr(props, "message_id", None), getattr(props, "reply_to", None)
        if isinstance(msg_id, str) and isinstance(reply_to, str) and reply_to:
            self.recipient.remember_route(msg_id, reply_to)


def refuse_base_class(cls: type) -> None:
    """Exit (status :data:`EXIT_NOT_SUBCLASSED`, one line on stderr) if ``cls`` does not
    implement ``consume()``: called first thing in :class:`GilmsgCallback`'s constructor, which
    fedora-messaging calls before it connects, so nothing is consumed or acknowledged."""
    if getattr(cls, "consume", None) is not GilmsgCallback.consume:
        return
    if cls is GilmsgCallback:
        line = (f"gilmsg: {cls.__module__}:GilmsgCallback is a base class: subclass it and "
                f"implement consume(self, message), then use that subclass as the callback")
    else:
        line = (f"gilmsg: {cls.__module__}:{cls.__qualname__} does not implement "
                f"consume(self, message): a GilmsgCallback subclass must")
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_NOT_SUBCLASSED)


def _fedora_messaging_table() -> dict[str, Any]:
    try:
        from fedora_messaging import config as fm_config
    except ImportError:
        raise ConfigError("fedora-messaging is not installed: pip install 'gilmsg[amqp]'") from None
    table = (fm_config.conf.get("consumer_config") or {}).get(CONSUMER_CONFIG_KEY) or {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"fedora-messaging consumer_config.{CONSUMER_CONFIG_KEY} must be a "
                          f"table of fedmsg config keys")
    table = dict(table)
    # The file fedora-messaging itself read: its amqp_url and [tls] serve the identities whose
    # endpoints are empty (gilmsg.config.fedora_messaging), unless the table names another file.
    own = os.environ.get("FEDORA_MESSAGING_CONF")
    if own and os.path.isfile(own):
        from gilmsg.config import fedora_messaging as gilmsg_fm_config

        table.setdefault(gilmsg_fm_config.CONFIG_KEY, own)
    return table


__all__ = ["ACK_MODE_KEY", "DEDUP_KEY", "EXIT_NOT_SUBCLASSED", "GilmsgCallback", "frame_topic",
           "refuse_base_class"]
