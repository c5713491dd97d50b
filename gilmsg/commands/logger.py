"""``gilmsg-logger``: fedmsg-logger that says whether each message was acknowledged.

fedmsg-logger exits 0 even when no relay runs and its message is dropped. gilmsg-logger
publishes each message with the required recipients (``--recipients``) and reports, per message,
who acknowledged it; its exit code is 0 only when every message was acknowledged by every
recipient. Without ``--recipients`` it is a plain fedmsg publish and says that nothing was
confirmed.
"""

from __future__ import annotations

import io
import json
import sys
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import click

import gilmsg
from gilmsg import config as gconfig
from gilmsg import groups
from gilmsg.commands import _common
from gilmsg.core.wire import check_timeout
from gilmsg.errors import (
    ConfigError,
    GilmsgError,
    InvalidInput,
    NotDelivered,
    OutboxError,
    Rejected,
    Timeout,
)
from gilmsg.publish import PendingDelivery, publish_async, someone_listens, wait

PROG = "gilmsg-logger"

#: Result statuses, as written in ``--json-report`` and counted in the summary.
DELIVERED = "delivered"  #: every required recipient acknowledged
SENT = "sent"  #: published without recipients: nothing confirms it arrived
NOT_ACKNOWLEDGED = "not_acknowledged"  #: published, some recipients did not acknowledge
REJECTED = "rejected"  #: a recipient answered that it could not process it
INVALID = "invalid"  #: bad input (not JSON ...): not sent
FAILED = "failed"  #: an error stopped this message; it may or may not have left
NOT_SENT = "not_sent"  #: read but not published (stopped first, or nobody was subscribed)
STORED = "stored"  #: --outbox: committed, not every ACK yet: delivery continues from the outbox

_SUMMARY_WORDS = {
    DELIVERED: "delivered",
    SENT: "sent (not confirmed)",
    NOT_ACKNOWLEDGED: "not acknowledged",
    REJECTED: "rejected",
    INVALID: "invalid",
    FAILED: "failed",
    NOT_SENT: "not sent",
    STORED: "stored (delivery continues in the outbox)",
}


