"""Load and soak: several publisher processes, three recipients, ten thousand messages and more.

Not in the default run: ``./run tests -m load`` (a few minutes). Publishers are processes of
``tests/faults/load_publisher.py`` (a window of publishes in flight each), recipients real
``gilmsg-tail`` processes. Every message must be acknowledged by all three and printed by each
tail exactly once. Open descriptors, threads and resident memory of every process are sampled
once a second; their slopes over the second half of the publishing (after warm-up, before the
first publisher is done) are printed and
written to ``load-resources.json`` in the test's directory. Bounds asserted: no descriptor or
thread growth beyond 2 over that half, and a peak RSS in that half less than 24 MiB above the
peak of the quarter before (a recipient remembers the digest of each message it delivered,
about 200 bytes each; received frames wait in ZeroMQ queues while a process is busy, so RSS
moves with the backlog, and a leak would show as growth proportional to the messages).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.faults.checks import assert_once_each, await_delivered, delivered

pytestmark = [pytest.mark.load, pytest.mark.timeout(1200)]

PUBLISHERS = 3
PER_PUBLISHER = int(os.environ.get("GILMSG_LOAD_MESSAGES", "3400"))
WINDOW = 16
SCRIPT = Path(__file__).with_name("load_publisher.py")


def sample(pid: int) -> tuple[int, int, int] | None:
    """(open descriptors, threads, RSS bytes) of a live process, None once it is gone."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fds, int(fields["Threads"]), int(fields["VmRSS"].split()[0]) * 1024


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points) or 1.0
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / den


def test_ten_thousand_messages_three_recipients_nothing_lost(make_bus, tmp_path):
    names = [f"pub{i}" for i in range(PUBLISHERS)]
    recipients = ["r1", "r2", "r3"]
    bus = make_bus([*names, *recipients])
    # Each recipient subscribes to the load topic, as consumers subscribe to theirs; subscribed
    # to everything, each would also receive and check every other recipient's ACKs.
    prefix = f"{bus.config['topic_prefix']}.{bus.config['environment']}.load"
    tails = {r: bus.spawn_tail(r, "--topic", prefix) for r in recipients}
    pubs = {n: bus.spawn([sys.executable, str(SCRIPT), str(bus.config_file), n,
                          str(PER_PUBLISHER), str(WINDOW), *recipients]) for n in names}
    procs = {**tails, **pubs}
    samples: dict[str, list[tuple[float, tuple[int, int, int]]]] = {k: [] for k in procs}
    stop = threading.Event()
    started = time.monotonic()

    def sampler() -> None:
        while not stop.wait(1.0):
            now = time.monotonic() - started
            for key, proc in procs.items():
                got = sample(proc.proc.pid)
                if got is not None and proc.proc.poll() is None:
                    samples[key].append((now, got))

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    reports: dict[str, list[dict]] = {n: [] for n in names}
    done_at: list[float] = []
    try:
        for name, proc in pubs.items():
            while True:
                line = proc.next_line(300)
                if line == "done":
                    done_at.append(time.monotonic() - started)
                    break
                reports[name].append(json.loads(line))
        publishing = min(done_at)  # until then, every publisher was at work (the steady state)
        all_ids = [r["msg_id"] for rs in reports.values() for r in rs]
        for tail in tails.values():
            await_delivered(tail, all_ids, 120)
    finally:
        stop.set()
        thread.join(5)
    elapsed = time.monotonic() - started
    total = sum(len(rs) for rs in reports.values())
    failed = [r for rs in reports.values() for r in rs if r["missing"]]
    assert total == PUBLISHERS * PER_PUBLISHER
    assert not failed, failed[:5]
    assert all(r["acked"] == recipients for rs in reports.values() for r in rs)
    assert len(set(all_ids)) == total  # no msg_id reported twice
    for tail in tails.values():
        assert set(delivered(tail)) == set(all_ids)  # nothing lost, nothing extra
    assert_once_each(*tails.values())  # nothing delivered twice

    table = {}
    for key, points in samples.items():
        steady = [p for p in points if publishing / 4 <= p[0] <= publishing - 1]
        first = [p for p in steady if p[0] < publishing / 2]
        half = [p for p in steady if p[0] >= publishing / 2]
        table[key] = {
            "samples": len(points),
            "fds": [points[0][1][0], points[-1][1][0]] if points else None,
            "threads": [points[0][1][1], points[-1][1][1]] if points else None,
            "rss_mib": [round(points[0][1][2] / 2**20, 1), round(points[-1][1][2] / 2**20, 1)]
            if points else None,
            "fds_per_min": round(slope([(t, v[0]) for t, v in half]), 3),
            "threads_per_min": round(slope([(t, v[1]) for t, v in half]), 3),
            "rss_kib_per_min": round(slope([(t, v[2] / 1024) for t, v in half]), 1),
            "second_half": [half[0][1], half[-1][1]] if len(half) >= 2 else None,
            "rss_peak_mib": [round(max((v[2] for _, v in first), default=0) / 2**20, 1),
                             round(max((v[2] for _, v in half), default=0) / 2**20, 1)],
        }
    summary = {"messages": total, "acknowledged": total - len(failed), "lost": 0,
               "seconds": round(elapsed, 1), "rate_per_s": round(total / elapsed, 1),
               "processes": table}
    (tmp_path / "load-resources.json").write_text(json.dumps(summary, indent=1))
    print("\n" + json.dumps(summary, indent=1))
    for key, row in table.items():
        first, last = row["second_half"] or ((0, 0, 0), (0, 0, 0))
        assert last[0] - first[0] <= 2, f"{key}: descriptors grew {first[0]} -> {last[0]}"
        assert last[1] - first[1] <= 2, f"{key}: threads grew {first[1]} -> {last[1]}"
        early, late = row["rss_peak_mib"]
        assert late - early < 24, f"{key}: peak RSS grew {early} -> {late} MiB"
