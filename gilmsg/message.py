"""The wire format, under its historical name: everything here is :mod:`gilmsg.core.wire`."""

from gilmsg.core.wire import *  # noqa: F403
from gilmsg.core.wire import __all__  # noqa: F401
