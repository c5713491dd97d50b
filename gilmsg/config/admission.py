"""The config keys of protocol version 4's admission policy (issue 19): the hash an identity
signs with, whether SHA-1 signatures and SHA-1-signed certificates are accepted, and how old or
how far ahead of the clock a message may be. Read only through these helpers (re-exported by
:mod:`gilmsg.config`); the names are the interface. :mod:`gilmsg.core.admission` judges a
message by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gilmsg.config import registry
from gilmsg.errors import ConfigError

__all__ = [
    "ACCEPT_SHA1_CERTIFICATES_KEY", "ACCEPT_SHA1_KEY", "DEFAULT_ACCEPT_SHA1",
    "DEFAULT_MAX_CLOCK_SKEW", "DEFAULT_MAX_MESSAGE_AGE", "DEFAULT_SIGNATURE_HASH",
    "MAX_CLOCK_SKEW_KEY", "MAX_MESSAGE_AGE_KEY", "SIGNATURE_HASHES", "SIGNATURE_HASH_KEY",
    "accept_sha1", "accept_sha1_certificates", "max_clock_skew", "max_message_age",
    "signature_hash",
]

#: Hash an identity signs its *messages* with: ``"sha1"`` (fedmsg's; stock fedmsg validates it)
#: or ``"sha256"`` (for buses without stock fedmsg validators). ACKs are SHA-256 whatever this
#: says, for every message of protocol version 4 or later.
SIGNATURE_HASH_KEY = "gilmsg.signature_hash"
SIGNATURE_HASHES = ("sha1", "sha256")
DEFAULT_SIGNATURE_HASH: str = registry.BY_NAME[SIGNATURE_HASH_KEY].default
#: False: a publisher refuses SHA-1 ACKs and a recipient SHA-1 messages.
ACCEPT_SHA1_KEY = "gilmsg.accept_sha1"
DEFAULT_ACCEPT_SHA1: bool = registry.BY_NAME[ACCEPT_SHA1_KEY].default
#: True: accept service certificates a legacy CA signed with SHA-1 (default False: refused,
#: with that reason).
ACCEPT_SHA1_CERTIFICATES_KEY = "gilmsg.accept_sha1_certificates"
#: A recipient refuses a gilmsg message whose timestamp is older than this (seconds) ...
MAX_MESSAGE_AGE_KEY = "gilmsg.max_message_age"
#: ... or ahead of its own clock by more than this (seconds).
MAX_CLOCK_SKEW_KEY = "gilmsg.max_clock_skew"
#: Defaults (the registry's): the outbox's default expiry (three days,
#: ``gilmsg.outbox.policy.DEFAULT_EXPIRY``) plus one hour, so a message the outbox still
#: re-sends is never stale; five minutes of skew.
DEFAULT_MAX_MESSAGE_AGE: float = registry.BY_NAME[MAX_MESSAGE_AGE_KEY].default
DEFAULT_MAX_CLOCK_SKEW: float = registry.BY_NAME[MAX_CLOCK_SKEW_KEY].default


def signature_hash(config: Mapping[str, Any]) -> str:
    """``gilmsg.signature_hash``: the hash this identity signs its messages with.

    Raises:
        ConfigError: not one of :data:`SIGNATURE_HASHES`.
    """
    key, value = registry.lookup(config, SIGNATURE_HASH_KEY)
    if value is None:
        return DEFAULT_SIGNATURE_HASH
    if not isinstance(value, str) or value.lower() not in SIGNATURE_HASHES:
        raise ConfigError(f"config key {key!r} must be one of "
                          f"{', '.join(SIGNATURE_HASHES)}, not {value!r}")
    return value.lower()


def accept_sha1(config: Mapping[str, Any]) -> bool:
    """``gilmsg.accept_sha1``: are SHA-1 signatures (ACKs at a publisher, messages at a
    recipient) accepted? Default True (mixed fleets; see docs/protocol.rst).

    Raises:
        ConfigError: not a boolean.
    """
    key, value = registry.lookup(config, ACCEPT_SHA1_KEY)
    if value is None:
        return DEFAULT_ACCEPT_SHA1
    if not isinstance(value, bool):
        raise ConfigError(f"config key {key!r} must be True or False, not {value!r}")
    return value


def accept_sha1_certificates(config: Mapping[str, Any]) -> bool:
    """``gilmsg.accept_sha1_certificates``: accept SHA-1-signed service certificates?

    Raises:
        ConfigError: not a boolean.
    """
    key, value = registry.lookup(config, ACCEPT_SHA1_CERTIFICATES_KEY)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"config key {key!r} must be True or False, "
                          f"not {value!r}")
    return value


def _seconds(config: Mapping[str, Any], name: str, default: float) -> float:
    key, value = registry.lookup(config, name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < float(value) < float("inf")):
        raise ConfigError(f"config key {key!r} must be a positive number of seconds, "
                          f"not {value!r}")
    return float(value)


def max_message_age(config: Mapping[str, Any]) -> float:
    """``gilmsg.max_message_age`` in seconds (default :data:`DEFAULT_MAX_MESSAGE_AGE`).

    Raises:
        ConfigError: not a positive finite number.
    """
    return _seconds(config, MAX_MESSAGE_AGE_KEY, DEFAULT_MAX_MESSAGE_AGE)


def max_clock_skew(config: Mapping[str, Any]) -> float:
    """``gilmsg.max_clock_skew`` in seconds (default :data:`DEFAULT_MAX_CLOCK_SKEW`).

    Raises:
        ConfigError: not a positive finite number.
    """
    return _seconds(config, MAX_CLOCK_SKEW_KEY, DEFAULT_MAX_CLOCK_SKEW)
