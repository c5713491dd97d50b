"""gilmsg-sandbox and gilmsg.testing.sandbox: specs and PKI in-process, the real command too."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from gilmsg.commands import _common
from gilmsg.commands import sandbox as cli
from gilmsg.crypto import certs, signing
from gilmsg.errors import InvalidInput
from gilmsg.testing import DEFAULT_WAIT, Process
from gilmsg.testing.sandbox import StandInSpec, ensure_pki, parse_standin, parse_standins

BIN = Path(sys.executable).parent
SANDBOX = str(BIN / "gilmsg-sandbox")
LOGGER = str(BIN / "gilmsg-logger")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PATH": str(BIN) + os.pathsep + os.environ.get("PATH", "")}


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (zombies excluded)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def kill_all(text: str) -> None:
    """Teardown: whatever a failed test left running (children live in their own sessions)."""
    for pid in processes_mentioning(text):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_gone(text: str, timeout: float = DEFAULT_WAIT) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# -- specs -------------------------------------------------------------------------------------


def test_specs_parse_every_option():
    assert parse_standin("r1") == StandInSpec("r1")
    spec = parse_standin("w:delay=0.5,fail=0.25,reject=0.5")
    assert (spec.delay, spec.fail, spec.reject) == (0.5, 0.25, 0.5)
    assert parse_standin("g:absent").absent and parse_standin("v:revoked").revoked
    assert parse_standin(spec.to_text()) == spec
    assert [s.name for s in parse_standins(["a b", "c:absent"])] == ["a", "b", "c"]


@pytest.mark.parametrize("text, words", [
    ("r1:delay=soon", "delay must be"),
    ("r1:fail=2", "fail must be a fraction"),
    ("r1:fail=0.6,reject=0.6", "add up to more than 1"),
    ("r1:fast", "unknown option 'fast'"),
    ("relay_outbound", "reserved for fedmsg-relay"),
    ("-bad", "invalid certificate name"),
])
def test_bad_specs_say_what_is_wrong(text, words):
    with pytest.raises(InvalidInput, match=words):
        parse_standin(text)


def test_a_name_given_twice_is_refused():
    with pytest.raises(InvalidInput, match="named twice"):
        parse_standins(["a", "b a"])


def revoked_serials(ssldir: Path) -> set[int]:
    return {e.serial_number for e in x509.load_pem_x509_crl((ssldir / certs.CRL).read_bytes())}


def serial(ssldir: Path, name: str) -> int:
    return x509.load_pem_x509_certificate(certs.paths(ssldir, name)[1].read_bytes()).serial_number


def test_pki_is_reused_and_follows_the_revoked_option(tmp_path):
    ssl = tmp_path / "ssl"
    ensure_pki(ssl, ["a", "b"], revoked=["b"])
    ca = (ssl / certs.CA_CERT).read_bytes()
    first_a, first_b = serial(ssl, "a"), serial(ssl, "b")
    assert revoked_serials(ssl) == {first_b}
    ensure_pki(ssl, ["a", "b"], revoked=["b"])  # nothing to do
    assert (serial(ssl, "a"), serial(ssl, "b")) == (first_a, first_b)
    ensure_pki(ssl, ["a", "b"])  # b no longer revoked: a new certificate, not on the CRL
    assert (ssl / certs.CA_CERT).read_bytes() == ca and serial(ssl, "a") == first_a
    assert serial(ssl, "b") != first_b and serial(ssl, "b") not in revoked_serials(ssl)


# -- the command in-process (bad input) ------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args), prog_name="gilmsg-sandbox")


def test_help_lists_the_exit_codes():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Exit codes:" in result.output and "delay=SECONDS" in result.output
    codes = re.findall(r"^ +(\d+) +\S", result.output.split("Exit codes:")[1], re.M)
    assert codes == ["0", "1", "2", "4", "5", "130"]


@pytest.mark.parametrize("args, words", [
    (["r1:delay=-1"], "delay must be 0 to 3600 seconds"),
    (["r1", "r1"], "stand-in r1 is named twice"),
    (["--service", "r1", "r1"], "r1: both a service and a stand-in"),
    (["--standins-file", "/nonexistent/standins.txt"], "cannot read stand-ins file"),
    (["--group", "team", "r1"], "--group 'team': write NAME=RECIPIENT,RECIPIENT..."),
])
def test_bad_input_is_one_usage_line(tmp_path, args, words):
    result = invoke("--dir", str(tmp_path / "box"), *args)
    assert result.exit_code == _common.EXIT_USAGE
    assert words in result.stderr and "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "box").exists()  # nothing written


def test_a_broken_ca_is_a_configuration_error(tmp_path):
    (tmp_path / "box" / "ssl").mkdir(parents=True)
    (tmp_path / "box" / "ssl" / certs.CA_CERT).write_text("not a certificate")
    result = invoke("--dir", str(tmp_path / "box"), "--no-relay", "r1")
    assert result.exit_code == _common.EXIT_CONFIG, result.output
    assert result.stderr.startswith("gilmsg-sandbox: error: ")
    assert "Traceback" not in result.stderr


def test_groups_are_parsed():
    assert cli.parse_groups(("team=a,b", "all=a b,c")) == {"team": ["a", "b"],
                                                          "all": ["a", "b", "c"]}


def test_standins_file_is_read(tmp_path):
    path = tmp_path / "standins.txt"
    path.write_text("# the recipients of my service\nr1  slow:delay=0.1\n\ngone:absent  # later\n")
    specs = cli._specs(("x",), str(path))
    assert [s.to_text() for s in specs] == ["x", "r1", "slow:delay=0.1", "gone:absent"]


# -- the real command ------------------------------------------------------------------------------


def start_sandbox(root: Path, *args: str) -> tuple[Process, str]:
    proc = Process([SANDBOX, "--dir", str(root), *args], env=env())
    proc.wait_for(lambda line: line == "gilmsg-sandbox: ready", timeout=60)
    config = proc.wait_for(lambda line: line.strip().startswith("config ")).split()[-1]
    return proc, config


def log(config: str, *args: str) -> tuple[int, dict]:
    proc = Process([LOGGER, "--config-filename", config, "--json-report", *args], env=env())
    code = proc.wait(60)
    return code, json.loads(proc.next_line())


@pytest.mark.timeout(150)
def test_sandbox_stand_ins_behave_as_told_and_ctrl_c_leaves_no_process(tmp_path):
    root = tmp_path / "box"
    proc, config = start_sandbox(root, "r1", "slow:delay=0.3", "flaky:fail=1", "gone:absent",
                                 "rev:revoked")
    try:
        assert config == str(root / "fedmsg.d" / "gilmsg.py")
        cfg = {}
        exec(Path(config).read_text(), cfg)  # a complete fedmsg.d file
        assert set(cfg["config"]["certnames"]) == {"publisher", "r1", "slow", "flaky", "gone",
                                                   "rev"}
        assert all(e[0].startswith("tcp://127.0.0.1:")
                   for e in cfg["config"]["endpoints"].values())
        live = processes_mentioning(str(root))
        assert len(live) == 7  # itself, relay, 4 stand-ins (gone is absent), traffic watcher

        code, report = log(config, "--name", "publisher", "-r", "r1 slow", "--message", "hi")
        assert code == 0 and report["status"] == "delivered"
        assert report["acked"]["slow"] >= 0.3  # it waited before acknowledging
        proc.wait_for(lambda line: line.startswith("[slow] received ")
                      and line.endswith("acknowledged after 0.3s"))

        code, report = log(config, "--name", "publisher", "-r", "flaky", "--ack-timeout", "1",
                           "--message", "lost")
        assert code == 1 and report["missing"] == ["flaky"]
        proc.wait_for(lambda line: line.startswith(f"[flaky] received {report['msg_id']}")
                      and "NOT acknowledged" in line)

        code, report = log(config, "--name", "publisher", "-r", "gone rev", "--ack-timeout",
                           "1", "--message", "nobody")
        assert code == 1 and report["missing"] == ["gone", "rev"]
        proc.wait_for(lambda line: line.startswith(f"[rev] received {report['msg_id']}"))

        # The traffic watcher showed the message and an ACK.
        proc.wait_for(lambda line: line.startswith("[bus] ") and "ACK received" in line)

        # A service publishing through the relay (fedmsg-logger's way) gets its report too.
        code, report = log(config, "--active", "--name", "publisher", "-r", "r1",
                           "--ack-timeout", "20", "--message", "via the relay")
        assert code == 0 and report["status"] == "delivered", report

        proc.signal(signal.SIGINT)
        assert proc.wait(30) == _common.EXIT_INTERRUPTED
        assert "gilmsg-sandbox: stopped every process" in proc.stderr
        assert wait_gone(str(root)) == []
    finally:
        proc.stop()
        kill_all(str(root))


@pytest.mark.timeout(120)
def test_sigterm_and_duration_stop_every_process(tmp_path):
    root = tmp_path / "box"
    proc, _ = start_sandbox(root, "r1", "r2")
    try:
        assert len(processes_mentioning(str(root))) == 5  # itself, relay, r1, r2, watcher
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
        assert wait_gone(str(root)) == []
    finally:
        proc.stop()
        kill_all(str(root))
    # A second start in the same directory reuses the PKI; --duration ends it with 0.
    ca = (root / "ssl" / certs.CA_CERT).read_bytes()
    proc, config = start_sandbox(root, "--no-relay", "--no-traffic", "--duration", "1", "r1")
    try:
        assert proc.wait(30) == 0
        assert (root / "ssl" / certs.CA_CERT).read_bytes() == ca
        assert wait_gone(str(root)) == []
    finally:
        proc.stop()
        kill_all(str(root))


@pytest.mark.timeout(120)
def test_a_stand_in_that_dies_is_reported_and_the_exit_code_says_so(tmp_path):
    root = tmp_path / "box"
    proc, _ = start_sandbox(root, "--no-relay", "--no-traffic", "r1", "r2")
    try:
        [victim] = [p for p in processes_mentioning(str(root))
                    if "--spec\0r2\0" in Path(f"/proc/{p}/cmdline").read_bytes().decode()]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + DEFAULT_WAIT
        while "r2 exited with code -9" not in proc.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "gilmsg-sandbox: warning: r2 exited with code -9; the rest runs on" in proc.stderr
        proc.signal(signal.SIGINT)
        assert proc.wait(30) == _common.EXIT_INTERRUPTED
        assert wait_gone(str(root)) == []
    finally:
        proc.stop()
        kill_all(str(root))


def test_signature_of_the_sandbox_is_valid_for_stock_validation(tmp_path):
    """The written configuration is what gilmsg's own validator needs (CA, CRL, certnames)."""
    from gilmsg.testing.sandbox import Sandbox

    box = Sandbox(tmp_path, parse_standins(["r1"]), relay=False)
    box.prepare()
    signed = signing.sign({"topic": "t", "msg": {}}, **box.config_for("r1"))
    assert signing.validate(signed, **box.config).signer == "r1"


