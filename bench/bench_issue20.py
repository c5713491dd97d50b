"""Benchmark (not a test): issue 20's table in one run, gilmsg beside the protocol floor.

The floor is what ``bench_scale.py`` runs: bare pyzmq, one echo process per recipient, the same
envelopes and the same RSA signatures and checks as gilmsg (the publisher signs each message;
each echo validates it and signs an ACK; the publisher validates every ACK), nothing else.
gilmsg is ``publish_async`` / ``publish`` to as many ``gilmsg-tail`` processes (each tailing
the whole bus unless ``--own-topic``). In one run, on one bus, floor and gilmsg alternating in
rounds so both see the same machine load:

1. 1, 3 and 10 recipients with single ACKs: pipelined (``--window`` messages awaiting their
   ACKs; msg/s, latency, copies sent per message) and round trip (one at a time);
2. 3 recipients ``gilmsg-tail --batch-acks``, pipelined, beside the floor's pipelined rate
   (the floor signs every ACK);
3. 10 recipients again on a bus whose services send their ACKs on ``gilmsg.ack_endpoints``
   (receivers of the whole bus then never get each other's ACKs);
4. fresh processes to their first acknowledged publish (``bench_startup.first_publish``:
   one ``gilmsg-tail`` running, configuration read from ``./fedmsg.d``).

Then one table: floor, gilmsg, their ratio and issue 20's target for each row.
``--profile DIR`` records py-spy profiles of the publisher and one recipient during the
3-recipient single-ACK pipelined rounds (``bench_scale.spy``).

Usage: .venv/bin/python bench/run_all.py --issue20 [--n 1200] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import bench_scale
import bench_startup

from gilmsg.testing import DevBus

COUNTS = (1, 3, 10)


def options(**extra: Any) -> argparse.Namespace:
    """The arguments ``bench_scale.measure`` reads, with ``extra`` on top."""
    base: dict[str, Any] = {"n": 1200, "min_n": 60, "rt": 150, "window": 64, "rounds": 3,
                            "batch_acks": False, "own_topic": False, "profile": None,
                            "tag": "run"}
    base.update(extra)
    return argparse.Namespace(**base)


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the table, raw (see the module docstring for what runs)."""
    common = {"n": args.n, "rt": args.rt, "window": args.window, "rounds": args.rounds,
              "own_topic": args.own_topic}
    results: dict[str, Any] = {"single": {}, "batched": None}
    names = [f"r{i}" for i in range(1, max(COUNTS) + 1)]
    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-issue20-") as tmp, DevBus(
            Path(tmp), ["pub", "floor", *names]) as bus:
        script = Path(tmp) / "echo.py"
        script.write_text(bench_scale.ECHO)
        for batch in (False, True):
            tails: dict[str, Any] = {}
            try:
                for count in (3,) if batch else COUNTS:
                    profile = args.profile if count == 3 and not batch else None
                    got = bench_scale.measure(
                        bus, count, options(**common, batch_acks=batch, profile=profile,
                                            tag=args.tag), script, tails)
                    print(bench_scale.report(got), flush=True)
                    if batch:
                        results["batched"] = got
                    else:
                        results["single"][count] = got
            finally:
                for tail in tails.values():
                    tail.stop()
    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-issue20-") as tmp, DevBus(
            Path(tmp), ["pub", "floor", *names], ack_endpoints=True) as bus:
        script = Path(tmp) / "echo.py"
        script.write_text(bench_scale.ECHO)
        tails = {}
        try:
            got = bench_scale.measure(bus, max(COUNTS), options(**common, tag=args.tag), script,
                                      tails)
            print("gilmsg.ack_endpoints:", bench_scale.report(got), flush=True)
            results["ack_endpoints"] = got
        finally:
            for tail in tails.values():
                tail.stop()
    times, sends = bench_startup.first_publish(args.startup)
    results["startup"] = {"wall": [w for w, _ in times], "cpu": [c for _, c in times],
                          "sends": sends}
    return results


def _ms(values: list[float], q: float) -> float:
    return bench_scale.pct(values, q) * 1000


