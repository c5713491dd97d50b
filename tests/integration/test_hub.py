"""GilmsgConsumer inside real ``fedmsg-hub`` processes, on real sockets (127.0.0.1, free ports).

Every wait is bounded and awaits an event (a log line of the hub, an ACK frame, a Report);
"nothing happened" is proven with a barrier: a later message on the *same* connection that must
be handled after the one under test (one worker per consumer keeps the hub's order, and one
link thread keeps the order of its ACKs).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

import gilmsg
from gilmsg.config import ack_topic, batch_ack_topic
from gilmsg.consumers.hub import (
    EXIT_CONSUMER_FAILED,
    READY_LOG,
    asks_for_acks,
    resolve_identity,
)
from gilmsg.core import wire
from gilmsg.crypto import certs, signing
from gilmsg.errors import ConfigError
from gilmsg.testing import DEFAULT_WAIT, HUB_READY_LOG, DevBus, Process

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_SRC = REPO / "examples" / "gilmsg_example"
EXAMPLE = "gilmsg_example.consumers:ExampleConsumer"
OTHER = "gilmsg_example.consumers:OtherExampleConsumer"
SERVICES = ["pub", "hub", "hub2", "raw", "nobody"]


# --------------------------------------------------------------------------------------------
# helpers


def start_hub(bus: DevBus, consumers=(EXAMPLE,), name: str = "hub", wait: bool = True,
              **extra: Any) -> Process:
    """A fedmsg-hub running the example consumer(s) from the source tree (PYTHONPATH)."""
    extra.setdefault("gilmsg_example", True)
    extra.setdefault("gilmsg_example.output", str(bus.root / "consumed.jsonl"))
    return bus.spawn_hub(name, consumers=list(consumers), pythonpath=[EXAMPLE_SRC], wait=wait,
                         **extra)


def records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines the example consumer wrote so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_line(hub: Process, needle: str) -> None:
    """Await a hub log line containing ``needle``, whether already read or still to come."""
    if not any(needle in line for line in hub.seen):
        hub.wait_for(lambda line: needle in line)


def wait_consumed(hub: Process, msg_id: str, consumer: str = "ExampleConsumer") -> None:
    """Await the hub's log line saying ``consumer.consume()`` got ``msg_id``."""
    # "] " anchors the class name: "ExampleConsumer consumed" is inside "OtherExampleConsumer ...".
    wait_line(hub, f"] {consumer} consumed {msg_id}")


def publish(bus: DevBus, recipients, msg=None, timeout: float = DEFAULT_WAIT, **kw):
    return gilmsg.publish(topic="test", msg=msg or {}, modname="hubtest", recipients=recipients,
                          ack_timeout=timeout, **bus.config_for("pub"), **kw)


class Raw:
    """A bare XPUB socket bound at service ``name``'s endpoint: sends whatever frames we like."""

    def __init__(self, bus: DevBus, name: str = "raw") -> None:
        self.bus = bus
        self.cfg = bus.config_for(name)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(bus.config["endpoints"][name][0])
        self.i = 0

    def wait_subscriber(self, timeout: float = DEFAULT_WAIT) -> None:
        """Return once a subscriber (the hub) subscribed: nothing sent after that is dropped."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the hub never subscribed to the raw endpoint"
            if self.sock.poll(int(remaining * 1000)) and self.sock.recv()[:1] == b"\x01":
                return

    def envelope(self, recipients=("hub",), msg=None, topic: str = "raw") -> dict[str, Any]:
        """An unsigned gilmsg envelope."""
        self.i += 1
        full = f"org.gilmsg.test.hubtest.{topic}"
        return wire.new_envelope(full, msg if msg is not None else {"n": self.i}, self.i,
                                    list(recipients))

    def signed(self, **kw: Any) -> dict[str, Any]:
        """A gilmsg envelope validly signed with this service's certificate."""
        return signing.signer_for(self.cfg).sign(self.envelope(**kw))

    def send(self, envelope: dict[str, Any], topic: str | None = None) -> None:
        self.sock.send_multipart(wire.encode(topic or envelope["topic"], envelope))

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


