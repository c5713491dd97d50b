"""gilmsg.consumers.amqp.GilmsgCallback in a real ``fedora-messaging consume`` on a real broker.

The consumer's queue is durable, as fedora-messaging's usually are: while it is down, the
publisher's re-sends pile up there, and AMQP hands them all over when it comes back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("fedora_messaging", reason="fedora-messaging is not installed "
                                               "(pip install 'gilmsg[amqp]')")

import gilmsg  # noqa: E402
from gilmsg import config as gconfig  # noqa: E402
from gilmsg.publish import publish_async  # noqa: E402
from gilmsg.transport import amqp  # noqa: E402

TESTS = Path(__file__).parent
READY = "Successfully registered AMQP consumer"


def write_fm_config(bus, url, queue, callback="PrintingCallback", dedup_path=None, extra=""):
    path = bus.root / "fedora-messaging.toml"
    path.write_text(f"""
amqp_url = "{url}"
callback = "amqp_callback:{callback}"

[client_properties]
app = "gilmsg tests"

[exchanges."amq.topic"]
type = "topic"
durable = true
auto_delete = false
arguments = {{}}

[queues."{queue}"]
durable = true
auto_delete = false
exclusive = false
arguments = {{}}

[[bindings]]
queue = "{queue}"
exchange = "amq.topic"
routing_keys = ["org.gilmsg.test.#"]

[consumer_config.gilmsg]
config_filename = "{bus.config_file}"
name = "r1"
{f'"gilmsg.dedup_path" = "{dedup_path}"' if dedup_path else ""}
{extra}

