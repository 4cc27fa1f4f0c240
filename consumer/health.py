"""/healthz, /readyz and /metrics over HTTP, served from a background thread.

prometheus-client's WSGI app serves /metrics; the two probes are routed in front of it.
A thread (not the event loop) serves them, so a scrape never waits behind a batch, and
/healthz can tell that the event loop has stopped moving (Service.liveness).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

#: a probe's answer: whether it passes, and why
Probe = Callable[[], tuple[bool, str]]


class Heartbeat:
    """When the event loop and the poll loop last moved, for /healthz (read from the
    health thread). The event loop beats every second; the poll loop at each round,
    which takes at most a poll timeout unless a batch's inference holds it. So a stuck
    event loop or inference thread fails liveness after timeout_s; a lost broker does
    not (the loop goes on polling, and readiness says so), nor does a rebuild (its
    reads have time limits of their own)."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._loop = time.monotonic()
        self._poll: float | None = None  # None: not polling yet (connecting), or rebuilding

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._loop = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def polled(self) -> None:
        self._poll = time.monotonic()

    @contextlib.contextmanager
    def rebuilding(self) -> Iterator[None]:
        self._poll = None
        try:
            yield
        finally:
            self._poll = time.monotonic()

    def liveness(self) -> tuple[bool, str]:
        now = time.monotonic()
        if now - self._loop > self._timeout_s:
            return False, f"the event loop has not moved for {now - self._loop:.0f} s"
        polled = self._poll
        if polled is not None and now - polled > self._timeout_s:
            return False, f"the poll loop has not moved for {now - polled:.0f} s"
        return True, "moving"


class MetricsPortError(RuntimeError):
    """The metrics and health endpoints cannot be served on the configured address."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        """Scrapes every few seconds would flood the log."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class HealthServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, readiness: Probe,
                 liveness: Probe) -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                alive, reason = liveness()
                return _text(start_response, "200 OK" if alive else "503 Service Unavailable",
                             f"{'ok' if alive else 'stuck'}: {reason}\n")
            if path == "/readyz":
                ready, reason = readiness()
                return _text(start_response, "200 OK" if ready else "503 Service Unavailable",
                             f"{'ready' if ready else 'not ready'}: {reason}\n")
            if path == "/metrics":
                return metrics_app(environ, start_response)
            return _text(start_response, "404 Not Found", "try /metrics, /healthz or /readyz\n")

        try:
            self._server = make_server(host, port, app, server_class=_ThreadingServer,
                                       handler_class=_QuietHandler)
        except OSError as exc:  # in use (often a second instance on the host), not permitted
            raise MetricsPortError(
                f"cannot serve /metrics, /healthz and /readyz on {host}:{port}: {exc.strerror or exc} "
                "(choose another --metrics-port, or 0 to serve none)") from None
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="pba-http", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _text(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(data)))])
    return [data]
