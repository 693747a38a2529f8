"""The client's channel: the target (`$EMBEDSVC_TARGET` when none is given), message sizes, TLS and the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

DEFAULT_TARGET = "localhost:50051"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def resolve_target(given: str | None) -> str:
    """The server to call: the one given, else `$EMBEDSVC_TARGET` (as the CLI's --target), else localhost:50051."""
    return given or os.environ.get("EMBEDSVC_TARGET") or DEFAULT_TARGET


def channel(target: str, tls: bool, ca_file: Any, cert_file: Any, key_file: Any) -> grpc.Channel:
    """A blocking channel: plaintext, or TLS (with the CA to trust, and a client certificate for mutual TLS)."""
    return _open(grpc.insecure_channel, grpc.secure_channel, target, tls, ca_file, cert_file, key_file)


def aio_channel(target: str, tls: bool, ca_file: Any, cert_file: Any, key_file: Any) -> grpc.aio.Channel:
    """The asyncio form of `channel` (scripts/unasync.py turns one into the other)."""
    return _open(grpc.aio.insecure_channel, grpc.aio.secure_channel, target, tls, ca_file, cert_file, key_file)


def _open(insecure: Any, secure: Any, target: str, tls: bool, ca_file: Any, cert_file: Any, key_file: Any) -> Any:
    if not (tls or ca_file or cert_file or key_file):
        return insecure(target, options=CHANNEL_OPTIONS)
    if bool(cert_file) != bool(key_file):
        raise ValueError("mutual TLS needs both cert_file and key_file")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes() if ca_file else None,
        private_key=Path(key_file).read_bytes() if key_file else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
    )
    return secure(target, credentials, options=CHANNEL_OPTIONS)


def call_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()
