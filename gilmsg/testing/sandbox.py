"""A whole gilmsg bus on 127.0.0.1: PKI, a complete ``fedmsg.d``, a relay and stand-in recipients.

Used by ``gilmsg-sandbox``, ``gilmsg-certs dev --fedmsg-d`` and the pytest plugin
(:mod:`gilmsg.testing.pytest_plugin`)::

    with Sandbox(tmp_path, standins=parse_standins(["worker", "slow:delay=0.5"])) as box:
        box.start()
        gilmsg.publish(topic="t", msg={}, recipients=["worker", "slow"],
                       **box.config_for("publisher"))

A **stand-in** is a real process (``python -m gilmsg.testing.sandbox``) that acknowledges as a named
identity: it holds that identity's certificate and endpoint, validates what it receives,
and answers the gilmsg messages addressed to it with signed ACKs, like ``gilmsg-tail`` would.
Its behaviour is written ``NAME[:OPTION[,OPTION...]]``:

=================  =========================================================================
``delay=SECONDS``  acknowledge each message that long after its first copy arrived (slow)
``fail=FRACTION``  never acknowledge that fraction of the messages (chosen at random per msg_id)
``reject=FRACTION`` answer that fraction with a ``rejected`` ACK (it does not count)
``absent``         an identity of the bus (certificate, endpoint) with no process behind it
``revoked``        its certificate is on the CRL: it answers, and every ACK is refused
=================  =========================================================================

Each stand-in prints one JSON object per line on stdout (``{"event": "ready"}``, then one
``received`` event per message it got, with the action it took), which the sandbox shows and the
pytest plugin records.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import os
import pprint
import random
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from gilmsg import config as gconfig
from gilmsg.crypto import certs
from gilmsg.errors import ConfigError, GilmsgError, InvalidInput
from gilmsg.testing.bus import DEFAULT_WAIT, Process, child_env, config_copy, free_port

#: Names a service or stand-in may not take: they are fedmsg's relay endpoints.
RESERVED_NAMES = ("relay_inbound", "relay_outbound")
#: The identity ``gilmsg-sandbox`` adds for your code when ``--service`` is not given.
DEFAULT_SERVICES = ("publisher",)
#: The config file written in ``<dir>/fedmsg.d/``.
CONFIG_NAME = "gilmsg.py"
#: Fields never copied into stand-in events (long, and useless to a reader).
CREDENTIALS = ("signature", "certificate")


@dataclass(frozen=True)
class StandInSpec:
    """How one stand-in recipient behaves (see the module docstring for the syntax)."""

    name: str
    delay: float = 0.0
    fail: float = 0.0
    reject: float = 0.0
    absent: bool = False
    revoked: bool = False

    def describe(self) -> str:
        """A few words for humans: ``acknowledges``, ``slow (0.5s), fails 30%`` ..."""
        if self.absent:
            return "absent (never answers)"
        parts = []
        if self.delay:
            parts.append(f"slow ({self.delay:g}s)")
        if self.fail:
            parts.append(f"fails {self.fail:.0%}")
        if self.reject:
            parts.append(f"rejects {self.reject:.0%}")
        if self.revoked:
            parts.append("revoked certificate (its ACKs are refused)")
        return ", ".join(parts) or "acknowledges"

    def to_text(self) -> str:
        """The spec back in ``NAME:OPTIONS`` form."""
        opts = [f"{k}={getattr(self, k):g}" for k in ("delay", "fail", "reject")
                if getattr(self, k)]
        opts += [k for k in ("absent", "revoked") if getattr(self, k)]
        return self.name + (":" + ",".join(opts) if opts else "")


def check_service_name(name: str) -> str:
    """``name`` if it can name a service of the sandbox, else :class:`InvalidInput`."""
    if name in RESERVED_NAMES:
        raise InvalidInput(f"{name!r} is reserved for fedmsg-relay: pick another name")
    return certs.check_name(name)


def _fraction(name: str, key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise InvalidInput(f"stand-in {name}: {key} must be a fraction from 0 to 1, not {value!r}")
    return number


def parse_standin(text: str) -> StandInSpec:
    """One ``NAME[:OPTION,...]`` spec (module docstring); :class:`InvalidInput` if malformed."""
    name, _, rest = text.strip().partition(":")
    check_service_name(name)
    values: dict[str, Any] = {}
    for raw in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = raw.partition("=")
        key = key.strip()
        if key in ("absent", "revoked") and not eq:
            values[key] = True
        elif key == "delay" and eq:
            try:
                delay = float(value)
            except ValueError:
                delay = -1.0
            if not 0.0 <= delay <= 3600:
                raise InvalidInput(f"stand-in {name}: delay must be 0 to 3600 seconds, "
                                   f"not {value!r}")
            values["delay"] = delay
        elif key in ("fail", "reject") and eq:
            values[key] = _fraction(name, key, value)
        else:
            raise InvalidInput(
                f"stand-in {name}: unknown option {raw!r} (use delay=SECONDS, fail=FRACTION, "
                f"reject=FRACTION, absent, revoked)"
            )
    spec = StandInSpec(name, **values)
    if spec.fail + spec.reject > 1.0:
        raise InvalidInput(f"stand-in {name}: fail and reject add up to more than 1")
    return spec


def parse_standins(texts: Iterable[str]) -> list[StandInSpec]:
    """Several specs; each text may hold several, separated by spaces. Names must be unique."""
    specs: list[StandInSpec] = []
    for text in texts:
        specs.extend(parse_standin(part) for part in text.split())
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise InvalidInput(f"stand-in {spec.name} is named twice")
        seen.add(spec.name)
    return specs


def read_standins_file(path: str | os.PathLike[str]) -> list[str]:
    """The specs of a file: one per line (or several per line), ``#`` starts a comment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read stand-ins file {path}: {exc}") from None
    return [line.split("#", 1)[0] for line in text.splitlines() if line.split("#", 1)[0].strip()]


