"""The reliability protocol end to end: real gilmsg-tail processes, real sockets, real certs."""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

import gilmsg
from gilmsg import config as gconfig
from gilmsg import link as glink
from gilmsg.core import wire
from gilmsg.core.delivery import State
from gilmsg.crypto import certs, signing
from gilmsg.publish import publish_async, wait
from gilmsg.recipient import Recipient
from gilmsg.testing import DEFAULT_WAIT, free_port
from gilmsg.transport import zmq as zmq_transport

SUCCESS_TIMEOUT = 30.0  # generous: recipient processes need ~1 s to import and connect


def publish(bus, sender="pub", recipients=("r1",), timeout=SUCCESS_TIMEOUT, **kw):
    return gilmsg.publish(topic="t", msg={"k": "v"}, modname="test", recipients=recipients,
                          ack_timeout=timeout, **bus.config_for(sender, **kw))


class Raw:
    """A raw XPUB + SUB pair in the test process: sees the bus and speaks on it, unchecked."""

    def __init__(self, bus, name):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.pub.bind(bus.config["endpoints"][name][0])
        self.sub = self.ctx.socket(zmq.SUB)
        zmq_transport.tune(self.sub)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.monitor = self.sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.connected: set[str] = set()
        self.endpoints = bus.config["endpoints"]
        for other, endpoints in self.endpoints.items():
            if other != name:
                self.sub.connect(endpoints[0])

    def wait_connected(self, name, timeout=DEFAULT_WAIT):
        """Block until our SUB has completed its handshake with service ``name``'s publisher."""
        endpoint = self.endpoints[name][0]
        deadline = time.monotonic() + timeout
        while endpoint not in self.connected:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.monitor.poll(remaining * 1000):
                raise AssertionError(f"never connected to {name} at {endpoint}")
            self.connected.add(recv_monitor_message(self.monitor)["endpoint"].decode())

    def wait_subscriber(self, timeout=DEFAULT_WAIT):
        """Block until some peer subscribes to our XPUB."""
        self.pub.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        while self.pub.recv()[:1] != b"\x01":
            pass

    def recv(self, predicate, timeout=DEFAULT_WAIT, required=True):
        """The next (topic, envelope) from the bus satisfying ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sub.poll(10):
                decoded = wire.decode(self.sub.recv_multipart())
                if decoded and predicate(*decoded):
                    return decoded
        if required:
            raise AssertionError("expected message not seen on the bus")
        return None

    def close(self):
        self.sub.disable_monitor()
        self.monitor.close(0)
        self.pub.close(0)
        self.sub.close(0)
        self.ctx.term()


@pytest.fixture
def raw_factory():
    raws = []

    def make(bus, name):
        raws.append(Raw(bus, name))
        return raws[-1]

    yield make
    for raw in raws:
        raw.close()


def test_one_recipient_acknowledges(make_bus):
    bus = make_bus(["pub", "r1"])
    r1 = bus.spawn_tail("r1")
    report = publish(bus)
    assert set(report.acks) == {"r1"}
    got = json.loads(r1.next_line())
    assert got["msg_id"] == report.msg_id and got["msg"] == {"k": "v"}
    assert got["gilmsg_recipients"] == ["r1"] and got["topic"] == "org.gilmsg.test.test.t"


def test_three_recipients_acknowledge(make_bus):
    bus = make_bus(["pub", "r1", "r2", "r3"])
    procs = [bus.spawn_tail(n) for n in ("r1", "r2", "r3")]
    report = publish(bus, recipients=["r1", "r2", "r3"])
    assert set(report.acks) == {"r1", "r2", "r3"}
    for proc in procs:
        assert json.loads(proc.next_line())["msg_id"] == report.msg_id


def test_offline_recipient_times_out(make_bus):
    bus = make_bus(["pub", "r1"])
    with pytest.raises(gilmsg.Timeout) as info:
        publish(bus, timeout=0.3)
    assert info.value.missing == ("r1",) and info.value.acked == {}
    assert info.value.topic == "org.gilmsg.test.test.t"


def test_partial_acks_name_exactly_who_answered(make_bus):
    bus = make_bus(["pub", "r1", "r2", "r3"])
    bus.spawn_tail("r1")
    bus.spawn_tail("r3")
    publish(bus, recipients=["r1", "r3"])  # both are up and connected
    with pytest.raises(gilmsg.Timeout) as info:
        publish(bus, recipients=["r1", "r2", "r3"], timeout=3.0)
    assert set(info.value.acked) == {"r1", "r3"}
    assert info.value.missing == ("r2",)
    assert "r2" in str(info.value)


def test_late_recipient_is_reached_by_redelivery(make_bus):
    bus = make_bus(["pub", "r1"])
    result = {}
    started = threading.Event()

    def run():
        started.set()
        result["report"] = publish(bus)

    thread = threading.Thread(target=run)
    thread.start()
    started.wait(DEFAULT_WAIT)
    r1 = bus.spawn_tail("r1")  # starts only after the publish began
    thread.join(SUCCESS_TIMEOUT + 5)
    report = result["report"]
    assert set(report.acks) == {"r1"} and report.sends > 1
    assert json.loads(r1.next_line())["msg_id"] == report.msg_id


def test_no_fixed_sleep_on_the_acknowledged_path(make_bus):
    bus = make_bus(["pub", "r1"])
    bus.spawn_tail("r1")
    # If publish honoured post_init_sleep (60 s) it would blow through its own 15 s deadline.
    report = publish(bus, post_init_sleep=60)
    assert set(report.acks) == {"r1"}


def test_each_message_is_yielded_once_despite_redelivery(make_bus, raw_factory):
    bus = make_bus(["pub", "r1"])
    raw = raw_factory(bus, "pub")
    r1 = bus.spawn_tail("r1")
    raw.wait_subscriber()
    signer = signing.Signer(*map(str, certs.paths(bus.ssldir, "pub")))
    env = signer.sign(wire.new_envelope("org.gilmsg.test.x", {"n": 1}, 1, ["r1"]))
    frames = wire.encode("org.gilmsg.test.x", env)
    acks = []
    deadline = time.monotonic() + DEFAULT_WAIT
    while len(acks) < 3 and time.monotonic() < deadline:  # repeats until 3 ACKs came back
        raw.pub.send_multipart(frames)
        got = raw.recv(lambda t, e: t.endswith(".gilmsg.ack")
                       and e["msg"]["ack_msg_id"] == env["msg_id"], timeout=0.1, required=False)
        if got:
            acks.append(got[1])
    assert len(acks) == 3, "repeats were not acknowledged again"
    for ack in acks:
        assert ack["msg"]["ack_digest"] == wire.digest(env)
        assert signing.validate(ack, **bus.config).signer == "r1"
    sentinel = signer.sign(wire.new_envelope("org.gilmsg.test.x", {"n": 2}, 2, ["r1"]))
    raw.pub.send_multipart(wire.encode("org.gilmsg.test.x", sentinel))
    r1.wait_for(lambda line: json.loads(line)["msg_id"] == sentinel["msg_id"])
    ids = [json.loads(line)["msg_id"] for line in r1.seen]
    assert ids == [env["msg_id"], sentinel["msg_id"]]  # each once, however often it came


# -- forged ACKs never count -----------------------------------------------------------------

def forge_while_publishing(bus, raw, forge, recipients=("r1",), timeout=1.5, sentinel=None,
                           **config):
    """Publish to ``recipients`` while ``raw`` answers each copy with ``forge(envelope)``.

    With ``sentinel`` (a signer that is not a recipient), each forgery is followed on the same
    connection by an ACK from it: the publisher logs its refusal, and one logged after another
    proves the forgery sent between them reached the publisher (one connection keeps its order).
    """
    outcome = {}
    # pub's socket bound and heard by raw first: else a recipient that answers at once can end
    # the publish before raw ever sees the message.
    gilmsg.init(**bus.config_for("pub", **config))
    raw.wait_connected("pub")

    def run():
        try:
            outcome["report"] = publish(bus, recipients=recipients, timeout=timeout, **config)
        except gilmsg.Timeout as exc:
            outcome["timeout"] = exc
        except gilmsg.Rejected as exc:
            outcome["rejected"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    _, original = raw.recv(lambda t, e: wire.is_gilmsg(e))
    outcome["original"] = original
    ack_topic = gconfig.ack_topic(bus.config)
    while thread.is_alive():  # keep answering: our ACK may precede the publisher's subscription
        ack = forge(original)
        if ack is not None:
            raw.pub.send_multipart(wire.encode(ack_topic, ack))
        if sentinel is not None:
            raw.pub.send_multipart(wire.encode(ack_topic, sentinel.sign(ack_envelope(original))))
        thread.join(0.02)
    return outcome


def refusals(caplog, msg_id):
    """The WARNING (or worse) lines logged in this process that mention ``msg_id``, and the
    refused ACKs that mention it (logged, or counted in a summary: see gilmsg.logsummary)."""
    from gilmsg.link import refused_acks

    logged = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING and msg_id in r.getMessage()
              and not r.getMessage().startswith("refused ACKs: ")]
    return logged + [detail for _kind, detail in refused_acks.recent if msg_id in detail]


def assert_refused(caplog, outcome, reason):
    """The forgeries reached the publisher and were refused for ``reason`` (None: silently).

    Needs ``sentinel=signer_of(..., "forger")``: its refusals, logged before and after
    forgeries on the same connection, prove that those forgeries arrived.
    """
    msg_id = outcome["original"]["msg_id"]
    lines = refusals(caplog, msg_id)
    sentinel = [line for line in lines if "forger" in line and "not a recipient" in line]
    assert len(sentinel) >= 2, f"the forged ACKs never reached the publisher: {lines}"
    others = [line for line in lines if line not in sentinel]
    if reason == "not a recipient":  # the forgery is an ACK like the sentinel's
        assert others == [], others
    elif reason is None:
        assert others == [], "expected the forgery to be dropped without a word"
    else:
        assert others and all(reason in line for line in others), (reason, others)


def ack_envelope(original, **body_changes):
    body = {**wire.ack_body(original), **body_changes}
    return wire.new_envelope("org.gilmsg.test.gilmsg.ack", body, 1)


def signer_of(ssldir, name):
    return signing.Signer(*map(str, certs.paths(ssldir, name)))


def test_genuine_ack_through_the_forgery_harness_counts(make_bus, raw_factory):
    """Control: the harness below does deliver ACKs; with the right key they count."""
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "forger")
    r1 = signer_of(bus.ssldir, "r1")
    outcome = forge_while_publishing(bus, raw, lambda m: r1.sign(ack_envelope(m)), timeout=10)
    assert set(outcome["report"].acks) == {"r1"}


def _other_ca_r1(tmp_path):
    other = tmp_path / "other-ca"
    certs.init_ca(other)
    certs.issue(other, "r1")
    return signer_of(other, "r1")


def forgery(kind, bus, tmp):
    """A function turning the published envelope into a forged ACK of the given kind."""
    r1 = signer_of(bus.ssldir, "r1")
    if kind == "same CA, another CN":
        other = signer_of(bus.ssldir, "forger")
        return lambda m: other.sign(ack_envelope(m))
    if kind == "another CA, right CN":
        foreign = _other_ca_r1(tmp)
        return lambda m: foreign.sign(ack_envelope(m))
    if kind == "unsigned":
        return ack_envelope
    if kind == "tampered body":
        return lambda m: {**r1.sign(ack_envelope(m)),
                          "msg": {**wire.ack_body(m), "status": "processed"}}
    if kind == "ACK for another msg_id":
        return lambda m: r1.sign(ack_envelope({**m, "msg_id": "2026-other"}))
    if kind == "same msg_id, other content":
        return lambda m: r1.sign(ack_envelope({**m, "msg": {"k": "forged"}}))
    if kind == "right body, signed for another topic":
        return lambda m: r1.sign({**ack_envelope(m), "topic": "org.gilmsg.test.other"})
    raise ValueError(kind)


FORGERIES = ["same CA, another CN", "another CA, right CN", "unsigned", "tampered body",
             "ACK for another msg_id", "same msg_id, other content",
             "right body, signed for another topic"]

#: What the publisher says when it refuses each forgery (None: dropped before any check, without
#: a word: the msg_id is nobody's, or the signed topic is not the ACK topic).
REASONS = {
    "same CA, another CN": "not a recipient",
    "another CA, right CN": "certificate is not issued by the trusted CA",
    "unsigned": "message is not signed",
    "tampered body": "signature does not match the message",
    "ACK for another msg_id": None,
    "same msg_id, other content": "wrong digest",
    "right body, signed for another topic": None,
}


@pytest.fixture
def warnings_logged(caplog):
    caplog.set_level(logging.WARNING, logger="gilmsg")
    return caplog


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_ack_never_counts(make_bus, raw_factory, tmp_path, warnings_logged, kind):
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "forger")
    outcome = forge_while_publishing(bus, raw, forgery(kind, bus, tmp_path),
                                     sentinel=signer_of(bus.ssldir, "forger"))
    assert "report" not in outcome
    assert outcome["timeout"].missing == ("r1",) and outcome["timeout"].acked == {}
    assert_refused(warnings_logged, outcome, REASONS[kind])


@pytest.mark.parametrize("kind", ["another CA, right CN", "unsigned", "tampered body"])
def test_publisher_validates_acks_even_with_validate_signatures_false(
        make_bus, raw_factory, tmp_path, warnings_logged, kind):
    """validate_signatures concerns the messages a process receives, never the ACKs it counts."""
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "forger")
    outcome = forge_while_publishing(bus, raw, forgery(kind, bus, tmp_path),
                                     sentinel=signer_of(bus.ssldir, "forger"),
                                     validate_signatures=False)
    assert "report" not in outcome
    assert outcome["timeout"].missing == ("r1",) and outcome["timeout"].acked == {}
    assert_refused(warnings_logged, outcome, REASONS[kind])


def test_revoked_recipient_ack_never_counts(make_bus, raw_factory, warnings_logged):
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "forger")
    r1 = signer_of(bus.ssldir, "r1")
    certs.revoke(bus.ssldir, "r1")
    outcome = forge_while_publishing(bus, raw, lambda m: r1.sign(ack_envelope(m)),
                                     sentinel=signer_of(bus.ssldir, "forger"))
    assert outcome["timeout"].missing == ("r1",)
    assert_refused(warnings_logged, outcome, "certificate is revoked")


def test_replayed_ack_of_an_earlier_message_never_counts(make_bus, raw_factory, warnings_logged):
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "forger")
    r1 = bus.spawn_tail("r1")
    raw.wait_connected("r1")  # or r1's ACK could go out before we listen
    first = publish(bus)
    _, old_ack = raw.recv(lambda t, e: t.endswith(".gilmsg.ack")
                          and e["msg"]["ack_msg_id"] == first.msg_id)
    r1.stop()
    outcome = forge_while_publishing(bus, raw, lambda m: old_ack,
                                     sentinel=signer_of(bus.ssldir, "forger"))
    assert outcome["timeout"].missing == ("r1",)
    assert_refused(warnings_logged, outcome, None)  # another msg_id: dropped unexamined


def test_ack_listener_survives_garbage(make_bus, raw_factory):
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "forger")
    bus.spawn_tail("r1")
    topic = gconfig.ack_topic(bus.config).encode()
    garbage = [[topic, b"not json"], [topic, b"[1, 2]"], [topic, b'{"msg_id": 5}'],
               [topic, b'{"msg_id": "x", "msg": {"ack_msg_id": ["a"]}}'],
               [topic, b"\xff\xfe"], [topic, b"x" * (2 << 20)], [topic], [topic, b"{}", b"{}"]]
    rounds = iter(range(10**6))

    def spray(_original):  # every 10th answer (~0.2 s): 2 MiB each time is plenty of garbage
        if next(rounds) % 10 == 0:
            for frames in garbage:
                raw.pub.send_multipart(frames)

    outcome = forge_while_publishing(bus, raw, spray, timeout=SUCCESS_TIMEOUT)
    assert set(outcome["report"].acks) == {"r1"}


# -- process, config and threads -------------------------------------------------------------

EXIT_SCRIPT = """
import sys, gilmsg
config = eval(open(sys.argv[1]).read().split("=", 1)[1])
try:
    gilmsg.publish(topic="t", msg={}, recipients=["r1"], ack_timeout=0.3, name="pub", **config)
