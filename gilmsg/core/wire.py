"""The gilmsg wire format, as pure functions: no sockets, no files, no clock of its own.

Standard library only. See ``docs/protocol.rst`` for the specification these functions
implement. The canonical JSON is produced here and is byte-for-byte what
``fedmsg.encoding.dumps`` writes (``tests/unit/test_core.py`` compares them over a varied corpus).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from gilmsg.errors import InvalidInput

__all__ = [
    "ACK_STATUSES", "CREDENTIAL_FIELDS", "MAX_ACK_TIMEOUT", "MAX_FRAME_BYTES", "MIN_ACK_TIMEOUT",
    "BATCH_FIELD", "BATCH_VERSION", "MAX_BATCH", "MAX_REASON_CHARS", "PROTOCOL_VERSION",
    "RECIPIENTS_FIELD", "REQUIRE_LEVELS", "SHA256_ACK_VERSION", "VERSION_FIELD", "Ack",
    "ack_body", "ack_hash", "batch_body",
    "bound_reason", "canonical_bytes", "check_recipients", "check_require", "check_timeout",
    "decode", "digest", "dumps", "encode", "is_gilmsg", "new_envelope", "parse_ack",
    "parse_acks", "recipients_of", "satisfies", "speaks_batches", "to_json_value",
    "wants_ack_from",
]

#: Written by this version of gilmsg; 0.1.2 did not write a number receivers rely on.
#: 3: the publisher accepts batched ACKs (and counts ``processed``/``rejected``).
#: 4: ACKs for the message are signed with SHA-256 (or Ed25519), never SHA-1.
PROTOCOL_VERSION = 4

#: The first protocol version whose messages are acknowledged with SHA-256 signatures.
SHA256_ACK_VERSION = 4

#: The first protocol version whose publishers accept batched ACKs.
BATCH_VERSION = 3
VERSION_FIELD = "gilmsg_version"
RECIPIENTS_FIELD = "gilmsg_recipients"
CREDENTIAL_FIELDS = ("signature", "certificate")

#: ACK statuses: "received" on receipt (the default), "processed" once the application
#: handled the message, "rejected" (with a reason) when it failed to.
ACK_STATUSES = ("received", "processed", "rejected")

#: What a publisher may require of each recipient: ``publish(..., require=...)``.
REQUIRE_LEVELS = ("received", "processed")

#: A rejection reason longer than this is cut (with an ellipsis) before it is signed.
MAX_REASON_CHARS = 500

#: The key of a batched ACK body, and the most entries one batch carries.
BATCH_FIELD = "acks"
MAX_BATCH = 64

#: Frames larger than this are dropped unread by receivers (a message is a few KiB).
MAX_FRAME_BYTES = 1 << 20

#: Longest ``ack_timeout`` accepted, in seconds (about 31 years; a thread can wait ~9e9 s).
MAX_ACK_TIMEOUT = 1e9
#: Shortest ``ack_timeout`` accepted, in seconds: the fastest signed round trip measured on
#: loopback (bench/run_all.py's bare pyzmq floor) takes about that long.
MIN_ACK_TIMEOUT = 0.001


class _Encoder(json.JSONEncoder):
    """fedmsg's encoder: sorted keys, compact separators, ASCII escapes, and its conversions."""

    def default(self, obj: Any) -> Any:
        if hasattr(obj, "__json__"):
            return obj.__json__()
        if isinstance(obj, (datetime, date)):
            return time.mktime(obj.timetuple())  # local time, as fedmsg converts them
        if isinstance(obj, time.struct_time):
            return time.mktime(obj)
        if isinstance(obj, set):
            return list(obj)
        if "sqlalchemy" in sys.modules:  # fedmsg's last resort for SQLAlchemy models
            import fedmsg.encoding

            return json.loads(fedmsg.encoding.dumps(obj))
        return super().default(obj)


#: fedmsg's canonical JSON: what :func:`fedmsg.encoding.dumps` returns, for the same input.
dumps = _Encoder(sort_keys=True, separators=(",", ":")).encode


