"""Refusals logged without flooding: the first of each reason at once, then one summary line.

Anyone on the bus can make a process refuse thousands of ACKs or messages a second; one
WARNING line each would flood its log. A :class:`RefusalLog` writes the first refusal of each
reason at once (with its detail), counts the rest, and writes **one** line per ``interval``
with the counts by reason (from a timer, so the last counts are not held back until the next
refusal). The number of distinct reasons kept per interval is bounded: reasons are partly
chosen by the sender.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable

__all__ = ["DEFAULT_INTERVAL", "MAX_REASONS", "RefusalLog", "flush_all", "reset_all"]

#: Seconds between two summary lines of one :class:`RefusalLog`.
DEFAULT_INTERVAL = 60.0
#: Distinct reasons counted per interval; any more are counted as "other reasons".
MAX_REASONS = 32
#: Details of the latest refusals kept in memory (:attr:`RefusalLog.recent`), for diagnosis.
RECENT = 1000
_OTHER = "other reasons"

_live: weakref.WeakSet[RefusalLog] = weakref.WeakSet()


class RefusalLog:
    """Counts refusals of ``what`` (``"ACKs"``, ``"messages"``) and logs them on ``logger``.

    :meth:`refused` logs the first refusal of each reason kind at WARNING immediately; later
    ones of that kind are counted and summarised in one WARNING line per ``interval``:
    ``refused 4999 ACKs in the last 60 s: 4998 not a recipient, 1 wrong digest``. Thread-safe.
    """

    def __init__(self, logger: logging.Logger, what: str,
                 interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._announced: set[str] = set()
        self._counts: Counter[str] = Counter()
        self._timer: threading.Timer | None = None
        self.total = 0  #: every refusal counted, for tests and metrics
        #: ``(kind, detail)`` of the latest :data:`RECENT` refusals, logged or not.
        self.recent: deque[tuple[str, str]] = deque(maxlen=RECENT)
        _live.add(self)

    def refused(self, kind: str, detail: str) -> None:
        """Count one refusal of reason ``kind``; ``detail`` is logged only for the first one."""
        with self._lock:
            self.total += 1
            self.recent.append((kind, detail))
            if kind not in self._announced and len(self._announced) < MAX_REASONS:
                self._announced.add(kind)
                first = True
            else:
                first = False
                if kind not in self._announced:
                    kind = _OTHER
                self._counts[kind] += 1
                if self._timer is None:
                    self._timer = threading.Timer(self.interval, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
        if first:
            self.logger.warning("refused %s: %s (further refusals for this reason are "
                                "summarised every %g s)", self.what, detail, self.interval)

    def reset(self) -> None:
        """Log what is pending, then forget which reasons were announced: the next refusal of
        each reason is logged at once again (for a process that starts a new session, and for
        tests, which each expect their own first refusal to be logged)."""
        self.flush()
        with self._lock:
            self._announced.clear()

    def flush(self) -> None:
        """Log the counts gathered since the last summary (nothing if there are none)."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
            self._announced &= set(counts)  # a reason quiet for an interval is news again
            if self._timer is not None and self._timer is not threading.current_thread():
                self._timer.cancel()
            self._timer = None
        if counts:
            total = sum(counts.values())
            parts = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
            self.logger.warning("refused %d more %s in the last %g s: %s", total, self.what,
                                self.interval, parts)


def reset_all() -> None:
    """:meth:`RefusalLog.reset` every live refusal log."""
    for summary in list(_live):
        summary.reset()


@atexit.register
def flush_all() -> None:
    """Log every :class:`RefusalLog`'s pending counts now (also done at exit)."""
    for summary in list(_live):
        summary.flush()
