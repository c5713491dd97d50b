"""What a long-running gilmsg process says about itself: counters, readiness, an HTTP endpoint.

This module is standard library only and costs nothing until :func:`enable` is called: the
hooks below (called by the receiving and publishing code at the points where a message is
received, an ACK sent or refused, a delivery resolved ...) do nothing before. :func:`enable`
imports ``prometheus_client`` and returns gilmsg's own registry (``gilmsg.monitoring.metrics``),
every family of which is prefixed ``gilmsg_``. A web application that already serves
``prometheus_client``'s default registry gets gilmsg's metrics there with::

    import prometheus_client, gilmsg.monitoring
    prometheus_client.REGISTRY.register(gilmsg.monitoring.enable())

The commands serve ``/live``, ``/ready`` and ``/metrics`` with ``--monitoring HOST:PORT``
(``gilmsg.monitoring.server``); ``fedmsg-hub`` does it in its reactor when the config key
``gilmsg.monitoring = "HOST:PORT"`` is set (``gilmsg.monitoring.reactor``).

Every label is bounded: statuses, outcomes and reasons come from the fixed sets below;
recipient names are those the process itself named (its configuration, its own publishes, its
outbox), at most :data:`MAX_RECIPIENT_LABELS` of them, the rest counted as ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

#: The config key (and ``--monitoring`` option) naming the endpoint: ``"HOST:PORT"``.
CONFIG_KEY = "gilmsg.monitoring"

#: ``gilmsg_acks_sent_total{status}``.
ACK_STATUSES = ("received", "processed", "rejected")
#: ``gilmsg_messages_refused_total{reason}``: why a received message was dropped unanswered.
REFUSAL_REASONS = ("bad signature", "routing policy", "no msg_id")
#: ``gilmsg_deliveries_total{outcome}``: how an acknowledged publish ended.
DELIVERY_OUTCOMES = ("acked", "expired", "rejected", "cancelled", "failed")
#: ``gilmsg_acks_refused_total{reason}``: why an ACK a publisher heard did not count.
ACK_REFUSAL_REASONS = ("bad signature", "not a recipient", "wrong digest", "bad batch", "late")
#: Most distinct ``recipient`` label values; later names share the value ``other``.
MAX_RECIPIENT_LABELS = 64
OTHER = "other"

_lock = threading.Lock()
_metrics: Any = None  # the gilmsg.monitoring.metrics module, once enabled
_checks: dict[str, Callable[[], str | None]] = {}
_consuming = False


def enable() -> Any:
    """Start counting; returns gilmsg's ``prometheus_client`` registry. Idempotent.

    Raises:
        ConfigError: ``prometheus_client`` is not installed.
    """
    global _metrics
    with _lock:
        if _metrics is None:
            try:
                from gilmsg.monitoring import metrics
            except ImportError as exc:  # pragma: no cover - an install_requires dependency
                from gilmsg.errors import ConfigError

                raise ConfigError(f"monitoring needs prometheus_client ({exc}): "
                                  f"pip install prometheus_client") from None
            _metrics = metrics
    return _metrics.REGISTRY


def enabled() -> bool:
    """True once :func:`enable` was called."""
    return _metrics is not None


# -- readiness ---------------------------------------------------------------------------------


def add_check(name: str, check: Callable[[], str | None]) -> None:
    """Register a readiness check: ``check()`` returns None when fine, else the reason (one
    line). It runs in the monitoring server's thread (or the reactor): it must be quick."""
    with _lock:
        _checks[name] = check


def remove_check(name: str) -> None:
    """Forget the check registered as ``name`` (no error if there is none)."""
    with _lock:
        _checks.pop(name, None)


def not_ready() -> list[str]:
    """The reasons this process is not ready (empty when it is): every failing check's."""
    with _lock:
        checks = list(_checks.items())
    reasons = []
    for name, check in checks:
        try:
            reason = check()
        except Exception as exc:  # a check that fails says so rather than break /ready
            reason = f"{name}: {type(exc).__name__}: {exc}"
        if reason:
            reasons.append(reason)
    return reasons


def set_consuming(value: bool = True) -> None:
    """Say whether this process is consuming now (``consuming`` in ``/ready``)."""
    global _consuming
    _consuming = value


def expect_consuming() -> None:
    """Register the check "not consuming yet": until :func:`set_consuming`, not ready."""
    add_check("consuming", lambda: None if _consuming else "not consuming yet")


def ready_counters() -> dict[str, Any]:
    """The counters ``/ready`` shows, in the spirit of fedora-messaging's.

    ``received``: gilmsg messages received and handed over (repeats not counted);
    ``processed``: ACKs sent ``processed``; ``rejected``: ACKs sent ``rejected`` plus messages
    refused unanswered;
    ``published``: acknowledged publishes resolved (any outcome); ``pending``: acknowledged
    publishes in flight plus outbox messages pending.
    """
    out: dict[str, Any] = {"consuming": _consuming, "received": 0, "processed": 0,
                           "rejected": 0, "published": 0, "pending": 0}
    if _metrics is not None:
        out.update(_metrics.counters())
    return out


