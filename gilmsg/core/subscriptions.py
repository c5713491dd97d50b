"""What a publisher knows of its subscribers: the topic prefixes someone subscribes to now.

Fed with subscription notices (a prefix joined, a prefix left); a transport that can report
them (ZeroMQ's XPUB does) lets a publisher re-send at once when a recipient connects, and lets
``gilmsg-logger`` refuse to send a fire-and-forget message that would reach no one.
"""

from __future__ import annotations


class Subscriptions:
    """Topic prefixes with at least one subscriber. Not thread-safe: the owner serialises.

    Peers choose the prefixes: at most ``max_bytes`` of distinct prefixes are tracked (a join
    beyond that still counts as a join, for re-sending, but its prefix is not remembered).
    """

    def __init__(self, max_bytes: int = 1 << 20) -> None:
        self.max_bytes = max_bytes
        self._prefixes: set[bytes] = set()
        self._bytes = 0

    def joined(self, prefix: bytes) -> None:
        """Someone subscribed to ``prefix``."""
        if prefix not in self._prefixes and self._bytes + len(prefix) <= self.max_bytes:
            self._prefixes.add(prefix)
            self._bytes += len(prefix)

    def left(self, prefix: bytes) -> None:
        """The last subscriber of ``prefix`` left (ZeroMQ reports only that one)."""
        if prefix in self._prefixes:
            self._prefixes.discard(prefix)
            self._bytes -= len(prefix)

    def notice(self, notice: bytes) -> bool:
        """Apply one XPUB-style notice (``\\x01`` + prefix, ``\\x00`` + prefix); True on a join."""
        if notice[:1] == b"\x01":
            self.joined(notice[1:])
            return True
        if notice[:1] == b"\x00":
            self.left(notice[1:])
        return False

    def __len__(self) -> int:
        """How many distinct prefixes someone subscribes to now (0: no subscriber at all)."""
        return len(self._prefixes)

    def reach(self, topic: str, ignore: tuple[str, ...] = ()) -> str:
        """``"none"`` (no subscription at all), ``"elsewhere"`` (none covers ``topic``) or
        ``"covered"`` (see :data:`gilmsg.core.causes.REACH`). Subscriptions to exactly a
        prefix of ``ignore`` (the ACK topic: other publishers listening for their ACKs) do
        not count as subscribers."""
        if self.covers(topic):
            return "covered"
        skipped = {p.encode("utf-8") for p in ignore}
        return "elsewhere" if any(p not in skipped for p in self._prefixes) else "none"

    def covers(self, topic: str) -> bool:
        """Would a message on ``topic`` reach someone (some subscribed prefix starts it)?"""
        wanted = topic.encode("utf-8")
        return any(wanted.startswith(prefix) for prefix in self._prefixes)
