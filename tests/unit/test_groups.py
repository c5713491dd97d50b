"""Recipient groups (gilmsg.recipients) and early word about unknown recipient names."""

from __future__ import annotations

import logging

import pytest

from gilmsg import groups
from gilmsg.errors import InvalidInput

CFG = {
    "certnames": {"pub": "pub"},
    "gilmsg.recipients": {"compose-done": ["archiver", "notifier"],
                          "all": ["@compose-done", "pager", "archiver"],
                          "loop": ["@loop2"], "loop2": ["@loop"], "none": []},
}


def test_groups_expand_in_order_without_repeats():
    assert groups.expand(["@compose-done"], CFG) == ["archiver", "notifier"]
    assert groups.expand(["pager", "@all"], CFG) == ["pager", "archiver", "notifier"]
    assert groups.expand(["a", "b"], {}) == ["a", "b"]  # no group named: config not read
    assert groups.expand("a b", CFG) == "a b"  # left for check_recipients to refuse


@pytest.mark.parametrize("recipients, words", [
    (["@nope"], "no recipient group 'nope' in config key 'gilmsg.recipients' (groups: all,"),
    (["@loop"], "recipient group 'loop' contains itself (loop -> loop2 -> loop)"),
    (["@none"], "recipient group 'none' is empty"),
])
def test_bad_groups_are_refused(recipients, words):
    with pytest.raises(InvalidInput) as info:
        groups.expand(recipients, CFG)
    assert words in str(info.value)


def test_unknown_names_only_when_the_config_lists_them():
    assert groups.unknown(["archiver", "pub", "archivr"], CFG) == ["archivr"]
    assert groups.unknown(["anything"], {"certnames": {"pub": "pub"}}) == []
    assert groups.unknown(["x", "y"], {"gilmsg.known_recipients": ["x"]}) == ["y"]


def test_unknown_name_warns_once_and_strict_refuses(caplog):
    cfg = {"gilmsg.known_recipients": ["x"]}
    with caplog.at_level(logging.WARNING, logger="gilmsg.groups"):
        assert groups.resolve(["x", "typo-once"], cfg) == ["x", "typo-once"]
        groups.resolve(["typo-once"], cfg)
    assert [r.getMessage() for r in caplog.records].count(
        "typo-once: no identity of this bus has that name (not in gilmsg.known_recipients, "
        "a group of gilmsg.recipients or certnames; a typo?)") == 1
    with pytest.raises(InvalidInput, match="refused in strict mode"):
        groups.resolve(["typo"], {**cfg, "gilmsg.strict_recipients": True})
    with pytest.raises(InvalidInput, match="refused in strict mode"):
        groups.resolve(["typo"], cfg, strict=True)
