"""The config registry: one declaration per key, old spellings, typos, strict mode, the doc."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import pytest

from gilmsg import config as gconfig
from gilmsg import groups, transport
from gilmsg.config import registry
from gilmsg.errors import ConfigError
from gilmsg.outbox import durable, policy

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gilmsg"
MARKER = ".. The part below is ``gilmsg.config.registry.rst()``"

#: String literals of gilmsg/ spelled like a gilmsg key that are not configuration keys.
NOT_CONFIG_KEYS = {
    "gilmsg_version", "gilmsg_recipients", "gilmsg_hash",  # envelope fields (docs/protocol.rst)
    "gilmsg_topic", "gilmsg_sender",  # AMQP headers (docs/amqp.rst)
    "gilmsg_ping",  # a ping message's marker field
    "gilmsg_sandbox",  # the pytest fixture and marker
    "gilmsg_example", "gilmsg_example.output",  # the example consumer's own config keys
    "gilmsg_outbox",  # the moksha producer's entry-point name
    "gilmsg.py",  # the bus configuration file's name
    "_gilmsg_received", "_gilmsg_dedup_key", "_gilmsg_handed", "_gilmsg_cli",  # private attributes
    "_gilmsg_queued",
}
#: Prometheus metric names (docs/monitoring.rst; gilmsg-outbox check --prometheus), with and
#: without the ``_total`` prometheus_client appends to a counter's name.
METRIC_NAMES = {
    "gilmsg_ack_latency_seconds", "gilmsg_acks_refused", "gilmsg_acks_sent",
    "gilmsg_acks_sent_total", "gilmsg_bridge_acks", "gilmsg_bridge_messages",
    "gilmsg_certificate_expiry_seconds", "gilmsg_crl_next_update_seconds", "gilmsg_deliveries",
    "gilmsg_deliveries_total", "gilmsg_duplicates", "gilmsg_in_flight",
    "gilmsg_messages_received", "gilmsg_messages_received_total", "gilmsg_messages_refused",
    "gilmsg_messages_refused_total", "gilmsg_outbox_check_status", "gilmsg_outbox_expired",
    "gilmsg_outbox_oldest_pending_seconds", "gilmsg_outbox_pending",
    "gilmsg_outbox_pending_messages", "gilmsg_resends",
}


@pytest.fixture(autouse=True)
def fresh_reports(monkeypatch):
    """Each test sees its warnings: the once-per-process record starts empty."""
    monkeypatch.setattr(registry, "_reported", set())


def literals() -> set[str]:
    out = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"_?\.?gilmsg[._][a-z_]+(\.[a-z_]+)*", node.value):
                    out.add(node.value)
    return out


def is_module(name: str) -> bool:
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_every_key_literal_of_the_package_is_declared():
    declared = {k.name for k in registry.KEYS} | set(registry.BY_OLD_NAME)
    suffixes = {k.name for k in registry.SUFFIXES}
    undeclared = sorted(
        s for s in literals()
        if s not in declared and s not in suffixes and s not in NOT_CONFIG_KEYS
        and s not in METRIC_NAMES
        and not is_module(s) and s not in ("gilmsg.amqp_consumer", "gilmsg.sandbox",
                                           "gilmsg.testing_amqp", "gilmsg.fedmsg_compat",
                                           "gilmsg.pytest_plugin")  # _aliases.py's old paths
    )
    assert undeclared == []


def test_the_modules_read_the_declared_names():
    names = {k.name for k in registry.KEYS}
    assert {groups.GROUPS_KEY, groups.KNOWN_KEY, groups.STRICT_KEY, transport.CONFIG_KEY,
            durable.PATH_KEY, durable.EXPIRY_KEY, durable.DURABILITY_KEY} <= names
    assert registry.BY_NAME["gilmsg.outbox.expiry"].default == policy.DEFAULT_EXPIRY
    assert registry.BY_NAME["gilmsg.transport"].default == transport.DEFAULT
    hub_source = (PACKAGE / "consumers" / "hub.py").read_text()
    for key in registry.SUFFIXES:
        assert f'"{key.name}"' in hub_source


def test_every_key_is_dotted_and_documented():
    for key in registry.KEYS:
        assert key.name.startswith("gilmsg.") and key.doc and key.readers and key.type
        assert all(old.startswith("gilmsg_") for old in key.old)
    for key in registry.SUFFIXES:
        assert key.name.startswith(".gilmsg_") and key.doc and key.readers


def test_docs_config_rst_lists_the_registry_exactly():
    text = (ROOT / "docs" / "config.rst").read_text()
    assert MARKER in text
    generated = text.split(MARKER, 1)[1].split("\n", 1)[1]
    assert generated.strip() == registry.rst().strip(), (
        "docs/config.rst is out of date: replace its generated part with registry.rst()")


def test_the_old_spelling_works_and_is_deprecated_once(caplog):
    caplog.set_level(logging.WARNING, "gilmsg.config")
    config = {"gilmsg_transport": "memory"}
    assert registry.lookup(config, "gilmsg.transport") == ("gilmsg_transport", "memory")
    assert registry.get(config, "gilmsg.transport") == "memory"
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["config key 'gilmsg_transport' is deprecated: spell it "
                        "'gilmsg.transport' (the old spelling still works)"]


def test_the_dotted_spelling_wins_and_defaults_come_from_the_registry(caplog):
    config = {"gilmsg.transport": "zmq", "gilmsg_transport": "memory"}
    assert registry.get(config, "gilmsg.transport") == "zmq"
    assert registry.get({}, "gilmsg.transport") == "zmq"
    assert registry.get({}, "gilmsg.outbox.durability") == "full"
    assert registry.get({}, "gilmsg.outbox", "x") == "x"
    assert transport.module_for({"gilmsg_transport": "memory"}).__name__.endswith(".memory")
    with pytest.raises(KeyError):
        registry.get({}, "gilmsg.nope")


@pytest.mark.parametrize("key, hint", [
    ("gilmsg.strict_recipents", "gilmsg.strict_recipients"),
    ("gilmsg_heartbeat_ivel", "gilmsg.heartbeat_ivl"),
    ("gilmsg_recipients", "gilmsg.recipients"),
    ("gilmsg.outbox.expiri", "gilmsg.outbox.expiry"),
    ("my_consumer.gilmsg_ackmode", "my_consumer.gilmsg_ack_mode"),
    ("gilmsg.zzzzzz", None),
])
def test_an_unknown_key_gets_a_did_you_mean(key, hint):
    assert registry.unknown({key: 1, "name": "x"}) == [(key, hint)]


@pytest.mark.parametrize("key", ["gilmsg_example", "gilmsg_example.output", "gilmsg_ping",
                                 "gilmsg.recipients", "gilmsg_tcp_user_timeout",
                                 "my_consumer.gilmsg_dedup_path", "my_consumer.other",
                                 "endpoints", "gilmsg_archiver"])
def test_known_keys_and_other_software_s_keys_are_not_reported(key):
    assert registry.unknown({key: 1}) == []


def test_check_warns_once_per_key(caplog):
    caplog.set_level(logging.WARNING, "gilmsg.config")
    for _ in range(3):
        registry.check({"gilmsg.strict_recipents": True})
    assert [r.getMessage() for r in caplog.records] == [
        "unknown config key 'gilmsg.strict_recipents' (did you mean "
        "'gilmsg.strict_recipients'?): gilmsg ignores it"]


def test_strict_mode_makes_an_unknown_key_a_config_error():
    config = {"gilmsg.strict_config": True, "gilmsg_heartbeat_ivel": 2}
    with pytest.raises(ConfigError, match=r"'gilmsg_heartbeat_ivel' \(did you mean "
                                          r"'gilmsg.heartbeat_ivl'\?\).*strict_config"):
        registry.check(config)
    registry.check({"gilmsg.strict_config": True, "gilmsg_transport": "zmq"})  # old: no error


def test_load_checks_the_keys(tmp_path):
    path = tmp_path / "bus.py"
    path.write_text('config = {"endpoints": {"x": ["tcp://127.0.0.1:1"]}, '
                    '"gilmsg.strict_config": True}\n')
    assert gconfig.load(filename=str(path))["gilmsg.strict_config"] is True
    with pytest.raises(ConfigError, match="gilmsg.strict_recipents"):
        gconfig.load({"gilmsg.strict_recipents": True}, filename=str(path))
