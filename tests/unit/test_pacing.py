"""The publisher's re-send policy (gilmsg.core.pacing and the Machine that uses it): pure, no
sockets, no clock; times are made up."""

from __future__ import annotations

import pytest

from gilmsg.core import wire
from gilmsg.core.delivery import AckReceived, Delivery, Machine, Send, Sent, SubscriberJoined, Tick
from gilmsg.core.pacing import REORDER, Pacer, RttEstimator
from gilmsg.core.wire import Ack

FRAMES = [b"t", b"{}"]


def make(n: int, recipients: tuple[str, ...] = ("r1",), at: float = 100.0) -> Delivery:
    env = wire.new_envelope("org.example.t", {"n": n}, n, recipients)
    return Delivery(env["msg_id"], wire.digest(env), env["topic"], recipients, at, at + 60)


def ack(d: Delivery, who: str, at: float) -> AckReceived:
    return AckReceived(Ack(d.msg_id, d.digest, "received"), who, at)


def sends(actions: list) -> list[str]:
    return [a.msg_id for a in actions if isinstance(a, Send)]


def test_estimator_follows_rfc_6298():
    est = RttEstimator()
    assert est.rto is None
    est.sample(0.1)
    assert (est.srtt, est.rttvar) == (pytest.approx(0.1), pytest.approx(0.05))
    assert est.rto == pytest.approx(0.1 + 4 * 0.05)
    est.sample(0.3)
    assert est.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.2)
    assert est.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.3)
    for _ in range(200):  # steady: variation decays, the clock granularity remains
        est.sample(0.01)
    assert est.rto == pytest.approx(0.01 + est.granularity, abs=1e-4)
    est.sample(1e6)
    assert est.rto == est.ceiling


def test_a_backlog_being_answered_is_not_resent():
    """64 copies out at once; the recipient answers them one by one, 10 ms apart: however long
    the last ones wait, none is re-sent while answers keep coming."""
    machine = Machine()
    warm = make(0)
    machine.handle(Sent(warm, FRAMES, 99.0))
    machine.handle(ack(warm, "r1", 99.005))  # RTO about 15 ms
    ds = [make(n) for n in range(1, 65)]
    for d in ds:
        machine.handle(Sent(d, FRAMES, 100.0))
    resent = []
    now = 100.0
    for d in ds:
        now += 0.01
        resent += sends(machine.handle(Tick(now)))
        machine.handle(ack(d, "r1", now))
    assert resent == []
    assert all(d.sends == 1 for d in ds) and len(machine) == 0


def test_a_copy_overtaken_by_later_answers_is_resent_at_once():
    machine = Machine()
    ds = [make(n) for n in range(REORDER + 1)]
    for d in ds:
        machine.handle(Sent(d, FRAMES, 100.0))
    lost = ds[0]
    for i, d in enumerate(ds[1:REORDER], start=1):  # answers of copies sent 1..REORDER-1 later
        machine.handle(ack(d, "r1", 100.0 + i * 0.001))
    assert not lost.overtaken
    machine.handle(ack(ds[REORDER], "r1", 100.004))  # REORDER sends later: lost
    assert lost.overtaken
    assert sends(machine.handle(Tick(100.01))) == []  # its first back-off delay (20 ms) first
    assert sends(machine.handle(Tick(100.02))) == [lost.msg_id]
    assert lost.sends == 2 and not lost.overtaken


def test_a_quiet_recipient_gets_a_copy_after_its_rto_with_backoff():
    machine = Machine()
    warm = make(0)
    machine.handle(Sent(warm, FRAMES, 99.0))
    machine.handle(ack(warm, "r1", 99.1))  # RTO 0.1 + 4 * 0.05 = 0.3
    d = make(1)
    machine.handle(Sent(d, FRAMES, 100.0))
    assert d.next_send == pytest.approx(100.3)
    assert sends(machine.handle(Tick(100.29))) == []
    assert sends(machine.handle(Tick(100.3))) == [d.msg_id]
    assert d.next_send == pytest.approx(100.6)  # the RTO still bounds each wait from below


