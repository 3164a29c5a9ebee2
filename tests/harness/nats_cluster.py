"""A JetStream cluster of real nats-servers on loopback, configured by ``zonegate nats config``.

Shared mode (the cluster certificate on every listener, routes included). Route and monitoring
ports are picked before the first server starts, since every server lists all the routes. The
servers start one after the other (each is ready once its client port answers), then
``wait_healthy`` waits for every ``/healthz``, which a clustered JetStream answers only once a
meta leader is elected. Everything started is stopped by ``stop``.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass, field
from pathlib import Path

from zonegate.bus import nats_config
from zonegate.embedded.nats_server import NatsServer
from zonegate.embedded.ports import free_port


def _healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        connection.close()


@dataclass
class NatsCluster:
    base: Path
    cert: Path
    key: Path
    size: int = 3
    name: str = "hub"
    js_domain: str | None = None
    servers: list[NatsServer] = field(default_factory=list)
    route_ports: list[int] = field(default_factory=list)
    http_ports: list[int] = field(default_factory=list)

    def server_name(self, index: int) -> str:
        return f"{self.name}-{index + 1}"

    def start(self) -> None:
        self.route_ports = [free_port() for _ in range(self.size)]
        self.http_ports = [free_port() for _ in range(self.size)]
        routes = tuple(f"nats-route://127.0.0.1:{port}" for port in self.route_ports)
        for index in range(self.size):

            def render(port: int, _http: int | None, store: Path, index: int = index) -> str:
                return nats_config.render(
                    nats_config.NatsConfigOptions(
                        mode="shared",
                        cert_file=self.cert,
                        key_file=self.key,
                        listen=f"127.0.0.1:{port}",
                        store_dir=store,
                        server_name=self.server_name(index),
                        js_domain=self.js_domain,
                        http=f"127.0.0.1:{self.http_ports[index]}",
                        cluster_name=self.name,
                        cluster_listen=f"127.0.0.1:{self.route_ports[index]}",
                        routes=routes,
                    )
                )

            server = NatsServer(self.base / self.server_name(index), config_renderer=render)
            self.servers.append(server)  # tracked before start: stopped even if it fails
            server.start()

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        for index, server in enumerate(self.servers):
            while server.running and not _healthy(self.http_ports[index]):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.server_name(index)} not healthy after {timeout}s")
                time.sleep(0.05)

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def by_name(self, name: str) -> NatsServer:
        return self.servers[[self.server_name(i) for i in range(self.size)].index(name)]

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
