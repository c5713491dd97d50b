"""Round trip of an acknowledged publish: a fedmsg-hub GilmsgConsumer vs a gilmsg-tail recipient.

    .venv/bin/python bench/bench_hub.py [--n 500] [--warmup 50] [--workers 1] [--no-validate]

One run, one bus on 127.0.0.1: a real ``fedmsg-hub`` running the example consumer
(``examples/gilmsg_example``, no output file) acknowledging as ``hub``, and a real
``gilmsg-tail`` acknowledging as ``tail``. Publishes alternate between the two, one at a time,
so both see the same machine load. A round trip is the wall time of ``gilmsg.publish(...,
recipients=[X])``: sign, send, the recipient validates and signs its ACK, the publisher
validates the ACK.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

import gilmsg  # noqa: E402
from gilmsg.testing import DevBus  # noqa: E402


def summary(label: str, seconds: list[float], sends: list[int]) -> str:
    """One result line: p50/p99/mean/max in ms and how many publishes needed a re-send."""
    ms = sorted(s * 1e3 for s in seconds)
    p50 = ms[len(ms) // 2]
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    resent = sum(1 for s in sends if s > 1)
    return (
        f"{label:<28} n={len(ms):<5} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  "
        f"mean {statistics.fmean(ms):7.3f} ms  max {ms[-1]:7.3f} ms  re-sent {resent}"
    )


def main() -> int:
    """Run the benchmark; prints its lines and returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500, help="measured publishes per recipient")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured publishes first")
    parser.add_argument("--workers", type=int, default=1, help="moksha.workers_per_consumer")
    parser.add_argument("--no-validate", action="store_true",
                        help="validate_signatures=False for the receivers (ACKs still signed)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-hub-") as tmp:
        extra = {"validate_signatures": False} if args.no_validate else None
        bus = DevBus(tmp, ["pub", "hub", "tail"], extra=extra)
        try:
            bus.spawn_tail("tail")
            bus.spawn_hub(
                "hub",
                consumers=["gilmsg_example.consumers:ExampleConsumer"],
                pythonpath=[REPO / "examples" / "gilmsg_example"],
                **{"gilmsg_example": True, "moksha.workers_per_consumer": args.workers},
            )
            cfg = bus.config_for("pub")
            times: dict[str, list[float]] = {"hub": [], "tail": []}
            sends: dict[str, list[int]] = {"hub": [], "tail": []}
            for i in range(args.warmup + args.n):
                for who in ("hub", "tail"):
                    t = time.perf_counter()
                    report = gilmsg.publish(topic="bench", msg={"i": i}, modname="bench",
                                            recipients=[who], ack_timeout=10, **cfg)
                    elapsed = time.perf_counter() - t
                    if i >= args.warmup:
                        times[who].append(elapsed)
                        sends[who].append(report.sends)
        finally:
            bus.close()

    print(f"round trip of gilmsg.publish(recipients=[X]), {os.cpu_count()} CPUs, "
          f"validate_signatures={not args.no_validate}, hub workers={args.workers}")
    print(summary("fedmsg-hub GilmsgConsumer", times["hub"], sends["hub"]))
    print(summary("gilmsg-tail", times["tail"], sends["tail"]))
    return 0


if __name__ == "__main__":
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C: the DevBus stops its processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    sys.exit(main())
