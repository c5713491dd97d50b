"""Acknowledged publishes over a lossy link, with and without gilmsg's connection-health options.

    sudo .venv/bin/python bench/bench_lossy.py [--runs 10] [--messages 50] [--loss 0.2]
                                               [--ack-timeout 10] [--modes before,after]
                                               [--recipient tail|hub]

Root only (network namespaces, TUN devices; see ``gilmsg/testing/lossy_link.py``). Each run builds a
fresh link dropping ``--loss`` of the packets both ways, starts a real ``gilmsg-tail``
(recipient ``r1``; with ``--recipient hub``, a stock ``fedmsg-hub`` running the example
``GilmsgConsumer``, whose receiving sockets get the same options through
``gilmsg.consumers.hub_sockets``) in one namespace and a publisher process in the other,
which sends one warm-up message (60 s timeout, not counted), then ``--messages`` acknowledged
publishes one after the other, each with ``--ack-timeout``. Modes, interleaved run by run so
both see the same load:

* ``before``: ``gilmsg.heartbeat_ivl``, ``gilmsg.connect_timeout``, ``gilmsg.tcp_user_timeout``
  and ``gilmsg.tcp_keepalive_idle`` set to 0 (the sockets as they were: no health options);
* ``after``: the defaults of ``gilmsg.transport.zmq.LINK_DEFAULTS``.

Per mode it prints: the fraction of publishes acknowledged within the timeout, how many runs had
a timeout, the slowest acknowledgement, how late the recipient got a message at worst (first
print by the tail, after the publish call started), new TCP connections after the first ones,
and false positives (acknowledged but never received: must be 0).
"""

from __future__ import annotations

import argparse
import json
import re
import runpy
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from gilmsg.testing import DevBus, Process, free_port  # noqa: E402
from gilmsg.testing.lossy_link import LossyLink, unavailable  # noqa: E402

MODES = {
    "before": {"gilmsg.heartbeat_ivl": 0, "gilmsg.tcp_user_timeout": 0,
               "gilmsg.tcp_keepalive_idle": 0, "gilmsg.connect_timeout": 0},
    "after": {},
}


def publisher(config_file: str, n: int, ack_timeout: float, recipient: str = "r1") -> None:
    """Inside namespace A: one warm-up, then ``n`` publishes; one JSON line per publish."""
    import gilmsg

    config = runpy.run_path(config_file)["config"]
    config["name"] = "pub"

    def one(i: int, timeout: float) -> dict:
        started = time.time()
        t0 = time.monotonic()
        try:
            report = gilmsg.publish(topic="bench", msg={"i": i}, modname="lossy",
                                    recipients=[recipient], ack_timeout=timeout, **config)
            return {"i": i, "ok": True, "msg_id": report.msg_id, "started": started,
                    "elapsed": time.monotonic() - t0, "sends": report.sends}
        except gilmsg.Timeout as exc:
            return {"i": i, "ok": False, "msg_id": exc.msg_id, "started": started,
                    "elapsed": time.monotonic() - t0}

    print(json.dumps({"warmup": one(-1, 60.0)}), flush=True)
    for i in range(n):
        print(json.dumps(one(i, ack_timeout)), flush=True)


def run_once(root: Path, mode: str, args: argparse.Namespace) -> dict:
    """One run of one mode; returns its figures."""
    with LossyLink(loss=args.loss) as link:
        who = args.recipient if args.recipient == "hub" else "r1"
        bus = DevBus(root, ["pub", who], extra=MODES[mode])
        try:
            bus.config["endpoints"] = {"pub": [f"tcp://{link.addr_a}:{free_port()}"],
                                       who: [f"tcp://{link.addr_b}:{free_port()}"]}
            bus.write_config()
            tail = _recipient(bus, link, who)
            pub = bus.spawn(link.wrap(link.ns_a, [sys.executable, __file__, "--publisher",
                                                  str(bus.config_file), str(args.messages),
                                                  str(args.ack_timeout), who]))
            received: dict[str, float] = {}
            results = []
            deadline = time.monotonic() + 60 + args.messages * (args.ack_timeout + 5)
            while len(results) < args.messages + 1 and time.monotonic() < deadline:
                _drain_tail(tail, received)
                try:
                    line = pub.lines.get(timeout=0.05)
                except Exception:
                    if pub.proc.poll() is not None and pub.lines.empty():
                        break
                    continue
                results.append(json.loads(line))
                if args.verbose:
                    print(f"  {mode} {line}", flush=True)
            wanted = {r["msg_id"] for r in results if r.get("ok")}
            settle = time.monotonic() + 10
            while not wanted <= set(received) and time.monotonic() < settle:
                _drain_tail(tail, received, 0.1)
        finally:
            bus.close()
        syns = sum(1 for line in link.forwarder.seen + _rest(link.forwarder)
                   if line.startswith("syn"))
    counted = [r for r in results if "warmup" not in r]
    ok = [r for r in counted if r["ok"]]
    late = [received[r["msg_id"]] - r["started"] for r in counted if r["msg_id"] in received]
    return {
        "mode": mode,
        "published": len(counted),
        "acknowledged": len(ok),
        "timeouts": len(counted) - len(ok),
        "false_positives": sum(1 for r in ok if r["msg_id"] not in received),
        "slowest_ack": max((r["elapsed"] for r in ok), default=0.0),
        "p50_ack": statistics.median([r["elapsed"] for r in ok]) if ok else 0.0,
        "latest_receipt": max(late, default=0.0),
        "never_received": sum(1 for r in counted if r["msg_id"] not in received),
        "new_connections": syns,
        "warmup_ok": bool(results and results[0].get("warmup", {}).get("ok")),
    }


