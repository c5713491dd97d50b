"""Benchmark (not a test): gilmsg's acknowledged publish against plain fedmsg, in one run.

Prints, on loopback with signatures on:
- cold start: time from a fresh process's first publish call to its first acknowledged result,
  after interpreter start and imports (recipients already running);
- steady round trip (publish call -> every ACK validated) p50/p99 for 1, 3 and 10 recipients;
- beside them, plain fedmsg.publish -> fedmsg.tail_messages in 1, 3 and 10 other processes (one
  way, until the last subscriber has it, no ACK; unsigned, since fedmsg's own signing is
  disabled on current pyOpenSSL), and fedmsg's time to its first publish (its init sleeps
  post_init_sleep) and the messages it loses before a subscriber is connected.

Usage: .venv/bin/python bench/bench_protocol.py [--n 300]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

import gilmsg
from gilmsg.testing import DevBus, Process

COLD = r"""
import json, sys, time
t0 = time.monotonic()
import gilmsg
t1 = time.monotonic()
config = eval(open(sys.argv[1]).read().split("=", 1)[1])
gilmsg.init(name="cold", **config)
t2 = time.monotonic()
report = gilmsg.publish(topic="cold", msg={}, recipients=["r1"], ack_timeout=10,
                        name="cold", **config)
t3 = time.monotonic()
print(json.dumps({"import": t1 - t0, "init": t2 - t1, "first_publish": t3 - t1,
                  "sends": report.sends}))
"""

FEDMSG_TAIL = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import fedmsg, fedmsg.config
config = eval(open(sys.argv[1]).read().split("=", 1)[1])
config.update(sign_messages=False, validate_signatures=False, mute=True)  # no publisher
print("ready", flush=True)
for _name, _ep, topic, msg in fedmsg.tail_messages(**config):
    print(json.dumps({"latency": time.monotonic() - msg["msg"]["sent"], "n": msg["msg"]["n"]}),
          flush=True)
"""


def quiet_tail(bus: DevBus, name: str, *args: str) -> subprocess.Popen:
    """A gilmsg-tail whose output is discarded: reading 10 pipes would load this process."""
    exe = str(Path(sys.executable).parent / "gilmsg-tail")
    proc = subprocess.Popen([exe, "--config-filename", str(bus.config_file), "--name", name,
                             *args], stdout=subprocess.DEVNULL, cwd=bus.root)
    bus.processes.append(Stopper(proc))
    return proc


class Stopper:
    """Lets DevBus.close() stop a plain Popen."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def loopback_binds() -> Iterator[None]:
    """fedmsg binds ``tcp://*:PORT`` whatever the config says: make that ``127.0.0.1:PORT``."""
    original = zmq.Socket.bind

    def bind(self: zmq.Socket, addr: str) -> Any:
        return original(self, addr.replace("tcp://*:", "tcp://127.0.0.1:"))

    zmq.Socket.bind = bind  # type: ignore[method-assign]
    try:
        yield
    finally:
        zmq.Socket.bind = original  # type: ignore[method-assign]


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def fmt(values: list[float]) -> str:
    """``p50 ... ms   p99 ... ms   (n=...)`` for round trips given in seconds."""
    ms = [v * 1000 for v in values]
    return f"p50 {pct(ms, 0.5):7.3f} ms   p99 {pct(ms, 0.99):7.3f} ms   (n={len(ms)})"


