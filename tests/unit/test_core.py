"""The pure core: wire format, canonical JSON, the delivery state machine; no sockets, no clock."""

from __future__ import annotations

import datetime
import itertools
import pickle

import pytest

from gilmsg.core import wire
from gilmsg.core.delivery import (
    AckReceived,
    AcksReceived,
    Answer,
    Backoff,
    Cancelled,
    Delivery,
    IgnoredAck,
    Ledger,
    Machine,
    Outcome,
    Report,
    Resolve,
    Send,
    Sent,
    State,
    SubscriberJoined,
    Tick,
)
from gilmsg.core.receiving import Seen, receive
from gilmsg.core.subscriptions import Subscriptions
from gilmsg.core.wire import Ack
from gilmsg.errors import CertificateError, InvalidInput, NotDelivered, Rejected, Timeout

ENVELOPE = wire.new_envelope(
    "org.x.dev.mod.t", {"a": 1}, 1, recipients=["r1", "r2"], now=1_700_000_000.0,
    msg_id="2023-abc", username="u",
)


def delivery(recipients=("r1", "r2"), started=100.0, timeout=5.0, env=ENVELOPE) -> Delivery:
    return Delivery(env["msg_id"], wire.digest(env), env["topic"], tuple(recipients),
                    started, started + timeout)


def ack_for(env=ENVELOPE, **changes) -> Ack:
    body = wire.ack_body(env)
    body.update(changes)
    parsed = wire.parse_ack({"msg": body})
    assert parsed is not None
    return parsed


# -- message format --------------------------------------------------------------------------

def test_envelope_has_fedmsg_fields_and_gilmsg_fields_inside_signed_content():
    assert ENVELOPE == {
        "topic": "org.x.dev.mod.t", "msg": {"a": 1}, "timestamp": 1_700_000_000,
        "msg_id": "2023-abc", "i": 1, "username": "u",
        "gilmsg_version": wire.PROTOCOL_VERSION, "gilmsg_recipients": ["r1", "r2"],
    }
    assert b'"gilmsg_recipients":["r1","r2"]' in wire.canonical_bytes(ENVELOPE)


def test_plain_envelope_has_no_gilmsg_fields():
    env = wire.new_envelope("t", {}, 3)
    assert not wire.is_gilmsg(env)
    year = datetime.datetime.fromtimestamp(env["timestamp"]).year  # as fedmsg: local time
    assert env["msg_id"].startswith(f"{year}-")


def test_canonical_bytes_ignore_credentials_and_key_order():
    signed = dict(reversed(list(ENVELOPE.items())), signature="x", certificate="y")
    assert wire.canonical_bytes(signed) == wire.canonical_bytes(ENVELOPE)
    assert wire.digest(signed) == wire.digest(ENVELOPE)


@pytest.mark.parametrize("field,value", [("topic", "other"), ("msg", {"a": 2}),
                                         ("msg_id", "2023-abd"), ("gilmsg_recipients", ["r1"])])
def test_digest_changes_with_any_field(field, value):
    assert wire.digest({**ENVELOPE, field: value}) != wire.digest(ENVELOPE)


@pytest.mark.parametrize("recipients,expected", [
    (["r1", "r2"], ("r1", "r2")), (("b", "a", "b"), ("b", "a")),
    (iter(["x"]), ("x",)),
])
def test_check_recipients_accepts(recipients, expected):
    assert wire.check_recipients(recipients) == expected


@pytest.mark.parametrize("recipients", [
    [], [""], ["  "], [" r1"], [None], [1], b"r1", {"r1": 1}, 5, ["ok", ""], "r1", "r1 r2",
])
def test_check_recipients_rejects(recipients):
    with pytest.raises(InvalidInput):
        wire.check_recipients(recipients)


@pytest.mark.parametrize("value", [0, -1, -0.5, float("nan"), float("inf"), "3", None, True,
                                   1e10])
def test_check_timeout_rejects(value):
    with pytest.raises(InvalidInput):
        wire.check_timeout(value)


def test_check_timeout_accepts_positive_numbers():
    assert wire.check_timeout(3) == 3.0
    assert wire.check_timeout(0.01) == 0.01


def test_encode_rejects_what_receivers_would_drop():
    with pytest.raises(InvalidInput, match="not valid text"):
        wire.encode("org.t.\udc80", ENVELOPE)
    with pytest.raises(InvalidInput, match="message too large"):
        wire.encode("org.t", {**ENVELOPE, "msg": "x" * wire.MAX_FRAME_BYTES})
    assert wire.decode(wire.encode("org.t", ENVELOPE)) == ("org.t", ENVELOPE)


def test_to_json_value_converts_like_fedmsg_and_rejects_the_rest():
    assert wire.to_json_value({"s": {1}}) == {"s": [1]}
    with pytest.raises(InvalidInput, match="not JSON-serialisable"):
        wire.to_json_value({"o": object()})


