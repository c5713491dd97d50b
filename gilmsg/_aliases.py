"""Old module paths that users may still name, each served by its new module.

gilmsg 0.2's first releases had flat modules that now live in packages. A user's fedmsg.d file
(``import gilmsg.fedmsg_compat``), a ``fedora-messaging consume --callback
gilmsg.amqp_consumer:MyCallback`` line or a ``-p gilmsg.pytest_plugin`` keeps working: the old
name imports the new module itself (one module object under two names) and emits one
:class:`DeprecationWarning` naming the new path. Nothing is imported until the old name is.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import importlib.abc

#: Old dotted path -> the module that now serves it.
MOVED = {
    "gilmsg.amqp_consumer": "gilmsg.consumers.amqp",
    "gilmsg.fedmsg_compat": "gilmsg.crypto.fedmsg_compat",
    "gilmsg.pytest_plugin": "gilmsg.testing.pytest_plugin",
    "gilmsg.sandbox": "gilmsg.testing.sandbox",
    "gilmsg.testing_amqp": "gilmsg.testing.rabbitmq",
}


class _Loader:  # no importlib.abc base: importing it costs gilmsg's start-up ~5 ms
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} has moved to {self.new}; import that instead",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module was executed when it was imported."""


class _Finder:
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, cast("importlib.abc.Loader", _Loader(new)))


def install() -> None:
    """Serve the old paths of :data:`MOVED` (idempotent)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