class AckWatcher:
    """A SUB socket on the hub's ACK endpoint that records every ACK, in order."""

    def __init__(self, bus: DevBus, name: str = "hub") -> None:
        self.bus_cfg = bus.config
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, ack_topic(bus.config).encode())
        self.sock.setsockopt(zmq.SUBSCRIBE, batch_ack_topic(bus.config).encode())  # v4 batches
        self.sock.connect(bus.config["endpoints"][name][0])
        self.acked: list[str] = []  # acknowledged msg_ids, in arrival order
        self.signers: list[str | None] = []
        self.sizes: list[int] = []  # entries in each ACK received
        self.entries: list[wire.Ack] = []  # every ACK entry (status, reason), in order

    def _recv(self, timeout: float) -> bool:
        if not self.sock.poll(int(timeout * 1000)):
            return False
        _topic, envelope = wire.decode(self.sock.recv_multipart())
        signer = signing.validate(envelope, **self.bus_cfg).signer
        acks = wire.parse_acks(envelope) or ()
        for ack in acks:  # a batched ACK answers several
            self.acked.append(ack.msg_id)
            self.signers.append(signer)
            self.entries.append(ack)
        self.sizes.append(len(acks))
        return True

    def until(self, msg_id: str, count: int = 1, timeout: float = DEFAULT_WAIT) -> list[str]:
        """Receive until ``msg_id`` was acknowledged ``count`` times; the ids ACKed so far."""
        deadline = time.monotonic() + timeout
        while self.acked.count(msg_id) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{count} ACK(s) for {msg_id} not seen; got {self.acked}"
            self._recv(remaining)
        return list(self.acked)

    def sync(self, send_probe, timeout: float = DEFAULT_WAIT) -> None:
        """Make sure this SUB is connected: send probes until the ACK of one is seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = send_probe()
            try:
                self.until(probe, timeout=0.5)
                return
            except AssertionError:
                continue
        raise AssertionError("ACK watcher never received an ACK")

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def bus(make_bus):
    return make_bus(SERVICES)


@pytest.fixture
def raw(bus):
    sock = Raw(bus)
    yield sock
    sock.close()


@pytest.fixture
def acks(bus):
    watcher = AckWatcher(bus)
    yield watcher
    watcher.close()


def raw_probe(raw: Raw):
    def send() -> str:
        env = raw.signed()
        raw.send(env)
        return env["msg_id"]

    return send


# --------------------------------------------------------------------------------------------
# identity rules (pure)


def test_identity_config_key_then_class_attribute_then_hub_name():
    cfg = {"name": "hub", "mine.gilmsg_name": "worker"}
    assert resolve_identity("mine", "cls", cfg) == "worker"
    assert resolve_identity("mine", "cls", {"name": "hub"}) == "cls"
    assert resolve_identity("mine", None, {"name": "hub"}) == "hub"
    with pytest.raises(ConfigError, match="mine.gilmsg_name"):
        resolve_identity("mine", None, {})
    with pytest.raises(ConfigError, match="must be a string"):
        resolve_identity("mine", None, {"mine.gilmsg_name": 3})


def test_devbus_waits_for_the_line_the_consumer_logs():
    assert HUB_READY_LOG == READY_LOG


def test_acks_reach_consume_only_for_the_ack_topic_itself():
    ack = "org.x.dev.gilmsg.ack"
    assert asks_for_acks(ack, ack)
    assert asks_for_acks(["org.x.dev.foo", ack + "*"], ack)
    assert not asks_for_acks("", ack)
    assert not asks_for_acks("org.x.dev.*", ack)
    assert not asks_for_acks(["org.x.dev.gilmsg"], ack)


# --------------------------------------------------------------------------------------------
# in this process, with a stand-in for moksha's hub (blocking mode: no threads, no reactor)


class FakeHub:
    """What FedmsgConsumer and moksha's Consumer use of a hub: ``config`` and ``subscribe``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.subscribed: list[str] = []

    def subscribe(self, topic: str, callback: Any) -> None:
        self.subscribed.append(topic)


