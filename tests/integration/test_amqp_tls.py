"""gilmsg over AMQP with TLS: a real RabbitMQ TLS listener (mutual TLS) and certificates this
test generates; a broker certificate from another CA is refused at once with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pika", reason="pika is not installed (pip install 'gilmsg[amqp]')")

import gilmsg  # noqa: E402
from gilmsg.crypto import certs  # noqa: E402
from gilmsg.testing import rabbitmq as testing_amqp  # noqa: E402
from gilmsg.testing.rabbitmq import LocalRabbitMQ, make_tls_files  # noqa: E402


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    reason = testing_amqp.missing_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("rabbitmq-tls")
    files = make_tls_files(root / "pki")
    with LocalRabbitMQ(root / "node", tls=files) as broker:
        yield broker


@pytest.fixture
def tls_bus(make_bus, tls_broker):
    def make(services, tls=None, fm_toml=None):
        extra = {"gilmsg.transport": "amqp"}
        if fm_toml is None:
            extra["gilmsg.amqp_tls"] = tls or tls_broker.tls.client_settings()
        else:
            extra["gilmsg.fedora_messaging_config"] = str(fm_toml)
        bus = make_bus(services, extra=extra)
        bus.config["endpoints"] = {
            name: [] if fm_toml else [tls_broker.tls_url] for name in bus.services}
        bus.write_config()
        return bus

    return make


def publish(bus, timeout=30):
    return gilmsg.publish(topic="t", msg={"tls": True}, modname="tls", recipients=["r1"],
                          ack_timeout=timeout, **bus.config_for("pub"))


def test_mutual_tls_with_gilmsg_own_keys(tls_bus, tls_broker):
    bus = tls_bus(["pub", "r1"])
    tail = bus.spawn_tail("r1")
    report = publish(bus)
    assert set(report.acks) == {"r1"}
    tail.wait_for(lambda line: report.msg_id in line)


def test_mutual_tls_from_fedora_messaging_tls_section(tls_bus, tls_broker, tmp_path):
    files = tls_broker.tls
    toml = tmp_path / "config.toml"
    toml.write_text(f'amqp_url = "{tls_broker.tls_url}"\n[tls]\nca_cert = "{files.ca_cert}"\n'
                    f'certfile = "{files.client_cert}"\nkeyfile = "{files.client_key}"\n')
    bus = tls_bus(["pub", "r1"], fm_toml=toml)
    tail = bus.spawn_tail("r1")
    report = publish(bus)
    assert set(report.acks) == {"r1"}
    tail.wait_for(lambda line: report.msg_id in line)


@pytest.fixture
def foreign_ca(tmp_path):
    """Another CA (and a client certificate of its own): the broker's is not from it."""
    root = tmp_path / "foreign"
    certs.init_ca(root)
    return root / certs.CA_CERT


@pytest.mark.parametrize("case", ["foreign_ca", "no_client_cert"])
def test_a_broker_certificate_from_another_ca_is_one_config_error_line(
        tls_bus, tls_broker, foreign_ca, case):
    files = tls_broker.tls
    tls = ({"ca_cert": str(foreign_ca), "certfile": str(files.client_cert),
            "keyfile": str(files.client_key)} if case == "foreign_ca"
           else {"ca_cert": str(files.ca_cert)})
    bus = tls_bus(["pub", "r1"], tls=tls)
    with pytest.raises(gilmsg.ConfigError) as exc:
        publish(bus, timeout=5)
    text = str(exc.value)
    assert "\n" not in text and "TLS to the AMQP broker" in text, text
    if case == "foreign_ca":
        assert "certificate verify failed" in text, text
    assert "guest:***@" in text  # the password is not in the message

    # The CLIs: exit 4, one line on stderr, no traceback.
    exe = str(Path(sys.executable).parent / "gilmsg-tail")
    out = subprocess.run([exe, "--config-filename", str(bus.config_file), "--name", "r1"],
                         env=bus.env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 4, (out.returncode, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "TLS to the AMQP broker" in lines[0], out.stderr


def test_unreadable_tls_files_are_config_errors(tls_bus, tmp_path):
    bus = tls_bus(["pub", "r1"], tls={"ca_cert": str(tmp_path / "absent.pem")})
    with pytest.raises(gilmsg.ConfigError, match="gilmsg.amqp_tls.ca_cert"):
        publish(bus, timeout=5)
    bus = tls_bus(["pub", "r1"], tls={"ca_cart": "typo"})
    with pytest.raises(gilmsg.ConfigError, match="unknown field 'ca_cart'"):
        publish(bus, timeout=5)


def test_a_pika_ssl_options_url_parameter_is_the_alternative(tls_bus, tls_broker):
    """``amqps://...?ssl_options={...}`` goes to pika as it is; gilmsg.amqp_tls is not used
    for that URL (here it names a CA file that does not exist: used, it would be an error)."""
    from urllib.parse import quote

    files = tls_broker.tls
    options = {"ca_certs": str(files.ca_cert), "certfile": str(files.client_cert),
               "keyfile": str(files.client_key), "server_hostname": "localhost"}
    url = f"{tls_broker.tls_url}?ssl_options={quote(repr(options))}"
    bus = tls_bus(["pub", "r1"], tls={"ca_cert": "/nonexistent/ca.pem"})
    bus.config["endpoints"] = {name: [url] for name in bus.services}
    bus.write_config()
    tail = bus.spawn_tail("r1")
    report = publish(bus)
    assert set(report.acks) == {"r1"}
    tail.wait_for(lambda line: report.msg_id in line)
