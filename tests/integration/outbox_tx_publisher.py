"""A transactional-outbox publisher for the PostgreSQL tests, run as a real process.

``python outbox_tx_publisher.py CONFIG_FILE NAME OUTBOX_URL RECIPIENT``

In its own psycopg transaction it inserts an order and publishes ``order.created`` with
``connection=``, then **rolls back** (prints ``rolled-back <msg_id>``); in a second transaction
it does the same and **commits** (prints ``committed <msg_id>``), then kills itself with SIGKILL
at once: nothing of this process is left to send anything; only a runner can.
"""

from __future__ import annotations

import os
import signal
import sys

import psycopg

from gilmsg import config as gconfig
from gilmsg.outbox import Outbox


def main() -> None:
    config_file, name, url, recipient = sys.argv[1:5]
    cfg = gconfig.load({"name": name}, filename=config_file)
    outbox = Outbox(url, **cfg)
    with psycopg.connect(url) as conn:  # not autocommit: the first statement opens a transaction
        for n, outcome in ((1, "rolled-back"), (2, "committed")):
            conn.execute("INSERT INTO orders (n) VALUES (%s)", (n,))
            queued = outbox.publish("order.created", {"n": n}, modname="outboxtest",
                                    recipients=[recipient], connection=conn)
            if outcome == "committed":
                conn.commit()
                print(outcome, queued.msg_id, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            conn.rollback()
            print(outcome, queued.msg_id, flush=True)


if __name__ == "__main__":
    main()
