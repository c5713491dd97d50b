"""A slow recipient's backlog is bounded in bytes, and nothing is lost at the bound.

``gilmsg.receive_backlog_bytes`` (default 32 MiB) caps what each receiving socket queues per
peer: ``backlog // MAX_FRAME_BYTES`` messages, each at most MAX_FRAME_BYTES. Beyond it ZeroMQ
stops reading from that peer; what the peer then drops is never acknowledged, so the publisher
(here a durable outbox and its runner) sends it again.
"""

from __future__ import annotations

import json
import time

import pytest
import zmq

from gilmsg.core.wire import MAX_FRAME_BYTES
from gilmsg.errors import ConfigError
from gilmsg.outbox import Outbox
from gilmsg.testing import free_port
from gilmsg.transport import zmq as gzmq
from tests.faults.checks import assert_once_each, await_delivered


def test_the_backlog_is_counted_in_whole_frames():
    assert gzmq.receive_hwm({}) == gzmq.RECEIVE_BACKLOG_DEFAULT // MAX_FRAME_BYTES == 32
    assert gzmq.receive_hwm({gzmq.RECEIVE_BACKLOG_KEY: 5 * MAX_FRAME_BYTES + 7}) == 5


@pytest.mark.parametrize("value", [0, MAX_FRAME_BYTES - 1, "32M", True, 1.5e6, 1 << 40])
def test_a_bad_backlog_is_a_config_error(value):
    with pytest.raises(ConfigError, match=gzmq.RECEIVE_BACKLOG_KEY):
        gzmq.receive_hwm({gzmq.RECEIVE_BACKLOG_KEY: value})


def test_every_receiving_socket_gets_the_bound():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = gzmq.subscribe([("peer", endpoint)], "", {gzmq.RECEIVE_BACKLOG_KEY: 3 << 20})
    try:
        assert [s.getsockopt(zmq.RCVHWM) for s in sub._subs] == [3]
        assert [s.getsockopt(zmq.MAXMSGSIZE) for s in sub._subs] == [MAX_FRAME_BYTES]
    finally:
        sub.close()


def test_a_slow_recipient_at_a_one_frame_bound_loses_nothing(make_bus, tmp_path):
    """60 messages of 200 KiB stored at once; the recipient queues at most one frame per peer
    and takes 50 ms per message; each reaches it once and the outbox ends with nothing owed."""
    bus = make_bus(["pub", "r1"], extra={gzmq.RECEIVE_BACKLOG_KEY: MAX_FRAME_BYTES})
    r1 = bus.spawn_tail("r1", "--exec", "sleep 0.05", "--dedup-file",
                        str(tmp_path / "r1-seen.db"))
    with Outbox(tmp_path / "outbox.db", **bus.config_for("pub")) as outbox:
        pending = outbox.publish_many([("big", {"n": i, "pad": "x" * (200 << 10)})
                                       for i in range(60)], "backlog", ["r1"], ack_timeout=2.0)
        ids = [p.msg_id for p in pending]
        outbox.start_runner(window=2.0)
        await_delivered(r1, ids, timeout=120)
        deadline = time.monotonic() + 60
        while outbox.store.stats(time.time()).counts.get("pending", 0):
            assert time.monotonic() < deadline, "the outbox still owes messages"
            time.sleep(0.2)
        stats = outbox.store.stats(time.time())
        # 60 x 50 ms outlast the first attempt's 2 s: the runner's re-sends delivered the rest.
        assert any(entry.attempts > 0 for entry in outbox.store.entries())
    assert stats.counts.get("delivered") == 60, stats
    assert_once_each(r1)
    assert all(json.loads(line)["msg"]["n"] in range(60) for line in r1.seen
               if line.startswith("{"))
