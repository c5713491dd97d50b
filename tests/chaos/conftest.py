"""Options of the chaos suite: ``./run tests -m chaos --seed N --duration SECONDS``."""

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A chaos run lasts its duration plus the convergence bound: give it that much time."""
    from tests.chaos.harness import CONVERGE_BOUND

    for item in items:
        seconds = item.get_closest_marker("chaos_seconds")
        if seconds is not None:
            duration = seconds.args[0] or config.getoption("--duration")
            item.add_marker(pytest.mark.timeout(duration + CONVERGE_BOUND + 120))
