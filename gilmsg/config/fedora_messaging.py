"""fedora-messaging's own ``config.toml`` as the source of gilmsg's broker settings.

With the config key ``gilmsg.fedora_messaging_config = "/path/config.toml"`` (fedora-messaging's
file, as its ``--conf`` / ``FEDORA_MESSAGING_CONF`` name it), :func:`gilmsg.config.load` reads
that file and:

* every identity whose ``endpoints[name]`` is empty (``[]``, ``None`` or ``""``), and the
  process's own ``name`` when ``endpoints`` has no entry for it, gets ``[amqp_url]`` (without
  one, fedora-messaging's default ``amqp://``, localhost); non-empty
  entries (several URLs of a cluster, say) are kept as written;
* ``gilmsg.transport`` becomes ``"amqp"`` unless it is set;
* its ``[tls]`` table (``ca_cert``, ``certfile``, ``keyfile``) becomes the config key
  ``gilmsg.amqp_tls`` (see :mod:`gilmsg.transport.amqp`) unless that is set.

So one file configures fedora-messaging and gilmsg's broker connection. Nothing here imports
fedora-messaging or pika. The file is read again when it changes on disk.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

from gilmsg.errors import ConfigError

#: Config key: the path of fedora-messaging's ``config.toml``.
CONFIG_KEY = "gilmsg.fedora_messaging_config"
#: Config key the ``[tls]`` table becomes (read by the AMQP transport).
TLS_KEY = "gilmsg.amqp_tls"
#: fedora-messaging's own default when its file has no ``amqp_url`` (localhost:5672, guest).
DEFAULT_AMQP_URL = "amqp://"
#: The ``[tls]`` keys, as fedora-messaging names them.
TLS_FIELDS = ("ca_cert", "certfile", "keyfile")

_cache: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}


def read(path: str) -> dict[str, Any]:
    """``{"amqp_url": str, "tls": {...}}`` from fedora-messaging's file at ``path``.

    ``tls`` holds the ``[tls]`` fields that are set (strings), possibly none.

    Raises:
        ConfigError: the file is missing, not TOML, or ``amqp_url`` / ``[tls]`` are malformed
            (one line naming the key and the file).
    """
    where = f"config key {CONFIG_KEY!r}: {path}"
    try:
        stat = os.stat(path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = _cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not a TOML file ({exc})") from None
    url = data.get("amqp_url", DEFAULT_AMQP_URL)
    if not isinstance(url, str) or not url.startswith(("amqp://", "amqps://")):
        raise ConfigError(f"{where}: amqp_url must be an amqp:// or amqps:// URL, not {url!r}")
    table = data.get("tls") or {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: [tls] must be a table")
    tls = {}
    for field in TLS_FIELDS:
        value = table.get(field)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}: tls.{field} must be a file path, not {value!r}")
        tls[field] = value
    out = {"amqp_url": url, "tls": tls}
    _cache[path] = (stamp, out)
    return out


def apply(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with fedora-messaging's settings filled in as the module docstring says (a
    new dict; ``config`` and its nested values are not modified). Without the key, a copy.

    Raises:
        ConfigError: see :func:`read`; or the key is not a path.
    """
    out = dict(config)
    path = config.get(CONFIG_KEY)
    if path is None or path == "":
        return out
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"config key {CONFIG_KEY!r} must be a file path, not {path!r}")
    fm = read(os.fspath(path))
    endpoints = dict(config.get("endpoints") or {})
    for name, value in list(endpoints.items()):
        if value is None or value == "" or value == []:
            endpoints[name] = [fm["amqp_url"]]
    name = config.get("name")
    if isinstance(name, str) and name and name not in endpoints:
        endpoints[name] = [fm["amqp_url"]]
    out["endpoints"] = endpoints
    if not out.get("gilmsg.transport") and not out.get("gilmsg_transport"):
        out["gilmsg.transport"] = "amqp"
    if fm["tls"] and TLS_KEY not in config:
        out[TLS_KEY] = dict(fm["tls"])
    return out


__all__ = ["CONFIG_KEY", "TLS_FIELDS", "TLS_KEY", "apply", "read"]
