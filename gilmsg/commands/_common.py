"""What ``gilmsg-logger`` and ``gilmsg-tail`` share: exit codes, error lines, config, signals.

Both commands follow the same rules so that shell scripts can rely on them:

* the exit code says what happened (:data:`EXIT_CODES`, shown at the end of ``--help``);
* an error is one line on stderr, ``<command>: error: <what> (<what to do>)``, never a traceback
  (``--debug`` adds one);
* SIGINT and SIGTERM stop the command cleanly (sockets closed, a summary printed) and it exits
  with ``128 + signal number``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import click

from gilmsg import config as gconfig
from gilmsg.errors import CertificateError, ConfigError, GilmsgError, InvalidInput, OutboxError

#: Every message was acknowledged by every required recipient (gilmsg-logger without
#: ``--recipients``: every message was sent, which confirms nothing); gilmsg-tail: stopped
#: after ``--count`` messages.
EXIT_OK = 0
#: At least one message was not acknowledged by every required recipient in time, or a
#: recipient rejected it (``--require processed``).
EXIT_NOT_ACKNOWLEDGED = 1
#: Usage error, from click: unknown option, bad option value (an empty recipient name ...).
EXIT_USAGE = 2
#: Bad input: a line of stdin is not JSON (the other lines were still sent), stdin was empty.
EXIT_BAD_INPUT = 3
#: Bad configuration or certificates: config file, ``name``, endpoint, key, CA, CRL.
EXIT_CONFIG = 4
#: Anything else that went wrong (an OS error, a bug): run again with ``--debug``.
EXIT_FAILURE = 5
#: The outbox file cannot be used (corrupt, read-only, disk full, newer schema, missing):
#: nothing was stored (gilmsg-logger --outbox, gilmsg-outbox).
EXIT_OUTBOX = 6
#: gilmsg-logger --outbox: every message is stored, and some are still owed an ACK: delivery
#: continues from the outbox (a runner: the hub plugin or ``gilmsg-outbox run``).
EXIT_STORED = 7
#: Interrupted by Ctrl-C (SIGINT). Other signals give ``128 + signal number``: 143 for SIGTERM,
#: 141 when stdout was closed early (``gilmsg-tail | head -1``).
EXIT_INTERRUPTED = 128 + signal.SIGINT

#: Exit code -> meaning, in the order they are documented.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success: every message was acknowledged by every recipient",
    EXIT_NOT_ACKNOWLEDGED: "some recipients did not acknowledge in time, or rejected a message",
    EXIT_USAGE: "usage error: unknown option or bad option value",
    EXIT_BAD_INPUT: "bad input: a line is not JSON, or stdin was empty",
    EXIT_CONFIG: "bad configuration or certificates",
    EXIT_FAILURE: "unexpected failure (run with --debug)",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C; 143 for SIGTERM, 141 if stdout was closed",
}

#: click settings shared by both commands.
CONTEXT_SETTINGS: dict[str, Any] = {
    "help_option_names": ["-h", "--help"],
    "max_content_width": 100,
}


def epilog(examples: list[str], codes: Mapping[int, str] | None = None,
           omit: tuple[int, ...] = ()) -> str:
    """The ``--help`` epilog: examples, then the exit codes (``\\b`` keeps click from rewrapping).

    ``codes`` rewords some codes for one command; ``omit`` leaves out codes it never uses.
    """
    meanings = {c: m for c, m in sorted({**EXIT_CODES, **(codes or {})}.items())
                if c not in omit}
    lines = ["\b", "Examples:"]
    lines += [f"  {example}" for example in examples]
    lines += ["", "\b", "Exit codes:"]
    lines += [f"  {code:<4} {meaning}" for code, meaning in meanings.items()]
    return "\n".join(lines)


class Interrupted(BaseException):
    """Raised in the main thread by SIGINT or SIGTERM (see :func:`handle_signals`).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        """``128 + signal number``: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


@contextlib.contextmanager
def handle_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` in the main thread while inside.

    A signal that was ignored when the process started (``nohup``, a background job of a
    non-interactive shell) stays ignored. The previous handlers are restored on exit.
    """
    if sys.platform == "win32":  # pragma: no cover - fedmsg does not run there anyway
        yield
        return

    def raise_interrupted(signum: int, _frame: Any) -> None:
        if _deferral.depth:
            if _deferral.signum is None:
                _deferral.signum = signum  # the first one waits for the section's end
                return
            _deferral.signum = None  # the second one interrupts the section: it is raised now
        raise Interrupted(signum)

    previous: dict[int, Any] = {}
    try:
        for signum in signums:
            current = signal.getsignal(signum)
            if current is signal.SIG_IGN:
                continue
            previous[signum] = signal.signal(signum, raise_interrupted)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Deferral:
    """Signals that arrived inside :func:`interrupts_deferred` (main thread only)."""

    depth = 0
    signum: int | None = None


