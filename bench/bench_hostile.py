"""Hostile bus input against a real publisher: an ACK flood, and one oversize frame.

    .venv/bin/python bench/bench_hostile.py [--big 300] [--small 3000]

1. ACK flood: while this process waits for ``r1``'s ACK of one publish, a raw socket bound at
   another service's endpoint sends ``--big`` ACKs for that msg_id with distinct ~700 KiB
   ``certificate`` fields, then ``--small`` with distinct 15 KiB ones, then a genuine ACK signed
   by r1, every 0.5 s (so the publish returns once the flood was processed). Prints this
   process's RSS growth after the publish returned and the garbage collector ran.
2. Oversize frame: r1 (a real gilmsg-tail) acknowledges a publish and stops; a process binds its
   endpoint and sends one 1.1 MiB frame on the ACK topic; r1 starts again. Prints the outcome
   of the next publish to r1 (ack_timeout 10 s): a report and its time, or Timeout.

To compare with an older gilmsg, run a copy of this script placed in that tree with
``PYTHONPATH`` pointing at it (the gilmsg-tail children then run that tree's code too).
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

import zmq  # noqa: E402

import gilmsg  # noqa: E402
from gilmsg import config as gconfig  # noqa: E402
from gilmsg.core import wire  # noqa: E402
from gilmsg.crypto import signing  # noqa: E402
from gilmsg.testing import DevBus  # noqa: E402


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def flood(root: Path, big: int, small: int) -> None:
    """Part 1: RSS growth of a publisher receiving ``big`` + ``small`` hostile ACKs."""
    with DevBus(root, ["pub", "r1", "mallory"]) as bus:
        ack_topic = gconfig.ack_topic(bus.config)
        ctx = zmq.Context()
        xpub = ctx.socket(zmq.XPUB)
        xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        xpub.setsockopt(zmq.SNDHWM, 0)
        xpub.bind(bus.config["endpoints"]["mallory"][0])
        r1 = signing.Signer(str(bus.ssldir / "r1.key"), str(bus.ssldir / "r1.crt"))
        # Warm up: one publish so that imports, the link and the first certificates are in.
        seen = threading.Event()
        out: dict = {}

        def publish(timeout: float) -> None:
            def hook(envelope: dict) -> None:
                out["envelope"] = envelope
                seen.set()
            try:
                out["report"] = gilmsg.publish(topic="t", msg={}, modname="bench",
                                               recipients=["r1"], ack_timeout=timeout,
                                               pre_fire_hook=hook, **bus.config_for("pub"))
            except gilmsg.Timeout as exc:
                out["timeout"] = exc

        publish(0.2)
        gc.collect()
        before_rss = rss()
        seen.clear()
        thread = threading.Thread(target=publish, args=(120.0,), daemon=True)
        thread.start()
        seen.wait(20)
        xpub.setsockopt(zmq.RCVTIMEO, 20000)
        while xpub.recv() != b"\x01" + ack_topic.encode():
            pass
        body = wire.ack_body(out["envelope"])
        started = time.monotonic()
        for i in range(big + small):
            size = 525 * 1024 if i < big else 11 * 1024  # base64: ~700 KiB / ~15 KiB
            forged = {"topic": ack_topic, "msg": body, "msg_id": f"2026-flood-{i}", "i": i,
                      "timestamp": 0, "username": "mallory", "crypto": "x509",
                      "signature": "AAAA\n",
                      "certificate": base64.encodebytes(os.urandom(size)).decode("ascii")}
            xpub.send_multipart(wire.encode(ack_topic, forged))
        # The genuine ACK, again until it counts: a listener that cuts oversize frames off
        # reconnects, and what was sent meanwhile is lost.
        genuine = wire.encode(ack_topic, r1.sign(wire.new_envelope(ack_topic, body, 1)))
        deadline = time.monotonic() + 60
        while thread.is_alive() and time.monotonic() < deadline:
            xpub.send_multipart(genuine)
            thread.join(0.5)
        elapsed = time.monotonic() - started
        gc.collect()
        grown = rss() - before_rss
        xpub.close(0)
        ctx.term()
        result = "report" if "report" in out else "Timeout"
        print(f"ACK flood: {big} x 700 KiB + {small} x 15 KiB certificate fields -> {result} "
              f"after {elapsed:.1f} s; publisher RSS grew {grown / 2**20:.1f} MiB and kept it",
              flush=True)


def oversize(root: Path) -> None:
    """Part 2: the restarted recipient after an impostor's 1.1 MiB frame."""
    impostor = (
        "import sys, zmq\n"
        "ctx = zmq.Context(); p = ctx.socket(zmq.XPUB); p.setsockopt(zmq.XPUB_VERBOSE, 1)\n"
        "p.bind(sys.argv[1]); p.setsockopt(zmq.RCVTIMEO, 20000)\n"
        "while p.recv() != b'\\x01' + sys.argv[2].encode(): pass\n"
        "p.send_multipart([sys.argv[2].encode(), b'x' * (1100 * 1024)])\n"
        "p.close(linger=5000); ctx.term()\n")
    with DevBus(root, ["pub", "r1"]) as bus:
        cfg = bus.config_for("pub")
        bus.spawn_tail("r1")
        gilmsg.publish(topic="t", msg={}, modname="bench", recipients=["r1"], ack_timeout=30,
                       **cfg)
        bus.close()
        subprocess.run([sys.executable, "-c", impostor, bus.config["endpoints"]["r1"][0],
                        gconfig.ack_topic(bus.config)], check=True, timeout=30)
        bus.spawn_tail("r1")
        started = time.monotonic()
        try:
            report = gilmsg.publish(topic="t", msg={}, modname="bench", recipients=["r1"],
                                    ack_timeout=10, **cfg)
            print(f"oversize frame, then r1 restarted: report after "
                  f"{(time.monotonic() - started) * 1000:.0f} ms (sends {report.sends})",
                  flush=True)
        except gilmsg.Timeout:
            print(f"oversize frame, then r1 restarted: Timeout after "
                  f"{time.monotonic() - started:.1f} s", flush=True)


def main() -> None:
    """Run both parts once."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big", type=int, default=300)
    parser.add_argument("--small", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-hostile-") as tmp:
        flood(Path(tmp) / "flood", args.big, args.small)
        oversize(Path(tmp) / "oversize")


if __name__ == "__main__":
    main()
