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

from gilmsg.crypto import signing
from gilmsg.errors import GilmsgError

log = logging.getLogger(__name__)

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


def validate(message: Mapping[str, Any], **config: Any) -> bool:
    """fedmsg's ``crypto.validate``: True only for a valid signature that ``routing_policy``
    allows on the message's topic. Never raises: an unusable CA or CRL refuses everything."""
    if not isinstance(message, Mapping):
        return False
    if message.get("crypto") == "gpg" and "validate" in _originals:
        return bool(_originals["validate"](message, **config))
    try:
        verdict = signing.validate(message, **config)
    except GilmsgError as exc:
        log.error("cannot validate fedmsg messages: %s", exc)
        return False
    if not verdict.ok:
        log.warning("invalid message %s on %s: %s", message.get("msg_id"), message.get("topic"),
                    verdict.reason)
        return False
    if not signing.routing_allows(str(message.get("topic")), verdict.signer or "", config):
        log.warning("message %s on %s: routing_policy does not allow %s there",
                    message.get("msg_id"), message.get("topic"), verdict.signer)
        return False
    return True


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
