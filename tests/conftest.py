"""Shared fixtures: a fresh local bus (CA, certificates, free ports) per test."""

from __future__ import annotations

import signal

import pytest

from gilmsg.testing import DevBus

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # Started as a background job (`./run tests &`): SIGINT arrives ignored and children would
    # inherit that. A handler here is reset to the default in every child at exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def make_bus(tmp_path):
    """Factory: ``make_bus(["pub", "r1"], extra={...})``; every bus is closed after the test."""
    buses: list[DevBus] = []

    def make(services, extra=None, subdir="bus"):
        bus = DevBus(tmp_path / f"{subdir}{len(buses)}", services, extra=extra)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


@pytest.fixture(autouse=True)
def _close_links():
    """Each test's in-process publishers go with it: no sockets left reconnecting to dead buses."""
    yield
    from gilmsg import transport

    transport.close_all()
