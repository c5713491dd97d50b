"""The recipient core (gilmsg.core.receiving.Receiver): every decision, no sockets, no files.

Events in (an envelope with its verdict, the durable record's answer, the application's
outcome, the end of a receive round), actions out, in the order they must be carried out.
"""

from __future__ import annotations

import itertools

import pytest

from gilmsg.core import wire
from gilmsg.core.receiving import (
    Arrived,
    Deliver,
    Drop,
    Ended,
    Failed,
    Finished,
    Handed,
    Looked,
    LookUp,
    Receiver,
    Record,
    Rejected,
    SendAck,
    Tick,
    Why,
)

ACK_TOPIC = "org.x.dev.gilmsg.ack"
TOPIC = "org.x.dev.mod.t"


def envelope(n: int = 1, recipients=("r1", "r2"), version: int = wire.PROTOCOL_VERSION,
             **changes):
    env = wire.new_envelope(TOPIC, {"n": n}, n, recipients=recipients, now=1_700_000_000.0,
                            msg_id=f"2023-{n}", username="u")
    env[wire.VERSION_FIELD] = version
    env.update(changes)
    return env


def receiver(settle: bool = False, durable: bool = False, cn: str | None = "r1",
             **kw) -> Receiver:
    return Receiver(ACK_TOPIC, cn, settle=settle, durable=durable, **kw)


def kinds(actions) -> list[str]:
    return [type(a).__name__ for a in actions]


def same(actions, expected) -> bool:
    """Equal, type by type (events and actions are NamedTuples: equal tuples of two types
    would compare equal)."""
    return [type(a) for a in actions] == [type(e) for e in expected] and actions == expected


def acks(actions) -> list[wire.Ack]:
    """Every ACK entry the SendAck actions carry, parsed as a publisher would."""
    out: list[wire.Ack] = []
    for action in actions:
        if isinstance(action, SendAck):
            parsed = wire.parse_acks({"msg": action.body})
            assert parsed is not None, action.body
            out.extend(parsed)
    return out


def deliver(core: Receiver, env, batch: bool = False) -> Handed:
    """Feed ``env`` (answering a LookUp with "not consumed") and return what was handed."""
    actions = core.handle(Arrived(TOPIC, env, batch=batch))
    if isinstance(actions[-1], LookUp):
        actions = core.handle(Looked(actions[-1].handed, False))
    assert isinstance(actions[-1], Deliver), actions
    return actions[-1].handed


# -- arrival ----------------------------------------------------------------------------------

def test_a_message_addressed_to_me_is_acknowledged_then_delivered_then_only_acknowledged():
    core = receiver()
    env = envelope()
    first = core.handle(Arrived(TOPIC, env))
    assert kinds(first) == ["SendAck", "Deliver"]
    [ack] = acks(first)
    assert (ack.msg_id, ack.digest, ack.status) == (env["msg_id"], wire.digest(env), "received")
    handed = first[1].handed
    assert type(handed) is Handed and handed == Handed(wire.digest(env), env["msg_id"], False)
    again = core.handle(Arrived(TOPIC, dict(env)))
    assert kinds(again) == ["SendAck", "Drop"] and again[1].why is Why.REPEAT
    assert acks(again)[0].status == "received"


def test_a_refused_envelope_is_neither_acknowledged_nor_delivered_nor_remembered():
    core = receiver()
    env = envelope()
    assert same(core.handle(Arrived(TOPIC, env, refusal="bad signature")),
                [Drop(Why.REFUSED, env["msg_id"], "bad signature")])
    assert kinds(core.handle(Arrived(TOPIC, env))) == ["SendAck", "Deliver"]  # genuine copy


@pytest.mark.parametrize("topic, env", [
    (TOPIC, {k: v for k, v in envelope().items() if not k.startswith("gilmsg")}),  # plain
    (ACK_TOPIC, envelope()),  # ACK traffic
])
def test_plain_messages_and_acks_are_delivered_every_time_and_never_acknowledged(topic, env):
    core = receiver(settle=True, durable=True)
    for _ in range(3):
        actions = core.handle(Arrived(topic, env))
        assert same(actions, [Deliver(Handed(None, env.get("msg_id")))])
    assert core.handle(Finished(None)) == [] and len(core) == 0  # nothing is owed for them


