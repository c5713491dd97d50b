"""The chaos system: real publishers, runners and recipients, a nemesis playing a seed's schedule.

System (every process real, every address 127.0.0.1 or inside the two network namespaces this
creates):

* ``pub1``, ``pub2``: :mod:`tests.chaos.publisher`, durable publishes (``gilmsg.outbox.require =
  "processed"``) at a steady rate into their own outbox, each on its own file system (a small
  tmpfs, root only) that the nemesis can fill;
* ``runner1``: ``gilmsg-outbox run`` for pub1's outbox; pub2's outbox is drained by the runner
  inside ``hub`` (the ``fedmsg-hub`` outbox plugin, identity ``hubrunner``);
* three required recipients with durable de-duplication and ``processed`` ACKs, each
  application logging every delivery with fsync: ``hub`` (a GilmsgConsumer in stock
  ``fedmsg-hub``), ``tailc`` (:mod:`tests.chaos.tail_app`, a ``tail_messages`` loop) and
  ``execc`` (``gilmsg-tail --exec --settle --dedup-file``, the command appending with ``dd
  conv=fsync``).

As root, namespace A holds pub1, runner1 and hub; namespace B holds pub2, tailc and execc; all
traffic between them crosses the userspace lossy link (:mod:`gilmsg.testing.lossy_link`).
Without root, everything runs on 127.0.0.1 and the network and disk faults are skipped, each
with its reason in the run's event log and a warning.

``plant``: one of :data:`PLANTS`, a known bug installed in the children by a ``sitecustomize``
module this harness writes (test code only; nothing in gilmsg changes).
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gilmsg.testing import HUB_LOGGING, DevBus, Process
from gilmsg.testing.lossy_link import LossyLink, unavailable
from tests.chaos import model

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BIN = Path(sys.executable).parent
RECIPIENTS = ("hub", "tailc", "execc")
PUBLISHERS = ("pub1", "pub2")
SERVICES = ("pub1", "pub2", "runner1", "hubrunner", "hub", "tailc", "execc")
NS_A = ("pub1", "runner1", "hub", "hubrunner")
TOPIC = "org.gilmsg.test.chaos.chaos"
#: Upper bound of the convergence wait after the last fault healed (seconds).
CONVERGE_BOUND = float(os.environ.get("CHAOS_CONVERGE_BOUND", 120.0))

#: The planted bugs: name -> (roles it applies to, what it does).
PLANTS = {
    "no-dedup-record": ("recipient", "recipients keep no durable record (done() never true)"),
    "early-record": ("hub", "the hub records a message consumed on receipt, before consume()"),
    "early-ack": ("hub", "the hub sends its processed ACK before consume() runs"),
    "delete-on-send": ("publisher", "the outbox deletes a message right after its first send"),
}

SITECUSTOMIZE = '''\
"""Planted bugs of the chaos suite (tests/chaos/harness.py); active only with CHAOS_PLANT."""
import os

_plant = os.environ.get("CHAOS_PLANT", "")
_role = os.environ.get("CHAOS_ROLE", "")

if _plant == "no-dedup-record" and _role in ("hub", "recipient"):
    from gilmsg.outbox import dedup

    dedup.Consumed.done = lambda self, key: False
    dedup.Consumed.record = lambda self, key, msg_id=None: None

if _plant == "early-record" and _role == "hub":
    from gilmsg.consumers import hub as _hub

    _receive = _hub.GilmsgConsumer._receive

    def _early(self, message):
        ok = _receive(self, message)
        key = message.get(_hub._DEDUP_KEY)
        if ok and key is not None:
            self._consumed.record(key, message["body"].get("msg_id"))
        return ok

    _hub.GilmsgConsumer._receive = _early

if _plant == "early-ack" and _role == "hub":
    from gilmsg.consumers import hub as _hub

    def _settling(self, consume):
        def settling_consume(message):
            with self._settlements_lock:
                settlement = self._settlements.pop(id(message), None)
            if settlement is not None:
                self._settle(settlement.processed)
            return consume(message)
        return settling_consume

    _hub.GilmsgConsumer._settling = _settling

if _plant == "delete-on-send" and _role == "publisher":
    from gilmsg.outbox import durable

    _publish_many = durable.Outbox.publish_many

    def _deleting(self, *args, **kwargs):
        out = _publish_many(self, *args, **kwargs)
        ids = [(p.msg_id,) for p in out]
        with self.store._write() as conn:
            conn.executemany("DELETE FROM recipients WHERE msg_id = ?", ids)
            conn.executemany("DELETE FROM messages WHERE msg_id = ?", ids)
        return out

    durable.Outbox.publish_many = _deleting
'''


@dataclass
class Options:
    """What one run does."""

    seed: int
    duration: float = 180.0
    quiet: float = 0.0  # 0: a sixth of the duration, at least 8 s
    rate: float = 3.0  # messages per second per publisher
    work: float = 0.02  # seconds each application works on a message
    plant: str | None = None
    allow_known_gaps: bool = False  # see model.KNOWN_GAP
    gap: tuple[float, float] = (0.3, 2.5)  # seconds between drawn faults (model.schedule)

    def quiet_period(self) -> float:
        return self.quiet or max(8.0, self.duration / 6)


@dataclass
class Run:
    """A finished run: its schedule, what happened, the history and the verdict."""

    options: Options
    faults: list[model.Fault]
    events: list[str] = field(default_factory=list)
    history: model.History = field(default_factory=model.History)
    verdict: model.Verdict = field(default_factory=model.Verdict)
    skipped: dict[str, str] = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)
    converged: float | None = None

    def report(self) -> str:
        """Seed, schedule, what the nemesis did and the verdict: printed when a run fails."""
        lines = [model.describe(self.options.seed, self.faults)]
        if self.options.plant:
            lines.append(f"planted bug: {self.options.plant}")
        for kind, why in sorted(self.skipped.items()):
            lines.append(f"skipped {kind} faults: {why}")
        lines.append("events:")
        lines += ["  " + e for e in self.events]
        lines += ["unexpected exits (restarted):"] + ["  " + c for c in self.crashes]
        lines.append("converged after heal: " + (f"{self.converged:.1f} s" if self.converged
                                                 is not None else "NO (bound reached)"))
        lines.append(self.verdict.figures())
        lines += ["VIOLATION " + x for x in self.verdict.violations]
        if self.options.allow_known_gaps:
            lines += [f"KNOWN GAP ({model.KNOWN_GAP}) " + x for x in self.verdict.known_gaps]
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        """One line for a table of runs: seed, duration, PASS or FAIL, the closing figures."""
        plant = f" plant {self.options.plant}" if self.options.plant else ""
        verdict = "PASS" if self.verdict.ok else f"FAIL ({len(self.verdict.violations)})"
        return (f"chaos summary: seed {self.options.seed} duration {self.options.duration:g} s"
                f"{plant}: {verdict}; {self.verdict.figures()}")


class System:
    """The processes, the link and the disks of one run. Use :meth:`run`."""

    def __init__(self, root: Path, options: Options) -> None:
        self.root = root
        self.o = options
        self.t0 = 0.0
        self.procs: dict[str, Process] = {}
        self.started: list[tuple[Process, str]] = []
        self.down: set[str] = set()
        self.lock = threading.RLock()
        self.link: LossyLink | None = None
        self.mounts: list[Path] = []
        self.fillers: dict[str, Path] = {}
        self.kills: dict[str, list[float]] = {r: [] for r in RECIPIENTS}
        horizon = options.duration - options.quiet_period()
        self.horizon = horizon
        self.result = Run(options, model.schedule(options.seed, options.duration,
                                                  options.quiet_period(), gap=options.gap))
        why = unavailable()
        if why:
            for kind in ("partition", "loss", "isolate"):
                self.result.skipped[kind] = f"network namespaces: {why}"
        if os.geteuid() != 0:
            self.result.skipped["disk"] = "a small tmpfs for an outbox needs root (mount)"
        self.bus: DevBus | None = None

    # -- setup -------------------------------------------------------------------------------

    def _event(self, text: str) -> None:
        self.result.events.append(f"{time.time() - self.t0:7.2f} {text}")

    def _setup(self) -> None:
        root = self.root
        if "partition" not in self.result.skipped:
            self.link = LossyLink(loss=0.0, seed=self.o.seed)
        self.bus = bus = DevBus(root / "bus", SERVICES,
                                extra={"gilmsg.outbox.require": "processed"})
        self.ports: dict[str, int] = {}
        for name in SERVICES:
            port = int(bus.config["endpoints"][name][0].rsplit(":", 1)[1])
            self.ports[name] = port
            if self.link is not None:
                host = self.link.addr_a if name in NS_A else self.link.addr_b
                bus.config["endpoints"][name] = [f"tcp://{host}:{port}"]
        bus.write_config()
        (root / "logs").mkdir()
        self.outbox: dict[str, Path] = {}
        for pub in PUBLISHERS:
            disk = root / f"{pub}-disk"
            disk.mkdir()
            if "disk" not in self.result.skipped:
                subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)],
                               check=True, capture_output=True, timeout=20)
                self.mounts.append(disk)
            self.outbox[pub] = disk / "outbox.db"
        plant = root / "plant"
        plant.mkdir()
        (plant / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.plantdir = plant
        hub_cfg = bus.hub_config("hub", **{
            "chaos_app": True, "chaos_app.log": str(self.app_log("hub")),
            "chaos_app.work": self.o.work, "chaos_app.gilmsg_ack_mode": "processed",
            "chaos_app.gilmsg_dedup_path": str(root / "hub-seen.db"),
            "gilmsg.outbox": str(self.outbox["pub2"]), "gilmsg.outbox.runner": True,
            "gilmsg.outbox.runner_name": "hubrunner", "logging": HUB_LOGGING})
        self.hub_config = root / "hub-config.py"
        import pprint

        self.hub_config.write_text("config = " + pprint.pformat(hub_cfg) + "\n")

    def app_log(self, recipient: str) -> Path:
        return self.root / "logs" / f"{recipient}.log"

    def pub_log(self, pub: str) -> Path:
        return self.root / "logs" / f"{pub}.log"

    def _argv(self, name: str) -> tuple[list[str], str]:
        """(argv, role) of process ``name``."""
        cfg = str(self.bus.config_file)  # type: ignore[union-attr]
        py = sys.executable
        if name in PUBLISHERS:
            until = self.t0 + self.horizon
            return [py, str(HERE / "publisher.py"), cfg, name, str(self.outbox[name]),
                    str(self.pub_log(name)), str(self.o.rate), f"{until:.3f}",
                    *RECIPIENTS], "publisher"
        if name == "runner1":
            return [str(BIN / "gilmsg-outbox"), "--outbox", str(self.outbox["pub1"]),
                    "--config-filename", cfg, "run", "--name", "runner1"], "runner"
        if name == "hub":
            return [str(BIN / "fedmsg-hub"), "--config-filename", str(self.hub_config),
                    "--with-consumers", "chaos_consumer:ChaosConsumer"], "hub"
        if name == "tailc":
            return [py, str(HERE / "tail_app.py"), cfg, "tailc", str(self.root / "tailc-seen.db"),
                    str(self.app_log("tailc")), str(self.o.work)], "recipient"
        if name == "execc":
            log = shlex.quote(str(self.app_log("execc")))
            command = (
                "n=$(sed -n 's/.*\"nonce\": \"\\([^\"]*\\)\".*/\\1/p'); "
                f"sleep {self.o.work}; t=$(date +%s.%N); "
                "printf '%s %s %s\\n' \"$t\" \"$GILMSG_MSG_ID\" \"$n\" | "
                f"dd of={log} oflag=append conv=notrunc,fsync status=none")
            return [str(BIN / "gilmsg-tail"), "--config-filename", cfg, "--name", "execc",
                    "--topic", TOPIC, "--exec", command, "--settle", "--dedup-file",
                    str(self.root / "execc-seen.db")], "recipient"
        raise KeyError(name)

    def start(self, name: str) -> Process:
        argv, role = self._argv(name)
        env = self.bus.env()  # type: ignore[union-attr]
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.plantdir), str(HERE / "hubpath"), str(REPO)]
            + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["CHAOS_ROLE"] = role
        if self.o.plant:
            env["CHAOS_PLANT"] = self.o.plant
        if self.link is not None:
            ns = self.link.ns_a if name in NS_A else self.link.ns_b
            argv = self.link.wrap(ns, argv)
        proc = self.bus.spawn(argv, env=env)  # type: ignore[union-attr]
        self.started.append((proc, name))
        with self.lock:
            self.procs[name] = proc
            self.down.discard(name)
        return proc

    # -- faults ------------------------------------------------------------------------------

    def _signal(self, name: str, signum: int) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.proc.pid, signum)
        except ProcessLookupError:
            pass

    def _fill(self, pub: str) -> None:
        """Fill the publisher's outbox file system to the last block."""
        filler = self.outbox[pub].parent / "filler"
        self.fillers[pub] = filler
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 4096, 1):
                chunk = b"\0" * size
                try:
                    while True:
                        os.write(fd, chunk)
                except OSError:
                    continue
        finally:
            os.close(fd)

    def _free(self, pub: str) -> None:
        filler = self.fillers.pop(pub, None)
        if filler is not None:
            filler.unlink(missing_ok=True)

    def apply(self, fault: model.Fault, begin: bool) -> None:
        """Start (``begin``) or end one fault."""
        kind, target = fault.kind, fault.target
        if kind in self.result.skipped:
            if begin:
                self._event(f"skipped {fault.describe().strip()}: {self.result.skipped[kind]}")
            return
        self._event(("begin " if begin else "end   ") + fault.describe().strip())
        if kind == "kill":
            with self.lock:
                if begin:
                    if target in self.kills:
                        self.kills[target].append(time.time())
                    self.down.add(target)
                    self._signal(target, signal.SIGKILL)
                    self.procs[target].proc.wait(20)
                else:
                    self.start(target)
        elif kind == "pause":
            self._signal(target, signal.SIGSTOP if begin else signal.SIGCONT)
        elif kind == "partition":
            self._link(f"loss {1.0 if begin else 0.0}")
        elif kind == "loss":
            self._link(f"loss {fault.param if begin else 0.0}")
        elif kind == "isolate":
            self._link(f"{'block' if begin else 'unblock'} {self.ports[target]}")
        elif kind == "disk":
            (self._fill if begin else self._free)(target)

    def _link(self, command: str, timeout: float = 60.0) -> None:
        """Send the forwarder ``command``; return once it is in effect (its ``set`` line).

        The ``syn`` lines it printed meanwhile are skipped unread (thousands in a partition).
        """
        assert self.link is not None and self.link.forwarder is not None
        forwarder = self.link.forwarder
        assert forwarder.proc.stdin is not None
        while not forwarder.lines.empty():
            forwarder.lines.get_nowait()
        forwarder.proc.stdin.write(command + "\n")
        forwarder.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        resend = time.monotonic() + 5.0
        while True:
            if time.monotonic() > resend:  # seen under load: a command never answered
                self._event(f"lossy link: {command!r} not answered within 5 s: sent again")
                forwarder.proc.stdin.write(command + "\n")
                forwarder.proc.stdin.flush()
                resend = time.monotonic() + 5.0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pid = forwarder.proc.pid
                try:
                    status = Path(f"/proc/{pid}/status").read_text().splitlines()[2]
                    wchan = Path(f"/proc/{pid}/wchan").read_text()
                except OSError as exc:
                    status, wchan = f"gone ({exc})", ""
                raise AssertionError(
                    f"lossy link: {command!r} not in effect within {timeout} s; forwarder "
                    f"exit {forwarder.proc.poll()}, {status}, wchan {wchan}, stderr "
                    f"{forwarder.stderr[-500:]!r}, last lines {forwarder.seen[-3:]}")
            try:
                line = forwarder.lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if line == f"set {command}":
                return

    def _watchdog(self) -> None:
        """Restart a process that exited by itself (and say so)."""
        with self.lock:
            for name, proc in list(self.procs.items()):
                if name in self.down or proc.proc.poll() is None:
                    continue
                if name in self.kills:  # died: the same crash windows as a SIGKILL
                    self.kills[name].append(time.time())
                tail = " | ".join(proc.stderr_lines[-3:])
                text = (f"{time.time() - self.t0:7.2f} {name} exited by itself with status "
                        f"{proc.proc.returncode}: {tail}")
                self.result.crashes.append(text)
                self._event(f"restart {name} (it exited by itself)")
                self.start(name)

    def _save_output(self) -> None:
        """Every process's stdout and stderr, in ``logs/<name>.<n>.out`` (n: its incarnation)."""
        count: dict[str, int] = {}
        for proc, name in self.started:
            count[name] = count.get(name, 0) + 1
            lines = list(proc.seen)
            while not proc.lines.empty():
                lines.append(proc.lines.get_nowait())
            path = self.root / "logs" / f"{name}.{count[name]}.out"
            path.write_text("\n".join(lines) + "\n--- stderr\n" + proc.stderr + "\n")

    def _heal(self) -> None:
        if self.link is not None:
            self._link("loss 0.0")
            for port in self.ports.values():
                self._link(f"unblock {port}")
        for pub in list(self.fillers):
            self._free(pub)
        with self.lock:
            for name in list(self.procs):
                if name in self.down:
                    self.start(name)
                else:
                    self._signal(name, signal.SIGCONT)
        self._event("healed")

    # -- the run -----------------------------------------------------------------------------

    def history(self) -> model.History:
        h = model.History(recipients=RECIPIENTS, faults=[
            f for f in self.result.faults if f.kind not in self.result.skipped])
        not_stored_nonces: set[str] = set()
        for pub in PUBLISHERS:
            path = self.pub_log(pub)
            for line in path.read_text().splitlines() if path.exists() else []:
                parts = line.split()
                if len(parts) >= 4 and parts[0] == "stored":
                    h.stored[parts[2]] = (pub, float(parts[3]))
                elif len(parts) >= 3 and parts[0] == "notstored":
                    not_stored_nonces.add(parts[1])
        for r in RECIPIENTS:
            entries = []
            path = self.app_log(r)
            for line in path.read_text().splitlines() if path.exists() else []:
                parts = line.split()
                if len(parts) != 3:
                    continue  # a torn last line: not logged
                t, msg_id, nonce = parts
                entries.append((msg_id, float(t)))
                if nonce in not_stored_nonces:
                    h.not_stored.add(msg_id)
            h.deliveries[r] = entries
        for pub in PUBLISHERS:
            acks, pending, owed = read_outbox(self.outbox[pub])
            h.acks.update(acks)
            h.pending[pub] = pending
            h.owed += owed
        for r in RECIPIENTS:
            h.recorded[r] = read_record(self.root / f"{r}-seen.db")
        h.kills = {r: list(v) for r, v in self.kills.items()}
        return h

    def _converged(self) -> bool:
        h = self.history()
        if any(h.pending.values()):
            return False
        return all({m for m, _t in h.deliveries[r]} >= set(h.stored) for r in RECIPIENTS)

    def run(self) -> Run:
        """Set up, play the schedule, heal, converge, stop everything, check."""
        stop = threading.Event()
        try:
            self._setup()
            self.t0 = time.time()
            for name in ("hub", "tailc", "execc", "runner1"):
                self.start(name)
            hub = self.procs["hub"]
            hub.wait_for(lambda line: "gilmsg: hub running" in line, 60)
            self.t0 = time.time()  # the schedule's clock starts with the publishers
            for pub in PUBLISHERS:
                self.start(pub)
            self._event("started")
            actions = sorted([(f.start, 1, i, True) for i, f in enumerate(self.result.faults)]
                             + [(f.end, 0, i, False) for i, f in enumerate(self.result.faults)])
            for at, _order, i, begin in actions:
                while True:
                    wait = self.t0 + at - time.time()
                    if wait <= 0:
                        break
                    stop.wait(min(wait, 0.5))
                    self._watchdog()
                self.apply(self.result.faults[i], begin)
            while time.time() < self.t0 + self.horizon:
                stop.wait(0.5)
                self._watchdog()
            self._heal()
            healed = time.time()
            while time.time() < healed + CONVERGE_BOUND:
                self._watchdog()
                if self._converged():
                    self.result.converged = time.time() - healed
                    break
                stop.wait(1.0)
            self._event("stopping")
        finally:
            stop.set()
            if self.bus is not None:
                for proc in self.bus.processes:  # paused ones cannot take SIGTERM
                    try:
                        os.killpg(proc.proc.pid, signal.SIGCONT)
                    except (ProcessLookupError, PermissionError):
                        pass
                self.bus.close()
                self._save_output()
            if self.link is not None:
                self.link.close()
            try:
                self.result.history = self.history()
                for pub in PUBLISHERS:  # kept beside the logs (the tmpfs goes)
                    if self.outbox.get(pub) is not None and self.outbox[pub].exists():
                        copy_db(self.outbox[pub], self.root / "logs" / f"{pub}-outbox.db")
            finally:
                for disk in self.mounts:
                    subprocess.run(["umount", "-l", str(disk)], capture_output=True,
                                   timeout=20)
        self.result.verdict = model.check(self.result.history,
                                          allow_known_gaps=self.o.allow_known_gaps)
        return self.result


