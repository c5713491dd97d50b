"""The sandbox's bus configuration: every identity's endpoint, certificate name, CA and CRL.

Written with the one atomic writer DevBus uses too (:func:`gilmsg.testing.bus.write_config_file`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gilmsg.crypto import certs
from gilmsg.testing.bus import CONFIG_NAME, free_port, render_config, write_config_file

__all__ = ["CONFIG_NAME", "bus_config", "render_config", "write_config"]


def bus_config(ssldir: str | os.PathLike[str], names: Sequence[str], *, relay: bool = True,
               environment: str = "dev", extra: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
    """A complete fedmsg configuration for services ``names`` (endpoints on free ports).

    Every endpoint is on 127.0.0.1 at a port free at the time of the call; ``certnames`` maps
    each name to itself (its certificate's CN); CA and CRL are those of ``ssldir``. With
    ``relay``, ``relay_inbound`` and ``endpoints["relay_outbound"]`` are set for fedmsg-relay.
    """
    base = Path(ssldir).resolve()
    endpoints: dict[str, list[str]] = {n: [f"tcp://127.0.0.1:{free_port()}"] for n in names}
    cfg: dict[str, Any] = {
        "topic_prefix": "org.gilmsg",
        "environment": environment,
        "endpoints": endpoints,
        "sign_messages": True,
        "validate_signatures": True,
        "ssldir": str(base),
        "ca_cert_location": str(base / certs.CA_CERT),
        "crl_location": str(base / certs.CRL),
        "certnames": {n: n for n in names},
        "zmq_enabled": True,  # fedmsg-hub and fedmsg-relay need it
        # Subscribers find a late publisher within 100 ms instead of fedmsg's 1 s back-off.
        "zmq_reconnect_ivl": 10,
        "zmq_reconnect_ivl_max": 100,
    }
    cfg["gilmsg.known_recipients"] = list(names)  # a typo in a recipient is reported at once
    if relay:
        endpoints["relay_outbound"] = [f"tcp://127.0.0.1:{free_port()}"]
        cfg["relay_inbound"] = [f"tcp://127.0.0.1:{free_port()}"]
    cfg.update(extra or {})
    return cfg


def write_config(directory: str | os.PathLike[str], cfg: Mapping[str, Any],
                 comment: str = "") -> Path:
    """Write ``<directory>/gilmsg.py`` atomically (:func:`gilmsg.testing.bus.write_config_file`)
    and return its path."""
    return write_config_file(Path(directory) / CONFIG_NAME, cfg, comment)
