"""The outbox runner inside the stock ``fedmsg-hub``: a moksha producer.

Registered under the ``moksha.producer`` entry point as ``gilmsg_outbox``; the hub loads it and
it stays inert unless enabled in ``fedmsg.d``::

    config = {
        "gilmsg.outbox": "/var/lib/gilmsg/outbox.db",   # the file publishers store into
                                                       # (or postgresql://user@host/db)
        "gilmsg.outbox.runner": True,                  # drain it from this hub
        "gilmsg.outbox.runner_name": "outbox-runner",  # identity to send from (default: name)
    }

It runs a :class:`~gilmsg.outbox.runner.Runner` in its own thread (never in the reactor), logs
``gilmsg outbox runner started`` once running, and stops with the hub. An unusable outbox or
identity is logged at start and the hub runs without the runner (moksha's rule for producers).
Once running, an outbox that cannot be written (a full disk) is logged and retried every
:data:`RETRY_AFTER` seconds; the runner stops only with the hub.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from moksha.hub.api.producer import Producer

from gilmsg.errors import GilmsgError, OutboxError

log = logging.getLogger("gilmsg.outbox")

#: fedmsg.d key: true to run the outbox runner in this hub.
ENABLE_KEY = "gilmsg.outbox.runner"
#: fedmsg.d key: the identity (endpoints/certnames entry) it sends from; default ``name``.
NAME_KEY = "gilmsg.outbox.runner_name"
#: Logged once the runner thread runs (tests and operators wait for it).
READY_LOG = "gilmsg outbox runner started"
#: Seconds the hub's runner waits after its outbox could not be used (disk full, locked ...)
#: before it tries again: the runner lives as long as the hub, not until the first full disk.
RETRY_AFTER = 1.0


class OutboxProducer(Producer):
    """Drains the outbox of ``gilmsg.outbox`` while the hub runs (when enabled)."""

    def __init__(self, hub: Any) -> None:
        config = hub.config
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not config.get(ENABLE_KEY):
            return  # moksha: a producer that is not _initialized is left out
        from gilmsg.outbox.durable import settings
        from gilmsg.outbox.runner import Runner
        from gilmsg.outbox.store import open_store

        cfg = dict(config)
        if config.get(NAME_KEY):
            cfg["name"] = config[NAME_KEY]
        try:
            path, _expiry, durability = settings(cfg)
            store = open_store(path, durability=durability)
            self.runner = Runner(store, cfg)
            _monitor(cfg, store.path)
        except GilmsgError as exc:
            log.error("gilmsg outbox runner not started: %s", exc)
            raise
        super().__init__(hub)
        self._thread = threading.Thread(target=self._run, name="gilmsg-outbox-runner",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        log.info("%s on %s from %s", READY_LOG, self.runner.store.path,
                 self.runner.link.address)
        while not self._stop.is_set():
            try:
                self.runner.run(self._stop)
                return
            except OutboxError:  # logged by the runner; a full disk frees up: try again
                self._stop.wait(RETRY_AFTER)
            except Exception:
                log.exception("gilmsg outbox runner stopped")
                return

    def stop(self) -> None:
        """Stop the runner thread (attempts in flight are left to their leases)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self.runner.abandon()


def _monitor(config: dict[str, Any], path: str) -> None:
    """With ``gilmsg.monitoring``: serve it in the reactor and export this outbox's backlog
    (read through a handle of its own, at each scrape)."""
    from gilmsg import monitoring
    from gilmsg.monitoring import reactor as monitoring_reactor

    if monitoring_reactor.start(config) is None:
        return
    import time

    from gilmsg.outbox.store import open_store

    reader = open_store(path, create=False, readonly=True)
    monitoring.watch_outbox(lambda: reader.stats(time.time()))
