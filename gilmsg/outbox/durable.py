"""``gilmsg.Outbox``: a publish that is committed to disk before it is sent, and kept until ACKed.

A durable publish signs the message as :func:`gilmsg.publish` does, **commits** it (its bytes,
msg_id, digest and recipients) to the outbox file, and only then sends it through the identity's
:class:`~gilmsg.link.Link`, whose :class:`~gilmsg.publish.PendingDelivery` the caller gets. The
caller waits as with ``publish`` (same :class:`~gilmsg.Report` / :class:`~gilmsg.Timeout`); ACKs
are recorded as they resolve. A ``Timeout`` ends the caller's wait, not the delivery: the
message stays owed to the recipients in ``missing`` and a runner (:meth:`Outbox.start_runner`
in this process, the ``fedmsg-hub`` plugin, or ``gilmsg-outbox run``) keeps sending it until
each has acknowledged, or it expires.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from gilmsg import config as gconfig
from gilmsg import groups
from gilmsg.config import registry
from gilmsg.core import wire
from gilmsg.core.delivery import Delivery, Report
from gilmsg.errors import ConfigError, GilmsgError, InvalidInput, OutboxError, Timeout
from gilmsg.outbox import policy
from gilmsg.outbox.store import Store
from gilmsg.publish import DEFAULT_ACK_TIMEOUT, PendingDelivery, calling_module

log = logging.getLogger("gilmsg.outbox")

#: fedmsg.d key: the outbox file of this process (``Outbox()``, gilmsg-logger, the hub plugin).
PATH_KEY = "gilmsg.outbox"
#: fedmsg.d key: seconds a message is retried before it is marked expired (default 3 days).
EXPIRY_KEY = "gilmsg.outbox.expiry"
#: fedmsg.d key: ``"full"`` (fsync every commit; default) or ``"normal"`` (see Store).
DURABILITY_KEY = "gilmsg.outbox.durability"
#: fedmsg.d key: the ACK status that settles a recipient, ``"received"`` (default) or
#: ``"processed"``; read by ``Outbox`` and by every runner of the file.
REQUIRE_KEY = "gilmsg.outbox.require"


def required_status(config: dict[str, Any] | Any) -> str:
    """The ``gilmsg.outbox.require`` level of ``config`` (default ``"received"``).

    Raises:
        ConfigError: it is neither ``"received"`` nor ``"processed"``.
    """
    value = config.get(REQUIRE_KEY, "received")
    try:
        return wire.check_require(value)
    except InvalidInput:
        raise ConfigError(f"{REQUIRE_KEY} must be 'received' or 'processed', not {value!r}"
                          ) from None


def settings(config: dict[str, Any], path: Any = None, expiry: Any = None,
             durability: Any = None) -> tuple[str, float, str]:
    """The outbox path, expiry and durability: arguments first, then the fedmsg.d keys.

    Raises:
        ConfigError: no path anywhere, or a bad expiry or durability value.
    """
    path = path if path is not None else config.get(PATH_KEY)
    if not path:
        raise ConfigError(f"no outbox file: pass a path or set the config key {PATH_KEY!r}")
    expiry = expiry if expiry is not None else registry.get(config, EXPIRY_KEY)
    try:
        expiry = policy.check_expiry(expiry)
    except ValueError as exc:
        raise ConfigError(f"{EXPIRY_KEY}: {exc}") from None
    durability = durability if durability is not None else registry.get(config, DURABILITY_KEY)
    if durability not in ("full", "normal"):
        raise ConfigError(f"{DURABILITY_KEY} must be 'full' or 'normal', not {durability!r}")
    return str(path), expiry, durability


class Outbox:
    """A durable outbox for this process's publishes.

    Args:
        path: the SQLite file (created if missing); default: the config key ``gilmsg.outbox``.
        expiry: seconds a message is retried before being marked expired (never deleted);
            default: ``gilmsg.outbox.expiry``, else three days.
        durability: ``"full"`` (default: fsync per commit, survives power loss) or
            ``"normal"`` (survives a crash of the process only).
        config: fedmsg configuration overrides, as for :func:`gilmsg.publish`.

    Raises:
        ConfigError: no path, bad expiry or durability.
        OutboxError: the file is corrupt, read-only, unwritable or of a newer schema.
    """

    def __init__(self, path: Any = None, *, expiry: float | None = None,
                 durability: str | None = None, **config: Any) -> None:
        self.config = gconfig.load(config)
        self.path, self.expiry, durability = settings(self.config, path, expiry, durability)
        self.require = required_status(self.config)
        self.store = Store(self.path, durability=durability)
        self._runner: Any = None
        self._runner_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._unsettled: weakref.WeakSet[DurableDelivery] = weakref.WeakSet()
        self._runner_checked = False  # warned (or not) about a missing runner

    # -- publishing --------------------------------------------------------------------------

    def publish(self, topic: str | None = None, msg: Any = None, modname: str | None = None,
                recipients: Iterable[str] | str | None = None,
                ack_timeout: float = DEFAULT_ACK_TIMEOUT, **config: Any) -> Report:
        """Store, then publish and wait as :func:`gilmsg.publish` does.

        Returns the :class:`Report` once every recipient acknowledged (recorded in the outbox).

        Raises:
            Timeout: not every ACK within ``ack_timeout``. The message **is stored** and stays
                owed to ``missing``: a runner keeps delivering it.
            OutboxError: it could not be stored; nothing was sent.
            InvalidInput, ConfigError, CertificateError: as :func:`gilmsg.publish`; nothing
                stored or sent.
        """
        pending = self.publish_many([(topic, msg)], modname or calling_module(), recipients,
                                    ack_timeout, **config)[0]
        try:
            # On success the ACKs are being recorded in the link's thread meanwhile (close()
            # and the exit wait for that); a record lost to a SIGKILL costs only a re-send.
            return pending.result()  # type: ignore[return-value]
        except BaseException:
            pending.cancel()
            pending.settled.wait(5.0)  # the caller sees the message owed, with its backoff
            raise

    def publish_async(self, topic: str | None = None, msg: Any = None,
                      modname: str | None = None,
                      recipients: Iterable[str] | str | None = None,
                      ack_timeout: float = DEFAULT_ACK_TIMEOUT,
                      **config: Any) -> DurableDelivery:
        """Store, then send; returns the :class:`DurableDelivery` (a PendingDelivery)."""
        return self.publish_many([(topic, msg)], modname or calling_module(), recipients,
                                 ack_timeout, **config)[0]

    def publish_many(self, items: Sequence[tuple[str | None, Any]], modname: str | None = None,
                     recipients: Iterable[str] | str | None = None,
                     ack_timeout: float = DEFAULT_ACK_TIMEOUT,
                     **config: Any) -> list[DurableDelivery]:
        """Store every ``(topic, msg)`` in **one commit**, then send each; their deliveries.

        The grouped commit is what makes many durable messages per second possible: one fsync
        for the lot. Either all are stored (and then sent) or, on OutboxError, none.
        """
        from gilmsg.link import link_for

        cfg = {**self.config, **config} if config else self.config
        if recipients is None:
            raise InvalidInput("a durable publish needs recipients: the outbox keeps a message "
                               "until each has acknowledged it")
        names = wire.check_recipients(groups.resolve(recipients, cfg))
        ack_timeout = wire.check_timeout(ack_timeout)
        modname = modname or calling_module()
        link = link_for(cfg)
        link.listen_now()
        from gilmsg.crypto import signing

        signer = signing.signer_for(cfg)
        validator = signing.validator_for(cfg)
        validator.check()
        prepared = []
        for topic, msg in items:
            body = wire.to_json_value(msg if msg is not None else {})
            full_topic = gconfig.full_topic(cfg, topic, modname)
            envelope = signer.sign(wire.new_envelope(full_topic, body, link.next_i(), names))
            prepared.append((envelope["msg_id"], wire.digest(envelope),
                             wire.encode(full_topic, envelope), names))
        wall = time.time()
        self.store.put(prepared, wall, self.expiry, lease=ack_timeout + policy.LEASE_GRACE)
        if not self._runner_checked:
            self._runner_checked = True
            warn_if_no_runner(self.store, wall)
        # ACK times are recorded as wall + (monotonic offset from ``started``): take both clocks
        # together, after the commit, or every ACK is recorded that commit's duration early.
        started, wall = time.monotonic(), time.time()
        out = []
        for msg_id, digest, frames, _names in prepared:
            delivery = Delivery(msg_id, digest, frames[0].decode("utf-8"), names, started,
                                started + ack_timeout, require=self.require)
            future = link.start(delivery, frames, validator.validate)
            pending = DurableDelivery(link, delivery, future, self.store, wall)
            if not pending.settled.is_set():
                self._unsettled.add(pending)
            out.append(pending)
        return out

    # -- redelivery in this process ----------------------------------------------------------

    def start_runner(self, window: float = policy.ATTEMPT_WINDOW) -> None:
        """Keep delivering what this outbox owes from a background thread of this process.

        Idempotent. Other processes (a hub plugin, ``gilmsg-outbox run``) may run too.
        """
        if self._runner_thread is not None and self._runner_thread.is_alive():
            return
        from gilmsg.outbox.runner import Runner

        self._runner = Runner(self.store, self.config, window=window)
        self.store.runner_seen(time.time())  # active from now: no warning on the next publish
        self._stop.clear()
        self._runner_thread = threading.Thread(target=self._runner.run, args=(self._stop,),
                                               name="gilmsg-outbox-runner", daemon=True)
        self._runner_thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the runner thread (if any), let resolved deliveries be recorded, close the file.

        Deliveries still waiting for ACKs are left to a runner (their leases run out).
        """
        self._stop.set()
        if self._runner_thread is not None:
            self._runner_thread.join(timeout)
        for pending in list(self._unsettled):
            if pending.future.done():
                pending.settled.wait(timeout)
        self.store.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: A runner counts as active if it recorded activity this recently (it does every 10 s).
