"""The commands' signal handling: SIGINT/SIGTERM become ``Interrupted`` in the main thread, and
inside ``interrupts_deferred`` (the logger's hand-off of a message to the link) the first one
waits for the section's end, so that a message handed off is reported in flight, never as
"not sent"."""

from __future__ import annotations

import os
import signal

import pytest

from gilmsg.commands import _common


def _signal_self(signum: int = signal.SIGINT) -> None:
    os.kill(os.getpid(), signum)  # Python runs the handler before the next bytecode


def test_a_signal_interrupts_at_once_outside_a_deferred_section():
    with _common.handle_signals(), pytest.raises(_common.Interrupted) as caught:
        _signal_self(signal.SIGTERM)
        raise AssertionError("not interrupted")
    assert caught.value.exit_code == 128 + signal.SIGTERM


def test_the_first_signal_waits_for_the_end_of_the_section():
    done = []
    with _common.handle_signals(), pytest.raises(_common.Interrupted) as caught:
        with _common.interrupts_deferred():
            _signal_self()
            done.append("section finished")
        done.append("after the section")
        _common.raise_deferred()
        raise AssertionError("the held signal was not raised")
    assert done == ["section finished", "after the section"]
    assert caught.value.exit_code == _common.EXIT_INTERRUPTED
    _common.raise_deferred()  # raised once: nothing is held any more


def test_a_second_signal_interrupts_the_section_at_once():
    done = []
    with _common.handle_signals(), pytest.raises(_common.Interrupted):
        with _common.interrupts_deferred():
            _signal_self()
            done.append("held")
            _signal_self()
            done.append("not reached")
    assert done == ["held"]
    _common.raise_deferred()  # the interruption raised was the one held: nothing is left
