"""Benchmark (not a test): gilmsg beside the protocol floor, pipelined and round trip, by N.

For each number of recipients N (``--curve 1,3,10``), in the same run and on the same bus:

* the floor: bare pyzmq, one echo process per recipient, the same envelopes and the same RSA
  signatures and checks as gilmsg (the publisher signs each message; each echo validates it and
  signs an ACK; the publisher validates every ACK), nothing else: no re-send, no dedup;
* gilmsg: ``gilmsg.publish_async`` to N ``gilmsg-tail`` recipients (single ACKs unless
  ``--batch-acks``), each subscribed to the whole bus unless ``--own-topic``.

Two figures each: pipelined (``--window`` messages awaiting their ACKs: acknowledged msg/s,
latency p50/p99, copies sent per message) and round trip (one message at a time, p50/p99).
Floor and gilmsg alternate in ``--rounds`` rounds so that both see the same machine load.
``--png`` draws the curve; ``--profile DIR`` records py-spy profiles of the publisher and of
one recipient during gilmsg's pipelined rounds (py-spy must be installed).

Usage: .venv/bin/python bench/bench_scale.py [--curve 1,3,10,30,100] [--n 600] [--window 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_protocol import Stopper  # noqa: E402

import gilmsg  # noqa: E402
from gilmsg.core import wire  # noqa: E402
from gilmsg.crypto import signing  # noqa: E402
from gilmsg.testing import DevBus, free_port  # noqa: E402

ECHO = r"""
import json, sys, zmq
from gilmsg.crypto import signing
from gilmsg.core import wire
key, crt, ca, crl, listen, bind = sys.argv[1:7]
signer, validator = signing.Signer(key, crt), signing.Validator(ca, crl)
ctx = zmq.Context()
sub = ctx.socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"")
sub.setsockopt(zmq.RCVHWM, 0)
sub.connect(listen)
pub = ctx.socket(zmq.PUB)
pub.setsockopt(zmq.SNDHWM, 0)
pub.bind(bind)
print("ready", flush=True)
while True:
    topic, body = sub.recv_multipart()
    envelope = json.loads(body)
    if validator.validate(envelope).ok:
        ack = signer.sign(wire.new_envelope("ack", wire.ack_body(envelope), envelope["i"]))
        pub.send_multipart(wire.encode("ack", ack))
