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

import functools
import itertools
import logging
import shlex
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gilmsg import config as gconfig
from gilmsg import groups
from gilmsg.config import registry
from gilmsg.core import wire
from gilmsg.core.delivery import Delivery, Report
from gilmsg.errors import (
    ConfigError,
    GilmsgError,
    InvalidInput,
    OutboxError,
    Rejected,
    Timeout,
)
from gilmsg.outbox import policy
from gilmsg.outbox.store import OutboxStore, is_url, open_store
from gilmsg.publish import DEFAULT_ACK_TIMEOUT, PendingDelivery, calling_module

log = logging.getLogger("gilmsg.outbox")

#: fedmsg.d key: the outbox of this process, an SQLite file or a ``postgresql://`` URL
#: (``Outbox()``, gilmsg-logger, the hub plugin).
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
        raise ConfigError(f"no outbox: pass a path or postgresql:// URL, or set the config key "
                          f"{PATH_KEY!r}")
    expiry = expiry if expiry is not None else registry.get(config, EXPIRY_KEY)
    try:
        expiry = policy.check_expiry(expiry)
    except ValueError as exc:
        raise ConfigError(f"{EXPIRY_KEY}: {exc}") from None
    durability = durability if durability is not None else registry.get(config, DURABILITY_KEY)
    if durability not in ("full", "normal"):
        raise ConfigError(f"{DURABILITY_KEY} must be 'full' or 'normal', not {durability!r}")
    return str(path), expiry, durability


#: Keywords of :func:`gilmsg.publish` that a durable publish does not support: passed to
#: :meth:`Outbox.publish` they are an InvalidInput, never taken for config keys.
UNSUPPORTED_KEYWORDS = frozenset({"pre_fire_hook"})


