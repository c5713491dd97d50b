"""The sockets a stock ``fedmsg-hub`` receives on, once a GilmsgConsumer runs in it.

gilmsg.consumers.hub_sockets gives moksha's receiving connections gilmsg's heartbeats, frame
limit and reconnection, and bounds the consumer's queue. Real hubs, real publishers, real
sockets on 127.0.0.1; the hostile peer is a raw TCP socket in the test process bound at the
publisher's configured endpoint, as anyone on the bus could do.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import gilmsg
from gilmsg.core import wire
from gilmsg.testing import DEFAULT_WAIT, DevBus, free_port
from gilmsg.transport.zmq import HWM
from tests.integration.test_hub import records, start_hub, wait_consumed, wait_line
from tests.integration.test_monitoring import get

LOGGER = str(Path(sys.executable).parent / "gilmsg-logger")
HERE = Path(__file__).resolve().parent
PLAIN = "hub_plain_consumer:PlainConsumer"


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    return host, int(port)


#: A ZMTP 3.0 greeting (signature, version 3.0) naming the CURVE mechanism: the hub's sockets use
#: NULL, so libzmq fails the handshake (a protocol error).
BAD_GREETING = (b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"CURVE".ljust(20, b"\0")
                + b"\0" + bytes(31))


def _refuse(peer: socket.socket) -> None:
    """Answer the hub's connection with BAD_GREETING and return once the hub has hung up: an
    orderly close or a reset (libzmq may close with unread data, which the kernel sends as RST)."""
    with peer:
        peer.settimeout(DEFAULT_WAIT)
        try:
            peer.sendall(BAD_GREETING)
            while peer.recv(4096):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass


def test_a_peer_that_fails_the_handshake_does_not_silence_the_hub_for_good(make_bus):
    """Whoever holds the publisher's endpoint for a moment answers the hub's connection with a
    greeting the hub refuses; libzmq 4.3.5 then never connects to that endpoint again, so
    without the Reconnector the real publisher, bound there afterwards, would get a Timeout."""
    bus = make_bus(["pub", "hub"])
    listener = socket.create_server(_host_port(bus.config["endpoints"]["pub"][0]))
    listener.settimeout(DEFAULT_WAIT)
    hub = start_hub(bus)
    try:
        peer, _ = listener.accept()  # the hub connecting to "pub"
        _refuse(peer)
    finally:
        listener.close()
    report = gilmsg.publish(topic="t", msg={"n": 1}, modname="test", recipients=["hub"],
                            ack_timeout=30, **bus.config_for("pub"))
    assert set(report.acks) == {"hub"}
    wait_line(hub, "dropped after a protocol error")  # the Reconnector did it
    wait_consumed(hub, report.msg_id)


def test_connections_a_plain_consumer_made_first_get_the_same_protection(make_bus):
    """moksha creates consumers in order: a FedmsgConsumer enabled before the GilmsgConsumer
    made the hub's connections with moksha's class; they are given gilmsg's options and a
    Reconnector (and connected again), so the failed handshake costs no endpoint either."""
    from tests.integration.test_hub import EXAMPLE, EXAMPLE_SRC

    bus = make_bus(["pub", "hub"])
    listener = socket.create_server(_host_port(bus.config["endpoints"]["pub"][0]))
    listener.settimeout(DEFAULT_WAIT)
    hub = bus.spawn_hub("hub", consumers=[PLAIN, EXAMPLE], pythonpath=[EXAMPLE_SRC, HERE], **{
        "gilmsg_example": True, "plain_consumer": True})
    try:
        for _ in range(2):  # moksha's connection, then the one gilmsg made again
            peer, _ = listener.accept()
            _refuse(peer)
    finally:
        listener.close()
    report = gilmsg.publish(topic="t", msg={"n": 1}, modname="test", recipients=["hub"],
                            ack_timeout=30, **bus.config_for("pub"))
    assert set(report.acks) == {"hub"}
    wait_consumed(hub, report.msg_id)
    wait_line(hub, f"plain consumed {report.msg_id}")


def test_a_hub_without_an_enabled_gilmsg_consumer_keeps_mokshas_sockets(make_bus):
    """The GilmsgConsumer is installed but disabled: moksha's own connections receive (none of
    gilmsg's session lines), and a fedmsg message still reaches the plain consumer."""
    from tests.integration.test_hub import EXAMPLE, EXAMPLE_SRC

    bus = make_bus(["pub", "hub"])
    hub = bus.spawn_hub("hub", consumers=[PLAIN, EXAMPLE], pythonpath=[EXAMPLE_SRC, HERE],
                        wait=False, **{"gilmsg_example": False, "plain_consumer": True})
    hub.wait_for(lambda line: "Running the MokshaHub reactor" in line)
    sent = subprocess.run([LOGGER, "--config-filename", str(bus.config_file), "--name", "pub",
                           "--ack-timeout", "30", "--json-report"], input="plain\n",
                          capture_output=True, text=True, timeout=60, env=bus.env(),
                          cwd=bus.root)
    assert sent.returncode == 0, sent.stderr
    msg_id = json.loads(sent.stdout)["msg_id"]
    hub.wait_for(lambda line: f"plain consumed {msg_id}" in line)
    assert not [line for line in hub.seen if "gilmsg: hub connect" in line], hub.seen


def _logger(bus: DevBus) -> subprocess.Popen:
    return bus.spawn([LOGGER, "--config-filename", str(bus.config_file), "--name", "pub",
                      "--recipients", "hub", "--ack-timeout", "30", "--json-report"],
                     stdin=subprocess.PIPE)


