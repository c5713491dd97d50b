"""Signing and validating fedmsg ``x509`` envelopes, with ``cryptography`` only.

The wire format is fedmsg's x509 backend, so fedmsg's own validator accepts what :class:`Signer`
produces and :class:`Validator` accepts what fedmsg signs:

* ``crypto`` is set to ``"x509"`` before signing;
* the signature covers :func:`gilmsg.core.wire.canonical_bytes` of the envelope (fedmsg's JSON of
  everything except ``signature`` and ``certificate``), with RSA PKCS#1 v1.5 and SHA-1, or (a
  gilmsg extension, named inside the signed content by :data:`HASH_FIELD`) RSA PKCS#1 v1.5 with
  SHA-256, or Ed25519;
* ``signature`` is the base64 signature and ``certificate`` the base64 of the certificate PEM,
  each wrapped every 76 characters with ``"\\n"`` and ending with ``"\\n"``.

Keys, certificates, the CA and the CRL are read once and kept in memory; each use costs an
``os.stat`` per file and they are re-read when a file changes on disk (key rotation, a new CRL),
so a steady-state sign or validate is one RSA operation. A CA or CRL given as an ``http(s)`` URL
is downloaded and cached on disk; the CRL is downloaded again once its next-update date passes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gilmsg import config as gconfig
from gilmsg.config import routing_allows
from gilmsg.core.wire import canonical_bytes, new_envelope
from gilmsg.crypto._x509 import (  # noqa: F401  (_unb64, _wrap: used by tests)
    _HASH,
    _PADDING,
    _RSA_HASHES,
    CRYPTO,
    HASH_FIELD,
    MAX_CERTIFICATE_FIELD,
    MAX_SIGNATURE_FIELD,
    SCHEMES,
    Verdict,
    _b64,
    _common_name,
    _once,
    _spki,
    _unb64,
    _wrap,
    certificate_cn,
    scheme_of,
)
from gilmsg.crypto.trust import (  # noqa: F401  (default_cache_dir: part of this module's API)
    _load_cert,
    _read_stable,
    _Stamp,
    _stamp,
    default_cache_dir,
)
from gilmsg.crypto.validation import (
    CERT_CACHE_BYTES,
    CERT_CACHE_ENTRIES,
    Validator,
    validate,
    validator_for,
)
from gilmsg.errors import CertificateError, GilmsgError, InvalidInput

__all__ = [
    "Verdict",
    "Signer",
    "Validator",
    "signer_for",
    "validator_for",
    "own_certificate_problem",
    "sign",
    "validate",
    "routing_allows",
    "CRYPTO",
    "certificate_cn",
    "MAX_CERTIFICATE_FIELD",
    "MAX_SIGNATURE_FIELD",
    "CERT_CACHE_ENTRIES",
    "CERT_CACHE_BYTES",
    "HASH_FIELD",
    "SCHEMES",
    "scheme_of",
]

log = logging.getLogger(__name__)


class _KeyPair(NamedTuple):
    stamps: tuple[_Stamp, _Stamp]
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    certificate_field: str
    common_name: str


class Signer:
    """Signs envelopes with one private key and its certificate.

    Both files are read at construction and re-read when either changes on disk, so after a key
    rotation the next :meth:`sign` uses the new key and certificate. Thread-safe.

    Raises:
        CertificateError: a file is missing, unreadable or not PEM, the key is neither RSA nor
            Ed25519, the certificate has no Common Name, or the key does not match the certificate.
    """

    def __init__(self, key_path: str, cert_path: str) -> None:
        self.key_path = os.fspath(key_path)
        self.cert_path = os.fspath(cert_path)
        self._lock = threading.Lock()
        self._pair = self._load()

    def __repr__(self) -> str:
        return f"Signer(key_path={self.key_path!r}, cert_path={self.cert_path!r})"

    def _stamps(self) -> tuple[_Stamp, _Stamp]:
        return (_stamp(self.key_path, "private key"), _stamp(self.cert_path, "certificate"))

    def _load_once(self) -> _KeyPair:
        key_stamp, key_data = _read_stable(self.key_path, "private key")
        cert_stamp, cert_data = _read_stable(self.cert_path, "certificate")
        try:
            # The consistency checks of an RSA key cost ~40 ms; this is our own key file, and the
            # match with the certificate is checked below.
            key = serialization.load_pem_private_key(
                key_data, password=None, unsafe_skip_rsa_key_validation=True
            )
        except (ValueError, TypeError) as exc:
            raise CertificateError(
                f"private key {self.key_path} is not an unencrypted PEM private key: {exc}"
            ) from None
        if not isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise CertificateError(
                f"private key {self.key_path} is neither an RSA nor an Ed25519 key (fedmsg's "
                "x509 format needs RSA; gilmsg also signs with Ed25519)"
            )
        cert = _load_cert(cert_data, self.cert_path, "certificate")
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise CertificateError(
                f"private key {self.key_path} does not match certificate {self.cert_path}"
            )
        common_name = _common_name(cert)
        if not common_name:
            raise CertificateError(f"certificate {self.cert_path} has no Common Name")
        pem = cert.public_bytes(serialization.Encoding.PEM)
        return _KeyPair((key_stamp, cert_stamp), key, _b64(pem), common_name)

    def _load(self) -> _KeyPair:
        try:
            return self._load_once()
        except CertificateError:
            # A rotation may be half-way (new key renamed in place, new certificate not yet):
            # read both files once more before giving up.
            return self._load_once()

    def _current(self) -> _KeyPair:
        pair = self._pair
        if pair.stamps == self._stamps():
            return pair
        with self._lock:
            pair = self._pair
            if pair.stamps != self._stamps():
                pair = self._load()
                self._pair = pair
                log.info("reloaded signing key %s and certificate %s", self.key_path,
                         self.cert_path)
        return pair

    @property
    def common_name(self) -> str:
        """Common Name of the current certificate (the name receivers see as the signer)."""
        return self._current().common_name

    @property
    def key_type(self) -> str:
        """``"rsa"`` or ``"ed25519"``: the type of the current key."""
        return "ed25519" if isinstance(self._current().key, ed25519.Ed25519PrivateKey) else "rsa"

    def sign(self, envelope: Mapping[str, Any], hash: str = "sha1") -> dict[str, Any]:
        """Return a new dict: ``envelope`` with ``crypto``, ``signature`` and ``certificate``.

        ``hash`` is ``"sha1"`` (fedmsg's format, byte for byte: no :data:`HASH_FIELD`) or
        ``"sha256"`` (:data:`HASH_FIELD` says so, inside the signed content). An Ed25519 key
        always signs with Ed25519 (:data:`HASH_FIELD` ``"ed25519"``), whatever ``hash`` says.
        Any ``signature``/``certificate`` already present are replaced; ``envelope`` itself is
        not modified.

        Raises:
            CertificateError: the key or certificate on disk became unusable.
            InvalidInput: the envelope is not JSON-serialisable, or ``hash`` is unknown.
        """
        return self.sign_digest(envelope, hash)[0]

    def sign_digest(self, envelope: Mapping[str, Any], hash: str = "sha1"
                    ) -> tuple[dict[str, Any], str]:
        """:meth:`sign`, and :func:`gilmsg.core.wire.digest` of the signed envelope (from the
        bytes just signed: the canonical JSON is not made twice). Raises as :meth:`sign`."""
        if hash not in _RSA_HASHES:
            raise InvalidInput(f"signature hash must be one of {', '.join(_RSA_HASHES)}, "
                               f"not {hash!r}")
        pair = self._current()
        signed = dict(envelope)
        signed["crypto"] = CRYPTO
        signed.pop(HASH_FIELD, None)
        if isinstance(pair.key, ed25519.Ed25519PrivateKey):
            signed[HASH_FIELD] = "ed25519"
        elif hash != "sha1":
            signed[HASH_FIELD] = hash
        try:
            data = canonical_bytes(signed)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInput(f"envelope is not JSON-serialisable: {exc}") from None
        if isinstance(pair.key, ed25519.Ed25519PrivateKey):
            signature = pair.key.sign(data)
        else:
            signature = pair.key.sign(data, _PADDING, _RSA_HASHES[hash])
        signed["signature"] = _b64(signature)
        signed["certificate"] = pair.certificate_field
        return signed, hashlib.sha256(data).hexdigest()


_signers: dict[tuple[str, str], Signer] = {}


def signer_for(config: Mapping[str, Any]) -> Signer:
    """The process-wide :class:`Signer` for this config's ``ssldir`` and ``certnames`` entry.

    One instance per (key, certificate) path pair, created on first use.

    Raises:
        ConfigError: ``ssldir`` or the ``certnames`` entry is missing.
        CertificateError: the key or certificate cannot be used.
    """
    return _once(_signers, gconfig.key_and_cert_paths(config), Signer)


def sign(envelope: Mapping[str, Any], **config: Any) -> dict[str, Any]:
    """Sign ``envelope`` with the key configured by ``config`` (see :func:`signer_for`), with
    the hash of ``gilmsg.signature_hash`` (default SHA-1, fedmsg's).

    Returns a new dict; ``envelope`` is not modified.
    """
    return signer_for(config).sign(envelope, gconfig.signature_hash(config))


def own_certificate_problem(config: Mapping[str, Any]) -> str | None:
    """Why the bus would refuse what this identity signs (revoked, expired, another CA), or None.

    Signs a throw-away envelope with this identity's key and validates it as a peer would. None
    also when it cannot tell (no CA configured, or a key or CA error the caller reports itself).
    """
    if not config.get("ca_cert_location"):
        return None
    try:
        signed = signer_for(config).sign(new_envelope(gconfig.ack_topic(config), {}, 0))
        verdict = validator_for(config).validate(signed)
    except GilmsgError:
        return None
    return None if verdict.ok else verdict.reason
