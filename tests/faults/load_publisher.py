"""One publisher process of the load run (``tests/faults/test_load.py``): N acknowledged publishes.

    python tests/faults/load_publisher.py CONFIG NAME COUNT WINDOW RECIPIENTS...

Keeps up to WINDOW publishes in flight (``publish_async``), prints one JSON line per outcome
(``{"msg_id", "acked", "missing"}``) in the order they were sent, then ``done``.
"""

from __future__ import annotations

import json
import runpy
import sys
from collections import deque


def main() -> None:
    import gilmsg
    from gilmsg.publish import publish_async

    config_file, name, count, window, *recipients = sys.argv[1:]
    config = runpy.run_path(config_file)["config"]
    config["name"] = name
    in_flight: deque = deque()

    def settle() -> None:
        pending = in_flight.popleft()
        try:
            report = pending.result()
            line = {"msg_id": report.msg_id, "acked": sorted(report.acks), "missing": []}
        except gilmsg.Timeout as exc:
            line = {"msg_id": exc.msg_id, "acked": sorted(exc.acked), "missing": list(exc.missing)}
        print(json.dumps(line), flush=True)

    for i in range(int(count)):
        if len(in_flight) >= int(window):
            settle()
        in_flight.append(publish_async(topic="load", msg={"publisher": name, "i": i},
                                       modname="load", recipients=recipients, ack_timeout=60,
                                       **config))
    while in_flight:
        settle()
    print("done", flush=True)


if __name__ == "__main__":
    main()
