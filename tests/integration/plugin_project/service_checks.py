"""A service's tests using the gilmsg_sandbox fixture (loaded through the pytest11 entry point).

``test_wrong_expectation_is_reported`` must FAIL: it shows the assertion helper can fail.
"""

import pytest

import gilmsg


def notify(config, compose):
    """The "service" under test: tells the archiver a compose is done."""
    return gilmsg.publish(topic="compose.done", msg={"compose": compose}, modname="myapp",
                          recipients=["archiver"], ack_timeout=10, **config)


@pytest.mark.gilmsg_sandbox(standins=["archiver"], services=["my-app"])
def test_service_reaches_the_archiver(gilmsg_sandbox):
    report = notify(gilmsg_sandbox.config_for("my-app"), "rawhide")
    assert list(report.acks) == ["archiver"]
    [got] = gilmsg_sandbox.assert_received(
        "archiver", {"topic": "myapp.compose.done", "msg": {"compose": "rawhide"}})
    assert got["msg_id"] == report.msg_id


@pytest.mark.gilmsg_sandbox(standins=["archiver"], services=["my-app"])
def test_expect_sends_checks_exactly_what_arrived(gilmsg_sandbox):
    config = gilmsg_sandbox.config_for("my-app")
    with gilmsg_sandbox.expect_sends("archiver", {"msg": {"compose": "f41"}},
                                     {"msg": {"compose": "f42"}}):
        notify(config, "f41")
        notify(config, "f42")


@pytest.mark.gilmsg_sandbox(standins=["archiver:fail=1"], services=["my-app"])
def test_a_failing_archiver_makes_the_service_see_a_timeout(gilmsg_sandbox):
    with pytest.raises(gilmsg.Timeout) as info:
        gilmsg.publish(topic="compose.done", msg={}, modname="myapp", recipients=["archiver"],
                       ack_timeout=1, **gilmsg_sandbox.config_for("my-app"))
    assert info.value.missing == ("archiver",)
    gilmsg_sandbox.assert_received("archiver", {"topic": "myapp.compose.done"})


def test_default_bus_has_publisher_and_recipient(gilmsg_sandbox):
    report = gilmsg.publish(topic="t", msg={"n": 1}, recipients=["recipient"], ack_timeout=10,
                            **gilmsg_sandbox.config_for("publisher"))
    assert list(report.acks) == ["recipient"]


@pytest.mark.gilmsg_sandbox(standins=["archiver"], services=["my-app"])
def test_wrong_expectation_is_reported(gilmsg_sandbox):
    notify(gilmsg_sandbox.config_for("my-app"), "rawhide")
    gilmsg_sandbox.assert_received("archiver", {"msg": {"compose": "eln"}}, timeout=1)