def make_consumer(bus: DevBus, identity: str = "hub", **extra: Any):
    from gilmsg import GilmsgConsumer

    class Recorder(GilmsgConsumer):
        config_key = "recorder"
        topic = ""

        def __init__(self, hub: Any) -> None:
            self.got: list[dict[str, Any]] = []
            super().__init__(hub)

        def consume(self, message: dict[str, Any]) -> None:
            self.got.append(message)

    cfg = bus.hub_config(identity, **{"recorder": True, "moksha.blocking_mode": True, **extra})
    return Recorder(FakeHub(cfg))


def test_message_not_received_through_the_hub_is_still_checked_and_deduplicated(bus, raw):
    """fedmsg's datagrepper backlog puts messages straight on the queue: _do_work checks them."""
    consumer = make_consumer(bus)
    valid, forged = raw.signed(), raw.signed()
    forged["msg"] = {"changed": True}
    for env in (forged, valid, valid):
        consumer._do_work({"topic": env["topic"], "body": env})
    assert [m["body"]["msg_id"] for m in consumer.got] == [valid["msg_id"]]
    assert "_gilmsg_received" not in consumer.got[0]


def test_validate_keeps_fedmsgs_contract(bus, raw):
    consumer = make_consumer(bus)
    valid = raw.signed()
    consumer.validate({"topic": valid["topic"], "body": valid})  # no exception
    with pytest.raises(RuntimeWarning, match="authn"):
        consumer.validate({"topic": valid["topic"], "body": dict(valid, msg={"x": 1})})
    with pytest.raises(RuntimeWarning, match="mismatch"):
        consumer.validate({"topic": "org.gilmsg.test.other", "body": valid})
    unvalidated = make_consumer(bus, **{"validate_signatures": False})
    unvalidated.validate({"topic": "t", "body": dict(valid, msg={"x": 1})})


def test_consumer_disabled_by_config_opens_no_socket(bus):
    consumer = make_consumer(bus, "nobody", recorder=False)
    assert not getattr(consumer, "_initialized", False)
    assert not hasattr(consumer, "recipient")
    probe = zmq.Context.instance().socket(zmq.PUB)
    try:
        probe.bind(bus.config["endpoints"]["nobody"][0])  # still free
    finally:
        probe.close(0)


# --------------------------------------------------------------------------------------------
# the hub acknowledges, consumes once, rejects forgeries


def test_publish_to_hub_consumer_is_acknowledged_and_consumed(bus):
    hub = start_hub(bus)
    report = publish(bus, ["hub"], msg={"hello": "hub"})
    assert set(report.acks) == {"hub"}
    wait_consumed(hub, report.msg_id)
    [rec] = records(bus.root / "consumed.jsonl")
    assert rec["msg_id"] == report.msg_id
    assert rec["msg"] == {"hello": "hub"}
    assert rec["identity"] == "hub"
    assert rec["topic"] == "org.gilmsg.test.hubtest.test"


