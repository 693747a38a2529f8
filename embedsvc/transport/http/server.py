"""The HTTP server: the gateway's Starlette app (`app.py`) on its own port, run by uvicorn in a thread with its own
event loop, with TLS when the gRPC server has it; and the private Unix socket through which it reaches gRPC."""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

import uvicorn

from embedsvc.settings import Settings
from embedsvc.transport.http.app import build_app


class HttpServer:
    """The gateway on its own port, run by uvicorn in a thread with its own event loop."""

    def __init__(self, settings: Settings, grpc_target: str) -> None:
        host = settings.http_host or settings.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, settings.http_port or 0))
        except OSError as exc:
            self._socket.close()
            raise OSError(f"cannot listen on {host}:{settings.http_port} for HTTP: {exc}") from None
        self._socket.listen(2048)
        self.host = host
        self.port = int(self._socket.getsockname()[1])
        self.app = build_app(settings, grpc_target)
        tls: dict[str, Any] = {}
        if settings.tls is not None:
            tls = {"ssl_certfile": str(settings.tls.cert_file), "ssl_keyfile": str(settings.tls.key_file)}
            if settings.tls.client_ca_file is not None:
                tls.update(ssl_ca_certs=str(settings.tls.client_ca_file), ssl_cert_reqs=ssl.CERT_REQUIRED)
        self.scheme = "https" if tls else "http"
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            loop="asyncio",
            timeout_keep_alive=max(5, int(settings.keepalive_time_s)),
            limit_concurrency=settings.max_workers * 8,
            **tls,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()


def private_socket() -> tuple[str, Path]:
    """A Unix socket path in a new directory only this user can enter: the HTTP gateway's way into gRPC."""
    folder = Path(tempfile.mkdtemp(prefix="embedsvc-http-"))
    os.chmod(folder, 0o700)
    path = folder / "grpc.sock"
    return f"unix:{path}", folder
