"""Validating fedmsg ``x509`` envelopes: :class:`Validator`, one per CA and CRL location.

Part of :mod:`gilmsg.crypto.signing` (see its docstring for the wire format), which re-exports
these names.
"""

from __future__ import annotations

import binascii
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gilmsg import config as gconfig
from gilmsg.core.wire import canonical_bytes
from gilmsg.crypto._x509 import (
    _MAX_QUOTED,
    _PADDING,
    _RSA_HASHES,
    HASH_FIELD,
    MAX_CERTIFICATE_FIELD,
    MAX_SIGNATURE_FIELD,
    SCHEMES,
    Verdict,
    _common_name,
    _once,
    _unb64,
    certificate_cn,
    scheme_of,
)
from gilmsg.crypto.trust import TrustStore, _Trust
from gilmsg.errors import ConfigError

#: Bounds of a :class:`Validator`'s cache of parsed certificates (fed by bus input: every
#: distinct ``certificate`` field costs one entry): entries, and bytes counted as the field's
#: length plus what is kept about it plus :data:`_CERT_ENTRY_OVERHEAD`. The least recently
#: used entries go first.
CERT_CACHE_ENTRIES = 4096
CERT_CACHE_BYTES = 8 << 20
#: Bytes counted per cache entry besides its strings (the parsed public key, the tuple ...).
_CERT_ENTRY_OVERHEAD = 512


class _CertInfo(NamedTuple):
    generation: int
    public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey | None
    common_name: str | None
    not_before: float
    not_after: float
    reason: str  # "" when the certificate chains to the CA and is not revoked


