"""Reading fedmsg's configuration without importing fedmsg gives what fedmsg's loader gives."""

from __future__ import annotations

import copy
import warnings

import pytest

from gilmsg import config as gconfig


def fedmsg_load(**kw):
    import fedmsg.config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fedmsg.config.load_config(invalidate_cache=True, **kw)


def test_defaults_are_fedmsgs():
    import fedmsg.config

    assert gconfig.FEDMSG_DEFAULTS == fedmsg.config.defaults


def test_the_search_of_fedmsg_d_reads_what_fedmsg_reads(tmp_path, monkeypatch):
    (tmp_path / "fedmsg.d").mkdir()
    (tmp_path / "fedmsg.d" / "a.py").write_text(
        'config = {"endpoints": {"x": "tcp://127.0.0.1:1", "y": ("tcp://127.0.0.1:2",)},'
        ' "logging": {"version": 1, "loggers": {"extra": {}}}, "nested": {"a": 1, "b": 2}}\n')
    (tmp_path / "fedmsg.d" / "b.py").write_text(
        'config = {"nested": {"b": 3}, "topic_prefix": "org.example", "name": "x"}\n')
    (tmp_path / "fedmsg.d" / "ignored.txt").write_text("config = {1: 2}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    try:
        expected = copy.deepcopy(fedmsg_load())
        assert gconfig.load() == expected
        assert gconfig.load({"name": "y"}) == {**expected, "name": "y"}
        (tmp_path / "fedmsg.d" / "b.py").write_text('config = {"environment": "prod"}\n')
        assert gconfig.load()["environment"] == "prod"  # a changed file is read again
    finally:
        fedmsg_load()


def test_a_named_file_stays_the_base_of_the_config_made_from_it(tmp_path, monkeypatch):
    path = tmp_path / "one.py"
    path.write_text('config = {"endpoints": {"x": ["tcp://127.0.0.1:1"]}, "environment": "e"}\n')
    (tmp_path / "fedmsg.d").mkdir()
    (tmp_path / "fedmsg.d" / "other.py").write_text(
        'config = {"endpoints": {"z": ["tcp://127.0.0.1:3"]}, "stray": 1}\n')
    monkeypatch.chdir(tmp_path)
    cfg = gconfig.load({"name": "x"}, filename=str(path))
    again = gconfig.load(cfg)  # what gilmsg.publish(**cfg) does with it
    assert again == cfg and "stray" not in again and again["environment"] == "e"
    assert gconfig.load()["stray"] == 1  # nothing sticks to the process


def test_no_endpoints_anywhere_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    import os

    if any(os.path.exists(p) for p in ("/etc/fedmsg.d", "/etc/fedmsg-config.py")):
        pytest.skip("this machine has a system-wide fedmsg configuration")
    with pytest.raises(gconfig.ConfigError, match="No config value 'endpoints'"):
        gconfig.load()
    assert gconfig.load({"endpoints": {"a": ["tcp://127.0.0.1:1"]}})["post_init_sleep"] == 0.5


def test_a_search_without_endpoints_is_read_once_until_a_file_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    (tmp_path / "fedmsg.d").mkdir()
    (tmp_path / "fedmsg.d" / "a.py").write_text('config = {"environment": "e"}\n')
    reads = []
    real = gconfig._read_files
    monkeypatch.setattr(gconfig, "_read_files", lambda files: reads.append(files) or real(files))
    overrides = {"endpoints": {"a": ["tcp://127.0.0.1:1"]}}
    for _ in range(3):  # as every publish of a process configured by keyword arguments
        assert gconfig.load(overrides)["endpoints"] == overrides["endpoints"]
    assert len(reads) == 1
    with pytest.raises(gconfig.ConfigError, match="No config value 'endpoints'"):
        gconfig.load()  # still refused without endpoints, from what was remembered
    assert len(reads) == 1
    (tmp_path / "fedmsg.d" / "a.py").write_text(
        'config = {"endpoints": {"b": ["tcp://127.0.0.1:2"]}, "environment": "f"}\n')
    assert gconfig.load()["environment"] == "f"  # a changed file is read again
    assert len(reads) == 2
