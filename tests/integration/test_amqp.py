"""gilmsg over AMQP: the acceptance scenarios of the ZeroMQ bus, on a real RabbitMQ.

One broker for the session (tests/conftest.py ``rabbitmq``), real gilmsg-tail processes
receiving through it, real certificates. Forgers speak raw AMQP to the broker, as anyone with
a login there can.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time

import pytest

pika = pytest.importorskip("pika", reason="pika is not installed (pip install 'gilmsg[amqp]')")

import gilmsg  # noqa: E402
from gilmsg import config as gconfig  # noqa: E402
from gilmsg.core import wire  # noqa: E402
from gilmsg.crypto import certs, signing  # noqa: E402
from gilmsg.publish import publish_async  # noqa: E402
from gilmsg.testing import DEFAULT_WAIT  # noqa: E402
from gilmsg.transport import amqp  # noqa: E402

SUCCESS_TIMEOUT = 30.0


def publish(bus, recipients, timeout=SUCCESS_TIMEOUT, msg=None, sender="pub"):
    return gilmsg.publish(topic="t", msg=msg or {"k": "v"}, modname="amqptest",
                          recipients=list(recipients), ack_timeout=timeout,
                          **bus.config_for(sender))


def printed(tail, msg_id, timeout=DEFAULT_WAIT):
    """The envelope ``tail`` (gilmsg-tail --json) printed for ``msg_id``."""
    return json.loads(tail.wait_for(lambda line: msg_id in line, timeout))


def test_delivery_offline_recipient_and_partial_delivery(make_amqp_bus):
    bus = make_amqp_bus(["pub", "r1", "r2"])
    tail = bus.spawn_tail("r1")
    report = publish(bus, ["r1"])
    assert set(report.acks) == {"r1"}
    envelope = printed(tail, report.msg_id)
    assert envelope["msg"] == {"k": "v"} and envelope["gilmsg_recipients"] == ["r1"]

    with pytest.raises(gilmsg.Timeout) as offline:
        publish(bus, ["r2"], timeout=1.0)
    assert offline.value.missing == ("r2",) and offline.value.acked == {}
    assert "r2" in str(offline.value)

    with pytest.raises(gilmsg.Timeout) as partial:
        publish(bus, ["r1", "r2"], timeout=1.5)
    assert set(partial.value.acked) == {"r1"} and partial.value.missing == ("r2",)
    printed(tail, partial.value.msg_id)  # r1 really got the one it acknowledged


def test_each_message_is_consumed_once_despite_redelivery(make_amqp_bus):
    """A recipient that comes late gets several copies (re-sends); it prints one."""
    bus = make_amqp_bus(["pub", "r1"])
    pending = publish_async(topic="t", msg={"late": True}, modname="amqptest",
                            recipients=["r1"], ack_timeout=SUCCESS_TIMEOUT,
                            **bus.config_for("pub"))
    tail = bus.spawn_tail("r1")
    report = pending.result()
    assert report.sends > 1 and set(report.acks) == {"r1"}
    printed(tail, report.msg_id)
    marker = publish(bus, ["r1"])  # everything before it has been printed by then
    printed(tail, marker.msg_id)
    assert sum(report.msg_id in line for line in tail.seen) == 1


class Forger:
    """A raw AMQP client: sees every message on the exchange and publishes what it likes."""

    def __init__(self, url):
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.queue = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(self.queue, amqp.DEFAULT_EXCHANGE, "#")

    def next_gilmsg(self, timeout=DEFAULT_WAIT):
        """(envelope, reply_to) of the next gilmsg message seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, props, body = self.ch.basic_get(self.queue, auto_ack=True)
            if method is None:
                self.conn.process_data_events(0.01)
                continue
            envelope = json.loads(body)
            if wire.is_gilmsg(envelope):
                return envelope, props.reply_to
        raise AssertionError("no gilmsg message seen on the broker")

    def send_ack(self, ack_topic, reply_to, envelope):
        frames = wire.encode(ack_topic, envelope)
        self.ch.basic_publish(amqp.DEFAULT_EXCHANGE, f"{ack_topic}.{reply_to}", frames[1],
                              amqp.properties(ack_topic, envelope.get("msg_id"), None, "forger",
                                              persistent=False))

    def close(self):
        self.conn.close()


def ack_for(original):
    return wire.new_envelope("org.gilmsg.test.gilmsg.ack", wire.ack_body(original), 1)


def signer_of(ssldir, name):
    return signing.Signer(*map(str, certs.paths(ssldir, name)))


def forge_while_publishing(bus, forgeries, sentinel, recipients=("r1",), timeout=2.5):
    """Publish while a forger answers every copy with each of ``forgeries`` (envelope ->
    forged ACK), each followed by a genuine ACK of ``sentinel`` (not a recipient): its
    refusals, logged before and after, prove the forgeries between them arrived."""
    outcome = {}

    def run():
        try:
            outcome["report"] = publish(bus, recipients, timeout=timeout)
        except gilmsg.Timeout as exc:
            outcome["timeout"] = exc

    forger = Forger(bus.config["endpoints"]["pub"][0])
    try:
        thread = threading.Thread(target=run)
        thread.start()
        original, reply_to = forger.next_gilmsg()
        assert reply_to, "a gilmsg message carries its publisher's ACK route"
        outcome["original"] = original
        ack_topic = gconfig.ack_topic(bus.config)
        while thread.is_alive():
            for forge in forgeries:
                forger.send_ack(ack_topic, reply_to, forge(original))
                forger.send_ack(ack_topic, reply_to, sentinel.sign(ack_for(original)))
            thread.join(0.05)
    finally:
        forger.close()
    return outcome