def test_forged_tampered_unsigned_revoked_are_neither_consumed_nor_acknowledged(
    bus, raw, acks, tmp_path
):
    certs.issue(bus.ssldir, "revoked")
    certs.revoke(bus.ssldir, "revoked")
    other_ca = tmp_path / "other-ca"
    certs.init_ca(other_ca)
    certs.issue(other_ca, "raw")  # same CN as a real service, wrong CA
    hub = start_hub(bus)
    raw.wait_subscriber()
    acks.sync(raw_probe(raw))

    bad: list[dict[str, Any]] = []
    tampered = raw.signed(msg={"amount": 1})
    tampered["msg"]["amount"] = 1000
    bad.append(tampered)
    bad.append(signing.Signer(str(other_ca / "raw.key"), str(other_ca / "raw.crt"))
               .sign(raw.envelope()))
    bad.append(raw.envelope())  # unsigned
    bad.append(signing.Signer(str(bus.ssldir / "revoked.key"), str(bus.ssldir / "revoked.crt"))
               .sign(raw.envelope()))
    forged_extra = raw.signed()
    forged_extra["gilmsg_recipients"] = ["hub", "someone"]  # recipients changed after signing
    bad.append(forged_extra)
    for env in bad:
        raw.send(env)
    wrong_topic = raw.signed()  # valid signature, but the frame claims another topic
    raw.send(wrong_topic, topic="org.gilmsg.test.hubtest.elsewhere")
    bad.append(wrong_topic)

    marker = raw.signed(msg={"marker": True})
    raw.send(marker)
    seen = acks.until(marker["msg_id"])
    wait_consumed(hub, marker["msg_id"])
    bad_ids = {env["msg_id"] for env in bad}
    assert not bad_ids & set(seen)
    consumed = {r["msg_id"] for r in records(bus.root / "consumed.jsonl")}
    assert marker["msg_id"] in consumed
    assert not bad_ids & consumed
    assert set(acks.signers) == {"hub"}


def test_message_not_naming_the_hub_is_consumed_but_not_acknowledged(bus, acks):
    hub = start_hub(bus)
    acks.sync(lambda: publish(bus, ["hub"]).msg_id)
    with pytest.raises(gilmsg.Timeout) as info:
        publish(bus, ["nobody"], msg={"for": "nobody"}, timeout=1.0)
    assert info.value.missing == ("nobody",)
    wait_consumed(hub, info.value.msg_id)
    marker = publish(bus, ["hub"])  # same publisher, same connection: handled after it
    seen = acks.until(marker.msg_id)
    assert info.value.msg_id not in seen
    consumed = [r["msg_id"] for r in records(bus.root / "consumed.jsonl")]
    assert consumed.count(info.value.msg_id) == 1  # re-sent until the timeout, consumed once


def test_plain_fedmsg_messages_are_consumed_unsigned_ones_dropped(bus, raw):
    hub = start_hub(bus)
    raw.wait_subscriber()
    plain = signing.signer_for(raw.cfg).sign(
        wire.new_envelope("org.gilmsg.test.hubtest.plain", {"plain": 1}, 1))
    unsigned = wire.new_envelope("org.gilmsg.test.hubtest.plain", {"plain": 2}, 2)
    raw.send(unsigned)
    raw.send(plain)
    wait_consumed(hub, plain["msg_id"])
    consumed = [r["msg_id"] for r in records(bus.root / "consumed.jsonl")]
    assert consumed == [plain["msg_id"]]


@pytest.mark.parametrize("mode", [
    {"moksha.workers_per_consumer": 1},
    {"moksha.workers_per_consumer": 4},
    {"moksha.blocking_mode": True},  # consume() in the reactor thread, no workers
], ids=["1-worker", "4-workers", "blocking"])
def test_redelivered_duplicates_are_consumed_once_and_acknowledged_each_time(
    bus, raw, acks, mode
):
    hub = start_hub(bus, **mode)
    raw.wait_subscriber()
    acks.sync(raw_probe(raw))
    env = raw.signed(msg={"dup": True})
    for n in range(1, 11):  # one at a time: copies read together share one (batched) ACK
        raw.send(env)
        acks.until(env["msg_id"], count=n)  # every copy went through the recipient
    wait_consumed(hub, env["msg_id"])
    consumed = [r["msg_id"] for r in records(bus.root / "consumed.jsonl")]
    assert consumed.count(env["msg_id"]) == 1


def test_concurrent_publishes_with_several_workers(bus):
    hub = start_hub(bus, **{"moksha.workers_per_consumer": 4})
    reports: list[Any] = []
    errors: list[BaseException] = []

    def one(n: int) -> None:
        try:
            reports.append(publish(bus, ["hub"], msg={"n": n}))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEFAULT_WAIT)
    assert not errors
    assert len(reports) == 16
    for report in reports:
        wait_consumed(hub, report.msg_id)
    consumed = [r["msg_id"] for r in records(bus.root / "consumed.jsonl")]
    assert sorted(consumed) == sorted(r.msg_id for r in reports)


