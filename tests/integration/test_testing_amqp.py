"""gilmsg.testing.rabbitmq without a broker: why the AMQP tests would be skipped, said plainly."""

from __future__ import annotations

from gilmsg.testing import rabbitmq as testing_amqp


def test_a_missing_package_is_a_skip_reason_carrying_the_install_note(monkeypatch):
    monkeypatch.setattr(testing_amqp, "SERVER", "/nonexistent/rabbitmq-server")
    monkeypatch.setenv(testing_amqp.INSTALL_NOTE_ENV, "not root: cannot apt-get install")
    reason = testing_amqp.missing_reason()
    assert reason is not None and "rabbitmq-server is not installed" in reason
    assert reason.endswith("not root: cannot apt-get install")


def test_the_broker_is_configured_for_loopback_only(tmp_path):
    broker = testing_amqp.LocalRabbitMQ(tmp_path)
    env = broker.env()
    assert env["ERL_EPMD_ADDRESS"] == env["RABBITMQ_NODE_IP_ADDRESS"] == "127.0.0.1"
    assert "{127,0,0,1}" in env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    assert f"listeners.tcp.1 = 127.0.0.1:{broker.port}" in (tmp_path / "rabbitmq.conf").read_text()
    assert len({broker.port, broker.dist_port, broker.epmd_port}) == 3
    assert env["HOME"] == str(tmp_path)  # its Erlang cookie stays in there
