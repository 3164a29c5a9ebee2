"""Kong's default mode: a traditional node with PostgreSQL, Admin API and proxy in one process."""

from __future__ import annotations

from pathlib import Path

from harness.echo_upstream import EchoUpstream
from harness.hybrid import ControlPlaneProcess, clean_environment, wait_for
from zonegate.embedded.ports import free_port

from .test_admin_process import http


def proxied(port: int, path: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_admin_api_writes_reach_the_proxy_of_the_same_node(
    bootstrapped: str, tmp_path: Path, echo_upstream: EchoUpstream
) -> None:
    admin, proxy, status = free_port(), free_port(), free_port()
    env = clean_environment() | {
        "ZONEGATE_ROLE": "traditional",
        "ZONEGATE_PG_DSN": bootstrapped,
        "ZONEGATE_PREFIX": str(tmp_path / "prefix"),
        "ZONEGATE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "ZONEGATE_PROXY_LISTEN": f"127.0.0.1:{proxy}",
        "ZONEGATE_STATUS_LISTEN": f"127.0.0.1:{status}",
        "ZONEGATE_WORKERS": "2",  # the store feeds the agent, the agent feeds the workers
    }
    (tmp_path / "prefix").mkdir()
    node = ControlPlaneProcess(env, admin, tmp_path / "node.log")
    node.start()
    try:
        base = f"http://127.0.0.1:{admin}"
        assert http("POST", f"{base}/services", f"name=trad&url={echo_upstream.url}".encode())[0] == 201
        assert http("POST", f"{base}/services/trad/routes", b"name=t&paths[]=/trad")[0] == 201
        wait_for(lambda: proxied(proxy, "/trad/x") == 200, 15, "the proxy to serve the new route")
        assert http("DELETE", f"{base}/services/trad/routes/t")[0] == 204
        wait_for(lambda: proxied(proxy, "/trad/x") == 404, 15, "the route to go")
    finally:
        node.stop()
    assert "Traceback" not in node.read_log()
