"""The receiving side of the AMQP transport: one server-named exclusive queue per broker or
cluster, bound to the topic asked for (:func:`gilmsg.transport.amqp.subscribe`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import pika
import pika.exceptions

from gilmsg.errors import ConfigError
from gilmsg.transport.amqp import (
    RECONNECT_S,
    _close_quietly,
    _connect,
    _exchange,
    binding_key,
    log,
    remember_route,
)
from gilmsg.transport.amqp.tls import _parameters, redacted, tls_settings


class AmqpSubscription:
    """:class:`gilmsg.transport.base.Subscription` over AMQP: one connection per broker (or
    cluster), each with a server-named exclusive queue bound to the topic; used from one thread.

    The URLs of one identity's ``endpoints`` entry are one broker or cluster: the connection goes
    to the first of them that answers and, when that node goes away, to the first that answers
    again, in order. Identities listing the same URLs (in any order) share one connection, so a
    cluster is never subscribed to twice (which would deliver every message twice).
    """

    def __init__(self, endpoints: Sequence[tuple[str, str]], topic: str,
                 config: Mapping[str, Any], ignore: Collection[str] = ()) -> None:
        self.exchange = _exchange(config)
        self.topic = topic
        self._prefix = topic.encode("utf-8")
        self._ignore = frozenset(t.encode("utf-8") for t in ignore)
        self._tls = tls_settings(config)
        by_name: dict[str, list[str]] = {}
        for name, url in endpoints:
            _parameters(url, self._tls)
            urls = by_name.setdefault(name, [])
            if url not in urls:
                urls.append(url)
        self._clusters: list[tuple[str, ...]] = []
        self._default: dict[tuple[str, ...], str] = {}  # cluster -> first name using it
        for name, urls in by_name.items():
            if not any(set(c) == set(urls) for c in self._clusters):
                self._clusters.append(tuple(urls))
                self._default[tuple(urls)] = name
        self._names = set(by_name)
        self._conns: dict[tuple[str, ...], Any] = {}
        self._shown: dict[tuple[str, ...], str] = {}  # cluster -> the URL connected to
        self._next_attempt: dict[tuple[str, ...], float] = {}
        self._got: list[tuple[str, str, list[bytes]]] = []
        errors = []
        for cluster in self._clusters:
            try:
                self._open(cluster)
            except ConfigError:
                self.close()
                raise
            except Exception as exc:
                errors.append(str(exc))
                self._next_attempt[cluster] = time.monotonic() + RECONNECT_S
        if errors and not self._conns:
            raise ConfigError("cannot subscribe: " + "; ".join(errors))

    def _open(self, cluster: tuple[str, ...]) -> None:
        conn, url = _connect(cluster, self._tls)
        try:
            ch = conn.channel()
            ch.exchange_declare(self.exchange, passive=True)
            queue = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
            ch.queue_bind(queue, self.exchange, binding_key(self.topic))
            ch.basic_consume(queue, self._receiver(cluster, url), auto_ack=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            _close_quietly(conn)
            raise ConfigError(f"AMQP broker {redacted(url)}: {exc}") from None
        except Exception:
            _close_quietly(conn)
            raise
        self._conns[cluster] = conn
        self._shown[cluster] = redacted(url)

    def _receiver(self, cluster: tuple[str, ...], url: str) -> Callable[..., None]:
        default_name = self._default[cluster]
        shown = redacted(url)

        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            headers = props.headers or {}
            topic = headers.get("gilmsg_topic")
            if not isinstance(topic, str):
                topic = method.routing_key
            frame_topic = topic.encode("utf-8")
            if not frame_topic.startswith(self._prefix) or frame_topic in self._ignore:
                return
            remember_route(props.message_id, props.reply_to)
            sender = headers.get("gilmsg_sender")
            name = sender if isinstance(sender, str) and sender in self._names else default_name
            self._got.append((name, shown, [frame_topic, body]))

        return on_message

    def receive(self, timeout: float) -> list[tuple[str, str, list[bytes]]]:
        """What arrived, waiting up to ``timeout`` seconds for something."""
        deadline = time.monotonic() + timeout
        while not self._got:
            now = time.monotonic()
            for cluster in self._clusters:
                if cluster not in self._conns and now >= self._next_attempt.get(cluster, 0.0):
                    try:
                        self._open(cluster)
                        log.warning("gilmsg: AMQP subscription made again, to %s",
                                    self._shown[cluster])
                    except Exception:
                        self._next_attempt[cluster] = now + RECONNECT_S
            remaining = deadline - now
            if not self._conns:
                time.sleep(max(0.0, min(remaining, RECONNECT_S)))
            else:
                share = max(0.0, remaining) / len(self._conns)
                for cluster, conn in list(self._conns.items()):
                    try:
                        conn.process_data_events(time_limit=share)
                    except Exception as exc:
                        log.warning("gilmsg: AMQP subscription to %s lost (%s: %s)",
                                    self._shown.get(cluster), type(exc).__name__, exc)
                        del self._conns[cluster]
                        _close_quietly(conn)
                        self._next_attempt[cluster] = time.monotonic() + RECONNECT_S
            if time.monotonic() >= deadline:
                break
        got, self._got = self._got, []
        return got

    def close(self) -> None:
        """Close every connection (the broker deletes the queues)."""
        for conn in self._conns.values():
            _close_quietly(conn)
        self._conns = {}
