"""The sandbox's PKI on disk: a CA, a fresh CRL and a usable certificate per identity."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509

from gilmsg.crypto import certs


def _serial(path: Path) -> int | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).serial_number
    except (OSError, ValueError):
        return None


def _revoked_serials(ssldir: Path) -> set[int]:
    try:
        crl = x509.load_pem_x509_crl((ssldir / certs.CRL).read_bytes())
    except (OSError, ValueError):
        return set()
    return {entry.serial_number for entry in crl}


def ensure_pki(ssldir: str | os.PathLike[str], names: Iterable[str],
               revoked: Iterable[str] = (), log: Callable[[str], None] | None = None) -> None:
    """Make ``ssldir`` hold a CA, a fresh CRL and a usable certificate for each name. Idempotent.

    Existing files are kept; a missing CA or certificate is created; a CRL near its next-update
    date is re-signed. A name in ``revoked`` ends up on the CRL; a name not in it whose
    certificate was revoked earlier gets a new one, so a second run of a sandbox behaves like
    the first. ``log`` receives one line per file created.

    Raises:
        CertificateError: an existing CA cannot be read.
        InvalidInput: a name cannot be a certificate name.
    """
    base = Path(ssldir)
    say = log or (lambda _text: None)
    names = [certs.check_name(n) for n in names]
    revoked = set(revoked)
    if not (base / certs.CA_CERT).exists():
        certs.init_ca(base)
        say(f"created CA {base / certs.CA_CERT}")
    elif certs.crl_is_stale(base):
        certs.write_crl(base)
        say(f"re-signed {base / certs.CRL}")
    on_crl = _revoked_serials(base)
    for name in names:
        key, crt = certs.paths(base, name)
        serial = _serial(crt) if key.exists() else None
        if serial is None or (serial in on_crl and name not in revoked) or _expired(crt):
            certs.issue(base, name, force=True)
            say(f"issued {crt}")
            serial = _serial(crt)
        if name in revoked and serial not in on_crl:
            certs.revoke(base, name)
            on_crl = _revoked_serials(base)
            say(f"revoked {name}")


def _expired(crt: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
    except (OSError, ValueError):
        return True
    return cert.not_valid_after_utc <= dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