def canonical_bytes(envelope: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: fedmsg's canonical JSON of the envelope without credentials.

    Sorted keys, compact separators, exactly as ``fedmsg.encoding.dumps`` writes them.
    """
    stripped = {k: v for k, v in envelope.items() if k not in CREDENTIAL_FIELDS}
    return dumps(stripped).encode("utf-8")


def digest(envelope: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of :func:`canonical_bytes`: what an ACK binds itself to."""
    return hashlib.sha256(canonical_bytes(envelope)).hexdigest()


def to_json_value(msg: Any) -> Any:
    """``msg`` as plain JSON data, converted as fedmsg would (``__json__``, dates, sets).

    Raises:
        InvalidInput: ``msg`` cannot be serialised to JSON.
    """
    try:
        return json.loads(dumps(msg))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"msg is not JSON-serialisable: {exc}") from None


def check_recipients(recipients: Any) -> tuple[str, ...]:
    """Normalise a recipients argument to a tuple of distinct Common Names, order kept.

    Raises :class:`InvalidInput` for anything that is not an iterable of non-empty strings, for
    an empty list, and for a bare string (``"r1 r2"`` would silently be one name).
    """
    if isinstance(recipients, str):
        raise InvalidInput(
            f"recipients must be a list of names, not a string: use [{recipients!r}]")
    if isinstance(recipients, (bytes, Mapping)) or not isinstance(recipients, Iterable):
        raise InvalidInput(f"recipients must be a list of names, not {type(recipients).__name__}")
    out: list[str] = []
    for item in recipients:
        if not isinstance(item, str) or not item.strip():
            raise InvalidInput(f"every recipient must be a non-empty string, got {item!r}")
        if item != item.strip():
            raise InvalidInput(f"recipient {item!r} has surrounding whitespace")
        if item not in out:
            out.append(item)
    if not out:
        raise InvalidInput("recipients is empty: name at least one, or pass recipients=None")
    return tuple(out)


def check_timeout(ack_timeout: Any) -> float:
    """``ack_timeout`` as a positive finite float, or :class:`InvalidInput`."""
    if isinstance(ack_timeout, bool) or not isinstance(ack_timeout, (int, float)):
        raise InvalidInput(f"ack_timeout must be a number of seconds, got {ack_timeout!r}")
    value = float(ack_timeout)
    if not (value > 0 and value != float("inf")):
        raise InvalidInput(f"ack_timeout must be a positive number of seconds, got {ack_timeout!r}")
    if value > MAX_ACK_TIMEOUT:
        raise InvalidInput(f"ack_timeout must be at most {MAX_ACK_TIMEOUT:g} seconds, "
                           f"got {ack_timeout!r}")
    if value < MIN_ACK_TIMEOUT:
        raise InvalidInput(f"ack_timeout must be at least {MIN_ACK_TIMEOUT:g} seconds (a signed "
                           f"ACK takes about that long to come back), got {ack_timeout!r}")
    return value


def check_require(require: Any) -> str:
    """``require`` as one of :data:`REQUIRE_LEVELS`, or :class:`InvalidInput`."""
    if not isinstance(require, str) or require not in REQUIRE_LEVELS:
        raise InvalidInput(f"require must be one of {', '.join(REQUIRE_LEVELS)}, got {require!r}")
    return require


def satisfies(status: str, require: str) -> bool:
    """Does an ACK with ``status`` give what a publisher requiring ``require`` waits for?

    ``processed`` satisfies both levels; ``received`` only ``received``; ``rejected`` neither.
    """
    return status == "processed" or (status == "received" and require == "received")


def bound_reason(reason: Any) -> str:
    """A rejection reason as short printable text: what an ACK may carry.

    Anything is accepted (bytes are decoded with escapes, other objects through ``str``, and
    if even that fails the type name is used); control characters become spaces; the result
    is at most :data:`MAX_REASON_CHARS` characters.
    """
    if isinstance(reason, (bytes, bytearray)):
        text = bytes(reason).decode("utf-8", "backslashreplace")
    elif isinstance(reason, str):
        text = reason
    else:
        try:
            text = str(reason)
        except Exception:  # a broken __str__ must not stop the rejection
            text = f"<unprintable {type(reason).__name__}>"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(text) > MAX_REASON_CHARS:
        text = text[:MAX_REASON_CHARS - 1] + "\u2026"
    return text


