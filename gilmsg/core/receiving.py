"""The recipient's side of the protocol: what to do with one received envelope.

Pure: the caller checks the signature first (a message that fails is dropped before this), sends
the ACK this asks for, and asks its :class:`~gilmsg.core.delivery.Seen` whether the
deduplication key is new. See "Recipient" in ``docs/protocol.rst``.
"""

from __future__ import annotations

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
            common_name: str | None) -> Receipt:
    """Decide for ``envelope`` received on ``topic`` by the holder of ``common_name``.

    ``common_name`` None: this receiver sends no ACKs (it only watches).
    """
    if topic == ack_topic or not wire.is_gilmsg(envelope):
        return Receipt(False, None, False, None)
    msg_id = envelope.get("msg_id")
    if not isinstance(msg_id, str) or not msg_id:  # possible only unvalidated: fedmsg signs it
        return Receipt(True, None, False, None)
    digest = wire.digest(envelope)
    acknowledge = common_name is not None and wire.wants_ack_from(envelope, common_name)
    return Receipt(False, digest, acknowledge, digest)