@pytest.mark.parametrize("msg_id", ["", 7, None])
def test_a_gilmsg_message_without_a_msg_id_is_dropped(msg_id):
    actions = receiver().handle(Arrived(TOPIC, envelope(msg_id=msg_id)))
    assert kinds(actions) == ["Drop"] and actions[0].why is Why.NO_MSG_ID


def test_a_message_naming_others_is_delivered_once_without_an_ack():
    core = receiver(settle=True)
    env = envelope(recipients=["r2"])
    actions = core.handle(Arrived(TOPIC, env))
    assert kinds(actions) == ["Deliver"] and actions[0].handed.settle is False
    assert kinds(core.handle(Arrived(TOPIC, env))) == ["Drop"]
    assert core.handle(Finished(actions[0].handed.key)) == []  # nothing to settle


def test_a_message_naming_nobody_is_acknowledged_as_0_1_2_expects():
    env = envelope()
    del env[wire.RECIPIENTS_FIELD]
    assert kinds(receiver().handle(Arrived(TOPIC, env))) == ["SendAck", "Deliver"]


def test_a_watcher_sends_no_acks_and_settles_nothing():
    core = receiver(settle=True, durable=False, cn=None)
    assert core.settle is False
    actions = core.handle(Arrived(TOPIC, envelope()))
    assert kinds(actions) == ["Deliver"]
    assert core.handle(Finished(actions[0].handed.key)) == []


def test_dedup_is_on_msg_id_and_content_so_an_impostor_hides_nothing():
    core = receiver()
    env = envelope()
    impostor = {**env, "msg": {"n": 666}}
    assert kinds(core.handle(Arrived(TOPIC, env)))[-1] == "Deliver"
    assert kinds(core.handle(Arrived(TOPIC, impostor)))[-1] == "Deliver"
    assert kinds(core.handle(Arrived(TOPIC, env)))[-1] == "Drop"


def test_the_in_memory_dedup_is_bounded():
    core = receiver(seen_capacity=2)
    for n in (1, 2, 3):
        deliver(core, envelope(n))
    assert kinds(core.handle(Arrived(TOPIC, envelope(1))))[-1] == "Deliver"  # forgotten
    assert kinds(core.handle(Arrived(TOPIC, envelope(3))))[-1] == "Drop"


# -- the durable record -------------------------------------------------------------------------

def test_with_a_durable_record_the_ack_goes_out_before_the_lookup():
    core = receiver(durable=True)
    env = envelope()
    actions = core.handle(Arrived(TOPIC, env))
    assert kinds(actions) == ["SendAck", "LookUp"]
    handed = actions[1].handed
    assert handed.key == wire.digest(env)
    assert same(core.handle(Looked(handed, True)), [Drop(Why.CONSUMED, env["msg_id"])])
    assert len(core) == 0  # nothing owed for what was consumed before a restart
    assert kinds(core.handle(Arrived(TOPIC, env))) == ["SendAck", "Drop"]  # a repeat now


def test_a_message_not_in_the_durable_record_is_delivered_and_owed_a_record():
    core = receiver(durable=True)
    env = envelope()
    handed = deliver(core, env)
    assert len(core) == 1
    assert same(core.handle(Finished(handed.key)), [Record(handed.key, env["msg_id"])])
    assert core.handle(Finished(handed.key)) == []  # reported twice: the first stands
    assert len(core) == 0


def test_messages_naming_others_are_recorded_too():
    core = receiver(durable=True)
    env = envelope(recipients=["r2"])
    actions = core.handle(Arrived(TOPIC, env))
    assert kinds(actions) == ["LookUp"]  # no ACK: not mine to acknowledge
    [delivered] = core.handle(Looked(actions[0].handed, False))
    handed = delivered.handed
    assert same(core.handle(Ended(handed.key)), [Record(wire.digest(env), env["msg_id"])])


