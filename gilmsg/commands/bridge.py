"""``gilmsg-bridge``: forward messages and ACKs between two buses (fedmsg and AMQP).

See :mod:`gilmsg.bridge`: signed envelopes cross unchanged, ACKs go back to the bus of their
message, the bridge signs nothing (it needs no certificate), so a publisher on either bus
counts only recipients that really acknowledged.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from gilmsg.commands import _common, _monitoring

PROG = "gilmsg-bridge"
READY = "gilmsg-bridge: forwarding"

EXAMPLES = [
    "gilmsg-bridge --name bridge fedmsg.d/gilmsg.py amqp.d/gilmsg.py",
]

BRIDGE_CODES = {
    _common.EXIT_OK: "stopped after --duration",
    _common.EXIT_CONFIG: "bad configuration: a config file, the name, an endpoint, a broker",
    _common.EXIT_FAILURE: "a bus failed while forwarding (run with --debug)",
}


@click.command(cls=_common.Command, context_settings=_common.CONTEXT_SETTINGS,
               epilog=_common.epilog(EXAMPLES, BRIDGE_CODES,
                                     omit=(_common.EXIT_NOT_ACKNOWLEDGED,
                                           _common.EXIT_BAD_INPUT)))
@click.argument("config_a", type=click.Path(dir_okay=False))
@click.argument("config_b", type=click.Path(dir_okay=False))
@click.option("--name", required=True,
              help="The bridge's endpoints entry in both configurations (where it publishes).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds (default: until SIGINT/SIGTERM).")
@_monitoring.option
@click.option("--debug", is_flag=True, help="Log everything; tracebacks on errors.")
def cli(config_a: str, config_b: str, name: str, duration: float | None,
        monitoring_address: str | None, debug: bool) -> None:
    """Forward every message between the buses of CONFIG_A and CONFIG_B (fedmsg config files;
    ``gilmsg.transport`` says which transport each bus uses), and each ACK back to the bus of
    its message. Both buses must trust the same CA and share topic_prefix and environment.
    Prints a line starting with "gilmsg-bridge: forwarding" on stderr once both buses are up,
    and what it carried (JSON) on stdout when it stops."""
    _common.setup_logging(PROG, debug=debug)
    logging.getLogger("gilmsg.bridge").setLevel(logging.DEBUG if debug else logging.WARNING)

    def body() -> int:
        from gilmsg.bridge import Bridge

        a = _common.load_config(config_a, {"name": name})
        b = _common.load_config(config_b, {"name": name})
        bridge = Bridge(a, b)
        server = _monitoring.start(PROG, monitoring_address, a)  # bound, or exit 4, first
        try:
            bridge.start()
        except BaseException:
            if server is not None:
                server.close()
            raise
        if server is not None:
            _watch(bridge)
        try:
            _common.note(PROG, f"forwarding between {config_a} ({bridge.a.transport.__name__}) "
                               f"and {config_b} ({bridge.b.transport.__name__}) as {name!r}")
            failed = bridge.wait(duration)
        finally:
            bridge.stop()
            if server is not None:
                server.close()
            counts = bridge.counts
            click.echo(json.dumps({"messages": counts.messages, "acks": counts.acks,
                                   "echoes_dropped": counts.echoes}, sort_keys=True))
        return _common.EXIT_FAILURE if failed else _common.EXIT_OK

    _common.run(PROG, body, debug=debug)


def _watch(bridge: Any) -> None:
    """/ready: each bus's subscription connected; /metrics: what the bridge carried
    (``gilmsg_bridge_messages_total{direction}``, ``gilmsg_bridge_acks_total{direction}``)."""
    from prometheus_client.core import CounterMetricFamily

    from gilmsg import monitoring

    for side in (bridge.a, bridge.b):
        monitoring.watch_subscription(side.sub, f"bridge-{side.label}",
                                      f"no endpoint connected on bus {side.label}")

    def collect() -> Any:
        counts = bridge.counts
        for family, values, text in (
                ("gilmsg_bridge_messages", counts.messages, "Messages forwarded, by direction"),
                ("gilmsg_bridge_acks", counts.acks, "ACKs carried back, by direction")):
            metric = CounterMetricFamily(family, text, labels=["direction"])
            for direction, value in sorted(dict(values).items()):
                metric.add_metric([direction], value)
            yield metric

    monitoring.watch_counts(collect)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``gilmsg-bridge``."""
    cli.main(list(sys.argv[1:] if argv is None else argv), prog_name=PROG)


if __name__ == "__main__":  # pragma: no cover
    main()
