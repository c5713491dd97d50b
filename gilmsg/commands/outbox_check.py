"""``gilmsg-outbox check``: the outbox's backlog against thresholds, for Nagios, JSON or
Prometheus (the node exporter's textfile collector, a Pushgateway).

Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the outbox cannot be read: missing, corrupt,
newer schema; no outbox named). A value at or above its threshold earns it.
"""

from __future__ import annotations

import time
from typing import Any

import click

from gilmsg.commands import _common
from gilmsg.errors import GilmsgError
from gilmsg.monitoring import checks

SERVICE = "GILMSG_OUTBOX"


def _threshold(name: str, what: str, unit: str) -> Any:
    def add(f: Any) -> Any:
        for level in ("critical", "warning"):
            f = click.option(f"--{name}-{level}", f"{name}_{level}", type=float, default=None,
                             metavar=unit, help=f"{level.upper()} when {what} is at least "
                                                f"{unit}.")(f)
        return f
    return add


@click.command("check")
@_threshold("pending", "the number of pending messages", "N")
@_threshold("oldest", "the age of the oldest pending message", "SECONDS")
@click.option("--nagios", "fmt", flag_value="nagios", default=True,
              help="One Nagios plugin line with performance data (default).")
@click.option("--json", "fmt", flag_value="json", help="One JSON object.")
@click.option("--prometheus", "fmt", flag_value="prometheus",
              help="Prometheus text exposition (gilmsg_outbox_* and "
                   "gilmsg_outbox_check_status).")
@click.pass_context
def check(ctx: click.Context, pending_warning: float | None, pending_critical: float | None,
          oldest_warning: float | None, oldest_critical: float | None, fmt: str) -> None:
    """Judge the backlog: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (unreadable outbox)."""
    problem = checks.check_order([("pending", pending_warning, pending_critical),
                                  ("oldest", oldest_warning, oldest_critical)])
    if problem:
        raise click.UsageError(problem)
    obj = ctx.obj
    _common.setup_logging("gilmsg-outbox", obj.debug, quiet=True)
    try:
        result = measure(obj, checks.Threshold(pending_warning, pending_critical),
                         checks.Threshold(oldest_warning, oldest_critical))
    finally:
        _common.teardown_logging()
    click.echo(render(result, fmt))
    ctx.exit(result.status)


def measure(obj: Any, pending: checks.Threshold, oldest: checks.Threshold) -> checks.Result:
    """Read the outbox of ``obj`` (the group's context) and judge it; UNKNOWN on any error."""
    try:
        store = obj.store()
        try:
            now = time.time()
            stats = store.stats(now)
            last = store.last_runner()
        finally:
            store.close()
    except GilmsgError as exc:
        return checks.Result(SERVICE, [], unknown=" ".join(str(exc).split()))
    count = stats.counts.get("pending", 0)
    return checks.Result(SERVICE, [
        checks.Measure("pending", count, pending, label="pending"),
        checks.Measure("oldest_pending", stats.oldest_pending_age, oldest, unit="s",
                       label="oldest pending"),
    ], extra={"backlog": checks.per_recipient(stats.backlog),
              "last_runner_age": None if last is None else round(now - last[0], 3),
              "expired": stats.counts.get("expired", 0)})


def render(result: checks.Result, fmt: str) -> str:
    """The result as ``fmt``: ``nagios``, ``json`` or ``prometheus``."""
    if fmt == "json":
        return result.to_json()
    if fmt == "prometheus":
        return prometheus(result).rstrip("\n")
    return result.nagios()


def prometheus(result: checks.Result) -> str:
    """The result in Prometheus' text format, through ``prometheus_client``."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    status = Gauge("gilmsg_outbox_check_status",
                   "Outcome of gilmsg-outbox check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
                   registry=registry)
    status.set(result.status)
    if result.unknown is None:
        values = {m.name: m.value for m in result.measures}
        backlog = Gauge("gilmsg_outbox_pending", "Outbox messages still owed an ACK, by "
                        "recipient", ["recipient"], registry=registry)
        for who, count in result.extra.get("backlog", {}).items():
            backlog.labels(who).set(count)
        Gauge("gilmsg_outbox_oldest_pending_seconds", "Age of the oldest pending outbox "
              "message (0: none)", registry=registry).set(values["oldest_pending"] or 0.0)
        Gauge("gilmsg_outbox_pending_messages", "Pending outbox messages",
              registry=registry).set(values["pending"] or 0)
    return generate_latest(registry).decode()
