"""What signing and validating share: fedmsg's x509 field format, the verdict, a cache helper.

Part of :mod:`gilmsg.crypto.signing`, which re-exports the public names.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

#: Value of the envelope's ``crypto`` field for this format.
CRYPTO = "x509"
_WRAP = 76
_PADDING = padding.PKCS1v15()
_HASH = hashes.SHA1()  # fedmsg's choice; kept for wire compatibility
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


class Verdict(NamedTuple):
    """The outcome of validating one envelope.

    ``ok`` is True only when every check passed. ``signer`` is the Common Name of the signing
    certificate when it is known (always when ``ok``). ``reason`` is ``""`` when ``ok``, else a
    short human explanation (safe to log).
    """

    ok: bool
    signer: str | None
    reason: str


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