@pytest.mark.parametrize("env,cn,expected", [
    (ENVELOPE, "r1", True),
    (ENVELOPE, "r3", False),
    ({k: v for k, v in ENVELOPE.items() if k != "gilmsg_recipients"}, "anyone", True),  # 0.1.2
    ({**ENVELOPE, "gilmsg_recipients": "r1"}, "r1", False),  # malformed list names nobody
    ({k: v for k, v in ENVELOPE.items() if not k.startswith("gilmsg")}, "r1", False),
])
def test_wants_ack_from(env, cn, expected):
    assert wire.wants_ack_from(env, cn) is expected


def test_ack_body_binds_msg_id_and_digest():
    body = wire.ack_body(ENVELOPE)
    assert body == {"ack_msg_id": "2023-abc", "ack_digest": wire.digest(ENVELOPE),
                    "status": "received"}
    assert wire.parse_ack({"msg": body}) == Ack("2023-abc", wire.digest(ENVELOPE),
                                                    "received")


def test_ack_body_statuses():
    assert wire.ack_body(ENVELOPE, "rejected", "bad")["reason"] == "bad"
    with pytest.raises(InvalidInput):
        wire.ack_body(ENVELOPE, "maybe")


def test_parse_ack_accepts_0_1_2_bodies_without_digest():
    assert wire.parse_ack({"msg": {"ack_msg_id": "m"}}) == Ack("m", None, "received")


@pytest.mark.parametrize("msg", [
    None, "x", [], {}, {"ack_msg_id": 3}, {"ack_msg_id": ""}, {"ack_msg_id": "m", "ack_digest": 1},
    {"ack_msg_id": "m", "status": "lost"}, {"ack_msg_id": "m", "reason": 5},
])
def test_parse_ack_rejects_malformed(msg):
    assert wire.parse_ack({"msg": msg}) is None


def test_encode_decode_round_trip():
    frames = wire.encode("t", ENVELOPE)
    assert wire.decode(frames) == ("t", ENVELOPE)


@pytest.mark.parametrize("extra", [
    {"certificate": "QUJD\nKy89\n", "signature": "c2ln", "crypto": "x509"},  # base64: written as is
    {"certificate": "QUJD", "msg": {"certificate": "a\"b"}},  # the nested one is escaped
    {"certificate": 'a"b\\c\n\u00e9'},  # not base64: json escapes it, as ever
    {"certificate": "QUJD", "agent": "x"},  # a key sorting before it: the whole dumps
    {"certificate": 7}, {"certificate": ""},
])
def test_encode_writes_exactly_the_canonical_json_of_the_envelope(extra):
    envelope = {**ENVELOPE, **extra}
    assert wire.encode("t", envelope)[1] == wire.dumps(envelope).encode("utf-8")
    assert wire.encode("t", envelope)[1] == wire.dumps(envelope).encode("utf-8")  # cached


@pytest.mark.parametrize("frames", [
    [], [b"t"], [b"t", b"{}", b"x"], [b"\xff", b"{}"], [b"t", b"not json"], [b"t", b"[1]"],
    [b"t", b'{"msg_id": 1}'], [b"t", b"{" * 100_000], [b"t", b" " * (wire.MAX_FRAME_BYTES + 1)],
    [b"t", b'{"msg_id": "\xff"}'],
])
def test_decode_never_raises_on_garbage(frames):
    assert wire.decode(frames) is None


# -- bookkeeping -----------------------------------------------------------------------------

def test_done_only_when_every_recipient_acknowledged():
    d = delivery()
    assert d.missing == ("r1", "r2") and not d.done
    assert d.on_ack("r2", ack_for(), 100.5) is Outcome.ACCEPTED
    assert d.missing == ("r1",) and not d.done
    assert d.on_ack("r1", ack_for(), 101.0) is Outcome.ACCEPTED
    assert d.done and d.acks == {"r2": 0.5, "r1": 1.0}


def test_repeat_ack_does_not_change_the_time():
    d = delivery()
    d.on_ack("r1", ack_for(), 100.2)
    assert d.on_ack("r1", ack_for(), 103.0) is Outcome.REPEAT
    assert d.acks == {"r1": pytest.approx(0.2)}


@pytest.mark.parametrize("signer,ack,outcome", [
    (None, ack_for(), Outcome.FORGED_SIGNATURE),  # signature did not validate
    ("r3", ack_for(), Outcome.NOT_A_RECIPIENT),  # valid, but someone else
    ("r1", ack_for(ack_digest="0" * 64), Outcome.WRONG_DIGEST),  # another message, same id
    ("r1", ack_for(ack_digest=None), Outcome.OLD_FORMAT),  # 0.1.2 ACK: not bound to content
    ("r1", ack_for(ack_msg_id="2023-other"), Outcome.UNKNOWN_MESSAGE),
    ("r1", ack_for(status="rejected", reason="no"), Outcome.REJECTED),
])
def test_no_false_positive(signer, ack, outcome):
    d = delivery()
    assert d.on_ack(signer, ack, 100.1) is outcome
    assert d.acks == {} and not d.done


def test_ack_replayed_from_an_earlier_message_never_counts():
    earlier = wire.new_envelope("org.x.dev.mod.t", {"a": 1}, 1, ["r1"], msg_id="2023-old")
    later = {**earlier, "msg_id": "2023-new"}
    d = delivery(["r1"], env=later)
    replay = Ack("2023-new", wire.digest(earlier), "received")
    assert d.on_ack("r1", replay, 100.1) is Outcome.WRONG_DIGEST