# -- PKI and configuration ---------------------------------------------------------------------


def _serial(path: Path) -> int | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).serial_number
    except (OSError, ValueError):
        return None


def _revoked_serials(ssldir: Path) -> set[int]:
    try:
        crl = x509.load_pem_x509_crl((ssldir / certs.CRL).read_bytes())
    except (OSError, ValueError):
        return set()
    return {entry.serial_number for entry in crl}


def ensure_pki(ssldir: str | os.PathLike[str], names: Iterable[str],
               revoked: Iterable[str] = (), log: Callable[[str], None] | None = None) -> None:
    """Make ``ssldir`` hold a CA, a fresh CRL and a usable certificate for each name. Idempotent.

    Existing files are kept; a missing CA or certificate is created; a CRL near its next-update
    date is re-signed. A name in ``revoked`` ends up on the CRL; a name not in it whose
    certificate was revoked earlier gets a new one, so a second run of a sandbox behaves like
    the first. ``log`` receives one line per file created.

    Raises:
        CertificateError: an existing CA cannot be read.
        InvalidInput: a name cannot be a certificate name.
    """
    base = Path(ssldir)
    say = log or (lambda _text: None)
    names = [certs.check_name(n) for n in names]
    revoked = set(revoked)
    if not (base / certs.CA_CERT).exists():
        certs.init_ca(base)
        say(f"created CA {base / certs.CA_CERT}")
    elif certs.crl_is_stale(base):
        certs.write_crl(base)
        say(f"re-signed {base / certs.CRL}")
    on_crl = _revoked_serials(base)
    for name in names:
        key, crt = certs.paths(base, name)
        serial = _serial(crt) if key.exists() else None
        if serial is None or (serial in on_crl and name not in revoked) or _expired(crt):
            certs.issue(base, name, force=True)
            say(f"issued {crt}")
            serial = _serial(crt)
        if name in revoked and serial not in on_crl:
            certs.revoke(base, name)
            on_crl = _revoked_serials(base)
            say(f"revoked {name}")


