"""The options of the chaos suite and the soak (``--seed``, ``--duration``), registered by
``tests/conftest.py`` (pytest takes new options only from conftest files it loads at start-up;
this one's directory is not always among them).

Both mean the same in both: ``--seed`` draws the fault schedule, ``--duration`` is the seconds
of the run (faults, then a quiet period). Only the default duration differs: 3 minutes for
``-m chaos``, one hour for ``-m soak``.
"""

from __future__ import annotations

import pytest

#: The default run of ``-m chaos`` (seconds, faults then a quiet period).
DEFAULT_DURATION = 180.0
#: The default run of ``-m soak``.
SOAK_DURATION = 3600.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "the chaos suite and the soak (tests/chaos)")
    group.addoption("--seed", type=int, default=None,
                    help="seed of the -m chaos or -m soak run (default: a random one, printed)")
    group.addoption("--duration", type=float, default=None,
                    help="seconds of the -m chaos or -m soak run (faults, then a quiet period; "
                         f"default {DEFAULT_DURATION:.0f} for chaos, {SOAK_DURATION:.0f} for "
                         "soak)")


def run_duration(config: pytest.Config, default: float) -> float:
    """``--duration`` if given, else the suite's ``default``."""
    value = config.getoption("--duration")
    return default if value is None else float(value)
