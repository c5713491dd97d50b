"""The chaos suite: ``./run tests -m chaos --seed N --duration SECONDS`` (options in
``tests/chaos/options.py``, registered by ``tests/conftest.py``)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A chaos run lasts its duration plus the convergence bound: give it that much time.

    ``chaos_seconds(0)``: ``--duration``, or the marker's ``default`` (the chaos suite's if none).
    """
    from tests.chaos.harness import CONVERGE_BOUND
    from tests.chaos.options import DEFAULT_DURATION, run_duration

    for item in items:
        seconds = item.get_closest_marker("chaos_seconds")
        if seconds is not None:
            duration = seconds.args[0] or run_duration(
                config, seconds.kwargs.get("default", DEFAULT_DURATION))
            item.add_marker(pytest.mark.timeout(duration + CONVERGE_BOUND + 120))