class Validator:
    """Validates signed envelopes against one CA certificate and (optionally) one CRL.

    ``ca_location`` and ``crl_location`` are local paths or ``http(s)://`` URLs, loaded, fetched,
    cached and refreshed by a :class:`~gilmsg.crypto.trust.TrustStore`, which also takes the keyword
    arguments ``cache_dir`` and ``fetch_timeout``. Results per certificate are cached, so a
    steady-state :meth:`validate` is one RSA verification.

    Nothing is loaded by the constructor; :meth:`check` loads now.
    """

    def __init__(self, ca_location: str, crl_location: str | None,
                 accept_sha1_certificates: bool = False, **store: Any) -> None:
        self.trust = TrustStore(ca_location, crl_location, **store)
        #: Accept service certificates the CA signed with SHA-1 (legacy CAs; off by default).
        self.accept_sha1_certificates = accept_sha1_certificates
        self.ca_location = self.trust.ca_location
        self.crl_location = self.trust.crl_location
        self.cache_dir = self.trust.cache_dir
        self.fetch_timeout = self.trust.fetch_timeout
        self._certs: OrderedDict[str, _CertInfo] = OrderedDict()
        self._cert_bytes = 0
        self._certs_lock = threading.Lock()
        self._generation = 0  # of the trust the cached certificates were checked against
        #: Source of the current time (seconds since the epoch); tests may replace it.
        self._clock = time.time

    def __repr__(self) -> str:
        return f"Validator(ca_location={self.ca_location!r}, crl_location={self.crl_location!r})"

    def forget_certificates(self) -> None:
        """Empty the cache of parsed certificates (the next validations parse them again)."""
        with self._certs_lock:
            self._certs = OrderedDict()
            self._cert_bytes = 0

    @property
    def cache_size(self) -> tuple[int, int]:
        """``(entries, bytes)`` in the certificate cache; never above :data:`CERT_CACHE_ENTRIES`
        and :data:`CERT_CACHE_BYTES`."""
        with self._certs_lock:
            return len(self._certs), self._cert_bytes

    def _cached(self, certificate: str, trust: _Trust) -> _CertInfo:
        """The :class:`_CertInfo` of a ``certificate`` field, parsed once per trust generation."""
        with self._certs_lock:
            info = self._certs.get(certificate)
            if info is not None and info.generation == trust.generation:
                self._certs.move_to_end(certificate)
                return info
        info = self._inspect(certificate, trust)
        cost = _entry_cost(certificate, info)
        with self._certs_lock:
            old = self._certs.pop(certificate, None)
            if old is not None:
                self._cert_bytes -= _entry_cost(certificate, old)
            while self._certs and (len(self._certs) >= CERT_CACHE_ENTRIES
                                   or self._cert_bytes + cost > CERT_CACHE_BYTES):
                key, evicted = self._certs.popitem(last=False)
                self._cert_bytes -= _entry_cost(key, evicted)
            self._certs[certificate] = info
            self._cert_bytes += cost
        return info

    def check(self) -> None:
        """Load (or re-load if changed) the CA and CRL now.

        Raises:
            CertificateError: a file/URL is missing, unreadable or not PEM, a download failed,
                the CA has expired, the CRL is not signed by the CA or is past its next-update.
        """
        self.trust.current(self._clock())

    # -- validating ---------------------------------------------------------------------------

    def _inspect(self, text: str, trust: _Trust) -> _CertInfo:
        try:
            return self._inspect_once(text, trust)
        except Exception as exc:  # cryptography raises more than ValueError: fail closed
            return _CertInfo(trust.generation, None, None, 0.0, 0.0,
                             f"certificate cannot be checked: {type(exc).__name__}: {exc}")

    def _inspect_once(self, text: str, trust: _Trust) -> _CertInfo:
        def bad(reason: str, cn: str | None = None) -> _CertInfo:
            return _CertInfo(trust.generation, None, cn, 0.0, 0.0, reason)

        try:
            pem = _unb64(text)
        except (binascii.Error, ValueError):
            return bad("certificate is not valid base64")
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
            return bad("certificate field does not hold a PEM certificate")
        cn = _common_name(cert)
        if not cn:
            return bad("certificate has no Common Name")
        try:
            algorithm = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            algorithm = None
        if isinstance(algorithm, hashes.SHA1):
            if not self.accept_sha1_certificates:
                return bad(f"certificate is signed with SHA-1 (a legacy CA); set "
                           f"{gconfig.ACCEPT_SHA1_CERTIFICATES_KEY} = True to accept it", cn)
            if not _sha1_issued_by(cert, trust.ca):
                return bad("certificate is not issued by the trusted CA", cn)
        else:
            try:
                cert.verify_directly_issued_by(trust.ca)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                return bad("certificate is not issued by the trusted CA", cn)
        if _is_ca(cert):
            return bad("certificate is a CA certificate, not a service certificate", cn)
        if cert.serial_number in trust.revoked:
            return bad(f"certificate is revoked (serial {cert.serial_number:x})", cn)
        try:
            public_key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm):
            return bad("certificate public key cannot be read", cn)
        if not isinstance(public_key, (rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
            return bad("certificate key is neither RSA nor Ed25519", cn)
        return _CertInfo(
            trust.generation,
            public_key,
            cn,
            cert.not_valid_before_utc.timestamp(),
            cert.not_valid_after_utc.timestamp(),
            "",
        )

    def validate(self, envelope: Mapping[str, Any], accept_sha1: bool = True) -> Verdict:
        """Check that ``envelope`` was signed by a valid certificate of the configured CA.

        The scheme is the one :data:`HASH_FIELD` declares (absent: SHA-1), checked against this
        call's policy before anything is decoded: an unknown name is refused, SHA-1 is refused
        unless ``accept_sha1``, and the scheme must fit the certificate's key (RSA signs with
        SHA-1 or SHA-256, Ed25519 with Ed25519). The envelope never chooses a scheme the
        caller did not accept.

        In order: the credentials are well-formed and no larger than :data:`MAX_SIGNATURE_FIELD`
        and :data:`MAX_CERTIFICATE_FIELD` (checked before anything is decoded); the certificate
        is directly issued by the CA, is not itself a CA certificate, is within its validity
        period and not on the CRL; the signature covers exactly this envelope (minus
        ``signature``/``certificate``). Returns a :class:`Verdict`; a bad message never raises.

        Raises:
            CertificateError: only when the CA or CRL themselves cannot be used (see
                :meth:`check`): accepting or rejecting would both be wrong then.
        """
        if not isinstance(envelope, Mapping):
            return Verdict(False, None, "envelope is not a JSON object")
        credentials = _credentials(envelope)
        if isinstance(credentials, Verdict):
            return credentials
        signature, certificate = credentials
        scheme = _accepted_scheme(envelope, certificate, accept_sha1)
        if isinstance(scheme, Verdict):
            return scheme
        now = self._clock()
        trust = self.trust.current(now)
        if trust.generation != self._generation:  # new CA or CRL: every verdict may change
            self._generation = trust.generation
            self.forget_certificates()
        info = self._cached(certificate, trust)
        cn = info.common_name
        if info.reason:
            return Verdict(False, cn, info.reason)
        if now < info.not_before:
            return Verdict(False, cn, "certificate is not valid yet")
        if now > info.not_after:
            return Verdict(False, cn, "certificate has expired")
        return _verify_signature(envelope, signature, scheme, info)


def _credentials(envelope: Mapping[str, Any]) -> tuple[str, str] | Verdict:
    """The envelope's ``(signature, certificate)`` fields, or the :class:`Verdict` refusing it:
    a field missing, not a string, or longer than :data:`MAX_SIGNATURE_FIELD` /
    :data:`MAX_CERTIFICATE_FIELD` (nothing is decoded here)."""
    signature = envelope.get("signature")
    certificate = envelope.get("certificate")
    if signature is None:
        return Verdict(False, None, "message is not signed (no signature field)")
    if certificate is None:
        return Verdict(False, None, "message has no certificate field")
    if not isinstance(signature, str):
        return Verdict(False, None, "signature field is not a string")
    if not isinstance(certificate, str):
        return Verdict(False, None, "certificate field is not a string")
    if len(certificate) > MAX_CERTIFICATE_FIELD:
        return Verdict(False, None, f"certificate field is longer than "
                                    f"{MAX_CERTIFICATE_FIELD} characters")
    if len(signature) > MAX_SIGNATURE_FIELD:
        return Verdict(False, None, f"signature field is longer than "
                                    f"{MAX_SIGNATURE_FIELD} characters")
    return signature, certificate


def _accepted_scheme(envelope: Mapping[str, Any], certificate: str,
                     accept_sha1: bool) -> str | Verdict:
    """The signature scheme :data:`HASH_FIELD` declares, or the :class:`Verdict` refusing it:
    an unknown name, or SHA-1 when not ``accept_sha1``."""
    scheme = scheme_of(envelope)
    if scheme is None:
        claimed = envelope.get(HASH_FIELD)
        quoted = repr(claimed)[:_MAX_QUOTED] if isinstance(claimed, str) else \
            type(claimed).__name__
        return Verdict(False, None, f"unknown signature hash in {HASH_FIELD}: {quoted} "
                                    f"(known ones are {', '.join(SCHEMES)})")
    if scheme == "sha1" and not accept_sha1:
        return Verdict(False, certificate_cn(certificate),
                       "signed with SHA-1, which gilmsg.accept_sha1 = False refuses")
    return scheme


def _verify_signature(envelope: Mapping[str, Any], signature: str, scheme: str,
                      info: _CertInfo) -> Verdict:
    """The :class:`Verdict` on ``signature`` over ``envelope`` (minus its credentials) with the
    key of a certificate already found valid: the scheme must fit the key (RSA with SHA-1 or
    SHA-256, Ed25519 with Ed25519)."""
    cn = info.common_name
    try:
        raw = _unb64(signature)
    except (binascii.Error, ValueError):
        return Verdict(False, cn, "signature is not valid base64")
    try:
        data = canonical_bytes(envelope)
    except (TypeError, ValueError, RecursionError):
        return Verdict(False, cn, "envelope is not JSON-serialisable")
    key = info.public_key
    assert key is not None
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            if scheme != "ed25519":
                return Verdict(False, cn, f"certificate key is Ed25519 but {HASH_FIELD} "
                                          f"says {scheme}")
            key.verify(raw, data)
        else:
            if scheme == "ed25519":
                return Verdict(False, cn, f"certificate key is RSA but {HASH_FIELD} "
                                          "says ed25519")
            key.verify(raw, data, _PADDING, _RSA_HASHES[scheme])
    except InvalidSignature:
        return Verdict(False, cn, "signature does not match the message")
    return Verdict(True, cn, "")


def _entry_cost(certificate: str, info: _CertInfo) -> int:
    return (len(certificate) + len(info.common_name or "") + len(info.reason)
            + _CERT_ENTRY_OVERHEAD)


def _sha1_issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Is ``cert`` signed by ``ca`` with RSA PKCS#1 v1.5 over SHA-1? (OpenSSL 3 no longer
    checks such certificates itself; only with ``gilmsg.accept_sha1_certificates``.)"""
    if cert.issuer != ca.subject:
        return False
    key = ca.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, _PADDING, hashes.SHA1())
    except InvalidSignature:
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


_validators: dict[tuple[str, str | None, bool], Validator] = {}


def _locations(config: Mapping[str, Any]) -> tuple[str, str | None, bool]:
    ca = config.get("ca_cert_location")
    if not ca or not isinstance(ca, str):
        raise ConfigError(
            "config key 'ca_cert_location' is not set: point it at the CA certificate "
            "(a path, or an http(s) URL)"
        )
    crl = config.get("crl_location")
    if crl is not None and not isinstance(crl, str):
        raise ConfigError("config key 'crl_location' must be a path, a URL or None")
    return ca, crl or None, gconfig.accept_sha1_certificates(config)


def validator_for(config: Mapping[str, Any]) -> Validator:
    """The process-wide :class:`Validator` for this config's CA and CRL locations.

    Raises:
        ConfigError: ``ca_cert_location`` is not set (there is no remote default).
    """
    return _once(_validators, _locations(config), Validator)


def validate(envelope: Mapping[str, Any], **config: Any) -> Verdict:
    """Validate ``envelope`` with the CA/CRL configured by ``config`` (see :class:`Validator`),
    accepting SHA-1 as ``gilmsg.accept_sha1`` says."""
    return validator_for(config).validate(envelope, accept_sha1=gconfig.accept_sha1(config))

