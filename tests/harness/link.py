"""A TCP link that a test can cut and heal: fault injection between two real servers.

``Link(target_port)`` listens on a free loopback port and forwards every connection to the
target. ``cut()`` drops every open connection and refuses new ones (accepted, then closed at
once, as a broken WAN path looks to nats-server's leaf node: the peer goes away and redials
fail); ``heal()`` forwards again. Threads, not asyncio, so it works beside any test style.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from zonegate.embedded.ports import free_port


class Link:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.port = free_port()
        self._listener = socket.create_server((host, self.port), reuse_port=False)
        self._listener.settimeout(0.2)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._up = True
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name=f"link-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url_host_port(self) -> str:
        return f"{self.target[0]}:{self.port}"

    def cut(self) -> None:
        with self._lock:
            self._up = False
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def heal(self) -> None:
        with self._lock:
            self._up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
        self._thread.join(timeout=2)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                up = self._up
            if not up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)  # an idle link is not a dead one
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()  # the other pump's recv has returned: shutdown woke it
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
