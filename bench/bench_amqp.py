"""Benchmark (not a test): gilmsg over AMQP beside fedora-messaging and beside gilmsg over fedmsg.

In one run, on loopback, signatures on, one recipient (a gilmsg-tail process):
- round trip (publish call -> the recipient's signed ACK validated) p50/p99, sequential:
  gilmsg over AMQP (a local RabbitMQ started here), gilmsg over fedmsg (ZeroMQ);
- in-flight throughput: ``--inflight`` messages started with publish_async at once, then every
  Report awaited: messages per second, AMQP and ZeroMQ;
- fedora-messaging's own confirmed ``fedora_messaging.api.publish`` to the same broker
  (broker confirm only: it says nothing about any consumer), sequential, p50/p99, and its
  throughput (it has no in-flight mode: one confirm at a time), in a subprocess;
- the round trip over mutual TLS (``amqps://``, a second local broker with a TLS listener and
  certificates made here) beside plain AMQP and fedmsg;
- failover on a 3-node cluster (loopback): the node the publisher and the recipient are
  connected to is killed (SIGKILL); the time from the kill to the end of the next
  acknowledged publish, ``--failovers`` times (the killed node is started again in between).

Usage: .venv/bin/python bench/bench_amqp.py [--n 300] [--inflight 1000] [--failovers 3]
Needs the amqp extra and Debian's rabbitmq-server (see gilmsg/testing/rabbitmq.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gilmsg
from gilmsg.link import link_for
from gilmsg.publish import publish_async
from gilmsg.testing import DevBus
from gilmsg.testing.rabbitmq import (
    LocalRabbitCluster,
    LocalRabbitMQ,
    make_tls_files,
    missing_reason,
)
from gilmsg.transport import amqp as amqp_transport

sys.path.insert(0, str(Path(__file__).parent))
from bench_protocol import fmt, quiet_tail  # noqa: E402

FM_PUBLISH = r"""
import json, sys, time
from fedora_messaging import api, message
n = int(sys.argv[1])
api.publish(message.Message(topic="org.gilmsg.bench.fm", body={"warm": True}))
times = []
t0 = time.monotonic()
for i in range(n):
    t = time.monotonic()
    api.publish(message.Message(topic="org.gilmsg.bench.fm", body={"n": i}))
    times.append(time.monotonic() - t)