def test_a_consumer_that_cannot_start_stops_the_hub_with_one_line(bus):
    hub = start_hub(bus, consumers=(EXAMPLE, OTHER), wait=False, **{
        "gilmsg_example.gilmsg_name": "ghost",
        "gilmsg_example_other": True,
        "gilmsg_example_other.gilmsg_name": "hub2",
        "gilmsg_example_other.output": str(bus.root / "other.jsonl"),
    })
    assert hub.wait() == EXIT_CONSUMER_FAILED
    failed = [line for line in hub.stderr_lines if "cannot start" in line]
    assert len(failed) == 1 and failed[0].startswith(
        "fedmsg-hub: gilmsg consumer cannot start: ExampleConsumer acknowledging as 'ghost': "
        "config key certnames['ghost']"), hub.stderr
    assert "Traceback" not in hub.stderr and not any(HUB_READY_LOG in line for line in hub.seen)


def test_hub_with_a_revoked_identity_says_so_at_start(bus):
    certs.revoke(bus.ssldir, "hub")
    hub = start_hub(bus)
    wait_line(hub, "ExampleConsumer: the certificate of 'hub' will be refused by its peers")
    assert any("revoked" in line for line in hub.seen if "will be refused" in line)


def test_misconfigured_identity_is_reported_by_the_hub(bus):
    # Opted out of stopping the hub: moksha runs on without the consumer, as stock fedmsg does.
    hub = start_hub(bus, consumers=(EXAMPLE, OTHER), wait=False, **{
        "gilmsg.allow_failed_consumers": True,
        "gilmsg_example.gilmsg_name": "ghost",
        "gilmsg_example_other": True,
        "gilmsg_example_other.gilmsg_name": "hub2",
        "gilmsg_example_other.output": str(bus.root / "other.jsonl"),
    })
    wait_line(hub, "ExampleConsumer acknowledging as 'ghost': config key certnames['ghost']")
    publish(bus, ["hub2"])  # the hub runs on with its other consumer, and hears us
    # The same message reaches both consumers: one answers as hub2, the misconfigured one does
    # not fall back to answering as the hub's own name.
    with pytest.raises(gilmsg.Timeout) as info:
        publish(bus, ["hub", "hub2"], timeout=1.0)
    assert set(info.value.acked) == {"hub2"} and info.value.missing == ("hub",)


# --------------------------------------------------------------------------------------------
# several consumers, ACK topic, restart


def test_two_consumers_sharing_the_hub_identity(bus):
    hub = start_hub(bus, consumers=(EXAMPLE, OTHER), **{
        "gilmsg_example_other": True,
        "gilmsg_example_other.output": str(bus.root / "other.jsonl"),
    })
    report = publish(bus, ["hub"])
    wait_consumed(hub, report.msg_id, "ExampleConsumer")
    wait_consumed(hub, report.msg_id, "OtherExampleConsumer")
    assert [r["msg_id"] for r in records(bus.root / "consumed.jsonl")] == [report.msg_id]
    assert [r["msg_id"] for r in records(bus.root / "other.jsonl")] == [report.msg_id]
    assert {r["identity"] for r in records(bus.root / "other.jsonl")} == {"hub"}


def test_two_consumers_with_their_own_identities(bus):
    hub = start_hub(bus, consumers=(EXAMPLE, OTHER), **{
        "gilmsg_example_other": True,
        "gilmsg_example_other.gilmsg_name": "hub2",
        "gilmsg_example_other.output": str(bus.root / "other.jsonl"),
    })
    both = publish(bus, ["hub", "hub2"])
    assert set(both.acks) == {"hub", "hub2"}
    only2 = publish(bus, ["hub2"])
    for msg_id in (both.msg_id, only2.msg_id):
        wait_consumed(hub, msg_id, "OtherExampleConsumer")
        wait_consumed(hub, msg_id, "ExampleConsumer")  # consumed, though not named
    assert {r["identity"] for r in records(bus.root / "other.jsonl")} == {"hub2"}
    assert {r["identity"] for r in records(bus.root / "consumed.jsonl")} == {"hub"}