# -- the settlement kept by the durable record (a restart forgets the in-memory one) ---------

def restarted(env, status, reason=None, settle=True, batch=False):
    """A fresh core (as after a restart) fed a copy of ``env`` its record holds, settled
    ``status``: the actions of the arrival and of the record's answer, and the core."""
    core = receiver(settle=settle, durable=True)
    first = core.handle(Arrived(TOPIC, env, batch=batch))
    assert isinstance(first[-1], LookUp)
    return first, core.handle(Looked(first[-1].handed, True, status, reason)), core


@pytest.mark.parametrize("status, reason", [("processed", None), ("rejected", "no thanks")])
def test_a_settlement_is_recorded_with_the_message(status, reason):
    core = receiver(settle=True, durable=True)
    env = envelope()
    handed = deliver(core, env)
    event = Finished(handed.key) if status == "processed" else Rejected(handed.key, reason)
    record, ack = core.handle(event)
    assert same([record], [Record(handed.key, env["msg_id"], status, reason)])
    [parsed] = acks([ack])
    assert (parsed.status, parsed.reason) == (status, reason)


@pytest.mark.parametrize("status, reason", [("processed", None), ("rejected", "no thanks")])
def test_a_consumed_copy_is_answered_with_the_recorded_settlement_after_its_receipt(
        status, reason):
    env = envelope()
    first, looked, core = restarted(env, status, reason)
    assert summary(first) == ["received", "LookUp"]
    assert summary(looked) == [status, "Drop"]
    assert same(looked[-1:], [Drop(Why.CONSUMED, env["msg_id"])])
    [ack] = acks(looked)
    assert (ack.msg_id, ack.digest, ack.reason) == (env["msg_id"], wire.digest(env), reason)
    # the core remembers it now: a further copy is answered with the settlement at once
    assert summary(core.handle(Arrived(TOPIC, env))) == [status, "Drop"]


def test_a_recorded_reason_is_bounded_as_a_fresh_one_is():
    _first, looked, _core = restarted(envelope(), "rejected", "bad \x00 input " + "x" * 1000)
    [ack] = acks(looked)
    assert ack.reason.startswith("bad input xxx") and len(ack.reason) == wire.MAX_REASON_CHARS


@pytest.mark.parametrize("status", [None, "received", "bogus"])
def test_a_record_without_a_settlement_is_answered_received_as_before(status):
    _first, looked, core = restarted(envelope(), status)
    assert summary(looked) == ["Drop"]
    assert summary(core.handle(Arrived(TOPIC, envelope()))) == ["received", "Drop"]


def test_in_received_mode_a_recorded_settlement_is_not_sent():
    first, looked, _core = restarted(envelope(), "processed", settle=False)
    assert summary(first) == ["received", "LookUp"] and summary(looked) == ["Drop"]


def test_a_recorded_settlement_is_not_sent_for_a_message_naming_others():
    env = envelope(recipients=("r2",))
    first, looked, _core = restarted(env, "processed")
    assert summary(first) == ["LookUp"] and summary(looked) == ["Drop"]


def test_a_held_receipt_goes_out_before_the_recorded_settlement():
    env, other = envelope(1), envelope(2)
    core = receiver(settle=True, durable=True)
    core.handle(Arrived(TOPIC, other, batch=True))
    first = core.handle(Arrived(TOPIC, env, batch=True))
    assert summary(first) == ["LookUp"] and core.batched == 2
    looked = core.handle(Looked(first[-1].handed, True, "processed", None))
    assert summary(looked) == ["received", "processed", "Drop"]
    assert {a.msg_id for a in acks(looked)} == {env["msg_id"]}
    [rest] = core.handle(Tick())  # the other message's receipt still waits for the tick
    assert [(a.msg_id, a.status) for a in acks([rest])] == [(other["msg_id"], "received")]


# -- outcomes: every mode, every outcome, the order of the actions ------------------------------

