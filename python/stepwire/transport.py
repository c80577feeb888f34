"""Transport shared by clients and the collector: message limits, channels with TLS and a bearer token, and
the collector's token check (kept apart so that clients need not import the collector's store)."""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

MAX_MESSAGE_BYTES = 64 << 20
"""Largest gRPC message either end accepts; clients seal batches far below it (1 to 16 MiB)."""

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]

ADDRESS_FILE = "collector.json"
"""Where a data directory's collector writes its address and pid."""

TOKEN_ENV = "STEPWIRE_TOKEN"


def check_token(token: str) -> str:
    """Return ``token`` if it can be a bearer token: visible ASCII characters only, which gRPC metadata and HTTP
    headers carry unchanged; else raise ``ValueError``."""
    if not token or not all("!" <= c <= "~" for c in token):
        raise ValueError(f"a token (--token, token= or ${TOKEN_ENV}) must be visible ASCII characters, without "
                         "spaces or control characters")
    return token


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
                   grpc.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = (*(details.metadata or ()), self._metadata)
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


def open_channel(address: str, token: str | None = None, tls_ca: str | os.PathLike[str] | None = None
                 ) -> grpc.Channel:
    """A channel to a collector: TLS when ``tls_ca`` (a PEM file of the CA to trust) is given, and the bearer
    ``token`` (default ``$STEPWIRE_TOKEN``) on every call when there is one."""
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if token:
        check_token(token)
    if tls_ca is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
        channel = grpc.secure_channel(address, creds, options=GRPC_OPTIONS)
    else:
        channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
    return grpc.intercept_channel(channel, _BearerToken(token)) if token else channel


class TokenCheck(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses every RPC whose ``authorization`` metadata is not ``Bearer <token>`` (constant-time compare)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {check_token(token)}".encode()

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream_in = grpc.stream_unary_rpc_method_handler(lambda it, ctx: deny(None, ctx))
        self._deny_stream_out = grpc.unary_stream_rpc_method_handler(lambda req, ctx: iter([deny(req, ctx)]))

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode(), self._expected):
            return continuation(details)
        handler = continuation(details)
        if handler is not None and handler.request_streaming:
            return self._deny_stream_in
        if handler is not None and handler.response_streaming:
            return self._deny_stream_out
        return self._deny


def is_loopback(listen: str) -> bool:
    """True if ``host:port`` binds only loopback addresses."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False
