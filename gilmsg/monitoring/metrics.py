"""gilmsg's Prometheus metric families, in one ``prometheus_client`` registry (:data:`REGISTRY`).

Imported by :func:`gilmsg.monitoring.enable`; the hooks there update these families. Every
family is prefixed ``gilmsg_``; every label value comes from a fixed set or from the names the
process itself uses (see :mod:`gilmsg.monitoring`).

Dates are exported as Unix timestamps (seconds since the epoch), as Prometheus' own exporters
do: ``gilmsg_crl_next_update_seconds - time()`` is the time left before the CRL goes stale.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gilmsg import monitoring

REGISTRY = CollectorRegistry(auto_describe=True)

# -- receiving side -------------------------------------------------------------------------
MESSAGES_RECEIVED = Counter(
    "gilmsg_messages_received", "gilmsg messages received and handed over, once each "
    "(signature held if checked)", registry=REGISTRY)
DUPLICATES = Counter(
    "gilmsg_duplicates", "gilmsg messages received again after being handed over once",
    registry=REGISTRY)
ACKS_SENT = Counter(
    "gilmsg_acks_sent", "ACKs sent, by status (each entry of a batched ACK counts)",
    ["status"], registry=REGISTRY)
MESSAGES_REFUSED = Counter(
    "gilmsg_messages_refused", "Messages dropped without an ACK, by reason", ["reason"],
    registry=REGISTRY)

# -- publishing side (publish, the outbox runner, the bridge) ---------------------------------
DELIVERIES = Counter(
    "gilmsg_deliveries", "Acknowledged publishes (and outbox attempts) ended, by outcome",
    ["outcome"], registry=REGISTRY)
ACK_LATENCY = Histogram(
    "gilmsg_ack_latency_seconds", "Seconds from a publish to the ACK that counted, by recipient",
    ["recipient"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
             30.0))
ACKS_REFUSED = Counter(
    "gilmsg_acks_refused", "ACKs heard that did not count, by reason", ["reason"],
    registry=REGISTRY)
RESENDS = Counter(
    "gilmsg_resends", "Messages sent again while waiting for their ACKs", registry=REGISTRY)
IN_FLIGHT = Gauge(
    "gilmsg_in_flight", "Acknowledged publishes waiting for ACKs now", registry=REGISTRY)

# -- the outbox --------------------------------------------------------------------------------
OUTBOX_EXPIRED = Counter(
    "gilmsg_outbox_expired", "Outbox messages given up after their expiry", registry=REGISTRY)

for _status in monitoring.ACK_STATUSES:
    ACKS_SENT.labels(_status)
for _reason in monitoring.REFUSAL_REASONS:
    MESSAGES_REFUSED.labels(_reason)
for _outcome in monitoring.DELIVERY_OUTCOMES:
    DELIVERIES.labels(_outcome)
for _reason in monitoring.ACK_REFUSAL_REASONS:
    ACKS_REFUSED.labels(_reason)


_children: dict[tuple[int, str], Any] = {}


def child(family: Any, value: str) -> Any:
    """``family.labels(value)``, cached (label values are bounded: so is the cache)."""
    key = (id(family), value)
    found = _children.get(key)
    if found is None:
        found = _children[key] = family.labels(value)
    return found


class _Outbox(Collector):
    """``gilmsg_outbox_pending{recipient}`` and ``gilmsg_outbox_oldest_pending_seconds``, read
    from :attr:`source` (a callable returning :class:`gilmsg.outbox.policy.Stats`) per scrape."""

    def __init__(self) -> None:
        self.source: Callable[[], Any] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pending = GaugeMetricFamily("gilmsg_outbox_pending",
                                    "Outbox messages still owed an ACK, by recipient",
                                    labels=["recipient"])
        oldest = GaugeMetricFamily("gilmsg_outbox_oldest_pending_seconds",
                                   "Age of the oldest pending outbox message (0: none)")
        source = self.source
        if source is not None:
            try:
                stats = source()
            except Exception:  # unusable outbox: /ready says why; no sample here
                stats = None
            if stats is not None:
                merged: dict[str, int] = {}
                for who, count in stats.backlog.items():
                    label = monitoring.recipient_label(who)
                    merged[label] = merged.get(label, 0) + count
                for label, count in sorted(merged.items()):
                    pending.add_metric([label], count)
                oldest.add_metric([], stats.oldest_pending_age or 0.0)
        yield pending
        yield oldest


class _Dates(Collector):
    """``gilmsg_crl_next_update_seconds`` and ``gilmsg_certificate_expiry_seconds{identity}``,
    read per scrape from the trust store and this identity's certificate file."""

    def __init__(self) -> None:
        self.config: Mapping[str, Any] | None = None
        self._cert: tuple[tuple[str, float], tuple[str, float]] | None = None  # cache
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        crl = GaugeMetricFamily("gilmsg_crl_next_update_seconds",
                                "When the CRL in force must be replaced (Unix time)")
        cert = GaugeMetricFamily("gilmsg_certificate_expiry_seconds",
                                 "When this identity's certificate expires (Unix time)",
                                 labels=["identity"])
        config = self.config
        if config is not None:
            when = _crl_next_update(config)
            if when is not None:
                crl.add_metric([], when)
            expiry = self._certificate(config)
            if expiry is not None:
                cert.add_metric([expiry[0]], expiry[1])
        yield crl
        yield cert

    def _certificate(self, config: Mapping[str, Any]) -> tuple[str, float] | None:
        try:
            from gilmsg.crypto import signing

            path = signing.signer_for(config).cert_path
            stamp = (path, os.stat(path).st_mtime)
        except Exception:
            return None
        with self._lock:
            if self._cert is not None and self._cert[0] == stamp:
                return self._cert[1]
        found = certificate_expiry(path)
        if found is None:
            return None
        with self._lock:
            self._cert = (stamp, found)
        return found