def test_every_order_of_acks_and_forgeries_ends_done_exactly_when_all_genuine_arrived():
    events = [("r1", ack_for()), ("r2", ack_for()), (None, ack_for()), ("r3", ack_for()),
              ("r2", ack_for(ack_digest="f" * 64))]
    for order in itertools.permutations(events):
        d = delivery()
        genuine = set()
        for t, (signer, ack) in enumerate(order):
            d.on_ack(signer, ack, 100 + t)
            if signer in ("r1", "r2") and ack.digest == d.digest:
                genuine.add(signer)
            assert d.done == (genuine == {"r1", "r2"})
            assert set(d.acks) == genuine


def test_an_ack_after_the_deadline_does_not_count():
    d = delivery(["r1"], timeout=1.0)
    assert d.on_ack("r1", ack_for(), 101.0) is Outcome.LATE
    assert not d.done and d.acks == {}


def test_processed_status_counts():
    d = delivery(["r1"])
    assert d.on_ack("r1", ack_for(status="processed"), 100.1) is Outcome.ACCEPTED
    assert d.done


def test_backoff_grows_to_ceiling():
    delays = list(itertools.islice(Backoff(0.005, 2, 0.04).delays(), 6))
    assert delays == [0.005, 0.01, 0.02, 0.04, 0.04, 0.04]


def test_resend_schedule_stops_when_done_or_expired():
    d = delivery(["r1"], timeout=1.0)
    d.sent(100.0)
    assert d.sends == 1 and not d.resend_due(100.001)
    assert d.resend_due(100.02)
    d.sent(100.02)
    assert d.next_send == pytest.approx(100.06)
    assert not d.resend_due(101.0)  # deadline reached
    d.on_ack("r1", ack_for(), 100.01)
    assert not d.resend_due(100.5)


def test_ledger_routes_and_wakes_up_for_the_earliest_due_time():
    ledger = Ledger()
    a, b = delivery(["r1"]), delivery(["r1"], env={**ENVELOPE, "msg_id": "2023-b"}, timeout=0.5)
    a.sent(100.0)
    b.sent(100.0)
    ledger.add(a)
    ledger.add(b)
    assert len(ledger) == 2
    assert ledger.next_wakeup(100.0) == pytest.approx(100.02)
    assert ledger.on_ack("r1", ack_for(), 100.1) == (a, Outcome.ACCEPTED)
    assert ledger.on_ack("r1", ack_for(ack_msg_id="nope"), 100.1) == (None,
                                                                       Outcome.UNKNOWN_MESSAGE)
    assert ledger.next_wakeup(100.6) is None  # a is done, b expired: nothing left to wake for
    assert ledger.remove("2023-abc") is a and ledger.get("2023-abc") is None


def test_unsent_deliveries_do_not_wake_the_adapter():
    ledger = Ledger()
    ledger.add(delivery(["r1"]))  # registered by the caller, its send command still queued
    assert ledger.next_wakeup(100.0) is None


def test_seen_is_bounded_and_remembers_recent_ids():
    seen = Seen(capacity=3)
    assert [seen.first_time(i) for i in "abca"] == [True, True, True, False]
    assert seen.first_time("d") and len(seen) == 3
    assert "b" not in seen  # the oldest was forgotten
    assert "a" in seen  # refreshed by its repeat
    with pytest.raises(ValueError):
        Seen(0)
    seen.forget("a")  # a consumer failed on it: its next copy is new again
    seen.forget("never seen")
    assert seen.first_time("a") and not seen.first_time("d")


def test_report_and_timeout_carry_per_recipient_results():
    report = Report("m", "t", {"r1": 0.1, "r2": 0.3}, 2)
    assert report.elapsed == 0.3
    err = Timeout("m", "t", {"r1": 0.1}, ("r2", "r3"), 0.5)
    assert err.missing == ("r2", "r3") and err.acked == {"r1": 0.1}
    assert "r2, r3" in str(err) and "acknowledged by: r1" in str(err)
    import pickle

    assert pickle.loads(pickle.dumps(err)).missing == ("r2", "r3")
    refused = Timeout("m", "t", {}, ("r2",), 0.5, rejected={"r2": "quota"})
    assert refused.rejected == {"r2": "quota"} and "rejected by r2: quota" in str(refused)
    assert pickle.loads(pickle.dumps(refused)).rejected == {"r2": "quota"}


# -- canonical JSON: byte-for-byte fedmsg's ------------------------------------------------