#: (settle, durable, outcome) -> the actions, by kind and ACK status, in order.
OUTCOMES = {
    "finished": lambda key: Finished(key),
    "rejected": lambda key: Rejected(key, "no thanks"),
    "failed": lambda key: Failed(key, "RuntimeError: boom"),
    "failed, redelivered": lambda key: Failed(key, "Nack", redelivered=True),
    "ended": lambda key: Ended(key),
}
EXPECTED = {
    (True, True, "finished"): ["Record", "processed"],
    (True, True, "rejected"): ["Record", "rejected"],
    (True, True, "failed"): ["rejected"],
    (True, True, "failed, redelivered"): [],
    (True, True, "ended"): ["Record"],
    (True, False, "finished"): ["processed"],
    (True, False, "rejected"): ["rejected"],
    (True, False, "failed"): ["rejected"],
    (True, False, "failed, redelivered"): [],
    (True, False, "ended"): [],
    (False, True, "finished"): ["Record"],
    (False, True, "rejected"): ["Record"],
    (False, True, "failed"): [],
    (False, True, "failed, redelivered"): [],
    (False, True, "ended"): ["Record"],
    (False, False, "finished"): [],
    (False, False, "rejected"): [],
    (False, False, "failed"): [],
    (False, False, "failed, redelivered"): [],
    (False, False, "ended"): [],
}


def summary(actions) -> list[str]:
    out = []
    for action in actions:
        if isinstance(action, SendAck):
            out.extend(action.statuses)
        else:
            out.append(type(action).__name__)
    return out


@pytest.mark.parametrize("settle, durable, outcome", list(itertools.product(
    (True, False), (True, False), OUTCOMES)))
def test_every_outcome_in_every_mode(settle, durable, outcome):
    core = receiver(settle=settle, durable=durable)
    env = envelope()
    handed = deliver(core, env)
    assert handed.settle is settle
    actions = core.handle(OUTCOMES[outcome](handed.key))
    assert summary(actions) == EXPECTED[(settle, durable, outcome)]
    for ack in acks(actions):  # a settlement names the message and its content
        assert (ack.msg_id, ack.digest) == (env["msg_id"], wire.digest(env))
    settlement = [(a.status, a.reason) for a in acks(actions)] or [(None, None)]
    for record in [a for a in actions if isinstance(a, Record)]:  # with the ACK it precedes
        assert same([record], [Record(wire.digest(env), env["msg_id"], *settlement[0])])
    assert len(core) == 0
    assert core.handle(OUTCOMES["finished"](handed.key)) == []  # the first outcome stands
    # what a copy arriving later gets
    copy = core.handle(Arrived(TOPIC, dict(env)))
    if outcome == "failed, redelivered":
        assert summary(copy)[-1] in ("Deliver", "LookUp")  # forgotten: delivered again
    else:
        assert summary(copy)[-1] == "Drop"


def test_the_record_is_committed_before_the_processed_ack_is_sent():
    """Issue 23: a crash between the two must lose an ACK, never consume a message twice."""
    core = receiver(settle=True, durable=True)
    handed = deliver(core, envelope())
    actions = core.handle(Finished(handed.key))
    assert [type(a) for a in actions] == [Record, SendAck]
    assert actions[1].statuses == ("processed",)
    handed = deliver(core, envelope(2))
    actions = core.handle(Rejected(handed.key, "bad"))
    assert [type(a) for a in actions] == [Record, SendAck]


def test_a_failure_is_never_recorded():
    """The hub: a consume() that raises keeps no record (a re-sent copy after a restart is
    consumed again)."""
    for settle in (True, False):
        core = receiver(settle=settle, durable=True)
        handed = deliver(core, envelope())
        assert not any(isinstance(a, Record) for a in core.handle(Failed(handed.key, "x")))


