"""``gilmsg.publish``: fedmsg's publish, plus required recipients and their signed ACKs.

:func:`publish_async` starts a delivery and returns its :class:`PendingDelivery` at once;
:func:`publish` waits on it. Signing and the transport are imported on first use.
"""

from __future__ import annotations

import copy
import functools
import sys
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

from gilmsg import config as gconfig
from gilmsg import groups
from gilmsg.core import wire
from gilmsg.core.delivery import Answer, Delivery, Report, State
from gilmsg.errors import GilmsgError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from gilmsg.link import Link

#: Seconds a publish with recipients waits for every ACK unless told otherwise.
DEFAULT_ACK_TIMEOUT = 5.0

#: How long past its deadline a caller waits for the link thread before calling it broken.
LINK_GRACE = 5.0


def calling_module() -> str:
    """The top-level package of the code that called gilmsg, as fedmsg guesses ``modname``.

    Walks frames directly: fedmsg's own guess uses ``inspect.stack()``, which reads source files
    and costs about 0.3 ms per call.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        top = str(frame.f_globals.get("__name__", "")).split(".")[0]
        if top not in ("gilmsg", "fedmsg"):
            return top
        frame = frame.f_back
    return "gilmsg"


class PendingDelivery:
    """A message on its way to its required recipients: its msg_id now, its result later.

    Attributes:
        msg_id: the message's id (every re-send carries it).
        topic: its full topic.
        future: a :class:`concurrent.futures.Future` resolved with the :class:`Report`, or
            with :class:`~gilmsg.Timeout` as its exception; cancelled by :meth:`cancel`.
    """

    def __init__(self, link: Link, delivery: Delivery,
                 future: Future) -> None:
        self._link = link
        self._delivery = delivery
        self.msg_id = delivery.msg_id
        self.topic = delivery.topic
        self.recipients = delivery.recipients
        self.future = future

    @classmethod
    def plain(cls, link: Link, envelope: dict[str, Any], started: float) -> PendingDelivery:
        """The handle of a plain publish: sent, nobody to wait for, its result None."""
        delivery = Delivery(envelope["msg_id"], "", envelope["topic"], (), started, started,
                            sends=1, state=State.ACKED)
        from concurrent.futures import Future

        future: Future = Future()
        future.set_result(None)
        return cls(link, delivery, future)

    def result(self) -> Report | None:
        """Wait until every recipient acknowledged, or ``ack_timeout`` passed since the call.

        None at once for a plain publish (no recipients).

        Raises:
            Timeout: not every recipient acknowledged in time.
            GilmsgError: the CA or CRL became unusable, or the link failed.
            concurrent.futures.CancelledError: :meth:`cancel` was called.
        """
        from concurrent.futures import TimeoutError as NotResolved

        wait = max(self._delivery.deadline - time.monotonic(), 0.0) + LINK_GRACE
        try:
            return self.future.result(wait)
        except NotResolved:
            self.cancel()
            raise GilmsgError(f"gilmsg link did not resolve {self.msg_id} in time") from None

    def cancel(self) -> None:
        """Stop waiting and re-sending (a no-op once resolved); :attr:`acked` stays readable."""
        if self.recipients:
            self._link.cancel(self.msg_id)

    def _cancelled_by_caller(self, future: Future) -> None:
        # future.cancel() by the caller: the link must stop re-sending and forget it too.
        if future.cancelled() and self._link.snapshot(self._delivery).state is State.PENDING:
            self._link.cancel(self.msg_id)

    def _now(self) -> Delivery:
        if not self.recipients:
            return self._delivery
        return self._link.snapshot(self._delivery)

    @property
    def state(self) -> State:
        """Pending, acked, expired, cancelled or failed."""
        return self._now().state

    @property
    def acked(self) -> dict[str, float]:
        """Recipient -> seconds after the call when its ACK arrived, so far."""
        return self._now().acks

    @property
    def missing(self) -> tuple[str, ...]:
        """Recipients that have not acknowledged (yet), in the order they were named."""
        return self._now().missing

    @property
    def sends(self) -> int:
        """How many times the message was sent so far."""
        return self._now().sends

    @property
    def answers(self) -> dict[str, Answer]:
        """Recipient -> its :class:`~gilmsg.core.delivery.Answer` so far (status, time,
        reason)."""
        return self._now().answers()


def publish_async(
    topic: str | None = None,
    msg: Any = None,
    modname: str | None = None,
    recipients: Iterable[str] | str | None = None,
    ack_timeout: float = DEFAULT_ACK_TIMEOUT,
    pre_fire_hook: Callable[[dict], None] | None = None,
    require: str = "received",
    **config: Any,
) -> PendingDelivery:
    """:func:`publish` without the wait: returns the :class:`PendingDelivery` once it is sent.

    Its ``msg_id`` is known at once; ``result()`` waits as :func:`publish` does, and its
    ``future`` (a :class:`concurrent.futures.Future`) resolves to the :class:`Report` or
    fails with :class:`~gilmsg.Timeout` / :class:`~gilmsg.Rejected`. Any number may be in flight
    at once: they share this process's one listener and one timer (the link's thread), and each
    is forgotten when it resolves, so memory is bounded by the publishes of the last
    ``ack_timeout`` seconds. Cancelling the future (or :meth:`PendingDelivery.cancel`) stops the
    re-sending. Without ``recipients`` the message is sent as :func:`publish` sends it and the
    handle's result is None. Raises what :func:`publish` raises before anything is sent.
    """
    return _start(time.monotonic(), topic, msg, modname or calling_module(), recipients,
                  ack_timeout, pre_fire_hook, config, require)


def _start(started: float, topic: str | None, msg: Any, modname: str,
           recipients: Iterable[str] | str | None, ack_timeout: float,
           pre_fire_hook: Callable[[dict], None] | None,
           config: dict[str, Any], require: str = "received") -> PendingDelivery:
    from gilmsg.link import link_for

    require = wire.check_require(require)
    cfg = gconfig.load(config)
    if recipients is not None:
        recipients = wire.check_recipients(groups.resolve(recipients, cfg))
        ack_timeout = wire.check_timeout(ack_timeout)
    body = wire.to_json_value(msg if msg is not None else {})
    full_topic = gconfig.full_topic(cfg, topic, modname)

    # The endpoint first: recipients (re)connect to it while the keys and the CA are loaded.
    link = link_for(cfg)
    if recipients is not None:
        link.listen_now()
    from gilmsg.crypto import signing  # cryptography: the slowest import of a first publish

    signer = signing.signer_for(cfg) if (recipients or cfg.get("sign_messages")) else None
    validator = None
    if recipients is not None:
        validator = signing.validator_for(cfg)
        validator.check()

    envelope = wire.new_envelope(full_topic, body, link.next_i(), recipients)
    digest = None
    if signer is not None:
        envelope, digest = signer.sign_digest(envelope, gconfig.signature_hash(cfg))
    frames = wire.encode(full_topic, envelope)
    if pre_fire_hook is not None:
        pre_fire_hook(copy.deepcopy(envelope))  # what it changes would break the signature

    if recipients is None:
        link.send_plain(frames, float(cfg.get("post_init_sleep", 0.5) or 0))
        return PendingDelivery.plain(link, envelope, started)

    assert validator is not None
    delivery = Delivery(
        msg_id=envelope["msg_id"],
        digest=digest or wire.digest(envelope),
        topic=full_topic,
        recipients=recipients,
        started=started,
        deadline=started + ack_timeout,
        require=require,
    )
    verify = functools.partial(validator.validate, accept_sha1=gconfig.accept_sha1(cfg))
    pending = PendingDelivery(link, delivery, link.start(delivery, frames, verify))
    pending.future.add_done_callback(pending._cancelled_by_caller)
    return pending


def publish(
    topic: str | None = None,
    msg: Any = None,
    modname: str | None = None,
    recipients: Iterable[str] | str | None = None,
    ack_timeout: float = DEFAULT_ACK_TIMEOUT,
    pre_fire_hook: Callable[[dict], None] | None = None,
    require: str = "received",
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
    wait: the first publish of a process returns as soon as the ACKs arrive. An interruption
    (KeyboardInterrupt ...) stops the re-sending; use :func:`publish_async` to read what had
    arrived by then.

    ``require`` says which ACK counts: ``"received"`` (the default: the recipient got the
    message; a ``processed`` ACK counts too) or ``"processed"`` (its application handled it;
    see ``GilmsgConsumer.gilmsg_ack_mode`` and ``tail_messages(ack_mode=...)``). Whatever is
    required, a recipient that answers ``rejected`` ends the publish at once with
    :class:`~gilmsg.Rejected`.

    Returns:
        A :class:`~gilmsg.Report` (msg_id, per-recipient ACK times and answers) with recipients,
        else None.

    Raises:
        InvalidInput: bad recipients (a list of names, not a string), ``ack_timeout`` or
            ``require``, a message
            that is not JSON or encodes to more than 1 MiB, a topic that is not text; nothing
            sent.
        ConfigError: no name, endpoint, certnames entry or CA for this process; nothing sent.
        CertificateError: a key, certificate, CA or CRL is unusable; nothing sent.
        Timeout: ``ack_timeout`` seconds passed since the call without every ACK; it names the
            recipients that acknowledged and those that did not, and each one's answer.
        Rejected: a recipient answered ``rejected`` (with its reason); raised as soon as it
            does. ``Timeout`` and ``Rejected`` are both :class:`~gilmsg.NotDelivered`.
    """
    pending = _start(time.monotonic(), topic, msg, modname or calling_module(), recipients,
                     ack_timeout, pre_fire_hook, config, require)
    return wait(pending)


def wait(pending: PendingDelivery) -> Report | None:
    """``pending.result()``; an interruption (Ctrl-C) cancels the delivery on its way out."""
    try:
        return pending.result()
    except BaseException:
        pending.cancel()  # a no-op once resolved: stop re-sending a message nobody waits for
        raise


def someone_listens(config: dict[str, Any], topic: str, timeout: float) -> tuple[bool, str | None]:
    """Wait up to ``timeout`` s for a subscriber to ``topic`` on this identity's endpoint.

    Returns whether one came, and the endpoint (for messages). A plain publish made while
    nobody subscribes reaches no one (with ``active``: no relay is connected).

    Raises:
        ConfigError: as :func:`publish`, for the identity and its endpoint.
    """
    from gilmsg.link import link_for

    link = link_for(config)
    return link.wait_subscriber(topic, timeout), link.address
