"""``gilmsg-logger``: fedmsg-logger that says whether each message was acknowledged.

fedmsg-logger exits 0 even when no relay runs and its message is dropped. gilmsg-logger
publishes each message with the required recipients (``--recipients``) and reports, per message,
who acknowledged it; its exit code is 0 only when every message was acknowledged by every
recipient. Without ``--recipients`` it is a plain fedmsg publish and says that nothing was
confirmed.

The command only: its statuses and their rendering are in :mod:`gilmsg.commands._results`, the
input reader in :mod:`gilmsg.commands._input`, the in-flight pipeline in
:mod:`gilmsg.commands._publishing`, configuration and preflight (shared with ``gilmsg-ping``)
in :mod:`gilmsg.commands._setup`.
"""

from __future__ import annotations

import sys

import click

import gilmsg
from gilmsg.commands import _common, _input, _publishing, _setup

PROG = "gilmsg-logger"


EXAMPLES = [
    "echo 'disk full on db1' | gilmsg-logger --recipients 'ops-bot pager' --name cron",
    "gilmsg-logger --name cron -r ops-bot --message '{\"a\": 1}' --json-input --topic alert",
    "tail -f events.jsonl | gilmsg-logger --json-input --name feeder -r archiver --json-report",
]


LOGGER_CODES = {
    _common.EXIT_OK: "every message was acknowledged by every recipient (without --recipients: "
                     "every message was sent while someone subscribed to its topic; nothing "
                     "confirms delivery)",
    _common.EXIT_NOT_ACKNOWLEDGED: "some recipients did not acknowledge in time or rejected "
                                   "(without --recipients: a message was not sent, nobody "
                                   "subscribed)",
    _common.EXIT_OUTBOX: "--outbox: the outbox cannot be used (corrupt, read-only, disk "
                         "full, newer schema; PostgreSQL: unreachable, credentials refused, "
                         "not gilmsg's, connection lost): the message named was not stored, "
                         "not sent",
    _common.EXIT_STORED: "--outbox: every message is stored, some are not acknowledged yet: "
                         "delivery continues from the outbox (gilmsg-outbox run, hub plugin)",
}


@click.command(cls=_common.SpreadingCommand,
               context_settings=_common.CONTEXT_SETTINGS,
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
@click.option("-r", "--recipients", multiple=True, metavar="CN",
              callback=_setup.recipients_callback,
              help="Required recipient (certificate CN), or @GROUP for the members of a group "
                   "of the config key gilmsg.recipients. Repeat it or separate names with "
                   "spaces or commas. Without it nothing confirms delivery.")
@click.option("--ack-timeout", type=float, default=gilmsg.DEFAULT_ACK_TIMEOUT, show_default=True,
              metavar="SECONDS", callback=_setup.timeout_callback,
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
@click.option("--outbox", "outbox_path", default=None, metavar="PATH|URL",
              help="Store each message durably in this outbox (an SQLite file or a "
                   "postgresql://user@host:port/dbname URL) before sending it (needs "
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
        cfg = _setup.prepare_config(config_filename, name, active, cert_prefix)
        names = _setup.expand_recipients(cfg, recipients, strict)
        _setup.preflight(cfg, names)
        if outbox_path is not None and not names:
            raise click.UsageError("--outbox needs --recipients: the outbox keeps a message "
                                   "until each recipient has acknowledged it")
        if not names and not quiet:
            _common.note(PROG, "note: no --recipients: messages are published without "
                               "acknowledgement; delivery is not confirmed")
        stdin = _input.stdin_bytes()
        if message is None and not quiet and _input.isatty(stdin):
            _common.note(PROG, "reading messages from the terminal, one per line; end with "
                               "Ctrl-D")
        outbox = None
        if outbox_path is not None:
            from gilmsg.outbox import Outbox

            outbox = Outbox(outbox_path, **cfg)
        session = _publishing.Session(cfg, topic, modname, names, ack_timeout, quiet,
                                      json_report, max_in_flight, require, outbox)
        try:
            return session.run(_input.read_items(message, json_input, stdin))
        finally:
            if outbox is not None:
                outbox.close()

    _common.run(PROG, body, debug=debug)


def _positive_in_flight(value: int) -> int:
    if value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}")
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