def test_a_copy_after_settlement_is_answered_with_the_settlement():
    core = receiver(settle=True)
    env, other = envelope(1), envelope(2)
    core.handle(Finished(deliver(core, env).key))
    core.handle(Rejected(deliver(core, other).key, "bad \x00 input " + "x" * 1000))
    [again] = acks(core.handle(Arrived(TOPIC, env)))
    assert again.status == "processed"
    [refused] = acks(core.handle(Arrived(TOPIC, other)))
    assert refused.status == "rejected" and refused.reason.startswith("bad input xxx")
    assert len(refused.reason) == wire.MAX_REASON_CHARS


def test_a_copy_before_settlement_is_answered_received():
    core = receiver(settle=True)
    env = envelope()
    handed = deliver(core, env)
    assert summary(core.handle(Arrived(TOPIC, env))) == ["received", "Drop"]
    assert summary(core.handle(Finished(handed.key))) == ["processed"]


def test_an_outcome_for_something_never_handed_over_does_nothing():
    core = receiver(settle=True, durable=True)
    for event in (Finished("nope"), Rejected("nope", "r"), Failed("nope", "r"), Ended("nope"),
                  Finished(None)):
        assert core.handle(event) == []


# -- batches -------------------------------------------------------------------------------

def test_batched_acks_wait_for_the_tick_and_go_out_as_one():
    core = receiver()
    envs = [envelope(n) for n in range(3)]
    for env in envs:
        assert kinds(core.handle(Arrived(TOPIC, env, batch=True))) == ["Deliver"]
    assert core.batched == 3
    [action] = core.handle(Tick())
    assert wire.BATCH_FIELD in action.body
    assert [a.msg_id for a in acks([action])] == [e["msg_id"] for e in envs]
    assert core.handle(Tick()) == [] and core.batched == 0


def test_a_batch_of_one_is_a_single_ack_and_big_batches_are_cut_at_max_batch():
    core = receiver()
    core.handle(Arrived(TOPIC, envelope(), batch=True))
    [single] = core.handle(Tick())
    assert wire.BATCH_FIELD not in single.body and single.statuses == ("received",)
    for n in range(wire.MAX_BATCH + 1):
        core.handle(Arrived(TOPIC, envelope(n), batch=True))
    first, second = core.handle(Tick())
    assert len(first.body[wire.BATCH_FIELD]) == wire.MAX_BATCH
    assert wire.BATCH_FIELD not in second.body


def test_a_publisher_that_takes_no_batches_is_acknowledged_at_once():
    core = receiver()
    old = envelope(version=2)
    assert kinds(core.handle(Arrived(TOPIC, old, batch=True))) == ["SendAck", "Deliver"]
    assert core.handle(Tick()) == []


def test_a_msg_id_twice_in_one_batch_is_acknowledged_once_the_last_word_standing():
    core = receiver()
    env = envelope()
    core.handle(Arrived(TOPIC, env, batch=True))
    core.handle(Arrived(TOPIC, {**env, "msg": {"n": 666}}, batch=True))  # same msg_id
    [action] = core.handle(Tick())
    [ack] = acks([action])
    assert ack.digest == wire.digest({**env, "msg": {"n": 666}})


def test_settlements_are_never_batched():
    core = receiver(settle=True)
    handed = core.handle(Arrived(TOPIC, envelope(), batch=True))[-1].handed
    core.handle(Tick())
    assert summary(core.handle(Finished(handed.key))) == ["processed"]
    assert core.batched == 0


@pytest.mark.parametrize("durable", (True, False))
@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_a_settlement_takes_its_held_receipt_out_of_the_batch_and_sends_it_first(
        outcome, durable):
    """A hub's worker may settle a message before the receive loop's Tick: its receipt ACK,
    still held, leaves before its settlement (a publisher requiring ``received`` must never
    hear ``rejected`` first); a message not settled keeps its receipt for the Tick."""
    core = receiver(settle=True, durable=durable)
    env, other = envelope(1), envelope(2)
    handed = deliver(core, env, batch=True)
    deliver(core, other, batch=True)
    assert core.batched == 2
    actions = core.handle(OUTCOMES[outcome](handed.key))
    settled = EXPECTED[(True, durable, outcome)]
    if any(status in settled for status in ("processed", "rejected")):
        assert summary(actions) == ["received", *settled]
        assert acks(actions)[0].msg_id == env["msg_id"]
        assert acks(actions)[0].digest == wire.digest(env)
        waiting = [other["msg_id"]]
    else:
        assert summary(actions) == settled
        waiting = [env["msg_id"], other["msg_id"]]
    assert sorted(a.msg_id for a in acks(core.handle(Tick()))) == waiting


