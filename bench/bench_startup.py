"""Benchmark (not a test): how long a fresh gilmsg process takes to start, whole processes only.

Prints the median (and min/max) wall time of N fresh processes, each started from scratch, for:

- ``python -c pass``: the bare interpreter, the floor everything else stands on;
- ``python -c "import gilmsg"`` and the difference to the bare interpreter;
- ``gilmsg-logger --help`` beside ``fedmsg-logger --help``;
- a fresh process from its start to its first acknowledged publish, with one recipient (a real
  ``gilmsg-tail``) already running: ``import gilmsg; gilmsg.publish(..., recipients=["r1"])``,
  configuration read from ``./fedmsg.d`` as an application would. The time runs from just before
  the process is spawned until the publish has returned its Report (measured in the child with
  the same wall clock), so process exit is not counted.

Measured processes use byte-code caches as an installed package has them (compiled by the
unmeasured warm-up run into a temporary ``PYTHONPYCACHEPREFIX``, whatever
``PYTHONDONTWRITEBYTECODE`` says), so source compilation is not counted.

Each line also gives the median CPU time (user + system) of those processes: on a machine shared
with other work, wall times swing with the load, CPU times much less.

Usage: .venv/bin/python bench/bench_startup.py [--n 15] [--tree DIR]

``--tree DIR`` measures the gilmsg package found in DIR instead (put first on ``PYTHONPATH`` of
every measured process), e.g. an older commit from ``git worktree add`` or ``git archive``: run
both one after the other to compare them under the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from gilmsg.testing import DevBus  # noqa: E402

BIN = Path(sys.executable).parent
#: Environment of every measured process (``--tree`` sets PYTHONPATH).
ENV = dict(os.environ)
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
ENV["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="gilmsg-bench-pycache-")

#: The child of the "first acknowledged publish" figure: argv[1] is its fedmsg name.
FIRST_PUBLISH = r"""
import sys, time
import gilmsg
report = gilmsg.publish(topic="cold", msg={"n": 1}, recipients=["r1"], ack_timeout=10,
                        name=sys.argv[1])
print(repr(time.time()), report.sends, flush=True)
"""


def children_cpu() -> float:
    """CPU seconds (user + system) of every child process reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv: Sequence[str], cwd: str = tempfile.gettempdir()) -> tuple[float, float]:
    """Wall and CPU seconds of one whole process, spawn to exit; fails loudly if it fails.

    It runs in ``cwd`` (not this checkout, which ``python -c`` would put first on its path).
    """
    cpu = children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=60, check=False, env=ENV)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()}")
    return elapsed, children_cpu() - cpu


def sample(n: int, once: Callable[[int], tuple[float, float]]) -> list[tuple[float, float]]:
    """``n`` measurements (after one unmeasured warm-up run, which fills the page cache)."""
    once(-1)
    return [once(i) for i in range(n)]


def line(label: str, runs: list[tuple[float, float]],
         base: list[tuple[float, float]] | None = None) -> str:
    """One result line: wall median, min, max in ms, the median's excess over ``base``, and
    the CPU median (and its excess)."""
    ms = [wall * 1e3 for wall, _ in runs]
    cpu = statistics.median(c * 1e3 for _, c in runs)
    med = statistics.median(ms)
    extra = ""
    if base is not None:
        base_wall = statistics.median(w * 1e3 for w, _ in base)
        base_cpu = statistics.median(c * 1e3 for _, c in base)
        extra = f"   (+{med - base_wall:6.1f} over bare python; CPU +{cpu - base_cpu:6.1f})"
    return (f"{label:<44} median {med:7.1f} ms   min {min(ms):7.1f}   max {max(ms):7.1f}"
            f"   CPU {cpu:6.1f} ms   n={len(ms)}{extra}")


def first_publish(n: int) -> tuple[list[tuple[float, float]], list[int]]:
    """Fresh process to its first acknowledged publish, ``n`` times, one gilmsg-tail running.

    CPU time is the whole child's, exit included (it cannot be split at the Report).
    """
    names = [f"cold{i}" for i in range(n + 2)]
    times: list[tuple[float, float]] = []
    sends: list[int] = []
    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-") as tmp:
        with DevBus(tmp, ["r1", *names]) as bus:
            tail = bus.spawn_tail("r1")
            # Wait until the tail really acknowledges: publish once from this process.
            import gilmsg

            gilmsg.publish(topic="warmup", msg={}, recipients=["r1"], ack_timeout=20,
                           **bus.config_for(names[0]))
            tail.next_line()
            for i, name in enumerate(names[1:], start=-1):  # the first one warms up, unmeasured
                cpu = children_cpu()
                start = time.time()
                proc = subprocess.run([sys.executable, "-c", FIRST_PUBLISH, name], cwd=bus.root,
                                      capture_output=True, text=True, timeout=60, check=False,
                                      env=ENV)
                if proc.returncode != 0:
                    raise SystemExit(f"first publish {i} failed: {proc.stderr}")
                done, resent = proc.stdout.split()
                tail.next_line()
                if i < 0:
                    continue
                times.append((float(done) - start, children_cpu() - cpu))
                sends.append(int(resent))
    return times, sends


def main() -> None:
    """Run every measurement and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=15, help="runs per figure (at least 10)")
    parser.add_argument("--tree", type=Path, default=None,
                        help="measure the gilmsg package in this directory instead")
    args = parser.parse_args()
    if args.tree is not None:
        ENV["PYTHONPATH"] = str(args.tree.resolve())
        print(f"measuring gilmsg from {args.tree}")
    n = max(args.n, 10)
    py = sys.executable

    bare = sample(n, lambda _i: run_once([py, "-c", "pass"]))
    base = bare
    print(line("python -c pass", bare))
    print(line('python -c "import gilmsg"',
               sample(n, lambda _i: run_once([py, "-c", "import gilmsg"])), base))
    print(line("gilmsg-logger --help",
               sample(n, lambda _i: run_once([str(BIN / "gilmsg-logger"), "--help"])), base))
    print(line("fedmsg-logger --help",
               sample(n, lambda _i: run_once([str(BIN / "fedmsg-logger"), "--help"])), base))
    times, sends = first_publish(n)
    print(line("fresh process -> first acknowledged publish", times, base))
    print(f"{'':<44} sends per first publish: {json.dumps(sorted(sends))}")


if __name__ == "__main__":
    main()
