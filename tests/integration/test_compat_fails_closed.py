"""gilmsg.crypto.fedmsg_compat fails closed and says why (issue 19, findings 4 and 5).

Stock ``fedmsg-tail --validate`` processes with the compat switch, real certificates (and one
the CA signs with SHA-1 through the ``openssl`` command), real ZeroMQ.
"""

from __future__ import annotations

import base64
import pprint
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gilmsg
from gilmsg.core import wire
from gilmsg.crypto import fedmsg_compat, signing
from gilmsg.testing import DEFAULT_WAIT, DevBus

BIN = Path(sys.executable).parent
COMPAT_LINE = "import gilmsg.crypto.fedmsg_compat  # noqa: F401\n"


def write(bus: DevBus, name: str, **changes) -> Path:
    """A config file with the compat switch: the bus config with ``changes`` (None deletes)."""
    config = dict(bus.config)
    for key, value in changes.items():
        if value is _DELETE:
            config.pop(key, None)
        else:
            config[key] = value
    path = bus.root / name
    path.write_text(COMPAT_LINE + "config = " + pprint.pformat(config) + "\n")
    return path


_DELETE = object()


def stock_tail(bus: DevBus, path: Path):
    return bus.spawn([str(BIN / "fedmsg-tail"), "--config-filename", str(path), "--validate"])


def output(proc) -> str:
    """Everything ``proc`` wrote so far (fedmsg logs on stdout, warnings go to stderr)."""
    while not proc.lines.empty():
        proc.seen.append(proc.lines.get())
    return "\n".join(proc.seen) + "\n" + proc.stderr


def is_shown(line: str) -> bool:
    """Is this stdout line of fedmsg-tail a message it shows as valid? (fedmsg-tail prints them
    through its ``fedmsg.commands`` logger; refusals come from ``fedmsg.crypto.gilmsg``.)"""
    return "fedmsg.commands" in line and "org.gilmsg.test.compat.t" in line


def shown(proc) -> list[str]:
    """The messages ``proc`` (fedmsg-tail) printed as valid so far."""
    output(proc)
    return [line for line in proc.seen if is_shown(line)]


def publish_until_output(bus: DevBus, proc, text: str) -> None:
    """Publish plain signed messages until ``text`` shows up in ``proc``'s output."""
    deadline = time.monotonic() + DEFAULT_WAIT * 3
    while text not in output(proc):
        assert time.monotonic() < deadline, output(proc)[-3000:]
        assert proc.proc.poll() is None, output(proc)[-3000:]
        gilmsg.publish(topic="t", msg={"n": 1}, modname="compat", **bus.config_for("pub"))
        time.sleep(0.1)


def invalid_version_ca(ca_pem: bytes) -> bytes:
    """The CA certificate with its X.509 version field set to an invalid value (v4)."""
    der = bytearray(base64.b64decode(b"".join(ca_pem.split(b"\n")[1:-2])))
    at = der.index(b"\xa0\x03\x02\x01\x02")
    der[at + 4] = 3
    body = base64.encodebytes(bytes(der))
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


@pytest.mark.timeout(120)
def test_a_ca_with_an_invalid_version_refuses_with_the_reason_not_a_traceback(make_bus):
    bus = make_bus(["pub", "t1"])
    broken = bus.root / "broken-ca.crt"
    broken.write_bytes(invalid_version_ca(Path(bus.config["ca_cert_location"]).read_bytes()))
    tail = stock_tail(bus, write(bus, "tail.py", ca_cert_location=str(broken)))
    publish_until_output(bus, tail, "InvalidVersion")
    assert tail.proc.poll() is None, tail.stderr[-3000:]
    assert "Traceback" not in output(tail), output(tail)[-3000:]
    assert shown(tail) == []  # nothing was shown as valid


@pytest.mark.timeout(120)
def test_no_crl_location_key_refuses_and_says_once_how_to_opt_out(make_bus):
    bus = make_bus(["pub", "t1", "t2"])
    refusing = stock_tail(bus, write(bus, "no-crl.py", crl_location=_DELETE))
    opted_out = stock_tail(bus, write(bus, "crl-none.py", crl_location=None))
    publish_until_output(bus, refusing, "crl_location = None")
    for _ in range(3):
        gilmsg.publish(topic="t", msg={"n": 2}, modname="compat", **bus.config_for("pub"))
    opted_out.wait_for(is_shown)  # without revocation, on purpose
    assert output(refusing).count("crl_location = None") == 1, output(refusing)[-3000:]
    assert shown(refusing) == [] and refusing.proc.poll() is None


@pytest.mark.timeout(120)
def test_crypto_validate_backends_is_honoured(make_bus):
    bus = make_bus(["pub", "t1"])
    tail = stock_tail(bus, write(bus, "gpg-only.py", crypto_validate_backends=["gpg"]))
    publish_until_output(bus, tail, "disallowed by crypto_validate_backends")
    assert shown(tail) == [] and tail.proc.poll() is None


def _sha1_service_cert(bus: DevBus, name: str) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a SHA-1-signed certificate")
    ssl = bus.ssldir
    key, csr, crt = ssl / f"{name}.key", ssl / f"{name}.csr", ssl / f"{name}.crt"
    subprocess.run([openssl, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(csr), "-subj", f"/CN={name}"], check=True, capture_output=True,
                   timeout=60)
    subprocess.run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ssl / "ca.crt"),
                    "-CAkey", str(ssl / "ca.key"), "-set_serial", "4242", "-days", "2",
                    "-sha1", "-out", str(crt)], check=True, capture_output=True, timeout=60)
    return str(key), str(crt)


def test_a_sha1_signed_certificate_is_refused_with_that_reason_unless_opted_in(make_bus):
    bus = make_bus(["pub"])
    key, crt = _sha1_service_cert(bus, "legacy")
    signed = signing.Signer(key, crt).sign(wire.new_envelope("org.gilmsg.test.x.t", {}, 1))
    ca, crl = bus.config["ca_cert_location"], bus.config["crl_location"]
    verdict = signing.Validator(ca, crl).validate(signed)
    assert not verdict.ok and "signed with SHA-1" in verdict.reason, verdict
    assert "gilmsg.accept_sha1_certificates" in verdict.reason
    assert signing.Validator(ca, crl, accept_sha1_certificates=True).validate(signed).ok
    # through fedmsg's entry point, as a legacy fleet would configure it
    config = {**bus.config_for("pub"), "gilmsg.accept_sha1_certificates": True}
    assert fedmsg_compat.validate(dict(signed), **config)
    assert not fedmsg_compat.validate(dict(signed), **bus.config_for("pub"))
    # a tampered message with the legacy certificate still fails
    assert not signing.Validator(ca, crl, accept_sha1_certificates=True).validate(
        {**signed, "msg": {"evil": 1}}).ok


def test_bytes_credentials_are_decoded_as_fedmsg_does(make_bus):
    bus = make_bus(["pub"])
    config = bus.config_for("pub")
    signed = signing.sign(wire.new_envelope("org.gilmsg.test.x.t", {}, 1), **config)
    as_bytes = {**signed, "signature": signed["signature"].encode(),
                "certificate": signed["certificate"].encode()}
    assert fedmsg_compat.validate(as_bytes, **config)
    assert not fedmsg_compat.validate({**as_bytes, "signature": b"\xff\xfe"}, **config)