def _expired(crt: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
    except (OSError, ValueError):
        return True
    return cert.not_valid_after_utc <= dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


def bus_config(ssldir: str | os.PathLike[str], names: Sequence[str], *, relay: bool = True,
               environment: str = "dev", extra: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
    """A complete fedmsg configuration for services ``names`` (endpoints on free ports).

    Every endpoint is on 127.0.0.1 at a port free at the time of the call; ``certnames`` maps
    each name to itself (its certificate's CN); CA and CRL are those of ``ssldir``. With
    ``relay``, ``relay_inbound`` and ``endpoints["relay_outbound"]`` are set for fedmsg-relay.
    """
    base = Path(ssldir).resolve()
    endpoints: dict[str, list[str]] = {n: [f"tcp://127.0.0.1:{free_port()}"] for n in names}
    cfg: dict[str, Any] = {
        "topic_prefix": "org.gilmsg",
        "environment": environment,
        "endpoints": endpoints,
        "sign_messages": True,
        "validate_signatures": True,
        "ssldir": str(base),
        "ca_cert_location": str(base / certs.CA_CERT),
        "crl_location": str(base / certs.CRL),
        "certnames": {n: n for n in names},
        "zmq_enabled": True,  # fedmsg-hub and fedmsg-relay need it
        # Subscribers find a late publisher within 100 ms instead of fedmsg's 1 s back-off.
        "zmq_reconnect_ivl": 10,
        "zmq_reconnect_ivl_max": 100,
    }
    cfg["gilmsg.known_recipients"] = list(names)  # a typo in a recipient is reported at once
    if relay:
        endpoints["relay_outbound"] = [f"tcp://127.0.0.1:{free_port()}"]
        cfg["relay_inbound"] = [f"tcp://127.0.0.1:{free_port()}"]
    cfg.update(extra or {})
    return cfg


def render_config(cfg: Mapping[str, Any], comment: str = "") -> str:
    """A fedmsg.d file defining ``config``, with ``comment`` lines on top."""
    head = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines())
    return head + "config = " + pprint.pformat(dict(cfg), width=100, sort_dicts=True) + "\n"


def write_config(directory: str | os.PathLike[str], cfg: Mapping[str, Any],
                 comment: str = "") -> Path:
    """Write ``<directory>/gilmsg.py`` (atomically) and return its path."""
    path = Path(directory) / CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_config(cfg, comment), encoding="utf-8")
    os.replace(tmp, path)
    return path


# -- the stand-in process ------------------------------------------------------------------------


class _Decisions:
    """What a stand-in does with each msg_id: decided once at random, then kept (bounded)."""

    def __init__(self, spec: StandInSpec, seed: int | None, capacity: int = 10_000) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.capacity = capacity
        self.known: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, msg_id: str, now: float) -> tuple[str, float, bool]:
        """``(action, due time of its ACK, first time seen)``; action is ack, reject or drop."""
        if msg_id in self.known:
            action, due = self.known[msg_id]
            return action, due, False
        draw = self.rng.random()
        action = ("drop" if draw < self.spec.fail
                  else "reject" if draw < self.spec.fail + self.spec.reject else "ack")
        self.known[msg_id] = (action, now + self.spec.delay)
        if len(self.known) > self.capacity:
            self.known.popitem(last=False)
        return action, now + self.spec.delay, True


def run_standin(config: Mapping[str, Any], spec: StandInSpec,
                emit: Callable[[dict[str, Any]], None], *, seed: int | None = None,
                keep_running: Callable[[], bool] = lambda: True) -> None:
    """Receive and acknowledge as ``spec.name`` until ``keep_running()`` is false.

    Every copy of a message addressed to this identity (or to nobody) is answered as the spec
    says, like a real recipient answers every re-send; ``emit`` gets one ``received`` event per
    message (its first copy) and one ``ready`` event once the sockets are set up.

    Raises:
        ConfigError, CertificateError: the identity, endpoint or certificate is unusable.
    """
    from gilmsg import transport
    from gilmsg.core import wire as message
    from gilmsg.recipient import Recipient

    cfg = dict(config)
    cfg["name"] = spec.name
    recipient = Recipient(cfg, ack=True)
    me = recipient.common_name or spec.name
    decisions = _Decisions(spec, seed)
    due: list[tuple[float, int, str, dict[str, Any]]] = []  # ACKs waiting for their delay
    counter = 0
    endpoints = gconfig.subscribe_endpoints(cfg, skip=spec.name)
    sub = transport.module_for(cfg).subscribe([("", e) for e in endpoints], "", cfg)
    from gilmsg import monitoring

    monitoring.watch_subscription(sub)
    monitoring.set_consuming(True)
    try:
        own = (cfg.get("endpoints") or {}).get(spec.name)
        emit({"event": "ready", "name": me, "endpoint": own, "subscribed": endpoints})
        while keep_running():
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, _, action, envelope = heapq.heappop(due)
                _answer(recipient, action, envelope)
            timeout = 0.2 if not due else max(0.001, min(0.2, due[0][0] - now))
            for _name, _endpoint, frames in sub.receive(timeout):
                decoded = message.decode(frames)
                now = time.monotonic()  # the delay counts from the arrival, not from the poll
                if decoded is None:
                    continue
                topic, envelope = decoded
                if recipient.is_ack(topic):
                    continue
                msg_id = envelope.get("msg_id")
                if not recipient.check(envelope):  # Recipient logs the reason on stderr
                    emit({"event": "invalid", "msg_id": msg_id, "topic": topic})
                    continue
                addressed = message.is_gilmsg(envelope) and message.wants_ack_from(envelope, me)
                if not addressed or not isinstance(msg_id, str):
                    if isinstance(msg_id, str) and decisions.get(msg_id, now)[2]:
                        emit(_received(envelope, topic, "ignore", 0.0))
                    continue
                action, when, first = decisions.get(msg_id, now)
                monitoring.received(duplicate=not first)
                if first:
                    emit(_received(envelope, topic, action, spec.delay))
                if action == "drop":
                    continue
                if when <= now:
                    _answer(recipient, action, envelope)
                elif first:
                    counter += 1
                    heapq.heappush(due, (when, counter, action, dict(envelope)))
                # later copies before the delay is over are answered when it is
    finally:
        sub.close()


