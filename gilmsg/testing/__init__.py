"""Helpers for testing code that uses gilmsg, with real processes and real certificates.

Import them in your own tests::

    from gilmsg.testing import DevBus

    def test_my_service(tmp_path):
        with DevBus(tmp_path, ["publisher", "worker"]) as bus:
            worker = bus.spawn_tail("worker")
            report = gilmsg.publish(topic="t", msg={}, recipients=["worker"],
                                    **bus.config_for("publisher"))

The modules:

- :mod:`gilmsg.testing.bus`: :class:`DevBus` (a CA, a certificate and a free endpoint per
  service) and :class:`Process` (a child whose output is collected);
- :mod:`gilmsg.testing.sandbox`: stand-in recipients and a whole local bus (``gilmsg-sandbox``);
- :mod:`gilmsg.testing.pytest_plugin`: the ``gilmsg_sandbox`` fixture and marker;
- :mod:`gilmsg.testing.rabbitmq`: a throw-away RabbitMQ on 127.0.0.1;
- :mod:`gilmsg.testing.postgres`: a throw-away PostgreSQL server on 127.0.0.1;
- :mod:`gilmsg.testing.lossy_link`: a userspace lossy link in network namespaces;
- :mod:`gilmsg.testing.pki`: unusual PKIs on disk and fedmsg's own x509 in a side venv.
"""

from __future__ import annotations

from gilmsg.testing.bus import (
    DEFAULT_WAIT,
    HUB_LOGGING,
    HUB_READY_LOG,
    DevBus,
    Process,
    child_env,
    config_copy,
    free_port,
)

__all__ = [
    "DEFAULT_WAIT",
    "HUB_LOGGING",
    "HUB_READY_LOG",
    "DevBus",
    "Process",
    "child_env",
    "config_copy",
    "free_port",
]