@pytest.fixture
def warnings_logged(caplog):
    caplog.set_level(logging.WARNING, logger="gilmsg")
    return caplog


def refusals(caplog, msg_id):
    """Warnings mentioning ``msg_id``, and the refused ACKs naming it (logged or summarised)."""
    from gilmsg.link import refused_acks

    logged = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING and msg_id in r.getMessage()
              and not r.getMessage().startswith("refused ACKs: ")]
    return logged + [detail for _kind, detail in refused_acks.recent if msg_id in detail]


def test_a_genuine_ack_through_the_forgery_harness_counts(make_amqp_bus):
    """Control: what the forger sends reaches the publisher; with r1's key it counts."""
    bus = make_amqp_bus(["pub", "r1", "forger"])
    r1 = signer_of(bus.ssldir, "r1")
    outcome = forge_while_publishing(bus, [lambda m: r1.sign(ack_for(m))],
                                     signer_of(bus.ssldir, "forger"), timeout=10)
    assert set(outcome["report"].acks) == {"r1"}


def test_forged_acks_from_rogue_revoked_and_impostor_certificates_never_count(
        make_amqp_bus, tmp_path, warnings_logged):
    bus = make_amqp_bus(["pub", "r1", "forger"])
    rogue_ca = tmp_path / "rogue"  # another CA, the right CN
    certs.init_ca(rogue_ca)
    certs.issue(rogue_ca, "r1")
    rogue = signer_of(rogue_ca, "r1")
    old = tmp_path / "old"  # the right CA and CN, but revoked (r1's current one is not)
    shutil.copytree(bus.ssldir, old)
    certs.issue(old, "r1", force=True)
    revoked = signer_of(old, "r1")
    certs.revoke(old, "r1")
    shutil.copy(old / "crl.pem", bus.ssldir / "crl.pem")
    impostor = signer_of(bus.ssldir, "forger")  # the right CA, another CN, claims r1's ACK

    outcome = forge_while_publishing(
        bus, [lambda m: rogue.sign(ack_for(m)), lambda m: revoked.sign(ack_for(m)),
              lambda m: impostor.sign(ack_for(m))], impostor)
    assert "report" not in outcome
    assert outcome["timeout"].missing == ("r1",) and outcome["timeout"].acked == {}
    lines = refusals(warnings_logged, outcome["original"]["msg_id"])
    assert any("not issued by the trusted CA" in line for line in lines), lines
    assert any("certificate is revoked" in line for line in lines), lines
    assert sum("forger" in line and "not a recipient" in line for line in lines) >= 2, lines


@pytest.mark.parametrize("crash", [True, False], ids=["killed", "stopped"])
def test_broker_restart_during_a_publish_delivers_or_times_out_exactly(
        make_amqp_bus, rabbitmq, crash):
    bus = make_amqp_bus(["pub", "r1", "r2"])
    tails = {"r1": bus.spawn_tail("r1")}
    publish(bus, ["r1"])  # r1 is up
    pending = publish_async(topic="t", msg={"restart": crash}, modname="amqptest",
                            recipients=["r1", "r2"], ack_timeout=25, **bus.config_for("pub"))
    rabbitmq.stop(kill=crash)  # r2 has not started yet: the delivery is pending for sure
    rabbitmq.start()
    tails["r2"] = bus.spawn_tail("r2")
    try:
        acked = set(pending.result().acks)
        missing: set[str] = set()
    except gilmsg.Timeout as exc:
        acked, missing = set(exc.acked), set(exc.missing)
    assert acked | missing == {"r1", "r2"} and not acked & missing
    for name in acked:  # never a false positive: whoever counted got the message
        printed(tails[name], pending.msg_id)
    assert acked == {"r1", "r2"}, f"expected delivery after the restart, missing {missing}"


def test_the_publisher_ack_queue_goes_with_its_link(make_amqp_bus, rabbitmq):
    from gilmsg.link import link_for

    bus = make_amqp_bus(["pub"])
    link = link_for(bus.config_for("pub"))
    link.listen_now()
    queue = link._pub.queue
    probe = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    try:
        # It exists while the link lives, exclusive to the link's connection:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="RESOURCE_LOCKED"):
            probe.channel().queue_declare(queue, passive=True)
        link.close()
        ch = probe.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
            ch.queue_declare(queue, passive=True)
    finally:
        probe.close()


def test_a_broker_nobody_listens_on_is_a_config_error(make_bus):
    from gilmsg.testing import free_port

    bus = make_bus(["pub"], extra={"gilmsg.transport": "amqp"})
    bus.config["endpoints"]["pub"] = [f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"]
    with pytest.raises(gilmsg.ConfigError, match="cannot connect to the AMQP broker"):
        publish(bus, ["r1"], timeout=1)


def test_binding_keys_cover_every_topic_with_the_prefix():
    assert amqp.binding_key("") == "#"
    assert amqp.binding_key("org") == "#"
    assert amqp.binding_key("org.gilmsg.test") == "org.gilmsg.#"
    assert amqp.binding_key("org.gilmsg.te") == "org.gilmsg.#"


def _listening(port):
    """Local addresses (hex, as /proc/net/tcp{,6} has them) listening on ``port``."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:
                out.append(address)
    return out


def test_the_broker_listens_on_loopback_only(rabbitmq):
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    for port in (rabbitmq.port, rabbitmq.dist_port, rabbitmq.epmd_port):
        addresses = _listening(port)
        assert addresses and set(addresses) <= loopback, (port, addresses)