def speaks_batches(envelope: Mapping[str, Any]) -> bool:
    """Does the publisher of this message accept batched ACKs (protocol version 3 or later)?"""
    version = envelope.get(VERSION_FIELD)
    return type(version) is int and version >= BATCH_VERSION


def ack_hash(envelope: Mapping[str, Any]) -> str:
    """The hash an ACK for this message is signed with: ``"sha256"`` for a message of protocol
    version 4 or later, else ``"sha1"`` (what its version 2/3 publisher can check)."""
    version = envelope.get(VERSION_FIELD)
    return "sha256" if type(version) is int and version >= SHA256_ACK_VERSION else "sha1"


def new_envelope(
    topic: str,
    msg: Any,
    i: int,
    recipients: Sequence[str] | None = None,
    now: float | None = None,
    msg_id: str | None = None,
    username: str | None = None,
) -> dict[str, Any]:
    """An unsigned envelope with fedmsg's fields; gilmsg's fields too when ``recipients`` is set.

    ``msg`` must already be plain JSON data (:func:`to_json_value`).
    """
    now = time.time() if now is None else now
    envelope: dict[str, Any] = {
        "topic": topic,
        "msg": msg,
        "timestamp": int(now),
        "msg_id": msg_id or _new_msg_id(now),
        "i": i,
        "username": username if username is not None else _username(),
    }
    if recipients is not None:
        envelope[VERSION_FIELD] = PROTOCOL_VERSION
        envelope[RECIPIENTS_FIELD] = list(recipients)
    return envelope


def _new_msg_id(now: float) -> str:
    """fedmsg's msg_id: the local year, a dash, a random UUID."""
    import uuid  # loads platform details: about 3 ms, paid by the first message only

    return f"{datetime.fromtimestamp(now).year}-{uuid.uuid4()}"


@functools.cache
def _username() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def is_gilmsg(envelope: Mapping[str, Any]) -> bool:
    """True for a message that asks for acknowledgement (it carries ``gilmsg_version``)."""
    return VERSION_FIELD in envelope


