"""A small certificate authority for gilmsg/fedmsg deployments and tests.

Everything lives in one directory (fedmsg's ``ssldir``)::

    ca.key  ca.crt  crl.pem          the CA, and its revocation list
    <name>.key  <name>.crt           one RSA 2048 key pair per service, CN=<name>

Private keys are written with mode 0600. Every file is written atomically (temporary file then
rename), so a process reading it (a :class:`gilmsg.crypto.signing.Signer` reloading after a
rotation)
never sees half a file. Existing files are never overwritten unless ``force`` is true.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID

from gilmsg.errors import CertificateError, InvalidInput

__all__ = [
    "CA_KEY",
    "CA_CERT",
    "CRL",
    "init_ca",
    "issue",
    "revoke",
    "write_crl",
    "certnames",
    "fedmsg_config",
    "paths",
]

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
CRL = "crl.pem"
#: Days a CRL stays valid after it is (re-)signed; ``write_crl`` refreshes it.
CRL_DAYS = 30
KEY_BITS = 2048
#: Key types :func:`issue` makes: RSA (fedmsg's; the default) or Ed25519 (gilmsg only: stock
#: fedmsg cannot validate what an Ed25519 identity signs).
KEY_TYPES = ("rsa", "ed25519")
_RESERVED = {"ca", "crl"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def check_name(name: str) -> str:
    """``name`` if it can be a certificate name (and file name), else :class:`InvalidInput`."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.lower() in _RESERVED:
        raise InvalidInput(
            f"invalid certificate name {name!r}: use letters, digits, '.', '_' or '-' "
            f"(not 'ca' or 'crl')"
        )
    return name


def paths(ssldir: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """``(<ssldir>/<name>.key, <ssldir>/<name>.crt)``."""
    base = Path(ssldir)
    return base / f"{name}.key", base / f"{name}.crt"


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write ``path`` atomically with ``mode``; refuse to replace it unless ``force``."""
    _write_all([(path, data, mode)], force)


def _write_all(files: list[tuple[Path, bytes, int]], force: bool) -> None:
    """Write several files atomically, renaming them into place back to back at the end.

    All contents are written and synced to temporary files first, so a key and its certificate
    change on disk within microseconds of each other (a reloading signer retries once if it
    catches the pair half-way).
    """
    temps: list[tuple[str, Path]] = []
    try:
        for path, data, mode in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            temps.append((tmp, path))
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in temps:
            if force:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # atomic "create only if absent"
                except FileExistsError:
                    raise _exists(path) from None
                os.unlink(tmp)
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _exists(path: Path) -> CertificateError:
    return CertificateError(f"{path} already exists: pass --force (force=True) to replace it")


def _refuse_existing(*files: Path) -> None:
    for f in files:
        if f.exists():
            raise _exists(f)


def _key_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):  # no "traditional" format for Ed25519
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _load_ca(ssldir: Path) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key_path, cert_path = ssldir / CA_KEY, ssldir / CA_CERT
    try:
        key_data = key_path.read_bytes()
    except OSError as exc:
        raise CertificateError(
            f"CA key {key_path}: {exc.strerror or exc} (run 'gilmsg-certs init' first)"
        ) from None
    try:
        cert_data = cert_path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"CA certificate {cert_path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"CA key {key_path} is not a PEM private key: {exc}") from None
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
    except ValueError as exc:
        raise CertificateError(f"CA certificate {cert_path} is not PEM: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateError(f"CA key {key_path} is not an RSA key")
    return key, cert


def init_ca(
    ssldir: str | os.PathLike[str],
    *,
    force: bool = False,
    days: int = 3650,
    common_name: str | None = None,
) -> Path:
    """Create a CA in ``ssldir``: ``ca.key`` (0600), ``ca.crt`` and an empty signed ``crl.pem``.

    Returns the path of ``ca.crt``. Raises :class:`CertificateError` naming the first file that
    already exists unless ``force`` (replacing the CA invalidates every certificate it issued).
    """
    base = Path(ssldir)
    key_path, cert_path, crl_path = base / CA_KEY, base / CA_CERT, base / CRL
    if not force:
        _refuse_existing(key_path, cert_path, crl_path)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"gilmsg CA {base.name}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gilmsg"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    crl = _sign_crl(key, cert, [], 1, now, now + dt.timedelta(days=CRL_DAYS))
    _write_all(
        [
            (key_path, _key_pem(key), 0o600),
            (cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644),
            (crl_path, crl, 0o644),
        ],
        force,
    )
    return cert_path


def issue(
    ssldir: str | os.PathLike[str],
    name: str,
    *,
    force: bool = False,
    days: int = 365,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key_type: str = "rsa",
) -> tuple[Path, Path]:
    """Issue ``<name>.key`` (0600) and ``<name>.crt`` (CN=name, random serial) from the CA.

    ``key_type``: ``"rsa"`` (2048 bits, fedmsg's format) or ``"ed25519"`` (signs and validates
    with gilmsg only; stock fedmsg cannot validate its messages).

    ``not_before``/``not_after`` (aware datetimes) override the validity period, e.g. to make an
    expired certificate for a test. Returns ``(key path, cert path)``. Raises
    :class:`CertificateError` when the CA is missing or a file exists and not ``force``;
    :class:`InvalidInput` for a bad name.
    """
    check_name(name)
    if key_type not in KEY_TYPES:
        raise InvalidInput(f"key type must be one of {', '.join(KEY_TYPES)}, not {key_type!r}")
    base = Path(ssldir)
    key_path, cert_path = paths(base, name)
    if not force:
        _refuse_existing(key_path, cert_path)
    ca_key, ca_cert = _load_ca(base)
    key = _new_key(key_type)
    now = _now()
    start = not_before or (now - dt.timedelta(minutes=5))
    end = not_after or (now + dt.timedelta(days=days))
    cert = _service_certificate(name, key, ca_key, ca_cert, start, end)
    _write_all(
        [
            (key_path, _key_pem(key), 0o600),
            (cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644),
        ],
        force,
    )
    return key_path, cert_path


def _new_key(key_type: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """A fresh private key of ``key_type`` (one of :data:`KEY_TYPES`)."""
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def _service_certificate(name: str, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
                         ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate,
                         start: dt.datetime, end: dt.datetime) -> x509.Certificate:
    """A service certificate for ``key`` (CN=``name``, random serial, valid from ``start`` to
    ``end``, not a CA, for digital signatures and, with an RSA key, key encipherment), signed
    by the CA with SHA-256."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _sign_crl(
    ca_key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    revoked: list[x509.RevokedCertificate],
    number: int,
    last_update: dt.datetime,
    next_update: dt.datetime,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(last_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)


def _read_crl(base: Path) -> tuple[list[x509.RevokedCertificate], int]:
    crl_path = base / CRL
    try:
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    except FileNotFoundError:
        return [], 0
    except (OSError, ValueError) as exc:
        raise CertificateError(f"CRL {crl_path} cannot be read: {exc}") from None
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    return list(crl), number


def write_crl(
    ssldir: str | os.PathLike[str],
    *,
    serials: list[int] | None = None,
    days: int = CRL_DAYS,
    last_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
) -> Path:
    """Re-sign ``crl.pem`` with the serials already revoked (plus ``serials``).

    The new CRL is valid from ``last_update`` (default now) to ``next_update`` (default
    ``days`` later); run it before the CRL's next-update date, as validators reject a stale CRL.
    Passing dates in the past makes a stale CRL for tests. Returns the CRL path.
    """
    base = Path(ssldir)
    ca_key, ca_cert = _load_ca(base)
    entries, number = _read_crl(base)
    known = {e.serial_number for e in entries}
    now = _now()
    for serial in serials or ():
        if serial not in known:
            known.add(serial)
            entries.append(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now)
                .build()
            )
    start = last_update or now
    end = next_update or (start + dt.timedelta(days=days))
    if end <= start:
        start = end - dt.timedelta(days=1)
    crl_path = base / CRL
    _write(crl_path, _sign_crl(ca_key, ca_cert, entries, number + 1, start, end), 0o644, True)
    return crl_path