_deferral = _Deferral()


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold the first SIGINT/SIGTERM that arrives inside until :func:`raise_deferred`.

    For a section whose outcome must be known to be reported truthfully (handing a message to
    the link: after that it is in flight). A second signal inside interrupts at once, so a
    section that hangs can still be stopped.
    """
    _deferral.depth += 1
    try:
        yield
    finally:
        _deferral.depth -= 1


def raise_deferred() -> None:
    """Raise the :class:`Interrupted` that :func:`interrupts_deferred` held, if any."""
    signum, _deferral.signum = _deferral.signum, None
    if signum is not None:
        raise Interrupted(signum)


def error(prog: str, message: str) -> None:
    """Print ``<prog>: error: <message>`` on stderr: one line."""
    click.echo(f"{prog}: error: {_one_line(message)}", err=True)


def warn(prog: str, message: str) -> None:
    """Print ``<prog>: warning: <message>`` on stderr: one line."""
    click.echo(f"{prog}: warning: {_one_line(message)}", err=True)


def note(prog: str, message: str) -> None:
    """Print ``<prog>: <message>`` on stderr: one line."""
    click.echo(f"{prog}: {_one_line(message)}", err=True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class SetupError(ConfigError):
    """A configuration problem found by a command, whose message already says what to do."""

    hint = ""


def hint_for(exc: BaseException) -> str:
    """What a user can do about ``exc``, to follow the error message ("" if it says already)."""
    if isinstance(exc, SetupError):
        return exc.hint
    if isinstance(exc, ConfigError) and str(exc).startswith("cannot bind"):
        return ("is a process of that name running already? pass another --name, or --active "
                "to publish through fedmsg-relay")
    if isinstance(exc, CertificateError):
        return "repair or re-issue the file named above (gilmsg-certs), or fix ssldir/certnames"
    if isinstance(exc, ConfigError):
        return ""  # gilmsg's configuration errors name the key and what to put there
    if isinstance(exc, InvalidInput):
        return "fix the input"
    if isinstance(exc, OutboxError):
        return ""  # it names the file and the cause
    return "run again with --debug for details"


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception that ends a command."""
    if isinstance(exc, Interrupted):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, ConfigError):  # CertificateError included
        return EXIT_CONFIG
    if isinstance(exc, OutboxError):
        return EXIT_OUTBOX
    if isinstance(exc, InvalidInput):
        return EXIT_BAD_INPUT
    return EXIT_FAILURE


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (click's test runner swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


_saved_level: list[int] = []


def setup_logging(prog: str, debug: bool = False, quiet: bool = False) -> None:
    """Library log records on stderr as ``<prog>: <level>: <message>``, until :func:`run` ends.

    Warnings by default (an ignored forged ACK, a dropped message with a bad signature), errors
    only with ``quiet``, everything with ``debug``.
    """
    teardown_logging()
    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(f"{prog}: %(levelname)s: %(name)s: %(message)s"
                                           if debug else f"{prog}: %(levelname)s: %(message)s"))
    handler._gilmsg_cli = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    _saved_level.append(root.level)
    root.addHandler(handler)
    root.setLevel(level)


def teardown_logging() -> None:
    """Undo :func:`setup_logging` (the commands are also run in-process by tests).

    Refusal counts not yet summarised (:mod:`gilmsg.logsummary`) are logged first, through
    the command's own handler and filters.
    """
    from gilmsg.logsummary import flush_all

    flush_all()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_gilmsg_cli", False):
            root.removeHandler(handler)
    if _saved_level:
        root.setLevel(_saved_level.pop())