@dataclass
class Result:
    """What happened to one message (one input line, or ``--message``)."""

    line: int | None
    status: str
    msg_id: str | None = None
    topic: str | None = None
    acked: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    sends: int | None = None
    error: str | None = None
    #: recipient -> {"status", "at", "reason"}: what each one answered (see gilmsg.Answer)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: missing recipient -> why (gilmsg.core.causes), when the publishing link could tell
    causes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True for a message that needs no attention: delivered, or sent without recipients."""
        return self.status in (DELIVERED, SENT)

    def to_json(self) -> dict[str, Any]:
        """The ``--json-report`` object for this message."""
        return {
            "line": self.line,
            "status": self.status,
            "msg_id": self.msg_id,
            "topic": self.topic,
            "acked": {cn: round(t, 6) for cn, t in self.acked.items()},
            "missing": list(self.missing),
            "sends": self.sends,
            "error": self.error,
            "answers": self.answers,
            "causes": dict(self.causes),
        }

    def why_missing(self) -> dict[str, str]:
        """Missing recipient -> what it did answer: received only, rejected (why), or why its
        ACKs were refused (revoked, expired, other CA, other content); once per recipient."""
        out = {}
        for cn in self.missing:
            if cn in self.causes:  # the Timeout's own words
                out[cn] = self.causes[cn]
                continue
            answer = self.answers.get(cn, {})
            status, reason = answer.get("status"), answer.get("reason")
            if status == "rejected":
                out[cn] = f"rejected: {reason or 'no reason given'}"
            elif status == "received":
                out[cn] = "received, not processed"
            elif reason:
                out[cn] = f"ACKs refused: {reason}"
        return out

    def describe(self) -> str:
        """The one-line human report (without the program name)."""
        where = "message" if self.line is None else f"line {self.line}"
        ident = f" [{self.msg_id}]" if self.msg_id else ""
        if self.status == DELIVERED:
            who = ", ".join(f"{cn} ({t:.3f}s)" for cn, t in self.acked.items())
            return f"{where}: delivered, acknowledged by {who}{ident}"
        if self.status == SENT:
            return f"{where}: sent, delivery not confirmed (no --recipients){ident}"
        if self.status in (NOT_ACKNOWLEDGED, REJECTED):
            got = ", ".join(self.acked) or "nobody"
            verb = "REJECTED" if self.status == REJECTED else "NOT acknowledged"
            whys = "".join(f"; {cn}: {why}" for cn, why in self.why_missing().items())
            return (f"{where}: {verb} by {', '.join(self.missing)}: {self.error}{whys} "
                    f"(acknowledged by: {got}){ident}")
        if self.status == STORED:
            got = ", ".join(self.acked) or "nobody"
            whys = "".join(f"; {cn}: {why}" for cn, why in self.why_missing().items())
            return (f"{where}: stored, delivery continues in the outbox: still owed to "
                    f"{', '.join(self.missing)} ({self.error}{whys}; acknowledged by: {got})"
                    f"{ident}")
        if self.status == INVALID:
            return f"{where}: not sent: {self.error}"
        if self.status == NOT_SENT:
            return f"{where}: not sent: {self.error}"
        return f"{where}: failed: {self.error}{ident}"


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


def _answers(answers: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {cn: {"status": a.status, "at": None if a.at is None else round(a.at, 6),
                 "reason": a.reason} for cn, a in answers.items()}


@dataclass
class Item:
    """One message to send, or the reason an input line cannot be sent."""

    line: int | None
    body: Any = None
    problem: str | None = None


def split_recipients(values: Iterable[str]) -> tuple[str, ...]:
    """``--recipients`` values to names: each value may hold several, space- or comma-separated.

    ``("a", "b c", "d,e")`` gives ``("a", "b", "c", "d", "e")``; repeats are dropped, order kept.

    Raises:
        click.BadParameter: a value is empty or has an empty name between commas.
    """
    out: list[str] = []
    for value in values:
        if not value.strip():
            raise click.BadParameter("empty recipient name (give a certificate CN)")
        for part in value.split(","):
            names = part.split()
            if not names:
                raise click.BadParameter(
                    f"empty recipient name in {value!r} (a comma with no name next to it)"
                )
            out.extend(n for n in names if n not in out)
    return tuple(out)


def _recipients_callback(_ctx: click.Context, _param: click.Parameter,
                         value: tuple[str, ...]) -> tuple[str, ...]:
    return split_recipients(value)


def _timeout_callback(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    try:
        return check_timeout(value)  # the library's own rule, checked before any input is read
    except InvalidInput as exc:
        raise click.BadParameter(str(exc).replace("ack_timeout ", "", 1)) from None


def _parse(text: str, json_input: bool) -> Any:
    if json_input:
        return json.loads(text)
    return {"log": text}


def read_items(message: str | None, json_input: bool, stream: BinaryIO) -> Iterator[Item]:
    """The messages to send: ``--message``, else stdin line by line (blank lines skipped).

    With ``json_input`` each line (or ``--message``) is one JSON document; without it a line
    ``text`` becomes ``{"log": "text"}`` (surrounding whitespace removed), as in fedmsg-logger.
    A line that is not UTF-8 or not JSON yields an :class:`Item` with a ``problem``.
    """
    if message is not None:
        if not message.strip():
            yield Item(None, problem="--message is empty")
            return
        try:
            yield Item(None, body=_parse(message.strip(), json_input))
        except (ValueError, RecursionError) as exc:
            yield Item(None, problem=f"--message is not valid JSON: {exc}")
        return
    for number, raw in enumerate(iter(stream.readline, b""), start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            yield Item(number, problem=f"not UTF-8 text: {exc}")
            continue
        if not text:
            continue
        try:
            yield Item(number, body=_parse(text, json_input))
        except (ValueError, RecursionError) as exc:
            yield Item(number, problem=f"invalid JSON: {exc}")


class Session:
    """Publishes items one by one and keeps the results."""

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
            click.echo(f"{PROG}: {result.describe()}", err=True)

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
                    recipients=self.recipients, ack_timeout=self.ack_timeout)
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
        except (_common.Interrupted, KeyboardInterrupt):
            self.record(Result(item.line, NOT_SENT, error="interrupted before sending"))
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
                               answers=_answers(exc.answers), causes=dict(exc.causes)))
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
                                   answers=_answers(report.answers)))

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
                           answers=_answers(getattr(slot.pending, "answers", {}))))

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
                window.append(self.start(item))
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
            _common.error(PROG, "no input: stdin was empty or blank (pipe lines in, or pass "
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
        _common.note(PROG, text)


def prepare_config(config_filename: str | None, name: str | None, active: bool,
                   cert_prefix: str | None) -> dict[str, Any]:
    """Load the configuration and pick how this process publishes.

    With ``--name`` (or a ``name`` in the configuration) it publishes from that endpoint;
    with ``--active``, or when no name is known, through fedmsg-relay (``relay_inbound``).

    Raises:
        ConfigError: the configuration cannot be read, or neither a name nor a relay is
            configured.
    """
    overrides: dict[str, Any] = {}
    if name is not None:
        overrides["name"] = name
    if cert_prefix is not None:
        overrides["cert_prefix"] = cert_prefix
    cfg = _common.load_config(config_filename, overrides)
    if active or not cfg.get("name"):
        if not cfg.get("name") and not cfg.get("relay_inbound"):
            raise _common.SetupError(
                f"no identity to publish as: pass --name NAME (one of: {_common.known_names(cfg)})"
                f" to publish from its endpoint, or set relay_inbound and run fedmsg-relay"
            )
        cfg["active"] = True
    else:
        cfg["active"] = False
    return cfg


def expand_recipients(cfg: dict[str, Any], recipients: tuple[str, ...],
                      strict: bool = False) -> tuple[str, ...]:
    """``--recipients`` with each ``@GROUP`` expanded from the config (:mod:`gilmsg.groups`).

    A name no identity of the bus holds is warned about once (refused with ``strict``).

    Raises:
        click.UsageError: an unknown or empty group; with ``strict``, an unknown name.
    """
    if not recipients:
        return recipients
    try:
        return tuple(groups.resolve(recipients, cfg, strict=strict or None))
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None


def preflight(cfg: dict[str, Any], recipients: tuple[str, ...]) -> None:
    """Check identity, endpoint, key, certificate, CA and CRL before reading any input.

    Opens no socket: a bad configuration fails at once, not after the first line.
    """
    gconfig.publishing(cfg)
    if recipients or cfg.get("sign_messages"):
        try:
            gconfig.certname(cfg)
        except ConfigError as exc:
            if cfg.get("name") or "cert_prefix" in cfg:
                raise
            raise _common.SetupError(
                f"{exc}; without --name this command publishes through the relay and signs as "
                f"shell.<host>: pass --name NAME (one of: {_common.known_names(cfg)}) or "
                f"--cert-prefix PREFIX"
            ) from None
        from gilmsg.crypto import signing

        signing.signer_for(cfg)
    if recipients:
        from gilmsg.crypto import signing

        signing.validator_for(cfg).check()


EXAMPLES = [
    "echo 'disk full on db1' | gilmsg-logger --recipients 'ops-bot pager' --name cron",
    "gilmsg-logger --name cron -r ops-bot --message '{\"a\": 1}' --json-input --topic alert",
    "tail -f events.jsonl | gilmsg-logger --json-input --name feeder -r archiver --json-report",
]


LOGGER_CODES = {
    _common.EXIT_OK: "every message was acknowledged by every recipient (without --recipients: "
                     "every message was sent while someone subscribed to its topic; nothing "
                     "confirms delivery)",
    _common.EXIT_NOT_ACKNOWLEDGED: "some recipients did not acknowledge in time (without "
                                   "--recipients: a message was not sent, nobody subscribed)",
    _common.EXIT_OUTBOX: "--outbox: the outbox file cannot be used (corrupt, read-only, disk "
                         "full, newer schema): the message named was not stored, not sent",
    _common.EXIT_STORED: "--outbox: every message is stored, some are not acknowledged yet: "
                         "delivery continues from the outbox (gilmsg-outbox run, hub plugin)",
}


@click.command(context_settings=_common.CONTEXT_SETTINGS,
               epilog=_common.epilog(EXAMPLES, LOGGER_CODES))
@click.option("-m", "--message", default=None, metavar="TEXT",
              help="Send this one message instead of reading stdin.")
@click.option("--json-input", is_flag=True,
              help="Each line (or --message) is one JSON document; without it a line TEXT is "
                   'sent as {"log": "TEXT"}.')
@click.option("--topic", default="log", show_default=True,
              help="Topic: <prefix>.<env>.MODNAME.TOPIC.")
@click.option("--modname", default="logger", show_default=True, help="Module part of the topic.")
@click.option("--cert-prefix", default=None, metavar="PREFIX",
              help="Sign with certnames['PREFIX.<short hostname>'] (as fedmsg's --cert-prefix); "
                   "default: certnames[NAME], or 'shell' through the relay.")
@click.option("--config-filename", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Read this fedmsg config file instead of fedmsg.d/.")
@click.option("--name", default=None, metavar="NAME",
              help="Publish directly from endpoints[NAME] (default: the config's 'name').")
@click.option("--active", is_flag=True,
              help="Publish through fedmsg-relay (relay_inbound), as fedmsg-logger does; the "
                   "default when no name is known.")
@click.option("-r", "--recipients", multiple=True, metavar="CN", callback=_recipients_callback,
              help="Required recipient (certificate CN), or @GROUP for the members of a group "
                   "of the config key gilmsg.recipients. Repeat it or separate names with "
                   "spaces or commas. Without it nothing confirms delivery.")
@click.option("--ack-timeout", type=float, default=gilmsg.DEFAULT_ACK_TIMEOUT, show_default=True,
              metavar="SECONDS", callback=_timeout_callback,
              help="How long each message waits for every ACK.")
@click.option("--max-in-flight", type=int, default=1, show_default=True, metavar="N",
              callback=lambda _c, _p, v: _positive_in_flight(v),
              help="Keep up to N messages awaiting their ACKs at once (results are still "
                   "reported in input order).")
@click.option("--require", type=click.Choice(["received", "processed"]), default="received",
              show_default=True,
              help="Which ACK counts: 'received' (the recipient got it) or 'processed' (its "
                   "application handled it; a rejection is reported at once).")
@click.option("-q", "--quiet", is_flag=True,
              help="Print only failures: no line per delivered message, no summary.")
@click.option("--json-report", is_flag=True,
              help="Print one JSON object per message on stdout: line, status, msg_id, topic, "
                   "acked, missing, sends, error.")
@click.option("--strict", is_flag=True,
              help="Refuse (exit 2) a recipient that no identity of the bus holds, when the "
                   "config lists them (gilmsg.known_recipients, gilmsg.recipients).")
@click.option("--outbox", "outbox_path", default=None, metavar="PATH",
              help="Store each message durably in this outbox file before sending it (needs "
                   "--recipients); what is not acknowledged in time stays owed (exit 7) and is "
                   "delivered later by gilmsg-outbox run or the fedmsg-hub plugin.")
@click.option("--debug", is_flag=True, help="Show debug logging and tracebacks.")
def main(message: str | None, json_input: bool, topic: str, modname: str,
         cert_prefix: str | None, config_filename: str | None, name: str | None, active: bool,
         recipients: tuple[str, ...], ack_timeout: float, max_in_flight: int, require: str,
         quiet: bool, json_report: bool, strict: bool, outbox_path: str | None,
         debug: bool) -> None:
    """Publish messages on the fedmsg bus and report who acknowledged each one.

    Reads stdin line by line (one message per line, blank lines skipped) unless --message is
    given. Each message goes out with the required --recipients and waits up to --ack-timeout
    for a signed ACK from every one of them; one line per message on stderr says who
    acknowledged it, and a summary ends a stream ("3 delivered, 1 not acknowledged").

    Without --recipients a message is published as fedmsg-logger does, fire-and-forget, once
    someone subscribes to its topic (with --active: once fedmsg-relay is connected), waiting up
    to --ack-timeout for that; a message nobody would hear is reported not sent (exit 1). The
    command says so, and exit 0 proves nothing about delivery.

    Ctrl-C stops at once: the message in flight is reported as not acknowledged, and the
    summary says from which line on the input was not read.
    """

    def body() -> int:
        _common.setup_logging(PROG, debug=debug, quiet=quiet)
        cfg = prepare_config(config_filename, name, active, cert_prefix)
        names = expand_recipients(cfg, recipients, strict)
        preflight(cfg, names)
        if not names and not quiet:
            _common.note(PROG, "note: no --recipients: messages are published without "
                               "acknowledgement; delivery is not confirmed")
        stdin = _stdin_bytes()
        if message is None and not quiet and _isatty(stdin):
            _common.note(PROG, "reading messages from the terminal, one per line; end with "
                               "Ctrl-D")
        outbox = None
        if outbox_path is not None:
            if not names:
                raise click.UsageError("--outbox needs --recipients: the outbox keeps a message "
                                       "until each recipient has acknowledged it")
            if require != "received":
                raise click.UsageError("--outbox keeps a message until it is received: it "
                                       "cannot be combined with --require processed")
            from gilmsg.outbox import Outbox

            outbox = Outbox(outbox_path, **cfg)
        session = Session(cfg, topic, modname, names, ack_timeout, quiet, json_report,
                          max_in_flight, require, outbox)
        try:
            return session.run(read_items(message, json_input, stdin))
        finally:
            if outbox is not None:
                outbox.close()

    _common.run(PROG, body, debug=debug)


def _positive_in_flight(value: int) -> int:
    if value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}")
    return value


def _stdin_bytes() -> BinaryIO:
    stream = sys.stdin
    if stream is None:  # started with fd 0 closed: same as empty input
        return io.BytesIO()
    return getattr(stream, "buffer", stream)


def _with_hint(exc: BaseException) -> str:
    hint = _common.hint_for(exc)
    return f"{exc} ({hint})" if hint else str(exc)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
