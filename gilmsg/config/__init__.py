"""Reading what gilmsg needs out of a fedmsg configuration dict, without changing it.

A process's identity follows fedmsg: ``config["name"]`` selects ``endpoints[name]`` to publish
from and ``certnames[name]`` to sign with (``cert_prefix`` and the relay's ``shell`` entry as in
fedmsg). The recipient name carried on the wire is the Common Name of the signing certificate.

Protocol version 4's admission keys (signature hashes, freshness) are
:mod:`gilmsg.config.admission`'s, re-exported here; every key is declared in
:mod:`gilmsg.config.registry`.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gilmsg.config import registry
from gilmsg.config.ack_endpoints import (  # noqa: F401
    ACK_ENDPOINTS_KEY,
    ack_endpoints,
    ack_listen_endpoints,
    named_ack_endpoints,
)
from gilmsg.config.admission import (  # noqa: F401
    ACCEPT_SHA1_CERTIFICATES_KEY,
    ACCEPT_SHA1_KEY,
    DEFAULT_ACCEPT_SHA1,
    DEFAULT_MAX_CLOCK_SKEW,
    DEFAULT_MAX_MESSAGE_AGE,
    DEFAULT_SIGNATURE_HASH,
    MAX_CLOCK_SKEW_KEY,
    MAX_MESSAGE_AGE_KEY,
    SIGNATURE_HASH_KEY,
    SIGNATURE_HASHES,
    accept_sha1,
    accept_sha1_certificates,
    max_clock_skew,
    max_message_age,
    signature_hash,
)
from gilmsg.errors import ConfigError

#: Topic suffix of acknowledgements: ``<topic_prefix>.<environment>.gilmsg.ack``.
ACK_MODNAME = "gilmsg"
ACK_TOPIC_SUFFIX = "ack"
#: Topic suffix of batched ACKs for protocol 4 messages: ``<prefix>.<env>.gilmsg.batch``. It
#: must not start with the single-ACK topic: a ZeroMQ subscription is a prefix, and a 0.1.2
#: listener subscribed to ``...gilmsg.ack`` would receive ``...gilmsg.ack<anything>``.
BATCH_TOPIC_SUFFIX = "batch"


#: fedmsg 1.1.7's ``fedmsg.config.defaults``, the base of every configuration it loads (a test
#: compares them). Kept here so that reading the configuration does not import fedmsg, which
#: costs about 70 ms (it pulls in ZeroMQ, requests and more).
FEDMSG_DEFAULTS: dict[str, Any] = {
    "topic_prefix": "org.fedoraproject",
    "environment": "dev",
    "io_threads": 1,
    "post_init_sleep": 0.5,
    "timeout": 2,
    "print_config": False,
    "high_water_mark": 0,
    "zmq_linger": 1000,
    "active": False,
    "persistent_store": None,
    "logging": {
        "version": 1,
        "formatters": {"bare": {"datefmt": "%Y-%m-%d %H:%M:%S",
                                "format": "[%(asctime)s][%(name)10s %(levelname)7s] %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "bare",
                                 "level": "INFO", "stream": "ext://sys.stdout"}},
        "loggers": {"fedmsg": {"level": "INFO", "propagate": False, "handlers": ["console"]},
                    "moksha": {"level": "INFO", "propagate": False, "handlers": ["console"]}},
    },
}

#: The key of fedmsg's ``--config-filename``: a configuration that carries it was read from that
#: one file, which is then its base instead of fedmsg's search (as in fedmsg's own loader).
FILENAME_KEY = "config_filename"


def load(
    overrides: Mapping[str, Any] | None = None, filename: str | None = None
) -> dict[str, Any]:
    """Return a private copy of fedmsg's configuration updated with ``overrides``.

    Like :func:`fedmsg.init`, the files fedmsg reads (``/etc/fedmsg.d``, ``./fedmsg.d`` ...) are
    the base and keyword arguments win. ``filename`` (a command's ``--config-filename``) reads
    that one file over fedmsg's defaults instead; the result carries it as ``config_filename``,
    so passing it back (``gilmsg.publish(**config)``) keeps that file as the base. Neither the
    cached files nor ``overrides`` are ever modified: the result is a new dict whose top-level
    keys the caller may set freely; nested values are shared with the sources and must be
    treated as read-only (gilmsg only reads them). fedmsg itself is not imported.

    The gilmsg keys are checked (:func:`gilmsg.config.registry.check`): an old spelling or an
    unknown key is logged once.
    With ``gilmsg.fedora_messaging_config``, the broker URL and TLS settings of that
    fedora-messaging file fill in what is not set (:mod:`gilmsg.config.fedora_messaging`).

    Raises:
        ConfigError: the file is missing or broken, no configuration defines endpoints, or
            ``gilmsg.strict_config`` is true and a gilmsg key is unknown.
    """
    overrides = overrides or {}
    if filename is None:
        filename = overrides.get(FILENAME_KEY) or None
    merged = dict(_files.base(filename, overrides))
    merged.update(overrides)
    if filename is not None:
        merged[FILENAME_KEY] = filename
    registry.check(merged)
    if merged.get("gilmsg.fedora_messaging_config"):  # broker URL and TLS from its config.toml
        from gilmsg.config import fedora_messaging as fm_config

        merged = fm_config.apply(merged)
    return merged


class _ConfigFiles:
    """fedmsg's configuration files, read as ``fedmsg.config.load_config`` reads them, cached.

    A file is read again when it changes on disk, and the search again when the set of files
    it finds changes (another current directory ...): a few ``stat`` calls per use.
    """

    def __init__(self) -> None:
        self._search: tuple[tuple[tuple[str, int, int], ...], dict[str, Any] | str] | None = None
        self._named: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}

    def base(self, filename: str | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
        where = filename or "fedmsg's configuration files (/etc/fedmsg.d, ./fedmsg.d ...)"
        try:
            if filename is None:
                stamps = _stamps(_search_path())
                if self._search is None or self._search[0] != stamps:
                    try:  # a search without endpoints is remembered too (read once, not per use)
                        found: dict[str, Any] | str = _load_search([s[0] for s in stamps])
                    except ValueError as exc:
                        found = str(exc)
                    self._search = (stamps, found)
                if isinstance(self._search[1], str):
                    raise ValueError(self._search[1])
                return self._search[1]
            stat = os.stat(filename)
            stamp = (stat.st_mtime_ns, stat.st_size)
            cached = self._named.get(filename)
            if cached is None or cached[0] != stamp:
                if not os.path.isfile(filename):
                    raise ValueError(f"{filename!r} is not a file.")
                base = copy.deepcopy(FEDMSG_DEFAULTS)
                base.update(_read_files([filename]))
                self._named[filename] = cached = (stamp, base)
            return cached[1]
        except ValueError as exc:  # "No config value 'endpoints' found." / "is not a file"
            if filename is not None or "endpoints" not in overrides:
                raise ConfigError(f"fedmsg configuration: {exc}") from None
            return dict(FEDMSG_DEFAULTS)
        except (OSError, SyntaxError, NameError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read {where}: {exc}") from None


_files = _ConfigFiles()


_listings: dict[str, tuple[tuple[int, int], list[str]]] = {}


def _search_path() -> list[str]:
    """The files fedmsg's loader reads, in its order: ``*.py`` of each fedmsg.d, then the rest."""
    home, cwd = os.path.expanduser("~"), os.getcwd()
    folders = ["/etc/fedmsg.d/", f"{home}/.fedmsg.d/", f"{cwd}/fedmsg.d/"]
    if "VIRTUAL_ENV" in os.environ:
        folders.append(os.path.join(os.environ["VIRTUAL_ENV"], "etc/fedmsg.d"))
    files: list[str] = []
    for folder in folders:
        try:  # a folder's listing changes only with its mtime: a stat, not a listdir, per use
            st = os.stat(folder)  # (unless modified in the last 2 s: mtimes are coarse)
            stamp = (st.st_ino, st.st_mtime_ns)
            listing = _listings.get(folder)
            if listing is None or listing[0] != stamp or time.time_ns() - stamp[1] < 2e9:
                listing = _listings[folder] = (stamp, sorted(
                    os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".py")))
            files += listing[1]
        except OSError:
            pass
    return files + ["/etc/fedmsg-config.py", f"{home}/.fedmsg-config.py",
                    f"{cwd}/fedmsg-config.py"]


