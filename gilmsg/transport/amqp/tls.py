"""URLs, TLS and connection parameters of the AMQP transport (pika's URL syntax).

``amqps://`` URLs use the ``gilmsg.amqp_tls`` table (``ca_cert``, ``certfile``, ``keyfile``:
fedora-messaging's ``[tls]`` names) unless the URL carries pika's own ``ssl_options``; a broker
certificate TLS refuses becomes one ConfigError line (:func:`tls_refusal`).
"""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pika

from gilmsg.errors import ConfigError

#: TLS for ``amqps://`` URLs: ``{"ca_cert": ..., "certfile": ..., "keyfile": ...}`` (file
#: paths, fedora-messaging's ``[tls]`` names; see :func:`tls_context`).
TLS_KEY = "gilmsg.amqp_tls"
TLS_FIELDS = ("ca_cert", "certfile", "keyfile")
#: Bound on one connection attempt (TCP connect, AMQP handshake), in seconds.
CONNECT_TIMEOUT_S = 3.0
#: Seconds a connection the broker blocked (resource alarm) is kept before it is re-made.
BLOCKED_TIMEOUT_S = 5.0


def redacted(url: str) -> str:
    """``url`` without its password (for logs and ``Publisher.address``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def tls_settings(config: Mapping[str, Any]) -> dict[str, str] | None:
    """The ``gilmsg.amqp_tls`` table of ``config`` (None when unset), checked.

    Raises:
        ConfigError: not a table of file paths, an unknown field, or a key without a cert.
    """
    value = config.get(TLS_KEY)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key {TLS_KEY!r} must be a table ({', '.join(TLS_FIELDS)}), "
                          f"not {value!r}")
    out = {}
    for field, path in value.items():
        if field not in TLS_FIELDS:
            raise ConfigError(f"config key {TLS_KEY!r}: unknown field {field!r} (known: "
                              f"{', '.join(TLS_FIELDS)})")
        if path is None or path == "":
            continue
        if not isinstance(path, str):
            raise ConfigError(f"config key {TLS_KEY}.{field} must be a file path, not {path!r}")
        out[field] = path
    if "keyfile" in out and "certfile" not in out:
        raise ConfigError(f"config key {TLS_KEY!r}: keyfile without certfile")
    return out


_contexts: dict[tuple[tuple[str, str], ...], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def tls_context(tls: Mapping[str, str] | None) -> ssl.SSLContext:
    """The client TLS context for ``amqps://``: the broker's certificate must chain to
    ``ca_cert`` (the system's CAs when unset) and name the URL's host; ``certfile`` /
    ``keyfile`` (optional) is the client certificate for mutual TLS. One context per setting.

    Raises:
        ConfigError: a file cannot be read or is not a certificate / key (one line).
    """
    tls = dict(tls or {})
    key = tuple(sorted(tls.items()))
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is not None:
            return ctx
        try:
            ctx = ssl.create_default_context(cafile=tls.get("ca_cert"))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{TLS_KEY}.ca_cert {tls.get('ca_cert')!r}: cannot load it as a "
                              f"CA certificate ({_ssl_reason(exc)})") from None
        if tls.get("certfile"):
            try:
                ctx.load_cert_chain(tls["certfile"], tls.get("keyfile"))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"{TLS_KEY}.certfile/keyfile {tls['certfile']!r}: cannot load "
                                  f"the client certificate and key ({_ssl_reason(exc)})") from None
        _contexts[key] = ctx
        return ctx


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or \
        getattr(exc, "strerror", None) or str(exc)
    return str(reason).splitlines()[0] if str(reason) else type(exc).__name__


def tls_refusal(exc: BaseException) -> str | None:
    """If ``exc`` (from a connection attempt) is a TLS verification failure (the broker's
    certificate is not from the configured CA, or does not name the host), one line saying so;
    else None. pika wraps the ``ssl`` error in its own exceptions' args."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {item.verify_message}"
        if isinstance(item, ssl.SSLError):
            return f"TLS handshake failed: {_ssl_reason(item)}"
        for arg in item.args:
            if isinstance(arg, BaseException):
                todo.append(arg)
            elif isinstance(arg, str):  # pika's StreamLostError carries the ssl error as text
                found = _SSL_TEXT.search(arg)
                if found:
                    return f"TLS handshake failed: {found.group(2).strip()} ({found.group(1)})"
                found = _SSL_ERROR_TEXT.search(arg)
                if found:
                    return (f"TLS handshake failed: {found.group(1)}: {found.group(2)} (the "
                            f"broker closed it: does it want a client certificate?)")
        todo.extend(e for e in (item.__cause__, item.__context__) if e is not None)
    return None


_SSL_TEXT = re.compile(r"\[SSL: ([A-Z0-9_]+)\] ([^(\]'\"]+)")
_SSL_ERROR_TEXT = re.compile(r"(SSL\w*Error)\(\d+, '([^'(]+)")


def _parameters(url: str, tls: Mapping[str, str] | None = None) -> pika.URLParameters:
    try:
        params = pika.URLParameters(url)
    except Exception as exc:  # pika raises assorted types for a bad URL
        raise ConfigError(f"not an AMQP URL: {redacted(url)!r} ({exc})") from None
    parts = urlsplit(url)
    if parts.scheme.lower() == "amqps" and "ssl_options" not in parse_qs(parts.query):
        # gilmsg's (or fedora-messaging's [tls]) settings; a pika ssl_options URL parameter,
        # the alternative, is left to pika.
        params.ssl_options = pika.SSLOptions(tls_context(tls), server_hostname=parts.hostname)
    params.connection_attempts = 1
    params.socket_timeout = CONNECT_TIMEOUT_S
    params.stack_timeout = CONNECT_TIMEOUT_S * 2
    # A broker short of memory or disk stops reading ("blocked"): after this long the connection
    # is dropped and made again, so the link's thread is never stuck in a send for long.
    params.blocked_connection_timeout = BLOCKED_TIMEOUT_S
    return params
