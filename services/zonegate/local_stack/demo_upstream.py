"""The local stack's demo upstream: answers every request with what it received, as JSON.

It runs on a thread of the ``zonegate up`` process (a tiny standard-library server: it only has to
show that a request went through the gateway, e.g. the ``X-Consumer-Username`` key-auth added).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from zonegate.embedded.ports import LOOPBACK

_MAX_BODY: Final = 1 << 20


class _EchoHandler(BaseHTTPRequestHandler):
    server_version = "zonegate-demo-upstream"
    protocol_version = "HTTP/1.1"  # keep-alive, as the proxy's pool expects

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, _MAX_BODY)) if length else b""
        document = {
            "message": "Hello from the Zonegate demo upstream",
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body": body.decode("utf-8", errors="replace"),
        }
        payload = json.dumps(document, indent=2).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the gateway's access log already has every request."""


class DemoUpstream:
    def __init__(self, port: int) -> None:
        self._server = ThreadingHTTPServer((LOOPBACK, port), _EchoHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-upstream", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
