"""The in-flight pipeline of ``gilmsg-logger``: publish each item, await its ACKs, report.

A :class:`Session` keeps up to ``max_in_flight`` messages awaiting their ACKs (each a
:class:`Slot`) and records their :class:`~gilmsg.commands._results.Result` in input order; its
exit code follows the precedence of :meth:`Session.exit_code`.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import click

from gilmsg import config as gconfig
from gilmsg.commands import _common
from gilmsg.commands._input import Item
from gilmsg.commands._results import (
    _SUMMARY_WORDS,
    DELIVERED,
    FAILED,
    INVALID,
    NOT_ACKNOWLEDGED,
    NOT_SENT,
    REJECTED,
    SENT,
    STORED,
    Result,
    answers_json,
)
from gilmsg.errors import (
    GilmsgError,
    InvalidInput,
    NotDelivered,
    OutboxError,
    Rejected,
    Timeout,
)
from gilmsg.publish import PendingDelivery, publish_async, someone_listens, wait


@dataclass
class Slot:
    """One item on its way: its pending delivery, or the result or error it already has."""

    item: Item
    pending: PendingDelivery | None = None
    result: Result | None = None
    error: BaseException | None = None
    stop_code: int | None = None

    def done(self) -> bool:
        """True when finishing it will not wait."""
        return self.pending is None or self.pending.future.done()


class Session:
    """Publishes items one by one and keeps the results."""

    #: the program named in its lines on stderr
    prog = "gilmsg-logger"

    def __init__(self, config: dict[str, Any], topic: str, modname: str,
                 recipients: tuple[str, ...], ack_timeout: float, quiet: bool,
                 json_report: bool, max_in_flight: int = 1, require: str = "received",
                 outbox: Any = None) -> None:
        self.max_in_flight = max(1, max_in_flight)
        self.require = require
        self.outbox = outbox  #: a gilmsg.Outbox: each message is stored before it is sent
        self.config = config
        self.topic = topic
        self.modname = modname
        self.recipients = recipients
        self.ack_timeout = ack_timeout
        self.quiet = quiet
        self.json_report = json_report
        self.results: list[Result] = []
        self.stop_code: int | None = None  #: set when an error stops the stream
        self.last_line: int | None = None  #: the last input line read

    def record(self, result: Result) -> None:
        """Keep ``result`` and report it (stderr line, ``--json-report`` object)."""
        self.results.append(result)
        if self.json_report:
            click.echo(json.dumps(result.to_json(), sort_keys=True))
        if not (self.quiet and result.ok):
            click.echo(f"{self.prog}: {result.describe()}", err=True)

    def send(self, item: Item) -> None:
        """Publish one item and record what happened to it."""
        self.finish(self.start(item))

    def start(self, item: Item) -> Slot:
        """Publish ``item`` without waiting for its ACKs (an error is recorded by finish)."""
        if item.problem is not None:
            return Slot(item, result=Result(item.line, INVALID, error=item.problem))
        try:
            if not self.recipients and not self._someone_listens(item):
                return Slot(item, result=self._not_sent)
            if self.outbox is not None:
                pending = self.outbox.publish_async(
                    topic=self.topic, msg=item.body, modname=self.modname,
                    recipients=self.recipients, ack_timeout=self.ack_timeout,
                    require=self.require)
            else:
                pending = publish_async(
                    topic=self.topic, msg=item.body, modname=self.modname,
                    recipients=self.recipients or None, ack_timeout=self.ack_timeout,
                    require=self.require, **self.config,
                )
        except OutboxError as exc:  # raised before anything is sent: nothing stored
            return Slot(item, result=Result(item.line, NOT_SENT,
                                            error=f"not stored: {_with_hint(exc)}"),
                        stop_code=_common.exit_code_for(exc))
        except GilmsgError as exc:
            return Slot(item, error=exc)
        except (_common.Interrupted, KeyboardInterrupt):  # a second signal: it may have left
            self.record(Result(item.line, FAILED, error="interrupted while sending; it may "
                                                        "have left"))
            raise
        return Slot(item, pending)

    def finish(self, slot: Slot) -> None:
        """Wait for ``slot``'s result and record it (the slots of a stream in input order)."""
        item, pending = slot.item, slot.pending
        if slot.result is not None:
            if slot.result is not self._not_sent:
                self.record(slot.result)
            if slot.stop_code is not None:
                self.stop_code = slot.stop_code
            return
        try:
            if slot.error is not None:
                raise slot.error
            assert pending is not None
            try:
                report = wait(pending)
            finally:
                if self.outbox is not None:
                    pending.settled.wait(5.0)  # type: ignore[attr-defined]
        except NotDelivered as exc:
            if isinstance(exc, Rejected):
                status, error = REJECTED, "rejected"
            else:
                assert isinstance(exc, Timeout)
                status = STORED if self.outbox is not None else NOT_ACKNOWLEDGED
                error = f"no ACK within {exc.ack_timeout:g}s"
            self.record(Result(item.line, status, exc.msg_id, exc.topic,
                               self._in_order(exc.acked), list(exc.missing), error=error,
                               answers=answers_json(exc.answers), causes=dict(exc.causes)))
        except InvalidInput as exc:
            self.record(Result(item.line, INVALID, error=str(exc)))
        except (_common.Interrupted, KeyboardInterrupt):
            if pending is not None and not self.recipients:
                self.record(Result(item.line, FAILED, pending.msg_id, pending.topic,
                                   error="interrupted while sending; it may not have left"))
            elif pending is not None:  # cancelled by wait(): its state says what had arrived
                acked = pending.acked
                status = STORED if self.outbox is not None else NOT_ACKNOWLEDGED
                self.record(Result(item.line, status, pending.msg_id, pending.topic,
                                   self._in_order(acked),
                                   [r for r in self.recipients if r not in acked],
                                   error="interrupted before every ACK arrived"))
            else:
                self.record(Result(item.line, NOT_SENT, error="interrupted before sending"))
            raise
        except OutboxError as exc:  # raised before anything is sent: nothing stored
            self.record(Result(item.line, NOT_SENT, error=f"not stored: {_with_hint(exc)}"))
            self.stop_code = _common.exit_code_for(exc)
        except GilmsgError as exc:
            msg_id, topic = (pending.msg_id, pending.topic) if pending else (None, None)
            self.record(Result(item.line, FAILED, msg_id, topic, error=_with_hint(exc)))
            self.stop_code = _common.exit_code_for(exc)
        else:
            if report is None:
                self.record(Result(item.line, SENT, pending.msg_id, pending.topic))
            else:
                self.record(Result(item.line, DELIVERED, report.msg_id, report.topic,
                                   self._in_order(report.acks), sends=report.sends,
                                   answers=answers_json(report.answers)))

    def _abandon(self, slot: Slot) -> None:
        if slot.pending is None or not self.recipients:
            if slot.result is not None and slot.result is not self._not_sent:
                self.record(slot.result)
            return
        slot.pending.cancel()
        acked = slot.pending.acked
        status = STORED if self.outbox is not None else NOT_ACKNOWLEDGED
        self.record(Result(slot.item.line, status, slot.pending.msg_id,
                           slot.pending.topic, self._in_order(acked),
                           [r for r in self.recipients if r not in acked],
                           error="stopped before every ACK arrived",
                           answers=answers_json(getattr(slot.pending, "answers", {}))))

    #: marks a slot whose item was reported not sent by _someone_listens already
    _not_sent = Result(None, NOT_SENT)

    def _someone_listens(self, item: Item) -> bool:
        """Without recipients: wait up to --ack-timeout for a subscriber to the topic.

        A message published while nobody subscribes to its topic reaches no one (fedmsg-logger
        exits 0 then): record it as not sent instead. Errors are left to publish() to report.
        """
        try:
            topic = gconfig.full_topic(self.config, self.topic, self.modname)
            heard, address = someone_listens(self.config, topic, self.ack_timeout)
            if heard:
                return True
        except (GilmsgError, UnicodeError):
            return True
        if self.config.get("active"):
            where = f"no fedmsg-relay connected at {address}"
        else:
            where = f"nobody subscribed to {topic} at {address}"
        self.record(Result(item.line, NOT_SENT,
                           error=f"{where} within {self.ack_timeout:g}s: it would reach no one"))
        return False

    def _in_order(self, acks: Mapping[str, float]) -> dict[str, float]:
        """ACK times in the order the recipients were named (not the order they arrived)."""
        return {cn: acks[cn] for cn in self.recipients if cn in acks}

    def run(self, items: Iterable[Item]) -> int:
        """Send every item (until an error stops the stream); returns the exit code.

        Up to ``max_in_flight`` messages await their ACKs at once; results are recorded in
        input order.
        """
        interrupted: BaseException | None = None
        window: deque[Slot] = deque()
        try:
            for item in items:
                self.last_line = item.line
                with _common.interrupts_deferred():  # a started message is reported in flight
                    window.append(self.start(item))
                _common.raise_deferred()
                while window and (len(window) >= self.max_in_flight or window[0].done()):
                    self.finish(window.popleft())
                    if self.stop_code is not None:
                        break
                if self.stop_code is not None:
                    break
            while window and self.stop_code is None:
                self.finish(window.popleft())
        except (_common.Interrupted, KeyboardInterrupt) as exc:
            interrupted = exc
        for slot in window:  # after an interruption or a stop: report what was in flight
            self._abandon(slot)
        if not self.results and interrupted is None:
            _common.error(self.prog, "no input: stdin was empty or blank (pipe lines in, or pass "
                                "--message TEXT)")
            return _common.EXIT_BAD_INPUT
        code = self.exit_code(interrupted)
        self.summarise(code, interrupted)
        return code

    def exit_code(self, interrupted: BaseException | None) -> int:
        """Precedence: interrupted, configuration, not acknowledged, bad input, success."""
        if interrupted is not None:
            return _common.exit_code_for(interrupted)
        if self.stop_code is not None:
            return self.stop_code
        statuses = {r.status for r in self.results}
        if statuses & {NOT_ACKNOWLEDGED, REJECTED, FAILED, NOT_SENT}:
            return _common.EXIT_NOT_ACKNOWLEDGED
        if INVALID in statuses:
            return _common.EXIT_BAD_INPUT
        if STORED in statuses:
            return _common.EXIT_STORED
        return _common.EXIT_OK

    def summarise(self, code: int, interrupted: BaseException | None) -> None:
        """One summary line on stderr (skipped for a lone success, or with --quiet on success)."""
        if not self.results:
            return
        if code == _common.EXIT_OK and (self.quiet or len(self.results) == 1):
            return
        counts = Counter(r.status for r in self.results)
        parts = [f"{counts[s]} {word}" for s, word in _SUMMARY_WORDS.items() if counts[s]]
        text = ", ".join(parts)
        stopped = interrupted is not None or self.stop_code is not None
        if stopped and self.last_line is not None:
            text += f"; input after line {self.last_line} was not read"
        if interrupted is not None:
            name = "SIGINT" if isinstance(interrupted, KeyboardInterrupt) else str(interrupted)
            text = f"interrupted ({name}): {text}"
        elif self.stop_code is not None:
            text = f"stopped: {text}"
        _common.note(self.prog, text)


def _with_hint(exc: BaseException) -> str:
    hint = _common.hint_for(exc)
    return f"{exc} ({hint})" if hint else str(exc)
