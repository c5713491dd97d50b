"""A durable publisher for the outbox tests, run as a real process.

``python outbox_publisher.py CONFIG_FILE NAME OUTBOX RECIPIENT MODE [WATCH_TOPIC]``

MODE ``die-before-send``: the process kills itself with SIGKILL right after the message is
committed and before the link sends it (it prints ``stored <msg_id>`` first). MODE ``wait``:
publishes (once a subscriber to the topic is connected: the test's watcher), prints
``sent <msg_id>`` and waits 60 s for the ACK; the test kills it meanwhile.
"""

from __future__ import annotations

import os
import signal
import sys

from gilmsg import config as gconfig
from gilmsg.link import Link
from gilmsg.outbox import Outbox
from gilmsg.publish import someone_listens


def main() -> None:
    config_file, name, path, recipient, mode = sys.argv[1:6]
    cfg = gconfig.load({"name": name}, filename=config_file)
    outbox = Outbox(path, **cfg)
    if mode == "die-before-send":
        def die(self, delivery, frames, verify):  # the store has committed by now
            print("stored", delivery.msg_id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        Link.start = die  # type: ignore[method-assign]
    else:
        topic = gconfig.full_topic(cfg, "crash", "outboxtest")
        heard, _ = someone_listens(cfg, topic, 20.0)
        assert heard, "the watcher did not subscribe"
    pending = outbox.publish_async("crash", {"mode": mode}, modname="outboxtest",
                                   recipients=[recipient], ack_timeout=60.0)
    print("sent", pending.msg_id, flush=True)
    pending.result()
    print("acknowledged (unexpected)", flush=True)


if __name__ == "__main__":
    main()
