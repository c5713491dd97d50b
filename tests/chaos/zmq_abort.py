"""By hand: the libzmq 4.3.5 abort ``Assertion failed: !_io_error (stream_engine_base.cpp:310)``.

``python -m tests.chaos.zmq_abort [pyzmq|slow|tail] [--no-heartbeats]`` (not a test: it shows a
libzmq bug, which gilmsg cannot fix but avoids since issue 23: its receivers keep libzmq's
queues from filling; see ``docs/protocol.rst``).

What it takes: a receiving socket whose queue is at its RCVHWM (the application is behind, so
libzmq stops reading the connection), ZMTP heartbeats on that connection, and the peer closing
it. libzmq then marks the engine failed on the hang-up (``_io_error``) but still writes to it,
from the heartbeat timer or to answer a PING decoded before the stop, and aborts.

* ``pyzmq``: a bare SUB (RCVHWM 4, heartbeats 1 s / 3 s) that never reads; its peer sends 200
  frames and closes. The SUB process aborts (in 11 runs of 13 here); with ``--no-heartbeats``
  it lives.
* ``tail``: a real ``gilmsg-tail --exec`` SIGSTOPped for 5 s while a peer with gilmsg's
  socket options publishes 200 frames on its topic; the peer drops the silent connection after
  its 3 s heartbeat timeout. With RCVHWM 32 (``gilmsg.receive_backlog_bytes`` over 1 MiB
  frames, before issue 23's fix), at SIGCONT gilmsg-tail drained the burst and aborted (4 runs
  of 4; with a 2 s stop it lived; with heartbeats off on the peer only, 1 run of 2 aborted;
  ``--no-heartbeats`` it lived). Now its reader thread keeps libzmq's queue from filling
  (RCVHWM 100,000) and it lives (4 runs of 4: ``still running``).
* ``slow``: no signal and no close: the same SUB, its peer with heartbeats too. The SUB, not
  reading, answers no PING; the connection is dropped on a heartbeat timeout, and the SUB
  aborts, here with ``Assertion failed: _input_stopped (src/stream_engine_base.cpp:396)`` (5
  runs of 5): a reader that stays a full queue behind for 3 s is enough.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

BIN = Path(sys.executable).parent


def _sub_child(endpoint: str, heartbeats: bool) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 4)
    if heartbeats:
        sub.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sub.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sub.setsockopt(zmq.HEARTBEAT_TTL, 3000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    print("connected", flush=True)
    time.sleep(10)  # reads nothing for 10 s, then all there is
    read = 0
    while sub.poll(500):
        sub.recv_multipart()
        read += 1
    print(f"survived, read {read}", flush=True)


def pyzmq(heartbeats: bool, slow: bool = False) -> str:
    """``slow``: the peer has heartbeats too and never closes; the SUB only stays behind."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    if slow and heartbeats:
        pub.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        pub.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        pub.setsockopt(zmq.HEARTBEAT_TTL, 3000)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.zmq_abort", "sub-child", f"tcp://127.0.0.1:{port}",
         "1" if heartbeats else "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        child.stdout.readline()
        time.sleep(1.0)  # the subscription arrives
        for _ in range(200):
            pub.send_multipart([b"topic", b"x" * 1000])
        time.sleep(1.0)  # the SUB's queue is full: libzmq stopped reading
        if not slow:
            pub.close()
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        pub.close()
        ctx.term()
    return f"SUB exit status {child.returncode}: {(out + err).strip()!r}"


def tail(heartbeats: bool, frames: int = 200) -> str:
    from gilmsg.testing import DevBus
    from gilmsg.transport.zmq import tune

    extra = {} if heartbeats else {"gilmsg.heartbeat_ivl": 0}
    with tempfile.TemporaryDirectory() as tmp:
        bus = DevBus(Path(tmp) / "bus", ["pub", "tail"], extra=extra)
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        try:
            if heartbeats:
                tune(pub)
            pub.setsockopt(zmq.LINGER, 0)
            pub.bind(bus.config["endpoints"]["pub"][0])
            proc = bus.spawn([str(BIN / "gilmsg-tail"), "--config-filename",
                              str(bus.config_file), "--name", "tail", "--exec", "sleep 0.05"])
            time.sleep(3.0)  # connected and subscribed (a demonstration: nothing to await)
            os.killpg(proc.proc.pid, signal.SIGSTOP)
            for i in range(frames):
                pub.send_multipart([b"org.gilmsg.test.x", b'{"i": %d}' % i])
                time.sleep(0.02)
            time.sleep(1.0)
            if not heartbeats:
                pub.close()  # nothing else would drop the connection
            os.killpg(proc.proc.pid, signal.SIGCONT)
            try:
                status: int | None = proc.proc.wait(10)
            except subprocess.TimeoutExpired:
                status = None
            return (f"gilmsg-tail after SIGCONT: {'still running' if status is None else status}"
                    f" {proc.stderr.strip()[-100:]!r}")
        finally:
            pub.close()
            ctx.term()
            bus.close()


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["sub-child"]:
        _sub_child(args[1], args[2] == "1")
        return
    heartbeats = "--no-heartbeats" not in args
    mode = (args or ["tail"])[0]
    if mode in ("pyzmq", "slow"):
        print(pyzmq(heartbeats, slow=mode == "slow"))
    else:
        print(tail(heartbeats))


if __name__ == "__main__":
    main()
