"""How fast a fedmsg-hub running a GilmsgConsumer notices a publisher that stopped answering.

    .venv/bin/python bench/bench_hub_sockets.py [--rounds 5] [--heartbeat-ivl 1]
                                                [--heartbeat-timeout 3]

A real ``fedmsg-hub`` (the example consumer) and a real ``gilmsg-logger`` on 127.0.0.1. Each
round: one acknowledged publish, then SIGSTOP to the logger (its TCP connection stays up: the
kernel answers for it), and the time until the hub logs ``hub connection to ... lost`` (only
ZeroMQ heartbeats can tell); then SIGCONT and the time until it logs ``hub connected to ...``
again. Without heartbeats (``--heartbeat-ivl 0``) the first wait ends at its bound (60 s,
printed as inf).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from gilmsg.testing import DevBus  # noqa: E402

BOUND = 60.0


def main() -> None:
    """Run the rounds; print each and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--heartbeat-ivl", type=float, default=1.0)
    parser.add_argument("--heartbeat-timeout", type=float, default=3.0)
    args = parser.parse_args()
    exe = Path(sys.executable).parent
    lost, back = [], []
    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-hub-") as tmp, \
            DevBus(tmp, ["pub", "hub"]) as bus:
        endpoint = bus.config["endpoints"]["pub"][0]
        hub = bus.spawn_hub("hub", consumers=["gilmsg_example.consumers:ExampleConsumer"],
                            pythonpath=[REPO / "examples" / "gilmsg_example"], **{
                                "gilmsg_example": True,
                                "gilmsg.heartbeat_ivl": args.heartbeat_ivl,
                                "gilmsg.heartbeat_timeout": args.heartbeat_timeout})
        logger = bus.spawn([str(exe / "gilmsg-logger"), "--config-filename",
                            str(bus.config_file), "--name", "pub", "--recipients", "hub",
                            "--ack-timeout", "30", "--json-report"], stdin=subprocess.PIPE)
        for i in range(args.rounds):
            logger.proc.stdin.write(f"round {i}\n")
            logger.proc.stdin.flush()
            report = json.loads(logger.next_line(60.0))
            assert report["status"] == "delivered", report
            t0 = time.monotonic()
            logger.proc.send_signal(signal.SIGSTOP)
            try:
                hub.wait_for(lambda line: f"hub connection to {endpoint} lost" in line, BOUND)
                lost.append(time.monotonic() - t0)
            except AssertionError:
                lost.append(float("inf"))
            t1 = time.monotonic()
            logger.proc.send_signal(signal.SIGCONT)
            if lost[-1] != float("inf"):  # else the session never went
                hub.wait_for(lambda line: f"hub connected to {endpoint}" in line, BOUND)
            back.append(time.monotonic() - t1)
            print(f"round {i}: stop noticed after {lost[-1]:.2f} s, session back "
                  f"{back[-1]:.2f} s after SIGCONT", flush=True)
    print(f"heartbeat_ivl {args.heartbeat_ivl:g} s, heartbeat_timeout "
          f"{args.heartbeat_timeout:g} s: stop noticed median {statistics.median(lost):.2f} s, "
          f"max {max(lost):.2f} s; back median {statistics.median(back):.2f} s, max "
          f"{max(back):.2f} s")


if __name__ == "__main__":
    main()
