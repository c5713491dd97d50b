"""The chaos suite: ``./run tests -m chaos --seed N --duration SECONDS`` (options in
``tests/chaos/options.py``, registered by ``tests/conftest.py``)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A chaos run lasts its duration plus the convergence bound: give it that much time."""
    from tests.chaos.harness import CONVERGE_BOUND

    for item in items:
        seconds = item.get_closest_marker("chaos_seconds")
        if seconds is not None:
            duration = seconds.args[0] or config.getoption("--duration")
            item.add_marker(pytest.mark.timeout(duration + CONVERGE_BOUND + 120))