@pytest.mark.timeout(150)
def test_a_second_sandbox_on_a_directory_in_use_is_refused_and_the_first_is_untouched(tmp_path):
    root = tmp_path / "box"
    proc, config = start_sandbox(root, "--no-traffic", "r1")
    try:
        before = Path(config).read_bytes()
        second = Process([SANDBOX, "--dir", str(root), "r1"], env=env())
        assert second.wait(60) == _common.EXIT_CONFIG
        lines = second.stderr.splitlines()
        assert len(lines) == 1 and "is in use by another gilmsg-sandbox" in lines[0], lines
        assert f"pid {proc.proc.pid}" in lines[0]
        assert Path(config).read_bytes() == before
        code, report = log(config, "--name", "publisher", "-r", "r1", "--ack-timeout", "20",
                           "--message", "still mine")
        assert code == _common.EXIT_OK and list(report["acked"]) == ["r1"]
    finally:
        proc.stop()
        kill_all(str(root))


@pytest.mark.timeout(150)
def test_a_sigkilled_sandbox_takes_its_relay_and_traffic_watcher_with_it(tmp_path):
    root = tmp_path / "box"
    proc, _ = start_sandbox(root, "r1")  # with the relay and the traffic watcher
    try:
        children = processes_mentioning(str(root))
        assert any("fedmsg-relay" in Path(f"/proc/{p}/cmdline").read_bytes().decode()
                   for p in children)
        assert any("gilmsg-tail" in Path(f"/proc/{p}/cmdline").read_bytes().decode()
                   for p in children)
        os.kill(proc.proc.pid, signal.SIGKILL)  # only the sandbox, not its process group
        assert wait_gone(str(root)) == []
    finally:
        proc.stop()
        kill_all(str(root))
