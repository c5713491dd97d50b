"""Benchmark (not a test): CPU per round trip of gilmsg's publisher and one recipient.

A fixed workload for comparing commits on a shared machine: ``--n`` sequential
``gilmsg.publish`` calls to one ``gilmsg-tail`` recipient (whole bus, single ACKs), printing the
CPU seconds per round trip of the publisher (this process) and of the recipient. CPU time swings
far less with the machine's load than wall time does.

``--profile DIR`` writes cProfile stats, timed in CPU seconds of each thread
(``time.thread_time``), of the publisher's calling thread (``publisher.prof``), of its link
thread (``link.prof``, from its start) and of the recipient (``recipient.prof``, the whole
process); ``--top K`` prints the top entries of each.

Usage: .venv/bin/python bench/prof_roundtrip.py [--n 300] [--profile DIR] [--top 25]

Instructions (repeatable on a shared machine, unlike times), publisher only:
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=pub.cg \
  .venv/bin/python bench/prof_roundtrip.py --n 100 --callgrind   # then callgrind_annotate
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scale import cpu_of  # noqa: E402

import gilmsg  # noqa: E402
from gilmsg import link as glink  # noqa: E402
from gilmsg.testing import DevBus  # noqa: E402

RECIPIENT = """
import cProfile, sys, time
from gilmsg.commands.tail import main
out = sys.argv.pop(1)
profiler = cProfile.Profile(time.thread_time)
profiler.enable()
try:
    main()
except SystemExit:
    pass
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


class Snapshot:
    """What ``pstats.Stats`` reads from a profiler, taken while it still runs (in another
    thread: disabling it from here would not stop it there)."""

    def __init__(self, profiler: cProfile.Profile) -> None:
        profiler.snapshot_stats()
        self.stats = profiler.stats  # type: ignore[attr-defined]

    def create_stats(self) -> None:
        pass


def profile_link_threads() -> cProfile.Profile:
    """Profile (CPU time) every link thread started from now on, from its start."""
    profiler = cProfile.Profile(time.thread_time)
    run = glink.Link._run

    def profiled(self: glink.Link, ready: object) -> None:
        profiler.enable()
        run(self, ready)  # type: ignore[arg-type]

    glink.Link._run = profiled  # type: ignore[method-assign]
    return profiler


def task_cpu() -> dict[int, float]:
    """CPU seconds so far of each thread of this process, by native thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(stat[11]) + int(stat[12])) / ticks
    return out


def split(before: dict[int, float], after: dict[int, float], n: int) -> str:
    """Per round trip CPU ms of the calling thread, the link threads and the rest (libzmq)."""
    links = {link._thread.native_id for link in glink._links.values()}
    parts = {"caller": 0.0, "link": 0.0, "other": 0.0}
    for tid, cpu in after.items():
        kind = ("caller" if tid == threading.main_thread().native_id
                else "link" if tid in links else "other")
        parts[kind] += cpu - before.get(tid, 0.0)
    return "  ".join(f"{k} {v / n * 1000:.3f}" for k, v in parts.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--callgrind", action="store_true",
                        help="this process runs under valgrind --tool=callgrind "
                             "--instr-atstart=no: instrument the measured loop only")
    parser.add_argument("--callgrind-recipient", type=Path, metavar="OUT",
                        help="run the recipient under callgrind too (its measured loop only), "
                             "writing OUT")
    args = parser.parse_args()
    link_profiler = profile_link_threads() if args.profile else None
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    with tempfile.TemporaryDirectory(prefix="gilmsg-prof-rt-") as tmp, DevBus(
            Path(tmp), ["pub", "r1"]) as bus:
        argv = [str(Path(sys.executable).parent / "gilmsg-tail"), "--config-filename",
                str(bus.config_file), "--name", "r1"]
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-c", RECIPIENT,
                    str(args.profile.resolve() / "recipient.prof"), *argv[1:]]
        if args.callgrind_recipient:
            argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                    f"--callgrind-out-file={args.callgrind_recipient.resolve()}", *argv]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=bus.root)
        instrumented = [os.getpid()] if args.callgrind else []
        if args.callgrind_recipient:
            instrumented.append(proc.pid)
        try:
            cfg = bus.config_for("pub")
            for _ in range(20):  # warm-up: subscriptions joined, caches filled
                gilmsg.publish(topic="rt", msg={}, modname="bench", recipients=["r1"],
                               ack_timeout=300, **cfg)
            tasks = task_cpu()
            own, peer, wall = time.process_time(), cpu_of([proc.pid]), time.monotonic()
            if profiler:
                profiler.enable()
            for pid in instrumented:
                subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True,
                               stdout=subprocess.DEVNULL)
            for i in range(args.n):
                gilmsg.publish(topic="rt", msg={"i": i}, modname="bench", recipients=["r1"],
                               ack_timeout=60, **cfg)
            if profiler:
                profiler.disable()
            for pid in instrumented:
                subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True,
                               stdout=subprocess.DEVNULL)
            own, peer = time.process_time() - own, cpu_of([proc.pid]) - peer
            wall = time.monotonic() - wall
            threads = split(tasks, task_cpu(), args.n)
            if link_profiler and args.profile:
                pstats.Stats(Snapshot(link_profiler)).dump_stats(  # type: ignore[arg-type]
                    str(args.profile / "link.prof"))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    print(f"n={args.n}  CPU ms per round trip: publisher {own / args.n * 1000:.3f}  "
          f"recipient {peer / args.n * 1000:.3f}  (wall {wall / args.n * 1000:.2f} ms)\n"
          f"publisher's threads, CPU ms per round trip: {threads}")
    if profiler and args.profile:
        profiler.dump_stats(str(args.profile / "publisher.prof"))
        for name in ("publisher", "link", "recipient"):
            path = args.profile / f"{name}.prof"
            if path.exists():
                print(f"--- {name} (tottime, CPU seconds)")
                pstats.Stats(str(path)).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
