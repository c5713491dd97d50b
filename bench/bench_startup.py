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

Usage: .venv/bin/python bench/bench_startup.py [--n 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gilmsg.testing import DevBus  # noqa: E402

BIN = Path(sys.executable).parent

#: The child of the "first acknowledged publish" figure: argv[1] is its fedmsg name.
FIRST_PUBLISH = r"""
import sys, time
import gilmsg
report = gilmsg.publish(topic="cold", msg={"n": 1}, recipients=["r1"], ack_timeout=10,
                        name=sys.argv[1])
print(repr(time.time()), report.sends, flush=True)
"""


def run_once(argv: Sequence[str], cwd: Path | None = None) -> float:
    """Wall seconds of one whole process, spawn to exit; fails loudly if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=60, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()}")
    return elapsed


def sample(n: int, once: Callable[[int], float]) -> list[float]:
    """``n`` measurements (after one unmeasured warm-up run, which fills the page cache)."""
    once(-1)
    return [once(i) for i in range(n)]


def line(label: str, seconds: list[float], base: float | None = None) -> str:
    """One result line: median, min, max in ms, and the median's excess over ``base``."""
    ms = [s * 1e3 for s in seconds]
    med = statistics.median(ms)
    extra = "" if base is None else f"   (+{med - base * 1e3:6.1f} ms over bare python)"
    return (f"{label:<44} median {med:7.1f} ms   min {min(ms):7.1f}   max {max(ms):7.1f}"
            f"   n={len(ms)}{extra}")


def first_publish(n: int) -> tuple[list[float], list[int]]:
    """Fresh process to its first acknowledged publish, ``n`` times, one gilmsg-tail running."""
    names = [f"cold{i}" for i in range(n + 1)]
    times: list[float] = []
    sends: list[int] = []
    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-") as tmp:
        with DevBus(tmp, ["r1", *names]) as bus:
            tail = bus.spawn_tail("r1")
            # Wait until the tail really acknowledges: publish once from this process.
            import gilmsg

            gilmsg.publish(topic="warmup", msg={}, recipients=["r1"], ack_timeout=20,
                           **bus.config_for(names[0]))
            tail.next_line()
            for i, name in enumerate(names[1:]):
                start = time.time()
                proc = subprocess.run([sys.executable, "-c", FIRST_PUBLISH, name], cwd=bus.root,
                                      capture_output=True, text=True, timeout=60, check=False)
                if proc.returncode != 0:
                    raise SystemExit(f"first publish {i} failed: {proc.stderr}")
                done, resent = proc.stdout.split()
                times.append(float(done) - start)
                sends.append(int(resent))
                tail.next_line()
    return times, sends


def main() -> None:
    """Run every measurement and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=15, help="runs per figure (at least 10)")
    args = parser.parse_args()
    n = max(args.n, 10)
    py = sys.executable

    bare = sample(n, lambda _i: run_once([py, "-c", "pass"]))
    base = statistics.median(bare)
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
