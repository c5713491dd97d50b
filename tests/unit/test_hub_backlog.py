"""The hub consumer's queue bound (gilmsg.consumers.hub_sockets.Backlog): who is refused when."""

from __future__ import annotations

import pytest

from gilmsg.consumers.hub_sockets import Backlog
from gilmsg.core.wire import MAX_FRAME_BYTES, RECIPIENTS_FIELD
from gilmsg.errors import ConfigError


def _message(recipients):
    body = {"topic": "t", "msg": {}, "gilmsg_version": 4}
    if recipients is not None:
        body[RECIPIENTS_FIELD] = recipients
    return {"topic": "t", "body": body}


def test_below_the_bound_everything_is_admitted_and_counted():
    backlog = Backlog({"gilmsg.receive_backlog_bytes": MAX_FRAME_BYTES})
    assert backlog.limit == MAX_FRAME_BYTES
    assert not backlog.refuses(_message(["hub"]), "hub")
    backlog.add(MAX_FRAME_BYTES - 1)
    assert not backlog.refuses(_message(["hub"]), "hub")  # one more may go over the bound
    backlog.add(10)
    assert backlog.refuses(_message(["hub"]), "hub")
    backlog.take(10)
    assert not backlog.refuses(_message(["hub"]), "hub")
    assert backlog.dropped == 1


@pytest.mark.parametrize("message", [_message(None), _message(["other"]), {"body": "plain"},
                                     {"topic": "t", "body": {"topic": "t", "msg": 1}}])
def test_at_the_bound_only_messages_naming_the_consumer_are_refused(message):
    """Nobody would send the others again: they are queued over the bound."""
    backlog = Backlog({})
    backlog.add(backlog.limit)
    assert not backlog.refuses(message, "hub")
    assert backlog.refuses(_message(["other", "hub"]), "hub")


def test_a_bound_below_one_frame_is_a_config_error():
    with pytest.raises(ConfigError, match="gilmsg.receive_backlog_bytes"):
        Backlog({"gilmsg.receive_backlog_bytes": 10})
