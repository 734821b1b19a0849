"""A TCP proxy for tests and benchmarks: latency, a pause, cut connections.

``TCPProxy(port)`` listens on a free loopback port and forwards every connection to
``127.0.0.1:port``, each direction in its own thread. ``delay`` holds every chunk that long
before it goes on (a database 50 ms away); :meth:`pause` stops forwarding (a database that
hangs) until :meth:`resume`; :meth:`cut` closes every open connection (a network drop).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from .process import HOST, free_port


class TCPProxy:
    def __init__(self, target_port: int, *, delay: float = 0.0, host: str = HOST) -> None:
        self.target = (host, target_port)
        self.delay = delay
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, self.port))
        self._closed = False
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def __enter__(self) -> TCPProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pause(self) -> None:
        """Hold every byte in both directions (connections stay open) until :meth:`resume`."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def cut(self) -> None:
        """Close every open connection now (new ones are still accepted)."""
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._open.set()
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink), name="tcp-proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                self._open.wait()
                if self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
