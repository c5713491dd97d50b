"""gilmsg on a 3-node RabbitMQ cluster: several URLs in ``endpoints[name]``, the node the
publisher is connected to killed mid-stream.

The cluster (:class:`gilmsg.testing.rabbitmq.LocalRabbitCluster`) runs on 127.0.0.1 with
distinct node names, AMQP and distribution ports and one epmd, all on loopback (no network
namespace); every process it starts is stopped by pid at the end of the module.
"""

from __future__ import annotations

import os
import threading
import uuid

import pytest

pytest.importorskip("pika", reason="pika is not installed (pip install 'gilmsg[amqp]')")
pytest.importorskip("fedora_messaging", reason="fedora-messaging is not installed")

import gilmsg  # noqa: E402
from gilmsg.link import link_for  # noqa: E402
from gilmsg.testing import rabbitmq as testing_amqp  # noqa: E402
from gilmsg.transport import amqp  # noqa: E402

from .test_amqp import _listening  # noqa: E402
from .test_amqp_consumer import consumed, count, spawn_consumer, write_fm_config  # noqa: E402

STREAM = 40
KILL_AFTER = 10


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = testing_amqp.missing_reason()
    if reason:
        pytest.skip(reason)
    with testing_amqp.LocalRabbitCluster(tmp_path_factory.mktemp("cluster")) as running:
        pids = [node._server.pid for node in running.nodes] + [running._epmd.pid]
        yield running
    for pid in pids:  # every node (killed or not) and epmd stopped and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_cluster_has_three_members_on_loopback_only(cluster):
    status = cluster.members()
    assert all(node.node in status for node in cluster.nodes)
    loopback = {"0100007F", "00000000000000000000000001000000"}
    for port in [cluster.epmd_port] + [p for n in cluster.nodes for p in (n.port, n.dist_port)]:
        addresses = _listening(port)
        assert addresses and set(addresses) <= loopback, (port, addresses)


def test_publisher_node_killed_mid_stream_every_message_acknowledged_once_consumed(
        make_bus, cluster):
    """pub, r1 (gilmsg-tail) and r2's ACK link start on node 1 (first URL); r2 is a
    GilmsgCallback in fedora-messaging consume on node 3. Node 1 is killed after the 10th of 40
    sequential publishes: every one must end acknowledged by both (no false positive: whoever
    counted printed it), each consumed exactly once by each."""
    bus = make_bus(["pub", "r1", "r2"], extra={"gilmsg.transport": "amqp"})
    bus.config["endpoints"] = {name: list(cluster.urls) for name in bus.services}
    bus.write_config()
    node1, node3 = cluster.nodes[0], cluster.nodes[2]
    conf = write_fm_config(bus, node3.url, f"gilmsg-cluster-{uuid.uuid4().hex[:8]}")
    conf.write_text(conf.read_text().replace('name = "r1"', 'name = "r2"'))
    r2 = spawn_consumer(bus, conf)
    r1 = bus.spawn_tail("r1")
    cfg = bus.config_for("pub")

    def publish(i):
        return gilmsg.publish(topic="t", msg={"i": i}, modname="cluster",
                              recipients=["r1", "r2"], ack_timeout=30, **cfg)

    warm = publish(-1)
    assert set(warm.acks) == {"r1", "r2"}
    pub = link_for(gilmsg.config.load(cfg))._pub
    assert pub.address == amqp.redacted(node1.url)

    outcomes: list[tuple[str, set[str], set[str]]] = []
    kill_now = threading.Event()

    def stream():
        for i in range(STREAM):
            try:
                report = publish(i)
                outcomes.append((report.msg_id, set(report.acks), set()))
            except gilmsg.Timeout as exc:
                outcomes.append((exc.msg_id, set(exc.acked), set(exc.missing)))
            if i + 1 == KILL_AFTER:
                kill_now.set()

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        assert kill_now.wait(60)
        node1.stop(kill=True)
    finally:
        thread.join(STREAM * 35)
    assert not thread.is_alive() and len(outcomes) == STREAM
    assert pub.address != amqp.redacted(node1.url)  # failed over to another node

    marker = publish("marker")  # each recipient prints in order: everything before is read
    r1.wait_for(lambda line: marker.msg_id in line, 30)
    consumed(r2, marker.msg_id)
    for msg_id, acked, missing in outcomes:
        assert acked | missing == {"r1", "r2"} and not acked & missing
        printed = {"r1": sum(msg_id in line for line in r1.seen),
                   "r2": count(r2, "consumed", msg_id)}
        for name in acked:  # never a false positive, never a duplicate delivery
            assert printed[name] == 1, (msg_id, name, printed)
        for name in missing:
            assert printed[name] <= 1, (msg_id, name, printed)
    not_acked = [o for o in outcomes if o[2]]
    assert not not_acked, f"expected delivery after the failover: {not_acked}"


def test_bridge_node_killed_mid_stream_fedmsg_publisher_still_gets_each_ack(make_bus, cluster):
    """zpub (fedmsg) -> gilmsg-bridge -> the cluster -> ar1 (gilmsg-tail on AMQP). Every AMQP
    identity lists node 2 first, so the bridge and ar1 are on node 2 (node 1 may be down after
    the test above); node 2 is killed after the 5th of 20 publishes."""
    import json
    import pprint
    import sys
    from pathlib import Path

    from .test_bridge import SERVICES, spawn_bridge, wait_ready

    bus = make_bus(SERVICES)
    node2 = cluster.nodes[1]
    order = [cluster.urls[1], cluster.urls[2], cluster.urls[0]]
    amqp_cfg = json.loads(json.dumps(bus.config))
    amqp_cfg["gilmsg.transport"] = "amqp"
    amqp_cfg["endpoints"] = {name: list(order) for name in SERVICES}
    amqp_file = bus.root / "amqp.d" / "gilmsg.py"
    amqp_file.parent.mkdir()
    amqp_file.write_text("config = " + pprint.pformat(amqp_cfg) + "\n")
    bridge = spawn_bridge(bus, amqp_file)
    wait_ready(bridge)
    exe = str(Path(sys.executable).parent / "gilmsg-tail")
    ar1 = bus.spawn([exe, "--config-filename", str(amqp_file), "--name", "ar1", "--json"])
    cfg = bus.config_for("zpub")

    def publish(i):
        return gilmsg.publish(topic="t", msg={"i": i}, modname="bridged", recipients=["ar1"],
                              ack_timeout=30, **cfg)

    assert set(publish(-1).acks) == {"ar1"}
    outcomes = []
    for i in range(20):
        if i == 5:
            node2.stop(kill=True)
        try:
            outcomes.append((publish(i).msg_id, True))
        except gilmsg.Timeout as exc:
            outcomes.append((exc.msg_id, False))
    marker = publish("marker")
    ar1.wait_for(lambda line: marker.msg_id in line, 30)
    for msg_id, acked in outcomes:
        printed = sum(msg_id in line for line in ar1.seen)
        assert printed == 1 if acked else printed <= 1, (msg_id, acked, printed)
    assert all(acked for _msg_id, acked in outcomes), outcomes
    assert "made again" in bridge.stderr and "made again" in ar1.stderr  # they did fail over
    bridge.signal()
    assert bridge.wait() == 130