class Outbox:
    """A durable outbox for this process's publishes.

    Args:
        path: the SQLite file (created if missing), or a ``postgresql://user@host:port/dbname``
            URL (see :mod:`gilmsg.outbox.postgres`); default: the config key ``gilmsg.outbox``.
        expiry: seconds a message is retried before being marked expired (never deleted);
            default: ``gilmsg.outbox.expiry``, else three days.
        durability: ``"full"`` (default: fsync per commit, survives power loss) or
            ``"normal"`` (survives a crash of the process only; PostgreSQL: of the publisher,
            not of the server).
        config: fedmsg configuration overrides, as for :func:`gilmsg.publish`.

    Raises:
        ConfigError: no path, bad expiry or durability.
        OutboxError: the file is corrupt, read-only, unwritable or of a newer schema; the
            server is unreachable, refuses the credentials, is read-only, is not gilmsg's.
    """

    def __init__(self, path: Any = None, *, expiry: float | None = None,
                 durability: str | None = None, **config: Any) -> None:
        self.config = gconfig.load(config)
        self.path, self.expiry, durability = settings(self.config, path, expiry, durability)
        self.require = required_status(self.config)
        if self.expiry > gconfig.max_message_age(self.config):  # see docs/protocol.rst
            log.warning("outbox %s: expiry %gs exceeds %s (%gs): recipients with that setting "
                        "will reject late attempts as stale", self.path, self.expiry,
                        gconfig.MAX_MESSAGE_AGE_KEY, gconfig.max_message_age(self.config))
        self.store: OutboxStore = open_store(self.path, durability=durability)
        if is_url(self.path):
            self.path = self.store.path  # never the password
        self._runner: Any = None
        self._runner_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._unsettled: weakref.WeakSet[DurableDelivery] = weakref.WeakSet()
        self._i = itertools.count(1)
        self._runner_checked = False  # warned (or not) about a missing runner

    # -- publishing --------------------------------------------------------------------------

    def publish(self, topic: str | None = None, msg: Any = None, modname: str | None = None,
                recipients: Iterable[str] | str | None = None,
                ack_timeout: float = DEFAULT_ACK_TIMEOUT, require: str | None = None,
                connection: Any = None, **config: Any) -> Report | Enqueued:
        """Store, then publish and wait as :func:`gilmsg.publish` does.

        Returns the :class:`Report` once every recipient acknowledged (recorded in the outbox)
        at the level ``require`` says (``"received"`` or ``"processed"``, as for
        :func:`gilmsg.publish`; unset: the config key ``gilmsg.outbox.require``, default
        ``"received"``; kept with the message, so a runner's later attempts wait for
        the same level). A recipient that answers ``rejected`` raises
        :class:`~gilmsg.Rejected`; it is recorded with its reason and owed nothing more.

        With ``connection`` (a PostgreSQL outbox only): the caller's own psycopg 3 connection
        to the outbox's database. The message is signed and written **in the caller's open
        transaction** and nothing is sent now; returns the :class:`Enqueued` (its msg_id). It
        is stored when the caller commits (and then sent by a runner, which only ever sees
        committed rows), and it vanishes if the caller rolls back. See docs/outbox.rst.

        Raises:
            Timeout: not every ACK within ``ack_timeout``. The message **is stored** and stays
                owed to ``missing``: a runner keeps delivering it.
            OutboxError: it could not be stored; nothing was sent.
            InvalidInput, ConfigError, CertificateError: as :func:`gilmsg.publish` (and for a
                keyword of :func:`gilmsg.publish` the outbox does not support, such as
                ``pre_fire_hook``); nothing stored or sent.
        """
        if connection is not None:
            return self.publish_in(connection, [(topic, msg)], modname or calling_module(),
                                   recipients, require=require, **config)[0]
        pending = self.publish_many([(topic, msg)], modname or calling_module(), recipients,
                                    ack_timeout, require=require, **config)[0]
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
                      ack_timeout: float = DEFAULT_ACK_TIMEOUT, require: str | None = None,
                      **config: Any) -> DurableDelivery:
        """Store, then send; returns the :class:`DurableDelivery` (a PendingDelivery)."""
        return self.publish_many([(topic, msg)], modname or calling_module(), recipients,
                                 ack_timeout, require=require, **config)[0]

    def publish_many(self, items: Sequence[tuple[str | None, Any]], modname: str | None = None,
                     recipients: Iterable[str] | str | None = None,
                     ack_timeout: float = DEFAULT_ACK_TIMEOUT, require: str | None = None,
                     **config: Any) -> list[DurableDelivery]:
        """Store every ``(topic, msg)`` in **one commit**, then send each; their deliveries.

        The grouped commit is what makes many durable messages per second possible: one fsync
        for the lot. Either all are stored (and then sent) or, on OutboxError, none.
        """
        from gilmsg.crypto import signing
        from gilmsg.link import link_for

        unsupported = sorted(set(config) & UNSUPPORTED_KEYWORDS)
        if unsupported:
            raise InvalidInput(f"Outbox.publish does not support {', '.join(unsupported)} "
                               "(the outbox stores and re-sends the signed bytes as they are)")
        require = self.require if require is None else wire.check_require(require)
        cfg = {**self.config, **config} if config else self.config
        names = self._recipients(recipients, cfg)
        ack_timeout = wire.check_timeout(ack_timeout)
        modname = modname or calling_module()
        link = link_for(cfg)
        link.listen_now()
        validator = signing.validator_for(cfg)
        validator.check()
        verify = functools.partial(validator.validate, accept_sha1=gconfig.accept_sha1(cfg))
        prepared = self._prepare(items, modname, names, cfg, link.next_i)
        wall = time.time()
        self.store.put(prepared, wall, self.expiry, lease=ack_timeout + policy.LEASE_GRACE,
                       require=require)
        if not self._runner_checked:
            self._runner_checked = True
            warn_if_no_runner(self.store, wall)
        # ACK times are recorded as wall + (monotonic offset from ``started``): take both clocks
        # together, after the commit, or every ACK is recorded that commit's duration early.
        started, wall = time.monotonic(), time.time()
        out = []
        for msg_id, digest, frames, _names in prepared:
            delivery = Delivery(msg_id, digest, frames[0].decode("utf-8"), names, started,
                                started + ack_timeout, require=require)
            future = link.start(delivery, frames, verify)
            pending = DurableDelivery(link, delivery, future, self.store, wall)
            if not pending.settled.is_set():
                self._unsettled.add(pending)
            out.append(pending)
        return out

    @staticmethod
    def _recipients(recipients: Iterable[str] | str | None,
                    cfg: dict[str, Any]) -> tuple[str, ...]:
        if recipients is None:
            raise InvalidInput("a durable publish needs recipients: the outbox keeps a message "
                               "until each has acknowledged it")
        return wire.check_recipients(groups.resolve(recipients, cfg))

    @staticmethod
    def _prepare(items: Sequence[tuple[str | None, Any]], modname: str, names: tuple[str, ...],
                 cfg: dict[str, Any], next_i: Any
                 ) -> list[tuple[str, str, list[bytes], tuple[str, ...]]]:
        from gilmsg.crypto import signing

        signer = signing.signer_for(cfg)
        prepared = []
        for topic, msg in items:
            body = wire.to_json_value(msg if msg is not None else {})
            full_topic = gconfig.full_topic(cfg, topic, modname)
            envelope = signer.sign(wire.new_envelope(full_topic, body, next_i(), names),
                                   gconfig.signature_hash(cfg))
            prepared.append((envelope["msg_id"], wire.digest(envelope),
                             wire.encode(full_topic, envelope), names))
        return prepared

    def publish_in(self, connection: Any, items: Sequence[tuple[str | None, Any]],
                   modname: str | None = None,
                   recipients: Iterable[str] | str | None = None,
                   require: str | None = None, **config: Any) -> list[Enqueued]:
        """Write every ``(topic, msg)`` in the caller's open transaction on ``connection``,
        requiring ``require`` of each recipient (as :meth:`publish`; kept with the message).

        The transactional outbox (PostgreSQL only): nothing is sent here. The messages are
        stored if and when the caller commits, and a runner (:meth:`start_runner`, the hub
        plugin, ``gilmsg-outbox run``: woken by the commit's ``NOTIFY``) delivers them; a
        rollback leaves nothing. The inserts run in a savepoint, so a failure here leaves the
        caller's transaction as it was.

        Raises:
            InvalidInput: not a PostgreSQL outbox, no recipients, a bad connection (autocommit
                outside a transaction, failed transaction, another database).
            OutboxError: the inserts failed; nothing of them will be committed.
            ConfigError, CertificateError: as :func:`gilmsg.publish`.
        """
        put_in = getattr(self.store, "put_in", None)
        if put_in is None:
            raise InvalidInput("publish(connection=...) needs a postgresql:// outbox (the "
                               "message is written in that database's transaction); this "
                               f"outbox is the SQLite file {self.path}")
        require = self.require if require is None else wire.check_require(require)
        cfg = {**self.config, **config} if config else self.config
        names = self._recipients(recipients, cfg)
        # Nothing is sent from here, so no endpoint is bound: fedmsg's counter ``i`` is this
        # outbox's own.
        prepared = self._prepare(items, modname or calling_module(), names, cfg,
                                 lambda: next(self._i))
        put_in(connection, prepared, time.time(), self.expiry, require)
        return [Enqueued(msg_id, frames[0].decode("utf-8"), tuple(names))
                for msg_id, _digest, frames, _names in prepared]

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


