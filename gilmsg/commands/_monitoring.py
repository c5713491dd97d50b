"""``--monitoring HOST:PORT``, shared by the long-running commands (tail, outbox run, bridge)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from gilmsg import monitoring
from gilmsg.commands import _common
from gilmsg.errors import InvalidInput


def _address(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from gilmsg.monitoring.server import parse_address

    try:
        parse_address(value)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc)) from None
    return value


#: The click option; the command's parameter is ``monitoring``.
option = click.option(
    "--monitoring", "monitoring_address", default=None, metavar="HOST:PORT", callback=_address,
    help="Serve /live, /ready and Prometheus /metrics over HTTP at HOST:PORT, bound exactly "
         "there (127.0.0.1:PORT: this host only). Exit 4 if it cannot be bound.")


def start(prog: str, address: str | None, config: Mapping[str, Any] | None = None,
          consuming: bool = False) -> Any:
    """Serve the monitoring endpoint at ``address`` (``--monitoring``); None when not given.

    The config key ``gilmsg.monitoring`` is fedmsg-hub's (a fedmsg.d shared by a hub and the
    commands would otherwise make them fight over one port): the commands take the option only.
    Watches the CA and CRL of ``config``; with ``consuming``, not ready until the process
    consumes. Prints ``<prog>: monitoring on http://HOST:PORT`` on stderr.

    Raises:
        ConfigError: the address cannot be bound (exit 4); the message names it.
    """
    if address is None:
        return None
    from gilmsg.monitoring.server import serve

    server = serve(address)
    if config is not None:
        monitoring.watch_trust(config)
    if consuming:
        monitoring.expect_consuming()
    _common.note(prog, f"monitoring on {server.url} (/live, /ready, /metrics)")
    return server
