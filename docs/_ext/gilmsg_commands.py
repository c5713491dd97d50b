"""The click command of every installed ``gilmsg-*`` console script, as module attributes
(``gilmsg_logger`` for ``gilmsg-logger``), for sphinx-click's ``.. click::`` directive.

Found through the entry points, so the CLI reference follows setup.py wherever a command's
module lives."""

from __future__ import annotations

import sys
from importlib import metadata

import click


def command_of(script: str) -> click.Command:
    """The click command object an installed console script runs."""
    (entry,) = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == script]
    obj = entry.load()
    if isinstance(obj, click.Command):
        return obj
    # A plain main() wrapping the command (exit-code handling): the module's one click command.
    commands = [v for v in vars(sys.modules[entry.module]).values()
                if isinstance(v, click.Command)]
    if len(commands) != 1:
        raise RuntimeError(f"{script}: cannot tell which click command {entry.value} runs")
    return commands[0]


SCRIPTS = sorted(ep.name for ep in metadata.entry_points(group="console_scripts")
                 if ep.value.startswith("gilmsg."))

for _script in SCRIPTS:
    globals()[_script.replace("-", "_")] = command_of(_script)