def test_answers_to_older_copies_put_a_timer_resend_off():
    machine = Machine()
    warm = make(0)
    machine.handle(Sent(warm, FRAMES, 99.0))
    machine.handle(ack(warm, "r1", 99.01))  # RTO 0.03
    older, d = make(1), make(2)
    machine.handle(Sent(older, FRAMES, 100.0))
    machine.handle(Sent(d, FRAMES, 100.0))
    machine.handle(ack(older, "r1", 100.025))  # r1 is working through the backlog
    assert sends(machine.handle(Tick(100.031))) == []  # due by the timer, but plausibly in transit
    assert d.next_send > 100.031
    assert sends(machine.handle(Tick(d.next_send))) == [d.msg_id]  # r1 went quiet


def test_a_joining_subscriber_gets_every_unanswered_copy_at_once():
    machine = Machine()
    warm = make(0)
    machine.handle(Sent(warm, FRAMES, 99.0))
    machine.handle(ack(warm, "r1", 99.5))  # a long RTO
    ds = [make(n, ("r1", "r2")) for n in range(1, 4)]
    for d in ds:
        machine.handle(Sent(d, FRAMES, 100.0))
    machine.handle(ack(ds[0], "r1", 100.001))
    machine.handle(ack(ds[0], "r2", 100.001))
    assert sorted(sends(machine.handle(SubscriberJoined(100.002)))) == sorted(
        d.msg_id for d in ds[1:])


def test_once_estimated_only_messages_sent_once_give_round_trip_samples():
    machine = Machine()
    first = make(0)
    machine.handle(Sent(first, FRAMES, 99.0))
    machine.handle(ack(first, "r1", 99.004))
    d = make(1)
    machine.handle(Sent(d, FRAMES, 100.0))
    machine.handle(Tick(100.02))  # r1 quiet for its RTO: re-sent
    assert d.sends == 2
    machine.handle(ack(d, "r1", 100.5))
    assert machine.pacer.estimator("r1").samples == 1  # Karn: whose copy was answered?
    e = make(2)
    machine.handle(Sent(e, FRAMES, 101.0))
    machine.handle(ack(e, "r1", 101.004))
    assert machine.pacer.estimator("r1").samples == 2


def test_a_recipient_that_only_answered_resent_copies_still_gets_an_estimate():
    """Without one it would count as quiet forever, and every message would be re-sent to it
    on the back-off schedule (a storm under load): its first answers are timed from the first
    send, an overestimate."""
    machine = Machine()
    d = make(1)
    machine.handle(Sent(d, FRAMES, 100.0))
    machine.handle(Tick(100.02))
    machine.handle(Tick(100.06))
    assert d.sends == 3
    machine.handle(ack(d, "r1", 100.5))
    assert machine.pacer.estimator("r1").srtt == pytest.approx(0.5)
    e = make(2)
    machine.handle(Sent(e, FRAMES, 101.0))
    assert e.next_send >= 101.5  # not 101.02
    machine.handle(ack(make(3), "r1", 101.2))  # (unknown message: ignored)
    assert sends(machine.handle(Tick(101.1))) == []


def test_finished_deliveries_are_forgotten_by_the_pacer():
    machine = Machine()
    ds = [make(n, ("r1", "dead")) for n in range(50)]
    for d in ds:
        machine.handle(Sent(d, FRAMES, 100.0))
    assert machine.pacer.waiting("dead") == 50
    machine.handle(Tick(161.0))  # every deadline passed
    assert len(machine) == 0 and machine.pacer.waiting("dead") == 0
    assert machine.pacer.waiting("r1") == 0


def test_pacer_skips_copies_already_answered_or_over():
    pacer = Pacer(reorder=1)
    a, b, c = make(1, ("r1", "r2")), make(2, ("r1", "r2")), make(3, ("r1", "r2"))
    for d in (a, b, c):
        pacer.sent(d, d.silent)
    a.acks["r1"] = 1.0  # answered: not overtaken, whatever comes after it
    assert pacer.answered("r1", c, 100.0, 0.01, lambda d: True) == [b]
    assert pacer.waiting("r1") == 0
    assert pacer.answered("r2", c, 100.0, 0.01, lambda d: d is not a) == [b]
