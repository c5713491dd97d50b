"""ACK bookkeeping, under its historical name: everything here is :mod:`gilmsg.core.delivery`."""

from gilmsg.core.delivery import *  # noqa: F403
from gilmsg.core.delivery import __all__  # noqa: F401
