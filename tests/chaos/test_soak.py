"""The soak: ``./run tests -m soak [--seed N] [--duration SECONDS]`` (default one hour).

The chaos system (:mod:`tests.chaos.harness`) under steady traffic, with a fault drawn from the
seed every one to three minutes instead of every second or two, while :class:`soak.Sampler`
reads every process's descriptors, threads and RSS every 5 s. It fails if the checker fails;
it prints the per-process slopes (after a warm-up, while the publishers publish) and writes
them, with every sample, to ``soak-slopes.json`` in the test's directory (path printed). The
slopes are reported, not bounded: see ``docs/outbox.rst``.
"""

from __future__ import annotations

import random
import warnings

import pytest

from tests.chaos import harness, soak
from tests.chaos.harness import Options
from tests.chaos.options import SOAK_DURATION, run_duration

#: Seconds between two drawn fault starts.
SOAK_GAP = (60.0, 180.0)
#: Seconds between two readings of every process.
SAMPLE_EVERY = 5.0


def soak_periods(duration: float) -> tuple[float, float]:
    """(quiet period at the end, warm-up of each incarnation) of a soak of ``duration``."""
    return min(60.0, max(8.0, duration / 6)), min(300.0, duration / 6)


@pytest.mark.soak
@pytest.mark.chaos_seconds(0, default=SOAK_DURATION)
def test_soak(tmp_path, request):
    seed = request.config.getoption("--seed")
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 31)
    duration = run_duration(request.config, SOAK_DURATION)
    quiet, warmup = soak_periods(duration)
    system = harness.System(tmp_path, Options(seed, duration, quiet=quiet, gap=SOAK_GAP))
    sampler = soak.Sampler(system, SAMPLE_EVERY)
    sampler.start()
    try:
        result = system.run()
    finally:
        sampler.stop()
    for kind, why in sorted(result.skipped.items()):
        warnings.warn(f"soak: {kind} faults skipped: {why}", stacklevel=1)
    start, end = system.t0, system.t0 + system.horizon
    table = soak.slopes(sampler.samples, start, end, warmup)
    path = tmp_path / "soak-slopes.json"
    soak.write_json(path, table, sampler.samples, {
        "seed": seed, "duration": duration, "quiet": quiet, "warmup": warmup,
        "window": [start, end], "sample_every": SAMPLE_EVERY, "summary": result.summary()})
    print(result.report())
    print(soak.format_table(table, end - start - warmup))
    print(f"soak slopes written to {path}")
    assert table and all(row["fitted"] for row in table.values()), \
        "no process was sampled long enough\n" + soak.format_table(table, end - start)
    assert result.verdict.ok, "\n" + result.report()


# -- the arithmetic of the slopes (in the default run: no process started) -------------------

def _series(name: str, pid: int, t0: float, values: list[tuple[int, int, float]]
            ) -> list[soak.Sample]:
    return [soak.Sample(t0 + 10.0 * i, name, pid, *v) for i, v in enumerate(values)]


def test_a_steady_rise_gives_its_slope_per_hour_and_is_flagged():
    # One descriptor more every 10 s: 360 per hour; threads flat; RSS 1 MiB per 100 s.
    samples = _series("p", 1, 0.0, [(10 + i, 4, 50.0 + i / 10) for i in range(40)])
    row = soak.slopes(samples, 0.0, 1000.0, warmup=0.0)["p"]
    assert row["fds_per_hour"] == pytest.approx(360.0)
    assert row["threads_per_hour"] == 0.0
    assert row["rss_mib_per_hour"] == pytest.approx(36.0)
    assert row["rising"] == ["fds", "rss_mib"]


def test_a_restart_is_no_growth_and_the_warmup_and_window_are_left_out():
    # Two incarnations, each flat at its own level after a start-up climb of 30 s (warm-up),
    # and samples after the window's end that would rise: the slope is 0.
    first = _series("p", 1, 0.0, [(5 + min(i, 3) * 5, 3, 40.0) for i in range(30)])
    second = _series("p", 2, 300.0, [(8 + min(i, 3) * 9, 5, 90.0) for i in range(30)])
    late = _series("p", 2, 700.0, [(100 + i, 5, 900.0) for i in range(5)])
    table = soak.slopes(first + second + late, 0.0, 650.0, warmup=30.0)
    row = table["p"]
    assert (row["incarnations"], row["fitted"]) == (2, 2)
    assert row["fds_per_hour"] == 0.0 and row["rss_mib_per_hour"] == 0.0
    assert row["rising"] == []


def test_noise_without_a_trend_is_not_flagged():
    rng = random.Random(5)
    samples = _series("p", 1, 0.0, [(20 + rng.choice((-2, 0, 2)), 6, 60.0 + rng.random())
                                    for _ in range(200)])
    row = soak.slopes(samples, 0.0, 5000.0, warmup=0.0)["p"]
    assert abs(row["fds_per_hour"]) < 5 and row["rising"] == []
    text = soak.format_table({"p": row}, 2000.0)
    assert text.splitlines()[2].startswith("p ")
