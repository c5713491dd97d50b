"""The input of ``gilmsg-logger``: ``--message`` or stdin, one message per line."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast


@dataclass
class Item:
    """One message to send, or the reason an input line cannot be sent."""

    line: int | None
    body: Any = None
    problem: str | None = None


def _parse(text: str, json_input: bool) -> Any:
    if json_input:
        return json.loads(text)
    return {"log": text}


def read_items(message: str | None, json_input: bool, stream: BinaryIO) -> Iterator[Item]:
    """The messages to send: ``--message``, else stdin line by line (blank lines skipped).

    With ``json_input`` each line (or ``--message``) is one JSON document; without it a line
    ``text`` becomes ``{"log": "text"}`` (surrounding whitespace removed), as in fedmsg-logger.
    A line that is not UTF-8 or not JSON yields an :class:`Item` with a ``problem``.
    """
    if message is not None:
        if not message.strip():
            yield Item(None, problem="--message is empty")
            return
        try:
            yield Item(None, body=_parse(message.strip(), json_input))
        except (ValueError, RecursionError) as exc:
            yield Item(None, problem=f"--message is not valid JSON: {exc}")
        return
    for number, raw in enumerate(iter(stream.readline, b""), start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            yield Item(number, problem=f"not UTF-8 text: {exc}")
            continue
        if not text:
            continue
        try:
            yield Item(number, body=_parse(text, json_input))
        except (ValueError, RecursionError) as exc:
            yield Item(number, problem=f"invalid JSON: {exc}")


def stdin_bytes() -> BinaryIO:
    stream = sys.stdin
    if stream is None:  # started with fd 0 closed: same as empty input
        return io.BytesIO()
    buffer = getattr(stream, "buffer", None)
    return cast(BinaryIO, stream if buffer is None else buffer)


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
