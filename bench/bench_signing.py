"""Per-message cost of signing and validating: gilmsg.crypto.signing vs fedmsg's stock x509 code.

    .venv/bin/python bench/bench_signing.py [--n 2000] [--fedmsg-n 300] [--no-fedmsg]

Protocol 4 schemes (issue 19) are measured first, sign and verify per message: RSA-2048
PKCS#1 v1.5 over SHA-1 (fedmsg's), over SHA-256, and Ed25519.

Certificates are generated into a temporary directory. fedmsg's half runs in the side venv of
the interop tests (``.venv-interop``, built on first use; its x509 backend does not import on the
main venv's pyOpenSSL/cryptography), on the same certificates and the same kind of envelope.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gilmsg.core.wire import new_envelope  # noqa: E402
from gilmsg.crypto import certs, signing  # noqa: E402
from gilmsg.testing import pki  # noqa: E402


def envelope(i: int) -> dict:
    """A typical unsigned fedmsg envelope, numbered ``i``."""
    body = {"package": "gilmsg", "version": "0.2.0", "build": i, "tags": ["a", "b", "c"]}
    return new_envelope("org.example.dev.bench.build.complete", body, i, ["bob", "carol"])


def summary(label: str, seconds: list[float]) -> str:
    """One result line: mean, p50 and p99 in ms, and messages per second."""
    ms = sorted(s * 1e3 for s in seconds)
    p50 = ms[len(ms) // 2]
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{label:<44} n={len(ms):<5} mean {statistics.fmean(ms):7.3f} ms  "
        f"p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  ({1e3 / statistics.fmean(ms):8.0f} msg/s)"
    )


def timed(fn: Callable[[Any], Any], items: Iterable[Any]) -> tuple[list[float], list[Any]]:
    """Seconds each ``fn(item)`` took, and what each returned."""
    times, out = [], []
    for item in items:
        t = time.perf_counter()
        out.append(fn(item))
        times.append(time.perf_counter() - t)
    return times, out


def main() -> int:
    """Run the benchmark; prints its lines and returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="messages for gilmsg")
    parser.add_argument("--fedmsg-n", type=int, default=300,
                        help="messages for fedmsg (its signing is slow)")
    parser.add_argument("--no-fedmsg", action="store_true", help="skip fedmsg's half")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gilmsg-bench-") as tmp:
        p = pki.make_pki(Path(tmp) / "ssl", ("alice",))
        envs = [envelope(i) for i in range(args.n)]

        signer = signing.Signer(p.key("alice"), p.cert("alice"))
        validator = signing.Validator(p.ca, p.crl)
        signer.sign(envs[0])
        validator.check()

        certs.issue(p.ssldir, "edna", key_type="ed25519")
        edna = signing.Signer(str(p.ssldir / "edna.key"), str(p.ssldir / "edna.crt"))
        schemes = [("RSA-2048 SHA-1", signer, "sha1"), ("RSA-2048 SHA-256", signer, "sha256"),
                   ("Ed25519", edna, "sha1")]  # an Ed25519 key signs Ed25519 whatever is asked
        print(f"python {sys.version.split()[0]}; per message, warm caches (one certificate)")
        for label, who, hash_name in schemes:
            who.sign(envs[0], hash_name)
            s_t, done = timed(lambda env, w=who, h=hash_name: w.sign(env, h), envs)
            v_t, oks = timed(validator.validate, done)
            assert all(v.ok for v in oks), oks[0]
            both = [a + b for a, b in zip(s_t, v_t, strict=True)]
            print(summary(f"{label:<17} sign", s_t))
            print(summary(f"{label:<17} verify", v_t))
            print(summary(f"{label:<17} sign+verify", both))

        sign_t, signed = timed(signer.sign, envs)
        val_t, verdicts = timed(validator.validate, signed)
        assert all(v.ok for v in verdicts)

        def cold(env):  # a certificate seen for the first time: chain + CRL check too
            validator.forget_certificates()
            return validator.validate(env)

        cold_t, _ = timed(cold, signed[: max(1, args.n // 10)])

        print(f"python {sys.version.split()[0]}, RSA 2048, envelope {len(str(signed[0]))} chars")
        print(summary("gilmsg   sign", sign_t))
        print(summary("gilmsg   validate (with CRL)", val_t))
        print(summary("gilmsg   validate, certificate not cached", cold_t))

        if args.no_fedmsg:
            return 0
        job = {
            "op": "bench",
            "n": args.fedmsg_n,
            "envelope": envs[0],
            "ssldir": str(p.ssldir),
            "certname": "alice",
            "ca": p.ca,
            "crl": p.crl,
        }
        try:
            [result] = pki.run_fedmsg([job], timeout=600)
        except pki.InteropUnavailable as exc:
            print(f"fedmsg: not measured ({exc})")
            return 0
        print(summary("fedmsg   sign (fedmsg.crypto.sign, stock)", result["sign"]))
        print(summary("fedmsg   validate (fedmsg.crypto.validate)", result["validate"]))
        ratio = statistics.fmean(result["sign"]) / statistics.fmean(sign_t)
        print(f"gilmsg signs {ratio:.0f}x faster than stock fedmsg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