[log_config]
version = 1
disable_existing_loggers = false
[log_config.formatters.simple]
format = "[%(name)s %(levelname)s] %(message)s"
[log_config.handlers.console]
class = "logging.StreamHandler"
formatter = "simple"
stream = "ext://sys.stdout"
[log_config.loggers.fedora_messaging]
level = "INFO"
propagate = false
handlers = ["console"]
[log_config.loggers.gilmsg]
level = "INFO"
propagate = false
handlers = ["console"]
[log_config.root]
level = "WARNING"
handlers = ["console"]
""")
    return path


def spawn_consumer(bus, conf):
    env = bus.env()
    env["FEDORA_MESSAGING_CONF"] = str(conf)
    env["PYTHONPATH"] = str(TESTS)
    exe = str(Path(sys.executable).parent / "fedora-messaging")
    proc = bus.spawn([exe, "--conf", str(conf), "consume"], env=env)
    proc.wait_for(lambda line: READY in line)
    return proc


def consumed(proc, msg_id, timeout=20):
    return proc.wait_for(lambda line: line.startswith("consumed " + msg_id), timeout)


def count(proc, word, msg_id):
    return sum(line.startswith(f"{word} {msg_id}") for line in proc.seen)


def test_fedora_messaging_consume_acknowledges_and_consumes_each_message_once(
        make_amqp_bus, rabbitmq):
    bus = make_amqp_bus(["pub", "r1", "r2"])
    conf = write_fm_config(bus, rabbitmq.url, f"gilmsg-test-{uuid.uuid4().hex[:8]}")
    cfg = bus.config_for("pub")
    consumer = spawn_consumer(bus, conf)

    report = gilmsg.publish(topic="t", msg={"n": 1}, modname="fm", recipients=["r1"],
                            ack_timeout=30, **cfg)
    assert set(report.acks) == {"r1"}
    consumed(consumer, report.msg_id)

    # consume() refuses it once (Nack): AMQP redelivers it, and that copy is consumed.
    nacked = gilmsg.publish(topic="t", msg={"nack_once": True}, modname="fm", recipients=["r1"],
                            ack_timeout=30, **cfg)
    consumed(consumer, nacked.msg_id)
    assert count(consumer, "nacked", nacked.msg_id) == 1

    # Down while the publisher re-sends: the copies wait in the durable queue.
    consumer.stop()
    pending = publish_async(topic="t", msg={"n": 3}, modname="fm", recipients=["r1"],
                            ack_timeout=30, **cfg)
    deadline = time.monotonic() + 10
    while pending.sends < 4 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the publisher's own counter: nothing to wait on
    assert pending.sends >= 4
    consumer = spawn_consumer(bus, conf)
    report3 = pending.result()
    assert set(report3.acks) == {"r1"}
    marker = gilmsg.publish(topic="t", msg={"n": 4}, modname="fm", recipients=["r1"],
                            ack_timeout=30, **cfg)
    consumed(consumer, marker.msg_id)  # the queue is FIFO: every copy of 3 came before
    assert count(consumer, "consumed", report3.msg_id) == 1, consumer.seen[-20:]
    # For r2 only: r1 consumes what its queue gets (as on fedmsg) but never acknowledges it.
    with pytest.raises(gilmsg.Timeout) as other:
        gilmsg.publish(topic="t", msg={"n": 5}, modname="fm", recipients=["r2"],
                       ack_timeout=1, **cfg)
    assert other.value.missing == ("r2",) and other.value.acked == {}
    consumed(consumer, other.value.msg_id)

    # fedora-messaging's own (unsigned, no gilmsg fields) messages reach consume() as they are.
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    try:
        plain_id = f"fm-{uuid.uuid4()}"
        conn.channel().basic_publish(
            "amq.topic", "org.gilmsg.test.fm.plain",
            json.dumps({"msg_id": plain_id, "hello": "fedora"}).encode(),
            amqp.properties("org.gilmsg.test.fm.plain", plain_id, None, "fm", True))
    finally:
        conn.close()
    consumed(consumer, plain_id)


@pytest.mark.parametrize("dedup_path", [True, False], ids=["dedup_path", "memory_only"])
def test_a_consumer_that_dies_before_its_broker_ack_consumes_the_redelivery_once(
        make_amqp_bus, rabbitmq, dedup_path):
    """consume() finished, the process died before fedora-messaging acked the message to the
    broker: AMQP redelivers it to the restarted consumer. With gilmsg.dedup_path it is not
    consumed again; without (the fedmsg hub's de-dup, per process) it is: that is the gap."""
    bus = make_amqp_bus(["pub", "r1"])
    conf = write_fm_config(bus, rabbitmq.url, f"gilmsg-test-{uuid.uuid4().hex[:8]}",
                           callback="CrashingCallback",
                           dedup_path=bus.root / "consumed.sqlite" if dedup_path else None)
    cfg = bus.config_for("pub")
    first = spawn_consumer(bus, conf)
    pending = publish_async(topic="t", msg={"crash_after": True}, modname="fm",
                            recipients=["r1"], ack_timeout=30, **cfg)
    consumed(first, pending.msg_id)
    assert first.wait() == 3  # its ACK may or may not have left: the process died at once
    second = spawn_consumer(bus, conf)
    if not dedup_path:  # the documented gap: consumed again after the restart (and dies again)
        consumed(second, pending.msg_id)
        assert second.wait() == 3
        return
    marker = gilmsg.publish(topic="t", msg={"n": "marker"}, modname="fm", recipients=["r1"],
                            ack_timeout=30, **cfg)
    consumed(second, marker.msg_id)  # FIFO: the redelivered copy came first
    assert count(second, "consumed", pending.msg_id) == 0, second.seen[-10:]
    assert set(pending.result().acks) == {"r1"}  # acknowledged again, not consumed again


def test_processed_mode_settles_each_message_and_tells_the_broker_what_fedora_messaging_means(
        make_amqp_bus, rabbitmq):
    """gilmsg_ack_mode = "processed" (class attribute): returned -> processed (broker ack);
    raised -> rejected with the exception (then Drop: gone from the queue, no poison loop);
    Nack -> not settled, requeued, the redelivery consumed and settled; Drop -> rejected."""
    bus = make_amqp_bus(["pub", "r1"])
    queue = f"gilmsg-test-{uuid.uuid4().hex[:8]}"
    conf = write_fm_config(bus, rabbitmq.url, queue, callback="SettlingCallback")
    cfg = bus.config_for("pub")
    consumer = spawn_consumer(bus, conf)

    def publish(msg, timeout=30):
        return gilmsg.publish(topic="t", msg=msg, modname="fm", recipients=["r1"],
                              ack_timeout=timeout, require="processed", **cfg)

    done = publish({"n": 1})
    assert done.answers["r1"].status == "processed"
    consumed(consumer, done.msg_id)

    with pytest.raises(gilmsg.Rejected) as failed:
        publish({"fail": "no such compose"})
    reason = failed.value.rejected["r1"]
    assert reason == "ValueError: no such compose", reason
    assert failed.value.missing == ("r1",) and failed.value.acked == {}

    with pytest.raises(gilmsg.Rejected) as dropped:
        publish({"drop": True})
    assert dropped.value.rejected["r1"].startswith("Drop")

    nacked = publish({"nack_once": True})  # refused once, redelivered, then processed
    assert nacked.answers["r1"].status == "processed"

    marker = publish({"n": "marker"})  # FIFO: any redelivery of the failed ones came first
    assert marker.answers["r1"].status == "processed"
    consumed(consumer, marker.msg_id)  # every line printed before it has been read too
    assert consumer.proc.poll() is None, "the consumer must keep running after a rejection"
    assert count(consumer, "failing", failed.value.msg_id) == 1, consumer.seen[-20:]
    assert count(consumer, "dropping", dropped.value.msg_id) == 1, consumer.seen[-20:]
    assert count(consumer, "consumed", nacked.msg_id) == 1
    assert count(consumer, "nacked", nacked.msg_id) == 1
    consumer.stop()


def test_processed_mode_from_the_config_key_and_halt_consumer(make_amqp_bus, rabbitmq):
    """The config key gilmsg_ack_mode (in [consumer_config.gilmsg]) turns it on for a callback
    whose class says "received"; an invalid mode refuses to start (exit 4, one line)."""
    bus = make_amqp_bus(["pub", "r1"])
    conf = write_fm_config(bus, rabbitmq.url, f"gilmsg-test-{uuid.uuid4().hex[:8]}",
                           extra='gilmsg_ack_mode = "processed"')
    consumer = spawn_consumer(bus, conf)
    report = gilmsg.publish(topic="t", msg={"n": 1}, modname="fm", recipients=["r1"],
                            ack_timeout=30, require="processed", **bus.config_for("pub"))
    assert report.answers["r1"].status == "processed"
    consumer.stop()

    bad = write_fm_config(bus, rabbitmq.url, f"gilmsg-test-{uuid.uuid4().hex[:8]}",
                          extra='gilmsg_ack_mode = "eventually"')
    proc = run_consumer(bus, bad)
    assert proc.returncode == 4, proc.stderr
    assert "gilmsg_ack_mode must be one of" in proc.stderr


def run_consumer(bus, conf, callback=None):
    env = bus.env()
    env["FEDORA_MESSAGING_CONF"] = str(conf)
    env["PYTHONPATH"] = str(TESTS)
    exe = str(Path(sys.executable).parent / "fedora-messaging")
    argv = [exe, "--conf", str(conf), "consume"] + (["--callback", callback] if callback else [])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("callback", ["gilmsg.consumers.amqp:GilmsgCallback",
                                      "gilmsg.amqp_consumer:GilmsgCallback",
                                      "amqp_callback:NoConsume"])
def test_the_base_class_refuses_to_run_before_consuming_anything(make_amqp_bus, rabbitmq,
                                                                 callback):
    """Used as the callback itself, GilmsgCallback exits 4 at start with one line saying to
    subclass it: no connection, no queue declared, nothing consumed or acknowledged."""
    import pika

    bus = make_amqp_bus(["pub", "r1"])
    queue = f"gilmsg-test-{uuid.uuid4().hex[:8]}"
    conf = write_fm_config(bus, rabbitmq.url, queue)
    proc = run_consumer(bus, conf, callback)
    assert proc.returncode == 4, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines()
             if line.strip() and "DeprecationWarning" not in line and "warn" not in line]
    assert len(lines) == 1 and "subclass" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert READY not in proc.stdout
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    try:  # fedora-messaging never got as far as declaring its queue
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
            conn.channel().queue_declare(queue, passive=True)
    finally:
        conn.close()