def load_config(config_filename: str | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The fedmsg configuration: ``--config-filename`` (or fedmsg.d/) with ``overrides`` on top.

    Raises:
        ConfigError: the file is missing or broken, or no configuration defines endpoints.
    """
    try:
        return gconfig.load(overrides, filename=config_filename)
    except ConfigError as exc:
        if config_filename is None:
            raise ConfigError(
                f"no usable fedmsg configuration ({exc}): pass --config-filename FILE, or "
                f"create ./fedmsg.d/*.py or /etc/fedmsg.d/*.py"
            ) from None
        raise SetupError(f"{exc} (check --config-filename {config_filename})") from None


def known_names(config: Mapping[str, Any]) -> str:
    """The configured endpoint names (candidates for ``--name``), for error messages."""
    relay = ("relay_inbound", "relay_outbound")
    names = sorted(n for n in (config.get("endpoints") or {}) if n not in relay)
    return ", ".join(names) or "none configured"


def warn_own_certificate(prog: str, config: Mapping[str, Any], consequence: str) -> None:
    """Say once, at start, that this identity's certificate will be refused, and what follows."""
    from gilmsg.crypto.signing import own_certificate_problem

    problem = own_certificate_problem(config)
    if problem:
        warn(prog, f"this identity's certificate will be refused by its peers ({problem}): "
                   f"{consequence}")


def run(prog: str, body: Callable[[], int], debug: bool = False) -> NoReturn:
    """Run a command's body and exit with its code, turning every failure into one line.

    ``body`` returns the exit code. Usage errors raised by click pass through unchanged.
    Interruptions exit with ``128 + signal`` silently (the body prints its own summary).
    """
    try:
        with handle_signals():
            code = body()
    except (click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except (Interrupted, KeyboardInterrupt) as exc:
        code = exit_code_for(exc)
    except BrokenPipeError:
        code = 128 + signal.SIGPIPE
        _silence_stdout()
    except GilmsgError as exc:
        if debug:
            traceback.print_exc()
        hint = hint_for(exc)
        error(prog, f"{exc} ({hint})" if hint else str(exc))
        code = exit_code_for(exc)
    except Exception as exc:  # one line, not a traceback, unless --debug
        if debug:
            traceback.print_exc()
        error(prog, f"unexpected {type(exc).__name__}: {exc} ({hint_for(exc)})")
        code = EXIT_FAILURE
    finally:
        teardown_logging()
    _flush_or_silence()
    sys.exit(code)


def _flush_or_silence() -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's final flush does not complain about a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


class _OneLineUsageError(click.UsageError):
    """A click usage error shown as the one line every gilmsg command promises."""

    def __init__(self, original: click.UsageError) -> None:
        super().__init__(original.format_message(), original.ctx)

    def show(self, file: Any = None) -> None:
        prog = self.ctx.find_root().info_name if self.ctx is not None else "gilmsg"
        error(prog or "gilmsg", f"{self.format_message()} (see {prog} --help)")


class _OneLineUsage:
    """Mixin for click commands: usage errors are one line, ``<prog>: error: <what> (see <prog>
    --help)``, exit 2, instead of click's multi-line usage block."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, _spread_multi_values(self, args))  # type: ignore[misc]
        except click.UsageError as exc:
            raise _OneLineUsageError(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except _OneLineUsageError:
            raise
        except click.UsageError as exc:
            raise _OneLineUsageError(exc) from None


def _spread_multi_values(command: Any, args: list[str]) -> list[str]:
    """``--recipients A B`` (gilmsg 0.1.2's form: several values after one option) becomes
    ``--recipients A --recipients B`` for the options named in the command's
    ``spread_options``; only for commands with no positional arguments, where a bare word after
    such an option can mean nothing else. A ``--`` ends the spreading."""
    spread = getattr(command, "spread_options", ())
    if not spread:
        return args
    out: list[str] = []
    option: str | None = None
    for index, arg in enumerate(args):
        if arg == "--":
            out += args[index:]
            break
        if option is not None and out and out[-1] != option and not arg.startswith("-"):
            out += [option, arg]
            continue
        name = arg.split("=", 1)[0]
        option = name if name in spread else (None if arg.startswith("-") else option)
        out.append(arg)
    return out


class Command(_OneLineUsage, click.Command):
    """A gilmsg command: one-line usage errors (and ``spread_options``, see
    :func:`_spread_multi_values`)."""

    spread_options: tuple[str, ...] = ()


class Group(_OneLineUsage, click.Group):
    """A gilmsg command group: one-line usage errors, in the group and its subcommands."""

    command_class = Command


class SpreadingCommand(Command):
    """gilmsg-logger's command: ``--recipients A B`` as gilmsg 0.1.2 accepted it."""

    spread_options = ("-r", "--recipients")
