"""How soon this identity's certificate and the CRL in force expire (``gilmsg-ping``).

An expired CRL stops every validating receiver at once (fedmsg#481: it silently stopped
validation across the bus); an expired certificate makes every peer refuse what it signs. Both
dates are known in advance: say so while there is time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

#: Default of ``gilmsg-ping --expiry-warning``: days before an expiry that it warns.
DEFAULT_DAYS = 14.0


def expiring(config: Mapping[str, Any], days: float, now: float | None = None) -> list[str]:
    """One phrase per date within ``days`` of ``now`` (or past): this identity's certificate
    (when ``config`` names one) and the CRL's next update (when it names a CRL). Empty when
    ``days`` is 0 or nothing is near; dates that cannot be read are left to the checks that
    use them (the key, CA or CRL errors of a publish)."""
    if days <= 0:
        return []
    now = time.time() if now is None else now
    horizon = now + days * 86400
    out = []
    cert = _certificate(config)
    if cert is not None and cert[1] <= horizon:
        out.append(f"certificate of {cert[0]} {_when(cert[1], now)}")
    crl = _crl_next_update(config, now)
    if crl is not None and crl <= horizon:
        out.append(f"CRL {config.get('crl_location')} {_when(crl, now, 'next update')}")
    return out


def _when(at: float, now: float, what: str = "expires") -> str:
    days = (at - now) / 86400
    if days < 0:
        return f"{'expired' if what == 'expires' else 'next update was'} {-days:.1f} days ago"
    return f"{what} in {days:.1f} days"


def _certificate(config: Mapping[str, Any]) -> tuple[str, float] | None:
    from gilmsg.errors import GilmsgError
    from gilmsg.monitoring.metrics import certificate_expiry

    try:
        from gilmsg.crypto import signing

        path = signing.signer_for(config).cert_path
    except (GilmsgError, OSError):
        return None
    return certificate_expiry(path)


def _crl_next_update(config: Mapping[str, Any], now: float) -> float | None:
    location = config.get("crl_location")
    if not location or not isinstance(location, str) or location.startswith(("http:", "https:")):
        return None  # a downloaded CRL is refreshed by the trust store itself
    from cryptography import x509

    try:
        with open(location, "rb") as fh:
            crl = x509.load_pem_x509_crl(fh.read())
    except (OSError, ValueError):
        return None
    nxt = crl.next_update_utc
    return None if nxt is None else nxt.timestamp()


_STATUS = re.compile(r"^(?P<service>\S+) (?P<status>OK|WARNING|CRITICAL|UNKNOWN) - ")


def nagios_with(state: int, line: str, soon: list[str]) -> tuple[int, str]:
    """A Nagios ``(state, line)`` raised to at least WARNING, naming ``soon`` (if any)."""
    if not soon:
        return state, line
    from gilmsg.monitoring.checks import NAMES, WARNING

    state = max(state, WARNING)
    head, sep, perf = line.partition(" | ")
    match = _STATUS.match(head)
    if match:
        head = f"{match['service']} {NAMES[state]} - {head[match.end():]}"
    return state, f"{head}; {'; '.join(soon)}{sep}{perf}"
