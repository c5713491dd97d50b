"""The throw-away local bus: a CA, a certificate and a free endpoint per service.

Every service gets a certificate (CN = its name) from a fresh development CA and an endpoint on
127.0.0.1 with a port picked free at run time. Processes started through the bus are stopped
when it closes. Re-exported by :mod:`gilmsg.testing`.
"""

from __future__ import annotations

import json
import os
import pprint
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gilmsg.crypto import certs

#: Upper bound for any wait in these helpers, in seconds.
DEFAULT_WAIT = 20.0


#: What :class:`gilmsg.GilmsgConsumer` logs once the hub runs (``gilmsg.consumers.hub.READY_LOG``;
#: not imported from there, which would load moksha and install Twisted's reactor here).
HUB_READY_LOG = "gilmsg: hub running"

#: What moksha logs when a consumer could not be loaded or constructed (the hub runs on without).
HUB_CONSUMER_FAILED = re.compile(r"Failed to (init|load) .* consumer\.")

#: Logging for hubs started by :meth:`DevBus.spawn_hub`: INFO on stdout, read by :class:`Process`.
HUB_LOGGING: dict[str, Any] = {
    "version": 1,
    "formatters": {"bare": {"format": "[%(asctime)s][%(name)s %(levelname)s] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "bare",
                             "stream": "ext://sys.stdout"}},
    "loggers": {
        name: {"handlers": ["console"], "level": "INFO", "propagate": False}
        for name in ("gilmsg", "gilmsg_example", "moksha", "fedmsg")
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
}


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


_ports: set[int] = set()
_ports_lock = threading.Lock()


#: The bus configuration file written in ``<dir>/fedmsg.d/`` (DevBus, Sandbox).
CONFIG_NAME = "gilmsg.py"


def render_config(cfg: Mapping[str, Any], comment: str = "", preamble: str = "") -> str:
    """A fedmsg.d file defining ``config``, with ``comment`` lines on top, then the Python code
    ``preamble`` (run by fedmsg's loader before ``config`` is read)."""
    head = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines())
    return (head + preamble + "config = " + pprint.pformat(dict(cfg), width=100, sort_dicts=True)
            + "\n")


def write_config_file(path: str | os.PathLike[str], cfg: Mapping[str, Any],
                      comment: str = "", preamble: str = "") -> Path:
    """Write the fedmsg config file ``path`` defining ``cfg``, atomically; returns the path.

    The one writer of bus configurations (DevBus's, its hubs', the sandbox's): a process that
    reads the file while it is rewritten sees the old or the new one, never half of either.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(render_config(cfg, comment, preamble), encoding="utf-8")
    os.replace(tmp, path)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, outside the ephemeral range.

    A port the kernel may hand out as the source port of an outgoing connection (any process's
    ZeroMQ connect) can be taken between this call and the bind that uses it; ports below the
    ephemeral range are only ever taken by an explicit bind. A port is never returned twice in
    one process, so services of one bus, not yet bound, cannot share one. Falls back to a
    kernel-picked port if no such port is free.
    """
    ephemeral = _ephemeral_ports()
    with _ports_lock:
        candidates = [p for p in range(10000, 65536) if p not in ephemeral and p not in _ports]
        for port in random.SystemRandom().sample(candidates, min(200, len(candidates))):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _ports.add(port)  # never handed out twice by this process, bound yet or not
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default_sigint() -> None:
    # A background job of a non-interactive shell (``pytest &`` in a CI script) starts with
    # SIGINT ignored, and children inherit that: give them the default, so SIGINT tests work.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def config_copy(config: Mapping[str, Any], name: str,
                overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``config`` naming the process ``name``, with ``overrides`` applied."""
    cfg = json.loads(json.dumps(config))
    cfg["name"] = name
    cfg.update(overrides)
    return cfg


def child_env() -> dict[str, str]:
    """Environment for child processes: unbuffered output, this interpreter's scripts first."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


