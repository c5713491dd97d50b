"""Process-wide signal handling of a fedmsg-hub running gilmsg consumers: a prompt, clean stop.

Stock moksha waits for the next message on SIGINT/SIGHUP and dies without cleanup on SIGTERM.
Once the reactor runs, :func:`install_stop_handlers` takes SIGINT, SIGTERM and SIGHUP over
(chaining any previous handler, moksha's first); a signal stops every registered hub, then the
reactor; a second signal exits at once with ``128 + signal number``. Signals belong to the
process, so this state is the module's, apart from any one consumer.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from moksha.hub.reactor import reactor
from twisted.internet.error import ReactorNotRunning

log = logging.getLogger("gilmsg.consumers")

#: Logged (INFO, logger ``gilmsg.consumers``) once the hub runs with the stop handlers in place.
READY_LOG = "gilmsg: hub running"

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


_hubs: list[Any] = []
_previous: dict[int, Any] = {}
_state = {"stopping": False}
_state_lock = threading.Lock()


def register_hub(hub: Any) -> None:
    with _state_lock:
        if not any(h is hub for h in _hubs):
            _hubs.append(hub)


def install_stop_handlers() -> None:
    """In the reactor (main) thread once it runs: take over SIGINT/SIGTERM/SIGHUP, chaining."""
    if threading.current_thread() is not threading.main_thread():
        log.warning("reactor not in the main thread: gilmsg installs no signal handlers")
        return
    for signum in STOP_SIGNALS:
        previous = signal.getsignal(signum)
        if previous is _on_stop_signal or previous == signal.SIG_IGN:
            continue
        _previous[signum] = previous
        signal.signal(signum, _on_stop_signal)
    log.info("%s; SIGINT, SIGTERM or SIGHUP stops it", READY_LOG)


def _on_stop_signal(signum: int, frame: Any) -> None:
    """Signal handler: ask the reactor to stop (and wake it up); a second signal exits at once."""
    # No lock here: the handler runs in the main thread between bytecodes, possibly while that
    # thread holds a lock; a plain flag cannot deadlock.
    if _state["stopping"]:
        os._exit(128 + signum)
    _state["stopping"] = True
    reactor.callFromThread(_stop_hub, signum)


def _stop_hub(signum: int) -> None:
    """Reactor thread: run the previous handler (moksha's), then make sure hubs and reactor stop.

    Stopping a hub stops its consumers' workers; without that the reactor's thread pool would
    wait for them forever.
    """
    log.info("%s: stopping the hub", signal.Signals(signum).name)
    previous = _previous.get(signum)
    if callable(previous) and previous is not signal.default_int_handler:
        try:
            previous(signum, None)
        except Exception:
            log.exception("previous %s handler failed", signal.Signals(signum).name)
    for hub in list(_hubs):
        if not getattr(hub, "consumers", None):  # already stopped (moksha's handler does it)
            continue
        try:
            hub.stop()
        except Exception:
            log.exception("stopping the moksha hub failed")
    try:
        reactor.stop()
    except ReactorNotRunning:  # the previous handler already did
        pass
