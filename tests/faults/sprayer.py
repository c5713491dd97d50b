"""A hostile process on a real bus: it replays, mutates, truncates and re-signs what it hears.

Run as a script (``python tests/faults/sprayer.py CONFIG NAME``) by
``tests/faults/test_sprayer.py``. It binds the endpoint of service NAME (a member of the bus,
with its own valid certificate), listens to
every other endpoint, and until its stdin closes sends, for each frame pair it heard: the pair
verbatim (a replay), with a field changed but the signature kept, cut short, an ACK body
re-signed with its own key, plus random garbage and now and then an oversize frame. It prints
``ready`` once bound, then ``sprayed N`` (frames pairs sent) when stdin closes.
"""

from __future__ import annotations

import json
import os
import random
import runpy
import sys
import threading


def main(config_file: str, name: str) -> None:
    import zmq

    from gilmsg.core import wire
    from gilmsg.crypto.signing import signer_for

    config = runpy.run_path(config_file)["config"]
    config["name"] = name
    signer = signer_for(config)
    ctx = zmq.Context()
    out = ctx.socket(zmq.PUB)
    out.bind(config["endpoints"][name][0])
    ear = ctx.socket(zmq.SUB)
    ear.setsockopt(zmq.SUBSCRIBE, b"")
    for other, endpoints in config["endpoints"].items():
        if other != name:
            for endpoint in endpoints:
                ear.connect(endpoint)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    print("ready", flush=True)
    rng = random.Random(13)
    heard: list[list[bytes]] = []
    sent = 0
    while not done.is_set():
        while ear.poll(0):
            heard.append(ear.recv_multipart())
            del heard[:-50]
        variants: list[list[bytes]] = [[rng.randbytes(rng.randrange(40)) for _ in range(2)]]
        if rng.random() < 0.002:
            variants.append([b"", b"x" * (wire.MAX_FRAME_BYTES + 1024)])
        if heard:
            frames = rng.choice(heard)
            variants.append(frames)  # replay
            if len(frames) == 2:
                topic, body = frames
                variants.append([topic, body[:rng.randrange(max(1, len(body)))]])
                try:
                    envelope = json.loads(body)
                except ValueError:
                    envelope = None
                if isinstance(envelope, dict):
                    changed = dict(envelope)
                    key = rng.choice(sorted(changed))
                    changed[key] = rng.choice([None, 0, "x", [], {}, changed.get("msg_id")])
                    variants.append([topic, json.dumps(changed).encode()])
                    if isinstance(envelope.get("msg"), dict) and "ack_msg_id" in envelope["msg"]:
                        resigned = wire.new_envelope(envelope["topic"], envelope["msg"], 1)
                        variants.append(wire.encode(envelope["topic"], signer.sign(resigned)))
        for frames in variants:
            out.send_multipart(frames)
            sent += 1
        if sent % 64 == 0:
            os.sched_yield()
    print(f"sprayed {sent}", flush=True)
    out.close(0)
    ear.close(0)
    ctx.term()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
