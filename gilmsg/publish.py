"""``gilmsg.publish``: fedmsg's publish, plus required recipients and their signed ACKs."""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from gilmsg import config as gconfig
from gilmsg import groups, message, signing, transport
from gilmsg.delivery import Delivery, Report

#: Seconds a publish with recipients waits for every ACK unless told otherwise.
DEFAULT_ACK_TIMEOUT = 5.0

_first_plain_publish: set[int] = set()  # ids of links that already waited post_init_sleep


def calling_module() -> str:
    """The top-level package of the code that called gilmsg, as fedmsg guesses ``modname``.

    Walks frames directly: fedmsg's own guess uses ``inspect.stack()``, which reads source files
    and costs about 0.3 ms per call.
    """
    frame = sys._getframe(1)
    while frame is not None:
        top = str(frame.f_globals.get("__name__", "")).split(".")[0]
        if top not in ("gilmsg", "fedmsg"):
            return top
        frame = frame.f_back
    return "gilmsg"


def publish(
    topic: str | None = None,
    msg: Any = None,
    modname: str | None = None,
    recipients: Iterable[str] | str | None = None,
    ack_timeout: float = DEFAULT_ACK_TIMEOUT,
    pre_fire_hook: Callable[[dict], None] | None = None,
    **config: Any,
) -> Report | None:
    """Publish ``msg`` on ``topic``; with ``recipients``, return only once each acknowledged.

    Arguments are those of :func:`fedmsg.publish`; ``**config`` overrides the fedmsg
    configuration files (it is read, never modified, and may be passed to many calls).

    Without ``recipients`` this is a plain fedmsg publish: fire-and-forget, signed when
    ``sign_messages`` is true, returns None. Like fedmsg, the first such publish of a process
    waits ``post_init_sleep`` so that subscribers can connect.

    With ``recipients`` (certificate Common Names, or ``@group`` for the members of a group of
    the config key ``gilmsg.recipients``, see :mod:`gilmsg.groups`), the message carries them
    and is re-sent until
    every one of them has sent back a valid signed ACK for this very message. There is no fixed
    wait: the first publish of a process returns as soon as the ACKs arrive.

    Returns:
        A :class:`~gilmsg.Report` (msg_id, per-recipient ACK times) with recipients, else None.

    Raises:
        InvalidInput: bad recipients (a list of names, not a string) or ``ack_timeout``, a message
            that is not JSON or encodes to more than 1 MiB, a topic that is not text; nothing
            sent.
        ConfigError: no name, endpoint, certnames entry or CA for this process; nothing sent.
        CertificateError: a key, certificate, CA or CRL is unusable; nothing sent.
        Timeout: ``ack_timeout`` seconds passed since the call without every ACK; it names the
            recipients that acknowledged and those that did not.
    """
    started = time.monotonic()
    cfg = gconfig.load(config)
    if recipients is not None:
        recipients = message.check_recipients(groups.resolve(recipients, cfg))
        ack_timeout = message.check_timeout(ack_timeout)
    body = message.to_json_value(msg if msg is not None else {})
    modname = modname or calling_module()
    full_topic = gconfig.full_topic(cfg, topic, modname)

    signer = signing.signer_for(cfg) if (recipients or cfg.get("sign_messages")) else None
    validator = None
    if recipients is not None:
        validator = signing.validator_for(cfg)
        validator.check()
    link = transport.link_for(cfg)

    envelope = message.new_envelope(full_topic, body, link.next_i(), recipients)
    if signer is not None:
        envelope = signer.sign(envelope)
    frames = message.encode(full_topic, envelope)
    if pre_fire_hook is not None:
        pre_fire_hook(copy.deepcopy(envelope))  # what it changes would break the signature

    if recipients is None:
        key = id(link)
        if key not in _first_plain_publish:
            _first_plain_publish.add(key)
            time.sleep(float(cfg.get("post_init_sleep", 0.5) or 0))
        link.send(frames)
        return None

    delivery = Delivery(
        msg_id=envelope["msg_id"],
        digest=message.digest(envelope),
        topic=full_topic,
        recipients=recipients,
        started=started,
        deadline=started + ack_timeout,
    )
    return link.deliver(delivery, frames, validator.validate)
