"""A throw-away RabbitMQ for tests and benchmarks of the AMQP transport, on 127.0.0.1 only.

Uses Debian's ``rabbitmq-server`` package (``/usr/lib/rabbitmq/bin/rabbitmq-server``), run as the
current user without systemd: its own epmd, node name, data, log and config directories under
a directory of the caller's, every listener (AMQP, Erlang distribution, epmd) on 127.0.0.1 at a
port picked free at run time. Everything it starts is stopped by pid in :meth:`stop`::

    with LocalRabbitMQ(tmp_path) as broker:
        config["endpoints"] = {name: [broker.url] for name in names}
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from gilmsg.testing.bus import free_port

#: Where Debian's package puts the server script (it runs as the caller, unlike /usr/sbin's).
SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
#: Environment variable where ``./run tests`` leaves why it could not install the package.
INSTALL_NOTE_ENV = "GILMSG_RABBITMQ_INSTALL_NOTE"
#: Bound on a start (about 5 s here) and on a stop.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def missing_reason() -> str | None:
    """Why no broker can be started here (None if one can)."""
    if not os.path.exists(SERVER):
        why = os.environ.get(INSTALL_NOTE_ENV)
        return ("rabbitmq-server is not installed (Debian package rabbitmq-server; ./run tests "
                "installs it when run as root with apt-get)" + (f": {why}" if why else ""))
    if shutil.which("epmd") is None and not _erlang_epmd():
        return "epmd (Erlang) not found next to rabbitmq-server"
    return None


def _erlang_epmd() -> str | None:
    for root in sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd")):
        return str(root)
    return None


@dataclass(frozen=True)
class TlsFiles:
    """A CA, a broker certificate for 127.0.0.1/localhost and a client certificate (PEM)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_settings(self) -> dict[str, str]:
        """The ``gilmsg.amqp_tls`` table (fedora-messaging's ``[tls]`` names) for the client."""
        return {"ca_cert": str(self.ca_cert), "certfile": str(self.client_cert),
                "keyfile": str(self.client_key)}


def make_tls_files(root: str | os.PathLike, client: str = "client") -> TlsFiles:
    """A new CA under ``root`` (:func:`gilmsg.crypto.certs.init_ca`), a broker certificate it
    signs naming 127.0.0.1 and localhost (subjectAltName, server auth), and a client
    certificate ``client`` (:func:`gilmsg.crypto.certs.issue`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from gilmsg.crypto import certs

    base = Path(root)
    ca_cert = certs.init_ca(base)
    client_key, client_cert = certs.issue(base, client)
    ca_key = serialization.load_pem_private_key((base / certs.CA_KEY).read_bytes(), None)
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    server_cert, server_key = base / "broker.crt", base / "broker.key"
    server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server_key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption()))
    server_key.chmod(0o600)
    return TlsFiles(ca_cert, server_cert, server_key, client_cert, client_key)


class BrokerError(RuntimeError):
    """The broker did not start (or stop) within its bound; the message has its log's tail."""


