"""The durable outbox: nothing lost when a publisher dies or a recipient is away for hours.

* :class:`Outbox` (``gilmsg.Outbox``): durable publishes (``durable.py``);
* :mod:`~gilmsg.outbox.policy`: what is owed to whom and when to retry (pure, stdlib only);
* :mod:`~gilmsg.outbox.base`: the store's reads and writes, once for both backends;
  :mod:`~gilmsg.outbox.store`: the store interface and the SQLite file (opened by
  :mod:`~gilmsg.outbox.sqlite`); :mod:`~gilmsg.outbox.postgres`: the PostgreSQL backend
  (``postgresql://`` locations; its tables opened and migrated by :mod:`~gilmsg.outbox.pgconn`);
* :mod:`~gilmsg.outbox.runner`: redelivery;
* :mod:`~gilmsg.outbox.dedup`: a recipient's durable record of consumed messages;
* :mod:`~gilmsg.outbox.plugin`: the runner as a ``fedmsg-hub`` producer.

See ``docs/outbox.rst`` for what survives which crash.
"""

from __future__ import annotations

from gilmsg.outbox.durable import DurableDelivery, Enqueued, Outbox
from gilmsg.outbox.policy import Status

__all__ = ["DurableDelivery", "Enqueued", "Outbox", "Status"]