def main() -> None:
    """Run every part of the benchmark and print its figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300, help="publishes per figure")
    args = parser.parse_args()
    recipients = [f"r{i}" for i in range(1, 11)]
    with tempfile.TemporaryDirectory() as tmp, DevBus(
        Path(tmp), ["pub", "cold", "fedpub", *recipients]
    ) as bus:
        cfg = bus.config_for("pub")
        r1 = quiet_tail(bus, "r1")
        warm = gilmsg.publish(topic="warm", msg={}, recipients=["r1"], ack_timeout=30, **cfg)
        print(f"recipient r1 started and reached (first publish took {warm.elapsed:.2f}s, "
              f"{warm.sends} sends)")

        print("\n== cold start: fresh process, recipient r1 already running ==")
        script = Path(tmp) / "cold.py"
        script.write_text(COLD)
        colds = []
        for _ in range(7):
            out = subprocess.run([sys.executable, str(script), str(bus.config_file)],
                                 capture_output=True, text=True, timeout=60, check=True)
            colds.append(json.loads(out.stdout))
        imp = statistics.median(c["import"] for c in colds)
        first = statistics.median(c["first_publish"] for c in colds)
        init = statistics.median(c["init"] for c in colds)
        print(f"gilmsg  import {imp * 1000:6.1f} ms; init (config, certificates, bind) "
              f"{init * 1000:6.1f} ms")
        worst = max(c["first_publish"] for c in colds)
        print(f"gilmsg  after imports -> first acknowledged publish "
              f"median {first * 1000:6.1f} ms, max {worst * 1000:6.1f} ms "
              f"(sends: {[c['sends'] for c in colds]})")

        print("\n== steady round trip: publish -> all ACKs validated (signed both ways) ==")
        results = {}
        tails = {"r1": r1}
        for count in (1, 3, 10):
            # Only the recipients of this figure run: on 2 cores idle ones would steal CPU.
            targets = recipients[:count]
            for name in targets:
                if name not in tails:
                    tails[name] = quiet_tail(bus, name)
            gilmsg.publish(topic="warm", msg={}, recipients=targets, ack_timeout=30, **cfg)
            times = []
            for i in range(args.n + 20):
                t = time.monotonic()
                gilmsg.publish(topic="bench", msg={"i": i}, recipients=targets, ack_timeout=10,
                               **cfg)
                if i >= 20:
                    times.append(time.monotonic() - t)
            results[count] = times
            print(f"gilmsg  {count:2d} recipient(s): {fmt(times)}   subscribed to everything")

        # Consumers usually subscribe to their topics, and then never receive each other's ACKs
        # (with "" every ACK reaches every recipient: N*N deliveries per message).
        for proc in tails.values():
            proc.terminate()
        for proc in tails.values():
            proc.wait(10)
        topic_prefix = f"{bus.config['topic_prefix']}.{bus.config['environment']}.bench"
        tails = {name: quiet_tail(bus, name, "--topic", topic_prefix) for name in recipients}
        gilmsg.publish(topic="x", msg={}, modname="bench", recipients=recipients, ack_timeout=30,
                       **cfg)
        times = []
        for i in range(args.n + 20):
            t = time.monotonic()
            gilmsg.publish(topic="x", msg={"i": i}, modname="bench", recipients=recipients,
                           ack_timeout=10, **cfg)
            if i >= 20:
                times.append(time.monotonic() - t)
        print(f"gilmsg  10 recipient(s): {fmt(times)}   each subscribed to its topic only")

        bus.close()  # the gilmsg recipients stop: the fedmsg half runs on an idle machine
        print("\n== plain fedmsg: fedmsg.publish -> fedmsg.tail_messages, one way, no ACK ==")
        tail_script = Path(tmp) / "fedtail.py"
        tail_script.write_text(FEDMSG_TAIL)
        fed_tails: list[Process] = []

        def add_fedmsg_tails(count: int) -> list[Process]:
            new = [bus.spawn([sys.executable, str(tail_script), str(bus.config_file)])
                   for _ in range(count - len(fed_tails))]
            for tail in new:
                tail.wait_for(lambda line: line == "ready")
            fed_tails.extend(new)
            return new

        add_fedmsg_tails(1)
        import warnings

        warnings.simplefilter("ignore")
        import fedmsg

        fcfg = bus.config_for("fedpub", sign_messages=False, validate_signatures=False,
                              post_init_sleep=0.5)
        t = time.monotonic()
        with loopback_binds():
            fedmsg.init(**fcfg)
        print(f"fedmsg  init (binds, then sleeps post_init_sleep): "
              f"{(time.monotonic() - t) * 1000:.1f} ms")
        warmups = iter(range(-1, -10**6, -1))  # warm-up messages have negative numbers

        def reach(new: list[Process]) -> int:
            """Slow joiner: send until every new subscriber got something; returns the sends."""
            pending, sent = set(new), 0
            deadline = time.monotonic() + 30
            while pending:
                if time.monotonic() > deadline:
                    raise SystemExit("fedmsg subscribers never connected: "
                                     + " | ".join(tail.stderr[-300:] for tail in pending))
                fedmsg.publish(topic="bench", msg={"sent": time.monotonic(), "n": next(warmups)},
                               modname="b")
                sent += 1
                for tail in list(pending):
                    try:
                        tail.next_line(timeout=0.05)
                        pending.discard(tail)
                    except AssertionError:
                        pass
            return sent

        def latency_of(tail: Process, n: int) -> float:
            while True:  # skip what is left of the warm-up
                record = json.loads(tail.next_line())
                if record["n"] == n:
                    return record["latency"]

        lost = reach(fed_tails) - 1
        print(f"fedmsg  messages lost before the first subscriber was connected: {lost}")
        fed_results = {}
        for count in (1, 3, 10):
            reach(add_fedmsg_tails(count))
            lat = []
            for i in range(args.n):
                fedmsg.publish(topic="bench", msg={"sent": time.monotonic(), "n": i}, modname="b")
                lat.append(max(latency_of(tail, i) for tail in fed_tails))
            fed_results[count] = lat
            print(f"fedmsg  {count:2d} subscriber(s), one way (until the last has it), unsigned: "
                  f"{fmt(lat)}")
        print()
        for count in (1, 3, 10):
            ratio = pct(results[count], 0.5) / pct(fed_results[count], 0.5)
            print(f"ratio gilmsg {count:2d}-recipient round trip / fedmsg one way (p50): "
                  f"{ratio:.1f}x")


if __name__ == "__main__":
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C: the DevBus stops its processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    main()