def _recipient(bus: DevBus, link: LossyLink, who: str) -> Process:
    """Start ``gilmsg-tail --json`` (r1) or a fedmsg-hub (hub) in namespace B."""
    exe = Path(sys.executable).parent
    if who != "hub":
        return bus.spawn(link.wrap(link.ns_b, [str(exe / "gilmsg-tail"), "--config-filename",
                                               str(bus.config_file), "--name", who, "--json"]))
    from gilmsg.testing import HUB_READY_LOG

    path = bus.write_hub_config("hub", gilmsg_example=True)
    env = bus.env()
    src = str(REPO / "examples" / "gilmsg_example")
    env["PYTHONPATH"] = f"{src}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else src
    hub = bus.spawn(link.wrap(link.ns_b, [str(exe / "fedmsg-hub"), "--config-filename", str(path),
                                          "--with-consumers", HUB_CONSUMER]), env=env)
    hub.wait_for(lambda line: HUB_READY_LOG in line, 60.0)
    return hub


#: The example consumer, and the log line it writes per consumed message.
HUB_CONSUMER = "gilmsg_example.consumers:ExampleConsumer"
HUB_CONSUMED = re.compile(r"ExampleConsumer consumed (\S+) on \S+\.lossy\.bench$")


def _drain_tail(tail: Process, received: dict[str, float], wait: float = 0.0) -> None:
    try:
        line = tail.lines.get(timeout=wait) if wait else tail.lines.get_nowait()
    except Exception:
        return
    while True:
        hub_line = HUB_CONSUMED.search(line)
        try:
            envelope = json.loads(line) if hub_line is None else {
                "msg_id": hub_line.group(1), "topic": ".lossy.bench"}
        except ValueError:
            envelope = {}
        msg_id = envelope.get("msg_id")
        if isinstance(msg_id, str) and envelope.get("topic", "").endswith(".lossy.bench"):
            received.setdefault(msg_id, time.time())
        try:
            line = tail.lines.get_nowait()
        except Exception:
            return


def _rest(proc: Process) -> list[str]:
    out = []
    while not proc.lines.empty():
        out.append(proc.lines.get_nowait())
    return out


def main() -> None:
    """Parse the arguments, run the modes interleaved, print per-run lines and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--loss", type=float, default=0.2)
    parser.add_argument("--ack-timeout", type=float, default=10.0)
    parser.add_argument("--modes", default="before,after")
    parser.add_argument("--recipient", choices=("tail", "hub"), default="tail")
    parser.add_argument("--verbose", action="store_true", help="print each publish's result")
    parser.add_argument("--publisher", nargs=4, metavar=("CONFIG", "N", "TIMEOUT", "WHO"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        publisher(args.publisher[0], int(args.publisher[1]), float(args.publisher[2]),
                  args.publisher[3])
        return
    # SIGTERM unwinds like Ctrl-C: processes stopped, namespaces deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    why = unavailable()
    if why:
        sys.exit(f"bench_lossy: {why}")
    modes = args.modes.split(",")
    print(f"recipient {args.recipient}, loss {args.loss:.0%} both ways, {args.runs} runs x "
          f"{args.messages} messages, "
          f"ack_timeout {args.ack_timeout:g} s", flush=True)
    results: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-lossy-") as tmp:
        for run in range(args.runs):
            for mode in modes:
                r = run_once(Path(tmp) / f"{mode}-{run}", mode, args)
                results[mode].append(r)
                print(f"run {run:2} {mode:<6} acked {r['acknowledged']:3}/{r['published']:<3} "
                      f"timeouts {r['timeouts']:2}  p50 {r['p50_ack']:6.3f} s  slowest "
                      f"{r['slowest_ack']:6.2f} s  latest receipt {r['latest_receipt']:6.2f} s  "
                      f"never received {r['never_received']}  new TCP connections "
                      f"{r['new_connections']:3}  false positives {r['false_positives']}"
                      f"{'' if r['warmup_ok'] else '  (warm-up failed)'}", flush=True)
    print()
    for mode, rs in results.items():
        published = sum(r["published"] for r in rs)
        acked = sum(r["acknowledged"] for r in rs)
        print(f"{mode:<6}: {acked}/{published} acknowledged within {args.ack_timeout:g} s "
              f"({acked / max(published, 1):.1%}); runs with a timeout "
              f"{sum(1 for r in rs if r['timeouts'])}/{len(rs)}; timeouts per run "
              f"{[r['timeouts'] for r in rs]}; slowest ACK "
              f"{max((r['slowest_ack'] for r in rs), default=0):.2f} s; latest receipt "
              f"{max((r['latest_receipt'] for r in rs), default=0):.2f} s; false positives "
              f"{sum(r['false_positives'] for r in rs)}", flush=True)


if __name__ == "__main__":
    main()
