"""Protocol version 4 (issue 19) with real processes: SHA-256 ACKs, the hash policy, a real
version 3 peer on the same bus, freshness, and refusals logged without flooding.

The version 3 peer is today's main before protocol 4: the ``gilmsg`` package of commit
:data:`V3_COMMIT`, extracted with ``git archive`` and put first on the child's ``PYTHONPATH``
(skipped, with the reason, outside a git checkout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import zmq

import gilmsg
from gilmsg.core import wire
from gilmsg.crypto import signing
from gilmsg.testing import DEFAULT_WAIT
from tests.integration.test_protocol import Raw

ROOT = Path(__file__).resolve().parents[2]
#: The last commit of protocol version 3 (issue 18's layout, before issue 19).
V3_COMMIT = "68bda4b"


@pytest.fixture(scope="module")
def v3_path(tmp_path_factory) -> str:
    """A directory holding the version 3 ``gilmsg`` package (for a child's PYTHONPATH)."""
    out = tmp_path_factory.mktemp("gilmsg-v3")
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", V3_COMMIT, "gilmsg"],
                                 capture_output=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no version 3 peer: git archive {V3_COMMIT} failed: {exc}")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, timeout=60, check=True)
    probe = subprocess.run([sys.executable, "-c",
                            "import gilmsg.core.wire as w; print(w.PROTOCOL_VERSION, w.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(out)}, capture_output=True,
                           text=True, timeout=60, cwd=out)
    version, where = probe.stdout.split()
    assert version == "3" and where.startswith(str(out)), probe.stdout + probe.stderr
    return str(out)


def v3_env(bus, v3_path: str) -> dict[str, str]:
    env = bus.env()
    env["PYTHONPATH"] = os.pathsep.join([v3_path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def spawn_v3_tail(bus, v3_path: str, name: str):
    """A version 3 ``gilmsg-tail`` acknowledging as ``name`` (JSON lines on stdout)."""
    return bus.spawn([sys.executable, "-m", "gilmsg.commands.tail", "--config-filename",
                      str(bus.config_file), "--name", name, "--json", "--credentials"],
                     env=v3_env(bus, v3_path))


PUBLISHER = textwrap.dedent("""
    import json, logging, runpy, sys
    import gilmsg
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = runpy.run_path(sys.argv[1])["config"]
    config.update(json.loads(sys.argv[4]))
    config["name"] = sys.argv[2]
    try:
        report = gilmsg.publish(topic="t", msg={"k": "v"}, modname="v4", recipients=["r1"],
                                ack_timeout=float(sys.argv[3]), **config)
        print("acked", json.dumps(sorted(report.acks)), flush=True)
    except gilmsg.NotDelivered as exc:
        print("failed", json.dumps({k: [a.status, a.reason] for k, a in exc.answers.items()}),
              flush=True)
""")


def spawn_publisher(bus, name: str, timeout: float = 30.0, env=None, **config):
    """A separate process publishing one message to r1; prints ``acked [...]`` or ``failed``."""
    return bus.spawn([sys.executable, "-c", PUBLISHER, str(bus.config_file), name,
                      str(timeout), json.dumps(config)], **({"env": env} if env else {}))


def is_ack_of(msg_id: str):
    return lambda topic, env: (topic.endswith(".gilmsg.ack")
                               and isinstance(env.get("msg"), dict)
                               and env["msg"].get("ack_msg_id") == msg_id)


# -- 1. SHA-256 for ACKs; the envelope says which hash; the validator's own policy ----------


def test_a_v4_recipient_signs_its_acks_with_sha256(make_bus):
    bus = make_bus(["pub", "r1", "watch"])
    raw = Raw(bus, "watch")
    try:
        bus.spawn_tail("r1")
        raw.wait_connected("r1")
        report = gilmsg.publish(topic="t", msg={}, modname="v4", recipients=["r1"],
                                ack_timeout=30, **bus.config_for("pub"))
        _topic, ack = raw.recv(is_ack_of(report.msg_id))
    finally:
        raw.close()
    assert ack[signing.HASH_FIELD] == "sha256"
    validator = signing.Validator(bus.config["ca_cert_location"], bus.config["crl_location"])
    assert validator.validate(ack, accept_sha1=False).ok
    # the same bytes claiming SHA-1 fail: the scheme is inside the signed content
    assert not validator.validate({**ack, signing.HASH_FIELD: "sha1"}).ok
    assert not validator.validate({k: v for k, v in ack.items()
                                   if k != signing.HASH_FIELD}).ok


def test_a_v3_publisher_and_a_v4_recipient_deliver_to_each_other(make_bus, v3_path):
    bus = make_bus(["old", "r1"])
    bus.spawn_tail("r1")
    pub = spawn_publisher(bus, "old", env=v3_env(bus, v3_path))
    assert pub.next_line(timeout=60) == 'acked ["r1"]', pub.stderr


def test_a_v4_publisher_and_a_v3_recipient_deliver_to_each_other(make_bus, v3_path):
    bus = make_bus(["pub", "r1"])
    tail = spawn_v3_tail(bus, v3_path, "r1")
    report = gilmsg.publish(topic="t", msg={}, modname="v4", recipients=["r1"], ack_timeout=30,
                            **bus.config_for("pub"))
    assert set(report.acks) == {"r1"}
    got = json.loads(tail.next_line())
    assert got["msg_id"] == report.msg_id and got["gilmsg_version"] == wire.PROTOCOL_VERSION == 4


def test_accept_sha1_false_refuses_the_sha1_acks_of_a_v3_recipient(make_bus, v3_path):
    bus = make_bus(["pub", "r1"])
    spawn_v3_tail(bus, v3_path, "r1")
    pub = spawn_publisher(bus, "pub", timeout=4, **{"gilmsg.accept_sha1": False})
    line = pub.next_line(timeout=60)
    assert line.startswith("failed "), line + pub.stderr
    status, reason = json.loads(line.split(" ", 1)[1])["r1"]
    assert status == "missing" and "SHA-1" in reason and "gilmsg.accept_sha1" in reason


def test_signature_hash_sha256_signs_messages_and_accept_sha1_false_rejects_sha1(make_bus):
    bus = make_bus(["pub", "r1"], extra={"gilmsg.accept_sha1": False})
    tail = bus.spawn_tail("r1")
    report = gilmsg.publish(topic="t", msg={"n": 1}, modname="v4", recipients=["r1"],
                            ack_timeout=30, **bus.config_for("pub", **{
                                "gilmsg.signature_hash": "sha256"}))
    assert set(report.acks) == {"r1"}
    got = json.loads(tail.next_line())
    assert got["msg_id"] == report.msg_id and got[signing.HASH_FIELD] == "sha256"
    with pytest.raises(gilmsg.Rejected) as info:  # SHA-1, as fedmsg signs: refused, and said so
        gilmsg.publish(topic="t", msg={"n": 2}, modname="v4", recipients=["r1"],
                       ack_timeout=30, **bus.config_for("pub", **{
                           "gilmsg.signature_hash": "sha1"}))
    reason = info.value.rejected["r1"]
    assert reason.startswith("SHA-1 refused") and "gilmsg.accept_sha1" in reason


def test_a_bad_signature_hash_setting_is_a_config_error(make_bus):
    bus = make_bus(["pub"])
    with pytest.raises(gilmsg.ConfigError, match="gilmsg.signature_hash"):
        gilmsg.publish(topic="t", msg={}, modname="v4", recipients=["r1"], ack_timeout=1,
                       **bus.config_for("pub", **{"gilmsg.signature_hash": "md5"}))


# -- 2. freshness ---------------------------------------------------------------------------


@pytest.mark.parametrize("offset, kind", [(-30 * 86400, "stale"), (3600, "from the future")])
def test_a_replayed_or_future_message_is_rejected_with_a_signed_reason(make_bus, offset, kind):
    bus = make_bus(["pub", "r1"])
    raw = Raw(bus, "pub")  # the genuine publisher's key and endpoint: a recording replayed
    try:
        tail = bus.spawn_tail("r1")
        raw.wait_subscriber()
        raw.wait_connected("r1")
        signer = signing.signer_for(bus.config_for("pub"))
        old = signer.sign(wire.new_envelope("org.gilmsg.test.v4.t", {"replayed": True}, 1,
                                            ["r1"], now=time.time() + offset))
        fresh = signer.sign(wire.new_envelope("org.gilmsg.test.v4.t", {"fresh": True}, 2,
                                              ["r1"]))
        raw.pub.send_multipart(wire.encode(old["topic"], old))
        _t, ack = raw.recv(is_ack_of(old["msg_id"]))
        raw.pub.send_multipart(wire.encode(fresh["topic"], fresh))
        _t, fresh_ack = raw.recv(is_ack_of(fresh["msg_id"]))
    finally:
        raw.close()
    assert ack["msg"]["status"] == "rejected" and ack["msg"]["reason"].startswith(kind), ack
    assert ack["msg"]["ack_digest"] == wire.digest(old)
    validator = signing.Validator(bus.config["ca_cert_location"], bus.config["crl_location"])
    assert validator.validate(ack).signer == "r1"
    assert fresh_ack["msg"]["status"] == "received"
    # the replay was not delivered: the first line the tail prints is the fresh message
    assert json.loads(tail.next_line())["msg_id"] == fresh["msg_id"]


# -- 3. no log floods -----------------------------------------------------------------------


def test_5000_refused_acks_are_a_few_summary_lines(make_bus):
    bus = make_bus(["pub", "r1", "mallory"])
    raw = Raw(bus, "mallory")  # a bus member with a valid certificate of its own
    raw.pub.setsockopt(zmq.SNDHWM, 0)  # queue every copy: none dropped at the high-water mark
    try:
        pub = spawn_publisher(bus, "pub", timeout=120)
        _topic, message = raw.recv(lambda t, e: e.get("gilmsg_recipients") == ["r1"],
                                   timeout=DEFAULT_WAIT * 3)
        raw.wait_subscriber()  # the publisher's ACK listener is connected to us
        body = wire.ack_body(message)
        mallory = signing.signer_for(bus.config_for("mallory"))
        forged = mallory.sign(wire.new_envelope(bus.config_for("pub")["topic_prefix"]
                                                + ".test.gilmsg.ack", body, 1))
        frames = wire.encode(forged["topic"], forged)
        for _ in range(5000):
            raw.pub.send_multipart(frames)
        # then the genuine answer (same socket: it arrives after every forged copy)
        r1 = signing.signer_for(bus.config_for("r1"))
        real = r1.sign(wire.new_envelope(forged["topic"], body, 1))  # SHA-1: counts by default
        for _ in range(600):  # until the publisher answers (sent again in case one was lost)
            raw.pub.send_multipart(wire.encode(real["topic"], real))
            if not pub.lines.empty():
                break
            time.sleep(0.2)
        assert pub.next_line(timeout=120) == 'acked ["r1"]', pub.stderr
        assert pub.wait() == 0
    finally:
        raw.close()
    lines = [line for line in pub.stderr.splitlines() if "refused" in line or "ignored" in line]
    assert 1 <= len(lines) <= 3, lines
    assert "not a recipient" in lines[0]
    counted = sum(int(line.split("refused ", 1)[1].split()[0]) for line in lines[1:]
                  if line.split("refused ", 1)[1].split()[0].isdigit())
    # ZeroMQ drops what exceeds the listener's receive high-water mark (1,000): at least that
    # many were refused, and said in at most three lines
    assert 1000 <= counted + 1 <= 5000, lines


# -- 5. old peers on a mixed bus: batches elsewhere, 0.1.2 ACKs named --------------------------


def test_a_single_ack_listener_never_receives_a_batched_ack(make_bus):
    """What a 0.1.2-style listener subscribed to ``<prefix>.<env>.gilmsg.ack`` would receive
    (ZeroMQ prefix matching: every frame whose topic starts with it) while a
    ``gilmsg-tail --batch-acks`` answers bursts of genuinely signed version 4 messages.

    The test's SUB hears everything r1 sends, in order; a frame whose topic starts with the
    single-ACK topic is what the old listener gets. Bursts go out until one was answered with
    a batch (at most 10), each burst's every ACK awaited (single or batched).
    """
    bus = make_bus(["pub", "r1"])
    base = f"{bus.config['topic_prefix']}.{bus.config['environment']}.gilmsg"
    ack_topic = f"{base}.ack"
    raw = Raw(bus, "pub")  # the publisher's endpoint and key; hears r1's endpoint
    old_listener, batches = [], []
    try:
        bus.spawn_tail("r1", "--batch-acks")
        raw.wait_subscriber()
        raw.wait_connected("r1")
        signer = signing.signer_for(bus.config_for("pub"))
        for burst in range(10):
            envs = [signer.sign(wire.new_envelope(f"org.gilmsg.test.v4.t{burst}", {"n": n}, n,
                                                  ["r1"])) for n in range(40)]
            for env in envs:
                raw.pub.send_multipart(wire.encode(env["topic"], env))
            owed = {env["msg_id"] for env in envs}
            while owed:
                topic, envelope = raw.recv(lambda t, e: t.startswith(base), timeout=DEFAULT_WAIT)
                msg = envelope["msg"]
                (old_listener if topic.startswith(ack_topic) else batches).append(msg)
                owed -= {e.get("ack_msg_id") for e in msg.get("acks", [msg])}
            if any("acks" in m for m in batches):
                break
    finally:
        raw.close()
    bad = [m for m in old_listener if "ack_msg_id" not in m]
    assert bad == [], f"bodies a 0.1.2 listener cannot read: {bad[:2]}"
    assert any("acks" in m for m in batches), "no burst was batched: nothing was tested"


def test_a_0_1_2_ack_is_refused_with_a_reason_that_names_it(make_bus):
    bus = make_bus(["pub", "r1"])
    raw = Raw(bus, "r1")  # speaks as r1 from r1's endpoint, as a gilmsg 0.1.2 recipient would
    try:
        pub = spawn_publisher(bus, "pub", timeout=3)
        _topic, message = raw.recv(lambda t, e: e.get("gilmsg_recipients") == ["r1"],
                                   timeout=DEFAULT_WAIT * 3)
        raw.wait_subscriber()
        r1 = signing.signer_for(bus.config_for("r1"))
        ack_topic = f"{bus.config['topic_prefix']}.{bus.config['environment']}.gilmsg.ack"
        old_ack = r1.sign(wire.new_envelope(ack_topic, {"ack_msg_id": message["msg_id"]}, 1))
        for _ in range(3):
            raw.pub.send_multipart(wire.encode(ack_topic, old_ack))
        line = pub.next_line(timeout=60)
    finally:
        raw.close()
    assert line.startswith("failed "), line
    status, reason = json.loads(line.split(" ", 1)[1])["r1"]
    assert status == "missing" and "0.1.2" in reason and "digest mismatch" not in reason
    assert "0.1.2-format ACK" in pub.stderr


# -- 8. Ed25519 identities ------------------------------------------------------------------


def test_ed25519_identities_from_gilmsg_certs_sign_and_validate(make_bus):
    bus = make_bus(["pub", "r1", "watch"])
    for name in ("pub", "r1"):  # re-issued as Ed25519 by the real command
        done = subprocess.run([str(Path(sys.executable).parent / "gilmsg-certs"), "issue",
                               "--ssldir", str(bus.ssldir), "--force", "--key-type", "ed25519",
                               name], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    raw = Raw(bus, "watch")
    try:
        tail = bus.spawn_tail("r1")
        raw.wait_connected("r1")
        report = gilmsg.publish(topic="t", msg={"ed": 1}, modname="v4", recipients=["r1"],
                                ack_timeout=30, **bus.config_for("pub"))
        _topic, ack = raw.recv(is_ack_of(report.msg_id))
    finally:
        raw.close()
    got = json.loads(tail.next_line())
    assert got["msg_id"] == report.msg_id and got[signing.HASH_FIELD] == "ed25519"
    assert ack[signing.HASH_FIELD] == "ed25519"
    validator = signing.Validator(bus.config["ca_cert_location"], bus.config["crl_location"])
    assert validator.validate(ack, accept_sha1=False).ok
    # the scheme must fit the key: an Ed25519 signature claimed as RSA-SHA256 fails
    assert "Ed25519" in validator.validate({**ack, signing.HASH_FIELD: "sha256"}).reason


def test_gilmsg_certs_refuses_an_unknown_key_type(tmp_path):
    done = subprocess.run([str(Path(sys.executable).parent / "gilmsg-certs"), "issue",
                           "--ssldir", str(tmp_path), "--key-type", "dsa", "x"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "dsa" in done.stderr
