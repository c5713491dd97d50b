"""Freshness in a real ``fedmsg-hub`` (issue 19, finding 2): a GilmsgConsumer refuses a
replayed message genuinely signed 30 days ago, with a signed ``rejected`` ACK, and never
consumes it (the tail's side is in ``test_protocol_v4.py``)."""

from __future__ import annotations

import time

import pytest

from gilmsg.core import wire
from gilmsg.crypto import signing
from tests.integration.test_hub import (
    SERVICES,
    AckWatcher,
    Raw,
    raw_probe,
    records,
    start_hub,
    wait_consumed,
)


@pytest.fixture
def hub_bus(make_bus):
    return make_bus(SERVICES)


@pytest.fixture
def raw_sock(hub_bus):
    sock = Raw(hub_bus)
    yield sock
    sock.close()


def test_a_gilmsg_consumer_rejects_a_replayed_message_and_never_consumes_it(hub_bus, raw_sock):
    bus, raw = hub_bus, raw_sock
    hub = start_hub(bus)
    watcher = AckWatcher(bus)
    try:
        raw.wait_subscriber()
        watcher.sync(raw_probe(raw))
        signer = signing.signer_for(raw.cfg)
        old = signer.sign(wire.new_envelope("org.gilmsg.test.hubtest.raw", {"replayed": 1}, 99,
                                            ["hub"], now=time.time() - 30 * 86400))
        raw.send(old)
        marker = raw.signed(msg={"marker": True})
        raw.send(marker)
        watcher.until(marker["msg_id"])
        wait_consumed(hub, marker["msg_id"])
    finally:
        watcher.close()
    [answer] = [a for a in watcher.entries if a.msg_id == old["msg_id"]]
    assert answer.status == "rejected" and (answer.reason or "").startswith("stale"), answer
    consumed = {r["msg_id"] for r in records(bus.root / "consumed.jsonl")}
    assert marker["msg_id"] in consumed and old["msg_id"] not in consumed
