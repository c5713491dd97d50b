"""gilmsg-ping says WARNING while this identity's certificate or the CRL is about to expire
(the fedmsg#481 failure: an expired CRL silently stopped validation across the bus).

Real processes: a gilmsg-tail answering, gilmsg-ping probing it, real certificates and CRLs.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from gilmsg.crypto import certs

PING = str(Path(sys.executable).parent / "gilmsg-ping")


def ping(bus, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PING, "--config-filename", str(bus.config_file), *args],
                          capture_output=True, text=True, timeout=60, cwd=bus.root,
                          env=bus.env())


def test_crl_and_certificate_expiring_soon_are_a_warning(make_bus):
    bus = make_bus(["mon", "r1"])
    bus.add_service("mon2", issue_cert=False)
    certs.issue(bus.ssldir, "mon2", days=5)
    bus.spawn_tail("r1")
    certs.write_crl(bus.ssldir, next_update=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    first = ping(bus, "--name", "mon", "--nagios", "-t", "10", "r1")
    assert first.returncode == 1, first.stdout + first.stderr
    assert first.stdout.startswith("GILMSG-PING WARNING - 1/1 recipients OK: ")
    assert "next update in 2.9 days" in first.stdout or "next update in 3.0 days" in first.stdout
    assert " | 'r1_rtt'=" in first.stdout  # perfdata kept

    quiet = ping(bus, "--name", "mon", "--nagios", "-t", "10", "--expiry-warning", "1", "r1")
    assert quiet.returncode == 0 and quiet.stdout.startswith("GILMSG-PING OK - "), quiet.stdout

    plain = ping(bus, "--name", "mon2", "--expiry-warning", "7", "-t", "10", "r1")
    assert plain.returncode == 0, plain.stdout + plain.stderr  # r1 answered: exit unchanged
    warnings = [line for line in plain.stderr.splitlines()
                if line.startswith("gilmsg-ping: WARNING: ")]
    assert any("certificate of mon2 expires in " in w for w in warnings), plain.stderr
    assert any("CRL " in w and "next update in " in w for w in warnings), plain.stderr
