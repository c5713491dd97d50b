"""A chaos publisher, run as a real process: durable publishes at a steady rate until a deadline.

``python publisher.py CONFIG NAME OUTBOX LOG RATE UNTIL RECIPIENTS...``

Each message carries a unique nonce. Before the next publish, the process appends to LOG (and
fsyncs) what it was told: ``stored <nonce> <msg_id> <time>`` once ``publish_async`` returned
(the commit returned), ``notstored <nonce> <time> <error>`` when it raised ``OutboxError``
(nothing stored, nothing sent), and, as its own first attempts end, ``acked <msg_id> <time>
<recipient,...>`` (the recipients whose ``processed`` ACK counted). At UNTIL (wall clock) it
stops publishing and idles, so its last attempts end; the test stops it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from typing import Any

from gilmsg import config as gconfig
from gilmsg.errors import OutboxError
from gilmsg.outbox import Outbox


def main() -> None:
    config_file, name, path, log_path, rate, until, *recipients = sys.argv[1:]
    cfg = gconfig.load({"name": name}, filename=config_file)
    outbox = Outbox(path, **cfg)
    log = open(log_path, "a", encoding="utf-8")
    lock = threading.Lock()

    def record(line: str) -> None:
        with lock:
            log.write(line + "\n")
            log.flush()
            os.fsync(log.fileno())

    def outcome(msg_id: str, future: Any) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        record(f"acked {msg_id} {time.time():.6f} {','.join(sorted(future.result().acks))}")

    print("publishing", flush=True)
    period, end = 1.0 / float(rate), float(until)
    due = time.monotonic()
    run = uuid.uuid4().hex[:8]
    seq = 0
    while time.time() < end:
        seq += 1
        nonce = f"{name}-{run}-{seq}"
        try:
            pending = outbox.publish_async("chaos", {"nonce": nonce}, modname="chaos",
                                           recipients=recipients, ack_timeout=3.0)
        except OutboxError as exc:
            record(f"notstored {nonce} {time.time():.6f} {exc}")
        else:
            record(f"stored {nonce} {pending.msg_id} {time.time():.6f}")
            msg_id = pending.msg_id
            pending.future.add_done_callback(lambda f, m=msg_id: outcome(m, f))
        due += period
        time.sleep(max(0.0, due - time.monotonic()))
    print("done publishing", flush=True)
    threading.Event().wait(3600)


if __name__ == "__main__":
    main()