class LocalRabbitMQ:
    """One RabbitMQ node on 127.0.0.1; :meth:`start` / :meth:`stop` (again, for restarts).

    Args:
        root: its directory (data, logs, config).
        tls: also a TLS listener with these certificates, requiring a client certificate from
            the same CA (mutual TLS).

    Attributes:
        url: ``amqp://guest:guest@127.0.0.1:<port>/%2F`` (guest may log in from loopback).
        port: its AMQP port.
        tls_url, tls_port: ``amqps://guest:guest@127.0.0.1:<tls_port>/%2F`` (with ``tls``).
    """

    def __init__(self, root: str | os.PathLike, tls: TlsFiles | None = None, *,
                 home: str | os.PathLike | None = None, epmd_port: int | None = None,
                 node: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # A cluster's nodes share HOME (its Erlang cookie) and one epmd, started by the cluster.
        self.home = Path(home) if home is not None else self.root
        self._own_epmd = epmd_port is None
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.tls_url = f"amqps://guest:guest@127.0.0.1:{self.tls_port}/%2F" if tls else None
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = epmd_port if epmd_port is not None else free_port()
        self.node = node or f"gilmsg{os.getpid()}x{uuid.uuid4().hex[:6]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self._server: subprocess.Popen | None = None
        self._epmd: subprocess.Popen | None = None
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "log.console = false\n"
            "log.file.level = info\n"
            # A test machine may have little free disk: the default 50 MB floor would block.
            "disk_free_limit.absolute = 1MB\n"
            + (f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
               f"ssl_options.cacertfile = {tls.ca_cert}\n"
               f"ssl_options.certfile = {tls.server_cert}\n"
               f"ssl_options.keyfile = {tls.server_key}\n"
               "ssl_options.verify = verify_peer\n"
               "ssl_options.fail_if_no_peer_cert = true\n" if tls else "")
        )
        (self.root / "enabled_plugins").write_text("[].\n")
        self.log = self.root / "server.out"

    def env(self) -> dict[str, str]:
        """The environment the server and its Erlang tools run with."""
        env = dict(os.environ)
        env.update({
            "HOME": str(self.home),  # the Erlang cookie goes here, not in the caller's home
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-kernel inet_dist_use_interface {127,0,0,1}",
            # rabbitmqctl's own Erlang node listens too: on loopback as well.
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            # The script then execs the VM, so the process started here is the node itself
            # (stopped, and reaped, by its pid); -noinput keeps it from reading a shell.
            "RABBITMQ_ALLOW_INPUT": "1",
            "RABBITMQ_SERVER_START_ARGS": "-noinput",
        })
        return env

    @property
    def running(self) -> bool:
        """True while the server process lives."""
        return self._server is not None and self._server.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start epmd (first time) and the node; return once its AMQP port accepts logins.

        Raises:
            BrokerError: not up within ``timeout`` (everything started is stopped again).
        """
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start epmd (first time, unless shared) and the node; do not wait for it."""
        env = self.env()
        if self._own_epmd and (self._epmd is None or self._epmd.poll() is not None):
            epmd = shutil.which("epmd") or _erlang_epmd() or "epmd"
            self._epmd = subprocess.Popen(
                [epmd, "-address", "127.0.0.1", "-port", str(self.epmd_port)], env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        with open(self.log, "ab") as out:
            self._server = subprocess.Popen([SERVER], env=env, cwd=self.root,
                                            stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Return once the node's AMQP port accepts logins.

        Raises:
            BrokerError: not within ``timeout`` (the node is stopped again).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._server is None or self._server.poll() is not None:
                break
            if self._accepts_amqp():
                return
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise BrokerError(f"RabbitMQ did not start within {timeout:.0f}s:\n{tail}")

    def _accepts_amqp(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                sock.settimeout(2)
                return sock.recv(1) == b"\x01"  # a Connection.Start frame: the node is up
        except OSError:
            return False

    def stop(self, kill: bool = False, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the node (SIGTERM: an orderly stop; ``kill``: SIGKILL, a crash); epmd stays
        for a :meth:`start` again until :meth:`close`."""
        server, self._server = self._server, None
        if server is None:
            return
        if server.poll() is None:
            try:
                os.killpg(server.pid, signal.SIGKILL if kill else signal.SIGTERM)
                server.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout)
            except ProcessLookupError:
                pass
        try:  # beam's helpers (erl_child_setup, inet_gethost) in the same group
            os.killpg(server.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """Stop the node and epmd."""
        self.stop()
        epmd, self._epmd = self._epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.kill()
            epmd.wait(STOP_TIMEOUT)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's output and of its log file."""
        out = []
        for path in [self.log, *sorted((self.root / "log").glob("*.log"))]:
            try:
                out += path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                pass
        return "\n".join(out)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <this node> args...`` with the node's environment; its output.

        Raises:
            BrokerError: it failed or took longer than ``timeout``.
        """
        argv = [str(Path(SERVER).with_name("rabbitmqctl")), "-n", self.node, *args]
        try:
            out = subprocess.run(argv, env=self.env(), capture_output=True, text=True,
                                 timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} took over {timeout:.0f}s") from None
        if out.returncode:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} failed ({out.returncode}): "
                              f"{(out.stderr or out.stdout).strip()[-500:]}")
        return out.stdout

    def __enter__(self) -> LocalRabbitMQ:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalRabbitCluster:
    """``size`` RabbitMQ nodes on 127.0.0.1 joined into one cluster (``rabbitmqctl
    join_cluster``): one epmd, one shared HOME holding the Erlang cookie, distinct node names,
    AMQP and distribution ports. Loopback only, no network namespace. :meth:`close` stops every
    node and epmd by pid::

        with LocalRabbitCluster(tmp_path) as cluster:
            config["endpoints"] = {name: cluster.urls for name in names}

    Attributes:
        nodes: the :class:`LocalRabbitMQ` nodes (``nodes[0]`` the one the others joined).
        urls: their AMQP URLs, in that order.
    """

    def __init__(self, root: str | os.PathLike, size: int = 3) -> None:
        self.root = Path(root)
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        self.epmd_port = free_port()
        tag = f"{os.getpid()}x{uuid.uuid4().hex[:6]}"
        self.nodes = [LocalRabbitMQ(self.root / f"node{i + 1}", home=home,
                                    epmd_port=self.epmd_port, node=f"rabbit{i + 1}g{tag}@localhost")
                      for i in range(size)]
        self.urls = [node.url for node in self.nodes]
        self._epmd: subprocess.Popen | None = None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start epmd and every node (at once), then join nodes 2.. to node 1.

        Raises:
            BrokerError: a node did not start or join (everything is stopped again).
        """
        env = self.nodes[0].env()
        epmd = shutil.which("epmd") or _erlang_epmd() or "epmd"
        self._epmd = subprocess.Popen(
            [epmd, "-address", "127.0.0.1", "-port", str(self.epmd_port)], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            for node in self.nodes:
                node.spawn()
            for node in self.nodes:
                node.wait_ready(timeout)
            first = self.nodes[0].node
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first)
                node.ctl("start_app")
                node.wait_ready(timeout)
        except BaseException:
            self.close()
            raise

    def members(self) -> str:
        """``rabbitmqctl cluster_status`` from the first running node."""
        running = next(node for node in self.nodes if node.running)
        return running.ctl("cluster_status")

    def close(self) -> None:
        """Stop every node, then epmd."""
        for node in self.nodes:
            node.stop(kill=True)
        epmd, self._epmd = self._epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.kill()
            epmd.wait(STOP_TIMEOUT)

    def __enter__(self) -> LocalRabbitCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