def _say(logger, text: str) -> dict:
    logger.proc.stdin.write(text + "\n")
    logger.proc.stdin.flush()
    return json.loads(logger.next_line(60.0))


def test_heartbeats_detect_a_stopped_publisher_and_ready_says_so(make_bus):
    """A SIGSTOPped publisher keeps its TCP connection (the kernel answers for it): only ZMTP
    heartbeats tell the hub it is gone. The hub drops the connection, /ready says no endpoint
    is connected (the hub's own endpoint does not count); after SIGCONT it connects again."""
    bus = make_bus(["pub", "hub"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    endpoint = bus.config["endpoints"]["pub"][0]
    hub = start_hub(bus, **{"gilmsg.monitoring": f"127.0.0.1:{port}",
                            "gilmsg.heartbeat_ivl": 0.2, "gilmsg.heartbeat_timeout": 1.0})
    logger = _logger(bus)
    first = _say(logger, "before the pause")
    assert first["status"] == "delivered", first
    status, body = get(base + "/ready")
    assert status == 200, body
    logger.proc.send_signal(signal.SIGSTOP)
    try:
        hub.wait_for(lambda line: f"hub connection to {endpoint} lost" in line)
        status, body = get(base + "/ready")
        assert status == 503 and json.loads(body)["reason"] == "no endpoint connected", body
    finally:
        logger.proc.send_signal(signal.SIGCONT)
    hub.wait_for(lambda line: f"hub connected to {endpoint}" in line)
    assert get(base + "/ready")[0] == 200
    after = _say(logger, "after the pause")
    assert after["status"] == "delivered", after
    wait_consumed(hub, after["msg_id"])


def test_a_full_queue_drops_unacknowledged_and_redelivery_loses_nothing(make_bus):
    """The consumer's queue is bounded at gilmsg.receive_backlog_bytes (here 1 MiB, its least):
    while consume() is held, messages beyond the bound are dropped without an ACK; once it is
    released, the publishers' re-sends bring every one of them, each consumed once."""
    bus = make_bus(["pub", "hub"])
    gate = bus.root / "gate"
    output = bus.root / "consumed.jsonl"
    hub = start_hub(bus, **{"gilmsg.receive_backlog_bytes": wire.MAX_FRAME_BYTES})
    cfg = bus.config_for("pub")
    held = gilmsg.publish(topic="t", msg={"gate": str(gate)}, modname="test",
                          recipients=["hub"], ack_timeout=30, **cfg)  # consume() now waits
    big = "x" * (300 << 10)
    pending = [gilmsg.publish_async(topic="t", msg={"i": i, "pad": big}, modname="test",
                                    recipients=["hub"], ack_timeout=60, **cfg)
               for i in range(8)]
    hub.wait_for(lambda line: "consumer queue full" in line)
    # 300 KiB each: at most 4 fit under 1 MiB (the bound plus one message); consume() is held,
    # so nothing dropped can have been acknowledged yet.
    assert sum(p.future.done() for p in pending) <= 4
    gate.touch()
    reports = [p.result() for p in pending]
    assert all(set(r.acks) == {"hub"} for r in reports)
    for r in reports:
        wait_consumed(hub, r.msg_id)
    consumed = [rec["msg_id"] for rec in records(output)]
    expected = [held.msg_id] + [r.msg_id for r in reports]
    assert sorted(consumed) == sorted(expected)  # each exactly once


def test_the_hub_reads_the_options_from_its_config(make_bus):
    """A bad value of a connection-health key stops the hub with exit status 4, one line."""
    bus = make_bus(["pub", "hub"])
    hub = start_hub(bus, wait=False, **{"gilmsg.receive_backlog_bytes": 10})
    assert hub.wait() == 4
    assert "gilmsg.receive_backlog_bytes" in hub.stderr and "Traceback" not in hub.stderr



def test_the_connection_class_puts_the_options_on_the_socket_before_it_connects():
    """In this process (no hub): the class moksha's extension is given, made from a config."""
    import txzmq
    import zmq

    from gilmsg.consumers import hub_sockets

    cls = hub_sockets.connection_class({"gilmsg.heartbeat_ivl": 0.5,
                                        "gilmsg.receive_backlog_bytes": 4 << 20})
    factory = txzmq.ZmqFactory()
    try:
        conn = cls(factory, txzmq.ZmqEndpoint("connect", f"tcp://127.0.0.1:{free_port()}"))
        sock = conn.socket
        assert sock.getsockopt(zmq.HEARTBEAT_IVL) == 500
        assert sock.getsockopt(zmq.HEARTBEAT_TIMEOUT) == 3000
        assert sock.getsockopt(zmq.MAXMSGSIZE) == wire.MAX_FRAME_BYTES
        assert sock.getsockopt(zmq.RCVHWM) == HWM  # the reactor drains it; Backlog bounds
        assert sock.getsockopt(zmq.TCP_KEEPALIVE) == 1
        assert len(cls.watches) == 1 and hub_sockets.connected(cls) == set()
    finally:  # monitors first: the context's term() would wait for them
        for watch in cls.watches:
            factory.reactor.removeReader(watch)
            watch.reconnector.close()
        factory.shutdown()


def test_in_blocking_mode_the_connection_keeps_the_backlog_bound():
    """``consume()`` runs in the reactor thread, no queue follows: libzmq's queue is bounded."""
    from gilmsg.consumers import hub_sockets

    cls = hub_sockets.connection_class({"moksha.blocking_mode": "True",
                                        "gilmsg.receive_backlog_bytes": 4 << 20})
    assert cls.hwm == 4  # 4 MiB of frames of at most 1 MiB
    assert hub_sockets.connection_class({"gilmsg.receive_backlog_bytes": 4 << 20}).hwm == HWM