CORPUS = [
    {},
    [],
    {"": ""},
    {"b": 1, "a": 2, "A": 3, "_": 4, "ä": 5, "10": 6, "9": 7},  # key order: code points
    {"text": "héllo wörld ☃ 𝄞 日本語 \u0000 \u001f \u007f \u2028 \u2029 \ud800"},  # lone surrogate
    {"escapes": "quote \" backslash \\ slash / tab \t nl \n cr \r bs \b ff \f"},
    {"ints": [0, -1, 1, 2**31, 2**53, 2**53 + 1, -(2**63), 2**64 + 7, 10**40]},
    {"floats": [0.0, -0.0, 0.1, 1e-7, 1e16, 1.5e300, -2.5e-300, 3.141592653589793, 1e22]},
    {"special": [float("nan"), float("inf"), float("-inf")]},  # fedmsg allows them too
    {"bools": [True, False, None]},
    {"nested": {"z": [{"y": {"x": [[], {}, [[[]]], {"w": {}}]}}], "a": {"c": 1, "b": 2}}},
    {"tuple": (1, "two", 3.0)},
    ["top", "level", {"list": 1}],
    "a bare string ☃",
    12345678901234567890,
    ENVELOPE,
    {**ENVELOPE, "signature": "abc\n" * 3, "certificate": "x" * 200, "crypto": "x509"},
]


@pytest.mark.parametrize("value", CORPUS, ids=range(len(CORPUS)))
def test_canonical_json_is_byte_identical_to_fedmsg(value):
    import fedmsg.encoding

    assert wire.dumps(value) == fedmsg.encoding.dumps(value)


def test_canonical_json_converts_what_fedmsg_converts():
    import fedmsg.encoding

    class WithJson:
        def __json__(self):
            return {"k": [1, 2]}

    value = {"obj": WithJson(), "set": {3}, "when": datetime.datetime(2026, 11, 30, 4, 15),
             "day": datetime.date(2026, 11, 30),
             "struct": datetime.datetime(2026, 1, 2).timetuple()}
    assert wire.dumps(value) == fedmsg.encoding.dumps(value)
    with pytest.raises(TypeError):
        wire.dumps({"o": object()})
    with pytest.raises(TypeError):
        fedmsg.encoding.dumps({"o": object()})


def test_canonical_bytes_match_fedmsgs_signing_input():
    import fedmsg.encoding

    signed = {**ENVELOPE, "crypto": "x509", "signature": "s", "certificate": "c"}
    stripped = {k: v for k, v in signed.items() if k not in ("signature", "certificate")}
    assert wire.canonical_bytes(signed) == fedmsg.encoding.dumps(stripped).encode()


# -- the core loads the standard library only -----------------------------------------------

CORE_MODULES = ["gilmsg.core", "gilmsg.core.wire", "gilmsg.core.delivery",
                "gilmsg.core.subscriptions", "gilmsg.core.receiving", "gilmsg.errors", "gilmsg"]


