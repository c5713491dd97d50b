"""Benchmark (not a test): acknowledged messages per second, sequential versus in flight.

In one run on this machine, signatures on (messages signed and validated, ACKs signed and
validated), 3 recipients (``gilmsg-tail --batch-acks`` processes, output
discarded):

- sequential: ``gilmsg.publish`` one message at a time;
- in flight: ``gilmsg.publish_async`` with up to ``--window`` deliveries awaiting their ACKs;
  p50/p99 latency (publish_async call -> Report) under that load;
- the per-message floor: a bare pyzmq loop that, per message, signs one ACK, sends it over a
  PUB/SUB pair on 127.0.0.1 and verifies it (what a design with one signed ACK per message
  and per recipient cannot beat on this CPU; batched ACKs are how gilmsg goes beyond it);
- ``processed`` versus ``received``: the round trip of ``publish(recipients=["hub"])`` through
  a real ``fedmsg-hub`` whose consumer acknowledges after processing, with
  ``require="processed"`` and ``require="received"``.

Usage: .venv/bin/python bench/bench_inflight.py [--n 3000] [--window 1000] [--seq 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

import gilmsg
from gilmsg.core import wire
from gilmsg.crypto import signing
from gilmsg.testing import DevBus, free_port

sys.path.insert(0, str(Path(__file__).parent))
from bench_protocol import Stopper  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RECIPIENTS = ["r1", "r2", "r3"]


def quiet_tail(bus: DevBus, name: str) -> None:
    exe = str(Path(sys.executable).parent / "gilmsg-tail")
    proc = subprocess.Popen([exe, "--config-filename", str(bus.config_file), "--name", name,
                             "--topic", "org.gilmsg.test.bench", "--batch-acks"],
                            stdout=subprocess.DEVNULL, cwd=bus.root)
    bus.processes.append(Stopper(proc))  # type: ignore[arg-type]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def sequential(cfg: dict, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        gilmsg.publish(topic="seq", msg={"i": i}, modname="bench", recipients=RECIPIENTS,
                       ack_timeout=30, **cfg)
    return n / (time.perf_counter() - start)


def in_flight(cfg: dict, n: int, window: int) -> tuple[float, list[float], int, float]:
    """msg/s, latencies (s), failures, mean sends per message."""
    slots = threading.BoundedSemaphore(window)
    latencies: list[float] = []
    failures = [0]
    sends: list[int] = []
    lock = threading.Lock()
    done = threading.Event()
    remaining = [n]

    def finished(t0: float):
        def callback(future) -> None:
            elapsed = time.perf_counter() - t0
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

    start = time.perf_counter()
    for i in range(n):
        slots.acquire()
        t0 = time.perf_counter()
        pending = gilmsg.publish_async(topic="flight", msg={"i": i}, modname="bench",
                                       recipients=RECIPIENTS, ack_timeout=60, **cfg)
        pending.future.add_done_callback(finished(t0))
    done.wait(300)
    rate = n / (time.perf_counter() - start)
    return rate, latencies, failures[0], statistics.mean(sends) if sends else 0.0


def bare_floor(bus: DevBus, n: int) -> float:
    """Per message: sign one ACK, send it PUB -> SUB on 127.0.0.1, receive and verify it."""
    signer = signing.signer_for(bus.config_for("r1"))
    validator = signing.validator_for(bus.config_for("pub"))
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    address = f"tcp://127.0.0.1:{free_port()}"
    pub.bind(address)
    sub.connect(address)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    original = wire.new_envelope("org.gilmsg.test.bench.x", {}, 1, RECIPIENTS)
    while True:  # until the subscription is in place
        pub.send_multipart([b"x", b"{}"])
        if sub.poll(50):
            sub.recv_multipart()
            break
    start = time.perf_counter()
    for i in range(n):
        ack = wire.new_envelope("org.gilmsg.test.gilmsg.ack",
                                   wire.ack_body({**original, "msg_id": f"m{i}"}), i)
        pub.send_multipart(wire.encode(ack["topic"], signer.sign(ack)))
        _topic, envelope = wire.decode(sub.recv_multipart())  # type: ignore[misc]
        assert validator.validate(envelope).ok
    rate = n / (time.perf_counter() - start)
    pub.close(0)
    sub.close(0)
    ctx.term()
    return rate


def hub_round_trips(n: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-inflight-hub-") as tmp:
        bus = DevBus(tmp, ["pub", "hub"])
        try:
            bus.spawn_hub("hub", consumers=["gilmsg_example.consumers:ExampleConsumer"],
                          pythonpath=[REPO / "examples" / "gilmsg_example"],
                          **{"gilmsg_example": True,
                             "gilmsg_example.gilmsg_ack_mode": "processed"})
            cfg = bus.config_for("pub")
            times: dict[str, list[float]] = {"received": [], "processed": []}
            for i in range(n + 30):
                for require in ("received", "processed"):
                    t = time.perf_counter()
                    gilmsg.publish(topic="hub", msg={"i": i}, modname="bench",
                                   recipients=["hub"], ack_timeout=30, require=require, **cfg)
                    if i >= 30:
                        times[require].append(time.perf_counter() - t)
            return times["received"], times["processed"]
        finally:
            bus.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="in-flight publishes")
    parser.add_argument("--window", type=int, default=1000, help="most awaiting ACKs at once")
    parser.add_argument("--seq", type=int, default=300, help="sequential publishes")
    parser.add_argument("--hub", type=int, default=200, help="hub round trips per level")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-inflight-") as tmp:
        bus = DevBus(tmp, ["pub", *RECIPIENTS])
        try:
            for name in RECIPIENTS:
                quiet_tail(bus, name)
            cfg = bus.config_for("pub")
            gilmsg.publish(topic="warm", msg={}, modname="bench", recipients=RECIPIENTS,
                           ack_timeout=30, **cfg)
            seq = sequential(cfg, args.seq)
            flight, latencies, failures, mean_sends = in_flight(cfg, args.n, args.window)
            floor = bare_floor(bus, args.n)
        finally:
            bus.close()
    received, processed = hub_round_trips(args.hub)

    ms = [v * 1000 for v in latencies]
    print(f"{os.cpu_count()} CPUs, 3 recipients (gilmsg-tail), signatures on")
    print(f"sequential publish           {seq:8.0f} acknowledged msg/s   (n={args.seq})")
    print(f"in flight (window {args.window:5d})     {flight:8.0f} acknowledged msg/s   "
          f"(n={args.n}, failures={failures}, {mean_sends:.2f} sends/message)")
    print(f"   latency under that load   p50 {pct(ms, 0.5):7.1f} ms   p99 {pct(ms, 0.99):7.1f} ms")
    print(f"bare pyzmq sign+verify floor {floor:8.0f} msg/s (one signed ACK per message)")
    print(f"in flight / floor            {flight / floor:8.2f}x")
    r50, p50 = statistics.median(received), statistics.median(processed)
    print(f"hub round trip received      p50 {r50 * 1000:7.3f} ms   p99 "
          f"{pct(received, 0.99) * 1000:7.3f} ms")
    print(f"hub round trip processed     p50 {p50 * 1000:7.3f} ms   p99 "
          f"{pct(processed, 0.99) * 1000:7.3f} ms   ({p50 / r50:.2f}x received)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
