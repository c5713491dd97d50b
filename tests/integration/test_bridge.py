"""gilmsg-bridge between a fedmsg (ZeroMQ) bus and a real RabbitMQ: publishers on each side
require recipients on the other; the bridge carries their signed ACKs and never makes one."""

from __future__ import annotations

import json
import pprint
import sys
from pathlib import Path

import pytest

pytest.importorskip("pika", reason="pika is not installed (pip install 'gilmsg[amqp]')")

import gilmsg  # noqa: E402
from gilmsg.commands.bridge import READY  # noqa: E402
from gilmsg.crypto import certs  # noqa: E402

SERVICES = ["zpub", "zr1", "apub", "ar1", "ar2", "bridge"]


@pytest.fixture(params=[False, True], ids=["endpoints", "ack_endpoints"])
def two_buses(make_bus, rabbitmq, request):
    """One CA; the fedmsg bus's config (the bus's own) and the AMQP bus's (amqp.d/gilmsg.py).
    With ``ack_endpoints``, the fedmsg bus's ACKs travel on gilmsg.ack_endpoints (which the
    AMQP bus's config carries too, and its transport ignores)."""
    bus = make_bus(SERVICES, ack_endpoints=request.param)
    amqp_cfg = json.loads(json.dumps(bus.config))
    amqp_cfg["gilmsg.transport"] = "amqp"
    amqp_cfg["endpoints"] = {name: [rabbitmq.url] for name in SERVICES}
    amqp_file = bus.root / "amqp.d" / "gilmsg.py"
    amqp_file.parent.mkdir()
    amqp_file.write_text("config = " + pprint.pformat(amqp_cfg) + "\n")
    return bus, amqp_cfg, amqp_file


def spawn_bridge(bus, amqp_file, **kw):
    exe = str(Path(sys.executable).parent / "gilmsg-bridge")
    proc = bus.spawn([exe, "--name", "bridge", str(bus.config_file), str(amqp_file)], **kw)
    return proc


def wait_ready(proc, timeout=30):
    import time

    deadline = time.monotonic() + timeout
    while READY not in proc.stderr:
        assert proc.proc.poll() is None, f"bridge exited: {proc.stderr}"
        assert time.monotonic() < deadline, f"bridge not ready: {proc.stderr}"
        time.sleep(0.05)  # stderr is read by Process's thread; nothing to block on here


def test_a_bridge_carries_messages_and_acks_both_ways_and_never_acknowledges(two_buses):
    bus, amqp_cfg, amqp_file = two_buses
    key, _cert = certs.paths(bus.ssldir, "bridge")
    key.unlink()  # it signs nothing, so it needs no key
    bridge = spawn_bridge(bus, amqp_file)
    wait_ready(bridge)
    exe = str(Path(sys.executable).parent / "gilmsg-tail")
    ar1 = bus.spawn([exe, "--config-filename", str(amqp_file), "--name", "ar1", "--json"])
    zr1 = bus.spawn_tail("zr1")

    # fedmsg publisher -> AMQP recipient, through the bridge.
    report = gilmsg.publish(topic="t", msg={"from": "zmq"}, modname="bridged",
                            recipients=["ar1"], ack_timeout=30, **bus.config_for("zpub"))
    assert set(report.acks) == {"ar1"}
    assert json.loads(ar1.wait_for(lambda line: report.msg_id in line))["msg"] == {"from": "zmq"}

    # AMQP publisher -> fedmsg recipient, through the bridge.
    amqp_pub = dict(amqp_cfg, name="apub")
    back = gilmsg.publish(topic="t", msg={"from": "amqp"}, modname="bridged",
                          recipients=["zr1"], ack_timeout=30, **amqp_pub)
    assert set(back.acks) == {"zr1"}
    zr1.wait_for(lambda line: back.msg_id in line)

    # Recipient down on the far side: the bridge forwards, but the Timeout names it.
    with pytest.raises(gilmsg.Timeout) as exc:
        gilmsg.publish(topic="t", msg={}, modname="bridged", recipients=["ar1", "ar2"],
                       ack_timeout=2, **bus.config_for("zpub"))
    assert set(exc.value.acked) == {"ar1"} and exc.value.missing == ("ar2",)
    with pytest.raises(gilmsg.Timeout) as exc:
        gilmsg.publish(topic="t", msg={}, modname="bridged", recipients=["bridge"],
                       ack_timeout=1, **amqp_pub)
    assert exc.value.missing == ("bridge",)

    bridge.signal()
    assert bridge.wait() == 130
    counts = json.loads(bridge.next_line())
    assert counts["acks"]["b->a"] >= 2 and counts["acks"]["a->b"] >= 1, counts


def test_a_bridge_with_a_broker_nobody_runs_is_a_config_error(make_bus):
    from gilmsg.testing import free_port

    bus = make_bus(["bridge"])
    cfg = dict(bus.config, **{"gilmsg.transport": "amqp"},
               endpoints={"bridge": [f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"]})
    amqp_file = bus.root / "amqp.py"
    amqp_file.write_text("config = " + pprint.pformat(cfg) + "\n")
    proc = spawn_bridge(bus, amqp_file)
    assert proc.wait() == 4
    assert "cannot connect to the AMQP broker" in proc.stderr
    assert "Traceback" not in proc.stderr
