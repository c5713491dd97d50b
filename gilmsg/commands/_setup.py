"""What ``gilmsg-logger`` and ``gilmsg-ping`` check before publishing anything.

The ``--recipients`` syntax, the configuration a publishing command uses (``--name``,
``--active``, ``--cert-prefix``), ``@GROUP`` expansion and the preflight of identity, endpoint,
key, certificate, CA and CRL: all before the first message is read or sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click

from gilmsg import config as gconfig
from gilmsg import groups
from gilmsg.commands import _common
from gilmsg.core.wire import check_timeout
from gilmsg.errors import ConfigError, InvalidInput


def split_recipients(values: Iterable[str]) -> tuple[str, ...]:
    """``--recipients`` values to names: each value may hold several, space- or comma-separated.

    ``("a", "b c", "d,e")`` gives ``("a", "b", "c", "d", "e")``; repeats are dropped, order kept.

    Raises:
        click.BadParameter: a value is empty or has an empty name between commas.
    """
    out: list[str] = []
    for value in values:
        if not value.strip():
            raise click.BadParameter("empty recipient name (give a certificate CN)")
        for part in value.split(","):
            names = part.split()
            if not names:
                raise click.BadParameter(
                    f"empty recipient name in {value!r} (a comma with no name next to it)"
                )
            out.extend(n for n in names if n not in out)
    return tuple(out)


def recipients_callback(_ctx: click.Context, _param: click.Parameter,
                         value: tuple[str, ...]) -> tuple[str, ...]:
    return split_recipients(value)


def timeout_callback(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    try:
        return check_timeout(value)  # the library's own rule, checked before any input is read
    except InvalidInput as exc:
        raise click.BadParameter(str(exc).replace("ack_timeout ", "", 1)) from None


def prepare_config(config_filename: str | None, name: str | None, active: bool,
                   cert_prefix: str | None) -> dict[str, Any]:
    """Load the configuration and pick how this process publishes.

    With ``--name`` (or a ``name`` in the configuration) it publishes from that endpoint;
    with ``--active``, or when no name is known, through fedmsg-relay (``relay_inbound``).

    Raises:
        ConfigError: the configuration cannot be read, or neither a name nor a relay is
            configured.
    """
    overrides: dict[str, Any] = {}
    if name is not None:
        overrides["name"] = name
    if cert_prefix is not None:
        overrides["cert_prefix"] = cert_prefix
    cfg = _common.load_config(config_filename, overrides)
    if active or not cfg.get("name"):
        if not cfg.get("name") and not cfg.get("relay_inbound"):
            raise _common.SetupError(
                f"no identity to publish as: pass --name NAME (one of: {_common.known_names(cfg)})"
                f" to publish from its endpoint, or set relay_inbound and run fedmsg-relay"
            )
        cfg["active"] = True
    else:
        cfg["active"] = False
    return cfg


def expand_recipients(cfg: dict[str, Any], recipients: tuple[str, ...],
                      strict: bool = False) -> tuple[str, ...]:
    """``--recipients`` with each ``@GROUP`` expanded from the config (:mod:`gilmsg.groups`).

    A name no identity of the bus holds is warned about once (refused with ``strict``).

    Raises:
        click.UsageError: an unknown or empty group; with ``strict``, an unknown name.
    """
    if not recipients:
        return recipients
    try:
        return tuple(groups.resolve(recipients, cfg, strict=strict or None))
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None


def preflight(cfg: dict[str, Any], recipients: tuple[str, ...]) -> None:
    """Check identity, endpoint, key, certificate, CA and CRL before reading any input.

    Opens no socket: a bad configuration fails at once, not after the first line.
    """
    gconfig.publishing(cfg)
    if recipients or cfg.get("sign_messages"):
        try:
            gconfig.certname(cfg)
        except ConfigError as exc:
            if cfg.get("name") or "cert_prefix" in cfg:
                raise
            raise _common.SetupError(
                f"{exc}; without --name this command publishes through the relay and signs as "
                f"shell.<host>: pass --name NAME (one of: {_common.known_names(cfg)}) or "
                f"--cert-prefix PREFIX"
            ) from None
        from gilmsg.crypto import signing

        signing.signer_for(cfg)
    if recipients:
        from gilmsg.crypto import signing

        signing.validator_for(cfg).check()
