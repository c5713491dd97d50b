"""Signing and validating fedmsg ``x509`` envelopes, with ``cryptography`` only.

The wire format is fedmsg's x509 backend, so fedmsg's own validator accepts what :class:`Signer`
produces and :class:`Validator` accepts what fedmsg signs:

* ``crypto`` is set to ``"x509"`` before signing;
* the signature covers :func:`gilmsg.core.wire.canonical_bytes` of the envelope (fedmsg's JSON of
  everything except ``signature`` and ``certificate``), with RSA PKCS#1 v1.5 and SHA-1;
* ``signature`` is the base64 signature and ``certificate`` the base64 of the certificate PEM,
  each wrapped every 76 characters with ``"\\n"`` and ending with ``"\\n"``.

Keys, certificates, the CA and the CRL are read once and kept in memory; each use costs an
``os.stat`` per file and they are re-read when a file changes on disk (key rotation, a new CRL),
so a steady-state sign or validate is one RSA operation. A CA or CRL given as an ``http(s)`` URL
is downloaded and cached on disk; the CRL is downloaded again once its next-update date passes.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from gilmsg import config as gconfig
from gilmsg.config import routing_allows  # noqa: F401  (re-exported: part of this API)
from gilmsg.core.wire import canonical_bytes
from gilmsg.crypto.trust import (  # noqa: F401  (default_cache_dir: part of this module's API)
    TrustStore,
    _load_cert,
    _read_stable,
    _Stamp,
    _stamp,
    _Trust,
    default_cache_dir,
)
from gilmsg.errors import CertificateError, ConfigError, InvalidInput

__all__ = [
    "Verdict",
    "Signer",
    "Validator",
    "signer_for",
    "validator_for",
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

#: Value of the envelope's ``crypto`` field for this format.
CRYPTO = "x509"
_WRAP = 76
_PADDING = padding.PKCS1v15()
#: The envelope field naming the signature scheme (inside the signed content). Absent: fedmsg's
#: RSA PKCS#1 v1.5 over SHA-1 (every envelope of protocol versions up to 3, and stock fedmsg's).
HASH_FIELD = "gilmsg_hash"
#: Signature schemes: RSA PKCS#1 v1.5 over SHA-1 or SHA-256, and Ed25519 (whose hash is fixed).
SCHEMES = ("sha1", "sha256", "ed25519")
_RSA_HASHES: dict[str, hashes.HashAlgorithm] = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}
#: Longest value of :data:`HASH_FIELD` quoted back in a refusal.
_MAX_QUOTED = 40
#: Longest ``certificate`` field accepted, in characters (base64 of the PEM, newlines included).
#: A real service certificate is 1.5-4 KiB of base64 (RSA-2048 to RSA-4096 with the usual
#: extensions); anything larger is refused before it is decoded or parsed.
MAX_CERTIFICATE_FIELD = 16 * 1024
#: Longest ``signature`` field accepted, in characters (RSA-8192 needs about 1.4 KiB).
MAX_SIGNATURE_FIELD = 4 * 1024
#: Bounds of a :class:`Validator`'s cache of parsed certificates (fed by bus input: every
#: distinct ``certificate`` field costs one entry): entries, and bytes counted as the field's
#: length plus what is kept about it plus :data:`_CERT_ENTRY_OVERHEAD`. The least recently
#: used entries go first.
CERT_CACHE_ENTRIES = 4096
CERT_CACHE_BYTES = 8 << 20
#: Bytes counted per cache entry besides its strings (the parsed public key, the tuple ...).
_CERT_ENTRY_OVERHEAD = 512


class Verdict(NamedTuple):
    """The outcome of validating one envelope.

    ``ok`` is True only when every check passed. ``signer`` is the Common Name of the signing
    certificate when it is known (always when ``ok``). ``reason`` is ``""`` when ``ok``, else a
    short human explanation (safe to log).
    """

    ok: bool
    signer: str | None
    reason: str


# --------------------------------------------------------------------------------------------
# helpers


def _wrap(text: str) -> str:
    """Split ``text`` every 76 characters with newlines and end with one, as fedmsg does."""
    return "\n".join(text[i : i + _WRAP] for i in range(0, len(text), _WRAP)) + "\n"


def _b64(data: bytes) -> str:
    return _wrap(base64.b64encode(data).decode("ascii"))


def _unb64(text: str) -> bytes:
    """Strict base64 decoding that ignores whitespace (the wrapping newlines)."""
    return base64.b64decode("".join(text.split()), validate=True)


def _common_name(cert: x509.Certificate) -> str | None:
    try:
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def certificate_cn(text: Any) -> str | None:
    """The Common Name in an envelope's ``certificate`` field, or None if it holds none.

    Not a validation: trust it only for a message whose signature was validated.
    """
    if not isinstance(text, str) or not text or len(text) > MAX_CERTIFICATE_FIELD:
        return None
    try:
        cert = x509.load_pem_x509_certificate(_unb64(text))
    except (ValueError, binascii.Error, x509.InvalidVersion):
        return None
    return _common_name(cert)


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def scheme_of(envelope: Mapping[str, Any]) -> str | None:
    """The signature scheme an envelope declares (:data:`HASH_FIELD`; absent: ``"sha1"``), or
    None when the field holds something that names no scheme of :data:`SCHEMES`.

    What an envelope declares is a claim: a validator checks it against its own policy and the
    certificate's key type, and never widens what it accepts because of it.
    """
    value = envelope.get(HASH_FIELD, "sha1")
    return value if isinstance(value, str) and value in SCHEMES else None


# --------------------------------------------------------------------------------------------
# signing


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
        return signed


_signers: dict[tuple[str, str], Signer] = {}
_cache_lock = threading.Lock()


def _once(cache: dict, key: Any, make: Any) -> Any:
    """``cache[key]``, made by ``make(*key)`` the first time (one instance even across threads)."""
    value = cache.get(key)
    if value is None:
        with _cache_lock:
            value = cache.get(key)
            if value is None:
                value = cache[key] = make(*key)
    return value


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


# --------------------------------------------------------------------------------------------
# validating


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

