"""Helpers of the fault suites: reading what real recipients delivered, checking the promise.

The promise under test, for every publish in every fault: it returns a report naming every
recipient, or raises :class:`gilmsg.Timeout` whose ``missing`` names exactly the recipients that
did not acknowledge; and a recipient process hands each message to its application once.
"""

from __future__ import annotations

import json
import queue
import time
from collections import Counter
from collections.abc import Iterable

from gilmsg.testing import DEFAULT_WAIT, Process


def drain(proc: Process) -> list[str]:
    """Move every stdout line the process printed so far into ``proc.seen``; returns them all."""
    while True:
        try:
            proc.seen.append(proc.lines.get_nowait())
        except queue.Empty:
            return proc.seen


def delivered(proc: Process) -> Counter[str]:
    """msg_id -> how many times a ``gilmsg-tail --json`` process printed it (so far)."""
    counts: Counter[str] = Counter()
    for line in drain(proc):
        try:
            envelope = json.loads(line)
        except ValueError:
            continue
        if isinstance(envelope, dict) and isinstance(envelope.get("msg_id"), str):
            counts[envelope["msg_id"]] += 1
    return counts


def await_delivered(proc: Process, msg_ids: Iterable[str], timeout: float = DEFAULT_WAIT) -> None:
    """Wait until the tail printed every one of ``msg_ids``; AssertionError naming the rest."""
    wanted = set(msg_ids)
    deadline = time.monotonic() + timeout
    while True:
        missing = wanted - set(delivered(proc))
        if not missing:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{proc.argv}: never printed {sorted(missing)}; "
                                 f"stderr:\n{proc.stderr}")
        try:
            proc.seen.append(proc.lines.get(timeout=remaining))
        except queue.Empty:
            pass


def assert_once_each(*procs: Process) -> None:
    """No process printed any msg_id twice (each message reaches each application once)."""
    for proc in procs:
        twice = {m: n for m, n in delivered(proc).items() if n > 1}
        assert not twice, f"{proc.argv}: delivered more than once: {twice}"


def assert_outcome(outcome: object, recipients: Iterable[str], down: Iterable[str] = ()) -> None:
    """``outcome`` (a Report, or the Timeout raised) names exactly what happened.

    ``down``: the recipients that could not acknowledge; with none, it must be a full report;
    otherwise a Timeout whose ``missing`` is exactly ``down`` and whose ``acked`` is the rest.
    """
    import gilmsg

    recipients, down = set(recipients), set(down)
    if not down:
        assert isinstance(outcome, gilmsg.Report), f"expected a report, got {outcome!r}"
        assert set(outcome.acks) == recipients, outcome
    else:
        assert isinstance(outcome, gilmsg.Timeout), f"expected Timeout, got {outcome!r}"
        assert set(outcome.missing) == down, outcome
        assert set(outcome.acked) == recipients - down, outcome
