"""pytest plugin: a running local gilmsg bus with stand-in recipients, for your service's tests.

Installed with gilmsg (entry point ``pytest11``), it provides the fixture ``gilmsg_sandbox`` and
the marker of the same name::

    import gilmsg
    import pytest

    @pytest.mark.gilmsg_sandbox(standins=["archiver", "slow:delay=0.2"], services=["my-app"])
    def test_my_app_notifies_the_archiver(gilmsg_sandbox):
        config = gilmsg_sandbox.config_for("my-app")   # pass it to gilmsg.publish
        my_app.compose_done("rawhide", **config)       # calls gilmsg.publish(..., **config)
        gilmsg_sandbox.assert_received("archiver", {"topic": "compose.done",
                                                    "msg": {"compose": "rawhide"}})

Everything is real: certificates from a fresh CA, stand-ins in their own processes acknowledging
over ZeroMQ on 127.0.0.1, ports picked free. Without the marker the bus has one identity for
your code, ``publisher``, and one stand-in, ``recipient``. Stand-in specs are those of
``gilmsg-sandbox`` (``NAME:delay=S,fail=F,reject=F,absent,revoked``); every process is stopped
after the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from gilmsg.testing.sandbox import DEFAULT_SERVICES, Sandbox, parse_standins

#: Seconds :meth:`GilmsgSandbox.assert_received` waits by default.
RECEIVE_WAIT = 10.0
MARKER = "gilmsg_sandbox"


def matches(envelope: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    """True when every key of ``expected`` has the same value in ``envelope``.

    ``topic`` also matches the end of the full topic at a dot (``"compose.done"`` matches
    ``org.fedoraproject.prod.compose.done``); ``msg`` must be equal as a whole.
    """
    for key, value in expected.items():
        actual = envelope.get(key)
        if key == "topic" and isinstance(actual, str) and isinstance(value, str):
            if actual == value or actual.endswith("." + value):
                continue
            return False
        if actual != value:
            return False
    return True


def _subsequence(envelopes: Sequence[Mapping[str, Any]],
                 expected: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]] | None:
    found: list[Mapping[str, Any]] = []
    it = iter(envelopes)
    for want in expected:
        for env in it:
            if matches(env, want):
                found.append(env)
                break
        else:
            return None
    return found


def _brief(envelopes: Sequence[Mapping[str, Any]]) -> str:
    if not envelopes:
        return "nothing"
    return "; ".join(f"{e.get('topic')} {e.get('msg')!r}" for e in envelopes)


class GilmsgSandbox(Sandbox):
    """A started :class:`gilmsg.testing.sandbox.Sandbox` with assertion helpers for tests."""

    def received(self, name: str, everything: bool = False) -> list[dict[str, Any]]:
        """Envelopes stand-in ``name`` received so far (addressed to it, once each; see
        :meth:`gilmsg.testing.sandbox.StandIn.received`)."""
        return self._standin(name).received(everything)

    def _standin(self, name: str) -> Any:
        try:
            return self.standins[name]
        except KeyError:
            raise AssertionError(f"{name!r} is not a stand-in of this sandbox "
                                 f"({', '.join(self.standins) or 'none'})") from None

    def assert_received(self, name: str, *expected: Mapping[str, Any],
                        timeout: float = RECEIVE_WAIT) -> list[Mapping[str, Any]]:
        """Wait until stand-in ``name`` has received messages matching ``expected``, in order.

        Each expected item is a dict of envelope fields (usually ``topic`` and ``msg``) compared
        with :func:`matches`; other messages may come between them. Returns the matching
        envelopes. AssertionError, listing what it did receive, if they are not all there
        within ``timeout`` seconds.
        """
        standin = self._standin(name)
        if standin.spec.absent:
            raise AssertionError(f"stand-in {name} is absent: it receives nothing")
        if not expected:
            raise AssertionError("assert_received needs at least one expected message")
        standin.wait(lambda _e: _subsequence(standin.received(), expected) is not None, timeout)
        got = standin.received()
        found = _subsequence(got, expected)
        if found is None:
            raise AssertionError(
                f"stand-in {name} did not receive {list(map(dict, expected))!r} within "
                f"{timeout:g}s; it received: {_brief(got)}")
        return found

    @contextlib.contextmanager
    def expect_sends(self, name: str, *expected: Mapping[str, Any],
                     timeout: float = RECEIVE_WAIT) -> Iterator[None]:
        """Within the block, stand-in ``name`` must receive exactly ``expected``, in order.

        In the spirit of fedora-messaging's ``mock_sends``, over real sockets: at the end of the
        block, waits (up to ``timeout``) for as many new messages as expected, then compares
        them one by one; a missing, extra or different message fails the test.
        """
        standin = self._standin(name)
        before = len(standin.received())
        yield
        standin.wait(lambda _e: len(standin.received()) - before >= len(expected), timeout)
        new = standin.received()[before:]
        if len(new) != len(expected) or not all(map(matches, new, expected)):
            raise AssertionError(
                f"stand-in {name} was expected to receive {list(map(dict, expected))!r}; "
                f"it received: {_brief(new)}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(standins=[...], services=[...], relay=False, extra={{}}): configure the "
        f"gilmsg_sandbox fixture (stand-in specs as in gilmsg-sandbox)",
    )


@pytest.fixture
def gilmsg_sandbox(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[GilmsgSandbox]:
    """A running gilmsg bus: stand-ins acknowledging, identities for your code, real sockets.

    Configure it with ``@pytest.mark.gilmsg_sandbox(standins=[...], services=[...])``; pass
    ``gilmsg_sandbox.config_for(service)`` to ``gilmsg.publish``. The configuration file is
    ``gilmsg_sandbox.config_file`` (for ``--config-filename``).
    """
    marker = request.node.get_closest_marker(MARKER)
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    specs = parse_standins(options.pop("standins", ["recipient"]))
    services = options.pop("services", list(DEFAULT_SERVICES))
    relay = bool(options.pop("relay", False))
    extra = options.pop("extra", None)
    seed = options.pop("seed", None)
    if options:
        raise pytest.UsageError(f"@pytest.mark.{MARKER}: unknown option(s) {sorted(options)}")
    root: Path = tmp_path_factory.mktemp("gilmsg-sandbox")
    box = GilmsgSandbox(root, specs, services, relay=relay, extra=extra, seed=seed)
    box.prepare()
    box.config["post_init_sleep"] = 0  # read from config_for(); the file keeps fedmsg's default
    try:
        box.start()
        yield box
    finally:
        box.stop()
        _close_publishers()


def _close_publishers() -> None:
    """Close this process's gilmsg sockets, which would keep reconnecting to the stopped bus."""
    try:
        from gilmsg import transport
    except ImportError:  # pragma: no cover - a reorganised gilmsg closes them at exit anyway
        return
    close_all = getattr(transport, "close_all", None)
    if close_all is not None:
        close_all()