def recipients_of(envelope: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The required recipients a message names, or None when it names none (as 0.1.2 sent)."""
    value = envelope.get(RECIPIENTS_FIELD)
    if value is None:
        return None
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def wants_ack_from(envelope: Mapping[str, Any], common_name: str) -> bool:
    """Should the holder of ``common_name`` acknowledge this message?

    Yes for a gilmsg message that names it among its recipients, or names no recipients.
    """
    if not is_gilmsg(envelope):
        return False
    named = recipients_of(envelope)
    return named is None or common_name in named


@dataclass(frozen=True)
class Ack:
    """What an ACK body says: which message (id and digest) and in what status."""

    msg_id: str
    digest: str | None
    status: str
    reason: str | None = None


def ack_body(
    envelope: Mapping[str, Any],
    status: str = "received",
    reason: str | None = None,
    content_digest: str | None = None,
) -> dict[str, Any]:
    """The ``msg`` of an ACK for ``envelope`` (as received, credentials included or not).

    ``content_digest`` is :func:`digest` of ``envelope``, computed here unless the caller has it.
    """
    if status not in ACK_STATUSES:
        raise InvalidInput(f"ACK status must be one of {ACK_STATUSES}, got {status!r}")
    body: dict[str, Any] = {
        "ack_msg_id": envelope["msg_id"],
        "ack_digest": content_digest if content_digest is not None else digest(envelope),
        "status": status,
    }
    if reason is not None:
        body["reason"] = bound_reason(reason)
    return body


def batch_body(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``msg`` of one batched ACK: several :func:`ack_body` entries under one signature.

    Raises:
        InvalidInput: no entries, more than :data:`MAX_BATCH`, or one msg_id twice.
    """
    if not entries or len(entries) > MAX_BATCH:
        raise InvalidInput(f"a batched ACK carries 1 to {MAX_BATCH} entries, got {len(entries)}")
    if len({e["ack_msg_id"] for e in entries}) != len(entries):
        raise InvalidInput("a batched ACK names each msg_id once")
    return {BATCH_FIELD: [dict(e) for e in entries]}


def parse_ack(envelope: Mapping[str, Any]) -> Ack | None:
    """The :class:`Ack` an envelope carries, or None when it is not a well-formed single ACK.

    A body without ``ack_digest`` (0.1.2) parses with ``digest=None``; the publisher's
    bookkeeping decides whether to accept it.
    """
    return _entry(envelope.get("msg"))


def parse_acks(envelope: Mapping[str, Any]) -> tuple[Ack, ...] | None:
    """Every :class:`Ack` an envelope carries: one for a single ACK, all of a batch.

    None when it is not an ACK, or for a batch with any bad entry (malformed, without a
    digest, a msg_id twice, more than :data:`MAX_BATCH` entries): one bad entry invalidates
    the whole batch.
    """
    body = envelope.get("msg")
    if isinstance(body, Mapping) and BATCH_FIELD in body:
        entries = body[BATCH_FIELD]
        if not isinstance(entries, list) or not 0 < len(entries) <= MAX_BATCH:
            return None
        acks = tuple(_entry(e) for e in entries)
        if any(a is None or a.digest is None for a in acks):
            return None
        if len({a.msg_id for a in acks}) != len(acks):  # type: ignore[union-attr]
            return None
        return acks  # type: ignore[return-value]
    single = _entry(body)
    return None if single is None else (single,)


def _entry(body: Any) -> Ack | None:
    if not isinstance(body, Mapping):
        return None
    msg_id = body.get("ack_msg_id")
    dig = body.get("ack_digest")
    status = body.get("status", "received")
    reason = body.get("reason")
    if not isinstance(msg_id, str) or not msg_id:
        return None
    if dig is not None and not isinstance(dig, str):
        return None
    if status not in ACK_STATUSES:
        return None
    if reason is not None and not isinstance(reason, str):
        return None
    return Ack(msg_id, dig, status, reason)


def encode(topic: str, envelope: Mapping[str, Any]) -> list[bytes]:
    """The two ZeroMQ frames fedmsg sends: topic, then the JSON envelope.

    Raises :class:`InvalidInput` if the topic is not valid UTF-8 text (a lone surrogate) or a
    frame is larger than :data:`MAX_FRAME_BYTES`, which every gilmsg receiver drops.
    """
    try:
        frames = [topic.encode("utf-8"), _envelope_json(envelope).encode("utf-8")]
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"topic {topic!r} is not valid text: {exc.reason}") from None
    size = max(len(frame) for frame in frames)
    if size > MAX_FRAME_BYTES:
        raise InvalidInput(f"message too large: {size} bytes encoded, receivers accept at most "
                           f"{MAX_FRAME_BYTES}")
    return frames


#: What a certificate field is made of: base64 in lines (fedmsg's format).
_BASE64_LINES = re.compile(r"[A-Za-z0-9+/=\n]*")
#: Certificate field -> its JSON text (few: one per signer); cleared when full.
_certificate_json: dict[str, str] = {}


def _envelope_json(envelope: Mapping[str, Any]) -> str:
    """``dumps(envelope)``, the same text, without json escaping the certificate field (about
    2 KB) character by character at each message: its JSON text is kept per certificate when
    it is base64 and, as in every envelope, its key sorts first."""
    cert = envelope.get("certificate")
    if type(cert) is not str or not all(type(k) is str and k > "certificate"
                                        for k in envelope if k != "certificate"):
        return dumps(envelope)
    text = _certificate_json.get(cert)
    if text is None:
        if not _BASE64_LINES.fullmatch(cert):
            return dumps(envelope)
        if len(_certificate_json) >= 64:
            _certificate_json.clear()
        text = _certificate_json[cert] = '"' + cert.replace("\n", "\\n") + '"'
    rest = dumps({k: v for k, v in envelope.items() if k != "certificate"})
    return f'{{"certificate":{text}{"," if len(rest) > 2 else ""}{rest[1:]}'


def decode(frames: Sequence[bytes]) -> tuple[str, dict[str, Any]] | None:
    """``(topic, envelope)`` from received frames, or None for anything malformed or oversized.

    Never raises: garbage on the wire is dropped, not fatal.
    """
    if len(frames) != 2 or any(len(f) > MAX_FRAME_BYTES for f in frames):
        return None
    try:
        topic = frames[0].decode("utf-8")
        envelope = json.loads(frames[1].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("msg_id"), str):
        return None
    return topic, envelope
