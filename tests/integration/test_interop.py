"""Interoperability with fedmsg 1.1.7's own x509 code, both ways.

fedmsg's validator needs pyOpenSSL 24.2.1 + cryptography 43 (on the main venv's newer versions
its x509 backend does not import), so it runs in a side venv built once by
:func:`tests.pki.interop_python` (``.venv-interop``, or ``$GILMSG_INTEROP_VENV``). If that venv
cannot be built (no network, pip failure) these tests are skipped with the reason.

Run only these: ``pytest -m interop``; skip them: ``pytest -m "not interop"``.
"""

from __future__ import annotations

import datetime as dt

import pytest

from gilmsg.core.wire import new_envelope
from gilmsg.crypto import certs, signing
from gilmsg.testing import pki

# Building the side venv (first use only) happens inside the first test's setup: give it the
# builder's own bound (pki.interop_python) rather than the suite's per-test timeout.
pytestmark = [pytest.mark.interop, pytest.mark.timeout(1000)]


@pytest.fixture(scope="module")
def fedmsg_python() -> str:
    try:
        return pki.interop_python()
    except pki.InteropUnavailable as exc:
        pytest.skip(f"fedmsg interop venv unavailable: {exc}")


@pytest.fixture(scope="module")
def world(tmp_path_factory, fedmsg_python):
    """Two PKIs (ours and a foreign CA) plus a third where alice is revoked."""
    root = tmp_path_factory.mktemp("interop")
    main = pki.make_pki(root / "main", ("alice", "bob"))
    now = dt.datetime.now(dt.UTC)
    certs.issue(main.ssldir, "old", not_before=now - dt.timedelta(days=30),
                not_after=now - dt.timedelta(days=1))
    revoked = main.copy(root / "revoked")
    certs.revoke(revoked.ssldir, "alice")
    foreign = pki.make_pki(root / "foreign", ("alice",))
    return {"main": main, "revoked": revoked, "foreign": foreign}


def envelope(text: str = "hello"):
    return new_envelope("org.example.dev.interop.test", {"text": text, "n": [1, 2.5, None]}, 3,
                        ["bob"], username="tester")


def _validate_job(p: pki.Pki, env) -> dict:
    return {"op": "validate", "envelope": env, "ca": p.ca, "crl": p.crl}


def test_gilmsg_signed_validates_under_fedmsg(world):
    main, revoked, foreign = world["main"], world["revoked"], world["foreign"]
    good = signing.Signer(main.key("alice"), main.cert("alice")).sign(envelope())
    tampered = dict(good, msg={"text": "evil"})
    from_foreign = signing.Signer(foreign.key("alice"), foreign.cert("alice")).sign(envelope())
    expired = signing.Signer(main.key("old"), main.cert("old")).sign(envelope())
    jobs = [
        _validate_job(main, good),
        _validate_job(main, tampered),
        _validate_job(main, from_foreign),
        _validate_job(main, expired),
        _validate_job(revoked, good),  # another path: fedmsg caches CA/CRL per location
    ]
    assert pki.run_fedmsg(jobs) == [True, False, False, False, False]
    # gilmsg agrees on every one of them
    ours = [
        signing.Validator(job["ca"], job["crl"]).validate(job["envelope"]).ok for job in jobs
    ]
    assert ours == [True, False, False, False, False]


def test_fedmsg_signed_validates_under_gilmsg(world):
    main = world["main"]
    sign_jobs = [
        {"op": "sign", "envelope": envelope(t), "ssldir": str(main.ssldir), "certname": name}
        for t, name in (("one", "alice"), ("two", "bob"), ("three", "old"))
    ]
    alice, bob, old = pki.run_fedmsg(sign_jobs)
    v = signing.Validator(main.ca, main.crl)
    assert v.validate(alice) == signing.Verdict(True, "alice", "")
    assert v.validate(bob) == signing.Verdict(True, "bob", "")
    assert v.validate(old) == signing.Verdict(False, "old", "certificate has expired")
    assert v.validate(dict(alice, topic="org.example.dev.other")).reason == (
        "signature does not match the message"
    )
    rv = signing.Validator(world["revoked"].ca, world["revoked"].crl)
    assert "revoked" in rv.validate(alice).reason
    assert rv.validate(bob).ok
    assert not signing.Validator(world["foreign"].ca, world["foreign"].crl).validate(bob).ok


def test_same_bytes_as_fedmsg(world):
    """PKCS#1 v1.5 is deterministic: both implementations must produce identical envelopes."""
    main = world["main"]
    env = envelope("byte for byte")
    [theirs] = pki.run_fedmsg(
        [{"op": "sign", "envelope": env, "ssldir": str(main.ssldir), "certname": "alice"}]
    )
    ours = signing.Signer(main.key("alice"), main.cert("alice")).sign(env)
    assert ours == theirs
