"""Opt-in: fedmsg's own signing and validation done by gilmsg, so stock fedmsg tools work again.

With current pyOpenSSL, fedmsg's x509 backend fails to import and fedmsg silently stops
signing, and rejects (or crashes on) every signed message: ``fedmsg-tail`` on a bus with
``validate_signatures=True`` shows nothing, ``fedmsg-logger`` sends ``null``. Importing this
module replaces ``fedmsg.crypto.sign`` and ``fedmsg.crypto.validate`` with gilmsg's
implementation of the same ``x509`` format (``cryptography`` only). One line at the top of a
``fedmsg.d`` file (the file given to ``--config-filename``, or any file of ``fedmsg.d/``) turns
it on for every fedmsg command and hub that reads that configuration::

    import gilmsg.crypto.fedmsg_compat  # noqa: F401  fedmsg signs and validates with gilmsg

    config = dict(...)

Everything in fedmsg that signs or validates goes through those two functions:
``fedmsg.publish`` (so ``fedmsg-logger``), ``fedmsg.tail_messages`` (so ``fedmsg-tail``) and
``FedmsgConsumer.validate`` in ``fedmsg-hub``; the tests run ``fedmsg-tail``, and
``fedmsg-logger`` through ``fedmsg-relay``. A
message that does not validate is refused, with the reason logged at WARNING (fedmsg's own
warning does not say why). Only the ``x509`` format is handled: ``crypto_backend = "gpg"`` is
left to fedmsg.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from gilmsg.core.admission import reason_kind
from gilmsg.crypto import signing
from gilmsg.errors import GilmsgError
from gilmsg.logsummary import RefusalLog

# A child of fedmsg's logger: fedmsg's logging config (dictConfig, which disables every logger
# it does not name or contain) keeps it, and its handlers show what compat refuses.
log = logging.getLogger("fedmsg.crypto.gilmsg")
#: Messages this process's fedmsg refused, summarised (see :mod:`gilmsg.logsummary`).
refused_messages = RefusalLog(log, "messages")

_originals: dict[str, Callable[..., Any]] = {}


def sign(message: Mapping[str, Any], **config: Any) -> dict[str, Any]:
    """fedmsg's ``crypto.sign``: ``message`` with ``crypto``, ``signature`` and ``certificate``.

    Signs with ``<ssldir>/<certname>.key``, ``certname`` being what fedmsg put in the config
    (``certnames[name]``, ``shell.<host>`` for the relay, ``cert_prefix``), else looked up the
    same way.

    Raises:
        ConfigError, CertificateError: no certificate name, or an unusable key or certificate.
    """
    if config.get("crypto_backend") == "gpg" and "sign" in _originals:
        return _originals["sign"](message, **config)
    if config.get("certname"):
        config = {"ssldir": config.get("ssldir"), "name": "_",
                  "certnames": {"_": config["certname"]}}
    return signing.sign(message, **config)


#: Why compat refuses everything without a ``crl_location`` key, said once per process.
_NO_CRL_WARNING = (
    "fedmsg config has no 'crl_location' key: every signed message is refused, as stock fedmsg "
    "refuses them when it cannot fetch its default CRL. Set crl_location to your CRL, or "
    "crl_location = None to validate without revocation checks on purpose")
_warned: set[str] = set()
_BACKENDS = ("x509", "gpg")


def _warn_once(key: str, text: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", text)


def _backend(message: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[str | None, str]:
    """fedmsg's choice of validating backend: ``(backend, "")``, or ``(None, why not)``.

    As ``fedmsg.crypto.validate``: ``crypto_validate_backends`` lists the allowed backends
    (default: ``crypto_backend``, else x509); the message's ``crypto`` field names its backend,
    else a ``certificate`` field means x509 and a ``signature`` field gpg.
    """
    allowed = config.get("crypto_validate_backends") or [
        "gpg" if config.get("crypto_backend") == "gpg" else "x509"]
    if isinstance(allowed, str) or not all(b in _BACKENDS for b in allowed):
        return None, f"crypto_validate_backends {allowed!r} names no valid backend list"
    crypto = message.get("crypto")
    if crypto is not None:
        if crypto not in _BACKENDS:
            return None, f"message specifies an impossible crypto backend {str(crypto)[:40]!r}"
        backend = crypto
    elif "certificate" in message:
        backend = "x509"
    elif "signature" in message:
        backend = "gpg"
    else:
        return None, "message is not signed (no crypto, certificate or signature field)"
    if backend not in allowed:
        return None, f"crypto backend {backend!r} is disallowed by crypto_validate_backends"
    return backend, ""


def _as_text(message: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """``message`` with ``bytes`` signature/certificate fields decoded as UTF-8 (as fedmsg
    does), or None and why when one cannot be decoded."""
    out = dict(message)
    for field in ("signature", "certificate"):
        value = out.get(field)
        if isinstance(value, (bytes, bytearray)):
            try:
                out[field] = bytes(value).decode("utf-8")
            except UnicodeError:
                return None, f"the {field} field is bytes that are not UTF-8"
    return out, ""


def refusal(message: Any, **config: Any) -> str | None:
    """Why :func:`validate` refuses ``message`` (None: it accepts it). Never raises."""
    if not isinstance(message, Mapping):
        return "message is not a JSON object"
    try:
        backend, why = _backend(message, config)
        if backend is None:
            return why
        if backend == "gpg":
            if "validate" not in _originals:
                return "gpg messages need fedmsg's own validator, which is not installed"
            return None if _originals["validate"](message, **config) else "gpg: invalid"
        if "crl_location" not in config:
            _warn_once("crl", _NO_CRL_WARNING)
            return "no crl_location key in the config (revocation cannot be checked)"
        text, why = _as_text(message)
        if text is None:
            return why
        verdict = signing.validate(text, **config)
        if not verdict.ok:
            return verdict.reason
        if not signing.routing_allows(str(text.get("topic")), verdict.signer or "", config):
            return f"routing_policy does not allow {verdict.signer} on this topic"
        return None
    except GilmsgError as exc:  # the CA or CRL cannot be used: everything is refused
        return f"cannot validate: {exc}"
    except Exception as exc:  # fedmsg's contract: True or False, never an exception
        return f"cannot validate: {type(exc).__name__}: {exc}"


def validate(message: Mapping[str, Any], **config: Any) -> bool:
    """fedmsg's ``crypto.validate``: True only for a valid signature that ``routing_policy``
    allows on the message's topic. Never raises: anything that goes wrong (an unusable CA,
    CRL or certificate, whatever ``cryptography`` raises) refuses the message, and the reason
    is logged (the first of each kind at once, then counted: :mod:`gilmsg.logsummary`)."""
    why = refusal(message, **config)
    if why is None:
        return True
    msg_id = message.get("msg_id") if isinstance(message, Mapping) else None
    topic = message.get("topic") if isinstance(message, Mapping) else None
    refused_messages.refused(reason_kind(why), f"invalid message {msg_id} on {topic}: {why}")
    return False


def install() -> None:
    """Make ``fedmsg.crypto.sign``/``validate`` gilmsg's (idempotent; done on import)."""
    import fedmsg.crypto

    if fedmsg.crypto.sign is sign:
        return
    _originals["sign"] = fedmsg.crypto.sign
    _originals["validate"] = fedmsg.crypto.validate
    fedmsg.crypto.sign = sign
    fedmsg.crypto.validate = validate


def uninstall() -> None:
    """Give fedmsg its own ``sign``/``validate`` back."""
    import fedmsg.crypto

    if _originals:
        fedmsg.crypto.sign = _originals.pop("sign")
        fedmsg.crypto.validate = _originals.pop("validate")


install()