@pytest.mark.parametrize("where", ["fedmsg_config", "fedora_messaging_conf"])
def test_one_fedora_messaging_config_toml_configures_both(make_amqp_bus, rabbitmq, where):
    """gilmsg.fedora_messaging_config: empty endpoints get fedora-messaging's amqp_url, for the
    publisher (gilmsg.publish) and the GilmsgCallback in fedora-messaging consume alike; the
    callback, unless told otherwise, reads the file fedora-messaging itself read."""
    bus = make_amqp_bus(["pub", "r1"])
    conf = write_fm_config(bus, rabbitmq.url, f"gilmsg-test-{uuid.uuid4().hex[:8]}")
    if where == "fedmsg_config":
        bus.config["endpoints"] = {"pub": [], "r1": []}
        bus.config["gilmsg.fedora_messaging_config"] = str(conf)
    else:  # only the consumer's r1 is left to fedora-messaging's own file
        bus.config["endpoints"] = {"pub": [rabbitmq.url], "r1": []}
    bus.write_config()
    consumer = spawn_consumer(bus, conf)
    cfg = bus.config_for("pub")
    report = gilmsg.publish(topic="t", msg={"n": 1}, modname="fm", recipients=["r1"],
                            ack_timeout=30, **cfg)
    assert set(report.acks) == {"r1"}
    consumed(consumer, report.msg_id)
    from gilmsg.link import link_for

    assert link_for(gconfig.load(cfg))._pub.address == amqp.redacted(rabbitmq.url)


