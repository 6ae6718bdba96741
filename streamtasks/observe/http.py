"""The worker's HTTP endpoints, a tiny asyncio HTTP/1.0 server on the worker's own loop:

* ``GET /metrics`` -- Prometheus text exposition (samples Redis first, bounded by a timeout);
* ``GET /healthz`` -- 200 while the process (its event loop) is up;
* ``GET /readyz``  -- 200 when the worker is reading, no background loop is failing, Redis
  answers, every consumer group exists and Ray is connected; 503 with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST

from .metrics import WorkerMetrics

if TYPE_CHECKING:
    from ..worker.events import Serving

log = logging.getLogger("streamtasks.metrics")

#: Requests with a longer head are not answered.
MAX_REQUEST_BYTES = 8192
#: Seconds a client has to send its request head.
REQUEST_TIMEOUT_S = 10.0
#: Default bind address of the endpoints (``--metrics-host``).
DEFAULT_HOST = "0.0.0.0"


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over HTTP/1.0 on the worker's event loop."""

    def __init__(self, metrics: WorkerMetrics, port: int, host: str = DEFAULT_HOST) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> MetricsServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]  # when started on port 0
        log.info("metrics on http://%s:%d/metrics (health: /healthz, /readyz)", self.host, self.port)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            method, path = _request_line(head)
            status, ctype, body = await self._route(method, path)
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, OSError):
            pass  # a client that went away or sent garbage: nothing to answer
        except Exception:
            log.exception("metrics endpoint failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", text, b"GET only\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, await self.metrics.exposition()
        if path == "/healthz":
            return "200 OK", text, b"ok\n"
        if path == "/readyz":
            reason = await self.metrics.readiness()
            if reason is None:
                return "200 OK", text, b"ready\n"
            return "503 Service Unavailable", text, f"not ready: {reason}\n".encode()
        return "404 Not Found", text, b"try /metrics, /healthz or /readyz\n"


def _request_line(head: bytes) -> tuple[str, str]:
    if len(head) > MAX_REQUEST_BYTES:
        return "", ""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) < 2:
        return "", ""
    return parts[0].upper(), parts[1].split("?", 1)[0]


async def start_metrics_server(worker: Serving, port: int, host: str = DEFAULT_HOST) -> MetricsServer:
    """Attach metrics to ``worker`` and serve them on ``host:port`` (``0`` = any free port)."""
    return await MetricsServer(WorkerMetrics(worker), port, host).start()
