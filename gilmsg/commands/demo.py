"""``gilmsg-demo``: the whole story on one machine, with real processes and real certificates."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

import gilmsg
from gilmsg import config as gconfig
from gilmsg.commands import _common
from gilmsg.core import wire
from gilmsg.crypto import certs, signing
from gilmsg.testing import HUB_LOGGING, HUB_READY_LOG, Process
from gilmsg.testing.bus import write_config_file

TAILS = ("recipient-a", "recipient-b")
#: The example consumer (examples/gilmsg_example) in a real fedmsg-hub acknowledges as "hub".
RECIPIENTS = (*TAILS, "hub")


def say(text: str = "") -> None:
    """One line of the demo's narration on stdout."""
    click.echo(text)


def ensure_certs(cfg: dict[str, Any]) -> None:
    """Create the development CA and one certificate per configured service, if missing."""
    ssldir = Path(cfg["ssldir"])
    if not (ssldir / certs.CA_CERT).exists():
        certs.init_ca(ssldir)
        say(f"created a development CA in {ssldir}")
    elif certs.crl_is_stale(ssldir):
        certs.write_crl(ssldir)
    for name in sorted(set(cfg["certnames"].values())):
        if not certs.paths(ssldir, name)[1].exists():
            certs.issue(ssldir, name)
            say(f"issued a certificate for {name} (CN={name})")


def show_signing(cfg: dict[str, Any]) -> bool:
    """Sign as the publisher, validate as a recipient, and show a tampered copy rejected."""
    signer = signing.signer_for({**cfg, "name": "publisher"})
    validator = signing.validator_for(cfg)
    env = signer.sign(wire.new_envelope("org.gilmsg.dev.demo.hello", {"hello": "world"}, 1))
    good = validator.validate(env)
    bad = validator.validate({**env, "msg": {"hello": "mallory"}})
    say(f"  signed by {signer.common_name}: valid={good.ok}, signer={good.signer}")
    say(f"  tampered copy: valid={bad.ok} ({bad.reason})")
    return good.ok and good.signer == "publisher" and not bad.ok


def _command(name: str) -> str:
    return str(Path(sys.executable).parent / name) if (
        Path(sys.executable).parent / name).exists() else (shutil.which(name) or name)


def start_recipient(config_file: str, name: str) -> Process:
    """A real ``gilmsg-tail --json`` acknowledging as ``name``; stopped by the caller."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return Process([_command("gilmsg-tail"), "--config-filename", config_file, "--name", name,
                    "--json"], env=env)


def start_hub(cfg: dict[str, Any], workdir: Path) -> tuple[Process, Path]:
    """A stock fedmsg-hub running the example consumer as "hub"; returns it and its record."""
    try:
        import gilmsg_example  # noqa: F401
    except ImportError:
        raise gilmsg.ConfigError(
            "the example consumer is not installed: pip install ./examples/gilmsg_example"
        ) from None
    record = workdir / "consumed.jsonl"
    hub_cfg = {**cfg, "name": "hub", "logging": HUB_LOGGING, "gilmsg_example": True,
               "gilmsg_example.output": str(record)}
    # fedmsg-hub runs its config files first: importing gilmsg there silences moksha's
    # pkg_resources warning, which comes before any consumer is loaded (gilmsg/__init__.py).
    config_file = write_config_file(workdir / "hub.py", hub_cfg,
                                    preamble="import gilmsg  # noqa: F401\n\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    hub = Process([_command("fedmsg-hub"), "--config-filename", str(config_file)], env=env,
                  cwd=workdir)
    hub.wait_for(lambda line: HUB_READY_LOG in line, timeout=60)
    return hub, record


def check(passed: bool, failure: str) -> bool:
    """Say ``failure`` when a step of the demo did not behave as shown; returns ``passed``."""
    if not passed:
        say(f"  UNEXPECTED: {failure}")
    return passed


def show_deliveries(pub_cfg: dict[str, Any], procs: list[Process], hub: Process,
                    record: Path) -> bool:
    """Step 4: 21 messages to every recipient; True when each tail printed each once, in
    order, and the hub's consume() recorded each once."""
    ok = True
    say(f"4. publisher sends to {', '.join(RECIPIENTS)} and waits for their signed ACKs")
    started = time.monotonic()
    report = gilmsg.publish(topic="hello", msg={"n": 0}, modname="demo",
                            recipients=RECIPIENTS, ack_timeout=15, **pub_cfg)
    assert report is not None  # with recipients, publish returns a Report or raises
    say(f"  delivered {report.msg_id} in {time.monotonic() - started:.3f}s, "
        f"{report.sends} send(s) (the tails may still have been connecting)")
    for name, seconds in report.acks.items():
        say(f"    ACK from {name} after {seconds * 1000:.1f} ms")
    times = []
    for n in range(1, 21):
        report = gilmsg.publish(topic="hello", msg={"n": n}, modname="demo",
                                recipients=RECIPIENTS, ack_timeout=5, **pub_cfg)
        assert report is not None
        times.append(report.elapsed * 1000)
    times.sort()
    say(f"  20 more: median round trip {times[10]:.2f} ms, slowest {times[-1]:.2f} ms")
    for name, proc in zip(TAILS, procs[:2], strict=True):
        got = [json.loads(proc.next_line())["msg"]["n"] for _ in range(21)]
        ok &= check(got == list(range(21)), f"{name} printed {got}, not 0 to 20 in order")
    # The hub acknowledges on receipt; its consume() may still be writing the last lines.
    for _ in range(21):
        hub.wait_for(lambda line: "ExampleConsumer consumed " in line)
    consumed = [json.loads(line) for line in record.read_text().splitlines()]
    numbers = sorted(c["msg"]["n"] for c in consumed)
    ok &= check(numbers == list(range(21)), f"the hub consumed {numbers}, not 0 to 20 once")
    say("  each gilmsg-tail printed every message exactly once, in order, and the hub's")
    say(f"  consume() recorded each exactly once ({len(consumed)} lines in {record.name})")
    return ok


