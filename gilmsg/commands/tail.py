"""``gilmsg-tail``: watch the bus, acknowledging the gilmsg messages addressed to this identity."""

from __future__ import annotations

import json
import sys

import click

import gilmsg
from gilmsg import config as gconfig


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config-filename", type=click.Path(dir_okay=False), default=None,
              help="Read this fedmsg config file instead of fedmsg.d/.")
@click.option("--name", default=None, help="fedmsg name to acknowledge as (default: config).")
@click.option("--topic", default="", help="Only messages whose topic starts with this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON envelope per line.")
@click.option("--no-ack", is_flag=True, help="Watch silently: send no ACKs.")
@click.option("--show-acks", is_flag=True, help="Also print ACK traffic (hidden by default).")
def main(config_filename: str | None, name: str | None, topic: str, as_json: bool,
         no_ack: bool, show_acks: bool) -> None:
    """Print messages from the bus; acknowledge gilmsg messages that name this identity.

    Example: gilmsg-tail --name worker --json
    """
    overrides = {"name": name} if name else {}
    try:
        cfg = gconfig.load(overrides, filename=config_filename)
        ack_topic = gconfig.ack_topic(cfg)
        for _name, _endpoint, msg_topic, envelope in gilmsg.tail_messages(
            topic=topic, ack=not no_ack, **cfg
        ):
            if msg_topic == ack_topic and not show_acks:
                continue
            if as_json:
                line = json.dumps(envelope, sort_keys=True)
            else:
                line = f"{msg_topic} {envelope.get('msg_id')} {json.dumps(envelope.get('msg'))}"
            click.echo(line)
    except gilmsg.GilmsgError as exc:
        click.echo(f"gilmsg-tail: error: {exc}", err=True)
        sys.exit(4)
    except KeyboardInterrupt:
        sys.exit(130)