def test_acks_reach_only_a_consumer_subscribed_to_the_ack_topic(bus):
    hub = start_hub(bus, consumers=(EXAMPLE, OTHER), **{
        "gilmsg_example_other": True,
        "gilmsg_example_other.topic": ack_topic(bus.config),
        "gilmsg_example_other.output": str(bus.root / "acks.jsonl"),
    })
    report = publish(bus, ["hub"])
    wait_consumed(hub, report.msg_id, "ExampleConsumer")
    wait_line(hub, "OtherExampleConsumer consumed")
    ack_records = records(bus.root / "acks.jsonl")
    assert {r["topic"] for r in ack_records} == {ack_topic(bus.config)}
    assert report.msg_id in {r["msg"]["ack_msg_id"] for r in ack_records}
    assert all(r["topic"] != ack_topic(bus.config)
               for r in records(bus.root / "consumed.jsonl"))


def test_hub_restart_between_publishes(bus):
    hub = start_hub(bus)
    first = publish(bus, ["hub"], msg={"n": 1})
    wait_consumed(hub, first.msg_id)
    hub.signal(signal.SIGTERM)
    assert hub.wait() == 0

    # Published while no hub runs: re-sent until the new hub is up, then acknowledged.
    result: dict[str, Any] = {}
    publisher = threading.Thread(
        target=lambda: result.update(report=publish(bus, ["hub"], msg={"n": 2}, timeout=60)))
    publisher.start()
    hub = start_hub(bus)
    publisher.join(70)
    assert "report" in result, "the publish did not return"
    second = result["report"]
    wait_consumed(hub, second.msg_id)
    third = publish(bus, ["hub"], msg={"n": 3})
    wait_consumed(hub, third.msg_id)
    assert [r["msg"]["n"] for r in records(bus.root / "consumed.jsonl")] == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# stopping


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_stops_an_idle_hub(bus, signum):
    hub = start_hub(bus)
    report = publish(bus, ["hub"])
    wait_consumed(hub, report.msg_id)
    hub.signal(signum)
    assert hub.wait() == 0  # an idle hub that ignored it would be killed after DEFAULT_WAIT
    wait_line(hub, f"{signal.Signals(signum).name}: stopping the hub")


def test_signal_waits_for_the_message_being_consumed(bus):
    hub = start_hub(bus, **{"gilmsg_example.delay": 1})
    report = publish(bus, ["hub"])  # acknowledged on receipt, before consume() starts
    wait_line(hub, f"ExampleConsumer consuming {report.msg_id}")
    hub.signal(signal.SIGINT)
    assert hub.wait() == 0
    assert [r["msg_id"] for r in records(bus.root / "consumed.jsonl")] == [report.msg_id]


def test_acknowledged_on_receipt_while_consume_is_busy(bus):
    hub = start_hub(bus, **{"gilmsg_example.delay": 3600})
    first = publish(bus, ["hub"])
    wait_line(hub, f"ExampleConsumer consuming {first.msg_id}")
    # The only worker is stuck in consume(): the ACK must not wait for it.
    second = publish(bus, ["hub"])
    assert set(second.acks) == {"hub"}
    hub.signal(signal.SIGTERM)
    wait_line(hub, "SIGTERM: stopping the hub")
    hub.signal(signal.SIGTERM)
    assert hub.wait() == 128 + signal.SIGTERM


