"""gilmsg.crypto.fedmsg_compat: stock fedmsg commands sign and validate again, with one import."""

from __future__ import annotations

import json
import pprint
import sys
import time
from pathlib import Path

import pytest

import gilmsg
from gilmsg import config as gconfig
from gilmsg.crypto import signing
from gilmsg.testing import DEFAULT_WAIT, DevBus, free_port

BIN = Path(sys.executable).parent
COMPAT_LINE = "import gilmsg.crypto.fedmsg_compat  # noqa: F401\n"


def write(bus: DevBus, name: str, compat: bool) -> Path:
    path = bus.root / name
    path.write_text((COMPAT_LINE if compat else "") + "config = " + pprint.pformat(bus.config)
                    + "\n")
    return path


def publish_until(bus: DevBus, seen, what: str) -> str:
    """Plain publishes are fire-and-forget: repeat until ``seen(msg_id)``; returns the msg_id."""
    deadline = time.monotonic() + DEFAULT_WAIT
    while time.monotonic() < deadline:
        sent: dict = {}
        gilmsg.publish(topic="t", msg={"what": what}, modname="compat",
                       pre_fire_hook=sent.update, **bus.config_for("pub"))
        if seen(sent["msg_id"]):
            return sent["msg_id"]
    raise AssertionError(f"{what}: never seen")


def lines_until(proc, predicate, timeout: float) -> bool:
    try:
        proc.wait_for(predicate, timeout)
        return True
    except AssertionError:
        return False


@pytest.mark.timeout(120)
def test_stock_fedmsg_tail_validates_gilmsg_signed_messages_with_the_switch(make_bus):
    bus = make_bus(["pub", "t1", "t2"])
    tails = {}
    for compat in (True, False):
        path = write(bus, f"tail-{compat}.py", compat)
        tails[compat] = bus.spawn([str(BIN / "fedmsg-tail"), "--config-filename", str(path),
                                   "--validate"])
    msg_id = publish_until(bus, lambda mid: lines_until(
        tails[True], lambda line: mid in line, 0.3), "with the switch")
    # Without the switch, stock fedmsg-tail refuses the very same kind of message.
    deadline = time.monotonic() + DEFAULT_WAIT
    while "invalid message received" not in tails[False].stderr:
        assert time.monotonic() < deadline, tails[False].stderr
        publish_until(bus, lambda _mid: True, "without")
        time.sleep(0.1)
    assert not any(msg_id in line for line in tails[False].seen)
    assert tails[True].proc.poll() is None


@pytest.mark.timeout(120)
def test_stock_fedmsg_logger_signs_through_the_relay_with_the_switch(make_bus):
    shell = f"shell.{gconfig.short_hostname()}"
    bus = make_bus(["r1", shell])
    bus.config["relay_inbound"] = f"tcp://127.0.0.1:{free_port()}"
    bus.config["endpoints"]["relay_outbound"] = [f"tcp://127.0.0.1:{free_port()}"]
    bus.write_config()
    path = write(bus, "compat.py", True)
    bus.spawn([str(BIN / "fedmsg-relay"), "--config-filename", str(path)])
    tail = bus.spawn_tail("r1", "--validate")  # drops anything whose signature fails
    deadline = time.monotonic() + DEFAULT_WAIT
    got = None
    while got is None:
        assert time.monotonic() < deadline, "fedmsg-logger's message never arrived"
        logger = bus.spawn([str(BIN / "fedmsg-logger"), "--config-filename", str(path),
                            "--message", "signed by stock fedmsg"])
        assert logger.wait(60) == 0, logger.stderr
        try:
            got = json.loads(tail.next_line(1.0))
        except AssertionError:
            pass
    assert got["msg"] == {"log": "signed by stock fedmsg"}
    assert signing.validate(got, **bus.config).signer == shell


def test_install_and_uninstall_swap_fedmsg_crypto():
    import fedmsg.crypto

    from gilmsg.crypto import fedmsg_compat

    fedmsg_compat.install()
    assert fedmsg.crypto.validate is fedmsg_compat.validate
    assert fedmsg.crypto.validate({"topic": "t", "msg": {}}, ca_cert_location="/nonexistent")\
        is False  # unsigned, and never a traceback
    fedmsg_compat.uninstall()
    assert fedmsg.crypto.validate is not fedmsg_compat.validate
