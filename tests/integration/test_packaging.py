"""What an installed gilmsg promises beyond its code: one version, its licence and type hints,
a README a package index renders, and a fedmsg-hub start without moksha's pkg_resources
warning."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

import gilmsg
from gilmsg.testing import HUB_READY_LOG

REPO = Path(__file__).resolve().parents[2]
WARNING = "pkg_resources is deprecated"


def test_one_version_source():
    """setup.py reads gilmsg.__version__; the installed metadata carries the same string."""
    assert metadata.version("gilmsg") == gilmsg.__version__
    setup_py = (REPO / "setup.py").read_text(encoding="utf-8")
    assert not re.search(r'version="\d', setup_py), "setup.py repeats the version"


def test_license_and_typed_marker():
    meta = metadata.metadata("gilmsg")
    assert meta["License-Expression"] == "LGPL-2.1-or-later"
    assert "Version 2.1, February 1999" in (REPO / "LICENSE").read_text(encoding="utf-8")
    assert (REPO / "gilmsg" / "py.typed").exists()
    assert (REPO / "CHANGELOG.rst").read_text(encoding="utf-8").count(gilmsg.__version__) >= 1


def test_readme_renders_on_a_package_index():
    """PyPI renders the long description with docutils and no source tree: no relative image,
    no warning, and no deprecated fedmsg config loader in the examples."""
    docutils_core = pytest.importorskip("docutils.core", reason="docutils is not installed")
    text = (REPO / "README.rst").read_text(encoding="utf-8")
    assert not re.search(r"^\.\. (image|figure):: (?!https://)", text, re.MULTILINE)
    assert "load_config(" not in text
    docutils_core.publish_doctree(text, settings_overrides={
        "halt_level": 2, "report_level": 2, "file_insertion_enabled": False,
        "raw_enabled": False})


def _hub_stderr(bus, first_line: str, explicit: bool) -> str:
    """stderr of a real fedmsg-hub, run until its gilmsg consumer says it runs. Its config file
    starts with ``first_line``; ``explicit`` names the consumer with ``--with-consumers``
    (imported before moksha), else the hub loads the installed entry points (after moksha)."""
    path = bus.write_hub_config("hub", gilmsg_example=True,
                                **{"gilmsg_example.output": str(bus.root / "consumed.jsonl")})
    path.write_text(first_line + path.read_text())
    argv = [str(Path(sys.executable).parent / "fedmsg-hub"), "--config-filename", str(path)]
    if explicit:
        argv += ["--with-consumers", "gilmsg_example.consumers:ExampleConsumer"]
    proc = bus.spawn(argv)
    proc.wait_for(lambda line: HUB_READY_LOG in line, timeout=60)
    proc.stop()
    proc.wait(10)  # joins the readers: stderr is complete
    return proc.stderr


def test_hub_start_without_the_pkg_resources_warning(make_bus):
    pytest.importorskip("gilmsg_example", reason="the example consumer is not installed")
    bus = make_bus(["hub"])
    # The premise: with entry-point consumers moksha imports pkg_resources before any gilmsg
    # code runs, so a plain config still shows setuptools' warning (if it prints one at all).
    plain = _hub_stderr(bus, "", explicit=False)
    if WARNING not in plain:
        pytest.skip("this setuptools prints no pkg_resources warning")
    # --with-consumers imports the gilmsg consumer, hence gilmsg's filter, before moksha.
    assert WARNING not in _hub_stderr(bus, "", explicit=True)
    # A config file that imports gilmsg: the deployment guide's and the demo's way.
    assert WARNING not in _hub_stderr(bus, "import gilmsg  # noqa: F401\n\n", explicit=False)
