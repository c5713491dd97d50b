"""``gilmsg-tail``: watch the bus, acknowledging the gilmsg messages addressed to this identity.

Like fedmsg-tail it prints every message on the bus. In addition, a gilmsg message that names
this process's certificate Common Name among its recipients (or names none) is acknowledged with
a signed ACK before it is printed, and a message re-sent by its publisher is printed once only.
``--no-ack`` watches without answering.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

import gilmsg
from gilmsg import config as gconfig
from gilmsg.commands import _common, _monitoring
from gilmsg.core import wire as gmessage

if TYPE_CHECKING:
    from gilmsg.tail import Tail

PROG = "gilmsg-tail"

FORMATS = ("line", "json", "pretty", "really-pretty", "terse")
CREDENTIALS = ("signature", "certificate")


def signer_cn(envelope: Mapping[str, Any]) -> str | None:
    """The Common Name in an envelope's ``certificate`` field, or None.

    Not a validation: it is trustworthy only when ``validate_signatures`` is on (then messages
    whose signature does not hold are dropped before they get here).
    """
    from gilmsg.crypto.signing import certificate_cn

    return certificate_cn(envelope.get("certificate"))


def describe_ack(envelope: Mapping[str, Any]) -> str:
    """``ACK received of <msg_id> from <cn>`` for an ACK envelope."""
    ack = gmessage.parse_ack(envelope)
    if ack is None:
        return "malformed ACK " + json.dumps(envelope.get("msg"), sort_keys=True)
    who = signer_cn(envelope) or "?"
    text = f"ACK {ack.status} of {ack.msg_id} from {who}"
    if ack.reason:
        text += f": {ack.reason}"
    return text


def local_time(stamp: Any, fmt: str) -> str | None:
    """``stamp`` (seconds since the epoch) formatted in local time, or None if it is not one."""
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        return None
    try:
        return time.strftime(fmt, time.localtime(stamp))
    except (OverflowError, ValueError, OSError):
        return None


def format_line(topic: str, envelope: Mapping[str, Any], is_ack: bool = False) -> str:
    """Default format: ``<topic> <msg_id> <msg as compact JSON>`` on one line."""
    if is_ack:
        return f"{topic} {envelope.get('msg_id')} {describe_ack(envelope)}"
    body = json.dumps(envelope.get("msg"), sort_keys=True, ensure_ascii=False)
    return f"{topic} {envelope.get('msg_id')} {body}"


def format_json(topic: str, envelope: Mapping[str, Any], is_ack: bool = False,
                credentials: bool = False) -> str:
    """``--json``: the envelope as one line of JSON; ``signature`` and ``certificate`` (about
    2 KiB of base64 per message) only with ``credentials``."""
    if not credentials:
        envelope = {k: v for k, v in envelope.items() if k not in CREDENTIALS}
    return json.dumps(envelope, sort_keys=True)


def format_terse(topic: str, envelope: Mapping[str, Any], is_ack: bool = False,
                 width: int = 120) -> str:
    """``--terse``: ``HH:MM:SS <topic> <short summary>`` (a log line's text, else short JSON)."""
    when = local_time(envelope.get("timestamp"), "%H:%M:%S") or "--:--:--"
    msg = envelope.get("msg")
    if is_ack:
        summary = describe_ack(envelope)
    elif isinstance(msg, Mapping) and isinstance(msg.get("log"), str):
        summary = msg["log"]
    else:
        summary = json.dumps(msg, sort_keys=True, ensure_ascii=False)
    summary = " ".join(summary.split())
    if len(summary) > width:
        summary = summary[: width - 3] + "..."
    return f"{when} {topic} {summary}"


def format_pretty(topic: str, envelope: Mapping[str, Any], is_ack: bool = False,
                  color: bool = False) -> str:
    """``--pretty``: indented JSON without signature and certificate, time made readable.

    Coloured (ANSI) only when ``color`` is true.
    """
    shown = {k: v for k, v in envelope.items() if k not in CREDENTIALS}
    readable = local_time(shown.get("timestamp"), "%Y-%m-%d %H:%M:%S %z")
    if readable:
        shown["timestamp"] = readable
    if is_ack:
        signer = signer_cn(envelope)
        if signer:
            shown["signed_by"] = signer
    text = json.dumps(shown, indent=2, sort_keys=True, ensure_ascii=False)
    if color:
        try:
            import pygments
            import pygments.formatters
            import pygments.lexers
        except ImportError:  # pragma: no cover - pygments comes with fedmsg[commands]
            return text
        text = pygments.highlight(text, pygments.lexers.JsonLexer(),
                                  pygments.formatters.TerminalFormatter()).rstrip("\n")
    return text


def use_color(choice: bool | None, stream: Any) -> bool:
    """``--color``/``--no-color`` if given, else colour only on a terminal (and no NO_COLOR)."""
    if choice is not None:
        return choice
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def run_exec(command: str, topic: str, envelope: Mapping[str, Any],
             keep_stderr: bool = False) -> tuple[int, str]:
    """Run ``command`` with the shell, the envelope as one JSON line on its stdin.

    ``GILMSG_TOPIC`` and ``GILMSG_MSG_ID`` are set in its environment. Its stdout and stderr are
    this command's (with ``keep_stderr``, its stderr is read, then written to this command's
    when it ends). Returns its exit status (negative: killed by that signal) and, with
    ``keep_stderr``, the last non-blank line of its stderr ("" otherwise).
    """
    sys.stdout.flush()
    env = dict(os.environ)
    env["GILMSG_TOPIC"] = topic
    env["GILMSG_MSG_ID"] = str(envelope.get("msg_id"))
    data = (json.dumps(envelope, sort_keys=True) + "\n").encode("utf-8")
    stderr = subprocess.PIPE if keep_stderr else None
    try:
        proc = subprocess.run(command, shell=True, input=data, env=env, check=False,
                              stderr=stderr)
    except BrokenPipeError:  # the command did not read its stdin: that is its choice
        return 0, ""
    last = ""
    if keep_stderr and proc.stderr:
        sys.stderr.flush()
        sys.stderr.buffer.write(proc.stderr)
        sys.stderr.flush()
        lines = [x for x in proc.stderr.decode("utf-8", "backslashreplace").splitlines()
                 if x.strip()]
        last = lines[-1].strip() if lines else ""
    return proc.returncode, last


def exec_failure(status: int, last_line: str) -> str:
    """How a failed --exec command is described (the reason of its ``rejected`` ACK)."""
    how = f"exit status {status}" if status > 0 else f"signal {-status}"
    return f"{how}: {last_line}" if last_line else how


def _regexes(_ctx: click.Context, _param: click.Parameter,
             values: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    out = []
    for value in values:
        try:
            out.append(re.compile(value))
        except re.error as exc:
            raise click.BadParameter(f"{value!r} is not a regular expression: {exc}") from None
    return tuple(out)


def topic_wanted(topic: str, includes: tuple[re.Pattern[str], ...],
                 excludes: tuple[re.Pattern[str], ...]) -> bool:
    """``--include``/``--exclude``: shown if some include matches (or none is given) and no
    exclude does; patterns are searched anywhere in the topic, as fedmsg-tail does."""
    if any(p.search(topic) for p in excludes):
        return False
    return not includes or any(p.search(topic) for p in includes)


EXAMPLES = [
    "gilmsg-tail --name worker                  # print and acknowledge",
    "gilmsg-tail --no-ack --include 'compose' --exclude '\\.ack$'",
    "gilmsg-tail --no-ack --pretty --topic org.example.prod.logger",
    "gilmsg-tail --name archiver --exec 'jq -c .msg >> archive.jsonl'",
    "gilmsg-tail --name worker --count 1 --json  # wait for one message",
]

TAIL_CODES = {
    _common.EXIT_OK: "stopped after --count messages",
    _common.EXIT_NOT_ACKNOWLEDGED: "stopped after --count messages; an --exec command failed",
    _common.EXIT_OUTBOX: "--dedup-file: the de-duplication record cannot be used (not "
                         "gilmsg's, corrupt, read-only, disk full)",
}


@click.command(cls=_common.Command, context_settings=_common.CONTEXT_SETTINGS,
               epilog=_common.epilog(EXAMPLES, TAIL_CODES,
                                     omit=(_common.EXIT_BAD_INPUT,)))
@click.option("--config-filename", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Read this fedmsg config file instead of fedmsg.d/.")
@click.option("--name", default=None, metavar="NAME",
              help="fedmsg name to acknowledge as: its certificate CN is the recipient name "
                   "it answers to (default: the config's 'name').")
@click.option("--topic", default="", metavar="PREFIX",
              help="Only messages whose topic starts with PREFIX (others are not received, so "
                   "not acknowledged either).")
@click.option("--json", "fmt", flag_value="json",
              help="One JSON envelope per line (same as --format json).")
@click.option("--pretty", "fmt", flag_value="pretty",
              help="Indented JSON without credentials; coloured on a terminal.")
@click.option("--really-pretty", "fmt", flag_value="really-pretty",
              help="--pretty, coloured even when not on a terminal (as fedmsg-tail's).")
@click.option("--terse", "fmt", flag_value="terse", help="One short line: time, topic, summary.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format; 'line' (default) is: topic msg_id msg-as-JSON. Of several "
                   "format options, the last one wins.")
@click.option("--credentials", is_flag=True,
              help="With --json, keep each envelope's signature and certificate (left out by "
                   "default; --exec always gets the whole envelope).")
@click.option("--color/--no-color", "color", default=None,
              help="Force colour on or off for --pretty (default: only on a terminal).")
@click.option("--exec", "exec_cmd", default=None, metavar="CMD",
              help="Run shell command CMD per message, the JSON envelope on its stdin "
                   "($GILMSG_TOPIC, $GILMSG_MSG_ID set); nothing else is printed unless a "
                   "format is given.")
@click.option("--settle", is_flag=True,
              help="With --exec: after the receipt ACK, acknowledge each message 'processed' "
                   "when CMD exits 0, 'rejected' (with its exit status and last stderr line) "
                   "otherwise; for publishers that require processed. Messages hidden by "
                   "--include/--exclude are rejected as not handled.")
@click.option("--batch-acks", is_flag=True,
              help="Acknowledge messages that arrive together with one signed ACK (far less "
                   "signing under load; their publishers must speak protocol 3). A stop "
                   "(--count, a signal) may leave some of such a group acknowledged, unshown.")
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="Exit after N messages.")
@click.option("--no-ack", is_flag=True, help="Watch silently: send no ACKs (needs no identity).")
@click.option("--show-acks", is_flag=True, help="Also show ACK traffic (hidden by default).")
@click.option("--validate/--no-validate", "validate", default=None,
              help="Override 'validate_signatures': drop messages whose signature does not hold.")
@click.option("--include", "includes", multiple=True, metavar="REGEX", callback=_regexes,
              help="Show only messages whose topic matches REGEX (searched anywhere in the "
                   "topic; repeatable: any one matches). Others are still acknowledged.")
@click.option("--exclude", "excludes", multiple=True, metavar="REGEX", callback=_regexes,
              help="Hide messages whose topic matches REGEX (repeatable); wins over --include. "
                   "Hidden messages are still acknowledged.")
@click.option("--dedup-file", default=None, metavar="PATH|URL",
              help="Record the gilmsg messages handled in this SQLite file (or PostgreSQL "
                   "database: postgresql://..., shared by several hosts): after a restart, "
                   "one handled before is acknowledged again but not shown or run again.")
@_monitoring.option
@click.option("--debug", is_flag=True, help="Show debug logging and tracebacks.")
def main(config_filename: str | None, name: str | None, topic: str, fmt: str | None,
         credentials: bool, color: bool | None, exec_cmd: str | None, settle: bool,
         batch_acks: bool,
         count: int | None, no_ack: bool, show_acks: bool, validate: bool | None,
         includes: tuple[re.Pattern[str], ...], excludes: tuple[re.Pattern[str], ...],
         dedup_file: str | None, monitoring_address: str | None, debug: bool) -> None:
    """Print messages from the bus; acknowledge gilmsg messages that name this identity.

    Every message on every endpoint of the configuration is printed, once: a gilmsg message
    that its publisher re-sends is printed the first time only. Before a gilmsg message
    addressed to this identity's certificate CN is printed (or handed to --exec), a signed ACK
    has been sent for it. The ACK says "received": it is sent whether or not --exec succeeds.
    With --settle, a second ACK follows once --exec is over: "processed" or "rejected".

    Runs until interrupted (Ctrl-C: exit 130, SIGTERM: 143) or --count messages.
    """
    if settle and exec_cmd is None:
        raise click.UsageError("--settle needs --exec CMD: its exit status settles each message")
    if settle and no_ack:
        raise click.UsageError("--settle sends ACKs: it cannot be used with --no-ack")
    show = fmt is not None or exec_cmd is None
    fmt_name = fmt or "line"
    if fmt_name == "really-pretty":
        fmt_name, color = "pretty", True if color is None else color
    colored = fmt_name == "pretty" and use_color(color, sys.stdout)

    def body() -> int:
        _common.setup_logging(PROG, debug=debug)
        cfg = _tail_config(config_filename, name, validate, no_ack)
        ack_topics = gconfig.ack_topics(cfg)
        # Bound (or exit 4) before anything is consumed; closed with the command.
        server = _monitoring.start(PROG, monitoring_address, cfg, consuming=True)
        handled = 0
        exec_failures = 0
        stream = gilmsg.tail_messages(topic=topic, ack=not no_ack, show_acks=show_acks,
                                      ack_mode="processed" if settle else "received",
                                      dedup_path=dedup_file, batch_acks=batch_acks, **cfg)
        # Sockets (and the monitoring endpoint) closed on --count, errors and signals.
        with contextlib.closing(stream), contextlib.ExitStack() as stack:
            if server is not None:
                stack.callback(server.close)
            for _name, _endpoint, msg_topic, envelope in stream:
                is_ack = msg_topic in ack_topics
                if is_ack and not show_acks:
                    continue
                if not topic_wanted(msg_topic, includes, excludes):
                    stream.reject("not handled: topic hidden by --include/--exclude")
                    continue  # acknowledged already (tail_messages does it before yielding)
                if show:
                    text = _render(fmt_name, msg_topic, envelope, is_ack, colored, credentials)
                    # A lone surrogate from the wire cannot be encoded: show it escaped.
                    click.echo(text.encode("utf-8", "backslashreplace").decode("utf-8"),
                               color=colored or None)
                if exec_cmd is not None and not _exec_and_settle(stream, exec_cmd, msg_topic,
                                                                 envelope, settle):
                    exec_failures += 1
                handled += 1
                if count is not None and handled >= count:
                    break
        return _common.EXIT_NOT_ACKNOWLEDGED if exec_failures else _common.EXIT_OK

    _common.run(PROG, body, debug=debug)


def _tail_config(config_filename: str | None, name: str | None, validate: bool | None,
                 no_ack: bool) -> dict[str, Any]:
    """The configuration with the command line's overrides (``--name``, ``--validate``).

    Raises:
        _common.SetupError: ACKs are to be sent (no ``--no-ack``) and no identity is named.
    """
    overrides: dict[str, Any] = {"name": name} if name else {}
    if validate is not None:
        overrides["validate_signatures"] = validate
    cfg = _common.load_config(config_filename, overrides)
    if not no_ack and not cfg.get("name"):
        raise _common.SetupError(
            f"no identity to acknowledge as: pass --name NAME (one of: "
            f"{_common.known_names(cfg)}), or --no-ack to watch without acknowledging"
        )
    if not no_ack:
        _common.warn_own_certificate(PROG, cfg, "every ACK it sends will be ignored")
    return cfg


def _render(fmt_name: str, topic: str, envelope: Mapping[str, Any], is_ack: bool,
            colored: bool, credentials: bool) -> str:
    """One message as the output format ``fmt_name`` shows it (see :data:`FORMATTERS`)."""
    if fmt_name == "pretty":
        return format_pretty(topic, envelope, is_ack, color=colored)
    if fmt_name == "json":
        return format_json(topic, envelope, is_ack, credentials)
    return FORMATTERS[fmt_name](topic, envelope, is_ack)


def _exec_and_settle(stream: Tail, exec_cmd: str, topic: str, envelope: Mapping[str, Any],
                     settle: bool) -> bool:
    """Run ``--exec`` on one message and report its exit status to ``stream`` (which sends the
    ``processed`` / ``rejected`` ACK when ``--settle`` asked for it). True if it exited 0."""
    status, last = run_exec(exec_cmd, topic, envelope, keep_stderr=settle)
    if status == 0:
        stream.processed()
        return True
    how = f"exit status {status}" if status > 0 else f"signal {-status}"
    _common.warn(PROG, f"--exec command failed ({how}) for "
                       f"{envelope.get('msg_id')} on {topic}")
    stream.reject(exec_failure(status, last))
    return False


FORMATTERS = {
    "line": format_line,
    "json": format_json,
    "terse": format_terse,
    "pretty": format_pretty,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
