"""``gilmsg-sandbox``: a whole gilmsg bus on 127.0.0.1 in one command, for developing a service.

It creates (or reuses) a development PKI, writes a complete ``fedmsg.d`` (endpoints on free
ports, certnames, CA, CRL), starts ``fedmsg-relay`` and stand-in recipients that acknowledge as
the named identities, prints how to point a service at it and shows the traffic until Ctrl-C.
The work is done by :class:`gilmsg.testing.sandbox.Sandbox`; this module is its command line.
"""

from __future__ import annotations

import json
import queue
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from gilmsg import groups
from gilmsg.commands import _common
from gilmsg.errors import InvalidInput
from gilmsg.testing import sandbox as gsandbox

PROG = "gilmsg-sandbox"

EXAMPLES = [
    "gilmsg-sandbox worker archiver                 # two stand-ins that acknowledge",
    "gilmsg-sandbox --dir /tmp/box worker slow:delay=0.5 flaky:fail=0.3 gone:absent",
    "gilmsg-sandbox --service my-app --standins-file standins.txt --no-traffic",
    "gilmsg-sandbox --group compose-done=archiver,notifier archiver notifier",
]

SANDBOX_CODES = {
    _common.EXIT_OK: "stopped after --duration; every process behaved",
    _common.EXIT_NOT_ACKNOWLEDGED: "after --duration: a stand-in or the relay had exited",
    _common.EXIT_USAGE: "usage error: unknown option, bad stand-in spec, bad name",
    _common.EXIT_CONFIG: "the PKI, the configuration or a process could not be set up, or --dir is "
                         "in use by another gilmsg-sandbox",
    _common.EXIT_INTERRUPTED: "stopped by Ctrl-C (every process stopped); 143 for SIGTERM",
}


def _specs(values: tuple[str, ...], standins_file: str | None) -> list[gsandbox.StandInSpec]:
    texts = list(values)
    if standins_file is not None:
        texts += gsandbox.read_standins_file(standins_file)
    return gsandbox.parse_standins(texts)


def parse_groups(values: tuple[str, ...]) -> dict[str, list[str]]:
    """``--group NAME=R1,R2`` values as the ``gilmsg.recipients`` dict."""
    out: dict[str, list[str]] = {}
    for value in values:
        name, eq, members = value.partition("=")
        names = [m for m in members.replace(",", " ").split()]
        if not eq or not name.strip() or not names:
            raise InvalidInput(f"--group {value!r}: write NAME=RECIPIENT,RECIPIENT...")
        out[name.strip()] = names
    return out


def describe_event(source: str, event: dict[str, Any]) -> str | None:
    """The line shown for a stand-in's JSON event, or None for events not worth a line."""
    kind = event.get("event")
    if kind == "ready":
        return None
    if kind == "invalid":
        return (f"[{source}] dropped {event.get('msg_id')} on {event.get('topic')}: its "
                f"signature does not validate (signed with this sandbox's certificates?)")
    if kind != "received" or event.get("action") == "ignore":
        return None
    what = {
        "ack": "acknowledged" + (f" after {event.get('delay'):g}s" if event.get("delay")
                                 else ""),
        "drop": "NOT acknowledged (this stand-in fails a share of its messages)",
        "reject": "answered 'rejected'",
    }.get(str(event.get("action")), str(event.get("action")))
    return f"[{source}] received {event.get('msg_id')} on {event.get('topic')}: {what}"


def instructions(box: gsandbox.Sandbox) -> list[str]:
    """What to tell the user once the sandbox runs: where things are and how to use them."""
    cfg = box.config
    path = shlex.quote(str(box.config_file))
    service = box.services[0] if box.services else None
    live = [s.name for s in box.specs if not s.absent]
    lines = [f"{PROG}: ready", f"  config     {box.config_file}",
             f"  PKI        {box.ssldir} (CA, CRL, one key and certificate per identity)"]
    for name in box.services:
        lines.append(f"  service    {name:<14} {cfg['endpoints'][name][0]}   <- for your code")
    for spec in box.specs:
        lines.append(f"  stand-in   {spec.name:<14} {cfg['endpoints'][spec.name][0]}   "
                     f"{spec.describe()}")
    for name, url in box.monitoring.items():
        lines.append(f"  monitoring {name:<14} {url}/metrics   (/live, /ready)")
    for group, members in (cfg.get(groups.GROUPS_KEY) or {}).items():
        lines.append(f"  group      @{group:<13} {', '.join(members)}")
    if box.relay:
        lines.append(f"  relay      in {cfg['relay_inbound'][0]}, out "
                     f"{cfg['endpoints']['relay_outbound'][0]}")
    lines.append("Point a service at it:")
    lines.append(f"  run it in {box.root} (fedmsg reads ./fedmsg.d) or pass "
                 f"--config-filename {path}")
    if service:
        recips = " ".join(live[:2]) or "RECIPIENT"
        lines.append("  Python:  config = fedmsg.config.load_config(filenames="
                     f"[{str(box.config_file)!r}])")
        lines.append(f"           gilmsg.publish(topic='hello', modname='demo', msg={{}}, "
                     f"recipients={(live[:2] or ['RECIPIENT'])!r}, name={service!r}, **config)")
        lines.append(f"  shell:   gilmsg-logger --config-filename {path} --name {service} "
                     f"-r '{recips}' --message hello")
        lines.append(f"           gilmsg-ping --config-filename {path} --name {service} "
                     f"{' '.join(s.name for s in box.specs) or 'RECIPIENT'}")
    if service:
        lines.append(f"  fedmsg-hub: run it in {box.root} with name={service!r} and your "
                     f"consumer's config key in another fedmsg.d/*.py file there")
    lines.append("Ctrl-C stops everything.")
    return lines


