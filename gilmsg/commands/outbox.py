"""``gilmsg-outbox``: look into a durable outbox, act on it, and drain it.

``list``, ``show``, ``stats`` read; ``retry`` and ``drop`` change what is owed (both recorded in
the outbox's event log); ``run`` re-sends what is owed until each recipient acknowledged or the
message expired (the same runner as the ``fedmsg-hub`` plugin); ``init`` and ``migrate`` prepare a
PostgreSQL outbox. The outbox is ``--outbox PATH`` (an SQLite file or a ``postgresql://`` URL),
else the config key ``gilmsg.outbox``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from typing import Any

import click

from gilmsg.commands import _common, _monitoring
from gilmsg.errors import ConfigError, OutboxError

PROG = "gilmsg-outbox"

#: ``show``/``retry``/``drop``: no such message (or not pending); ``run --until-empty``:
#: something was still owed when ``--timeout`` came, or a message expired meanwhile.
EXIT_NOT_DONE = 1

CODES = {
    _common.EXIT_OK: "success",
    EXIT_NOT_DONE: "show/retry/drop: no such message, or it is not pending; run "
                   "--until-empty: still owed at --timeout, or a message expired",
    _common.EXIT_USAGE: "usage error: unknown option or bad option value",
    _common.EXIT_CONFIG: "bad configuration or certificates (run), or no outbox named",
    _common.EXIT_FAILURE: "unexpected failure (run with --debug)",
    _common.EXIT_OUTBOX: "the outbox cannot be used: missing, corrupt, read-only, disk full, "
                         "newer or older schema; PostgreSQL: unreachable, credentials refused, "
                         "not gilmsg's database, connection lost",
    _common.EXIT_INTERRUPTED: "interrupted by Ctrl-C; 143 for SIGTERM",
}

EXAMPLES = [
    "gilmsg-outbox --outbox /var/lib/gilmsg/outbox.db list",
    "gilmsg-outbox --outbox outbox.db stats --json",
    "gilmsg-outbox --outbox postgresql://gilmsg@db.example.org/app init",
    "gilmsg-outbox --outbox outbox.db drop 2026-... --reason 'recipient retired'",
    "gilmsg-outbox --config-filename fedmsg.d/app.py run --name outbox-runner",
    "gilmsg-outbox --outbox outbox.db check --oldest-warning 300 --oldest-critical 3600",
]


class Ctx:
    """What the group's options say, resolved lazily (a read needs no fedmsg config)."""

    def __init__(self, outbox: str | None, config_filename: str | None, debug: bool) -> None:
        self.outbox = outbox
        self.config_filename = config_filename
        self.debug = debug

    def config(self, name: str | None = None) -> dict[str, Any]:
        overrides = {"name": name} if name else {}
        return _common.load_config(self.config_filename, overrides)

    def path(self, config: dict[str, Any] | None = None) -> str:
        if self.outbox:
            return self.outbox
        from gilmsg.outbox.durable import PATH_KEY

        try:
            config = config if config is not None else self.config()
        except ConfigError:
            config = {}
        path = config.get(PATH_KEY)
        if not path:
            raise _common.SetupError(f"no outbox: pass --outbox PATH or set the config key "
                                     f"{PATH_KEY!r}")
        return str(path)

    def store(self, create: bool = False) -> Any:
        from gilmsg.outbox.store import open_store

        path = self.path()
        try:
            return open_store(path, create=create)
        except OutboxError as exc:
            if "read-only" not in str(exc):
                raise
            return open_store(path, create=False, readonly=True)


def _run(ctx: click.Context, body: Any) -> None:
    obj: Ctx = ctx.obj
    _common.setup_logging(PROG, obj.debug)
    _common.run(PROG, body, obj.debug)


@click.group(cls=_common.Group, context_settings=_common.CONTEXT_SETTINGS,
             epilog=_common.epilog(EXAMPLES, CODES, omit=(_common.EXIT_BAD_INPUT,
                                                          _common.EXIT_NOT_ACKNOWLEDGED)))
@click.option("--outbox", "outbox", default=None, metavar="PATH|URL",
              help="The outbox: an SQLite file or postgresql://user@host:port/dbname "
                   "(default: the config key gilmsg.outbox).")