except gilmsg.Timeout as exc:
    print("timeout", exc.missing, flush=True)
"""


def test_process_exits_promptly_after_a_timeout(make_bus):
    bus = make_bus(["pub", "r1"])
    script = Path(bus.root) / "exit.py"
    script.write_text(EXIT_SCRIPT)
    proc = bus.spawn([sys.executable, str(script), str(bus.config_file)])
    assert proc.next_line() == "timeout ('r1',)"
    # The ACK listener does not keep the process alive (it would never exit: killed at the
    # bound of wait(), and the test fails).
    assert proc.wait() == 0


def test_config_dict_is_never_mutated_and_can_be_reused(make_bus):
    bus = make_bus(["pub", "r1"])
    bus.spawn_tail("r1")
    config = bus.config_for("pub")
    before = copy.deepcopy(config)
    for _ in range(3):
        gilmsg.publish(topic="t", msg={"a": 1}, recipients=["r1"], ack_timeout=SUCCESS_TIMEOUT,
                       **config)
    assert config == before


def test_fedmsg_cached_config_is_not_mutated(make_bus, monkeypatch):
    import fedmsg.config

    bus = make_bus(["pub", "r1"])
    bus.spawn_tail("r1")
    monkeypatch.chdir(bus.root)  # fedmsg reads ./fedmsg.d/
    cached = fedmsg.config.load_config(invalidate_cache=True)
    try:
        before = copy.deepcopy(cached)
        gilmsg.publish(topic="t", msg={}, recipients=["r1"], ack_timeout=SUCCESS_TIMEOUT,
                       name="pub", **cached)
        gilmsg.publish(topic="t", msg={}, recipients=["r1"], ack_timeout=SUCCESS_TIMEOUT,
                       name="pub")
        assert fedmsg.config.load_config() is cached and cached == before
    finally:
        fedmsg.config.load_config(invalidate_cache=True, filenames=[str(bus.config_file)])


def test_four_threads_publish_concurrently(make_bus):
    bus = make_bus(["pub", "r1", "r2", "r3"])
    for name in ("r1", "r2"):
        bus.spawn_tail(name)
    publish(bus, recipients=["r1", "r2"])  # both connected
    results: dict[int, list] = {}

    def worker(n):
        out = results.setdefault(n, [])
        targets = [["r1"], ["r2"], ["r1", "r2"], ["r1", "r3"]][n]
        for i in range(5):
            try:
                report = gilmsg.publish(topic="t", msg={"n": n, "i": i}, recipients=targets,
                                        ack_timeout=10 if "r3" not in targets else 2,
                                        **bus.config_for("pub"))
                out.append(("ok", report.msg_id, sorted(report.acks)))
            except gilmsg.Timeout as exc:
                out.append(("timeout", exc.msg_id, sorted(exc.acked), exc.missing))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r[0] for r in results[0]] == ["ok"] * 5 and all(r[2] == ["r1"] for r in results[0])
    assert all(r[2] == ["r2"] for r in results[1])
    assert all(r[2] == ["r1", "r2"] for r in results[2])
    assert all(r[0] == "timeout" and r[2] == ["r1"] and r[3] == ("r3",) for r in results[3])
    ids = [r[1] for rs in results.values() for r in rs]
    assert len(set(ids)) == 20


# -- bad input: a clear gilmsg error before anything is sent ---------------------------------

@pytest.mark.parametrize("kwargs,error", [
    ({"recipients": []}, gilmsg.InvalidInput),
    ({"recipients": [""]}, gilmsg.InvalidInput),
    ({"recipients": [3]}, gilmsg.InvalidInput),
    ({"ack_timeout": 0}, gilmsg.InvalidInput),
    ({"ack_timeout": -1}, gilmsg.InvalidInput),
    ({"msg": {"x": object()}}, gilmsg.InvalidInput),
    ({"recipients": "r1"}, gilmsg.InvalidInput),
    ({"ack_timeout": 1e10}, gilmsg.InvalidInput),
    ({"msg": {"x": "y" * wire.MAX_FRAME_BYTES}}, gilmsg.InvalidInput),
    ({"topic": "t\udc80"}, gilmsg.InvalidInput),
    ({"name": "ghost"}, gilmsg.ConfigError),
    ({"certnames": {}}, gilmsg.ConfigError),
    ({"ca_cert_location": None}, gilmsg.ConfigError),
    ({"ssldir": "/nonexistent"}, gilmsg.CertificateError),
])
def test_bad_input_raises_before_sending(make_bus, raw_factory, kwargs, error):
    bus = make_bus(["pub", "r1"])
    raw = raw_factory(bus, "r1")
    args = {"topic": "t", "msg": {}, "recipients": ["r1"], "ack_timeout": 1,
            **bus.config_for("pub")}
    args.update(kwargs)
    cfg = bus.config_for("pub")
    gilmsg.init(**cfg)  # pub's socket is bound: whatever the bad call sent would reach raw

    def plain(topic):
        gilmsg.publish(topic=topic, msg={}, modname="test", **cfg)

    def is_sync(topic, _envelope):
        return topic.endswith(".sync")

    deadline = time.monotonic() + DEFAULT_WAIT
    while raw.recv(is_sync, timeout=0.1, required=False) is None:  # raw hears pub now
        assert time.monotonic() < deadline, "raw never heard the publisher"
        plain("sync")
    with pytest.raises(error):
        gilmsg.publish(**args)
    plain("after")  # sent after whatever the bad call sent, on the same socket
    topic, _ = raw.recv(lambda t, e: not is_sync(t, e))
    assert topic == "org.gilmsg.test.test.after", "the bad call sent something"


def test_endpoint_in_use_is_a_config_error(make_bus):
    bus = make_bus(["pub", "r1"])
    port = free_port()
    ctx = zmq.Context()
    blocker = ctx.socket(zmq.PUB)
    blocker.bind(f"tcp://127.0.0.1:{port}")
    try:
        with pytest.raises(gilmsg.ConfigError, match="cannot bind"):
            gilmsg.publish(topic="t", msg={}, recipients=["r1"], ack_timeout=1,
                           **bus.config_for("pub", endpoints={
                               "pub": [f"tcp://127.0.0.1:{port}"], "r1": ["tcp://127.0.0.1:1"]}))
    finally:
        blocker.close(0)
        ctx.term()


# -- fedmsg compatibility: plain publish, relay -----------------------------------------------

def test_publish_without_recipients_is_a_plain_signed_fedmsg_message(make_bus):
    bus = make_bus(["pub", "r1"])
    r1 = bus.spawn_tail("r1")
    cfg = bus.config_for("pub")
    deadline = time.monotonic() + DEFAULT_WAIT
    got = None
    while got is None and time.monotonic() < deadline:  # fire-and-forget: the first may be lost
        assert gilmsg.publish(topic="plain", msg={"x": 1}, modname="m", **cfg) is None
        try:
            got = json.loads(r1.next_line(timeout=0.2))
        except AssertionError:
            pass
    assert got is not None, "no plain message arrived"
    assert got["topic"] == "org.gilmsg.test.m.plain" and got["msg"] == {"x": 1}
    assert not wire.is_gilmsg(got)
    assert signing.validate(got, **bus.config).signer == "pub"


def test_active_publisher_goes_through_a_real_fedmsg_relay(make_bus):
    bus = make_bus(["pub", "r1"])
    bus.config["endpoints"]["relay_outbound"] = [f"tcp://127.0.0.1:{free_port()}"]
    bus.config["relay_inbound"] = f"tcp://127.0.0.1:{free_port()}"
    bus.write_config()
    relay = bus.spawn([str(Path(sys.executable).parent / "fedmsg-relay"),
                       "--config-filename", str(bus.config_file)])
    r1 = bus.spawn_tail("r1")
    report = publish(bus, active=True)
    assert set(report.acks) == {"r1"}
    assert json.loads(r1.next_line())["msg_id"] == report.msg_id
    assert relay.proc.poll() is None


def test_new_service_in_the_config_is_heard_by_the_existing_ack_listener(make_bus):
    bus = make_bus(["pub", "r1"])
    bus.spawn_tail("r1")
    assert set(publish(bus).acks) == {"r1"}  # the link and its ACK listener now exist
    bus.add_service("r2")  # a new endpoint the listener was not connected to
    bus.spawn_tail("r2")
    report = publish(bus, recipients=["r1", "r2"])
    assert set(report.acks) == {"r1", "r2"}


def test_routing_policy_forbids_a_signer_on_a_topic(make_bus):
    bus = make_bus(["pub", "r1"], extra={"routing_policy": {"org.gilmsg.test.test.t": ["other"]}})
    r1 = bus.spawn_tail("r1")

    def allowed():  # a topic without a policy entry
        return gilmsg.publish(topic="free", msg={}, modname="test", recipients=["r1"],
                              ack_timeout=SUCCESS_TIMEOUT, **bus.config_for("pub"))

    first = allowed()
    assert json.loads(r1.next_line())["msg_id"] == first.msg_id  # r1 is up and connected
    with pytest.raises(gilmsg.Timeout):
        publish(bus, timeout=1)  # on the policed topic: r1 drops it, no print, no ACK
    again = allowed()
    assert json.loads(r1.next_line())["msg_id"] == again.msg_id  # nothing printed in between


def test_a_message_reusing_a_msg_id_does_not_hide_the_genuine_one(make_bus, raw_factory):
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "pub")
    r1 = bus.spawn_tail("r1")
    raw.wait_subscriber()
    genuine = wire.new_envelope("org.gilmsg.test.x", {"genuine": True}, 1, ["r1"])
    forged = {**genuine, "msg": {"forged": True}}  # same msg_id, other content, other signer
    forged = signer_of(bus.ssldir, "forger").sign(forged)
    genuine = signer_of(bus.ssldir, "pub").sign(genuine)
    frames = [wire.encode("org.gilmsg.test.x", env) for env in (forged, genuine)]
    got = None
    deadline = time.monotonic() + DEFAULT_WAIT
    while got is None and time.monotonic() < deadline:  # until r1 acknowledges the genuine one
        for f in frames:
            raw.pub.send_multipart(f)
        got = raw.recv(lambda t, e: t.endswith(".gilmsg.ack")
                       and e["msg"]["ack_digest"] == wire.digest(genuine), timeout=0.1,
                       required=False)
    assert got is not None
    # The ACK vouches for the genuine content: the application must have been given it.
    r1.wait_for(lambda line: json.loads(line)["msg"] == {"genuine": True})


def test_a_rejected_ack_ends_the_publish_at_once_and_is_not_counted(make_bus, raw_factory):
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "forger")
    r1 = signer_of(bus.ssldir, "r1")
    started = time.monotonic()
    outcome = forge_while_publishing(
        bus, raw, lambda m: r1.sign(ack_envelope(m, status="rejected", reason="disk full")),
        timeout=60)
    assert "report" not in outcome and "timeout" not in outcome
    assert outcome["rejected"].missing == ("r1",)
    assert outcome["rejected"].rejected == {"r1": "disk full"}
    assert outcome["rejected"].answers["r1"].status == "rejected"
    assert time.monotonic() - started < 60  # well before the deadline (bound, not a timing)


@pytest.mark.parametrize("msg_id", [None, 5, ""])
def test_unvalidated_gilmsg_message_without_msg_id_is_dropped_quietly(make_bus, caplog, msg_id):
    bus = make_bus(["r1"])
    recipient = Recipient(bus.config_for("r1", validate_signatures=False))
    envelope = {"topic": "org.gilmsg.test.t", "msg": {}, "gilmsg_version": 2}
    if msg_id is not None:
        envelope["msg_id"] = msg_id
    from gilmsg.recipient import refused_messages

    before = refused_messages.total
    assert recipient.handle("org.gilmsg.test.t", envelope) is False
    assert refused_messages.total == before + 1  # logged at once the first time, then counted
    assert "no msg_id" in refused_messages.recent[-1][1] and "Traceback" not in caplog.text


def copies_sent(raw, cfg, msg_ids, during):
    """How many copies of ``msg_ids`` ``raw`` hears from the publisher of ``cfg`` while
    ``during()`` runs: between two plain messages of that publisher, which serve as barriers."""
    def barrier(name):
        gilmsg.publish(topic=name, msg={}, modname="test", **cfg)
        counted = 0
        while True:
            topic, envelope = raw.recv(lambda t, e: True)
            if topic.endswith("." + name):
                return counted
            counted += envelope.get("msg_id") in msg_ids

    barrier("mark")
    during()
    return barrier("after")


def window_of_timed_resends(bus):
    """Runs a publish nobody acknowledges, long enough for two timed re-sends at the ceiling."""
    with pytest.raises(gilmsg.Timeout):
        publish(bus, recipients=["nobody"], timeout=1.2)


class LogEvent(logging.Handler):
    """Sets :attr:`event` when a record containing every one of ``needles`` is logged."""

    def __init__(self, *needles):
        super().__init__(logging.WARNING)
        self.needles = needles
        self.event = threading.Event()

    def emit(self, record):
        if all(needle in record.getMessage() for needle in self.needles):
            self.event.set()


def test_an_interrupted_publish_says_who_had_acknowledged(make_bus, raw_factory):
    bus = make_bus(["pub", "r1", "r2", "forger"])
    raw = raw_factory(bus, "r1")  # answers as r1 from r1's endpoint; hears pub
    r1, forger = signer_of(bus.ssldir, "r1"), signer_of(bus.ssldir, "forger")
    ack_topic = gconfig.ack_topic(bus.config)
    gilmsg.init(**bus.config_for("pub"))
    raw.wait_connected("pub")
    interrupted = {}

    def interrupt_once_r1_acknowledged():
        raw.wait_subscriber()  # the publisher's ACK listener: what we send now arrives in order
        _, original = raw.recv(lambda t, e: wire.is_gilmsg(e))
        seen = LogEvent(original["msg_id"], "forger", "not a recipient")
        logging.getLogger("gilmsg").addHandler(seen)
        try:
            raw.pub.send_multipart(wire.encode(ack_topic, r1.sign(ack_envelope(original))))
            # Refused once read, so logged after r1's ACK (same connection) was counted.
            raw.pub.send_multipart(wire.encode(ack_topic,
                                                  forger.sign(ack_envelope(original))))
            interrupted["msg_id"] = original["msg_id"]
            if seen.event.wait(DEFAULT_WAIT):
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, handled in the main thread
        finally:
            logging.getLogger("gilmsg").removeHandler(seen)

    helper = threading.Thread(target=interrupt_once_r1_acknowledged)
    helper.start()
    pending = publish_async(topic="t", msg={"k": "v"}, modname="test", recipients=["r1", "r2"],
                            ack_timeout=DEFAULT_WAIT + 10, **bus.config_for("pub"))
    with pytest.raises(KeyboardInterrupt):
        wait(pending)  # what gilmsg.publish does once it has sent
    helper.join(DEFAULT_WAIT)
    # What had arrived is in the delivery's own state, not on the exception.
    assert set(pending.acked) == {"r1"} and pending.missing == ("r2",)
    assert pending.state is State.CANCELLED and pending.future.cancelled()
    # And it is no longer re-sent.
    assert copies_sent(raw, bus.config_for("pub"), {interrupted["msg_id"]},
                       lambda: window_of_timed_resends(bus)) == 0


def test_wait_subscriber_follows_subscribers_coming_and_going(make_bus):
    bus = make_bus(["pub"])
    link = glink.link_for(bus.config_for("pub"))
    topic = "org.gilmsg.test.x.y"
    assert not link.wait_subscriber(topic, 0.05)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"org.gilmsg.test.x")
    sub.connect(bus.config["endpoints"]["pub"][0])
    try:
        assert link.wait_subscriber(topic, DEFAULT_WAIT)
        assert not link.wait_subscriber("org.gilmsg.test.z", 0.05)
    finally:
        sub.close(0)
        ctx.term()
    deadline = time.monotonic() + DEFAULT_WAIT  # the unsubscription arrives when TCP closes
    while link.wait_subscriber(topic, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not link.wait_subscriber(topic, 0)


def test_publishes_that_time_out_at_once_leave_nothing_behind(make_bus):
    bus = make_bus(["pub", "r1"])
    bus.spawn_tail("r1")
    publish(bus)
    for _ in range(50):  # each gives up before the link thread may even have seen it
        with pytest.raises(gilmsg.Timeout):  # 1 ms, the least allowed; "nobody" never answers
            publish(bus, recipients=("r1", "nobody"), timeout=0.001)
    link = glink.link_for(bus.config_for("pub"))
    assert set(publish(bus).acks) == {"r1"}
    assert link.pending == 0


def test_failed_binds_leak_no_file_descriptors(make_bus):
    bus = make_bus(["pub", "r1"])
    ctx = zmq.Context()
    blocker = ctx.socket(zmq.PUB)
    blocker.bind(bus.config["endpoints"]["pub"][0])
    try:
        def attempt():
            with pytest.raises(gilmsg.ConfigError):
                publish(bus, timeout=1)

        attempt()  # first use loads certificates and modules
        before = len(os.listdir("/proc/self/fd"))
        attempts = 40
        for _ in range(attempts):
            attempt()
        # A leak costs at least one descriptor per attempt. The margin absorbs descriptors that
        # come and go on their own: ZeroMQ's reconnect attempts to endpoints nobody listens on.
        assert len(os.listdir("/proc/self/fd")) - before < attempts // 2
    finally:
        blocker.close(0)
        ctx.term()


def test_a_malformed_endpoint_of_another_service_does_not_break_publishing(make_bus):
    bus = make_bus(["pub", "r1"])
    bus.spawn_tail("r1")
    endpoints = {**bus.config["endpoints"], "broken": ["tcp://127.0.0.1"]}
    report = publish(bus, endpoints=endpoints)
    assert set(report.acks) == {"r1"}


# -- promises the timing of which matters, measured in sends and events ---------------------

#: Sends after which the re-send schedule is at its ceiling: 20 ms doubled five times is
#: over the 500 ms cap (every send, timed or not, moves the schedule one step).
CEILING_SENDS = 6


def test_a_new_subscriber_is_served_at_once_not_at_the_next_timed_resend(make_bus, raw_factory):
    """Subscribers joining one after another each get a copy long before the next timed re-send.

    Both publishers' schedules are at their ceiling (one timed re-send per interval) before the
    first joiner. The second publisher has its own link, untouched by the joiners: its timed
    re-sends are the clock. Each joiner connects only once the previous one got its copy, so
    were the joiners served by the timer alone, JOINERS joiners would span JOINERS - 1 intervals
    of both schedules.
    """
    joiners_wanted = 6
    bus = make_bus(["pub", "clock", "r1"])
    raw = raw_factory(bus, "r1")  # sees both publishers; answers as r1 at the end
    topics = {"pub": "org.gilmsg.test.test.served", "clock": "org.gilmsg.test.test.clock"}
    outcomes: dict[str, object] = {}

    def run(name):
        outcomes[name] = gilmsg.publish(
            topic=topics[name].rsplit(".", 1)[1], msg={}, modname="test", recipients=["r1"],
            ack_timeout=SUCCESS_TIMEOUT, **bus.config_for(name))

    threads = [threading.Thread(target=run, args=(name,), daemon=True) for name in topics]
    for thread in threads:
        thread.start()
    seen = {"pub": 0, "clock": 0}
    originals = {}

    def drain(timeout_ms=0):
        while raw.sub.poll(timeout_ms):
            _topic, envelope = wire.decode(raw.sub.recv_multipart())
            for name, topic in topics.items():
                if envelope.get("topic") == topic:
                    seen[name] += 1
                    originals[name] = envelope
            timeout_ms = 0

    deadline = time.monotonic() + DEFAULT_WAIT
    while min(seen.values()) < CEILING_SENDS:
        assert time.monotonic() < deadline, f"copies seen: {seen}"
        drain(100)
    ctx = zmq.Context()
    joiners = []
    try:
        ticks_before = seen["clock"]
        for _ in range(joiners_wanted):
            sock = ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SUBSCRIBE, topics["pub"].encode())
            sock.connect(bus.config["endpoints"]["pub"][0])
            joiners.append(sock)
            assert sock.poll(DEFAULT_WAIT * 1000), "a joiner never got the message"
            sock.recv_multipart()
        drain()
        ticks = seen["clock"] - ticks_before
        assert ticks < joiners_wanted // 2, (
            f"{joiners_wanted} joiners waited {ticks} timed re-sends of the clock")
    finally:
        for sock in joiners:
            sock.close(0)
        ctx.term()
    r1 = signer_of(bus.ssldir, "r1")
    acks = [wire.encode(gconfig.ack_topic(bus.config), r1.sign(ack_envelope(env)))
            for env in originals.values()]
    for thread in threads:
        while thread.is_alive():
            for frames in acks:
                raw.pub.send_multipart(frames)
            thread.join(0.02)
    assert all(set(report.acks) == {"r1"} for report in outcomes.values())


def test_acks_for_msg_ids_nobody_waits_for_cost_no_validation(make_bus, raw_factory,
                                                             monkeypatch):
    flood_size = 300
    bus = make_bus(["pub", "r1"])
    raw = raw_factory(bus, "r1")  # speaks as r1, from r1's endpoint
    r1 = signer_of(bus.ssldir, "r1")
    strangers = [wire.new_envelope("org.gilmsg.test.x", {"n": n}, n, ["r1"])
                 for n in range(flood_size)]
    flood = [wire.encode(gconfig.ack_topic(bus.config), r1.sign(ack_envelope(env)))
             for env in strangers]  # validly signed by a recipient: only the msg_id is wrong
    unknown = {env["msg_id"] for env in strangers}
    validated: list[str] = []
    real_validate = signing.Validator.validate

    def counting_validate(self, envelope, **kw):
        validated.append(envelope.get("msg", {}).get("ack_msg_id"))
        return real_validate(self, envelope, **kw)

    monkeypatch.setattr(signing.Validator, "validate", counting_validate)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(report=publish(bus)), daemon=True)
    thread.start()
    raw.wait_subscriber()  # the publisher's ACK listener: all we send now reaches it, in order
    _, original = raw.recv(lambda t, e: wire.is_gilmsg(e))
    for frames in flood:
        raw.pub.send_multipart(frames)
    genuine = wire.encode(gconfig.ack_topic(bus.config), r1.sign(ack_envelope(original)))
    while thread.is_alive():  # counted only once read: after the whole flood
        raw.pub.send_multipart(genuine)
        thread.join(0.02)
    assert set(outcome["report"].acks) == {"r1"}
    assert original["msg_id"] in validated  # the counter does see the publisher's validations
    wasted = len(unknown & set(validated))
    assert wasted == 0, f"{wasted} ACKs nobody waited for were validated"


def test_a_genuine_ack_after_the_deadline_does_not_count(make_bus, raw_factory):
    """A real recipient frozen (SIGSTOP) past the deadline acknowledges once resumed: too late."""
    ack_timeout = 0.5
    bus = make_bus(["pub", "r1", "watch"])
    raw = raw_factory(bus, "watch")  # hears r1's ACKs
    r1 = bus.spawn_tail("r1")
    publish(bus)  # r1 is up and heard by the publisher
    raw.wait_connected("r1")
    fired = {}
    outcome = {}

    def run():
        try:
            outcome["report"] = publish(
                bus, timeout=ack_timeout,
                pre_fire_hook=lambda env: fired.update(at=time.monotonic(), msg_id=env["msg_id"]))
        except gilmsg.Timeout as exc:
            outcome["timeout"] = exc

    r1.signal(signal.SIGSTOP)
    try:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        # The hook runs after publish took its start time: past this, its deadline has passed.
        while "at" not in fired or time.monotonic() < fired["at"] + ack_timeout:
            assert thread.is_alive() or "at" in fired, outcome
            thread.join(0.01)
    finally:
        r1.signal(signal.SIGCONT)
    # The copies queued while r1 was frozen are acknowledged now, after the deadline.
    raw.recv(lambda t, e: t.endswith(".gilmsg.ack") and e["msg"]["ack_msg_id"] == fired["msg_id"])
    thread.join(DEFAULT_WAIT)
    assert "report" not in outcome, "an ACK that came after ack_timeout was counted"
    assert outcome["timeout"].missing == ("r1",) and outcome["timeout"].msg_id == fired["msg_id"]


# -- processed / rejected / batched ACKs (issue 10) --------------------------------------------

def test_a_rejection_signed_by_a_non_recipient_neither_counts_nor_ends_the_wait(
        make_bus, raw_factory):
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "forger")
    forger = signer_of(bus.ssldir, "forger")
    outcome = forge_while_publishing(
        bus, raw, lambda m: forger.sign(ack_envelope(m, status="rejected", reason="forged")),
        timeout=1.0)
    assert "rejected" not in outcome and outcome["timeout"].rejected == {}
    assert outcome["timeout"].answers["r1"].status == "missing"


def test_a_rejection_from_another_ca_says_why_it_was_refused(make_bus, raw_factory, tmp_path):
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "forger")
    impostor = _other_ca_r1(tmp_path)
    outcome = forge_while_publishing(
        bus, raw, lambda m: impostor.sign(ack_envelope(m, status="rejected", reason="x")),
        timeout=1.0)
    err = outcome["timeout"]
    assert err.rejected == {} and "r1" in err.refused
    assert err.answers["r1"].reason == err.refused["r1"]
    assert str(err).count("r1 (ACKs refused: ") == 1  # the cause, said once (issue 21)


def batch_ack(original, *extra_entries):
    body = wire.batch_body([wire.ack_body(original), *extra_entries])
    return wire.new_envelope("org.gilmsg.test.gilmsg.ack", body, 1)


def test_a_genuine_batched_ack_counts(make_bus, raw_factory):
    """Control for the next test: the same harness with a good batch delivers."""
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "forger")
    r1 = signer_of(bus.ssldir, "r1")
    other = wire.new_envelope("org.gilmsg.test.x", {}, 1, ["r1"])  # someone else's message
    outcome = forge_while_publishing(
        bus, raw, lambda m: r1.sign(batch_ack(m, wire.ack_body(other))), timeout=10)
    assert set(outcome["report"].acks) == {"r1"}


@pytest.mark.parametrize("extra", [
    lambda good: good,  # the same entry twice
    lambda good: {**good, "ack_digest": "0" * 64},  # the same msg_id, other content
    lambda good: {"ack_msg_id": 5},  # malformed
])
def test_a_batch_with_one_bad_entry_counts_for_nothing(make_bus, raw_factory, extra):
    bus = make_bus(["pub", "r1", "forger"])
    raw = raw_factory(bus, "forger")
    r1 = signer_of(bus.ssldir, "r1")

    def forge(m):
        good = wire.ack_body(m)
        body = {"acks": [good, extra(good)]}  # by hand: batch_body refuses such batches
        return r1.sign(wire.new_envelope("org.gilmsg.test.gilmsg.ack", body, 1))

    outcome = forge_while_publishing(bus, raw, forge, timeout=1.0)
    assert "report" not in outcome and outcome["timeout"].missing == ("r1",)
