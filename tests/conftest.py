"""Shared fixtures: a fresh local bus (CA, certificates, free ports) per test."""

from __future__ import annotations

import signal

import pytest

from gilmsg.testing import DevBus
from tests.chaos.options import pytest_addoption  # noqa: F401  (--seed, --duration)

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # Started as a background job (`./run tests &`): SIGINT arrives ignored and children would
    # inherit that. A handler here is reset to the default in every child at exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def make_bus(tmp_path):
    """Factory: ``make_bus(["pub", "r1"], extra={...})``; every bus is closed after the test."""
    buses: list[DevBus] = []

    def make(services, extra=None, subdir="bus", ack_endpoints=False):
        bus = DevBus(tmp_path / f"{subdir}{len(buses)}", services, extra=extra,
                     ack_endpoints=ack_endpoints)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


@pytest.fixture(autouse=True)
def _fresh_refusal_logs():
    """Each test sees its own first refusal of each reason logged (the logs are per process)."""
    from gilmsg import logsummary

    logsummary.reset_all()
    yield


@pytest.fixture(autouse=True)
def _close_links():
    """Each test's in-process publishers go with it: no sockets left reconnecting to dead buses."""
    yield
    from gilmsg import link

    link.close_all()


#: Markers whose tests a ``./run tests`` skips, visibly, unless ``-m`` names them: marker -> how.
FULL_ONLY = {"faults_full": ("faults", "-m faults"), "load": ("load", "-m load"),
             "chaos": ("chaos", "-m chaos"), "chaos_planted": ("chaos_planted",
                                                              "-m chaos_planted"),
             "soak": ("soak", "-m soak")}


def full_run(config) -> bool:
    """True when ``-m`` selects the fault suites: hypothesis then tries its full counts."""
    return "faults" in (config.option.markexpr or "")


def pytest_configure(config):
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # only the hostile-input tests need it; they import it themselves
        return
    common = dict(deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])
    settings.register_profile("gilmsg-default", max_examples=150, **common)
    settings.register_profile("gilmsg-full", max_examples=2500, **common)
    settings.load_profile("gilmsg-full" if full_run(config) else "gilmsg-default")


def pytest_collection_modifyitems(config, items):
    markexpr = config.option.markexpr or ""
    for item in items:
        for marker, (word, how) in FULL_ONLY.items():
            if item.get_closest_marker(marker) is not None and word not in markexpr:
                item.add_marker(pytest.mark.skip(
                    reason=f"{marker}: not in the default run; run it with ./run tests {how}"))


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory):
    """One real RabbitMQ on 127.0.0.1 for the whole session (about 5 s to start), stopped by
    pid at the end; skipped, with the reason, where the package or pika is missing."""
    pytest.importorskip("pika", reason="pika is not installed (pip install 'gilmsg[amqp]')")
    from gilmsg.testing import rabbitmq as testing_amqp

    reason = testing_amqp.missing_reason()
    if reason:
        pytest.skip(reason)
    broker = testing_amqp.LocalRabbitMQ(tmp_path_factory.mktemp("rabbitmq"))
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def make_amqp_bus(make_bus, rabbitmq):
    """Factory: ``make_amqp_bus(["pub", "r1"])``: a bus whose every endpoint is the broker."""

    def make(services, extra=None):
        bus = make_bus(services, extra={"gilmsg.transport": "amqp", **(extra or {})})
        bus.config["endpoints"] = {name: [rabbitmq.url] for name in bus.services}
        bus.write_config()
        return bus

    return make


@pytest.fixture(scope="session")
def postgres():
    """One throw-away PostgreSQL server on 127.0.0.1 for the whole session (about 4 s to
    initialise and start), stopped by pid and its directory removed at the end; skipped, with
    the reason, where the server package or psycopg is missing."""
    from gilmsg.testing import postgres as testing_postgres

    reason = testing_postgres.missing_reason()
    if reason:
        pytest.skip(reason)
    server = testing_postgres.LocalPostgres(fsync=False)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path):
    """Factory, once per backend: ``store_location()`` is a new, empty outbox location (an
    SQLite file name, or the URL of a fresh database of the session's PostgreSQL server)."""
    if request.param == "sqlite":
        names = iter(range(1_000_000))
        return lambda: str(tmp_path / f"store{next(names)}.db")
    server = request.getfixturevalue("postgres")
    return server.create_database