RUNNER_RECENT = 60.0


def warn_if_no_runner(store: Store, now: float) -> bool:
    """Log one WARNING, with the command to run, if no runner was active on ``store`` within
    :data:`RUNNER_RECENT` seconds (then nothing re-sends what stays owed); True if it warned."""
    try:
        last = store.last_runner()
    except GilmsgError:
        return False
    if last is not None and now - last[0] <= RUNNER_RECENT:
        return False
    seen = "never" if last is None else f"last {now - last[0]:.0f}s ago"
    log.warning("no outbox runner is active on %s (%s): what stays owed is not re-sent until "
                "one runs: gilmsg-outbox --outbox %s run (or the fedmsg-hub plugin: "
                "gilmsg.outbox.runner = True)", store.path, seen, shlex.quote(store.path))
    return True


class DurableDelivery(PendingDelivery):
    """A :class:`PendingDelivery` whose ACKs are recorded in the outbox as it resolves.

    Attributes:
        settled: set once the outcome (ACKs, or the attempt's end) is written to the outbox.
        stored: always True: it exists only once the message is committed.
    """

    stored = True

    def __init__(self, link: Any, delivery: Delivery, future: Any, store: Store,
                 wall_started: float) -> None:
        super().__init__(link, delivery, future)
        self._store = store
        self._wall = wall_started
        self.settled = threading.Event()
        future.add_done_callback(self._settle)

    def _settle(self, future: Any) -> None:
        try:
            error: str | None = None
            if future.cancelled():
                acks, error = self.acked, "cancelled by the publisher"
            else:
                exc = future.exception()
                if exc is None:  # every ACK: one short write, no fsync
                    self._store.delivered(self.msg_id, {who: self._wall + at for who, at
                                                        in future.result().acks.items()})
                    return
                if isinstance(exc, Timeout):
                    acks, error = exc.acked, str(exc)
                else:
                    acks, error = self.acked, str(exc)
            self._store.finish_attempt(self.msg_id, {who: self._wall + at
                                                     for who, at in acks.items()},
                                       error, time.time())
        except (OutboxError, GilmsgError) as exc:  # the ACKs are re-collected on a re-send
            log.error("outbox: could not record the outcome of %s: %s", self.msg_id, exc)
        except Exception:
            log.exception("outbox: could not record the outcome of %s", self.msg_id)
        finally:
            self.settled.set()