def watch_trust(config: Mapping[str, Any]) -> None:
    """Register the check "CA or CRL unusable or expired", and the certificate and CRL dates
    (``gilmsg_crl_next_update_seconds``, ``gilmsg_certificate_expiry_seconds``), for
    ``config`` (nothing if it names no CA)."""
    if not config.get("ca_cert_location"):
        return
    if _metrics is not None:
        _metrics.watch_dates(config)
    cfg = dict(config)

    def check() -> str | None:
        from gilmsg.crypto import signing
        from gilmsg.errors import GilmsgError

        try:
            signing.validator_for(cfg).check()
        except GilmsgError as exc:
            return f"CA or CRL unusable: {exc}"
        return None

    add_check("trust", check)


def watch_subscription(subscription: Any, name: str = "subscription",
                       what: str = "no endpoint connected") -> None:
    """Register the check ``what`` (as ``name``) for a transport subscription that reports
    ``connected`` (the number of endpoints it is connected to now): not ready while it is 0."""
    if _metrics is None or not hasattr(subscription, "connected"):
        return

    def check() -> str | None:
        return None if subscription.connected else what

    add_check(name, check)


def watch_counts(collect: Callable[[], Any]) -> None:
    """Add a ``prometheus_client`` collector (``collect()`` yields metric families) to gilmsg's
    registry: for what a component counts itself (the bridge's forwarded messages)."""
    if _metrics is None:
        return
    _metrics.add_collector(collect)


# -- hooks: no-ops until enable() ---------------------------------------------------------------


def received(duplicate: bool = False) -> None:
    """A gilmsg message was received (its signature held, if checked) and handed over; with
    ``duplicate``, a repeat of one handed over already (counted apart, not handed over)."""
    if _metrics is not None:
        (_metrics.DUPLICATES if duplicate else _metrics.MESSAGES_RECEIVED).inc()


def refused(reason: str) -> None:
    """A received message was dropped without an ACK, for ``reason`` (a
    :data:`REFUSAL_REASONS` value)."""
    if _metrics is not None:
        _metrics.child(_metrics.MESSAGES_REFUSED, _pick(reason, REFUSAL_REASONS)).inc()


def ack_sent(status: str, count: int = 1) -> None:
    """``count`` ACKs of ``status`` were sent (a batch counts each entry)."""
    if _metrics is not None:
        _metrics.child(_metrics.ACKS_SENT, _pick(status, ACK_STATUSES)).inc(count)


def ack_refused(reason: str) -> None:
    """An ACK heard by a publisher did not count, for ``reason`` (an
    :data:`ACK_REFUSAL_REASONS` value)."""
    if _metrics is not None:
        _metrics.child(_metrics.ACKS_REFUSED, _pick(reason, ACK_REFUSAL_REASONS)).inc()


def resent(count: int = 1) -> None:
    """A message waiting for ACKs was sent again."""
    if _metrics is not None:
        _metrics.RESENDS.inc(count)


def delivery_started() -> None:
    """An acknowledged publish went out and waits for ACKs."""
    if _metrics is not None:
        _metrics.IN_FLIGHT.inc()


def delivery_over(outcome: str, acks: Mapping[str, float]) -> None:
    """An acknowledged publish ended with ``outcome`` (a :data:`DELIVERY_OUTCOMES` value);
    ``acks``: recipient -> seconds from the publish to its ACK."""
    if _metrics is not None:
        _metrics.IN_FLIGHT.dec()
        _metrics.child(_metrics.DELIVERIES, _pick(outcome, DELIVERY_OUTCOMES)).inc()
        for who, seconds in acks.items():
            _metrics.child(_metrics.ACK_LATENCY, recipient_label(who)).observe(seconds)


def outbox_expired(count: int = 1) -> None:
    """``count`` outbox messages expired (given up, owed to someone)."""
    if _metrics is not None and count:
        _metrics.OUTBOX_EXPIRED.inc(count)


def watch_outbox(stats: Callable[[], Any]) -> None:
    """Export ``stats()`` (a :class:`gilmsg.outbox.policy.Stats`, read at each scrape) as
    ``gilmsg_outbox_pending{recipient}`` and ``gilmsg_outbox_oldest_pending_seconds``, and
    make it a readiness check (an :class:`~gilmsg.errors.OutboxError`: "outbox unusable")."""
    if _metrics is None:
        return
    _metrics.OUTBOX.source = stats

    def check() -> str | None:
        from gilmsg.errors import OutboxError

        try:
            stats()
        except OutboxError as exc:
            return f"outbox unusable: {exc}"
        return None

    add_check("outbox", check)


_recipients: set[str] = set()


def recipient_label(name: str) -> str:
    """``name`` as a ``recipient`` label value: itself for the first
    :data:`MAX_RECIPIENT_LABELS` names seen, else ``other``."""
    if name in _recipients:
        return name
    with _lock:
        if len(_recipients) < MAX_RECIPIENT_LABELS:
            _recipients.add(name)
            return name
    return OTHER


def _pick(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else OTHER


__all__ = [
    "ACK_REFUSAL_REASONS", "ACK_STATUSES", "CONFIG_KEY", "DELIVERY_OUTCOMES", "REFUSAL_REASONS",
    "ack_refused", "ack_sent", "add_check", "delivery_over", "delivery_started", "enable",
    "enabled", "expect_consuming", "not_ready", "outbox_expired", "ready_counters", "received",
    "recipient_label", "refused", "remove_check", "resent", "set_consuming", "watch_outbox",
    "watch_counts", "watch_subscription", "watch_trust",
]
