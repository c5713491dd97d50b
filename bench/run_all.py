"""Every benchmark, one command, one table: gilmsg beside plain fedmsg and beside the floor.

    .venv/bin/pip install -e '.[bench]'        # matplotlib, for the plot
    .venv/bin/python bench/run_all.py [--n 300] [--png docs/latency.png] [--quick]

1. Head to head, in the same run and interleaved in rounds (so all three see the same load), on
   loopback with real processes:

   * gilmsg: ``gilmsg.publish`` to 1 and to 3 ``gilmsg-tail`` recipients, until every ACK is
     validated (signed both ways);
   * plain fedmsg: ``fedmsg.publish`` to ``fedmsg.tail_messages`` in another process, one way,
     no ACK, unsigned (fedmsg's own signing is off on current pyOpenSSL);
   * the floor: bare pyzmq PUB/SUB round trip doing the same cryptography as gilmsg, without
     gilmsg: sign the message, the echo process validates it and signs an ACK, validate the
     ACK. gilmsg cannot be faster than this.

   Printed as one table (p50, p90, p99, and gilmsg's p50 as a multiple of each), with the CPU
   that other processes of the machine used while it was measured (the noise), and drawn as
   latency distributions in a PNG (``--png``).
2. Then every other benchmark of ``bench/`` with short settings (``--quick`` skips them), their
   summaries printed as they come; ``bench_lossy.py`` only as root.

``--issue20 [ARGS]`` instead prints issue 20's table (gilmsg beside the protocol floor,
pipelined and round trip, batched ACKs, start-up) from one run: see ``bench_issue20.py``, which
takes ARGS.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zmq  # noqa: E402
from bench_protocol import loopback_binds, quiet_tail  # noqa: E402
from bench_scale import ECHO  # noqa: E402  (the floor's recipient, one definition)

import gilmsg  # noqa: E402
from gilmsg.core import wire  # noqa: E402
from gilmsg.crypto import signing  # noqa: E402
from gilmsg.testing import DevBus, Process, free_port  # noqa: E402

FEDMSG_TAIL = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import fedmsg, fedmsg.config
config = eval(open(sys.argv[1]).read().split("=", 1)[1])
config.update(sign_messages=False, validate_signatures=False, mute=True)  # no publisher
print("ready", flush=True)
prefix = f"{config['topic_prefix']}.{config['environment']}.b.bench"
for _name, _ep, topic, msg in fedmsg.tail_messages(topic=prefix, **config):
    body = msg.get("msg")
    if topic.endswith(".b.bench") and isinstance(body, dict) and "sent" in body:
        print(json.dumps({"latency": time.monotonic() - body["sent"], "n": body["n"]}),
              flush=True)
"""

OTHERS = [  # (script, short arguments, needs root)
    ("bench_signing.py", ["--n", "500", "--fedmsg-n", "30"], False),
    ("bench_protocol.py", ["--n", "100"], False),
    ("bench_scale.py", ["--curve", "1,3,10", "--n", "600", "--rt", "60", "--rounds", "2"],
     False),
    ("bench_scale.py", ["--curve", "3", "--n", "600", "--rt", "20", "--rounds", "2",
                        "--batch-acks"], False),
    ("bench_hub.py", ["--n", "100", "--warmup", "20"], False),
    ("bench_startup.py", ["--n", "10"], False),
    ("bench_hostile.py", ["--big", "30", "--small", "300"], False),
    ("bench_lossy.py", ["--runs", "1", "--messages", "20", "--modes", "after"], True),
]


