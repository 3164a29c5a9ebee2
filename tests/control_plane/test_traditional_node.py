"""Kong's default mode: a traditional node with PostgreSQL, Admin API and proxy in one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.echo_upstream import EchoUpstream
from harness.hybrid import ControlPlaneProcess, clean_environment, wait_for
from zonegate.embedded.ports import free_port

from .test_admin_process import http


def proxied(port: int, path: str) -> tuple[int, str | None]:
    """The status, and the path the upstream received (None when the proxy answered itself)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status), json.loads(response.read())["path"]
    except urllib.error.HTTPError as exc:
        return int(exc.code), None


# Each write, then what the proxy must do after it: (method, path, form body, probe, status,
# path the upstream receives). Route and service changes alike: in one process the router
# updates from the revisions' change, in workers from the cache.
CHANGES: list[tuple[str, str, bytes | None, str, int, str | None]] = [
    ("POST", "/services/trad{w}/routes", b"name=t{w}&paths[]=/trad{w}", "/trad{w}/x", 200, "/x"),
    ("PATCH", "/routes/t{w}", b"paths[]=/moved{w}", "/moved{w}/x", 200, "/x"),
    ("PATCH", "/services/trad{w}", b"path=/base", "/moved{w}/x", 200, "/base/x"),
    ("PATCH", "/routes/t{w}", b"strip_path=false", "/moved{w}/x", 200, "/base/moved{w}/x"),
    ("PATCH", "/services/trad{w}", b"enabled=false", "/moved{w}/x", 404, None),
    ("PATCH", "/services/trad{w}", b"enabled=true", "/moved{w}/x", 200, "/base/moved{w}/x"),
    ("POST", "/services/trad{w}/routes", b"name=u{w}&paths[]=/other{w}", "/other{w}/y", 200, "/base/y"),
    ("DELETE", "/services/trad{w}/routes/t{w}", None, "/moved{w}/x", 404, None),
]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_admin_api_writes_reach_the_proxy_of_the_same_node(
    bootstrapped: str, tmp_path: Path, echo_upstream: EchoUpstream, workers: str
) -> None:
    admin, proxy, status = free_port(), free_port(), free_port()
    env = clean_environment() | {
        "ZONEGATE_ROLE": "traditional",
        "ZONEGATE_PG_DSN": bootstrapped,
        "ZONEGATE_PREFIX": str(tmp_path / "prefix"),
        "ZONEGATE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "ZONEGATE_PROXY_LISTEN": f"127.0.0.1:{proxy}",
        "ZONEGATE_STATUS_LISTEN": f"127.0.0.1:{status}",
        "ZONEGATE_WORKERS": workers,  # 2: the store feeds the agent, the agent feeds the workers
    }
    (tmp_path / "prefix").mkdir()
    node = ControlPlaneProcess(env, admin, tmp_path / "node.log")
    node.start()
    try:
        base = f"http://127.0.0.1:{admin}"
        service = f"name=trad{workers}&url={echo_upstream.url}"
        assert http("POST", f"{base}/services", service.encode())[0] == 201
        for method, template, form, probe_template, code, upstream_template in CHANGES:
            path, probe = template.format(w=workers), probe_template.format(w=workers)
            body = form.decode().format(w=workers).encode() if form is not None else None
            upstream_path = upstream_template.format(w=workers) if upstream_template else None
            answer = http(method, f"{base}{path}", body)
            assert answer[0] in (200, 201, 204), answer
            wait_for(
                lambda p=probe, c=code, u=upstream_path: proxied(proxy, p) == (c, u),
                15,
                f"the proxy to follow {method} {path}",
            )
    finally:
        node.stop()
    assert "Traceback" not in node.read_log()
