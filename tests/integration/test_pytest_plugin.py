"""The pytest plugin, used by a separate test project (plugin_project/) in a real pytest run.

The plugin is found through its ``pytest11`` entry point, as in any project that installs gilmsg.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gilmsg.testing.pytest_plugin import matches

PROJECT = Path(__file__).parent / "plugin_project"


def test_matches_compares_fields_and_topic_suffixes():
    env = {"topic": "org.gilmsg.test.myapp.compose.done", "msg": {"compose": "rawhide"}}
    assert matches(env, {"topic": "myapp.compose.done", "msg": {"compose": "rawhide"}})
    assert matches(env, {"topic": "org.gilmsg.test.myapp.compose.done"})
    assert not matches(env, {"topic": "app.compose.done"})  # not at a dot
    assert not matches(env, {"msg": {"compose": "eln"}})
    assert not matches(env, {"msg": {}})


@pytest.mark.timeout(180)
def test_a_separate_project_uses_the_fixture_and_its_assertions(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-rA", "-p", "no:randomly"], cwd=project,
            capture_output=True, text=True, timeout=170, start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the project's test run did not finish: {exc.stdout!r}")
    out = proc.stdout
    outcomes = {name: state for state, name in
                re.findall(r"^(PASSED|FAILED) service_checks.py::(\w+)", out, re.M)}
    assert outcomes == {
        "test_service_reaches_the_archiver": "PASSED",
        "test_expect_sends_checks_exactly_what_arrived": "PASSED",
        "test_a_failing_archiver_makes_the_service_see_a_timeout": "PASSED",
        "test_default_bus_has_publisher_and_recipient": "PASSED",
        "test_wrong_expectation_is_reported": "FAILED",
    }, out + proc.stderr
    assert "stand-in archiver did not receive [{'msg': {'compose': 'eln'}}] within 1s; " \
           "it received: org.gilmsg.dev.myapp.compose.done {'compose': 'rawhide'}" in out
    assert proc.returncode == 1  # pytest: some test failed (the one meant to)
