"""gilmsg-tail --include/--exclude: topics filtered for display, every message still answered."""

from __future__ import annotations

import json
import re
import time

from click.testing import CliRunner

import gilmsg
from gilmsg.commands import _common
from gilmsg.commands import tail as cli


def patterns(*texts: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(t) for t in texts)


def test_topic_wanted_follows_include_then_exclude():
    assert cli.topic_wanted("org.x.compose.done", (), ())
    assert cli.topic_wanted("org.x.compose.done", patterns("compose"), ())
    assert not cli.topic_wanted("org.x.koji.tag", patterns("compose", "bodhi"), ())
    assert not cli.topic_wanted("org.x.compose.done", patterns("compose"), patterns(r"done$"))
    assert not cli.topic_wanted("org.x.gilmsg.ack", (), patterns(r"\.ack$"))


def test_a_bad_regex_is_a_usage_error():
    result = CliRunner().invoke(cli.main, ["--no-ack", "--include", "compose("],
                                prog_name="gilmsg-tail")
    assert result.exit_code == _common.EXIT_USAGE
    assert "'compose(' is not a regular expression" in result.stderr


def test_hidden_messages_are_acknowledged_but_not_shown(make_bus):
    bus = make_bus(["pub", "r1"])
    tail = bus.spawn_tail("r1", "--include", r"\.keep$", "--exclude", "never", "--count", "1")
    cfg = bus.config_for("pub")
    hidden = gilmsg.publish(topic="drop", msg={}, modname="m", recipients=["r1"],
                            ack_timeout=20, **cfg)
    assert list(hidden.acks) == ["r1"]  # acknowledged though not shown
    shown = gilmsg.publish(topic="keep", msg={}, modname="m", recipients=["r1"],
                           ack_timeout=20, **cfg)
    assert json.loads(tail.next_line())["msg_id"] == shown.msg_id  # the first line printed
    assert tail.wait() == 0  # --count counts shown messages only


def test_a_revoked_identity_is_told_at_start(make_bus):
    from gilmsg.crypto import certs
    from gilmsg.testing import DEFAULT_WAIT

    bus = make_bus(["pub", "r1"])
    certs.revoke(bus.ssldir, "r1")
    tail = bus.spawn_tail("r1")
    deadline = time.monotonic() + DEFAULT_WAIT
    while "certificate will be refused" not in tail.stderr:
        assert time.monotonic() < deadline and tail.proc.poll() is None, tail.stderr
        time.sleep(0.05)
    assert tail.stderr_lines[0].startswith(
        "gilmsg-tail: warning: this identity's certificate will be refused by its peers "
        "(certificate is revoked (serial ")
    assert tail.stderr_lines[0].endswith("): every ACK it sends will be ignored")
