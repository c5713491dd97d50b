"""Test helpers: real PKIs on disk, a local HTTP server, fedmsg's own x509 in a side venv.

A plain module: ``from gilmsg.testing import pki``. ``bench/bench_signing.py`` uses the side-venv
part too.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gilmsg.crypto import certs

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# PKIs


@dataclass
class Pki:
    """A CA directory (fedmsg ``ssldir``) with issued service certificates."""

    ssldir: Path
    names: tuple[str, ...] = ()

    @property
    def ca(self) -> str:
        return str(self.ssldir / certs.CA_CERT)

    @property
    def crl(self) -> str:
        return str(self.ssldir / certs.CRL)

    def key(self, name: str) -> str:
        return str(self.ssldir / f"{name}.key")

    def cert(self, name: str) -> str:
        return str(self.ssldir / f"{name}.crt")

    def config(self, name: str | None = None, **extra: Any) -> dict[str, Any]:
        """A fedmsg-style config dict for process ``name`` (signing) and validation."""
        cfg: dict[str, Any] = {
            "ssldir": str(self.ssldir),
            "ca_cert_location": self.ca,
            "crl_location": self.crl,
            "certnames": certs.certnames(self.ssldir),
        }
        if name is not None:
            cfg["name"] = name
        cfg.update(extra)
        return cfg

    def copy(self, dest: Path) -> Pki:
        """A copy of this PKI in ``dest`` (cheaper than generating RSA keys again)."""
        shutil.copytree(self.ssldir, dest)
        return Pki(dest, self.names)


def make_pki(ssldir: Path, names: tuple[str, ...] = ("alice", "bob")) -> Pki:
    """A fresh CA in ``ssldir`` with one certificate per name."""
    certs.init_ca(ssldir)
    for name in names:
        certs.issue(ssldir, name)
    return Pki(Path(ssldir), tuple(names))


# --------------------------------------------------------------------------------------------
# HTTP


@dataclass
class FileServer:
    """A static file server on 127.0.0.1 (port picked by the kernel) recording request paths."""

    root: Path
    requests: list[str] = field(default_factory=list)
    httpd: http.server.ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self.httpd is not None
        host, port = self.httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def start(self) -> FileServer:
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        handler = functools.partial(Handler, directory=str(self.root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (connections are then refused)."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            assert self.thread is not None
            self.thread.join(timeout=10)


@contextlib.contextmanager
def serve(root: Path) -> Iterator[FileServer]:
    server = FileServer(Path(root)).start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# fedmsg's own x509 implementation, in a side venv

INTEROP_REQUIREMENTS = (
    "fedmsg==1.1.7",
    "pyOpenSSL==24.2.1",
    "cryptography==43.0.3",
    "setuptools<82",
)
_MARKER = ".gilmsg-interop-ok"


class InteropUnavailable(RuntimeError):
    """The side venv with fedmsg's working x509 backend could not be built."""


def interop_venv_dir() -> Path:
    return Path(os.environ.get("GILMSG_INTEROP_VENV") or REPO / ".venv-interop")


def interop_python(timeout: float = 900) -> str:
    """Path of the side venv's python (built once, then reused); InteropUnavailable otherwise."""
    venv = interop_venv_dir()
    python = venv / "bin" / "python"
    marker = venv / _MARKER
    if marker.exists() and python.exists():
        return str(python)
    try:
        return _build_interop(venv, python, marker, timeout)
    except OSError as exc:
        raise InteropUnavailable(f"building {venv}: {exc}") from None


def _build_interop(venv: Path, python: Path, marker: Path, timeout: float) -> str:
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time (parallel runs, the bench)
        if marker.exists() and python.exists():
            return str(python)
        if venv.exists():
            shutil.rmtree(venv)
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--retries", "2", "--timeout", "30",
             *INTEROP_REQUIREMENTS],
            [str(python), "-c", "from fedmsg.crypto import x509_ng; assert x509_ng._cryptography"],
        ]
        for cmd in steps:
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise InteropUnavailable(f"building {venv}: {' '.join(cmd[:4])}: {exc}") from None
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                raise InteropUnavailable(
                    f"building {venv}: {' '.join(cmd[:4])} failed: {' | '.join(tail)}"
                )
        marker.write_text(" ".join(INTEROP_REQUIREMENTS) + "\n")
    return str(python)


#: Runs in the side venv. Reads {"jobs": [...]} on stdin, writes a list of results on stdout.
INTEROP_SCRIPT = r"""
import json, sys, time, logging
logging.basicConfig(level=logging.CRITICAL)
import fedmsg.crypto
from fedmsg.crypto import x509_ng
assert x509_ng._cryptography, "fedmsg's x509 backend did not import"

def config(job):
    return dict(crypto_backend="x509", crypto_validate_backends=["x509"],
                ca_cert_location=job["ca"], crl_location=job.get("crl"),
                ssldir=job.get("ssldir", "/nonexistent"))

out = []
for job in json.load(sys.stdin)["jobs"]:
    op = job["op"]
    if op == "sign":
        out.append(x509_ng.sign(dict(job["envelope"]), ssldir=job["ssldir"],
                                certname=job["certname"]))
    elif op == "validate":
        out.append(bool(fedmsg.crypto.validate(dict(job["envelope"]), **config(job))))
    elif op == "bench":
        n, env = job["n"], job["envelope"]
        sign_t, val_t, signed = [], [], None
        for _ in range(n):
            t = time.perf_counter()
            signed = fedmsg.crypto.sign(dict(env), ssldir=job["ssldir"], certname=job["certname"],
                                        **{k: v for k, v in config(job).items() if k != "ssldir"})
            sign_t.append(time.perf_counter() - t)
        for _ in range(n):
            t = time.perf_counter()
            ok = fedmsg.crypto.validate(dict(signed), **config(job))
            val_t.append(time.perf_counter() - t)
            assert ok
        out.append({"sign": sign_t, "validate": val_t})
    else:
        raise SystemExit("unknown op %r" % op)
json.dump(out, sys.stdout)
"""


def run_fedmsg(jobs: list[Mapping[str, Any]], timeout: float = 300) -> list[Any]:
    """Run ``jobs`` with fedmsg 1.1.7's own x509 code in the side venv; their results in order.

    Jobs: ``{"op": "sign", "envelope", "ssldir", "certname"}`` -> signed envelope;
    ``{"op": "validate", "envelope", "ca", "crl"}`` -> bool (``fedmsg.crypto.validate``);
    ``{"op": "bench", "n", "envelope", "ssldir", "certname", "ca", "crl"}`` -> timings.
    """
    python = interop_python()
    proc = subprocess.run(
        [python, "-c", INTEROP_SCRIPT],
        input=json.dumps({"jobs": list(jobs)}),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",  # keep ./fedmsg.d out of it
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fedmsg side script failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)