def test_core_modules_import_nothing_outside_the_standard_library():
    import subprocess
    import sys

    script = (
        "import sys\n"
        "before = set(sys.modules)\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    __import__(name)\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(' '.join(sorted(new - set(sys.stdlib_module_names) - {'gilmsg'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == [], f"third-party modules loaded by the core: {out}"


# -- the state machine: every publishing rule of docs/protocol.rst, no sockets ---------------

FRAMES = [b"org.x.dev.mod.t", b"{}"]


def started_machine(recipients=("r1", "r2"), timeout=5.0):
    machine = Machine()
    d = delivery(recipients, timeout=timeout)
    assert machine.handle(Sent(d, FRAMES, 100.0)) == []
    return machine, d


def sends(actions):
    return [a for a in actions if isinstance(a, Send)]


def test_machine_resends_the_same_frames_on_a_growing_interval_up_to_500_ms():
    machine, d = started_machine(timeout=10.0)
    assert machine.wants(d.msg_id) and len(machine) == 1
    now, gaps = 100.0, []
    for _ in range(8):
        due = machine.next_wakeup(now)
        assert machine.handle(Tick(due - 0.001)) == []  # not yet
        [send] = machine.handle(Tick(due))
        assert send == Send(d.msg_id, FRAMES)
        gaps.append(round(due - now, 6))
        now = due
    assert gaps == [0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5, 0.5]
    assert d.sends == 9


def test_machine_resends_at_once_when_a_subscriber_joins():
    machine, d = started_machine()
    assert sends(machine.handle(SubscriberJoined(100.001))) == [Send(d.msg_id, FRAMES)]
    assert Machine().handle(SubscriberJoined(100.0)) == []  # nothing pending, nothing sent


def test_machine_resolves_with_a_report_once_every_recipient_acknowledged():
    machine, d = started_machine()
    assert machine.handle(AckReceived(ack_for(), "r2", 100.5)) == []
    [resolve] = machine.handle(AckReceived(ack_for(), "r1", 101.0))
    assert resolve == Resolve(d, Report(d.msg_id, d.topic, {"r2": 0.5, "r1": 1.0}, 1))
    assert d.state is State.ACKED and not machine.wants(d.msg_id) and len(machine) == 0
    assert machine.handle(Tick(101.5)) == [] and machine.next_wakeup(101.5) is None


@pytest.mark.parametrize("signer,ack,outcome", [
    (None, ack_for(), Outcome.FORGED_SIGNATURE),
    ("r3", ack_for(), Outcome.NOT_A_RECIPIENT),
    ("r1", ack_for(ack_digest="0" * 64), Outcome.WRONG_DIGEST),
    ("r1", ack_for(ack_digest=None), Outcome.OLD_FORMAT),  # named for what it is (issue 19)
])
def test_machine_warns_about_acks_that_do_not_count_and_keeps_waiting(signer, ack, outcome):
    machine, d = started_machine(["r1"])
    assert machine.handle(AckReceived(ack, signer, 100.1)) == [IgnoredAck(ack, signer, outcome)]
    assert d.state is State.PENDING and machine.wants(d.msg_id) and d.acks == {}


def test_machine_ignores_acks_for_messages_nobody_waits_for_silently():
    machine, _d = started_machine()
    assert not machine.wants("2023-zzz")  # the adapter asks before spending any cryptography
    assert machine.handle(AckReceived(ack_for(ack_msg_id="2023-zzz"), "r1", 100.1)) == []


def test_machine_expires_at_the_deadline_with_a_timeout_naming_who_answered():
    machine, d = started_machine(["r1", "r2", "r3"], timeout=1.0)
    machine.handle(AckReceived(ack_for(), "r1", 100.2))
    machine.handle(AckReceived(ack_for(), "r3", 100.3, ))
    assert [a for a in machine.handle(Tick(100.999)) if isinstance(a, Resolve)] == []
    [resolve] = machine.handle(Tick(101.0))
    err = resolve.result
    assert isinstance(err, Timeout) and resolve.delivery is d and d.state is State.EXPIRED
    assert (err.acked, err.missing, err.rejected) == (
        {"r1": pytest.approx(0.2), "r3": pytest.approx(0.3)}, ("r2",), {})
    assert err.ack_timeout == 1.0 and len(machine) == 0
    assert [d.recipient_state(r) for r in ("r1", "r2", "r3")] == ["acked", "expired", "acked"]
    assert err.answers["r2"] == Answer("missing", None, None)
    assert err.answers["r1"] == Answer("received", pytest.approx(0.2), None)


def test_machine_a_genuine_ack_after_the_deadline_is_late_and_ends_the_delivery():
    machine, d = started_machine(["r1"], timeout=1.0)
    [resolve] = machine.handle(AckReceived(ack_for(), "r1", 101.0))
    assert isinstance(resolve.result, Timeout) and d.acks == {}


def test_machine_a_delivery_sent_after_its_deadline_times_out_at_once():
    machine = Machine()
    d = delivery(["r1"], timeout=1e-9)
    [resolve] = machine.handle(Sent(d, FRAMES, 100.5))
    assert isinstance(resolve.result, Timeout) and len(machine) == 0


def test_machine_cancel_keeps_what_had_arrived_and_stops_resending():
    machine, d = started_machine()
    machine.handle(AckReceived(ack_for(), "r1", 100.1))
    [resolve] = machine.handle(Cancelled(d.msg_id, 100.2))
    assert resolve == Resolve(d, None) and d.state is State.CANCELLED
    assert d.acks == {"r1": pytest.approx(0.1)} and d.missing == ("r2",)
    assert machine.handle(Tick(200.0)) == [] and machine.handle(Cancelled(d.msg_id, 1)) == []


def test_machine_fails_a_delivery_the_adapter_cannot_carry_on():
    machine, d = started_machine()
    error = CertificateError("CRL is past its next-update date")
    assert machine.handle(Cancelled(d.msg_id, 100.1, error)) == [Resolve(d, error)]
    assert d.state is State.FAILED


def test_machine_keeps_deliveries_apart():
    machine, a = started_machine(["r1"])
    b = delivery(["r1"], env={**ENVELOPE, "msg_id": "2023-b"})
    machine.handle(Sent(b, [b"b"], 100.0))
    [resolve] = machine.handle(AckReceived(ack_for(), "r1", 100.1))
    assert resolve.delivery is a and machine.wants("2023-b") and not machine.wants(a.msg_id)
    assert sends(machine.handle(SubscriberJoined(100.2))) == [Send("2023-b", [b"b"])]


def test_machine_refuses_what_is_not_an_event():
    with pytest.raises(TypeError):
        Machine().handle("tick")


def test_subscriptions_follow_joins_and_leaves():
    subs = Subscriptions()
    assert not subs.covers("org.x.y")
    assert subs.notice(b"\x01org.x") and subs.covers("org.x.y") and not subs.covers("org.z")
    assert not subs.notice(b"\x00org.x") and not subs.covers("org.x.y")
    assert not subs.notice(b"") and not subs.notice(b"\x02junk")


# -- the recipient's rules ------------------------------------------------------------------

ACK_TOPIC = "org.x.dev.gilmsg.ack"


@pytest.mark.parametrize("topic,env,cn,expected", [
    ("org.x.dev.mod.t", ENVELOPE, "r1", (False, True, True)),  # named: ACK, dedup
    ("org.x.dev.mod.t", ENVELOPE, "r3", (False, True, False)),  # not named: no ACK, dedup
    ("org.x.dev.mod.t", ENVELOPE, None, (False, True, False)),  # watching only
    ("org.x.dev.mod.t", {k: v for k, v in ENVELOPE.items() if k != "gilmsg_recipients"},
     "anyone", (False, True, True)),  # 0.1.2 named nobody: everyone acknowledges
    ("org.x.dev.mod.t", {k: v for k, v in ENVELOPE.items() if not k.startswith("gilmsg")},
     "r1", (False, False, False)),  # plain fedmsg: delivered every time, never acknowledged
    (ACK_TOPIC, ENVELOPE, "r1", (False, False, False)),  # ACK traffic: never acknowledged
    ("org.x.dev.mod.t", {**ENVELOPE, "msg_id": ""}, "r1", (True, False, False)),
    ("org.x.dev.mod.t", {**ENVELOPE, "msg_id": 7}, "r1", (True, False, False)),
])
def test_receive_decides_ack_drop_and_dedup(topic, env, cn, expected):
    receipt = receive(topic, env, ACK_TOPIC, cn)
    assert (receipt.drop, receipt.key is not None, receipt.acknowledge) == expected
    if receipt.acknowledge:
        assert receipt.digest == wire.digest(env)


def test_receive_keys_dedup_on_msg_id_and_content():
    genuine = receive("t", ENVELOPE, ACK_TOPIC, "r1")
    again = receive("t", dict(ENVELOPE), ACK_TOPIC, "r1")
    impostor = receive("t", {**ENVELOPE, "msg": {"a": 666}}, ACK_TOPIC, "r1")
    seen = Seen()
    assert [seen.first_time(r.key) for r in (genuine, again, impostor)] == [True, False, True]


def test_subscriptions_remember_a_bounded_number_of_prefix_bytes():
    subs = Subscriptions(max_bytes=10)
    assert subs.notice(b"\x01" + b"a" * 8)
    assert subs.notice(b"\x01" + b"b" * 8)  # a join all the same, but not remembered
    assert subs.covers("a" * 8) and not subs.covers("b" * 8)
    subs.notice(b"\x00" + b"a" * 8)
    subs.notice(b"\x01" + b"b" * 8)
    assert subs.covers("b" * 8)


# -- processed / rejected ACKs, require levels, batches (issue 10) -----------------------------

def processing_machine(recipients=("r1", "r2"), timeout=5.0):
    machine = Machine()
    d = delivery(recipients, timeout=timeout)
    d.require = "processed"
    machine.handle(Sent(d, FRAMES, 100.0))
    return machine, d


@pytest.mark.parametrize("value", ["done", "", None, 1, "Received"])
def test_an_unknown_require_level_is_refused(value):
    with pytest.raises(InvalidInput, match="require must be one of received, processed"):
        wire.check_require(value)


def test_require_levels_and_which_status_satisfies_them():
    assert [wire.check_require(v) for v in ("received", "processed")] == [
        "received", "processed"]
    assert wire.satisfies("processed", "received") and wire.satisfies("received",
                                                                          "received")
    assert not wire.satisfies("received", "processed")
    assert not any(wire.satisfies("rejected", r) for r in wire.REQUIRE_LEVELS)


def test_received_does_not_settle_a_processed_requirement_but_is_noted():
    machine, d = processing_machine(["r1"])
    assert machine.handle(AckReceived(ack_for(), "r1", 100.1)) == []
    assert d.state is State.PENDING and d.acks == {} and d.heard == {"r1": pytest.approx(0.1)}
    [resolve] = machine.handle(AckReceived(ack_for(status="processed"), "r1", 100.4))
    report = resolve.result
    assert isinstance(report, Report) and report.require == "processed"
    assert report.answers == {"r1": Answer("processed", pytest.approx(0.4), None)}


def test_a_processed_ack_satisfies_the_received_requirement():
    machine, d = started_machine(["r1"])
    [resolve] = machine.handle(AckReceived(ack_for(status="processed"), "r1", 100.2))
    assert resolve.result.answers["r1"].status == "processed"


def test_a_rejection_resolves_at_once_with_rejected_naming_each_recipients_answer():
    machine, d = processing_machine(["r1", "r2", "r3"])
    machine.handle(AckReceived(ack_for(status="processed"), "r1", 100.1))
    machine.handle(AckReceived(ack_for(), "r2", 100.2))
    [resolve] = machine.handle(AckReceived(ack_for(status="rejected", reason="KeyError: 'x'"),
                                           "r3", 100.3))
    err = resolve.result
    assert isinstance(err, Rejected) and isinstance(err, NotDelivered)
    assert not isinstance(err, Timeout) and d.state is State.REJECTED and len(machine) == 0
    assert err.rejected == {"r3": "KeyError: 'x'"} and err.missing == ("r2", "r3")
    assert err.answers == {"r1": Answer("processed", pytest.approx(0.1)),
                           "r2": Answer("received", pytest.approx(0.2)),
                           "r3": Answer("rejected", pytest.approx(0.3), "KeyError: 'x'")}
    assert "rejected by r3: KeyError: 'x'" in str(err)
    assert pickle.loads(pickle.dumps(err)).answers == err.answers


def test_a_recipients_first_final_answer_stands():
    machine, d = started_machine(["r1", "r2"])
    machine.handle(AckReceived(ack_for(), "r1", 100.1))
    # r1 answered: a later rejection from it changes nothing
    assert machine.handle(AckReceived(ack_for(status="rejected", reason="x"), "r1", 100.2)) == []
    assert d.state is State.PENDING and d.rejected == {}


def test_redelivery_stops_once_every_recipient_answered_whatever_the_answer():
    machine, d = processing_machine(["r1", "r2"])
    assert sends(machine.handle(Tick(100.02)))  # nobody answered yet: re-sent
    machine.handle(AckReceived(ack_for(), "r1", 100.03))
    assert sends(machine.handle(Tick(100.06)))  # r2 still silent
    machine.handle(AckReceived(ack_for(), "r2", 100.07))  # received: both answered
    assert all(sends(machine.handle(Tick(t))) == [] for t in (100.2, 101.0, 103.0))
    assert sends(machine.handle(SubscriberJoined(103.1))) == []
    assert machine.next_wakeup(103.1) == d.deadline  # only the deadline is left
    [resolve] = machine.handle(Tick(105.0))
    assert isinstance(resolve.result, Timeout)
    assert [a.status for a in resolve.result.answers.values()] == ["received", "received"]


def test_a_rejection_signed_by_another_certificate_does_not_count_nor_end_the_wait():
    machine, d = started_machine(["r1"])
    rejection = ack_for(status="rejected", reason="forged")
    assert machine.handle(AckReceived(rejection, "r3", 100.1)) == [
        IgnoredAck(rejection, "r3", Outcome.NOT_A_RECIPIENT)]
    assert machine.handle(AckReceived(rejection, None, 100.2, "r1", "revoked")) == [
        IgnoredAck(rejection, None, Outcome.FORGED_SIGNATURE)]
    assert d.state is State.PENDING and d.rejected == {}


@pytest.mark.parametrize("refusal", ["certificate revoked", "certificate expired",
                                     "certificate not issued by the configured CA"])
def test_a_timeout_says_once_why_a_missing_recipients_acks_were_refused(refusal):
    machine, d = started_machine(["r1", "r2"], timeout=1.0)
    for at in (100.1, 100.2, 100.3):
        machine.handle(AckReceived(ack_for(), None, at, "r1", f"{refusal} ({at})"))
    machine.handle(AckReceived(ack_for(), None, 100.4, "intruder", "wrong CA"))
    [resolve] = machine.handle(Tick(101.0))
    err = resolve.result
    assert err.refused == {"r1": f"{refusal} (100.1)"}
    assert err.answers["r1"] == Answer("missing", None, f"{refusal} (100.1)")
    assert err.answers["r2"] == Answer("missing", None, None)
    assert str(err).count("ACKs from r1 refused") == 1 and "intruder" not in str(err)


def test_a_timeout_says_when_a_recipient_acknowledged_other_content():
    machine, d = started_machine(["r1"], timeout=1.0)
    machine.handle(AckReceived(ack_for(ack_digest="0" * 64), "r1", 100.1))
    [resolve] = machine.handle(Tick(101.0))
    assert "other content" in resolve.result.refused["r1"]


def other_envelope(n):
    return wire.new_envelope("org.x.dev.mod.t", {"n": n}, n, recipients=["r1"],
                                now=1_700_000_000.0, msg_id=f"2023-{n}", username="u")


def batch_of(*envs, **changes):
    body = wire.batch_body([{**wire.ack_body(e), **changes} for e in envs])
    return wire.parse_acks({"msg": body})


def test_a_batch_acknowledges_each_of_its_messages_and_skips_foreign_msg_ids():
    machine = Machine()
    envs = [other_envelope(n) for n in range(3)]
    ds = [delivery(["r1"], env=e) for e in envs]
    for d in ds:
        machine.handle(Sent(d, FRAMES, 100.0))
    acks = batch_of(*envs, other_envelope(99))  # the last entry is another publisher's
    actions = machine.handle(AcksReceived(acks, "r1", 100.2))
    assert [a.delivery for a in actions if isinstance(a, Resolve)] == ds
    assert all(isinstance(d.result(), Report) for d in ds) and len(machine) == 0


@pytest.mark.parametrize("bad", ["signer", "digest"])
def test_one_bad_entry_invalidates_the_whole_batch(bad):
    machine = Machine()
    good, other = other_envelope(1), delivery(["r2"], env=other_envelope(2))
    d = delivery(["r1"], env=good)
    machine.handle(Sent(d, FRAMES, 100.0))
    if bad == "signer":  # an entry for a message r1 was not asked to acknowledge
        machine.handle(Sent(other, FRAMES, 100.0))
        acks = batch_of(good, other_envelope(2))
    else:  # an entry bound to other content
        acks = wire.parse_acks({"msg": wire.batch_body(
            [wire.ack_body(good), {**wire.ack_body(other_envelope(2)),
                                      "ack_digest": "0" * 64}])})
        machine.handle(Sent(delivery(["r1"], env=other_envelope(2)), FRAMES, 100.0))
    actions = machine.handle(AcksReceived(acks, "r1", 100.2))
    assert not any(isinstance(a, Resolve) for a in actions)
    assert {a.outcome for a in actions} >= {Outcome.BAD_BATCH}
    assert d.acks == {} and d.state is State.PENDING


@pytest.mark.parametrize("mangle", [
    lambda e: e + [e[0]],  # a duplicated entry
    lambda e: e + [{"ack_msg_id": "2023-x"}],  # no digest
    lambda e: e + [{**e[0], "ack_msg_id": "2023-y", "status": "done"}],  # unknown status
    lambda e: e + [5],  # not an object
    lambda e: [],  # empty
    lambda e: e * (wire.MAX_BATCH + 1),  # too many
])
def test_a_malformed_batch_parses_to_nothing(mangle):
    entries = [wire.ack_body(other_envelope(1))]
    assert wire.parse_acks({"msg": {"acks": mangle(entries)}}) is None


def test_batch_body_refuses_duplicates_and_oversize():
    entry = wire.ack_body(ENVELOPE)
    with pytest.raises(InvalidInput):
        wire.batch_body([entry, entry])
    with pytest.raises(InvalidInput):
        wire.batch_body([])


def test_single_acks_still_parse_through_parse_acks():
    assert wire.parse_acks({"msg": wire.ack_body(ENVELOPE)}) == (ack_for(),)


@pytest.mark.parametrize("reason,expected", [
    ("x" * 10_000, "x" * (wire.MAX_REASON_CHARS - 1) + "\u2026"),
    (b"\xff\xfe bytes", "\\xff\\xfe bytes"),
    ("line1\nline2\x00\tend", "line1 line2 end"),
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
    (ValueError("boom"), "boom"),
])
def test_a_rejection_reason_is_bounded_printable_text(reason, expected):
    assert wire.bound_reason(reason) == expected
    body = wire.ack_body(ENVELOPE, "rejected", reason)
    assert body["reason"] == expected and len(wire.dumps(body)) < 4 * wire.MAX_REASON_CHARS


def test_a_reason_whose_str_raises_is_still_text():
    class Bad:
        def __str__(self):
            raise RuntimeError

    assert wire.bound_reason(Bad()) == "<unprintable Bad>"


def test_messages_say_their_publisher_takes_batches_old_ones_do_not():
    assert wire.speaks_batches(ENVELOPE)
    assert not wire.speaks_batches({**ENVELOPE, "gilmsg_version": 2})
    assert not wire.speaks_batches({**ENVELOPE, "gilmsg_version": "3"})


def test_thousands_in_flight_cost_a_tick_only_what_is_due():
    machine = Machine()
    ds = []
    for n in range(3000):
        env = {**ENVELOPE, "msg_id": f"m{n}"}
        d = Delivery(env["msg_id"], "d", env["topic"], ("r1",), 100.0, 105.0)
        ds.append(d)
        machine.handle(Sent(d, FRAMES, 100.0))
    for d in ds[:2990]:
        machine.handle(AckReceived(Ack(d.msg_id, "d", "received"), "r1", 100.01))
    assert len(machine) == 10
    assert len(sends(machine.handle(Tick(100.025)))) == 10  # r1 quiet for its RTO
    assert len(machine._resends) <= 4 * len(machine) + 64 + 3000  # pruned lazily
    machine.next_wakeup(100.03)
    assert len(machine._resends) <= 4 * len(machine) + 64
    resolved = machine.handle(Tick(105.0))
    assert len(resolved) == 10 and len(machine) == 0 and machine.next_wakeup(105.0) is None


def test_resends_wait_at_least_the_observed_retransmission_timeout():
    machine = Machine()
    first = delivery(["r1"], env=other_envelope(1))
    machine.handle(Sent(first, FRAMES, 100.0))
    machine.handle(AckReceived(Ack(first.msg_id, first.digest, "received"), "r1", 100.3))
    assert machine.pacer.rto("r1") == pytest.approx(0.3 + 4 * 0.15)  # RFC 6298, first sample
    second = delivery(["r1"], env=other_envelope(2))
    second.started = 101.0
    machine.handle(Sent(second, FRAMES, 101.0))
    assert second.next_send == pytest.approx(101.9)  # not 101.02: a loaded bus is not flooded
    assert sends(machine.handle(Tick(101.8))) == []
    assert len(sends(machine.handle(Tick(101.9)))) == 1


def test_settlements_are_remembered_first_one_standing_and_bounded():
    from gilmsg.core.receiving import Settled

    settled = Settled(capacity=2)
    assert settled.answer("d1") == ("received", None) and settled.answer(None) == (
        "received", None)
    settled.remember("d1", "rejected", "boom")
    settled.remember("d1", "processed", None)  # the first settlement stands
    assert settled.answer("d1") == ("rejected", "boom")
    settled.remember("d2", "processed", None)
    settled.remember("d3", "processed", None)
    assert len(settled) == 2 and settled.answer("d1") == ("received", None)


def test_a_failure_is_described_by_type_and_message_only():
    from gilmsg.core.receiving import describe_failure

    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert describe_failure(KeyError("x")) == "KeyError: 'x'"
    assert describe_failure(ValueError()) == "ValueError"
    assert describe_failure(Unprintable()) == "Unprintable: <unprintable Unprintable>"
    assert len(describe_failure(OSError("x" * 10**6))) == wire.MAX_REASON_CHARS


@pytest.mark.parametrize("mode", ["Processed", "", None, "rejected"])
def test_an_unknown_ack_mode_is_refused_naming_where_it_came_from(mode):
    from gilmsg.core.receiving import check_ack_mode

    with pytest.raises(InvalidInput, match="k.gilmsg_ack_mode must be one of"):
        check_ack_mode(mode, "k.gilmsg_ack_mode")