@click.command(cls=_common.Command, context_settings=_common.CONTEXT_SETTINGS,
               epilog=_common.epilog(EXAMPLES, SANDBOX_CODES,
                                     omit=(_common.EXIT_BAD_INPUT,)))
@click.argument("standins", nargs=-1, metavar="[STANDIN]...")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("gilmsg-sandbox"), show_default=True,
              help="Where to write ssl/ and fedmsg.d/ (existing certificates are reused).")
@click.option("--standins-file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Read more STANDIN specs from FILE, one per line, '#' comments.")
@click.option("--service", "services", multiple=True, metavar="NAME",
              help="An identity for your own code: certificate and endpoint, no process "
                   "(repeatable; default: publisher).")
@click.option("--group", "group_specs", multiple=True, metavar="NAME=R1,R2",
              help="A recipient group in the config (gilmsg.recipients): publish to @NAME "
                   "(repeatable).")
@click.option("--relay/--no-relay", default=True, show_default=True,
              help="Run fedmsg-relay (for --active publishers and fedmsg-logger).")
@click.option("--traffic/--no-traffic", default=True, show_default=True,
              help="Show every message and ACK on the bus.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop by itself after SECONDS (for scripts).")
@click.option("--seed", type=int, default=None,
              help="Seed of the stand-ins' random choices (fail=, reject=), for repeatable runs.")
@click.option("--debug", is_flag=True,
              help="Also show fedmsg-relay's log; tracebacks for unexpected errors.")
def main(standins: tuple[str, ...], directory: Path, standins_file: str | None,
         services: tuple[str, ...], group_specs: tuple[str, ...], relay: bool, traffic: bool,
         duration: float | None, seed: int | None, debug: bool) -> None:
    """Run a local gilmsg bus with stand-in recipients until Ctrl-C.

    Each STANDIN is NAME[:OPTION,...], a recipient identity answered by a stand-in process.
    Options: delay=SECONDS (acknowledge late), fail=FRACTION (never acknowledge that share of
    messages), reject=FRACTION (answer 'rejected'), absent (known identity, no process),
    revoked (certificate on the CRL: every ACK is refused).

    The bus is written to DIR/fedmsg.d/gilmsg.py: endpoints on 127.0.0.1 (free ports, new at
    every start), certnames, CA and CRL in DIR/ssl. Everything started is stopped on Ctrl-C or
    SIGTERM, including after an error.
    """
    try:
        specs = _specs(standins, standins_file)
        names = [gsandbox.check_service_name(s) for s in services] or list(
            gsandbox.DEFAULT_SERVICES)
        extra = {groups.GROUPS_KEY: parse_groups(group_specs)} if group_specs else None
        box = gsandbox.Sandbox(directory, specs, names, relay=relay, watch=traffic, seed=seed,
                               extra=extra, record=False)
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None

    def body() -> int:
        _common.setup_logging(PROG, debug=debug)
        lines: queue.Queue[tuple[str, str]] = queue.Queue()
        box.on_line = lambda source, line: lines.put((source, line))
        try:
            box.prepare(log=lambda text: _common.note(PROG, text))
            box.start(log=lambda text: _common.note(PROG, text))
            for line in instructions(box):
                click.echo(line)
            return watch(box, lines, duration, debug)
        finally:
            running = bool(box.processes)
            box.stop()
            if running:
                _common.note(PROG, "stopped every process")

    _common.run(PROG, body, debug=debug)


def watch(box: gsandbox.Sandbox, lines: queue.Queue[tuple[str, str]],
          duration: float | None, debug: bool = False) -> int:
    """Show the traffic and report dead children until ``duration`` passes (or a signal)."""
    deadline = None if duration is None else time.monotonic() + duration
    reported: set[str] = set()
    stderr_seen: dict[str, int] = {}
    code = _common.EXIT_OK
    while deadline is None or time.monotonic() < deadline:
        try:
            source, line = lines.get(timeout=0.2)
        except queue.Empty:
            pass
        else:
            if source != "relay" or debug:
                show(source, line)
        for source, proc in list(box.processes.items()):
            if source == "relay" and not debug:
                continue  # moksha's start-up chatter; a relay that dies is reported below
            new = proc.stderr_lines[stderr_seen.get(source, 0):]
            stderr_seen[source] = stderr_seen.get(source, 0) + len(new)
            for text in new:
                click.echo(f"[{source}] {text}", err=True)
        for source, status in box.dead():
            if source not in reported:
                reported.add(source)
                _common.warn(PROG, f"{source} exited with code {status}; the rest runs on")
                code = _common.EXIT_NOT_ACKNOWLEDGED
    return code


def show(source: str, line: str) -> None:
    """Print one line a child wrote: stand-in events described, traffic as it is."""
    if source in ("bus", "relay"):
        click.echo(f"[{source}] {line}")
        return
    try:
        event = json.loads(line)
    except ValueError:
        click.echo(f"[{source}] {line}")
        return
    text = describe_event(source, event) if isinstance(event, dict) else None
    if text:
        click.echo(text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
