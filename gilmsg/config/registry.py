"""Every gilmsg configuration key, declared once: name, type, default, one line of doc, readers.

gilmsg's keys live in fedmsg's configuration (``fedmsg.d``, keyword arguments, a hub's config)
in two namespaces:

* **top-level keys**, spelled ``gilmsg.<name>`` (``gilmsg.recipients``, ``gilmsg.transport``).
  The older spellings ``gilmsg_<name>`` (``gilmsg_transport``, ``gilmsg_heartbeat_ivl`` ...)
  keep working: reading one logs a WARNING, once per key and process, naming the new spelling.
  When both spellings are set, the dotted one wins.
* **per-consumer keys**, ``<config_key>.gilmsg_<name>`` (``<config_key>`` is a
  ``GilmsgConsumer``'s own ``config_key``): :data:`SUFFIXES`.

:func:`check` looks at a whole configuration: a key in those namespaces that is not declared
here (a typo such as ``gilmsg.strict_recipents``) gets one WARNING with a did-you-mean, or, with
``gilmsg.strict_config`` true, a :class:`~gilmsg.errors.ConfigError` (exit 4 in the CLIs).
``gilmsg_<x>`` keys are shared with other software (a consumer's ``config_key`` may be
``gilmsg_example``), so one counts as a typo only when it is close to a gilmsg key.

``docs/config.rst`` ends with :func:`rst` (print it with ``python -c "from gilmsg.config
import registry; print(registry.rst(), end='')"``); a unit test holds the two equal. Standard
library only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from gilmsg.errors import ConfigError

log = logging.getLogger("gilmsg.config")

#: The prefix of every top-level key, and of the per-consumer suffixes.
PREFIX = "gilmsg."
OLD_PREFIX = "gilmsg_"
#: How close (difflib ratio) a ``gilmsg_<x>`` key must be to a gilmsg key to count as a typo.
TYPO_CUTOFF = 0.8


class Key(NamedTuple):
    """One configuration key.

    ``name`` is the spelling to use (a per-consumer key's starts with ``.``: it follows the
    consumer's ``config_key``); ``old`` the deprecated spellings still read; ``type`` and
    ``default`` what a reader accepts and assumes when unset (None: unset means off / none);
    ``readers`` which processes read it.
    """

    name: str
    type: str
    default: Any
    doc: str
    readers: str
    old: tuple[str, ...] = ()


_SECONDS = "number of seconds, 0 to 3600 (0: off)"
_ZMQ = "every process using the ZeroMQ transport (publishers, recipients, hubs, gilmsg-tail)"
_ALL = "every gilmsg process (publishers, recipients, fedmsg-hub, the gilmsg-* commands)"
_PUBLISHERS = "publishers (gilmsg.publish, gilmsg-logger, gilmsg-ping, gilmsg-sandbox)"
_RECIPIENTS = "recipients (fedmsg-hub's GilmsgConsumer, gilmsg-tail, GilmsgCallback, stand-ins)"
_OUTBOX = "the outbox (Outbox(), gilmsg-logger --outbox, gilmsg-outbox, the hub's runner)"


def _link(name: str, default: float, what: str) -> Key:
    return Key(f"gilmsg.{name}", _SECONDS, default, what, _ZMQ, (f"gilmsg_{name}",))


#: The top-level keys, in the order docs/config.rst lists them.
KEYS: tuple[Key, ...] = (
    Key("gilmsg.transport", "transport name", "zmq",
        'What carries the bytes: "zmq", "memory", "amqp" or the dotted name of a module.',
        _ALL, ("gilmsg_transport",)),
    Key("gilmsg.amqp_exchange", "exchange name", "amq.topic",
        "The topic exchange the AMQP transport publishes on and binds its queues to.",
        "every process using the AMQP transport", ("gilmsg_amqp_exchange",)),
    _link("heartbeat_ivl", 1.0, "ZMQ_HEARTBEAT_IVL: a ZMTP PING this often."),
    _link("heartbeat_timeout", 3.0,
          "ZMQ_HEARTBEAT_TIMEOUT: nothing heard this long after a PING drops the connection."),
    _link("heartbeat_ttl", 3.0, "ZMQ_HEARTBEAT_TTL: the peer drops the connection after this."),
    _link("connect_timeout", 2.0,
          "ZMQ_CONNECT_TIMEOUT: a connection attempt is abandoned and restarted after this."),
    _link("tcp_user_timeout", 10.0,
          "ZMQ_TCP_MAXRT (TCP_USER_TIMEOUT): data unacknowledged this long kills the connection."),
    _link("tcp_keepalive_idle", 30.0,
          "TCP keepalive probes after this idle time (then every 10 s; 3 lost kill it)."),
    Key("gilmsg.ack_endpoints", "dict: name -> address or list of addresses", None,
        "Where each named recipient sends its ACKs (a ZeroMQ endpoint of their own) instead of "
        "its endpoints entry: receivers of the whole bus never get them (docs/performance.rst).",
        _ZMQ),
    Key("gilmsg.recipients", "dict: group name -> list of names or @groups", None,
        "Recipient groups: publishing to @NAME requires each member.", _PUBLISHERS),
    Key("gilmsg.known_recipients", "list of names", None,
        "Every recipient name of the bus: an unknown recipient is reported at once.",
        _PUBLISHERS),
    Key("gilmsg.strict_recipients", "bool", False,
        "Refuse an unknown recipient name (InvalidInput) instead of logging a warning.",
        _PUBLISHERS),
    Key("gilmsg.allow_failed_consumers", "bool", False,
        "fedmsg-hub runs on without a gilmsg consumer that cannot start (else exit 4).",
        "fedmsg-hub (GilmsgConsumer)"),
    Key("gilmsg.outbox", "file path or postgresql:// URL", None,
        "The durable outbox of this process: an SQLite file, or a PostgreSQL database.",
        _OUTBOX),
    Key("gilmsg.outbox.expiry", "number of seconds", 259200.0,
        "How long a stored message is retried before it is marked expired (3 days).", _OUTBOX),
    Key("gilmsg.outbox.durability", '"full" or "normal"', "full",
        '"full" fsyncs every commit (PostgreSQL: synchronous_commit on, else off).', _OUTBOX),
    Key("gilmsg.outbox.runner", "bool", False,
        "Run the outbox runner (moksha producer gilmsg_outbox) inside this fedmsg-hub.",
        "fedmsg-hub (OutboxProducer)"),
    Key("gilmsg.outbox.runner_name", "endpoints/certnames entry", None,
        "The identity the hub's outbox runner sends from (default: the config key name).",
        "fedmsg-hub (OutboxProducer)"),
    Key("gilmsg.dedup_path", "file path or postgresql:// URL", None,
        "The record of consumed messages of a fedora-messaging GilmsgCallback (SQLite or "
        "PostgreSQL).",
        "fedora-messaging consume (GilmsgCallback)", ("gilmsg_dedup_path",)),
    Key("gilmsg.ack_mode", '"received" or "processed"', "received",
        "What a fedora-messaging GilmsgCallback acknowledges: receipt, or also the outcome.",
        "fedora-messaging consume (GilmsgCallback)", ("gilmsg_ack_mode",)),
    Key("gilmsg.fedora_messaging_config", "file path", None,
        "fedora-messaging's config.toml: its amqp_url and [tls] fill in the AMQP settings.",
        _ALL),
    Key("gilmsg.amqp_tls", "table: ca_cert, certfile, keyfile", None,
        "TLS files for amqps:// endpoints (fedora-messaging's [tls] names).",
        "every process using the AMQP transport"),
    Key("gilmsg.receive_backlog_bytes", "whole number of bytes", 32 << 20,
        "Most bytes a receiver buffers per peer; beyond, what arrives is dropped unread and "
        "unacknowledged (re-sent); a hub consumer's queue bound too (docs/consuming.rst).",
        _ZMQ),
    Key("gilmsg.outbox.require", '"received" or "processed"', "received",
        "What a durable publish that names no require waits for (stored with each message).",
        _OUTBOX),
    Key("gilmsg.signature_hash", '"sha1" or "sha256"', "sha1",
        "The hash this identity signs its messages with (ACKs for protocol 4: SHA-256 always).",
        _ALL),
    Key("gilmsg.accept_sha1", "bool", True,
        "False: a publisher refuses SHA-1 ACKs and a recipient SHA-1 messages (rejected ACK).",
        _ALL),
    Key("gilmsg.accept_sha1_certificates", "bool", False,
        "Accept service certificates a legacy CA signed with SHA-1 (else refused, so said).",
        "every process validating signatures (validate_signatures, publishers checking ACKs)"),
    Key("gilmsg.max_message_age", "number of seconds", 262800.0,
        "A recipient answers an older gilmsg message rejected (stale): outbox expiry + 1 h.",
        _RECIPIENTS),
    Key("gilmsg.max_clock_skew", "number of seconds", 300.0,
        "A recipient answers a message stamped further ahead of its clock rejected.",
        _RECIPIENTS),
    Key("gilmsg.monitoring", '"HOST:PORT"', None,
        "Serve /live, /ready and /metrics over HTTP there, from the hub's reactor.",
        "fedmsg-hub (GilmsgConsumer, the outbox runner plugin)"),
    Key("gilmsg.strict_config", "bool", False,
        "An unknown key in gilmsg's namespaces is a ConfigError (exit 4), not a warning.", _ALL),
)

#: The per-consumer keys: ``<config_key>`` + name.
SUFFIXES: tuple[Key, ...] = (
    Key(".gilmsg_name", "endpoints/certnames entry", None,
        "The identity this consumer acknowledges as (before gilmsg_name and name).",
        "fedmsg-hub (GilmsgConsumer)"),
    Key(".gilmsg_ack_mode", '"received" or "processed"', "received",
        'When it acknowledges: on receipt, or "processed"/"rejected" once consume() returns.',
        "fedmsg-hub (GilmsgConsumer)"),
    Key(".gilmsg_batch_acks", "bool", True,
        "Batch the receipt ACKs of the messages read in one go (for publishers that take "
        "batches); False: one signed ACK per message.",
        "fedmsg-hub (GilmsgConsumer)"),
    Key(".gilmsg_dedup_path", "file path or postgresql:// URL", None,
        "The record (SQLite or PostgreSQL) of the messages this consumer consumed, kept "
        "across restarts.",
        "fedmsg-hub (GilmsgConsumer)"),
)

BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}
BY_OLD_NAME: dict[str, Key] = {old: k for k in KEYS for old in k.old}
_SUFFIX_NAMES = {k.name.lstrip(".") for k in SUFFIXES}

_reported: set[str] = set()
_reported_lock = threading.Lock()


def _once(key: str) -> bool:
    """True the first time ``key`` is reported in this process."""
    with _reported_lock:
        if key in _reported:
            return False
        _reported.add(key)
        return True


def _deprecated(old: str, key: Key) -> None:
    if _once(old):
        log.warning("config key %r is deprecated: spell it %r (the old spelling still works)",
                    old, key.name)


def lookup(config: Mapping[str, Any], name: str) -> tuple[str, Any]:
    """``(spelling, value)`` of the declared key ``name`` in ``config``.

    The dotted spelling first, then the old ones (logging the deprecation once); unset: the
    dotted name and the registry's default. ``spelling`` is what error messages should name.

    Raises:
        KeyError: ``name`` is not declared (a programming error, not a configuration one).
    """
    key = BY_NAME[name]
    if name in config:
        return name, config[name]
    for old in key.old:
        if old in config:
            _deprecated(old, key)
            return old, config[old]
    return name, key.default


def get(config: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """The value of the declared key ``name`` (see :func:`lookup`); ``default`` when it is unset
    and the registry's default is None."""
    value = lookup(config, name)[1]
    return default if value is None else value


def suffix_key(config_key: str, suffix: str) -> str:
    """The per-consumer key ``<config_key>.gilmsg_<x>`` for the declared ``suffix``."""
    if suffix.lstrip(".") not in _SUFFIX_NAMES:
        raise KeyError(suffix)
    return config_key + "." + suffix.lstrip(".")


def unknown(config: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """``(key, suggestion or None)`` for each key of ``config`` in gilmsg's namespaces that is
    not declared; a ``gilmsg_<x>`` key only when it is close to a gilmsg key."""
    out: list[tuple[str, str | None]] = []
    for key in config:
        if not isinstance(key, str) or "gilmsg" not in key:
            continue
        verdict = _verdicts.get(key)
        if verdict is None:
            verdict = _judge(key)
            if len(_verdicts) < _VERDICTS_MAX:
                _verdicts[key] = verdict
        if verdict[0]:
            out.append((key, verdict[1]))
    return out


#: key -> (unknown?, suggestion): judged once per process (difflib is slow), bounded.
_verdicts: dict[str, tuple[bool, str | None]] = {}
_VERDICTS_MAX = 4096


def _judge(key: str) -> tuple[bool, str | None]:
    import difflib

    if key in BY_NAME or key in BY_OLD_NAME:
        return False, None
    names = [k.name for k in KEYS]
    if key.startswith(PREFIX):
        close = difflib.get_close_matches(key, names, 1, 0.6)
        return True, close[0] if close else None
    if key.startswith(OLD_PREFIX) and "." not in key:
        close = difflib.get_close_matches(key, names + list(BY_OLD_NAME), 1, TYPO_CUTOFF)
        if not close:
            return False, None  # another program's key (a consumer's config_key ...)
        return True, BY_OLD_NAME[close[0]].name if close[0] in BY_OLD_NAME else close[0]
    head, _, tail = key.rpartition(".")
    if head and tail.startswith(OLD_PREFIX) and tail not in _SUFFIX_NAMES:
        close = difflib.get_close_matches(tail, sorted(_SUFFIX_NAMES), 1, 0.6)
        return True, f"{head}.{close[0]}" if close else None
    return False, None


def check(config: Mapping[str, Any]) -> None:
    """Report what is wrong with the spelling of ``config``'s gilmsg keys.

    Each old spelling: one deprecation WARNING per process. Each unknown key: one WARNING
    with a did-you-mean per process, unless ``gilmsg.strict_config`` is true.

    Raises:
        ConfigError: ``gilmsg.strict_config`` is true and some keys are unknown.
    """
    for key in config:
        if isinstance(key, str) and key in BY_OLD_NAME:
            _deprecated(key, BY_OLD_NAME[key])
    bad = unknown(config)
    if not bad:
        return
    texts = [f"{key!r}" + (f" (did you mean {hint!r}?)" if hint else "") for key, hint in bad]
    if get(config, "gilmsg.strict_config"):
        raise ConfigError(f"unknown config key {', '.join(texts)}: refused because "
                          f"gilmsg.strict_config is true")
    for (key, _hint), text in zip(bad, texts, strict=True):
        if _once(key):
            log.warning("unknown config key %s: gilmsg ignores it", text)


def _literal(value: Any) -> str:
    return "(none)" if value is None else f"``{value!r}``".replace("'", '"')


def rst() -> str:
    """The generated part of ``docs/config.rst``: every key, as a definition list."""
    lines: list[str] = []
    for title, keys, prefix in (("Top-level keys", KEYS, ""),
                                ("Per-consumer keys", SUFFIXES, "<config_key>")):
        lines += [title, "-" * len(title), ""]
        for key in keys:
            lines.append(f"``{prefix}{key.name}``")
            lines.append(f"    {key.doc}")
            lines.append("")
            lines.append(f"    :type: {key.type}")
            lines.append(f"    :default: {_literal(key.default)}")
            lines.append(f"    :read by: {key.readers}")
            if key.old:
                lines.append(f"    :old spelling: {', '.join(f'``{o}``' for o in key.old)}")
            lines.append("")
    return "\n".join(lines)
