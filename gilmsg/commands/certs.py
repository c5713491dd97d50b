"""``gilmsg-certs``: create a CA, issue and revoke service certificates, print certnames."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from gilmsg.commands._common import EXIT_CONFIG, EXIT_USAGE, Group
from gilmsg.crypto import certs
from gilmsg.errors import CertificateError, GilmsgError, InvalidInput

HELP = """Manage the certificates gilmsg and fedmsg sign messages with.

One directory (fedmsg's ``ssldir``) holds the CA (ca.key, ca.crt), its revocation list (crl.pem)
and one NAME.key/NAME.crt pair per service, with CN=NAME. Keys are written with mode 0600 and
never overwritten without --force.

\b
Example:
    gilmsg-certs init --ssldir ./dev-certs
    gilmsg-certs issue alice bob --ssldir ./dev-certs
    gilmsg-certs certnames --ssldir ./dev-certs > fedmsg.d/certs.py
    gilmsg-certs revoke bob --ssldir ./dev-certs
    gilmsg-certs dev alice bob        # all of the above but revoke, idempotent
    gilmsg-certs dev alice bob --fedmsg-d ./fedmsg.d   # and a complete bus config

\b
Exit status:
    0  success
    2  bad usage (unknown option, missing or invalid NAME)
    4  bad configuration or certificate problem (a file exists and --force was not
       given, the CA is missing or unreadable, ...); one line on stderr says which.
    (The same codes as gilmsg-logger and gilmsg-tail.)
"""

ssldir_option = click.option(
    "--ssldir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dev-certs"),
    show_default=True,
    envvar="GILMSG_SSLDIR",
    help="Certificate directory (fedmsg's ssldir). Environment: GILMSG_SSLDIR.",
)


class _Group(Group):
    """Turns gilmsg errors into one line on stderr and the documented exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidInput as exc:
            _fail(str(exc), EXIT_USAGE)
        except GilmsgError as exc:
            _fail(str(exc), EXIT_CONFIG)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(f"{where}{exc.strerror or exc}", EXIT_CONFIG)


def _fail(message: str, status: int) -> None:
    click.echo(f"gilmsg-certs: error: {message}", err=True)
    sys.exit(status)


@click.group(cls=_Group, help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The ``gilmsg-certs`` command group (its help text is :data:`HELP`)."""


@main.command()
@ssldir_option
@click.option("--force", is_flag=True, help="Replace an existing CA (voids its certificates).")
@click.option("--days", type=click.IntRange(min=1), default=3650, show_default=True,
              help="Validity of the CA certificate.")
def init(ssldir: Path, force: bool, days: int) -> None:
    """Create the CA: ca.key (0600), ca.crt and an empty crl.pem."""
    ca = certs.init_ca(ssldir, force=force, days=days)
    click.echo(f"created CA {ca} (key {ssldir / certs.CA_KEY}, CRL {ssldir / certs.CRL})")


@main.command()
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@ssldir_option
@click.option("--force", is_flag=True, help="Replace existing keys and certificates (rotation).")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True,
              help="Validity of the certificates.")
@click.option("--key-type", type=click.Choice(certs.KEY_TYPES), default="rsa", show_default=True,
              help="rsa (fedmsg's) or ed25519 (gilmsg peers only: stock fedmsg cannot "
                   "validate what it signs).")
def issue(names: tuple[str, ...], ssldir: Path, force: bool, days: int, key_type: str) -> None:
    """Issue NAME.key (0600) and NAME.crt (CN=NAME) for each NAME, signed by the CA."""
    for name in names:
        certs.check_name(name)
    for name in names:
        key, crt = certs.issue(ssldir, name, force=force, days=days, key_type=key_type)
        click.echo(f"issued {crt} (key {key})")


@main.command()
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@ssldir_option
def revoke(names: tuple[str, ...], ssldir: Path) -> None:
    """Add the certificates of NAME... to the CRL and re-sign crl.pem."""
    for name in names:
        crl = certs.revoke(ssldir, name)
        click.echo(f"revoked {name} in {crl}")


@main.command()
@ssldir_option
@click.option("--days", type=click.IntRange(min=1), default=certs.CRL_DAYS, show_default=True,
              help="Days until the CRL's next-update date.")
def crl(ssldir: Path, days: int) -> None:
    """Re-sign crl.pem with a new next-update date (do it before it passes)."""
    path = certs.write_crl(ssldir, days=days)
    click.echo(f"re-signed {path}, valid for {days} days")


@main.command()
@ssldir_option
def certnames(ssldir: Path) -> None:
    """Print the fedmsg.d configuration (certnames, ssldir, CA, CRL) for the issued certs."""
    if not (ssldir / certs.CA_CERT).exists():
        raise CertificateError(
            f"no CA in {ssldir} ({ssldir / certs.CA_CERT} is missing): run 'gilmsg-certs init'"
        )
    click.echo(render_config(ssldir), nl=False)


@main.command()
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@ssldir_option
@click.option("--fedmsg-d", "fedmsg_d", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help="Also write DIR/gilmsg.py: a complete bus configuration for the NAMEs "
                   "(endpoints on free 127.0.0.1 ports, relay endpoints, certnames, CA, CRL).")
def dev(names: tuple[str, ...], ssldir: Path, fedmsg_d: Path | None) -> None:
    """Development setup: create the CA if needed, issue what is missing, print the config.

    Idempotent: existing files are kept; a CRL near its next-update date is re-signed.
    With --fedmsg-d, the whole bus is written there (new ports at every run) and its path
    printed instead of the snippet.
    """
    for name in names:
        certs.check_name(name)
    if fedmsg_d is not None:
        from gilmsg.testing import sandbox

        for name in names:
            sandbox.check_service_name(name)
        sandbox.ensure_pki(ssldir, names, log=lambda text: click.echo(f"# {text}", err=True))
        cfg = sandbox.bus_config(ssldir, list(names))
        path = sandbox.write_config(fedmsg_d, cfg, comment=(
            "Written by gilmsg-certs dev: a local gilmsg bus on 127.0.0.1 for "
            + ", ".join(names)))
        click.echo(f"wrote {path}: pass --config-filename {path}, or run services in "
                   f"{path.parent.parent} (fedmsg reads ./fedmsg.d)")
        return
    if not (ssldir / certs.CA_CERT).exists():
        certs.init_ca(ssldir)
        click.echo(f"# created CA {ssldir / certs.CA_CERT}", err=True)
    elif certs.crl_is_stale(ssldir):
        certs.write_crl(ssldir)
        click.echo(f"# re-signed {ssldir / certs.CRL}", err=True)
    for name in names:
        key, crt = certs.paths(ssldir, name)
        if key.exists() and crt.exists():
            continue
        certs.issue(ssldir, name)
        click.echo(f"# issued {crt}", err=True)
    click.echo(render_config(ssldir), nl=False)


def render_config(ssldir: Path) -> str:
    """A fedmsg.d file (``config = dict(...)``) with the certificate settings of ``ssldir``."""
    cfg = certs.fedmsg_config(ssldir)
    lines = [
        "# fedmsg.d snippet written by gilmsg-certs: where gilmsg finds keys, CA and CRL",
        "config = dict(",
        f"    ssldir={cfg['ssldir']!r},",
        f"    ca_cert_location={cfg['ca_cert_location']!r},",
        f"    crl_location={cfg['crl_location']!r},",
        "    certnames={",
    ]
    lines += [f"        {k!r}: {v!r}," for k, v in cfg["certnames"].items()]
    lines += ["    },", ")", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    main()