class Process:
    """A child process whose stdout lines are collected by a reader thread.

    Every wait is bounded; :meth:`stop` always leaves no process behind.
    """

    def __init__(self, argv: Sequence[str], cwd: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, stdin: Any = subprocess.DEVNULL) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
            # preexec_fn is unsafe with threads running: only where SIGINT would be inherited
            # ignored (a caught signal is reset to the default by exec anyway).
            preexec_fn=_default_sigint
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else None,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.stderr_lines: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr,
                                                      self.stderr_lines.append), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream: Any, sink: Callable[[str], None]) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return "\n".join(self.stderr_lines)

    def next_line(self, timeout: float = DEFAULT_WAIT) -> str:
        """The next stdout line; AssertionError if none comes within ``timeout``."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no output from {self.argv[0]} within {timeout:.1f}s; last lines "
                f"{self.seen[-5:]!r}; stderr:\n{self.stderr}"
            ) from None
        self.seen.append(line)
        return line

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = DEFAULT_WAIT) -> str:
        """Read stdout until a line satisfies ``predicate``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.argv[0]}: expected line not seen within {timeout}s; "
                    f"got {self.seen[-5:]!r}; stderr:\n{self.stderr}"
                )
            line = self.next_line(remaining)
            if predicate(line):
                return line

    def wait(self, timeout: float = DEFAULT_WAIT) -> int:
        """Wait for exit; AssertionError (after killing it) if it takes longer."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.argv} did not exit within {timeout}s") from None
        for thread in self._threads:
            thread.join(timeout)
        return code

    def signal(self, signum: int = signal.SIGINT) -> None:
        """Send ``signum`` to the process (not to its children)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; kills the whole process group."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
            except ProcessLookupError:
                pass
        try:  # children that outlived their parent in the same group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.proc.returncode


