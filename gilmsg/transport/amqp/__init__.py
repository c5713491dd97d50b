"""The AMQP transport (RabbitMQ, as fedora-messaging uses it): ``gilmsg.transport = "amqp"``.

Needs ``pip install gilmsg[amqp]`` (pika). Every ``endpoints`` entry of the bus lists the URLs
of the broker that identity connects to (``amqp://user:password@host:port/vhost`` or
``amqps://``, pika's URL syntax): several URLs are the nodes of one cluster, tried in order
(the first that answers; again in order after a failure). A Subscription connects once per
distinct broker or cluster (set of URLs). ``amqps://`` uses the ``gilmsg.amqp_tls`` table
(``ca_cert``, ``certfile``, ``keyfile``: fedora-messaging's ``[tls]`` names); a broker
certificate TLS refuses is a ConfigError at once (:func:`tls_refusal`).

What travels, and how it maps onto fedora-messaging's message format (``docs/amqp.rst``):

* a message (gilmsg or plain) is published on the topic exchange ``gilmsg.amqp_exchange``
  (default ``amq.topic``, fedora-messaging's) with the fedmsg topic as routing key and the
  signed fedmsg envelope, byte for byte the JSON of the ZeroMQ frame, as the body. The
  properties are fedora-messaging's (``application/json``, ``utf-8``, persistent, headers
  ``fedora_messaging_schema = "base.message"``, ``fedora_messaging_schema_package =
  "fedora_messaging"``, ``fedora_messaging_severity``, ``sent-at``, ``priority``),
  so ``fedora-messaging consume`` sees a ``Message`` whose ``body`` is the envelope and whose
  ``topic`` is the fedmsg topic; ``message_id`` is the gilmsg msg_id, ``reply_to`` the
  publisher's ACK route, and the headers ``gilmsg_topic`` / ``gilmsg_sender`` carry the
  frame's topic and the sender's fedmsg ``name`` (neither is trusted: the envelope is signed);
* an ACK is published on the same exchange with the routing key ``<ack topic>.<route>``,
  ``<route>`` being the ``reply_to`` of the message it acknowledges (taken from the copy this
  process received); without one, on ``<ack topic>`` alone.

Broker objects gilmsg creates: per publishing identity and process, one queue
``gilmsg.ack.<name>.<random>`` (exclusive, auto-delete, at most :data:`ACK_QUEUE_MAX` ACKs)
bound to ``<ack topic>.<route>``; per Subscription (``gilmsg.tail_messages``), one
server-named exclusive auto-delete queue bound to the topic asked for. The broker deletes
exclusive queues and their bindings when their connection closes, even when the process dies.
Nothing durable is created; a durable queue is fedora-messaging's (see
:mod:`gilmsg.consumers.amqp`).

No publisher confirms: the signed ACK is the proof, a confirm would only say the broker took
it. A lost connection (broker restart) is re-made every :data:`RECONNECT_S` seconds, with a new
ACK queue and route; what is sent meanwhile is dropped, and once connected again the link is
told a subscriber joined, so every pending delivery is re-sent at once (with the new route).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

try:
    import pika
    import pika.exceptions
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError("the AMQP transport needs pika: pip install 'gilmsg[amqp]'") from None

from gilmsg import config as gconfig
from gilmsg.config import Publishing
from gilmsg.core.wire import MAX_FRAME_BYTES
from gilmsg.errors import ConfigError, GilmsgError
from gilmsg.transport.amqp.tls import (  # noqa: F401  (the transport's documented names)
    BLOCKED_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    TLS_FIELDS,
    TLS_KEY,
    _parameters,
    redacted,
    tls_context,
    tls_refusal,
    tls_settings,
)
from gilmsg.transport.base import Heard

if TYPE_CHECKING:
    from gilmsg.transport.amqp.subscription import AmqpSubscription

log = logging.getLogger(__name__)

# pika logs every failed connection attempt at ERROR with a traceback: twice a second while a
# broker restarts. Unless the application set pika's level itself, gilmsg's one warning per
# outage says it instead.
if logging.getLogger("pika").level == logging.NOTSET:
    logging.getLogger("pika").setLevel(logging.CRITICAL)

#: Config keys of this transport.
EXCHANGE_KEY = "gilmsg.amqp_exchange"
DEFAULT_EXCHANGE = "amq.topic"

#: Seconds between attempts to connect again after the broker went away.
RECONNECT_S = 0.5
#: ACKs the broker keeps for a publisher that reads them too slowly (oldest dropped first).
ACK_QUEUE_MAX = 10_000
#: Messages queued for sending by other threads before the oldest are dropped.
OUTBOX_MAX = 100_000
#: msg_id -> reply_to remembered from received messages (to route their ACKs).
ROUTES_MAX = 100_000

#: fedora-messaging's header values for a plain ``fedora_messaging.message.Message``
#: (``fedora_messaging_schema_package`` names the distribution that provides the schema).
FM_SCHEMA = "base.message"
FM_SCHEMA_PACKAGE = "fedora_messaging"
FM_INFO = 20

_routes: OrderedDict[str, str] = OrderedDict()
_routes_lock = threading.Lock()


def remember_route(msg_id: Any, route: Any) -> None:
    """Remember that ACKs for ``msg_id`` go to the ACK route ``route`` (a received message's
    ``message_id`` and ``reply_to`` properties); the ACK this process sends for it is routed
    there. The seam's :meth:`~gilmsg.transport.base.Transport.remember_route`: this
    transport's own subscriptions call it, other receivers (fedora-messaging's consumers) reach
    it through :meth:`gilmsg.link.Link.remember_route`. Anything but two non-empty strings is
    ignored."""
    if not isinstance(msg_id, str) or not isinstance(route, str) or not route:
        return
    with _routes_lock:
        _routes[msg_id] = route
        _routes.move_to_end(msg_id)
        while len(_routes) > ROUTES_MAX:
            _routes.popitem(last=False)


def route_of(msg_id: Any) -> str | None:
    """The ACK route of a received message, if this process saw one."""
    with _routes_lock:
        return _routes.get(msg_id) if isinstance(msg_id, str) else None


def _exchange(config: Mapping[str, Any]) -> str:
    from gilmsg.config import registry

    key, value = registry.lookup(config, EXCHANGE_KEY)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config key {key!r} must be an exchange name, not {value!r}")
    return value


def binding_key(prefix: str) -> str:
    """A topic-exchange binding that matches every routing key starting with ``prefix``.

    Whole words up to the last dot, then ``#``: a superset when ``prefix`` ends mid-word, which
    the receiver then filters by prefix (as ZeroMQ does).
    """
    if "." not in prefix:
        return "#"
    return prefix.rsplit(".", 1)[0] + ".#"


def properties(topic: str, msg_id: str | None, reply_to: str | None, sender: str,
               persistent: bool) -> pika.BasicProperties:
    """The AMQP properties of one gilmsg frame pair, as fedora-messaging sets them."""
    headers = {
        "fedora_messaging_schema": FM_SCHEMA,
        "fedora_messaging_schema_package": FM_SCHEMA_PACKAGE,
        "fedora_messaging_severity": FM_INFO,
        "sent-at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "priority": 0,
        "gilmsg_topic": topic,
        "gilmsg_sender": sender,
    }
    return pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8",
        delivery_mode=2 if persistent else 1, headers=headers,
        message_id=msg_id or str(uuid.uuid4()), reply_to=reply_to)


def _connect(urls: Sequence[str], tls: Mapping[str, str] | None = None
             ) -> tuple[pika.BlockingConnection, str]:
    """A connection to the first of ``urls`` that answers (a cluster's nodes, in order).

    Raises:
        ConfigError: a malformed URL or TLS setting, or a broker whose certificate TLS refuses
            (not from the configured CA: no other node of the cluster is tried).
        GilmsgError: no URL answered (each one's error).
    """
    errors = []
    for url in urls:
        try:
            return pika.BlockingConnection(_parameters(url, tls)), url
        except ConfigError:
            raise
        except Exception as exc:  # AMQPConnectionError and its kin, socket errors
            refusal = tls_refusal(exc)
            if refusal is not None:
                raise ConfigError(f"TLS to the AMQP broker {redacted(url)} refused: "
                                  f"{refusal}") from None
            errors.append(f"{redacted(url)}: {type(exc).__name__} {exc}".strip())
    raise GilmsgError("cannot connect to the AMQP broker: " + "; ".join(errors))


class AmqpPublisher:
    """:class:`gilmsg.transport.base.Publisher` over AMQP: one connection, owned by the link's
    thread (pika is not thread-safe); other threads' sends are queued and the thread woken."""

    def __init__(self, publishing: Publishing, config: Mapping[str, Any]) -> None:
        self.publishing = publishing
        self.exchange = _exchange(config)
        self.ack_topic = gconfig.ack_topic(config)
        self._ack_topic_bytes = self.ack_topic.encode("utf-8")
        # A binding key treats '*' and '#' as wildcards: the name goes in as plain characters.
        self._route_name = re.sub(r"[^A-Za-z0-9_-]", "_", publishing.name)
        self._new_route()
        self._tls = tls_settings(config)
        for url in publishing.addresses:
            _parameters(url, self._tls)  # a malformed URL is a config error, not an outage
        self._owner = threading.get_ident()
        self._lock = threading.Lock()  # _outbox, _conn for wake()
        self._outbox: deque[Sequence[bytes]] = deque(maxlen=OUTBOX_MAX)
        self._woken = threading.Event()
        self._connected = threading.Event()
        self._closed = False
        self._topics: list[str] = []
        self._acks: list[list[bytes]] = []
        self._joined = False
        self._next_attempt = 0.0
        self._conn: pika.BlockingConnection | None = None
        self._ch: Any = None
        self.address: str | None = None
        try:
            self._open()
        except GilmsgError as exc:
            raise ConfigError(f"endpoints[{publishing.name!r}]: {exc}") from None

    # -- the link's thread -----------------------------------------------------------------

    def _new_route(self) -> None:
        self.route = f"{self._route_name}.{uuid.uuid4().hex[:16]}"
        self.queue = f"gilmsg.ack.{self.route}"

    def _open(self) -> None:
        conn, url = _connect(self.publishing.addresses, self._tls)
        try:
            ch = conn.channel()
            ch.exchange_declare(self.exchange, passive=True)
            ch.queue_declare(self.queue, exclusive=True, auto_delete=True,
                             arguments={"x-max-length": ACK_QUEUE_MAX})
            for topic in self._topics:
                ch.queue_bind(self.queue, self.exchange, f"{topic}.{self.route}")
            ch.basic_consume(self.queue, self._on_ack, auto_ack=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            _close_quietly(conn)
            raise ConfigError(f"AMQP broker {redacted(url)}: {exc}") from None
        except Exception:
            _close_quietly(conn)
            raise
        with self._lock:
            self._conn, self._ch = conn, ch
        self.address = redacted(url)
        self._connected.set()

    def _on_ack(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        headers = props.headers or {}
        topic = headers.get("gilmsg_topic")
        frame_topic = topic.encode("utf-8") if isinstance(topic, str) else method.routing_key
        if isinstance(frame_topic, str):
            frame_topic = frame_topic.encode("utf-8")
        self._acks.append([frame_topic, body])

    def _lost(self, exc: BaseException) -> None:
        if self._conn is not None:
            log.warning("gilmsg: AMQP connection of %r lost (%s: %s); connecting again",
                        self.publishing.name, type(exc).__name__, exc)
        with self._lock:
            conn, self._conn, self._ch = self._conn, None, None
        self._connected.clear()
        if conn is not None:
            _close_quietly(conn)
        self._next_attempt = time.monotonic() + RECONNECT_S

    def _reconnect(self) -> bool:
        if self._conn is not None:
            return True
        if time.monotonic() < self._next_attempt:
            return False
        # A new queue name: the broker may not have noticed yet that the old connection died,
        # and keeps its exclusive queue until then. Re-sends carry the new route.
        self._new_route()
        try:
            self._open()
        except Exception as exc:
            self._next_attempt = time.monotonic() + RECONNECT_S
            log.debug("gilmsg: AMQP reconnect failed: %s", exc)
            return False
        log.warning("gilmsg: AMQP connection of %r made again", self.publishing.name)
        self._joined = True  # pending deliveries are re-sent at once
        return True

    def _publish(self, frames: Sequence[bytes]) -> None:
        if self._ch is None:
            return  # disconnected: dropped; the core re-sends once connected again
        topic = bytes(frames[0]).decode("utf-8", "replace")
        body = bytes(frames[1])
        msg_id = reply_to = None
        routing_key = topic
        try:
            envelope = json.loads(body) if len(body) <= MAX_FRAME_BYTES else None
        except ValueError:
            envelope = None
        if isinstance(envelope, dict):
            msg_id = envelope.get("msg_id") if isinstance(envelope.get("msg_id"), str) else None
        is_ack = bytes(frames[0]) == self._ack_topic_bytes
        if is_ack:
            acked = envelope.get("msg") if isinstance(envelope, dict) else None
            route = route_of(acked.get("ack_msg_id")) if isinstance(acked, dict) else None
            if route is not None:
                routing_key = f"{topic}.{route}"
        else:
            reply_to = self.route
        try:
            self._ch.basic_publish(self.exchange, routing_key, body,
                                   properties(topic, msg_id, reply_to, self.publishing.name,
                                              persistent=not is_ack))
        except Exception as exc:
            self._lost(exc)

    def listen(self, topics: Sequence[str], endpoints: Sequence[str]) -> None:
        """Bind the ACK queue to ``<topic>.<route>`` for each new ACK topic (``endpoints`` are
        other identities' broker URLs: one broker per bus, nothing to do)."""
        for topic in topics:
            if topic in self._topics:
                continue
            self._topics.append(topic)
            if self._ch is not None:
                try:
                    self._ch.queue_bind(self.queue, self.exchange, f"{topic}.{self.route}")
                except Exception as exc:
                    self._lost(exc)  # bound again with the others on reconnect

    def poll(self, timeout: float, watch_subscribers: bool) -> Heard:
        """Send what other threads queued; wait for ACKs or :meth:`wake`; reconnect if due."""
        deadline = time.monotonic() + timeout
        if not self._reconnect():
            wait = min(deadline, self._next_attempt) - time.monotonic()
            self._woken.wait(max(0.0, wait))
            self._woken.clear()
            self._drop_outbox()
        else:
            self._flush()
            try:
                if not self._acks and not self._outbox_pending():
                    assert self._conn is not None
                    self._conn.process_data_events(time_limit=max(0.0, timeout))
                    self._flush()
                elif self._conn is not None:
                    self._conn.process_data_events(time_limit=0)
            except Exception as exc:
                self._lost(exc)
        frames, self._acks = self._acks, []
        joined, self._joined = self._joined and watch_subscribers, False
        return Heard(frames, joined)

    def _outbox_pending(self) -> bool:
        with self._lock:
            return bool(self._outbox)

    def _flush(self) -> None:
        while True:
            with self._lock:
                if not self._outbox:
                    return
                frames = self._outbox.popleft()
            self._publish(frames)

    def _drop_outbox(self) -> None:
        with self._lock:
            self._outbox.clear()

    def close(self) -> None:
        """Send what is queued, then close the connection (the broker deletes the ACK queue)."""
        with self._lock:
            self._closed = True
        if self._conn is not None:
            self._flush()
            _close_quietly(self._conn)
        with self._lock:
            self._conn = self._ch = None
        self._connected.clear()

    # -- any thread ------------------------------------------------------------------------

    def send(self, frames: Sequence[bytes]) -> None:
        """Publish now from the link's thread, else queue for it and wake it up."""
        if self._closed:
            raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
        if threading.get_ident() == self._owner:
            self._publish(frames)
            return
        with self._lock:
            self._outbox.append(frames)
        self.wake()

    def wake(self) -> None:
        """Make the link thread's :meth:`poll` return."""
        self._woken.set()
        with self._lock:
            conn = self._conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(_nothing)
            except Exception:  # closing or closed: poll() notices by itself
                pass

    def wait_subscriber(self, topic: str, timeout: float) -> bool:
        """True once connected to the broker (which routes by its bindings: whether a consumer
        takes ``topic`` is not visible from here); False after ``timeout``."""
        if self._closed:
            raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
        return self._connected.wait(timeout)


def _nothing() -> None:
    pass


def _close_quietly(conn: Any) -> None:
    try:
        if conn.is_open:
            conn.close()
    except Exception:
        pass


def open_publisher(publishing: Publishing, config: Mapping[str, Any]) -> AmqpPublisher:
    """Connect to the broker of ``publishing``'s first usable URL and declare the ACK queue.

    Raises:
        ConfigError: no URL is usable (malformed, broker unreachable, exchange missing).
    """
    return AmqpPublisher(publishing, config)


def subscribe(endpoints: Sequence[tuple[str, str]], topic: str,
              config: Mapping[str, Any], ignore: Collection[str] = ()) -> AmqpSubscription:
    """Receive every message whose topic starts with ``topic`` from the bus's broker(s), except
    those whose topic is one of ``ignore`` (dropped as they arrive).

    Raises:
        ConfigError: a URL or the TLS setting is malformed, a broker's certificate is refused,
            or no broker is reachable.
    """
    from gilmsg.transport.amqp.subscription import AmqpSubscription

    return AmqpSubscription(endpoints, topic, config, ignore)