class CpuMeter:
    """CPU time used by the whole machine and by the processes we name, over an interval."""

    def __init__(self) -> None:
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.cores = os.cpu_count() or 1
        self.pids: set[int] = {os.getpid()}
        self.other = 0.0  # seconds of CPU used by other processes while measuring
        self.wall = 0.0
        self._start: tuple[float, float, float] | None = None

    def _busy(self) -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return (sum(fields[:8]) - idle) / self.ticks

    def _ours(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(stat[11]) + int(stat[12])) / self.ticks
        return total

    def __enter__(self) -> CpuMeter:
        self._start = (time.monotonic(), self._busy(), self._ours())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._start is not None
        wall, busy, ours = self._start
        self.wall += time.monotonic() - wall
        self.other += max(0.0, (self._busy() - busy) - (self._ours() - ours))

    def describe(self) -> str:
        share = self.other / max(self.wall, 1e-9) / self.cores
        return (f"noise: other processes used {self.other:.1f} s of CPU during {self.wall:.1f} s "
                f"of measurement ({share:.0%} of {self.cores} cores)")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    """Measure, print the table, draw the plot, run the other benchmarks."""
    if sys.argv[1:2] == ["--issue20"]:
        import bench_issue20

        sys.exit(bench_issue20.main(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="measured round trips per row")
    parser.add_argument("--rounds", type=int, default=6, help="interleaving rounds")
    parser.add_argument("--png", default=str(HERE.parent / "docs" / "latency.png"))
    parser.add_argument("--quick", action="store_true", help="skip the other benchmarks")
    args = parser.parse_args()
    per_round = max(1, args.n // args.rounds)
    meter = CpuMeter()
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-") as tmp, DevBus(
            Path(tmp), ["pub", "r1", "r2", "r3", "fedpub", "floor", "echo"]) as bus:
        cfg = bus.config_for("pub")
        # Recipients subscribe to gilmsg's rows only, as consumers subscribe to their topics.
        topic = f"{bus.config['topic_prefix']}.{bus.config['environment']}.gilmsgbench"
        tails = [quiet_tail(bus, r, "--topic", topic) for r in ("r1", "r2", "r3")]
        meter.pids.update(t.pid for t in tails)
        gilmsg.publish(topic="warm", msg={}, modname="gilmsgbench", recipients=["r1", "r2", "r3"],
                       ack_timeout=30, **cfg)

        # The floor: bare pyzmq, same signatures.
        ssl = bus.ssldir
        here, there = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        echo = bus.spawn([sys.executable, "-c", ECHO, str(ssl / "echo.key"), str(ssl / "echo.crt"),
                          bus.config["ca_cert_location"], bus.config["crl_location"], here, there])
        assert echo.next_line() == "ready", echo.stderr
        meter.pids.add(echo.proc.pid)
        ctx = zmq.Context()
        out, back = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        out.bind(here)
        back.setsockopt(zmq.SUBSCRIBE, b"")
        back.connect(there)
        me = signing.Signer(str(ssl / "floor.key"), str(ssl / "floor.crt"))
        validator = signing.Validator(bus.config["ca_cert_location"], bus.config["crl_location"])
        counter = iter(range(1, 10**9))

        def floor_once(wait: float = 5.0) -> float | None:
            i = next(counter)
            t = time.monotonic()
            signed = me.sign(wire.new_envelope("floor", {"i": i}, i, recipients=["echo"]))
            out.send_multipart(wire.encode("floor", signed))
            while back.poll(wait * 1000):
                ack = json.loads(back.recv_multipart()[1])
                if validator.validate(ack).ok and ack["msg"]["ack_msg_id"] == signed["msg_id"]:
                    return time.monotonic() - t
            return None

        while floor_once(0.1) is None:  # until the echo's SUB is connected
            pass

        # Plain fedmsg, one way.
        script = Path(tmp) / "fedtail.py"
        script.write_text(FEDMSG_TAIL)
        fedtail = bus.spawn([sys.executable, str(script), str(bus.config_file)])
        fedtail.wait_for(lambda line: line == "ready")
        meter.pids.add(fedtail.proc.pid)
        import warnings

        warnings.simplefilter("ignore")
        import fedmsg

        with loopback_binds():
            fedmsg.init(**bus.config_for("fedpub", sign_messages=False,
                                         validate_signatures=False, post_init_sleep=0.5))
        numbers = iter(range(1, 10**9))

        def fedmsg_once() -> float:
            n = next(numbers)
            fedmsg.publish(topic="bench", msg={"sent": time.monotonic(), "n": n}, modname="b")
            while True:
                record = json.loads(fedtail.next_line(10))
                if record["n"] == n:
                    return record["latency"]

        while True:  # slow joiner: until the tail hears us
            n = next(numbers)
            fedmsg.publish(topic="bench", msg={"sent": time.monotonic(), "n": n}, modname="b")
            try:
                if json.loads(fedtail.next_line(0.1))["n"]:
                    break
            except AssertionError:
                continue
        while not fedtail.lines.empty():
            fedtail.next_line(0)

        def gilmsg_once(recipients: list[str]) -> float:
            t = time.monotonic()
            gilmsg.publish(topic="bench", msg={}, modname="gilmsgbench", recipients=recipients,
                           ack_timeout=10, **cfg)
            return time.monotonic() - t

        rows = {
            "gilmsg, 1 recipient (round trip)": lambda: gilmsg_once(["r1"]),
            "gilmsg, 3 recipients (round trip)": lambda: gilmsg_once(["r1", "r2", "r3"]),
            "plain fedmsg, one way, no ACK, unsigned": fedmsg_once,
            "bare pyzmq round trip, same signatures (floor)": floor_once,
        }
        for name, once in rows.items():  # warm-up, not measured
            for _ in range(20):
                once()
            samples[name] = []
        for _ in range(args.rounds):
            for name, once in rows.items():
                with meter:
                    for _ in range(per_round):
                        samples[name].append(once())
        out.close(0)
        back.close(0)
        ctx.term()

    gil = pct(samples["gilmsg, 1 recipient (round trip)"], 0.5)
    print(f"\n{'':48} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}   gilmsg (1) p50 / this p50")
    for name, values in samples.items():
        ms = [v * 1000 for v in values]
        print(f"{name:48} {pct(ms, .5):8.3f} {pct(ms, .9):8.3f} {pct(ms, .99):8.3f}   "
              f"{gil / pct(values, 0.5):6.2f}x   (n={len(values)})")
    print(meter.describe())
    if args.png:
        draw(samples, Path(args.png), meter)
        print(f"latency distribution: {args.png}")
    if not args.quick:
        others()


def draw(samples: dict[str, list[float]], path: Path, meter: CpuMeter) -> None:
    """Empirical CDFs of the rows, log-scaled milliseconds, small enough to commit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=90)
    for name, values in samples.items():
        ms = sorted(v * 1000 for v in values)
        ax.step(ms, [(i + 1) / len(ms) for i in range(len(ms))], where="post", label=name)
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50]))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("latency, ms (log scale)")
    ax.set_ylabel("fraction of messages")
    ax.set_title("loopback, 2-core VM; " + meter.describe().split(": ", 1)[1].split(" (")[0],
                 fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, pil_kwargs={"optimize": True})
    plt.close(fig)


def others() -> None:
    """Run the other benchmarks with short settings; print what each printed."""
    for script, argv, root in OTHERS:
        print(f"\n== {script} {' '.join(argv)} ==", flush=True)
        if root and os.geteuid() != 0:
            print("skipped: needs root (network namespaces)")
            continue
        proc = Process([sys.executable, str(HERE / script), *argv], cwd=str(HERE.parent),
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                try:
                    print("  " + proc.lines.get(timeout=0.5), flush=True)
                except queue.Empty:
                    if proc.proc.poll() is not None and proc.lines.empty():
                        break
            code = proc.wait(60)
        finally:
            proc.stop()
        if code:
            print(f"  (exit {code}) {proc.stderr[-500:]}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    main()