@dataclass(frozen=True)
class Enqueued:
    """A message written in the caller's transaction (``publish(connection=...)``).

    It is stored only once that transaction commits; then a runner delivers it. Follow it with
    ``gilmsg-outbox show MSG_ID`` or ``outbox.store.get(msg_id)``.
    """

    msg_id: str
    topic: str
    recipients: tuple[str, ...]
#: A runner counts as active if it recorded activity this recently (it does every 10 s).
RUNNER_RECENT = 60.0


def warn_if_no_runner(store: Any, now: float) -> bool:
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

    def __init__(self, link: Any, delivery: Delivery, future: Any, store: OutboxStore,
                 wall_started: float) -> None:
        super().__init__(link, delivery, future)
        self._store = store
        self._wall = wall_started
        self.settled = threading.Event()
        future.add_done_callback(self._settle)

    def _settle(self, future: Any) -> None:
        try:
            error: str | None = None
            rejected: dict[str, str] = {}
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
                elif isinstance(exc, Rejected):  # recorded: no redelivery to who rejected it
                    acks, error, rejected = exc.acked, str(exc), dict(exc.rejected)
                else:
                    acks, error = self.acked, str(exc)
            self._store.finish_attempt(self.msg_id, {who: self._wall + at
                                                     for who, at in acks.items()},
                                       error, time.time(), rejected)
        except (OutboxError, GilmsgError) as exc:  # the ACKs are re-collected on a re-send
            log.error("outbox: could not record the outcome of %s: %s", self.msg_id, exc)
        except Exception:
            log.exception("outbox: could not record the outcome of %s", self.msg_id)
        finally:
            self.settled.set()
