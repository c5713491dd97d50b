"""``/live``, ``/ready`` and ``/metrics`` over HTTP, served from daemon threads (the commands).

:func:`serve` binds exactly the ``HOST:PORT`` it is given before it returns (so a command can
fail with one line before it consumes anything), then answers in threads of its own: a scraper
that connects and never reads (or never sends its request) holds one of at most
:data:`MAX_CONNECTIONS` connection threads for at most :data:`IO_TIMEOUT` seconds, and never
the process's own work. Inside fedmsg-hub, :mod:`gilmsg.monitoring.reactor` serves the same
pages from the reactor instead.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gilmsg import monitoring
from gilmsg.errors import ConfigError, InvalidInput

#: Connections answered at once; more are closed at once.
MAX_CONNECTIONS = 16
#: Seconds a connection may take to send its request or to read the answer.
IO_TIMEOUT = 5.0


def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``[v6]:PORT`` too) as ``(host, port)``.

    Raises:
        InvalidInput: not of that form, or the port is not 1-65535 (0 is refused: the
            endpoint must be where the scrape config says).
    """
    if not isinstance(text, str) or ":" not in text:
        raise InvalidInput(f"monitoring address must be HOST:PORT (such as 127.0.0.1:9940), "
                           f"got {text!r}")
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise InvalidInput(f"monitoring address must be HOST:PORT with a port of 1-65535, "
                           f"got {text!r}")
    return host, port


def page(path: str) -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of a monitoring page (``/live``, ``/ready``,
    ``/metrics``; 404 otherwise). Shared by both servers."""
    path = path.split("?", 1)[0]
    if path == "/live":
        return 200, "application/json", b'{"status": "OK"}'
    if path == "/ready":
        reasons = monitoring.not_ready()
        body: dict[str, Any] = dict(monitoring.ready_counters())
        if reasons:
            body = {"status": "NOT READY", "reason": "; ".join(reasons), **body}
            return 503, "application/json", json.dumps(body).encode()
        return 200, "application/json", json.dumps({"status": "OK", **body}).encode()
    if path == "/metrics":
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return 200, CONTENT_TYPE_LATEST, generate_latest(monitoring.enable())
    return 404, "application/json", b'{"status": "not found", "pages": ["/live", "/ready", ' \
                                    b'"/metrics"]}'


class _Handler(BaseHTTPRequestHandler):
    timeout = IO_TIMEOUT
    server_version = "gilmsg-monitoring"
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status, ctype, body = page(self.path)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


class MonitoringServer(ThreadingHTTPServer):
    """The HTTP server of :func:`serve`; :meth:`close` stops it."""

    daemon_threads = True
    allow_reuse_address = True  # a restarted process may bind while old sockets TIME_WAIT

    def __init__(self, host: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` as bound."""
        host, port = str(self.server_address[0]), int(self.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # too many at once: close this one
            self.shutdown_request(request)
            return
        try:
            request.settimeout(IO_TIMEOUT)
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a scraper that hangs up or times out: nothing to report

    def start(self) -> MonitoringServer:
        """Answer in a daemon thread from now on."""
        self._thread = threading.Thread(target=self.serve_forever, args=(0.5,),
                                        name="gilmsg-monitoring", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop answering and release the port."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(2.0)
        self.server_close()


def serve(address: str) -> MonitoringServer:
    """Bind ``address`` (``HOST:PORT``), enable the metrics and answer in a daemon thread.

    Raises:
        InvalidInput: ``address`` is not ``HOST:PORT``.
        ConfigError: it cannot be bound (the port is in use, the address is not local ...):
            the message names it.
    """
    host, port = parse_address(address)
    monitoring.enable()
    try:
        server = MonitoringServer(host, port)
    except (OSError, OverflowError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot bind monitoring endpoint {address}: {why}") from None
    return server.start()
