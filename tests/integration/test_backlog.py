"""A slow recipient's backlog is bounded in bytes, and nothing is lost at the bound.

``gilmsg.receive_backlog_bytes`` (default 32 MiB) caps what a receiver buffers per peer. A
reader thread drains libzmq's queues continuously (their ``RCVHWM`` is the generic one, so
libzmq never stops reading a connection: with libzmq 4.3.5 that could abort the process); what
would exceed the bound is dropped unread and never acknowledged, so the publisher (here a
durable outbox and its runner) sends it again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import pytest
import zmq

from gilmsg.core.wire import MAX_FRAME_BYTES
from gilmsg.errors import ConfigError
from gilmsg.outbox import Outbox
from gilmsg.transport import zmq as gzmq
from gilmsg.transport.zmq.subscription import open_sub
from tests.faults.checks import assert_once_each, await_delivered, delivered


def test_the_backlog_is_counted_in_whole_frames():
    assert gzmq.receive_hwm({}) == gzmq.RECEIVE_BACKLOG_DEFAULT // MAX_FRAME_BYTES == 32
    assert gzmq.receive_hwm({gzmq.RECEIVE_BACKLOG_KEY: 5 * MAX_FRAME_BYTES + 7}) == 5


@pytest.mark.parametrize("value", [0, MAX_FRAME_BYTES - 1, "32M", True, 1.5e6, 1 << 40])
def test_a_bad_backlog_is_a_config_error(value):
    with pytest.raises(ConfigError, match=gzmq.RECEIVE_BACKLOG_KEY):
        gzmq.receive_hwm({gzmq.RECEIVE_BACKLOG_KEY: value})


def test_receiving_sockets_keep_the_generic_high_water_mark():
    ctx = zmq.Context()
    sock = open_sub(ctx, "", gzmq.LinkOptions())
    try:
        assert sock.getsockopt(zmq.RCVHWM) == gzmq.HWM
        assert sock.getsockopt(zmq.MAXMSGSIZE) == MAX_FRAME_BYTES
    finally:
        sock.close(0)
        ctx.term()


def test_beyond_the_bound_arriving_messages_are_dropped_unread(caplog):
    """A bound of 1 MiB, 20 messages of 300 KiB and nobody reading: the first three are kept,
    in order, and the other 17 dropped and counted; the reader thread kept reading. The first
    drop is logged at once, the other 16 in one summary line (at close here)."""
    caplog.set_level(logging.WARNING, "gilmsg.transport.zmq")
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = gzmq.subscribe([("peer", f"tcp://127.0.0.1:{port}")], "t",
                         {gzmq.RECEIVE_BACKLOG_KEY: MAX_FRAME_BYTES})
    try:
        assert pub.poll(10_000), "the subscription never arrived"
        assert pub.recv() == b"\x01t"
        for i in range(20):
            pub.send_multipart([b"t", b"%02d" % i + b"x" * (300 << 10)])
        deadline = time.monotonic() + 30
        while sub.dropped < 17:
            assert time.monotonic() < deadline, f"dropped {sub.dropped} of 17"
            time.sleep(0.05)
        assert sub.buffered() == 3 * (1 + 2 + (300 << 10))
        kept = []
        while len(kept) < 3:
            kept += [frames[1][:2] for _, _, frames in sub.receive(5.0)]
        assert kept == [b"00", b"01", b"02"] and sub.dropped == 17 and sub.buffered() == 0
        assert sub.receive(0) == []
    finally:
        sub.close()
        pub.close()
        ctx.term()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "receive backlog from peer" in lines[0] and "dropped unread" in lines[0]
    assert lines[1].startswith("refused 16 more messages")


def test_ignored_topics_are_dropped_by_the_reader_and_never_handed_over():
    """A tail of the whole bus names the ACK topics in ``ignore``: the reader thread drops
    those messages on their topic frame (counted in ``ignored``, not in the backlog), and the
    application receives only the rest, in order. A topic that merely starts with an ignored
    one is not ignored."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = gzmq.subscribe([("peer", f"tcp://127.0.0.1:{port}")], "", {}, ignore=["a.ack"])
    try:
        assert pub.poll(10_000), "the subscription never arrived"
        assert pub.recv() == b"\x01"
        for i in range(10):
            pub.send_multipart([b"a.ack", b"ack %d" % i])
            pub.send_multipart([b"a.ack.more" if i % 2 else b"t", b"msg %d" % i])
        kept = []
        deadline = time.monotonic() + 30
        while len(kept) < 10:
            assert time.monotonic() < deadline, f"received {kept}"
            kept += [(frames[0], frames[1]) for _, _, frames in sub.receive(1.0)]
        assert kept == [(b"a.ack.more" if i % 2 else b"t", b"msg %d" % i) for i in range(10)]
        assert sub.ignored == 10 and sub.dropped == 0 and sub.buffered() == 0
    finally:
        sub.close()
        pub.close()
        ctx.term()


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


def test_a_tail_behind_for_longer_than_the_heartbeat_timeout_lives(make_bus, tmp_path):
    """gilmsg-tail (its application 50 ms a message) is stopped for 3 s, three times the
    heartbeat timeout, while 200 messages are stored for it; its publisher drops the silent
    connection meanwhile. Once continued, gilmsg-tail reads the burst from the kernel; libzmq
    4.3.5 aborted here when its queue (32 frames) filled before it saw the dropped connection
    (issue 23). It is still running, and each message reaches it once."""
    bus = make_bus(["pub", "r1"], extra={"gilmsg.heartbeat_ivl": 0.3,
                                         "gilmsg.heartbeat_timeout": 1.0})
    r1 = bus.spawn_tail("r1", "--exec", "sleep 0.05",
                        "--dedup-file", str(tmp_path / "r1-seen.db"))
    with Outbox(tmp_path / "outbox.db", **bus.config_for("pub")) as outbox:
        outbox.start_runner(window=2.0)
        ids = [p.msg_id for p in outbox.publish_many([("first", {"n": -1})], "backlog", ["r1"],
                                                     ack_timeout=2.0)]
        await_delivered(r1, ids, timeout=60)  # connected and subscribed
        os.killpg(r1.proc.pid, signal.SIGSTOP)
        try:
            ids += [p.msg_id for p in outbox.publish_many(
                [("slow", {"n": i}) for i in range(200)], "backlog", ["r1"], ack_timeout=2.0)]
            time.sleep(3.0)  # the fault: stopped for 3 heartbeat timeouts
        finally:
            os.killpg(r1.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 120
        while set(ids) - set(delivered(r1)) or outbox.store.stats(
                time.time()).counts.get("pending", 0):
            assert r1.proc.poll() is None, f"gilmsg-tail ended ({r1.proc.returncode}): " \
                                           f"{r1.stderr[-300:]}"
            assert time.monotonic() < deadline, "not every message was delivered"
            time.sleep(0.2)
        assert outbox.store.stats(time.time()).counts.get("delivered") == 201
    assert r1.proc.poll() is None, f"gilmsg-tail ended ({r1.proc.returncode}): {r1.stderr}"
    assert "Assertion failed" not in r1.stderr
    assert_once_each(r1)