def _answer(recipient: Any, action: str, envelope: Mapping[str, Any]) -> None:
    if action == "reject":
        recipient.acknowledge(envelope, status="rejected",
                              reason="the sandbox stand-in rejects a share of its messages")
    else:
        recipient.acknowledge(envelope)


def _received(envelope: Mapping[str, Any], topic: str, action: str, delay: float
              ) -> dict[str, Any]:
    shown = {k: v for k, v in envelope.items() if k not in CREDENTIALS}
    return {"event": "received", "msg_id": envelope.get("msg_id"), "topic": topic,
            "action": action, "delay": delay, "envelope": shown}


def standin_main(argv: Sequence[str] | None = None) -> int:
    """``python -m gilmsg.testing.sandbox --config-filename F --spec NAME:OPTS [--parent PID]
    [--seed N]``.

    Exits 0 when stopped (SIGTERM/SIGINT, or its parent process went away), 4 for a
    configuration or certificate problem (one line on stderr), 2 for bad arguments.
    """
    import argparse
    import logging
    import signal

    parser = argparse.ArgumentParser(prog="gilmsg-standin")
    parser.add_argument("--config-filename", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--monitoring", default=None, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="standin: %(levelname)s: %(message)s")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def keep_running() -> bool:
        if args.parent is not None and os.getppid() != args.parent:
            return False  # the sandbox is gone: do not outlive it
        return not stop.is_set()

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
        sys.stdout.flush()

    try:
        spec = parse_standin(args.spec)
        cfg = gconfig.load(filename=args.config_filename)
        if args.monitoring:  # /live, /ready, /metrics of this stand-in (bound, or exit 4)
            from gilmsg import monitoring
            from gilmsg.monitoring.server import serve

            serve(args.monitoring)
            monitoring.watch_trust(cfg)
        run_standin(cfg, spec, emit, seed=args.seed, keep_running=keep_running)
    except (InvalidInput, ConfigError) as exc:
        print(f"gilmsg-standin: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidInput) else 4
    except GilmsgError as exc:
        print(f"gilmsg-standin: error: {exc}", file=sys.stderr)
        return 5
    return 0


# -- the sandbox ----------------------------------------------------------------------------------


@dataclass
class StandIn:
    """A running (or absent) stand-in: its spec, process and the events it reported."""

    spec: StandInSpec
    process: Process | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def add(self, event: dict[str, Any]) -> None:
        """Record one event (called by the sandbox's reader thread)."""
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def received(self, everything: bool = False) -> list[dict[str, Any]]:
        """Envelopes (without credentials) of the messages received so far, in arrival order.

        Only gilmsg messages addressed to this stand-in (or to no one in particular), each once,
        unless ``everything``: then also plain fedmsg messages and those for other recipients.
        """
        with self.lock:
            return [e["envelope"] for e in self.events if e.get("event") == "received"
                    and (everything or e.get("action") != "ignore")]

    def wait(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
        """Wait until ``predicate(events)`` holds; False if it still does not after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
            return True


def _is_ready(events: list[dict[str, Any]]) -> bool:
    return any(e.get("event") == "ready" for e in events)


def port_of(endpoint: str) -> int:
    """The port of ``tcp://host:port``."""
    return int(endpoint.rsplit(":", 1)[1])


def _listening(endpoint: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port_of(endpoint)), timeout=0.2):
            return True
    except OSError:
        return False


def executable(name: str) -> str:
    """The path of an installed command, next to this interpreter when it is there."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


class Sandbox:
    """A local gilmsg bus: PKI, ``fedmsg.d``, fedmsg-relay, stand-ins and a traffic watcher.

    Args:
        root: directory for ``ssl/`` and ``fedmsg.d/`` (created; existing certificates reused).
        standins: the stand-in recipients.
        services: identities for your own code (certificate and endpoint, no process).
        relay: run fedmsg-relay (``relay_inbound``/``relay_outbound``).
        watch: run ``gilmsg-tail --no-ack`` to show the traffic (events with ``source`` "bus").
        extra: config keys added to (or replacing) those of :func:`bus_config`.
        on_line: called with ``(source, text)`` for every line a child prints; ``source`` is a
            stand-in name, ``"relay"`` or ``"bus"``. Stand-in lines are JSON events.
        seed: seed of the stand-ins' random choices (``fail=``, ``reject=``).
        record: keep every stand-in event in :attr:`standins` (for assertions); False keeps
            only what start-up needs, for a long-running sandbox.

    Every process is stopped (its whole process group) by :meth:`stop` or on leaving ``with``.
    """

    def __init__(self, root: str | os.PathLike[str], standins: Sequence[StandInSpec],
                 services: Sequence[str] = DEFAULT_SERVICES, *, relay: bool = True,
                 watch: bool = False, extra: Mapping[str, Any] | None = None,
                 on_line: Callable[[str, str], None] | None = None,
                 seed: int | None = None, record: bool = True) -> None:
        self.root = Path(root).resolve()
        self.ssldir = self.root / "ssl"
        self.config_dir = self.root / "fedmsg.d"
        self.specs = list(standins)
        self.services = [check_service_name(s) for s in services]
        clash = set(self.services) & {s.name for s in self.specs}
        if clash:
            raise InvalidInput(f"{', '.join(sorted(clash))}: both a service and a stand-in")
        self.relay = relay
        self.watch = watch
        self.extra = dict(extra or {})
        self.on_line = on_line
        self.seed = seed
        self.record = record
        self.standins: dict[str, StandIn] = {s.name: StandIn(s) for s in self.specs}
        self.processes: dict[str, Process] = {}
        self.config: dict[str, Any] = {}
        #: stand-in name -> ``http://127.0.0.1:PORT`` of its /live, /ready and /metrics.
        self.monitoring: dict[str, str] = {}
        self._threads: list[threading.Thread] = []

    @property
    def names(self) -> list[str]:
        """Every identity of the bus: services, then stand-ins."""
        return self.services + [s.name for s in self.specs]

    @property
    def config_file(self) -> Path:
        """The fedmsg.d file of the bus (for ``--config-filename``)."""
        return self.config_dir / CONFIG_NAME

    def prepare(self, log: Callable[[str], None] | None = None) -> Path:
        """Create the PKI and write the configuration (new free ports); returns the file.

        Raises:
            CertificateError: an existing CA in ``root/ssl`` cannot be used.
        """
        ensure_pki(self.ssldir, self.names, revoked=[s.name for s in self.specs if s.revoked],
                   log=log)
        self.config = bus_config(self.ssldir, self.names, relay=self.relay, extra=self.extra)
        write_config(self.config_dir, self.config, comment=(
            "Written by gilmsg-sandbox: a local gilmsg bus on 127.0.0.1 (ports change on every\n"
            "start). Identities: " + ", ".join(self.names)))
        return self.config_file

    def config_for(self, name: str, **overrides: Any) -> dict[str, Any]:
        """The configuration of identity ``name`` (a fresh copy) to pass to gilmsg calls."""
        if name not in self.names:
            raise InvalidInput(f"{name!r} is not an identity of this sandbox "
                               f"({', '.join(self.names)})")
        return config_copy(self.config, name, overrides)

    def env(self) -> dict[str, str]:
        """Environment of child processes: unbuffered output, this interpreter's scripts first."""
        return child_env()

    def _spawn(self, source: str, argv: Sequence[str]) -> Process:
        proc = Process(argv, cwd=self.root, env=self.env())
        self.processes[source] = proc
        thread = threading.Thread(target=self._pump, args=(source, proc), daemon=True,
                                  name=f"sandbox-{source}")
        thread.start()
        self._threads.append(thread)
        return proc

    def _pump(self, source: str, proc: Process) -> None:
        while True:
            try:
                line = proc.lines.get(timeout=0.5)
            except Exception:  # queue.Empty
                if proc.proc.poll() is not None and proc.lines.empty():
                    return
                continue
            proc.seen.append(line)
            del proc.seen[:-50]  # enough for error messages; a sandbox may run for days
            standin = self.standins.get(source)
            if standin is not None:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict) and (self.record or event.get("event") == "ready"):
                    standin.add(event)
            if self.on_line is not None:
                self.on_line(source, line)

    def start(self, timeout: float = DEFAULT_WAIT, log: Callable[[str], None] | None = None
              ) -> None:
        """Prepare if needed, start relay, stand-ins and watcher, and wait until they are ready.

        Raises:
            ConfigError: a process exited or did not get ready within ``timeout`` (its last
                stderr line says why); everything started is stopped again.
        """
        if not self.config:
            self.prepare(log)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        config_file = str(self.config_file)
        if self.relay:
            self._spawn("relay", [executable("fedmsg-relay"), "--config-filename", config_file])
        for spec in self.specs:
            if spec.absent:
                continue
            argv = [sys.executable, "-m", "gilmsg.testing.sandbox",
                    "--config-filename", config_file, "--spec", spec.to_text(),
                    "--parent", str(os.getpid())]
            if self.seed is not None:
                argv += ["--seed", str(self.seed)]
            port = free_port()
            argv += ["--monitoring", f"127.0.0.1:{port}"]
            self.monitoring[spec.name] = f"http://127.0.0.1:{port}"
            self.standins[spec.name].process = self._spawn(spec.name, argv)
        if self.watch:
            self._spawn("bus", [executable("gilmsg-tail"), "--config-filename", config_file,
                                "--no-ack", "--show-acks", "--terse", "--no-validate"])
        deadline = time.monotonic() + timeout
        for spec in self.specs:
            standin = self.standins[spec.name]
            if standin.process is None:
                continue
            while not standin.wait(_is_ready, 0.2):  # in slices: it may die without a word
                if standin.process.proc.poll() is not None or time.monotonic() > deadline:
                    raise ConfigError(self._why(spec.name, "stand-in", timeout))
        if self.relay:
            ends = [self.config["relay_inbound"][0], self.config["endpoints"]["relay_outbound"][0]]
            while not all(_listening(e) for e in ends):
                if self.processes["relay"].proc.poll() is not None or time.monotonic() > deadline:
                    raise ConfigError(self._why("relay", "fedmsg-relay", timeout))
                time.sleep(0.05)

    def _why(self, source: str, what: str, timeout: float) -> str:
        proc = self.processes[source]
        code = proc.proc.poll()
        last = (proc.stderr_lines or ["no output"])[-1]
        if code is None:
            return f"{what} {source} not ready within {timeout:g}s ({last})"
        return f"{what} {source} exited with code {code}: {last}"

    def dead(self) -> list[tuple[str, int]]:
        """``(source, exit code)`` of every child that exited although it was not stopped."""
        return [(s, p.proc.returncode) for s, p in self.processes.items()
                if p.proc.poll() is not None]

    def stop_one(self, name: str) -> None:
        """Stop one child (a stand-in, ``relay`` or ``bus``), e.g. to make a recipient go away."""
        proc = self.processes.pop(name, None)
        if proc is not None:
            proc.stop()

    def stop(self) -> None:
        """Stop every child process (its whole process group); waits a few seconds at most."""
        for proc in self.processes.values():
            if proc.proc.poll() is None:
                proc.signal(15)
        for proc in self.processes.values():
            proc.stop(timeout=3.0)
        self.processes.clear()
        for thread in self._threads:
            thread.join(1.0)
        self._threads.clear()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(standin_main())
