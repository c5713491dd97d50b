"""A chaos recipient, run as a real process: a ``gilmsg.tail_messages`` loop, processed ACKs,
durable de-duplication; its application appends every delivery to LOG with fsync.

``python tail_app.py CONFIG NAME DEDUP LOG WORK``: WORK seconds of "work" per message, then
``<time> <msg_id> <nonce>`` appended and fsynced (the time is taken just before the write).
"""

from __future__ import annotations

import os
import sys
import time

import gilmsg
from gilmsg import config as gconfig


def main() -> None:
    config_file, name, dedup, log_path, work = sys.argv[1:]
    cfg = gconfig.load({"name": name}, filename=config_file)
    log = open(log_path, "a", encoding="utf-8")
    topic = gconfig.full_topic(cfg, "chaos", "chaos")
    print("tailing", flush=True)
    with gilmsg.tail_messages(topic=topic, ack_mode="processed", dedup_path=dedup,
                              **cfg) as feed:
        for _name, _endpoint, _topic, envelope in feed:
            body = envelope.get("msg")
            if not isinstance(body, dict) or "nonce" not in body:
                continue
            time.sleep(float(work))
            log.write(f"{time.time():.6f} {envelope.get('msg_id')} {body['nonce']}\n")
            log.flush()
            os.fsync(log.fileno())


if __name__ == "__main__":
    main()
