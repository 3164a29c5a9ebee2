"""http-log and file-log through a real node: Kong's serialized entries, batches, retries, files."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from data_plane.test_proxy_e2e import request, service
from harness.echo_upstream import EchoUpstream
from zonegate.plugins.schemas import plugin_schema


class Receiver(http.server.ThreadingHTTPServer):
    """A real HTTP log endpoint: /ok stores each body; /fail is slow, then answers 500."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[tuple[str, dict[str, str], Any]] = []
        self.failures = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/fail":
            self.server.failures += 1
            time.sleep(0.3)
            self.send_response(500)
        else:
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.server.bodies.append((self.command, headers, json.loads(body)))
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def assert_kong_shape(entry: dict[str, Any], route: str, path: str) -> None:
    assert entry["request"]["method"] == "GET"
    assert entry["request"]["uri"] == path
    assert entry["request"]["url"].endswith(path) and entry["request"]["url"].startswith("http://")
    assert entry["request"]["size"] > 0
    assert entry["request"]["headers"]["authorization"] == "REDACTED"
    assert entry["response"]["status"] == 200 and entry["response"]["size"] > 0
    assert "content-type" in entry["response"]["headers"]
    assert set(entry["latencies"]) == {"request", "kong", "proxy"}
    assert entry["latencies"]["proxy"] >= 0 and entry["latencies"]["request"] >= entry["latencies"]["proxy"]
    assert entry["route"]["name"] == route and entry["service"]["name"] == "svc"
    assert entry["client_ip"] == "127.0.0.1"
    assert entry["started_at"] > 1_600_000_000_000
    assert entry["upstream_uri"].startswith("/")
    assert entry["tries"] and entry["tries"][0]["port"] > 0


def test_lua_fields_are_refused() -> None:
    for name, config in (
        ("http-log", {"http_endpoint": "http://x/"}),
        ("file-log", {"path": "/tmp/x.log"}),
    ):
        schema = plugin_schema(name)
        assert schema is not None
        _, error = schema.config.validate({**config, "custom_fields_by_lua": {"f": "return 1"}})
        assert "runs no Lua" in error["custom_fields_by_lua"]["f"]
        normalised, error = schema.config.validate(config)
        assert error is None and normalised["custom_fields_by_lua"] is None


def test_http_log_batches_and_retries_without_slowing_requests(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream, receiver: Receiver
) -> None:
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [
                        {
                            "name": "logged",
                            "paths": ["/logged"],
                            "plugins": [
                                {
                                    "name": "http-log",
                                    "config": {
                                        "http_endpoint": f"{receiver.url}/ok",
                                        "method": "PUT",
                                        "headers": {"X-Token": "secret"},
                                        "queue": {"max_batch_size": 3, "max_coalescing_delay": 5},
                                    },
                                }
                            ],
                        },
                        {
                            "name": "failing",
                            "paths": ["/failing"],
                            "plugins": [
                                {
                                    "name": "http-log",
                                    "config": {
                                        "http_endpoint": f"{receiver.url}/fail",
                                        "queue": {"max_retry_time": 1.5, "initial_retry_delay": 0.05},
                                    },
                                }
                            ],
                        },
                    ],
                }
            ],
        }
    )
    for i in range(3):
        status, _, _ = request(node, "GET", f"/logged/{i}?a=1&flag", headers={"Authorization": "Basic x"})
        assert status == 200
    # Three entries fill the batch: one PUT with an array, long before the 5 s coalescing delay.
    wait_for(lambda: receiver.bodies, timeout=4)
    method, headers, body = receiver.bodies[0]
    assert (method, headers["x-token"], headers["content-type"]) == ("PUT", "secret", "application/json")
    assert isinstance(body, list) and len(body) == 3
    assert [entry["request"]["uri"] for entry in body] == [f"/logged/{i}?a=1&flag" for i in range(3)]
    assert body[0]["request"]["querystring"] == {"a": "1", "flag": True}
    for i, entry in enumerate(body):
        assert_kong_shape(entry, "logged", f"/logged/{i}?a=1&flag")

    # A slow, failing endpoint: the request does not wait for it; the entry is retried, then dropped.
    started = time.monotonic()
    assert request(node, "GET", "/failing")[0] == 200
    assert time.monotonic() - started < 0.25
    wait_for(lambda: "log_queue.batch_dropped" in node.read_log(), timeout=10)
    assert receiver.failures >= 2
    failures = receiver.failures
    time.sleep(0.6)
    assert receiver.failures == failures  # dropped: no more attempts
    assert request(node, "GET", "/logged/after")[0] == 200  # the proxy is unaffected

    # Stopping sends what is queued (one entry, far from its batch of 3 and its 5 s delay), and
    # closes the client cleanly.
    sent = len(receiver.bodies)
    node.stop()
    assert len(receiver.bodies) == sent + 1
    assert receiver.bodies[-1][2][0]["request"]["uri"] == "/logged/after"
    assert "Unclosed client session" not in node.read_log()