def show_timeout(pub_cfg: dict[str, Any], stopped: Process) -> bool:
    """Step 5: ``stopped`` (recipient-b) stops; True when the next publish raises a Timeout
    naming it missing and the others as acknowledged."""
    say("5. recipient-b stops; the next publish must fail loudly")
    stopped.stop()
    try:
        gilmsg.publish(topic="hello", msg={"n": 99}, modname="demo",
                       recipients=RECIPIENTS, ack_timeout=1, **pub_cfg)
        say("  UNEXPECTED: publish succeeded")
        return False
    except gilmsg.Timeout as exc:
        say(f"  gilmsg.Timeout: {exc}")
        say(f"    acknowledged: {sorted(exc.acked)}; missing: {list(exc.missing)}")
        expected = exc.missing == ("recipient-b",) and set(exc.acked) == {"recipient-a", "hub"}
        return check(expected, "the Timeout should name recipient-b missing, the others "
                               "acknowledged")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config-filename", default="fedmsg.d/gilmsg.py", show_default=True,
              type=click.Path(dir_okay=False), help="The local bus configuration.")
def main(config_filename: str) -> None:
    """Run gilmsg on a local bus: certificates, signing, recipients, ACKs and a Timeout.

    Exit code 0 when every step behaved as shown, 1 otherwise, 4 for a configuration problem.

    Example: ./run demo   (or: gilmsg-demo --config-filename fedmsg.d/gilmsg.py)
    """
    procs: list[Process] = []
    ok = True
    workdir = Path(tempfile.mkdtemp(prefix="gilmsg-demo-"))
    try:
        cfg = gconfig.load(filename=config_filename)
        say("1. Development certificates")
        ensure_certs(cfg)
        say(f"  {len(cfg['certnames'])} services, CA and CRL in {cfg['ssldir']}")
        say("2. Signing in fedmsg's x509 format, without fedmsg.crypto")
        ok &= check(show_signing(cfg), "signing or validation did not behave as shown")
        say("3. Recipients start: two gilmsg-tail processes and a stock fedmsg-hub running the")
        say("   example GilmsgConsumer (examples/gilmsg_example), which acknowledges as 'hub'")
        procs = [start_recipient(config_filename, name) for name in TAILS]
        hub, record = start_hub(cfg, workdir)
        procs.append(hub)
        pub_cfg = {**cfg, "name": "publisher"}
        gilmsg.init(**pub_cfg)
        ok &= show_deliveries(pub_cfg, procs, hub, record)
        ok &= show_timeout(pub_cfg, procs[1])
    except gilmsg.GilmsgError as exc:
        click.echo(f"gilmsg-demo: error: {exc}", err=True)
        sys.exit(_common.EXIT_CONFIG)
    except AssertionError as exc:  # a recipient process did not answer (gilmsg.testing waits)
        click.echo(f"gilmsg-demo: error: {exc}", err=True)
        sys.exit(1)
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    say("demo " + ("passed" if ok else "FAILED"))
    sys.exit(0 if ok else 1)