def test_gilmsg_messages_carry_fedora_messaging_headers_and_record_stores_them(
        make_amqp_bus, rabbitmq):
    """``fedora-messaging record`` takes a gilmsg message and fedora-messaging's own one; the
    gilmsg one has every header fedora-messaging's has, with the same values."""
    import pika
    from fedora_messaging import message as fm_message

    bus = make_amqp_bus(["pub", "r1"])
    conf = write_fm_config(bus, rabbitmq.url, f"gilmsg-test-{uuid.uuid4().hex[:8]}")
    out_file = bus.root / "recorded.jsonl"
    env = bus.env()
    env["FEDORA_MESSAGING_CONF"] = str(conf)
    exe = str(Path(sys.executable).parent / "fedora-messaging")
    recorder = bus.spawn([exe, "--conf", str(conf), "record", "--limit", "2",
                          "--routing-key", "org.gilmsg.test.#", str(out_file)], env=env)
    recorder.wait_for(lambda line: READY in line)
    own = fm_message.Message(topic="org.gilmsg.test.fm.own", body={"own": True})
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    try:  # first: the gilmsg message is re-sent, and --limit 2 stops at its first copy
        conn.channel().basic_publish("amq.topic", own.topic, json.dumps(own.body).encode(),
                                     own._properties)
    finally:
        conn.close()
    pending = publish_async(topic="t", msg={"record": True}, modname="fm", recipients=["r1"],
                            ack_timeout=2, **bus.config_for("pub"))
    assert recorder.wait(30) == 0, recorder.stderr
    with pytest.raises(gilmsg.Timeout):
        pending.result()  # nobody acknowledges: record is not a gilmsg recipient
    recorded = {}
    for line in out_file.read_text().splitlines():
        fm_message.loads(line)  # what fedora-messaging replay reads: valid, known schema
        data = json.loads(line)
        recorded[data["topic"]] = data
    ours, theirs = recorded["org.gilmsg.test.fm.t"], recorded["org.gilmsg.test.fm.own"]
    assert ours["body"]["msg_id"] == pending.msg_id and ours["body"]["msg"] == {"record": True}
    missing = set(theirs["headers"]) - set(ours["headers"])
    assert not missing, missing
    for key in ("fedora_messaging_schema", "fedora_messaging_schema_package",
                "fedora_messaging_severity", "priority"):
        assert ours["headers"][key] == theirs["headers"][key], key
    assert ours["headers"]["fedora_messaging_schema_package"] == "fedora_messaging"
    assert len(ours["headers"]["sent-at"]) == len(theirs["headers"]["sent-at"])
    assert ours["id"] == pending.msg_id
