"""Reading what gilmsg needs out of a fedmsg configuration dict, without changing it.

A process's identity follows fedmsg: ``config["name"]`` selects ``endpoints[name]`` to publish
from and ``certnames[name]`` to sign with (``cert_prefix`` and the relay's ``shell`` entry as in
fedmsg). The recipient name carried on the wire is the Common Name of the signing certificate.
"""

from __future__ import annotations

import copy
import os
import socket
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gilmsg.errors import ConfigError

#: Topic suffix of acknowledgements: ``<topic_prefix>.<environment>.gilmsg.ack``.
ACK_MODNAME = "gilmsg"
ACK_TOPIC_SUFFIX = "ack"


#: The file a ``--config-filename`` named: it replaces fedmsg's search for the whole process.
_config_file: str | None = None
_file_cache: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}


def load(
    overrides: Mapping[str, Any] | None = None, filename: str | None = None
) -> dict[str, Any]:
    """Return a private copy of fedmsg's configuration updated with ``overrides``.

    Like :func:`fedmsg.init`, the files fedmsg reads (``/etc/fedmsg.d``, ``./fedmsg.d`` ...) are
    the base and keyword arguments win. ``filename`` (a command's ``--config-filename``) reads
    that one file over fedmsg's defaults instead, and, as in fedmsg's commands, becomes the base
    of every later call in this process. Neither fedmsg's cached dict nor ``overrides`` is ever
    modified: the result is a new dict whose top-level keys the caller may set freely; nested
    values are shared with the sources and must be treated as read-only (gilmsg only reads them).

    Raises:
        ConfigError: the file is missing or broken, or no configuration defines endpoints.
    """
    global _config_file
    if filename is not None:
        _config_file = filename
    base = _base_config(_config_file, overrides)
    merged = dict(base)
    merged.update(overrides or {})
    return merged


def _base_config(filename: str | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    import fedmsg.config

    where = filename or "fedmsg's configuration files (/etc/fedmsg.d, ./fedmsg.d ...)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            if filename is None:
                return fedmsg.config.load_config([], None)
            stat = os.stat(filename)
            stamp = (stat.st_mtime_ns, stat.st_size)
            cached = _file_cache.get(filename)
            if cached is None or cached[0] != stamp:
                base = copy.deepcopy(fedmsg.config.defaults)
                base.update(fedmsg.config._process_config_file([filename]))
                _file_cache[filename] = cached = (stamp, base)
            return cached[1]
        except ValueError as exc:  # "No config value 'endpoints' found." / "is not a file"
            if filename is not None or not overrides or "endpoints" not in overrides:
                raise ConfigError(f"fedmsg configuration: {exc}") from None
            return dict(fedmsg.config.defaults)
        except (OSError, SyntaxError, NameError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read {where}: {exc}") from None


def short_hostname() -> str:
    """The host name fedmsg uses in ``cert_prefix`` look-ups (up to the first dot)."""
    return socket.gethostname().split(".", 1)[0]


def process_name(config: Mapping[str, Any]) -> str:
    """The fedmsg ``name`` of this process; with ``active`` it defaults to ``relay_inbound``."""
    name = config.get("name")
    if not name and config.get("active"):
        return "relay_inbound"
    if not name or not isinstance(name, str):
        known = ", ".join(sorted(config.get("endpoints") or {})) or "none configured"
        raise ConfigError(
            f"config key 'name' is not set: pass name=<one of the endpoints: {known}>"
        )
    return name


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
            f"config key endpoints[{name!r}] is missing: this process publishes there"
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