def revoke(ssldir: str | os.PathLike[str], name: str) -> Path:
    """Add the serial of ``<name>.crt`` to the CRL and re-sign ``crl.pem``; returns its path.

    Validators re-read the CRL file when it changes, so the revocation takes effect at their
    next message. Raises :class:`CertificateError` if the certificate does not exist.
    """
    check_name(name)
    _, cert_path = paths(ssldir, name)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        raise CertificateError(f"certificate {cert_path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CertificateError(f"certificate {cert_path} is not PEM: {exc}") from None
    return write_crl(ssldir, serials=[cert.serial_number])


def certnames(ssldir: str | os.PathLike[str]) -> dict[str, str]:
    """``{service name: certname}`` for every issued certificate in ``ssldir``.

    The service name (fedmsg's process ``name``) and the certificate name are the same: the
    certificate's Common Name, which is also the recipient name in gilmsg.
    """
    base = Path(ssldir)
    out: dict[str, str] = {}
    if not base.is_dir():
        return out
    for crt in sorted(base.glob("*.crt")):
        name = crt.name[: -len(".crt")]
        if name.lower() in _RESERVED or not _NAME_RE.match(name):
            continue
        if (base / f"{name}.key").exists():
            out[name] = name
    return out


def fedmsg_config(ssldir: str | os.PathLike[str]) -> dict[str, Any]:
    """The fedmsg configuration keys pointing at ``ssldir``'s CA, CRL and certificates."""
    base = Path(ssldir).resolve()
    return {
        "ssldir": str(base),
        "ca_cert_location": str(base / CA_CERT),
        "crl_location": str(base / CRL),
        "certnames": certnames(base),
    }


def crl_is_stale(ssldir: str | os.PathLike[str], *, margin_days: float = 1.0) -> bool:
    """True when ``crl.pem`` is missing or reaches its next-update within ``margin_days``."""
    try:
        crl = x509.load_pem_x509_crl((Path(ssldir) / CRL).read_bytes())
    except (OSError, ValueError):
        return True
    nxt = crl.next_update_utc
    return nxt is not None and nxt <= _now() + dt.timedelta(days=margin_days)
