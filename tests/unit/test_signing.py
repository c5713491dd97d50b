"""gilmsg.crypto.signing against real certificates made by gilmsg.crypto.certs (no crypto mocks)."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from gilmsg.core.wire import new_envelope
from gilmsg.crypto import certs, signing
from gilmsg.errors import CertificateError, ConfigError
from gilmsg.testing import pki

UTC = dt.UTC


@pytest.fixture(scope="module")
def base_pki(tmp_path_factory) -> pki.Pki:
    return pki.make_pki(tmp_path_factory.mktemp("pki") / "ssl", ("alice", "bob", "carol"))


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory) -> pki.Pki:
    return pki.make_pki(tmp_path_factory.mktemp("foreign") / "ssl", ("alice",))


@pytest.fixture
def p(base_pki, tmp_path) -> pki.Pki:
    """A private copy of the PKI that a test may modify."""
    return base_pki.copy(tmp_path / "ssl")


def envelope(**overrides):
    env = new_envelope("org.example.dev.test.hello", {"text": "hi", "n": [1, 2]}, 1, ["bob"])
    env.update(overrides)
    return env


def validator(p: pki.Pki, tmp_path: Path | None = None) -> signing.Validator:
    return signing.Validator(p.ca, p.crl, cache_dir=str(tmp_path / "cache") if tmp_path else None)


# -- round trip ------------------------------------------------------------------------------


def test_round_trip(p):
    signer = signing.Signer(p.key("alice"), p.cert("alice"))
    env = envelope()
    before = copy.deepcopy(env)
    signed = signer.sign(env)
    assert env == before, "sign() must not modify its input"
    assert signed is not env
    assert signed["crypto"] == "x509"
    assert {k: v for k, v in signed.items() if k not in ("crypto", "signature", "certificate")} \
        == env
    assert signer.common_name == "alice"
    assert validator(p).validate(signed) == signing.Verdict(True, "alice", "")


def test_wire_format_wrapping(p):
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    for field in ("signature", "certificate"):
        text = signed[field]
        assert text.endswith("\n")
        lines = text[:-1].split("\n")
        assert all(len(line) == 76 for line in lines[:-1])
        assert 0 < len(lines[-1]) <= 76
    pem = base64.b64decode(signed["certificate"])
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert pem == Path(p.cert("alice")).read_bytes()
    assert len(base64.b64decode(signed["signature"])) == 256  # RSA 2048


def test_resigning_a_signed_envelope(p):
    signer = signing.Signer(p.key("alice"), p.cert("alice"))
    first = signer.sign(envelope())
    again = signing.Signer(p.key("bob"), p.cert("bob")).sign(first)
    assert validator(p).validate(again) == signing.Verdict(True, "bob", "")


def test_module_functions_use_config(p):
    cfg = p.config("alice")
    signed = signing.sign(envelope(), **cfg)
    assert signing.validate(signed, **cfg).signer == "alice"
    assert signing.signer_for(cfg) is signing.signer_for(dict(cfg))
    assert signing.validator_for(cfg) is signing.validator_for(dict(cfg))


@pytest.mark.parametrize(
    "field, value",
    [
        ("topic", "org.example.dev.test.other"),
        ("msg", {"text": "hi!", "n": [1, 2]}),
        ("msg_id", "2026-00000000-0000-0000-0000-000000000000"),
        ("timestamp", 0),
        ("gilmsg_recipients", ["mallory"]),
        ("crypto", "gpg"),
    ],
)
def test_tampering_rejected(p, field, value):
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    signed[field] = value
    verdict = validator(p).validate(signed)
    assert verdict == signing.Verdict(False, "alice", "signature does not match the message")


def test_added_field_rejected(p):
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    signed["extra"] = 1
    assert not validator(p).validate(signed).ok


def test_certificate_swapped_rejected(p):
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    bob = signing.Signer(p.key("bob"), p.cert("bob")).sign(envelope())
    signed["certificate"] = bob["certificate"]
    verdict = validator(p).validate(signed)
    assert not verdict.ok and verdict.signer == "bob"


# -- trust -----------------------------------------------------------------------------------


def test_wrong_ca_rejected(p, foreign_pki):
    signed = signing.Signer(foreign_pki.key("alice"), foreign_pki.cert("alice")).sign(envelope())
    verdict = validator(p).validate(signed)
    assert verdict == signing.Verdict(False, "alice", "certificate is not issued by the trusted CA")
    assert validator(foreign_pki).validate(signed).ok


def test_ca_certificate_itself_rejected_as_signer(p):
    # The self-signed CA is "directly issued by" itself; it still must not pass as a service.
    signed = signing.Signer(str(p.ssldir / "ca.key"), p.ca).sign(envelope())
    verdict = validator(p).validate(signed)
    assert verdict.ok is False and "CA certificate" in verdict.reason


def test_revoked_rejected_without_restart(p):
    v = validator(p)
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    other = signing.Signer(p.key("bob"), p.cert("bob")).sign(envelope())
    assert v.validate(signed).ok
    certs.revoke(p.ssldir, "alice")
    verdict = v.validate(signed)
    assert not verdict.ok and verdict.signer == "alice" and "revoked" in verdict.reason
    assert v.validate(other).ok


def test_no_crl_configured(p):
    certs.revoke(p.ssldir, "alice")
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    assert signing.Validator(p.ca, None).validate(signed).ok
    assert signing.validate(signed, ca_cert_location=p.ca, crl_location=None).ok
    assert signing.validate(signed, ca_cert_location=p.ca).ok


def test_expired_and_not_yet_valid_rejected(p):
    now = dt.datetime.now(UTC)
    certs.issue(p.ssldir, "old", not_before=now - dt.timedelta(days=10),
                not_after=now - dt.timedelta(days=1))
    certs.issue(p.ssldir, "future", not_before=now + dt.timedelta(days=1),
                not_after=now + dt.timedelta(days=10))
    v = validator(p)
    old = signing.Signer(p.key("old"), p.cert("old")).sign(envelope())
    future = signing.Signer(p.key("future"), p.cert("future")).sign(envelope())
    assert v.validate(old) == signing.Verdict(False, "old", "certificate has expired")
    assert v.validate(future) == signing.Verdict(False, "future", "certificate is not valid yet")


def test_ca_replaced_on_disk_is_picked_up(p):
    v = validator(p)
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    assert v.validate(signed).ok
    certs.init_ca(p.ssldir, force=True)  # a new CA (and CRL) in place of the old one
    assert v.validate(signed).reason == "certificate is not issued by the trusted CA"


def test_key_rotation_on_disk(p):
    cfg = p.config("alice")
    signer = signing.signer_for(cfg)
    first = signing.sign(envelope(), **cfg)
    certs.issue(p.ssldir, "alice", force=True)
    second = signing.sign(envelope(), **cfg)
    assert signing.signer_for(cfg) is signer
    assert second["certificate"] != first["certificate"]
    assert base64.b64decode(second["certificate"]) == Path(p.cert("alice")).read_bytes()
    v = validator(p)
    assert v.validate(second) == signing.Verdict(True, "alice", "")
    assert v.validate(first).ok  # the old certificate was not revoked


def test_key_not_matching_certificate(p):
    with pytest.raises(CertificateError) as err:
        signing.Signer(p.key("alice"), p.cert("bob"))
    assert p.key("alice") in str(err.value) and p.cert("bob") in str(err.value)


def test_mismatch_after_reload_raises(p):
    signer = signing.Signer(p.key("alice"), p.cert("alice"))
    shutil.copy(p.cert("bob"), p.cert("alice"))
    with pytest.raises(CertificateError, match="does not match"):
        signer.sign(envelope())


# -- files and configuration -----------------------------------------------------------------


@pytest.mark.parametrize("which", ["key", "cert"])
@pytest.mark.parametrize("damage", ["missing", "directory", "not-pem", "empty"])
def test_unusable_key_or_cert(p, which, damage):
    path = p.key("alice") if which == "key" else p.cert("alice")
    _damage(path, damage)
    with pytest.raises(CertificateError) as err:
        signing.Signer(p.key("alice"), p.cert("alice"))
    assert path in str(err.value)


@pytest.mark.parametrize("which", ["ca", "crl"])
@pytest.mark.parametrize("damage", ["missing", "directory", "not-pem"])
def test_unusable_ca_or_crl(p, which, damage):
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    path = p.ca if which == "ca" else p.crl
    _damage(path, damage)
    v = validator(p)
    with pytest.raises(CertificateError) as err:
        v.check()
    assert path in str(err.value)
    with pytest.raises(CertificateError):
        v.validate(signed)


def test_ca_or_crl_broken_after_load(p):
    v = validator(p)
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    assert v.validate(signed).ok
    os.unlink(p.crl)
    with pytest.raises(CertificateError, match=p.crl):
        v.validate(signed)


def test_crl_past_next_update(p):
    now = dt.datetime.now(UTC)
    certs.write_crl(p.ssldir, last_update=now - dt.timedelta(days=40),
                    next_update=now - dt.timedelta(days=10))
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    v = validator(p)
    with pytest.raises(CertificateError, match="next-update"):
        v.check()
    with pytest.raises(CertificateError, match="next-update"):
        v.validate(signed)
    certs.write_crl(p.ssldir)  # a fresh CRL is picked up without a restart
    assert v.validate(signed).ok


def test_crl_in_memory_goes_stale(p):
    v = validator(p)
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    assert v.validate(signed).ok
    v._clock = lambda: (dt.datetime.now(UTC) + dt.timedelta(days=31)).timestamp()
    with pytest.raises(CertificateError, match="next-update"):
        v.validate(signed)


def test_crl_signed_by_another_ca(p, foreign_pki):
    v = signing.Validator(p.ca, foreign_pki.crl)
    with pytest.raises(CertificateError, match="not signed by CA"):
        v.check()


def test_missing_certnames_entry(p):
    cfg = p.config("dave")
    with pytest.raises(ConfigError) as err:
        signing.sign(envelope(), **cfg)
    assert type(err.value) is ConfigError and "certnames['dave']" in str(err.value)


def test_missing_ssldir(p):
    cfg = p.config("alice")
    del cfg["ssldir"]
    with pytest.raises(ConfigError, match="ssldir"):
        signing.signer_for(cfg)


def test_missing_ca_location_is_config_error(p):
    cfg = p.config("alice")
    del cfg["ca_cert_location"]
    with pytest.raises(ConfigError, match="ca_cert_location") as err:
        signing.validate(envelope(), **cfg)
    assert type(err.value) is ConfigError


def _damage(path: str, how: str) -> None:
    os.unlink(path)
    if how == "directory":
        os.mkdir(path)
    elif how == "not-pem":
        Path(path).write_text("this is not PEM\n")
    elif how == "empty":
        Path(path).write_bytes(b"")


# -- malformed envelopes ---------------------------------------------------------------------


def _malformed_cases(signed):
    def without(field):
        return {k: v for k, v in signed.items() if k != field}

    not_a_cert = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    return {
        "no signature": without("signature"),
        "no certificate": without("certificate"),
        "unsigned": without("signature") | {"certificate": None},
        "signature int": {**signed, "signature": 12},
        "certificate list": {**signed, "certificate": ["x"]},
        "signature bytes": {**signed, "signature": signed["signature"].encode()},
        "signature bad b64": {**signed, "signature": "!!not base64!!"},
        "signature bad padding": {**signed, "signature": "abc"},
        "signature empty": {**signed, "signature": ""},
        "certificate bad b64": {**signed, "certificate": "%%%"},
        "certificate not pem": {**signed, "certificate": base64.b64encode(b"hello").decode()},
        "certificate garbage pem": {**signed, "certificate": not_a_cert.decode()},
        "certificate empty": {**signed, "certificate": ""},
        "signature truncated": {**signed, "signature": signed["signature"][:40]},
        "not json": {**signed, "msg": object()},
        "not a mapping": ["signature", "certificate"],
        "none": None,
    }


def test_malformed_envelopes_never_raise(p):
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    v = validator(p)
    for name, case in _malformed_cases(signed).items():
        verdict = v.validate(case)
        assert isinstance(verdict, signing.Verdict), name
        assert verdict.ok is False, name
        assert verdict.reason, name
    assert v.validate(signed).ok  # the cache was not poisoned by the bad ones


# -- CA and CRL over HTTP --------------------------------------------------------------------


def test_ca_and_crl_over_http(p, tmp_path):
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    cache = tmp_path / "cache"
    with pki.serve(p.ssldir) as server:
        v = signing.Validator(server.url("ca.crt"), server.url("crl.pem"), cache_dir=str(cache))
        assert v.validate(signed).ok
        assert sorted(server.requests) == ["/ca.crt", "/crl.pem"]
        assert len(list(cache.glob("*.pem"))) == 2
        assert v.validate(signed).ok
        assert len(server.requests) == 2, "downloads are cached"
    # Server gone: a new validator with the same cache directory works from the disk cache...
    again = signing.Validator(server.url("ca.crt"), server.url("crl.pem"), cache_dir=str(cache))
    assert again.validate(signed).ok
    # ...one without a cache fails loudly, naming the URL.
    fresh = signing.Validator(
        server.url("ca.crt"), server.url("crl.pem"), cache_dir=str(tmp_path / "empty")
    )
    with pytest.raises(CertificateError, match=r"http://127\.0\.0\.1:\d+/ca\.crt"):
        fresh.check()
    with pytest.raises(CertificateError):
        fresh.validate(signed)


def test_http_not_found_is_an_error(p, tmp_path):
    with pki.serve(p.ssldir) as server:
        v = signing.Validator(server.url("ca.crt"), server.url("nope.pem"),
                              cache_dir=str(tmp_path / "c"))
        with pytest.raises(CertificateError, match="nope.pem"):
            v.check()


def test_crl_refetched_after_next_update(p, tmp_path):
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    with pki.serve(p.ssldir) as server:
        v = signing.Validator(server.url("ca.crt"), server.url("crl.pem"),
                              cache_dir=str(tmp_path / "cache"))
        assert v.validate(signed).ok
        certs.revoke(p.ssldir, "alice")  # published, but the cached CRL is still current
        assert v.validate(signed).ok
        assert server.requests.count("/crl.pem") == 1
        # 31 days later the cached CRL (30 days) is past its next update: fetched again.
        certs.write_crl(p.ssldir, days=60)
        v._clock = lambda: (dt.datetime.now(UTC) + dt.timedelta(days=31)).timestamp()
        verdict = v.validate(signed)
        assert server.requests.count("/crl.pem") == 2
        assert not verdict.ok and "revoked" in verdict.reason
        assert server.requests.count("/ca.crt") == 1


def test_stale_crl_in_disk_cache_is_refetched(p, tmp_path):
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    cache = tmp_path / "cache"
    now = dt.datetime.now(UTC)
    with pki.serve(p.ssldir) as server:
        first = signing.Validator(server.url("ca.crt"), server.url("crl.pem"),
                                  cache_dir=str(cache))
        assert first.validate(signed).ok
        # The server now only has a stale CRL: after next-update a validator must refuse.
        certs.write_crl(p.ssldir, last_update=now - dt.timedelta(days=40),
                        next_update=now - dt.timedelta(days=10))
        first._clock = lambda: (now + dt.timedelta(days=31)).timestamp()
        with pytest.raises(CertificateError, match="next-update"):
            first.validate(signed)
        # A process starting later with that stale CRL cached on disk fetches a fresh one.
        certs.write_crl(p.ssldir)
        later = signing.Validator(server.url("ca.crt"), server.url("crl.pem"),
                                  cache_dir=str(cache))
        assert later.validate(signed).ok


def test_crl_fetch_failure_when_stale(p, tmp_path):
    signed = signing.Signer(p.key("alice"), p.cert("alice")).sign(envelope())
    with pki.serve(p.ssldir) as server:
        v = signing.Validator(server.url("ca.crt"), server.url("crl.pem"),
                              cache_dir=str(tmp_path / "cache"))
        assert v.validate(signed).ok
    v._clock = lambda: (dt.datetime.now(UTC) + dt.timedelta(days=31)).timestamp()
    with pytest.raises(CertificateError, match=r"cannot download CRL from http://127\.0\.0\.1"):
        v.validate(signed)


@pytest.mark.parametrize("config,signer,allowed", [
    ({}, "anyone", True),
    ({"routing_nitpicky": True}, "anyone", False),
    ({"routing_policy": {"org.x.t": ["pub"]}}, "pub", True),
    ({"routing_policy": {"org.x.t": ["pub"]}}, "mallory", False),
    ({"routing_policy": {"org.x.other": ["pub"]}}, "mallory", True),
    ({"routing_policy": {"org.x.other": ["pub"]}, "routing_nitpicky": True}, "pub", False),
])
def test_routing_allows_follows_fedmsg_policy(config, signer, allowed):
    assert signing.routing_allows("org.x.t", signer, config) is allowed
