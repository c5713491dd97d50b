"""Benchmark (not a test): what the durable outbox costs, SQLite and PostgreSQL side by side.

Prints, on loopback with signatures on, for each backend (SQLite: WAL, ``synchronous=FULL``, an
fsync per commit; PostgreSQL: a throw-away server of Debian's package on 127.0.0.1, ``fsync=on``,
``synchronous_commit=on``, one connection over TCP):

- durable messages **stored** per second, one commit per message and grouped commits (100 per
  commit), for the store alone (already signed frames) and for whole durable publishes (sign,
  store, send: ``Outbox.publish_many``);
- the same with ``durability="normal"`` (SQLite ``synchronous=NORMAL``; PostgreSQL
  ``synchronous_commit=off``);
- the acknowledged round trip with 1 recipient (a real ``gilmsg-tail`` process): the plain
  ``gilmsg.publish`` and the durable publish into each backend (``Outbox.publish_async(...)
  .result()``, which is ``Outbox.publish``) interleaved in one loop so that all see the same
  machine load; the ACK record that follows in the link's thread is awaited outside the timed
  part. The added p50 is the difference of the medians. PostgreSQL also with
  ``durability="normal"`` (the commit does not wait for the server's WAL flush).

Usage: .venv/bin/python bench/bench_outbox.py [--n 300] [--dir DIR] [--no-postgresql]
(``--dir``: where the SQLite files go; default a temporary directory on the disk of /tmp.)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gilmsg
from gilmsg.core import wire
from gilmsg.outbox import Outbox
from gilmsg.outbox.store import open_store
from gilmsg.testing import DevBus


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def store_rate(location: str, frames: list[list[bytes]], group: int, durability: str) -> float:
    """Messages stored per second, ``group`` per commit."""
    store = open_store(location, durability=durability)
    items = [(f"m{i}-{group}-{durability}", "d" * 64, f, ["r1"]) for i, f in enumerate(frames)]
    t = time.perf_counter()
    for i in range(0, len(items), group):
        store.put(items[i:i + group], time.time(), 3 * 86400.0)
    elapsed = time.perf_counter() - t
    store.close()
    return len(items) / elapsed


def main() -> None:
    """Run every part of the benchmark and print its figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300, help="round trips per figure")
    parser.add_argument("--dir", default=None, help="directory for the outbox files")
    parser.add_argument("--no-postgresql", action="store_true", help="SQLite only")
    args = parser.parse_args()
    server = None
    if not args.no_postgresql:
        from gilmsg.testing import postgres as testing_postgres

        reason = testing_postgres.missing_reason()
        if reason:
            print(f"PostgreSQL left out: {reason}")
        else:
            server = testing_postgres.LocalPostgres(fsync=True)
            server.start()
    try:
        run(args, server)
    finally:
        if server is not None:
            server.cleanup()


def run(args: argparse.Namespace, server: object) -> None:
    """Every part of the benchmark, with ``server`` (a LocalPostgres) if there is one."""
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, DevBus(
        Path(tmp) / "bus", ["pub", "r1"]
    ) as bus:
        root = Path(tmp)
        names = iter(range(1000))
        locations = {"sqlite": lambda: str(root / f"o{next(names)}.db")}
        if server is not None:
            locations["postgresql"] = server.create_database  # type: ignore[attr-defined]
        cfg = bus.config_for("pub")
        exe = str(Path(sys.executable).parent / "gilmsg-tail")
        r1 = subprocess.Popen([exe, "--config-filename", str(bus.config_file), "--name", "r1"],
                              stdout=subprocess.DEVNULL, cwd=bus.root)
        try:
            warm = gilmsg.publish(topic="warm", msg={}, recipients=["r1"], ack_timeout=30, **cfg)
            print(f"recipient r1 reached (first publish {warm.elapsed:.2f}s)")

            from gilmsg.crypto import signing

            signer = signing.signer_for(cfg)
            frames = []
            for i in range(2000):
                env = signer.sign(wire.new_envelope("org.gilmsg.test.bench.x", {"i": i}, i,
                                                    ("r1",)))
                frames.append(wire.encode("org.gilmsg.test.bench.x", env))
            print(f"\n== durable messages stored per second (signed frames, "
                  f"{len(frames[0][1])} bytes each) ==")
            for backend, new in locations.items():
                for durability in ("full", "normal"):
                    one = store_rate(new(), frames[:500], 1, durability)
                    grouped = store_rate(new(), frames, 100, durability)
                    print(f"{backend:10s} store alone, durability={durability:6s}: commit per "
                          f"message {one:8.0f}/s   grouped (100 per commit) {grouped:8.0f}/s")

            outboxes = {backend: Outbox(new(), **cfg) for backend, new in locations.items()}
            if "postgresql" in locations:  # the server's flush left out of the round trip
                outboxes["postgresql normal"] = Outbox(locations["postgresql"](),
                                                       durability="normal", **cfg)
            for backend, outbox in outboxes.items():
                if backend not in locations:
                    continue
                for group in (1, 100):
                    total = 1000 if group > 1 else 300
                    t = time.perf_counter()
                    pendings = []
                    for _ in range(0, total, group):
                        pendings += outbox.publish_many(
                            [("bulk", {"i": j}) for j in range(group)], "bench", ["r1"],
                            ack_timeout=30)
                    stored = total / (time.perf_counter() - t)
                    for p in pendings:
                        p.result()
                        p.settled.wait(10)
                    print(f"{backend:10s} whole durable publish (sign + store + send), "
                          f"{group:3d} per commit: {stored:8.0f} stored/s (all {total} then "
                          "acknowledged)")

            print(f"\n== acknowledged round trip, 1 recipient, n={args.n} each, interleaved ==")
            times: dict[str, list[float]] = {"plain": [], **{b: [] for b in outboxes}}
            for i in range(args.n + 20):
                t = time.perf_counter()
                gilmsg.publish(topic="rt", msg={"i": i}, modname="bench", recipients=["r1"],
                               ack_timeout=10, **cfg)
                if i >= 20:
                    times["plain"].append(time.perf_counter() - t)
                for backend, outbox in outboxes.items():
                    t1 = time.perf_counter()
                    pending = outbox.publish_async(topic="rt", msg={"i": i}, modname="bench",
                                                   recipients=["r1"], ack_timeout=10)
                    pending.result()  # what Outbox.publish does
                    t2 = time.perf_counter()
                    pending.settled.wait(10)  # the ACK record stays out of the next one
                    if i >= 20:
                        times[backend].append(t2 - t1)
            for name, values in times.items():
                label = ("gilmsg.publish (not durable)" if name == "plain"
                         else f"Outbox.publish ({name})")
                ms = [v * 1000 for v in values]
                print(f"{label:37s}: p50 {pct(ms, 0.5):7.3f} ms   p90 {pct(ms, 0.9):7.3f} ms"
                      f"   p99 {pct(ms, 0.99):7.3f} ms")
            for backend in outboxes:
                added = (statistics.median(times[backend])
                         - statistics.median(times["plain"])) * 1000
                print(f"added by the {backend} outbox at p50: {added:+.3f} ms")
            for backend, outbox in outboxes.items():
                s = outbox.store.stats(time.time()).to_json()
                print(f"{backend} outbox after the run: {s['delivered']} delivered, "
                      f"{s['pending']} pending")
                outbox.close()
        finally:
            r1.terminate()
            r1.wait(10)


if __name__ == "__main__":
    main()
