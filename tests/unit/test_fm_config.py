"""gilmsg.fedora_messaging_config: fedora-messaging's config.toml read by gilmsg.config.load."""

from __future__ import annotations

import pytest

from gilmsg import config as gconfig
from gilmsg.config import fedora_messaging as fm_config
from gilmsg.errors import ConfigError

FM = """
amqp_url = "amqps://gilmsg:secret@broker.example:5671/%2Fpubsub"
callback = "mypkg:Cb"

[tls]
ca_cert = "/etc/fedora-messaging/cacert.pem"
keyfile = "/etc/fedora-messaging/fedora-key.pem"
certfile = "/etc/fedora-messaging/fedora-cert.pem"
"""


def load(tmp_path, text=FM, **extra):
    path = tmp_path / "config.toml"
    path.write_text(text)
    base = {"endpoints": {"pub": [], "r1": None, "cluster": ["amqp://a:5672", "amqp://b:5672"]},
            "name": "pub", fm_config.CONFIG_KEY: str(path)}
    base.update(extra)
    return gconfig.load(base)


def test_amqp_url_fills_empty_endpoints_and_tls_becomes_gilmsg_amqp_tls(tmp_path):
    cfg = load(tmp_path)
    url = "amqps://gilmsg:secret@broker.example:5671/%2Fpubsub"
    assert cfg["endpoints"]["pub"] == [url] and cfg["endpoints"]["r1"] == [url]
    assert cfg["endpoints"]["cluster"] == ["amqp://a:5672", "amqp://b:5672"]  # kept as written
    assert cfg["gilmsg.transport"] == "amqp"
    assert cfg[fm_config.TLS_KEY] == {"ca_cert": "/etc/fedora-messaging/cacert.pem",
                                      "keyfile": "/etc/fedora-messaging/fedora-key.pem",
                                      "certfile": "/etc/fedora-messaging/fedora-cert.pem"}
    assert gconfig.publishing(cfg).addresses == (url,)
    assert gconfig.load(cfg) == cfg  # applying it again changes nothing


def test_gilmsg_own_keys_win(tmp_path):
    own_tls = {"ca_cert": "/mine/ca.pem"}
    cfg = load(tmp_path, **{"gilmsg.transport": "mymodule", "gilmsg.amqp_tls": own_tls})
    assert cfg["gilmsg.transport"] == "mymodule" and cfg[fm_config.TLS_KEY] == own_tls


def test_the_process_own_name_gets_the_url_when_endpoints_lack_it(tmp_path):
    cfg = load(tmp_path, name="worker")
    assert cfg["endpoints"]["worker"] == ["amqps://gilmsg:secret@broker.example:5671/%2Fpubsub"]


@pytest.mark.parametrize("text, error", [
    ("amqp_url = 'http://nope'\n", "amqp_url must be an amqp:// or amqps:// URL"),
    ("amqp_url = \n", "not a TOML file"),
    ("amqp_url = 'amqp://'\ntls = 3\n", "[tls] must be a table"),
    ("amqp_url = 'amqp://'\n[tls]\nca_cert = 1\n", "tls.ca_cert must be a file path"),
])
def test_a_bad_file_is_one_config_error_line(tmp_path, text, error):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    assert error in str(exc.value) and "\n" not in str(exc.value)
    assert fm_config.CONFIG_KEY in str(exc.value)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        gconfig.load({"endpoints": {"pub": []},
                      fm_config.CONFIG_KEY: str(tmp_path / "absent.toml")})


def test_without_amqp_url_fedora_messaging_default_is_used(tmp_path):
    cfg = load(tmp_path, "callback = 'x:y'\n")
    assert cfg["endpoints"]["pub"] == ["amqp://"] and fm_config.TLS_KEY not in cfg