def test_file_log_appends_one_json_line_per_request(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream, tmp_path: Path
) -> None:
    kept, reopened = tmp_path / "kept.log", tmp_path / "reopened.log"
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [
                        {
                            "name": "kept",
                            "paths": ["/kept"],
                            "plugins": [{"name": "file-log", "config": {"path": str(kept)}}],
                        },
                        {
                            "name": "reopened",
                            "paths": ["/reopened"],
                            "plugins": [
                                {"name": "file-log", "config": {"path": str(reopened), "reopen": True}}
                            ],
                        },
                    ],
                }
            ],
        }
    )
    for i in range(5):
        assert request(node, "GET", f"/kept/{i}", headers={"Authorization": "x"})[0] == 200
    wait_for(lambda: kept.exists() and len(kept.read_text().splitlines()) == 5)
    entries = [json.loads(line) for line in kept.read_text().splitlines()]
    assert [e["request"]["uri"] for e in entries] == [f"/kept/{i}" for i in range(5)]
    assert_kong_shape(entries[0], "kept", "/kept/0")

    # reopen: a rotated file (moved away) is followed by a new one at the same path.
    assert request(node, "GET", "/reopened/1", headers={"Authorization": "x"})[0] == 200
    wait_for(lambda: reopened.exists() and reopened.read_text().count("\n") == 1)
    reopened.rename(tmp_path / "rotated.log")
    assert request(node, "GET", "/reopened/2", headers={"Authorization": "x"})[0] == 200
    wait_for(lambda: reopened.exists() and reopened.read_text().count("\n") == 1)
    assert json.loads(reopened.read_text())["request"]["uri"] == "/reopened/2"


def test_prometheus_counts_the_sizes_http_log_reports(
    zonegate_node_factory: Any, echo_upstream: EchoUpstream, receiver: Receiver
) -> None:
    # prometheus reads the exchange's numbers alone (``measures``); http-log gets Kong's whole
    # entry (``serialize``): the same request must give the same sizes and status in both.
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {**service("svc", echo_upstream), "routes": [{"name": "measured", "paths": ["/measured"]}]}
            ],
            "plugins": [
                {"name": "prometheus", "config": {"bandwidth_metrics": True, "status_code_metrics": True}},
                {"name": "http-log", "config": {"http_endpoint": f"{receiver.url}/ok"}},
            ],
        }
    )
    status, _, _ = request(node, "GET", "/measured/x?q=1", headers={"X-Extra": "é-not-ascii"})
    assert status == 200
    wait_for(lambda: receiver.bodies, timeout=5)
    entry = receiver.bodies[0][2]
    with urllib.request.urlopen(f"{node.status_url}/metrics", timeout=5) as answer:
        metrics = answer.read().decode()

    def sample(prefix: str) -> float:
        lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
        assert len(lines) == 1, (prefix, lines)
        return float(lines[0].rsplit(" ", 1)[1])

    labels = 'service="svc",route="measured"'
    assert sample(f'kong_bandwidth_bytes{{{labels},direction="ingress"') == entry["request"]["size"]
    assert sample(f'kong_bandwidth_bytes{{{labels},direction="egress"') == entry["response"]["size"]
    assert sample(f'kong_http_requests_total{{{labels},code="200",source="service"') == 1
