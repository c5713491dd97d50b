"""The chaos suite's pure parts: a schedule is a function of its seed; the checker catches each
kind of broken promise in a synthetic history and passes a good one."""

from __future__ import annotations

import pytest

from tests.chaos import model
from tests.chaos.model import WINDOW_2, Fault, History, check, schedule


def test_a_schedule_is_a_pure_function_of_the_seed():
    assert schedule(7, 180, 30) == schedule(7, 180, 30)
    assert schedule(7, 180, 30) != schedule(8, 180, 30)
    assert model.describe(7, schedule(7, 60, 10)) == model.describe(7, schedule(7, 60, 10))


@pytest.mark.parametrize("seed", range(40))
def test_a_schedule_keeps_its_rules(seed):
    faults = schedule(seed, 180, 30)
    assert faults, "a three-minute run with no fault proves nothing"
    assert all(3.0 <= f.start < f.end <= 150 for f in faults)
    assert all(f.kind in model.KINDS for f in faults)
    for t in sorted({f.start for f in faults}):
        now = [f for f in faults if f.start <= t < f.end]
        assert len(now) <= model.MAX_CONCURRENT, now
        assert sum(f.kind in model.LINK_KINDS for f in now) <= 1, now
        targets = [f.target for f in now if f.target]
        assert len(targets) == len(set(targets)), now


def test_kinds_restrict_the_draw():
    faults = schedule(3, 120, 20, kinds=["kill", "pause"])
    assert {f.kind for f in faults} <= {"kill", "pause"} and faults


R = ("a", "b")


def good() -> History:
    """Two messages stored, each logged once by each recipient, ACKs after the logs."""
    return History(
        stored={"m1": ("pub1", 10.0), "m2": ("pub2", 11.0)},
        deliveries={"a": [("m1", 10.1), ("m2", 11.1)], "b": [("m2", 11.2), ("m1", 12.0)]},
        acks={("m1", "a"): 10.2, ("m2", "a"): 11.3, ("m2", "b"): 11.25, ("m1", "b"): 12.5},
        pending={"pub1": 0, "pub2": 0},
        recipients=R,
        faults=[Fault(5.0, 6.0, "kill", "a")],
    )


def test_a_good_history_passes_with_its_figures():
    verdict = check(good())
    assert verdict.ok, verdict.violations
    assert verdict.stored == 2 and verdict.delivered == {"a": 2, "b": 2}
    assert verdict.max_latency == pytest.approx(2.0)  # m1 reached b 2 s after its store
    assert verdict.faults == {"kill": 1}
    assert "stored 2" in verdict.figures()


def test_a_delivery_of_an_unknown_message_is_no_violation():
    h = good()
    h.deliveries["a"].append(("m3", 13.0))  # stored, but its publisher died before being told
    assert check(h).ok


def test_a_lost_message_fails():
    h = good()
    h.deliveries["b"] = [("m2", 11.2)]
    del h.acks[("m1", "b")]
    verdict = check(h)
    assert [x for x in verdict.violations if x.startswith("lost: m1")], verdict.violations


def test_a_duplicate_right_before_a_kill_is_window_2_not_a_failure():
    h = good()
    h.deliveries["a"] = [("m1", 10.1), ("m2", 11.1), ("m2", 20.0)]
    h.kills["a"] = [11.105]  # nothing logged between m2 and the kill: record not committed
    verdict = check(h)
    assert verdict.ok, verdict.violations
    assert verdict.duplicates == {WINDOW_2: 1}


def test_a_duplicate_outside_the_window_fails():
    h = good()
    h.deliveries["a"] = [("m1", 10.1), ("m2", 11.1), ("m1", 20.0)]
    h.kills["a"] = [11.105]  # m2 was logged after m1 and before the kill: m1's record was done
    verdict = check(h)
    assert verdict.duplicates == {"unexplained": 1}
    assert [x for x in verdict.violations if x.startswith("duplicate: m1")]


def test_a_duplicate_without_a_kill_fails():
    h = good()
    h.deliveries["b"].append(("m2", 30.0))
    assert not check(h).ok


def test_an_ack_before_the_application_logged_fails():
    h = good()
    h.acks[("m1", "a")] = 10.05
    verdict = check(h)
    assert [x for x in verdict.violations if x.startswith("early ack: m1")]


def test_an_ack_for_a_message_the_application_never_logged_fails():
    h = good()
    h.acks[("m9", "b")] = 3.0
    assert [x for x in check(h).violations if "m9" in x and "never logged" in x]


def test_a_message_told_not_stored_must_reach_nobody():
    h = good()
    h.not_stored.add("m7")
    h.deliveries["a"].append(("m7", 14.0))
    assert [x for x in check(h).violations if x.startswith("not stored: m7")]


def test_an_outbox_left_pending_fails():
    h = good()
    h.pending["pub2"] = 3
    assert [x for x in check(h).violations if x.startswith("pending: outbox pub2")]


def test_violations_are_bounded_per_kind():
    h = good()
    h.stored.update({f"x{i}": ("pub1", 1.0) for i in range(50)})
    verdict = check(h, limit=5)
    lost = [x for x in verdict.violations if x.startswith("lost")]
    assert len(lost) == 6 and "more" in lost[-1]


def test_a_row_owed_by_a_recipient_that_recorded_and_logged_it_is_the_known_gap():
    h = good()
    h.pending["pub1"] = 1
    h.owed = [("m1", "a")]
    h.recorded = {"a": {"m1"}}
    strict = check(h)
    assert [x for x in strict.violations if x.startswith("pending: m1 still owed to a")]
    lenient = check(h, allow_known_gaps=True)
    assert lenient.ok and lenient.known_gaps == ["m1 still owed to a"]


def test_a_row_owed_by_a_recipient_without_a_record_of_it_always_fails():
    h = good()
    h.pending["pub1"] = 1
    h.owed = [("m1", "a")]
    assert not check(h, allow_known_gaps=True).ok
