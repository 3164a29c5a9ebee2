"""A real ``zonegate start`` process for end-to-end tests, on free ports, stopped at teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from zonegate.embedded.ports import free_port

ZONEGATE = Path(sys.executable).with_name("zonegate")


@dataclass
class ZonegateNode:
    prefix: Path
    config_path: Path
    env: dict[str, str]
    proxy_port: int
    proxy_ssl_port: int
    status_port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.prefix / "node.log"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    def write_config(self, document: Mapping[str, Any] | str) -> None:
        text = document if isinstance(document, str) else yaml.safe_dump(dict(document), sort_keys=False)
        self.config_path.write_text(text)

    def start(self, *, wait: bool = True) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps its own descriptor
        try:
            self.process = subprocess.Popen(
                [str(ZONEGATE), "start"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"zonegate exited with {self.process.returncode}:\n{self.read_log()}")
            try:
                with urllib.request.urlopen(f"{self.status_url}/status", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise AssertionError(f"zonegate did not come up in {timeout}s:\n{self.read_log()}")

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.status_url}/status", timeout=5) as response:
            return dict(json.load(response))

    def reload(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def wait_for_hash_change(self, old_hash: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = str(self.status()["configuration_hash"])
            if current != old_hash:
                return current
            time.sleep(0.05)
        raise AssertionError(f"config hash stayed {old_hash}:\n{self.read_log()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.process = None
        return process.returncode

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def make_node(base: Path, extra_env: Mapping[str, str] | None = None) -> ZonegateNode:
    prefix = base / "prefix"
    prefix.mkdir(parents=True, exist_ok=True)
    config_path = base / "kong.yml"
    proxy_port, ssl_port, status_port = free_port(), free_port(), free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ZONEGATE_") or k.startswith("ZONEGATE_TEST_")
    }
    env.update(
        {
            # A DB-less traditional node: the proxy without a bus (a data plane needs cluster
            # certificates and NATS; tests/harness/hybrid.py starts those). No Admin API unless
            # a test asks for one, so nodes never fight over Kong's fixed port 8001.
            "ZONEGATE_ROLE": "traditional",
            "ZONEGATE_ADMIN_LISTEN": "off",
            "ZONEGATE_DATABASE": "off",
            "ZONEGATE_PREFIX": str(prefix),
            "ZONEGATE_DECLARATIVE_CONFIG": str(config_path),
            "ZONEGATE_PROXY_LISTEN": f"127.0.0.1:{proxy_port}, 127.0.0.1:{ssl_port} ssl",
            "ZONEGATE_STATUS_LISTEN": f"127.0.0.1:{status_port}",
            "ZONEGATE_PROXY_ACCESS_LOG": str(prefix / "access.log"),
            "ZONEGATE_LOG_LEVEL": "info",
            # One process unless a test asks for workers: faster, and enough for most behaviour.
            "ZONEGATE_WORKERS": "1",
        }
    )
    env.update(extra_env or {})
    return ZonegateNode(prefix, config_path, env, proxy_port, ssl_port, status_port)


@pytest.fixture
def zonegate_node_factory(tmp_path: Path) -> Iterator[Any]:
    """Call with a config document (and extra env); get a started node; all are stopped at teardown."""
    nodes: list[ZonegateNode] = []

    def factory(
        document: Mapping[str, Any] | str | None,
        extra_env: Mapping[str, str] | None = None,
        start: bool = True,
    ) -> ZonegateNode:
        node = make_node(tmp_path / f"node-{len(nodes) + 1}", extra_env)
        if document is not None:
            node.write_config(document)
        nodes.append(node)
        if start:
            node.start()
        return node

    yield factory
    for node in nodes:
        node.stop()