def _stamps(paths: list[str]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.append((path, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _read_files(filenames: list[str]) -> dict[str, Any]:
    """Execute each file that exists and merge the ``config`` dicts they define, recursively."""
    config: dict[str, Any] = {}
    for filename in filenames:
        if not os.path.isfile(filename):
            continue
        variables: dict[str, Any] = {}
        try:
            with open(filename) as fh:
                exec(compile(fh.read(), filename, "exec"), variables)
        except OSError as exc:
            warnings.warn(str(exc), stacklevel=2)
            continue
        if not isinstance(variables.get("config"), dict):
            found = "sets no 'config'" if "config" not in variables else (
                f"sets 'config' to something other than a dict "
                f"({type(variables['config']).__name__})")
            raise ConfigError(
                f"{filename} {found}: a fedmsg config file must define config = dict(...) "
                f"(endpoints=..., ...)")
        _merge(config, variables["config"])
    return config


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(into.get(key), dict) and isinstance(value, dict):
            into[key] = _merge(into[key], value)
        else:
            into[key] = value
    return into


def _load_search(files: list[str]) -> dict[str, Any]:
    """``fedmsg.config.load_config([], None)``, without importing fedmsg when not needed."""
    config = copy.deepcopy(FEDMSG_DEFAULTS)
    config.update(_read_files(files))
    if config.get(FILENAME_KEY) or config.get("print_config") or config.get("srv_endpoints"):
        import fedmsg.config  # what only fedmsg does: DNS SRV look-ups, printing, re-reading

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return fedmsg.config.load_config([], None, invalidate_cache=True)
    if "endpoints" not in config:
        raise ValueError("No config value 'endpoints' found.")
    if not isinstance(config["endpoints"], dict):
        raise ValueError("The 'endpoints' config value must be a dict.")
    config["endpoints"] = {name: _as_list(value) for name, value in config["endpoints"].items()}
    if "topic_prefix_re" not in config and "topic_prefix" in config:
        config["topic_prefix_re"] = config["topic_prefix"].replace(".", r"\.") + r"\.[^\W\d_]+"
    return config


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def short_hostname() -> str:
    """The host name fedmsg uses in ``cert_prefix`` look-ups (up to the first dot)."""
    import socket

    return socket.gethostname().split(".", 1)[0]


def process_name(config: Mapping[str, Any]) -> str:
    """The fedmsg ``name`` of this process; with ``active`` it defaults to ``relay_inbound``."""
    name = config.get("name")
    if not name and config.get("active"):
        return "relay_inbound"
    if not name or not isinstance(name, str):
        raise ConfigError(
            f"no identity: config key 'name' is not set: give this process's fedmsg name with "
            f"--name NAME (in Python: name=NAME), {_identities(config)}"
        )
    return name


def _identities(config: Mapping[str, Any]) -> str:
    """The end of an error message that lists the identities of the bus a process can be."""
    names = [n for n in sorted(config.get("endpoints") or {}) if not n.startswith("relay_")]
    if not names:
        return "and add its endpoints entry (no identity is configured)"
    return "one of: " + ", ".join(names)


def certname(config: Mapping[str, Any]) -> str:
    """The ``certnames`` entry this process signs with, looked up as fedmsg does."""
    certnames = config.get("certnames") or {}
    if "cert_prefix" in config:
        index = f"{config['cert_prefix']}.{short_hostname()}"
    else:
        index = process_name(config)
        if index == "relay_inbound":
            index = f"shell.{short_hostname()}"
    try:
        value = certnames[index]
    except (KeyError, TypeError):
        raise ConfigError(
            f"config key certnames[{index!r}] is missing: add the certificate name this "
            f"process signs with (gilmsg-certs prints the entries)"
        ) from None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config key certnames[{index!r}] must be a non-empty string")
    return value


def ssldir(config: Mapping[str, Any]) -> str:
    """The directory holding ``<certname>.key`` and ``<certname>.crt``."""
    value = config.get("ssldir")
    if not value or not isinstance(value, str):
        raise ConfigError("config key 'ssldir' is not set: point it at the certificate directory")
    return value


def key_and_cert_paths(config: Mapping[str, Any]) -> tuple[str, str]:
    """Paths of this process's private key and certificate."""
    directory, name = ssldir(config), certname(config)
    return f"{directory}/{name}.key", f"{directory}/{name}.crt"


@dataclass(frozen=True)
class Publishing:
    """Where this process's messages leave from.

    ``method`` is ``"bind"`` for the usual passive publisher (the first bindable address in
    ``endpoints``) or ``"connect"`` for ``active`` mode (to ``relay_inbound``).
    """

    name: str
    method: str
    addresses: tuple[str, ...]


def publishing(config: Mapping[str, Any]) -> Publishing:
    """The endpoint(s) this process publishes on, checked before anything is sent."""
    if config.get("active"):
        relay = config.get("relay_inbound")
        if isinstance(relay, (list, tuple)):
            relay = relay[0] if relay else None
        if not relay or not isinstance(relay, str):
            raise ConfigError("config key 'relay_inbound' is not set, but 'active' is true")
        return Publishing(process_name(config), "connect", (relay,))
    name = process_name(config)
    addresses = (config.get("endpoints") or {}).get(name)
    if isinstance(addresses, str):
        addresses = [addresses]
    if not addresses:
        raise ConfigError(
            f"{name!r} is not an identity of this bus: config key endpoints[{name!r}] (where it "
            f"would publish) is missing: use --name NAME (in Python: name=NAME), "
            f"{_identities(config)}; or add endpoints[{name!r}] and certnames[{name!r}]"
        )
    return Publishing(name, "bind", tuple(addresses))


def subscribe_endpoints(config: Mapping[str, Any], skip: str | None = None) -> list[str]:
    """Every endpoint of the bus except ``relay_inbound`` and the entry named ``skip``."""
    out: list[str] = []
    for name, addresses in (config.get("endpoints") or {}).items():
        if name in ("relay_inbound", skip):
            continue
        if isinstance(addresses, str):
            addresses = [addresses]
        out.extend(a for a in addresses if a not in out)
    return out


def named_endpoints(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(name, endpoint)`` for every endpoint of the bus except ``relay_inbound``, as fedmsg's
    ``tail_messages`` connects to them (this process's own included)."""
    out: list[tuple[str, str]] = []
    for name, addresses in (config.get("endpoints") or {}).items():
        if name == "relay_inbound":
            continue
        out.extend((name, a) for a in ([addresses] if isinstance(addresses, str) else addresses))
    return out


def topic_base(config: Mapping[str, Any]) -> str:
    """``<topic_prefix>.<environment>``, the start of every topic this process sends."""
    return f"{config.get('topic_prefix', 'org.fedoraproject')}.{config.get('environment', 'dev')}"


def ack_topic(config: Mapping[str, Any]) -> str:
    """The full topic ACKs travel on."""
    return f"{topic_base(config)}.{ACK_MODNAME}.{ACK_TOPIC_SUFFIX}"


def batch_ack_topic(config: Mapping[str, Any]) -> str:
    """The full topic batched ACKs for protocol 4 messages travel on (not a prefix-match of
    :func:`ack_topic`, so single-ACK listeners never receive them)."""
    return f"{topic_base(config)}.{ACK_MODNAME}.{BATCH_TOPIC_SUFFIX}"


def ack_topics(config: Mapping[str, Any]) -> tuple[str, str]:
    """Every topic an ACK may arrive on: single ACKs (and version 3 batches), version 4
    batches."""
    return ack_topic(config), batch_ack_topic(config)


def full_topic(config: Mapping[str, Any], topic: str | None, modname: str) -> str:
    """The topic fedmsg would build: ``<prefix>.<env>.<modname>.<topic>`` unless already full."""
    joined = f"{modname}.{topic or 'unspecified'}"
    prefix = config.get("topic_prefix", "org.fedoraproject")
    if joined.startswith(prefix):
        return joined
    return f"{topic_base(config)}.{joined}"


def routing_allows(topic: str, signer: str, config: Mapping[str, Any]) -> bool:
    """fedmsg's authorization step: may ``signer`` (a CN) send on ``topic``?

    ``routing_policy`` maps a full topic to the CNs allowed on it. A topic without an entry is
    allowed unless ``routing_nitpicky`` is true. This is the rule of fedmsg's validators.
    """
    policy = config.get("routing_policy") or {}
    if topic in policy:
        return signer in policy[topic]
    return not config.get("routing_nitpicky", False)