def table(r: dict[str, Any]) -> str:
    """Issue 20's rows: floor, gilmsg, ratio, target, met."""
    s3, b3 = r["single"][3], r["batched"]
    rows: list[tuple[str, str, str, str, str, bool | None]] = []

    def rate(x: dict[str, Any], key: str) -> float:
        return statistics.median(x[key])

    f, g = rate(s3, "f_rate"), rate(s3, "g_rate")
    rows.append(("acknowledged msg/s, pipelined, single ACKs", f"{f:,.0f}", f"{g:,.0f}",
                 f"{g / f:.2f}x", ">= 0.9x", g / f >= 0.9))
    fp50, gp50 = _ms(s3["f_lat"], .5), _ms(s3["g_lat"], .5)
    rows.append(("latency under that load, p50 / p99",
                 f"{fp50:.1f} / {_ms(s3['f_lat'], .99):.0f} ms",
                 f"{gp50:.1f} / {_ms(s3['g_lat'], .99):.0f} ms", f"p50 {gp50 / fp50:.2f}x",
                 "p50 <= 1.5x", gp50 / fp50 <= 1.5))
    copies = statistics.mean(s3["sends"])
    rows.append(("copies sent per message under load", "1.00", f"{copies:.3f}", "",
                 "<= 1.05", copies <= 1.05))
    fb, gb = rate(b3, "f_rate"), rate(b3, "g_rate")
    rows.append(("with batched ACKs (3 recipients --batch-acks)", f"{fb:,.0f}",
                 f"{gb:,.0f} ({statistics.mean(b3['sends']):.2f} sends/msg)", f"{gb / fb:.2f}x",
                 ">= 1.5x", gb / fb >= 1.5))
    for count in COUNTS:
        x = r["single"][count]
        fr, gr = _ms(x["f_rt"], .5), _ms(x["g_rt"], .5)
        rows.append((f"round trip, {count} recipient{'s' if count > 1 else ''} (p50)",
                     f"{fr:.2f} ms", f"{gr:.2f} ms", f"{gr / fr:.2f}x", "<= 1.3x",
                     gr / fr <= 1.3))
    top, a = max(COUNTS), r.get("ack_endpoints")
    if a is not None:
        f, g = rate(a, "f_rate"), rate(a, "g_rate")
        rows.append((f"msg/s pipelined, {top} recipients, gilmsg.ack_endpoints", f"{f:,.0f}",
                     f"{g:,.0f}", f"{g / f:.2f}x", ">= 0.9x", g / f >= 0.9))
        fr, gr = _ms(a["f_rt"], .5), _ms(a["g_rt"], .5)
        rows.append((f"round trip, {top} recipients, gilmsg.ack_endpoints (p50)",
                     f"{fr:.2f} ms", f"{gr:.2f} ms", f"{gr / fr:.2f}x", "<= 1.3x",
                     gr / fr <= 1.3))
    for label, key, x in (("CPU ms/msg pipelined, 3 recipients", "cpu", s3),
                          ("CPU ms/msg pipelined, batched ACKs", "cpu", b3),
                          ("CPU ms per round trip, 3 recipients", "rt_cpu", s3)):
        fc, gc = x["f_" + key], x["g_" + key]
        rows.append((f"{label} (publisher + recipients)",
                     f"{fc[0] * 1e3:.2f} + {fc[1] * 1e3:.2f}",
                     f"{gc[0] * 1e3:.2f} + {gc[1] * 1e3:.2f}",
                     f"{sum(gc) / sum(fc):.2f}x", "(not a target)", None))
    st = r["startup"]
    first = statistics.median(st["wall"]) * 1000
    rows.append(("fresh process to first acknowledged publish", "-",
                 f"{first:.0f} ms (CPU {statistics.median(st['cpu']) * 1000:.0f})", "",
                 "<= 100 ms", first <= 100))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    head = ("", "floor", "gilmsg", "ratio", "target")
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + "  met"]
    for row in rows:
        met = "-" if row[5] is None else "yes" if row[5] else "NO"
        cells = zip(row[:5], widths, strict=True)
        lines.append("  ".join(c.ljust(w) for c, w in cells) + f"  {met}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table (``argv``: this mode's own arguments)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1200,
                        help="pipelined messages per side at N=1 (divided by N)")
    parser.add_argument("--rt", type=int, default=150, help="round trips per side at N<=3")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--startup", type=int, default=10, help="fresh processes measured")
    parser.add_argument("--own-topic", action="store_true",
                        help="recipients subscribe to the bench topic only (not the whole bus)")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--profile", type=Path, help="py-spy raw profiles into this directory")
    parser.add_argument("--tag", default="run", help="profile file name tag")
    args = parser.parse_args(argv)
    print(f"issue 20: {os.cpu_count()} CPUs, window {args.window}, recipients "
          f"{'own topic' if args.own_topic else 'whole bus'}; floor = bare pyzmq, same "
          f"envelopes and RSA signatures and checks, one echo process per recipient",
          flush=True)
    results = measure_all(args)
    if args.json:
        args.json.write_text(json.dumps(results))
    print()
    print(table(results))
    return 0