def test_second_signal_exits_at_once_while_consume_is_stuck(bus):
    hub = start_hub(bus, **{"gilmsg_example.delay": 3600})
    report = publish(bus, ["hub"])
    wait_line(hub, f"ExampleConsumer consuming {report.msg_id}")
    hub.signal(signal.SIGTERM)
    wait_line(hub, "SIGTERM: stopping the hub")
    hub.signal(signal.SIGINT)
    assert hub.wait() == 128 + signal.SIGINT  # waiting for consume() would take an hour
    assert records(bus.root / "consumed.jsonl") == []


# --------------------------------------------------------------------------------------------
# the entry-point route: pip install the example, run fedmsg-hub with no --with-consumers


@pytest.fixture(scope="session")
def installed_example(tmp_path_factory) -> Path:
    """The example package pip-installed into a private target dir (the venv is untouched)."""
    base = tmp_path_factory.mktemp("example")
    src, target = base / "src", base / "site"
    shutil.copytree(EXAMPLE_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(src)],
        check=True, timeout=120, capture_output=True,
    )
    assert list(target.glob("gilmsg_example-*.dist-info"))
    return target


def test_consumer_found_through_the_moksha_consumer_entry_point(bus, installed_example):
    hub = bus.spawn_hub("hub", pythonpath=[installed_example], **{
        "gilmsg_example": True,
        "gilmsg_example.output": str(bus.root / "consumed.jsonl"),
    })
    report = publish(bus, ["hub"])
    wait_consumed(hub, report.msg_id)
    assert [r["msg_id"] for r in records(bus.root / "consumed.jsonl")] == [report.msg_id]


# --------------------------------------------------------------------------------------------
# batched ACKs (on by default)


def test_batching_is_on_by_default_in_the_hub_consumer(bus, raw, acks):
    """Messages the hub reads in one go are answered by batched ACKs; each is consumed once."""
    from gilmsg.consumers.hub import GilmsgConsumer

    assert GilmsgConsumer.gilmsg_batch_acks is True
    hub = start_hub(bus)
    raw.wait_subscriber()
    acks.sync(raw_probe(raw))
    envs = [raw.signed(msg={"burst": n}) for n in range(40)]
    hub.proc.send_signal(signal.SIGSTOP)  # they pile up unread, to be read in one go
    try:
        for env in envs:
            raw.send(env)
    finally:
        hub.proc.send_signal(signal.SIGCONT)
    for env in envs:
        acks.until(env["msg_id"])
    assert max(acks.sizes) > 1  # several messages under one signature
    assert set(acks.signers) == {"hub"}
    for env in envs:
        wait_consumed(hub, env["msg_id"])
    consumed = [r["msg_id"] for r in records(bus.root / "consumed.jsonl")]
    assert sorted(m for m in consumed if m in {e["msg_id"] for e in envs}) == sorted(
        e["msg_id"] for e in envs)


def test_batching_can_be_turned_off_and_settlements_batch_too(bus, raw, acks):
    hub = start_hub(bus, **{"gilmsg_example.gilmsg_batch_acks": False})
    raw.wait_subscriber()
    acks.sync(raw_probe(raw))
    envs = [raw.signed(msg={"burst": n}) for n in range(20)]
    hub.proc.send_signal(signal.SIGSTOP)
    try:
        for env in envs:
            raw.send(env)
    finally:
        hub.proc.send_signal(signal.SIGCONT)
    for env in envs:
        acks.until(env["msg_id"])
    assert set(acks.sizes) == {1}  # one signed ACK per message


def test_a_publisher_requiring_processed_gets_batched_settlements(bus):
    hub = start_hub(bus, **{"gilmsg_example.gilmsg_ack_mode": "processed"})
    cfg = bus.config_for("pub")
    pending = [gilmsg.publish_async(topic="test", msg={"n": n}, modname="hubtest",
                                    recipients=["hub"], ack_timeout=DEFAULT_WAIT,
                                    require="processed", **cfg) for n in range(30)]
    reports = [p.result() for p in pending]
    assert all(r.answers["hub"].status == "processed" for r in reports)
    for report in reports:
        wait_consumed(hub, report.msg_id)
