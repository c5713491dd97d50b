"""A userspace lossy link between two network namespaces, for tests and benchmarks (root only).

There is no ``tc netem`` on these machines, so: two network namespaces created here, each with a
TUN device, and a forwarder process (this module run as a script) holding both TUN file
descriptors, copying IP packets from one to the other and dropping a fraction of them, both
ways. Addresses are IPv4 link-local (169.254.x.y), and exist only on those TUN devices inside
those namespaces; everything is removed by :meth:`LossyLink.close`.

The forwarder reads commands on stdin (``loss 0.2``, ``delay 0.1``, ``block 4242``,
``unblock 4242``) and reports on stdout: ``ready`` once its devices exist, ``set <command>`` once
a command is in effect, ``syn A>B`` for each TCP connection attempt it sees (a SYN without ACK,
dropped or not), so a test can await a reconnection as an event. ``delay`` holds every packet
that many seconds (each way) before forwarding it; ``block`` drops every TCP packet from or to
that port, in both directions, which cuts exactly the connections made to one endpoint.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from gilmsg.testing.bus import DEFAULT_WAIT, Process

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def unavailable() -> str | None:
    """Why a lossy link cannot be built here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and TUN devices)"
    if shutil.which("ip") is None:
        return "needs the 'ip' command (iproute2)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    probe = f"gilmsg-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=DEFAULT_WAIT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


_counter = 0


class LossyLink:
    """Namespaces ``ns_a`` (address ``addr_a``) and ``ns_b`` (``addr_b``) joined by a lossy link.

    Run a process in a namespace with :meth:`wrap` (``ip netns exec``). Use it as a context
    manager or call :meth:`close`.
    """

    def __init__(self, loss: float = 0.0, seed: int | None = None) -> None:
        global _counter
        _counter += 1
        tag = f"{os.getpid() % 100000}x{_counter}"
        self.ns_a, self.ns_b = f"gilmsg-a-{tag}", f"gilmsg-b-{tag}"
        self.tun_a, self.tun_b = f"gla{tag}"[:15], f"glb{tag}"[:15]
        subnet = 1 + (os.getpid() + _counter) % 250
        self.addr_a, self.addr_b = f"169.254.{subnet}.1", f"169.254.{subnet}.2"
        self.forwarder: Process | None = None
        self._made: list[str] = []
        try:
            for ns in (self.ns_a, self.ns_b):
                _ip("netns", "add", ns)
                self._made.append(ns)
            argv = [sys.executable, str(Path(__file__).resolve()), self.tun_a, self.tun_b,
                    str(loss), str(seed if seed is not None else -1)]
            self.forwarder = Process(argv, stdin=subprocess.PIPE)
            line = self.forwarder.next_line(DEFAULT_WAIT)
            if line != "ready":
                raise RuntimeError(f"lossy link forwarder: {line}; {self.forwarder.stderr}")
            for ns, tun, mine, other in ((self.ns_a, self.tun_a, self.addr_a, self.addr_b),
                                          (self.ns_b, self.tun_b, self.addr_b, self.addr_a)):
                _ip("link", "set", tun, "netns", ns)
                _ip("link", "set", "lo", "up", netns=ns)
                _ip("addr", "add", f"{mine}/32", "dev", tun, netns=ns)
                _ip("link", "set", tun, "up", netns=ns)
                _ip("route", "add", f"{other}/32", "dev", tun, netns=ns)
        except BaseException:
            self.close()
            raise

    def wrap(self, ns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]

    def set_loss(self, loss: float) -> None:
        """Drop this fraction of packets from now on (both directions; 1.0 cuts the link)."""
        self._command(f"loss {loss}")

    def set_delay(self, seconds: float) -> None:
        """Hold every packet ``seconds`` before forwarding it, from now on (both directions)."""
        self._command(f"delay {seconds}")

    def block_port(self, port: int, blocked: bool = True) -> None:
        """Drop (or, with ``blocked`` False, forward again) every TCP packet from or to ``port``.

        Blocking the port of one endpoint cuts the connections made to it and no others: with
        a recipient's port, a publisher's ACK listener no longer hears it, while the recipient
        still receives from the publisher (a one-way partition of the ACK path).
        """
        self._command(f"{'block' if blocked else 'unblock'} {port}")

    def _command(self, command: str) -> None:
        """Send ``command`` to the forwarder and return once it is in effect."""
        assert self.forwarder is not None and self.forwarder.proc.stdin is not None
        self.forwarder.proc.stdin.write(command + "\n")
        self.forwarder.proc.stdin.flush()
        self.forwarder.wait_for(lambda line: line == f"set {command}", DEFAULT_WAIT)

    def close(self) -> None:
        """Stop the forwarder and delete the namespaces (and with them the TUN devices)."""
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None
        for ns in self._made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=DEFAULT_WAIT)
        self._made.clear()

    def __enter__(self) -> LossyLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the forwarder process -------------------------------------------------------------------


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _is_syn(packet: bytes) -> bool:
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 6:
        return False
    ihl = (packet[0] & 0x0F) * 4
    return len(packet) >= ihl + 14 and packet[ihl + 13] & 0x12 == 0x02  # SYN, not ACK


def _ports(packet: bytes) -> tuple[int, int] | None:
    """(source, destination) ports of an IPv4 TCP packet, else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 6:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 4:
        return None
    return struct.unpack("!HH", packet[ihl:ihl + 4])


def _forward(tun_a: str, tun_b: str, loss: float, seed: int) -> None:
    rng = random.Random(None if seed < 0 else seed)
    fds = {_open_tun(tun_a): "A", _open_tun(tun_b): "B"}
    fd_a, fd_b = fds
    other = {fd_a: fd_b, fd_b: fd_a}
    state: dict = {"loss": loss, "delay": 0.0, "blocked": frozenset()}
    held: list[tuple[float, int, int, bytes]] = []  # (due, seq, fd to write, packet): a heap
    seq = 0
    print("ready", flush=True)

    def commands() -> None:
        for line in sys.stdin:
            parts = line.split()
            if len(parts) != 2:
                continue
            if parts[0] in ("loss", "delay"):
                state[parts[0]] = float(parts[1])
            elif parts[0] == "block":
                state["blocked"] = state["blocked"] | {int(parts[1])}
            elif parts[0] == "unblock":
                state["blocked"] = state["blocked"] - {int(parts[1])}
            else:
                continue
            print(f"set {' '.join(parts)}", flush=True)
        os._exit(0)  # stdin closed: our parent is gone

    def write(fd: int, packet: bytes) -> None:
        try:
            os.write(fd, packet)
        except OSError:  # the other device is down or gone
            pass

    threading.Thread(target=commands, daemon=True).start()
    while True:
        wait = max(0.0, held[0][0] - time.monotonic()) if held else None
        ready, _, _ = select.select(list(fds), [], [], wait)
        now = time.monotonic()
        while held and held[0][0] <= now:
            write(*heapq.heappop(held)[2:])
        for fd in ready:
            try:
                packet = os.read(fd, 65536)
            except OSError:
                continue
            if _is_syn(packet):  # reported even when dropped: an attempt to (re)connect
                print(f"syn {fds[fd]}>{fds[other[fd]]}", flush=True)
            if rng.random() < state["loss"]:
                continue
            ports = _ports(packet)
            if ports is not None and state["blocked"] & set(ports):
                continue
            if state["delay"] > 0:
                seq += 1
                heapq.heappush(held, (now + state["delay"], seq, other[fd], packet))
            else:
                write(other[fd], packet)


if __name__ == "__main__":
    _forward(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