print(json.dumps({"times": times, "total": time.monotonic() - t0}))
"""


def round_trips(cfg: dict, n: int) -> list[float]:
    times = []
    for i in range(n):
        t = time.monotonic()
        gilmsg.publish(topic="rt", msg={"i": i}, modname="bench", recipients=["r1"],
                       ack_timeout=30, **cfg)
        times.append(time.monotonic() - t)
    return times


def inflight(cfg: dict, count: int) -> tuple[float, int]:
    """Messages per second with ``count`` started at once; and the re-sends they needed."""
    t = time.monotonic()
    pending = [publish_async(topic="tp", msg={"i": i}, modname="bench", recipients=["r1"],
                             ack_timeout=120, **cfg) for i in range(count)]
    reports = [p.result() for p in pending]
    elapsed = time.monotonic() - t
    return count / elapsed, sum(r.sends - 1 for r in reports)


def bench_bus(bus: DevBus, n: int, count: int) -> dict:
    quiet_tail(bus, "r1")
    cfg = bus.config_for("pub")
    gilmsg.publish(topic="warm", msg={}, modname="bench", recipients=["r1"], ack_timeout=30,
                   **cfg)  # r1 is up and every connection made
    round_trips(cfg, 20)
    rt = round_trips(cfg, n)
    rate, resends = inflight(cfg, count)
    return {"rt": rt, "rate": rate, "resends": resends}


def amqp_bus(root: Path, urls: list[str], extra: dict | None = None) -> DevBus:
    bus = DevBus(root, ["pub", "r1"], extra={"gilmsg.transport": "amqp", **(extra or {})})
    bus.config["endpoints"] = {n: list(urls) for n in bus.services}
    bus.write_config()
    return bus


def bench_tls(tmp: Path, n: int) -> list[float]:
    files = make_tls_files(tmp / "pki")
    with LocalRabbitMQ(tmp / "rabbitmq-tls", tls=files) as broker:
        assert broker.tls_url is not None
        bus = amqp_bus(tmp / "tls", [broker.tls_url], {"gilmsg.amqp_tls": files.client_settings()})
        try:
            quiet_tail(bus, "r1")
            cfg = bus.config_for("pub")
            gilmsg.publish(topic="warm", msg={}, modname="bench", recipients=["r1"],
                           ack_timeout=30, **cfg)
            round_trips(cfg, 20)
            return round_trips(cfg, n)
        finally:
            bus.close()


def bench_failover(tmp: Path, times: int) -> list[float]:
    """Seconds from SIGKILL of the publisher's node to the end of the next acknowledged
    publish (one recipient, a gilmsg-tail, on the same node), ``times`` times."""
    out = []
    with LocalRabbitCluster(tmp / "cluster") as cluster:
        bus = amqp_bus(tmp / "failover", cluster.urls)
        try:
            quiet_tail(bus, "r1")
            cfg = bus.config_for("pub")
            by_url = {amqp_transport.redacted(node.url): node for node in cluster.nodes}
            for _ in range(times):
                gilmsg.publish(topic="warm", msg={}, modname="bench", recipients=["r1"],
                               ack_timeout=30, **cfg)
                node = by_url[link_for(gilmsg.config.load(cfg))._pub.address]
                t = time.monotonic()
                node.stop(kill=True)
                gilmsg.publish(topic="fo", msg={}, modname="bench", recipients=["r1"],
                               ack_timeout=60, **cfg)
                out.append(time.monotonic() - t)
                node.start()  # rejoins the cluster from its own data
        finally:
            bus.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300, help="sequential publishes per figure")
    parser.add_argument("--inflight", type=int, default=1000, help="messages in flight")
    parser.add_argument("--failovers", type=int, default=3, help="cluster nodes killed")
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        sys.exit(f"bench_amqp: {reason}")
    with tempfile.TemporaryDirectory() as tmp, LocalRabbitMQ(Path(tmp) / "rabbitmq") as broker:
        amqp_bus = DevBus(Path(tmp) / "amqp", ["pub", "r1"], extra={"gilmsg.transport": "amqp"})
        amqp_bus.config["endpoints"] = {n: [broker.url] for n in amqp_bus.services}
        amqp_bus.write_config()
        zmq_bus = DevBus(Path(tmp) / "zmq", ["pub", "r1"])
        try:
            amqp = bench_bus(amqp_bus, args.n, args.inflight)
            zmq = bench_bus(zmq_bus, args.n, args.inflight)
        finally:
            amqp_bus.close()
            zmq_bus.close()
        conf = Path(tmp) / "fm.toml"
        conf.write_text(f'amqp_url = "{broker.url}"\n')
        env = dict(os.environ, FEDORA_MESSAGING_CONF=str(conf))
        out = subprocess.run([sys.executable, "-c", FM_PUBLISH, str(args.n)], env=env,
                             capture_output=True, text=True, timeout=300)
        if out.returncode:
            sys.exit(f"fedora-messaging publish failed: {out.stderr[-2000:]}")
        fm = json.loads(out.stdout.strip().splitlines()[-1])
        tls_rt = bench_tls(Path(tmp), args.n)
        failover = bench_failover(Path(tmp), args.failovers) if args.failovers else []

    print(f"one recipient, signatures on, loopback; n={args.n}, in flight={args.inflight}; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"gilmsg over AMQP     round trip (signed ACK)  {fmt(amqp['rt'])}")
    print(f"gilmsg over AMQP+TLS round trip (signed ACK)  {fmt(tls_rt)}   (mutual TLS)")
    print(f"gilmsg over fedmsg   round trip (signed ACK)  {fmt(zmq['rt'])}")
    print(f"fedora-messaging     confirmed publish        {fmt(fm['times'])}"
          "   (broker confirm only)")
    print(f"gilmsg over AMQP     in flight  {amqp['rate']:8.0f} msg/s acknowledged"
          f"   (re-sends {amqp['resends']})")
    print(f"gilmsg over fedmsg   in flight  {zmq['rate']:8.0f} msg/s acknowledged"
          f"   (re-sends {zmq['resends']})")
    print(f"fedora-messaging     sequential {args.n / fm['total']:8.0f} msg/s confirmed by the "
          f"broker (mean {statistics.fmean(fm['times']) * 1000:.3f} ms)")
    if failover:
        print("3-node cluster       failover (SIGKILL of the publisher's node -> next "
              "acknowledged publish): " + ", ".join(f"{v:.3f} s" for v in failover)
              + f"   (max {max(failover):.3f} s)")


if __name__ == "__main__":
    main()