"""

TOPIC = "scale"
MODNAME = "bench"


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class Floor:
    """The bare protocol: one publisher (this process), ``n`` echo processes."""

    def __init__(self, bus: DevBus, names: list[str], script: Path) -> None:
        ssl = bus.ssldir
        self.ctx = zmq.Context()
        here = f"tcp://127.0.0.1:{free_port()}"
        self.out = self.ctx.socket(zmq.PUB)
        self.out.setsockopt(zmq.SNDHWM, 0)
        self.out.bind(here)
        self.back = self.ctx.socket(zmq.SUB)
        self.back.setsockopt(zmq.SUBSCRIBE, b"")
        self.back.setsockopt(zmq.RCVHWM, 0)
        self.names = names
        self.echoes = []
        for name in names:
            there = f"tcp://127.0.0.1:{free_port()}"
            echo = bus.spawn([sys.executable, str(script), str(ssl / f"{name}.key"),
                              str(ssl / f"{name}.crt"), bus.config["ca_cert_location"],
                              bus.config["crl_location"], here, there])
            self.echoes.append(echo)
            self.back.connect(there)
        for echo in self.echoes:
            assert echo.next_line(60) == "ready", echo.stderr
        self.me = signing.Signer(str(ssl / "floor.key"), str(ssl / "floor.crt"))
        self.validator = signing.Validator(bus.config["ca_cert_location"],
                                           bus.config["crl_location"])
        self.i = 0
        while self.run(1, 1, wait=0.2) is None:  # until every echo is connected both ways
            pass

    def close(self) -> None:
        self.out.close(0)
        self.back.close(0)
        self.ctx.term()

    def run(self, n: int, window: int, wait: float = 30.0
            ) -> tuple[float, list[float]] | None:
        """Pipelined: (msg/s, latencies); None if some ACK did not come within ``wait``."""
        outstanding: dict[str, tuple[float, set[str]]] = {}
        latencies: list[float] = []
        sent = 0
        start = time.monotonic()
        while len(latencies) < n:
            while sent < n and len(outstanding) < window:
                self.i += 1
                signed = self.me.sign(wire.new_envelope("floor", {"i": self.i}, self.i,
                                                        recipients=self.names))
                outstanding[signed["msg_id"]] = (time.monotonic(), set(self.names))
                self.out.send_multipart(wire.encode("floor", signed))
                sent += 1
            if not self.back.poll(wait * 1000):
                self.back.setsockopt(zmq.RCVTIMEO, 0)
                return None
            while True:
                try:
                    frames = self.back.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                ack = json.loads(frames[1])
                verdict = self.validator.validate(ack)
                entry = outstanding.get(ack["msg"]["ack_msg_id"])
                if not verdict.ok or entry is None:
                    continue
                entry[1].discard(verdict.signer)
                if not entry[1]:
                    del outstanding[ack["msg"]["ack_msg_id"]]
                    latencies.append(time.monotonic() - entry[0])
        return n / (time.monotonic() - start), latencies


def gilmsg_pipelined(cfg: dict[str, Any], recipients: list[str], n: int, window: int
                     ) -> tuple[float, list[float], float, int]:
    """msg/s, latencies, mean copies sent per message, failures."""
    slots = threading.BoundedSemaphore(window)
    latencies: list[float] = []
    sends: list[int] = []
    failures = [0]
    lock = threading.Lock()
    done = threading.Event()
    remaining = [n]

    def finished(t0: float) -> Any:
        def callback(future: Any) -> None:
            elapsed = time.monotonic() - t0
            with lock:
                if future.exception() is not None:
                    failures[0] += 1
                else:
                    sends.append(future.result().sends)
                    latencies.append(elapsed)
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()
            slots.release()
        return callback

    start = time.monotonic()
    for i in range(n):
        slots.acquire()
        t0 = time.monotonic()
        pending = gilmsg.publish_async(topic=TOPIC, msg={"i": i}, modname=MODNAME,
                                       recipients=recipients, ack_timeout=60, **cfg)
        pending.future.add_done_callback(finished(t0))
    done.wait(600)
    rate = n / (time.monotonic() - start)
    return rate, latencies, statistics.mean(sends) if sends else float("nan"), failures[0]


def gilmsg_round_trips(cfg: dict[str, Any], recipients: list[str], n: int) -> list[float]:
    times = []
    for i in range(n):
        t = time.monotonic()
        gilmsg.publish(topic=TOPIC, msg={"i": i}, modname=MODNAME, recipients=recipients,
                       ack_timeout=30, **cfg)
        times.append(time.monotonic() - t)
    return times


def floor_round_trips(floor: Floor, n: int) -> list[float]:
    times = []
    for _ in range(n):
        result = floor.run(1, 1)
        assert result is not None, "the floor lost an ACK"
        times.extend(result[1])
    return times


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by the processes ``pids`` (0 for a gone one)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / ticks
    return total


class CpuSplit:
    """CPU seconds of this process and of its recipients, summed over ``with`` blocks: on a
    shared machine wall times swing with the load, CPU per message much less."""

    def __init__(self, others: list[int]) -> None:
        self.others = others
        self.own = self.peers = 0.0

    def __enter__(self) -> CpuSplit:
        self._start = (time.process_time(), cpu_of(self.others))
        return self

    def __exit__(self, *exc: object) -> None:
        self.own += time.process_time() - self._start[0]
        self.peers += cpu_of(self.others) - self._start[1]


def spy(pid: int, out: Path, seconds: float) -> subprocess.Popen | None:
    """Start py-spy on ``pid`` for ``seconds`` (raw collapsed stacks), or None without it."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", "200", "--format", "raw", "--nonblocking",
                             "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(bus: DevBus, count: int, args: argparse.Namespace, script: Path,
            tails: dict[str, Any]) -> dict[str, Any]:
    names = [f"r{i}" for i in range(1, count + 1)]
    for old in [name for name in tails if name not in names]:  # idle ones would steal CPU
        tails.pop(old).stop()
    extra = ["--batch-acks"] if args.batch_acks else []
    if args.own_topic:
        extra += ["--topic", f"{bus.config['topic_prefix']}.{bus.config['environment']}."
                             f"{MODNAME}.{TOPIC}"]
    exe = str(Path(sys.executable).parent / "gilmsg-tail")
    for name in names:
        if name not in tails:
            proc = subprocess.Popen([exe, "--config-filename", str(bus.config_file), "--name",
                                     name, *extra], stdout=subprocess.DEVNULL, cwd=bus.root)
            tails[name] = Stopper(proc)
    cfg = bus.config_for("pub")
    gilmsg.publish(topic=TOPIC, msg={}, modname=MODNAME, recipients=names, ack_timeout=120,
                   **cfg)
    floor = Floor(bus, names, script)
    n = max(args.min_n, args.n // count)
    per_round = max(1, n // args.rounds)
    rt_n = max(10, args.rt // max(1, count // 3))
    rt_round = max(1, rt_n // args.rounds)
    out: dict[str, Any] = {"n": count, "g_rate": [], "f_rate": [], "g_lat": [], "f_lat": [],
                           "sends": [], "failures": 0, "g_rt": [], "f_rt": []}
    g_cpu = CpuSplit([tails[name].proc.pid for name in names])
    f_cpu = CpuSplit([echo.proc.pid for echo in floor.echoes])
    g_rt_cpu = CpuSplit(g_cpu.others)
    f_rt_cpu = CpuSplit(f_cpu.others)
    try:
        gilmsg_pipelined(cfg, names, min(per_round, 2 * args.window), args.window)  # warm-up
        floor.run(min(per_round, 2 * args.window), args.window)
        spies = []
        if args.profile:
            seconds = max(2.0, per_round * args.rounds / 300 * count)
            args.profile.mkdir(parents=True, exist_ok=True)
            tag = f"{args.tag}-n{count}"
            spies = [spy(os.getpid(), args.profile / f"publisher-{tag}.txt", seconds),
                     spy(tails[names[0]].proc.pid, args.profile / f"recipient-{tag}.txt",
                         seconds)]
        for _ in range(args.rounds):
            with g_cpu:
                rate, lat, sends, failures = gilmsg_pipelined(cfg, names, per_round,
                                                              args.window)
            out["g_rate"].append(rate)
            out["g_lat"] += lat
            out["sends"].append(sends)
            out["failures"] += failures
            with f_cpu:
                result = floor.run(per_round, args.window)
            assert result is not None, "the floor lost an ACK"
            out["f_rate"].append(result[0])
            out["f_lat"] += result[1]
        for proc in spies:
            if proc is not None:
                proc.wait(120)
        for _ in range(args.rounds):
            with g_rt_cpu:
                out["g_rt"] += gilmsg_round_trips(cfg, names, rt_round)
            with f_rt_cpu:
                out["f_rt"] += floor_round_trips(floor, rt_round)
        pipelined, trips = per_round * args.rounds, rt_round * args.rounds
        for key, split, per in (("g_cpu", g_cpu, pipelined), ("f_cpu", f_cpu, pipelined),
                                ("g_rt_cpu", g_rt_cpu, trips), ("f_rt_cpu", f_rt_cpu, trips)):
            out[key] = (split.own / per, split.peers / per)  # CPU s per message
    finally:
        floor.close()
        for echo in floor.echoes:
            echo.stop()
    return out


def report(r: dict[str, Any]) -> str:
    g, f = statistics.median(r["g_rate"]), statistics.median(r["f_rate"])
    gl, fl = [v * 1000 for v in r["g_lat"]], [v * 1000 for v in r["f_lat"]]
    gr, fr = [v * 1000 for v in r["g_rt"]], [v * 1000 for v in r["f_rt"]]
    return (f"N={r['n']:3d} pipelined  gilmsg {g:7.0f} msg/s  floor {f:7.0f} msg/s  "
            f"ratio {g / f:5.2f}x   copies/msg {statistics.mean(r['sends']):.3f}  "
            f"failures {r['failures']}\n"
            f"      latency    gilmsg p50 {pct(gl, .5):7.2f} p99 {pct(gl, .99):7.2f} ms   "
            f"floor p50 {pct(fl, .5):7.2f} p99 {pct(fl, .99):7.2f} ms   "
            f"p50 ratio {pct(gl, .5) / pct(fl, .5):5.2f}x\n"
            f"      round trip gilmsg p50 {pct(gr, .5):7.3f} p99 {pct(gr, .99):7.3f} ms   "
            f"floor p50 {pct(fr, .5):7.3f} p99 {pct(fr, .99):7.3f} ms   "
            f"p50 ratio {pct(gr, .5) / pct(fr, .5):5.2f}x\n"
            f"      CPU ms/msg pipelined: publisher gilmsg {r['g_cpu'][0] * 1e3:.3f} floor "
            f"{r['f_cpu'][0] * 1e3:.3f}, recipients gilmsg {r['g_cpu'][1] * 1e3:.3f} floor "
            f"{r['f_cpu'][1] * 1e3:.3f}; round trip: publisher gilmsg "
            f"{r['g_rt_cpu'][0] * 1e3:.3f} floor {r['f_rt_cpu'][0] * 1e3:.3f}, recipients "
            f"gilmsg {r['g_rt_cpu'][1] * 1e3:.3f} floor {r['f_rt_cpu'][1] * 1e3:.3f}")


def draw(results: list[dict[str, Any]], path: Path) -> None:
    """Round trip p50 and pipelined msg/s against N, gilmsg beside the floor (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=90)
    left.plot(ns, [pct(r["g_rt"], .5) * 1000 for r in results], "o-", label="gilmsg")
    left.plot(ns, [pct(r["f_rt"], .5) * 1000 for r in results], "s--", label="floor")
    left.set_ylabel("round trip p50, ms")
    right.plot(ns, [statistics.median(r["g_rate"]) for r in results], "o-", label="gilmsg")
    right.plot(ns, [statistics.median(r["f_rate"]) for r in results], "s--", label="floor")
    right.set_ylabel("pipelined acknowledged msg/s")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("recipients")
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("gilmsg beside the bare protocol (pyzmq, same RSA), loopback, 2 cores",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, pil_kwargs={"optimize": True})
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--curve", default="3", help="comma-separated recipient counts")
    parser.add_argument("--n", type=int, default=1200,
                        help="pipelined messages per side at N=1 (divided by N)")
    parser.add_argument("--min-n", type=int, default=60, help="at least this many, any N")
    parser.add_argument("--rt", type=int, default=150, help="round trips per side at N<=3")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-acks", action="store_true", help="gilmsg-tail --batch-acks")
    parser.add_argument("--ack-endpoints", action="store_true",
                        help="every service sends its ACKs on gilmsg.ack_endpoints")
    parser.add_argument("--own-topic", action="store_true",
                        help="recipients subscribe to the bench topic only (not the whole bus)")
    parser.add_argument("--png", type=Path, help="draw the curve here")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--profile", type=Path, help="py-spy raw profiles into this directory")
    parser.add_argument("--tag", default="run", help="profile file name tag")
    args = parser.parse_args()
    counts = [int(c) for c in args.curve.split(",")]
    names = [f"r{i}" for i in range(1, max(counts) + 1)]
    results = []
    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-scale-") as tmp, DevBus(
            Path(tmp), ["pub", "floor", *names], ack_endpoints=args.ack_endpoints) as bus:
        script = Path(tmp) / "echo.py"
        script.write_text(ECHO)
        tails: dict[str, Any] = {}
        print(f"{os.cpu_count()} CPUs; window {args.window}; recipients "
              f"{'--batch-acks' if args.batch_acks else 'single ACKs'}, "
              f"{'own topic' if args.own_topic else 'whole bus'}"
              f"{', gilmsg.ack_endpoints' if args.ack_endpoints else ''}", flush=True)
        try:
            for count in counts:
                results.append(measure(bus, count, args, script, tails))
                print(report(results[-1]), flush=True)
        finally:
            for tail in tails.values():
                tail.stop()
    if args.json:
        args.json.write_text(json.dumps(results))
    if args.png:
        draw(results, args.png)
        print(f"curve: {args.png}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    sys.exit(main())