@click.option("--config-filename", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Read this fedmsg config file instead of fedmsg.d/.")
@click.option("--debug", is_flag=True, help="Show debug logging and tracebacks.")
@click.pass_context
def main(ctx: click.Context, outbox: str | None, config_filename: str | None,
         debug: bool) -> None:
    """Inspect, act on and drain a gilmsg durable outbox (see docs/outbox.rst)."""
    ctx.obj = Ctx(outbox, config_filename, debug)


def _age(now: float, then: float) -> str:
    seconds = max(0.0, now - then)
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


STATES = ["pending", "delivered", "rejected", "expired", "dropped", "all"]


@main.command("list")
@click.option("--state", type=click.Choice(STATES), default="pending", show_default=True,
              help="Which messages to list.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def list_(ctx: click.Context, state: str, as_json: bool) -> None:
    """Messages and who still owes an ACK: age, attempts, last error (one line per recipient)."""

    def body() -> int:
        from gilmsg.outbox.policy import Status

        store = ctx.obj.store()
        now = time.time()
        entries = store.entries(None if state == "all" else Status(state))
        for entry in entries:
            whom = entry.owed if entry.status is Status.PENDING else entry.recipients
            for who in whom:
                if as_json:
                    click.echo(json.dumps({
                        "msg_id": entry.msg_id, "recipient": who, "status": entry.status.value,
                        "topic": entry.topic, "age": round(now - entry.created, 3),
                        "attempts": entry.attempts, "acked": who in entry.acked,
                        "rejected": entry.rejected.get(who), "require": entry.require,
                        "last_error": entry.last_error, "reason": entry.reason}))
                else:
                    detail = (f"rejected: {entry.rejected[who]}" if who in entry.rejected
                              else entry.last_error or entry.reason or "")
                    click.echo(f"{entry.msg_id}  {who}  {entry.status.value}  "
                               f"age {_age(now, entry.created)}  attempts {entry.attempts}"
                               + (f"  {detail}" if detail else ""))
        if not as_json and not entries:
            _common.note(PROG, f"no {state if state != 'all' else ''} messages".replace("  ",
                                                                                       " "))
        return _common.EXIT_OK

    _run(ctx, body)


@main.command()
@click.argument("msg_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def show(ctx: click.Context, msg_id: str, as_json: bool) -> None:
    """Everything stored about MSG_ID: status, recipients and their ACK times, events."""

    def body() -> int:
        store = ctx.obj.store()
        entry = store.get(msg_id)
        if entry is None:
            _common.error(PROG, f"no message {msg_id} in {store.path}")
            return EXIT_NOT_DONE
        events = store.events(msg_id)
        data = {
            "msg_id": entry.msg_id, "topic": entry.topic, "status": entry.status.value,
            "created": entry.created, "expires": entry.expires, "attempts": entry.attempts,
            "next_attempt": entry.next_attempt if entry.status.value == "pending" else None,
            "recipients": {who: entry.acked.get(who) for who in entry.recipients},
            "require": entry.require,
            "rejected": dict(entry.rejected),
            "last_error": entry.last_error, "reason": entry.reason, "finished": entry.finished,
            "events": [{"at": at, "kind": kind, "detail": detail}
                       for at, kind, detail in events],
        }
        if as_json:
            click.echo(json.dumps(data))
        else:
            for key, value in data.items():
                click.echo(f"{key}: {value}")
        return _common.EXIT_OK

    _run(ctx, body)


@main.command()
@click.argument("msg_id", required=False)
@click.pass_context
def retry(ctx: click.Context, msg_id: str | None) -> None:
    """Make MSG_ID (default: every pending message) due now; a running runner sends it."""

    def body() -> int:
        count = ctx.obj.store().retry(msg_id, time.time())
        if msg_id is not None and count == 0:
            _common.error(PROG, f"no pending message {msg_id}")
            return EXIT_NOT_DONE
        _common.note(PROG, f"{count} message(s) due now")
        return _common.EXIT_OK

    _run(ctx, body)


@main.command()
@click.argument("msg_id")
@click.option("--reason", required=True, metavar="TEXT",
              help="Why it is given up (kept in the outbox).")
@click.pass_context
def drop(ctx: click.Context, msg_id: str, reason: str) -> None:
    """Stop delivering MSG_ID: marked dropped with the reason (kept, never deleted)."""

    def body() -> int:
        if not reason.strip():
            raise click.BadParameter("must not be empty", param_hint="--reason")
        entry = ctx.obj.store().drop(msg_id, reason, time.time())
        if entry is None:
            _common.error(PROG, f"no message {msg_id}")
            return EXIT_NOT_DONE
        if entry.status.value != "pending" and entry.reason != reason:
            _common.error(PROG, f"{msg_id} is {entry.status.value}, not pending: left as it is")
            return EXIT_NOT_DONE
        _common.note(PROG, f"dropped {msg_id}; it was owed to {', '.join(entry.owed) or 'no one'}")
        return _common.EXIT_OK

    _run(ctx, body)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for monitoring.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Pending count, oldest pending age, backlog per recipient, last runner activity
    (seconds ago, and which runner: host:pid:token; null if none ever ran)."""

    def body() -> int:
        store = ctx.obj.store()
        now = time.time()
        summary = store.stats(now).to_json()
        last = store.last_runner()  # a runner records its activity every 10 s
        summary["last_runner_age"] = None if last is None else round(now - last[0], 3)
        summary["last_runner"] = None if last is None else last[1]
        if as_json:
            click.echo(json.dumps(summary))
        else:
            for key, value in summary.items():
                click.echo(f"{key}: {value}")
        return _common.EXIT_OK

    _run(ctx, body)


def _pg_url(ctx: click.Context, what: str) -> str:
    from gilmsg.outbox.store import is_url

    url = ctx.obj.path()
    if not is_url(url):
        raise click.BadParameter(f"{what} is for a postgresql:// outbox, not the SQLite file "
                                 f"{url} (SQLite files are created and migrated on open)",
                                 param_hint="--outbox")
    return str(url)


@main.command()
@click.option("--dedup", is_flag=True,
              help="Also create the consumed-message record's table (gilmsg-tail --dedup-file).")
@click.pass_context
def init(ctx: click.Context, dedup: bool) -> None:
    """Create gilmsg's tables (schema gilmsg) in a PostgreSQL database, even one with tables
    of its own: the transactional outbox (publish(connection=...)) needs them there."""

    def body() -> int:
        from gilmsg.outbox import postgres

        url = _pg_url(ctx, "init")
        store = postgres.PgStore(url, adopt=True)
        store.close()
        if dedup:
            postgres.connect(url, postgres.PgConsumed.KIND, adopt=True).close()
        _common.note(PROG, f"{store.path}: gilmsg outbox ready (schema {postgres.NAMESPACE!r}, "
                           f"version {postgres.VERSIONS['outbox']})")
        return _common.EXIT_OK

    _run(ctx, body)


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Bring a PostgreSQL outbox and its consumed-message record (each if present: a recipient
    service's database may hold the record only) to this gilmsg's schema version. Upgrade
    gilmsg on every host sharing it first."""

    def body() -> int:
        from gilmsg.outbox import postgres

        url = _pg_url(ctx, "migrate")
        conn = postgres.connect_raw(url, "outbox")
        try:
            present = [kind for kind in ("outbox", postgres.PgConsumed.KIND)
                       if postgres.found_version(conn, kind) is not None]
        finally:
            conn.close()
        for kind in present or ["outbox"]:  # neither: the outbox's "nothing to migrate"
            before, after = postgres.migrate(url, kind)
            _common.note(PROG, f"{postgres.redact(url)}: {kind} schema version {before} -> "
                               f"{after}")
        return _common.EXIT_OK

    _run(ctx, body)


def _positive(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise click.BadParameter(f"must be a positive number of seconds, not {value:g}")
    return value


@main.command()
@click.option("--name", default=None, metavar="NAME",
              help="The identity to send from (its endpoints entry); default: config 'name'.")
@click.option("--until-empty", is_flag=True,
              help="Exit once nothing is pending any more (0), or at --timeout (1).")
@click.option("--timeout", type=float, default=None, callback=_positive, metavar="SECONDS",
              help="Give up after this long (exit 1 if something is still owed).")
@click.option("--window", type=float, default=None, callback=_positive, metavar="SECONDS",
              help="How long one attempt re-sends before backing off (default 5).")
@_monitoring.option
@click.pass_context
def run(ctx: click.Context, name: str | None, until_empty: bool, timeout: float | None,
        window: float | None, monitoring_address: str | None) -> None:
    """Re-send what the outbox owes until each recipient acknowledged (or it expired)."""

    def body() -> int:
        from gilmsg.outbox import policy
        from gilmsg.outbox.runner import Runner
        from gilmsg.outbox.store import open_store

        config = ctx.obj.config(name)
        store = open_store(ctx.obj.path(config), create=True)
        # Bound (or exit 4) before the first attempt; scrapes read through their own handle.
        server = _monitoring.start(PROG, monitoring_address, config)
        if server is not None:
            from gilmsg import monitoring

            reader = open_store(ctx.obj.path(config), create=False, readonly=True)
            monitoring.watch_outbox(lambda: reader.stats(time.time()))
        runner = Runner(store, config, window=window or policy.ATTEMPT_WINDOW)
        stop = threading.Event()
        timer = threading.Timer(timeout, stop.set) if timeout else None
        expired: list[str] = []

        def on_step(report: Any) -> None:
            for msg_id in report.started:
                click.echo(f"sending {msg_id}")
            for msg_id in report.delivered:
                click.echo(f"delivered {msg_id}")
            for entry in report.expired:
                expired.append(entry.msg_id)
                click.echo(f"expired {entry.msg_id} owed to {','.join(entry.owed)}")

        def summary() -> int:
            """Print what this run did (also when a signal ends it); return the pending count."""
            totals = runner.totals
            left = store.stats(time.time()).counts.get("pending", 0)
            _common.note(PROG, f"{totals.delivered} delivered, {totals.expired} expired, "
                               f"{totals.attempts} attempts; {left} still pending")
            return int(left)

        click.echo(f"{PROG}: running on {store.path} from {runner.link.address}", err=True)
        sys.stderr.flush()
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            runner.run(stop, until_empty=until_empty, on_step=on_step)
        except (_common.Interrupted, KeyboardInterrupt):
            # SIGTERM (systemctl stop) or Ctrl-C: the summary still says what was done, then
            # the command exits 143 or 130.
            summary()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            runner.abandon()
            if server is not None:
                server.close()
        left = summary()
        if until_empty and (left or expired):
            return EXIT_NOT_DONE
        return _common.EXIT_OK

    _run(ctx, body)


log = logging.getLogger(__name__)

from gilmsg.commands.outbox_check import check as _check  # noqa: E402  (its own module)

main.add_command(_check)

if __name__ == "__main__":  # pragma: no cover
    main()
