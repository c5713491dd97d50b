"""The options of the chaos suite (``--seed``, ``--duration``), registered by ``tests/conftest.py``
(pytest takes new options only from conftest files it loads at start-up; this one's directory
is not always among them)."""

from __future__ import annotations

import pytest

#: The default run of ``-m chaos`` (seconds, faults then a quiet period).
DEFAULT_DURATION = 180.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "the chaos suite (tests/chaos)")
    group.addoption("--seed", type=int, default=None,
                    help="seed of the -m chaos run (default: a random one, printed)")
    group.addoption("--duration", type=float, default=DEFAULT_DURATION,
                    help="seconds of the -m chaos run (faults, then a quiet period; "
                         f"default {DEFAULT_DURATION:.0f})")
