"""gilmsg: required recipients and signed acknowledgements on top of fedmsg.

The public API is flat: everything a user needs is importable from ``gilmsg``. Importing it
loads the standard library only; fedmsg, ZeroMQ, cryptography, Twisted and moksha are imported
where they are first used.
"""

from __future__ import annotations

import warnings
from typing import Any

from gilmsg import _aliases
from gilmsg import config as gconfig
from gilmsg.core.delivery import Answer, Report
from gilmsg.errors import (
    CertificateError,
    ConfigError,
    GilmsgError,
    InvalidInput,
    NotDelivered,
    OutboxError,
    Rejected,
    Timeout,
)
from gilmsg.publish import DEFAULT_ACK_TIMEOUT, PendingDelivery, publish, publish_async

__version__ = "0.2.0"

_aliases.install()

#: The start of the UserWarning setuptools 81 prints when ``pkg_resources`` is imported.
_PKG_RESOURCES_WARNING = "pkg_resources is deprecated as an API"

# moksha.hub and fedmsg.meta import pkg_resources (hence gilmsg's setuptools<82 pin), and
# setuptools prints two lines about it to every such process's stderr. gilmsg's users can do
# nothing about that, so once gilmsg is imported that one warning is ignored, and nothing else.
# fedmsg-hub --with-consumers imports the consumer classes (so gilmsg) before moksha; without it,
# moksha imports pkg_resources before it loads any consumer or producer entry point, so the
# filter must come earlier: a fedmsg.d file that imports gilmsg (config files run first), or
# PYTHONWARNINGS (contrib/systemd/gilmsg-hub@.service sets it).
warnings.filterwarnings("ignore", message=_PKG_RESOURCES_WARNING, category=UserWarning)


def init(**config: Any) -> None:
    """Check this process's configuration and open its publishing socket now.

    Optional: :func:`publish` does the same on first use. Calling it at start-up surfaces
    configuration errors early and binds the endpoint before the first message.

    Raises:
        ConfigError, CertificateError: as :func:`publish` would.
    """
    from gilmsg.link import link_for

    cfg = gconfig.load(config)
    link_for(cfg)  # first: peers connect to it while the keys load
    from gilmsg.crypto import signing

    if cfg.get("sign_messages") or cfg.get("certnames"):
        signing.signer_for(cfg)
    if cfg.get("ca_cert_location"):
        signing.validator_for(cfg).check()


def __getattr__(name: str) -> Any:
    # The hub consumer pulls in moksha and Twisted: import it only when asked for.
    if name == "GilmsgConsumer":
        from gilmsg.consumers import GilmsgConsumer

        return GilmsgConsumer
    if name == "publish_deferred":  # Twisted: imported only when asked for
        from gilmsg.deferred import publish_deferred

        return publish_deferred
    if name in ("Tail", "tail_messages"):  # a publishing process never loads the receiver
        from gilmsg import tail

        return getattr(tail, name)
    if name == "Outbox":  # sqlite3 is loaded by the first durable publish only
        from gilmsg.outbox import Outbox

        return Outbox
    raise AttributeError(f"module 'gilmsg' has no attribute {name!r}")


__all__ = [
    "DEFAULT_ACK_TIMEOUT",
    "Answer",
    "CertificateError",
    "ConfigError",
    "GilmsgConsumer",
    "GilmsgError",
    "InvalidInput",
    "NotDelivered",
    "Outbox",
    "OutboxError",
    "PendingDelivery",
    "Rejected",
    "Report",
    "Tail",
    "Timeout",
    "init",
    "publish",
    "publish_async",
    "publish_deferred",
    "tail_messages",
]
