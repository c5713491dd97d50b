""".ci/install-rabbitmq leaves nothing running and nothing listening (wall 6 of issue 22).

The script runs, as root, in fresh PID and network namespaces (so whatever it leaves behind is
visible there, and dies with the namespace), with its "already installed" exit removed and
apt-get replaced by a stand-in that does what the package's scripts do: run rabbitmqctl with
the package's defaults, which starts ``epmd -daemon`` on 0.0.0.0:4369.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "install-rabbitmq"
INIT = Path("/etc/init.d/rabbitmq-server")

APT_STAND_IN = """#!/bin/sh
# apt-get stand-in: the package is installed already; "install" runs rabbitmqctl as its
# scripts do (starting epmd -daemon, as user rabbitmq, on every interface).
case "$*" in *install*) /etc/init.d/rabbitmq-server status >/dev/null 2>&1 ;; esac
exit 0
"""

# Inside the namespaces: loopback up, the script, then what listens and what runs.
INSIDE = """
ip link set lo up
PATH="$STUBS:$PATH" bash "$COPY"; echo "script-rc=$?"
echo "--- listening"; ss -ltnH
echo "--- running"; ps -eo user=,args= | grep -v -e '^root .*bash' -e ' ps -eo' -e 'grep -v'
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, and the script installs as root)"
    for tool in ("unshare", "ss", "ip", "pgrep"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not INIT.exists():
        return f"{INIT} is missing: rabbitmq-server is not installed here"
    return None


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_install_script_leaves_no_daemon_and_no_listener(tmp_path):
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    apt = stubs / "apt-get"
    apt.write_text(APT_STAND_IN)
    apt.chmod(0o755)
    copy = tmp_path / "install-rabbitmq"
    text = SCRIPT.read_text()
    early_exit = '[ -x "$server" ] && exit 0\n'
    assert early_exit in text
    copy.write_text(text.replace(early_exit, "", 1))
    env = {**os.environ, "STUBS": str(stubs), "COPY": str(copy)}
    out = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", INSIDE],
                         env=env, capture_output=True, text=True, timeout=120)
    assert "script-rc=0" in out.stdout, out.stdout + out.stderr
    listening = out.stdout.split("--- listening\n")[1].split("--- running\n")[0]
    running = out.stdout.split("--- running\n")[1]
    assert listening.strip() == "", f"left listening:\n{listening}"
    assert running.strip() == "", f"left running:\n{running}"
