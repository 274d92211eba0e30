"""A local HTTP server on 127.0.0.1 for the tests of ``invbench fetch``: files served from
``server.routes`` with byte ranges, and the failures a download must survive.

A route is ``{"data": bytes}`` plus at most one of: ``"status": 404`` (an error reply),
``"endless": n`` (no Content-Length, blocks of zeros until ``n`` bytes are sent or the client
hangs up; ``server.sent`` counts them), ``"slow": seconds`` (the body in 256 KiB pieces with a
pause between them), ``"drops": k, "drop_after": n`` (the first ``k`` replies hang up after
``n`` bytes); ``"ignore_range": True`` answers a range request with the whole file.
``server.log`` lists ``(path, Range header)`` of every request.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator

_PIECE = 1 << 18


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``self.server.routes``; see the module docstring."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        route = srv.routes.get(self.path)
        if route is None:
            self.send_error(404)
        elif "status" in route:
            self.send_error(route["status"])
        elif "endless" in route:
            self._endless(route["endless"])
        else:
            self._file(route)

    def _endless(self, limit: int) -> None:
        """No Content-Length: blocks until the client hangs up (or ``limit`` bytes are sent)."""
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        block = bytes(1 << 16)
        try:
            while self.server.sent < limit:
                self.wfile.write(block)
                self.server.sent += len(block)
        except OSError:  # the client closed the connection
            pass
        self.close_connection = True

    def _file(self, route: dict) -> None:
        data = route["data"]
        rng = self.headers.get("Range")
        start = 0
        if rng and not route.get("ignore_range"):
            start = int(rng.split("=", 1)[1].split("-", 1)[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._body(route, body)

    def _body(self, route: dict, body: bytes) -> None:
        if route.get("slow"):  # send the body in pieces, pausing between them
            for i in range(0, len(body), _PIECE):
                self.wfile.write(body[i : i + _PIECE])
                self.wfile.flush()
                time.sleep(route["slow"])
        elif route.get("drops", 0) > 0:  # send part of the body, then hang up
            route["drops"] -= 1
            self.wfile.write(body[: route["drop_after"]])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


@contextlib.contextmanager
def local_server() -> Iterator[http.server.ThreadingHTTPServer]:
    """A started server (``.url``, ``.routes``, ``.log``, ``.sent``), shut down on exit."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.routes, srv.log, srv.sent = {}, [], 0
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
