"""The recipient's side of the protocol: what to do with one received envelope.

Pure: the caller checks the signature first (a message that fails is dropped before this), sends
the ACK this asks for, and asks its :class:`~gilmsg.core.delivery.Seen` whether the
deduplication key is new. See "Recipient" in ``docs/protocol.rst``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

from gilmsg.core import wire


class Receipt(NamedTuple):
    """The decision for one envelope whose signature held (or was not checked).

    ``drop``: hand it to nobody (a gilmsg message without a msg_id). ``key``: None for what is
    delivered every time (ACKs, plain fedmsg messages), else the deduplication key of a gilmsg
    message: its digest, which covers the msg_id and the content, so that a different message
    reusing a msg_id neither hides the genuine one (which its ACK vouches for) nor is hidden by
    it; and a key is 64 characters whatever the sender put in msg_id. ``acknowledge``: send a
    signed ACK for ``digest`` before delivering, every time the message arrives.
    """

    drop: bool
    key: str | None
    acknowledge: bool
    digest: str | None


def receive(topic: str, envelope: Mapping[str, Any], ack_topic: str,
            common_name: str | None, digest: str | None = None) -> Receipt:
    """Decide for ``envelope`` received on ``topic`` by the holder of ``common_name``.

    ``common_name`` None: this receiver sends no ACKs (it only watches). ``digest``: the
    envelope's :func:`gilmsg.core.wire.digest` if the caller computed it already.
    """
    if topic == ack_topic or not wire.is_gilmsg(envelope):
        return Receipt(False, None, False, None)
    msg_id = envelope.get("msg_id")
    if not isinstance(msg_id, str) or not msg_id:  # possible only unvalidated: fedmsg signs it
        return Receipt(True, None, False, None)
    if digest is None:
        digest = wire.digest(envelope)
    acknowledge = common_name is not None and wire.wants_ack_from(envelope, common_name)
    return Receipt(False, digest, acknowledge, digest)


#: When a recipient acknowledges: on receipt (the default), or once the application settled
#: the message (``processed`` or ``rejected``; a ``received`` ACK still goes out on receipt).
ACK_MODES = ("received", "processed")


def check_ack_mode(mode: Any, where: str = "ack_mode") -> str:
    """``mode`` as one of :data:`ACK_MODES`, or :class:`~gilmsg.errors.InvalidInput` naming
    ``where`` (the argument or config key it came from)."""
    from gilmsg.errors import InvalidInput

    if not isinstance(mode, str) or mode not in ACK_MODES:
        raise InvalidInput(f"{where} must be one of {', '.join(ACK_MODES)}, got {mode!r}")
    return mode


def describe_failure(exc: BaseException) -> str:
    """The reason a ``rejected`` ACK carries for ``exc``: its type and message, no traceback,
    bounded printable text (see :func:`gilmsg.core.wire.bound_reason`)."""
    text = wire.bound_reason(exc)
    name = type(exc).__name__
    return wire.bound_reason(f"{name}: {text}" if text else name)


class Settled:
    """A bounded memory of the settled messages (digest -> status, reason), so that a copy
    arriving after settlement is answered with the settlement rather than ``received``."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._answers: OrderedDict[str, tuple[str, str | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def remember(self, digest: str, status: str, reason: str | None) -> None:
        """Record how the message with ``digest`` was settled (the first settlement stands)."""
        if digest in self._answers:
            return
        self._answers[digest] = (status, reason)
        if len(self._answers) > self.capacity:
            self._answers.popitem(last=False)

    def answer(self, digest: str | None) -> tuple[str, str | None]:
        """The ACK status and reason for a copy of ``digest``: its settlement, else received."""
        if digest is None:
            return "received", None
        return self._answers.get(digest, ("received", None))
