"""Recipient groups from the configuration, and early word about names no identity can hold.

A producer names a group instead of hard-coding recipients, so that adding a consumer changes
``fedmsg.d``, not the producer::

    config = dict(
        **{"gilmsg.recipients": {"compose-done": ["archiver", "notifier"]}},
    )
    gilmsg.publish(topic="compose.done", msg={...}, recipients=["@compose-done"], **config)
    # gilmsg-logger -r @compose-done ...

``@NAME`` expands to the members of group NAME, in order (a member may itself be ``@OTHER``);
repeats are dropped. The configuration may also list every recipient of the bus in
``gilmsg.known_recipients``. When it declares either key, a recipient that is neither listed,
nor a group member, nor a ``certnames`` entry is reported at once (a warning, once per name and
process) instead of costing a whole ``ack_timeout``; with ``gilmsg.strict_recipients = True``
(or ``strict=True``) it is refused before anything is sent.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from gilmsg.core import wire
from gilmsg.errors import InvalidInput

#: Config key: group name -> list of recipient names (or ``@group``\ s).
GROUPS_KEY = "gilmsg.recipients"
#: Config key: every recipient name of the bus (optional).
KNOWN_KEY = "gilmsg.known_recipients"
#: Config key: refuse unknown recipient names instead of warning.
STRICT_KEY = "gilmsg.strict_recipients"
#: Prefix marking a group in a list of recipients.
GROUP_PREFIX = "@"

log = logging.getLogger(__name__)
_warned: set[str] = set()
_warned_lock = threading.Lock()


def groups_of(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """The configured groups; :class:`InvalidInput` if the key is not a dict of name lists."""
    value = config.get(GROUPS_KEY) or {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"config key {GROUPS_KEY!r} must be a dict of group name -> list of "
                           f"recipient names")
    out: dict[str, list[str]] = {}
    for name, members in value.items():
        if isinstance(members, str) or not isinstance(members, Iterable):
            raise InvalidInput(f"config key {GROUPS_KEY!r}: group {name!r} must be a list of "
                               f"names, not {type(members).__name__}")
        out[str(name)] = list(members)
    return out


def expand(recipients: Any, config: Mapping[str, Any]) -> Any:
    """``recipients`` with every ``@group`` replaced by its members (order kept, no repeats).

    Anything that is not a list of names is returned unchanged, for
    :func:`gilmsg.core.wire.check_recipients` to refuse with its own message.

    Raises:
        InvalidInput: an unknown group, a group that contains itself, or a bad groups key.
    """
    if recipients is None or isinstance(recipients, (str, bytes, Mapping)) or not isinstance(
            recipients, Iterable):
        return recipients
    items = list(recipients)
    if not any(isinstance(i, str) and i.startswith(GROUP_PREFIX) for i in items):
        return items
    groups = groups_of(config)
    out: list[Any] = []

    def add(item: Any, trail: tuple[str, ...]) -> None:
        if not (isinstance(item, str) and item.startswith(GROUP_PREFIX)):
            if item not in out:
                out.append(item)
            return
        name = item[len(GROUP_PREFIX):]
        if name in trail:
            raise InvalidInput(f"recipient group {name!r} contains itself "
                               f"({' -> '.join((*trail, name))})")
        if name not in groups:
            known = ", ".join(sorted(groups)) or "none defined"
            raise InvalidInput(f"no recipient group {name!r} in config key {GROUPS_KEY!r} "
                               f"(groups: {known})")
        if not groups[name]:
            raise InvalidInput(f"recipient group {name!r} is empty")
        for member in groups[name]:
            add(member, (*trail, name))

    for item in items:
        add(item, ())
    return out


def known_names(config: Mapping[str, Any]) -> set[str] | None:
    """Every name a recipient of this bus may have, or None when the configuration does not say.

    It says when it sets ``gilmsg.known_recipients`` or ``gilmsg.recipients``; the names are
    those, the groups' members and the ``certnames`` entries (keys and values).
    """
    if KNOWN_KEY not in config and GROUPS_KEY not in config:
        return None
    known = {str(n) for n in config.get(KNOWN_KEY) or ()}
    for members in groups_of(config).values():
        known.update(str(m) for m in members if not str(m).startswith(GROUP_PREFIX))
    certnames = config.get("certnames") or {}
    if isinstance(certnames, Mapping):
        known.update(str(k) for k in certnames)
        known.update(str(v) for v in certnames.values())
    return known


def unknown(recipients: Iterable[str], config: Mapping[str, Any]) -> list[str]:
    """The names in ``recipients`` no identity of the bus can hold (empty if it cannot tell)."""
    known = known_names(config)
    if known is None:
        return []
    return [r for r in recipients if r not in known]


def resolve(recipients: Any, config: Mapping[str, Any], strict: bool | None = None) -> Any:
    """:func:`expand` the groups, then report unknown names: a warning, or refused if strict.

    ``strict`` None follows the config key ``gilmsg.strict_recipients``. The warning is logged
    once per name and process (logger ``gilmsg.groups``).

    Raises:
        InvalidInput: as :func:`expand`; in strict mode, an unknown name.
    """
    expanded = expand(recipients, config)
    if not isinstance(expanded, list) or not all(isinstance(r, str) for r in expanded):
        return expanded
    try:
        wire.check_recipients(expanded)
    except InvalidInput:
        return expanded  # refused by the caller's check, with its message: no warning first
    missing = unknown(expanded, config)
    if not missing:
        return expanded
    if strict is None:
        strict = bool(config.get(STRICT_KEY))
    text = (f"{', '.join(missing)}: no identity of this bus has that name (not in "
            f"{KNOWN_KEY}, a group of {GROUPS_KEY} or certnames; a typo?)")
    if strict:
        raise InvalidInput(text + "; refused in strict mode")
    with _warned_lock:
        new = [m for m in missing if m not in _warned]
        _warned.update(new)
    if new:
        _warn(text)
    return expanded


def _warn(text: str) -> None:
    """Log ``text`` at WARNING; where logging is not configured (a plain script, in which
    Python would print the bare message), print ``gilmsg: warning: <text>`` on stderr instead."""
    if log.hasHandlers():
        log.warning("%s", text)
    elif log.isEnabledFor(logging.WARNING):
        sys.stderr.write(f"gilmsg: warning: {text}\n")
        sys.stderr.flush()
