"""What a publisher knows of its subscribers: the topic prefixes someone subscribes to now.

Fed with subscription notices (a prefix joined, a prefix left); a transport that can report
them (ZeroMQ's XPUB does) lets a publisher re-send at once when a recipient connects, and lets
``gilmsg-logger`` refuse to send a fire-and-forget message that would reach no one.
"""

from __future__ import annotations


class Subscriptions:
    """Topic prefixes with at least one subscriber. Not thread-safe: the owner serialises."""

    def __init__(self) -> None:
        self._prefixes: set[bytes] = set()

    def joined(self, prefix: bytes) -> None:
        """Someone subscribed to ``prefix``."""
        self._prefixes.add(prefix)

    def left(self, prefix: bytes) -> None:
        """The last subscriber of ``prefix`` left (ZeroMQ reports only that one)."""
        self._prefixes.discard(prefix)

    def notice(self, notice: bytes) -> bool:
        """Apply one XPUB-style notice (``\\x01`` + prefix, ``\\x00`` + prefix); True on a join."""
        if notice[:1] == b"\x01":
            self.joined(notice[1:])
            return True
        if notice[:1] == b"\x00":
            self.left(notice[1:])
        return False

    def covers(self, topic: str) -> bool:
        """Would a message on ``topic`` reach someone (some subscribed prefix starts it)?"""
        wanted = topic.encode("utf-8")
        return any(wanted.startswith(prefix) for prefix in self._prefixes)
