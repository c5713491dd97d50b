"""gilmsg: required recipients and signed acknowledgements on top of fedmsg."""

from gilmsg.errors import CertificateError, ConfigError, GilmsgError, InvalidInput, Timeout

__version__ = "0.2.0"

__all__ = [
    "CertificateError",
    "ConfigError",
    "GilmsgError",
    "InvalidInput",
    "Timeout",
]