def read_outbox(path: Path) -> tuple[dict[tuple[str, str], float], int, list[tuple[str, str]]]:
    """(ACK times by (msg_id, recipient), rows still pending or expired, the (msg_id,
    recipient) ACKs those rows wait for) of an outbox file."""
    if not path.exists():
        return {}, 0, []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        acks = {(m, r): t for m, r, t in conn.execute(
            "SELECT msg_id, recipient, acked FROM recipients WHERE acked IS NOT NULL")}
        pending = conn.execute(
            "SELECT count(*) FROM messages WHERE status != 'delivered'").fetchone()[0]
        owed = [(m, r) for m, r in conn.execute(
            "SELECT msg_id, recipient FROM recipients JOIN messages USING (msg_id) "
            "WHERE status != 'delivered' AND acked IS NULL")]
    except sqlite3.Error:  # busy or mid-checkpoint: unknown, hence not yet empty
        return {}, -1, []
    finally:
        conn.close()
    return acks, pending, owed


def read_record(path: Path) -> set[str]:
    """The msg_ids in a recipient's durable consumed-message record."""
    if not path.exists():
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return {m for (m,) in conn.execute("SELECT msg_id FROM consumed")}
    except sqlite3.Error:
        return set()
    finally:
        conn.close()


def copy_db(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite file (WAL included)."""
    src, dst = sqlite3.connect(source, timeout=10), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def run(root: Path, options: Options) -> Run:
    """One chaos run in ``root`` (an empty directory)."""
    return System(root, options).run()


def main() -> None:
    """``python -m tests.chaos.harness SEED DURATION [PLANT]``: one run by hand, its report."""
    import tempfile

    seed, duration = int(sys.argv[1]), float(sys.argv[2])
    plant = sys.argv[3] if len(sys.argv) > 3 else None
    keep = os.environ.get("CHAOS_KEEP")  # a directory to keep the run's files in
    with tempfile.TemporaryDirectory(prefix="gilmsg-chaos-") as tmp:
        root = Path(keep) if keep else Path(tmp)
        result = run(root, Options(seed, duration, plant=plant))
        print(result.report())
        sys.exit(0 if result.verdict.ok else 1)


if __name__ == "__main__":
    main()
