"""gilmsg-certs through click's CliRunner, on real files in tmp_path."""

from __future__ import annotations

import ast
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from gilmsg.commands.certs import main
from gilmsg.core.wire import new_envelope
from gilmsg.crypto import certs, signing
from gilmsg.errors import CertificateError


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ssl(tmp_path) -> Path:
    return tmp_path / "ssl"


def test_help_documents_exit_codes():
    result = run("--help")
    assert result.exit_code == 0
    for text in ("Exit status", "2  bad usage", "4  bad configuration", "Example"):
        assert text in result.output


def test_init_creates_ca(ssl):
    result = run("init", "--ssldir", str(ssl))
    assert result.exit_code == 0, result.output
    assert mode(ssl / "ca.key") == 0o600
    ca = x509.load_pem_x509_certificate((ssl / "ca.crt").read_bytes())
    crl = x509.load_pem_x509_crl((ssl / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())
    assert len(crl) == 0
    assert not list(ssl.glob(".*")), "no temporary files left behind"


def test_init_refuses_existing_ca(ssl):
    assert run("init", "--ssldir", str(ssl)).exit_code == 0
    before = (ssl / "ca.crt").read_bytes()
    result = run("init", "--ssldir", str(ssl))
    assert result.exit_code == 4
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert str(ssl / "ca.key") in result.stderr and "--force" in result.stderr
    assert (ssl / "ca.crt").read_bytes() == before
    assert run("init", "--ssldir", str(ssl), "--force").exit_code == 0
    assert (ssl / "ca.crt").read_bytes() != before


def test_issue(ssl):
    run("init", "--ssldir", str(ssl))
    result = run("issue", "alice", "bob", "--ssldir", str(ssl), "--days", "30")
    assert result.exit_code == 0, result.output
    ca = x509.load_pem_x509_certificate((ssl / "ca.crt").read_bytes())
    serials = set()
    for name in ("alice", "bob"):
        assert mode(ssl / f"{name}.key") == 0o600
        cert = x509.load_pem_x509_certificate((ssl / f"{name}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.rfc4514_string() == f"CN={name}"
        span = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert 29 < span.days <= 31
        serials.add(cert.serial_number)
    assert len(serials) == 2
    signer = signing.Signer(str(ssl / "alice.key"), str(ssl / "alice.crt"))
    assert signer.common_name == "alice"


def test_issue_refuses_existing_without_force(ssl):
    run("init", "--ssldir", str(ssl))
    run("issue", "alice", "--ssldir", str(ssl))
    before = (ssl / "alice.crt").read_bytes()
    result = run("issue", "alice", "--ssldir", str(ssl))
    assert result.exit_code == 4
    assert result.stderr == (
        f"gilmsg-certs: error: {ssl / 'alice.key'} already exists: "
        "pass --force (force=True) to replace it\n"
    )
    assert (ssl / "alice.crt").read_bytes() == before
    assert not list(ssl.glob(".*")), "temporary files are removed after a refusal"
    result = run("issue", "alice", "--ssldir", str(ssl), "--force")
    assert result.exit_code == 0
    assert (ssl / "alice.crt").read_bytes() != before
    assert mode(ssl / "alice.key") == 0o600


def test_issue_without_ca(ssl):
    result = run("issue", "alice", "--ssldir", str(ssl))
    assert result.exit_code == 4
    assert "ca.key" in result.stderr and "gilmsg-certs init" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("args", [["issue"], ["issue", "bad/name"], ["issue", "ca"],
                                  ["revoke"], ["nope"], ["issue", "x", "--days", "0"]])
def test_bad_usage_exits_2(ssl, args):
    run("init", "--ssldir", str(ssl))
    result = run(*args, "--ssldir", str(ssl)) if args != ["nope"] else run("nope")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_revoke_updates_crl(ssl):
    run("init", "--ssldir", str(ssl))
    run("issue", "alice", "bob", "--ssldir", str(ssl))
    signed = signing.Signer(str(ssl / "alice.key"), str(ssl / "alice.crt")).sign(
        new_envelope("org.example.dev.t", {}, 1)
    )
    validator = signing.Validator(str(ssl / "ca.crt"), str(ssl / "crl.pem"))
    assert validator.validate(signed).ok
    result = run("revoke", "alice", "--ssldir", str(ssl))
    assert result.exit_code == 0, result.output
    crl = x509.load_pem_x509_crl((ssl / "crl.pem").read_bytes())
    alice = x509.load_pem_x509_certificate((ssl / "alice.crt").read_bytes())
    assert [r.serial_number for r in crl] == [alice.serial_number]
    assert "revoked" in validator.validate(signed).reason
    # revoking twice keeps one entry; revoking bob adds one
    assert run("revoke", "alice", "bob", "--ssldir", str(ssl)).exit_code == 0
    assert len(x509.load_pem_x509_crl((ssl / "crl.pem").read_bytes())) == 2


def test_revoke_unknown_name(ssl):
    run("init", "--ssldir", str(ssl))
    result = run("revoke", "zed", "--ssldir", str(ssl))
    assert result.exit_code == 4 and str(ssl / "zed.crt") in result.stderr


def test_certnames_output_is_a_fedmsg_config(ssl):
    run("init", "--ssldir", str(ssl))
    run("issue", "alice", "bob.host", "--ssldir", str(ssl))
    result = run("certnames", "--ssldir", str(ssl))
    assert result.exit_code == 0, result.output
    namespace: dict = {}
    exec(compile(result.stdout, "fedmsg.d/certs.py", "exec"), namespace)
    cfg = namespace["config"]
    assert cfg["certnames"] == {"alice": "alice", "bob.host": "bob.host"}
    assert cfg["ssldir"] == str(ssl.resolve())
    assert cfg["ca_cert_location"] == str(ssl.resolve() / "ca.crt")
    assert cfg["crl_location"] == str(ssl.resolve() / "crl.pem")
    ast.parse(result.stdout)
    assert certs.certnames(ssl) == cfg["certnames"]
    # the config signs and validates as printed
    signed = signing.sign(new_envelope("t", {}, 1), name="bob.host", **cfg)
    assert signing.validate(signed, **cfg).signer == "bob.host"


def test_certnames_without_ca(ssl):
    result = run("certnames", "--ssldir", str(ssl))
    assert result.exit_code == 4 and "gilmsg-certs init" in result.stderr


def test_dev_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run("dev", "alice", "bob")
    assert first.exit_code == 0, first.output
    ssl = tmp_path / "dev-certs"  # the default --ssldir
    files = {p.name: p.read_bytes() for p in ssl.iterdir()}
    assert set(files) == {"ca.key", "ca.crt", "crl.pem", "alice.key", "alice.crt",
                          "bob.key", "bob.crt"}
    second = run("dev", "alice", "bob", "carol")
    assert second.exit_code == 0, second.output
    assert all((ssl / name).read_bytes() == data for name, data in files.items())
    assert (ssl / "carol.crt").exists()
    namespace: dict = {}
    exec(second.stdout, namespace)
    assert set(namespace["config"]["certnames"]) == {"alice", "bob", "carol"}


def test_ssldir_from_environment(tmp_path):
    ssl = tmp_path / "env-ssl"
    assert run("init", env={"GILMSG_SSLDIR": str(ssl)}).exit_code == 0
    assert (ssl / "ca.crt").exists()


def test_crl_command_refreshes(ssl):
    run("init", "--ssldir", str(ssl))
    before = x509.load_pem_x509_crl((ssl / "crl.pem").read_bytes())
    result = run("crl", "--ssldir", str(ssl), "--days", "90")
    assert result.exit_code == 0, result.output
    after = x509.load_pem_x509_crl((ssl / "crl.pem").read_bytes())
    assert after.next_update_utc > before.next_update_utc
    number = after.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == 2


def test_library_refuses_overwrite(ssl):
    certs.init_ca(ssl)
    certs.issue(ssl, "alice")
    with pytest.raises(CertificateError, match="alice.key already exists"):
        certs.issue(ssl, "alice")


def test_dev_writes_a_complete_fedmsg_d_for_named_services(tmp_path):
    result = run("dev", "alice", "bob", "--ssldir", str(tmp_path / "ssl"), "--fedmsg-d",
                 str(tmp_path / "fedmsg.d"))
    assert result.exit_code == 0, result.output
    path = tmp_path / "fedmsg.d" / "gilmsg.py"
    assert result.stdout.startswith(f"wrote {path}")
    namespace: dict = {}
    exec(path.read_text(), namespace)
    cfg = namespace["config"]
    assert cfg["certnames"] == {"alice": "alice", "bob": "bob"}
    assert set(cfg["endpoints"]) == {"alice", "bob", "relay_outbound"}
    ports = [int(e[0].rsplit(":", 1)[1]) for e in cfg["endpoints"].values()]
    assert len(set(ports)) == 3 and all(
        e[0].startswith("tcp://127.0.0.1:") for e in cfg["endpoints"].values())
    assert cfg["relay_inbound"][0].startswith("tcp://127.0.0.1:")
    assert Path(cfg["ca_cert_location"]).exists() and Path(cfg["crl_location"]).exists()
    # The written bus signs and validates as is.
    signed = signing.sign(new_envelope("org.gilmsg.dev.t", {}, 1), **cfg, name="alice")
    assert signing.validate(signed, **cfg).signer == "alice"


def test_dev_refuses_relay_names_for_a_fedmsg_d(tmp_path):
    result = run("dev", "relay_inbound", "--ssldir", str(tmp_path / "ssl"), "--fedmsg-d",
                 str(tmp_path / "d"))
    assert result.exit_code == 2 and "reserved for fedmsg-relay" in result.stderr
