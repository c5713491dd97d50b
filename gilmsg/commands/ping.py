"""``gilmsg-ping``: the end-to-end health check of gilmsg recipients.

It publishes a probe (a gilmsg message on ``<topic_prefix>.<environment>.gilmsg.ping``) that
names the recipients, and reports per recipient whether a valid signed ACK came back and after
how long. A recipient that answers proves the whole path: its process runs, it is subscribed,
its certificate is valid and not revoked, and ACKs reach the publisher. With ``--nagios`` the
output and exit code follow the Nagios/Icinga plugin conventions.
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

import gilmsg
from gilmsg.commands import _common
from gilmsg.commands._setup import expand_recipients, prepare_config, split_recipients
from gilmsg.core.wire import MAX_ACK_TIMEOUT
from gilmsg.errors import GilmsgError, NotDelivered

PROG = "gilmsg-ping"
#: modname and topic of probes: ``<topic_prefix>.<environment>.gilmsg.ping``.
PROBE_MODNAME = "gilmsg"
PROBE_TOPIC = "ping"
#: ``--topic``'s default: what follows ``<topic_prefix>.<environment>.``.
DEFAULT_TOPIC = f"{PROBE_MODNAME}.{PROBE_TOPIC}"


def split_topic(topic: str) -> tuple[str, str]:
    """``(modname, topic)`` for a ``--topic`` value: the part of the full topic after
    ``<topic_prefix>.<environment>.``. ``compose.rawhide.complete`` -> ``("compose",
    "rawhide.complete")``; a single word ``w`` -> ``("gilmsg", "w")`` (gilmsg's own namespace, as
    before this option took whole topics)."""
    modname, _, rest = topic.partition(".")
    return (modname, rest) if rest else (PROBE_MODNAME, modname)

#: Nagios/Icinga plugin exit codes.
NAGIOS_OK, NAGIOS_WARNING, NAGIOS_CRITICAL, NAGIOS_UNKNOWN = 0, 1, 2, 3
NAGIOS_NAMES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}

EXAMPLES = [
    "gilmsg-ping --name monitor worker archiver",
    "gilmsg-ping --name monitor --count 5 --interval 0.5 --json worker",
    "gilmsg-ping --name monitor --nagios --warning 500 --critical 2000 worker archiver",
]

PING_CODES = {
    _common.EXIT_OK: "every recipient answered every probe",
    _common.EXIT_NOT_ACKNOWLEDGED: "some recipient missed a probe (no answer, or its ACK "
                                   "was refused)",
    _common.EXIT_USAGE: "usage error: unknown option, bad value, no RECIPIENT",
}
NAGIOS_HELP = ("With --nagios: 0 OK, 1 WARNING (a probe missed, or RTT over --warning), "
               "2 CRITICAL (a recipient answered no probe, or RTT over --critical), "
               "3 UNKNOWN (usage, configuration or unexpected error).")

try:  # the publisher logs "<outcome> <reason>"; a colon between them reads better
    from gilmsg.core.delivery import Outcome

    _OUTCOMES = sorted((str(o.value) for o in Outcome), key=len, reverse=True)
except ImportError:  # pragma: no cover - the reason is then shown as logged
    _OUTCOMES = []

#: The publisher's per-interval summary of refused ACKs (gilmsg.logsummary): ping says it itself.
_REFUSAL_SUMMARY = re.compile(r"refused \d+ more ACKs in the last ")
_IGNORED_ACK = re.compile(r"ignored ACK for (?P<msg_id>\S+) from (?P<signer>[^:]+): (?P<why>.*)")


@dataclass
class RecipientStats:
    """What one recipient did over all probes."""

    name: str
    rtts: list[float] = field(default_factory=list)  #: seconds, one per answered probe
    missed: int = 0
    refused: str | None = None  #: why its last refused ACK was refused, if one was

    @property
    def sent(self) -> int:
        """Probes sent to this recipient."""
        return len(self.rtts) + self.missed

    def to_json(self) -> dict[str, Any]:
        """The summary object of ``--json``."""
        ms = [r * 1000 for r in self.rtts]
        return {
            "recipient": self.name, "sent": self.sent, "answered": len(self.rtts),
            "rtt_ms": {"min": round(min(ms), 3), "avg": round(statistics.fmean(ms), 3),
                       "max": round(max(ms), 3)} if ms else None,
            "refused": self.refused,
        }


class RefusedAcks(logging.Handler):
    """Collects why the publisher ignored ACKs for the probes (gilmsg logs each one).

    Keyed by msg_id, then signer; the messages are also kept off stderr (the summary says it
    once per recipient instead of once per re-sent copy).
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.by_msg: dict[str, dict[str, str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = _IGNORED_ACK.search(record.getMessage())
        if match:
            why = match["why"].strip()
            for outcome in _OUTCOMES:
                if why.startswith(outcome + " ") and why != outcome:
                    why = f"{outcome}: {why[len(outcome):].strip()}"
                    break
            self.by_msg.setdefault(match["msg_id"], {})[match["signer"].strip()] = why

    def filter_cli(self, record: logging.LogRecord) -> bool:
        """A filter for the stderr handler: False for the records this handler collects."""
        message = record.getMessage()
        return not (_IGNORED_ACK.search(message) or _REFUSAL_SUMMARY.match(message))


def _positive_seconds(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise click.BadParameter(f"must be a positive number of seconds, not {value:g}")
    if value > MAX_ACK_TIMEOUT:
        raise click.BadParameter(f"must be at most {MAX_ACK_TIMEOUT:g} seconds")
    return value


def _recipients(_ctx: click.Context, _param: click.Parameter,
                value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise click.BadParameter("name at least one recipient (a certificate CN)")
    return split_recipients(value)


def probe(config: dict[str, Any], recipients: tuple[str, ...], timeout: float, seq: int,
          topic: str
          ) -> tuple[str | None, Mapping[str, float], Mapping[str, str], Sequence[str],
                     Mapping[str, str]]:
    """Send one probe: ``(msg_id, acked name -> seconds, rejected name -> reason, missing,
    refused name -> why its ACK did not count)``.

    Raises:
        GilmsgError: anything but a Timeout or a rejection (configuration, certificates).
    """
    body = {"gilmsg_ping": seq, "sent_at": time.time()}
    modname, topic = split_topic(topic)
    try:
        report = gilmsg.publish(topic=topic, msg=body, modname=modname,
                                recipients=recipients, ack_timeout=timeout, **config)
    except NotDelivered as exc:  # Timeout, or Rejected as soon as one recipient refused
        return exc.msg_id, exc.acked, exc.rejected, exc.missing, exc.refused
    assert report is not None
    return report.msg_id, report.acks, {}, (), {}


@click.command(cls=_common.Command, context_settings=_common.CONTEXT_SETTINGS,
               epilog=_common.epilog(EXAMPLES, PING_CODES, omit=(_common.EXIT_BAD_INPUT,))
               + "\n\n" + NAGIOS_HELP)
@click.argument("recipients", nargs=-1, metavar="RECIPIENT...", callback=_recipients)
@click.option("--config-filename", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Read this fedmsg config file instead of fedmsg.d/.")
@click.option("--name", default=None, metavar="NAME",
              help="fedmsg name to probe from: its endpoint and certificate (default: the "
                   "config's 'name').")
@click.option("--active", is_flag=True, help="Send the probe through fedmsg-relay.")
@click.option("-c", "--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of probes.")
@click.option("-i", "--interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              metavar="SECONDS", help="Pause between probes.")
@click.option("-t", "--timeout", type=float, default=2.0, show_default=True, metavar="SECONDS",
              callback=_positive_seconds, help="How long each probe waits for every ACK.")
@click.option("--topic", default=DEFAULT_TOPIC, show_default=True, metavar="TOPIC",
              help="Probe topic, after '<topic_prefix>.<environment>.' (a single word W means "
                   "gilmsg.W); a hub consumer only hears its own topics, e.g. "
                   "compose.rawhide.complete.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per probe, then one summary object, on stdout.")
@click.option("--nagios", is_flag=True,
              help="Nagios/Icinga plugin mode: one status line with perfdata, exit 0/1/2/3.")
@click.option("-w", "--warning", type=click.FloatRange(min=0), default=None, metavar="MS",
              help="--nagios: WARNING when a recipient's average RTT reaches MS.")
@click.option("-C", "--critical", type=click.FloatRange(min=0), default=None, metavar="MS",
              help="--nagios: CRITICAL when a recipient's average RTT reaches MS.")
@click.option("--expiry-warning", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="WARNING when this identity's certificate or the CRL expires within DAYS "
                   "(default 14; 0: never).")
@click.option("--strict", is_flag=True,
              help="Refuse (exit 2) a RECIPIENT that no identity of the bus holds, when the "
                   "config lists them (gilmsg.known_recipients, gilmsg.recipients).")
@click.option("--debug", is_flag=True, help="Show debug logging and tracebacks.")
def cli(recipients: tuple[str, ...], config_filename: str | None, name: str | None,
        active: bool, count: int, interval: float, timeout: float, topic: str, as_json: bool,
        nagios: bool, warning: float | None, critical: float | None,
        expiry_warning: float | None, strict: bool, debug: bool) -> None:
    """Ask each RECIPIENT (certificate CN, or @GROUP) to acknowledge a probe; show who answered.

    The probe is a gilmsg message on <topic_prefix>.<environment>.gilmsg.ping naming every
    RECIPIENT; an answer is a signed ACK that the publisher accepted, so it checks the whole
    path (process, subscription, certificate, CRL, the way back). gilmsg-tail and
    tail_messages() listen to every topic and answer it.
    """
    options = Options(recipients, config_filename, name, active, count, interval, timeout,
                      topic, as_json, nagios, warning, critical, strict,
                      expiry_warning)
    if not nagios:
        _common.run(PROG, lambda: body(options, debug), debug=debug)
    sys.exit(run_nagios(options, debug))


@dataclass(frozen=True)
class Options:
    """The command line of one ``gilmsg-ping`` run."""

    recipients: tuple[str, ...]
    config_filename: str | None
    name: str | None
    active: bool
    count: int
    interval: float
    timeout: float
    topic: str
    as_json: bool
    nagios: bool
    warning: float | None
    critical: float | None
    strict: bool
    #: --expiry-warning DAYS (None: the default, gilmsg.monitoring.expiry.DEFAULT_DAYS)
    expiry_warning: float | None = None

    @property
    def quiet(self) -> bool:
        """True when only machine-readable output is wanted (``--json``, ``--nagios``)."""
        return self.as_json or self.nagios


def body(options: Options, debug: bool) -> int:
    """Set up logging (refused ACKs collected, not printed), probe; returns the exit code."""
    _common.setup_logging(PROG, debug=debug, quiet=False)
    refused = RefusedAcks()
    gil_log = logging.getLogger("gilmsg")
    gil_log.addHandler(refused)
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_gilmsg_cli", False):
            handler.addFilter(refused.filter_cli)
            if options.quiet:
                handler.setLevel(logging.ERROR)
    try:
        return run_probes(options, refused)
    finally:
        gil_log.removeHandler(refused)


def run_probes(options: Options, refused: RefusedAcks) -> int:
    """Send ``--count`` probes, report each one and the summary; returns the exit code.

    Raises:
        Interrupted, KeyboardInterrupt: before any probe was sent.
        GilmsgError: the configuration or certificates are unusable.
    """
    cfg = prepare_config(options.config_filename, options.name, options.active, None)
    names = expand_recipients(cfg, options.recipients, options.strict)
    if not options.quiet:
        _common.warn_own_certificate(PROG, cfg, "recipients that validate signatures "
                                                "drop the probe")
        click.echo(f"PING {' '.join(names)}: {options.count} probe(s), timeout "
                   f"{options.timeout:g}s")
    stats = {r: RecipientStats(r) for r in names}
    interrupted = None
    try:
        for seq in range(1, options.count + 1):
            if seq > 1 and options.interval:
                time.sleep(options.interval)
            msg_id, acked, rejected, missing, not_counted = probe(cfg, names, options.timeout,
                                                                  seq, options.topic)
            why = refused.by_msg.pop(msg_id or "", {})
            for who, reason in not_counted.items():  # the publisher's own record of why
                why.setdefault(who, reason)
            for who, reason in rejected.items():
                why[who] = f"rejected: {reason or 'no reason given'}"
            for who in names:
                if who in acked:
                    stats[who].rtts.append(acked[who])
                else:
                    stats[who].missed += 1
                    if who in why:
                        stats[who].refused = why[who]
            report_probe(options, seq, msg_id, names, acked, missing, why)
    except (_common.Interrupted, KeyboardInterrupt) as exc:
        interrupted = exc
    if not any(s.sent for s in stats.values()) and interrupted is not None:
        raise interrupted
    from gilmsg.monitoring import expiry

    soon = expiry.expiring(cfg, expiry.DEFAULT_DAYS if options.expiry_warning is None
                           else options.expiry_warning)
    if options.nagios:
        state, line = nagios_status(list(stats.values()), options.warning, options.critical)
        state, line = expiry.nagios_with(state, line, soon)
        click.echo(line)
        return state
    for phrase in soon:  # the fedmsg#481 failure, said while there is time
        _common.note(PROG, f"WARNING: {phrase}")
    summarise(options, list(stats.values()))
    if interrupted is not None:
        return _common.exit_code_for(interrupted)
    return (_common.EXIT_OK if all(s.missed == 0 for s in stats.values())
            else _common.EXIT_NOT_ACKNOWLEDGED)


def report_probe(options: Options, seq: int, msg_id: str | None, names: tuple[str, ...],
                 acked: Mapping[str, float], missing: Sequence[str],
                 why: Mapping[str, str]) -> None:
    """One probe's line (or ``--json`` object); nothing with ``--nagios``."""
    if options.nagios:
        return
    if options.as_json:
        click.echo(json.dumps({
            "probe": seq, "msg_id": msg_id,
            "results": {n: {"answered": n in acked,
                            "rtt_ms": round(acked[n] * 1000, 3) if n in acked else None,
                            "refused": None if n in acked else why.get(n)}
                        for n in names}}, sort_keys=True))
        return
    parts = []
    for n in names:
        if n in acked:
            parts.append(f"{n} {acked[n] * 1000:.1f} ms")
        elif n in why:
            parts.append(f"{n} ACK REFUSED ({why[n]})")
        else:
            parts.append(f"{n} NO ANSWER")
    click.echo(f"probe {seq}: " + ", ".join(parts))


def summarise(options: Options, all_stats: list[RecipientStats]) -> None:
    """The summary: per recipient, probes answered and RTT min/avg/max (or ``--json``)."""
    if options.as_json:
        click.echo(json.dumps({"summary": [s.to_json() for s in all_stats]}, sort_keys=True))
        return
    click.echo("--- gilmsg-ping summary ---")
    for s in all_stats:
        line = f"{s.name}: {len(s.rtts)}/{s.sent} answered"
        if s.rtts:
            ms = [r * 1000 for r in s.rtts]
            line += (f", rtt min/avg/max {min(ms):.1f}/{statistics.fmean(ms):.1f}/"
                     f"{max(ms):.1f} ms")
        if s.refused:
            line += f"; ACK refused: {s.refused}"
        click.echo(line)


def run_nagios(options: Options, debug: bool) -> int:
    """``--nagios``: run, print one status line, and return 0/1/2/3; anything unexpected is
    UNKNOWN (3) with one line, never a traceback."""
    text: str | None = None
    try:  # a monitoring system wants one status line and exit 3 for anything unexpected
        with _common.handle_signals():
            code = body(options, debug)
    except click.ClickException:
        raise
    except (_common.Interrupted, KeyboardInterrupt):
        code, text = NAGIOS_UNKNOWN, "interrupted"
    except GilmsgError as exc:
        hint = _common.hint_for(exc)
        code, text = NAGIOS_UNKNOWN, f"{exc} ({hint})" if hint else str(exc)
    except Exception as exc:
        code, text = NAGIOS_UNKNOWN, f"unexpected {type(exc).__name__}: {exc}"
    finally:
        _common.teardown_logging()
    if text is not None:
        click.echo(f"GILMSG-PING UNKNOWN - {' '.join(text.split())}")
    return code


def nagios_status(all_stats: list[RecipientStats], warning: float | None,
                  critical: float | None) -> tuple[int, str]:
    """``(exit code, status line with perfdata)`` in the Nagios plugin format.

    CRITICAL: a recipient answered no probe, or its average RTT reached ``critical`` ms.
    WARNING: a recipient missed some probes, or its average RTT reached ``warning`` ms.
    """
    state = NAGIOS_OK
    problems: list[str] = []
    perf: list[str] = []
    for s in all_stats:
        avg = statistics.fmean(s.rtts) * 1000 if s.rtts else None
        if not s.rtts:
            state = max(state, NAGIOS_CRITICAL)
            problems.append(f"{s.name}: " + (f"ACK refused ({s.refused})" if s.refused
                                             else "no answer"))
        else:
            if s.missed:
                state = max(state, NAGIOS_WARNING)
                problems.append(f"{s.name}: {s.missed}/{s.sent} probes missed")
            if avg is not None and critical is not None and avg >= critical:
                state = max(state, NAGIOS_CRITICAL)
                problems.append(f"{s.name}: rtt {avg:.1f} ms >= {critical:g}")
            elif avg is not None and warning is not None and avg >= warning:
                state = max(state, NAGIOS_WARNING)
                problems.append(f"{s.name}: rtt {avg:.1f} ms >= {warning:g}")
        w = "" if warning is None else f"{warning:g}"
        c = "" if critical is None else f"{critical:g}"
        value = "U" if avg is None else f"{avg:.3f}ms"
        perf.append(f"'{s.name}_rtt'={value};{w};{c};0;")
        perf.append(f"'{s.name}_answered'={len(s.rtts)};;;0;{s.sent}")
    ok = sum(1 for s in all_stats if s.rtts and not s.missed)
    text = "; ".join(problems) if problems else "every recipient answered"
    line = (f"GILMSG-PING {NAGIOS_NAMES[state]} - {ok}/{len(all_stats)} recipients OK: {text} | "
            + " ".join(perf))
    return state, line


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: click's usage errors become UNKNOWN (exit 3) in ``--nagios`` mode."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--nagios" not in args:
        cli.main(args, prog_name=PROG)
        return
    try:
        cli.main(args, prog_name=PROG, standalone_mode=False)
    except click.ClickException as exc:
        click.echo(f"GILMSG-PING UNKNOWN - {' '.join(exc.format_message().split())}")
        sys.exit(NAGIOS_UNKNOWN)
    except click.exceptions.Abort:
        click.echo("GILMSG-PING UNKNOWN - interrupted")
        sys.exit(NAGIOS_UNKNOWN)


if __name__ == "__main__":  # pragma: no cover
    main()

