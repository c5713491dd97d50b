"""``gilmsg.publish_deferred``: :func:`gilmsg.publish_async` for code running in a Twisted
reactor (a fedmsg-hub consumer, a moksha producer).

The reactor thread never waits: loading keys, signing and sending happen in the reactor's
thread pool, the wait for ACKs in gilmsg's link thread, and the Deferred fires in the reactor
thread. Twisted is imported by this module only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from twisted.internet import defer, threads

from gilmsg.publish import DEFAULT_ACK_TIMEOUT, PendingDelivery, calling_module, publish_async

__all__ = ["publish_deferred"]


def publish_deferred(
    topic: str | None = None,
    msg: Any = None,
    modname: str | None = None,
    recipients: Iterable[str] | str | None = None,
    ack_timeout: float = DEFAULT_ACK_TIMEOUT,
    require: str = "received",
    **config: Any,
) -> defer.Deferred:
    """Publish as :func:`gilmsg.publish` does; returns a :class:`~twisted.internet.defer.Deferred`.

    Call it from the reactor thread. The Deferred fires (in the reactor thread) with the
    :class:`~gilmsg.Report` (None without recipients), or fails with what :func:`gilmsg.publish`
    raises: :class:`~gilmsg.InvalidInput` / :class:`~gilmsg.ConfigError` before anything is
    sent, then :class:`~gilmsg.Timeout` or :class:`~gilmsg.Rejected`. Cancelling it stops the
    re-sending (the Deferred fails with :class:`~twisted.internet.defer.CancelledError`).
    """
    from twisted.internet import reactor

    modname = modname or calling_module()
    lock = threading.Lock()
    state: dict[str, Any] = {}

    def cancel(_d: defer.Deferred) -> None:
        with lock:
            state["cancelled"] = True
            pending = state.get("pending")
        if pending is not None:
            pending.cancel()

    result: defer.Deferred[Any] = defer.Deferred(cancel)

    def fire(future: Future) -> None:  # reactor thread
        if result.called:
            return
        if future.cancelled():
            result.cancel()
        elif future.exception() is not None:
            result.errback(future.exception())
        else:
            result.callback(future.result())

    def started(pending: PendingDelivery) -> None:  # reactor thread
        with lock:
            state["pending"] = pending
            cancelled = state.get("cancelled", False)
        if cancelled:
            pending.cancel()
            return
        pending.future.add_done_callback(lambda f: reactor.callFromThread(fire, f))

    def failed(failure: Any) -> None:
        if not result.called:
            result.errback(failure)

    threads.deferToThread(
        publish_async, topic=topic, msg=msg, modname=modname, recipients=recipients,
        ack_timeout=ack_timeout, require=require, **config,
    ).addCallbacks(started, failed)
    return result