# -- protocol 4: admission (freshness, SHA-1) and SHA-256 ACKs ----------------------------------

BATCH_TOPIC = "org.x.dev.gilmsg.batch"


@pytest.mark.parametrize("durable", [False, True])
def test_an_inadmissible_message_is_answered_rejected_with_the_reason_and_not_delivered(durable):
    core = receiver(settle=True, durable=durable)
    env = envelope()
    reason = "stale: timestamp 1700000000 is 999999 s old, more than gilmsg.max_message_age"
    actions = core.handle(Arrived(TOPIC, env, inadmissible=reason))
    assert kinds(actions) == ["SendAck", "Drop"]  # no LookUp, no Deliver
    [ack] = acks(actions)
    assert (ack.msg_id, ack.digest, ack.status, ack.reason) == (
        env["msg_id"], wire.digest(env), "rejected", reason)
    assert actions[0].hash == "sha256"  # a protocol 4 message: its ACK is SHA-256
    assert same(actions[1:], [Drop(Why.INADMISSIBLE, env["msg_id"], reason)])
    assert len(core) == 0
    # not remembered: once admissible (a re-send with a fresh copy), it is delivered
    assert deliver(core, dict(env)).key == wire.digest(env)


def test_an_inadmissible_message_naming_others_is_dropped_without_an_ack():
    core = receiver()
    env = envelope(recipients=("r2",))
    actions = core.handle(Arrived(TOPIC, env, inadmissible="SHA-1 refused: ..."))
    assert same(actions, [Drop(Why.INADMISSIBLE, env["msg_id"], "SHA-1 refused: ...")])


def test_a_signature_refusal_wins_over_admission():
    core = receiver()
    env = envelope()
    actions = core.handle(Arrived(TOPIC, env, refusal="bad signature", inadmissible="stale"))
    assert same(actions, [Drop(Why.REFUSED, env["msg_id"], "bad signature")])


def test_acks_are_signed_with_the_hash_of_the_messages_version():
    core = receiver(settle=True)
    v4, v3 = envelope(1), envelope(2, version=3)
    [ack4, _] = core.handle(Arrived(TOPIC, v4))
    [ack3, _] = core.handle(Arrived(TOPIC, v3))
    assert (ack4.hash, ack4.topic, ack3.hash, ack3.topic) == ("sha256", None, "sha1", None)
    [settled4] = core.handle(Finished(wire.digest(v4)))
    [settled3] = core.handle(Finished(wire.digest(v3)))
    assert (settled4.hash, settled3.hash) == ("sha256", "sha1")


def test_batches_are_split_by_hash_and_v4_batches_go_on_the_batch_topic():
    core = receiver(batch_topic=BATCH_TOPIC)
    v4 = [envelope(n) for n in (1, 2)]
    v3 = [envelope(n, version=3) for n in (3, 4)]
    for env in v4 + v3:
        assert kinds(core.handle(Arrived(TOPIC, env, batch=True))) == ["Deliver"]
    out = core.handle(Tick())
    assert [(a.hash, a.topic) for a in out] == [("sha256", BATCH_TOPIC), ("sha1", None)]
    assert [len(a.body[wire.BATCH_FIELD]) for a in out] == [2, 2]


def test_the_batch_topic_is_an_ack_topic():
    core = receiver(batch_topic=BATCH_TOPIC)
    env = envelope()
    assert kinds(core.handle(Arrived(BATCH_TOPIC, env))) == ["Deliver"]  # never acknowledged
