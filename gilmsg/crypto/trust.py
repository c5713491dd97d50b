"""The trust store: the CA certificate and the CRL that signatures are checked against.

Loading, fetching, caching and refreshing live here, apart from verification
(:class:`gilmsg.crypto.signing.Validator`). ``ca_cert_location`` and ``crl_location`` are local
paths or ``http(s)://`` URLs. Local files are re-read when they change on disk. URLs are downloaded
and cached on disk under a hash of the URL; the CRL is downloaded again once its next-update
date has passed, and the CA when it has expired or no longer verifies the CRL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Any, NamedTuple

from cryptography import x509

from gilmsg.errors import CertificateError, ConfigError

log = logging.getLogger("gilmsg.crypto.signing")

_MAX_DOWNLOAD = 10 << 20


_Stamp = tuple[int, int, int, int]


def _stamp(path: str, what: str) -> _Stamp:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CertificateError(f"{what} {path}: {exc.strerror or exc}") from None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise CertificateError(f"{what} {path}: {exc.strerror or exc}") from None


def _read_stable(path: str, what: str) -> tuple[_Stamp, bytes]:
    """Read ``path`` with the stat stamp it had while being read (retrying if it changed)."""
    for _ in range(3):
        before = _stamp(path, what)
        data = _read(path, what)
        if _stamp(path, what) == before:
            return before, data
    return before, data


def _load_cert(data: bytes, where: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        raise CertificateError(f"{what} {where} is not a usable PEM certificate: "
                               f"{type(exc).__name__}: {exc}") from None


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/gilmsg``, or ``~/.cache/gilmsg``: where downloaded CA/CRLs are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gilmsg")


class _Trust(NamedTuple):
    """The CA and revocations in force, as loaded at one generation."""

    generation: int
    stamps: tuple[_Stamp | None, _Stamp | None]
    ca: x509.Certificate
    ca_not_after: float
    revoked: frozenset[int]
    crl_next_update: float | None


class TrustStore:
    """One CA certificate and (optionally) one CRL, loaded on demand and kept fresh. Thread-safe.

    Nothing is loaded by the constructor; :meth:`current` loads (or re-loads) when needed.
    """

    def __init__(
        self,
        ca_location: str,
        crl_location: str | None,
        *,
        cache_dir: str | None = None,
        fetch_timeout: float = 10.0,
    ) -> None:
        if not ca_location or not isinstance(ca_location, str):
            raise ConfigError("config key 'ca_cert_location' is not set: point it at the CA")
        self.ca_location = os.fspath(ca_location)
        self.crl_location = os.fspath(crl_location) if crl_location else None
        self.cache_dir = os.fspath(cache_dir) if cache_dir else default_cache_dir()
        self.fetch_timeout = fetch_timeout
        if self.ca_location.startswith("http://"):
            log.warning("CA certificate %s is fetched over plain HTTP: anyone on the path can "
                        "replace it; prefer a local file or https", self.ca_location)
        self._lock = threading.Lock()
        self._trust: _Trust | None = None
        self._generation = 0

    def _cache_path(self, url: str) -> str:
        return os.path.join(self.cache_dir, hashlib.sha256(url.encode()).hexdigest()[:32] + ".pem")

    def _fetch(self, url: str, what: str) -> bytes:
        log.info("downloading %s from %s", what, url)
        try:
            import urllib.request  # only stores with a URL need it (about 15 ms to import)

            with urllib.request.urlopen(url, timeout=self.fetch_timeout) as resp:
                data = resp.read(_MAX_DOWNLOAD + 1)
        except (OSError, ValueError) as exc:  # urllib.error.URLError is an OSError
            reason = getattr(exc, "reason", None) or exc
            raise CertificateError(f"cannot download {what} from {url}: {reason}") from None
        if len(data) > _MAX_DOWNLOAD:
            raise CertificateError(f"cannot download {what} from {url}: larger than 10 MiB")
        return data

    def _store(self, url: str, data: bytes) -> None:
        path = self._cache_path(url)
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            import tempfile  # (shutil, random ...: only for a download, not at start-up)

            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("cannot cache %s in %s: %s", url, self.cache_dir, exc)

    def _get(self, location: str, what: str, refresh: bool) -> tuple[_Stamp | None, bytes, bool]:
        """``(stamp, data, downloaded)`` for a path (stamp set) or a URL (stamp None)."""
        if not _is_url(location):
            stamp, data = _read_stable(location, what)
            return stamp, data, False
        if not refresh:
            try:
                with open(self._cache_path(location), "rb") as fh:
                    return None, fh.read(), False
            except OSError:
                pass
        return None, self._fetch(location, what), True

    def _load_ca(self, refresh: bool) -> tuple[_Stamp | None, x509.Certificate]:
        stamp, data, downloaded = self._get(self.ca_location, "CA certificate", refresh)
        ca = _load_cert(data, self.ca_location, "CA certificate")
        if downloaded:
            self._store(self.ca_location, data)
        return stamp, ca

    def _load_crl(
        self, refresh: bool
    ) -> tuple[_Stamp | None, x509.CertificateRevocationList]:
        assert self.crl_location is not None
        stamp, data, downloaded = self._get(self.crl_location, "CRL", refresh)
        try:
            crl = x509.load_pem_x509_crl(data)
        except (ValueError, x509.InvalidVersion) as exc:
            raise CertificateError(f"CRL {self.crl_location} is not a PEM CRL: {exc}") from None
        if downloaded:
            self._store(self.crl_location, data)
        return stamp, crl

    def _build(self, now: float) -> _Trust:
        ca_refreshed = False
        ca_stamp, ca = self._load_ca(refresh=False)
        if _is_url(self.ca_location) and ca.not_valid_after_utc.timestamp() < now:
            ca_stamp, ca = self._load_ca(refresh=True)
            ca_refreshed = True
        if ca.not_valid_after_utc.timestamp() < now:
            raise CertificateError(f"CA certificate {self.ca_location} has expired")
        if ca.not_valid_before_utc.timestamp() > now:
            raise CertificateError(f"CA certificate {self.ca_location} is not valid yet")

        crl_stamp: _Stamp | None = None
        revoked: frozenset[int] = frozenset()
        next_update: float | None = None
        if self.crl_location is not None:
            crl_url = _is_url(self.crl_location)
            crl_stamp, crl = self._load_crl(refresh=False)
            if crl_url and _crl_stale(crl, now):
                crl_stamp, crl = self._load_crl(refresh=True)
            if not crl.is_signature_valid(_issuer_key(ca)) and _is_url(self.ca_location):
                if not ca_refreshed:  # the CA may have been rotated: fetch it once more
                    ca_stamp, ca = self._load_ca(refresh=True)
                if crl_url and not crl.is_signature_valid(_issuer_key(ca)):
                    crl_stamp, crl = self._load_crl(refresh=True)
            if not crl.is_signature_valid(_issuer_key(ca)):
                raise CertificateError(
                    f"CRL {self.crl_location} is not signed by CA {self.ca_location}"
                )
            if _crl_stale(crl, now):
                raise CertificateError(
                    f"CRL {self.crl_location} is past its next-update date "
                    f"({crl.next_update_utc:%Y-%m-%d %H:%M:%S} UTC): publish a fresh CRL"
                )
            revoked = frozenset(r.serial_number for r in crl)
            if crl.next_update_utc is not None:
                next_update = crl.next_update_utc.timestamp()

        self._generation += 1
        return _Trust(
            self._generation,
            (ca_stamp, crl_stamp),
            ca,
            ca.not_valid_after_utc.timestamp(),
            revoked,
            next_update,
        )

    def _stamps(self) -> tuple[_Stamp | None, _Stamp | None]:
        ca = None if _is_url(self.ca_location) else _stamp(self.ca_location, "CA certificate")
        crl = None
        if self.crl_location is not None and not _is_url(self.crl_location):
            crl = _stamp(self.crl_location, "CRL")
        return ca, crl

    def _fresh(self, trust: _Trust | None, now: float) -> bool:
        if trust is None or trust.stamps != self._stamps():
            return False
        if trust.crl_next_update is not None and now > trust.crl_next_update:
            return False
        return now <= trust.ca_not_after

    def current(self, now: float) -> _Trust:
        """The CA and CRL in force at ``now``, (re)loaded if a file changed or a date passed.

        Raises:
            CertificateError: a file/URL is missing, unreadable or not PEM, a download failed,
                the CA has expired, the CRL is not signed by the CA or is past its next-update.
        """
        trust = self._trust
        if self._fresh(trust, now):
            return trust  # type: ignore[return-value]
        with self._lock:
            trust = self._trust
            if not self._fresh(trust, now):
                self._trust = None
                try:
                    trust = self._build(now)
                except (CertificateError, ConfigError):
                    raise
                except Exception as exc:  # cryptography raises more than ValueError: fail closed
                    raise CertificateError(
                        f"cannot load CA {self.ca_location} / CRL {self.crl_location}: "
                        f"{type(exc).__name__}: {exc}") from None
                self._trust = trust
        return trust  # type: ignore[return-value]


def _crl_stale(crl: x509.CertificateRevocationList, now: float) -> bool:
    next_update = crl.next_update_utc
    return next_update is not None and next_update.timestamp() < now


def _issuer_key(ca: x509.Certificate) -> Any:
    """The CA's public key, as ``is_signature_valid`` takes it (a CA never has an X25519 or
    X448 key, which cannot sign; the CRL check then fails as for any wrong key)."""
    return ca.public_key()
