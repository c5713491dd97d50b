"""The transport seam: the whole publish / acknowledge path over the in-memory transport.

Real certificates and signatures, real gilmsg.publish and gilmsg.tail_messages, one process, no
sockets: what ``gilmsg.transport = "memory"`` proves is that nothing above the seam needs ZeroMQ.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import contextlib, json, queue, sys, threading
import gilmsg
from gilmsg.publish import publish_async

config = json.loads(sys.argv[1])
pub = dict(config, name="pub")
got = queue.Queue()


def recipient():
    stream = gilmsg.tail_messages(**dict(config, name="r1"))
    with contextlib.closing(stream):
        for _name, _endpoint, topic, envelope in stream:
            if topic.endswith(".seam.t"):
                got.put(envelope["msg"])
                return


thread = threading.Thread(target=recipient, daemon=True)
thread.start()
report = gilmsg.publish(topic="t", msg={"n": 1}, modname="seam", recipients=["r1"],
                        ack_timeout=20, **pub)
assert got.get(timeout=20) == {"n": 1}
thread.join(20)
try:
    gilmsg.publish(topic="t", msg={"n": 2}, modname="seam", recipients=["r1", "r2"],
                   ack_timeout=0.3, **pub)
except gilmsg.Timeout as exc:
    timeout = {"acked": sorted(exc.acked), "missing": list(exc.missing)}
pending = publish_async(topic="t", msg={}, modname="seam", **pub)
print(json.dumps({"acks": sorted(report.acks), "sends": report.sends, "timeout": timeout,
                  "plain": [pending.result(), pending.msg_id.count("-") > 0],
                  "zmq": "zmq" in sys.modules, "fedmsg": "fedmsg" in sys.modules}))
"""


@pytest.fixture
def memory_bus(make_bus):
    return make_bus(["pub", "r1", "r2"], extra={"gilmsg.transport": "memory"})


def test_publish_and_acknowledge_over_the_memory_transport_without_zmq(memory_bus):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(memory_bus.config)],
                          capture_output=True, text=True, timeout=60, cwd=memory_bus.root)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["acks"] == ["r1"] and out["sends"] >= 1
    # r1's tail is gone by then: nobody answers, and the Timeout says so precisely.
    assert out["timeout"] == {"acked": [], "missing": ["r1", "r2"]}
    assert out["plain"] == [None, True]
    assert out["zmq"] is False, "a module above the seam imported zmq"


def test_an_unknown_transport_is_a_config_error(make_bus):
    import gilmsg

    bus = make_bus(["pub"], extra={"gilmsg.transport": "carrier_pigeon"})
    with pytest.raises(gilmsg.ConfigError, match="no transport 'carrier_pigeon'"):
        gilmsg.publish(topic="t", msg={}, recipients=["r1"], ack_timeout=1,
                       **bus.config_for("pub"))


def _importers(library: str) -> list[str]:
    """The modules of the gilmsg package that import ``library`` (at any depth)."""
    import ast
    from pathlib import Path

    import gilmsg

    root = Path(gilmsg.__file__).parent
    importers = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            if any(n == library or n.startswith(library + ".") for n in names):
                importers.append(str(path.relative_to(root)))
    return sorted(set(importers))


def test_only_the_zmq_transport_imports_zmq():
    # Besides the ZeroMQ transport: the options gilmsg puts on moksha's own (txzmq) receiving
    # sockets in fedmsg-hub; those sockets are moksha's, not a transport's, so they never pass
    # the seam.
    importers = [p for p in _importers("zmq") if p != "consumers/hub_sockets.py"]
    assert importers and all(path.startswith("transport/zmq/") for path in importers), importers
    assert "consumers/hub_sockets.py" in _importers("zmq")


def test_only_the_amqp_transport_imports_pika_and_only_its_callback_fedora_messaging():
    importers = _importers("pika")
    assert importers and all(path.startswith("transport/amqp/") for path in importers), importers
    assert _importers("fedora_messaging") == ["consumers/amqp.py"]


def test_a_transport_is_named_by_a_config_value_even_outside_gilmsg():
    from gilmsg import transport
    from gilmsg.transport import memory

    assert transport.module_for({"gilmsg.transport": "gilmsg.transport.memory"}) is memory
    assert transport.module_for({"gilmsg_transport": "memory"}) is memory  # the old spelling
    assert transport.module_for({}).__name__ == "gilmsg.transport.zmq"


def test_publish_async_gives_the_msg_id_at_once_and_the_report_through_its_future(make_bus):
    import gilmsg
    from gilmsg.core.delivery import State
    from gilmsg.publish import publish_async

    bus = make_bus(["pub", "r1"])
    tail = bus.spawn_tail("r1")
    cfg = bus.config_for("pub")
    gilmsg.publish(topic="t", msg={}, recipients=["r1"], ack_timeout=20, **cfg)  # r1 is up
    pending = publish_async(topic="t", msg={"n": 2}, recipients=["r1"], ack_timeout=20, **cfg)
    assert pending.msg_id and pending.recipients == ("r1",)
    report = pending.result()
    assert report.msg_id == pending.msg_id and pending.future.result() is report
    assert pending.state is State.ACKED and pending.acked == report.acks
    assert pending.msg_id in tail.wait_for(lambda line: pending.msg_id in line)


def test_closing_a_link_ends_its_pending_deliveries_at_once(memory_bus):
    from gilmsg import GilmsgError
    from gilmsg.core.delivery import State
    from gilmsg.link import link_for
    from gilmsg.publish import publish_async

    cfg = memory_bus.config_for("pub")
    pending = publish_async(topic="t", msg={}, recipients=["r1"], ack_timeout=600, **cfg)
    link_for(cfg).close()
    with pytest.raises(GilmsgError, match="is closed"):
        pending.future.result(timeout=10)  # not after ack_timeout: the link said so
    assert pending.state is State.FAILED and pending.missing == ("r1",)
