"""The dashboard's connections: a thread per connection, a bounded number at once (more are answered 503 and
closed), TLS handshakes in those threads under the socket timeout, and a close that reads what the client still
sends so that the answer just sent is not destroyed."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("stepwire.dashboard")


class ConnectionServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once; TLS handshakes happen in those threads (with
    the socket timeout ``timeout``, seconds), never in the one that accepts."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext | None, max_connections: int,
                 timeout: float) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.tls = tls
        self.timeout_s = timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, BaseHTTPRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            body = b'{"error": "the dashboard is serving too many connections; try again"}'
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                                % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self.tls is not None:
                request.settimeout(self.timeout_s)
                plain, request = request, self.tls.wrap_socket(request, server_side=True,
                                                               do_handshake_on_connect=False)
                plain.close()  # detached by the wrapping: this only marks it closed
                try:
                    request.do_handshake()
                except (OSError, ValueError) as exc:
                    log.debug("TLS handshake with %s failed: %s", client_address, exc)
                    self.close_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown_request(self, request: Any) -> None:
        """Close after reading what the client still sends (briefly): closing with unread input would reset the
        connection and could destroy the answer just sent, e.g. the error about a request too large."""
        try:
            request.shutdown(socket.SHUT_WR)
            request.settimeout(0.5)
            drained = 0
            while drained < 1 << 20 and (chunk := request.recv(65536)):
                drained += len(chunk)
        except (OSError, ValueError):
            pass
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("dashboard connection from %s failed", client_address, exc_info=True)