def _hub_ready_line(proc: Process, timeout: float) -> str:
    """The hub's line saying it runs or that a consumer failed; AssertionError, with the hub's
    stderr, as soon as it exits instead (a gilmsg consumer that cannot start stops the hub)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            line = proc.next_line(min(max(remaining, 0.0), 0.25))
        except AssertionError:
            code = proc.proc.poll()
            if code is not None and proc.lines.empty():
                raise AssertionError(f"fedmsg-hub exited with status {code} before it ran; "
                                     f"stderr:\n{proc.stderr}") from None
            if remaining <= 0:
                raise AssertionError(f"fedmsg-hub not running within {timeout}s; last lines "
                                     f"{proc.seen[-5:]!r}; stderr:\n{proc.stderr}") from None
            continue
        if HUB_READY_LOG in line or HUB_CONSUMER_FAILED.search(line):
            return line


class DevBus:
    """A local fedmsg bus for tests: a CA, a certificate and a free endpoint per service.

    Args:
        root: an empty directory to hold ``ssl/`` and ``fedmsg.d/``.
        services: the service names; each is also its certificate's CN and its fedmsg ``name``.
        extra: config keys to add (``validate_signatures`` ...).
        ack_endpoints: give each service a free ``gilmsg.ack_endpoints`` address too (its ACKs
            leave there, unseen by receivers of the whole bus).
    """

    def __init__(self, root: str | os.PathLike, services: Iterable[str],
                 extra: dict[str, Any] | None = None, ack_endpoints: bool = False) -> None:
        self.root = Path(root)
        self.ssldir = self.root / "ssl"
        self.services = list(services)
        certs.init_ca(self.ssldir)
        for name in self.services:
            certs.issue(self.ssldir, name)
        self.config: dict[str, Any] = {
            "topic_prefix": "org.gilmsg",
            "environment": "test",
            "endpoints": {
                name: [f"tcp://127.0.0.1:{free_port()}"] for name in self.services
            },
            "sign_messages": True,
            "validate_signatures": True,
            "ssldir": str(self.ssldir),
            "ca_cert_location": str(self.ssldir / "ca.crt"),
            "crl_location": str(self.ssldir / "crl.pem"),
            "certnames": {name: name for name in self.services},
            "post_init_sleep": 0,
            "zmq_enabled": True,  # moksha (fedmsg-hub, fedmsg-relay) needs it
            "zmq_reconnect_ivl_max": 100,
        }
        if ack_endpoints:
            self.config["gilmsg.ack_endpoints"] = {
                name: [f"tcp://127.0.0.1:{free_port()}"] for name in self.services}
        self.config.update(extra or {})
        self.config_dir = self.root / "fedmsg.d"
        self.write_config()
        self.processes: list[Process] = []

    def write_config(self) -> Path:
        """(Re)write ``fedmsg.d/gilmsg.py`` from :attr:`config` (atomically); returns its path."""
        return write_config_file(self.config_file, self.config)

    @property
    def config_file(self) -> Path:
        """The config file to pass as ``--config-filename``."""
        return self.config_dir / CONFIG_NAME

    def add_service(self, name: str, issue_cert: bool = True) -> None:
        """Add a service (endpoint, and a certificate unless told not to) and rewrite the config."""
        if issue_cert:
            certs.issue(self.ssldir, name)
        self.services.append(name)
        self.config["endpoints"][name] = [f"tcp://127.0.0.1:{free_port()}"]
        self.config["certnames"][name] = name
        if "gilmsg.ack_endpoints" in self.config:
            self.config["gilmsg.ack_endpoints"][name] = [f"tcp://127.0.0.1:{free_port()}"]
        self.write_config()

    def config_for(self, name: str, **overrides: Any) -> dict[str, Any]:
        """The configuration of service ``name`` (a fresh copy)."""
        return config_copy(self.config, name, overrides)

    def env(self) -> dict[str, str]:
        """Environment for child processes: unbuffered, this interpreter's path first."""
        return child_env()

    def spawn(self, argv: Sequence[str], **kwargs: Any) -> Process:
        """Start a process in the bus directory; it is stopped when the bus closes."""
        kwargs.setdefault("env", self.env())
        kwargs.setdefault("cwd", self.root)
        proc = Process(argv, **kwargs)
        self.processes.append(proc)
        return proc

    def spawn_tail(self, name: str, *args: str) -> Process:
        """A real ``gilmsg-tail --json --credentials`` acknowledging as ``name``; one whole
        envelope (signature and certificate included) per stdout line."""
        exe = str(Path(sys.executable).parent / "gilmsg-tail")
        return self.spawn([exe, "--config-filename", str(self.config_file), "--name", name,
                           "--json", "--credentials", *args])

    def hub_config(self, name: str, **extra: Any) -> dict[str, Any]:
        """Configuration for a ``fedmsg-hub`` whose consumers acknowledge as service ``name``.

        The bus configuration plus what fedmsg-hub needs (``zmq_enabled``), ``name`` (the default
        identity of :class:`gilmsg.GilmsgConsumer`), logging of ``gilmsg``, ``moksha`` and
        ``fedmsg`` at INFO on stdout, then ``extra`` (consumer ``config_key`` switches ...).
        """
        cfg = self.config_for(name)
        cfg["zmq_enabled"] = True
        cfg["logging"] = HUB_LOGGING
        cfg.update(extra)
        return cfg

    def write_hub_config(self, name: str, **extra: Any) -> Path:
        """Write :meth:`hub_config` to ``hub-<name>.py`` in the bus root; returns its path."""
        return write_config_file(self.root / f"hub-{name}.py", self.hub_config(name, **extra))

    def spawn_hub(self, name: str, *, consumers: Sequence[str] | None = None,
                  pythonpath: Sequence[str | os.PathLike] = (), wait: bool = True,
                  timeout: float = DEFAULT_WAIT, **extra: Any) -> Process:
        """A real ``fedmsg-hub --config-filename hub-<name>.py``, stopped when the bus closes.

        Args:
            name: the service whose endpoint and certificate the hub's consumers use by default.
            consumers: ``module:Class`` strings for ``--with-consumers`` (only those run); None
                runs every consumer installed under the ``moksha.consumer`` entry point.
            pythonpath: directories put first on the hub's ``PYTHONPATH``.
            wait: return only once a :class:`gilmsg.GilmsgConsumer` logged that the hub runs
                (its socket is bound, its subscriptions made and its stop handlers installed);
                AssertionError if that takes longer than ``timeout``, or at once if moksha
                reports that a consumer failed to start.
            extra: config keys for :meth:`hub_config`.
        """
        path = self.write_hub_config(name, **extra)
        argv = [str(Path(sys.executable).parent / "fedmsg-hub"), "--config-filename", str(path)]
        if consumers:
            argv += ["--with-consumers", ",".join(consumers)]
        env = self.env()
        if pythonpath:
            parts = [os.fspath(p) for p in pythonpath]
            if env.get("PYTHONPATH"):
                parts.append(env["PYTHONPATH"])
            env["PYTHONPATH"] = os.pathsep.join(parts)
        proc = self.spawn(argv, env=env)
        if wait:
            line = _hub_ready_line(proc, timeout)
            if HUB_CONSUMER_FAILED.search(line):  # moksha logs it and runs on without the consumer
                while proc.lines.qsize():  # the traceback that followed, as far as it came
                    proc.next_line(0)
                raise AssertionError(f"fedmsg-hub: {line}\n" + "\n".join(proc.seen[-12:]))
        return proc

    def close(self) -> None:
        """Stop every process started through the bus."""
        for proc in self.processes:
            proc.stop()
        self.processes.clear()

    def __enter__(self) -> DevBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