def certificate_expiry(path: str) -> tuple[str, float] | None:
    """``(common name, not-after as Unix time)`` of the PEM certificate at ``path``, or None."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        with open(path, "rb") as fh:
            cert = x509.load_pem_x509_certificate(fh.read())
    except (OSError, ValueError):
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else "?"
    return cn, cert.not_valid_after_utc.timestamp()


def _crl_next_update(config: Mapping[str, Any]) -> float | None:
    import time

    from gilmsg.crypto import signing

    try:
        trust = signing.validator_for(config).trust.current(time.time())
    except Exception:  # unusable: /ready says why; no sample
        return None
    return trust.crl_next_update


OUTBOX = _Outbox()
DATES = _Dates()
REGISTRY.register(OUTBOX)
REGISTRY.register(DATES)


def watch_dates(config: Mapping[str, Any]) -> None:
    """Export the CRL's and this identity's certificate's dates for ``config``."""
    DATES.config = dict(config)


def _value(counter: Any, **labels: str) -> float:
    return REGISTRY.get_sample_value(counter, labels) or 0.0


def counters() -> dict[str, Any]:
    """The numbers ``/ready`` shows (see :func:`gilmsg.monitoring.ready_counters`)."""
    rejected = _value("gilmsg_acks_sent_total", status="rejected") + sum(
        _value("gilmsg_messages_refused_total", reason=r) for r in monitoring.REFUSAL_REASONS)
    published = sum(_value("gilmsg_deliveries_total", outcome=o)
                    for o in monitoring.DELIVERY_OUTCOMES)
    outbox = 0
    if OUTBOX.source is not None:
        try:
            outbox = OUTBOX.source().counts.get("pending", 0)
        except Exception:
            outbox = 0
    return {
        "received": int(_value("gilmsg_messages_received_total")),
        "processed": int(_value("gilmsg_acks_sent_total", status="processed")),
        "rejected": int(rejected),
        "published": int(published),
        "pending": int(IN_FLIGHT._value.get()) + int(outbox),
    }


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Any]) -> None:
        self._collect = collect

    def collect(self) -> Any:
        return self._collect()


def add_collector(collect: Callable[[], Any]) -> None:
    """Register ``collect`` (yielding metric families at each scrape) in :data:`REGISTRY`."""
    REGISTRY.register(_Callback(collect))
